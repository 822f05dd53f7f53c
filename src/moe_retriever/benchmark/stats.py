"""Paired comparisons of two methods over the same units, with a 95% interval.

Seed-to-seed spread of a test score is several points on small cohorts, so a difference of
means says little on its own. Every method of a benchmark sees the same split and mask per
unit (a seed, or a (seed, fold) pair under repeated k-fold), so the right question is about
the per-unit differences ``d_u = score(method, u) - score(reference, u)``:

* ``mean``, ``sd`` (ddof=1) and ``n`` of the differences;
* a 95% interval for the mean difference:

  - ``"t"`` (default): the paired t interval ``mean ± t_{0.975, n-1} * sd / sqrt(n)``
    (:func:`scipy.stats.t`);
  - ``"bootstrap"``: a seeded percentile bootstrap of the mean (resampling units with
    replacement; the same seed gives the same interval);
  - ``"corrected-t"``: the Nadeau-Bengio corrected resampled t for repeated k-fold units,
    ``mean ± t_{0.975, n-1} * sd * sqrt(1/n + n_test/n_train)``. The folds of a repeat, and
    the repeats themselves, train on overlapping data, so their differences are positively
    correlated and the plain ``sd^2 / n`` understates the variance of the mean; the extra
    ``n_test/n_train`` term is the correction of Nadeau & Bengio (2003, "Inference for the
    generalization error"). It is wider than the plain t interval for the same numbers.

* ``excludes_zero``: whether the interval lies entirely above or below 0.

Pairing is on units present (and not NaN) for BOTH methods: a failed run, or an undefined
score, drops that unit from that pair only, and the comparison lists the dropped units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "BEST_ANCHOR",
    "COMPARISON_METRICS",
    "INTERVALS",
    "PairedComparison",
    "bootstrap_interval",
    "compare_to_references",
    "paired_comparison",
    "t_interval",
]

#: interval names accepted by :func:`paired_comparison`
INTERVALS = ("t", "bootstrap", "corrected-t")

#: the reference that stands for "the classical anchor with the highest mean macro-F1 at
#: this rate" (resolved per missing rate)
BEST_ANCHOR = "best-anchor"

#: the headline metrics every method is compared on (higher is better for all)
COMPARISON_METRICS = ("macro_f1", "balanced_accuracy", "accuracy", "auroc")

_INTERVAL_WORDS = {
    "t": "paired t interval",
    "bootstrap": "percentile bootstrap interval",
    "corrected-t": "Nadeau-Bengio corrected resampled t interval",
}


@dataclass
class PairedComparison:
    """``method`` minus ``reference`` on ``metric`` over the units both have."""

    method: str
    reference: str
    metric: str
    n: int
    mean: float
    sd: float
    low: float
    high: float
    interval: str
    level: float = 0.95
    missing_rate: float | None = None
    role: str = ""  # how the reference was chosen: its name, or BEST_ANCHOR
    units: list[Any] = field(default_factory=list)
    dropped: list[Any] = field(default_factory=list)

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval is above 0 or below 0 (never for a NaN interval)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return False
        return self.low > 0 or self.high < 0

    def sentence(self, higher_is_better: bool = True) -> str:
        """The comparison in words: distinguishable (and which way) or not."""
        x, y = f"`{self.method}`", f"`{self.reference}`"
        lvl = f"{100 * self.level:g}%"
        what = _INTERVAL_WORDS.get(self.interval, self.interval)
        nums = f"{signed(self.mean)} [{signed(self.low)}, {signed(self.high)}], n={self.n}"
        if self.n < 2:
            return f"{x} vs {y}: n={self.n} paired unit(s), too few for an interval."
        if self.excludes_zero:
            side = "above" if self.mean > 0 else "below"
            if not higher_is_better:
                side = f"{side} (lower is better)"
            return f"{x} is distinguishably {side} {y} ({nums}; the {lvl} {what} excludes 0)."
        return f"the data cannot tell {x} and {y} apart ({nums}; the {lvl} {what} holds 0)."

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["excludes_zero"] = self.excludes_zero
        out["units"] = [list(u) if isinstance(u, tuple) else u for u in self.units]
        out["dropped"] = [list(u) if isinstance(u, tuple) else u for u in self.dropped]
        return out


def signed(x: float, digits: int = 3) -> str:
    """``+0.031`` / ``−0.012`` (a true minus sign), ``nan`` as ``–``."""
    if math.isnan(x):
        return "–"
    text = f"{x:+.{digits}f}"
    return text.replace("-", "\u2212")


def t_interval(
    diffs: Sequence[float] | np.ndarray, level: float = 0.95, test_train_ratio: float | None = None
) -> tuple[float, float]:
    """The paired t interval of the mean of ``diffs``; with ``test_train_ratio`` (``n_test /
    n_train`` of a fold) the Nadeau-Bengio corrected one (module docstring). NaN for n < 2."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    factor = 1.0 / n + (float(test_train_ratio) if test_train_ratio is not None else 0.0)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * math.sqrt(var * factor)
    return mean - half, mean + half


