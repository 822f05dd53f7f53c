"""Heads: fusion + classifier over completed tokens. One interface (:class:`Head`), one file per
head. Importing this package registers the built-in heads with :func:`create_head`.
"""

from moe_retriever.heads.base import (
    HEADS,
    Head,
    HeadContext,
    HeadOutput,
    create_head,
    list_heads,
    register_head,
)
from moe_retriever.heads.i2m2 import I2M2Head
from moe_retriever.heads.i2moe import I2MoEHead
from moe_retriever.heads.transformer import TransformerFusion, TransformerHead

__all__ = [
    "HEADS",
    "Head",
    "HeadContext",
    "HeadOutput",
    "I2M2Head",
    "I2MoEHead",
    "TransformerFusion",
    "TransformerHead",
    "create_head",
    "list_heads",
    "register_head",
]
