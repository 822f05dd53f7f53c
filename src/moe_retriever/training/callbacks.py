"""Lightning callbacks: warm-up-aware early stopping, the per-epoch CSV log, fault injection.

Best-checkpoint selection uses Lightning's ``ModelCheckpoint`` on ``select_score`` (see
``module.py``: ``-inf`` during warm-up), built by :func:`checkpoint_callback`.
"""

from __future__ import annotations

import csv
import math
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from moe_retriever.training.module import METRIC_COLUMNS

#: environment variable for tests: ``N`` kills the training process (SIGKILL, no clean-up)
#: in epoch N+1, after epoch N's checkpoints are written, to test ``--resume`` on a real crash
FAULT_ENV = "MOE_RETRIEVER_KILL_AFTER_EPOCH"


class WarmupEarlyStopping(EarlyStopping):
    """Early stopping on ``select_score`` that only starts counting after warm-up.

    During warm-up the retriever is off and the score is ``-inf``; counting those epochs as
    "no improvement" would stop a run before retrieval ever trained.
    """

    def __init__(self, warmup: int, patience: int) -> None:
        super().__init__(
            monitor="select_score",
            mode="max",
            patience=patience,
            check_finite=False,
            check_on_train_epoch_end=False,
            verbose=False,
        )
        self.warmup = warmup

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch < self.warmup:
            return
        score = trainer.callback_metrics.get("select_score")
        if score is not None and not math.isfinite(float(score)):
            return  # metric undefined this epoch (e.g. AUROC on one class): do not count
        super().on_validation_end(trainer, pl_module)


def checkpoint_callback(dirpath: str | Path, has_val: bool) -> ModelCheckpoint:
    """``best.ckpt`` (highest ``select_score``) and ``last.ckpt`` (every epoch, for resume)."""
    return ModelCheckpoint(
        dirpath=str(dirpath),
        filename="best",
        monitor="select_score" if has_val else None,
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )


class HistoryCSV(L.Callback):
    """Writes ``module.history`` to a CSV after every epoch (rank zero only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        write_history_csv(self.path, getattr(pl_module, "history", []))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)


def write_history_csv(path: Path, history: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [*METRIC_COLUMNS, "select_score"]
    for row in history:
        cols += [k for k in row if k not in cols]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in cols})


class KillAfterEpoch(L.Callback):
    """Fault injection: SIGKILL (or another signal) this process during epoch ``epoch + 1``.

    The signal is sent after the first optimizer step of the next epoch, i.e. mid-training and
    after ``ModelCheckpoint`` has written ``last.ckpt`` for epoch ``epoch``. A resumed run
    restarts from that checkpoint. Enabled only through :data:`FAULT_ENV` (resume tests):
    ``"2"`` kills after epoch 2, ``"2:INT"`` sends SIGINT there (a Ctrl-C at a known point,
    where a signal from outside would race a fast training run).
    """

    def __init__(self, epoch: int, sig: signal.Signals = signal.SIGKILL) -> None:
        self.epoch = epoch
        self.sig = sig
        self._sent = False

    @classmethod
    def from_env(cls) -> KillAfterEpoch | None:
        raw = os.environ.get(FAULT_ENV)
        if raw in (None, ""):
            return None
        epoch, _, name = str(raw).partition(":")
        return cls(int(epoch), signal.Signals[f"SIG{name}"] if name else signal.SIGKILL)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.current_epoch == self.epoch + 1 and not self._sent:
            self._sent = True
            os.kill(os.getpid(), self.sig)
