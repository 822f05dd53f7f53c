"""A local pool that is killed (SIGTERM to the parent) takes its workers with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moe_retriever.benchmark.grid import _terminate_raises

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from moe_retriever.benchmark.grid import Cell, _local_pool

    folder = sys.argv[1]

    def sleepy(inputs):
        open(os.path.join(folder, str(os.getpid())), "w").close()
        time.sleep(300)

    cells = [Cell(i, "sleepy", "completion", f"unit{i}", "none", None) for i in range(2)]
    for _ in _local_pool(cells, 2, {"sleepy": sleepy}):
        pass
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # a zombie is dead too (waiting for its parent to reap it)
        try:
            return stat.read_text().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False
    return True


def _wait(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_to_the_parent_kills_the_pool_workers(tmp_path):
    script = tmp_path / "grid.py"
    script.write_text(SCRIPT)
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(pids)])
    try:
        assert _wait(lambda: len(list(pids.iterdir())) == 2, 120), "workers never started"
        workers = [int(p.name) for p in pids.iterdir()]
        assert all(_alive(pid) for pid in workers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert _wait(lambda: not any(_alive(pid) for pid in workers), 30), (
            f"workers {workers} outlived their parent"
        )
    finally:
        proc.kill()
        for p in pids.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p.name), signal.SIGKILL)


def test_terminate_raises_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with _terminate_raises():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(SystemExit) as exc:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode boundary
        assert exc.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
