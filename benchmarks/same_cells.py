"""Are two benchmark folders' cells the same, value for value? (timings left out)

Checks a claim such as "the new default is the old one bit for bit at +50 %": for every
(seed, fold, metric) that both folders hold for the named methods at the named rate, the values must
be equal; wall times (metrics whose name contains ``seconds``) differ run to run and are left
out. Prints the number of values compared and the largest absolute difference, and exits 1 when
it is above ``--tolerance`` (default 0: bit for bit) or when nothing could be compared.

    python benchmarks/same_cells.py runs/ident-miniacc runs/defaults-miniacc \\
        --method moe-retriever --rate 0.5
    python benchmarks/same_cells.py runs/ident-miniacc runs/pool-miniacc --method moe-retriever \\
        --old-method 'moe-retriever[model.retrieval_dropout_match=pool]' --rate 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd


def _frame(folder: Path) -> pd.DataFrame:
    """A folder's long rows, read as pair_folders.py reads them (results.json, results.csv or
    an interrupted run's cells), with a ``fold`` column (0 where the rows have none)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from pair_folders import pool
    finally:
        sys.path.pop(0)
    df = pd.DataFrame(pool([folder])[0])
    if "fold" not in df:
        df["fold"] = 0
    return df.fillna({"fold": 0})


def compare(
    new: Path, old: Path, method: str, old_method: str | None, rate: float
) -> dict[str, Any]:
    a, b = _frame(new), _frame(old)
    a = a[(a.method == method) & (a.missing_rate == rate)]
    b = b[(b.method == (old_method or method)) & (b.missing_rate == rate)]
    m = a.merge(b, on=["seed", "fold", "metric"], suffixes=("_new", "_old"))
    m = m[~m.metric.str.contains("seconds")]
    diff = (m.value_new - m.value_old).abs()
    worst = m.loc[diff.idxmax()] if len(m) else None
    return {
        "new": str(new),
        "old": str(old),
        "method": method,
        "old_method": old_method or method,
        "rate": rate,
        "n_values": len(m),
        "seeds": sorted(int(s) for s in m.seed.unique()),
        "max_abs_diff": float(diff.max()) if len(m) else None,
        "worst": None if worst is None else f"seed {int(worst.seed)} {worst.metric}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new", type=Path)
    p.add_argument("old", type=Path)
    p.add_argument("--method", required=True, help="the method's name in NEW")
    p.add_argument("--old-method", default=None, help="its name in OLD (default: the same)")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--tolerance", type=float, default=0.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    res = compare(args.new, args.old, args.method, args.old_method, args.rate)
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if res["n_values"] == 0:
        print(f"{args.new} vs {args.old}: no (seed, metric) in common at rate {args.rate:g}")
        return 1
    same = res["max_abs_diff"] <= args.tolerance
    print(
        f"{args.new} [{res['method']}] vs {args.old} [{res['old_method']}] at rate "
        f"{args.rate:g}: {res['n_values']} values over seeds {res['seeds']}, max |diff| "
        f"{res['max_abs_diff']:.3g} ({'same' if same else 'DIFFERENT, worst: ' + res['worst']})"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
