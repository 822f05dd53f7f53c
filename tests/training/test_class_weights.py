"""Balanced class weights: scikit-learn's rule, with classes absent from training kept at 0."""

from __future__ import annotations

import numpy as np
import pytest

from moe_retriever.training.module import balanced_class_weights


def test_balanced_weights_follow_sklearn_and_absent_classes_get_zero() -> None:
    y = np.array([0, 0, 0, 1, 2, 2])
    w = balanced_class_weights(y, 4).numpy()
    np.testing.assert_allclose(w[:3], 6 / (4 * np.array([3, 1, 2])), rtol=1e-6)
    assert w[3] == 0.0
    # weighted counts are equal across present classes: each class counts n / C in the loss
    counts = np.bincount(y, minlength=4)
    assert (w * counts)[:3] == pytest.approx([1.5, 1.5, 1.5])
