"""Preprocessor: fit on train only, log1p choice, standardization, imputation, JSON state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moe_retriever.data.core import DataValidationError
from moe_retriever.data.preprocessing import Preprocessor
from moe_retriever.data.readers import from_arrays


def _data(seed: int = 0, n: int = 40, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2000, size=(n, 3)).astype(np.float64)
    z = rng.normal(5 + shift, 2, size=(n, 4))
    z[:, 3] = 7.0  # constant column
    z[0] = np.nan  # sample 0 misses "z"
    z[1, 2] = np.nan  # one hole in an observed row
    return from_arrays(
        {"counts": counts, "z": z},
        labels=rng.integers(0, 2, n),
        ids=[f"s{seed}_{i}" for i in range(n)],
    )


def test_auto_log1p_standardize_and_impute() -> None:
    train = _data()
    p = Preprocessor().fit(train)
    assert p.log1p_modalities_ == ["counts"]
    assert p.report_ == {"counts": 0, "z": 1}
    out = p.transform(train)
    assert np.isnan(out.X["z"][0]).all()  # unobserved row stays NaN
    obs_z = out.X["z"][1:]
    assert not np.isnan(obs_z).any()
    assert obs_z[0, 2] == pytest.approx(0.0, abs=1e-6)  # imputed with the training mean
    np.testing.assert_allclose(obs_z[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(obs_z[:, 3], 0.0)  # constant column: scale 1, no inf
    logged = np.log1p(train.X["counts"].astype(np.float64))
    np.testing.assert_allclose(out.X["counts"].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(
        out.X["counts"][:, 0],
        (logged[:, 0] - logged[:, 0].mean()) / logged[:, 0].std(),
        rtol=1e-4,
        atol=1e-5,
    )
    assert out.attrs["imputed"] == {"counts": 0, "z": 1}
    # transform never changes fitted state: a second call on other data leaves report_ alone
    other = _data(seed=5)
    other.X["z"][2, 0] = np.nan
    other.X["z"][3, 1] = np.nan
    state = p.to_dict()
    assert p.transform(other).attrs["imputed"]["z"] >= 2
    assert p.report_ == {"counts": 0, "z": 1} and p.to_dict() == state


def test_log1p_hint_and_explicit_choices() -> None:
    d = _data()
    d.attrs["log1p"] = []
    assert Preprocessor().fit(d).log1p_modalities_ == []
    assert Preprocessor(log1p=["counts"]).fit(d).log1p_modalities_ == ["counts"]
    assert Preprocessor(log1p=False).fit(d).log1p_modalities_ == []
    with pytest.raises(DataValidationError, match=r"'z'.*non-negative.*columns"):
        neg = _data(shift=-20)
        Preprocessor(log1p=True).fit(neg)
    with pytest.raises(DataValidationError, match=r"unknown modalities \['rna'\]"):
        Preprocessor(log1p=["rna"]).fit(d)


def test_fit_uses_training_data_only() -> None:
    train = _data(seed=0)
    p1 = Preprocessor().fit(train)
    state = json.dumps(p1.to_dict())
    other = _data(seed=1, shift=100.0)
    p1.transform(other)  # transforming other data never changes the fitted statistics
    assert json.dumps(p1.to_dict() | {"report": {}}) == json.dumps(
        json.loads(state) | {"report": {}}
    )
    # the same training data with different val/test data gives the same statistics
    p2 = Preprocessor().fit(train)
    for m in train.modalities:
        np.testing.assert_array_equal(p1.center_[m], p2.center_[m])
    # other data is scaled with the training statistics, not its own
    shifted = p1.transform(other).X["z"][1:, :3]
    assert np.nanmean(shifted) > 10


def test_strict_refuses_holes_naming_them() -> None:
    with pytest.raises(DataValidationError, match=r"'z'.*inside observed rows.*'s0_1'.*'z_2'"):
        Preprocessor(strict=True).fit(_data())


def test_transform_checks_modalities_and_dims() -> None:
    p = Preprocessor().fit(_data())
    other = from_arrays({"counts": np.ones((3, 3)), "zz": np.ones((3, 4))})
    with pytest.raises(DataValidationError, match=r"modalities.*differ"):
        p.transform(other)
    other = from_arrays({"counts": np.ones((3, 3)), "z": np.ones((3, 5))})
    with pytest.raises(DataValidationError, match=r"'z': 5 features.*fitted on 4"):
        p.transform(other)
    renamed = from_arrays(
        {"counts": np.ones((3, 3)), "z": np.ones((3, 4))},
        feature_names={"z": ["z_1", "z_0", "z_2", "z_3"]},
    )
    with pytest.raises(DataValidationError, match=r"'z': feature columns differ"):
        p.transform(renamed)
    with pytest.raises(RuntimeError, match="not fitted"):
        Preprocessor().transform(_data())


def test_to_dict_from_dict_round_trip() -> None:
    train, test = _data(0), _data(3)
    p = Preprocessor().fit(train)
    state = json.loads(json.dumps(p.to_dict()))
    q = Preprocessor.from_dict(state)
    a, b = p.transform(test), q.transform(test)
    for m in a.modalities:
        np.testing.assert_array_equal(a.X[m], b.X[m])
    with pytest.raises(ValueError, match="lacks the key 'center'"):
        Preprocessor.from_dict({k: v for k, v in state.items() if k != "center"})
