"""``moe-retriever data describe``: JSON keys, the miniacc facts, text table, errors."""

from __future__ import annotations

import json

import numpy as np

from moe_retriever.cli import main
from moe_retriever.data.readers import from_arrays, write_folder


def test_describe_miniacc_json(capsys) -> None:
    assert main(["data", "describe", "miniacc", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_samples"] == 92 and out["n_complete"] == 43
    assert list(out["modalities"]) == [
        "RNASeq2GeneNorm",
        "gistict",
        "RPPAArray",
        "Mutations",
        "miRNASeqGene",
    ]
    assert out["modalities"]["RPPAArray"] == {"dim": 33, "n_observed": 46}
    combos = out["combinations"]
    assert sum(c["count"] for c in combos) == 92
    assert combos[0] == {"modalities": list(out["modalities"]), "count": 43}


def test_describe_text(capsys) -> None:
    assert main(["data", "describe", "miniacc"]) == 0
    text = capsys.readouterr().out
    assert "samples: 92" in text and "complete (all 5 modalities): 43" in text
    assert "alive" in text and "58" in text and "RPPAArray" in text
    assert "observed combinations (7" in text


def test_describe_folder_and_errors(tmp_path, capsys) -> None:
    d = from_arrays({"a": np.array([[1.0], [np.nan]]), "b": np.ones((2, 2))}, labels=["u", "v"])
    write_folder(d, tmp_path / "ds")
    assert main(["data", "describe", str(tmp_path / "ds"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_samples"] == 2 and out["modalities"]["a"]["n_observed"] == 1
    assert main(["data", "describe", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "not a built-in dataset" in err and "Traceback" not in err


def test_describe_modalities_picks_a_subset_of_any_source(tmp_path, capsys) -> None:
    """--modalities on a plain folder: the subset is read, the rest named in one line, a
    sample that observes none of the subset left out and counted; an absent name: exit 2."""
    d = from_arrays(
        {
            "a": np.array([[1.0], [np.nan], [2.0]]),
            "b": np.ones((3, 2)),
            "c": np.array([[1.0], [np.nan], [3.0]]),
        },
        labels=["u", "v", "u"],
    )
    write_folder(d, tmp_path / "ds")
    assert main(["data", "describe", str(tmp_path / "ds"), "--modalities", "c", "a", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert list(out["modalities"]) == ["c", "a"] and out["n_samples"] == 2
    assert "modalities b are not read" in captured.err
    assert "1 sample(s) observe none of the modalities read (c, a)" in captured.err
    assert main(["data", "describe", "miniacc", "--modalities", "gistict", "nope"]) == 2
    err = capsys.readouterr().err
    assert "modality 'nope' was asked for but is absent" in err and err.count("\n") == 1
