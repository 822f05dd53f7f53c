"""The decision rule of a fitted model: post-hoc tau at 1 (the default) or chosen on validation.

The library predicts with ``logits - tau * log(prior)`` (``train.posthoc_adjust``, tau = 1 by
default: the balanced-error rule for a calibrated model). A model that is not calibrated in the
large (its mean predicted probability of a small class below the class's share) may decide
better with another tau. This script fits moe-retriever at the library defaults on the
benchmark's own splits and masks (the same fits as ``moe-retriever benchmark``: the ``tau=1``
rows equal a benchmark folder's ``moe-retriever`` rows, checkable with ``same_cells.py``),
then scores the test part under

* ``moe-retriever[decision=tau1]``: tau = 1, the library's rule;
* ``moe-retriever[decision=val-<metric>]``: tau chosen on the validation part from ``--taus``
  to maximise ``<metric>`` (balanced accuracy, macro-F1), ties to the tau nearest 1: what
  ``train.posthoc_select: <metric>`` does inside the library
  (:func:`moe_retriever.training.decision.choose_tau`).

Only the decision changes; the fit, the ranking and so AUROC are the same. It writes a
``results.csv`` in the benchmark's long format (pair it with a benchmark folder of the same
splits with ``pair_folders.py`` or ``cohort_bar.py``) and ``decision_rule.json`` with the taus
chosen per split and the mean predicted probability of each class on validation against its
training share.

    python benchmarks/decision_rule.py smart --missing-rates 0 0.5 \\
        --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2 --out runs/decision-smart
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RULE_METRICS = ("balanced_accuracy", "macro_f1")


def run_unit(
    dataset: str, rate: float, seed: int, taus: tuple[float, ...], threads: int
) -> dict[str, Any]:
    import torch

    from moe_retriever.benchmark.harness import benchmark_config, prepare_run
    from moe_retriever.datasets import load_dataset
    from moe_retriever.training.decision import adjusted_proba, choose_tau
    from moe_retriever.training.estimator import MoERetrieverClassifier, quiet_lightning
    from moe_retriever.training.metrics import classification_metrics

    torch.set_num_threads(threads)
    cfg = benchmark_config()  # the library defaults, no progress bars: the benchmark's fit
    data = load_dataset(dataset)
    split, masked, _ = prepare_run(data, rate, seed, cfg.data.val_fraction, cfg.data.test_fraction)
    train, val, test = (masked.select_ids(ids) for ids in (split.train, split.val, split.test))
    start = time.perf_counter()
    est = MoERetrieverClassifier(method="moe-retriever", config=cfg, seed=seed)
    with quiet_lightning():
        est.fit(train, val)
    est.posthoc_tau_ = 0.0  # raw probabilities; the rules adjust them below
    log_prior = np.asarray(est.class_log_prior_, dtype=np.float64)
    log_pv = np.log(np.clip(est.predict_proba(val).astype(np.float64), 1e-12, None))
    log_pt = np.log(np.clip(est.predict_proba(test).astype(np.float64), 1e-12, None))
    yv = np.asarray(est._label_index(val))
    yt = np.asarray(est._label_index(test))
    chosen = {"tau1": 1.0}
    for metric in RULE_METRICS:
        chosen[f"val-{metric}"] = choose_tau(yv, log_pv, log_prior, metric, taus)
    scores = {
        rule: classification_metrics(yt, adjusted_proba(log_pt, log_prior, tau))
        for rule, tau in chosen.items()
    }
    return {
        "rate": rate,
        "seed": seed,
        "taus": chosen,
        "scores": scores,
        "val_mean_proba": np.exp(log_pv).mean(axis=0).tolist(),
        "train_prior": np.exp(log_prior).tolist(),
        "classes": [str(c) for c in est.classes_],
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--missing-rates", nargs="+", type=float, default=[0.0])
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    p.add_argument("--taus", nargs="+", type=float, default=None, help="default: 0 to 3 by 0.1")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import pandas as pd
    from joblib import Parallel, delayed

    units = [(r, s) for r in args.missing_rates for s in args.seeds]
    from moe_retriever.training.decision import TAU_GRID

    taus = tuple(args.taus) if args.taus else TAU_GRID
    results = Parallel(n_jobs=args.jobs)(
        delayed(run_unit)(args.dataset, r, s, taus, args.threads) for r, s in units
    )
    rows = [
        {
            "dataset": args.dataset,
            "method": f"moe-retriever[decision={rule}]",
            "kind": "completion",
            "missing_rate": res["rate"],
            "seed": res["seed"],
            "metric": metric,
            "value": value,
            "split_seed": res["seed"],
            "fold": 0,
        }
        for res in results
        for rule, metrics in res["scores"].items()
        for metric, value in metrics.items()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "results.csv", index=False)
    report = {"command": " ".join(["python", "benchmarks/decision_rule.py", *sys.argv[1:]])}
    report["units"] = results
    (args.out / "decision_rule.json").write_text(json.dumps(report, indent=2) + "\n")
    for res in results:
        taus_txt = ", ".join(f"{k} {v:g}" for k, v in res["taus"].items() if k != "tau1")
        bal = {k: round(v["balanced_accuracy"], 3) for k, v in res["scores"].items()}
        print(f"[rate={res['rate']:g}/seed={res['seed']}] taus: {taus_txt}; balanced acc. {bal}")
    print(f"outputs in {args.out}")
    return report


if __name__ == "__main__":
    main()
