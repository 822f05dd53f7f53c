"""Measure training choices of the deep methods with the benchmark harness (issue 6).

Each variant is the library default config plus a few dotted overrides; every variant runs on
the same splits (and masks) and seeds, so differences are the choice's effect. Writes one
harness output folder per variant under --out and a summary table (sweep.md, sweep.json).

    python benchmarks/defaults_sweep.py miniacc --seeds 0 1 2 3 4 --out runs/sweep-miniacc

Recorded numbers: docs/DEFAULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from moe_retriever.benchmark.harness import benchmark_config, run_benchmark
from moe_retriever.benchmark.report import summarize
from moe_retriever.datasets import load_data

VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "class_weights=balanced": {"train.class_weights": "balanced"},
    "adamw wd=1e-2": {"optim.optimizer": "adamw", "optim.weight_decay": 1e-2},
    "lr=1e-4 (reference)": {"optim.lr": 1e-4},
    "dropout=0.5 (reference)": {"model.dropout": 0.5},
    "P=4 D=64": {"model.n_tokens": 4, "model.dim": 64},
    "no standardization": {"data.standardize": False},
    "epochs=60 patience=20": {"train.epochs": 60, "train.patience": 20},
    "eval_draws=4 (test-time ensemble)": {"completion.eval_draws": 4},
    "pooling=attention": {"completion.pooling": "attention"},
    "combined: dropout=0.5 P=4 D=64 eval_draws=4": {
        "model.dropout": 0.5,
        "model.n_tokens": 4,
        "model.dim": 64,
        "completion.eval_draws": 4,
    },
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data")
    p.add_argument("--methods", nargs="+", default=["moe-retriever"])
    p.add_argument("--missing-rates", type=float, nargs="+", default=[0.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--set", nargs="+", default=[], help="overrides applied to every variant")
    p.add_argument("--out", default="runs/sweep")
    args = p.parse_args()
    data = load_data(args.data)
    out = Path(args.out)
    rows = []
    base = dict(kv.split("=", 1) for kv in args.set)
    import yaml

    base = {k: yaml.safe_load(v) for k, v in base.items()}
    for name in args.variants:
        cfg = benchmark_config(**{**base, **VARIANTS[name]})
        t0 = time.perf_counter()
        res = run_benchmark(
            data,
            args.methods,
            args.missing_rates,
            args.seeds,
            cfg,
            out / name.replace(" ", "_").replace("/", "-"),
            log=None,
        )
        s = summarize(res.rows)
        for _, r in s.iterrows():
            if r["metric"] in ("macro_f1", "accuracy", "auroc"):
                rows.append(
                    {
                        "variant": name,
                        "method": r["method"],
                        "rate": r["missing_rate"],
                        "metric": r["metric"],
                        "mean": r["mean"],
                        "std": r["std"],
                        "n": int(r["n"]),
                    }
                )
        f1 = s[(s.metric == "macro_f1")]
        print(
            f"{name:28s} "
            + "  ".join(
                f"{m}@{rt:g}: {mu:.3f} ± {sd:.3f}"
                for m, rt, mu, sd in zip(f1["method"], f1["missing_rate"], f1["mean"], f1["std"])
            )
            + f"  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| variant | method | rate | macro-F1 | accuracy | AUROC |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["variant"], r["method"], r["rate"]) for r in rows},
        key=lambda k: (list(VARIANTS).index(k[0]), k[1], k[2]),
    )
    for v, m, rt in keys:
        cell = {
            r["metric"]: f"{r['mean']:.3f} ± {r['std']:.3f}"
            for r in rows
            if (r["variant"], r["method"], r["rate"]) == (v, m, rt)
        }
        lines.append(
            f"| {v} | {m} | {rt:g} | {cell.get('macro_f1')} | {cell.get('accuracy')} "
            f"| {cell.get('auroc')} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
