"""The missingness simulator: property tests (hypothesis) and targeted cases."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_retriever.data.core import DataValidationError
from moe_retriever.data.missingness import simulate_missing
from moe_retriever.data.readers import from_arrays


def _data(observed: np.ndarray):
    n, m = observed.shape
    X = {f"m{j}": np.where(observed[:, [j]], np.arange(n)[:, None] + j, np.nan) for j in range(m)}
    return from_arrays(X, observed=observed, ids=[f"s{i}" for i in range(n)])


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 60))
    m = draw(st.integers(2, 6))
    bits = draw(st.lists(st.booleans(), min_size=n * m, max_size=n * m))
    obs = np.array(bits, dtype=bool).reshape(n, m)
    obs[~obs.any(axis=1), 0] = True  # readers allow empty samples; most data has none
    return obs


@settings(max_examples=60, deadline=None)
@given(obs=masks(), rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_properties(obs: np.ndarray, rate: float, seed: int) -> None:
    d = _data(obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, rep = simulate_missing(d, rate=rate, seed=seed)
        again, _ = simulate_missing(d, rate=rate, seed=seed)
    new = out.observed
    # only hides, never reveals; values of kept entries are untouched
    assert not (new & ~obs).any()
    np.testing.assert_array_equal(rep.hidden, obs & ~new)
    for j, m in enumerate(d.modalities):
        np.testing.assert_array_equal(out.X[m][new[:, j]], d.X[m][new[:, j]])
    # no sample loses its last observed modality
    assert (new.sum(axis=1) >= np.minimum(obs.sum(axis=1), 1)).all()
    # same seed, same mask
    np.testing.assert_array_equal(again.observed, new)
    # achieved rate: exactly the request rounded to whole entries, unless clamped to capacity
    n_obs = int(obs.sum())
    expected = min(round(rate * n_obs), rep.capacity)
    assert int(rep.hidden.sum()) == expected
    assert rep.clamped == (round(rate * n_obs) > rep.capacity)
    if not rep.clamped:
        assert abs(rep.achieved_rate - rate) <= 0.5 / n_obs + 1e-12
    for j, m in enumerate(d.modalities):
        denom = obs[:, j].sum()
        assert rep.per_modality[m] == (rep.hidden[:, j].sum() / denom if denom else 0.0)


@settings(max_examples=30, deadline=None)
@given(rate=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_single_modality_removal(rate: float, seed: int) -> None:
    obs = np.ones((50, 3), dtype=bool)
    obs[:10, 1:] = False  # ten samples have only m0: they must keep it
    d = _data(obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, rep = simulate_missing(d, rate=rate, seed=seed, modalities=["m0"])
    np.testing.assert_array_equal(out.observed[:, 1:], obs[:, 1:])  # other modalities untouched
    assert out.observed[:10, 0].all()
    assert rep.n_hidden["m1"] == rep.n_hidden["m2"] == 0
    assert rep.n_hidden["m0"] == min(round(rate * 50), 40)


def test_clamp_is_reported() -> None:
    obs = np.array([[True, True], [True, False], [False, True]])
    with pytest.warns(UserWarning, match="only 1 can go"):
        out, rep = simulate_missing(_data(obs), rate=1.0, seed=0)
    assert rep.clamped and rep.capacity == 1 and rep.achieved_rate == pytest.approx(0.25)
    assert out.observed.any(axis=1).all()
    assert out.attrs["missingness"]["clamped"] is True


def test_seed_changes_mask_and_rate_is_close_per_modality() -> None:
    obs = np.ones((2000, 4), dtype=bool)
    a = simulate_missing(_data(obs), rate=0.3, seed=0)[1]
    b = simulate_missing(_data(obs), rate=0.3, seed=1)[1]
    assert not np.array_equal(a.hidden, b.hidden)
    for v in a.per_modality.values():
        assert abs(v - 0.3) < 0.05


def test_errors() -> None:
    d = _data(np.ones((4, 2), dtype=bool))
    with pytest.raises(DataValidationError, match=r"unknown modalities \['x'\]"):
        simulate_missing(d, modalities=["x"])
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        simulate_missing(d, rate=1.5)


def test_fast_for_large_data() -> None:
    rng = np.random.default_rng(0)
    n, m = 100_000, 8
    obs = rng.random((n, m)) < 0.8
    obs[~obs.any(axis=1), 0] = True
    X = {f"m{j}": np.where(obs[:, [j]], 1.0, np.nan).astype(np.float32) for j in range(m)}
    d = from_arrays(X, observed=obs)
    t = time.perf_counter()
    _, rep = simulate_missing(d, rate=0.3, seed=0)
    assert time.perf_counter() - t < 5.0
    assert abs(rep.achieved_rate - 0.3) < 1e-4
