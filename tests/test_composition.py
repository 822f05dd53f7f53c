"""The model built from parts: a toy head and a toy completion registered HERE (no package code
changed) train through the estimator and through ``benchmark`` by name; the estimator is a
scikit-learn estimator; unknown options of any part fail with the valid names; a custom encoder
named by import path in a YAML config trains, saves, loads and predicts."""

from __future__ import annotations

import copy
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.base import clone
from torch import Tensor, nn

from moe_retriever.cli import main
from moe_retriever.completion.base import (
    COMPLETIONS,
    Completion,
    CompletionContext,
    CompletionOutput,
    register_completion,
)
from moe_retriever.data.core import MultimodalData
from moe_retriever.data.splits import apply_split, make_split
from moe_retriever.datasets import load_dataset
from moe_retriever.heads.base import HEADS, Head, HeadContext, HeadOutput, register_head
from moe_retriever.model import ModelConfig, MultimodalClassifier
from moe_retriever.presets import Preset, register_preset, unregister_preset
from moe_retriever.training.estimator import MoERetrieverClassifier

TINY: dict[str, Any] = {
    "model": {"n_tokens": 4, "dim": 16, "n_heads": 2, "head_hidden": 16, "dropout": 0.1},
    "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "patience": None},
    "runtime": {"accelerator": "cpu", "progress_bar": False, "threads": 1},
}


class ObservedMeanCompletion(Completion):
    """Toy: a missing slot gets the mean of the sample's observed tokens, times a learned
    scale (so it learns and gets the model's self-supervision)."""

    name = "toy-observed-mean"
    learns = True

    def __init__(self, modalities: list[str], n_tokens: int, dim: int, scale: float = 1.0):
        super().__init__(modalities, n_tokens, dim)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        w = observed.float()[:, :, None, None]
        mean = (tokens * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1)
        fill = (self.scale * mean).expand_as(tokens)
        return CompletionOutput(self.keep_observed(fill, tokens, observed), self.no_loss(tokens))


class PooledLinearHead(Head):
    """Toy: mean over every token, one Linear; reports its mean |logit| as interpretation."""

    name = "toy-pooled-linear"

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        n_classes: int,
        arch: ModelConfig,
        bias: bool = True,
    ) -> None:
        super().__init__(modalities, n_tokens, dim, n_classes, arch)
        self.linear = nn.Linear(dim, n_classes, bias=bias)

    def forward(self, tokens: Tensor, observed: Tensor, context: HeadContext) -> HeadOutput:
        logits = self.linear(tokens.mean(dim=(1, 2)))
        interp = {"size": logits.detach().abs().mean(1)}
        return HeadOutput(logits, self.no_loss(logits), {"interpret": interp})

    def summarize(
        self, interpret: dict[str, Tensor], y: Tensor | None, observed: Tensor
    ) -> dict[str, Any] | None:
        return {"n": int(interpret["size"].shape[0]), "mean_size": float(interpret["size"].mean())}


@pytest.fixture
def toy_parts() -> Iterator[str]:
    """Register the toy parts and a preset combining them; unregister afterwards."""
    register_completion(ObservedMeanCompletion)
    register_head(PooledLinearHead)
    register_preset(Preset("toy", completion="toy-observed-mean", head="toy-pooled-linear"))
    try:
        yield "toy"
    finally:
        unregister_preset("toy")
        COMPLETIONS.unregister("toy-observed-mean")
        HEADS.unregister("toy-pooled-linear")


@pytest.fixture(scope="module")
def splits() -> tuple[MultimodalData, MultimodalData, MultimodalData]:
    data = load_dataset(
        "synthetic",
        n_samples=90,
        n_modalities=3,
        dims=[8, 6, 10],
        n_classes=3,
        missing_rate=0.3,
        seed=0,
    )
    return apply_split(data, make_split(data, seed=0))


def _tiny() -> dict[str, Any]:
    return copy.deepcopy(TINY)


