"""Classical anchors: fitted on train only, chosen on val only, never see test labels."""

from __future__ import annotations

import numpy as np
import pytest

from moe_retriever.benchmark.anchors import create_anchor, list_anchors
from moe_retriever.data.core import MultimodalData

CLASSICAL = ["lr-late-fusion", "lr-mean-impute", "hgb", "late-fusion"]


def _parts(data: MultimodalData):
    idx = np.arange(data.n_samples)
    return data.subset(idx[:54]), data.subset(idx[54:72]), data.subset(idx[72:])


def _poison(data: MultimodalData, seed: int = 1) -> MultimodalData:
    """Same samples, labels shuffled and feature values replaced by noise."""
    rng = np.random.default_rng(seed)
    X = {
        m: np.where(np.isnan(v), np.nan, rng.normal(size=v.shape) * 50).astype(np.float32)
        for m, v in data.X.items()
    }
    return MultimodalData(
        list(data.modalities),
        X,
        data.observed.copy(),
        rng.permutation(data.y),
        data.ids.copy(),
        list(data.class_names),
    )


def test_registry_lists_anchors_and_reference_points():
    assert set(list_anchors("anchor")) == {"lr-late-fusion", "lr-mean-impute", "hgb"}
    assert set(list_anchors("reference")) == {"late-fusion", "complete-case"}
    with pytest.raises(ValueError, match="unknown anchor"):
        create_anchor("nope")


@pytest.mark.parametrize("name", CLASSICAL)
def test_probabilities_and_better_than_chance(name, tiny):
    train, val, test = _parts(tiny)
    anchor = create_anchor(name, seed=0).fit(train, val)
    proba = anchor.predict_proba(test)
    assert proba.shape == (test.n_samples, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert (proba.argmax(1) == test.y).mean() > 0.6  # well separated classes
    assert anchor.selected_["param"] in anchor.grid


@pytest.mark.parametrize("name", CLASSICAL)
def test_fit_uses_training_data_only(name, tiny):
    """With the choice fixed, nothing about val (values or labels) changes the model."""
    train, val, test = _parts(tiny)
    param = create_anchor(name).grid[1]
    a = create_anchor(name, seed=0, grid=[param]).fit(train, val)
    b = create_anchor(name, seed=0, grid=[param]).fit(train, _poison(val))
    np.testing.assert_allclose(a.predict_proba(test), b.predict_proba(test))
    assert a.preprocessor_.to_dict() == b.preprocessor_.to_dict()


@pytest.mark.parametrize("name", CLASSICAL)
def test_val_only_chooses_and_the_winner_is_the_train_fit(name, tiny):
    train, val, test = _parts(tiny)
    tuned = create_anchor(name, seed=0).fit(train, val)
    assert len(tuned.val_scores_) == len(tuned.grid)
    best = max(
        range(len(tuned.val_scores_)),
        key=lambda i: (
            tuned.val_scores_[i]["val_macro_f1"],
            -tuned.val_scores_[i]["val_log_loss"],
            -i,
        ),
    )
    assert tuned.val_scores_[best]["param"] == tuned.selected_["param"]
    refit = create_anchor(name, seed=0, grid=[tuned.grid[best]]).fit(train, None)
    np.testing.assert_allclose(tuned.predict_proba(test), refit.predict_proba(test))
    # val labels drive the scores
    poisoned = create_anchor(name, seed=0).fit(train, _poison(val))
    assert [s["val_macro_f1"] for s in poisoned.val_scores_] != [
        s["val_macro_f1"] for s in tuned.val_scores_
    ]


@pytest.mark.parametrize("name", CLASSICAL)
def test_predictions_ignore_test_labels_and_other_test_rows(name, tiny):
    train, val, test = _parts(tiny)
    anchor = create_anchor(name, seed=0).fit(train, val)
    full = anchor.predict_proba(test)
    relabelled = MultimodalData(
        list(test.modalities),
        dict(test.X),
        test.observed.copy(),
        (test.y + 1) % 3,
        test.ids.copy(),
        list(test.class_names),
    )
    np.testing.assert_allclose(anchor.predict_proba(relabelled), full)
    np.testing.assert_allclose(anchor.predict_proba(test.subset([3, 1])), full[[3, 1]], rtol=1e-5)


def test_late_fusion_averages_observed_modalities_only(tiny):
    train, val, test = _parts(tiny)
    anchor = create_anchor("lr-late-fusion", seed=0, grid=[1.0]).fit(train, val)
    one = test.subset([0])
    models = anchor.state_["models"]
    pre = anchor.preprocessor_.transform(one)
    mods = [m for j, m in enumerate(one.modalities) if one.observed[0, j]]
    expected = np.mean([models[m].predict_proba(pre.X[m]) for m in mods], axis=0)
    np.testing.assert_allclose(anchor.predict_proba(one), expected)


def test_lr_mean_impute_puts_training_means_in_missing_rows(tiny):
    train, val, _ = _parts(tiny)
    anchor = create_anchor("lr-mean-impute", seed=0, grid=[1.0]).fit(train, val)
    pre = anchor.preprocessor_.transform(train)
    for j, m in enumerate(train.modalities):
        np.testing.assert_allclose(
            anchor.state_["means"][m], pre.X[m][train.observed[:, j]].mean(0), atol=1e-6
        )
