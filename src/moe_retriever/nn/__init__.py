"""Generic building blocks: encoders, transformer block, sparse mixture of experts."""

from moe_retriever.nn.encoders import MLPEncoder, PatchEncoder, build_encoder
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
    "MLPEncoder",
    "MoEOutput",
    "MultiHeadSelfAttention",
    "PatchEncoder",
    "SparseMoE",
    "TransformerBlock",
    "build_encoder",
    "cv_squared",
]
