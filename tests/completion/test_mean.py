"""The ``mean`` baseline: training-pool mean of the encoder tokens, nothing from the batch."""

from __future__ import annotations

import torch
from torch import nn

from moe_retriever.completion.base import CompletionContext, TrainingPool, create_completion
from moe_retriever.completion.mean import MeanCompletion

MODS = ["a", "b", "c"]
DIMS = {"a": 5, "b": 3, "c": 4}
P, D = 2, 3


def _setup(n_pool: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    enc = nn.ModuleDict({m: nn.Linear(f, P * D) for m, f in DIMS.items()})
    observed = torch.rand(n_pool, len(MODS), generator=g) > 0.3
    observed[:, 0] |= ~observed.any(1)
    x = {
        m: torch.randn(n_pool, f, generator=g) * observed[:, j, None]
        for j, (m, f) in enumerate(DIMS.items())
    }
    pool = TrainingPool(MODS, x, observed)

    def encode(m: str, v: torch.Tensor) -> torch.Tensor:
        return enc[m](v).view(-1, P, D)

    return enc, pool, encode


def test_fill_is_pool_mean_and_observed_slots_unchanged():
    _enc, pool, encode = _setup()
    comp = create_completion("mean", MODS, P, D)
    assert isinstance(comp, MeanCompletion)
    tokens = torch.randn(4, 3, P, D)
    observed = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    ctx = CompletionContext(encode=encode, pool=pool, training=False, modalities=MODS)
    out = comp.complete(tokens, observed, ctx)
    assert out.tokens.shape == tokens.shape
    assert torch.equal(out.tokens[observed], tokens[observed])
    assert float(out.aux_loss) == 0.0
    for j, m in enumerate(MODS):
        have = pool.observed[:, j]
        expected = encode(m, pool.x[m][have]).mean(0)
        for i in range(4):
            if not observed[i, j]:
                torch.testing.assert_close(out.tokens[i, j], expected)


def test_fill_ignores_the_batch_only_pool_matters():
    """No evaluation data can leak in: the fill of a sample does not depend on the batch."""
    _, pool, encode = _setup()
    comp = create_completion("mean", MODS, P, D)
    ctx = CompletionContext(encode=encode, pool=pool, training=False, modalities=MODS)
    observed = torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    t1 = torch.randn(2, 3, P, D)
    t2 = t1.clone()
    t2[1] = 100.0  # another evaluation sample changes
    t2[0, 0] = -7.0  # the sample's own observed tokens change
    f1 = comp.complete(t1, observed, ctx).tokens[0, 1]
    f2 = comp.complete(t2, observed, ctx).tokens[0, 1]
    torch.testing.assert_close(f1, f2)
    # ... while the pool does matter
    pool2 = TrainingPool(MODS, {m: v * 2 for m, v in pool.x.items()}, pool.observed)
    ctx2 = CompletionContext(encode=encode, pool=pool2, training=False, modalities=MODS)
    assert not torch.allclose(comp.complete(t1, observed, ctx2).tokens[0, 1], f1)


def test_training_mean_is_differentiable_to_the_encoder():
    enc, pool, encode = _setup()
    comp = create_completion("mean", MODS, P, D)
    ctx = CompletionContext(encode=encode, pool=pool, training=True, modalities=MODS)
    observed = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    out = comp.complete(torch.zeros(1, 3, P, D), observed, ctx)
    out.tokens.sum().backward()
    assert enc["b"].weight.grad is not None and enc["b"].weight.grad.abs().sum() > 0
    assert enc["a"].weight.grad is None  # nothing missing in a -> not encoded


def test_large_pool_subsampled_deterministically_at_eval():
    _, pool, encode = _setup(n_pool=40)
    comp = create_completion("mean", MODS, P, D, max_pool=5)
    ctx = CompletionContext(encode=encode, pool=pool, training=False, modalities=MODS)
    observed = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    a = comp.complete(torch.zeros(1, 3, P, D), observed, ctx).tokens
    b = comp.complete(torch.zeros(1, 3, P, D), observed, ctx).tokens
    torch.testing.assert_close(a, b)


def test_modality_nobody_observes_stays_zero_and_is_counted():
    _, pool, encode = _setup()
    obs = pool.observed.clone()
    obs[:, 2] = False
    obs[:, 0] = True
    x = dict(pool.x)
    x["c"] = torch.zeros_like(x["c"])
    pool = TrainingPool(MODS, x, obs)
    comp = create_completion("mean", MODS, P, D)
    ctx = CompletionContext(encode=encode, pool=pool, training=False, modalities=MODS)
    out = comp.complete(torch.ones(2, 3, P, D), torch.tensor([[1, 1, 0], [1, 0, 0]]).bool(), ctx)
    assert torch.equal(out.tokens[:, 2], torch.zeros(2, P, D))
    assert out.info["empty_pool"] == {"c": 2}
