"""Metrics on hand-computed cases, undefined cases, per-combination and seed aggregation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from moe_retriever.training.metrics import (
    MetricWarning,
    aggregate_combinations,
    aggregate_seeds,
    classification_metrics,
    format_mean_std,
    mean_std,
    per_combination_metrics,
)


def test_binary_hand_case() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    m = classification_metrics(y, proba)
    # predictions 0, 1, 1, 0 -> 2/4 correct; per-class recall 0.5, 0.5
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(0.5)
    # positive scores 0.7, 0.2 vs negative 0.1, 0.6: pairs won (0.7>0.1, 0.7>0.6, 0.2>0.1) = 3/4
    assert m["auroc"] == pytest.approx(0.75)


def test_multiclass_hand_case_and_imbalance() -> None:
    y = np.array([0, 0, 0, 0, 1, 2])
    proba = np.eye(3)[[0, 0, 0, 0, 0, 2]] * 0.8 + 0.2 / 3
    m = classification_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0 + 1) / 3)
    # f1: class0 p=4/5 r=1 -> 8/9; class1 0; class2 1
    assert m["macro_f1"] == pytest.approx((8 / 9 + 0 + 1) / 3)
    assert 0.0 <= m["auroc"] <= 1.0


def test_auroc_undefined_is_nan_with_warning() -> None:
    y = np.array([1, 1, 1])
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    with pytest.warns(MetricWarning, match="AUROC undefined"):
        m = classification_metrics(y, proba, class_names=["alive", "dead"])
    assert math.isnan(m["auroc"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_multiclass_absent_class_averages_present_ones() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    with pytest.warns(MetricWarning, match="absent"):
        m = classification_metrics(y, proba, class_names=["a", "b", "c"])
    assert m["auroc"] == pytest.approx(1.0)


def test_empty_input_and_shape_check() -> None:
    m = classification_metrics(np.zeros(0, dtype=int), np.zeros((0, 2)))
    assert all(math.isnan(v) for v in m.values())
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], np.zeros((3, 2)))


def test_per_combination_breakdown() -> None:
    y = np.array([0, 1, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    observed = np.array([[1, 1], [1, 1], [1, 0], [1, 0], [0, 1]], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # expected single-class groups must stay silent
        out = per_combination_metrics(y, proba, observed, ["a", "b"])
    assert list(out) == ["a", "a+b", "b"] or set(out) == {"a", "a+b", "b"}
    assert out["a+b"]["n"] == 2 and out["a+b"]["accuracy"] == 1.0
    assert out["a"]["accuracy"] == 0.0
    assert math.isnan(out["b"]["auroc"])


def test_seed_aggregation() -> None:
    agg = aggregate_seeds([{"accuracy": 0.5}, {"accuracy": 0.7}, {"accuracy": math.nan}])
    assert agg["accuracy"]["mean"] == pytest.approx(0.6)
    assert agg["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert agg["accuracy"]["n"] == 2
    assert mean_std([0.3]) == {"mean": 0.3, "std": 0.0, "n": 1}
    assert format_mean_std({"mean": 0.81234, "std": 0.0345, "n": 2}) == "0.812 ± 0.035"
    combos = aggregate_combinations(
        [
            {
                "a": {
                    "n": 3,
                    "accuracy": 1.0,
                    "balanced_accuracy": 1.0,
                    "macro_f1": 1.0,
                    "auroc": math.nan,
                }
            },
            {
                "a": {
                    "n": 3,
                    "accuracy": 0.0,
                    "balanced_accuracy": 0.0,
                    "macro_f1": 0.0,
                    "auroc": math.nan,
                }
            },
        ]
    )
    assert combos["a"]["n"] == 3
    assert combos["a"]["accuracy"]["mean"] == 0.5
    assert combos["a"]["auroc"]["n"] == 0
