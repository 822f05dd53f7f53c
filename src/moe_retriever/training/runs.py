"""Run folders: train several seeds on one split, evaluate, aggregate, plot, resume.

Layout of a run folder::

    RUN_DIR/
      run.json             data source, method, seeds, status, command line
      config.yaml          the resolved TrainConfig (every option, defaults included)
      split.json           train/val/test sample ids (shared by all seeds)
      metrics.json         test: {metric: {mean, std, n}} over seeds; per_combination; per_seed
      learning_curves.png  train/val loss and the monitored metric per epoch, one line per seed
      router_usage.png     how often each candidate is chosen per target modality and
                           observed combination (methods that route only)
      seed_<s>/
        history.csv        one row per epoch: train_loss, val_loss, val metrics, select_score
        checkpoints/       best.ckpt (selected epoch), last.ckpt (for --resume)
        model/             the fitted estimator (MoERetrieverClassifier.load)
        metrics.json       this seed's test metrics, per combination, best epoch
        routing.json       router usage on the test split
        test_predictions.csv

Under DDP every process runs this code; only global rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_only

from moe_retriever.data.core import DataValidationError, DataWarning, MultimodalData
from moe_retriever.data.splits import Split, apply_split, make_split
from moe_retriever.data.validation import (
    align_labels,
    check_predictable,
    missing_cells,
    one_line,
    preview,
)
from moe_retriever.training.config import TrainConfig
from moe_retriever.training.estimator import MoERetrieverClassifier
from moe_retriever.training.metrics import (
    METRIC_NAMES,
    aggregate_combinations,
    aggregate_per_class,
    aggregate_seeds,
    classification_metrics,
    format_mean_std,
    per_class_metrics,
    per_combination_metrics,
)

RUN_DIR_ENV = "MOE_RETRIEVER_RUN_DIR"


def is_main_process() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def _write_json(path: Path, obj: Any) -> None:
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def unique_run_dir(base: Path) -> Path:
    """``base`` if it does not exist, else ``base-2``, ``base-3``, ..."""
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def load_run_data(
    source: str, layout: str | None = None, modalities: Sequence[str] | None = None
) -> MultimodalData:
    """``source`` (a built-in name or a folder), only ``modalities`` when given."""
    from moe_retriever.datasets import load_data

    return load_data(source, layout=layout, modalities=modalities)


def make_run_split(data: MultimodalData, cfg: TrainConfig) -> Split:
    """``data.split_file`` when set, else the split a layout's splits file gave the data
    (ADNI / MIMIC-IV, :func:`~moe_retriever.data.layouts.layout_split`), else a seeded
    stratified split."""
    if cfg.data.split_file:
        split = Split.load(cfg.data.split_file)
        split.check(data)
        return split
    from moe_retriever.data.layouts import layout_split

    fixed = layout_split(data)
    if fixed is not None:
        fixed.check(data)
        return fixed
    return make_split(data, cfg.data.val_fraction, cfg.data.test_fraction, seed=cfg.data.split_seed)


# ------------------------------------------------------------------------------ training
def train_run(
    source: str,
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    data: MultimodalData | None = None,
    split: Split | None = None,
    log: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.seeds`` on ``source`` into run folder ``out``; returns ``metrics.json``.

    ``resume=True`` continues a run in ``out``: finished seeds are kept, an interrupted seed
    restarts from its ``last.ckpt`` (same config and split, read from the folder).
    """
    out = Path(out)
    say = print if (log and is_main_process()) else (lambda *a, **k: None)
    if resume:
        if not (out / "config.yaml").is_file():
            raise FileNotFoundError(f"{str(out)!r} is not a run folder (config.yaml missing)")
        split = Split.load(out / "split.json") if (out / "split.json").is_file() else split
    if data is None:
        data = load_run_data(source, modalities=cfg.data.modalities)
    if split is None:
        split = make_run_split(data, cfg)
    train, val, test = apply_split(data, split)
    check_before_training(train, val, test)  # nothing is written if the input cannot work
    imputed = [] if cfg.data.strict else missing_cells(data)  # strict: the fit refuses them
    if is_main_process():
        for line in imputed:
            warnings.warn(line, DataWarning, stacklevel=2)
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            cfg.to_yaml(out / "config.yaml")
            split.save(out / "split.json")
        _write_json(
            out / "run.json",
            {
                "data": source,
                "dataset": data.name,
                "method": cfg.method,
                "seeds": list(cfg.seeds),
                "status": "running",
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": sys.argv,
                "sizes": {"train": len(train), "val": len(val), "test": len(test)},
                # NaN cells inside observed rows, imputed with training means (also warned)
                "imputed_cells": imputed,
            },
        )
    try:
        metrics = _train_seeds(cfg, out, train, val, test, data.name, resume, say)
    except KeyboardInterrupt:
        set_status(out, "interrupted")
        raise
    except Exception as exc:
        set_status(out, f"failed: {one_line(exc)}")
        raise
    set_status(out, "done")
    return metrics


