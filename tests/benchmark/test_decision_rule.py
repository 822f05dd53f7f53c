"""benchmarks/decision_rule.py: tau chosen on validation, the rules' probabilities, and one
end-to-end run whose tau = 1 rows are the benchmark's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def test_tau_one_is_the_librarys_post_hoc_rule(bench_script) -> None:
    from moe_retriever.training.module import adjust_logits

    script = bench_script("decision_rule")
    rng = np.random.default_rng(0)
    log_p = np.log(rng.dirichlet(np.ones(3), size=8))
    log_prior = np.log(np.array([0.7, 0.2, 0.1]))
    import torch

    expected = torch.softmax(
        adjust_logits(torch.tensor(log_p), torch.tensor(log_prior), -1.0), dim=1
    ).numpy()
    np.testing.assert_allclose(script._proba(log_p, log_prior, 1.0), expected, rtol=1e-6)


def test_the_chosen_tau_maximises_the_validation_metric_with_ties_nearest_one(
    bench_script,
) -> None:
    """Binary, 10 % minority; the model's minority probability is too low by a constant, so
    tau = 1 misses the minority and a larger tau finds it; a model that already separates
    keeps tau = 1 (every tau in the band ties)."""
    script = bench_script("decision_rule")
    y = np.array([0] * 90 + [1] * 10)
    log_prior = np.log(np.array([0.9, 0.1]))
    p1 = np.where(y == 1, 0.06, 0.02)  # ranks perfectly, but below the prior 0.1 everywhere
    log_p = np.log(np.stack([1 - p1, p1], axis=1))
    taus = tuple(round(0.1 * i, 1) for i in range(31))
    tau = script._choose(y, log_p, log_prior, taus, "balanced_accuracy")
    assert tau > 1.0
    pred = script._proba(log_p, log_prior, tau).argmax(axis=1)
    assert (pred == y).all()
    sharp = np.log(np.stack([np.where(y == 1, 0.01, 0.99), np.where(y == 1, 0.99, 0.01)], 1))
    assert script._choose(y, sharp, log_prior, taus, "balanced_accuracy") == 1.0


@pytest.mark.slow
def test_end_to_end_tau_one_rows_match_the_benchmark(tmp_path: Path, bench_script) -> None:
    from moe_retriever.benchmark.harness import run_benchmark
    from moe_retriever.datasets import load_dataset

    out = tmp_path / "rule"
    bench_script("decision_rule").main(
        ["miniacc", "--missing-rates", "0", "--seeds", "0", "--out", str(out)]
    )
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.method) == {
        "moe-retriever[decision=tau1]",
        "moe-retriever[decision=val-balanced_accuracy]",
        "moe-retriever[decision=val-macro_f1]",
    }
    auroc = rows[rows.metric == "auroc"].value
    assert np.allclose(auroc, auroc.iloc[0])  # only the decision changes
    bench = run_benchmark(
        load_dataset("miniacc"), methods=["moe-retriever"], missing_rates=[0.0], seeds=[0], log=None
    )
    ref = {r["metric"]: r["value"] for r in bench.rows if r["method"] == "moe-retriever"}
    assert {"accuracy", "balanced_accuracy", "macro_f1", "auroc"} <= set(ref)
    mine = rows[rows.method == "moe-retriever[decision=tau1]"].set_index("metric").value
    for metric in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        assert mine[metric] == pytest.approx(ref[metric], abs=1e-12)
