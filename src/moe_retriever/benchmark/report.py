"""Benchmark tables: raw rows -> mean ± std summary -> results.csv / results.md / results.json.

The raw table has one row per (method, missing rate, seed, fold, metric) with the columns
:data:`RESULT_COLUMNS`; everything else (the Markdown tables, the JSON summary, the plots) is
computed from those rows alone, so the aggregate can always be checked against them.
Standard deviations are sample standard deviations over seeds (ddof=1; 0 for one seed), NaN
values (e.g. an undefined AUROC, or fidelity at rate 0 where nothing was hidden) are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moe_retriever.benchmark.stats import BEST_ANCHOR, PairedComparison, signed
from moe_retriever.training.metrics import mean_std

RESULT_COLUMNS: list[str] = [
    "dataset",
    "method",
    "kind",
    "missing_rate",
    "seed",
    "metric",
    "value",
    "split_seed",  # the seed that drew split and mask (= seed unless --vary init)
    "fold",  # the test fold under --cv K; 0 for a single holdout split
]

#: the metrics shown in results.md, in this order (others stay in the CSV/JSON)
TABLE_METRICS: list[str] = [
    "macro_f1",
    "accuracy",
    "balanced_accuracy",
    "auroc",
    "fidelity_cosine",
    "fidelity_probe_r2",
    "fidelity_specificity",
    "fidelity_mse",
    "router_entropy",
    "fit_seconds",
]

_METRIC_TITLES = {
    "macro_f1": "Macro-F1 (test)",
    "accuracy": "Accuracy (test)",
    "balanced_accuracy": "Balanced accuracy (test)",
    "auroc": "AUROC (test; macro one-vs-rest for several classes)",
    "fidelity_cosine": "Retrieval fidelity: cosine similarity to the true tokens "
    "(entries hidden by the simulator, test split; higher is better)",
    "fidelity_probe_r2": "Retrieval fidelity: linear-probe R^2 of the hidden modality's "
    "preprocessed features from the completed tokens (probe fitted on training rows; 0 = no "
    "better than the training mean; higher is better)",
    "fidelity_specificity": "Retrieval fidelity: specificity, cosine to the sample's own true "
    "token minus mean cosine to other samples' true tokens (0 = the same fill for every "
    "sample; higher is better)",
    "fidelity_mse": "Retrieval fidelity: MSE to the true tokens (lower is better)",
    "router_entropy": "MoE-Retriever router: normalised entropy of expert usage "
    "(1 = perfectly balanced over the eligible experts)",
    "fit_seconds": "Wall time per fit, seconds (training + prediction)",
}


def summarize(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean, std and count over seeds per (dataset, method, kind, missing_rate, metric)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(
            columns=["dataset", "method", "kind", "missing_rate", "metric", "mean", "std", "n"]
        )
    keys = ["dataset", "method", "kind", "missing_rate", "metric"]

    def agg(values: pd.Series) -> pd.Series:
        # the one mean ± std of the package (train, demo and benchmark): nan-aware, ddof=1
        return pd.Series(mean_std(values.to_numpy(dtype=float)))

    out = df.groupby(keys, sort=False)["value"].apply(agg).unstack().reset_index()
    out["n"] = out["n"].astype(int)
    return out


def _cell(mean: float, std: float, n: int, digits: int) -> str:
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(
    summary: pd.DataFrame,
    metric: str,
    methods: Sequence[str] | None = None,
    rates: Sequence[float] | None = None,
    digits: int = 3,
    bold_best: bool = True,
) -> str:
    """A Markdown table: one row per method, one column per missing rate, ``mean ± std``."""
    sub = summary[summary["metric"] == metric]
    if sub.empty:
        return ""
    methods = list(methods) if methods is not None else list(dict.fromkeys(sub["method"]))
    methods = [m for m in methods if m in set(sub["method"])]
    rates = list(rates) if rates is not None else sorted(set(sub["missing_rate"]))
    kinds = dict(zip(sub["method"], sub["kind"]))
    lower_better = metric in ("fidelity_mse", "fit_seconds")
    best: dict[float, float] = {}
    for r in rates:
        vals = sub[(sub["missing_rate"] == r)]["mean"].dropna()
        if len(vals) and bold_best and metric != "fit_seconds" and metric != "router_entropy":
            best[r] = float(vals.min() if lower_better else vals.max())
    header = "| method | kind | " + " | ".join(f"rate {r:g}" for r in rates) + " |"
    lines = [header, "|" + "---|" * (2 + len(rates))]
    for m in methods:
        cells = []
        for r in rates:
            hit = sub[(sub["method"] == m) & (sub["missing_rate"] == r)]
            if hit.empty:
                cells.append("–")
                continue
            mean, std, n = (
                float(hit["mean"].iloc[0]),
                float(hit["std"].iloc[0]),
                int(hit["n"].iloc[0]),
            )
            text = _cell(mean, std, n, digits)
            if r in best and n and not math.isnan(mean) and abs(mean - best[r]) < 1e-12:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {m} | {kinds.get(m, '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(
    summary: pd.DataFrame,
    title: str,
    methods: Sequence[str] | None = None,
    rates: Sequence[float] | None = None,
    metrics: Sequence[str] = TABLE_METRICS,
    notes: Sequence[str] = (),
    preface: str = "",
) -> str:
    """results.md: a section per metric (mean ± std over seeds; best per column in bold).

    ``preface`` (Markdown, e.g. the paired comparisons) goes after the notes, before the
    tables."""
    parts = [f"# {title}", ""]
    parts += [f"- {n}" for n in notes]
    if notes:
        parts.append("")
    if preface:
        parts += [preface.rstrip(), ""]
    for metric in metrics:
        table = markdown_table(
            summary, metric, methods, rates, digits=1 if metric == "fit_seconds" else 3
        )
        if table:
            parts += [f"## {_METRIC_TITLES.get(metric, metric)}", "", table, ""]
    return "\n".join(parts)


_INTERVAL_TEXT = {
    "t": "paired t interval (scipy.stats.t, n - 1 degrees of freedom)",
    "bootstrap": "percentile bootstrap interval (10000 resamples of the units, seed 0)",
    "corrected-t": "Nadeau-Bengio corrected resampled t interval (variance x (1/n + "
    "n_test/n_train), because folds share training data)",
}


def comparison_cell(c: PairedComparison, n_max: int) -> str:
    """``+0.031 [−0.012, +0.074]``, with ▲ / ▼ where the interval excludes 0 and the unit
    count where it is below ``n_max`` (a failed run or an undefined score dropped a unit)."""
    if c.n == 0:
        return "–"
    if c.n < 2:
        text = f"{signed(c.mean)} (n=1, no interval)"
    else:
        text = f"{signed(c.mean)} [{signed(c.low)}, {signed(c.high)}]"
        if c.excludes_zero:
            text += " ▲" if c.mean > 0 else " ▼"
    if 1 < c.n < n_max:
        text += f" (n={c.n})"
    return text


def comparisons_markdown(
    comparisons: Sequence[PairedComparison],
    methods: Sequence[str],
    rates: Sequence[float],
    unit: str = "seed",
    test_train_ratio: float | None = None,
) -> str:
    """The paired-difference tables (one per metric and reference) and their sentences."""
    if not comparisons:
        return ""
    interval = comparisons[0].interval
    level = f"{100 * comparisons[0].level:g}%"
    n_max = max(c.n for c in comparisons)
    lines = [
        "## Paired differences to reference methods",
        "",
        f"- each cell: mean over {unit}s of (method − reference) on the same split and mask, "
        f"and its {level} {_INTERVAL_TEXT.get(interval, interval)}; n = {n_max} paired "
        f"{unit}s unless the cell says otherwise",
        "- ▲ / ▼: the interval excludes 0, the method is distinguishably above / below the "
        "reference; no mark: the data cannot tell them apart",
    ]
    if interval == "corrected-t" and test_train_ratio is not None:
        lines.append(f"- n_test / n_train = {test_train_ratio:.3f} (mean over the runs)")
    lines.append("")
    roles = list(dict.fromkeys(c.role for c in comparisons))
    metrics = list(dict.fromkeys(c.metric for c in comparisons))
    for metric in metrics:
        for role in roles:
            sub = [c for c in comparisons if c.metric == metric and c.role == role]
            if not sub:
                continue
            refs = {c.missing_rate: c.reference for c in sub}
            what = (
                "the best classical anchor at each rate (highest mean macro-F1 among kind `anchor`)"
                if role == BEST_ANCHOR
                else f"`{role}`"
            )
            lines += [f"### {metric}: difference to {what}", ""]
            cols = [r for r in rates if r in refs]
            head = [
                f"rate {r:g} (vs {refs[r]})" if role == BEST_ANCHOR else f"rate {r:g}" for r in cols
            ]
            lines.append("| method | " + " | ".join(head) + " |")
            lines.append("|" + "---|" * (1 + len(cols)))
            for m in methods:
                cells = []
                for r in cols:
                    hit = [c for c in sub if c.method == m and c.missing_rate == r]
                    if hit:
                        cells.append(comparison_cell(hit[0], n_max))
                    elif refs[r] == m:
                        cells.append("(reference)")
                    else:
                        cells.append("–")
                if any(x not in ("–",) for x in cells):
                    lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["### In words", ""]
    for c in comparisons:
        text = c.sentence()
        if c.dropped:
            units = ", ".join(_unit_text(u, unit != "seed") for u in c.dropped)
            text += f" Not paired (a failed run or an undefined score): {units}."
        lines.append(f"- rate {c.missing_rate:g}, {c.metric}: {text}")
    return "\n".join(lines) + "\n"


def per_class_markdown(
    summary: pd.DataFrame,
    recall_comparisons: Sequence[PairedComparison],
    methods: Sequence[str],
    rates: Sequence[float],
) -> str:
    """The per-class section of results.md: test recall and F1 (means over units) per method
    and class at each rate, then the paired recall differences to the references per class,
    which say which classes a difference in the averages comes from."""
    sub = summary[summary["metric"].str.startswith("recall/")]
    if sub.empty:
        return ""
    classes = list(dict.fromkeys(m.split("/", 1)[1] for m in sub["metric"]))
    lines = [
        "## Per class (test)",
        "",
        "- each cell: recall / F1 of the class, means over units; support = mean number of test "
        "samples of the class per unit",
        "",
    ]

    # (method, rate, metric) -> mean over units, built once (nan where no unit had a value)
    means = {
        (r.method, float(r.missing_rate), r.metric): float(r.mean) if int(r.n) else math.nan
        for r in summary.itertuples(index=False)
        if str(r.metric).split("/", 1)[0] in ("recall", "f1", "support")
    }

    def mean_of(method: str, rate: float, metric: str) -> float:
        return means.get((method, float(rate), metric), math.nan)

    for rate in rates:
        sizes = {
            c: [v for (_, r, k), v in means.items() if r == rate and k == f"support/{c}"]
            for c in classes
        }
        head = [f"{c} (n={sizes[c][0]:.0f})" if sizes[c] else c for c in classes]
        lines += [f"### rate {rate:g}", "", "| method | " + " | ".join(head) + " |"]
        lines.append("|" + "---|" * (1 + len(classes)))
        for m in methods:
            cells = [
                f"{mean_of(m, rate, f'recall/{c}'):.3f} / {mean_of(m, rate, f'f1/{c}'):.3f}"
                for c in classes
            ]
            if any(x != "nan / nan" for x in cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if recall_comparisons:
        n_max = max(c.n for c in recall_comparisons)
        lines += [
            "### Which classes the differences come from: paired recall difference per class",
            "",
            "- same pairing and interval as the paired differences above; ▲ / ▼: the method "
            "recalls the class distinguishably more / less often than the reference",
            "",
        ]
        for role in dict.fromkeys(c.role for c in recall_comparisons):
            for rate in rates:
                block = [c for c in recall_comparisons if c.role == role and c.missing_rate == rate]
                if not block:
                    continue
                ref = block[0].reference
                lines += [f"rate {rate:g}, difference to `{ref}`:", ""]
                lines.append("| method | " + " | ".join(classes) + " |")
                lines.append("|" + "---|" * (1 + len(classes)))
                for m in methods:
                    cells = []
                    for cl in classes:
                        hit = [c for c in block if c.method == m and c.metric == f"recall/{cl}"]
                        cells.append(comparison_cell(hit[0], n_max) if hit else "–")
                    if any(x != "–" for x in cells):
                        lines.append(f"| {m} | " + " | ".join(cells) + " |")
                lines.append("")
    return "\n".join(lines) + "\n"


def tuned_markdown(
    comparisons: Sequence[PairedComparison],
    tune: Mapping[str, Any],
    rates: Sequence[float],
    unit: str = "seed",
) -> str:
    """``benchmark --tune``: each ``M+tuned`` minus its untuned ``M``, per metric and rate."""
    lines = [
        "## Tuned vs untuned",
        "",
        f"- `M+tuned`: method `M` after {tune['trials']} trials of `moe-retriever tune` (TPE, "
        f"median pruning) on each {unit}'s training and validation parts, objective "
        f"`{tune['metric']}` on validation; `M`: the config as given. Every deep method had "
        "the same budget; the classical anchors choose their regularisation on validation "
        "as always",
    ]
    if not comparisons:
        return "\n".join([*lines, "- no tuned and untuned pair finished yet", ""]) + "\n"
    c0 = comparisons[0]
    n_max = max(c.n for c in comparisons)
    lines += [
        f"- each cell: mean over {unit}s of (tuned − untuned) on the same split and mask, and "
        f"its {100 * c0.level:g}% {_INTERVAL_TEXT.get(c0.interval, c0.interval)}; n = {n_max} "
        f"paired {unit}s unless the cell says otherwise; ▲ / ▼: the interval excludes 0",
        "",
    ]
    for metric in dict.fromkeys(c.metric for c in comparisons):
        lines += [f"### {metric}: tuned − untuned", ""]
        lines.append("| method | " + " | ".join(f"rate {r:g}" for r in rates) + " |")
        lines.append("|" + "---|" * (1 + len(rates)))
        for m in dict.fromkeys(c.method for c in comparisons):
            cells = []
            for r in rates:
                hit = [
                    c
                    for c in comparisons
                    if c.method == m and c.metric == metric and c.missing_rate == r
                ]
                cells.append(comparison_cell(hit[0], n_max) if hit else "–")
            lines.append(f"| {m} (vs {tune['methods'][m]}) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _unit_text(u: Any, with_fold: bool) -> str:
    if isinstance(u, tuple) and len(u) == 2:
        return f"seed {u[0]}" + (f" fold {u[1]}" if with_fold else "")
    return str(u)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    return o


def write_results(
    out: str | Path,
    rows: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any],
    title: str,
    methods: Sequence[str] | None = None,
    rates: Sequence[float] | None = None,
    notes: Sequence[str] = (),
    preface: str = "",
) -> dict[str, Path]:
    """Write results.csv (raw rows), results.md (tables) and results.json (all of it).

    ``meta`` (config, masks, routing, failures, ...) goes into results.json next to the raw
    rows and the summary. NaN becomes ``null`` in JSON. Returns the paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(list(rows), columns=RESULT_COLUMNS)
    summary = summarize(df)
    paths = {
        "csv": out / "results.csv",
        "md": out / "results.md",
        "json": out / "results.json",
    }
    df.to_csv(paths["csv"], index=False)
    paths["md"].write_text(
        results_markdown(summary, title, methods, rates, notes=notes, preface=preface)
    )
    payload = {
        **meta,
        "summary": summary.to_dict(orient="records"),
        "rows": df.to_dict(orient="records"),
    }
    paths["json"].write_text(
        json.dumps(_nan_to_none(payload), indent=1, default=_json_default, allow_nan=False)
    )
    return paths
