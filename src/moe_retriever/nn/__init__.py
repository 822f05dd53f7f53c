"""Generic building blocks: transformer block, sparse mixture of experts (encoders live in
:mod:`moe_retriever.encoders`)."""

from moe_retriever.nn.moe import MoEOutput, SparseMoE, cv_squared
from moe_retriever.nn.transformer import (
    BlockOutput,
    FeedForward,
    MultiHeadSelfAttention,
    TransformerBlock,
)

__all__ = [
    "BlockOutput",
    "FeedForward",
    "MoEOutput",
    "MultiHeadSelfAttention",
    "SparseMoE",
    "TransformerBlock",
    "cv_squared",
]
