"""The benchmark harness: every method on the same splits, masks and seeds.

``run_benchmark(data, methods, missing_rates, seeds, config, out)`` loops over seeds and missing
rates. For each (rate, seed) it draws ONE split (``make_split(data, seed=seed)``) and, for a
rate above 0, ONE mask (``simulate_missing(data, rate, seed=seed)``, MCAR on top of the natural
missingness; rate 0 keeps the natural missingness only), and hands exactly these to every
method. Each method is fitted on the training part, chooses what it chooses (best epoch,
regularisation) on the validation part, and predicts the test part; the harness computes the
metrics from the test labels. Nothing but the test labels' final scoring touches test data.

Two other ways to draw the runs (the ``vary`` / ``cv`` arguments, ``--vary`` / ``--cv``):

* ``vary="init"``: split and mask are drawn ONCE with ``split_seed`` and held fixed; only the
  model seed varies over ``seeds``, so the spread is training instability alone;
* ``cv=K``: repeated stratified K-fold (``data.splits.stratified_folds``): each seed a repeat
  with its own folds, each fold a run whose test part is the fold, validation carved
  stratified from the rest (``val_fraction`` of it); the mask is drawn per (rate, seed) on
  the whole data, so every method and fold of a repeat shares it. Units are (seed, fold).

Data that bring their own split (the ADNI and MIMIC-IV layouts, whose splits file the reader
attaches; :func:`~moe_retriever.data.layouts.layout_split`) keep it for every seed outside
``cv``: only the mask (rate > 0) and the model seed vary, as in the paper's protocol.

Rows carry ``split_seed`` (the seed of split and mask) and ``fold`` (0 without ``cv``) beside
the model ``seed``. The reports pair every method with reference methods over these units
(:mod:`.stats`; default references: the best classical anchor per rate and ``zero``).

Per (method, rate, seed) it records the test metrics (``accuracy``, ``balanced_accuracy``,
``macro_f1``, ``auroc``), the wall time of the fit (``fit_seconds``), for methods with tokens
the retrieval fidelity on the TEST entries hidden by the simulator (``fidelity_cosine``,
``fidelity_mse``, the linear-probe ``fidelity_probe_r2`` and ``fidelity_specificity``, also per
modality; see :mod:`.fidelity`), and for ``moe-retriever`` the router
inspection (``router_entropy`` and the usage tables in results.json; see :mod:`.router`).

Methods (``list_methods()``; ``"all"`` = all of them but the slow ones, see below):

* ``completion``: every registered completion method, trained as the deep model
  (``MoERetrieverClassifier(method=name, config=config, seed=seed)``);
* ``head``: the presets whose point is their head (``i2m2``, ``i2moe``), trained the same way;
* ``reference``: ``complete-case`` and ``late-fusion`` (:mod:`.anchors`);
* ``anchor``: ``lr-late-fusion``, ``lr-mean-impute``, ``hgb`` (:mod:`.anchors`).

A group (``all``, ``completions``, ``heads``...) leaves out the methods whose preset says it is
slow at the defaults (``Preset.slow``: ``i2moe``) unless they are also named;
:func:`left_out_methods` says which and why, and the command line prints it before starting.

Outputs in ``out``: results.csv (raw rows), results.md (paired differences to the references
with 95% intervals and sentences, then mean ± std tables), results.json (rows, summary,
comparisons, mode, config, masks, selections, routing, failures), and ``plots/<metric>.png``.
The files are rewritten after every run unit, so an interrupted run leaves what it finished. A
method that raises is recorded under ``failures`` (with the message) and the run goes on; its
unit is then missing from that method's pairs, and the report says so.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from moe_retriever.benchmark.anchors import ANCHORS, create_anchor
from moe_retriever.benchmark.fidelity import probe_fidelity, token_fidelity
from moe_retriever.benchmark.grid import Cell, CellOutcome, GridOptions, run_cells
from moe_retriever.benchmark.methods import (
    _METHODS,
    MethodResult,
    RunInputs,
    Runner,
    register_method,
)
from moe_retriever.benchmark.plots import forest_plots, plot_all
from moe_retriever.benchmark.report import (
    TABLE_METRICS,
    comparisons_markdown,
    per_class_markdown,
    summarize,
    tuned_markdown,
    write_results,
)
from moe_retriever.benchmark.stats import BEST_ANCHOR, COMPARISON_METRICS, compare_to_references
from moe_retriever.data.core import DataWarning, MultimodalData
from moe_retriever.data.layouts import layout_split
from moe_retriever.data.missingness import simulate_missing
from moe_retriever.data.splits import Split, apply_split, cv_split, make_split, stratified_folds
from moe_retriever.data.validation import drop_empty, missing_cells

__all__ = [
    "TUNED_SUFFIX",
    "BenchmarkResult",
    "MethodResult",
    "RunInputs",
    "benchmark_config",
    "left_out_methods",
    "list_methods",
    "register_method",
    "resolve_methods",
    "run_benchmark",
]


# ---------------------------------------------------------------------------- the methods
# (the registry itself, RunInputs and MethodResult: .methods; the built-in runners: here)
#: deep methods registered from the presets (kept in sync with them)
_AUTO: set[str] = set()
#: methods a run derives from a preset and registers for itself, never listed: ``M+tuned``
#: (``--tune``) and ``METHOD[key=value, ...]`` variants
_DERIVED: set[str] = set()


def _fidelity_of(model: Any, inputs: RunInputs) -> dict[str, float] | None:
    """Fidelity on the hidden test entries, for a model with retrieve/encode; None for a
    method that fills nothing (completion ``none``: its zeros are masked, not a guess)."""
    if not inputs.hidden_test.any():
        return None
    completion = getattr(getattr(model, "model_", None), "completion", None)
    if completion is not None and not getattr(completion, "fills", True):
        return None
    completed = np.asarray(model.retrieve(inputs.test))
    true = np.asarray(model.encode(inputs.test_full))
    out = token_fidelity(completed, true, inputs.hidden_test, inputs.test.modalities)
    # the probe: fitted on the training rows (encoder tokens of real inputs -> preprocessed
    # features, with the model's own training-fitted preprocessor), scored on hidden test entries
    pre = model.preprocessor_
    train, _ = drop_empty(inputs.train)
    train_pre = pre.transform(train)
    test_pre = pre.transform(inputs.test_full)
    out.update(
        probe_fidelity(
            np.asarray(model.encode(train)),
            train_pre.X,
            train_pre.observed,
            completed,
            true,
            test_pre.X,
            inputs.hidden_test,
            inputs.test.modalities,
        )
    )
    return out


def _deep_result(est: Any, inputs: RunInputs, info: dict[str, Any]) -> MethodResult:
    """A fitted deep model's test probabilities, fidelity and its parts' summaries."""
    proba = np.asarray(est.predict_proba(inputs.test))
    # the parts' own summaries (router usage, interaction weights...), asked for without
    # knowing the method, on the masked test set after its final evaluation
    summary = est.interpretation(inputs.test)
    info = {"best_epoch": getattr(est, "best_epoch_", None), **info}
    if summary["head"] is not None:
        info["head"] = summary["head"]
    return MethodResult(proba, _fidelity_of(est, inputs), summary["completion"], info)


def _method_config(method: str, config: Any) -> Any:
    """The benchmark's one config for ``method``: the options its parts take."""
    from moe_retriever.presets import applicable_options

    cfg = config.copy()  # one config for all methods: each takes its parts' options
    cfg.completion, cfg.head = applicable_options(method, cfg.completion, cfg.head)
    return cfg


