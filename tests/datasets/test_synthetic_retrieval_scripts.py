"""benchmarks/paired_differences.py (pairs results across runs), on hand-computed cases."""

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


def _write(tmp_path: Path, name: str, rows: list[tuple[str, int, float]]) -> str:
    header = "dataset,method,kind,missing_rate,seed,metric,value\n"
    body = "".join(f"d,{m},completion,0.0,{s},macro_f1,{v}\n" for m, s, v in rows)
    (tmp_path / name).write_text(header + body + "d,a,completion,0.0,0,accuracy,0.1\n")
    return str(tmp_path / name)


def test_labelled_runs_pair_one_method_under_two_configurations(tmp_path, capsys) -> None:
    new = _write(tmp_path, "new.csv", [("a", 0, 0.70), ("a", 1, 0.80), ("a", 2, 0.75)])
    old = _write(tmp_path, "old.csv", [("a", 0, 0.60), ("a", 1, 0.70), ("a", 2, 0.70)])
    _module().main([new, f"old={old}", "--method", "a", "--against", "a@old"])
    out = capsys.readouterr().out
    # diffs 10, 10, 5 points: mean 8.3, sd 2.887, half width 4.302653 * 2.887 / sqrt(3) = 7.17
    assert "a - a@old: +8.3 [+1.2, +15.5]* (n=3" in out
    assert "a@old: 66.7" in out


def test_unlabelled_runs_that_disagree_are_refused(tmp_path) -> None:
    one = _write(tmp_path, "one.csv", [("a", 0, 0.70)])
    two = _write(tmp_path, "two.csv", [("a", 0, 0.60)])
    with pytest.raises(ValueError, match="label the runs"):
        _module().main([one, two, "--method", "a", "--against", "z"])


def test_reads_and_merges_long_format_results(tmp_path, capsys, monkeypatch) -> None:
    # unlabelled runs merge (the same command run for two halves of the seeds)
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
