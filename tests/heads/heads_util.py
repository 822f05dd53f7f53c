"""Small shapes and helpers shared by the head tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch
from torch import Tensor

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads import HeadContext

MODS = ["a", "b", "c"]
P, D, C = 4, 16, 3


def arch(**kw: object) -> ModelConfig:
    """A tiny architecture; dropout 0 so that two forwards of one head are comparable."""
    base: dict[str, object] = dict(n_tokens=P, dim=D, n_heads=2, head_hidden=16, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def batch(seed: int = 0, b: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    """Tokens (b, 3, P, D), an observed mask with every pattern kind, labels (b,)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, len(MODS), P, D, generator=g)
    observed = torch.tensor(
        [[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.bool
    )[:b]
    y = torch.randint(0, C, (b,), generator=g)
    return tokens, observed, y


def ctx(
    masked: bool, training: bool = False, y: Tensor | None = None, seed: int = 0
) -> HeadContext:
    gen = torch.Generator().manual_seed(seed) if training else None
    return HeadContext(training=training, modalities=list(MODS), masked=masked, generator=gen, y=y)
