"""Paired statistics: a hand-computed case, the bootstrap's determinism, the corrected t."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moe_retriever.benchmark.stats import (
    bootstrap_interval,
    paired_comparison,
    signed,
    t_interval,
)


def test_paired_t_hand_computed():
    # method - reference per seed = [1, 2, 3, 4]: mean 2.5, sd sqrt(5/3) = 1.291,
    # t_{0.975, 3} = 3.182, half width 3.182 * 1.291 / 2 = 2.054 -> [0.446, 4.554]
    method = {0: 11.0, 1: 12.0, 2: 13.0, 3: 14.0}
    ref = {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0}
    c = paired_comparison(method, ref, "x", "y", "macro_f1")
    assert c.n == 4
    assert c.mean == pytest.approx(2.5)
    assert c.sd == pytest.approx(1.291, abs=5e-4)
    assert c.high - c.mean == pytest.approx(2.054, abs=5e-4)
    assert (c.low, c.high) == pytest.approx((0.446, 4.554), abs=5e-4)
    assert c.excludes_zero
    assert "distinguishably above `y`" in c.sentence()
    # the other way round: below, same width
    r = paired_comparison(ref, method, "y", "x", "macro_f1")
    assert (r.low, r.high) == pytest.approx((-4.554, -0.446), abs=5e-4)
    assert "distinguishably below `x`" in r.sentence()


def test_interval_holding_zero_says_cannot_tell_apart():
    # diffs [1, -1, 2, -2]: mean 0, interval symmetric about 0
    c = paired_comparison({0: 1.0, 1: -1.0, 2: 2.0, 3: -2.0}, {0: 0, 1: 0, 2: 0, 3: 0}, "a", "b")
    assert c.mean == pytest.approx(0.0)
    assert c.low < 0 < c.high and not c.excludes_zero
    assert c.sentence().startswith("the data cannot tell `a` and `b` apart")


def test_pairing_drops_units_missing_or_nan_on_either_side():
    method = {0: 1.0, 1: 2.0, 2: 3.0, 3: math.nan, 4: 9.0}
    ref = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0, 5: 1.0}
    c = paired_comparison(method, ref)
    assert c.units == [0, 1, 2]
    assert c.dropped == [3, 4, 5]
    assert c.n == 3 and c.mean == pytest.approx(2.0)
    one = paired_comparison({0: 1.0}, {0: 0.0})
    assert one.n == 1 and math.isnan(one.low) and not one.excludes_zero
    assert "too few" in one.sentence()


def test_bootstrap_is_seeded_and_brackets_the_mean():
    d = np.array([0.5, -0.2, 1.3, 0.8, 0.1, 0.9, -0.4, 0.7])
    a = bootstrap_interval(d, seed=3)
    assert a == bootstrap_interval(d, seed=3)
    assert a != bootstrap_interval(d, seed=4)
    assert a[0] < d.mean() < a[1]
    c = paired_comparison(dict(enumerate(d)), dict.fromkeys(range(8), 0.0), interval="bootstrap")
    assert (c.low, c.high) == bootstrap_interval(d, seed=0)
    assert "bootstrap" in c.sentence()


def test_corrected_t_inflates_by_the_nadeau_bengio_factor():
    d = [1.0, 2.0, 3.0, 4.0]
    plain = t_interval(d)
    # 1/n + n_test/n_train = 1/4 + 1/4 = 1/2, against 1/4: half width times sqrt(2)
    low, high = t_interval(d, test_train_ratio=0.25)
    assert (high - low) == pytest.approx((plain[1] - plain[0]) * math.sqrt(2))
    assert (low + high) / 2 == pytest.approx(2.5)
    c = paired_comparison(
        dict(enumerate(d)),
        dict.fromkeys(range(4), 0.0),
        interval="corrected-t",
        test_train_ratio=0.25,
    )
    assert (c.low, c.high) == pytest.approx((low, high))
    with pytest.raises(ValueError, match="test_train_ratio"):
        paired_comparison({0: 1.0}, {0: 0.0}, interval="corrected-t")
    with pytest.raises(ValueError, match="interval must be one of"):
        paired_comparison({0: 1.0}, {0: 0.0}, interval="z")


def test_signed_uses_a_true_minus():
    assert signed(0.031) == "+0.031"
    assert signed(-0.012) == "\u22120.012"
    assert signed(math.nan) == "–"