def _deep_runner(method: str) -> Runner:
    def run(inputs: RunInputs) -> MethodResult:
        from moe_retriever.training.estimator import MoERetrieverClassifier

        cfg = _method_config(method, inputs.config)
        est = MoERetrieverClassifier(method=method, config=cfg, seed=inputs.seed)
        est.fit(inputs.train, inputs.val)
        return _deep_result(est, inputs, {})

    return run


#: ``<method>+tuned``: the method after ``tune`` trials on its unit's train / validation parts
TUNED_SUFFIX = "+tuned"


def parse_variant(name: str) -> tuple[str, list[str]] | None:
    """``"moe-retriever[train.class_weights=balanced, train.monitor=val_macro_f1]"`` ->
    ``("moe-retriever", ["train.class_weights=balanced", "train.monitor=val_macro_f1"])``: a
    deep method with config overrides, benchmarked beside the method itself on the same splits
    and masks (how a default is chosen by measurement). ``None`` for a plain name."""
    if not name.endswith("]") or "[" not in name:
        return None
    base, _, inner = name[:-1].partition("[")
    items = [x.strip() for x in inner.split(",") if x.strip()]
    if not base or not items:
        raise ValueError(f"method variant {name!r}: write METHOD[key=value, ...]")
    return base, items


def _variant_runner(method: str, overrides: Sequence[str]) -> Runner:
    """``method`` with ``overrides`` applied on top of the benchmark's config."""
    base = _deep_runner(method)

    def run(inputs: RunInputs) -> MethodResult:
        from moe_retriever.training.config import apply_overrides

        return base(replace(inputs, config=apply_overrides(inputs.config, list(overrides))))

    return run


