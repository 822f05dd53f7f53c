"""Tensors and batches for training: preprocessed ``MultimodalData`` -> dict batches.

A batch is a dict ``{"x": {modality: (B, F_m) float32}, "observed": (B, M) bool,
"y": (B,) int64 (-1 when unlabelled), "keys": (B,) int64, "index": (B,) int64}``; rows of
unobserved modalities hold zeros (the model never reads them).

A modality kept on disk (:class:`~moe_retriever.data.mapped.MappedRows`) stays there: the
:class:`TensorSet` holds the mapped rows (with the fitted transform attached) and each batch
reads only its own rows, so an epoch never holds more than a batch of it in memory.

Shuffling is a pure function of ``(seed, epoch)`` (:class:`ShardedBatchSampler`), so a run
resumed from an epoch-end checkpoint sees exactly the batches the uninterrupted run saw. Under
DDP with W processes every *global* batch of ``batch_size`` samples is dealt out across the
ranks (rank r takes every W-th sample of it), so W processes together take the same optimizer
steps on the same samples as one process (up to the order of floating-point sums). The last
global batch is padded with samples from the start of the permutation to a multiple of W, so
every rank gets the same number of equally sized batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from moe_retriever.data.core import MultimodalData, stable_keys
from moe_retriever.data.mapped import MappedRows, is_mapped

Batch = dict[str, Any]


@dataclass
class TensorSet:
    """A preprocessed split as tensors (NaN -> 0); the source of every batch.

    ``x[m]`` is a tensor, or a :class:`MappedRows` (reading NaN as 0) for a modality on disk.
    """

    modalities: list[str]
    x: dict[str, Tensor | MappedRows]
    observed: Tensor
    y: Tensor
    keys: Tensor

    @classmethod
    def from_data(cls, data: MultimodalData) -> TensorSet:
        """From PREPROCESSED data (observed rows NaN-free); unobserved rows become zeros.

        Memory: ``x[m]`` is a view of ``data.X[m]`` (float32, C-contiguous) when that array
        holds no NaN, else of ONE zero-filled copy made here. Every batch (and the model's
        training pool, :meth:`MultimodalClassifier.set_training_pool`) indexes into these
        tensors: nothing is copied per epoch or per data-loader worker (workers are forked and
        share the pages; the collate function holds this object, not a copy)."""
        y = data.y if data.y is not None else np.full(data.n_samples, -1, dtype=np.int64)
        x: dict[str, Any] = {}
        for m in data.modalities:
            stored: Any = data.X[m]
            if is_mapped(stored):  # stays on disk: rows read per batch, NaN read as 0
                x[m] = stored.filled(0.0)
                continue
            v = np.ascontiguousarray(data.X[m], dtype=np.float32)
            if np.isnan(v).any():
                v = np.nan_to_num(v, nan=0.0)
            x[m] = torch.from_numpy(v)
        return cls(
            modalities=list(data.modalities),
            x=x,
            observed=torch.from_numpy(data.observed.copy()),
            y=torch.from_numpy(np.asarray(y, dtype=np.int64)),
            keys=torch.from_numpy(stable_keys(data.ids)),
        )

    def __len__(self) -> int:
        return int(self.observed.shape[0])

    def pool_x(self) -> dict[str, Tensor]:
        """Every modality as one in-memory tensor (the model's training pool keeps the raw
        training rows for retrieval): a modality on disk is read here, chunk by chunk, in full.
        """
        out: dict[str, Tensor] = {}
        for m, v in self.x.items():
            if isinstance(v, MappedRows):
                t = torch.empty(v.shape, dtype=torch.float32)
                for pos, block in v.chunks():
                    t[pos[0] : pos[-1] + 1] = torch.from_numpy(block)
                out[m] = t
            else:
                out[m] = v
        return out

    def batch(self, index: Tensor) -> Batch:
        return {
            "x": {m: _rows(v, index) for m, v in self.x.items()},
            "observed": self.observed[index],
            "y": self.y[index],
            "keys": self.keys[index],
            "index": index,
        }


def _rows(v: Tensor | MappedRows, index: Tensor) -> Tensor:
    """Rows ``index`` of a tensor, or read from disk for a mapped modality."""
    if isinstance(v, MappedRows):
        return torch.from_numpy(v.gather(index.numpy()))
    return v[index]


class _IndexDataset(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _Collate:
    """Gathers a batch from a :class:`TensorSet` by index (picklable for worker processes)."""

    def __init__(self, tensors: TensorSet) -> None:
        self.tensors = tensors

    def __call__(self, idx: list[int]) -> Batch:
        return self.tensors.batch(torch.as_tensor(idx, dtype=torch.long))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of an epoch: a function of (seed, epoch) only."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED])
    return rng.permutation(n)


class _EpochHolder:
    """Exposes ``set_epoch`` where Lightning looks for it (``batch_sampler.sampler``)."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class ShardedBatchSampler:
    """Batches of a (seed, epoch) permutation, each global batch dealt across ``world`` ranks."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError("cannot batch an empty training split")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.sampler = _EpochHolder()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = epoch_permutation(self.n, self.seed, self.sampler.epoch)
        else:
            order = np.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            chunk = order[start : start + self.batch_size]
            if self.world > 1:
                short = (-len(chunk)) % self.world
                if short:
                    chunk = np.concatenate([chunk, np.resize(order, short)])
                chunk = chunk[self.rank :: self.world]
            yield chunk.tolist()


class MultimodalDataModule(L.LightningDataModule):
    """Train batches sharded per rank; validation on every rank over the whole val split.

    Validation is small and metrics such as AUROC need every sample at once, so each rank
    scores the full validation split (identical results on all ranks, no gather needed).
    """

    def __init__(
        self,
        train: TensorSet,
        val: TensorSet | None,
        batch_size: int,
        seed: int,
        eval_batch_size: int = 256,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.seed = batch_size, seed
        self.eval_batch_size, self.num_workers = eval_batch_size, num_workers

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def per_rank_batch_size(self) -> int:
        return max(1, math.ceil(self.batch_size / self._world()[1]))

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world()
        sampler = ShardedBatchSampler(len(self.train_set), self.batch_size, self.seed, rank, world)
        return DataLoader(
            _IndexDataset(len(self.train_set)),
            batch_sampler=sampler,  # type: ignore[arg-type]
            collate_fn=_Collate(self.train_set),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list[Any]:
        if self.val_set is None or len(self.val_set) == 0:
            return []
        return eval_loader(self.val_set, self.eval_batch_size, self.num_workers)


def eval_loader(tensors: TensorSet, batch_size: int = 256, num_workers: int = 0) -> DataLoader:
    """Unshuffled batches in sample order (prediction, validation, evaluation)."""
    sampler = ShardedBatchSampler(len(tensors), batch_size, seed=0, shuffle=False)
    return DataLoader(
        _IndexDataset(len(tensors)),
        batch_sampler=sampler,  # type: ignore[arg-type]
        collate_fn=_Collate(tensors),
        num_workers=num_workers,
    )
