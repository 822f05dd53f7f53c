"""``benchmark --tune N``: every deep method tuned and untuned side by side, anchors as they
are, tuned cells fingerprinted by their budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from moe_retriever.benchmark.grid import GridOptions
from moe_retriever.benchmark.harness import list_methods, resolve_methods, run_benchmark
from moe_retriever.cli import main
from moe_retriever.data.readers import write_folder
from moe_retriever.training import tuning
from moe_retriever.training.config import TrainConfig

TINY_SET = [
    "train.epochs=2",
    "train.warmup_epochs=1",
    "model.n_tokens=2",
    "model.dim=8",
    "model.head_hidden=8",
    "model.n_heads=2",
    "runtime.threads=1",
]


@pytest.fixture
def small_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the tiny model tiny: the default space searches dim in {64, 128}."""
    monkeypatch.setattr(
        tuning,
        "SEARCH_SPACE",
        (
            tuning.Param("optim.lr", low=1e-3, high=1e-2, log=True),
            tuning.Param("train.class_weights", choices=("none", "balanced")),
        ),
    )


def test_benchmark_tune_gives_tuned_and_untuned_rows(
    tmp_path: Path, tiny: Any, small_space: None, capsys: Any
) -> None:
    folder = write_folder(tiny, tmp_path / "data")
    out = tmp_path / "bench"
    args = ["benchmark", str(folder), "--methods", "zero", "lr-late-fusion"]
    args += ["--missing-rates", "0", "--seeds", "0", "1", "--out", str(out), "--quiet"]
    args += ["--tune", "2", "--tune-metric", "macro_f1", "--tune-fix", "train.class_weights"]
    args += ["--set", *TINY_SET]
    assert main(args) == 0
    df = pd.read_csv(out / "results.csv")
    assert list(dict.fromkeys(df["method"])) == ["zero", "zero+tuned", "lr-late-fusion"]
    f1 = df[df["metric"] == "macro_f1"]
    assert sorted(f1[f1["method"] == "zero+tuned"]["seed"]) == [0, 1]
    payload = json.loads((out / "results.json").read_text())
    assert payload["tune"]["trials"] == 2 and payload["tune"]["metric"] == "val_macro_f1"
    assert payload["tune"]["methods"] == {"zero+tuned": "zero"}  # the anchor is not tuned
    assert payload["tune"]["fixed"] == ["train.class_weights"]
    assert payload["kinds"]["zero+tuned"] == "completion"
    assert "--tune 2 --tune-metric macro_f1" in payload["command"]
    assert not payload["failures"]
    for unit in ("rate=0/seed=0", "rate=0/seed=1"):
        tuned = payload["selections"]["zero+tuned"][unit]["tuned"]
        assert tuned["n_trials"] == 2 and set(tuned["params"]) == {"optim.lr"}  # one held
    pairs = [c for c in payload["tuned_comparisons"] if c["metric"] == "macro_f1"]
    assert [(c["method"], c["reference"], c["n"]) for c in pairs] == [("zero+tuned", "zero", 2)]
    md = (out / "results.md").read_text()
    assert "## Tuned vs untuned" in md and "| zero+tuned (vs zero) |" in md
    assert "2 trials of `moe-retriever tune`" in md
    assert "## Tuned vs untuned" in capsys.readouterr().out
    # the tuned variants belong to that run only: `all` does not list them afterwards
    assert not [m for m in list_methods() if m.endswith("+tuned")]
    with pytest.raises(ValueError, match="unknown benchmark method"):
        resolve_methods(["zero+tuned"])


def test_tuned_cells_resume_only_under_the_same_budget(
    tmp_path: Path, tiny: Any, small_space: None
) -> None:
    cfg = TrainConfig()
    cfg.runtime.progress_bar = False
    for item in TINY_SET:
        key, value = item.split("=")
        cfg.set(key, int(value))
    data = tiny
    kw: dict[str, Any] = {"methods": ["zero"], "missing_rates": [0.0], "seeds": [0]}
    out = tmp_path / "bench"
    first = run_benchmark(data, config=cfg, out=out, tune=2, log=None, **kw)
    lines: list[str] = []
    again = run_benchmark(
        data, config=cfg, out=out, tune=2, log=lines.append, grid=GridOptions(resume=True), **kw
    )
    assert "resume: 2 finished cell(s) loaded, 0 to fit" in lines
    assert [r["value"] for r in again.rows if r["metric"] != "fit_seconds"] == [
        r["value"] for r in first.rows if r["metric"] != "fit_seconds"
    ]
    lines.clear()  # another budget: the tuned cell is fitted again, the untuned one loaded
    run_benchmark(
        data, config=cfg, out=out, tune=3, log=lines.append, grid=GridOptions(resume=True), **kw
    )
    assert "resume: 1 finished cell(s) loaded, 1 to fit" in lines


def test_benchmark_tune_errors_are_one_line(tmp_path: Path, capsys: Any) -> None:
    base = ["benchmark", "synthetic", "--methods", "zero", "--out", str(tmp_path)]
    for extra, needle in (
        (["--tune", "0"], "--tune needs N >= 1"),
        (["--tune-metric", "macro_f1"], "--tune only"),
        (["--tune", "2", "--tune-fix", "model.fusion_layers"], "not in the search space"),
        (["--tune", "2", "--tune-metric", "f2"], "unknown"),
    ):
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, (extra, err)
