"""How many supporting-group draws should moe-retriever average at evaluation? (issue 17)

Evaluation draws change only evaluation: for each seed this script trains ONE moe-retriever
model (the harness's split and mask for that seed, library defaults otherwise), then evaluates
that same fitted model with ``completion.eval_draws`` in {1, 2, 4, 8} (set on the fitted
model's completion). It prints test macro-F1 and AUROC per draws value, with the paired
difference to 4 draws over the seeds (mean and a 95 % paired t interval), and writes JSON.

Datasets (as in the issue): miniacc with its natural missingness, 10 seeds; mfeat with 50 %
of entries hidden (MCAR on top), 5 seeds, with the reduced config of docs/DEFAULTS.md
(``model.n_tokens=4 model.dim=64 train.batch_size=64 train.epochs=15 train.warmup_epochs=3
train.patience=5``). One torch thread.

    python benchmarks/eval_draws.py                       # both, writes the JSON below
    python benchmarks/eval_draws.py --datasets miniacc --seeds 0 1 --out /tmp/x.json

Note: the best epoch is selected on validation with the training-time value of
``eval_draws`` (the library default when the script ran); only the test evaluation varies.

Recorded numbers: docs/DEFAULTS.md ("Evaluation draws").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moe_retriever.benchmark.harness import benchmark_config, prepare_run
from moe_retriever.benchmark.stats import paired_comparison
from moe_retriever.data.splits import apply_split
from moe_retriever.datasets import load_dataset
from moe_retriever.training.estimator import MoERetrieverClassifier
from moe_retriever.training.metrics import classification_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MFEAT_FAST

DRAWS = (1, 2, 4, 8)
REFERENCE = 4  # the default when this was measured; differences are to it
METRICS = ("macro_f1", "auroc")

#: dataset -> (missing rate added by the harness's simulator, seeds, config overrides)
SETTINGS: dict[str, tuple[float, list[int], dict[str, Any]]] = {
    "miniacc": (0.0, list(range(10)), {}),
    "mfeat": (0.5, list(range(5)), dict(MFEAT_FAST)),
}


def paired(diffs: list[float]) -> dict[str, float]:
    """Mean of paired differences with a 95 % t interval (the harness's
    :func:`moe_retriever.benchmark.stats.paired_comparison`, n - 1 degrees of freedom)."""
    c = paired_comparison(dict(enumerate(diffs)), dict.fromkeys(range(len(diffs)), 0.0))
    return {"mean": c.mean, "sd": c.sd, "lo": c.low, "hi": c.high, "n": c.n}


def run_dataset(name: str, seeds: list[int], draws: tuple[int, ...]) -> dict[str, Any]:
    rate, _, overrides = SETTINGS[name]
    data = load_dataset(name)
    cfg = benchmark_config(**{**overrides, "runtime.threads": 1})
    per_seed = []
    for seed in seeds:
        split, masked, _ = prepare_run(
            data, rate, seed, cfg.data.val_fraction, cfg.data.test_fraction
        )
        train, val, test = apply_split(masked, split)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = MoERetrieverClassifier("moe-retriever", config=cfg, seed=seed).fit(train, val)
        fit_s = time.perf_counter() - t0
        completion = est.model_.completion
        trained_with = int(completion.eval_draws)
        row: dict[str, Any] = {
            "seed": seed,
            "fit_seconds": fit_s,
            "best_epoch": est.best_epoch_,
            "eval_draws_in_training": trained_with,
        }
        for r in draws:
            completion.eval_draws = r
            t0 = time.perf_counter()
            proba = est.predict_proba(test)
            m = classification_metrics(np.asarray(test.y), proba, list(test.class_names))
            row[str(r)] = {k: m[k] for k in METRICS} | {"seconds": time.perf_counter() - t0}
        completion.eval_draws = trained_with
        per_seed.append(row)
        line = "  ".join(f"{r}: {row[str(r)]['macro_f1']:.3f}" for r in draws)
        print(f"{name} seed {seed} (fit {fit_s:.0f} s) macro-F1 by draws  {line}", flush=True)
    summary: dict[str, Any] = {}
    for r in draws:
        s: dict[str, Any] = {}
        for k in METRICS:
            v = np.array([row[str(r)][k] for row in per_seed], dtype=np.float64)
            s[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0}
            if REFERENCE in draws:
                s[k]["diff_to_4"] = paired(
                    [row[str(r)][k] - row[str(REFERENCE)][k] for row in per_seed]
                )
        s["eval_seconds"] = float(np.mean([row[str(r)]["seconds"] for row in per_seed]))
        summary[str(r)] = s
    return {
        "missing_rate": rate,
        "seeds": seeds,
        "overrides": overrides,
        "per_seed": per_seed,
        "summary": summary,
    }


def print_table(name: str, res: dict[str, Any], draws: tuple[int, ...]) -> None:
    print(f"\n{name} (rate {res['missing_rate']}, seeds {res['seeds']}): test metrics")
    print("| draws | macro-F1 | minus 4 draws [95% CI] | AUROC | minus 4 draws [95% CI] | eval s |")
    print("|---|---|---|---|---|---|")
    for r in draws:
        s = res["summary"][str(r)]
        cells = []
        for k in METRICS:
            cells.append(f"{s[k]['mean']:.3f} ± {s[k]['sd']:.3f}")
            d = s[k].get("diff_to_4")
            cells.append(
                "–"
                if d is None or r == REFERENCE
                else f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
            )
        print(f"| {r} | " + " | ".join(cells) + f" | {s['eval_seconds']:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: per dataset")
    p.add_argument("--draws", type=int, nargs="+", default=list(DRAWS))
    p.add_argument("--out", default="benchmarks/results/eval_draws_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    draws = tuple(args.draws)
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    for name in args.datasets:
        seeds = args.seeds if args.seeds is not None else SETTINGS[name][1]
        results[name] = run_dataset(name, seeds, draws)
        print_table(name, results[name], draws)
    out = {
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "threads": 1,
        "draws": list(draws),
        "reference_draws": REFERENCE,
        "interval": "95% paired t interval over seeds of (metric with r draws - with 4 draws)",
        "wall_seconds": time.perf_counter() - t0,
        "datasets": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