# ------------------------------------------------------------------------------ toy parts
def test_toy_parts_train_through_the_estimator(toy_parts: str, splits: Any) -> None:
    train, val, test = splits
    est = MoERetrieverClassifier(toy_parts, config=_tiny(), seed=0).fit(train, val)
    assert type(est.model_.completion) is ObservedMeanCompletion
    assert type(est.model_.head) is PooledLinearHead
    proba = est.predict_proba(test)
    assert proba.shape == (test.n_samples, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert float(est.model_.completion.scale) != 1.0  # the completion's parameter trained
    summary = est.interpretation(test)
    assert summary["head"] == {
        "n": test.n_samples,
        "mean_size": pytest.approx(summary["head"]["mean_size"]),
    }
    # one part swapped by config, the other from a built-in preset
    mixed = MoERetrieverClassifier(
        "zero", config=_tiny(), head={"name": "toy-pooled-linear", "bias": False}
    )
    mixed.fit(train, val)
    assert mixed.model_.completion.name == "zero" and mixed.model_.head.linear.bias is None


def test_toy_parts_run_in_benchmark_by_name(toy_parts: str, tmp_path: Path, capsys: Any) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_tiny()))
    out = tmp_path / "bench"
    code = main(
        [
            "benchmark",
            "synthetic",
            "--methods",
            toy_parts,
            "zero",
            "--missing-rates",
            "0.3",
            "--seeds",
            "0",
            "1",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["method"]) == {"toy", "zero"}
    f1 = rows[rows["metric"] == "macro_f1"]
    assert len(f1) == 4 and f1["value"].notna().all()
    meta = json.loads((out / "results.json").read_text())
    assert not meta["failures"]


def test_unregistered_toy_preset_leaves_the_harness(toy_parts: str) -> None:
    from moe_retriever.benchmark.harness import list_methods

    assert "toy" in list_methods()
    unregister_preset("toy")
    assert "toy" not in list_methods()


# ------------------------------------------------------------------------------ sklearn
def test_clone_and_params(splits: Any) -> None:
    train, val, test = splits
    est = MoERetrieverClassifier("knn", config=_tiny(), seed=3, completion={"k": 2}, epochs=2)
    params = est.get_params()
    assert params["method"] == "knn" and params["seed"] == 3 and params["epochs"] == 2
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    a = est.fit(train, val).predict_proba(test)
    b = twin.fit(train, val).predict_proba(test)
    np.testing.assert_array_equal(a, b)
    assert est.model_.completion.name == "knn" and est.model_.completion.k == 2
    assert not hasattr(clone(est), "model_")  # a clone is unfitted
    est.set_params(seed=4, batch_size=8)
    assert est.resolved_config().train.batch_size == 8 and est.seed == 4
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        est.set_params(bogus=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"completion": {"kk": 1}},
            "completion method 'moe-retriever' has no option 'kk'; valid options: n_candidates",
        ),
        ({"method": "knn", "completion": {"k": "many"}}, "'knn.k': 'many' is not an integer"),
        (
            {"head": {"width": 3}},
            "head 'transformer' has no option 'width'; valid options: "
            r"\(none\)",
        ),
        ({"head": "no-such-head"}, "unknown head 'no-such-head'; known: .*transformer"),
        (
            {"encoders": {"m0": {"name": "mlp", "depth": 2}}},
            "encoder 'mlp' has no option 'depth'; valid options: hidden",
        ),
        ({"method": "nope"}, "unknown method 'nope'; known: bank"),
    ],
)
def test_unknown_options_of_every_part_name_the_valid_ones(
    kwargs: dict[str, Any], message: str, splits: Any
) -> None:
    est = MoERetrieverClassifier(config=_tiny(), **kwargs)
    with pytest.raises(ValueError, match=message):
        est.fit(splits[0], splits[1])


def test_model_from_built_parts() -> None:
    """Parts can be handed over as modules: the model uses those very objects."""
    dims = {"a": 5, "b": 3}
    arch = ModelConfig(n_tokens=2, dim=8, n_heads=2)
    comp = ObservedMeanCompletion(["a", "b"], 2, 8)
    head = PooledLinearHead(["a", "b"], 2, 8, 3, arch)
    enc = nn.Sequential(nn.Linear(5, 16), nn.Unflatten(1, (2, 8)))
    model = MultimodalClassifier(dims, 3, arch, completion=comp, head=head, encoders={"a": enc})
    assert model.completion is comp and model.head is head and model.encoders["m_a"] is enc
    x = {"a": torch.randn(4, 5), "b": torch.randn(4, 3)}
    obs = torch.tensor([[True, False], [True, True], [False, True], [True, True]])
    out = model(x, obs)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


# ------------------------------------------------------------------------------ encoders
ENCODER_MODULE = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class ToyEncoder(nn.Module):
        """(B, F) -> (B, P, D): one Linear per token."""

        def __init__(self, in_dim: int, n_tokens: int, dim: int, width: int = 4) -> None:
            super().__init__()
            self.n_tokens, self.dim = n_tokens, dim
            self.net = nn.Sequential(nn.Linear(in_dim, width), nn.Tanh(),
                                     nn.Linear(width, n_tokens * dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).reshape(x.shape[0], self.n_tokens, self.dim)
    '''
)


def test_custom_encoder_by_import_path_trains_saves_loads_predicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    pkg = tmp_path / "src"
    pkg.mkdir()
    (pkg / "toy_encoders_mod.py").write_text(ENCODER_MODULE)
    monkeypatch.syspath_prepend(str(pkg))
    cfg = _tiny()
    cfg["model"]["encoders"] = {"m0": {"name": "toy_encoders_mod:ToyEncoder", "width": 7}}
    cfg["seeds"] = [0]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "synthetic", "--config", str(path), "--out", str(run)]) == 0
    model_dir = run / "seed_0" / "model"
    est = MoERetrieverClassifier.load(model_dir)
    enc = est.model_.encoders["m_m0"]
    assert type(enc).__name__ == "ToyEncoder" and enc.net[0].out_features == 7
    data = load_dataset("synthetic")
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(run), "synthetic", "--out", str(preds)]) == 0
    table = pd.read_csv(preds)
    assert len(table) == data.n_samples
    proba = est.predict_proba(data)
    cols = [c for c in table.columns if c.startswith("p_")]
    np.testing.assert_allclose(table[cols].to_numpy(), proba, atol=1e-5)
    # the class itself (not a string) reaches fit and is saved by its import path
    cls = sys.modules["toy_encoders_mod"].ToyEncoder
    est2 = MoERetrieverClassifier(config=_tiny(), encoders={"m1": cls}, seed=0)
    assert est2.resolved_config().model.encoders["m1"] == "toy_encoders_mod:ToyEncoder"
