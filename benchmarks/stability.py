"""Initialisation spread of moe-retriever: split and mask fixed, only the model seed varies.

For each dataset and each variant (a named set of config overrides) this trains one
``MoERetrieverClassifier`` per model seed on ONE split and ONE mask (split seed and mask seed
``--split-seed``), and reports over the model seeds the mean and sd of test macro-F1 and
AUROC, the sd ratio to the variant ``before`` (when measured), and the mean fit seconds.
What moves between the rows of one variant is therefore training instability alone, not the
split or the mask (issue 17).

Datasets (the missing rate is added with the harness's simulator, ``prepare_run``):

* ``miniacc``: natural missingness (rate 0), the library config;
* ``mfeat``: added missing rate 0.5 and, for time, the reduced deep config
  :data:`DATASET_OVERRIDES` (``model.n_tokens=4 model.dim=64 train.batch_size=64
  train.epochs=15 train.warmup_epochs=3 train.patience=5``), applied after the variant's
  overrides;
* ``synthetic``: ``load_dataset("synthetic")`` (600 samples, 4 modalities), added rate 0.5;
* ``smart``, ``support2``: the real cohorts of the ``cohorts`` extra, natural missingness, the
  library config.

Variants: ``before`` is the defaults of main at commit 11549f8 written out as explicit
overrides (so it stays reproducible after the defaults change), ``after`` the library defaults
(no overrides); the other built-in variants are ``before`` plus one candidate change each.
``--variant NAME=key=value,key=value`` adds a variant (values parsed as YAML).

    OMP_NUM_THREADS=1 python benchmarks/stability.py --datasets miniacc \\
        --variants before after --seeds 0 1 2 3 4 5 6 7 8 9

Results are merged into ``--out`` (default ``benchmarks/results/stability_cpu.json``), one
entry per (dataset, variant), so a run in stages accumulates. Numbers: docs/DEFAULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MFEAT_FAST

#: main's defaults at commit 11549f8 that a stability change may touch, as explicit overrides
BEFORE: dict[str, Any] = {
    "model.n_tokens": 16,
    "model.dim": 128,
    "model.dropout": 0.1,
    "optim.optimizer": "adam",
    "optim.lr": 1e-3,
    "optim.weight_decay": 0.0,
    "train.epochs": 30,
    "train.warmup_epochs": 5,
    "train.batch_size": 16,
    "train.patience": 10,
    "train.monitor": "val_macro_f1",
    "train.class_weights": "none",
    "train.select_smoothing": 0.0,
    "train.weight_average": "none",
    "train.ensemble": 1,
    "completion.k": None,
    "completion.eval_draws": 4,
}

#: built-in variants: name -> overrides (``before`` + one candidate each, and the defaults)
VARIANTS: dict[str, dict[str, Any]] = {
    "before": dict(BEFORE),
    "after": {},
    "monitor=val_loss": {**BEFORE, "train.monitor": "val_loss"},
    "smooth=0.7": {**BEFORE, "train.select_smoothing": 0.7},
    "ema=0.99": {**BEFORE, "train.weight_average": "ema", "train.ema_decay": 0.99},
    "ema=0.99+smooth=0.7": {
        **BEFORE,
        "train.weight_average": "ema",
        "train.ema_decay": 0.99,
        "train.select_smoothing": 0.7,
    },
    "ema=0.99+val_loss": {
        **BEFORE,
        "train.weight_average": "ema",
        "train.ema_decay": 0.99,
        "train.monitor": "val_loss",
    },
    "ensemble=3": {**BEFORE, "train.ensemble": 3},
    # the library defaults before issue 22 made the model smaller (docs/DEFAULTS.md section 9)
    "P16-D128-k5": {
        "model.n_tokens": 16,
        "model.dim": 128,
        "completion.k": 5,
        "train.batch_size": 16,
    },
    "balanced": {**BEFORE, "train.class_weights": "balanced"},
    "k=5": {**BEFORE, "completion.k": 5},
    "regularised": {
        **BEFORE,
        "model.dropout": 0.3,
        "optim.optimizer": "adamw",
        "optim.weight_decay": 1e-2,
    },
}

#: per dataset: (loader kwargs, added missing rate, overrides applied after the variant's)
DATASETS: dict[str, tuple[dict[str, Any], float]] = {
    "miniacc": ({}, 0.0),
    "mfeat": ({}, 0.5),
    "synthetic": ({}, 0.5),
    # the real cohorts (pip install -e '.[cohorts]'), natural missingness
    "smart": ({}, 0.0),
    "support2": ({}, 0.0),
}
DATASET_OVERRIDES: dict[str, dict[str, Any]] = {"mfeat": dict(MFEAT_FAST)}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=key=value,key=value`` -> ``(NAME, {key: value})`` (values parsed as YAML)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--variant {text!r} is not of the form NAME=key=value,key=value")
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--variant {text!r}: {item!r} is not key=value")
        overrides[key.strip()] = yaml.safe_load(raw)
    return name, overrides


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def run_one(
    dataset: str,
    name: str,
    overrides: dict[str, Any],
    seeds: list[int],
    split_seed: int,
    on_seed: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    from moe_retriever.benchmark.harness import benchmark_config, prepare_run
    from moe_retriever.data.splits import apply_split
    from moe_retriever.datasets import load_dataset
    from moe_retriever.training.estimator import MoERetrieverClassifier
    from moe_retriever.training.metrics import METRIC_NAMES, classification_metrics

    kwargs, rate = DATASETS[dataset]
    data = load_dataset(dataset, **kwargs)
    cfg = benchmark_config()
    applied = {**overrides, **DATASET_OVERRIDES.get(dataset, {})}
    for key, value in applied.items():
        cfg.set(key, value)
    cfg.runtime.threads = 1
    cfg.runtime.accelerator = "cpu"
    cfg.validate()
    split, masked, info = prepare_run(
        data, rate, split_seed, cfg.data.val_fraction, cfg.data.test_fraction
    )
    train, val, test = apply_split(masked, split)
    rows: list[dict[str, Any]] = []
    res: dict[str, Any] = {}
    for seed in seeds:
        t0 = time.perf_counter()
        est = MoERetrieverClassifier(config=cfg, seed=seed).fit(train, val)
        fit_s = time.perf_counter() - t0
        proba = np.asarray(est.predict_proba(test))
        m = classification_metrics(test.y, proba, test.class_names)
        rows.append(
            {
                "seed": seed,
                **{k: float(m[k]) for k in METRIC_NAMES},
                "best_epoch": est.best_epoch_,
                "fit_s": fit_s,
            }
        )
        print(
            f"  {dataset} {name} seed {seed}: macro-F1 {m['macro_f1']:.4f} "
            f"AUROC {m['auroc']:.4f} best epoch {est.best_epoch_} ({fit_s:.1f} s)",
            flush=True,
        )
        res = summarize(dataset, name, rate, split_seed, applied, info, rows)
        res["complete"] = len(rows) == len(seeds)
        if on_seed is not None:
            on_seed(res)  # partial results survive an interrupted run
    return res


def summarize(
    dataset: str,
    name: str,
    rate: float,
    split_seed: int,
    applied: dict[str, Any],
    info: dict[str, Any],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """One (dataset, variant) entry from its per-seed rows."""
    f1 = [r["macro_f1"] for r in rows]
    au = [r["auroc"] for r in rows]
    extra = {  # accuracy and balanced accuracy (runs stored before they were recorded lack them)
        f"{k}_{stat}": fn([r[k] for r in rows])
        for k in ("accuracy", "balanced_accuracy")
        if all(k in r for r in rows)
        for stat, fn in (("mean", statistics.fmean), ("sd", sd))
    }
    return {
        "dataset": dataset,
        "variant": name,
        "rate": rate,
        "split_seed": split_seed,
        "overrides": applied,
        "split_digest": info["split_digest"],
        "mask_digest": info["mask_digest"],
        "n_train": info["n_train"],
        "n_val": info["n_val"],
        "n_test": info["n_test"],
        "seeds": [r["seed"] for r in rows],
        "macro_f1_mean": statistics.fmean(f1),
        "macro_f1_sd": sd(f1),
        "auroc_mean": statistics.fmean(au),
        "auroc_sd": sd(au),
        **extra,
        "fit_s_mean": statistics.fmean(r["fit_s"] for r in rows),
        "runs": rows,
    }


def sd_ratio(r: dict[str, Any], base: dict[str, Any] | None) -> float:
    """sd of macro-F1 of ``r`` over ``base`` on the model seeds both measured (NaN if < 2)."""
    if base is None:
        return math.nan
    common = sorted(set(r["seeds"]) & set(base["seeds"]))
    if len(common) < 2:
        return math.nan
    mine = {x["seed"]: x["macro_f1"] for x in r["runs"]}
    theirs = {x["seed"]: x["macro_f1"] for x in base["runs"]}
    denom = sd([theirs[s] for s in common])
    return sd([mine[s] for s in common]) / denom if denom > 0 else math.nan


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table; the sd ratio is to ``before`` on the same dataset, over the model seeds
    both measured."""
    lines = [
        "| dataset | variant | seeds | macro-F1 mean | macro-F1 sd | sd / before | "
        "AUROC mean | AUROC sd | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = next(
            (b for b in results if b["dataset"] == r["dataset"] and b["variant"] == "before"),
            None,
        )
        ratio = sd_ratio(r, base)
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {len(r['seeds'])} | "
            f"{100 * r['macro_f1_mean']:.1f} | {100 * r['macro_f1_sd']:.2f} | {ratio:.2f} | "
            f"{100 * r['auroc_mean']:.1f} | {100 * r['auroc_sd']:.2f} | {r['fit_s_mean']:.1f} |"
        )
    return "\n".join(lines)


