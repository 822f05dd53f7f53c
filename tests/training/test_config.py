"""TrainConfig: defaults file, YAML round trip, typed dotted overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moe_retriever.training.config import (
    TrainConfig,
    apply_overrides,
    default_config_path,
    resolve_key,
)


def test_default_yaml_equals_dataclass_defaults() -> None:
    assert TrainConfig.from_yaml(default_config_path("default")) == TrainConfig()


def test_demo_yaml_loads() -> None:
    cfg = TrainConfig.from_yaml(default_config_path("demo"))
    assert cfg.runtime.threads == 1


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = apply_overrides(TrainConfig(), ["optim.lr=3e-4", "completion.k=2", "seeds=[4, 5]"])
    cfg.to_yaml(tmp_path / "c.yaml")
    again = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert again == cfg
    assert again.optim.lr == pytest.approx(3e-4)  # "3e-4" is a str for YAML 1.1; coerced
    assert again.completion == {"k": 2}
    assert again.seeds == [4, 5]


def test_overrides_are_typed() -> None:
    cfg = apply_overrides(
        TrainConfig(),
        [
            "train.epochs=7",
            "train.patience=null",
            "model.fusion_moe=true",
            "data.log1p=false",
            "runtime.precision=32",
        ],
    )
    assert cfg.train.epochs == 7 and cfg.train.patience is None
    assert cfg.model.fusion_moe is True
    assert cfg.data.log1p is False
    assert cfg.runtime.precision == "32"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'; valid keys under 'optim': optimizer, lr"),
        ("bogus=1", "unknown config key 'bogus'; valid keys: method, seeds"),
        ("train.epochs=many", "'train.epochs': 'many' is not an integer"),
        ("optim.optimizer=sgd", "is not one of ['adam', 'adamw']"),
        ("train.monitor=val_speed", "train.monitor 'val_speed' unknown"),
        ("train.epochs", "not of the form key=value"),
        ("optim.lr.x=1", "'optim.lr' is a value, not a section"),
    ],
)
def test_bad_overrides_raise_one_line(override: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        apply_overrides(TrainConfig(), [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_yaml_key(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    with pytest.raises(ValueError, match=r"unknown config key 'train\.epoch'"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_warmup_longer_than_training_is_shortened() -> None:
    cfg = apply_overrides(TrainConfig(), ["train.epochs=2", "train.warmup_epochs=5"])
    assert cfg.effective_warmup() == 1
    cfg = apply_overrides(TrainConfig(), ["train.epochs=1", "train.warmup_epochs=5"])
    assert cfg.effective_warmup() == 0


def test_resolve_key() -> None:
    assert resolve_key("optim__lr") == "optim.lr"
    assert resolve_key("epochs") == "train.epochs"
    assert resolve_key("completion__k") == "completion.k"
    with pytest.raises(ValueError, match="unknown option"):
        resolve_key("nonsense")
