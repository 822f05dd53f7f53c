"""Running the cells of a benchmark grid: in process, on a local process pool, or on Ray.

A cell is one (method, rate, seed[, fold]) fit. Cells are independent: each gets its own
:class:`~moe_retriever.benchmark.methods.RunInputs` (split, masked data, seed, config), and a
fit depends on nothing else (every fit seeds its own RNGs), so the backend changes where a cell
runs, never its result. The harness builds the cells in its canonical order (seed, rate, unit,
method) and merges the outcomes back in that order, so results.csv is the same file whatever
the backend and whatever order the cells finished in (apart from the ``fit_seconds`` rows,
which are wall times).

Backends (``GridOptions``):

* ``jobs=1``, ``backend="local"``: cells run one after another in this process (the harness's
  historical behaviour);
* ``jobs=N > 1``, ``backend="local"``: N worker processes (joblib's loky executor: spawned
  processes, functions shipped with cloudpickle, so methods registered at run time work too);
  each job runs with ``max(1, cores // N)`` torch and BLAS threads, so N jobs do not
  oversubscribe the machine;
* ``backend="ray"``: each cell is a Ray task (``ray.init(address=ray_address)``; a local Ray
  when no address is given). At most ``jobs`` cells are in flight (with ``jobs=1``: as many as
  the cluster has CPUs), each with ``max(1, cores // in_flight)`` threads. Ray is an optional
  extra: ``pip install 'moe-retriever[ray]'``.

Interruption: a local pool that is stopped (``kill PID``, Ctrl-C, a cell that raised) kills its
workers before the error goes on, so no orphaned process keeps fitting; the cells finished
before are stored and ``resume`` continues from them.

Resume: with an output folder, every finished cell is written at once to
``<out>/cells/<cell>.json`` (its rows, routing, selection info and log line) together with a
fingerprint of what it was fitted on (method, unit, seeds, the config and a digest of its
train / validation / test arrays). ``resume=True`` loads the cells whose fingerprint matches
and fits only the others, so an interrupted grid continues where it stopped. A failed cell is
not stored: a resumed grid tries it again.

Progress: ``progress=True`` shows a rich progress bar with the cells done, running and left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moe_retriever.benchmark.methods import method_runner, register_method, run_one

BACKENDS = ("local", "ray")
_CELL_FORMAT = 1


@dataclass
class Cell:
    """One fit of the grid: ``name`` on the unit ``key`` with ``inputs`` (a RunInputs)."""

    index: int  # position in the harness's canonical order
    name: str
    kind: str
    key: str
    dataset: str
    inputs: Any
    fingerprint: str = ""
    #: settings of this cell's method beyond the config (e.g. a tuning budget); part of the
    #: fingerprint when given
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        """File name of the stored cell: unit key and method, filesystem-safe."""
        return re.sub(r"[^0-9A-Za-z_.=+-]", "__", f"{self.key}/{self.name}") + ".json"


@dataclass
class CellOutcome:
    """What a cell produced: rows (none if it failed) and its pieces of the run metadata."""

    rows: list[dict[str, Any]]
    failures: list[dict[str, Any]] = field(default_factory=list)
    routing: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    log: list[str] = field(default_factory=list)
    resumed: bool = False

    def to_json(self, fingerprint: str) -> dict[str, Any]:
        return {
            "format": _CELL_FORMAT,
            "fingerprint": fingerprint,
            "rows": self.rows,
            "routing": self.routing,
            "info": self.info,
            "log": self.log,
        }


@dataclass
class GridOptions:
    """How to run the cells (see the module docstring)."""

    jobs: int = 1
    backend: str = "local"
    ray_address: str | None = None
    resume: bool = False
    progress: bool = False

    def check(self) -> None:
        if int(self.jobs) < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.ray_address is not None and self.backend != "ray":
            raise ValueError("ray_address applies to backend='ray' only")


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """CPU threads each of ``jobs`` parallel fits gets: the cores divided between them."""
    return max(1, int(cores or os.cpu_count() or 1) // max(1, int(jobs)))


# ---------------------------------------------------------------------------- fingerprints
def _config_dict(cfg: Any) -> Any:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else cfg


def fingerprint(cell: Cell) -> str:
    """A digest of everything a cell's result depends on: method, unit, seeds, config, the
    method's ``spec`` (a tuning budget...) and the arrays of its train / validation / test
    parts (so a stored cell from another grid, data set or configuration is never taken for
    this one)."""
    inp = cell.inputs
    h = hashlib.sha1()
    head = {
        "method": cell.name,
        "key": cell.key,
        "dataset": cell.dataset,
        "seed": inp.seed,
        "rate": inp.rate,
        "split_seed": inp.split_seed,
        "fold": inp.fold,
        "config": _config_dict(inp.config),
    }
    if cell.spec:  # only when given: the fingerprints of plain cells stay what they were
        head["spec"] = cell.spec
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for part in (inp.train, inp.val, inp.test, inp.test_full):
        h.update(np.asarray(part.ids, dtype=str).tobytes())
        h.update(np.ascontiguousarray(part.observed).tobytes())
        if part.y is not None:
            h.update(np.ascontiguousarray(part.y).tobytes())
        for m in part.modalities:
            h.update(np.ascontiguousarray(part.X[m]).tobytes())
    h.update(np.ascontiguousarray(inp.hidden_test).tobytes())
    return h.hexdigest()


def _load(path: Path, fp: str) -> CellOutcome | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("format") != _CELL_FORMAT or stored.get("fingerprint") != fp:
        return None
    return CellOutcome(
        rows=[{**r, "value": _nan(r["value"])} for r in stored["rows"]],
        routing=stored.get("routing"),
        info=stored.get("info"),
        log=list(stored.get("log") or []),
        resumed=True,
    )


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _save(path: Path, outcome: CellOutcome, fp: str) -> None:
    from moe_retriever.benchmark.report import _json_default, _nan_to_none

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    payload = _nan_to_none(outcome.to_json(fp))
    tmp.write_text(json.dumps(payload, default=_json_default, allow_nan=False))
    tmp.replace(path)  # atomic: an interrupted write never leaves a half cell


# ---------------------------------------------------------------------------- one cell
def run_cell(cell: Cell, runner: Any = None, threads: int | None = None) -> CellOutcome:
    """Fit one cell here (in this process): :func:`~.methods.run_one` with a fresh metadata
    dict, whose failure / routing / selection entries come back in the outcome. ``runner``:
    the method's runner, registered first (a worker process may not know a method registered
    at run time in the parent); ``threads``: torch and BLAS threads for the fit."""
    if runner is not None:
        register_method(cell.name, cell.kind, runner)
    meta: dict[str, Any] = {"failures": [], "routing": {}, "selections": {}}
    log: list[str] = []
    if threads is None:
        rows = run_one(cell.name, cell.kind, cell.inputs, cell.key, cell.dataset, meta, log.append)
    else:
        import torch
        from threadpoolctl import threadpool_limits

        previous = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        try:
            with threadpool_limits(limits=int(threads)):
                rows = run_one(
                    cell.name, cell.kind, cell.inputs, cell.key, cell.dataset, meta, log.append
                )
        finally:
            torch.set_num_threads(previous)
    return CellOutcome(
        rows=rows,
        failures=meta["failures"],
        routing=meta["routing"].get(f"{cell.name} {cell.key}"),
        info=meta["selections"].get(cell.name, {}).get(cell.key),
        log=log,
    )


# ---------------------------------------------------------------------------- executors
class _Progress:
    """Cells done, running and left, as a rich progress bar (or nothing)."""

    def __init__(self, total: int, enabled: bool, console: Any = None) -> None:
        self.total, self.done, self.running = total, 0, 0
        self._bar: Any = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("cells"),
                BarColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self._task = self._bar.add_task("grid", total=total, counts=self.counts())
            self._bar.start()

    def counts(self) -> str:
        left = self.total - self.done - self.running
        return f"{self.done} done · {self.running} running · {left} left"

    def update(self, done: int = 0, running: int = 0) -> None:
        self.done += done
        self.running += running
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, counts=self.counts())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _windowed(
    todo: Sequence[Cell],
    submit: Callable[[Cell], Any],
    wait_one: Callable[[list[Any]], tuple[Any, CellOutcome]],
    window: int,
) -> Iterator[tuple[Cell, CellOutcome | None]]:
    """Keep at most ``window`` cells in flight; yield ``(cell, None)`` when a cell starts and
    ``(cell, outcome)`` when it finishes."""
    pending = list(todo)
    flight: dict[Any, Cell] = {}
    while pending or flight:
        while pending and len(flight) < window:
            cell = pending.pop(0)
            flight[submit(cell)] = cell
            yield cell, None
        handle, outcome = wait_one(list(flight))
        yield flight.pop(handle), outcome


def _local_pool(
    todo: Sequence[Cell], jobs: int, runners: dict[str, Any]
) -> Generator[tuple[Cell, CellOutcome | None], None, None]:
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=jobs, timeout=60)
    threads = threads_per_job(jobs)

    def wait_one(handles: list[Any]) -> tuple[Any, CellOutcome]:
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        fut = next(iter(done))
        return fut, fut.result()

    def submit(cell: Cell) -> Any:
        return executor.submit(run_cell, cell, runners.get(cell.name), threads)

    try:
        with _terminate_raises():
            yield from _windowed(todo, submit, wait_one, jobs)
    except BaseException:
        # interrupted (SIGTERM, Ctrl-C, a cell that raised, a consumer that stopped): the
        # workers would otherwise go on fitting the cells in flight, orphaned
        executor.shutdown(wait=False, kill_workers=True)
        raise


@contextmanager
def _terminate_raises() -> Iterator[None]:
    """While inside, SIGTERM (``kill PID``) raises SystemExit in this process instead of
    ending it at once, so the pool's teardown runs; the previous handler is restored after.
    Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ray(
    todo: Sequence[Cell], jobs: int, address: str | None, runners: dict[str, Any]
) -> Generator[tuple[Cell, CellOutcome | None], None, None]:
    try:
        import ray
    except ImportError as exc:
        raise ValueError(
            "backend 'ray' needs Ray: pip install 'moe-retriever[ray]' (or pip install ray)"
        ) from exc
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        started = True
    try:
        window = jobs if jobs > 1 else max(1, int(ray.cluster_resources().get("CPU", 1)))
        threads = threads_per_job(window)
        remote = ray.remote(num_cpus=1)(run_cell)

        def submit(cell: Cell) -> Any:
            return remote.remote(cell, runners.get(cell.name), threads)

        def wait_one(handles: list[Any]) -> tuple[Any, CellOutcome]:
            ready, _ = ray.wait(handles, num_returns=1)
            return ready[0], ray.get(ready[0])

        yield from _windowed(todo, submit, wait_one, window)
    finally:
        if started:
            ray.shutdown()


