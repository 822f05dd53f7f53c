"""Hyper-parameter tuning with Optuna: a seeded TPE search, pruned per epoch, on validation only.

    >>> from moe_retriever.training.tuning import tune
    >>> result = tune(train, val, "moe-retriever", base_config, n_trials=20, seed=0)
    >>> result.config.to_yaml("tuned.yaml")       # moe-retriever train DATA --config tuned.yaml
    >>> result.trials                             # one row per trial (pandas.DataFrame)

:func:`tune` gets the training and the validation part and nothing else: every trial fits a
:class:`~moe_retriever.training.estimator.MoERetrieverClassifier` on ``train``, selects its
epoch on ``val`` (as any fit does) and is scored by ``metric`` on ``val``; a test split never
enters (the command line and the benchmark split first and hand over train and validation
only). The best trial's config is the base config with the trial's values set.

Search (:data:`SEARCH_SPACE`, :data:`PART_SPACES`; ``describe_space(method, cfg)`` lists what a
method gets), kept small on purpose:

* every deep method: ``optim.lr`` log-uniform in [1e-4, 3e-3]; ``optim.weight_decay`` in
  {0, 1e-5, 1e-4, 1e-3}; ``model.dropout`` in {0, 0.1, 0.2, 0.3}; ``model.dim`` in {64, 128}
  (the values that are multiples of ``model.n_heads``); ``model.n_tokens`` in {4, 8, 16};
  ``train.class_weights`` in {none, balanced};
* options of the method's parts, only where the part takes them (the benchmark's
  :func:`~moe_retriever.presets.applicable_options` decides): the ``moe-retriever`` and
  ``generate-retrieve`` completions' ``k`` (supporting samples) in {3, 5, 8}; ``knn``'s ``k`` in
  {3, 5, 10}; the ``i2moe`` head's ``rw_dropout`` in {0.3, 0.5} and ``lambda_int`` log-uniform
  in [1e-3, 1e-1]. Reproductions with fixed settings (``official-average``) and parts without
  an obvious knob get the common space only.

Not searched: ``train.epochs`` and ``train.patience`` (the base config's; every fit already
picks its best epoch on validation, so the schedule length mostly costs time), the batch size,
widths of encoders and heads, and the runtime.

Sampler and pruner: ``optuna.samplers.TPESampler(seed=seed)`` (its first
``min(10, max(2, n_trials // 3))`` trials are random; then TPE) and
``optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=<warm-up epochs>)``: after
every epoch past the warm-up (whose retriever is off, so its scores are not comparable) a
trial whose validation ``metric`` is worse than the median of earlier trials at that epoch is
stopped. The per-epoch values reach the pruner through optuna-integration's
``PyTorchLightningPruningCallback``, which imports the ``lightning`` package this project uses
(checked with optuna-integration 5.0; an install whose callback is not a ``lightning`` callback
is refused with the upgrade command), passed to the estimator's ``fit(callbacks=...)``.

Reproducibility: with ``n_trials`` (no ``timeout_minutes``) and a deterministic runtime the
same call gives the same trials (same parameters, values and pruning). A time budget stops
after however many trials fitted in time, so it is not reproducible in the number of trials.

Objective: ``metric`` (default: the base config's ``train.monitor``; one of
:data:`~moe_retriever.training.config.MONITORS`, ``val_`` prefix optional) of the fitted
model's class probabilities on the validation part: ``val_loss`` is the mean cross-entropy
(minimised; unweighted), the others (accuracy, balanced accuracy, macro-F1, AUROC) are
maximised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.validation import drop_empty
from moe_retriever.training.config import MONITORS, TrainConfig

__all__ = [
    "PART_SPACES",
    "SEARCH_SPACE",
    "Param",
    "TuneResult",
    "describe_space",
    "method_space",
    "normalize_metric",
    "tune",
]


# ---------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class Param:
    """One searched config key: ``choices`` (categorical) or a ``low``..``high`` range
    (``log``: sampled on a log scale)."""

    key: str  # dotted TrainConfig key, e.g. "optim.lr" or "completion.k"
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        scale = "log-uniform" if self.log else "uniform"
        return f"{scale} [{self.low:g}, {self.high:g}]"


#: searched for every deep method
SEARCH_SPACE: tuple[Param, ...] = (
    Param("optim.lr", low=1e-4, high=3e-3, log=True),
    Param("optim.weight_decay", choices=(0.0, 1e-5, 1e-4, 1e-3)),
    Param("model.dropout", choices=(0.0, 0.1, 0.2, 0.3)),
    Param("model.dim", choices=(64, 128)),
    Param("model.n_tokens", choices=(4, 8, 16)),
    Param("train.class_weights", choices=("none", "balanced")),
)

#: searched where the method's part is this one: (section, part name) -> options
PART_SPACES: dict[tuple[str, str], tuple[Param, ...]] = {
    ("completion", "moe-retriever"): (Param("completion.k", choices=(3, 5, 8)),),
    ("completion", "generate-retrieve"): (Param("completion.k", choices=(3, 5, 8)),),
    ("completion", "knn"): (Param("completion.k", choices=(3, 5, 10)),),
    ("head", "i2moe"): (
        Param("head.rw_dropout", choices=(0.3, 0.5)),
        Param("head.lambda_int", low=1e-3, high=1e-1, log=True),
    ),
}


def method_space(method: str, base: TrainConfig, fixed: Sequence[str] = ()) -> list[Param]:
    """The parameters searched for ``method`` on top of ``base``: the common space (``model.dim``
    restricted to multiples of ``model.n_heads``) and its parts' options that the parts take;
    keys in ``fixed`` keep the base config's value (an unknown key raises ``ValueError``)."""
    from moe_retriever.completion.base import COMPLETIONS
    from moe_retriever.heads.base import HEADS
    from moe_retriever.presets import resolve_parts

    out: list[Param] = []
    for p in SEARCH_SPACE:
        if p.key == "model.dim":
            dims = tuple(d for d in p.choices or () if d % base.model.n_heads == 0)
            if not dims:
                continue
            p = Param(p.key, choices=dims)
        out.append(p)
    parts = resolve_parts(method, base.completion, base.head)
    for section, part, registry in (
        ("completion", parts.completion, COMPLETIONS),
        ("head", parts.head, HEADS),
    ):
        # the benchmark's rule (presets.applicable_options): a method gets only the options
        # its parts accept; here for the resolved part (a config may name another one)
        taken = set(registry.option_names(part))
        out += [p for p in PART_SPACES.get((section, part), ()) if p.key.split(".", 1)[1] in taken]
    searched = {p.key for p in SEARCH_SPACE} | {p.key for ps in PART_SPACES.values() for p in ps}
    unknown = sorted(set(fixed) - searched)
    if unknown:
        raise ValueError(
            f"cannot fix {', '.join(unknown)}: not in the search space; searched keys: "
            f"{', '.join(sorted(searched))}"
        )
    return [p for p in out if p.key not in set(fixed)]