def bootstrap_interval(
    diffs: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (units resampled with
    replacement, ``n_boot`` times, ``numpy.random.default_rng(seed)``). NaN for n < 2."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_comparison(
    method_scores: Mapping[Any, float],
    reference_scores: Mapping[Any, float],
    method: str = "method",
    reference: str = "reference",
    metric: str = "metric",
    interval: str = "t",
    level: float = 0.95,
    test_train_ratio: float | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    missing_rate: float | None = None,
) -> PairedComparison:
    """``method`` minus ``reference`` over the units (keys) both score (see the module doc).

    ``interval``: ``"t"``, ``"bootstrap"`` or ``"corrected-t"`` (needs ``test_train_ratio``).
    Units missing from one side or NaN on either are dropped and listed in ``dropped``.
    """
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}; got {interval!r}")
    if interval == "corrected-t" and (test_train_ratio is None or test_train_ratio <= 0):
        raise ValueError(
            "the corrected t interval needs test_train_ratio = n_test / n_train > 0, "
            f"got {test_train_ratio!r}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")

    def ok(v: Any) -> bool:
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    keys = list(dict.fromkeys([*method_scores, *reference_scores]))
    units = [
        k
        for k in keys
        if k in method_scores
        and k in reference_scores
        and ok(method_scores[k])
        and ok(reference_scores[k])
    ]
    dropped = [k for k in keys if k not in units]
    units = _sorted(units)
    d = np.array([float(method_scores[k]) - float(reference_scores[k]) for k in units])
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan)
    if interval == "bootstrap":
        low, high = bootstrap_interval(d, level, n_boot, seed)
    else:
        ratio = test_train_ratio if interval == "corrected-t" else None
        low, high = t_interval(d, level, ratio)
    return PairedComparison(
        method=method,
        reference=reference,
        metric=metric,
        n=n,
        mean=mean,
        sd=sd,
        low=low,
        high=high,
        interval=interval,
        level=level,
        missing_rate=missing_rate,
        units=units,
        dropped=_sorted(dropped),
    )


def _sorted(units: Iterable[Any]) -> list[Any]:
    items = list(units)
    try:
        return sorted(items)
    except TypeError:
        return items


def _unit_of(row: Mapping[str, Any]) -> tuple[int, int]:
    fold = row.get("fold", 0)
    if fold is None or (isinstance(fold, float) and math.isnan(fold)):
        fold = 0
    return int(row["seed"]), int(fold)


def compare_to_references(
    rows: Iterable[Mapping[str, Any]],
    kinds: Mapping[str, str],
    references: Sequence[str] | None = None,
    metrics: Sequence[str] = COMPARISON_METRICS,
    interval: str = "t",
    test_train_ratio: float | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> list[PairedComparison]:
    """Every method against each reference, per missing rate and metric, from raw rows.

    ``rows``: the benchmark's long rows (``method``, ``missing_rate``, ``seed``, ``fold``,
    ``metric``, ``value``); units are (seed, fold). ``kinds``: method -> kind. ``references``:
    method names or :data:`BEST_ANCHOR`; default ``[BEST_ANCHOR, "zero"]``, each where
    present. :data:`BEST_ANCHOR` is, per rate, the method of kind ``"anchor"`` with the highest
    mean macro-F1 over its units. A reference is never compared with itself.
    """
    scores: dict[tuple[str, float, str], dict[tuple[int, int], float]] = {}
    for r in rows:
        if r["metric"] not in metrics and r["metric"] != "macro_f1":
            continue
        key = (str(r["method"]), float(r["missing_rate"]), str(r["metric"]))
        scores.setdefault(key, {})[_unit_of(r)] = float(r["value"])
    methods = list(dict.fromkeys(m for m, _, _ in scores))
    rates = sorted({rate for _, rate, _ in scores})
    refs = list(references) if references else [BEST_ANCHOR, "zero"]
    out: list[PairedComparison] = []
    for rate in rates:
        for role in refs:
            ref = _resolve_reference(role, rate, scores, methods, kinds)
            if ref is None:
                continue
            for metric in metrics:
                ref_scores = scores.get((ref, rate, metric))
                if ref_scores is None:
                    continue
                for m in methods:
                    if m == ref or (m, rate, metric) not in scores:
                        continue
                    c = paired_comparison(
                        scores[(m, rate, metric)],
                        ref_scores,
                        m,
                        ref,
                        metric,
                        interval=interval,
                        level=level,
                        test_train_ratio=test_train_ratio,
                        seed=seed,
                        missing_rate=rate,
                    )
                    c.role = role
                    out.append(c)
    return out


def _resolve_reference(
    role: str,
    rate: float,
    scores: Mapping[tuple[str, float, str], Mapping[tuple[int, int], float]],
    methods: Sequence[str],
    kinds: Mapping[str, str],
) -> str | None:
    if role != BEST_ANCHOR:
        return role if (role, rate, "macro_f1") in scores else None
    best, best_mean = None, -math.inf
    for m in methods:
        vals = [v for v in scores.get((m, rate, "macro_f1"), {}).values() if not math.isnan(v)]
        if kinds.get(m) != "anchor" or not vals:
            continue
        mean = float(np.mean(vals))
        if mean > best_mean:
            best, best_mean = m, mean
    return best