def set_status(out: Path, status: str) -> None:
    """Record ``status`` ("running", "done", "failed: <reason>", "interrupted") in run.json."""
    path = Path(out) / "run.json"
    if not is_main_process() or not path.is_file():
        return
    info = json.loads(path.read_text())
    info["status"] = status
    _write_json(path, info)


def check_before_training(train: MultimodalData, val: MultimodalData, test: MultimodalData) -> None:
    """Checks that would otherwise fail only after training, run before the first epoch.

    The test split must be predictable (every sample observes a modality) and every class
    of validation and test must have training samples (a class the model never saw would
    score as a silent zero).
    """
    check_predictable(test, what="test split")
    if train.y is None:
        raise DataValidationError(f"data {train.name!r} has no labels to train on")
    seen = set(np.unique(train.y).tolist())
    for part, name in ((val, "validation"), (test, "test")):
        if part.y is None or not part.n_samples:
            continue
        unseen = sorted(set(np.unique(part.y).tolist()) - seen)
        if unseen:
            names = [train.class_names[c] for c in unseen]
            ids = part.ids[np.isin(part.y, unseen)]
            raise DataValidationError(
                f"{name} split: classes {names} have no training sample (samples "
                f"{preview(ids)}); move some of them to the training part of the split"
            )


def _train_seeds(
    cfg: TrainConfig,
    out: Path,
    train: MultimodalData,
    val: MultimodalData,
    test: MultimodalData,
    dataset: str,
    resume: bool,
    say: Any,
) -> dict[str, Any]:
    """Train (or keep, when resuming and finished) every seed; write and return metrics."""
    say(
        f"{cfg.method} on {dataset}: {len(train)} train / {len(val)} val / {len(test)} test "
        f"samples, seeds {list(cfg.seeds)} -> {out}"
    )
    per_seed: dict[str, dict[str, Any]] = {}
    for seed in cfg.seeds:
        seed_dir = out / f"seed_{seed}"
        done = seed_dir / "metrics.json"
        if resume and done.is_file():
            per_seed[str(seed)] = json.loads(done.read_text())
            say(f"seed {seed}: already finished, kept")
            continue
        last = seed_dir / "checkpoints" / "last.ckpt"
        ckpt = last if resume and last.is_file() else None
        say(f"seed {seed}: " + (f"resuming from {last}" if ckpt else "training"))
        t0 = time.perf_counter()
        est = MoERetrieverClassifier(method=cfg.method, config=cfg, seed=seed)
        est.fit(train, val, run_dir=seed_dir, ckpt_path=ckpt)
        fit_s = time.perf_counter() - t0
        result = evaluate_estimator(est, test)
        result.update({"seed": seed, "best_epoch": est.best_epoch_, "fit_seconds": fit_s})
        result["epochs_run"] = len(est.history_)
        if is_main_process():
            est.save(seed_dir / "model")
            _write_json(seed_dir / "routing.json", result.pop("routing"))
            write_predictions(
                seed_dir / "test_predictions.csv", test, est.predict_proba(test), est.classes_
            )
            # the parts' own report (I2MoE's interaction weights...) on the test split
            files = est.write_report(test, seed_dir)
            result["report_files"] = [str(Path(f)) for f in files]
            _write_json(done, result)
            if files:
                say(f"seed {seed}: interpretation: " + ", ".join(str(f) for f in files))
        else:
            result.pop("routing")
        per_seed[str(seed)] = result
        say(
            f"seed {seed}: best epoch {est.best_epoch_}, test "
            + ", ".join(f"{k} {result['test'][k]:.3f}" for k in METRIC_NAMES)
            + f" ({fit_s:.1f}s)"
        )
    metrics = aggregate_run(per_seed, cfg, dataset)
    if is_main_process():
        _write_json(out / "metrics.json", metrics)
        plot_run(out)
    return metrics


