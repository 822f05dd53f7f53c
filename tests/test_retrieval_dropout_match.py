"""``model.retrieval_dropout_match``: self-supervision hides modality m with probability
min(retrieval_dropout, the training pool's missing share of m); off, every modality is hidden
at retrieval_dropout with exactly the draws it had before."""

from __future__ import annotations

import torch

from moe_retriever.model import ModelConfig, MultimodalClassifier

SMALL = dict(n_tokens=4, dim=16, n_heads=2, head_hidden=16, dropout=0.0)
DIMS = {"always": 5, "half": 4, "rare": 6}


def _pool(n: int = 400) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    obs = torch.ones(n, 3, dtype=torch.bool)
    obs[: n // 2, 1] = False  # "half" misses in 50 % of the pool
    obs[: n // 20, 2] = False  # "rare" misses in 5 %
    x = {
        m: torch.randn(n, d, generator=g) * obs[:, j, None] for j, (m, d) in enumerate(DIMS.items())
    }
    return x, obs


def _model(match: bool, p: float = 0.3) -> MultimodalClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, retrieval_dropout=p, retrieval_dropout_match=match)  # type: ignore[arg-type]
    return MultimodalClassifier(DIMS, 3, cfg, "moe-retriever").train()


def test_probability_is_capped_by_the_pool_missing_share() -> None:
    x, obs = _pool()
    model = _model(True)
    model.set_training_pool(x, obs)
    torch.testing.assert_close(model.hide_probability, torch.tensor([0.0, 0.3, 0.05]))
    off = _model(False)
    off.set_training_pool(x, obs)
    torch.testing.assert_close(off.hide_probability, torch.full((3,), 0.3))


def test_a_modality_the_data_always_has_is_never_hidden_and_rates_follow() -> None:
    x, obs = _pool()
    model = _model(True)
    model.set_training_pool(x, obs)
    assert model.hide_generator is not None
    model.hide_generator.manual_seed(1)
    full = torch.ones(20000, 3, dtype=torch.bool)
    hidden = model._draw_hidden(full)
    assert hidden is not None
    assert not bool(hidden[:, 0].any())
    rates = hidden.float().mean(dim=0)
    assert abs(float(rates[1]) - 0.3) < 0.02 and abs(float(rates[2]) - 0.05) < 0.01


def test_off_keeps_the_uniform_draws() -> None:
    """The default (off) draws exactly what a uniform ``u < retrieval_dropout`` draws."""
    x, obs = _pool()
    model = _model(False)
    model.set_training_pool(x, obs)
    assert model.hide_generator is not None
    model.hide_generator.manual_seed(3)
    hidden = model._draw_hidden(obs)
    u = torch.rand(obs.shape, generator=torch.Generator().manual_seed(3))
    eligible = obs & (obs.sum(dim=1, keepdim=True) >= 2)
    expected = eligible & (u < 0.3)
    all_hidden = (expected == eligible).all(dim=1) & eligible.any(dim=1)
    assert hidden is not None
    assert torch.equal(hidden[~all_hidden], expected[~all_hidden])