def _register_variant(name: str) -> bool:
    """Register ``METHOD[key=value, ...]`` (see :func:`parse_variant`) as a method; False for a
    name that is not a variant. The overrides are checked here, before any fit."""
    from moe_retriever.presets import list_presets
    from moe_retriever.training.config import apply_overrides

    parsed = parse_variant(name)
    if parsed is None:
        return False
    method, overrides = parsed
    if method not in list_presets():
        raise ValueError(
            f"method variant {name!r}: {method!r} is not a deep method (a preset); "
            f"known: {', '.join(list_presets())}"
        )
    apply_overrides(benchmark_config(), overrides)  # one line naming a bad key or value
    register_method(name, _METHODS[method].kind, _variant_runner(method, overrides))
    _DERIVED.add(name)
    return True


def _tuned_runner(method: str, trials: int, metric: str, fixed: Sequence[str] = ()) -> Runner:
    """``method`` tuned on the unit's training and validation parts only
    (:func:`moe_retriever.training.tuning.tune`, ``trials`` trials, TPE and model seeded with
    the unit's seed); the best trial's model (fitted on train, epoch chosen on validation)
    predicts the test part."""

    def run(inputs: RunInputs) -> MethodResult:
        from moe_retriever.training.tuning import tune

        result = tune(
            inputs.train,
            inputs.val,
            method,
            _method_config(method, inputs.config),
            n_trials=trials,
            seed=inputs.seed,
            metric=metric,
            fixed=fixed,
        )
        return _deep_result(result.estimator, inputs, {"tuned": result.summary()})

    return run


def _anchor_runner(name: str) -> Runner:
    def run(inputs: RunInputs) -> MethodResult:
        opts: dict[str, Any] = {}
        if name == "complete-case":
            opts["config"] = inputs.config
        anchor = create_anchor(name, seed=inputs.seed, **opts)
        anchor.fit(inputs.train, inputs.val)
        proba = anchor.predict_proba(inputs.test)
        fid = _fidelity_of(anchor, inputs) if anchor.has_tokens else None
        info = {"selected": anchor.selected_, "val_scores": anchor.val_scores_}
        return MethodResult(proba, fid, None, info)

    return run


def _builtin_methods() -> None:
    from moe_retriever.presets import get_preset, list_presets

    presets = list_presets()
    for name in [n for n in _AUTO if n not in presets]:  # a preset was unregistered
        _AUTO.discard(name)
        _METHODS.pop(name, None)
    for name in presets:
        if name not in _METHODS:
            register_method(name, get_preset(name).kind, _deep_runner(name))
            _AUTO.add(name)
    for name, cls in ANCHORS.items():
        if name not in _METHODS:
            register_method(name, cls.kind, _anchor_runner(name))


def list_methods(kind: str | None = None) -> list[str]:
    """Methods known to the harness: completions, heads, reference points, then anchors."""
    _builtin_methods()
    order = {"completion": 0, "head": 1, "reference": 2, "anchor": 3}
    specs = sorted(_METHODS.values(), key=lambda s: order.get(s.kind, 4))
    return [s.name for s in specs if (kind is None or s.kind == kind) and s.name not in _DERIVED]


def _slow_methods() -> dict[str, str]:
    """Methods slow at the defaults -> why (their preset's ``slow``)."""
    from moe_retriever.presets import get_preset, list_presets

    return {n: get_preset(n).slow for n in list_presets() if get_preset(n).slow}


def _groups(keep_slow: bool = False) -> dict[str, list[str]]:
    """The method groups; without ``keep_slow`` the slow methods are left out of each."""
    slow = {} if keep_slow else _slow_methods()
    return {
        g: [m for m in list_methods(kind) if m not in slow]
        for g, kind in (
            ("all", None),
            ("completions", "completion"),
            ("heads", "head"),
            ("references", "reference"),
            ("anchors", "anchor"),
        )
    }


