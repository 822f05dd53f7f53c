"""Classification metrics: per split, per observed-modality combination, and over seeds.

All functions take integer labels ``y_true`` (N,) and class probabilities ``proba`` (N, C)
and return plain ``float`` values (``nan`` where a metric is undefined), so results can be
written to JSON/CSV directly.

Undefined cases are reported, not crashed on:

* AUROC needs both positives and negatives. Binary: if ``y_true`` holds one class only,
  AUROC is ``nan`` (with a warning). Multiclass: one-vs-rest AUROC is averaged (macro) over
  the classes present in ``y_true``; absent classes are named in a warning and left out; with
  fewer than two classes present it is ``nan``.
* An empty input gives ``nan`` for every metric.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

#: the metric names every report uses, in this order
METRIC_NAMES: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


#: per-class metrics reported next to the averages (:func:`per_class_metrics`)
PER_CLASS_KEYS: tuple[str, ...] = ("recall", "f1", "support")


class MetricWarning(UserWarning):
    """A metric is undefined or computed on fewer classes than the model predicts."""


def auroc(y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str] | None = None) -> float:
    """Binary AUROC, or macro one-vs-rest AUROC over the classes present (see module doc)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = proba.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    present = np.unique(y_true)
    if n_classes == 2:
        if present.size < 2:
            warnings.warn(
                f"AUROC undefined: only class {names[int(present[0])]!r} among "
                f"{y_true.size} samples; reporting nan",
                MetricWarning,
                stacklevel=2,
            )
            return math.nan
        return float(roc_auc_score(y_true, proba[:, 1]))
    if present.size < 2:
        warnings.warn(
            f"AUROC undefined: fewer than two classes among {y_true.size} samples; reporting nan",
            MetricWarning,
            stacklevel=2,
        )
        return math.nan
    absent = [names[c] for c in range(n_classes) if c not in set(present.tolist())]
    if absent:
        warnings.warn(
            f"one-vs-rest AUROC averaged over the {present.size} classes present; absent: {absent}",
            MetricWarning,
            stacklevel=2,
        )
    scores = [roc_auc_score(y_true == c, proba[:, c]) for c in present.tolist()]
    return float(np.mean(scores))


def classification_metrics(
    y_true: np.ndarray | Sequence[int],
    proba: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """``{accuracy, balanced_accuracy, macro_f1, auroc}`` for labels and class probabilities.

    ``macro_f1`` averages over the classes that occur in ``y_true`` or in the predictions
    (scikit-learn's default); classes with no predicted sample score 0 there.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"proba has shape {p.shape}; expected ({y.shape[0]}, n_classes)")
    if y.size == 0:
        return {k: math.nan for k in METRIC_NAMES}
    pred = p.argmax(axis=1)
    with warnings.catch_warnings():
        # balanced accuracy warns when a predicted class never occurs in y_true: harmless here
        warnings.simplefilter("ignore", UserWarning)
        bacc = float(balanced_accuracy_score(y, pred))
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": bacc,
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "auroc": auroc(y, p, class_names),
    }


def per_class_metrics(
    y_true: np.ndarray | Sequence[int],
    proba: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per class ``{name: {"support", "recall", "precision", "f1"}}`` of the arg-max
    predictions, every class of ``proba`` included (a class absent from ``y_true`` has support
    0 and recall nan; a class never predicted has precision 0). A loss in a small class shows
    here long before it moves an average."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    n_classes = p.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    pred = p.argmax(axis=1) if y.size else np.zeros(0, dtype=np.int64)
    out: dict[str, dict[str, float]] = {}
    for c, name in enumerate(names):
        tp = float(np.sum((pred == c) & (y == c)))
        support = float(np.sum(y == c))
        predicted = float(np.sum(pred == c))
        recall = tp / support if support else math.nan
        precision = tp / predicted if predicted else 0.0
        f1 = 2 * tp / (support + predicted) if support + predicted else math.nan
        out[str(name)] = {"support": support, "recall": recall, "precision": precision, "f1": f1}
    return out


def flat_per_class(per_class: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"recall/<class>": ..., "f1/<class>": ..., "support/<class>": ...}``: per-class
    metrics as flat keys (benchmark rows, metrics.json)."""
    return {
        f"{key}/{name}": float(values[key])
        for key in PER_CLASS_KEYS
        for name, values in per_class.items()
    }


def combination_names(observed: np.ndarray, modalities: Sequence[str]) -> list[str]:
    """One name per sample for its observed combination, e.g. ``"mRNA+RPPA"``."""
    obs = np.asarray(observed, dtype=bool)
    return ["+".join(m for m, o in zip(modalities, row) if o) or "(none)" for row in obs]


def per_combination_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    observed: np.ndarray,
    modalities: Sequence[str],
    class_names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per observed-modality combination: ``{combo: {"n": int, <metric>: float}}``.

    Combinations are ordered by sample count (largest first). Small groups often hold a single
    class, so their AUROC is ``nan``; those warnings are silenced here (they are expected).
    """
    names = combination_names(observed, modalities)
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for name, idx in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)
            m = classification_metrics(y[idx], p[idx], class_names)
        out[name] = {"n": len(idx), **m}
    return out


def mean_std(values: Iterable[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}`` ignoring nan; std is the sample std (ddof=1), 0 for one value."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def aggregate_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Metric dicts of several seeds -> ``{metric: {"mean", "std", "n"}}`` (nan-aware)."""
    keys: list[str] = []
    for d in per_seed:
        keys += [k for k in d if k not in keys]
    return {k: mean_std(float(d[k]) for d in per_seed if k in d) for k in keys}


def aggregate_combinations(
    per_seed: Sequence[Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """Per-combination metrics of several seeds -> ``{combo: {"n": int, metric: mean/std}}``.

    ``n`` is the sample count of the combination in the first seed where it occurs (the test
    split is shared by all seeds of a run, so it is the same for all of them).
    """
    return _aggregate_groups(per_seed, "n", METRIC_NAMES)


def _aggregate_groups(
    per_seed: Sequence[Mapping[str, Mapping[str, Any]]], count: str, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Groups (combinations, classes) of several seeds -> ``{group: {count: int, key:
    mean/std}}``, groups in order of first appearance; ``count`` from the first seed that has
    the group (the test split is shared by the seeds of a run)."""
    groups: list[str] = []
    for d in per_seed:
        groups += [g for g in d if g not in groups]
    out: dict[str, dict[str, Any]] = {}
    for g in groups:
        rows = [d[g] for d in per_seed if g in d]
        out[g] = {count: int(rows[0][count])}
        for k in keys:
            out[g][k] = mean_std(float(r[k]) for r in rows if k in r)
    return out


def aggregate_per_class(
    per_seed: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, Any]]:
    """Per-class metrics of several seeds -> ``{class: {"support": n, "recall": mean/std,
    "precision": ..., "f1": ...}}`` (support from the first seed: the test split is shared)."""
    return _aggregate_groups(per_seed, "support", ("recall", "precision", "f1"))


def format_mean_std(stat: Mapping[str, float], digits: int = 3) -> str:
    """``"0.812 ± 0.034"`` (or ``"nan"``)."""
    if stat.get("n", 1) == 0 or math.isnan(stat["mean"]):
        return "nan"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
