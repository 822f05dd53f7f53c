"""``model.ensemble_k``: TabM members in the head's classifier (heads/ensemble.py).

Shapes and the mean-probability logits, k = 1 is the model of before, gradients reach every
parameter (and each member's own adapters from its own loss), every method preset either
trains with k > 1 or refuses it in one line, and the estimator fits, predicts, saves and loads
an ensemble model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moe_retriever.data.splits import apply_split, make_split
from moe_retriever.datasets import load_dataset
from moe_retriever.heads.ensemble import mean_probability_logits, member_targets
from moe_retriever.model import ModelConfig, MultimodalClassifier
from moe_retriever.presets import list_presets
from moe_retriever.training.config import TrainConfig
from moe_retriever.training.estimator import MoERetrieverClassifier
from moe_retriever.training.module import build_model

SMALL = dict(n_tokens=4, dim=16, n_heads=2, head_hidden=16, dropout=0.0)
DIMS = {"a": 10, "b": 6, "c": 13}
RETRIEVER = {"n_candidates": 2, "n_shared": 2, "top_k": 4}  # every expert hit by a small batch


def _data(n: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, len(DIMS), generator=g) < 0.6
    obs[obs.sum(1) == 0, 0] = True
    obs[:3] = torch.tensor([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    x = {
        m: torch.randn(n, d, generator=g) * obs[:, j, None] for j, (m, d) in enumerate(DIMS.items())
    }
    return x, obs, torch.randint(0, 3, (n,), generator=g)


def _model(k: int, completion: str = "moe-retriever", cfg=None, **kw) -> MultimodalClassifier:
    torch.manual_seed(0)
    return MultimodalClassifier(
        DIMS, 3, ModelConfig(**{**SMALL, **kw}, ensemble_k=k), completion, cfg
    )


def _loss(out, y: torch.Tensor) -> torch.Tensor:
    """The training module's objective: mean of the members' cross-entropies + aux_loss."""
    z = out.member_logits
    if z is None:
        return F.cross_entropy(out.logits, y) + out.aux_loss
    return F.cross_entropy(z.flatten(0, 1), member_targets(y, z.shape[1])) + out.aux_loss


def _no_grad(model: torch.nn.Module) -> list[str]:
    return [
        n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0
    ]


@pytest.mark.parametrize("k", [2, 4, 32])
def test_shapes_and_logits_are_the_log_of_the_members_mean_probability(k: int) -> None:
    x, obs, _ = _data()
    model = _model(k, "moe-retriever", RETRIEVER)
    model.set_training_pool(x, obs)
    for train in (True, False):
        model.train(train)
        out = model(x, obs, torch.arange(40))
        assert out.member_logits is not None and out.member_logits.shape == (40, k, 3)
        assert out.logits.shape == (40, 3)
        mean_p = torch.softmax(out.member_logits, -1).mean(1)
        torch.testing.assert_close(torch.softmax(out.logits, -1), mean_p)
        torch.testing.assert_close(out.logits.exp().sum(1), torch.ones(40))
    # the members differ (random-sign start scaling, independent output layers)
    assert not torch.allclose(out.member_logits[:, 0], out.member_logits[:, 1])


def test_k1_is_the_single_model_of_before() -> None:
    """Same parameters, same initialisation, same outputs as the default config; and a k > 1
    model shares every parameter before the classifier with it (built in the same order)."""
    x, obs, _ = _data()
    torch.manual_seed(0)
    plain = MultimodalClassifier(DIMS, 3, ModelConfig(**SMALL))
    one = _model(1)
    four = _model(4)
    sd_plain, sd_one, sd_four = plain.state_dict(), one.state_dict(), four.state_dict()
    assert list(sd_plain) == list(sd_one)
    assert all(torch.equal(sd_plain[n], sd_one[n]) for n in sd_plain)
    names = [n for n, _ in one.head.classifier.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias"]  # the plain nn.Sequential
    shared = [n for n in sd_one if not n.startswith("head.classifier.")]
    assert all(torch.equal(sd_one[n], sd_four[n]) for n in shared)
    for m in (plain, one):
        m.set_training_pool(x, obs)
        m.eval()
    a, b = plain(x, obs, torch.arange(40)), one(x, obs, torch.arange(40))
    assert b.member_logits is None and torch.equal(a.logits, b.logits)


@pytest.mark.parametrize(
    ("completion", "cfg"),
    [
        ("moe-retriever", {**RETRIEVER, "routing": "pooled"}),
        ("moe-retriever", {**RETRIEVER, "routing": "tokens", "pooling": "attention"}),
        ("zero", {}),
        ("none", {}),
    ],
)
@pytest.mark.parametrize("fusion_moe", [False, True])
def test_every_parameter_gets_a_gradient(completion: str, cfg: dict, fusion_moe: bool) -> None:
    """Retrieval on, self-supervision on: encoders, retriever, fusion (and its MoE) and every
    member's adapters get a gradient from the ensemble objective; the auxiliary losses are in."""
    x, obs, y = _data()
    model = _model(
        4,
        completion,
        cfg,
        fusion_moe=fusion_moe,
        fusion_experts=2,
        fusion_top_k=2,
        retrieval_dropout=0.5,
        align_weight=1.0,
    ).train()
    model.set_training_pool(x, obs)
    out = model({m: v[:20] for m, v in x.items()}, obs[:20], pool_index=torch.arange(20))
    if completion == "moe-retriever" or fusion_moe:
        assert float(out.aux_loss.detach()) > 0
    _loss(out, y[:20]).backward()
    assert _no_grad(model) == []


