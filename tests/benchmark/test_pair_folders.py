"""benchmarks/pair_folders.py: methods of several benchmark folders paired on shared splits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from moe_retriever.benchmark.stats import COMPARISON_METRICS as METRICS
from moe_retriever.benchmark.stats import compare_to_references

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("pair_folders", BENCH / "pair_folders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(method: str, shift: float, seeds: range = range(5)) -> list[dict[str, Any]]:
    return [
        {
            "dataset": "toy",
            "method": method,
            "missing_rate": 0.0,
            "seed": s,
            "fold": 0,
            "metric": metric,
            "value": 0.6 + 0.02 * ((3 * s) % 5) + shift + 0.001 * (s % 2),
        }
        for s in seeds
        for metric in METRICS
    ]


def _folder(
    tmp: Path, name: str, rows: list[dict[str, Any]], split: str = "s", cells: bool = False
) -> Path:
    folder = tmp / name
    folder.mkdir()
    if cells:  # an interrupted run: finished cells only
        (folder / "cells").mkdir()
        (folder / "cells" / "a.json").write_text(json.dumps({"rows": rows}))
        return folder
    masks = {
        f"rate=0/seed={s}": {"split_digest": f"{split}{s}", "mask_digest": f"m{s}"}
        for s in range(5)
    }
    (folder / "results.json").write_text(json.dumps({"rows": rows, "masks": masks}))
    return folder


def test_pairs_a_method_of_one_folder_with_the_reference_of_another(tmp_path: Path) -> None:
    pf = _script()
    a = _folder(tmp_path, "a", _rows("ref", 0.0) + _rows("zero", -0.01))
    b = _folder(tmp_path, "b", _rows("ablation", 0.03))
    rows, notes = pf.pool([a, b])
    assert notes == []
    comps = compare_to_references(rows, {}, references=["ref"])
    (c,) = [x for x in comps if x.method == "ablation" and x.metric == "macro_f1"]
    assert c.n == 5 and c.mean == pytest.approx(0.03)
    out = tmp_path / "out.json"
    pf.main([str(a), str(b), "--reference", "ref", "--json", str(out)])
    doc = json.loads(out.read_text())
    (d,) = [x for x in doc["comparisons"] if x["method"] == "ablation" and x["metric"] == "auroc"]
    assert d["diff"] == pytest.approx(0.03) and d["n"] == 5


def test_refuses_folders_with_other_splits(tmp_path: Path) -> None:
    pf = _script()
    a = _folder(tmp_path, "a", _rows("ref", 0.0))
    b = _folder(tmp_path, "b", _rows("ablation", 0.03), split="other")
    with pytest.raises(SystemExit, match="do not share their splits"):
        pf.pool([a, b])


def test_first_folder_wins_and_cells_only_folders_are_flagged(tmp_path: Path) -> None:
    pf = _script()
    a = _folder(tmp_path, "a", _rows("ref", 0.0))
    b = _folder(tmp_path, "b", _rows("ref", 0.5) + _rows("ablation", 0.03, range(3)), cells=True)
    rows, notes = pf.pool([a, b])
    ref = [r["value"] for r in rows if r["method"] == "ref" and r["metric"] == "accuracy"]
    assert max(ref) < 1.0  # folder a's rows, not b's shifted copy
    assert any("splits not checked" in n for n in notes)
    assert any("ref's units already in" in n for n in notes)
    comps = compare_to_references(rows, {}, references=["ref"])
    (c,) = [x for x in comps if x.method == "ablation" and x.metric == "accuracy"]
    assert c.n == 3  # only the units both have


def test_refuses_two_data_sets(tmp_path: Path) -> None:
    pf = _script()
    a = _folder(tmp_path, "a", _rows("ref", 0.0))
    other = [{**r, "dataset": "else"} for r in _rows("ablation", 0.0)]
    b = _folder(tmp_path, "b", other)
    with pytest.raises(SystemExit, match="different data sets"):
        pf.pool([a, b])


def test_a_method_run_in_two_stages_is_pooled(tmp_path: Path) -> None:
    pf = _script()
    a = _folder(tmp_path, "a", _rows("ref", 0.0) + _rows("ablation", 0.03, range(3)))
    b = _folder(tmp_path, "b", _rows("ablation", 0.03, range(3, 5)))
    rows, _ = pf.pool([a, b])
    comps = compare_to_references(rows, {}, references=["ref"])
    (c,) = [x for x in comps if x.method == "ablation" and x.metric == "auroc"]
    assert c.n == 5 and c.mean == pytest.approx(0.03)


def test_per_class_metrics_can_be_paired(tmp_path: Path) -> None:
    pf = _script()
    rows = _rows("ref", 0.0) + _rows("ablation", 0.02)
    per_class = [{**r, "metric": "recall/event"} for r in rows if r["metric"] == "accuracy"]
    a = _folder(tmp_path, "a", rows + per_class)
    out = tmp_path / "out.json"
    pf.main([str(a), "--reference", "ref", "--metrics", "recall/event", "--json", str(out)])
    (d,) = json.loads(out.read_text())["comparisons"]
    assert d["metric"] == "recall/event" and d["diff"] == pytest.approx(0.02) and d["n"] == 5
