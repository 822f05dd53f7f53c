"""A modality on disk (MappedRows) through the data model, preprocessing and batches, never
read whole."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import moe_retriever.data.mapped as mapped
from moe_retriever.data.core import DataValidationError, MultimodalData
from moe_retriever.data.mapped import MappedRows
from moe_retriever.data.preprocessing import Preprocessor
from moe_retriever.data.splits import make_split
from moe_retriever.data.validation import missing_cells
from moe_retriever.training.datamodule import TensorSet, eval_loader


def _file(tmp_path: Path, n: int = 30, f: int = 7, seed: int = 0) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(n, f)) * 3 + 5).astype(np.float32)
    path = tmp_path / "arr.npy"
    np.save(path, values)
    return path, values


def _data(tmp_path: Path) -> tuple[MultimodalData, np.ndarray]:
    """24 samples; image rows in reverse file order, samples 0, 5, 10... without a scan."""
    path, values = _file(tmp_path)
    n = 24
    rows = np.arange(n)[::-1].copy()
    rows[::5] = -1
    rng = np.random.default_rng(1)
    tab = rng.normal(size=(n, 3)).astype(np.float32)
    dense = np.full((n, values.shape[1]), np.nan, np.float32)
    dense[rows >= 0] = values[rows[rows >= 0]]
    dense[3, 2] = np.nan  # a missing cell inside an observed row
    values[rows[3], 2] = np.nan
    np.save(path, values)
    y = np.arange(n) % 2
    data = MultimodalData(
        modalities=["image", "tab"],
        X={"image": MappedRows(np.load(path, mmap_mode="r"), rows), "tab": tab},
        observed=np.stack([rows >= 0, np.ones(n, bool)], axis=1),
        y=y,
        ids=[f"s{i}" for i in range(n)],
        class_names=["a", "b"],
    )
    return data, dense


@pytest.fixture
def no_full_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any path that turns a whole MappedRows into an array."""

    def refuse(self: MappedRows, *a: object, **k: object) -> np.ndarray:
        raise AssertionError("a MappedRows modality was read whole")

    monkeypatch.setattr(MappedRows, "__array__", refuse)


