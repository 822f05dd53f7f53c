"""Router inspection: shares and normalised entropy of expert usage."""

from __future__ import annotations

import math

import pytest

from moe_retriever.completion.routing import routing_markdown, routing_shares


def _stats(counts_a: dict[str, int], counts_b: dict[str, int]) -> dict:
    return {
        "usage": {
            "a": {"b": {"tokens": 4, "experts": counts_a, "mean_weight": {}}},
            "b": {
                "a": {"tokens": 2, "experts": counts_b, "mean_weight": {}},
                "a+c": {"tokens": 2, "experts": counts_b, "mean_weight": {}},
            },
        },
        "fallback": {"unknown_combination": 3},
    }


def test_balanced_usage_has_entropy_one_and_single_expert_zero():
    stats = _stats({"a#0": 2, "a#1": 2, "shared#0": 2, "shared#1": 2}, {"b#0": 4})
    s = routing_shares(stats, n_candidates=2, n_shared=2)
    assert s["per_target"]["a"]["entropy"] == pytest.approx(1.0)
    assert s["per_target"]["b"]["entropy"] == pytest.approx(0.0)
    # token-weighted mean: a has 4 tokens, b has 4
    assert s["entropy"] == pytest.approx(0.5)
    assert s["per_target"]["a"]["shares"]["a#0"] == pytest.approx(0.25)
    assert s["shared_share"] == pytest.approx(4 / (8 + 8))
    assert s["per_combination"]["b <- a+c"]["entropy"] == pytest.approx(0.0)
    assert s["fallback"] == {"unknown_combination": 3}


def test_unused_eligible_experts_lower_the_entropy():
    stats = _stats({"a#0": 3, "a#1": 3}, {"b#0": 1, "b#1": 1})
    known = routing_shares(stats, n_candidates=2, n_shared=2)  # 4 eligible, 2 used
    assert known["per_target"]["a"]["entropy"] == pytest.approx(math.log(2) / math.log(4))
    inferred = routing_shares(stats)  # eligible inferred from the experts seen
    assert inferred["per_target"]["a"]["entropy"] == pytest.approx(1.0)


def test_empty_usage_and_markdown():
    s = routing_shares({"usage": {}, "fallback": {}})
    assert math.isnan(s["entropy"])
    md = routing_markdown({"rate=0.3/seed=0": routing_shares(_stats({"a#0": 1}, {"b#1": 1}))})
    assert "| rate=0.3/seed=0 | a | 4 |" in md
    assert routing_markdown({}) == ""
