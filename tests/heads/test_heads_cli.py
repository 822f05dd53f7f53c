"""The seed heads through the command line: ``benchmark --methods i2m2 i2moe`` end to end,
``train`` writing I2MoE's interaction-weight report per seed, ``predict --explain``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from moe_retriever.cli import main
from moe_retriever.data.readers import write_folder
from moe_retriever.datasets import load_dataset

TINY_SET = [
    "train.epochs=2",
    "train.warmup_epochs=1",
    "model.n_tokens=2",
    "model.dim=8",
    "model.head_hidden=8",
    "model.n_heads=2",
]


def test_benchmark_runs_the_seed_heads(i2moe_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, folder = i2moe_run
    out = tmp_path / "bench"
    args = ["benchmark", str(folder), "--methods", "i2m2", "i2moe", "--missing-rates", "0", "0.5"]
    args += ["--seeds", "0", "--out", str(out), "--quiet", "--set", *TINY_SET]
    assert main(args) == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["methods"] == ["i2m2", "i2moe"] and not payload["failures"]
    frame = pd.read_csv(out / "results.csv")
    f1 = frame[frame["metric"] == "macro_f1"]
    assert set(zip(f1["method"], f1["missing_rate"], strict=True)) == {
        (m, r) for m in ("i2m2", "i2moe") for r in (0.0, 0.5)
    }
    assert f1["value"].notna().all()
    # the heads are of kind "head", not "completion" (issue 23)
    assert set(frame["kind"]) == {"head"} and set(payload["kinds"].values()) == {"head"}
    # the heads' summaries travel with the results (interaction weights, expert shares)
    for method, first in (("i2moe", "U_m0"), ("i2m2", "m0")):
        runs = payload["selections"][method]
        assert len(runs) == 2
        for info in runs.values():
            assert info["head"]["experts"][0] == first


def _write_config(path: Path, method: str) -> None:
    """A tiny one-seed training config for ``method``."""
    cfg = {
        "method": method,
        "seeds": [0],
        "model": {"n_tokens": 2, "dim": 8, "n_heads": 2, "head_hidden": 8},
        "train": {"epochs": 2, "warmup_epochs": 1, "batch_size": 16, "patience": None},
        "runtime": {"accelerator": "cpu", "progress_bar": False, "threads": 1},
    }
    path.write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def i2moe_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("i2moe")
    data = load_dataset(
        "synthetic",
        n_samples=90,
        n_modalities=3,
        dims=[8, 6, 10],
        n_classes=3,
        missing_rate=0.3,
        seed=0,
    )
    folder = tmp / "data"
    write_folder(data, folder)
    _write_config(tmp / "cfg.yaml", "i2moe")
    run = tmp / "run"
    assert main(["train", str(folder), "--config", str(tmp / "cfg.yaml"), "--out", str(run)]) == 0
    return run, folder


def test_train_writes_the_interaction_report_per_seed(i2moe_run: tuple[Path, Path]) -> None:
    run, _ = i2moe_run
    seed_dir = run / "seed_0"
    for name in ("interaction_weights.png", "interaction_weights.json", "interaction_weights.md"):
        assert (seed_dir / name).is_file(), name
    summary = json.loads((seed_dir / "interaction_weights.json").read_text())
    test_ids = json.loads((run / "split.json").read_text())["test"]
    assert summary["overall"]["n"] == len(test_ids)
    assert summary["experts"] == ["U_m0", "U_m1", "U_m2", "S", "R"]


def test_predict_explain_writes_per_sample_weights(
    i2moe_run: tuple[Path, Path], tmp_path: Path, capsys: Any
) -> None:
    run, folder = i2moe_run
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(folder), "--out", str(pred), "--explain"]) == 0
    assert "pred.explain.csv" in capsys.readouterr().out
    preds = pd.read_csv(pred)
    explain = pd.read_csv(tmp_path / "pred.explain.csv")
    assert list(explain["id"]) == list(preds["id"])
    cols = ["weights_U_m0", "weights_U_m1", "weights_U_m2", "weights_S", "weights_R"]
    assert cols == [c for c in explain.columns if c.startswith("weights_")]
    np.testing.assert_allclose(explain[cols].sum(axis=1), 1.0, atol=1e-5)
    assert any(c.startswith("expert_logits_S_") for c in explain.columns)


def test_predict_explain_without_interpretation_is_refused(
    i2moe_run: tuple[Path, Path], tmp_path: Path, capsys: Any
) -> None:
    """A flag that cannot be honoured is refused before any work: exit 2, one line, nothing
    written (not the predictions either)."""
    _, folder = i2moe_run
    _write_config(tmp_path / "cfg.yaml", "zero")
    run = tmp_path / "run"
    assert (
        main(["train", str(folder), "--config", str(tmp_path / "cfg.yaml"), "--out", str(run)]) == 0
    )
    capsys.readouterr()
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(folder), "--out", str(pred), "--explain"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moe-retriever: error: --explain") and err.count("\n") == 0
    assert "has no per-sample interpretation" in err
    assert not pred.exists() and not (tmp_path / "pred.explain.csv").exists()


def test_demo_output_says_where_the_i2moe_plot_is(tmp_path: Path, capsys: Any) -> None:
    """``demo --methods i2moe``: the printed output names the interaction-weight plot."""
    from moe_retriever.training.config import apply_overrides
    from moe_retriever.training.demo import demo_config, run_demo

    cfg = apply_overrides(demo_config(), [*TINY_SET, "runtime.progress_bar=false"])
    run_demo(tmp_path / "demo", seeds=[0], methods=["i2moe"], config=cfg)
    out = capsys.readouterr().out
    listed = out.split("interpretation plots", 1)[1].splitlines()[1:]
    plot = next(line.strip() for line in listed if line.strip().endswith("interaction_weights.png"))
    assert Path(plot).is_file()
