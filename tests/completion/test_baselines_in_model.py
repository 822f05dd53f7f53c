"""mean / bank / knn inside the real MultimodalClassifier: shapes, gradients, pool-only fills."""

from __future__ import annotations

import pytest
import torch

from moe_retriever.model import ModelConfig, MultimodalClassifier

DIMS = {"a": 7, "b": 5, "c": 9}


def _batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    observed = torch.rand(n, 3, generator=g) > 0.4
    observed[torch.arange(n), torch.randint(0, 3, (n,), generator=g)] = True
    x = {
        m: torch.randn(n, f, generator=g) * observed[:, j, None]
        for j, (m, f) in enumerate(DIMS.items())
    }
    y = torch.randint(0, 3, (n,), generator=g)
    return x, observed, y


def _model(name: str) -> MultimodalClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(n_tokens=2, dim=8, n_heads=2, head_hidden=8, encoder_hidden=8, dropout=0.0)
    return MultimodalClassifier(DIMS, 3, cfg, completion=name)


@pytest.mark.parametrize("name", ["mean", "bank", "knn"])
def test_forward_backward_in_the_model(name):
    model = _model(name)
    px, pobs, _ = _batch(30, 0)
    model.set_training_pool(px, pobs)
    model.train()
    x, obs, y = _batch(12, 1)
    out = model(x, obs)
    assert out.logits.shape == (12, 3)
    assert out.tokens.shape == (12, 3, 2, 8)
    loss = torch.nn.functional.cross_entropy(out.logits, y) + out.aux_loss
    loss.backward()
    for key, p in model.encoders.named_parameters():
        assert p.grad is not None, key
    if name == "bank":
        bank = model.completion
        assert bank.base.grad is not None and bank.base.grad.abs().sum() > 0
        assert bank.delta.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["mean", "knn"])
def test_eval_fill_depends_on_the_pool_not_on_other_eval_samples(name):
    model = _model(name)
    px, pobs, _ = _batch(30, 0)
    model.set_training_pool(px, pobs)
    model.eval()
    x, obs, _ = _batch(6, 2)
    obs[0] = torch.tensor([True, False, True])
    x["b"][0] = 0.0
    with torch.no_grad():
        full = model(x, obs).tokens
        alone = model({m: v[:1] for m, v in x.items()}, obs[:1]).tokens
    torch.testing.assert_close(full[:1], alone)


def test_official_average_draws_once_at_evaluation_by_default():
    """The authors' code draws ONE supporting group per sample at evaluation; the baseline
    that keeps their behaviour must too (more draws average the fill: another method)."""

    def fill(**cfg):
        torch.manual_seed(0)
        mcfg = ModelConfig(n_tokens=2, dim=8, n_heads=2, head_hidden=8, encoder_hidden=8)
        model = MultimodalClassifier(DIMS, 3, mcfg, "official-average", cfg).eval()
        model.set_training_pool(*_batch(40, 0)[:2])
        x, obs, _ = _batch(10, 3)
        with torch.no_grad():
            return model.completion.eval_draws, model(x, obs, torch.arange(10)).tokens

    draws, default = fill()
    assert draws == 1
    assert torch.equal(default, fill(eval_draws=1)[1])
    assert not torch.equal(default, fill(eval_draws=4)[1])
