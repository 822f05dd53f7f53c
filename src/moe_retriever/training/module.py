"""The LightningModule: loss, warm-up schedule, validation metrics, per-epoch history.

* loss = cross-entropy (optionally class-weighted) + the model's ``aux_loss`` (balance
  losses, already weighted by ``model.balance_weight``); with ``model.ensemble_k`` > 1 the
  cross-entropy is the mean of the k members' cross-entropies (TabM), while validation scores
  the ensemble's prediction (the mean probability);
* epochs ``< warmup`` run with ``retrieve=False`` (missing modalities are zero tokens, the
  retriever is off), later epochs with retrieval on (METHOD.md "Model and training");
* every epoch ends with one history row (train loss, val loss, val metrics) and a
  ``select_score`` for checkpointing (:meth:`ClassifierModule.select_score`): the monitored
  metric (negated for ``val_loss``; optionally smoothed over epochs) after warm-up, ``-inf``
  during warm-up, so the best model is always one with retrieval trained. When the monitored
  metric is undefined (e.g. AUROC on a validation split with one class) a post-warm-up epoch
  still gets a finite score, below every defined one: ``FALLBACK_SCORE - val_loss``. Before,
  such epochs scored ``-inf`` like the warm-up ones, and Lightning's ``ModelCheckpoint`` kept
  the first epoch it saw (warm-up epoch 0, retriever untrained) as "best";
* ``train.weight_average: ema`` keeps an exponential moving average of the weights from the
  first post-warm-up step on; validation scores the averaged weights, and they are what the
  checkpoint carries under ``ema_model.module.*`` (the estimator loads those);
* randomness is re-derived from ``(seed, epoch, step, rank)`` before every training step
  (global torch RNG for dropout and gating noise, and every ``torch.Generator`` the model owns,
  e.g. the supporting-group sampler's), so resuming from an epoch-end checkpoint replays
  exactly what the uninterrupted run did.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from moe_retriever.heads.ensemble import member_targets
from moe_retriever.model import MultimodalClassifier
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


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``model``'s weights that SHARES its training pool instead of copying it.

    The pool (``model.pool``, the raw training inputs) is data, not weights: the average's
    module holds the same pool module (so the same tensors, the same :class:`TrainingPool`
    view and its cached structures), the deep copy made here skips it, the average skips
    tensors it shares with the live model, and a checkpoint stores the pool once (torch.save
    writes a shared storage once). Buffers that are weights (normalisation statistics) are
    averaged as before (``use_buffers=True``)."""
    base = get_ema_multi_avg_fn(decay)

    def ema(
        avg: tuple[Tensor, ...] | list[Tensor],
        cur: tuple[Tensor, ...] | list[Tensor],
        n: Tensor | int,
    ) -> None:
        pairs = [(a, c) for a, c in zip(avg, cur) if a.data_ptr() != c.data_ptr()]
        if pairs:
            base([a for a, _ in pairs], [c for _, c in pairs], n)

    pool = model._modules.get("pool")
    shared = {"pool": pool} if pool is not None else {}
    model._modules.update(dict.fromkeys(shared))  # None while AveragedModel deep-copies
    try:
        averaged = AveragedModel(model, multi_avg_fn=ema, use_buffers=True)
    finally:
        model._modules.update(shared)
    averaged.module._modules.update(shared)
    return averaged


#: base of the score of a post-warm-up epoch whose monitored metric is undefined: the score is
#: ``FALLBACK_SCORE - min(val_loss, 50)`` (lowest validation loss wins), or, when the loss is
#: undefined too, ``2 * FALLBACK_SCORE + epoch / 1000`` (the latest epoch wins). Every defined
#: score (a metric in [0, 1] or ``-val_loss`` > -50) is higher; warm-up (-inf) is lower. Kept
#: small in magnitude so the float32 copy Lightning logs still orders them.
FALLBACK_SCORE = -100.0


