"""Tiny labelled multimodal data for the benchmark tests (no dependency on datasets/)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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


BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench_script() -> Callable[[str], ModuleType]:
    """Loads a script of benchmarks/ by name: ``bench_script("same_cells").main([...])``."""
    return load_benchmark_script
