"""support2 and smart: real clinical cohorts read from the installed SurvSet package (extra
``cohorts``). Skipped when SurvSet is not installed; the missing-package error is tested
either way."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from moe_retriever.datasets import _survset, load_dataset
from moe_retriever.datasets.smart import MODALITIES as SMART_MODALITIES
from moe_retriever.datasets.support2 import EXCLUDED_COLUMNS, MODALITIES

HAVE_SURVSET = importlib.util.find_spec("SurvSet") is not None
needs_survset = pytest.mark.skipif(not HAVE_SURVSET, reason="extra 'cohorts' (survset) absent")


def _source(name: str) -> pd.DataFrame:
    return _survset.read_survset(name, name)


def test_missing_package_error_names_the_extra(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        _survset.importlib.util,
        "find_spec",
        lambda n, *a, **k: None if n == "SurvSet" else real(n, *a, **k),
    )
    for name in ("support2", "smart"):
        with pytest.raises(ImportError, match=r"moe-retriever\[cohorts\]"):
            load_dataset(name)


@needs_survset
def test_support2_facts() -> None:
    d = load_dataset("support2")
    assert d.n_samples == 9105 and d.modalities == MODALITIES
    assert d.dims == {
        "demographics": 9,
        "comorbidity": 3,
        "vitals": 6,
        "labs": 7,
        "blood_gas": 2,
        "functional": 2,
    }
    assert d.class_names == ["ARF/MOSF", "COPD/CHF/Cirrhosis", "Cancer", "Coma"]
    counts = np.bincount(d.y)
    assert counts.tolist() == [4227, 2862, 1420, 596]
    assert counts.min() / counts.sum() < 0.10
    assert d.observed.sum(axis=0).tolist() == [9105, 9105, 9105, 9104, 6823, 7040]
    assert int(d.observed.all(axis=1).sum()) == 5285
    # no outcome, model score or label-defining column among the features
    names = {c.split("=")[0] for cols in d.feature_names.values() for c in cols}
    assert not names & {c.removeprefix("num_").removeprefix("fac_") for c in EXCLUDED_COLUMNS}
    assert "ca" not in names and d.attrs["n_unlabelled_dropped"] == 0


@needs_survset
def test_support2_masks_match_source() -> None:
    d = load_dataset("support2")
    src = _source("support2").loc[list(d.ids)]
    groups = {"blood_gas": ["num_pafi", "num_ph"], "functional": ["num_adlp", "num_adls"]}
    for m, cols in groups.items():
        expected = src[cols].notna().any(axis=1).to_numpy()
        assert np.array_equal(d.observed[:, d.modalities.index(m)], expected)
    j = d.feature_names["labs"].index("alb")
    labs = d.X["labs"][:, j]
    assert np.array_equal(np.isnan(labs), src["num_alb"].isna().to_numpy())
    assert np.allclose(labs[~np.isnan(labs)], src["num_alb"].dropna().to_numpy(), rtol=1e-6)
    dz = src["fac_dzclass"].to_numpy()
    assert (np.asarray(d.class_names)[d.y] == dz).all()


@needs_survset
def test_support2_death_label_keeps_cancer_status() -> None:
    d = load_dataset("support2", label="death_6m")
    assert d.class_names == ["alive_6m", "dead_6m"]
    assert np.bincount(d.y).tolist() == [4840, 4265]
    assert "ca" in d.feature_names["comorbidity"]
    with pytest.raises(ValueError, match="unknown label"):
        load_dataset("support2", label="hospdead")


@needs_survset
def test_smart_facts_and_masks() -> None:
    d = load_dataset("smart")
    assert d.n_samples == 3873 and d.modalities == SMART_MODALITIES
    assert d.dims == {
        "history": 6,
        "lifestyle": 7,
        "anthropometry": 3,
        "bp_office": 2,
        "bp_device": 2,
        "labs": 8,
        "ultrasound": 2,
    }
    assert d.class_names == ["no_event", "event"]
    assert np.bincount(d.y).tolist() == [3413, 460]
    assert d.observed.sum(axis=0).tolist() == [3873, 3854, 3873, 2652, 2375, 3869, 3861]
    src = _source("smarto").loc[list(d.ids)]
    for m, cols in {
        "bp_office": ["num_systbp", "num_diastbp"],
        "bp_device": ["num_systh", "num_diasth"],
    }.items():
        expected = src[cols].notna().any(axis=1).to_numpy()
        assert np.array_equal(d.observed[:, d.modalities.index(m)], expected)
    assert np.array_equal(d.y, src["event"].to_numpy())
    lifestyle = d.X["lifestyle"]
    smoking = lifestyle[:, :3]
    observed = ~np.isnan(smoking).any(axis=1)
    assert (smoking[observed].sum(axis=1) == 1).all()
    assert int((~observed).sum()) == int((src["fac_smoking"].astype(str) == "missing").sum())
