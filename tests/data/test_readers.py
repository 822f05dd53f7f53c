"""Constructors: arrays, pandas, folders (CSV and Parquet, round trip), scverse objects."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from moe_retriever.data.core import DataValidationError, MultimodalData
from moe_retriever.data.readers import (
    encode_labels,
    from_anndata,
    from_arrays,
    from_mudata,
    from_pandas,
    read_folder,
    write_folder,
)


def _arrays() -> dict[str, np.ndarray]:
    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    b = np.arange(8, dtype=np.float64).reshape(4, 2) + 100
    a[1] = np.nan  # sample 1 misses "a"
    b[2, 0] = np.nan  # single missing cell in an observed row
    return {"a": a, "b": b}


def test_from_arrays_nan_rows_mean_missing() -> None:
    d = from_arrays(_arrays(), labels=["x", "y", "x", "z"], ids=["p", "q", "r", "s"])
    assert d.modalities == ["a", "b"]
    assert d.observed.tolist() == [[True, True], [False, True], [True, True], [True, True]]
    assert d.class_names == ["x", "y", "z"]
    assert d.y.tolist() == [0, 1, 0, 2]
    assert d.X["a"].dtype == np.float32
    assert np.isnan(d.X["b"][2, 0]) and d.observed[2, 1]
    assert d.feature_names["a"] == ["a_0", "a_1", "a_2"]
    assert d.ids.tolist() == ["p", "q", "r", "s"]


def test_from_arrays_explicit_mask_hides_values() -> None:
    X = {"a": np.ones((3, 2)), "b": np.zeros((3, 1))}
    obs = np.array([[True, False], [True, True], [False, True]])
    d = from_arrays(X, observed=obs)
    assert d.observed.tolist() == obs.tolist()
    assert np.isnan(d.X["b"][0]).all() and np.isnan(d.X["a"][2]).all()
    assert d.ids.tolist() == ["0", "1", "2"] and d.y is None
    d2 = from_arrays(X, observed={"b": [False, True, True]})
    assert d2.observed[:, 0].all() and not d2.observed[0, 1]


def test_from_arrays_mask_observed_but_all_nan_names_samples() -> None:
    X = {"a": np.array([[1.0], [np.nan]]), "b": np.ones((2, 1))}
    with pytest.raises(DataValidationError, match=r"'a'.*'s2'.*all NaN"):
        from_arrays(X, observed=np.ones((2, 2), bool), ids=["s1", "s2"])


def test_from_arrays_explicit_class_names_order() -> None:
    d = from_arrays(_arrays(), labels=["y", "x", "y", "x"], class_names=["y", "x"])
    assert d.class_names == ["y", "x"] and d.y.tolist() == [0, 1, 0, 1]
    d2 = from_arrays(_arrays(), labels=[0, 1, 1, 0], class_names=["alive", "dead"])
    assert d2.y.tolist() == [0, 1, 1, 0] and d2.class_names == ["alive", "dead"]
    with pytest.raises(DataValidationError, match=r"'w'.*'3'.*class_names"):
        from_arrays(_arrays(), labels=["y", "x", "y", "w"], class_names=["y", "x"])


def test_numeric_labels_sorted_numerically() -> None:
    y, names = encode_labels([10, 2, 2.0, 1], ids=["a", "b", "c", "d"])
    assert names == ["1", "2", "10"] and y.tolist() == [2, 1, 1, 0]


def test_missing_labels_named() -> None:
    with pytest.raises(DataValidationError, match=r"missing labels.*'s1'"):
        from_arrays(_arrays(), labels=["x", None, "y", "x"], ids=["s0", "s1", "s2", "s3"])


def test_from_arrays_errors_name_the_problem() -> None:
    with pytest.raises(DataValidationError, match=r"different numbers of rows.*'a': 4.*'b': 3"):
        from_arrays({"a": np.ones((4, 2)), "b": np.ones((3, 2))})
    with pytest.raises(DataValidationError, match=r"duplicate.*'x'"):
        from_arrays({"a": np.ones((2, 2)), "b": np.ones((2, 2))}, ids=["x", "x"])
    bad = np.ones((3, 2))
    bad[1, 1] = np.inf
    with pytest.raises(DataValidationError, match=r"'a'.*infinite.*'1'.*'a_1'"):
        from_arrays({"a": bad, "b": np.ones((3, 1))})
    with pytest.raises(DataValidationError, match=r"'b'.*2-D"):
        from_arrays({"a": np.ones((3, 2)), "b": np.ones(3)})
    with pytest.raises(DataValidationError, match=r"'a'.*1 feature names for 2 columns"):
        from_arrays({"a": np.ones((3, 2)), "b": np.ones((3, 1))}, feature_names={"a": ["f"]})
    with pytest.raises(DataValidationError, match="at least two modalities"):
        from_arrays({"a": np.ones((3, 2))})
    with pytest.raises(DataValidationError, match=r"'b'.*non-numeric.*one-hot"):
        from_arrays({"a": np.ones((2, 1)), "b": np.array([["u", 1], ["v", 2]], dtype=object)})


def _frames() -> tuple[dict[str, pd.DataFrame], pd.Series]:
    rna = pd.DataFrame({"g1": [1.0, 2.0, 3.0], "g2": [4.0, np.nan, 6.0]}, index=["p1", "p2", "p3"])
    prot = pd.DataFrame({"pr": [7.0, 8.0]}, index=["p3", "p4"])
    labels = pd.Series(
        ["dead", "alive", "alive", "dead", "alive"], index=["p4", "p3", "p2", "p1", "p5"]
    )
    return {"rna": rna, "prot": prot}, labels


def test_from_pandas_outer_join_in_label_order() -> None:
    frames, labels = _frames()
    d = from_pandas(frames, labels=labels)
    assert d.ids.tolist() == ["p4", "p3", "p2", "p1", "p5"]
    assert d.observed.tolist() == [
        [False, True],
        [True, True],
        [True, False],
        [True, False],
        [False, False],
    ]
    assert d.feature_names == {"rna": ["g1", "g2"], "prot": ["pr"]}
    assert d.class_names == ["alive", "dead"] and d.y.tolist() == [1, 0, 0, 1, 0]
    np.testing.assert_array_equal(d.X["rna"][1], [3.0, 6.0])
    assert np.isnan(d.X["rna"][2, 1]) and d.observed[2, 0]
    assert d.describe()["n_empty"] == 1  # p5 has a label but no data: kept, counted


def test_from_pandas_without_labels_order() -> None:
    frames, _ = _frames()
    d = from_pandas(frames)
    assert d.ids.tolist() == ["p1", "p2", "p3", "p4"] and d.y is None


def test_from_pandas_errors() -> None:
    frames, labels = _frames()
    with pytest.raises(DataValidationError, match=r"no label.*'p3'.*'p4'"):
        from_pandas(frames, labels=labels[labels.index.isin(["p1", "p2"])])
    dup = frames["rna"].rename(index={"p2": "p1"})
    with pytest.raises(DataValidationError, match=r"'rna'.*duplicate.*'p1'"):
        from_pandas({"rna": dup, "prot": frames["prot"]})
    text = frames["rna"].assign(stage=["i", "ii", None])
    with pytest.raises(
        DataValidationError, match=r"'rna'.*non-numeric columns \['stage'\].*one-hot"
    ):
        from_pandas({"rna": text, "prot": frames["prot"]})
    inf = frames["prot"].copy()
    inf.loc["p4", "pr"] = -np.inf
    with pytest.raises(DataValidationError, match=r"'prot'.*infinite.*'p4'.*'pr'"):
        from_pandas({"rna": frames["rna"], "prot": inf})
    nolab = labels.copy()
    nolab["p2"] = np.nan
    with pytest.raises(DataValidationError, match=r"missing labels.*'p2'"):
        from_pandas(frames, labels=nolab)


def _assert_same(a: MultimodalData, b: MultimodalData) -> None:
    assert a.modalities == b.modalities
    assert a.ids.tolist() == b.ids.tolist()
    assert a.class_names == b.class_names
    assert a.feature_names == b.feature_names
    np.testing.assert_array_equal(a.observed, b.observed)
    if a.y is None:
        assert b.y is None
    else:
        np.testing.assert_array_equal(a.y, b.y)
    for m in a.modalities:
        np.testing.assert_array_equal(a.X[m], b.X[m])  # NaN positions must match too
        assert b.X[m].dtype == np.float32


def test_parquet_round_trip_is_identical(tmp_path) -> None:
    frames, labels = _frames()
    d = from_pandas(
        frames,
        labels=labels,
        class_names=["dead", "alive"],
        name="toy",
        attrs={"log1p": ["rna"], "arr": np.arange(3)},
    )
    write_folder(d, tmp_path / "toy")
    back = read_folder(tmp_path / "toy")
    _assert_same(d, back)
    assert back.name == "toy" and back.attrs["log1p"] == ["rna"] and back.attrs["arr"] == [0, 1, 2]
    meta = json.loads((tmp_path / "toy" / "meta.json").read_text())
    assert meta["modalities"] == ["rna", "prot"]


def test_round_trip_unlabelled_keeps_order_and_empty_samples(tmp_path) -> None:
    X = {"b": np.array([[1.0], [np.nan], [np.nan]]), "a": np.array([[np.nan], [2.5], [np.nan]])}
    d = from_arrays(X, ids=["z", "y", "x"])
    write_folder(d, tmp_path / "u")
    back = read_folder(tmp_path / "u")
    _assert_same(d, back)
    assert back.empty_samples().tolist() == [False, False, True]


def test_read_folder_csv_layout(tmp_path) -> None:
    (tmp_path / "rna.csv").write_text("sample,g1,g2\n007,1,2\n008,3,\n")
    (tmp_path / "cnv.csv").write_text(",c1\n008,0.5\n009,1.5\n")
    (tmp_path / "labels.csv").write_text("id,label\n007,b\n008,a\n009,a\n")
    (tmp_path / "notes.txt").write_text("ignored")
    d = read_folder(tmp_path)
    assert d.modalities == ["cnv", "rna"]  # sorted file names without meta.json
    assert d.ids.tolist() == ["007", "008", "009"]  # ids kept as text, leading zeros too
    assert d.observed.tolist() == [[False, True], [True, True], [True, False]]
    assert d.class_names == ["a", "b"] and d.y.tolist() == [1, 0, 0]
    assert np.isnan(d.X["rna"][1, 1]) and d.name == tmp_path.name


def test_read_folder_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no folder"):
        read_folder(tmp_path / "nope")
    (tmp_path / "a.csv").write_text("id,x\n1,1\n")
    with pytest.raises(DataValidationError, match="at least two"):
        read_folder(tmp_path)
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"'a' has two files"):
        read_folder(tmp_path)
    (tmp_path / "a.parquet").unlink()
    (tmp_path / "b.csv").write_text("id,y\n1,2\n")
    (tmp_path / "labels.csv").write_text("sample,class\n1,x\n")
    with pytest.raises(DataValidationError, match=r"columns 'id' and 'label'"):
        read_folder(tmp_path)


def test_write_folder_refuses_unsafe_modality_names(tmp_path) -> None:
    d = from_arrays({"a/b": np.ones((2, 1)), "c": np.ones((2, 1))})
    with pytest.raises(DataValidationError, match=r"'a/b'.*file name"):
        write_folder(d, tmp_path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # mudata 0.3 announces 0.4 changes
def test_from_anndata_and_mudata() -> None:
    ad = pytest.importorskip("anndata")
    md = pytest.importorskip("mudata")
    rna = ad.AnnData(
        X=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32),
        obs=pd.DataFrame({"cell": ["T", "B", "T"]}, index=["c1", "c2", "c3"]),
        var=pd.DataFrame(index=["g1", "g2"]),
    )
    atac = ad.AnnData(
        X=np.array([[7.0], [8.0]], dtype=np.float32),
        obs=pd.DataFrame({"cell": ["B", "T"]}, index=["c2", "c4"]),
        var=pd.DataFrame(index=["peak1"]),
    )
    d = from_anndata({"rna": rna, "atac": atac}, label="cell")
    assert d.ids.tolist() == ["c1", "c2", "c3", "c4"]
    assert d.observed.tolist() == [[True, False], [True, True], [True, False], [False, True]]
    assert d.class_names == ["B", "T"] and d.y.tolist() == [1, 0, 1, 1]
    assert d.feature_names["atac"] == ["peak1"]

    mdata = md.MuData({"rna": rna, "atac": atac})
    m = from_mudata(mdata, label="cell")
    assert set(m.modalities) == {"rna", "atac"}
    assert m.ids.tolist() == [str(i) for i in mdata.obs_names]
    assert m.observed.sum() == 5
    for i, sid in enumerate(m.ids):
        assert m.class_names[m.y[i]] == {"c1": "T", "c2": "B", "c3": "T", "c4": "T"}[sid]
    unl = from_mudata(mdata)
    assert unl.y is None and unl.n_samples == 4

    bad = atac.copy()
    bad.obs["cell"] = ["T", "T"]  # c2 is "B" in rna
    with pytest.raises(DataValidationError, match=r"differs.*'c2'"):
        from_anndata({"rna": rna, "atac": bad}, label="cell")


def test_scverse_missing_gives_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mudata", None)
    with pytest.raises(ImportError, match=r"moe-retriever\[scverse\]"):
        from_mudata(object())
