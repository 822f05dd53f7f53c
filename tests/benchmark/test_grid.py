"""Benchmark grids: the same results.csv whatever the backend; an interrupted grid resumes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moe_retriever.benchmark import harness
from moe_retriever.benchmark.grid import GridOptions, _Progress, threads_per_job
from moe_retriever.benchmark.harness import (
    MethodResult,
    RunInputs,
    benchmark_config,
    register_method,
    run_benchmark,
)
from moe_retriever.data.core import MultimodalData

TINY = {
    "train.epochs": 2,
    "train.warmup_epochs": 1,
    "train.batch_size": 16,
    "model.n_tokens": 2,
    "model.dim": 8,
    "model.head_hidden": 8,
    "model.encoder_hidden": 8,
    "model.n_heads": 2,
}


def _grid(data: MultimodalData, out: Path, **grid: object) -> pd.DataFrame:
    """The 2 x 2 grid (zero, mean) x seeds (0, 1) at rate 0.3; results.csv without the wall
    times (``fit_seconds`` rows differ between any two runs)."""
    run_benchmark(
        data,
        ["zero", "mean"],
        [0.3],
        [0, 1],
        benchmark_config(**TINY),
        out,
        log=None,
        grid=GridOptions(**grid),  # type: ignore[arg-type]
    )
    raw = pd.read_csv(out / "results.csv")
    return raw[raw.metric != "fit_seconds"].reset_index(drop=True)


@pytest.fixture
def reference(tiny: MultimodalData, tmp_path: Path) -> pd.DataFrame:
    return _grid(tiny, tmp_path / "jobs1", jobs=1)


def test_two_jobs_give_the_same_results_csv(tiny, reference, tmp_path):
    got = _grid(tiny, tmp_path / "jobs2", jobs=2)
    assert reference.groupby(["method", "seed"]).ngroups == 4  # the 2 x 2 grid
    assert set(reference.metric) >= {"accuracy", "macro_f1", "fidelity_cosine"}
    pd.testing.assert_frame_equal(got, reference)
    assert len(list((tmp_path / "jobs2" / "cells").glob("*.json"))) == 4


def test_ray_gives_the_same_results_csv(tiny, tmp_path):
    pytest.importorskip("ray")
    reference = _grid(tiny, tmp_path / "jobs1", jobs=1)
    got = _grid(tiny, tmp_path / "ray", backend="ray", jobs=2)
    pd.testing.assert_frame_equal(got, reference)


@pytest.fixture
def counting():
    """A deterministic fake method that counts its fits and can interrupt the grid."""
    state = {"fits": 0, "stop_at": None}

    def run(inputs: RunInputs) -> MethodResult:
        state["fits"] += 1
        if state["stop_at"] is not None and state["fits"] == state["stop_at"]:
            raise KeyboardInterrupt  # what Ctrl-C does mid-grid: not a recorded failure
        prior = np.bincount(inputs.train.y, minlength=3) / inputs.train.n_samples
        proba = np.tile(prior, (inputs.test.n_samples, 1)) + 0.01 * inputs.seed
        return MethodResult(proba / proba.sum(1, keepdims=True))

    register_method("counting", "completion", run)
    yield state
    harness._METHODS.pop("counting", None)


def _run(tiny: MultimodalData, out: Path, resume: bool, rates=(0.0, 0.3)):
    return run_benchmark(
        tiny,
        ["counting", "lr-mean-impute"],
        list(rates),
        [0, 1],
        out=out,
        log=None,
        grid=GridOptions(resume=resume),
    )


def test_an_interrupted_grid_resumes_without_refitting_finished_cells(tiny, counting, tmp_path):
    full = _run(tiny, tmp_path / "full", resume=False)
    assert counting["fits"] == 4  # 2 seeds x 2 rates
    counting["fits"], counting["stop_at"] = 0, 3
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, tmp_path / "grid", resume=False)
    # 2 counting cells and the lr-mean-impute cells after them finished and were stored
    stored = sorted(p.name for p in (tmp_path / "grid" / "cells").glob("*.json"))
    assert len(stored) == 4 and sum("counting" in s for s in stored) == 2
    counting["fits"], counting["stop_at"] = 0, None
    res = _run(tiny, tmp_path / "grid", resume=True)
    assert counting["fits"] == 2  # only the 2 counting cells that had not finished
    assert not res.meta["failures"]

    def table(path: Path) -> pd.DataFrame:
        raw = pd.read_csv(path / "results.csv")
        return raw[raw.metric != "fit_seconds"].reset_index(drop=True)

    pd.testing.assert_frame_equal(table(tmp_path / "grid"), table(tmp_path / "full"))
    assert len(full.rows) == len(res.rows)
    # a second resume fits nothing; another grid in the same folder refits what differs
    counting["fits"] = 0
    _run(tiny, tmp_path / "grid", resume=True)
    assert counting["fits"] == 0
    _run(tiny, tmp_path / "grid", resume=True, rates=(0.0, 0.5))
    assert counting["fits"] == 2  # rate 0.5 cells are new; rate 0 ones are reused


def test_a_failed_cell_is_not_stored_and_is_retried_on_resume(tiny, tmp_path):
    calls = {"n": 0}

    def flaky(inputs: RunInputs) -> MethodResult:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return MethodResult(np.full((inputs.test.n_samples, 3), 1 / 3))

    register_method("flaky-grid", "completion", flaky)
    try:
        res = run_benchmark(tiny, ["flaky-grid"], [0.0], [0], out=tmp_path, log=None)
        assert len(res.meta["failures"]) == 1
        assert not list((tmp_path / "cells").glob("*.json"))
        res = run_benchmark(
            tiny, ["flaky-grid"], [0.0], [0], out=tmp_path, log=None, grid=GridOptions(resume=True)
        )
        assert calls["n"] == 2 and not res.meta["failures"]
    finally:
        harness._METHODS.pop("flaky-grid", None)


def test_progress_counts_and_options():
    p = _Progress(5, enabled=False)
    p.update(running=2)
    p.update(done=1, running=-1)
    assert p.counts() == "1 done · 1 running · 3 left"
    with pytest.raises(ValueError, match="jobs"):
        GridOptions(jobs=0).check()
    with pytest.raises(ValueError, match="backend"):
        GridOptions(backend="dask").check()
    with pytest.raises(ValueError, match="ray_address"):
        GridOptions(ray_address="ray://x:10001").check()
    assert threads_per_job(2, cores=2) == 1 and threads_per_job(3, cores=16) == 5
    assert threads_per_job(8, cores=2) == 1


def test_progress_bar_renders_done_running_left():
    from rich.console import Console

    buf = io.StringIO()
    p = _Progress(3, enabled=True, console=Console(file=buf, force_terminal=True, width=100))
    p.update(running=1)
    p.update(done=1, running=-1)
    p.close()
    assert "1 done · 0 running · 2 left" in buf.getvalue()
