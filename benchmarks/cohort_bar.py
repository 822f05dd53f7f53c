"""Check a method against an anchor on benchmark folders, metric by metric and rate by rate.

For every folder (a ``moe-retriever benchmark`` output with ``results.csv``), every added
missing rate and every headline metric it prints the method's and the anchor's means, the
paired difference method - anchor with its 95 % paired t interval (the harness's own
:func:`~moe_retriever.benchmark.stats.compare_to_references`, units (seed, fold)), and every
other method of the folder that is distinguishably ABOVE the method. Then it says, per
criterion of issue 22's bar, whether it holds:

1. the method's mean is at least the anchor's on macro-F1 and balanced accuracy at every rate;
2. no interval of the difference (four metrics) lies below 0;
3. the lower end is above 0 on macro-F1 or balanced accuracy in at least one folder;
4. no other method is distinguishably above the method on any metric.

A cohort given as ``A+B`` pools folders that share their splits (pair_folders.py), so a method
fitted later (a new default) is checked against the anchor and the box fitted before;
``--exclude`` leaves methods out of the box (the previous default). ``--same-as OLD``: at a rate
where the method has no rows, OLD's rows stand for it (a new default that is bit for bit the old
one at that rate, e.g. ``retrieval_dropout_match: pool`` wherever 30 % or more of the entries are
missing); the notes name those rates, and OLD leaves the box.

    python benchmarks/cohort_bar.py docs/results/defaults-smart docs/results/defaults-support2 \\
        --json benchmarks/results/cohort_bar.json

``--plots DIR`` draws, per cohort, the forest plot of every method's paired difference to the
anchor (``DIR/forest_<cohort>.png``), so a pooled comparison has its picture too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from moe_retriever.benchmark.stats import COMPARISON_METRICS, compare_to_references, signed


def _frame(folder: Path | str) -> tuple[str, pd.DataFrame, list[str]]:
    """One cohort's long rows: a folder's results.csv, or ``A+B+...``: folders that share
    their splits pooled by pair_folders.py (each method's units from the first folder that has
    them; split and mask digests checked where results.json holds them)."""
    parts = [Path(p) for p in str(folder).split("+")]
    if len(parts) == 1:
        return parts[0].name, pd.read_csv(parts[0] / "results.csv"), []
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from pair_folders import pool
    finally:
        sys.path.pop(0)
    rows, notes = pool(parts)
    return "+".join(p.name for p in parts), pd.DataFrame(rows), notes


def check(
    folders: list[Path] | list[str],
    method: str,
    anchor: str,
    exclude: list[str] | tuple[str, ...] = (),
    same_as: str | None = None,
    plots: Path | None = None,
) -> dict[str, Any]:
    """The bar's rows and verdicts; ``exclude``: methods of the folders left out of the box
    (e.g. the previous default when ``method`` is its successor); ``same_as``: a method whose
    rows stand for ``method`` at the rates where ``method`` has none (then left out of the
    box)."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for folder in folders:
        name, df, pooled_notes = _frame(folder)
        notes += pooled_notes
        if same_as is not None:
            have = set(df.missing_rate[df.method == method])
            stand_in = df[(df.method == same_as) & ~df.missing_rate.isin(have)]
            if len(stand_in):
                filled = sorted(float(r) for r in stand_in.missing_rate.unique())
                notes.append(
                    f"{name}: at rate(s) {', '.join(f'{r:g}' for r in filled)} the rows of "
                    f"{same_as} stand for {method} (--same-as)"
                )
                df = pd.concat([df, stand_in.assign(method=method)], ignore_index=True)
            df = df[df.method != same_as]
        df = df[~df.method.isin(list(exclude))]
        means = df.groupby(["method", "missing_rate", "metric"]).value.mean()
        # units are (seed, fold) as in the benchmark's own tables
        comps = compare_to_references(df.to_dict("records"), {}, references=[method, anchor])
        if plots is not None:
            from moe_retriever.benchmark.plots import forest_plot, plot_stem

            drawn = forest_plot(
                [c for c in comps if c.reference == anchor],
                Path(plots) / f"forest_{plot_stem(name)}.png",
                f"{name}: paired difference to {anchor}",
            )
            if drawn is not None:
                notes.append(f"{name}: forest plot {drawn}")
        for rate in sorted(df.missing_rate.unique()):
            for metric in COMPARISON_METRICS:
                here = [c for c in comps if c.missing_rate == rate and c.metric == metric]
                (c,) = [x for x in here if x.method == method and x.reference == anchor]
                above = [
                    f"{x.method} {signed(x.mean)} [{signed(x.low)}, {signed(x.high)}]"
                    for x in here
                    if x.reference == method and x.excludes_zero and x.mean > 0
                ]
                rows.append(
                    {
                        "data": name,
                        "rate": float(rate),
                        "metric": metric,
                        "n": c.n,
                        "method_mean": float(means[(method, rate, metric)]),
                        "anchor_mean": float(means[(anchor, rate, metric)]),
                        "diff": c.mean,
                        "low": c.low,
                        "high": c.high,
                        "above_method": above,
                    }
                )
    main = [r for r in rows if r["metric"] in ("macro_f1", "balanced_accuracy")]
    verdict = {
        "1 mean >= anchor on macro-F1 and balanced accuracy at every rate": all(
            r["method_mean"] >= r["anchor_mean"] for r in main
        ),
        "2 no interval below 0": all(not r["high"] < 0 for r in rows),
        "3 lower end > 0 on macro-F1 or balanced accuracy somewhere": any(
            r["low"] > 0 for r in main
        ),
        "4 no other method distinguishably above": all(not r["above_method"] for r in rows),
    }
    return {
        "method": method,
        "anchor": anchor,
        "excluded": list(exclude),
        "notes": notes,
        "rows": rows,
        "verdict": verdict,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "folders", nargs="+", help="a benchmark folder per cohort, or A+B: folders pooled"
    )
    p.add_argument("--method", default="moe-retriever")
    p.add_argument("--anchor", default="lr-late-fusion")
    p.add_argument(
        "--exclude", nargs="+", default=[], help="methods of the folders left out of the box"
    )
    p.add_argument(
        "--same-as",
        default=None,
        help="a method whose rows stand for --method at rates where --method has none",
    )
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plots", type=Path, default=None, help="folder for a forest plot per cohort")
    args = p.parse_args(argv)
    res = check(args.folders, args.method, args.anchor, args.exclude, args.same_as, args.plots)
    for note in res["notes"]:
        print(f"note: {note}")
    print(
        f"| data | rate | metric | {args.method} | {args.anchor} | difference [95 % CI] | "
        "distinguishably above it |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        ci = f"{signed(r['diff'])} [{signed(r['low'])}, {signed(r['high'])}]"
        mark = " ▲" if r["low"] > 0 else (" ▼" if r["high"] < 0 else "")
        print(
            f"| {r['data']} | {r['rate']:g} | {r['metric']} | {r['method_mean']:.3f} | "
            f"{r['anchor_mean']:.3f} | {ci}{mark} (n={r['n']}) | "
            f"{'; '.join(r['above_method']) or '–'} |"
        )
    for name, ok in res["verdict"].items():
        print(f"{name}: {'yes' if ok else 'NO'}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        clean = json.loads(json.dumps(res, default=lambda x: None if math.isnan(x) else x))
        args.json.write_text(json.dumps(clean, indent=1))
    return res


if __name__ == "__main__":
    main()
