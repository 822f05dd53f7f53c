"""Checks shared by the readers, the trainer and prediction.

Each function raises :class:`~moe_retriever.data.core.DataValidationError` with a message that
names the modality, the sample ids and the columns involved, so a user can find the bad cells
in their own files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from moe_retriever.data.core import DataValidationError, MultimodalData, _preview

__all__ = [
    "check_numeric_frame",
    "check_predictable",
    "check_unique",
    "drop_empty",
    "preview",
]


def preview(items: Iterable[Any], limit: int = 5) -> str:
    """``['a', 'b', ... (+n more)]``: a short list for error messages."""
    return _preview(items, limit)


def check_unique(values: Sequence[Any], what: str) -> None:
    """Raise if ``values`` holds duplicates; ``what`` says where (e.g. "modality 'rna': ids")."""
    dup = [v for v, c in Counter(str(v) for v in values).items() if c > 1]
    if dup:
        raise DataValidationError(f"{what}: duplicate values {preview(dup)}")


def check_numeric_frame(frame: pd.DataFrame, modality: str) -> pd.DataFrame:
    """Return ``frame`` as float64, or raise naming the non-numeric columns and inf cells.

    Booleans become 0/1. Text or categorical columns are refused with a hint to encode
    them (one-hot for nominal values, ordinal codes for ordered ones) before loading, because
    a silent encoding here would pick an order or a reference level the user never chose.
    """
    bad = [
        str(c)
        for c in frame.columns
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    if bad:
        examples = []
        for c in bad[:3]:
            col = frame[str(c)] if str(c) in frame.columns else frame[c]
            vals = col.dropna()
            if len(vals):
                examples.append(f"{c}={vals.iloc[0]!r} (sample {str(vals.index[0])!r})")
        raise DataValidationError(
            f"modality {modality!r}: non-numeric columns {preview(bad)}"
            + (f", e.g. {'; '.join(examples)}" if examples else "")
            + ". Encode them first: one-hot (pandas.get_dummies) for categories, "
            "ordinal codes for ordered levels"
        )
    values = frame.astype(np.float64)
    arr = values.to_numpy()
    inf_rows, inf_cols = np.nonzero(np.isinf(arr))
    if inf_rows.size:
        raise DataValidationError(
            f"modality {modality!r}: infinite values in samples "
            f"{preview(frame.index[np.unique(inf_rows)])}, columns "
            f"{preview(frame.columns[np.unique(inf_cols)])}"
        )
    return values


def drop_empty(data: MultimodalData) -> tuple[MultimodalData, int]:
    """Remove samples with no observed modality; return the rest and how many were dropped.

    Readers keep such samples (a labels file may list patients whose assays all failed) so
    that ``describe`` can count them; training calls this and prints the count, since a
    sample with nothing observed carries no information to learn from.
    """
    empty = data.empty_samples()
    n = int(empty.sum())
    if n == 0:
        return data, 0
    return data.subset(~empty), n


def check_predictable(data: MultimodalData) -> None:
    """Raise naming the samples that have no observed modality (nothing to predict from)."""
    empty = data.empty_samples()
    if empty.any():
        raise DataValidationError(
            f"{int(empty.sum())} sample(s) have no observed modality and cannot be predicted: "
            f"{preview(data.ids[empty])}; every sample needs at least one of "
            f"{data.modalities}"
        )
