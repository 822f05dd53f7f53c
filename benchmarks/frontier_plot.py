"""The accuracy-cost frontier (issue 24): step-time ratio vs accuracy change, one panel per run.

Reads the timing grid of ``frontier.py`` (``benchmarks/results/frontier_cpu.json``) and benchmark
outputs (``results.json`` of ``moe-retriever benchmark ... --reference moe-retriever`` with
``moe-retriever[...]`` variants); a variant is matched to the grid setting with the same
overrides. Plots, per dataset and missing rate, the paired difference of each setting to the
library defaults (mean and 95 % interval over seeds) against the setting's retrieval / zero-fill
step-time ratio, with the issue's 1.5x target as a line, and prints the table as markdown.

    python benchmarks/frontier_plot.py docs/results/frontier-miniacc docs/results/frontier-mfeat \\
        --metric macro_f1 --out docs/img/frontier.png
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier import GRID

BASE = "moe-retriever"


def run_base(res: dict[str, Any]) -> dict[str, Any]:
    """The run's own departures from the library defaults among the grid's knobs (``--set
    model.n_tokens=4 ...``): the plain method of such a run is that grid point, not
    ``defaults``."""
    from moe_retriever.architecture import ModelConfig

    cfg = res["config"]
    cfg = ast.literal_eval(cfg) if isinstance(cfg, str) else cfg
    knobs = {k for ov in GRID.values() for k in ov}
    lib = ModelConfig()
    out = {}
    for key in knobs:
        part, name = key.split(".", 1)
        if part == "model" and cfg["model"][name] != getattr(lib, name):
            out[key] = cfg["model"][name]
        elif part == "completion" and name in cfg.get("completion", {}):
            out[key] = cfg["completion"][name]
    return out


def grid_label(method: str, base: dict[str, Any] | None = None) -> str | None:
    """The GRID label of ``moe-retriever[k=v, ...]`` (or of the plain method) on top of the
    run's ``base`` overrides."""
    given = dict(base or {})
    if method != BASE:
        if not method.startswith(BASE + "[") or not method.endswith("]"):
            return None
        items = [x.strip() for x in method[len(BASE) + 1 : -1].split(",") if x.strip()]
        for item in items:
            key, _, value = item.partition("=")
            given[key.strip()] = yaml.safe_load(value)
    for label, ov in GRID.items():
        if {k: float(v) for k, v in ov.items()} == {k: float(v) for k, v in given.items()}:
            return label
    return None


def rows_of(run: Path, timing: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    res = json.loads((run / "results.json").read_text())
    base = run_base(res)
    reference = grid_label(BASE, base)
    out = []
    for c in res["comparisons"]:
        if c["reference"] != BASE or c["metric"] != metric:
            continue
        label = grid_label(c["method"], base)
        if label is None or label not in timing:
            continue
        out.append(
            {
                "dataset": res["dataset"],
                "run": run.name,
                "rate": c["missing_rate"],
                "setting": label,
                "reference": reference,
                "n": c["n"],
                "mean": c["mean"],
                "low": c["low"],
                "high": c["high"],
                "time_ratio": timing[label]["time_ratio"],
                "flop_ratio": timing[label]["flop_ratio"],
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="benchmark output folders (with results.json)")
    p.add_argument(
        "--timing",
        default=str(Path(__file__).resolve().parent / "results" / "frontier_cpu.json"),
    )
    p.add_argument("--metric", default="macro_f1")
    p.add_argument("--target", type=float, default=1.5, help="the time-ratio target (line)")
    p.add_argument("--out", default="docs/img/frontier.png")
    args = p.parse_args(argv)
    timing = json.loads(Path(args.timing).read_text())["rows"]
    rows = [r for run in args.runs for r in rows_of(Path(run), timing, args.metric)]
    panels = sorted({(r["run"], r["dataset"], r["rate"]) for r in rows})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (run, dataset, rate) in zip(axes[0], panels):
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.axvline(args.target, color="tab:red", ls="--", lw=1.0, label=f"target {args.target}x")
        mine = [r for r in rows if (r["run"], r["dataset"], r["rate"]) == (run, dataset, rate)]
        ref = mine[0]["reference"]
        ax.plot([timing[ref]["time_ratio"]], [0.0], "ks", label=f"reference: {ref}")
        for r in mine:
            x = r["time_ratio"]
            ax.errorbar(
                x, r["mean"], yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]],
                fmt="o", capsize=3,
            )  # fmt: skip
            ax.annotate(r["setting"], (x, r["mean"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
        ax.set_xlim(0.9, max(5.5, max(v["time_ratio"] for v in timing.values()) + 0.3))
        ax.set_xlabel("retrieval / zero-fill step time (pooled, CPU)")
        ax.set_title(f"{dataset}, missing rate {rate:g} ({run})", fontsize=9)
    axes[0][0].set_ylabel(f"{args.metric} - reference's (paired, 95% CI)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(
        f"| run | rate | reference | setting | time ratio | FLOP ratio | n "
        f"| {args.metric} - reference [95% CI] |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["run"], r["rate"], r["time_ratio"])):
        print(
            f"| {r['run']} | {r['rate']:g} | {r['reference']} | {r['setting']} | "
            f"{r['time_ratio']:.2f} | "
            f"{r['flop_ratio']:.2f} | {r['n']} | {r['mean']:+.3f} [{r['low']:+.3f}, "
            f"{r['high']:+.3f}] |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
