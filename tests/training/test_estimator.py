"""MoERetrieverClassifier: fit / predict / retrieve / encode / save-load, inputs it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moe_retriever.data.core import DataValidationError, MultimodalData
from moe_retriever.training.estimator import MoERetrieverClassifier


@pytest.fixture(scope="module")
def fitted(splits: tuple[MultimodalData, ...], tiny_cfg: dict) -> MoERetrieverClassifier:
    train, val, _ = splits
    return MoERetrieverClassifier(config=tiny_cfg, seed=0).fit(train, val)


def test_fit_attributes_and_history(fitted: MoERetrieverClassifier) -> None:
    assert fitted.classes_ == ["class_0", "class_1", "class_2"] or len(fitted.classes_) == 3
    assert [r["epoch"] for r in fitted.history_] == [0, 1, 2]
    # warm-up epoch 0: retriever off, never selectable
    assert fitted.history_[0]["retrieval"] is False
    assert fitted.history_[0]["select_score"] == -np.inf
    assert fitted.best_epoch_ >= 1
    for row in fitted.history_:
        assert {"train_loss", "val_loss", "val_macro_f1", "val_auroc"} <= set(row)
    assert fitted.history_[1]["train_aux_loss"] > 0  # balance loss reaches the objective


def test_predict_retrieve_encode_shapes(
    fitted: MoERetrieverClassifier, splits: tuple[MultimodalData, ...]
) -> None:
    test = splits[2]
    proba = fitted.predict_proba(test)
    assert proba.shape == (len(test), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert (fitted.predict(test) == proba.argmax(1)).all()
    tokens = fitted.retrieve(test)
    enc = fitted.encode(test)
    assert tokens.shape == enc.shape == (len(test), 3, 4, 16)
    assert tokens.dtype == np.float32
    obs = test.observed
    # observed slots are the encoder tokens; missing slots are filled (non-zero) by retrieval
    np.testing.assert_allclose(tokens[obs], enc[obs], atol=1e-6)
    assert (~obs).any()
    assert np.abs(tokens[~obs]).sum(axis=(1, 2)).min() > 0
    assert np.abs(enc[~obs]).max() == 0
    # deterministic evaluation draws: the same call twice gives the same numbers
    np.testing.assert_array_equal(fitted.predict_proba(test), proba)


def test_predict_one_modality_only_samples(
    fitted: MoERetrieverClassifier, splits: tuple[MultimodalData, ...]
) -> None:
    test = splits[2]
    for j in range(3):
        keep = np.zeros_like(test.observed)
        keep[:, j] = test.observed[:, j]
        only = test.subset(test.observed[:, j]).with_observed(keep[test.observed[:, j]])
        proba = fitted.predict_proba(only)
        assert proba.shape == (len(only), 3) and np.isfinite(proba).all()


def test_routing_stats(fitted: MoERetrieverClassifier, splits: tuple[MultimodalData, ...]) -> None:
    stats = fitted.routing_stats(splits[2])
    assert stats["usage"], "moe-retriever routes every missing modality"
    for target, combos in stats["usage"].items():
        for entry in combos.values():
            # only the target's own candidates and the shared ones are ever chosen
            assert all(
                e.startswith(f"{target}#") or e.startswith("shared#") for e in entry["experts"]
            )


def test_save_load_identical(
    fitted: MoERetrieverClassifier, splits: tuple[MultimodalData, ...], tmp_path: Path
) -> None:
    test = splits[2]
    fitted.save(tmp_path / "m")
    again = MoERetrieverClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(test), fitted.predict_proba(test))
    np.testing.assert_array_equal(again.retrieve(test), fitted.retrieve(test))
    assert again.history_ == fitted.history_ and again.best_epoch_ == fitted.best_epoch_
    with pytest.raises(FileNotFoundError, match="no saved model"):
        MoERetrieverClassifier.load(tmp_path)


def test_same_seed_same_model(splits: tuple[MultimodalData, ...], tiny: dict) -> None:
    train, val, test = splits
    a = MoERetrieverClassifier(config=tiny, seed=3, epochs=2).fit(train, val)
    b = MoERetrieverClassifier(config=tiny, seed=3, epochs=2).fit(train, val)
    np.testing.assert_array_equal(a.predict_proba(test), b.predict_proba(test))


def test_without_val_and_with_empty_samples(
    splits: tuple[MultimodalData, ...], capsys: pytest.CaptureFixture[str], tiny: dict
) -> None:
    train, _, test = splits
    # hide everything of two training samples: they must be dropped, with a printed count
    obs = train.observed.copy()
    obs[:2] = False
    clf = MoERetrieverClassifier("zero", config=tiny, epochs=2).fit(train.with_observed(obs))
    out = capsys.readouterr().out
    assert "dropped 2 training sample(s)" in out
    assert "no validation data given" in out
    assert clf.n_dropped_ == 2
    # predicting a sample with nothing observed names it
    tobs = test.observed.copy()
    tobs[0] = False
    with pytest.raises(DataValidationError, match=str(test.ids[0])):
        clf.predict_proba(test.with_observed(tobs))


def test_epochs_not_above_warmup_does_not_crash(
    splits: tuple[MultimodalData, ...], tiny: dict
) -> None:
    train, val, _ = splits
    with pytest.warns(UserWarning, match="warm-up shortened"):
        clf = MoERetrieverClassifier(config=tiny, epochs=2, warmup_epochs=5).fit(train, val)
    assert [r["retrieval"] for r in clf.history_] == [False, True]
    assert clf.best_epoch_ == 1


def test_overrides_and_bad_input(splits: tuple[MultimodalData, ...], tiny: dict) -> None:
    clf = MoERetrieverClassifier(config=tiny, optim__lr=5e-4, **{"train.batch_size": 8})
    cfg = clf.resolved_config()
    assert cfg.optim.lr == 5e-4 and cfg.train.batch_size == 8 and cfg.model.dim == 16
    with pytest.raises(ValueError, match="unknown option 'learning_rate'"):
        MoERetrieverClassifier(learning_rate=1).resolved_config()
    known = "known: bank, generate-retrieve, knn"
    with pytest.raises(ValueError, match=f"unknown method 'magic'; {known}"):
        MoERetrieverClassifier("magic", config=tiny).fit(splits[0], splits[1])
    with pytest.raises(RuntimeError, match="not fitted"):
        MoERetrieverClassifier().predict(splits[2])


def test_modalities_must_match(
    fitted: MoERetrieverClassifier, splits: tuple[MultimodalData, ...]
) -> None:
    test = splits[2]
    reordered = MultimodalData(
        modalities=test.modalities[::-1],
        X=test.X,
        observed=test.observed[:, ::-1],
        y=test.y,
        ids=test.ids,
        class_names=test.class_names,
        feature_names=test.feature_names,
    )
    np.testing.assert_allclose(fitted.predict_proba(reordered), fitted.predict_proba(test))
    other = MultimodalData(
        modalities=["a", "b"],
        X={"a": test.X[test.modalities[0]], "b": test.X[test.modalities[1]]},
        observed=test.observed[:, :2],
        y=None,
        ids=test.ids,
    )
    with pytest.raises(DataValidationError, match="trained on"):
        fitted.predict_proba(other)


def test_run_folder_has_lightning_csv_log_and_hyperparameters(
    splits: tuple[MultimodalData, ...], tiny: dict, tmp_path: Path
) -> None:
    """Lightning's CSVLogger and save_hyperparameters: the per-epoch metrics and the resolved
    config are in the run folder and in the checkpoint, written by Lightning itself."""
    import pandas as pd
    import yaml

    from moe_retriever.training.estimator import load_checkpoint

    est = MoERetrieverClassifier(config=tiny, seed=0).fit(splits[0], splits[1], run_dir=tmp_path)
    log = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    assert {"val_macro_f1", "val_loss", "train_loss", "epoch"} <= set(log.columns)
    assert log["val_loss"].notna().sum() == tiny["train"]["epochs"]
    hparams = yaml.safe_load((tmp_path / "logs" / "hparams.yaml").read_text())
    assert hparams["config"]["model"]["dim"] == 16 and hparams["seed"] == 0
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    assert ckpt["hyper_parameters"]["config"] == est.config_.to_dict()
    with pytest.raises(ValueError, match=r"runtime.logger 'wandb'|is not one of"):
        MoERetrieverClassifier(config=tiny, **{"runtime.logger": "wandb"}).resolved_config()


def test_lightning_load_from_checkpoint_rebuilds_the_model(
    splits: tuple[MultimodalData, ...], tiny: dict, tmp_path: Path
) -> None:
    """``ClassifierModule.load_from_checkpoint`` on a run's checkpoint: the model is rebuilt
    from the saved hyperparameters and predicts what the fitted estimator predicts."""
    import torch

    from moe_retriever.training.module import ClassifierModule

    est = MoERetrieverClassifier(config=tiny, seed=0).fit(splits[0], splits[1], run_dir=tmp_path)
    module = ClassifierModule.load_from_checkpoint(
        tmp_path / "checkpoints" / "best.ckpt", weights_only=True
    )
    net = module.eval_model().eval()
    tensors = est._tensors(splits[2])
    with torch.no_grad():
        logits = net(tensors.x, tensors.observed, sample_keys=tensors.keys, retrieve=True).logits
    np.testing.assert_allclose(
        torch.softmax(module.predict_logits(logits), 1).numpy(),
        est.predict_proba(splits[2]),
        atol=1e-6,
    )


def test_training_pool_is_kept_only_for_methods_that_draw_from_it(
    splits: tuple[MultimodalData, ...], tiny: dict
) -> None:
    """zero never reads the training pool, so the model holds (and saves) no copy of it."""
    zero = MoERetrieverClassifier("zero", config=tiny, seed=0).fit(splits[0], splits[1])
    assert not zero.model_.has_training_pool
    knn = MoERetrieverClassifier("knn", config=tiny, seed=0).fit(splits[0], splits[1])
    assert knn.model_.has_training_pool