def test_each_member_learns_from_its_own_prediction() -> None:
    """The loss of member j moves the shared weights and member j's adapters, not member i's."""
    x, obs, y = _data()
    model = _model(4, "zero").train()
    out = model(x, obs)
    assert out.member_logits is not None
    F.cross_entropy(out.member_logits[:, 2], y).backward()
    first, last = model.head.classifier[1], model.head.classifier[4]
    for p in (first.r, first.s, first.bias, last.weight, last.bias):
        assert p.grad is not None
        norms = p.grad.flatten(1).abs().sum(1)
        assert float(norms[2]) > 0 and float(norms[[0, 1, 3]].sum()) == 0
    assert float(first.weight.grad.abs().sum()) > 0  # the shared weight


def test_training_loss_is_the_mean_of_the_members_losses() -> None:
    z = torch.randn(8, 5, 3)
    y = torch.randint(0, 3, (8,))
    w = torch.tensor([0.5, 1.0, 2.0])
    for weight in (None, w):
        flat = F.cross_entropy(z.flatten(0, 1), member_targets(y, 5), weight=weight)
        per = torch.stack([F.cross_entropy(z[:, j], y, weight=weight) for j in range(5)])
        torch.testing.assert_close(flat, per.mean())
    torch.testing.assert_close(mean_probability_logits(z).exp(), torch.softmax(z, -1).mean(1))


@pytest.mark.parametrize("method", list_presets())
def test_every_preset_trains_with_k4_or_refuses_in_one_line(method: str) -> None:
    """Each method preset: the same parameters get gradients with k = 4 as with k = 1 (plus
    the members'), or the head refuses ``model.ensemble_k`` in one line."""
    x, obs, y = _data()
    missing = {}
    for k in (1, 4):
        cfg = TrainConfig.from_dict({"method": method, "model": {**SMALL, "ensemble_k": k}})
        torch.manual_seed(0)
        try:
            model = build_model(cfg, DIMS, 3, seed=0)
        except ValueError as err:
            assert k == 4 and method in ("i2m2", "i2moe")
            assert "model.ensemble_k" in str(err) and "\n" not in str(err)
            return
        assert method not in ("i2m2", "i2moe") or k == 1
        model.set_training_pool(x, obs)
        model.train()
        out = model(x, obs, pool_index=torch.arange(40), y=y)
        assert (out.member_logits is None) == (k == 1)
        _loss(out, y).backward()
        missing[k] = [n for n in _no_grad(model) if not n.startswith("head.classifier.")]
        assert not any(n.startswith("head.classifier.") for n in _no_grad(model))
    assert missing[4] == missing[1]


