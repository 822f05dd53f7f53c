"""The one data model: per-modality arrays, an observed mask, labels and sample ids.

Invariants (checked by :meth:`MultimodalData.validate`, which every constructor calls):

* ``modalities`` has at least two distinct names; ``X[m]`` is float32 of shape (N, F_m).
* ``observed`` is bool of shape (N, M), column j belongs to ``modalities[j]``.
* A row of an unobserved (sample, modality) entry is all-NaN in ``X[m]``. Observed rows may
  still hold NaNs (single missing features); preprocessing imputes and reports them.
* ``y`` is int64 with values in ``range(len(class_names))`` or is ``None`` (unlabelled data,
  e.g. for prediction).
* ``ids`` are unique strings.

A modality too large for memory (the ADNI MRI voxels) may be a
:class:`~moe_retriever.data.mapped.MappedRows` instead of an array: rows read from a
memory-mapped file on demand. Validation, subsets and hiding handle it without reading it
whole (validation reads it chunk by chunk).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moe_retriever.data.mapped import MappedRows, is_mapped


def stable_keys(ids: Iterable[Any]) -> np.ndarray:
    """int64 keys derived from sample ids alone (CRC32), for per-sample deterministic draws."""
    return np.array([zlib.crc32(str(i).encode("utf-8")) for i in ids], dtype=np.int64)


class DataValidationError(ValueError):
    """Raised for input that cannot be used; the message names modality, samples and columns."""


class DataWarning(UserWarning):
    """Input that can be used but was changed or is suspicious (stripped labels, a modality
    observed nowhere, imputed cells); the command line prints each as one line."""


def _preview(items: Iterable[Any], limit: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(str(i)) for i in items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}{more}]"


@dataclass
class MultimodalData:
    """Incomplete multimodal samples: what every reader produces and every trainer consumes."""

    modalities: list[str]
    X: dict[str, np.ndarray]
    observed: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray
    class_names: list[str] = field(default_factory=list)
    feature_names: dict[str, list[str]] = field(default_factory=dict)
    name: str = "data"
    #: free-form metadata, e.g. ``{"log1p": [modalities holding raw counts]}`` as a
    #: preprocessing hint, or provenance notes of a built-in dataset
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modalities = [str(m) for m in self.modalities]
        self.X = {
            m: self.X[m] if is_mapped(self.X[m]) else np.asarray(self.X[m], dtype=np.float32)
            for m in self.modalities
        }
        self.observed = np.asarray(self.observed, dtype=bool)
        self.ids = np.asarray([str(i) for i in self.ids], dtype=object)
        if self.y is not None:
            self.y = np.asarray(self.y)
        for m in self.modalities:
            if m not in self.feature_names:
                self.feature_names[m] = [f"{m}_{j}" for j in range(self.X[m].shape[1])]
        self.validate()

    # ------------------------------------------------------------------ basic properties
    @property
    def n_samples(self) -> int:
        return int(self.observed.shape[0])

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(self.X[m].shape[1]) for m in self.modalities}

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}:{d}" for m, d in self.dims.items())
        return (
            f"MultimodalData(name={self.name!r}, n_samples={self.n_samples}, "
            f"modalities=[{dims}], n_classes={self.n_classes}, "
            f"n_complete={int(self.observed.all(axis=1).sum())})"
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if len(self.modalities) < 2:
            raise DataValidationError(
                f"need at least two modalities, got {len(self.modalities)}: {self.modalities}"
            )
        dup = [m for m, c in Counter(self.modalities).items() if c > 1]
        if dup:
            raise DataValidationError(f"duplicate modality names: {dup}")
        n = len(self.ids)
        dup_ids = [i for i, c in Counter(self.ids.tolist()).items() if c > 1]
        if dup_ids:
            raise DataValidationError(f"duplicate sample ids: {_preview(dup_ids)}")
        if self.observed.shape != (n, len(self.modalities)):
            raise DataValidationError(
                f"observed mask has shape {self.observed.shape}, expected ({n}, "
                f"{len(self.modalities)}) for {n} sample ids and modalities {self.modalities}"
            )
        for j, m in enumerate(self.modalities):
            x = self.X[m]
            if x.ndim != 2 or x.shape[0] != n:
                raise DataValidationError(
                    f"modality {m!r}: array has shape {x.shape}, expected ({n}, n_features)"
                )
            if x.shape[1] == 0:
                raise DataValidationError(f"modality {m!r}: has no feature columns")
            names = self.feature_names.get(m, [])
            if len(names) != x.shape[1]:
                raise DataValidationError(
                    f"modality {m!r}: {len(names)} feature names for {x.shape[1]} columns"
                )
            if is_mapped(x):
                self._validate_mapped(j, m, x, names)
                continue
            inf_rows, inf_cols = np.nonzero(np.isinf(x))
            if inf_rows.size:
                cols = sorted({names[c] for c in inf_cols})
                raise DataValidationError(
                    f"modality {m!r}: infinite values in samples "
                    f"{_preview(self.ids[np.unique(inf_rows)])}, columns {_preview(cols)}"
                )
            unobs = ~self.observed[:, j]
            leak = unobs & ~np.isnan(x).all(axis=1)
            if leak.any():
                raise DataValidationError(
                    f"modality {m!r}: samples {_preview(self.ids[leak])} are marked unobserved "
                    "but carry values; set their rows to NaN or mark them observed"
                )
        if self.y is not None:
            if self.y.shape != (n,):
                raise DataValidationError(f"labels have shape {self.y.shape}, expected ({n},)")
            if not np.issubdtype(self.y.dtype, np.integer):
                raise DataValidationError(
                    "labels must be integer class codes here; readers encode string labels"
                )
            self.y = self.y.astype(np.int64)
            bad = (self.y < 0) | (self.y >= max(len(self.class_names), 1))
            if bad.any():
                raise DataValidationError(
                    f"labels of samples {_preview(self.ids[bad])} are outside "
                    f"0..{len(self.class_names) - 1} (class names {self.class_names})"
                )

    def _validate_mapped(self, j: int, m: str, x: MappedRows, names: list[str]) -> None:
        """The checks of :meth:`validate` for a modality on disk, chunk by chunk.

        A missing row must be unobserved and an unobserved sample must have no row (hiding
        sets its row to -1), so the NaN-row invariant holds by construction; the values are
        read once to refuse infinite cells (views derived from checked rows are not re-read).
        """
        leak = ~self.observed[:, j] & (x.rows >= 0)
        if leak.any():
            raise DataValidationError(
                f"modality {m!r}: samples {_preview(self.ids[leak])} are marked unobserved "
                "but carry a row of the mapped file; hide them (MappedRows.hide)"
            )
        gap = self.observed[:, j] & (x.rows < 0)
        if gap.any():
            raise DataValidationError(
                f"modality {m!r}: samples {_preview(self.ids[gap])} are marked observed but "
                "have no row in the mapped file"
            )
        if x.checked or x.center is not None:  # rows already read and found finite
            return
        for pos, block in x.raw().chunks():
            inf_rows, inf_cols = np.nonzero(np.isinf(block))
            if inf_rows.size:
                cols = sorted({names[c] for c in inf_cols})
                raise DataValidationError(
                    f"modality {m!r}: infinite values in samples "
                    f"{_preview(self.ids[pos[np.unique(inf_rows)]])}, columns {_preview(cols)}"
                )
        x.checked = True

    # ------------------------------------------------------------------ derived views
    def empty_samples(self) -> np.ndarray:
        """Boolean mask of samples with no observed modality."""
        return np.asarray(~self.observed.any(axis=1), dtype=bool)

    def combinations(self) -> list[tuple[tuple[str, ...], int]]:
        """Observed modality combinations with their counts, most frequent first."""
        keys = [tuple(m for m, o in zip(self.modalities, row) if o) for row in self.observed]
        counts = Counter(keys)
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def subset(self, index: Sequence[int] | np.ndarray) -> MultimodalData:
        """Rows by position (integer indices or a boolean mask), order kept as given."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        return MultimodalData(
            modalities=list(self.modalities),
            X={m: _take(self.X[m], idx) for m in self.modalities},
            observed=self.observed[idx].copy(),
            y=None if self.y is None else self.y[idx].copy(),
            ids=self.ids[idx].copy(),
            class_names=list(self.class_names),
            feature_names={m: list(v) for m, v in self.feature_names.items()},
            name=self.name,
            attrs=dict(self.attrs),
        )

    def select_ids(self, ids: Sequence[str]) -> MultimodalData:
        """Rows by sample id, in the order given; unknown ids raise."""
        pos = {s: i for i, s in enumerate(self.ids.tolist())}
        missing = [s for s in ids if str(s) not in pos]
        if missing:
            raise DataValidationError(f"unknown sample ids: {_preview(missing)}")
        return self.subset(np.array([pos[str(s)] for s in ids], dtype=np.int64))

    def with_observed(self, observed: np.ndarray) -> MultimodalData:
        """A copy with a smaller observed mask; newly hidden rows become NaN.

        Only hides: an entry unobserved here cannot be made observed.
        """
        observed = np.asarray(observed, dtype=bool)
        if observed.shape != self.observed.shape:
            raise DataValidationError(
                f"new observed mask has shape {observed.shape}, expected {self.observed.shape}"
            )
        if (observed & ~self.observed).any():
            raise DataValidationError("with_observed can only hide entries, not reveal them")
        X: dict[str, Any] = {}
        for j, m in enumerate(self.modalities):
            x: Any = self.X[m]
            X[m] = x.hide(~observed[:, j]) if is_mapped(x) else _hidden(x, ~observed[:, j])
        return MultimodalData(
            modalities=list(self.modalities),
            X=X,
            observed=observed.copy(),
            y=None if self.y is None else self.y.copy(),
            ids=self.ids.copy(),
            class_names=list(self.class_names),
            feature_names={m: list(v) for m, v in self.feature_names.items()},
            name=self.name,
            attrs=dict(self.attrs),
        )

    def replace(self, **changes: Any) -> MultimodalData:
        """A new, validated data set with ``changes`` (any field) and everything else kept:
        arrays are shared, not copied; the lists and dicts around them are new, so changing
        the result's ``attrs`` or ``class_names`` leaves this one alone."""
        fields: dict[str, Any] = {
            "modalities": list(self.modalities),
            "X": dict(self.X),
            "observed": self.observed,
            "y": self.y,
            "ids": self.ids,
            "class_names": list(self.class_names),
            "feature_names": {m: list(v) for m, v in self.feature_names.items()},
            "name": self.name,
            "attrs": dict(self.attrs),
        }
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise TypeError(f"MultimodalData has no field(s) {unknown}; fields: {list(fields)}")
        fields.update(changes)
        return MultimodalData(**fields)

    def filled(self, value: float = 0.0) -> dict[str, Any]:
        """Arrays with every NaN replaced by ``value`` (for tensors; use after preprocessing).

        A modality on disk stays there: it comes back as a :class:`MappedRows` reading NaN as
        ``value``.
        """
        out: dict[str, Any] = {}
        for m in self.modalities:
            x: Any = self.X[m]
            out[m] = x.filled(value) if is_mapped(x) else np.nan_to_num(x, nan=value)
        return out

    def describe(self) -> dict[str, Any]:
        """Summary used by ``moe-retriever data describe``."""
        out: dict[str, Any] = {
            "name": self.name,
            "n_samples": self.n_samples,
            "modalities": {
                m: {"dim": int(self.X[m].shape[1]), "n_observed": int(self.observed[:, j].sum())}
                for j, m in enumerate(self.modalities)
            },
            "combinations": [
                {"modalities": list(k), "count": int(c)} for k, c in self.combinations()
            ],
            "n_complete": int(self.observed.all(axis=1).sum()),
            "n_empty": int(self.empty_samples().sum()),
        }
        if self.y is not None:
            counts = np.bincount(self.y, minlength=self.n_classes)
            out["classes"] = {c: int(k) for c, k in zip(self.class_names, counts)}
        return out


def _take(x: np.ndarray | MappedRows, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a modality: a copy of an array, a new index into a mapped file."""
    return x.take(idx) if is_mapped(x) else x[idx].copy()


def _hidden(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of ``x`` with ``rows`` (bool) set to NaN."""
    out = x.copy()
    out[rows] = np.nan
    return out
