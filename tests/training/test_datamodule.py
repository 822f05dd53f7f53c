"""Batching: (seed, epoch)-determined order; DDP shards add up to the single-process batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_retriever.data.core import MultimodalData
from moe_retriever.training.datamodule import ShardedBatchSampler, TensorSet, epoch_permutation


def test_order_depends_on_seed_and_epoch_only() -> None:
    a = ShardedBatchSampler(50, 16, seed=1)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert first != second
    b = ShardedBatchSampler(50, 16, seed=1)
    b.sampler.set_epoch(1)  # where Lightning sets it (batch_sampler.sampler)
    assert list(b) == second
    assert sorted(i for batch in first for i in batch) == list(range(50))
    assert len(a) == 4
    np.testing.assert_array_equal(epoch_permutation(50, 1, 0), np.concatenate(first))


@pytest.mark.parametrize("n", [48, 50, 33])
def test_shards_form_the_global_batches(n: int) -> None:
    single = list(ShardedBatchSampler(n, 16, seed=0))
    ranks = [list(ShardedBatchSampler(n, 16, seed=0, rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for k, batch in enumerate(single):
        a, b = ranks[0][k], ranks[1][k]
        assert len(a) == len(b)  # equal shard sizes: the mean of the two means is the mean
        assert set(a) | set(b) >= set(batch)
        if len(batch) % 2 == 0:
            assert sorted(a + b) == sorted(batch)


def test_tensor_set_batches(splits: tuple[MultimodalData, ...]) -> None:
    data = splits[0]
    ts = TensorSet.from_data(data)
    batch = ts.batch(torch.tensor([0, 2]))
    assert set(batch["x"]) == set(data.modalities)
    assert batch["observed"].dtype == torch.bool and batch["y"].dtype == torch.int64
    assert not any(torch.isnan(v).any() for v in ts.x.values())  # unobserved rows -> 0
