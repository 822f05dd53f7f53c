"""Modality encoders: one interface (raw (B, F_m) -> tokens (B, P, D)), one file per family.

Importing this package registers the built-in encoders with :func:`create_encoder`.
"""

from moe_retriever.encoders.base import ENCODERS, create_encoder, list_encoders, register_encoder
from moe_retriever.encoders.image3d import Volume3DEncoder
from moe_retriever.encoders.tabular import MLPEncoder, PatchEncoder

__all__ = [
    "ENCODERS",
    "MLPEncoder",
    "PatchEncoder",
    "Volume3DEncoder",
    "create_encoder",
    "list_encoders",
    "register_encoder",
]
