"""Empty samples: kept by readers, dropped for training with a count, refused for prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moe_retriever.data.core import DataValidationError
from moe_retriever.data.readers import from_arrays
from moe_retriever.data.validation import check_numeric_frame, check_predictable, drop_empty


def _with_empty():
    X = {"a": np.array([[1.0], [np.nan], [3.0]]), "b": np.array([[1.0], [np.nan], [np.nan]])}
    return from_arrays(X, labels=[0, 1, 0], ids=["keep1", "ghost", "keep2"])


def test_drop_empty_counts_and_removes() -> None:
    d = _with_empty()
    assert d.describe()["n_empty"] == 1
    kept, n = drop_empty(d)
    assert n == 1 and kept.ids.tolist() == ["keep1", "keep2"]
    same, n0 = drop_empty(kept)
    assert n0 == 0 and same is kept


def test_check_predictable_names_samples() -> None:
    with pytest.raises(DataValidationError, match=r"cannot be predicted.*'ghost'"):
        check_predictable(_with_empty())
    check_predictable(drop_empty(_with_empty())[0])


def test_check_numeric_frame_bool_ok_text_refused() -> None:
    df = pd.DataFrame({"flag": [True, False], "v": [1, 2]}, index=["s1", "s2"])
    out = check_numeric_frame(df, "clin")
    assert out.dtypes.unique().tolist() == [np.dtype("float64")]
    df["sex"] = ["f", "m"]
    match = r"'clin'.*\['sex'\].*sample 's1', column 'sex': 'f'"
    with pytest.raises(DataValidationError, match=match):
        check_numeric_frame(df, "clin")
