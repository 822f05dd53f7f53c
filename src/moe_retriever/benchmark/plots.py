"""PNG plots of each metric against the missing rate: one line per method, error bars = std."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from moe_retriever.benchmark.report import _METRIC_TITLES

_STYLES = {"completion": "-", "head": "-.", "reference": "--", "anchor": ":"}


def plot_metric(
    summary: pd.DataFrame,
    metric: str,
    path: str | Path,
    methods: Sequence[str] | None = None,
    title: str | None = None,
) -> Path | None:
    """One PNG for ``metric``; returns its path, or None when the metric has no value."""
    sub = summary[(summary["metric"] == metric) & (summary["n"] > 0)]
    if sub.empty:
        return None
    methods = list(methods) if methods is not None else list(dict.fromkeys(sub["method"]))
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    rates = sorted(set(sub["missing_rate"]))
    offsets = {m: (i - (len(methods) - 1) / 2) * 0.004 for i, m in enumerate(methods)}
    cmap = plt.get_cmap("tab20")
    for i, m in enumerate(methods):
        line = sub[sub["method"] == m].sort_values("missing_rate")
        if line.empty:
            continue
        kind = str(line["kind"].iloc[0])
        ax.errorbar(
            line["missing_rate"] + offsets[m],  # small dodge so error bars do not hide
            line["mean"],
            yerr=line["std"],
            label=m,
            color=cmap((2 * i) % 20 + (2 * i) // 20),  # strong colours first, then pale
            linestyle=_STYLES.get(kind, "-"),
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=2.0 if m == "moe-retriever" else 1.2,
        )
    ax.set_xlabel("added missing rate (0 = natural missingness only)")
    ax.set_ylabel(metric)
    ax.set_xticks(rates)
    ax.set_title(textwrap.fill(title or _METRIC_TITLES.get(metric, metric), 90), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(
    summary: pd.DataFrame,
    out: str | Path,
    metrics: Sequence[str],
    methods: Sequence[str] | None = None,
    prefix: str = "",
) -> list[Path]:
    """``<out>/<prefix><metric>.png`` for every metric that has values."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in metrics:
        p = plot_metric(summary, metric, out / f"{prefix}{metric}.png", methods)
        if p is not None:
            paths.append(p)
    return paths
