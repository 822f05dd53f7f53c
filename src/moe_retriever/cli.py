"""The command line: parse, load config, call the library. Nothing else lives here.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` builds its parser and
``_cmd_<name>(args)`` runs it. Errors a user can cause (unknown dataset, bad file, bad option)
are raised as ``UserError`` / ``DataValidationError`` / ``ValueError`` / ``FileNotFoundError``
and printed as one line with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moe_retriever.data.core import DataValidationError, DataWarning


class UserError(Exception):
    """A mistake in the command line or its inputs; printed as one line."""


# ---------------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser(
        "describe",
        help="samples, classes, modality dimensions and observed combinations",
    )
    d.add_argument(
        "source",
        help="a built-in dataset name (miniacc, mfeat, synthetic, synthetic-retrieval, "
        "support2, smart) or a folder",
    )
    d.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_layout(d)
    _add_modalities(d)
    d.set_defaults(func=_cmd_data_describe)


def _add_layout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--layout",
        choices=["adni", "mimic"],
        default=None,
        help="read the folder in the authors' ADNI or MIMIC-IV layout (default: detected from "
        "label.csv + PTID_splits.json or labels.csv + PTID_splits_mimic.json)",
    )


def _add_modalities(p: argparse.ArgumentParser, config: bool = False) -> None:
    p.add_argument(
        "--modalities",
        nargs="+",
        default=None,
        metavar="M",
        help="read only these modalities of DATA, e.g. genomic clinical biospecimen (default: "
        + ("the config's data.modalities, else " if config else "")
        + "every modality DATA has; of an ADNI / MIMIC-IV folder, those whose folder or file "
        "exists, the absent ones named in one line)",
    )


def _config_path(config: str) -> Path:
    """``--config``: a YAML file, or the name of a config shipped in ``moe_retriever/configs``
    (``paper_adni``, ``paper_mimic``, ``demo``) when no such file exists."""
    path = Path(config)
    if path.exists():
        return path
    shipped = Path(__file__).parent / "configs" / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    return path


def _layout_paths(cfg: Any, data: Any) -> None:
    """Relative encoder mask paths of the config that name files of the data folder; the
    encoders of modalities the data has but that are not read (absent from a layout folder,
    or left out by --modalities) are dropped, said in one line."""
    from moe_retriever.data.layouts import resolve_encoder_paths

    not_read = [m for m in data.attrs.get("not_read", []) if m in cfg.model.encoders]
    if not_read:
        _warn(
            f"model.encoders of {', '.join(not_read)} not used: the modality is not read from "
            f"{data.name!r}"
        )
        cfg.model.encoders = {k: v for k, v in cfg.model.encoders.items() if k not in not_read}
    cfg.model.encoders = resolve_encoder_paths(cfg.model.encoders, data)


def _cmd_data_describe(args: argparse.Namespace) -> int:
    from moe_retriever.datasets import load_data

    data = load_data(args.source, layout=args.layout, modalities=args.modalities)
    summary = data.describe()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from moe_retriever.data.report import format_description

    print(format_description(summary))
    return 0


def _add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE ...`` (repeatable) into ``args.overrides``."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=help,
    )


# ---------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train and evaluate a model over seeds into a run folder",
        description="Train on DATA (a built-in dataset name or a data folder), select the best "
        "epoch on validation, evaluate on test; one model per seed, metrics as mean ± std.",
    )
    p.add_argument(
        "data",
        nargs="?",
        default=None,
        help="built-in dataset (miniacc, mfeat, synthetic, synthetic-retrieval, support2, "
        "smart) or data folder; "
        "optional with --resume (default: the run's own data)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML config file, or a shipped config by name: paper_adni, paper_mimic, demo "
        "(default: built-in defaults)",
    )
    p.add_argument(
        "--method",
        default=None,
        help="method (a preset of parts: `moe-retriever list` shows them), e.g. moe-retriever, "
        "zero, official-average, mean, bank, knn, none (default: the config's method)",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="model seeds (default: config, 0 1 2)"
    )
    p.add_argument(
        "--out", default=None, help="run folder (default: runs/<dataset>-<method>, made unique)"
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint (config and split from it)",
    )
    p.add_argument("--devices", type=int, default=None, help="processes/devices (default: 1)")
    p.add_argument("--strategy", default=None, help="Lightning strategy, e.g. ddp (default: auto)")
    p.add_argument("--accelerator", default=None, help="cpu, gpu or auto (default: config, auto)")
    _add_overrides(p, "config overrides, e.g. --set train.epochs=10 optim.lr=3e-4")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_layout(p)
    _add_modalities(p, config=True)
    p.set_defaults(func=_cmd_train)


def _check_method(method: str) -> None:
    from moe_retriever.presets import list_presets

    if method not in list_presets():
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(list_presets())}")


def _check_seeds(seeds: Sequence[int]) -> None:
    dup = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if dup:
        raise UserError(
            f"--seeds lists {dup} more than once; each seed trains one model, so repeating a "
            "seed trains the same model twice"
        )


def _check_accelerator(accelerator: str | None) -> None:
    """Refuse a GPU request without a GPU before anything is written."""
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"--accelerator {accelerator}: no CUDA GPU is visible to torch "
                f"(torch {torch.__version__}); use --accelerator cpu or auto"
            )


def _cmd_train(args: argparse.Namespace) -> int:
    from moe_retriever.training.config import TrainConfig, apply_overrides
    from moe_retriever.training.runs import (
        format_per_class,
        format_table,
        is_main_process,
        read_run,
        resolve_out,
        train_run,
    )

    if args.resume:
        if args.config or args.overrides or args.method or args.seeds or args.modalities:
            raise UserError(
                "--resume continues a run with its saved config; drop --config/--set/--method/"
                "--seeds/--modalities (or start a new run with --out)"
            )
        info, cfg = read_run(args.resume)
        if info.get("status") == "running" and is_main_process():
            raise UserError(
                f"run {args.resume!r} is being trained right now (process {info.get('pid')}); "
                "wait for it or stop it first"
            )
        if args.data is not None and args.data != info["data"]:
            raise UserError(
                f"run {args.resume!r} was trained on {info['data']!r}, not {args.data!r}"
            )
        source, out, resume = info["data"], Path(args.resume), True
    else:
        if args.data is None:
            raise UserError("give DATA (a dataset name or a data folder), or --resume RUN_DIR")
        cfg = TrainConfig.from_yaml(_config_path(args.config)) if args.config else TrainConfig()
        cfg = apply_overrides(cfg, args.overrides)
        if args.method:
            cfg.method = args.method
        if args.seeds:
            cfg.seeds = list(args.seeds)
        if args.modalities:
            cfg.data.modalities = list(args.modalities)
        source, resume = args.data, False
    if args.devices is not None:
        cfg.runtime.devices = args.devices
    if args.strategy is not None:
        cfg.runtime.strategy = args.strategy
    if args.accelerator is not None:
        cfg.runtime.accelerator = args.accelerator
    if args.no_progress:
        cfg.runtime.progress_bar = False
    cfg.validate()
    _check_method(cfg.method)
    cfg.parts()  # unknown parts or options fail here, before any data is read
    _check_seeds(cfg.seeds)
    _check_accelerator(cfg.runtime.accelerator)
    from moe_retriever.training.runs import load_run_data

    data = load_run_data(source, layout=args.layout, modalities=cfg.data.modalities)
    if not resume:
        _layout_paths(cfg, data)
        if args.out and is_main_process() and (Path(args.out) / "config.yaml").exists():
            raise UserError(
                f"{args.out!r} already holds a run; use --resume {args.out} to continue it "
                "or another --out"
            )
        if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
            raise UserError(f"--out {args.out!r} is a file; a run folder is needed")
        out = resolve_out(args.out, Path("runs") / f"{data.name}-{cfg.method}")
    try:
        metrics = train_run(source, cfg, out, resume=resume, data=data)
    except KeyboardInterrupt:
        print(
            f"moe-retriever: interrupted; run status 'interrupted', continue with: "
            f"moe-retriever train --resume {out}",
            file=sys.stderr,
        )
        return 130
    if is_main_process():
        print()
        print(format_table({cfg.method: metrics}))
        print("\nper class (test):")
        print(format_per_class({cfg.method: metrics}))
        print(f"\nrun folder: {out}")
    return 0


# ---------------------------------------------------------------------------- tune
def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search a method's hyper-parameters on the validation split (Optuna TPE)",
        description="Split DATA as `train` does (data.split_seed, data.split_file, a layout's "
        "splits), search METHOD's hyper-parameters with a seeded TPE sampler and median "
        "pruning, each trial fitted on the training split and scored on the validation split "
        "(the test split is never used), and write the best config as YAML for `train "
        "--config` / `benchmark --config`, with the trials table beside it (<out>.trials.csv).",
    )
    p.add_argument(
        "data",
        help="built-in dataset (miniacc, mfeat, synthetic, synthetic-retrieval) or data folder",
    )
    p.add_argument("--method", default=None, help="method to tune (default: the config's)")
    p.add_argument("--trials", type=int, default=None, help="number of trials")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="time budget in minutes (with or instead of "
        "--trials; the search stops at whichever comes first)",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="validation objective: loss, accuracy, balanced_accuracy, macro_f1, auroc "
        "(default: the config's train.monitor; loss is minimised, the others maximised)",
    )
    p.add_argument("--config", default=None, help="base YAML config (default: built-in defaults)")
    _add_overrides(p, "overrides of the base config, e.g. --set train.epochs=10 runtime.threads=1")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the TPE sampler and of every trial's model (default: the config's "
        "first seed)",
    )
    p.add_argument(
        "--fix",
        nargs="+",
        default=[],
        metavar="KEY",
        help="searched keys to hold at the base config's value, e.g. --fix model.dim "
        "model.n_tokens (default: search them all)",
    )
    p.add_argument(
        "--no-pruning", action="store_true", help="fit every trial to the end (no median pruner)"
    )
    p.add_argument("--out", default="tuned.yaml", help="the tuned config (default: tuned.yaml)")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")
    _add_layout(p)
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    from moe_retriever.data.splits import apply_split
    from moe_retriever.training.config import TrainConfig, apply_overrides
    from moe_retriever.training.runs import load_run_data, make_run_split
    from moe_retriever.training.tuning import method_space, normalize_metric, tune

    if args.trials is None and args.minutes is None:
        raise UserError("give a tuning budget: --trials N and/or --minutes T")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {args.minutes}")
    cfg = TrainConfig.from_yaml(_config_path(args.config)) if args.config else TrainConfig()
    cfg = apply_overrides(cfg, args.overrides)
    if args.method:
        cfg.method = args.method
    cfg.validate()
    _check_method(cfg.method)
    cfg.parts()
    _check_accelerator(cfg.runtime.accelerator)
    normalize_metric(args.metric, cfg)  # an unknown metric fails before any data is read
    method_space(cfg.method, cfg, args.fix)  # so does an unknown --fix key
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {args.out!r} is a folder; give a file name (.yaml)")
    if not out.resolve().parent.is_dir():
        raise UserError(f"--out {args.out!r}: folder {str(out.resolve().parent)!r} does not exist")
    data = load_run_data(args.data, layout=args.layout)
    _layout_paths(cfg, data)
    train, val, _test = apply_split(data, make_run_split(data, cfg))
    del _test  # the test split stays out of the search
    result = tune(
        train,
        val,
        cfg.method,
        cfg,
        n_trials=args.trials,
        timeout_minutes=args.minutes,
        seed=args.seed,
        metric=args.metric,
        fixed=args.fix,
        pruning=not args.no_pruning,
        log=None if args.quiet else print,
    )
    result.to_yaml(out)
    table = out.with_name(out.stem + ".trials.csv")
    result.trials.to_csv(table, index=False)
    s = result.summary()
    print(
        f"\n{cfg.method}: best {s['metric']} {s['value']:.4f} on validation after "
        f"{s['n_trials']} trials ({s['n_complete']} complete, {s['n_pruned']} pruned, "
        f"{s['n_failed']} failed)"
    )
    for key, value in s["params"].items():
        print(f"  {key} = {value!r}")
    print(f"tuned config: {out}\ntrials: {table}")
    print(f"next: moe-retriever train {args.data} --config {out}")
    return 0


# ---------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a trained run on its test split or on other labelled data",
    )
    p.add_argument("run_dir", help="a run folder written by `train`")
    p.add_argument(
        "data",
        nargs="?",
        default=None,
        help="labelled dataset name or folder to evaluate on (default: the run's test split)",
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=_cmd_evaluate)


def _warn(msg: str) -> None:
    print(f"moe-retriever: warning: {msg}", file=sys.stderr)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from moe_retriever.training.metrics import METRIC_NAMES, format_mean_std
    from moe_retriever.training.runs import evaluate_run, format_per_class, format_table

    result = evaluate_run(args.run_dir, args.data, warn=_warn)
    name = "test" if args.data is None else Path(str(result["evaluated_on"])).name
    out = Path(args.run_dir) / f"evaluation_{name}.json"
    try:
        out.write_text(json.dumps(result, indent=2, default=str))
        written = f"written: {out}"
    except OSError as exc:  # a read-only run folder still gets its metrics printed
        written = ""
        _warn(f"could not write {str(out)!r} ({exc.strerror or exc}); results printed only")
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"{result['method']} on {result['evaluated_on']} (seeds {result['seeds']}):")
    print(format_table({result["method"]: result}))
    print("\nper class:")
    print(format_per_class({result["method"]: result}))
    print("\nper observed combination:")
    for combo, row in result["per_combination"].items():
        cells = ", ".join(f"{k} {format_mean_std(row[k])}" for k in METRIC_NAMES)
        print(f"  {combo} (n={row['n']}): {cells}")
    if written:
        print(f"\n{written}")
    return 0


# ---------------------------------------------------------------------------- predict
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="class probabilities (and completed embeddings) for new samples",
        description="Predict DATA with the models of RUN_DIR. Samples may have any non-empty "
        "subset of modalities. Probabilities are averaged over the run's seeds unless --seed.",
    )
    p.add_argument("run_dir", help="a run folder written by `train`")
    p.add_argument("data", help="dataset name or data folder (labels not needed)")
    p.add_argument("--out", default="predictions.csv", help="output CSV (default: predictions.csv)")
    p.add_argument(
        "--embeddings",
        action="store_true",
        help="also write completed embeddings (N, M, P, D) to <out>.embeddings.npy "
        "(from one seed's model: --seed, default the first)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="also write the head's per-sample interpretation (I2MoE's interaction weights, "
        "I2M2's expert shares...) to <out>.explain.csv (from one seed's model: --seed, "
        "default the first); refused for a head without one",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="use only this seed's model (default: all)"
    )
    p.set_defaults(func=_cmd_predict)


def _input_files(*sources: str) -> list[Path]:
    """Every file that a command reads: all files under each folder source (resolved)."""
    files = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            files += [f.resolve() for f in path.rglob("*") if f.is_file()]
        elif path.is_file():
            files.append(path.resolve())
    return files


def _check_outputs(outs: Sequence[Path], run_dir: str, data: str) -> None:
    """Refuse output paths that would overwrite an input: a file of the data folder or of the
    run folder, or any path inside either folder (checked before anything is computed)."""
    folders = [Path(f).resolve() for f in (run_dir, data) if Path(f).is_dir()]
    inputs = set(_input_files(run_dir, data))
    for out in outs:
        target = out.resolve()
        inside = next((f for f in folders if target == f or f in target.parents), None)
        if target in inputs or inside is not None:
            where = f"inside input folder {str(inside)!r}" if inside else "an input file"
            raise UserError(
                f"--out {str(out)!r} is {where}; predictions never overwrite inputs, choose "
                "another path"
            )
        if target.is_dir():
            raise UserError(f"--out {str(out)!r} is a folder; give a file name (.csv)")
        parent = target.parent
        if not parent.is_dir():
            raise UserError(f"--out {str(out)!r}: folder {str(parent)!r} does not exist")


def _cmd_predict(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from moe_retriever.data.validation import missing_cells
    from moe_retriever.training.runs import load_run_data, run_models, write_predictions

    out = Path(args.out)
    emb_path = out.with_name(out.stem + ".embeddings.npy")
    emb_meta = out.with_name(out.stem + ".embeddings.json")
    explain_path = out.with_name(out.stem + ".explain.csv")
    outs = [out, emb_path, emb_meta] if args.embeddings else [out]
    if args.explain:
        outs.append(explain_path)
    _check_outputs(outs, args.run_dir, args.data)
    for o in outs:
        if not os.access(o.resolve().parent, os.W_OK):
            raise UserError(f"--out {str(o)!r}: folder {str(o.resolve().parent)!r} is not writable")
    models = run_models(args.run_dir, args.seed)
    first = next(iter(models.values()))  # the seeds of a run share modalities and head
    if args.explain and not first.explains():
        raise UserError(
            f"--explain: the {first.model_.head_name!r} head of method {first.method!r} has no "
            "per-sample interpretation (i2moe and i2m2 have one); drop --explain"
        )
    data = load_run_data(args.data, modalities=first.modalities_)
    probas = []
    for est in models.values():
        probas.append(est.predict_proba(data))
    for line in missing_cells(data):
        _warn(line)
    proba = np.mean(probas, axis=0)
    write_predictions(out, data, proba, first.classes_)
    print(f"{len(data)} predictions ({len(models)} model(s)) -> {out}")
    if args.embeddings:
        np.save(emb_path, first.retrieve(data))
        emb_meta.write_text(
            json.dumps(
                {
                    "shape": ["samples", "modalities", "tokens", "dim"],
                    "modalities": first.modalities_,
                    "ids": [str(i) for i in data.ids],
                    "seed": next(iter(models)),
                },
                indent=2,
            )
        )
        print(f"completed embeddings {tuple(np.load(emb_path, mmap_mode='r').shape)} -> {emb_path}")
    if args.explain:
        frame = first.explain(data)
        frame.to_csv(explain_path, index=False)
        print(f"per-sample interpretation ({frame.shape[1] - 1} columns) -> {explain_path}")
    return 0


# ---------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="MoE-Retriever vs zero-fill on the embedded miniacc data, 3 seeds, table + plots",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["moe-retriever", "zero"],
        help="methods to compare (default: moe-retriever zero); e.g. i2moe writes and names "
        "its interaction-weight plots",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from moe_retriever.training.demo import demo_config, run_demo

    cfg = demo_config()
    if args.no_progress:
        cfg.runtime.progress_bar = False
    for method in args.methods:
        _check_method(method)
    run_demo(args.out, seeds=args.seeds, methods=args.methods, config=cfg)
    return 0


# ---------------------------------------------------------------------------- benchmark
def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="compare methods over missing rates and seeds (tables, plots, fidelity)",
        description="Run every METHOD on DATA for every missing rate and seed, on the same "
        "splits and masks; write results.csv, results.md, results.json and plots to --out.",
    )
    p.add_argument(
        "data",
        help="built-in dataset (miniacc, mfeat, synthetic, synthetic-retrieval, support2, "
        "smart) or data folder",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=["all"],
        help="methods: completion names (moe-retriever, zero, official-average, mean, bank, "
        "knn), heads (i2m2, i2moe), complete-case, late-fusion, lr-late-fusion, "
        "lr-mean-impute, hgb, or the groups all, completions, heads, references, anchors "
        "(default: all). Groups leave out methods slow at the defaults (i2moe) unless named",
    )
    p.add_argument(
        "--missing-rates",
        type=float,
        nargs="+",
        default=[0.0, 0.3, 0.5],
        help="added MCAR missing rates; 0 = natural missingness only (default: 0 0.3 0.5)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--out", default=None, help="output folder (default: runs/benchmark-<dataset>)")
    p.add_argument(
        "--config",
        default=None,
        help="YAML training config of the deep methods (default: built-in defaults)",
    )
    _add_overrides(p, "overrides of the deep methods' config, e.g. --set train.epochs=20")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and numpy/scikit-learn during the run (default: 1, "
        "measured fastest on a shared 2-core machine; 0 = leave as is)",
    )
    p.add_argument(
        "--reference",
        nargs="+",
        default=None,
        metavar="NAME",
        help="methods every other method is compared with (paired difference and 95%% "
        "interval per rate); best-anchor = the classical anchor with the highest mean "
        "macro-F1 at each rate (default: best-anchor and zero, where present)",
    )
    p.add_argument(
        "--interval",
        choices=["t", "bootstrap"],
        default="t",
        help="95%% interval of the paired differences: t = paired t (Nadeau-Bengio corrected "
        "under --cv), bootstrap = seeded percentile bootstrap over seeds (default: t)",
    )
    p.add_argument(
        "--cv",
        type=int,
        default=None,
        metavar="K",
        help="repeated stratified K-fold: each seed a repeat, each fold a run whose test part "
        "is the fold, validation carved from the rest (default: one holdout split per seed)",
    )
    p.add_argument(
        "--vary",
        choices=["split", "init"],
        default="split",
        help="split = each seed draws split, mask and model init; init = split and mask fixed "
        "(--split-seed), only the model seed varies: training instability alone "
        "(default: split)",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="with --vary init: the seed of the fixed split and mask (default: 0)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="fits run in parallel, each in its own process with cores / jobs threads "
        "(default: 1, one after another in this process)",
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local = this machine (--jobs processes); ray = Ray tasks (needs "
        "pip install 'moe-retriever[ray]'; default: local)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="address of a running Ray cluster for --backend ray (default: start a local Ray)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished cells stored under OUT/cells by an earlier, interrupted run of "
        "the same grid and fit only the others",
    )
    p.add_argument(
        "--tune",
        type=int,
        default=None,
        metavar="N",
        help="also tune every deep method with N trials (Optuna TPE, median pruning) on each "
        "unit's training and validation parts; results list each deep method M twice, M "
        "(config as given) and M+tuned, with their paired differences (default: no tuning)",
    )
    p.add_argument(
        "--tune-metric",
        default=None,
        help="--tune objective on validation: loss, accuracy, balanced_accuracy, macro_f1, "
        "auroc (default: the config's train.monitor)",
    )
    p.add_argument(
        "--tune-fix",
        nargs="+",
        default=[],
        metavar="KEY",
        help="--tune: searched keys to hold at the config's value, e.g. model.dim",
    )
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    _add_layout(p)
    _add_modalities(p, config=True)
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from moe_retriever.benchmark.grid import GridOptions
    from moe_retriever.benchmark.harness import left_out_methods, resolve_methods, run_benchmark
    from moe_retriever.datasets import load_data
    from moe_retriever.training.config import TrainConfig, apply_overrides

    methods = resolve_methods(args.methods)  # unknown names fail before any training
    left_out = left_out_methods(args.methods)
    for r in args.missing_rates:
        if not 0.0 <= r < 1.0:
            raise UserError(f"--missing-rates must be in [0, 1), got {r}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    if args.cv is not None and args.cv < 2:
        raise UserError(f"--cv needs K >= 2 folds, got {args.cv}")
    if args.cv is not None and args.vary == "init":
        raise UserError("--cv and --vary init exclude each other (k-fold varies the split)")
    if args.cv is not None and args.interval == "bootstrap":
        raise UserError(
            "--interval bootstrap is not offered with --cv: folds share training data; "
            "use --interval t (Nadeau-Bengio corrected)"
        )
    if args.vary != "init" and args.split_seed != 0:
        raise UserError("--split-seed applies to --vary init only")
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds must be distinct (they are the paired units), got {args.seeds}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.ray_address and args.backend != "ray":
        raise UserError("--ray-address applies to --backend ray only")
    if args.tune is not None and args.tune < 1:
        raise UserError(f"--tune needs N >= 1 trials, got {args.tune}")
    if (args.tune_metric is not None or args.tune_fix) and args.tune is None:
        raise UserError("--tune-metric and --tune-fix apply to --tune only")
    if args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError(
                "--backend ray needs Ray: pip install 'moe-retriever[ray]' (or pip install ray)"
            ) from None
    from moe_retriever.benchmark.harness import TUNED_SUFFIX
    from moe_retriever.presets import list_presets

    tuned = [m + TUNED_SUFFIX for m in methods if m in list_presets()] if args.tune else []
    for ref in args.reference or []:
        if ref != "best-anchor" and ref not in methods + tuned:
            raise UserError(
                f"--reference {ref!r} is not among the benchmarked methods "
                f"({', '.join(methods)}) and is not best-anchor"
            )
    cfg = TrainConfig.from_yaml(_config_path(args.config)) if args.config else TrainConfig()
    cfg.runtime.progress_bar = False
    cfg = apply_overrides(cfg, args.overrides)
    if args.modalities:
        cfg.data.modalities = list(args.modalities)
    cfg.validate()
    if args.tune:
        from moe_retriever.training.tuning import method_space, normalize_metric

        normalize_metric(args.tune_metric, cfg)  # an unknown metric fails before any fit
        method_space("zero", cfg, args.tune_fix)  # and an unknown --tune-fix key
    from moe_retriever.presets import unused_options

    deep = [m for m in methods if m in list_presets()]
    unused = unused_options(deep, cfg.completion, cfg.head) if deep else []
    if unused:
        raise UserError(
            f"option(s) {', '.join(unused)} are taken by none of the methods "
            f"{', '.join(deep)}; `moe-retriever list` shows each part's options"
        )
    data = load_data(args.data, layout=args.layout, modalities=cfg.data.modalities)
    _layout_paths(cfg, data)
    out = Path(args.out) if args.out else Path("runs") / f"benchmark-{data.name}"
    for name, why in left_out.items():
        print(
            f"moe-retriever: note: --methods {' '.join(args.methods)} leaves out {name} ({why}); "
            f"name it to run it, e.g. --methods {' '.join(args.methods)} {name}",
            file=sys.stderr,
        )
    parts = ["moe-retriever", "benchmark", args.data, "--methods", *args.methods]
    if args.layout:
        parts += ["--layout", args.layout]
    if args.modalities:
        parts += ["--modalities", *args.modalities]
    parts += ["--missing-rates", *(f"{r:g}" for r in args.missing_rates)]
    parts += ["--seeds", *(str(x) for x in args.seeds)]
    if args.config:
        parts += ["--config", args.config]
    if args.overrides:
        parts += ["--set", *args.overrides]
    if args.threads != 1:
        parts += ["--threads", str(args.threads)]
    if args.reference:
        parts += ["--reference", *args.reference]
    if args.interval != "t":
        parts += ["--interval", args.interval]
    if args.cv is not None:
        parts += ["--cv", str(args.cv)]
    if args.vary != "split":
        parts += ["--vary", args.vary, "--split-seed", str(args.split_seed)]
    if args.tune:
        parts += ["--tune", str(args.tune)]
    if args.tune_metric:
        parts += ["--tune-metric", args.tune_metric]
    if args.tune_fix:
        parts += ["--tune-fix", *args.tune_fix]
    parts += ["--out", str(out)]
    command = " ".join(shlex.quote(x) for x in parts)  # how to run, not what: no --jobs etc.
    grid = GridOptions(
        jobs=args.jobs,
        backend=args.backend,
        ray_address=args.ray_address,
        resume=args.resume,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    result = run_benchmark(
        data,
        args.methods,
        args.missing_rates,
        args.seeds,
        cfg,
        out,
        log=None if args.quiet else print,
        command=command,
        threads=args.threads or None,
        vary=args.vary,
        split_seed=args.split_seed,
        cv=args.cv,
        references=args.reference,
        interval=args.interval,
        grid=grid,
        tune=args.tune,
        tune_metric=args.tune_metric,
        tune_fixed=args.tune_fix,
    )
    print()
    md = Path(result.paths["md"]).read_text()
    head = md.split("## Accuracy")[0]
    if "### In words" in head:  # the sentences stay in the file; print tables only
        words, _, rest = head.partition("### In words")
        head = words + "## Macro-F1" + rest.partition("## Macro-F1")[2]
    print(head.rstrip())
    if result.meta["failures"]:
        print(f"\n{len(result.meta['failures'])} run(s) failed; see results.json (failures)")
    print(f"\nwall time {result.meta['wall_seconds']:.0f} s; outputs in {out}")
    return 0


# ---------------------------------------------------------------------------- list
def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="methods (presets) and the parts they are built from, with their options",
        description="Every method name (a preset: completion + head), and every registered "
        "encoder, completion method and head with its typed options and defaults.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    import json

    from moe_retriever.completion.base import COMPLETIONS
    from moe_retriever.encoders.base import ENCODERS
    from moe_retriever.heads.base import HEADS
    from moe_retriever.presets import get_preset, list_presets
    from moe_retriever.registry import describe

    out = {
        "methods": {
            n: {"completion": get_preset(n).completion, "head": get_preset(n).head}
            for n in list_presets()
        },
        "encoders": describe(ENCODERS),
        "completions": describe(COMPLETIONS),
        "heads": describe(HEADS),
    }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print("methods (--method / benchmark --methods): completion + head")
    for n, p in out["methods"].items():
        print(f"  {n:<20} {p['completion']} + {p['head']}")
    for kind in ("encoders", "completions", "heads"):
        print(f"\n{kind} (options = defaults):")
        for n, opts in out[kind].items():
            text = ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "(no options)"
            print(f"  {n:<20} {text}")
    return 0


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-retriever",
        description="Classification on multimodal data with modalities missing sample by sample.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data(sub)
    _add_train(sub)
    _add_tune(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_demo(sub)
    _add_benchmark(sub)
    _add_list(sub)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Warnings about the user's input as one line each: ``moe-retriever: warning: ...``."""
    if issubclass(category, DataWarning):
        text = " ".join(str(message).split())
        print(f"moe-retriever: warning: {text}", file=sys.stderr)
    else:
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, file, line)


_ORIGINAL_SHOWWARNING = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one line and return 2, Ctrl-C returns 130."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("moe-retriever: interrupted", file=sys.stderr)
            return 130
        except (
            UserError,
            DataValidationError,
            ValueError,
            FileNotFoundError,
            FileExistsError,
            KeyError,
            OSError,
        ) as exc:
            print(f"moe-retriever: error: {_one_line(exc)}", file=sys.stderr)
            return 2


def _one_line(exc: BaseException) -> str:
    from moe_retriever.data.validation import one_line

    return one_line(exc)


if __name__ == "__main__":
    sys.exit(main())
