"""Model selection and weight averaging: the undefined-metric fallback, smoothed selection,
EMA weights (issue 17, "stable training")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from moe_retriever.data.core import MultimodalData
from moe_retriever.training.config import TrainConfig
from moe_retriever.training.estimator import MoERetrieverClassifier
from moe_retriever.training.module import FALLBACK_SCORE, ClassifierModule, derived_seed


def _module(**train: Any) -> ClassifierModule:
    train = {"monitor": "val_macro_f1", **train}
    cfg = TrainConfig()
    for key, value in train.items():
        cfg.set(f"train.{key}", value)
    cfg.validate()
    return ClassifierModule(nn.Linear(2, 2), cfg, seed=0)


def _rows(values: list[float], warmup: int, monitor: str = "val_macro_f1") -> list[dict]:
    return [
        {"epoch": e, "retrieval": e >= warmup, monitor: v, "val_loss": 1.0}
        for e, v in enumerate(values)
    ]


def _select(module: ClassifierModule, rows: list[dict]) -> int:
    """Feed rows as the module does at epoch end; the epoch a max-score checkpoint keeps."""
    for row in rows:
        if module.config.train.select_smoothing > 0:
            row["val_smoothed"] = module.smoothed_monitor(row) if row["retrieval"] else math.nan
        row["select_score"] = module.select_score(row)
        module.history.append(row)
    scores = [r["select_score"] for r in module.history]
    return int(np.argmax(scores))  # first maximum, as ModelCheckpoint (strict improvement)


def test_smoothed_selection_picks_the_hand_computed_epoch() -> None:
    # warm-up epoch 0 (its 0.95 must never count), then raw validation macro-F1
    # 0.2, 0.9, 0.3, 0.8, 0.8 at epochs 1..5. Raw selection: epoch 2 (one lucky jump).
    values = [0.95, 0.2, 0.9, 0.3, 0.8, 0.8]
    assert _select(_module(select_smoothing=0.0), _rows(values, warmup=1)) == 2
    # smoothing a = 0.5: s1 = 0.2, s2 = 0.55, s3 = 0.425, s4 = 0.6125, s5 = 0.70625 -> epoch 5
    module = _module(select_smoothing=0.5)
    assert _select(module, _rows(values, warmup=1)) == 5
    smoothed = [r["val_smoothed"] for r in module.history[1:]]
    np.testing.assert_allclose(smoothed, [0.2, 0.55, 0.425, 0.6125, 0.70625])
    assert math.isnan(module.history[0]["val_smoothed"])


def test_smoothed_val_loss_is_minimised() -> None:
    module = _module(select_smoothing=0.5, monitor="val_loss")
    rows = [
        {"epoch": e, "retrieval": e >= 1, "val_loss": v}
        for e, v in enumerate([0.1, 1.0, 0.4, 0.9, 0.5])
    ]
    # s = 1.0, 0.7, 0.8, 0.65 -> lowest smoothed loss at epoch 4 (raw minimum: epoch 2)
    assert _select(module, rows) == 4


def test_undefined_metric_falls_back_to_val_loss_after_warmup() -> None:
    module = _module(monitor="val_auroc")
    rows = [
        {"epoch": e, "retrieval": e >= 2, "val_auroc": math.nan, "val_loss": loss}
        for e, loss in enumerate([0.1, 0.2, 0.9, 0.6, 0.7])
    ]
    # warm-up epochs 0-1 stay -inf even with the lowest loss; epoch 3 has the lowest
    # post-warm-up validation loss
    assert _select(module, rows) == 3
    assert rows[0]["select_score"] == -math.inf
    assert rows[3]["select_score"] == pytest.approx(FALLBACK_SCORE - 0.6)
    # any defined value outranks the fallback; a NaN loss too falls back to the latest epoch
    assert (
        module.select_score({"epoch": 9, "retrieval": True, "val_auroc": 0.0})
        > (rows[3]["select_score"])
    )
    late = {"epoch": 7, "retrieval": True, "val_auroc": math.nan, "val_loss": math.nan}
    early = {**late, "epoch": 6}
    assert -math.inf < module.select_score(early) < module.select_score(late) < FALLBACK_SCORE - 50


def test_undefined_monitor_never_selects_a_warmup_epoch(
    splits: tuple[MultimodalData, ...], tiny: dict
) -> None:
    """AUROC on a one-class validation split is NaN in every epoch. Before the fallback
    every epoch scored -inf and ModelCheckpoint kept warm-up epoch 0 as the best model."""
    train, val, _ = splits
    one_class = val.select_ids([i for i, y in zip(val.ids, val.y, strict=True) if y == 0])
    tiny["train"].update({"epochs": 4, "warmup_epochs": 2, "monitor": "val_auroc"})
    est = MoERetrieverClassifier(config=tiny, seed=0).fit(train, one_class)
    assert all(math.isnan(r["val_auroc"]) for r in est.history_)
    post = [r for r in est.history_ if r["retrieval"]]
    assert est.best_epoch_ >= 2
    assert est.best_epoch_ == min(post, key=lambda r: r["val_loss"])["epoch"]


def test_ema_weights_are_validated_selected_and_kept(
    splits: tuple[MultimodalData, ...], tiny: dict, tmp_path: Path
) -> None:
    train, val, test = splits
    tiny["train"].update({"weight_average": "ema", "ema_decay": 0.9})
    est = MoERetrieverClassifier(config=tiny, seed=0).fit(train, val, run_dir=tmp_path)
    ckpt = torch.load(
        tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False
    )
    sd = ckpt["state_dict"]
    assert int(sd["ema_model.n_averaged"]) > 1
    fitted = est.model_.state_dict()
    live = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    ema = {
        k[len("ema_model.module.") :]: v
        for k, v in sd.items()
        if k.startswith("ema_model.") and k != "ema_model.n_averaged"
    }
    assert set(ema) == set(fitted)
    for k in fitted:
        torch.testing.assert_close(fitted[k], ema[k])
    differs = [k for k in live if live[k].is_floating_point() and not torch.equal(live[k], ema[k])]
    assert differs, "the average must differ from the last weights"
    # the fitted model (EMA weights) differs in its predictions from a plain fit
    plain = MoERetrieverClassifier(
        config={**tiny, "train": {**tiny["train"], "weight_average": "none"}}, seed=0
    ).fit(train, val)
    assert not np.allclose(est.predict_proba(test), plain.predict_proba(test))
    # save / load keeps the averaged weights
    again = MoERetrieverClassifier.load(est.save(tmp_path / "saved"))
    np.testing.assert_allclose(again.predict_proba(test), est.predict_proba(test), rtol=1e-6)


def test_ema_update_rule_and_warmup() -> None:
    """No averaging during warm-up; then the first update copies, the next ones lerp."""
    module = _module(weight_average="ema", ema_decay=0.75, warmup_epochs=2)
    net = module.model
    assert module.ema_model is not None and module.eval_model() is net
    w0 = net.weight.detach().clone()
    module.update_weight_average(retrieval=False)
    assert int(module.ema_model.n_averaged) == 0
    module.update_weight_average(retrieval=True)
    torch.testing.assert_close(module.ema_model.module.weight, w0)
    with torch.no_grad():
        net.weight.add_(1.0)
    module.update_weight_average(retrieval=True)
    torch.testing.assert_close(module.ema_model.module.weight, 0.75 * w0 + 0.25 * (w0 + 1.0))
    assert module.eval_model() is module.ema_model.module


def test_the_weight_average_shares_the_training_pool_and_checkpoints_store_it_once(
    tmp_path: Path,
) -> None:
    """The EMA copy holds the live model's pool module (no second copy of the training data),
    never averages it, shares its cached structures, and a checkpoint writes it once."""
    from moe_retriever.model import ModelConfig, MultimodalClassifier

    torch.manual_seed(0)
    dims = {"a": 3, "b": 4}
    obs = torch.rand(40, 2) < 0.7
    obs[obs.sum(1) == 0, 0] = True
    x = {m: torch.randn(40, d) * obs[:, j, None] for j, (m, d) in enumerate(dims.items())}
    model = MultimodalClassifier(
        dims, 2, ModelConfig(n_tokens=2, dim=8, n_heads=2), "moe-retriever"
    )
    model.set_training_pool(x, obs)
    cfg = TrainConfig()
    cfg.set("train.weight_average", "ema")
    module = ClassifierModule(model, cfg, seed=0)
    ema = module.ema_model
    assert ema is not None and ema.module.pool is model.pool
    assert ema.module.training_pool() is model.training_pool()  # one view, one cache
    pool_before = {k: v.clone() for k, v in model.pool.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    module.update_weight_average(retrieval=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    module.update_weight_average(retrieval=True)
    for k, v in model.pool.state_dict().items():
        assert torch.equal(v, pool_before[k])
    w = dict(model.named_parameters())
    e = dict(ema.module.named_parameters())
    assert all(not torch.equal(w[k], e[k]) for k in w)  # the weights are averaged
    torch.save({"state_dict": module.state_dict()}, tmp_path / "m.ckpt")
    sd = torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"]
    key = "pool." + model._keys["a"]
    assert sd["model." + key].data_ptr() == sd["ema_model.module." + key].data_ptr()
    fresh = ClassifierModule(
        MultimodalClassifier(dims, 2, ModelConfig(n_tokens=2, dim=8, n_heads=2), "moe-retriever"),
        cfg,
        seed=0,
    )
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.model.pool.state_dict()[model._keys["a"]], x["a"])
    assert fresh.ema_model is not None and fresh.ema_model.module.pool is fresh.model.pool


def test_new_train_options_are_validated() -> None:
    cfg = TrainConfig()
    with pytest.raises(ValueError, match="select_smoothing"):
        cfg.set("train.select_smoothing", 1.0)
        cfg.validate()
    cfg = TrainConfig()
    with pytest.raises(ValueError, match="ema_decay"):
        cfg.set("train.ema_decay", 0.0)
        cfg.validate()
    with pytest.raises(ValueError, match="weight_average"):
        TrainConfig().set("train.weight_average", "swa")


def test_ensemble_of_two_averages_its_members_exactly(
    splits: tuple[MultimodalData, ...], tiny: dict, tmp_path: Path
) -> None:
    train, val, test = splits
    tiny["train"]["ensemble"] = 2
    ens = MoERetrieverClassifier(config=tiny, seed=3).fit(train, val, run_dir=tmp_path / "run")
    single = {**tiny, "train": {**tiny["train"], "ensemble": 1}}
    m0 = MoERetrieverClassifier(config=single, seed=3).fit(train, val)
    m1 = MoERetrieverClassifier(config=single, seed=derived_seed(3, 1)).fit(train, val)
    p0, p1 = m0.predict_proba(test), m1.predict_proba(test)
    assert not np.allclose(p0, p1)  # two different initialisations
    np.testing.assert_allclose(ens.predict_proba(test), (p0 + p1) / 2, rtol=1e-6, atol=1e-7)
    # member 0 is the estimator's own model: tokens and history are member 0's
    np.testing.assert_allclose(ens.retrieve(test), m0.retrieve(test), rtol=1e-6, atol=1e-6)
    assert ens.best_epoch_ == m0.best_epoch_ and len(ens.extra_members_) == 1
    assert (tmp_path / "run" / "members" / "1" / "history.csv").is_file()
    # save / load keeps every member and round-trips identical predictions
    again = MoERetrieverClassifier.load(ens.save(tmp_path / "saved"))
    assert (tmp_path / "saved" / "members" / "1" / "model.pt").is_file()
    assert len(again.extra_members_) == 1
    np.testing.assert_array_equal(again.predict_proba(test), ens.predict_proba(test))
    with pytest.raises(ValueError, match="ensemble"):
        MoERetrieverClassifier(config=tiny, seed=3).fit(train, val, ckpt_path=tmp_path / "x")
