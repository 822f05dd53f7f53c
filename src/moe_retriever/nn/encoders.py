"""Modality encoders: raw inputs (B, F) -> P tokens of width D, shape (B, P, D).

Any ``nn.Module`` with that signature can serve as the encoder of a modality: pass it to
``MultimodalClassifier(..., encoders={"image": my_cnn_to_tokens})`` and the classifier uses it
instead of building one from ``ModelConfig.encoder``. The two built-in encoders cover tabular
inputs:

* :class:`PatchEncoder` (the method's tabular encoder, METHOD.md): pad the F features with zeros
  to P * ceil(F / P), reshape into P patches of ceil(F / P) features and project every patch with
  one Linear (shared across the patches of a modality) to width D.
* :class:`MLPEncoder`: an MLP from F features to P * D outputs, reshaped to (P, D); useful when
  the feature order carries no locality.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class PatchEncoder(nn.Module):
    """Tabular patch embedding: (B, F) -> zero-pad -> (B, P, ceil(F/P)) -> Linear -> (B, P, D)."""

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


class MLPEncoder(nn.Module):
    """MLP encoder: (B, F) -> Linear-GELU-Dropout-Linear -> (B, P * D) -> (B, P, D)."""

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


ENCODERS: dict[str, type[nn.Module]] = {"patch": PatchEncoder, "mlp": MLPEncoder}


def build_encoder(kind: str, in_dim: int, n_tokens: int, dim: int, **kwargs: Any) -> nn.Module:
    """Build a built-in encoder by name (``"patch"`` or ``"mlp"``).

    ``kwargs`` go to the encoder (``hidden``, ``dropout`` for the MLP); options an encoder does
    not take are ignored so that one config can name either kind.
    """
    if kind == "patch":
        return PatchEncoder(in_dim, n_tokens, dim)
    if kind == "mlp":
        allowed = {k: v for k, v in kwargs.items() if k in ("hidden", "dropout")}
        return MLPEncoder(in_dim, n_tokens, dim, **allowed)
    raise ValueError(f"unknown encoder kind {kind!r}; known: {', '.join(sorted(ENCODERS))}")
