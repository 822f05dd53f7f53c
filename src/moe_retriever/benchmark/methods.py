"""The benchmark's methods as the grid runs them: what a fit gets and returns, the registry of
runners by name, and one method fitted on one unit and scored into rows.

* :class:`RunInputs` — one (method, rate, seed[, fold]) fit's split parts, hidden test entries,
  seeds and config (the same object for every method of a unit); :class:`MethodResult` — its
  test probabilities, fidelity, routing and selection info;
* :func:`register_method` — a name -> (kind, runner) registry; the harness fills it with the
  built-in methods (:mod:`.harness`: deep presets, anchors, tuned and variant methods), tests
  with spies;
* :func:`run_one` — one method on one unit: its rows of test metrics, or its failure recorded.

The harness builds the cells and the grid (:mod:`.grid`) runs them with :func:`run_one`, in
this process or in worker processes; both depend on this module, neither on the other.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moe_retriever.data.core import MultimodalData


@dataclass
class RunInputs:
    """What one (method, rate, seed) run gets: the same object for every method."""

    train: MultimodalData
    val: MultimodalData
    test: MultimodalData  # masked: what the method predicts from
    test_full: MultimodalData  # the test samples before the simulator hid entries
    hidden_test: np.ndarray  # (N_test, M) bool: entries hidden by the simulator
    seed: int  # the model seed (initialisation, batch order, supporting-group draws)
    rate: float
    config: Any  # TrainConfig for the deep methods
    split_seed: int | None = None  # the seed that drew split and mask (= seed unless vary=init)
    fold: int = 0  # the test fold under repeated k-fold, 0 for a single holdout split


@dataclass
class MethodResult:
    proba: np.ndarray
    fidelity: dict[str, float] | None = None
    routing: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[RunInputs], MethodResult]


@dataclass
class _MethodSpec:
    name: str
    kind: str  # completion | head | reference | anchor
    runner: Runner


_METHODS: dict[str, _MethodSpec] = {}


def register_method(name: str, kind: str, runner: Runner) -> None:
    """Add a method to the harness (tests use this to spy on what methods receive)."""
    _METHODS[name] = _MethodSpec(name, kind, runner)


def method_runner(name: str) -> Runner:
    """The runner registered under ``name``."""
    return _METHODS[name].runner


def run_one(
    name: str,
    kind: str,
    inputs: RunInputs,
    key: str,
    dataset: str,
    meta: dict[str, Any],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One method on one unit: its rows (or none, with the failure recorded in ``meta``)."""
    from moe_retriever.training.metrics import (
        classification_metrics,
        flat_per_class,
        per_class_metrics,
    )

    t0 = time.perf_counter()
    try:
        res = _METHODS[name].runner(inputs)
    except Exception as exc:  # recorded, the benchmark goes on
        meta["failures"].append(
            {
                "method": name,
                "missing_rate": inputs.rate,
                "seed": inputs.seed,
                "split_seed": inputs.split_seed,
                "fold": inputs.fold,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=6),
            }
        )
        say(f"[{key}] {name}: FAILED {type(exc).__name__}: {exc}")
        return []
    seconds = time.perf_counter() - t0
    y, names = inputs.test.y, inputs.test.class_names
    assert y is not None  # run_benchmark refuses unlabelled data
    metrics: dict[str, float] = dict(classification_metrics(y, res.proba, names))
    # recall/<class>, f1/<class>, support/<class>: which classes a difference comes from
    metrics.update(flat_per_class(per_class_metrics(y, res.proba, names)))
    metrics["fit_seconds"] = seconds
    if res.fidelity:
        metrics.update(res.fidelity)
    info = dict(res.info or {})
    if res.routing and "per_target" in res.routing:  # a router's usage (moe-retriever & co)
        metrics["router_entropy"] = float(res.routing.get("entropy", np.nan))
        meta["routing"][f"{name} {key}"] = res.routing  # one entry per method and unit
    elif res.routing:  # another completion's own summary (mfm...)
        info["completion"] = res.routing
    if info:
        meta["selections"].setdefault(name, {})[key] = info
    rows = [
        {
            "dataset": dataset,
            "method": name,
            "kind": kind,
            "missing_rate": inputs.rate,
            "seed": inputs.seed,
            "metric": metric,
            "value": float(value),
            "split_seed": inputs.split_seed,
            "fold": inputs.fold,
        }
        for metric, value in metrics.items()
    ]
    say(
        f"[{key}] {name}: macro_f1={metrics['macro_f1']:.3f} "
        f"acc={metrics['accuracy']:.3f} auroc={metrics['auroc']:.3f}"
        + (
            f" fid_cos={metrics['fidelity_cosine']:.3f}"
            f" spec={metrics.get('fidelity_specificity', np.nan):.3f}"
            if "fidelity_cosine" in metrics
            else ""
        )
        + f" ({seconds:.1f} s)"
    )
    return rows
