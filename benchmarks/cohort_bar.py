"""Check a method against an anchor on benchmark folders, metric by metric and rate by rate.

For every folder (a ``moe-retriever benchmark`` output with ``results.csv``), every added
missing rate and every headline metric it prints the method's and the anchor's means, the
paired difference method - anchor with its 95 % paired t interval (the harness's
:func:`~moe_retriever.benchmark.stats.paired_comparison`, over the seeds both have), and every
other method of the folder that is distinguishably ABOVE the method. Then it says, per
criterion of issue 22's bar, whether it holds:

1. the method's mean is at least the anchor's on macro-F1 and balanced accuracy at every rate;
2. no interval of the difference (four metrics) lies below 0;
3. the lower end is above 0 on macro-F1 or balanced accuracy in at least one folder;
4. no other method is distinguishably above the method on any metric.

    python benchmarks/cohort_bar.py docs/results/defaults-smart docs/results/defaults-support2 \\
        --json benchmarks/results/cohort_bar.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from moe_retriever.benchmark.stats import paired_comparison, signed

METRICS = ("macro_f1", "balanced_accuracy", "accuracy", "auroc")


def _scores(df: pd.DataFrame, method: str, rate: float, metric: str) -> dict[int, float]:
    sel = df[(df.method == method) & (df.missing_rate == rate) & (df.metric == metric)]
    return {int(s): float(v) for s, v in zip(sel.seed, sel.value, strict=True)}


def check(folders: list[Path], method: str, anchor: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for folder in folders:
        df = pd.read_csv(folder / "results.csv")
        others = [m for m in df.method.unique() if m not in (method, anchor)]
        for rate in sorted(df.missing_rate.unique()):
            for metric in METRICS:
                mine = _scores(df, method, rate, metric)
                theirs = _scores(df, anchor, rate, metric)
                c = paired_comparison(mine, theirs, method, anchor)
                above = []
                for other in [*others, anchor]:
                    o = paired_comparison(_scores(df, other, rate, metric), mine, other, method)
                    if o.excludes_zero and o.mean > 0:
                        above.append(
                            f"{other} {signed(o.mean)} [{signed(o.low)}, {signed(o.high)}]"
                        )
                rows.append(
                    {
                        "data": folder.name,
                        "rate": float(rate),
                        "metric": metric,
                        "n": c.n,
                        "method_mean": sum(mine.values()) / len(mine),
                        "anchor_mean": sum(theirs.values()) / len(theirs),
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
    return {"method": method, "anchor": anchor, "rows": rows, "verdict": verdict}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--method", default="moe-retriever")
    p.add_argument("--anchor", default="lr-late-fusion")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    res = check(args.folders, args.method, args.anchor)
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
