"""benchmarks/decision_rule.py end to end: its tau = 1 rows are the benchmark's own (the rule
itself, moe_retriever.training.decision, is tested in tests/training/test_posthoc_select.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


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
