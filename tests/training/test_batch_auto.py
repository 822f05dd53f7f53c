"""``train.batch_size: auto``: 16 per step on small cohorts, 64 from 1,000 training samples."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.splits import apply_split, make_split
from moe_retriever.training.config import (
    AUTO_BATCH_ROWS,
    LARGE_BATCH,
    SMALL_BATCH,
    TrainConfig,
    apply_overrides,
    resolve_batch_size,
)
from moe_retriever.training.estimator import MoERetrieverClassifier


def test_the_default_is_auto_and_resolves_by_the_training_rows() -> None:
    assert TrainConfig().train.batch_size == "auto"
    assert (SMALL_BATCH, LARGE_BATCH, AUTO_BATCH_ROWS) == (16, 64, 1000)
    assert resolve_batch_size("auto", 60) == 16
    assert resolve_batch_size("auto", 999) == 16
    assert resolve_batch_size("auto", 1000) == 64
    assert resolve_batch_size("auto", 6373) == 64
    assert resolve_batch_size(8, 10**6) == 8  # a number is taken as it is


def test_config_takes_auto_or_a_positive_number_and_refuses_the_rest() -> None:
    cfg = apply_overrides(TrainConfig(), ["train.batch_size=32"])
    assert cfg.train.batch_size == 32
    cfg = apply_overrides(cfg, ["train.batch_size=auto"])
    assert cfg.train.batch_size == "auto"
    with pytest.raises(ValueError, match=r"train\.batch_size"):
        apply_overrides(TrainConfig(), ["train.batch_size=big"])
    with pytest.raises(ValueError, match=r"train\.batch_size must be >= 1"):
        apply_overrides(TrainConfig(), ["train.batch_size=0"])


@pytest.mark.parametrize(("n", "expected"), [(90, 16), (1600, 64)])
def test_a_fit_trains_with_the_resolved_batch(
    tiny: dict,
    make_tiny_data: Callable[..., MultimodalData],
    n: int,
    expected: int,
    tmp_path: Path,
) -> None:
    data = make_tiny_data(n=n, seed=1)
    train, val, _ = apply_split(data, make_split(data, seed=0))
    tiny["train"].update(batch_size="auto", epochs=1, warmup_epochs=0)
    sizes: list[int] = []

    class Sizes(L.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            sizes.append(int(batch["y"].shape[0]))

    clf = MoERetrieverClassifier(config=tiny, seed=0).fit(train, val, callbacks=[Sizes()])
    assert clf.batch_size_ == expected
    assert len(sizes) == math.ceil(len(train) / expected)
    assert max(sizes) == min(expected, len(train)) and sum(sizes) == len(train)
    clf.save(tmp_path / "m")  # a loaded estimator says which batch it was trained with
    assert MoERetrieverClassifier.load(tmp_path / "m").batch_size_ == expected