def evaluate_estimator(est: MoERetrieverClassifier, data: MultimodalData) -> dict[str, Any]:
    """Test metrics, per-combination metrics and router usage of one fitted estimator."""
    if data.y is None:
        raise ValueError(f"data {data.name!r} has no labels to evaluate against")
    proba = est.predict_proba(data)
    return {
        "test": classification_metrics(data.y, proba, est.classes_),
        "per_class": per_class_metrics(data.y, proba, est.classes_),
        "per_combination": per_combination_metrics(
            data.y, proba, data.observed, data.modalities, est.classes_
        ),
        "n_test": int(data.n_samples),
        "routing": est.routing_stats(data),
    }


def aggregate_run(
    per_seed: dict[str, dict[str, Any]], cfg: TrainConfig, dataset: str
) -> dict[str, Any]:
    seeds = list(per_seed)
    return {
        "dataset": dataset,
        "method": cfg.method,
        "seeds": [int(s) for s in seeds],
        "test": aggregate_seeds([per_seed[s]["test"] for s in seeds]),
        "per_class": aggregate_per_class([per_seed[s]["per_class"] for s in seeds]),
        "per_combination": aggregate_combinations([per_seed[s]["per_combination"] for s in seeds]),
        "per_seed": per_seed,
    }


def write_predictions(
    path: Path, data: MultimodalData, proba: np.ndarray, classes: Sequence[str]
) -> pd.DataFrame:
    """CSV: id, predicted class, observed combination, the true label (when ``data`` has
    labels), then ``p_<class>`` per class.

    ``label`` is the name of ``data``'s own label (``data.class_names[y]``): a reader codes
    labels by the classes present in its file, so those codes index ``classes`` (the run's)
    only by chance; a file that holds class "b" alone codes it as 0.
    """
    from moe_retriever.training.metrics import combination_names

    frame = pd.DataFrame({"id": data.ids})
    frame["predicted"] = [classes[i] for i in proba.argmax(axis=1)] if len(proba) else []
    frame["observed"] = combination_names(data.observed, data.modalities)
    if data.y is not None:
        names = np.asarray([str(c) for c in data.class_names], dtype=object)
        frame["label"] = names[np.asarray(data.y, dtype=np.int64)] if len(data.y) else []
    for j, c in enumerate(classes):
        frame[f"p_{c}"] = proba[:, j]
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    return frame


# ------------------------------------------------------------------------------ reading runs
def read_run(run_dir: str | Path) -> tuple[dict[str, Any], TrainConfig]:
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() or not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"{str(run_dir)!r} is not a run folder (run.json/config.yaml missing)"
        )
    info = json.loads((run_dir / "run.json").read_text())
    if info.get("status") == "running" and _process_gone(info):
        # killed without a chance to say so (kill -9, power loss): the run is resumable
        info["status"] = "interrupted"
        with contextlib.suppress(OSError):
            _write_json(run_dir / "run.json", info)
    return info, TrainConfig.from_yaml(run_dir / "config.yaml")


