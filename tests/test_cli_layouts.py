"""The command line on folders in the authors' ADNI and MIMIC-IV layouts (generated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from moe_retriever.cli import main
from moe_retriever.datasets.layout_fixtures import write_adni_fixture, write_mimic_fixture

pytest.importorskip("anndata")
pytest.importorskip("nibabel")

TINY = [
    "train.epochs=2",
    "train.warmup_epochs=1",
    "model.n_tokens=2",
    "model.dim=8",
    "model.head_hidden=8",
    "model.n_heads=2",
    "runtime.threads=1",
]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    adni = tmp_path_factory.mktemp("adni")
    mimic = tmp_path_factory.mktemp("mimic")
    return {"adni": (adni, write_adni_fixture(adni)), "mimic": (mimic, write_mimic_fixture(mimic))}


def test_describe_detects_and_names_the_layout(
    roots: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for layout, (root, truth) in roots.items():
        assert main(["data", "describe", str(root), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["name"] == layout and summary["n_samples"] == len(truth["ids"])
        assert list(summary["modalities"]) == truth["modalities"]
    assert main(["data", "describe", str(roots["mimic"][0]), "--layout", "adni"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moe-retriever: error:") and "label.csv" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("layout", ["adni", "mimic"])
def test_benchmark_runs_end_to_end(
    layout: str, roots: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, truth = roots[layout]
    out = tmp_path / "bench"
    args = ["benchmark", str(root), "--methods", "moe-retriever", "zero", "--missing-rates", "0"]
    args += ["--seeds", "0", "--out", str(out), "--quiet", "--set", *TINY]
    assert main(args) == 0
    payload = json.loads((out / "results.json").read_text())
    assert not payload["failures"]
    assert {r["method"] for r in payload["rows"]} == {"moe-retriever", "zero"}
    (mask_info,) = payload["masks"].values()
    # the split is the splits file's, not a drawn one
    assert mask_info["split_source"] == "data"
    assert mask_info["n_test"] == len(truth["split"]["testing"])
    assert "Macro-F1" in capsys.readouterr().out


def test_train_with_the_paper_preset_uses_cnn3d_and_the_splits_file(
    roots: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, truth = roots["adni"]
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # the preset's template path is found in the data folder
    args = ["train", str(root), "--config", "paper_adni", "--seeds", "0", "--out", str(run)]
    args += ["--no-progress", "--set", "train.epochs=2", "train.warmup_epochs=1"]
    assert main(args) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    image = cfg["model"]["encoders"]["image"]
    assert image["name"] == "cnn3d" and Path(image["mask"]).is_absolute()
    assert Path(image["mask"]).is_file()
    split = json.loads((run / "split.json").read_text())
    assert split["test"] == truth["split"]["testing"]
    assert split["train"] == truth["split"]["training"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["per_combination"]  # metrics per observed modality combination
    n = sum(v["n"] for v in metrics["per_combination"].values())
    assert n == len(truth["split"]["testing"])


@pytest.mark.parametrize("name", ["paper_adni", "paper_mimic"])
def test_presets_parse_and_follow_the_reference_settings(name: str) -> None:
    from moe_retriever.cli import _config_path
    from moe_retriever.training.config import TrainConfig

    path = _config_path(name)
    assert path.name == f"{name}.yaml" and path.is_file()
    cfg = TrainConfig.from_yaml(path)
    cfg.validate()
    assert (cfg.optim.lr, cfg.model.dim, cfg.model.n_tokens, cfg.model.n_heads) == (
        1e-4,
        128,
        16,
        4,
    )
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.batch_size) == (20, 5, 16)
    assert cfg.data.split_file is None  # the reader attaches the splits file
    image = cfg.model.encoders.get("image")
    assert (image is not None) == (name == "paper_adni")


def test_same_command_twice_same_metrics(roots: dict[str, Any], tmp_path: Path) -> None:
    root, _ = roots["adni"]
    metrics = []
    for k in range(2):
        run = tmp_path / f"run{k}"
        args = ["train", str(root), "--seeds", "0", "--out", str(run), "--no-progress"]
        assert main([*args, "--set", *TINY]) == 0
        metrics.append(json.loads((run / "metrics.json").read_text())["test"])
    assert metrics[0] == metrics[1]


def test_an_adni_folder_without_mri_reads_the_rest_and_modalities_choose(
    roots: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No image/ folder: describe reads the other three and names the absent one in one
    line; --modalities picks a subset for train (recorded in the config), and predict and
    evaluate read the run's modalities; asking for the absent one is one line, exit 2."""
    import shutil

    root = tmp_path / "adni"
    shutil.copytree(roots["adni"][0], root)
    shutil.rmtree(root / "image")
    assert main(["data", "describe", str(root), "--json"]) == 0
    captured = capsys.readouterr()
    assert list(json.loads(captured.out)["modalities"]) == ["genomic", "clinical", "biospecimen"]
    warned = [line for line in captured.err.splitlines() if "absent modalities" in line]
    assert len(warned) == 1 and "image" in warned[0]
    assert main(["data", "describe", str(root), "--modalities", "image", "genomic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moe-retriever: error:") and err.count("\n") == 0
    assert "modality 'image' was asked for but is absent" in err
    run = tmp_path / "run"
    args = ["train", str(root), "--config", "paper_adni", "--modalities", "genomic", "clinical"]
    args += ["--seeds", "0", "--out", str(run), "--no-progress", "--set", *TINY]
    assert main(args) == 0
    assert "model.encoders of image not used" in capsys.readouterr().err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["modalities"] == ["genomic", "clinical"]
    assert "image" not in cfg["model"]["encoders"]
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), str(root), "--out", str(out)]) == 0
    assert main(["evaluate", str(run), "--json"]) == 0
