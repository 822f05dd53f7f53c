"""The stop-gap statistics script behind docs/SYNTHETIC_RETRIEVAL.md, on a hand-computed case."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "paired_differences.py"


def _module():
    spec = importlib.util.spec_from_file_location("paired_differences", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_interval_by_hand() -> None:
    # diffs 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302653, half width 4.302653 / sqrt(3)
    mean, lo, hi = _module().paired_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert lo == pytest.approx(2.0 - 2.484138, abs=1e-5)
    assert hi == pytest.approx(2.0 + 2.484138, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        _module().paired_interval([1.0])


def test_reads_and_merges_long_format_results(tmp_path, capsys, monkeypatch) -> None:
    header = "dataset,method,kind,missing_rate,seed,metric,value\n"
    rows_a = [("a", 0, 0.70), ("z", 0, 0.60), ("a", 1, 0.80), ("z", 1, 0.75)]
    rows_b = [("a", 2, 0.65), ("z", 2, 0.60)]
    for name, rows in (("r1.csv", rows_a), ("r2.csv", rows_b)):
        body = "".join(f"d,{m},completion,0.0,{s},macro_f1,{v}\n" for m, s, v in rows)
        (tmp_path / name).write_text(header + body + "d,a,completion,0.0,0,accuracy,0.1\n")
    files = [str(tmp_path / "r1.csv"), str(tmp_path / "r2.csv")]
    monkeypatch.setattr("sys.argv", ["x", *files, "--method", "a", "--against", "z"])
    _module().main()
    out = capsys.readouterr().out
    # diffs 10, 5, 5 points: mean 6.7, sd 2.887, half width 4.302653 * 2.887 / sqrt(3) = 7.17
    assert "a - z: +6.7 [-0.5, +13.8]  (n=3" in out
    assert "a: 71.7 +- 7.6 (n=3" in out
