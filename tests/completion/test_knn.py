"""The ``knn`` baseline: mean tokens of the k most similar training samples."""

from __future__ import annotations

import torch
from torch import nn

from moe_retriever.completion.base import CompletionContext, TrainingPool, create_completion
from moe_retriever.completion.knn import KNNCompletion

MODS = ["a", "b", "c"]
P, D = 1, 2


def _identity_encode(m: str, v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, P, D)


def _pool() -> TrainingPool:
    # modality a: direction; modality b: the value to retrieve; c: another direction
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    b = torch.tensor([[10.0, 0.0], [12.0, 0.0], [0.0, 10.0], [0.0, 12.0], [0.0, 0.0]])
    c = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    obs = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    b = b * obs[:, 1:2]
    return TrainingPool(MODS, {"a": a, "b": b, "c": c}, obs)


def test_hand_case_neighbours_on_shared_modalities():
    comp = create_completion("knn", MODS, P, D, k=2)
    assert isinstance(comp, KNNCompletion)
    ctx = CompletionContext(encode=_identity_encode, pool=_pool(), training=False, modalities=MODS)
    tokens = torch.zeros(2, 3, P, D)
    tokens[0, 0, 0] = torch.tensor([1.0, 0.02])  # like pool rows 0,1 on a
    tokens[1, 2, 0] = torch.tensor([1.0, 0.0])  # like pool rows 2,3 on c
    observed = torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.bool)
    out = comp.complete(tokens, observed, ctx)
    # sample 0 missing b: neighbours among pool rows observing b -> rows 0 and 1
    torch.testing.assert_close(out.tokens[0, 1, 0], torch.tensor([11.0, 0.0]))
    # sample 1 missing b: rows 2 and 3 (similar on c)
    torch.testing.assert_close(out.tokens[1, 1, 0], torch.tensor([0.0, 11.0]))
    assert torch.equal(out.tokens[observed], tokens[observed])
    assert out.info["no_shared"] == 0


def test_fill_is_an_average_of_pool_members_only():
    """Whatever the batch holds, fills are averages of k pool encodings (no eval leakage)."""
    pool = _pool()
    comp = create_completion("knn", MODS, P, D, k=2)
    ctx = CompletionContext(encode=_identity_encode, pool=pool, training=False, modalities=MODS)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(6, 3, P, D, generator=g)
    observed = torch.tensor([[1, 0, 1]] * 6, dtype=torch.bool)
    out = comp.complete(tokens, observed, ctx)
    have_b = pool.x["b"][pool.observed[:, 1]]
    pair_means = {
        tuple(((have_b[i] + have_b[j]) / 2).tolist())
        for i in range(len(have_b))
        for j in range(len(have_b))
        if i < j
    }
    for i in range(6):
        assert tuple(out.tokens[i, 1, 0].tolist()) in pair_means


def test_training_excludes_the_sample_itself():
    pool = _pool()
    comp = create_completion("knn", MODS, P, D, k=1)
    # the batch is pool row 0 with b hidden (as modality dropout would do)
    tokens = torch.stack([pool.x[m][0].view(P, D) for m in MODS])[None]
    observed = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    train = CompletionContext(encode=_identity_encode, pool=pool, training=True, modalities=MODS)
    evalc = CompletionContext(encode=_identity_encode, pool=pool, training=False, modalities=MODS)
    out_train = comp.complete(tokens, observed, train)
    out_eval = comp.complete(tokens, observed, evalc)
    torch.testing.assert_close(out_eval.tokens[0, 1, 0], pool.x["b"][0])  # itself at eval
    assert not torch.allclose(out_train.tokens[0, 1, 0], pool.x["b"][0])
    assert out_train.info["excluded_self"] >= 1


def test_gradient_reaches_the_encoder_and_eval_is_deterministic():
    torch.manual_seed(0)
    enc = nn.ModuleDict({m: nn.Linear(2, P * D) for m in MODS})

    def encode(m: str, v: torch.Tensor) -> torch.Tensor:
        return enc[m](v).view(-1, P, D)

    pool = _pool()
    comp = create_completion("knn", MODS, P, D, k=3, max_pool=3)
    observed = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    tokens = torch.randn(2, 3, P, D)
    ctx = CompletionContext(encode=encode, pool=pool, training=False, modalities=MODS)
    a = comp.complete(tokens, observed, ctx).tokens
    b = comp.complete(tokens, observed, ctx).tokens
    torch.testing.assert_close(a, b)
    a.sum().backward()
    assert enc["b"].weight.grad is not None and enc["b"].weight.grad.abs().sum() > 0
    assert enc["a"].weight.grad is not None  # sample 1 misses a


def test_candidates_without_shared_modality_rank_last_and_are_counted():
    pool = _pool()
    # make a pool where nobody observing b shares a modality with the query (only c observed)
    obs = pool.observed.clone()
    obs[:4, 2] = False
    pool2 = TrainingPool(MODS, {**pool.x, "c": pool.x["c"] * obs[:, 2:3]}, obs)
    comp = create_completion("knn", MODS, P, D, k=2)
    ctx = CompletionContext(encode=_identity_encode, pool=pool2, training=False, modalities=MODS)
    tokens = torch.zeros(1, 3, P, D)
    tokens[0, 2, 0] = torch.tensor([1.0, 0.0])
    out = comp.complete(tokens, torch.tensor([[0, 0, 1]], dtype=torch.bool), ctx)
    # b: both neighbours share nothing; a: one of the two (pool row 4 shares c)
    assert out.info["no_shared"] == 3
    assert torch.isfinite(out.tokens).all()
