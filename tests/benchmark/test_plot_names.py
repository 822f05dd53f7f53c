"""Plot file names link cleanly from Markdown: a variant's brackets, '=' and ',' never reach a
file name, and two names never share a file."""

from __future__ import annotations

import re
from pathlib import Path

from moe_retriever.benchmark.plots import forest_plots, plot_stem
from moe_retriever.benchmark.stats import PairedComparison


def test_plot_stem_keeps_plain_names_and_makes_variants_safe() -> None:
    assert plot_stem("lr-late-fusion") == "lr-late-fusion"
    assert plot_stem("best-anchor") == "best-anchor"
    stem = plot_stem("moe-retriever[train.epochs=15,completion.k=5]")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", stem)
    assert stem.startswith("moe-retriever_train.epochs_15_completion.k_5-")
    # names that differ only in the replaced characters get different stems
    assert plot_stem("a[x=1]") != plot_stem("a_x_1") != plot_stem("a[x,1]")


def _comparison(role: str, method: str) -> PairedComparison:
    c = PairedComparison(
        method=method,
        reference=role,
        metric="macro_f1",
        n=5,
        mean=0.01,
        sd=0.01,
        low=-0.002,
        high=0.022,
        interval="t",
        missing_rate=0.0,
    )
    c.role = role
    return c


def test_forest_plots_of_a_variant_reference_have_safe_file_names(tmp_path: Path) -> None:
    role = "moe-retriever[model.align_contrast=1]"
    paths = forest_plots(
        [_comparison(role, "zero"), _comparison("lr-late-fusion", "zero")], tmp_path
    )
    names = sorted(p.name for p in paths)
    assert "forest_lr-late-fusion.png" in names
    (variant,) = [n for n in names if n != "forest_lr-late-fusion.png"]
    assert re.fullmatch(r"forest_[A-Za-z0-9._-]+\.png", variant)
    assert all((tmp_path / n).is_file() for n in names)