def describe_space(
    method: str, base: TrainConfig | None = None, fixed: Sequence[str] = ()
) -> dict[str, str]:
    """``{key: "{choices}" | "log-uniform [low, high]"}`` searched for ``method``."""
    return {p.key: p.describe() for p in method_space(method, base or TrainConfig(), fixed)}


# ---------------------------------------------------------------------------- the metric
def normalize_metric(metric: str | None, base: TrainConfig) -> str:
    """``metric`` as a monitor name (``macro_f1`` -> ``val_macro_f1``); default the base
    config's ``train.monitor``."""
    name = metric or base.train.monitor
    if not name.startswith("val_"):
        name = "val_" + name
    if name not in MONITORS:
        short = ", ".join(m.removeprefix("val_") for m in MONITORS)
        raise ValueError(f"tuning metric {metric!r} unknown; choose one of {short}")
    return name


def direction_of(metric: str) -> str:
    return "minimize" if metric == "val_loss" else "maximize"


def validation_score(est: Any, val: MultimodalData, metric: str) -> float:
    """``metric`` of a fitted estimator on the validation part (its samples with an observed
    modality, as in the fit)."""
    from moe_retriever.training.metrics import classification_metrics

    val, _ = drop_empty(val)
    proba = np.asarray(est.predict_proba(val), dtype=np.float64)
    y = np.asarray(val.y, dtype=np.int64)
    if metric == "val_loss":
        if y.size == 0:
            return math.nan
        return float(-np.mean(np.log(np.clip(proba[np.arange(y.size), y], 1e-12, 1.0))))
    return float(classification_metrics(y, proba, val.class_names)[metric.removeprefix("val_")])


