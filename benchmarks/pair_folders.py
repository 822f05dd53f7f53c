"""Paired differences across benchmark folders that share their splits and masks.

Two ``moe-retriever benchmark`` runs on the same data set with the same seeds and rates draw
the same splits and masks, so a method fitted in one folder can be paired with a method fitted
in another (an ablation run later, beside the reference it was meant for). This script pools
the folders' rows and prints every method against ``--reference`` with the harness's own paired
t interval (:func:`~moe_retriever.benchmark.stats.compare_to_references`, units (seed, fold)).

It refuses folders that do not share their splits: for every (rate, seed) present in two
folders the split and mask digests that the harness stores in ``results.json`` must be equal.
A folder without ``results.json`` is read from its ``results.csv`` (a copy under docs/results)
or, for an interrupted run, from its finished cells (``cells/*.json``); those carry no digests,
so the script says that it could not check them.
A method present in several folders is pooled over them: each (rate, seed, fold) unit from the
first folder that has it (a method's seeds run in two stages combine; a unit fitted twice is
taken once).

    python benchmarks/pair_folders.py runs/status2-smart runs/align-smart \\
        --reference moe-retriever --json benchmarks/results/smart_ablations.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moe_retriever.benchmark.stats import COMPARISON_METRICS, compare_to_references, signed


def _rows_and_masks(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The folder's long rows and its per-(rate, seed) split/mask digests (None: not stored)."""
    res = folder / "results.json"
    if res.exists():
        doc = json.loads(res.read_text())
        return list(doc["rows"]), dict(doc.get("masks") or {})
    table = folder / "results.csv"
    if table.exists():  # a folder copied into docs/results keeps results.csv only
        import pandas as pd

        return pd.read_csv(table).to_dict("records"), None
    cells = sorted((folder / "cells").glob("*.json"))
    if not cells:
        raise SystemExit(f"{folder}: none of results.json, results.csv, cells/*.json")
    rows: list[dict[str, Any]] = []
    for path in cells:
        rows.extend(json.loads(path.read_text())["rows"])
    return rows, None


def pool(folders: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of all folders (each unit of a method from the first folder that has it), notes."""
    notes: list[str] = []
    digests: dict[str, tuple[str, str, str]] = {}  # "rate=../seed=.." -> (split, mask, folder)
    rows: list[dict[str, Any]] = []
    taken: dict[tuple[str, float, int, int], Path] = {}  # (method, rate, seed, fold)
    datasets: set[str] = set()
    for folder in folders:
        frows, masks = _rows_and_masks(folder)
        datasets |= {str(r["dataset"]) for r in frows}
        if masks is None:
            notes.append(f"{folder}: no results.json, splits not checked")
        else:
            for key, info in masks.items():
                pair = (str(info.get("split_digest")), str(info.get("mask_digest")))
                if key in digests and digests[key][:2] != pair:
                    raise SystemExit(
                        f"{folder}: {key} has split/mask {pair}, {digests[key][2]} has "
                        f"{digests[key][:2]}: the folders do not share their splits"
                    )
                digests.setdefault(key, (*pair, str(folder)))
        skipped: dict[str, Path] = {}
        for r in frows:
            unit = (
                str(r["method"]),
                float(r["missing_rate"]),
                int(r["seed"]),
                int(r.get("fold", 0)),
            )
            if taken.setdefault(unit, folder) != folder:
                skipped[unit[0]] = taken[unit]
                continue
            rows.append(r)
        for method, first in skipped.items():
            notes.append(f"{folder}: {method}'s units already in {first} ignored")
    if len(datasets) > 1:
        raise SystemExit(f"the folders hold different data sets: {sorted(datasets)}")
    return rows, notes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--reference", required=True, help="the method every other is paired with")
    p.add_argument("--json", type=Path, default=None, help="also write the comparisons here")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=list(COMPARISON_METRICS),
        help="metrics to pair (per class too, e.g. recall/event); default: the headline four",
    )
    args = p.parse_args(argv)
    rows, notes = pool(args.folders)
    if args.reference not in {r["method"] for r in rows}:
        raise SystemExit(f"reference {args.reference!r} is in none of the folders")
    comps = compare_to_references(rows, {}, references=[args.reference], metrics=args.metrics)
    for note in notes:
        print(f"note: {note}")
    out: list[dict[str, Any]] = []
    for metric in args.metrics:
        print(f"\n{metric}: method - {args.reference} (95 % paired t)")
        for c in sorted(
            (c for c in comps if c.metric == metric and c.reference == args.reference),
            key=lambda c: (c.missing_rate, c.method),
        ):
            mark = (" ▲" if c.mean > 0 else " ▼") if c.excludes_zero else ""
            print(
                f"  rate {c.missing_rate:g}  {c.method}: {signed(c.mean)} "
                f"[{signed(c.low)}, {signed(c.high)}]{mark} (n={c.n})"
            )
            out.append(
                {
                    "method": c.method,
                    "reference": c.reference,
                    "rate": c.missing_rate,
                    "metric": metric,
                    "n": c.n,
                    "diff": c.mean,
                    "low": c.low,
                    "high": c.high,
                }
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python benchmarks/pair_folders.py " + " ".join(str(f) for f in args.folders)
        cmd += f" --reference '{args.reference}'"
        if args.metrics != list(COMPARISON_METRICS):
            cmd += " --metrics " + " ".join(args.metrics)
        doc = {"command": cmd, "notes": notes}
        args.json.write_text(json.dumps({**doc, "comparisons": out}, indent=1))


if __name__ == "__main__":
    main()
