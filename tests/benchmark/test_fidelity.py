"""Retrieval fidelity: the maths, and the issue-5 claim on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moe_retriever.benchmark.fidelity import (
    entry_fidelity,
    probe_fidelity,
    specificity,
    token_fidelity,
)


def test_hand_case_cosine_and_mse():
    true = np.zeros((2, 2, 1, 2))
    true[0, 1, 0] = [1.0, 0.0]
    true[1, 0, 0] = [0.0, 2.0]
    completed = np.zeros_like(true)
    completed[0, 1, 0] = [1.0, 1.0]  # cos = 1/sqrt(2), mse = 0.5
    completed[1, 0, 0] = [0.0, 0.0]  # zero block: cos 0, mse = 2
    hidden = np.array([[False, True], [True, False]])
    cos, mse = entry_fidelity(completed, true, hidden)
    np.testing.assert_allclose(cos, [1 / math.sqrt(2), 0.0])
    np.testing.assert_allclose(mse, [0.5, 2.0])
    out = token_fidelity(completed, true, hidden, ["a", "b"])
    assert out["fidelity_cosine"] == pytest.approx((1 / math.sqrt(2)) / 2)
    assert out["fidelity_mse"] == pytest.approx(1.25)
    assert out["fidelity_n"] == 2
    assert out["fidelity_cosine/a"] == pytest.approx(0.0)
    assert out["fidelity_cosine/b"] == pytest.approx(1 / math.sqrt(2))


def test_only_hidden_entries_count_and_shapes_are_checked():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(3, 2, 2, 2))
    completed = true.copy()
    completed[0, 0] = -true[0, 0]  # not hidden: must not matter
    hidden = np.array([[False, True], [False, False], [True, True]])
    out = token_fidelity(completed, true, hidden, ["a", "b"])
    assert out["fidelity_cosine"] == pytest.approx(1.0)
    assert out["fidelity_mse"] == pytest.approx(0.0)
    none = token_fidelity(completed, true, np.zeros((3, 2), bool), ["a", "b"])
    assert math.isnan(none["fidelity_cosine"])
    with pytest.raises(ValueError, match="differ in shape"):
        entry_fidelity(completed[:2], true, hidden)


# The issue-5 acceptance claim, on a small configuration (about 40 s on one CPU thread). It
# holds since retrieval self-supervision (docs/METHOD_NOTES.md). Smaller configs left too few
# training samples with >= 2 modalities at rate 0.7 to learn from: 240 samples, 3 modalities,
# 8 epochs gave 0.12 vs mean 0.48; 400 samples, 4 modalities, 25 epochs with the MLP encoder
# gave 0.584 vs 0.586 (measured margins here at seed 0: 0.89/0.77/0.74 vs 0.57/0.58/0.55).
def test_moe_retriever_fidelity_beats_mean_and_zero_on_shared_latent_data():
    import pandas as pd

    from moe_retriever.benchmark.harness import benchmark_config, run_benchmark
    from moe_retriever.datasets.synthetic import make_synthetic

    data = make_synthetic(
        n_samples=600, n_modalities=4, dims=12, latent_dim=4, noise=0.2, n_classes=3, seed=0
    )
    cfg = benchmark_config(
        **{
            "train.epochs": 25,
            "train.warmup_epochs": 2,
            "train.patience": None,
            "model.n_tokens": 4,
            "model.dim": 16,
            "model.head_hidden": 16,
            "model.encoder_hidden": 16,
            "model.n_heads": 2,
        }
    )
    res = run_benchmark(
        data, ["moe-retriever", "mean", "zero"], [0.3, 0.5, 0.7], [0], cfg, None, log=None
    )
    assert not res.meta["failures"]
    df = pd.DataFrame(res.rows)
    fid = df[df.metric == "fidelity_cosine"].pivot_table(
        index="missing_rate", columns="method", values="value"
    )
    assert len(fid) == 3
    for rate, row in fid.iterrows():
        assert row["moe-retriever"] > row["mean"], (rate, row.to_dict())
        assert row["moe-retriever"] > row["zero"], (rate, row.to_dict())


# ---------------------------------------------------------------------------- probe, specificity
def test_specificity_hand_case_and_identical_fills_score_zero():
    true = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # perfect fills: own cosine 1; others: entry 0 vs (0,1),(1,1) -> 0, 1/sqrt2
    spec = specificity(true.copy(), true)
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(spec, [1 - r / 2, 1 - r / 2, 1 - r])
    # the same fill for every sample: mean specificity exactly 0, whatever its cosine
    same = np.tile([[0.3, 0.7]], (3, 1))
    assert specificity(same, true).mean() == pytest.approx(0.0, abs=1e-12)
    assert specificity(np.zeros((3, 2)), true).mean() == pytest.approx(0.0)
    assert specificity(true[:1], true[:1]).size == 0


def _probe_case(seed: int = 0):
    """Tokens (N, 2 modalities, P=2, D=3) and features linear in the tokens of each modality."""
    rng = np.random.default_rng(seed)
    n_tr, n_te = 80, 30
    tok_tr = rng.normal(size=(n_tr, 2, 2, 3))
    tok_te = rng.normal(size=(n_te, 2, 2, 3))
    w = {m: rng.normal(size=(6, f)) for m, f in (("a", 4), ("b", 5))}
    feats_tr = {m: tok_tr[:, j].reshape(n_tr, 6) @ w[m] for j, m in enumerate("ab")}
    feats_te = {m: tok_te[:, j].reshape(n_te, 6) @ w[m] for j, m in enumerate("ab")}
    hidden = np.zeros((n_te, 2), bool)
    hidden[:20, 0] = True
    hidden[10:, 1] = True
    return tok_tr, feats_tr, np.ones((n_tr, 2), bool), tok_te, feats_te, hidden


def test_probe_r2_perfect_fill_is_one_and_training_mean_fill_is_zero():
    tok_tr, f_tr, obs_tr, tok_te, f_te, hidden = _probe_case()
    perfect = probe_fidelity(tok_tr, f_tr, obs_tr, tok_te, tok_te, f_te, hidden, ["a", "b"])
    assert perfect["fidelity_probe_r2"] == pytest.approx(1.0, abs=1e-3)
    assert perfect["fidelity_probe_r2/b"] == pytest.approx(1.0, abs=1e-3)
    assert perfect["fidelity_specificity"] > 0.5
    # every hidden entry filled with the training-mean token: the ridge (with intercept)
    # predicts the training-mean features there, so R^2 is ~0 (SST is against that mean)
    mean_fill = np.broadcast_to(tok_tr.mean(0, keepdims=True), tok_te.shape).copy()
    flat = probe_fidelity(tok_tr, f_tr, obs_tr, mean_fill, tok_te, f_te, hidden, ["a", "b"])
    assert flat["fidelity_probe_r2"] == pytest.approx(0.0, abs=0.1)
    assert flat["fidelity_specificity"] == pytest.approx(0.0, abs=1e-12)
    # the overall R^2 weights modalities by their hidden entries (20 and 20 here)
    assert flat["fidelity_probe_r2"] == pytest.approx(
        (flat["fidelity_probe_r2/a"] + flat["fidelity_probe_r2/b"]) / 2
    )
    # only training rows that observe the modality fit the probe: corrupt the others
    obs_tr[:40, 0] = False
    f_bad = {**f_tr, "a": f_tr["a"].copy()}
    f_bad["a"][:40] = 1e6
    again = probe_fidelity(tok_tr, f_bad, obs_tr, tok_te, tok_te, f_te, hidden, ["a", "b"])
    assert again["fidelity_probe_r2/a"] == pytest.approx(1.0, abs=1e-3)


# Completed tokens of different samples must not collapse onto one typical token. A tiny
# configuration, about 35 s on one shared CPU thread, hence `slow`. Measured at seed 0 (this
# test, `-s` prints them): moe-retriever cosine 0.745 but specificity only 0.066 overall
# (0.059-0.073 per modality), probe R^2 -0.96 (zero fill: -0.90): the completions sit close to
# a typical token and carry little sample-specific content in this short run. The bar, 0.03,
# is below half the measured value; a collapsed fill scores 0 (the zero method, exactly).
@pytest.mark.slow
def test_trained_moe_retriever_completions_are_sample_specific():
    import pandas as pd

    from moe_retriever.benchmark.harness import benchmark_config, run_benchmark
    from moe_retriever.datasets.synthetic import make_synthetic

    data = make_synthetic(
        n_samples=300, n_modalities=3, dims=10, latent_dim=4, noise=0.3, n_classes=3, seed=0
    )
    cfg = benchmark_config(
        **{
            "train.epochs": 8,
            "train.warmup_epochs": 2,
            "train.patience": None,
            "model.n_tokens": 2,
            "model.dim": 16,
            "model.head_hidden": 16,
            "model.encoder_hidden": 16,
            "model.n_heads": 2,
        }
    )
    res = run_benchmark(data, ["moe-retriever", "zero"], [0.4], [0], cfg, None, log=None)
    assert not res.meta["failures"], res.meta["failures"]
    df = pd.DataFrame(res.rows).set_index(["method", "metric"])["value"]
    print(df.filter(like="fidelity").to_string())
    assert df["moe-retriever", "fidelity_specificity"] > 0.03
    assert df["zero", "fidelity_specificity"] == pytest.approx(0.0, abs=1e-9)
    for method in ("moe-retriever", "zero"):
        for m in data.modalities:
            assert np.isfinite(df[method, f"fidelity_probe_r2/{m}"])