def test_a_head_module_without_ensemble_support_is_refused() -> None:
    from moe_retriever.heads import create_head

    arch = ModelConfig(**SMALL, ensemble_k=3)
    with pytest.raises(ValueError, match=r"does not support model\.ensemble_k"):
        create_head("i2m2", list(DIMS), 4, 16, 3, arch)
    head = create_head("i2m2", list(DIMS), 4, 16, 3, ModelConfig(**SMALL))
    with pytest.raises(ValueError, match=r"does not support model\.ensemble_k"):
        MultimodalClassifier(DIMS, 3, arch, "none", head=head)
    with pytest.raises(ValueError, match="ensemble_k must be >= 1"):
        TrainConfig.from_dict({"model": {"ensemble_k": 0}}).validate()


def test_estimator_fit_predict_save_load(tmp_path: Path) -> None:
    data = load_dataset(
        "synthetic",
        n_samples=90,
        n_modalities=3,
        dims=[8, 6, 10],
        n_classes=3,
        missing_rate=0.3,
        seed=0,
    )
    train, val, test = apply_split(data, make_split(data, seed=0))
    config = {
        "model": {**SMALL, "ensemble_k": 4},
        "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "patience": None},
        "runtime": {"accelerator": "cpu", "progress_bar": False, "threads": 1},
    }
    est = MoERetrieverClassifier(config=config, seed=0).fit(train, val)
    assert est.model_.config.ensemble_k == 4
    assert all(np.isfinite(r["train_loss"]) for r in est.history_)
    proba = est.predict_proba(test)
    assert proba.shape == (len(test), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    est.save(tmp_path / "m")
    again = MoERetrieverClassifier.load(tmp_path / "m")
    assert again.model_.config.ensemble_k == 4
    np.testing.assert_array_equal(again.predict_proba(test), proba)


def test_benchmark_script_settings_and_relative_costs() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ensemble_k.py"
    spec = importlib.util.spec_from_file_location("ensemble_k_script", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.settings([1, 4], [1, 5]) == {
        "k=1": {"model.ensemble_k": 1},
        "k=4": {"model.ensemble_k": 4},
        "N=5": {"train.ensemble": 5},
    }
    runs = [
        {"seed": s, "macro_f1": f, "balanced_accuracy": f, "accuracy": f, "auroc": f}
        | {"fit_s": 10.0, "step_s_median": t}
        for s, f, t in [(0, 0.5, 0.1), (1, 0.7, 0.3)]
    ]
    res = {"overrides": {}, "runs": runs}
    results = {"k=1": mod.entry(res)}
    more = {"seed": 2, **{k: 0.6 for k in mod.METRICS}, "fit_s": 10.0, "step_s_median": 0.2}
    results["k=1"] = mod.entry({"overrides": {}, "runs": [more]}, results["k=1"])
    assert results["k=1"]["seeds"] == [0, 1, 2]  # seeds added later are merged
    four = [{**r, "fit_s": 15.0, "step_s_median": 0.4} for r in runs]
    results["k=4"] = mod.entry({"overrides": {"x": 1}, "runs": four})
    mod.relative(results)
    assert results["k=1"]["step_s_median"] == pytest.approx(0.2)
    assert results["k=4"]["step_rel_k1"] == pytest.approx(2.0)
    assert results["k=4"]["fit_rel_k1"] == pytest.approx(1.5)
    assert results["k=1"]["macro_f1_mean"] == pytest.approx(0.6)
    assert "| k=4 | 2 |" in mod.table(results)
