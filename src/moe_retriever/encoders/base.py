"""The encoder interface and registry: raw inputs of one modality (B, F_m) -> tokens (B, P, D).

An encoder is any ``nn.Module`` built as ``Encoder(in_dim, n_tokens, dim, **options)`` whose
``forward`` maps (B, in_dim) to (B, n_tokens, dim). Register it to use it by name in configs,
the estimator and ``benchmark``::

    @register_encoder
    class MyEncoder(nn.Module):
        name = "my-encoder"
        def __init__(self, in_dim: int, n_tokens: int, dim: int, width: int = 64) -> None: ...

or name it by import path (``"mypackage.encoders:MyEncoder"``) without registering. The options
(``width`` here) are the constructor's keyword parameters, typed by their annotations
(:mod:`moe_retriever.registry`). An already-built module can also be handed to
``MultimodalClassifier(..., encoders={"image": module})``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from moe_retriever.registry import Registry

#: encoder classes by name; constructors take (in_dim, n_tokens, dim) then options
ENCODERS: Registry[nn.Module] = Registry("encoder", nn.Module, fixed=3)

register_encoder = ENCODERS.register


def create_encoder(name: str, in_dim: int, n_tokens: int, dim: int, **options: Any) -> nn.Module:
    """The one factory: ``create_encoder("mlp", 200, 16, 128, hidden=256)``."""
    return ENCODERS.create(name, in_dim, n_tokens, dim, **options)


def list_encoders() -> list[str]:
    return ENCODERS.names()


__all__ = ["ENCODERS", "create_encoder", "list_encoders", "register_encoder"]