def resolve_methods(methods: Sequence[str] | str) -> list[str]:
    """Expand ``all`` / ``completions`` / ``heads`` / ``references`` / ``anchors``; check the
    names. A group leaves out slow methods (:func:`left_out_methods`) unless they are named."""
    names = [methods] if isinstance(methods, str) else list(methods)
    groups = _groups()
    out: list[str] = []
    known = list_methods()
    for n in names:
        if n not in known and _register_variant(n):
            known.append(n)
        for x in groups.get(n, [n]):
            if x not in known:
                raise ValueError(
                    f"unknown benchmark method {x!r}; known: {', '.join(known)} "
                    f"(or the groups {', '.join(groups)})"
                )
            if x not in out:
                out.append(x)
    return out


def left_out_methods(methods: Sequence[str] | str) -> dict[str, str]:
    """The slow methods a group of ``methods`` would hold but leaves out (they are not named
    on their own), each with why it is slow: what to tell the user before a run starts."""
    names = [methods] if isinstance(methods, str) else list(methods)
    slow = _slow_methods()
    full = _groups(keep_slow=True)
    held = {m for n in names for m in full.get(n, [])}
    return {m: why for m, why in slow.items() if m in held and m not in names}


def benchmark_config(**overrides: Any) -> Any:
    """The deep methods' training config used by the harness (see docs/DEFAULTS.md).

    The library defaults (``TrainConfig()``) except: no progress bars. ``overrides`` are
    dotted keys, e.g. ``benchmark_config(**{"train.epochs": 20})``.
    """
    from moe_retriever.training.config import TrainConfig

    cfg = TrainConfig()
    cfg.runtime.progress_bar = False
    for k, v in overrides.items():
        cfg.set(k, v)
    return cfg


# ---------------------------------------------------------------------------- the loop
@dataclass
class BenchmarkResult:
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    paths: dict[str, Path]

    @property
    def summary(self) -> Any:
        return summarize(self.rows)


def _digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(
            np.ascontiguousarray(np.asarray(a)).tobytes() if not isinstance(a, str) else a.encode()
        )
    return h.hexdigest()[:16]


def _draw_mask(data: MultimodalData, rate: float, seed: int) -> tuple[MultimodalData, dict]:
    """The data with a fraction ``rate`` of the observed entries hidden (MCAR, seeded)."""
    if rate > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masked, report = simulate_missing(data, rate=rate, seed=seed)
        return masked, report.to_dict()
    return data, {"requested_rate": 0.0, "achieved_rate": 0.0}


def _split_info(split: Split, masked: MultimodalData, mask_info: dict[str, Any]) -> dict[str, Any]:
    return {
        **mask_info,
        "split_digest": _digest("|".join(split.train), "|".join(split.val), "|".join(split.test)),
        "mask_digest": _digest(masked.observed),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "n_complete_train": int(masked.select_ids(split.train).observed.all(1).sum()),
    }


