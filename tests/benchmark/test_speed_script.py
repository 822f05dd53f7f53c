"""benchmarks/retrieval_speed.py: the GPU path skips cleanly without CUDA; mixed precision runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "retrieval_speed.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retrieval_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the skip path is moot")
def test_cuda_without_a_gpu_is_skipped_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "gpu.json"
    report = _module().main(["--device", "cuda", "--precision", "bf16-mixed", "--out", str(out)])
    assert report == {} and not out.exists()
    assert "no CUDA device here, skipped" in capsys.readouterr().out


def test_a_tiny_mixed_precision_run_reports_every_ratio(tmp_path) -> None:
    out = tmp_path / "cpu.json"
    args = ["--n", "120", "--steps", "1", "--loop-every", "1", "--batch", "4", "--threads", "1"]
    _module().main([*args, "--precision", "bf16-mixed", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["config"]["precision"] == "bf16-mixed"
    for mode in ("pooled", "tokens"):
        r = report["routing"][mode]
        assert r["speedup_vs_loop"] > 0 and r["overhead_vs_zero_fill"] > 0
        assert r["flops_vs_zero_fill"] > 1  # the retrieval step does more arithmetic
        assert set(r["samples_per_s"]) == {"batched", "per_sample_loop", "zero_fill"}
