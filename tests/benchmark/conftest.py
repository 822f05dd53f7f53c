"""Tiny labelled multimodal data for the benchmark tests (no dependency on datasets/)."""

from __future__ import annotations

import numpy as np
import pytest

from moe_retriever.data.core import MultimodalData


def tiny_data(n: int = 90, seed: int = 0, missing: float = 0.25) -> MultimodalData:
    """3 modalities driven by one class-dependent latent factor; some entries missing."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    z = rng.normal(size=(n, 2)) + np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])[y]
    dims = {"a": 6, "b": 4, "c": 5}
    X = {}
    for m, f in dims.items():
        w = rng.normal(size=(2, f))
        X[m] = (z @ w + 0.5 * rng.normal(size=(n, f))).astype(np.float32)
    observed = rng.random((n, 3)) > missing
    observed[np.arange(n), rng.integers(0, 3, n)] = True
    for j, m in enumerate(dims):
        X[m][~observed[:, j]] = np.nan
    return MultimodalData(
        modalities=list(dims),
        X=X,
        observed=observed,
        y=y.astype(np.int64),
        ids=np.array([f"s{i:03d}" for i in range(n)], dtype=object),
        class_names=["k0", "k1", "k2"],
        name="tiny",
    )


@pytest.fixture
def tiny() -> MultimodalData:
    return tiny_data()
