"""PNG plots: each metric against the missing rate (one line per method, error bars = std),
and forest plots of the paired differences to the reference methods."""

from __future__ import annotations

import hashlib
import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from moe_retriever.benchmark.report import _METRIC_TITLES
from moe_retriever.benchmark.stats import BEST_ANCHOR, PairedComparison

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


def forest_plot(
    comparisons: Sequence[PairedComparison],
    path: str | Path,
    title: str = "",
) -> Path | None:
    """A forest plot of paired differences: one panel per metric, one row per (method,
    missing rate), the mean difference as a dot and its interval as a bar, 0 as a line.
    Intervals that exclude 0 are drawn solid (filled dot), the others pale. ``None`` when
    there is nothing to draw."""
    comps = [c for c in comparisons if c.n > 0 and not math.isnan(c.mean)]
    if not comps:
        return None
    metrics = list(dict.fromkeys(c.metric for c in comps))
    labels = list(
        dict.fromkeys(
            (c.method, c.missing_rate)
            for c in sorted(comps, key=lambda c: (c.missing_rate or 0.0, c.method))
        )
    )
    refs = sorted({c.reference for c in comps})
    height = 0.9 + 0.28 * len(labels)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.1 * len(metrics) + 1.6, height), sharey=True, squeeze=False
    )
    ypos = {lab: len(labels) - 1 - i for i, lab in enumerate(labels)}
    cmap = plt.get_cmap("tab10")
    rates = sorted({lab[1] or 0.0 for lab in labels})
    for ax, metric in zip(axes[0], metrics):
        for c in comps:
            if c.metric != metric:
                continue
            y = ypos[(c.method, c.missing_rate)]
            colour = cmap(rates.index(c.missing_rate or 0.0) % 10)
            solid = c.n > 1 and c.excludes_zero
            if c.n > 1 and not (math.isnan(c.low) or math.isnan(c.high)):
                ax.plot([c.low, c.high], [y, y], color=colour, alpha=1.0 if solid else 0.45, lw=2)
            ax.plot(
                [c.mean],
                [y],
                "o",
                color=colour,
                markerfacecolor=colour if solid else "white",
                markersize=5,
            )
        ax.axvline(0.0, color="black", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(
        [ypos[lab] for lab in labels],
        [f"{m} @ {r:g}" if r is not None else m for m, r in labels],
    )
    level = f"{100 * comps[0].level:g}%"
    head = title or f"paired difference to {', '.join(refs)}"
    fig.suptitle(
        textwrap.fill(
            f"{head}: mean over units and {level} interval; filled = excludes 0 (@ = added "
            "missing rate)",
            110,
        ),
        fontsize=8,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_stem(name: str) -> str:
    """A file-name stem for a method or role name that links cleanly from Markdown: runs of
    characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (a variant's
    ``[key=value,...]`` included), plus 6 hex digits of the name's SHA-1 when anything was
    replaced, so two names never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    if safe == name:
        return name
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def forest_plots(comparisons: Sequence[PairedComparison], out: str | Path) -> list[Path]:
    """``<out>/forest_<reference role>.png`` for each reference role of the comparisons (the
    role's name made file-safe by :func:`plot_stem`)."""
    paths = []
    for role in dict.fromkeys(c.role for c in comparisons):
        sub = [c for c in comparisons if c.role == role]
        name = "best-anchor" if role == BEST_ANCHOR else role
        what = (
            "the best classical anchor per rate ("
            + ", ".join(sorted({c.reference for c in sub}))
            + ")"
            if role == BEST_ANCHOR
            else role
        )
        p = forest_plot(
            sub, Path(out) / f"forest_{plot_stem(name)}.png", f"paired difference to {what}"
        )
        if p is not None:
            paths.append(p)
    return paths
