"""Hardening (issue 13): no code runs from a run folder, no silently wrong metric, no input
file is ever overwritten, a run's status is always true, and bad input gives one line.

Trainings here are tiny (2 epochs, dim 16, 2 tokens) so the whole file stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from moe_retriever.cli import main
from moe_retriever.data.readers import write_folder
from moe_retriever.data.splits import Split, make_split
from moe_retriever.datasets import load_dataset
from moe_retriever.training.callbacks import FAULT_ENV
from moe_retriever.training.estimator import UnsafeCheckpointError, load_checkpoint
from moe_retriever.training.runs import run_models

FAST = [
    "--set",
    "train.epochs=2",
    "train.warmup_epochs=1",
    "model.dim=16",
    "model.n_tokens=2",
    "model.n_heads=2",
    "model.head_hidden=16",
    "runtime.threads=1",
    "--accelerator",
    "cpu",
    "--no-progress",
]


def tiny_data(n: int = 60, seed: int = 0) -> Any:
    return load_dataset(
        "synthetic",
        n_samples=n,
        n_modalities=3,
        dims=[5, 4, 6],
        n_classes=2,
        missing_rate=0.3,
        seed=seed,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny"
    write_folder(tiny_data(), path)
    return path


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished single-seed run; tests that alter it work on a copy."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(folder), "--seeds", "0", "--out", str(out), *FAST]) == 0
    return out


def _one_line_error(capsys: Any) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("moe-retriever: error:"), err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------ security
class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates a file, the proof of code run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {}, "epoch": 0, "payload": _Payload(marker)}, path)


def test_load_checkpoint_refuses_pickled_callable(tmp_path: Path) -> None:
    ckpt, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    _malicious_checkpoint(ckpt, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt") as info:
        load_checkpoint(ckpt)
    assert not marker.exists()
    assert "\n" not in str(info.value)


def test_resume_refuses_a_tampered_checkpoint(run: Path, tmp_path: Path, capsys: Any) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(run, tampered)
    seed_dir = tampered / "seed_0"
    (seed_dir / "metrics.json").unlink()  # seed 0 unfinished: --resume loads last.ckpt
    (tampered / "metrics.json").unlink()
    marker = tmp_path / "pwned"
    _malicious_checkpoint(seed_dir / "checkpoints" / "last.ckpt", marker)
    assert main(["train", "--resume", str(tampered)]) == 2
    err = _one_line_error(capsys)
    assert "last.ckpt" in err and "refused" in err
    assert not marker.exists()


def test_predict_refuses_a_tampered_saved_model(
    run: Path, folder: Path, tmp_path: Path, capsys: Any
) -> None:
    tampered = tmp_path / "tampered_model"
    shutil.copytree(run, tampered)
    marker = tmp_path / "pwned"
    torch.save({"weight": _Payload(marker)}, tampered / "seed_0" / "model" / "model.pt")
    out = tmp_path / "p.csv"
    assert main(["predict", str(tampered), str(folder), "--out", str(out)]) == 2
    assert "model.pt" in _one_line_error(capsys)
    assert not marker.exists() and not out.exists()


# ------------------------------------------------------------------------------ helpers
def _csv_folder(path: Path, data: Any, labels: bool = True) -> Path:
    """``data`` as plain CSV files with no meta.json, as a new user would write them."""
    path.mkdir(parents=True)
    for j, m in enumerate(data.modalities):
        rows = data.observed[:, j]
        frame = pd.DataFrame(data.X[m][rows], columns=data.feature_names[m])
        frame.insert(0, "id", data.ids[rows])
        frame.to_csv(path / f"{m}.csv", index=False)
    if labels:
        names = np.asarray(data.class_names, dtype=object)
        pd.DataFrame({"id": data.ids, "label": names[data.y]}).to_csv(
            path / "labels.csv", index=False
        )
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_one_class_file_uses_the_run_label_mapping(
    run: Path, tmp_path: Path, capsys: Any
) -> None:
    data = tiny_data()
    est = run_models(run)[0]
    only = data.subset(data.y == 1)  # class "c1" only; its file alone would code it as 0
    truth = float((est.predict(only) == 1).mean())
    folder = _csv_folder(tmp_path / "one_class", only)
    assert main(["evaluate", str(run), str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test"]["accuracy"]["mean"] == pytest.approx(truth)
    assert 0.0 < truth < 1.0  # the swap would give 1 - truth: the check can tell them apart


def test_evaluate_refuses_labels_the_model_does_not_know(
    run: Path, tmp_path: Path, capsys: Any
) -> None:
    data = tiny_data()
    data.class_names = ["healthy", "sick"]
    folder = _csv_folder(tmp_path / "renamed", data)
    assert main(["evaluate", str(run), str(folder)]) == 2
    err = _one_line_error(capsys)
    assert "'healthy'" in err and "not classes of the model ['c0', 'c1']" in err


def test_evaluate_warns_about_training_samples(run: Path, folder: Path, capsys: Any) -> None:
    n_train = len(json.loads((run / "split.json").read_text())["train"])
    assert main(["evaluate", str(run), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["n_in_training_split"] == n_train
    warning = [line for line in captured.err.splitlines() if "training split" in line]
    assert len(warning) == 1 and f"{n_train} of 60 sample(s)" in warning[0]
    assert "not test scores" in warning[0]
    # the run's own test split has no training sample: no warning
    assert main(["evaluate", str(run)]) == 0
    assert "training split" not in capsys.readouterr().err


def test_evaluate_on_a_read_only_run_folder_still_reports(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    original = Path.write_text

    def refuse(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name.startswith("evaluation_"):
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse)
    assert main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    assert "accuracy" in captured.out
    assert "could not write" in captured.err and "Traceback" not in captured.err


# ------------------------------------------------------------------------------ predict
def test_predict_label_column_uses_the_run_classes(run: Path, tmp_path: Path) -> None:
    """A folder holding class "c1" only codes it as 0; the ``label`` column is still "c1"."""
    data = tiny_data()
    only = data.subset(data.y == 1)
    folder = _csv_folder(tmp_path / "one_class", only)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(folder), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == len(only) and set(frame["label"]) == {"c1"}


@pytest.mark.parametrize("target", ["modality", "new_in_data", "run_json", "run_new"])
def test_predict_never_overwrites_an_input(
    run: Path, folder: Path, target: str, capsys: Any
) -> None:
    out = {
        "modality": folder / "m0.parquet",
        "new_in_data": folder / "predictions.csv",
        "run_json": run / "run.json",
        "run_new": run / "seed_0" / "predictions.csv",
    }[target]
    before_data, before_run = _digest(folder), _digest(run)
    assert main(["predict", str(run), str(folder), "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "never overwrite inputs" in err
    assert _digest(folder) == before_data and _digest(run) == before_run


def test_predict_out_in_a_missing_folder_is_one_line(
    run: Path, folder: Path, tmp_path: Path, capsys: Any
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["predict", str(run), str(folder), "--out", str(blocker / "p.csv")]) == 2
    assert "does not exist" in _one_line_error(capsys)


def test_predict_reports_imputed_cells_and_accepts_header_only_files(
    run: Path, tmp_path: Path, capsys: Any
) -> None:
    data = tiny_data()
    folder = _csv_folder(tmp_path / "new", data, labels=False)
    m0 = pd.read_csv(folder / "m0.csv")
    m0.iloc[0, 2] = np.nan  # one missing cell in an observed row
    m0.to_csv(folder / "m0.csv", index=False)
    header_only = pd.read_csv(folder / "m2.csv").iloc[:0]  # m2 absent for every sample
    header_only.to_csv(folder / "m2.csv", index=False)
    assert (folder / "m2.csv").read_text().count("\n") == 1
    keep = data.observed[:, 0] | data.observed[:, 1]  # samples seen only in m2 are gone
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "modality 'm0': 1 missing cell(s) in observed rows were imputed" in err
    assert "modality 'm2' is observed in no sample" in err
    frame = pd.read_csv(out)
    assert len(frame) == int(keep.sum())
    assert not frame["observed"].str.contains("m2").any()


def _folder_with_a_nan_cell(path: Path) -> tuple[Path, str]:
    """The tiny data as CSV files with one NaN cell inside an observed row of m0."""
    folder = _csv_folder(path, tiny_data())
    m0 = pd.read_csv(folder / "m0.csv")
    m0.iloc[0, 2] = np.nan
    m0.to_csv(folder / "m0.csv", index=False)
    return folder, str(m0.iloc[0, 0])


def test_train_reports_imputed_cells(tmp_path: Path, capsys: Any) -> None:
    """NaN cells inside observed rows are imputed at train too, and said so (issue 23)."""
    folder, sample = _folder_with_a_nan_cell(tmp_path / "nan")
    run = tmp_path / "run"
    assert main(["train", str(folder), "--seeds", "0", "--out", str(run), *FAST]) == 0
    err = capsys.readouterr().err
    line = "modality 'm0': 1 missing cell(s) in observed rows were imputed"
    warned = [x for x in err.splitlines() if line in x]
    assert len(warned) == 1 and warned[0].startswith("moe-retriever: warning:")
    assert repr(sample) in warned[0]
    recorded = json.loads((run / "run.json").read_text())["imputed_cells"]
    assert len(recorded) == 1 and line in recorded[0]


def test_benchmark_reports_imputed_cells(tmp_path: Path, capsys: Any) -> None:
    folder, sample = _folder_with_a_nan_cell(tmp_path / "nan")
    out = tmp_path / "bench"
    args = ["benchmark", str(folder), "--methods", "lr-mean-impute", "--missing-rates", "0"]
    assert main([*args, "--seeds", "0", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    line = "modality 'm0': 1 missing cell(s) in observed rows were imputed"
    warned = [x for x in err.splitlines() if line in x]
    assert len(warned) == 1 and repr(sample) in warned[0]
    recorded = json.loads((out / "results.json").read_text())["imputed_cells"]
    assert len(recorded) == 1 and line in recorded[0]


# ------------------------------------------------------------------------------ run status
def _status(run: Path) -> str:
    return str(json.loads((run / "run.json").read_text())["status"])


def test_failure_after_training_starts_is_recorded(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import moe_retriever.training.runs as runs

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("disk on fire")

    monkeypatch.setattr(runs, "evaluate_estimator", broken)
    out = tmp_path / "failed"
    assert main(["train", str(folder), "--seeds", "0", "--out", str(out), *FAST]) == 2
    assert "disk on fire" in _one_line_error(capsys)
    assert _status(out) == "failed: disk on fire"


def test_interrupt_in_process_is_recorded(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from moe_retriever.training.estimator import MoERetrieverClassifier

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(MoERetrieverClassifier, "fit", interrupted)
    out = tmp_path / "interrupted"
    assert main(["train", str(folder), "--seeds", "0", "--out", str(out), *FAST]) == 130
    assert f"--resume {out}" in capsys.readouterr().err
    assert _status(out) == "interrupted"


def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes(folder: Path, tmp_path: Path) -> None:
    """A real SIGINT in a real process: Lightning turns it into exit(1); the run must say
    'interrupted', exit 130 with one line, and --resume must finish it. The process sends the
    SIGINT to itself in epoch 3 (fault injection): a signal from outside raced the training,
    which on a fast machine could finish first."""
    out = tmp_path / "ctrl_c"
    args = [*FAST]
    args[args.index("train.epochs=2")] = "train.epochs=20"
    args.insert(args.index("--accelerator"), "train.patience=null")  # no early stop
    command = [sys.executable, "-m", "moe_retriever.cli", "train", str(folder), "--seeds", "0"]
    proc = subprocess.run(
        [*command, "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, FAULT_ENV: "2:INT"},
        # a test runner started in the background by a non-interactive shell ignores SIGINT,
        # and a child Python then keeps ignoring it: restore the terminal's default first
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    err = proc.stderr
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("moe-retriever: interrupted")
    assert _status(out) == "interrupted"
    history = out / "seed_0" / "history.csv"
    assert len(pd.read_csv(history)) < 20
    assert main(["train", "--resume", str(out)]) == 0
    assert _status(out) == "done"
    assert len(pd.read_csv(history)) == 20


def test_test_split_problems_are_found_before_training(tmp_path: Path, capsys: Any) -> None:
    data = tiny_data()
    empty = data.observed.copy()
    empty[0] = False  # sample s00000 observes nothing
    folder = tmp_path / "with_empty"
    write_folder(data.with_observed(empty), folder)
    split = make_split(data, seed=0)
    parts = [[i for i in part if i != "s00000"] for part in (split.train, split.val, split.test)]
    Split(train=parts[0], val=parts[1], test=["s00000", *parts[2]]).save(tmp_path / "split.json")
    out = tmp_path / "run"
    args = ["train", str(folder), "--out", str(out), *FAST]
    args += ["--set", "data.split_file=" + str(tmp_path / "split.json")]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "test split" in err and "'s00000'" in err and "no observed modality" in err
    assert not out.exists()  # nothing written, so the same command works once fixed

    # a class that only the test split holds would be scored as a silent zero
    c1 = [i for i, y in zip(data.ids, data.y) if y == 1]
    c0 = [i for i, y in zip(data.ids, data.y) if y == 0]
    Split(train=c0[:-4], val=c0[-4:], test=c1).save(tmp_path / "split.json")
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "classes ['c1'] have no training sample" in err
    assert not out.exists()


# ------------------------------------------------------------------------------ one-line errors
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0", "0"], "--seeds lists [0] more than once"),
        (["--set", "model.dim=0"], "model.dim must be >= 1, got 0"),
        (["--accelerator", "gpu"], "no CUDA GPU is visible"),
    ],
)
def test_train_option_errors_before_anything_is_written(
    folder: Path, tmp_path: Path, extra: list[str], message: str, capsys: Any
) -> None:
    if "gpu" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "run"
    assert main(["train", str(folder), "--out", str(out), *FAST, *extra]) == 2
    assert message in _one_line_error(capsys)
    assert not out.exists()  # a retry with the same --out works


def test_estimator_refuses_a_zero_model_size_in_one_line() -> None:
    """The size checks live in TrainConfig.validate, so the estimator (not only the CLI) says
    which key is wrong instead of failing deep inside torch."""
    from moe_retriever.training.estimator import MoERetrieverClassifier

    data = tiny_data()
    with pytest.raises(ValueError, match=r"model\.dim must be >= 1, got 0"):
        MoERetrieverClassifier(config={"model": {"dim": 0}}).fit(data)


def test_estimator_given_a_dict_of_dataframes_says_how_to_convert() -> None:
    from moe_retriever.training.estimator import MoERetrieverClassifier

    frames = {"a": pd.DataFrame({"x": [1.0, 2.0]}), "b": pd.DataFrame({"y": [3.0, 4.0]})}
    with pytest.raises(TypeError, match=r"got dict; .*from_pandas\(frames, labels\)"):
        MoERetrieverClassifier(epochs=1).fit(frames)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ silent changes
def test_whitespace_around_labels_is_stripped_with_a_warning(tmp_path: Path, capsys: Any) -> None:
    data = tiny_data()
    folder = _csv_folder(tmp_path / "spaces", data)
    labels = pd.read_csv(folder / "labels.csv")
    labels.loc[:2, "label"] = " " + labels.loc[:2, "label"] + " "
    labels.to_csv(folder / "labels.csv", index=False)
    assert main(["data", "describe", str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)["classes"]) == {"c0", "c1"}  # not a third class
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "labels of 3 sample(s) had spaces" in lines[0]
    assert lines[0].startswith("moe-retriever: warning:")


def test_a_modality_observed_nowhere_is_warned_about(tmp_path: Path) -> None:
    from moe_retriever.data.core import DataWarning
    from moe_retriever.data.readers import read_folder

    folder = _csv_folder(tmp_path / "all_nan", tiny_data())
    m1 = pd.read_csv(folder / "m1.csv")
    m1.iloc[:, 1:] = np.nan
    m1.to_csv(folder / "m1.csv", index=False)
    with pytest.warns(DataWarning, match="modality 'm1' is observed in no sample"):
        data = read_folder(folder)
    assert not data.observed[:, 1].any()


def test_a_run_whose_process_is_gone_reads_as_interrupted(run: Path, tmp_path: Path) -> None:
    from moe_retriever.training.runs import read_run

    copy = tmp_path / "stale"
    shutil.copytree(run, copy)
    info = json.loads((copy / "run.json").read_text())
    assert info["status"] == "done" and info["pid"] == os.getpid()
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    info.update(status="running", pid=int(finished.stdout))
    (copy / "run.json").write_text(json.dumps(info))
    assert read_run(copy)[0]["status"] == "interrupted"
    # a live process keeps "running", and --resume refuses to race it
    info["pid"] = os.getpid()
    (copy / "run.json").write_text(json.dumps(info))
    assert read_run(copy)[0]["status"] == "running"
    assert main(["train", "--resume", str(copy)]) == 2


def test_train_into_an_unusable_out_is_one_line(folder: Path, tmp_path: Path, capsys: Any) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["train", str(folder), "--out", str(blocker), *FAST]) == 2
    assert "is a file" in _one_line_error(capsys)
    assert main(["train", str(folder), "--out", str(blocker / "run"), *FAST]) == 2
    assert "a_file" in _one_line_error(capsys)
    assert blocker.read_text() == "x"
