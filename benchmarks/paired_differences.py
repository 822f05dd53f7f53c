"""Paired differences of one method to others over the seeds of a benchmark run.

Reads the ``results.csv`` files written by ``moe-retriever benchmark`` and, for every missing
rate and every reference method, prints the per-seed difference ``method - reference`` of a metric
(default macro-F1, in points), its mean, and a two-sided 95% paired t-interval over the seeds
that both methods finished (mean +- t_{0.975, n-1} * sd / sqrt(n), ``scipy.stats.t``). An
interval that excludes 0 is marked ``*``. A stop-gap for issue 17 until the harness reports the
paired statistics itself; used for docs/SYNTHETIC_RETRIEVAL.md.

    .venv/bin/python benchmarks/paired_differences.py runs/benchmark-synthetic-retrieval{,-b} \
        --method moe-retriever --against zero mean lr-late-fusion
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

from scipy import stats


def paired_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``diffs`` and the ends of its paired t-interval at ``level``."""
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {n}")
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "runs",
        nargs="+",
        help="benchmark output folders (holding results.csv) or csv files; several are merged "
        "(e.g. the same command run for two halves of the seeds)",
    )
    p.add_argument("--method", default="moe-retriever")
    p.add_argument("--against", nargs="+", default=["zero", "mean"])
    p.add_argument("--metric", default="macro_f1")
    args = p.parse_args()
    values: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for run in args.runs:
        path = Path(run)
        path = path / "results.csv" if path.is_dir() else path
        for row in csv.DictReader(path.open()):  # long format: one metric value per row
            if row["metric"] == args.metric and row["value"] not in ("", "nan"):
                key = (f"{float(row['missing_rate']):g}", row["method"])
                values[key][int(row["seed"])] = 100.0 * float(row["value"])
    rates = sorted({rate for rate, _ in values}, key=float)
    for rate in rates:
        print(f"rate {rate}: {args.metric} x 100 per method, mean +- sample sd over seeds")
        for (r, method), per_seed in sorted(values.items()):
            if r != rate:
                continue
            xs = [per_seed[s] for s in sorted(per_seed)]
            mean = sum(xs) / len(xs)
            sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0
            cells = " ".join(f"s{s}={per_seed[s]:.1f}" for s in sorted(per_seed))
            print(f"  {method}: {mean:.1f} +- {sd:.1f} (n={len(xs)}; {cells})")
    for rate in rates:
        own = values[(rate, args.method)]
        for ref in args.against:
            other = values.get((rate, ref), {})
            seeds = sorted(set(own) & set(other))
            diffs = [own[s] - other[s] for s in seeds]
            if len(diffs) < 2:
                print(f"rate {rate}: {args.method} - {ref}: fewer than 2 common seeds")
                continue
            mean, lo, hi = paired_interval(diffs)
            mark = "*" if lo > 0 or hi < 0 else " "
            per_seed = " ".join(f"{d:+.1f}" for d in diffs)
            print(
                f"rate {rate}: {args.method} - {ref}: {mean:+.1f} [{lo:+.1f}, {hi:+.1f}]{mark} "
                f"(n={len(diffs)} seeds {seeds[0]}..{seeds[-1]}; per seed: {per_seed})"
            )


if __name__ == "__main__":
    main()
