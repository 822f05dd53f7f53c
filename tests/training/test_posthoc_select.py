"""``train.posthoc_select``: the post-hoc tau chosen on validation for the metric the user
reports (moe_retriever.training.decision), used for predictions, saved and loaded."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_retriever.data.core import MultimodalData
from moe_retriever.training.config import TrainConfig
from moe_retriever.training.decision import SELECT_METRICS, TAU_GRID, adjusted_proba, choose_tau
from moe_retriever.training.estimator import MoERetrieverClassifier
from moe_retriever.training.module import adjust_logits


def test_adjusted_proba_is_the_librarys_post_hoc_rule() -> None:
    rng = np.random.default_rng(0)
    log_p = np.log(rng.dirichlet(np.ones(3), size=8))
    log_prior = np.log(np.array([0.7, 0.2, 0.1]))
    for tau in (0.0, 1.0, 2.5):
        expected = torch.softmax(
            adjust_logits(torch.tensor(log_p), torch.tensor(log_prior), -tau), dim=1
        ).numpy()
        np.testing.assert_allclose(adjusted_proba(log_p, log_prior, tau), expected, rtol=1e-6)


def test_the_chosen_tau_maximises_the_metric_with_ties_nearest_one() -> None:
    """Binary, 10 % minority; the minority probability is too low by a constant, so tau = 1
    misses the minority and a larger tau finds it; a model that separates the classes keeps
    tau = 1 (every tau of a wide band ties)."""
    y = np.array([0] * 90 + [1] * 10)
    log_prior = np.log(np.array([0.9, 0.1]))
    p1 = np.where(y == 1, 0.06, 0.02)  # ranks perfectly, below the prior 0.1 everywhere
    log_p = np.log(np.stack([1 - p1, p1], axis=1))
    tau = choose_tau(y, log_p, log_prior, "balanced_accuracy")
    assert tau > 1.0 and tau in TAU_GRID
    assert (adjusted_proba(log_p, log_prior, tau).argmax(axis=1) == y).all()
    sharp = np.log(np.stack([np.where(y == 1, 0.01, 0.99), np.where(y == 1, 0.99, 0.01)], 1))
    assert choose_tau(y, sharp, log_prior, "macro_f1") == 1.0
    with pytest.raises(ValueError, match="balanced_accuracy, macro_f1"):
        choose_tau(y, log_p, log_prior, "accuracy")


def test_an_unknown_select_metric_is_refused(tiny: dict) -> None:
    tiny["train"]["posthoc_select"] = "auroc"
    with pytest.raises(ValueError, match="posthoc_select"):
        TrainConfig.from_dict(tiny).validate()
    cfg = TrainConfig()  # set on the object: coercion is skipped, validate() refuses it
    cfg.train.posthoc_select = "auroc"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="none, balanced_accuracy, macro_f1"):
        cfg.validate()
    # the config's Literal and the rule's metrics are the same list
    hint = typing.get_type_hints(type(cfg.train))["posthoc_select"]
    assert typing.get_args(hint) == ("none", *SELECT_METRICS)


def test_fit_chooses_tau_on_validation_and_predicts_with_it(
    splits: tuple[MultimodalData, ...], tiny: dict, tmp_path: Path
) -> None:
    """The chosen tau is choose_tau on the raw validation probabilities; predictions are the
    raw ones adjusted by it; the fit itself is the default's; save/load keeps the tau."""
    train, val, test = splits
    plain = MoERetrieverClassifier(config=tiny, seed=2).fit(train, val)
    assert plain.posthoc_tau_ == 1.0  # posthoc_select: none keeps posthoc_adjust
    tiny["train"]["posthoc_select"] = "macro_f1"
    chosen = MoERetrieverClassifier(config=tiny, seed=2).fit(train, val)
    log_prior = chosen.class_log_prior_.numpy()
    plain.posthoc_tau_ = 0.0
    raw_val = np.log(np.clip(plain.predict_proba(val).astype(np.float64), 1e-12, None))
    y_val = plain._label_index(val).numpy()
    assert chosen.posthoc_tau_ == choose_tau(y_val, raw_val, log_prior, "macro_f1")
    raw_test = np.log(np.clip(plain.predict_proba(test).astype(np.float64), 1e-12, None))
    expected = adjusted_proba(raw_test, log_prior, chosen.posthoc_tau_)
    np.testing.assert_allclose(chosen.predict_proba(test), expected, atol=1e-5)
    back = MoERetrieverClassifier.load(chosen.save(tmp_path / "m"))
    assert back.posthoc_tau_ == chosen.posthoc_tau_
    np.testing.assert_allclose(back.predict_proba(test), chosen.predict_proba(test), atol=1e-6)


def test_without_validation_the_fixed_tau_stays(
    splits: tuple[MultimodalData, ...], tiny: dict
) -> None:
    train, _, _ = splits
    tiny["train"]["posthoc_select"] = "balanced_accuracy"
    tiny["train"]["posthoc_adjust"] = 0.5
    empty = train.subset(np.arange(0))
    est = MoERetrieverClassifier(config=tiny, seed=0).fit(train, empty)
    assert est.posthoc_tau_ == 0.5
