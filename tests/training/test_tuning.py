"""``moe-retriever tune`` and :func:`moe_retriever.training.tuning.tune`: seeded, pruned,
validation only, and its YAML is a config ``train`` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from optuna_integration import PyTorchLightningPruningCallback

from moe_retriever.cli import main
from moe_retriever.data.readers import write_folder
from moe_retriever.data.splits import apply_split
from moe_retriever.datasets import load_dataset
from moe_retriever.training import tuning
from moe_retriever.training.config import TrainConfig
from moe_retriever.training.estimator import MoERetrieverClassifier
from moe_retriever.training.runs import load_run_data, make_run_split

#: a search space that keeps the tiny model tiny (the default one searches dim in {64, 128})
SMALL_SPACE = (
    tuning.Param("optim.lr", low=1e-3, high=1e-2, log=True),
    tuning.Param("model.dropout", choices=(0.0, 0.2)),
    tuning.Param("train.class_weights", choices=("none", "balanced")),
)


@pytest.fixture
def small_space(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "SEARCH_SPACE", SMALL_SPACE)


def _tiny_data() -> Any:
    """The training tests' tiny data (conftest.tiny_data), to write as a data folder."""
    return load_dataset(
        "synthetic",
        n_samples=90,
        n_modalities=3,
        dims=[8, 6, 10],
        n_classes=3,
        missing_rate=0.3,
        seed=0,
    )