def _save(out: Path, results: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": "python benchmarks/stability.py", "torch": torch.__version__}
    out.write_text(json.dumps({**doc, "results": results}, indent=1))


def _combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """One entry of the model seeds of ``a`` and ``b`` when they are stages of the same
    measurement (same split, mask and overrides, disjoint seeds); else None."""
    keys = ("split_digest", "mask_digest", "overrides", "rate")
    same = all(k in a and k in b and a[k] == b[k] for k in keys)
    if not same or set(a["seeds"]) & set(b["seeds"]):
        return None
    rows = sorted(a["runs"] + b["runs"], key=lambda r: r["seed"])
    info = {k: a[k] for k in ("split_digest", "mask_digest", "n_train", "n_val", "n_test")}
    res = summarize(
        a["dataset"], a["variant"], a["rate"], a["split_seed"], a["overrides"], info, rows
    )
    res["complete"] = bool(a.get("complete")) and bool(b.get("complete"))
    return res


def merge(out: Path, others: list[Path]) -> None:
    """Entries of ``others`` replace those of ``out`` with the same (dataset, variant), except
    stages of one measurement (same split, mask and overrides, other model seeds), which are
    combined into one entry."""
    stored: list[dict[str, Any]] = json.loads(out.read_text())["results"] if out.exists() else []
    for path in others:
        for res in json.loads(path.read_text())["results"]:
            key = (res["dataset"], res["variant"])
            old = next((r for r in stored if (r["dataset"], r["variant"]) == key), None)
            if old is not None:
                res = _combine(old, res) or res
            stored = [r for r in stored if (r["dataset"], r["variant"]) != key] + [res]
    _save(out, stored)
    print(table(stored))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    p.add_argument("--split-seed", type=int, default=0, help="seed of the split and the mask")
    p.add_argument(
        "--variants",
        nargs="*",
        default=["before", "after"],
        help=f"built-in: {list(VARIANTS)}; an empty --variants runs only those of --variant",
    )
    p.add_argument(
        "--variant", action="append", default=[], help="NAME=key=value,key=value (repeatable)"
    )
    p.add_argument("--out", default="benchmarks/results/stability_cpu.json")
    p.add_argument(
        "--merge",
        nargs="+",
        default=[],
        help="result JSONs of other runs (e.g. stages run in parallel) to merge into --out",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.merge:
        merge(Path(args.out), [Path(m) for m in args.merge])
        return

    chosen: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; built-in: {list(VARIANTS)}")
        chosen[name] = VARIANTS[name]
    for text in args.variant:
        name, overrides = parse_variant(text)
        chosen[name] = overrides

    out = Path(args.out)
    stored: list[dict[str, Any]] = json.loads(out.read_text())["results"] if out.exists() else []
    for dataset in args.datasets:
        if dataset in DATASET_OVERRIDES:
            reduced = " ".join(f"{k}={v}" for k, v in DATASET_OVERRIDES[dataset].items())
            print(f"{dataset}: reduced deep config for time: {reduced}", flush=True)
        for name, overrides in chosen.items():

            def store(res: dict[str, Any]) -> None:
                nonlocal stored
                stored = [
                    r
                    for r in stored
                    if not (r["dataset"] == res["dataset"] and r["variant"] == res["variant"])
                ] + [res]
                _save(out, stored)

            run_one(dataset, name, overrides, args.seeds, args.split_seed, on_seed=store)
            print(table([r for r in stored if r["dataset"] == dataset]), flush=True)
    print(table(stored))


if __name__ == "__main__":
    main()
