"""The LightningModule: loss, warm-up schedule, validation metrics, per-epoch history.

* loss = cross-entropy (optionally class-weighted) + the model's ``aux_loss`` (balance
  losses, already weighted by ``model.balance_weight``);
* epochs ``< warmup`` run with ``retrieve=False`` (missing modalities are zero tokens, the
  retriever is off), later epochs with retrieval on (METHOD.md "Model and training");
* every epoch ends with one history row (train loss, val loss, val metrics) and a
  ``select_score`` for checkpointing: the monitored metric (negated for ``val_loss``) after
  warm-up, ``-inf`` during warm-up, so the best model is always one with retrieval trained;
* randomness is re-derived from ``(seed, epoch, step, rank)`` before every training step
  (global torch RNG for dropout and gating noise, and every ``torch.Generator`` the model owns,
  e.g. the supporting-group sampler's), so resuming from an epoch-end checkpoint replays
  exactly what the uninterrupted run did.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_retriever.training.config import TrainConfig
from moe_retriever.training.metrics import METRIC_NAMES, classification_metrics


def derived_seed(*parts: int) -> int:
    """A 31-bit seed from integers (stable across processes and Python versions)."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) & 0x7FFFFFFF


def model_generators(model: nn.Module) -> list[tuple[str, torch.Generator]]:
    """Every ``torch.Generator`` a submodule holds, directly or in a plain helper object
    (e.g. the supporting-group sampler a completion method keeps), with a stable name."""
    found: list[tuple[str, torch.Generator]] = []
    for mod_name, mod in model.named_modules():
        for attr, value in sorted(vars(mod).items()):
            if isinstance(value, torch.Generator):
                found.append((f"{mod_name}.{attr}", value))
            elif not isinstance(value, nn.Module | Tensor) and hasattr(value, "__dict__"):
                for sub, inner in sorted(vars(value).items()):
                    if isinstance(inner, torch.Generator):
                        found.append((f"{mod_name}.{attr}.{sub}", inner))
    return found


def prepare_generators(model: nn.Module) -> None:
    """Create lazily built samplers now, so that their generators exist to be reseeded."""
    completion = getattr(model, "completion", None)
    sampler_for = getattr(completion, "sampler_for", None)
    if callable(sampler_for) and getattr(model, "has_training_pool", False):
        sampler_for(model.training_pool())  # type: ignore[operator]


def balanced_class_weights(y: np.ndarray, n_classes: int) -> Tensor:
    """``n / (C * count_c)`` per class (scikit-learn's "balanced"); absent classes get 0."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


class ClassifierModule(L.LightningModule):
    """Wraps a ``MultimodalClassifier`` for ``lightning.Trainer``."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        seed: int,
        class_weights: Tensor | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.seed = int(seed)
        self.warmup = config.effective_warmup()
        self.class_names = class_names
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", class_weights, persistent=False)
        #: one dict per finished epoch; saved in checkpoints so a resumed run keeps it
        self.history: list[dict[str, Any]] = []
        self._train_sums = torch.zeros(3, dtype=torch.float64)  # ce*n, aux*n, n
        self._val_logits: list[Tensor] = []
        self._val_y: list[Tensor] = []

    # ------------------------------------------------------------------ helpers
    def retrieval_on(self) -> bool:
        return self.current_epoch >= self.warmup

    def forward(self, batch: dict[str, Any], retrieve: bool = True, in_pool: bool = False) -> Any:
        """``in_pool``: the batch comes from the training split, whose rows (``batch["index"]``)
        are the training pool's rows (the model's self-supervision excludes them from their
        own supporting groups)."""
        return self.model(
            batch["x"],
            batch["observed"],
            sample_keys=batch["keys"],
            retrieve=retrieve,
            pool_index=batch["index"] if in_pool else None,
        )

    def _ce(self, logits: Tensor, y: Tensor) -> Tensor:
        w = self.class_weights
        return F.cross_entropy(logits.float(), y, weight=None if w is None else w.to(logits.device))

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        prepare_generators(self.model)
        self._train_sums = torch.zeros(3, dtype=torch.float64)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Every step's randomness (dropout, gating noise, supporting-group draws) is a function
        # of (seed, epoch, step, rank) alone: nothing that runs between steps (validation,
        # data-loader iterator creation, a restart from a checkpoint) can shift it.
        parts = (self.seed, self.current_epoch, batch_idx, int(self.global_rank))
        torch.manual_seed(derived_seed(*parts))
        for i, (_, gen) in enumerate(model_generators(self.model)):
            gen.manual_seed(derived_seed(*parts, 1 + i))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self(batch, retrieve=self.retrieval_on(), in_pool=True)
        ce = self._ce(out.logits, batch["y"])
        loss = ce + out.aux_loss
        n = float(batch["y"].shape[0])
        self._train_sums += torch.tensor(
            [float(ce.detach()) * n, float(out.aux_loss.detach()) * n, n], dtype=torch.float64
        )
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.config.optim
        cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        return cls(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_logits, self._val_y = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self(batch, retrieve=self.retrieval_on())
        self._val_logits.append(out.logits.detach().float().cpu())
        self._val_y.append(batch["y"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        row = self._epoch_row()
        logits = torch.cat(self._val_logits)
        y = torch.cat(self._val_y)
        row["val_loss"] = float(self._ce(logits, y))
        proba = torch.softmax(logits, dim=1).numpy()
        metrics = classification_metrics(y.numpy(), proba, self.class_names)
        row.update({f"val_{k}": v for k, v in metrics.items()})
        self._finish_epoch(row)

    def on_train_epoch_end(self) -> None:
        # without validation data the row is written here (before checkpoint callbacks run)
        if not self.history or self.history[-1]["epoch"] != self.current_epoch:
            self._finish_epoch(self._epoch_row())

    def _epoch_row(self) -> dict[str, Any]:
        sums = self._train_sums.clone()
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()
        n = max(float(sums[2]), 1.0)
        return {
            "epoch": int(self.current_epoch),
            "retrieval": bool(self.retrieval_on()),
            "train_loss": float(sums[0]) / n,
            "train_aux_loss": float(sums[1]) / n,
        }

    def select_score(self, row: dict[str, Any]) -> float:
        """Higher is better; ``-inf`` during warm-up or when the metric is undefined."""
        monitor = self.config.train.monitor
        value = row.get(monitor, math.nan)
        if not row["retrieval"] or value is None or math.isnan(value):
            return -math.inf
        return -float(value) if monitor == "val_loss" else float(value)

    def _finish_epoch(self, row: dict[str, Any]) -> None:
        row["select_score"] = self.select_score(row)
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        logged = {k: float(v) for k, v in row.items() if k.startswith("val_")}
        logged["select_score"] = row["select_score"]
        logged["train_loss"] = row["train_loss"]
        shown = {"val_loss", self.config.train.monitor}
        for key, value in logged.items():
            # values are identical on every rank (each scores the whole val split)
            self.log(key, value, prog_bar=key in shown, on_epoch=True, sync_dist=True)

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["moe_retriever_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("moe_retriever_history", []))


METRIC_COLUMNS = ["epoch", "retrieval", "train_loss", "train_aux_loss", "val_loss"] + [
    f"val_{k}" for k in METRIC_NAMES
]