def _cfg(tiny: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict(tiny)


def _params(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["seconds"])


# ------------------------------------------------------------------------------ the space
def test_each_method_gets_only_its_parts_options() -> None:
    base = TrainConfig()
    keys = {m: set(tuning.describe_space(m, base)) for m in ("moe-retriever", "zero", "knn")}
    common = {p.key for p in tuning.SEARCH_SPACE}
    assert keys["zero"] == common
    assert keys["moe-retriever"] == common | {"completion.k"}
    assert tuning.describe_space("knn")["completion.k"] == "{3, 5, 10}"
    assert "completion.k" not in tuning.describe_space("official-average")  # a reproduction
    assert {"head.rw_dropout", "head.lambda_int"} <= set(tuning.describe_space("i2moe"))
    assert not any(k.startswith("head.") for k in tuning.describe_space("i2m2"))
    # a config that names another completion gets that part's options
    knn_cfg = TrainConfig.from_dict({"completion": {"name": "knn"}})
    assert "completion.k" in tuning.describe_space("zero", knn_cfg)
    # dims that are no multiple of n_heads are left out (64 and 128 of 3 heads: the key goes)
    odd = TrainConfig.from_dict({"model": {"n_heads": 3, "dim": 129}})
    assert "model.dim" not in tuning.describe_space("zero", odd)
    # keys held fixed are not searched; a key outside the space is refused
    held = tuning.describe_space("moe-retriever", base, ["model.dim", "completion.k"])
    assert set(held) == common - {"model.dim"}
    with pytest.raises(ValueError, match="not in the search space"):
        tuning.describe_space("zero", base, ["model.fusion_layers"])


def test_metric_names_and_directions() -> None:
    base = TrainConfig()
    assert tuning.normalize_metric(None, base) == "val_loss"  # the config's train.monitor
    assert tuning.normalize_metric("macro_f1", base) == "val_macro_f1"
    assert tuning.normalize_metric("val_auroc", base) == "val_auroc"
    assert tuning.direction_of("val_loss") == "minimize"
    assert tuning.direction_of("val_balanced_accuracy") == "maximize"
    with pytest.raises(ValueError, match="unknown"):
        tuning.normalize_metric("f2", base)


def test_budget_is_required(splits: Any, tiny: dict[str, Any]) -> None:
    train, val, _ = splits
    with pytest.raises(ValueError, match="budget"):
        tuning.tune(train, val, "zero", _cfg(tiny))


# ------------------------------------------------------------------------------ the search
def test_tuning_is_seeded(splits: Any, tiny: dict[str, Any], small_space: None) -> None:
    train, val, _ = splits
    kw = {"n_trials": 3, "seed": 0, "metric": "macro_f1"}
    first = tuning.tune(train, val, "zero", _cfg(tiny), **kw)
    again = tuning.tune(train, val, "zero", _cfg(tiny), **kw)
    pd.testing.assert_frame_equal(_params(first.trials), _params(again.trials))
    assert first.params == again.params and first.value == again.value
    assert first.config.to_dict() == again.config.to_dict()
    other = tuning.tune(train, val, "zero", _cfg(tiny), **{**kw, "seed": 1})
    assert list(other.trials["optim.lr"]) != list(first.trials["optim.lr"])
    # the best config is the base with the best trial's values; the base's seeds are kept
    assert first.config.seeds == _cfg(tiny).seeds
    for key, value in first.params.items():
        section, name = key.split(".")
        assert getattr(getattr(first.config, section), name) == value
    # the best trial's model scores the reported value on validation
    assert tuning.validation_score(first.estimator, val, "val_macro_f1") == pytest.approx(
        first.value
    )


class _PruneFromSecondTrial(optuna.pruners.BasePruner):
    """Prunes every trial after the first once it has reported a post-warm-up epoch."""

    def prune(self, study: Any, trial: Any) -> bool:
        step = trial.last_step
        return trial.number >= 1 and step is not None and step >= 1


def test_pruning_goes_through_the_lightning_callback(
    splits: Any, tiny: dict[str, Any], small_space: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    real_fit = MoERetrieverClassifier.fit

    def spy(self: Any, *args: Any, **kw: Any) -> Any:
        seen.append(list(kw.get("callbacks") or []))
        return real_fit(self, *args, **kw)

    monkeypatch.setattr(MoERetrieverClassifier, "fit", spy)
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **kw: _PruneFromSecondTrial())
    train, val, _ = splits
    cfg = _cfg(tiny)  # 3 epochs, 1 warm-up
    result = tuning.tune(train, val, "zero", cfg, n_trials=2, seed=0, metric="balanced_accuracy")
    callbacks = [c for hooks in seen for c in hooks]
    assert len(callbacks) == 2
    assert all(isinstance(c, PyTorchLightningPruningCallback) for c in callbacks)
    assert {c.monitor for c in callbacks} == {"val_balanced_accuracy"}
    t = result.trials.set_index("number")
    # trial 0 ran every epoch, each reported by the callback; trial 1 stopped after epoch 1
    assert t.loc[0, "state"] == "COMPLETE" and t.loc[0, "last_epoch"] == 2
    assert t.loc[1, "state"] == "PRUNED" and t.loc[1, "last_epoch"] == 1
    assert pd.isna(t.loc[1, "value"])
    assert result.summary()["n_pruned"] == 1
    # without pruning no callback is passed
    seen.clear()
    tuning.tune(train, val, "zero", cfg, n_trials=1, seed=0, pruning=False)
    assert seen == [[]]


# ------------------------------------------------------------------------------ the command
def test_tune_command_writes_a_config_train_takes_and_never_touches_test(
    tmp_path: Path,
    tiny: dict[str, Any],
    small_space: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    folder = write_folder(_tiny_data(), tmp_path / "data")
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny))
    seen: set[str] = set()
    real_fit, real_proba = MoERetrieverClassifier.fit, MoERetrieverClassifier.predict_proba

    def fit(self: Any, train: Any, val: Any = None, **kw: Any) -> Any:
        seen.update(train.ids)
        seen.update(val.ids if val is not None else [])
        return real_fit(self, train, val, **kw)

    def proba(self: Any, data: Any) -> Any:
        seen.update(data.ids)
        return real_proba(self, data)

    monkeypatch.setattr(MoERetrieverClassifier, "fit", fit)
    monkeypatch.setattr(MoERetrieverClassifier, "predict_proba", proba)
    out = tmp_path / "tuned.yaml"
    args = ["tune", str(folder), "--method", "moe-retriever", "--trials", "2"]
    args += ["--metric", "macro_f1", "--config", str(base), "--out", str(out)]
    args += ["--set", "train.epochs=2", "data.split_seed=3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "best val_macro_f1" in printed and str(out) in printed

    # the test split of the run (same split logic as train) never reached a fit or a score
    data = load_run_data(str(folder))
    cfg = TrainConfig.from_yaml(out)
    train, val, test = apply_split(data, make_run_split(data, cfg))
    assert cfg.data.split_seed == 3
    assert seen == set(train.ids) | set(val.ids)
    assert not seen & set(test.ids)

    # the YAML: the base config with the best values (comments say how it was found)
    text = out.read_text()
    assert text.startswith("# tuned by `moe-retriever tune` for method moe-retriever")
    assert cfg.method == "moe-retriever" and cfg.train.epochs == 2
    assert cfg.model.dim == tiny["model"]["dim"]  # not searched in the small space
    trials = pd.read_csv(tmp_path / "tuned.trials.csv")
    assert len(trials) == 2 and "completion.k" in trials.columns
    best = trials.loc[trials["value"].idxmax()]
    assert cfg.optim.lr == pytest.approx(best["optim.lr"])
    assert cfg.completion["k"] == best["completion.k"]

    # and `train` takes it
    monkeypatch.undo()
    run = tmp_path / "run"
    assert (
        main(["train", str(folder), "--config", str(out), "--seeds", "0", "--out", str(run)]) == 0
    )
    assert (run / "metrics.json").is_file()
    assert TrainConfig.from_yaml(run / "config.yaml").optim.lr == cfg.optim.lr


def test_tune_command_errors_are_one_line(tmp_path: Path, capsys: Any) -> None:
    base = ["tune", "synthetic", "--method", "zero", "--out", str(tmp_path / "t.yaml")]
    for extra, needle in (
        ([], "budget"),
        (["--trials", "0"], "--trials must be >= 1"),
        (["--minutes", "-1"], "--minutes must be > 0"),
        (["--trials", "2", "--metric", "f2"], "unknown"),
        (["--trials", "2", "--method", "nope"], "unknown method"),
        (["--trials", "2", "--fix", "model.fusion_layers"], "not in the search space"),
    ):
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "t.yaml").exists()


def test_the_pruning_callback_must_be_a_lightning_callback() -> None:
    tuning._check_callback(PyTorchLightningPruningCallback)  # this install's: accepted
    with pytest.raises(ImportError, match="optuna-integration"):
        tuning._check_callback(object)  # what an old pytorch_lightning-only release would be
