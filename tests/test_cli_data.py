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
