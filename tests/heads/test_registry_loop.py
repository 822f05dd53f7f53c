"""Every registered head: shapes in both missing-data modes, gradients reaching every
parameter, and a save/load round trip through the estimator; heads combine with any completion
by config (``method: i2moe`` + ``completion: {name: moe-retriever}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from heads_util import MODS, C, D, P, arch, batch, ctx

from moe_retriever.datasets import load_dataset
from moe_retriever.heads import HEADS, I2M2Head, I2MoEHead, create_head
from moe_retriever.presets import get_preset, resolve_parts
from moe_retriever.training.config import TrainConfig
from moe_retriever.training.estimator import MoERetrieverClassifier

TINY: dict[str, Any] = {
    "model": {"n_tokens": 2, "dim": 8, "n_heads": 2, "head_hidden": 8, "dropout": 0.1},
    "train": {"epochs": 2, "warmup_epochs": 1, "batch_size": 16, "patience": None},
    "runtime": {"accelerator": "cpu", "progress_bar": False, "threads": 1},
}


def _data() -> Any:
    return load_dataset(
        "synthetic",
        n_samples=60,
        n_modalities=3,
        dims=[5, 4, 6],
        n_classes=3,
        missing_rate=0.3,
        seed=0,
    )


@pytest.mark.parametrize("name", HEADS.names())
@pytest.mark.parametrize("masked", [False, True])
def test_every_head_shapes_and_gradients(name: str, masked: bool) -> None:
    torch.manual_seed(0)
    # masked mode has no completed slot to mark: no status embedding (as the model builds it)
    head = create_head(name, MODS, P, D, C, arch(status_embedding=not masked)).train()
    tokens, observed, y = batch()
    # completed mode: a mixed batch, so both rows of the status embedding are used
    train_obs = observed if not masked else torch.ones_like(observed)
    out = head(tokens, train_obs, ctx(masked, training=True, y=y))
    assert out.logits.shape == (6, C) and out.aux_loss.shape == ()
    assert isinstance(out.info.get("losses", {}), dict)
    (F.cross_entropy(out.logits, y) + out.aux_loss).backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {pname}"
    # a batch with missing modalities: finite logits, interpret tensors with B rows
    head.eval()
    ev = head(tokens, observed, ctx(masked))
    assert torch.isfinite(ev.logits).all()
    for key, value in (ev.info.get("interpret") or {}).items():
        assert value.shape[0] == 6, key


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_round_trips_through_the_estimator(name: str, tmp_path: Path) -> None:
    data = _data()
    est = MoERetrieverClassifier("zero", config=TINY, seed=0, head=name).fit(data)
    assert est.model_.head_name == name
    before = est.predict_proba(data)
    est.save(tmp_path / "m")
    again = MoERetrieverClassifier.load(tmp_path / "m")
    assert again.model_.head_name == name
    np.testing.assert_array_equal(again.predict_proba(data), before)


def test_presets_run_the_heads_in_masked_mode() -> None:
    for name, cls in (("i2m2", I2M2Head), ("i2moe", I2MoEHead)):
        preset = get_preset(name)
        assert (preset.completion, preset.head) == ("none", name)
        assert HEADS.get(name) is cls


def test_i2moe_over_moe_retriever_completion_by_config_and_estimator(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(
        {"method": "i2moe", "completion": {"name": "moe-retriever"}, "head": {"tau": 2.0}}
    )
    parts = cfg.parts()
    assert (parts.completion, parts.head, parts.head_options) == (
        "moe-retriever",
        "i2moe",
        {"tau": 2.0},
    )
    assert resolve_parts("i2moe").completion == "none"
    data = _data()
    est = MoERetrieverClassifier(method="i2moe", completion="moe-retriever", config=TINY)
    est.fit(data)
    assert est.model_.completion_name == "moe-retriever"
    assert isinstance(est.model_.head, I2MoEHead)
    assert est.model_.completion.fills  # completed mode: the head sees retrieved tokens
    summary = est.interpretation(data)
    assert summary["completion"] is not None  # router usage of the completion method
    head = summary["head"]
    assert head["experts"] == ["U_m0", "U_m1", "U_m2", "S", "R"]
    assert head["overall"]["n"] == len(data)
    frame = est.explain(data)
    assert list(frame["id"]) == list(data.ids)
    weights = frame[[c for c in frame.columns if c.startswith("weights_")]]
    assert weights.shape == (len(data), 5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(weights.mean(axis=0), head["overall"]["weights"], atol=1e-6)
    files = est.write_report(data, tmp_path)
    assert tmp_path / "interaction_weights.png" in files