# ---------------------------------------------------------------------------- the search
@dataclass
class TuneResult:
    """What :func:`tune` found.

    ``config``: the base config with the best trial's values (the base's seeds and progress
    setting kept); ``params``: those values; ``value``: the best validation score;
    ``trials``: a DataFrame, one row per trial (``number``, ``state``, ``value`` (complete
    trials), ``last_epoch`` and ``last_reported`` (the last per-epoch value the pruner saw),
    ``seconds``, one column per searched key); ``estimator``: the
    best trial's fitted model (on ``train``, epoch selected on ``val``, seed ``seed``).
    """

    method: str
    metric: str
    direction: str
    config: TrainConfig
    params: dict[str, Any]
    value: float
    trials: Any
    n_trials: int
    seed: int
    space: dict[str, str] = field(default_factory=dict)
    estimator: Any = None

    def summary(self) -> dict[str, Any]:
        """Plain data for YAML comments and results.json."""
        states = list(self.trials["state"]) if len(self.trials) else []
        return {
            "method": self.method,
            "metric": self.metric,
            "direction": self.direction,
            "value": self.value,
            "params": dict(self.params),
            "n_trials": self.n_trials,
            "n_complete": states.count("COMPLETE"),
            "n_pruned": states.count("PRUNED"),
            "n_failed": states.count("FAIL"),
            "seed": self.seed,
        }

    def to_yaml(self, path: Any = None) -> str:
        """The tuned config as YAML, headed by comments saying how it was found; ``train
        --config`` and ``benchmark --config`` read it as any config."""
        s = self.summary()
        params = ", ".join(f"{k}={v!r}" for k, v in s["params"].items())
        head = [
            f"# tuned by `moe-retriever tune` for method {self.method}: best {self.metric} "
            f"{self.value:.4f} on the validation split ({self.direction})",
            f"# {s['n_trials']} trials ({s['n_complete']} complete, {s['n_pruned']} pruned, "
            f"{s['n_failed']} failed), TPE seed {self.seed}",
            f"# best: {params}",
        ]
        text = "\n".join(head) + "\n" + self.config.to_yaml()
        if path is not None:
            from pathlib import Path

            Path(path).write_text(text)
        return text


