"""benchmarks/cohort_bar.py: each criterion of the real-cohort bar is decided from results.csv."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

from moe_retriever.benchmark.stats import COMPARISON_METRICS as METRICS

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _bar():
    spec = importlib.util.spec_from_file_location("cohort_bar", BENCH / "cohort_bar.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(
    tmp: Path, name: str, offsets: dict[str, float], rates: tuple[float, ...] = (0.0,)
) -> Path:
    """results.csv of three methods over 6 seeds; ``offsets``: method -> shift over lr."""
    rows = []
    for rate, seed in ((r, s) for r in rates for s in range(6)):
        for metric in METRICS:
            base = 0.6 + 0.01 * ((seed * 7) % 5)
            for method, shift in offsets.items():
                noise = 0.002 * ((seed + len(method)) % 3 - 1)
                value = base + shift + (noise if method != "lr-late-fusion" else 0.0)
                rows.append(
                    {
                        "dataset": "cohort",
                        "method": method,
                        "missing_rate": rate,
                        "seed": seed,
                        "metric": metric,
                        "value": value,
                    }
                )
    folder = tmp / name
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def test_the_bar_holds_when_the_method_leads_and_nothing_beats_it(tmp_path: Path) -> None:
    a = _folder(tmp_path, "a", {"moe-retriever": 0.02, "zero": 0.0, "lr-late-fusion": 0.0})
    out = tmp_path / "bar.json"
    res = _bar().main([str(a), "--json", str(out)])
    assert all(res["verdict"].values())
    assert json.loads(out.read_text())["verdict"] == res["verdict"]
    assert {r["metric"] for r in res["rows"]} == set(METRICS)


def test_each_failure_is_named(tmp_path: Path) -> None:
    b = _folder(tmp_path, "b", {"moe-retriever": -0.003, "zero": 0.03, "lr-late-fusion": 0.0})
    res = _bar().main([str(b)])
    v = res["verdict"]
    assert not v["1 mean >= anchor on macro-F1 and balanced accuracy at every rate"]
    assert not v["3 lower end > 0 on macro-F1 or balanced accuracy somewhere"]
    assert not v["4 no other method distinguishably above"]
    assert any("zero" in s for r in res["rows"] for s in r["above_method"])


def test_a_method_fitted_later_is_pooled_with_the_box_and_the_old_default_excluded(
    tmp_path: Path,
) -> None:
    # the box (anchor, zero, an old default) in one folder, the new default fitted later on
    # the same splits in another
    box = _folder(tmp_path, "box", {"moe-retriever": 0.08, "zero": 0.03, "lr-late-fusion": 0.0})
    later = _folder(tmp_path, "later", {"moe-retriever[new]": 0.05})
    pooled = f"{box}+{later}"
    res = _bar().main([pooled, "--method", "moe-retriever[new]", "--exclude", "moe-retriever"])
    assert res["rows"][0]["data"] == "box+later"
    assert all(r["n"] == 6 for r in res["rows"])
    assert all(res["verdict"].values())  # zero (+0.03) is below the new method (+0.05)
    # without --exclude the old default (+0.08) is in the box, and above the new one
    kept = _bar().check([pooled], "moe-retriever[new]", "lr-late-fusion")
    assert not kept["verdict"]["4 no other method distinguishably above"]
    assert all(s.startswith("moe-retriever ") for r in kept["rows"] for s in r["above_method"])


def test_same_as_stands_in_only_where_the_new_method_was_not_fitted(tmp_path: Path) -> None:
    """A new default fitted at rate 0 only; at 0.5 it is bit for bit the old one, whose rows
    stand for it there; the old default leaves the box at both rates."""
    box = _folder(
        tmp_path,
        "box",
        {"moe-retriever": 0.01, "zero": 0.0, "lr-late-fusion": 0.0},
        rates=(0.0, 0.5),
    )
    later = _folder(tmp_path, "later", {"moe-retriever[new]": 0.04})
    res = _bar().main(
        [f"{box}+{later}", "--method", "moe-retriever[new]", "--same-as", "moe-retriever"]
    )
    by_rate = {r["rate"]: r for r in res["rows"] if r["metric"] == "macro_f1"}
    assert set(by_rate) == {0.0, 0.5}
    assert abs(by_rate[0.0]["diff"] - 0.04) < 0.003  # its own rows at rate 0
    assert abs(by_rate[0.5]["diff"] - 0.01) < 0.003  # the old default's at 0.5
    assert all(r["n"] == 6 for r in res["rows"])
    assert any("0.5" in n and "--same-as" in n for n in res["notes"])
    # at rate 0 the old default (+0.01) would not be above the new one anyway; with the
    # old default ahead, --same-as must still take it out of the box
    ahead = _folder(
        tmp_path,
        "ahead",
        {"moe-retriever": 0.08, "zero": 0.0, "lr-late-fusion": 0.0},
        rates=(0.0, 0.5),
    )
    res = _bar().check(
        [f"{ahead}+{later}"], "moe-retriever[new]", "lr-late-fusion", same_as="moe-retriever"
    )
    assert res["verdict"]["4 no other method distinguishably above"]


def test_plots_draws_a_forest_per_cohort(tmp_path: Path) -> None:
    a = _folder(tmp_path, "a", {"moe-retriever": 0.02, "zero": 0.0, "lr-late-fusion": 0.0})
    b = _folder(tmp_path, "b", {"moe-retriever": 0.01, "zero": 0.0, "lr-late-fusion": 0.0})
    res = _bar().main([str(a), str(b), "--plots", str(tmp_path / "plots")])
    drawn = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert drawn == ["forest_a.png", "forest_b.png"]
    assert all((tmp_path / "plots" / n).stat().st_size > 1000 for n in drawn)
    assert sum("forest plot" in n for n in res["notes"]) == 2
