"""The ``bank`` baseline: one learnable embedding per (observed combination, missing modality)."""

from __future__ import annotations

import pytest
import torch

from moe_retriever.completion.bank import BankCompletion, combination_bitmask
from moe_retriever.completion.base import CompletionContext, TrainingPool, create_completion

MODS = ["a", "b", "c"]
P, D = 2, 4


def _pool(observed: list[list[int]]) -> TrainingPool:
    obs = torch.tensor(observed, dtype=torch.bool)
    return TrainingPool(MODS, {m: torch.randn(len(observed), 3) for m in MODS}, obs)


def test_bitmask():
    obs = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert combination_bitmask(obs).tolist() == [5, 2, 7]


def test_shapes_observed_unchanged_and_fill_depends_only_on_combination():
    torch.manual_seed(0)
    comp = create_completion("bank", MODS, P, D)
    assert isinstance(comp, BankCompletion)
    with torch.no_grad():
        comp.delta.weight.normal_()
    pool = _pool([[1, 0, 1], [1, 1, 0], [1, 1, 1]])
    ctx = CompletionContext(pool=pool, training=False, modalities=MODS)
    tokens = torch.randn(3, 3, P, D)
    observed = torch.tensor([[1, 0, 1], [1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    out = comp.complete(tokens, observed, ctx)
    assert out.tokens.shape == tokens.shape
    assert torch.equal(out.tokens[observed], tokens[observed])
    torch.testing.assert_close(out.tokens[0, 1], out.tokens[1, 1])  # same combination
    assert not torch.allclose(out.tokens[0, 1], out.tokens[2, 2])
    assert out.info["fallback"] == 0


def test_bank_gets_gradient_and_learns_a_target():
    torch.manual_seed(0)
    comp = create_completion("bank", MODS, P, D)
    pool = _pool([[1, 0, 1], [1, 1, 0]])
    ctx = CompletionContext(pool=pool, training=True, modalities=MODS)
    observed = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    target = torch.ones(P, D)
    opt = torch.optim.Adam(comp.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        out = comp.complete(torch.zeros(2, 3, P, D), observed, ctx)
        loss = ((out.tokens[0, 1] - target) ** 2).mean() + ((out.tokens[1, 2] + target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert comp.base.grad is not None and comp.base.grad.abs().sum() > 0
        assert comp.delta.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


def test_unseen_combination_falls_back_to_modality_embedding_and_is_counted():
    torch.manual_seed(0)
    comp = create_completion("bank", MODS, P, D)
    with torch.no_grad():
        comp.delta.weight.normal_()
    pool = _pool([[1, 0, 1], [1, 1, 1]])  # combination {b} (bitmask 2) never seen
    ctx = CompletionContext(pool=pool, training=False, modalities=MODS)
    observed = torch.tensor([[0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    out = comp.complete(torch.zeros(2, 3, P, D), observed, ctx)
    torch.testing.assert_close(out.tokens[0, 0], comp.base[0])
    torch.testing.assert_close(out.tokens[0, 2], comp.base[2])
    assert not torch.allclose(out.tokens[1, 1], comp.base[1])  # seen -> its own slot
    assert out.info["fallback"] == 2
    assert out.info["fallback_by_modality"] == {"a": 1, "b": 0, "c": 1}


def test_uses_only_the_pool_combinations_not_values():
    torch.manual_seed(0)
    comp = create_completion("bank", MODS, P, D)
    pool = _pool([[1, 0, 1], [1, 1, 1]])
    pool2 = TrainingPool(MODS, {m: v * 1000 for m, v in pool.x.items()}, pool.observed)
    observed = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    t = torch.randn(1, 3, P, D)
    a = comp.complete(t, observed, CompletionContext(pool=pool, modalities=MODS)).tokens
    b = comp.complete(t, observed, CompletionContext(pool=pool2, modalities=MODS)).tokens
    torch.testing.assert_close(a, b)


def test_too_many_modalities_is_a_clear_error():
    with pytest.raises(ValueError, match="max_modalities"):
        create_completion("bank", [f"m{i}" for i in range(12)], P, D)