def test_rows_gather_take_hide_pickle(tmp_path: Path) -> None:
    path, values = _file(tmp_path)
    m = MappedRows(np.load(path, mmap_mode="r"), np.array([4, -1, 0, 4]))
    got = m.gather(np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(got[[0, 2, 3]], values[[4, 0, 4]])
    assert np.isnan(got[1]).all() and got.dtype == np.float32
    np.testing.assert_array_equal(m.take(np.array([2]))[0], values[0])
    assert (m.hide(np.array([True, False, False, False])).rows == [-1, -1, 0, 4]).all()
    np.testing.assert_array_equal(np.asarray(m.filled(0.0))[1], 0.0)
    back = pickle.loads(pickle.dumps(m))  # DataLoader workers reopen by path
    np.testing.assert_array_equal(np.asarray(back)[0], values[4])
    with pytest.raises(ValueError, match="row indices"):
        MappedRows(path, np.array([30]))


def test_data_model_keeps_rows_on_disk(tmp_path: Path, no_full_read: None) -> None:
    data, dense = _data(tmp_path)
    assert isinstance(data.X["image"], MappedRows)
    sub = data.subset(np.array([1, 2, 3]))
    assert isinstance(sub.X["image"], MappedRows)
    np.testing.assert_array_equal(sub.X["image"].gather(np.arange(3)), dense[[1, 2, 3]])
    hidden = data.observed.copy()
    hidden[1, 0] = False
    masked = data.with_observed(hidden)
    assert isinstance(masked.X["image"], MappedRows) and masked.X["image"].rows[1] == -1
    split = make_split(data, 0.2, 0.2, seed=0)
    assert isinstance(data.select_ids(split.train).X["image"], MappedRows)
    assert "modality 'image': 1 missing cell(s)" in missing_cells(data)[0]


def test_validation_of_mapped_rows(tmp_path: Path) -> None:
    data, _ = _data(tmp_path)
    with pytest.raises(DataValidationError, match="marked unobserved but carry a row"):
        MultimodalData(
            modalities=data.modalities,
            X=data.X,
            observed=np.ones_like(data.observed) & np.array([False, True]),
            y=data.y,
            ids=data.ids,
            class_names=data.class_names,
        )
    path = tmp_path / "inf.npy"
    arr = np.zeros((4, 3), np.float32)
    arr[2, 1] = np.inf
    np.save(path, arr)
    with pytest.raises(DataValidationError, match=r"infinite values in samples \['c'\]"):
        MultimodalData(
            modalities=["image", "t"],
            X={"image": MappedRows(path, np.array([0, 1, 2])), "t": np.zeros((3, 1))},
            observed=np.ones((3, 2), bool),
            y=None,
            ids=["a", "b", "c"],
        )


def test_preprocessing_on_disk_equals_in_memory(
    tmp_path: Path, no_full_read: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunked statistics and the lazy transform match the in-memory path to float32
    precision, with chunks smaller than the data (so merging chunks is exercised)."""
    data, dense = _data(tmp_path)
    monkeypatch.setattr(mapped, "CHUNK_BYTES", 4 * 7 * 4)  # 4 rows of 7 float32
    in_memory = MultimodalData(
        modalities=data.modalities,
        X={"image": dense, "tab": data.X["tab"]},
        observed=data.observed,
        y=data.y,
        ids=data.ids,
        class_names=data.class_names,
    )
    pre_disk = Preprocessor(log1p=False).fit(data)
    pre_mem = Preprocessor(log1p=False).fit(in_memory)
    np.testing.assert_allclose(pre_disk.center_["image"], pre_mem.center_["image"], rtol=1e-10)
    np.testing.assert_allclose(pre_disk.scale_["image"], pre_mem.scale_["image"], rtol=1e-10)
    assert pre_disk.report_ == pre_mem.report_ == {"image": 1, "tab": 0}
    out = pre_disk.transform(data)
    assert isinstance(out.X["image"], MappedRows)
    expect = pre_mem.transform(in_memory).X["image"]
    np.testing.assert_allclose(out.X["image"].gather(np.arange(len(data))), expect, atol=1e-6)


def test_batches_read_only_their_rows(tmp_path: Path, no_full_read: None) -> None:
    data, _ = _data(tmp_path)
    pre = Preprocessor(log1p=False).fit(data)
    tensors = TensorSet.from_data(pre.transform(data))
    assert isinstance(tensors.x["image"], MappedRows)
    batches = list(eval_loader(tensors, batch_size=5))
    x = torch.cat([b["x"]["image"] for b in batches])
    assert x.shape == (24, 7) and torch.isfinite(x).all()
    assert (x[~tensors.observed[:, 0]] == 0).all()  # missing rows read as zeros
    pool = tensors.pool_x()["image"]  # the model's training pool reads it explicitly
    torch.testing.assert_close(pool, x)


def test_validation_reads_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Subsets and hidden entries of validated rows are not read again (splitting and masking
    a 10,000-scan modality must not re-read gigabytes each time)."""
    data, _ = _data(tmp_path)
    reads: list[int] = []
    original = MappedRows._read_file_rows

    def counting(self: MappedRows, file_rows: np.ndarray) -> np.ndarray:
        reads.append(len(file_rows))
        return original(self, file_rows)

    monkeypatch.setattr(MappedRows, "_read_file_rows", counting)
    split = make_split(data, 0.2, 0.2, seed=0)
    parts = [data.select_ids(getattr(split, p)) for p in ("train", "val", "test")]
    hidden = parts[0].observed.copy()
    hidden[0] = [False, True]
    parts[0].with_observed(hidden)
    assert reads == []
    fresh = MultimodalData(
        modalities=data.modalities,
        X={"image": data.X["image"].raw().take(np.arange(3)), "tab": data.X["tab"][:3]},
        observed=data.observed[:3],
        y=data.y[:3],
        ids=data.ids[:3],
        class_names=data.class_names,
    )
    assert fresh.X["image"].checked and reads == []  # derived from checked rows
    unchecked = MappedRows(data.X["image"].source, data.X["image"].rows[:3].copy())
    MultimodalData(
        modalities=data.modalities,
        X={"image": unchecked, "tab": data.X["tab"][:3]},
        observed=data.observed[:3],
        y=data.y[:3],
        ids=data.ids[:3],
        class_names=data.class_names,
    )
    assert len(reads) == 1 and unchecked.checked
