"""The harness: same splits and masks for every method; tables computed from the raw rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from moe_retriever.benchmark import harness
from moe_retriever.benchmark.harness import (
    MethodResult,
    RunInputs,
    left_out_methods,
    list_methods,
    register_method,
    resolve_methods,
    run_benchmark,
)
from moe_retriever.benchmark.report import markdown_table, summarize
from moe_retriever.data.core import MultimodalData


@pytest.fixture
def spies():
    """Two fake methods that record what they receive and predict the training prior."""
    seen: dict[str, list[dict]] = {"spy-a": [], "spy-b": []}

    def make(name: str):
        def run(inputs: RunInputs) -> MethodResult:
            seen[name].append(
                {
                    "rate": inputs.rate,
                    "seed": inputs.seed,
                    "train": inputs.train.ids.tolist(),
                    "val": inputs.val.ids.tolist(),
                    "test": inputs.test.ids.tolist(),
                    "observed": np.concatenate(
                        [inputs.train.observed, inputs.val.observed, inputs.test.observed]
                    ),
                    "hidden": inputs.hidden_test.copy(),
                    "test_full_observed": inputs.test_full.observed.copy(),
                }
            )
            prior = np.bincount(inputs.train.y, minlength=3) / inputs.train.n_samples
            proba = np.tile(prior, (inputs.test.n_samples, 1))
            # a deterministic "fidelity" that differs per seed, to check aggregation
            fid = {"fidelity_cosine": 0.1 * (inputs.seed + 1), "fidelity_mse": 1.0}
            return MethodResult(proba, fid if inputs.hidden_test.any() else None)

        return run

    for name in seen:
        register_method(name, "completion", make(name))
    yield seen
    for name in seen:
        harness._METHODS.pop(name, None)


def test_every_method_gets_the_same_split_and_mask(tiny, spies, tmp_path):
    res = run_benchmark(tiny, ["spy-a", "spy-b"], [0.0, 0.5], [0, 1], out=None, log=None)
    assert not res.meta["failures"]
    a, b = spies["spy-a"], spies["spy-b"]
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert (ra["rate"], ra["seed"]) == (rb["rate"], rb["seed"])
        for key in ("train", "val", "test"):
            assert ra[key] == rb[key]
        np.testing.assert_array_equal(ra["observed"], rb["observed"])
        np.testing.assert_array_equal(ra["hidden"], rb["hidden"])
        assert not set(ra["train"]) & set(ra["test"])
        assert not set(ra["val"]) & set(ra["test"])
    by = {(r["rate"], r["seed"]): r for r in a}
    # rate 0: natural missingness only, nothing hidden
    pos = {s: i for i, s in enumerate(tiny.ids)}
    for seed in (0, 1):
        r0 = by[(0.0, seed)]
        order = [pos[s] for s in r0["train"] + r0["val"] + r0["test"]]
        np.testing.assert_array_equal(r0["observed"], tiny.observed[order])
        assert not r0["hidden"].any()
        # rate 0.5: the simulator only hides, and hidden = full & ~masked on the test part
        r5 = by[(0.5, seed)]
        assert r5["train"] == r0["train"]  # one split per seed, whatever the rate
        assert (r5["observed"] <= tiny.observed[order]).all()
        assert r5["hidden"].any()
        n_test = len(r5["test"])
        np.testing.assert_array_equal(
            r5["hidden"], r5["test_full_observed"] & ~r5["observed"][-n_test:]
        )
    # different seeds -> different splits and masks
    assert by[(0.5, 0)]["test"] != by[(0.5, 1)]["test"]


def test_aggregate_tables_match_the_raw_rows(tiny, spies, tmp_path):
    res = run_benchmark(
        tiny, ["spy-a", "lr-mean-impute"], [0.0, 0.4], [0, 1, 2], out=tmp_path, log=None
    )
    for name in ("results.csv", "results.md", "results.json"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "plots" / "macro_f1.png").is_file()
    assert (tmp_path / "plots" / "fidelity_cosine.png").is_file()
    raw = pd.read_csv(tmp_path / "results.csv")
    assert list(raw.columns) == [
        "dataset",
        "method",
        "kind",
        "missing_rate",
        "seed",
        "metric",
        "value",
        "split_seed",
        "fold",
    ]
    assert (raw["split_seed"] == raw["seed"]).all() and (raw["fold"] == 0).all()
    # one row per (method, rate, seed, metric)
    assert not raw.duplicated(["method", "missing_rate", "seed", "metric"]).any()
    assert set(raw["seed"]) == {0, 1, 2}
    payload = json.loads((tmp_path / "results.json").read_text())
    summary = pd.DataFrame(payload["summary"])
    for (method, rate, metric), grp in raw.groupby(["method", "missing_rate", "metric"]):
        row = summary[
            (summary.method == method) & (summary.missing_rate == rate) & (summary.metric == metric)
        ]
        assert len(row) == 1
        vals = grp["value"].dropna().to_numpy()
        if vals.size == 0:
            continue
        assert row["mean"].iloc[0] == pytest.approx(vals.mean())
        expected_std = vals.std(ddof=1) if vals.size > 1 else 0.0
        assert row["std"].iloc[0] == pytest.approx(expected_std)
        assert row["n"].iloc[0] == vals.size
    # fidelity only where entries were hidden: rate 0.4, mean of 0.1, 0.2, 0.3
    fid = raw[(raw.metric == "fidelity_cosine") & (raw.method == "spy-a")]
    assert set(fid["missing_rate"]) == {0.4}
    md = (tmp_path / "results.md").read_text()
    assert "0.200 ± 0.100" in md
    # the Markdown table is the summary, cell by cell
    table = markdown_table(summarize(raw), "macro_f1", bold_best=False)
    assert table in md.replace("**", "")
    assert res.meta["masks"]["rate=0.4/seed=1"]["achieved_rate"] == pytest.approx(0.4, abs=0.02)


def test_failures_are_recorded_and_the_run_goes_on(tiny, tmp_path):
    def boom(inputs: RunInputs) -> MethodResult:
        raise RuntimeError("exploded on purpose")

    register_method("boom", "completion", boom)
    try:
        res = run_benchmark(tiny, ["boom", "lr-mean-impute"], [0.0], [0], out=tmp_path, log=None)
    finally:
        harness._METHODS.pop("boom", None)
    assert res.meta["failures"][0]["method"] == "boom"
    assert "exploded on purpose" in res.meta["failures"][0]["error"]
    assert {r["method"] for r in res.rows} == {"lr-mean-impute"}
    assert "exploded on purpose" in (tmp_path / "results.md").read_text()


def test_method_groups_and_unknown_names():
    everything = resolve_methods("all")
    for name in (
        "moe-retriever",
        "zero",
        "official-average",
        "mean",
        "bank",
        "knn",
        "complete-case",
        "late-fusion",
        "lr-late-fusion",
        "lr-mean-impute",
        "hgb",
    ):
        assert name in everything
    assert resolve_methods(["anchors"]) == list_methods("anchor")
    assert resolve_methods(["zero", "zero", "hgb"]) == ["zero", "hgb"]
    with pytest.raises(ValueError, match="unknown benchmark method 'nope'"):
        resolve_methods(["nope"])


def test_groups_leave_out_slow_methods_unless_named_and_heads_have_their_kind():
    """``all`` leaves out I2MoE (slow at the defaults) and says why; naming it brings it
    back. The head presets are of kind ``head``, not ``completion``."""
    assert list_methods("head") == ["i2m2", "i2moe"]
    assert "i2m2" not in list_methods("completion")
    everything = resolve_methods("all")
    assert "i2moe" not in everything and "i2m2" in everything
    left = left_out_methods("all")
    assert list(left) == ["i2moe"] and "23-38x" in left["i2moe"]
    assert resolve_methods(["heads"]) == ["i2m2"] and list(left_out_methods(["heads"])) == ["i2moe"]
    assert "i2moe" in resolve_methods(["all", "i2moe"])
    assert left_out_methods(["all", "i2moe"]) == {} and left_out_methods(["zero"]) == {}


def test_summary_ignores_nan_values():
    rows = [
        {
            "dataset": "d",
            "method": "m",
            "kind": "anchor",
            "missing_rate": 0.0,
            "seed": s,
            "metric": "auroc",
            "value": v,
        }
        for s, v in enumerate([0.5, math.nan, 0.7])
    ]
    s = summarize(rows)
    assert s["mean"].iloc[0] == pytest.approx(0.6)
    assert s["n"].iloc[0] == 2


def test_deep_methods_end_to_end_fidelity_and_router(tiny: MultimodalData, tmp_path):
    """Tiny real run: deep methods get fidelity rows at rate > 0, moe-retriever a router."""
    from moe_retriever.benchmark.harness import benchmark_config

    cfg = benchmark_config(
        **{
            "train.epochs": 3,
            "train.warmup_epochs": 1,
            "train.batch_size": 16,
            "model.n_tokens": 2,
            "model.dim": 8,
            "model.head_hidden": 8,
            "model.encoder_hidden": 8,
            "model.n_heads": 2,
        }
    )
    res = run_benchmark(
        tiny,
        ["moe-retriever", "mean", "complete-case", "none"],
        [0.0, 0.5],
        [0],
        cfg,
        tmp_path,
        log=None,
    )
    assert not res.meta["failures"], res.meta["failures"]
    raw = pd.DataFrame(res.rows)
    fid = raw[raw.metric == "fidelity_cosine"]
    # "none" fills nothing (masked mode): no fidelity to report, not a cosine of 0
    assert set(fid["method"]) == {"moe-retriever", "mean", "complete-case"}
    assert set(fid["missing_rate"]) == {0.5}
    assert ((fid["value"] >= -1) & (fid["value"] <= 1)).all()
    ent = raw[raw.metric == "router_entropy"]
    assert set(ent["method"]) == {"moe-retriever"} and len(ent) == 2
    assert ((ent["value"] >= 0) & (ent["value"] <= 1 + 1e-9)).all()
    assert set(res.meta["routing"]) == {
        "moe-retriever rate=0/seed=0",
        "moe-retriever rate=0.5/seed=0",
    }
    routing = res.meta["routing"]["moe-retriever rate=0.5/seed=0"]
    assert set(routing["per_target"]) <= set(tiny.modalities)
    for t in routing["per_target"].values():
        assert sum(t["shares"].values()) == pytest.approx(1.0)
    md = (tmp_path / "results.md").read_text()
    assert "router inspection" in md and "fidelity" in md.lower()


def test_vary_init_holds_split_and_mask_and_varies_the_model_seed(tiny, spies, tmp_path):
    res = run_benchmark(
        tiny, ["spy-a"], [0.5], [0, 1, 2], out=tmp_path, log=None, vary="init", split_seed=7
    )
    runs = spies["spy-a"]
    assert [r["seed"] for r in runs] == [0, 1, 2]
    for r in runs[1:]:
        for key in ("train", "val", "test"):
            assert r[key] == runs[0][key]
        np.testing.assert_array_equal(r["observed"], runs[0]["observed"])
    # the fixed split is the one split seed 7 draws in the default mode
    default = run_benchmark(tiny, ["spy-b"], [0.5], [7], log=None)
    assert spies["spy-b"][0]["test"] == runs[0]["test"]
    np.testing.assert_array_equal(spies["spy-b"][0]["observed"], runs[0]["observed"])
    assert default.meta["vary"] == "split"
    raw = pd.read_csv(tmp_path / "results.csv")
    assert set(raw["split_seed"]) == {7} and set(raw["seed"]) == {0, 1, 2}
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["vary"] == "init" and payload["split_seed"] == 7
    md = (tmp_path / "results.md").read_text()
    assert "mode: initialisation only" in md.split("##")[0]
    assert "split seed 7" in md
    assert res.meta["mode"].startswith("mode: initialisation only")


def test_cv_folds_test_every_sample_once_per_repeat_with_shared_masks(tiny, spies, tmp_path):
    res = run_benchmark(
        tiny, ["spy-a", "spy-b"], [0.5], [0, 1], out=tmp_path, log=None, cv=3, references=["spy-b"]
    )
    a, b = spies["spy-a"], spies["spy-b"]
    assert len(a) == len(b) == 6  # 2 repeats x 3 folds
    for ra, rb in zip(a, b):
        assert ra["test"] == rb["test"] and ra["train"] == rb["train"]
        np.testing.assert_array_equal(ra["observed"], rb["observed"])
    pos = {s: i for i, s in enumerate(tiny.ids)}
    for seed in (0, 1):
        runs = [r for r in a if r["seed"] == seed]
        tested = [i for r in runs for i in r["test"]]
        assert sorted(tested) == sorted(tiny.ids.tolist())  # each sample tested exactly once
        for r in runs:
            assert not set(r["train"]) & set(r["test"]) and not set(r["val"]) & set(r["test"])
            assert not set(r["train"]) & set(r["val"])
            assert len(r["train"]) + len(r["val"]) + len(r["test"]) == tiny.n_samples
            # stratified: every class in every test fold, sizes within one per class
            counts = np.bincount(tiny.y[[pos[i] for i in r["test"]]], minlength=3)
            assert counts.min() >= 9 and counts.max() - counts.min() <= 1
            # val carved from the rest with val_fraction (default 0.15) of the rest
            rest = len(r["train"]) + len(r["val"])
            assert len(r["val"]) == pytest.approx(0.15 * rest, abs=2)
        # one mask per (rate, seed): the same entries hidden in every fold of a repeat
        full = {}
        for r in runs:
            order = r["train"] + r["val"] + r["test"]
            for sid, row in zip(order, r["observed"]):
                full.setdefault(sid, row)
                np.testing.assert_array_equal(full[sid], row)
    assert [r["test"] for r in a if r["seed"] == 0] != [r["test"] for r in a if r["seed"] == 1]
    raw = pd.read_csv(tmp_path / "results.csv")
    assert set(zip(raw["seed"], raw["fold"])) == {(s, f) for s in (0, 1) for f in range(3)}
    cmp = [c for c in res.meta["comparisons"] if c["metric"] == "macro_f1"]
    assert cmp and all(c["interval"] == "corrected-t" and c["n"] == 6 for c in cmp)
    assert res.meta["test_train_ratio"] == pytest.approx(30 / 51, abs=0.05)
    md = (tmp_path / "results.md").read_text()
    assert "Nadeau-Bengio" in md and "repeated stratified 3-fold" in md
    with pytest.raises(ValueError, match="bootstrap"):
        run_benchmark(tiny, ["spy-a"], [0.5], [0], log=None, cv=3, interval="bootstrap")
    with pytest.raises(ValueError, match="exclude each other"):
        run_benchmark(tiny, ["spy-a"], [0.5], [0], log=None, cv=3, vary="init")


def test_references_and_a_failed_run_drops_only_that_unit(tiny, spies, tmp_path):
    def flaky(inputs: RunInputs) -> MethodResult:
        if inputs.seed == 1:
            raise RuntimeError("seed 1 fails on purpose")
        proba = np.zeros((inputs.test.n_samples, 3))
        proba[np.arange(inputs.test.n_samples), inputs.test.y] = 1.0  # perfect
        return MethodResult(proba)

    register_method("flaky", "completion", flaky)
    try:
        res = run_benchmark(
            tiny,
            ["flaky", "spy-a", "lr-mean-impute"],
            [0.0],
            [0, 1, 2],
            out=tmp_path,
            log=None,
            references=["spy-a"],
        )
    finally:
        harness._METHODS.pop("flaky", None)
    comps = {(c["method"], c["metric"]): c for c in res.meta["comparisons"]}
    assert {c["reference"] for c in res.meta["comparisons"]} == {"spy-a"}
    f1 = comps[("flaky", "macro_f1")]
    assert f1["n"] == 2 and f1["units"] == [[0, 0], [2, 0]] and f1["dropped"] == [[1, 0]]
    raw = pd.DataFrame(res.rows)
    prior = raw[(raw.method == "spy-a") & (raw.metric == "macro_f1")].set_index("seed")["value"]
    assert f1["mean"] == pytest.approx(float(np.mean([1 - prior[0], 1 - prior[2]])))
    assert comps[("lr-mean-impute", "macro_f1")]["n"] == 3
    md = (tmp_path / "results.md").read_text()
    assert "### macro_f1: difference to `spy-a`" in md
    assert "(n=2)" in md and "Not paired (a failed run or an undefined score): seed 1." in md
    assert "`flaky` is distinguishably above `spy-a`" in md
    with pytest.raises(ValueError, match="reference 'nope' is not among"):
        run_benchmark(tiny, ["spy-a"], [0.0], [0], log=None, references=["nope"])


def test_default_references_are_the_best_anchor_per_rate_and_zero():
    from moe_retriever.benchmark.stats import compare_to_references

    rows = []
    scores = {  # method -> rate -> per-seed macro_f1
        "zero": {0.0: [0.5, 0.6, 0.7], 0.5: [0.4, 0.5, 0.6]},
        "a1": {0.0: [0.8, 0.8, 0.9], 0.5: [0.3, 0.3, 0.3]},
        "a2": {0.0: [0.7, 0.7, 0.7], 0.5: [0.6, 0.6, 0.7]},
        "deep": {0.0: [0.9, 0.9, 1.0], 0.5: [0.7, 0.8, 0.9]},
    }
    for m, by_rate in scores.items():
        for rate, vals in by_rate.items():
            for seed, v in enumerate(vals):
                rows.append(
                    {
                        "method": m,
                        "missing_rate": rate,
                        "seed": seed,
                        "fold": 0,
                        "metric": "macro_f1",
                        "value": v,
                    }
                )
    kinds = {"zero": "completion", "a1": "anchor", "a2": "anchor", "deep": "completion"}
    comps = compare_to_references(rows, kinds, metrics=["macro_f1"])
    best = {c.missing_rate: c.reference for c in comps if c.role == "best-anchor"}
    assert best == {0.0: "a1", 0.5: "a2"}
    deep0 = next(c for c in comps if c.method == "deep" and c.reference == "a1")
    assert deep0.mean == pytest.approx(0.1) and deep0.sd == pytest.approx(0.0)
    assert {c.reference for c in comps if c.role == "zero"} == {"zero"}
    assert not any(c.method == c.reference for c in comps)
    boot = compare_to_references(rows, kinds, ["zero"], ["macro_f1"], interval="bootstrap")
    assert {c.interval for c in boot} == {"bootstrap"} and {c.role for c in boot} == {"zero"}


def test_method_variants_per_class_rows_and_forest_plots(tiny: MultimodalData, tmp_path):
    """``METHOD[key=value, ...]`` runs beside METHOD on the same splits with its overrides;
    every method gets per-class rows; results.md pairs the variant with the method on all four
    headline metrics and per class; a forest plot per reference role is written."""
    from moe_retriever.benchmark.harness import benchmark_config

    cfg = benchmark_config(
        **{
            "train.epochs": 2,
            "train.warmup_epochs": 1,
            "model.n_tokens": 2,
            "model.dim": 8,
            "model.head_hidden": 8,
            "model.encoder_hidden": 8,
            "model.n_heads": 2,
        }
    )
    variant = "zero[train.posthoc_adjust=1, train.class_weights=balanced]"
    seen: list[dict] = []
    base = harness._variant_runner

    def spy(method, overrides):
        runner = base(method, overrides)

        def run(inputs: RunInputs) -> MethodResult:
            from moe_retriever.training.config import apply_overrides

            seen.append(apply_overrides(inputs.config, list(overrides)).to_dict()["train"])
            return runner(inputs)

        return run

    harness._variant_runner = spy
    try:
        res = run_benchmark(
            tiny,
            ["zero", variant, "lr-late-fusion"],
            [0.0],
            [0, 1],
            cfg,
            tmp_path,
            log=None,
            references=["zero"],
        )
    finally:
        harness._variant_runner = base
    assert not res.meta["failures"], res.meta["failures"]
    assert len(seen) == 2 and all(
        t["posthoc_adjust"] == 1 and t["class_weights"] == "balanced" for t in seen
    )
    raw = pd.DataFrame(res.rows)
    assert set(raw["method"]) == {"zero", variant, "lr-late-fusion"}
    for m in ("zero", variant, "lr-late-fusion"):
        sub = raw[(raw.method == m) & (raw.seed == 0)]
        for k in tiny.class_names:
            assert {f"recall/{k}", f"f1/{k}", f"support/{k}"} <= set(sub["metric"])
        support = sub[sub.metric.str.startswith("support/")]["value"].sum()
        assert support == res.meta["masks"]["rate=0/seed=0"]["n_test"]
    paired = {(c["method"], c["metric"]) for c in res.meta["comparisons"]}
    for metric in ("macro_f1", "balanced_accuracy", "accuracy", "auroc"):
        assert (variant, metric) in paired
    md = (tmp_path / "results.md").read_text()
    assert "## Per class (test)" in md and "paired recall difference per class" in md
    assert "forest_zero.png" in md and (tmp_path / "plots" / "forest_zero.png").is_file()
    assert variant not in list_methods()  # a run's variant is not a listed method
    with pytest.raises(ValueError, match=r"train\.posthoc"):
        resolve_methods(["zero[train.posthoc=1]"])
    with pytest.raises(ValueError, match="not a deep method"):
        resolve_methods(["lr-late-fusion[train.epochs=2]"])
