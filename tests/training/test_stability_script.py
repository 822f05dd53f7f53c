"""benchmarks/stability.py helpers: variant parsing, the sd ratio over common seeds, merging."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from moe_retriever.training.config import TrainConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stability.py"


@pytest.fixture(scope="module")
def stability() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stability_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _entry(variant: str, f1: list[float]) -> dict:
    return {
        "dataset": "d",
        "variant": variant,
        "seeds": list(range(len(f1))),
        "runs": [{"seed": i, "macro_f1": v} for i, v in enumerate(f1)],
    }


def test_parse_variant(stability: ModuleType) -> None:
    name, over = stability.parse_variant("v=train.monitor=val_loss,completion.k=5,x.y=null")
    assert name == "v" and over == {"train.monitor": "val_loss", "completion.k": 5, "x.y": None}
    with pytest.raises(ValueError, match="NAME=key=value"):
        stability.parse_variant("novalue")
    with pytest.raises(ValueError, match="not key=value"):
        stability.parse_variant("v=train.monitor")


def test_before_variant_is_todays_main_and_every_variant_is_a_valid_config(
    stability: ModuleType,
) -> None:
    # "before" writes out main's defaults at 11549f8 (the defaults this branch started from)
    before = stability.BEFORE
    assert before["train.monitor"] == "val_macro_f1" and before["train.weight_average"] == "none"
    assert before["model.dim"] == 128 and before["completion.eval_draws"] == 4
    for overrides in stability.VARIANTS.values():
        cfg = TrainConfig()
        for k, v in overrides.items():
            cfg.set(k, v)
        cfg.validate()


def test_sd_ratio_uses_common_seeds(stability: ModuleType) -> None:
    base = _entry("before", [0.4, 0.6, 0.8, 0.0])  # sd over seeds 0-2: 0.2
    r = _entry("x", [0.5, 0.6, 0.7])  # sd 0.1
    assert stability.sd_ratio(r, base) == pytest.approx(0.5)
    assert math.isnan(stability.sd_ratio(_entry("x", [0.5]), base))
    assert math.isnan(stability.sd_ratio(r, None))


def test_merge_replaces_same_dataset_and_variant(stability: ModuleType, tmp_path: Path) -> None:
    out, other = tmp_path / "out.json", tmp_path / "other.json"
    old, new, extra = _entry("before", [0.1, 0.2]), _entry("before", [0.3, 0.4]), _entry("x", [0.5])
    for e in (old, new, extra):
        e.update(macro_f1_mean=0.0, macro_f1_sd=0.0, auroc_mean=0.0, auroc_sd=0.0, fit_s_mean=1.0)
    out.write_text(json.dumps({"results": [old]}))
    other.write_text(json.dumps({"results": [new, extra]}))
    stability.merge(out, [other])
    results = json.loads(out.read_text())["results"]
    assert [(r["variant"], r["runs"][0]["macro_f1"]) for r in results] == [
        ("before", 0.3),
        ("x", 0.5),
    ]


def test_merge_combines_stages_of_one_measurement(stability: ModuleType, tmp_path: Path) -> None:
    """Two runs of the same split, mask and overrides over other model seeds become one entry
    over all seeds; a run of another split replaces instead."""
    info = {"split_digest": "s", "mask_digest": "m", "n_train": 9, "n_val": 3, "n_test": 3}

    def stage(seeds: list[int], f1: list[float], split: str = "s") -> dict:
        rows = [{"seed": s, "macro_f1": v, "auroc": v, "fit_s": 1.0} for s, v in zip(seeds, f1)]
        res = stability.summarize("d", "after", 0.0, 0, {}, {**info, "split_digest": split}, rows)
        res["complete"] = True
        return res

    out, a, b = tmp_path / "out.json", tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"results": [stage([0, 1], [0.5, 0.7])]}))
    b.write_text(json.dumps({"results": [stage([2, 3], [0.6, 0.6])]}))
    stability.merge(out, [a, b])
    (r,) = json.loads(out.read_text())["results"]
    assert r["seeds"] == [0, 1, 2, 3] and r["macro_f1_mean"] == pytest.approx(0.6)
    assert r["macro_f1_sd"] == pytest.approx(stability.sd([0.5, 0.7, 0.6, 0.6]))
    b.write_text(json.dumps({"results": [stage([4], [0.9], split="other")]}))
    stability.merge(out, [b])
    (r,) = json.loads(out.read_text())["results"]
    assert r["seeds"] == [4]
