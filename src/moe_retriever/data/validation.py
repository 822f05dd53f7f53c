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
from moe_retriever.data.mapped import is_mapped

__all__ = [
    "align_labels",
    "check_numeric_frame",
    "check_predictable",
    "check_unique",
    "drop_empty",
    "missing_cells",
    "nan_cells",
    "one_line",
    "preview",
]


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (its first line; the type when it has no message)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def preview(items: Iterable[Any], limit: int = 5) -> str:
    """``['a', 'b', ... (+n more)]``: a short list for error messages."""
    return _preview(items, limit)


def check_unique(values: Sequence[Any], what: str) -> None:
    """Raise if ``values`` holds duplicates; ``what`` says where (e.g. "modality 'rna': ids")."""
    dup = [v for v, c in Counter(str(v) for v in values).items() if c > 1]
    if dup:
        raise DataValidationError(f"{what}: duplicate values {preview(dup)}")


def check_numeric_frame(
    frame: pd.DataFrame, modality: str, source: str | None = None
) -> pd.DataFrame:
    """Return ``frame`` as float64, or raise naming the non-numeric cells and inf cells.

    Booleans become 0/1. Text or categorical columns are refused with a hint to encode
    them (one-hot for nominal values, ordinal codes for ordered ones) before loading, because
    a silent encoding here would pick an order or a reference level the user never chose.
    The message names the file (``source``), the sample (row id) and column of the first bad
    cells, so a single stray entry in a numeric column can be found.
    """
    where = f"{source}: modality {modality!r}" if source else f"modality {modality!r}"
    if frame.shape[0] == 0:  # a header-only table: every column is empty, hence numeric
        return frame.astype(np.float64)
    bad = [
        str(c)
        for c in frame.columns
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    if bad:
        cells = []
        text_columns = []
        for c in bad:
            col = frame[c]
            values = col.dropna()
            parsed = pd.to_numeric(values, errors="coerce")
            wrong = values[parsed.isna()]
            if len(wrong) < len(values) or len(values) == 0:  # a numeric column with stray cells
                cells += [(str(i), c, v) for i, v in wrong.items()]
            else:
                text_columns.append(c)
                cells.append((str(values.index[0]), c, values.iloc[0]))
        shown = "; ".join(f"sample {i!r}, column {c!r}: {v!r}" for i, c, v in cells[:3])
        more = f" (+{len(cells) - 3} more)" if len(cells) > 3 else ""
        hint = (
            "encode text columns first: one-hot (pandas.get_dummies) for categories, ordinal "
            "codes for ordered levels"
            if text_columns
            else "fix or blank these cells (an empty cell is a missing value)"
        )
        raise DataValidationError(
            f"{where}: non-numeric columns {preview(bad)}: {shown}{more}; {hint}"
        )
    values = frame.astype(np.float64)
    arr = values.to_numpy()
    inf_rows, inf_cols = np.nonzero(np.isinf(arr))
    if inf_rows.size:
        raise DataValidationError(
            f"{where}: infinite values in samples "
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


def missing_cells(data: MultimodalData) -> list[str]:
    """One line per modality whose observed rows hold NaN cells (which training, the
    benchmark and prediction impute with the training mean of the feature): the count, a
    few samples and columns."""
    lines = []
    for j, m in enumerate(data.modalities):
        rows, cols = nan_cells(data.X[m], data.observed[:, j])
        if rows.size:
            names = data.feature_names[m]
            lines.append(
                f"modality {m!r}: {rows.size} missing cell(s) in observed rows were "
                f"imputed with the training mean of their feature (samples "
                f"{preview(data.ids[np.unique(rows)], 3)}, columns "
                f"{preview([names[c] for c in np.unique(cols)], 3)})"
            )
    return lines


def nan_cells(x: Any, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the NaN cells inside observed rows of one modality.

    A modality on disk (:class:`~moe_retriever.data.mapped.MappedRows`) is read chunk by
    chunk, so only one chunk is ever in memory.
    """
    observed = np.asarray(observed, dtype=bool)
    if not is_mapped(x):
        r, c = np.nonzero(np.isnan(x) & observed[:, None])
        return r, c
    rows, cols = [], []
    for pos, block in x.chunks():
        r, c = np.nonzero(np.isnan(block) & observed[pos][:, None])
        rows.append(pos[r])
        cols.append(c)
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def check_predictable(data: MultimodalData, what: str | None = None) -> None:
    """Raise naming the samples that have no observed modality (nothing to predict from)."""
    empty = data.empty_samples()
    if empty.any():
        where = f"{what}: " if what else ""
        raise DataValidationError(
            f"{where}{int(empty.sum())} sample(s) have no observed modality and cannot be "
            f"predicted: {preview(data.ids[empty])}; every sample needs at least one of "
            f"{data.modalities}"
        )


def align_labels(
    data: MultimodalData, class_names: Sequence[str], what: str = "data"
) -> MultimodalData:
    """``data`` with its labels re-coded to ``class_names`` (a fitted model's classes).

    Readers code labels by the classes present in a file, so a file holding only class "1"
    codes it as 0; scoring those codes against a model would silently swap classes. Labels
    are matched by name; a label that is not one of ``class_names`` raises naming it and
    its samples.
    """
    if data.y is None:
        raise DataValidationError(f"{what} has no labels to evaluate against")
    names = [str(c) for c in class_names]
    texts = np.asarray(data.class_names, dtype=object)[data.y]
    pos = {c: i for i, c in enumerate(names)}
    bad = np.array([t not in pos for t in texts], dtype=bool)
    if bad.any():
        raise DataValidationError(
            f"{what}: labels {preview(sorted({str(t) for t in texts[bad]}))} of samples "
            f"{preview(data.ids[bad])} are not classes of the model {names}"
        )
    codes = np.array([pos[t] for t in texts], dtype=np.int64)
    return data.replace(y=codes, class_names=names)