def prepare_run(
    data: MultimodalData, rate: float, seed: int, val_fraction: float, test_fraction: float
) -> tuple[Split, MultimodalData, dict[str, Any]]:
    """The split and the (masked) data of one (rate, seed), shared by all methods."""
    split = make_split(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    masked, mask_info = _draw_mask(data, rate, seed)
    return split, masked, _split_info(split, masked, mask_info)


@dataclass
class _Unit:
    """One (rate, seed[, fold]) run shared by every method."""

    key: str
    seed: int
    split_seed: int
    fold: int
    split: Split
    masked: MultimodalData
    info: dict[str, Any]


def _units(
    data: MultimodalData,
    rate: float,
    seed: int,
    cfg: Any,
    vary: str,
    split_seed: int,
    cv: int | None,
) -> list[_Unit]:
    """The runs of one (rate, seed): one holdout split, or the ``cv`` folds of one repeat."""
    vf, tf = cfg.data.val_fraction, cfg.data.test_fraction
    base = f"rate={rate:g}/seed={seed}"
    if cv:
        masked, mask_info = _draw_mask(data, rate, seed)
        folds = stratified_folds(data, cv, seed)
        out = []
        for f in range(cv):
            split = cv_split(data, folds, f, vf, seed)
            out.append(
                _Unit(
                    f"{base}/fold={f}",
                    seed,
                    seed,
                    f,
                    split,
                    masked,
                    {**_split_info(split, masked, mask_info), "fold": f},
                )
            )
        return out
    s_seed = split_seed if vary == "init" else seed
    fixed = layout_split(data)
    if fixed is not None:  # the data's own splits file (paper layouts): one split, every seed
        masked, mask_info = _draw_mask(data, rate, s_seed)
        info = {**_split_info(fixed, masked, mask_info), "split_source": "data"}
        return [_Unit(base, seed, s_seed, 0, fixed, masked, {**info, "split_seed": s_seed})]
    split, masked, info = prepare_run(data, rate, s_seed, vf, tf)
    return [_Unit(base, seed, s_seed, 0, split, masked, {**info, "split_seed": s_seed})]


VARY_MODES = ("split", "init")


def run_benchmark(
    data: MultimodalData,
    methods: Sequence[str] | str = "all",
    missing_rates: Sequence[float] = (0.0, 0.3, 0.5),
    seeds: Sequence[int] = (0, 1, 2),
    config: Any = None,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = print,
    title: str | None = None,
    command: str | None = None,
    threads: int | None = 1,
    *,
    vary: str = "split",
    split_seed: int = 0,
    cv: int | None = None,
    references: Sequence[str] | None = None,
    interval: str = "t",
    grid: GridOptions | None = None,
    tune: int | None = None,
    tune_metric: str | None = None,
    tune_fixed: Sequence[str] = (),
) -> BenchmarkResult:
    """Run ``methods`` x ``missing_rates`` x ``seeds`` on ``data``; write outputs to ``out``.

    ``config``: the deep methods' TrainConfig (default :func:`benchmark_config`); its
    ``data.val_fraction`` / ``data.test_fraction`` size the splits. Returns the raw rows and
    the metadata; with ``out`` also writes the files described in the module docstring.

    ``vary``: ``"split"`` (default) draws split and mask per seed; ``"init"`` holds them fixed
    (drawn with ``split_seed``) and varies only the model seed, so the spread is training
    instability alone. ``cv``: repeated stratified ``cv``-fold, each seed a repeat, each fold a
    run (units (seed, fold); masks per (rate, seed) on the whole data). ``references`` and
    ``interval`` (``"t"`` or ``"bootstrap"``) shape the paired comparisons of the reports
    (:func:`moe_retriever.benchmark.stats.compare_to_references`); under ``cv`` the t interval
    is the Nadeau-Bengio corrected one and the bootstrap is refused (folds share training data).

    ``threads``: CPU threads for torch and for the BLAS/OpenMP pools of numpy/scikit-learn
    while the benchmark runs (restored afterwards); ``None`` leaves them alone. The default 1
    is measured: on 2 shared cores a miniacc MoE-Retriever fit took 5.7 s with 1 thread and
    29-34 s with 2, and a HistGradientBoosting fit 0.18 s against 5.7 s (docs/DEFAULTS.md).
    They apply to the cells run in this process; parallel jobs divide the cores instead.

    ``grid``: where the (method, rate, seed) cells run (:class:`~.grid.GridOptions`: ``jobs``
    worker processes or ``backend="ray"``, ``resume`` from the cells stored under
    ``out/cells``, a ``progress`` bar); default: one after another in this process. The rows
    are the same whatever the backend (:mod:`moe_retriever.benchmark.grid`).

    ``tune``: N trials of :func:`moe_retriever.training.tuning.tune` for every deep method on
    each unit's training and validation parts (the same budget for each method; classical
    anchors keep their own validation selection). Each deep method ``M`` then appears twice:
    ``M`` (the config as given) and ``M+tuned`` (the best trial's model), paired over the same
    units; results.md gets a "tuned vs untuned" table of the paired differences.
    ``tune_metric``: the tuning objective on validation (default the config's
    ``train.monitor``); ``tune_fixed``: searched keys held at the config's value.
    """
    opts = _Options(
        vary,
        int(split_seed),
        cv,
        list(references) if references else None,
        interval,
        int(tune) if tune is not None else None,
        tune_metric,
        list(tune_fixed),
    )
    opts.check()
    if grid is not None:
        grid.check()
    args = (data, methods, missing_rates, seeds, config, out, log, title, command, opts, grid)
    if threads is None:
        return _run_benchmark(*args)
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads)):
            return _run_benchmark(*args)
    finally:
        torch.set_num_threads(previous)


