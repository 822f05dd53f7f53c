"""Tiny data and a tiny, fast configuration shared by the training tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.splits import apply_split, make_split
from moe_retriever.datasets import load_dataset

#: a model and schedule small enough for a fit in about a second on one CPU thread
TINY: dict[str, Any] = {
    "model": {"n_tokens": 4, "dim": 16, "n_heads": 2, "head_hidden": 16, "dropout": 0.1},
    "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "patience": None},
    "runtime": {"accelerator": "cpu", "progress_bar": False, "threads": 1},
}


def tiny_data(n: int = 90, seed: int = 0) -> MultimodalData:
    return load_dataset(
        "synthetic",
        n_samples=n,
        n_modalities=3,
        dims=[8, 6, 10],
        n_classes=3,
        missing_rate=0.3,
        seed=seed,
    )


@pytest.fixture
def make_tiny_data() -> Callable[..., MultimodalData]:
    """:func:`tiny_data` for tests that need it at another size."""
    return tiny_data


@pytest.fixture(scope="module")
def splits() -> tuple[MultimodalData, MultimodalData, MultimodalData]:
    data = tiny_data()
    return apply_split(data, make_split(data, seed=0))


@pytest.fixture
def tiny() -> dict[str, Any]:
    """The tiny config as a fresh nested dict (tests may modify it)."""
    return copy.deepcopy(TINY)


@pytest.fixture(scope="session")
def tiny_cfg() -> dict[str, Any]:
    """The tiny config for module-scoped fixtures (do not modify)."""
    return copy.deepcopy(TINY)
