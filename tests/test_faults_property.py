"""Property: a data folder with one fault a user could make gives exit status 2 and ONE line
that names the file (or modality), the sample or column, and the problem; no traceback, and
no input file is changed.

Hypothesis draws the fault, the modality file, the row, the column and the bad token; the
folder is written as plain CSV files without meta.json, the way a new user writes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_retriever.cli import main
from moe_retriever.datasets import load_dataset

FAULTS = [
    "text_cell",
    "inf_cell",
    "duplicate_column",
    "semicolon",
    "empty_file",
    "duplicate_id",
    "missing_label",
    "unlabelled_sample",
    "id_column_only",
]


def _write_clean(folder: Path) -> dict[str, pd.DataFrame]:
    data = load_dataset(
        "synthetic", n_samples=16, n_modalities=3, dims=[3, 4, 2], n_classes=2, seed=0
    )
    tables = {}
    for j, m in enumerate(data.modalities):
        rows = data.observed[:, j]
        frame = pd.DataFrame(data.X[m][rows], columns=data.feature_names[m]).astype(object)
        frame.insert(0, "id", data.ids[rows])
        tables[m] = frame
    names = np.asarray(data.class_names, dtype=object)
    tables["labels"] = pd.DataFrame({"id": data.ids, "label": names[data.y]}, dtype=object)
    return tables


def _inject(
    tables: dict[str, pd.DataFrame], fault: str, m: str, row: int, col: int, token: str
) -> tuple[dict[str, str], list[str]]:
    """File texts with the fault, and the words the error line must contain."""
    frame = tables[m].copy()
    row %= len(frame)
    col = 1 + col % (frame.shape[1] - 1)  # a feature column, never the id
    sample, column = str(frame.iloc[row, 0]), str(frame.columns[col])
    texts = {name: t.to_csv(index=False) for name, t in tables.items()}
    file = f"{m}.csv"
    if fault == "text_cell":
        frame.iloc[row, col] = token
        texts[m] = frame.to_csv(index=False)
        expect = [file, repr(sample), repr(column), "non-numeric", repr(token)]
    elif fault == "inf_cell":
        frame.iloc[row, col] = "inf"
        texts[m] = frame.to_csv(index=False)
        expect = [file, repr(sample), repr(column), "infinite"]
    elif fault == "duplicate_column":
        other = frame.columns[1] if col != 1 else frame.columns[2]
        frame.columns = [c if c != other else column for c in frame.columns]
        texts[m] = frame.to_csv(index=False)
        expect = [file, "column names", "duplicate", repr(column)]
    elif fault == "semicolon":
        texts[m] = frame.to_csv(index=False, sep=";")
        expect = [file, "comma-separated"]
    elif fault == "empty_file":
        texts[m] = ""
        expect = [file, "empty"]
    elif fault == "duplicate_id":
        frame = pd.concat([frame, frame.iloc[[row]]], ignore_index=True)
        texts[m] = frame.to_csv(index=False)
        expect = [file, "sample ids", "duplicate", repr(sample)]
    elif fault == "missing_label":
        labels = tables["labels"].copy()
        sample = str(labels.iloc[row % len(labels), 0])
        labels.iloc[row % len(labels), 1] = None
        texts["labels"] = labels.to_csv(index=False)
        expect = ["missing labels", repr(sample)]
    elif fault == "unlabelled_sample":
        labels = tables["labels"]
        texts["labels"] = labels[labels["id"] != sample].to_csv(index=False)
        expect = ["no label", repr(sample)]
    else:  # id_column_only
        texts[m] = frame[["id"]].to_csv(index=False)
        expect = [file, "feature column"]
    return texts, expect


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    fault=st.sampled_from(FAULTS),
    modality=st.sampled_from(["m0", "m1", "m2"]),
    row=st.integers(0, 40),
    col=st.integers(0, 10),
    token=st.sampled_from(["abc", "1,5", "?", "--", "yes"]),
    command=st.sampled_from(["describe", "train"]),
)
def test_a_faulty_folder_gives_one_line_and_changes_nothing(
    fault: str, modality: str, row: int, col: int, token: str, command: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        texts, expect = _inject(_write_clean(folder), fault, modality, row, col, token)
        for name, text in texts.items():
            (folder / f"{name}.csv").write_text(text)
        before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}
        argv = ["data", "describe", str(folder)]
        if command == "train":  # the data is read before any training or any file is written
            argv = ["train", str(folder), "--out", str(Path(tmp) / "run")]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(argv)
        line = err.getvalue().strip()
        assert status == 2, (fault, line)
        assert line.count("\n") == 0 and line.startswith("moe-retriever: error:"), line
        assert "Traceback" not in line
        for word in expect:
            assert word in line, (fault, word, line)
        after = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}
        assert after == before
        assert not (Path(tmp) / "run").exists()


def test_a_faulty_folder_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    texts, _ = _inject(_write_clean(folder), "text_cell", "m1", 3, 0, "abc")
    for name, text in texts.items():
        (folder / f"{name}.csv").write_text(text)
    res = subprocess.run(
        [sys.executable, "-m", "moe_retriever.cli", "data", "describe", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0
    assert "m1.csv" in res.stderr and "'abc'" in res.stderr
