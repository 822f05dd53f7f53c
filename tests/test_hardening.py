"""Hardening (issue 13): no code runs from a run folder, no silently wrong metric, no input
file is ever overwritten, a run's status is always true, and bad input gives one line.

Trainings here are tiny (2 epochs, dim 16, 2 tokens) so the whole file stays fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from moe_retriever.cli import main
from moe_retriever.data.readers import write_folder
from moe_retriever.datasets import load_dataset
from moe_retriever.training.estimator import UnsafeCheckpointError, load_checkpoint

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