def _process_gone(info: dict[str, Any]) -> bool:
    """True when run.json's training process ran on this host and no longer exists."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def run_models(run_dir: str | Path, seed: int | None = None) -> dict[int, MoERetrieverClassifier]:
    """The saved estimators of a run, by seed (only ``seed`` if given)."""
    run_dir = Path(run_dir)
    models = {}
    for d in sorted(run_dir.glob("seed_*")):
        s = int(d.name.split("_", 1)[1])
        if (seed is None or s == seed) and (d / "model" / "estimator.json").is_file():
            models[s] = MoERetrieverClassifier.load(d / "model")
    if not models:
        which = f" for seed {seed}" if seed is not None else ""
        raise FileNotFoundError(f"run folder {str(run_dir)!r} has no finished model{which}")
    return models


def evaluate_run(
    run_dir: str | Path,
    source: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Re-evaluate a run's models: on its own test split, or on all samples of ``source``.

    ``source``'s labels are matched to the run's classes by name (a file that holds one class
    only is scored against the model's own class codes); a label the model does not know
    raises naming it. Samples of ``source`` that are in the run's training split are counted
    (``n_in_training_split``) and ``warn`` is called with one line: their scores are not test
    scores.
    """
    run_dir = Path(run_dir)
    info, cfg = read_run(run_dir)
    models = run_models(run_dir)
    first = next(iter(models.values()))
    classes, modalities = first.classes_, first.modalities_
    n_train_overlap = 0
    if source is None:
        data = load_run_data(info["data"], modalities=modalities)
        _, _, data = apply_split(data, Split.load(run_dir / "split.json"))
        name = "test"
    else:
        data = load_run_data(source, modalities=modalities)
        data = align_labels(data, classes, what=f"data {source!r}")
        name = data.name
        split_path = run_dir / "split.json"
        if split_path.is_file():
            trained = set(Split.load(split_path).train)
            overlap = [i for i in data.ids.tolist() if i in trained]
            n_train_overlap = len(overlap)
            if overlap and warn is not None:
                warn(
                    f"{len(overlap)} of {len(data)} sample(s) of {source!r} are in the run's "
                    f"training split, so their scores are not test scores: {preview(overlap)}"
                )
    per_seed = {}
    for s, est in models.items():
        r = evaluate_estimator(est, data)
        r.pop("routing")
        per_seed[str(s)] = r
    result = aggregate_run(per_seed, cfg, data.name)
    result["evaluated_on"] = name
    result["n_in_training_split"] = n_train_overlap
    return result


