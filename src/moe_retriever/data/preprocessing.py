"""Per-feature preprocessing fitted on the training split only.

Steps, per modality, on observed rows (unobserved rows stay NaN throughout):

1. optional ``log1p`` for count data;
2. standardization with the training mean and standard deviation of each feature
   (a constant or never-observed column gets scale 1, so it maps to 0 instead of NaN/inf);
3. imputation of NaN cells inside observed rows with the training feature mean (0 after
   standardization); counts per modality are reported, or ``strict=True`` refuses them.

A modality kept on disk (:class:`~moe_retriever.data.mapped.MappedRows`, e.g. MRI voxels) is
never read whole: its statistics are accumulated chunk by chunk (Chan et al.'s pairwise
update of count, mean and sum of squared deviations, in float64), and the transform is
attached to it and applied to the rows a batch reads. ``log1p="auto"`` never picks such a
modality (image intensities are not counts); name it in a list to log-transform it.

Statistics come from the data given to :meth:`Preprocessor.fit` alone, so validation and
test samples never influence them. The fitted state is plain JSON (:meth:`to_dict`) so a
saved model applies exactly the same transform at prediction time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from moe_retriever.data.core import DataValidationError, MultimodalData
from moe_retriever.data.mapped import is_mapped
from moe_retriever.data.validation import nan_cells, preview

__all__ = ["LOG1P_AUTO_MAX", "Preprocessor"]

#: ``log1p="auto"`` (without an ``attrs["log1p"]`` hint) log-transforms a modality whose
#: observed values are all >= 0 and whose maximum exceeds this: raw counts, not z-scores.
LOG1P_AUTO_MAX = 1000.0


class Preprocessor:
    """log1p (optional) -> standardize -> impute NaN cells of observed rows.

    Parameters
    ----------
    log1p:
        ``"auto"``: the modalities listed in ``data.attrs["log1p"]`` when that key exists
        (built-in datasets set it), else those whose observed values are non-negative with a
        maximum above :data:`LOG1P_AUTO_MAX`. ``True``: all modalities. ``False``: none. A list
        of modality names: exactly those.
    standardize:
        subtract the training mean and divide by the training standard deviation per feature.
    strict:
        raise instead of imputing when an observed row holds NaN cells.
    """

    def __init__(
        self,
        log1p: str | bool | Sequence[str] = "auto",
        standardize: bool = True,
        strict: bool = False,
    ) -> None:
        self.log1p = log1p
        self.standardize = standardize
        self.strict = strict

    # ------------------------------------------------------------------ fitting
    def _choose_log1p(self, data: MultimodalData) -> list[str]:
        if self.log1p is True:
            return list(data.modalities)
        if self.log1p is False or self.log1p is None:
            return []
        if isinstance(self.log1p, str):
            if self.log1p != "auto":
                raise ValueError(
                    f"log1p must be 'auto', True, False or a list of modalities, got {self.log1p!r}"
                )
            if "log1p" in data.attrs:
                chosen = [str(m) for m in data.attrs["log1p"]]
            else:
                chosen = []
                for j, m in enumerate(data.modalities):
                    if is_mapped(data.X[m]):
                        continue
                    x = data.X[m][data.observed[:, j]]
                    counts_like = (
                        x.size > 0
                        and bool(np.isfinite(x).any())
                        and np.nanmin(x) >= 0
                        and np.nanmax(x) > LOG1P_AUTO_MAX
                    )
                    if counts_like:
                        chosen.append(m)
        else:
            chosen = [str(m) for m in self.log1p]
        unknown = [m for m in chosen if m not in data.modalities]
        if unknown:
            raise DataValidationError(
                f"log1p names unknown modalities {unknown}; known: {data.modalities}"
            )
        return chosen

    def fit(self, train: MultimodalData) -> Preprocessor:
        """Learn log1p choice, means, scales and fill values from ``train`` only."""
        self.modalities_ = list(train.modalities)
        self.dims_ = dict(train.dims)
        self.feature_names_ = {m: list(train.feature_names[m]) for m in train.modalities}
        self.log1p_modalities_ = self._choose_log1p(train)
        self.center_: dict[str, np.ndarray] = {}
        self.scale_: dict[str, np.ndarray] = {}
        self.fill_: dict[str, np.ndarray] = {}
        for j, m in enumerate(train.modalities):
            if is_mapped(train.X[m]):
                mean, var = self._mapped_moments(train, j, m)
            else:
                x = self._log(train, j, m).astype(np.float64)
                mean, var = _moments(x[train.observed[:, j]])[1:]
            std = np.sqrt(var)
            if self.standardize:
                self.center_[m] = mean
                self.scale_[m] = np.where(std > 1e-12, std, 1.0)
            else:
                self.center_[m] = np.zeros_like(mean)
                self.scale_[m] = np.ones_like(mean)
            self.fill_[m] = mean
        self.report_ = self._imputation_counts(train, raise_strict=True)
        return self

    def _mapped_moments(
        self, data: MultimodalData, j: int, m: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and variance of the observed rows of a modality on disk, one
        chunk at a time (pairwise merge of chunk moments)."""
        x: Any = data.X[m]
        d = x.shape[1]
        count, mean, m2 = np.zeros(d), np.zeros(d), np.zeros(d)
        log = m in self.log1p_modalities_
        for _pos, block in x.take(np.nonzero(data.observed[:, j])[0]).raw().chunks():
            if log:
                neg = np.nonzero((block < 0).any(axis=1))[0]
                if neg.size:
                    raise DataValidationError(
                        f"modality {m!r}: log1p needs non-negative values, found negatives "
                        f"in {neg.size} observed row(s) of a chunk; pass log1p=False or a "
                        "list of count modalities"
                    )
                block = np.log1p(block)
            nb, mb, m2b = _moments(block.astype(np.float64))
            n = count + nb
            with np.errstate(invalid="ignore", divide="ignore"):
                delta = mb - mean
                mean = np.where(n > 0, mean + delta * nb / np.maximum(n, 1), 0.0)
                m2 = m2 + np.where(n > 0, m2b * nb + delta**2 * count * nb / np.maximum(n, 1), 0)
            count = n
        var = np.where(count > 0, m2 / np.maximum(count, 1), 0.0)
        return mean, var

    def fit_transform(self, train: MultimodalData) -> MultimodalData:
        return self.fit(train).transform(train)

    # ------------------------------------------------------------------ applying
    def _check_fitted(self) -> None:
        if not hasattr(self, "center_"):
            raise RuntimeError("Preprocessor is not fitted: call fit(train) first")

    def _log(self, data: MultimodalData, j: int, m: str) -> np.ndarray:
        x = data.X[m]
        if m not in getattr(self, "log1p_modalities_", []):
            return x
        neg_rows, neg_cols = np.nonzero(x < 0)
        if neg_rows.size:
            names = data.feature_names[m]
            raise DataValidationError(
                f"modality {m!r}: log1p needs non-negative values, found negatives in "
                f"samples {preview(data.ids[np.unique(neg_rows)])}, columns "
                f"{preview([names[c] for c in np.unique(neg_cols)])}; pass log1p=False or "
                "a list of count modalities"
            )
        return np.log1p(x)

    def _imputation_counts(self, data: MultimodalData, raise_strict: bool) -> dict[str, int]:
        counts: dict[str, int] = {}
        for j, m in enumerate(data.modalities):
            rows, cols = nan_cells(data.X[m], data.observed[:, j])
            counts[m] = int(rows.size)
            if counts[m] and self.strict and raise_strict:
                names = data.feature_names[m]
                raise DataValidationError(
                    f"modality {m!r}: {counts[m]} missing value(s) inside observed rows of "
                    f"samples {preview(data.ids[np.unique(rows)])}, columns "
                    f"{preview([names[c] for c in np.unique(cols)])} (strict=True refuses "
                    "imputation; fill them or mark the whole row missing)"
                )
        return counts

    def _check_compatible(self, data: MultimodalData) -> None:
        if list(data.modalities) != self.modalities_:
            raise DataValidationError(
                f"modalities {list(data.modalities)} differ from the fitted ones "
                f"{self.modalities_} (names and order must match)"
            )
        for m in self.modalities_:
            if data.dims[m] != self.dims_[m]:
                raise DataValidationError(
                    f"modality {m!r}: {data.dims[m]} features, the preprocessor was fitted "
                    f"on {self.dims_[m]}"
                )
            if list(data.feature_names[m]) != self.feature_names_[m]:
                diff = [
                    f"{a!r} != {b!r}"
                    for a, b in zip(data.feature_names[m], self.feature_names_[m])
                    if a != b
                ]
                raise DataValidationError(
                    f"modality {m!r}: feature columns differ from the fitted ones "
                    f"(given vs fitted: {preview(diff, 3)}); reorder or rename the columns"
                )

    def transform(self, data: MultimodalData) -> MultimodalData:
        """Apply the fitted transform; observed rows come out NaN-free, unobserved stay NaN.

        The imputed-cell count per modality of this call is in the result's
        ``attrs["imputed"]``; the fitted state (``report_``: the counts of the training data
        at ``fit``) is never changed, so a fitted preprocessor transforms the same way
        whatever it transformed before (scikit-learn's contract).
        """
        self._check_fitted()
        self._check_compatible(data)
        counts = self._imputation_counts(data, raise_strict=True)
        X: dict[str, Any] = {}
        for j, m in enumerate(data.modalities):
            on_disk: Any = data.X[m]
            if is_mapped(on_disk):  # stays on disk: the transform is applied when read
                X[m] = (
                    on_disk.raw()
                    .hide(~data.observed[:, j])
                    .with_transform(
                        m in self.log1p_modalities_, self.center_[m], self.scale_[m], self.fill_[m]
                    )
                )
                continue
            x = self._log(data, j, m).astype(np.float64)
            holes = np.isnan(x)
            x = np.where(holes, self.fill_[m][None, :], x)
            x = (x - self.center_[m]) / self.scale_[m]
            x[~data.observed[:, j]] = np.nan
            X[m] = x.astype(np.float32)
        attrs = dict(data.attrs)
        attrs["imputed"] = dict(counts)
        return data.replace(X=X, attrs=attrs)

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable settings and fitted state (floats kept at full precision)."""
        self._check_fitted()
        log1p = self.log1p if isinstance(self.log1p, (str, bool)) else list(self.log1p)
        return {
            "format_version": 1,
            "log1p": log1p,
            "standardize": bool(self.standardize),
            "strict": bool(self.strict),
            "modalities": list(self.modalities_),
            "dims": dict(self.dims_),
            "feature_names": {m: list(v) for m, v in self.feature_names_.items()},
            "log1p_modalities": list(self.log1p_modalities_),
            "center": {m: v.tolist() for m, v in self.center_.items()},
            "scale": {m: v.tolist() for m, v in self.scale_.items()},
            "fill": {m: v.tolist() for m, v in self.fill_.items()},
            "report": dict(self.report_),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`to_dict` output."""
        try:
            p = cls(log1p=state["log1p"], standardize=state["standardize"], strict=state["strict"])
            p.modalities_ = list(state["modalities"])
            p.dims_ = {m: int(d) for m, d in state["dims"].items()}
            p.feature_names_ = {m: list(v) for m, v in state["feature_names"].items()}
            p.log1p_modalities_ = list(state["log1p_modalities"])
            p.center_ = {m: np.asarray(v, np.float64) for m, v in state["center"].items()}
            p.scale_ = {m: np.asarray(v, np.float64) for m, v in state["scale"].items()}
            p.fill_ = {m: np.asarray(v, np.float64) for m, v in state["fill"].items()}
            p.report_ = {m: int(c) for m, c in state.get("report", {}).items()}
        except KeyError as exc:
            raise ValueError(f"preprocessor state lacks the key {exc.args[0]!r}") from exc
        return p

    def __repr__(self) -> str:
        return (
            f"Preprocessor(log1p={self.log1p!r}, standardize={self.standardize}, "
            f"strict={self.strict})"
        )


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column (count of non-NaN cells, mean, population variance); 0 where none."""
    seen = (~np.isnan(x)).sum(axis=0) if x.size else np.zeros(x.shape[1], int)
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = np.nansum(x, axis=0)
        mean = np.where(seen > 0, sums / np.maximum(seen, 1), 0.0)
        var = np.where(seen > 0, np.nansum((x - mean) ** 2, axis=0) / np.maximum(seen, 1), 0.0)
    return seen.astype(np.float64), mean, var
