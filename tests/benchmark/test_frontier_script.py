"""benchmarks/frontier.py and retrieval_speed.py's cost flags: the library defaults are read,
overrides reach the model, every ratio is reported."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from moe_retriever.architecture import ModelConfig

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_flags_default_to_the_library_and_override(tmp_path) -> None:
    out = tmp_path / "speed.json"
    args = ["--n", "120", "--steps", "1", "--loop-every", "1", "--batch", "4", "--threads", "1"]
    _module("retrieval_speed").main([*args, "--routing", "pooled", "--out", str(out)])
    cfg = json.loads(out.read_text())["config"]
    lib = ModelConfig()
    assert cfg["model"]["n_tokens"] == lib.n_tokens and cfg["model"]["dim"] == lib.dim
    assert cfg["retriever"]["k"] == 3 and cfg["retriever"]["support_select"] == "similar"
    small = ["--n-tokens", "2", "--dim", "8", "--support-k", "2", "--top-k", "1"]
    _module("retrieval_speed").main([*args, "--routing", "pooled", *small, "--out", str(out)])
    cfg = json.loads(out.read_text())["config"]
    assert (cfg["model"]["n_tokens"], cfg["model"]["dim"]) == (2, 8)
    assert (cfg["retriever"]["k"], cfg["retriever"]["top_k"]) == (2, 1)


def test_frontier_reports_ratios_sections_and_work(tmp_path) -> None:
    out = tmp_path / "frontier.json"
    frontier = _module("frontier")
    only = ["--only", "P4-D64", "floor-P4-D64-k1-rd0-C1-S0-top1"]
    frontier.main(
        ["--n", "150", "--rounds", "1", "--batch", "8", "--threads", "1", "--out", str(out), *only]
    )
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"P4-D64", "floor-P4-D64-k1-rd0-C1-S0-top1"}
    for r in rows.values():
        assert r["time_ratio"] > 0 and r["flop_ratio"] > 1
        assert r["flop_ratio_with_selection"] >= r["flop_ratio"]
        assert r["work"]["pairs"] > 0 and r["gflop_forward_parts"]["retrieval"]["encoders"] > 0
    floor = rows["floor-P4-D64-k1-rd0-C1-S0-top1"]
    assert floor["setting"]["completion"]["k"] == 1
    # one supporting member per pair: the floor encodes at most one row per pair
    assert floor["work"]["support_rows_encoded"] <= floor["work"]["pairs"]
