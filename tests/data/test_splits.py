"""Splits: stratified, deterministic by seed, JSON round trip, user split files checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moe_retriever.data.core import DataValidationError
from moe_retriever.data.readers import from_arrays
from moe_retriever.data.splits import Split, apply_split, make_split


def _data(counts: list[int], labelled: bool = True):
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    n = len(y)
    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=(n, 2)), "b": rng.normal(size=(n, 3))}
    return from_arrays(
        X,
        labels=y if labelled else None,
        ids=[f"id{i:03d}" for i in range(n)],
        class_names=[f"k{k}" for k in range(len(counts))] if labelled else None,
    )


def test_sizes_stratification_and_partition() -> None:
    d = _data([120, 60, 20])
    s = make_split(d, val_fraction=0.15, test_fraction=0.2, seed=0)
    assert len(s.test) == 40 and len(s.val) == 30 and len(s.train) == 130
    assert sorted(s.train + s.val + s.test) == sorted(d.ids.tolist())
    pos = {i: k for k, i in enumerate(d.ids)}
    for part, frac in ((s.test, 0.2), (s.val, 0.15)):
        counts = np.bincount(d.y[[pos[i] for i in part]], minlength=3)
        np.testing.assert_allclose(counts, np.array([120, 60, 20]) * frac, atol=1)
    assert s.train == sorted(s.train, key=pos.get)  # listed in data order


def test_deterministic_by_seed() -> None:
    d = _data([50, 50])
    assert make_split(d, seed=3).to_dict() == make_split(d, seed=3).to_dict()
    assert make_split(d, seed=3).test != make_split(d, seed=4).test


def test_tiny_classes_do_not_crash_and_are_reported() -> None:
    d = _data([30, 2, 1, 3])
    with pytest.warns(UserWarning, match=r"\['k1', 'k2'\].*training part only"):
        s = make_split(d, seed=0)
    pos = {i: k for k, i in enumerate(d.ids)}
    for part in (s.val, s.test):
        assert not set(d.y[[pos[i] for i in part]]) & {1, 2}
    train_y = d.y[[pos[i] for i in s.train]]
    assert {0, 1, 2, 3} <= set(train_y.tolist())  # every class keeps a training sample
    assert s.notes


def test_unlabelled_and_zero_val() -> None:
    d = _data([40], labelled=False)
    s = make_split(d, val_fraction=0.0, test_fraction=0.25, seed=1)
    assert len(s.val) == 0 and len(s.test) == 10
    train, val, _ = apply_split(d, s)
    assert val.n_samples == 0 and train.n_samples == 30
    with pytest.raises(ValueError, match="must be < 1"):
        make_split(d, val_fraction=0.5, test_fraction=0.5)


def test_save_load_and_apply(tmp_path) -> None:
    d = _data([20, 20])
    s = make_split(d, seed=2)
    path = s.save(tmp_path / "split.json")
    back = Split.load(path)
    assert back.to_dict() == s.to_dict()
    train, val, test = apply_split(d, path)
    assert train.ids.tolist() == s.train and test.ids.tolist() == s.test
    assert val.n_samples == len(s.val)


def test_user_split_file_validation(tmp_path) -> None:
    d = _data([5, 5])
    ids = d.ids.tolist()
    p = tmp_path / "user.json"
    p.write_text(json.dumps({"train": ids[:6], "test": [*ids[6:], "ghost"]}))
    with pytest.raises(DataValidationError, match=r"not in data.*'ghost'"):
        apply_split(d, p)
    p.write_text(json.dumps({"train": ids[:6], "test": ids[5:]}))
    with pytest.raises(DataValidationError, match=r"both 'train' and 'test'.*'id005'"):
        apply_split(d, p)
    p.write_text(json.dumps({"train": ids[:6], "test": ids[7:]}))
    with pytest.raises(DataValidationError, match=r"in no part.*'id006'"):
        apply_split(d, p)
    p.write_text(json.dumps({"train": ids[:6]}))
    with pytest.raises(DataValidationError, match=r"missing the list 'test'"):
        Split.load(p)
    p.write_text("{not json")
    with pytest.raises(DataValidationError, match="not valid JSON"):
        Split.load(p)
    p.write_text(json.dumps({"train": ids[:6], "val": [], "test": ids[6:]}))
    train, val, test = apply_split(d, p)
    assert (train.n_samples, val.n_samples, test.n_samples) == (6, 0, 4)
