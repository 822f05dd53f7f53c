"""The train / evaluate / predict / demo command line: end to end on tiny data, resume after a
real kill, DDP with 2 CPU processes, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from moe_retriever.cli import main
from moe_retriever.data.readers import write_folder
from moe_retriever.datasets import load_dataset
from moe_retriever.training.callbacks import FAULT_ENV
from moe_retriever.training.runs import read_run

TINY: dict[str, Any] = {
    "seeds": [0],
    "model": {"n_tokens": 4, "dim": 16, "n_heads": 2, "head_hidden": 16, "dropout": 0.1},
    "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "patience": None},
    "runtime": {"accelerator": "cpu", "progress_bar": False, "threads": 1},
}
METRICS = ["accuracy", "balanced_accuracy", "macro_f1", "auroc"]


def _tiny_data(n: int = 90) -> Any:
    return load_dataset(
        "synthetic",
        n_samples=n,
        n_modalities=3,
        dims=[8, 6, 10],
        n_classes=3,
        missing_rate=0.3,
        seed=0,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny"
    write_folder(_tiny_data(), path)
    return path


def _config(tmp: Path, name: str = "tiny.yaml", **sections: dict[str, Any]) -> Path:
    cfg = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "moe_retriever.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


# ------------------------------------------------------------------------------ end to end
def test_train_evaluate_predict(folder: Path, tmp_path: Path, capsys: Any) -> None:
    cfg = _config(tmp_path)
    run = tmp_path / "run"
    assert (
        main(["train", str(folder), "--config", str(cfg), "--seeds", "0", "1", "--out", str(run)])
        == 0
    )
    out = capsys.readouterr().out
    assert "moe-retriever" in out and "±" in out
    for name in [
        "config.yaml",
        "split.json",
        "run.json",
        "metrics.json",
        "learning_curves.png",
        "router_usage.png",
    ]:
        assert (run / name).is_file(), name
    for seed in (0, 1):
        d = run / f"seed_{seed}"
        for name in [
            "history.csv",
            "checkpoints/best.ckpt",
            "checkpoints/last.ckpt",
            "model/model.pt",
            "metrics.json",
            "test_predictions.csv",
        ]:
            assert (d / name).is_file(), f"seed_{seed}/{name}"
        hist = pd.read_csv(d / "history.csv")
        assert list(hist["epoch"]) == [0, 1, 2]
        assert {"train_loss", "val_loss", "val_macro_f1", "val_auroc"} <= set(hist.columns)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= set(METRICS)
    for k in METRICS:
        assert set(metrics["test"][k]) >= {"mean", "std"}
        assert metrics["test"][k]["n"] == 2
    assert metrics["per_combination"] and set(metrics["per_seed"]) == {"0", "1"}
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["optim"]["lr"] == 0.001 and resolved["seeds"] == [0, 1]  # defaults written

    # evaluate on the run's own test split reproduces metrics.json
    assert main(["evaluate", str(run)]) == 0
    evaluated = json.loads((run / "evaluation_test.json").read_text())
    for k in METRICS:
        assert evaluated["test"][k]["mean"] == pytest.approx(metrics["test"][k]["mean"])
    assert "per observed combination" in capsys.readouterr().out
    # evaluate on other labelled data: every sample of the folder
    assert main(["evaluate", str(run), str(folder), "--json"]) == 0
    on_folder = json.loads(capsys.readouterr().out)
    assert sum(c["n"] for c in on_folder["per_combination"].values()) == len(_tiny_data())

    # predict on samples that each have ONE modality only, without labels
    data = _tiny_data()
    keep = np.zeros_like(data.observed)
    first = data.observed.argmax(axis=1)
    keep[np.arange(len(data)), first] = True
    single = data.with_observed(keep)
    single.y = None
    new = tmp_path / "new"
    write_folder(single, new)
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(new), "--out", str(pred), "--embeddings"]) == 0
    frame = pd.read_csv(pred)
    prob_cols = [c for c in frame.columns if c.startswith("p_")]
    assert len(frame) == len(data) and len(prob_cols) == 3
    np.testing.assert_allclose(frame[prob_cols].sum(axis=1), 1.0, rtol=1e-5)
    assert (frame["observed"].str.count(r"\+") == 0).all()
    emb = np.load(tmp_path / "pred.embeddings.npy")
    assert emb.shape == (len(data), 3, 4, 16) and np.isfinite(emb).all()


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "no-such-dataset"], "is not a built-in dataset"),
        (["train", "synthetic", "--method", "magic"], "unknown method 'magic'"),
        (["train", "synthetic", "--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["train", "synthetic", "--set", "train.epochs=x"], "is not an integer"),
        (["train", "synthetic", "--config", "/no/such.yaml"], "not found"),
        (["evaluate", "/no/such/run"], "not a run folder"),
        (["predict", "/no/such/run", "miniacc"], "no finished model"),
        (["train", "--resume", "/no/such/run"], "not a run folder"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, capsys: Any) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert err.count("\n") == 0 and err.startswith("moe-retriever: error:")


def test_bad_input_subprocess_has_no_traceback() -> None:
    res = _cli("train", "synthetic", "--set", "optim.lrr=1")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert "unknown config key 'optim.lrr'; valid keys under 'optim'" in res.stderr


def test_refuses_to_overwrite_a_run(folder: Path, tmp_path: Path, capsys: Any) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    assert main(["train", str(folder), "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err


# ------------------------------------------------------------------------------ resume
def test_resume_after_kill_equals_uninterrupted(folder: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, train={"epochs": 5, "warmup_epochs": 1})
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(["train", str(folder), "--config", str(cfg), "--out", str(full)]) == 0

    # a real crash: the process SIGKILLs itself during epoch 3, after epoch 2's checkpoint
    res = _cli(
        "train", str(folder), "--config", str(cfg), "--out", str(killed), env={FAULT_ENV: "2"}
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert (killed / "seed_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (killed / "metrics.json").exists()
    assert len(pd.read_csv(killed / "seed_0" / "history.csv")) == 3
    # the process died without a word; the next command sees it gone and says so
    assert read_run(killed)[0]["status"] == "interrupted"
    assert json.loads((killed / "run.json").read_text())["status"] == "interrupted"

    assert main(["train", "--resume", str(killed)]) == 0
    a = pd.read_csv(full / "seed_0" / "history.csv")
    b = pd.read_csv(killed / "seed_0" / "history.csv")
    assert list(b["epoch"]) == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    ma = json.loads((full / "metrics.json").read_text())
    mb = json.loads((killed / "metrics.json").read_text())
    assert ma["test"] == mb["test"]
    pa = pd.read_csv(full / "seed_0" / "test_predictions.csv")
    pb = pd.read_csv(killed / "seed_0" / "test_predictions.csv")
    pd.testing.assert_frame_equal(pa, pb, check_exact=False, rtol=1e-5)


# ------------------------------------------------------------------------------ DDP
def test_ddp_two_cpu_processes_agree_with_one(folder: Path, tmp_path: Path) -> None:
    """Tolerance: with the zero-fill method and no dropout, 2 processes x 8 samples take the
    same optimizer steps as 1 process x 16 (the global batch is dealt out across ranks), so
    probabilities agree to float rounding (atol 1e-4) and the metrics are equal."""
    cfg = _config(
        tmp_path,
        model={"n_tokens": 4, "dim": 16, "n_heads": 2, "head_hidden": 16, "dropout": 0.0},
        method="zero",
    )
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", str(folder), "--config", str(cfg), "--out", str(one)]) == 0
    res = _cli(
        "train",
        str(folder),
        "--config",
        str(cfg),
        "--out",
        str(two),
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--accelerator",
        "cpu",
        timeout=150,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    pa = pd.read_csv(one / "seed_0" / "test_predictions.csv")
    pb = pd.read_csv(two / "seed_0" / "test_predictions.csv")
    cols = [c for c in pa.columns if c.startswith("p_")]
    np.testing.assert_allclose(pa[cols].to_numpy(), pb[cols].to_numpy(), atol=1e-4)
    ma = json.loads((one / "metrics.json").read_text())["test"]
    mb = json.loads((two / "metrics.json").read_text())["test"]
    for k in METRICS:
        assert ma[k]["mean"] == pytest.approx(mb[k]["mean"], abs=1e-6)
