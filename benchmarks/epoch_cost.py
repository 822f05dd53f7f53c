"""Seconds per training epoch of one method on one dataset, at the defaults and at cheaper
settings, side by side in one process (ratios, not absolute times, are what compare on a shared
machine). The real cohorts made this necessary: at the library defaults (P = 16, D = 128,
batch 16) one fit on `smart` (2,517 training patients) takes 30 epochs x this figure.

    python benchmarks/epoch_cost.py smart --json benchmarks/results/epoch_cost_smart_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from moe_retriever.data.splits import apply_split, make_split
from moe_retriever.datasets import load_data
from moe_retriever.training.estimator import MoERetrieverClassifier

SETTINGS: dict[str, dict[str, object]] = {
    "defaults": {},
    "batch 64": {"train.batch_size": 64},
    "P=4 D=64": {"model.n_tokens": 4, "model.dim": 64},
    "P=4 D=64 batch 64 (fast config)": {
        "model.n_tokens": 4,
        "model.dim": 64,
        "train.batch_size": 64,
    },
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data")
    p.add_argument("--method", default="moe-retriever")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (1 warm-up among them)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_data(args.data)
    train, val, _ = apply_split(data, make_split(data, seed=0))
    base = {
        "train": {"epochs": args.epochs, "warmup_epochs": 1, "patience": None},
        "runtime": {"threads": 1, "progress_bar": False, "accelerator": "cpu"},
    }
    out: dict[str, object] = {"data": args.data, "n_train": len(train), "epochs": args.epochs}
    rows = {}
    for name, overrides in SETTINGS.items():
        t0 = time.perf_counter()
        MoERetrieverClassifier(args.method, config=base, seed=0, **overrides).fit(train, val)
        rows[name] = (time.perf_counter() - t0) / args.epochs
        print(f"{name:34s} {rows[name]:7.1f} s/epoch", flush=True)
    out["seconds_per_epoch"] = rows
    out["ratio_to_defaults"] = {k: v / rows["defaults"] for k, v in rows.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