@dataclass
class _Options:
    vary: str = "split"
    split_seed: int = 0
    cv: int | None = None
    references: list[str] | None = None
    interval: str = "t"
    tune: int | None = None
    tune_metric: str | None = None
    tune_fixed: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.tune is not None and self.tune < 1:
            raise ValueError(f"tune needs at least 1 trial, got {self.tune}")
        if self.vary not in VARY_MODES:
            raise ValueError(f"vary must be one of {', '.join(VARY_MODES)}; got {self.vary!r}")
        if self.interval not in ("t", "bootstrap"):
            raise ValueError(f"interval must be 't' or 'bootstrap'; got {self.interval!r}")
        if self.cv is not None:
            if int(self.cv) < 2:
                raise ValueError(f"cv needs at least 2 folds, got {self.cv}")
            if self.vary == "init":
                raise ValueError(
                    "cv and vary='init' exclude each other: k-fold varies the split by design; "
                    "use vary='init' with a single holdout split"
                )
            if self.interval == "bootstrap":
                raise ValueError(
                    "the bootstrap interval is not offered with cv: folds share training data, "
                    "so resampling them as independent units understates the spread; use the "
                    "t interval (Nadeau-Bengio corrected under cv)"
                )

    def mode_line(self, seeds: Sequence[int]) -> str:
        if self.cv:
            return (
                f"mode: repeated stratified {self.cv}-fold (`--cv {self.cv}`): each seed a "
                f"repeat with its own folds and mask, each fold a run (units = seed x fold, "
                f"{len(seeds) * int(self.cv)} per method and rate); the spread mixes split and "
                "initialisation"
            )
        if self.vary == "init":
            return (
                f"mode: initialisation only (`--vary init`): split and mask fixed, drawn with "
                f"split seed {self.split_seed}; only the model seed varies over {list(seeds)}, "
                "so the spread is training instability alone, not split variance"
            )
        return (
            "mode: split (`--vary split`): each seed draws its own split and mask and seeds "
            "the model, so the spread is split, mask and initialisation together"
        )


