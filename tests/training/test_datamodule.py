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


def test_the_data_path_holds_the_arrays_once(splits: tuple[MultimodalData, ...]) -> None:
    """Tensors, batches of every epoch and worker, and the model's training pool all index
    into one float32 array per modality: no copy per epoch, per worker or for the pool."""
    from moe_retriever.model import ModelConfig, MultimodalClassifier
    from moe_retriever.training.datamodule import MultimodalDataModule

    data = splits[0]
    full = data.filled(0.0)
    clean = MultimodalData(
        modalities=data.modalities,
        X=full,
        observed=np.ones_like(data.observed),  # complete: no NaN to fill
        y=data.y,
        ids=data.ids,
        class_names=data.class_names,
    )
    assert all(clean.X[m] is full[m] for m in data.modalities)  # float32 in: held as is
    ts = TensorSet.from_data(clean)
    for m in data.modalities:  # NaN-free preprocessed arrays: views, not copies
        assert np.shares_memory(ts.x[m].numpy(), clean.X[m])
    with_nan = TensorSet.from_data(data)  # NaN in unobserved rows: one zero-filled copy
    assert not np.shares_memory(with_nan.x[data.modalities[0]].numpy(), data.X[data.modalities[0]])

    dm = MultimodalDataModule(ts, None, batch_size=8, seed=0, num_workers=0)
    ptrs = {m: v.data_ptr() for m, v in ts.x.items()}
    for epoch in range(2):
        loader = dm.train_dataloader()
        assert loader.collate_fn.tensors is ts  # the loader holds the set, not a copy
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            idx = batch["index"]
            for m in data.modalities:
                assert torch.equal(batch["x"][m], ts.x[m][idx])
    assert {m: v.data_ptr() for m, v in ts.x.items()} == ptrs
    workers = MultimodalDataModule(ts, None, batch_size=8, seed=0, num_workers=2)
    first = next(iter(workers.train_dataloader()))
    assert torch.equal(first["x"][data.modalities[0]], ts.x[data.modalities[0]][first["index"]])

    cfg = ModelConfig(n_tokens=2, dim=8, n_heads=2, head_hidden=8, encoder_hidden=8)
    model = MultimodalClassifier(data.dims, data.n_classes, cfg)
    model.set_training_pool(ts.x, ts.observed)
    pool = model.training_pool()
    for m in data.modalities:  # the pool shares the tensors' memory
        assert pool.x[m].data_ptr() == ts.x[m].data_ptr()
    before = {m: v.clone() for m, v in ts.x.items()}
    other = MultimodalClassifier(data.dims, data.n_classes, cfg)
    other.set_training_pool({m: v + 1.0 for m, v in ts.x.items()}, ts.observed)
    model.load_state_dict(other.state_dict())  # never written into the caller's arrays
    assert all(torch.equal(ts.x[m], before[m]) for m in data.modalities)
    assert torch.equal(
        model.training_pool().x[data.modalities[0]], other.training_pool().x[data.modalities[0]]
    )
