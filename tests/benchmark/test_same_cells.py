"""benchmarks/same_cells.py: equal cells pass, a changed value or nothing in common fails."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _folder(tmp: Path, name: str, method: str, shift: float = 0.0, seconds: float = 1.0) -> Path:
    """results.csv rows in the benchmark's long format (no fold column, as older folders)."""
    rows = [
        {"dataset": "d", "method": method, "missing_rate": 0.5, "seed": s, "metric": m, "value": v}
        for s in range(3)
        for m, v in (("macro_f1", 0.6 + s / 100 + shift), ("auroc", 0.7), ("fit_seconds", seconds))
    ]
    folder = tmp / name
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def test_same_values_pass_and_timings_are_left_out(tmp_path: Path, bench_script) -> None:
    script = bench_script("same_cells")
    new = _folder(tmp_path, "new", "m", seconds=9.0)
    old = _folder(tmp_path, "old", "m[x=1]", seconds=1.0)
    args = [str(new), str(old), "--method", "m", "--old-method", "m[x=1]", "--rate", "0.5"]
    assert script.main(args) == 0
    res = script.compare(new, old, "m", "m[x=1]", 0.5)
    assert res["n_values"] == 6 and res["max_abs_diff"] == 0.0


def test_a_changed_value_or_nothing_in_common_fails(tmp_path: Path, capsys, bench_script) -> None:
    script = bench_script("same_cells")
    new = _folder(tmp_path, "new", "m", shift=1e-9)
    old = _folder(tmp_path, "old", "m")
    assert script.main([str(new), str(old), "--method", "m", "--rate", "0.5"]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
    ok = [str(new), str(old), "--method", "m", "--rate", "0.5", "--tolerance", "1e-6"]
    assert script.main(ok) == 0
    assert script.main([str(new), str(old), "--method", "m", "--rate", "0"]) == 1
    assert script.main([str(new), str(old), "--method", "other", "--rate", "0.5"]) == 1


def test_an_interrupted_run_is_read_from_its_cells_and_folds_are_kept_apart(
    tmp_path: Path, bench_script
) -> None:
    """NEW has no results table, only finished cells (as pair_folders.py reads them); OLD's
    second fold differs, so pairing on seed alone would have mixed the folds."""
    import json

    rows = [
        {
            "dataset": "d",
            "method": "m",
            "missing_rate": 0.5,
            "seed": 0,
            "fold": f,
            "metric": "macro_f1",
            "value": 0.6 + f / 10,
        }
        for f in (0, 1)
    ]
    new = tmp_path / "new" / "cells"
    new.mkdir(parents=True)
    (new / "rate=0.5__seed=0__m.json").write_text(json.dumps({"rows": rows}))
    old = tmp_path / "old"
    old.mkdir()
    pd.DataFrame(rows).to_csv(old / "results.csv", index=False)
    script = bench_script("same_cells")
    res = script.compare(tmp_path / "new", old, "m", None, 0.5)
    assert res["n_values"] == 2 and res["max_abs_diff"] == 0.0
    rows[1]["value"] += 0.01
    pd.DataFrame(rows).to_csv(old / "results.csv", index=False)
    assert script.main([str(tmp_path / "new"), str(old), "--method", "m", "--rate", "0.5"]) == 1