def _run_benchmark(
    data: MultimodalData,
    methods: Sequence[str] | str,
    missing_rates: Sequence[float],
    seeds: Sequence[int],
    config: Any,
    out: str | Path | None,
    log: Callable[[str], None] | None,
    title: str | None,
    command: str | None,
    opts: _Options,
    grid: GridOptions | None = None,
) -> BenchmarkResult:
    if data.y is None:
        raise ValueError(f"benchmark needs labelled data; {data.name!r} has no labels")
    cfg = config if config is not None else benchmark_config()
    names = resolve_methods(methods)
    left_out = left_out_methods(methods)
    tuned: dict[str, str] = {}  # M+tuned -> M
    tune_info: dict[str, Any] | None = None
    specs: dict[str, dict[str, Any]] = {}  # what a tuned cell's result depends on besides
    if opts.tune:  # its inputs: budget, objective and space (part of its fingerprint)
        from moe_retriever.training.tuning import describe_space, normalize_metric

        metric = normalize_metric(opts.tune_metric, cfg)
        names, tuned = _with_tuned(names, opts.tune, metric, opts.tune_fixed)
        tune_info = {
            "trials": opts.tune,
            "metric": metric,
            "methods": tuned,
            "fixed": list(opts.tune_fixed),
            "spaces": {
                t: describe_space(m, _method_config(m, cfg), opts.tune_fixed)
                for t, m in tuned.items()
            },
        }
        specs = {
            t: {"tune_trials": opts.tune, "tune_metric": metric, "tune_space": space}
            for t, space in tune_info["spaces"].items()
        }
    rates = [float(r) for r in missing_rates]
    for r in rates:
        if not 0.0 <= r < 1.0:
            raise ValueError(f"missing rates must be in [0, 1), got {r}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (they are the paired units), got {seeds}")
    kinds = {n: _METHODS[n].kind for n in names}
    for ref in opts.references or []:
        if ref != BEST_ANCHOR and ref not in names:
            raise ValueError(
                f"reference {ref!r} is not among the benchmarked methods ({', '.join(names)}) "
                f"and is not {BEST_ANCHOR!r}"
            )
    say = log or (lambda s: None)
    strict = bool(getattr(getattr(cfg, "data", None), "strict", False))
    imputed = [] if strict else missing_cells(data)  # every method's Preprocessor fills them
    for line in imputed:
        warnings.warn(line, DataWarning, stacklevel=2)
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "dataset": data.name,
        "command": command,
        "methods": names,
        "left_out": left_out,
        "imputed_cells": imputed,
        "kinds": kinds,
        "missing_rates": rates,
        "seeds": seeds,
        "vary": opts.vary,
        "split_seed": opts.split_seed if opts.vary == "init" and not opts.cv else None,
        "cv": int(opts.cv) if opts.cv else None,
        "interval": opts.interval,
        "references": opts.references,
        "mode": opts.mode_line(seeds),
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else cfg,
        "data": data.describe(),
        "masks": {},
        "selections": {},
        "routing": {},
        "failures": [],
    }
    if tune_info is not None:
        meta["tune"] = tune_info
    paths: dict[str, Path] = {}
    t_all = time.perf_counter()
    cells: list[Cell] = []
    for seed in seeds:
        for rate in rates:
            for unit in _units(data, rate, seed, cfg, opts.vary, opts.split_seed, opts.cv):
                key = unit.key
                meta["masks"][key] = unit.info
                train, val, test = apply_split(unit.masked, unit.split)
                test_full = data.select_ids(unit.split.test)
                inputs = RunInputs(
                    train=train,
                    val=val,
                    test=test,
                    test_full=test_full,
                    hidden_test=test_full.observed & ~test.observed,
                    seed=seed,
                    rate=rate,
                    config=cfg,
                    split_seed=unit.split_seed,
                    fold=unit.fold,
                )
                for name in names:
                    cell = Cell(len(cells), name, kinds[name], key, data.name, inputs)
                    cell.spec = dict(specs.get(name, {}))
                    cells.append(cell)
    # the cells run in process, on a process pool or on Ray (grid.py); their outcomes are
    # merged in the canonical order above, whatever order they finish in
    outcomes: dict[int, CellOutcome] = {}
    left_in_unit = {c.key: 0 for c in cells}
    for c in cells:
        left_in_unit[c.key] += 1

    def done(cell: Cell, outcome: CellOutcome) -> None:
        nonlocal rows, paths
        outcomes[cell.index] = outcome
        left_in_unit[cell.key] -= 1
        rows = _merge(cells, outcomes, meta)
        meta["wall_seconds"] = time.perf_counter() - t_all
        if out is not None and left_in_unit[cell.key] == 0:  # rewritten per finished unit
            paths = _write(out, rows, meta, names, rates, title)

    cell_dir = Path(out) / "cells" if out is not None else None
    run_cells(cells, grid or GridOptions(), cell_dir, done, say)
    meta["wall_seconds"] = time.perf_counter() - t_all
    if out is not None:
        paths = _write(out, rows, meta, names, rates, title)
    return BenchmarkResult(rows, meta, paths)


def _with_tuned(
    names: list[str], trials: int, metric: str, fixed: Sequence[str] = ()
) -> tuple[list[str], dict[str, str]]:
    """``names`` with ``M+tuned`` after every deep method ``M`` (a preset), its runner
    registered; and the map ``M+tuned -> M``."""
    from moe_retriever.presets import list_presets

    presets = set(list_presets())
    out: list[str] = []
    tuned: dict[str, str] = {}
    for name in names:
        out.append(name)
        if name in presets:  # every deep method: completion and head presets alike
            tname = name + TUNED_SUFFIX
            kind = _METHODS[name].kind
            register_method(tname, kind, _tuned_runner(name, trials, metric, list(fixed)))
            _DERIVED.add(tname)
            tuned[tname] = name
            out.append(tname)
    return out, tuned


