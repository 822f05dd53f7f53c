"""MultimodalData itself."""

from __future__ import annotations

import numpy as np
import pytest

from moe_retriever.data.core import DataValidationError
from moe_retriever.datasets import load_dataset


def test_replace_keeps_fields_shares_arrays_and_validates() -> None:
    """``MultimodalData.replace``: the one way to derive a data set with some fields changed."""
    data = load_dataset("synthetic", n_samples=20, n_modalities=2, dims=[3, 4], seed=0)
    renamed = data.replace(name="other")
    assert renamed.name == "other" and data.name != "other"
    assert renamed.X["m0"] is data.X["m0"] and renamed.observed is data.observed  # no copies
    renamed.attrs["note"] = 1
    renamed.class_names.append("extra")
    assert "note" not in data.attrs and "extra" not in data.class_names
    with pytest.raises(TypeError, match="no field"):
        data.replace(labels=None)
    with pytest.raises(DataValidationError):
        data.replace(observed=np.zeros((3, 2), dtype=bool))  # validated like any data set
