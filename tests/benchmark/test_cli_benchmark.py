"""``moe-retriever benchmark``: writes the outputs; bad input is one line and exit 2."""

from __future__ import annotations

import json

from moe_retriever.cli import main


def test_benchmark_command_writes_outputs(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "benchmark",
            "synthetic",
            "--methods",
            "zero",
            "lr-late-fusion",
            "--missing-rates",
            "0",
            "0.5",
            "--seeds",
            "0",
            "1",
            "--out",
            str(out),
            "--quiet",
            "--set",
            "train.epochs=2",
            "train.warmup_epochs=1",
            "model.n_tokens=2",
            "model.dim=8",
            "model.head_hidden=8",
            "model.n_heads=2",
        ]
    )
    assert rc == 0
    for name in ("results.csv", "results.md", "results.json"):
        assert (out / name).is_file()
    payload = json.loads((out / "results.json").read_text())
    assert payload["methods"] == ["zero", "lr-late-fusion"]
    assert payload["missing_rates"] == [0.0, 0.5]
    assert payload["config"]["train"]["epochs"] == 2
    assert payload["command"].startswith("moe-retriever benchmark synthetic --methods zero")
    assert not payload["failures"]
    assert (out / "plots" / "macro_f1.png").is_file()
    printed = capsys.readouterr().out
    assert "Macro-F1" in printed and "wall time" in printed
    # the paired table: zero against the best anchor (lr-late-fusion), 2 seeds, t interval
    md = (out / "results.md").read_text()
    assert "mode: split" in md.split("##")[0]
    assert "### macro_f1: difference to the best classical anchor" in md
    assert "| rate 0 (vs lr-late-fusion) | rate 0.5 (vs lr-late-fusion) |" in md
    assert "95% paired t interval" in md and "n = 2 paired seeds" in md
    cmp = [c for c in payload["comparisons"] if c["metric"] == "macro_f1"]
    assert {(c["method"], c["reference"]) for c in cmp} == {
        ("zero", "lr-late-fusion"),
        ("lr-late-fusion", "zero"),
    }
    for c in cmp:
        assert c["n"] == 2 and c["low"] <= c["mean"] <= c["high"]
    assert "| lr-late-fusion | (reference) | (reference) |" in md
    assert "### macro_f1: difference to the best classical anchor" in printed


def test_benchmark_option_conflicts_are_one_line_exit_2(tmp_path, capsys):
    base = ["benchmark", "synthetic", "--methods", "zero", "--out", str(tmp_path)]
    for extra, needle in (
        (["--cv", "1"], "--cv needs K >= 2"),
        (["--cv", "3", "--vary", "init"], "exclude each other"),
        (["--cv", "3", "--interval", "bootstrap"], "--interval bootstrap"),
        (["--split-seed", "3"], "--vary init only"),
        (["--reference", "hgb"], "--reference 'hgb' is not among"),
        (["--seeds", "1", "1"], "distinct"),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--ray-address", "ray://head:10001"], "--backend ray only"),
    ):
        rc = main(base + extra)
        err = capsys.readouterr().err
        assert rc == 2, extra
        assert needle in err, (extra, err)
        assert len(err.strip().splitlines()) == 1


def test_unknown_method_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["benchmark", "synthetic", "--methods", "nope", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown benchmark method 'nope'" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_rate_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["benchmark", "synthetic", "--missing-rates", "1.5", "--out", str(tmp_path)])
    assert rc == 2
    assert "--missing-rates" in capsys.readouterr().err


def test_benchmark_resume_loads_the_finished_cells(tmp_path, capsys):
    args = ["benchmark", "synthetic", "--methods", "lr-mean-impute", "--missing-rates", "0"]
    args += ["--seeds", "0", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2
    first = (tmp_path / "results.csv").read_text()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "resume: 2 finished cell(s) loaded, 0 to fit" in capsys.readouterr().out
    assert (tmp_path / "results.csv").read_text() == first  # timings included: nothing refit


def test_methods_all_says_which_slow_methods_it_leaves_out(tmp_path, capsys, monkeypatch):
    """Before any training, ``--methods all`` names the slow method it leaves out and why."""
    import moe_retriever.benchmark.harness as harness

    seen = {}

    def stop(data, methods, *args, **kwargs):
        seen["methods"] = harness.resolve_methods(methods)
        seen["err"] = capsys.readouterr().err
        raise KeyboardInterrupt

    monkeypatch.setattr(harness, "run_benchmark", stop)
    args = ["benchmark", "synthetic", "--methods", "all", "--out", str(tmp_path / "b")]
    assert main([*args, "--quiet"]) == 130
    assert "i2moe" not in seen["methods"] and "i2m2" in seen["methods"]
    note = [line for line in seen["err"].splitlines() if "leaves out i2moe" in line]
    assert len(note) == 1 and "23-38x" in note[0] and "--methods all i2moe" in note[0]
