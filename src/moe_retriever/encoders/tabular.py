"""The built-in tabular encoders, registered as ``patch`` and ``mlp``:

* :class:`PatchEncoder` (the method's tabular encoder, METHOD.md): pad the F features with zeros
  to P * ceil(F / P), reshape into P patches of ceil(F / P) features and project every patch with
  one Linear (shared across the patches of a modality) to width D.
* :class:`MLPEncoder`: an MLP from F features to P * D outputs, reshaped to (P, D); useful when
  the feature order carries no locality.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from moe_retriever.encoders.base import register_encoder


@register_encoder
class PatchEncoder(nn.Module):
    """Tabular patch embedding: (B, F) -> zero-pad -> (B, P, ceil(F/P)) -> Linear -> (B, P, D)."""

    name = "patch"

    def __init__(self, in_dim: int, n_tokens: int, dim: int) -> None:
        super().__init__()
        if in_dim < 1 or n_tokens < 1 or dim < 1:
            raise ValueError(
                f"PatchEncoder needs positive sizes, got in_dim={in_dim}, "
                f"n_tokens={n_tokens}, dim={dim}"
            )
        self.in_dim = in_dim
        self.n_tokens = n_tokens
        self.dim = dim
        self.patch_size = math.ceil(in_dim / n_tokens)
        self.pad = self.patch_size * n_tokens - in_dim
        self.proj = nn.Linear(self.patch_size, dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"PatchEncoder expects {self.in_dim} features, got {x.shape[-1]}")
        if self.pad:
            x = F.pad(x, (0, self.pad))
        return self.proj(x.reshape(x.shape[0], self.n_tokens, self.patch_size))


@register_encoder
class MLPEncoder(nn.Module):
    """MLP encoder: (B, F) -> Linear-GELU-Dropout-Linear -> (B, P * D) -> (B, P, D)."""

    name = "mlp"

    def __init__(
        self, in_dim: int, n_tokens: int, dim: int, hidden: int = 256, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.n_tokens = n_tokens
        self.dim = dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_tokens * dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"MLPEncoder expects {self.in_dim} features, got {x.shape[-1]}")
        return self.net(x).reshape(x.shape[0], self.n_tokens, self.dim)