def balanced_class_weights(y: np.ndarray, n_classes: int) -> Tensor:
    """``n / (C * count_c)`` per class: scikit-learn's ``compute_class_weight("balanced")``
    with C = ``n_classes``; a class absent from ``y`` (which scikit-learn refuses) gets 0."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    w = np.zeros(n_classes, dtype=np.float64)
    # scikit-learn divides by the number of classes present; rescale to all n_classes
    w[present] = compute_class_weight("balanced", classes=present, y=y) * (len(present) / n_classes)
    return torch.tensor(w, dtype=torch.float32)


def class_log_prior(y: np.ndarray, n_classes: int) -> Tensor:
    """``log pi_c``, the class frequencies of ``y`` (the training labels) used by logit
    adjustment; a class absent from ``y`` counts as one sample so that its log stays finite."""
    counts = np.maximum(np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes), 1)
    return torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float32))


def adjust_logits(logits: Tensor, log_prior: Tensor | None, tau: float) -> Tensor:
    """``logits + tau * log_prior`` (``tau`` may be negative: the post-hoc form subtracts);
    ``logits`` unchanged when ``tau`` is 0 or no prior is known."""
    if not tau or log_prior is None:
        return logits
    return logits + tau * log_prior.to(device=logits.device, dtype=logits.dtype)


def build_model(
    cfg: TrainConfig,
    dims: dict[str, int],
    n_classes: int,
    seed: int,
    encoders: dict[str, nn.Module] | None = None,
) -> MultimodalClassifier:
    """The model a config describes: its method's parts (checked) on ``cfg.model``'s sizes."""
    parts = cfg.parts()
    return MultimodalClassifier(
        dims,
        n_classes,
        cfg.model,
        completion=parts.completion,
        completion_cfg=parts.completion_options,
        encoders=encoders or None,
        seed=seed,  # the run's seed reaches the supporting-group draws
        head=parts.head,
        head_cfg=parts.head_options,
    )


class ClassifierModule(L.LightningModule):
    """Wraps a ``MultimodalClassifier`` for ``lightning.Trainer``.

    The resolved config, seed, classes, modality sizes and class count are saved as
    hyperparameters in every checkpoint, so ``ClassifierModule.load_from_checkpoint(path,
    weights_only=True)`` rebuilds the model from them and restores its weights and training
    pool (a model with built encoder modules needs ``model=`` passed again).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        config: TrainConfig | dict[str, Any] | None = None,
        seed: int = 0,
        class_weights: Tensor | None = None,
        class_names: list[str] | None = None,
        dims: dict[str, int] | None = None,
        n_classes: int | None = None,
        log_prior: Tensor | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        config = config or TrainConfig()
        dims = dims or getattr(model, "dims", None)
        n_classes = n_classes or getattr(model, "n_classes", None)
        if model is None:
            if dims is None or n_classes is None:
                raise ValueError("ClassifierModule needs a model, or dims and n_classes")
            model = build_model(config, dims, int(n_classes), int(seed))
        # what rebuilds the model goes into every checkpoint (and the logger's hparams.yaml);
        # the model itself is not a hyperparameter (it is the state dict)
        self.save_hyperparameters(
            {
                "config": config.to_dict(),
                "seed": int(seed),
                "class_names": class_names,
                "dims": None if dims is None else {str(m): int(d) for m, d in dims.items()},
                "n_classes": None if n_classes is None else int(n_classes),
                # the post-hoc adjustment's prior: a module rebuilt from a checkpoint predicts
                # what the estimator predicts
                "log_prior": None if log_prior is None else [float(v) for v in log_prior],
            },
        )
        if log_prior is not None and not isinstance(log_prior, Tensor):
            log_prior = torch.tensor(list(log_prior), dtype=torch.float32)
        self.model = model
        self.config = config
        self.seed = int(seed)
        self.warmup = config.effective_warmup()
        self.class_names = class_names
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", class_weights, persistent=False)
        #: training-split class log frequencies (``train.logit_adjust`` / ``posthoc_adjust``)
        self.log_prior: Tensor | None
        self.register_buffer("log_prior", log_prior, persistent=False)
        #: one dict per finished epoch; saved in checkpoints so a resumed run keeps it
        self.history: list[dict[str, Any]] = []
        self._train_sums = torch.zeros(3, dtype=torch.float64)  # ce*n, aux*n, n
        self._val_logits: list[Tensor] = []
        self._val_y: list[Tensor] = []
        #: EMA of the weights (``train.weight_average: ema``); updated after every optimiser
        #: step once retrieval is on, so the average starts from the first post-warm-up weights
        self.ema_model: AveragedModel | None = None
        if config.train.weight_average == "ema":
            self.ema_model = weight_average(model, config.train.ema_decay)

    # ------------------------------------------------------------------ helpers
    def retrieval_on(self) -> bool:
        return self.current_epoch >= self.warmup

    def eval_model(self) -> nn.Module:
        """The weights validation scores: the EMA once it has started, else the live ones."""
        ema = self.ema_model
        if ema is not None and int(ema.n_averaged) > 0:  # type: ignore[call-overload]
            return ema.module
        return self.model

    def forward(
        self,
        batch: dict[str, Any],
        retrieve: bool = True,
        in_pool: bool = False,
        net: nn.Module | None = None,
    ) -> Any:
        """``in_pool``: the batch comes from the training split, whose rows (``batch["index"]``)
        are the training pool's rows (the model's self-supervision excludes them from their
        own supporting groups). ``net``: the network to run (default: the live model)."""
        return (net if net is not None else self.model)(
            batch["x"],
            batch["observed"],
            sample_keys=batch["keys"],
            retrieve=retrieve,
            pool_index=batch["index"] if in_pool else None,
            y=batch["y"] if in_pool else None,
        )

    def _ce(self, logits: Tensor, y: Tensor) -> Tensor:
        """The training objective's classification term: (weighted) cross-entropy of the
        loss-side logit-adjusted logits (``train.class_weights``, ``train.logit_adjust``)."""
        w = self.class_weights
        logits = adjust_logits(logits.float(), self.log_prior, self.config.train.logit_adjust)
        return F.cross_entropy(logits, y, weight=None if w is None else w.to(logits.device))

    def predict_logits(self, logits: Tensor) -> Tensor:
        """The logits predictions use: post-hoc adjusted by ``train.posthoc_adjust``."""
        return adjust_logits(logits, self.log_prior, -self.config.train.posthoc_adjust)

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
        members = out.member_logits
        if members is None:
            ce = self._ce(out.logits, batch["y"])
        else:  # TabM: each member trained on its own prediction, the mean of their losses
            ce = self._ce(members.flatten(0, 1), member_targets(batch["y"], members.shape[1]))
        loss = ce + out.aux_loss
        n = float(batch["y"].shape[0])
        self._train_sums += torch.tensor(
            [float(ce.detach()) * n, float(out.aux_loss.detach()) * n, n], dtype=torch.float64
        )
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.update_weight_average(self.retrieval_on())

    def update_weight_average(self, retrieval: bool) -> None:
        """One EMA step after an optimiser step (``train.weight_average: ema``), only with
        retrieval on: the first call copies the weights, later ones move the average by
        ``1 - ema_decay`` towards them."""
        if self.ema_model is not None and retrieval:
            self.ema_model.update_parameters(self.model)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.config.optim
        cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        return cls(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_logits, self._val_y = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        net = self.eval_model()
        net.eval()
        out = self(batch, retrieve=self.retrieval_on(), net=net)
        self._val_logits.append(out.logits.detach().float().cpu())
        self._val_y.append(batch["y"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        row = self._epoch_row()
        logits = torch.cat(self._val_logits)
        y = torch.cat(self._val_y)
        row["val_loss"] = float(self._ce(logits, y))
        proba = torch.softmax(self.predict_logits(logits), dim=1).numpy()
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

    def smoothed_monitor(self, row: dict[str, Any]) -> float:
        """The monitored metric of ``row`` after ``train.select_smoothing`` (an EMA over the
        post-warm-up epochs of ``self.history`` before ``row`` whose metric is defined)."""
        monitor = self.config.train.monitor
        value = _num(row.get(monitor))
        a = self.config.train.select_smoothing
        if a == 0.0 or math.isnan(value):
            return value
        prev = [
            r
            for r in self.history
            if r["epoch"] < row["epoch"] and r["retrieval"] and not math.isnan(_num(r.get(monitor)))
        ]
        if not prev:
            return value
        last = _num(prev[-1].get("val_smoothed"))
        if math.isnan(last):
            return value
        return a * last + (1.0 - a) * value

    def select_score(self, row: dict[str, Any]) -> float:
        """Higher is better. ``-inf`` during warm-up; after it the (smoothed) monitored metric,
        negated for ``val_loss``, or, where the metric is undefined, the finite fallback of
        :data:`FALLBACK_SCORE` (validation loss, then the latest epoch), so that a post-warm-up
        epoch always beats every warm-up epoch."""
        if not row["retrieval"]:
            return -math.inf
        monitor = self.config.train.monitor
        value = _num(row.get("val_smoothed", row.get(monitor)))
        if not math.isnan(value):
            return -float(value) if monitor == "val_loss" else float(value)
        loss = _num(row.get("val_loss"))
        if not math.isnan(loss):
            return FALLBACK_SCORE - min(loss, 50.0)
        return 2.0 * FALLBACK_SCORE + min(int(row["epoch"]), 10_000) / 1000.0

    def _finish_epoch(self, row: dict[str, Any]) -> None:
        if "val_loss" in row and self.config.train.select_smoothing > 0.0:
            row["val_smoothed"] = self.smoothed_monitor(row) if row["retrieval"] else math.nan
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


def _num(value: Any) -> float:
    """``value`` as a float; ``None`` and non-numbers are NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


METRIC_COLUMNS = ["epoch", "retrieval", "train_loss", "train_aux_loss", "val_loss"] + [
    f"val_{k}" for k in METRIC_NAMES
]
