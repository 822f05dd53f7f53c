"""Training on top of PyTorch Lightning, from config to run folder.

* :mod:`~moe_retriever.training.config`: ``TrainConfig`` (typed dataclasses, YAML, overrides)
* :mod:`~moe_retriever.training.datamodule`: tensors, (seed, epoch)-determined batches, DDP shards
* :mod:`~moe_retriever.training.module`: the LightningModule (loss, warm-up, validation)
* :mod:`~moe_retriever.training.callbacks`: early stopping after warm-up, CSV log, fault injection
* :mod:`~moe_retriever.training.metrics`: accuracy, balanced accuracy, macro-F1, AUROC, per
  combination, over seeds
* :mod:`~moe_retriever.training.estimator`: ``MoERetrieverClassifier`` (scikit-learn style)
* :mod:`~moe_retriever.training.runs`: run folders (train, evaluate, aggregate, plots, resume)
* :mod:`~moe_retriever.training.demo`: ``moe-retriever demo``

``from moe_retriever.training import MoERetrieverClassifier, TrainConfig`` works (lazily, so
importing the package does not import Lightning).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MoERetrieverClassifier", "TrainConfig"]


def __getattr__(name: str) -> Any:
    if name == "MoERetrieverClassifier":
        from moe_retriever.training.estimator import MoERetrieverClassifier

        return MoERetrieverClassifier
    if name == "TrainConfig":
        from moe_retriever.training.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