# ------------------------------------------------------------------------------ tables
def _text_table(rows: list[list[str]]) -> str:
    """Left-aligned columns, the first row a header underlined with dashes."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(results: dict[str, dict[str, Any]], digits: int = 3) -> str:
    """Plain-text table: one row per method, mean ± std of every test metric."""
    header = ["method", *METRIC_NAMES]
    rows = [header]
    for method, metrics in results.items():
        rows.append([method] + [format_mean_std(metrics["test"][k], digits) for k in METRIC_NAMES])
    return _text_table(rows)


def format_per_class(results: dict[str, dict[str, Any]], digits: int = 3) -> str:
    """Plain-text table: one row per class (test support), recall and F1 (mean ± std over
    seeds) per method, so a loss in a small class is visible next to the averages."""
    methods = [m for m, r in results.items() if r.get("per_class")]
    if not methods:
        return ""
    classes: list[str] = []
    for m in methods:
        classes += [c for c in results[m]["per_class"] if c not in classes]
    header = ["class", "support"]
    for m in methods:
        header += [f"{m} recall", f"{m} F1"] if len(methods) > 1 else ["recall", "F1"]
    rows = [header]
    for c in classes:
        first = next(results[m]["per_class"][c] for m in methods if c in results[m]["per_class"])
        row = [c, str(first["support"])]
        for m in methods:
            pc = results[m]["per_class"].get(c)
            row += (
                [format_mean_std(pc["recall"], digits), format_mean_std(pc["f1"], digits)]
                if pc
                else ["–", "–"]
            )
        rows.append(row)
    return _text_table(rows)


# ------------------------------------------------------------------------------ plots
def plot_run(run_dir: str | Path) -> list[Path]:
    """Learning curves and (when the method routes) router usage PNGs of a run folder."""
    run_dir = Path(run_dir)
    written = []
    histories = {}
    for d in sorted(run_dir.glob("seed_*")):
        if (d / "history.csv").is_file():
            histories[d.name] = pd.read_csv(d / "history.csv")
    if histories:
        written.append(plot_learning_curves(histories, run_dir / "learning_curves.png", run_dir))
    usage: dict[str, Any] = {}
    for d in sorted(run_dir.glob("seed_*")):
        if (d / "routing.json").is_file():
            u = json.loads((d / "routing.json").read_text()).get("usage", {})
            _add_usage(usage, u)
    if usage:
        written.append(plot_router_usage(usage, run_dir / "router_usage.png"))
    return written


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    for target, combos in usage.items():
        for combo, entry in combos.items():
            t = total.setdefault(target, {}).setdefault(combo, {"tokens": 0, "experts": {}})
            t["tokens"] += entry["tokens"]
            for e, c in entry["experts"].items():
                t["experts"][e] = t["experts"].get(e, 0) + c


def _monitor_of(run_dir: Path) -> str:
    try:
        return TrainConfig.from_yaml(run_dir / "config.yaml").train.monitor
    except (FileNotFoundError, ValueError):
        return "val_macro_f1"


def plot_learning_curves(
    histories: dict[str, pd.DataFrame], path: Path, run_dir: Path | None = None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitor = _monitor_of(run_dir) if run_dir is not None else "val_macro_f1"
    if monitor == "val_loss":
        monitor = "val_macro_f1"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, h) in enumerate(histories.items()):
        color = f"C{i}"
        axes[0].plot(h["epoch"], h["train_loss"], color=color, label=f"{name} train")
        if "val_loss" in h:
            axes[0].plot(h["epoch"], h["val_loss"], color=color, ls="--", label=f"{name} val")
        if monitor in h:
            axes[1].plot(h["epoch"], h[monitor], color=color, label=name)
        if "retrieval" in h and (~h["retrieval"].astype(bool)).any():
            end = h.loc[~h["retrieval"].astype(bool), "epoch"].max() + 0.5
            for ax in axes:
                ax.axvspan(-0.5, end, color="0.92", zorder=0)
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss (shaded: warm-up, retriever off)")
    axes[1].set(xlabel="epoch", ylabel=monitor, title=f"validation {monitor[4:]}")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_router_usage(usage: dict[str, Any], path: Path) -> Path:
    """One heatmap per target modality: rows = observed combinations, columns = candidates,
    cell = fraction of that combination's routed tokens that chose the candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted(usage)
    n = len(targets)
    fig, axes = plt.subplots(
        n,
        1,
        figsize=(10, 1.2 + 0.45 * sum(len(usage[t]) for t in targets) + 0.9 * n),
        squeeze=False,
    )
    for ax, target in zip(axes[:, 0], targets):
        combos = sorted(usage[target], key=lambda c: -usage[target][c]["tokens"])
        experts = sorted({e for c in combos for e in usage[target][c]["experts"]}, key=_expert_key)
        mat = np.zeros((len(combos), len(experts)))
        for i, c in enumerate(combos):
            entry = usage[target][c]
            for j, e in enumerate(experts):
                mat[i, j] = entry["experts"].get(e, 0) / max(entry["tokens"], 1)
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(len(combos)))
        ax.set_yticklabels([f"{c} (n={usage[target][c]['tokens']})" for c in combos], fontsize=7)
        ax.set_xticks(range(len(experts)))
        ax.set_xticklabels([str(e) for e in experts], rotation=60, fontsize=7, ha="right")
        ax.set_title(f"retrieving {target}: candidate usage per observed combination", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _expert_key(e: Any) -> tuple[int, str, int]:
    s = str(e)
    if "#" in s:
        name, num = s.rsplit("#", 1)
        return (1 if name == "shared" else 0, name, int(num) if num.isdigit() else 0)
    return (0, s, 0)


def plot_comparison(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: mean ± std of every test metric per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    x = np.arange(len(METRIC_NAMES))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, m in enumerate(methods):
        means = [results[m]["test"][k]["mean"] for k in METRIC_NAMES]
        stds = [results[m]["test"][k]["std"] for k in METRIC_NAMES]
        means = [0.0 if math.isnan(v) else v for v in means]
        stds = [0.0 if math.isnan(v) else v for v in stds]
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=m
        )
    ax.set_xticks(x)
    ax.set_xticklabels(METRIC_NAMES)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test score (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def resolve_out(out: str | None, default: Path) -> Path:
    """The run folder: ``out`` if given; else a fresh ``default`` (suffixed if it exists).

    Under DDP the other processes re-run the command line; they take the folder chosen by
    rank 0 from :data:`RUN_DIR_ENV` so that everybody agrees.
    """
    if os.environ.get(RUN_DIR_ENV) and not is_main_process():
        return Path(os.environ[RUN_DIR_ENV])
    path = Path(out) if out else unique_run_dir(default)
    os.environ[RUN_DIR_ENV] = str(path)
    return path
