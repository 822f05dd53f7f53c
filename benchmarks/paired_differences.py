"""Paired differences of one method to others, across benchmark runs.

The harness reports paired differences within one run (results.md, "Paired differences").
This script pairs results that live in DIFFERENT runs: the same command split over two halves
of the seeds, or the same method under two configurations (e.g. the default supporting-group
selection against ``completion.support_select=random``). Every run is a folder holding the
``results.csv`` of ``moe-retriever benchmark`` (or the csv itself), optionally labelled
``LABEL=PATH``: the methods of a labelled run are renamed ``method@LABEL``, so
``--method moe-retriever --against moe-retriever@random`` compares the two configurations
seed by seed. Rows of the same (rate, method, seed) from several unlabelled runs must agree.

For every missing rate and reference it prints the per-seed difference ``method - reference``
of a metric (default macro-F1, in points), its mean and the 95% paired t interval over the
seeds both have, from :func:`moe_retriever.benchmark.stats.paired_comparison` (the harness's
own statistics); ``*`` marks an interval that excludes 0.

    python benchmarks/paired_differences.py docs/results/synthetic-retrieval \\
        random=runs/synthetic-retrieval-random --method moe-retriever \\
        --against zero mean moe-retriever@random
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from moe_retriever.benchmark.stats import paired_comparison


def read_runs(runs: list[str], metric: str) -> dict[tuple[str, str], dict[int, float]]:
    """(rate, method[@label]) -> seed -> metric x 100, from long-format results.csv files."""
    values: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for run in runs:
        label, _, where = run.rpartition("=") if "=" in run else ("", "", run)
        path = Path(where)
        path = path / "results.csv" if path.is_dir() else path
        for row in csv.DictReader(path.open()):  # long format: one metric value per row
            if row["metric"] != metric or row["value"] in ("", "nan"):
                continue
            method = f"{row['method']}@{label}" if label else row["method"]
            key = (f"{float(row['missing_rate']):g}", method)
            seed, value = int(row["seed"]), 100.0 * float(row["value"])
            before = values[key].get(seed)
            if before is not None and not math.isclose(before, value, abs_tol=1e-9):
                raise ValueError(
                    f"{path}: {method} seed {seed} rate {key[0]} is {value:.3f} here and "
                    f"{before:.3f} in an earlier run; label the runs (LABEL=PATH) to compare them"
                )
            values[key][seed] = value
    return values


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "runs",
        nargs="+",
        help="benchmark output folders (holding results.csv) or csv files, each optionally "
        "LABEL=PATH (its methods become method@LABEL); unlabelled runs are merged",
    )
    p.add_argument("--method", default="moe-retriever")
    p.add_argument("--against", nargs="+", default=["zero", "mean"])
    p.add_argument("--metric", default="macro_f1")
    args = p.parse_args(argv)
    values = read_runs(args.runs, args.metric)
    rates = sorted({rate for rate, _ in values}, key=float)
    for rate in rates:
        print(f"rate {rate}: {args.metric} x 100 per method, mean +- sample sd over seeds")
        for (r, method), per_seed in sorted(values.items()):
            if r != rate:
                continue
            xs = [per_seed[s] for s in sorted(per_seed)]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells = " ".join(f"s{s}={per_seed[s]:.1f}" for s in sorted(per_seed))
            print(f"  {method}: {statistics.fmean(xs):.1f} +- {sd:.1f} (n={len(xs)}; {cells})")
    for rate in rates:
        own = values.get((rate, args.method), {})
        for ref in args.against:
            other = values.get((rate, ref), {})
            c = paired_comparison(own, other, args.method, ref, args.metric)
            if c.n < 2:
                print(f"rate {rate}: {args.method} - {ref}: fewer than 2 common seeds")
                continue
            mark = "*" if c.excludes_zero else " "
            per_seed = " ".join(f"{own[s] - other[s]:+.1f}" for s in c.units)
            print(
                f"rate {rate}: {args.method} - {ref}: {c.mean:+.1f} [{c.low:+.1f}, {c.high:+.1f}]"
                f"{mark} (n={c.n} seeds {c.units[0]}..{c.units[-1]}; per seed: {per_seed})"
            )


if __name__ == "__main__":
    main()
