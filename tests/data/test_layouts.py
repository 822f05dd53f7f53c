"""The ADNI and MIMIC-IV layout readers over generated folders in the authors' layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from moe_retriever.data.core import DataValidationError
from moe_retriever.data.layouts import (
    ADNI_CLASSES,
    detect_layout,
    layout_split,
    read_adni_layout,
    read_layout,
    read_mimic_layout,
    resolve_encoder_paths,
)
from moe_retriever.data.mapped import MappedRows
from moe_retriever.datasets import load_data
from moe_retriever.datasets.layout_fixtures import write_adni_fixture, write_mimic_fixture

pytest.importorskip("anndata")
pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def adni(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("adni")
    return root, write_adni_fixture(root, seed=3)


@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mimic")
    return root, write_mimic_fixture(root, seed=4)


def _order(truth: dict[str, Any], ids: np.ndarray) -> np.ndarray:
    pos = {s: i for i, s in enumerate(truth["ids"])}
    return np.array([pos[s] for s in ids])


# ---------------------------------------------------------------------------- ADNI
def test_adni_mask_labels_split(adni: tuple[Path, dict[str, Any]]) -> None:
    root, truth = adni
    data = read_adni_layout(root)
    split = truth["split"]
    assert list(data.ids) == split["training"] + split["validation"] + split["testing"]
    order = _order(truth, data.ids)
    assert data.modalities == ["image", "genomic", "clinical", "biospecimen"]
    np.testing.assert_array_equal(data.observed, truth["observed"][order])
    np.testing.assert_array_equal(data.y, truth["y"][order])  # DIAGNOSIS 1..3 -> 0..2
    assert data.class_names == ADNI_CLASSES and set(data.y.tolist()) == {0, 1, 2}
    got = layout_split(data)
    assert got is not None
    assert (got.train, got.val, got.test) == (
        split["training"],
        split["validation"],
        split["testing"],
    )
    # labelled PTIDs that no part of the splits file lists are left out, and counted
    assert not set(truth["unsplit"]) & set(data.ids) and data.attrs["unsplit_labelled"] == 2


def test_adni_feature_values(adni: tuple[Path, dict[str, Any]]) -> None:
    root, truth = adni
    data = read_adni_layout(root)
    for i, s in enumerate(data.ids):
        if s in truth["genomic"]:
            np.testing.assert_array_equal(data.X["genomic"][i], truth["genomic"][s])
        else:
            assert np.isnan(data.X["genomic"][i]).all()
        if s in truth["clinical"].index:
            np.testing.assert_allclose(
                data.X["clinical"][i], truth["clinical"].loc[s].to_numpy(float), rtol=1e-6
            )
        if s in truth["biospecimen"].index:
            np.testing.assert_allclose(
                data.X["biospecimen"][i], truth["biospecimen"].loc[s].to_numpy(float), rtol=1e-6
            )
    assert data.feature_names["biospecimen"] == ["ABETA", "TAU", "PTAU", "APOE4"]


def test_adni_clinical_leak_columns_dropped(adni: tuple[Path, dict[str, Any]]) -> None:
    root, _ = adni
    raw = pd.read_csv(root / "clinical" / "clinical_merged.csv", index_col=0)
    assert {"PTCOGBEG", "PTADDX_1", "PTADBEG"} <= set(raw.columns)  # the fixture has them
    data = read_adni_layout(root)
    names = data.feature_names["clinical"]
    assert names == ["AGE", "PTEDUCAT", "MMSE", "CDRSB", "ADAS11", "FAQ"]
    assert data.attrs["dropped_columns"] == ["PTCOGBEG", "PTADDX_1", "PTADBEG"]


def test_adni_mean_variant(adni: tuple[Path, dict[str, Any]]) -> None:
    root, truth = adni
    plain = read_adni_layout(root, ["clinical", "genomic"])
    filled = read_adni_layout(root, ["clinical", "genomic"], mean_filled=True)
    holes = np.isnan(plain.X["clinical"]) & plain.observed[:, [0]]
    assert holes.any() and not (np.isnan(filled.X["clinical"]) & filled.observed[:, [0]]).any()
    i = int(np.nonzero(holes.any(axis=1))[0][0])
    expect = truth["clinical_mean"].loc[plain.ids[i]].to_numpy(float)
    np.testing.assert_allclose(filled.X["clinical"][i], expect, rtol=1e-6)


def test_adni_latest_scan_per_ptid(adni: tuple[Path, dict[str, Any]]) -> None:
    root, truth = adni
    data = read_adni_layout(root)
    image = data.X["image"]
    assert isinstance(image, MappedRows)  # on disk, not an in-memory array
    lines = (root / "image" / "ADNI_subj.txt").read_text().split()
    several = [s for s in truth["latest_row"] if sum(ln.startswith(s) for ln in lines) > 1]
    assert several  # the fixture scans some subjects more than once
    pos = {s: i for i, s in enumerate(data.ids)}
    for s, row in truth["latest_row"].items():
        assert image.rows[pos[s]] == row
        got = image.gather(np.array([pos[s]]))[0]
        np.testing.assert_array_equal(got, truth["latest_values"][s])
    no_scan = [i for i, s in enumerate(data.ids) if s not in truth["latest_row"]]
    assert no_scan and np.isnan(image.gather(np.array(no_scan))).all()


def _copy_layout(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_adni_unlabelled_ptid_in_splits_is_named(
    adni: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root = _copy_layout(adni[0], tmp_path / "adni")
    split = json.loads((root / "PTID_splits.json").read_text())
    split["testing"].append("999_S_0042")
    (root / "PTID_splits.json").write_text(json.dumps(split))
    with pytest.raises(DataValidationError, match=r"no label.*'999_S_0042'"):
        read_adni_layout(root)


def test_adni_bad_inputs_one_line_errors(adni: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root = _copy_layout(adni[0], tmp_path / "adni")
    labels = pd.read_csv(root / "label.csv")
    labels.loc[0, "DIAGNOSIS"] = 4
    labels.to_csv(root / "label.csv", index=False)
    with pytest.raises(DataValidationError, match=r"DIAGNOSIS must be 1, 2 or 3"):
        read_adni_layout(root)
    root2 = _copy_layout(adni[0], tmp_path / "adni2")
    with (root2 / "image" / "ADNI_subj.txt").open("a") as f:
        f.write("002_S_0001_MR_extra_2010-01-01\n")
    with pytest.raises(DataValidationError, match=r"names \d+ scans.*has \d+ rows"):
        read_adni_layout(root2)
    (root2 / "genomic" / "genomic_merged.h5ad").unlink()
    with pytest.raises(FileNotFoundError, match=r"genomic_merged\.h5ad"):
        read_adni_layout(root2, ["genomic", "clinical"])


def test_adni_modality_subset_reads_only_its_files(
    adni: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root = _copy_layout(adni[0], tmp_path / "adni")
    (root / "image" / "ADNI_G.npy").unlink()
    data = read_adni_layout(root, ["genomic", "clinical"])
    assert data.modalities == ["genomic", "clinical"]


def test_adni_without_a_modality_folder_reads_the_rest_and_says_so(
    adni: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """No image/ folder (no MRI): the other three are read, the absent one named in one
    warning line; asking for it is a one-line error naming it (issue 23)."""
    import shutil
    import warnings

    from moe_retriever.data.core import DataWarning

    root = _copy_layout(adni[0], tmp_path / "adni")
    shutil.rmtree(root / "image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read_adni_layout(root)
    assert data.modalities == ["genomic", "clinical", "biospecimen"]
    assert data.attrs["absent_modalities"] == ["image"]
    lines = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(lines) == 1 and "absent modalities image" in lines[0]
    assert "--modalities" in lines[0] and "\n" not in lines[0]
    with pytest.raises(DataValidationError, match=r"modality 'image' was asked for but is absent"):
        read_adni_layout(root, ["image", "genomic"])
    assert read_adni_layout(root, ["clinical", "genomic"]).modalities == ["clinical", "genomic"]
    shutil.rmtree(root / "genomic")
    shutil.rmtree(root / "clinical")
    with pytest.raises(DataValidationError, match=r"1 modality\(ies\) to read.*need at least two"):
        read_adni_layout(root)


def test_mimic_without_a_modality_file_reads_the_rest(
    mimic: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root = _copy_layout(mimic[0], tmp_path / "mimic")
    (root / "note_x.pt").unlink()
    with pytest.warns(UserWarning, match=r"absent modalities note \('note_x.pt'\)"):
        data = read_mimic_layout(root)
    assert data.modalities == ["lab", "code"]
    with pytest.raises(DataValidationError, match=r"modality 'note' was asked for but is absent"):
        read_mimic_layout(root, ["lab", "note"])


# ---------------------------------------------------------------------------- MIMIC
def test_mimic_mask_labels_values(mimic: tuple[Path, dict[str, Any]]) -> None:
    root, truth = mimic
    data = read_mimic_layout(root)
    split = truth["split"]
    assert list(data.ids) == split["training"] + split["validation"] + split["testing"]
    order = _order(truth, data.ids)
    np.testing.assert_array_equal(data.y, truth["y"][order])
    np.testing.assert_array_equal(data.observed, truth["observed"][order])
    for j, m in enumerate(data.modalities):
        obs = data.observed[:, j]
        np.testing.assert_array_equal(data.X[m][obs], truth["x"][m][order][obs])
        assert np.isnan(data.X[m][~obs]).all()
    assert (~data.observed).any(axis=0).all()  # every modality is missing for someone
    got = layout_split(data)
    assert got is not None and got.test == split["testing"]


def test_mimic_missing_rows_option(mimic: tuple[Path, dict[str, Any]]) -> None:
    """Zero rows are missing by default; with missing="nan" only the NaN lab rows are."""
    root, truth = mimic
    data = read_mimic_layout(root, missing="nan")
    order = _order(truth, data.ids)
    np.testing.assert_array_equal(data.observed[:, 0], truth["observed"][order, 0])
    assert data.observed[:, 1:].all()
    np.testing.assert_array_equal(data.X["note"][~truth["observed"][order, 1]], 0.0)


def test_mimic_errors(mimic: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    import torch

    root = _copy_layout(mimic[0], tmp_path / "mimic")
    split = json.loads((root / "PTID_splits_mimic.json").read_text())
    split["validation"].append(123)
    (root / "PTID_splits_mimic.json").write_text(json.dumps(split))
    with pytest.raises(DataValidationError, match=r"no label.*'123'"):
        read_mimic_layout(root)
    root2 = _copy_layout(mimic[0], tmp_path / "mimic2")
    torch.save(torch.zeros(5, 3), root2 / "code_x.pt")
    with pytest.raises(DataValidationError, match=r"code_x.pt' has 5 rows"):
        read_mimic_layout(root2)


# ---------------------------------------------------------------------------- dispatch
def test_detect_and_load(adni: tuple[Path, Any], mimic: tuple[Path, Any], tmp_path: Path) -> None:
    assert detect_layout(adni[0]) == "adni" and detect_layout(mimic[0]) == "mimic"
    assert detect_layout(tmp_path) is None
    assert load_data(str(adni[0])).name == "adni"
    assert load_data(str(mimic[0]), layout="mimic").name == "mimic"
    with pytest.raises(FileNotFoundError, match=r"label\.csv"):
        read_layout(mimic[0], "adni")
    with pytest.raises(FileNotFoundError, match="neither the ADNI layout"):
        read_layout(tmp_path)


def test_resolve_encoder_paths(adni: tuple[Path, Any]) -> None:
    data = read_adni_layout(adni[0], ["genomic", "clinical"])
    rel = "image/BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz"
    out = resolve_encoder_paths({"image": {"name": "cnn3d", "mask": rel}, "x": "mlp"}, data)
    assert Path(out["image"]["mask"]) == (adni[0] / rel).resolve() and out["x"] == "mlp"
    kept = resolve_encoder_paths({"image": {"name": "cnn3d", "mask": "no/such.npy"}}, data)
    assert kept["image"]["mask"] == "no/such.npy"


def test_adni_several_diagnoses_first_row_used_with_a_warning(
    adni: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from moe_retriever.data.core import DataWarning

    root = _copy_layout(adni[0], tmp_path / "adni")
    labels = pd.read_csv(root / "label.csv")
    first = labels.iloc[[0]].copy()
    later = first.assign(DIAGNOSIS=first["DIAGNOSIS"] % 3 + 1)  # another diagnosis, later row
    pd.concat([labels, later]).to_csv(root / "label.csv", index=False)
    with pytest.warns(DataWarning, match="several different DIAGNOSIS rows"):
        data = read_adni_layout(root, ["genomic", "clinical"])
    pos = list(data.ids).index(str(first["PTID"].iloc[0]))
    assert data.y[pos] == int(first["DIAGNOSIS"].iloc[0]) - 1