def _merge(
    cells: Sequence[Cell], outcomes: dict[int, CellOutcome], meta: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows of the finished cells in canonical order; their failures, routing and selection
    entries put into ``meta`` in that order too."""
    rows: list[dict[str, Any]] = []
    meta["failures"], meta["routing"], meta["selections"] = [], {}, {}
    for cell in cells:
        o = outcomes.get(cell.index)
        if o is None:
            continue
        rows += o.rows
        meta["failures"] += o.failures
        if o.routing is not None:
            meta["routing"][f"{cell.name} {cell.key}"] = o.routing  # per method and unit
        if o.info is not None:
            meta["selections"].setdefault(cell.name, {})[cell.key] = o.info
    return rows


def _test_train_ratio(meta: dict[str, Any]) -> float | None:
    """Mean n_test / n_train over the runs (the Nadeau-Bengio correction's ratio)."""
    ratios = [m["n_test"] / m["n_train"] for m in meta["masks"].values() if m.get("n_train")]
    return float(np.mean(ratios)) if ratios else None


def _tuned_comparisons(
    rows: list[dict[str, Any]], meta: dict[str, Any], interval: str, ratio: float | None
) -> list[Any]:
    """Each ``M+tuned`` against its ``M``, paired over the units, per rate and metric."""
    out = []
    for tname, base in meta["tune"]["methods"].items():
        pair = [r for r in rows if r["method"] in (tname, base)]
        out += [
            c
            for c in compare_to_references(
                pair,
                meta["kinds"],
                [base],
                metrics=COMPARISON_METRICS,
                interval=interval,
                test_train_ratio=ratio,
            )
            if c.method == tname
        ]
    return out


def _write(
    out: str | Path,
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    names: list[str],
    rates: list[float],
    title: str | None,
) -> dict[str, Path]:
    from moe_retriever.completion.routing import routing_markdown

    out = Path(out)
    unit = "seed x fold" if meta.get("cv") else "seed"
    notes = [
        meta["mode"],
        f"dataset `{meta['dataset']}`; seeds {meta['seeds']}; mean ± std over {unit}s "
        "(sample std); rate 0 = natural missingness only, other rates = MCAR on top "
        "(same split and mask for every method at a given rate and " + unit + ")",
        f"wall time so far: {meta.get('wall_seconds', 0.0):.0f} s",
    ]
    if meta.get("command"):
        notes.insert(0, f"command: `{meta['command']}`")
    if meta["failures"]:
        notes.append(
            "FAILED runs: "
            + "; ".join(
                f"{f['method']} rate {f['missing_rate']:g} seed {f['seed']}"
                + (f" fold {f['fold']}" if meta.get("cv") else "")
                + f": {f['error']}"
                for f in meta["failures"]
            )
        )
    interval = "corrected-t" if meta.get("cv") else meta.get("interval", "t")
    ratio = _test_train_ratio(meta) if meta.get("cv") else None
    # the headline metrics and every class's recall (which classes a difference comes from)
    recall_metrics = [
        m for m in dict.fromkeys(r["metric"] for r in rows) if m.startswith("recall/")
    ]
    every = compare_to_references(
        rows,
        meta["kinds"],
        meta.get("references"),
        metrics=[*COMPARISON_METRICS, *recall_metrics],
        interval=interval,
        test_train_ratio=ratio,
    )
    comparisons = [c for c in every if c.metric in COMPARISON_METRICS]
    recall_comparisons = [c for c in every if c.metric not in COMPARISON_METRICS]
    meta["comparisons"] = [c.to_dict() for c in comparisons]
    meta["test_train_ratio"] = ratio
    paired_md = comparisons_markdown(comparisons, names, rates, unit, ratio)
    if meta.get("tune"):
        tuned = _tuned_comparisons(rows, meta, interval, ratio)
        meta["tuned_comparisons"] = [c.to_dict() for c in tuned]
        paired_md = tuned_markdown(tuned, meta["tune"], rates, unit) + "\n" + paired_md
    paths = write_results(
        out,
        rows,
        meta,
        title or f"Benchmark on {meta['dataset']}",
        names,
        rates,
        notes,
        preface=paired_md,
    )
    summary = summarize(rows)
    forests = forest_plots(comparisons, out / "plots")
    extra = [
        "## Forest plots of the paired differences\n\n"
        + "".join(f"![{p.stem}](plots/{p.name})\n" for p in forests)
        if forests
        else "",
        per_class_markdown(summary, recall_comparisons, names, rates),
        routing_markdown(meta["routing"]),
    ]
    with open(paths["md"], "a") as fh:
        fh.writelines("\n" + text for text in extra if text)
    plot_all(summary, out / "plots", [*TABLE_METRICS[:-2], "router_entropy"], names)
    paths["plots"] = out / "plots"
    return paths
