"""Sparse MoE: eligibility, dispatch equals a dense reference, balance loss by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_retriever.nn.moe import SparseMoE, cv_squared


def _dense_reference(moe: SparseMoE, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor):
    out = torch.zeros(x.shape[0], moe.out_dim)
    for t in range(x.shape[0]):
        for e, g in zip(idx[t].tolist(), w[t].tolist()):
            if e < 0:
                continue
            h = F.gelu(x[t] @ moe.w1[e] + moe.b1[e])
            out[t] += g * (h @ moe.w2[e] + moe.b2[e])
    return out


@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(1, 40),
    E=st.integers(2, 10),
    k=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    density=st.floats(0.05, 1.0),
)
def test_ineligible_experts_are_never_selected(
    T: int, E: int, k: int, seed: int, density: float
) -> None:
    k = min(k, E)
    g = torch.Generator().manual_seed(seed)
    moe = SparseMoE(6, E, k, hidden=5).train()
    with torch.no_grad():  # non-trivial gates and noise
        moe.w_gate.normal_(0, 3, generator=g)
        moe.w_noise.normal_(0, 3, generator=g)
    x = torch.randn(T, 6, generator=g, requires_grad=True)
    eligible = torch.rand(T, E, generator=g) < density
    eligible[torch.arange(T), torch.randint(0, E, (T,), generator=g)] = True
    torch.manual_seed(seed)
    res = moe(x, eligible)
    chosen = res.expert_index
    real = chosen >= 0
    assert bool(eligible.gather(1, chosen.clamp_min(0))[real].all())
    # every token uses min(k, #eligible) experts, each once
    assert torch.equal(real.sum(1), eligible.sum(1).clamp_max(k))
    assert torch.allclose(res.expert_weight.sum(1), torch.ones(T))
    assert bool((res.expert_weight[~real] == 0).all())
    # experts eligible for no token receive no gradient at all
    (res.output.sum() + res.balance_loss).backward()
    never = ~eligible.any(0)
    assert float(moe.w1.grad[never].abs().sum()) == 0.0
    assert torch.isfinite(moe.w_gate.grad).all() and torch.isfinite(moe.w_noise.grad).all()


@pytest.mark.parametrize("dispatch", ["padded", "loop", "tiles"])
def test_dispatch_equals_dense_reference(dispatch: str) -> None:
    torch.manual_seed(0)
    moe = SparseMoE(8, 6, 3, hidden=16, dispatch=dispatch, tile=4).eval()
    with torch.no_grad():
        moe.w_gate.normal_()
    x = torch.randn(25, 8)
    eligible = torch.rand(25, 6) > 0.3
    eligible[:, 0] = True
    res = moe(x, eligible)
    ref = _dense_reference(moe, x, res.expert_index, res.expert_weight)
    torch.testing.assert_close(res.output, ref, atol=1e-5, rtol=1e-5)
    assert int(res.counts.sum()) == int((res.expert_index >= 0).sum())


def test_noise_only_in_training_and_switchable() -> None:
    torch.manual_seed(0)
    moe = SparseMoE(4, 5, 2)
    with torch.no_grad():
        moe.w_noise.fill_(2.0)
    x = torch.randn(30, 4)
    moe.eval()
    a, b = moe(x).expert_index, moe(x).expert_index
    assert torch.equal(a, b)
    moe.train()
    assert not all(torch.equal(moe(x).expert_index, a) for _ in range(5))
    moe.noisy_gating = False
    assert torch.equal(moe(x).expert_index, a)


def _cv2(values: list[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return var / (mean**2 + 1e-10)


def test_balance_loss_matches_hand_computation() -> None:
    """3 tokens, 3 experts, top-2, noise off: importance = summed gates, load = counts."""
    moe = SparseMoE(3, 3, 2, noisy_gating=False).train()
    logits = [[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 3.0]]
    with torch.no_grad():
        moe.w_gate.copy_(torch.tensor(logits).T)  # x = identity rows -> logits as given
    res = moe(torch.eye(3))
    # hand: softmax over the two largest logits of each row
    importance = [0.0, 0.0, 0.0]
    load = [0.0, 0.0, 0.0]
    for row in logits:
        top = sorted(range(3), key=lambda e: -row[e])[:2]
        z = sum(math.exp(row[e]) for e in top)
        for e in top:
            importance[e] += math.exp(row[e]) / z
            load[e] += 1
    expected = _cv2(importance) + _cv2(load)
    assert float(res.balance_loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_balance_loss_counts_only_eligible_experts_per_group() -> None:
    """Two groups with disjoint eligible sets; ineligible experts (zero importance) must not
    inflate the loss: it equals the mean of the two groups' own losses."""
    moe = SparseMoE(4, 4, 1, noisy_gating=False).train()
    with torch.no_grad():
        moe.w_gate.copy_(torch.eye(4))
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    eligible = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]).bool()
    group = torch.tensor([0, 0, 0, 1])
    res = moe(x, eligible, group, n_groups=2)
    # group 0: experts {0, 1}, importance = load = [2, 1]; group 1: experts {2, 3}: [1, 0]
    expected = (2 * _cv2([2.0, 1.0]) + 2 * _cv2([1.0, 0.0])) / 2
    assert float(res.balance_loss.detach()) == pytest.approx(expected, rel=1e-5)
    # over all four experts (the research code's defect 5) the value would differ
    assert expected != pytest.approx(2 * _cv2([2.0, 1.0, 1.0, 0.0]))


def test_balance_loss_has_gradient_to_the_gate() -> None:
    torch.manual_seed(0)
    moe = SparseMoE(8, 6, 2).train()
    res = moe(torch.randn(40, 8))
    res.balance_loss.backward()
    assert float(moe.w_gate.grad.abs().sum()) > 0
    assert float(moe.w_noise.grad.abs().sum()) > 0  # through the smooth load estimator


def test_cv_squared_masked() -> None:
    v = torch.tensor([[1.0, 3.0, 100.0], [5.0, 5.0, 5.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    out = cv_squared(v, m)
    assert float(out[0]) == pytest.approx(_cv2([1.0, 3.0]))
    assert float(out[1]) == 0.0
    assert float(cv_squared(v[:1], torch.tensor([[1, 0, 0]]).bool())[0]) == 0.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="top_k"):
        SparseMoE(4, 3, 4)
    with pytest.raises(ValueError, match="dispatch"):
        SparseMoE(4, 3, 2, dispatch="magic")
    with pytest.raises(ValueError, match="eligible"):
        SparseMoE(4, 3, 2)(torch.randn(5, 4), torch.ones(5, 2, dtype=torch.bool))