def run_cells(
    cells: Sequence[Cell],
    options: GridOptions,
    cell_dir: Path | None,
    on_done: Callable[[Cell, CellOutcome], None],
    say: Callable[[str], None],
) -> None:
    """Run (or, with ``options.resume``, load) every cell; ``on_done(cell, outcome)`` is called
    in this process as each one finishes, in completion order. Finished cells are stored under
    ``cell_dir`` (when given) before ``on_done`` sees them."""
    options.check()
    if options.resume and cell_dir is None:
        raise ValueError("resume needs an output folder (the finished cells are stored there)")
    for cell in cells:
        cell.fingerprint = fingerprint(cell)
    todo: list[Cell] = []
    progress = _Progress(len(cells), options.progress)
    try:
        for cell in cells:
            loaded = None
            if options.resume and cell_dir is not None:
                loaded = _load(cell_dir / cell.file_name, cell.fingerprint)
            if loaded is None:
                todo.append(cell)
                continue
            progress.update(done=1)
            on_done(cell, loaded)
        if options.resume and cell_dir is not None:
            say(f"resume: {len(cells) - len(todo)} finished cell(s) loaded, {len(todo)} to fit")

        def finish(cell: Cell, outcome: CellOutcome) -> None:
            if cell_dir is not None and not outcome.failures:
                _save(cell_dir / cell.file_name, outcome, cell.fingerprint)
            for line in outcome.log:
                say(line)
            progress.update(done=1, running=-1)
            on_done(cell, outcome)

        if options.backend == "local" and options.jobs == 1:
            for cell in todo:
                progress.update(running=1)
                finish(cell, run_cell(cell))
            return
        runners = {c.name: method_runner(c.name) for c in todo}
        events = (
            _local_pool(todo, options.jobs, runners)
            if options.backend == "local"
            else _ray(todo, options.jobs, options.ray_address, runners)
        )
        t0 = time.perf_counter()
        try:
            for cell, outcome in events:
                if outcome is None:
                    progress.update(running=1)
                else:
                    finish(cell, outcome)
        finally:
            events.close()  # interrupted here (not inside the pool): its teardown runs now
        say(f"grid: {len(todo)} cell(s) in {time.perf_counter() - t0:.0f} s")
    finally:
        progress.close()