def _apply(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    cfg = base.copy()
    for key, value in params.items():
        cfg.set(key, value)
    cfg.validate()
    return cfg


def tune(
    train: MultimodalData,
    val: MultimodalData,
    method: str | None = None,
    base_config: TrainConfig | None = None,
    *,
    n_trials: int | None = None,
    timeout_minutes: float | None = None,
    seed: int | None = None,
    metric: str | None = None,
    space: Sequence[Param] | None = None,
    fixed: Sequence[str] = (),
    pruning: bool = True,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search ``method``'s hyper-parameters on ``train`` / ``val`` (see the module docstring).

    ``n_trials`` and/or ``timeout_minutes`` bound the search (at least one); ``seed`` seeds the
    TPE sampler and every trial's model (default: the base config's first seed); ``metric``:
    the validation objective (default ``train.monitor``); ``space``: the searched parameters
    (default :func:`method_space`); ``fixed``: searched keys held at the base config's value
    (``["model.dim", "model.n_tokens"]`` keeps the model size); ``pruning``: stop unpromising
    trials after an epoch.
    """
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    from moe_retriever.training.estimator import MoERetrieverClassifier

    _check_callback(PyTorchLightningPruningCallback)
    if n_trials is None and timeout_minutes is None:
        raise ValueError("give a tuning budget: n_trials and/or timeout_minutes")
    if n_trials is not None and n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if timeout_minutes is not None and timeout_minutes <= 0:
        raise ValueError(f"timeout_minutes must be > 0, got {timeout_minutes}")
    if val.n_samples == 0:
        raise ValueError("tuning needs a non-empty validation part (data.val_fraction)")
    base = (base_config or TrainConfig()).copy()
    method = method or base.method
    base.method = method
    base.validate()
    base.parts()
    if base.runtime.devices > 1:
        raise ValueError("tuning runs each trial on one device: set runtime.devices=1")
    monitor = normalize_metric(metric, base)
    direction = direction_of(monitor)
    seed = int(base.seeds[0] if seed is None else seed)
    if space is not None:
        params_space = [p for p in space if p.key not in set(fixed)]
    else:
        params_space = method_space(method, base, fixed)
    trial_base = base.copy()
    trial_base.runtime.progress_bar = False
    say = log or (lambda s: None)

    startup = 10 if n_trials is None else min(10, max(2, n_trials // 3))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    pruner: Any = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=base.effective_warmup())
        if pruning
        else optuna.pruners.NopPruner()
    )
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=optuna.study.StudyDirection.MINIMIZE
        if direction == "minimize"
        else optuna.study.StudyDirection.MAXIMIZE,
        sampler=sampler,
        pruner=pruner,
    )
    best: dict[str, Any] = {}
    better = (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)

    def objective(trial: Any) -> float:
        t0 = time.perf_counter()
        params = {p.key: p.suggest(trial) for p in params_space}
        cfg = _apply(trial_base, params)
        cfg.seeds = [seed]
        est = MoERetrieverClassifier(method=method, config=cfg, seed=seed)
        hooks = [PyTorchLightningPruningCallback(trial, monitor=monitor)] if pruning else []
        try:
            est.fit(train, val, callbacks=hooks)
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            say(f"trial {trial.number}: pruned at epoch {_last_step(trial)} ({_text(params)})")
            raise
        value = validation_score(est, val, monitor)
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        say(f"trial {trial.number}: {monitor}={value:.4f} ({_text(params)})")
        if math.isfinite(value) and ("value" not in best or better(value, best["value"])):
            best.update(value=value, estimator=est, params=params)
        return value

    timeout = None if timeout_minutes is None else float(timeout_minutes) * 60.0
    try:
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout, catch=(RuntimeError, ValueError)
        )
    finally:
        optuna.logging.set_verbosity(previous_verbosity)
    table = trials_table(study, params_space)
    if "value" not in best:
        fails = [t.system_attrs.get("fail_reason") for t in study.trials]
        reason = next((f for f in fails if f), "every trial was pruned or scored NaN")
        raise ValueError(f"tuning {method}: no trial completed ({str(reason).splitlines()[0]})")
    config = _apply(base, best["params"])
    return TuneResult(
        method=method,
        metric=monitor,
        direction=direction,
        config=config,
        params=dict(best["params"]),
        value=float(best["value"]),
        trials=table,
        n_trials=len(study.trials),
        seed=seed,
        space={p.key: p.describe() for p in params_space},
        estimator=best["estimator"],
    )


def _check_callback(cls: type) -> None:
    """The pruning callback must be a callback of the ``lightning`` package the trainer is
    (old optuna-integration releases subclassed ``pytorch_lightning.Callback``)."""
    import lightning as L

    if not issubclass(cls, L.Callback):
        raise ImportError(
            "optuna-integration's PyTorchLightningPruningCallback is not a lightning.pytorch "
            "callback in this install: pip install -U 'optuna-integration>=4.0'"
        )


def _last_step(trial: Any) -> int | None:
    steps = trial.storage.get_trial(trial._trial_id).intermediate_values
    return max(steps) if steps else None


def _text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
        for k, v in params.items()
    )


def trials_table(study: Any, space: Sequence[Param]) -> Any:
    """One row per trial: number, state, value, last epoch reported, seconds, parameters."""
    import pandas as pd

    rows = []
    for t in study.trials:
        steps = t.intermediate_values
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            # a pruned trial's value is its last epoch's; only a finished fit has a score
            "value": t.value if t.state.name == "COMPLETE" else math.nan,
            "last_epoch": max(steps) if steps else None,
            "last_reported": steps[max(steps)] if steps else math.nan,
            "seconds": t.user_attrs.get("seconds", math.nan),
        }
        row.update({p.key: t.params.get(p.key) for p in space})
        rows.append(row)
    columns = ["number", "state", "value", "last_epoch", "last_reported", "seconds"]
    columns += [p.key for p in space]
    return pd.DataFrame(rows, columns=columns)
