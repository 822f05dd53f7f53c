"""Class imbalance: balanced class weights (scikit-learn's rule, classes absent from training
kept at 0) and logit adjustment, loss-side and post-hoc."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moe_retriever.data.core import MultimodalData
from moe_retriever.training.estimator import MoERetrieverClassifier
from moe_retriever.training.module import (
    ClassifierModule,
    adjust_logits,
    balanced_class_weights,
    class_log_prior,
)


def test_balanced_weights_follow_sklearn_and_absent_classes_get_zero() -> None:
    y = np.array([0, 0, 0, 1, 2, 2])
    w = balanced_class_weights(y, 4).numpy()
    np.testing.assert_allclose(w[:3], 6 / (4 * np.array([3, 1, 2])), rtol=1e-6)
    assert w[3] == 0.0
    # weighted counts are equal across present classes: each class counts n / C in the loss
    counts = np.bincount(y, minlength=4)
    assert (w * counts)[:3] == pytest.approx([1.5, 1.5, 1.5])


# ---------------------------------------------------------------- logit adjustment


def test_class_log_prior_is_training_frequencies_with_absent_classes_finite() -> None:
    lp = class_log_prior(np.array([0, 0, 0, 1]), 3).exp().numpy()
    np.testing.assert_allclose(lp, [3 / 5, 1 / 5, 1 / 5], rtol=1e-6)  # absent class: one count


def test_loss_side_logit_adjustment_reaches_the_objective(tiny: dict) -> None:
    """``train.logit_adjust`` = tau: the training loss is CE(logits + tau * log prior)."""
    prior = class_log_prior(np.array([0, 0, 0, 0, 1, 2]), 3)
    logits = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    tiny["train"]["logit_adjust"] = 1.5
    module = ClassifierModule(
        config=tiny,
        dims={"a": 2, "b": 2},
        n_classes=3,
        log_prior=prior,
        class_names=["a", "b", "c"],
    )
    loss = module._ce(logits, y)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits + 1.5 * prior, y)))
    assert float(loss) != pytest.approx(float(F.cross_entropy(logits, y)))
    loss.backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)
    # predictions subtract tau * log prior (post-hoc, tau = 1 by default); 0 turns it off
    assert torch.allclose(module.predict_logits(logits), logits - prior)
    module.config.train.posthoc_adjust = 0.0
    assert torch.equal(module.predict_logits(logits), logits)
    assert torch.equal(adjust_logits(logits, None, 2.0), logits)


def test_posthoc_adjustment_shifts_predictions_by_the_training_prior(
    splits: tuple[MultimodalData, ...], tiny: dict
) -> None:
    """Same seed and selection (on validation loss, which the post-hoc term does not change):
    the weights are the same and the probabilities are softmax(logits - tau * log prior)."""
    train, val, test = splits
    tiny["train"]["posthoc_adjust"] = 0.0
    plain = MoERetrieverClassifier(config=tiny, seed=1).fit(train, val)
    tiny["train"]["posthoc_adjust"] = 1.0
    adjusted = MoERetrieverClassifier(config=tiny, seed=1).fit(train, val)
    p0 = torch.tensor(plain.predict_proba(test), dtype=torch.float64)
    p1 = adjusted.predict_proba(test)
    prior = class_log_prior(np.asarray(train.y), train.n_classes).double()
    expected = torch.softmax(p0.log() - prior, dim=1).numpy()
    np.testing.assert_allclose(p1, expected, atol=1e-5)
    assert not np.allclose(p1, p0.numpy(), atol=1e-3)


def test_a_uniform_training_prior_leaves_predictions_unchanged() -> None:
    """Balanced training classes (mfeat's stratified splits): the post-hoc default is exact
    identity on the probabilities, so balanced data keeps its results."""
    logits = torch.randn(7, 4)
    prior = class_log_prior(np.repeat(np.arange(4), 5), 4)
    torch.testing.assert_close(
        torch.softmax(adjust_logits(logits, prior, -1.0), 1), torch.softmax(logits, 1)
    )
