"""Pre-norm transformer block with real residual connections and key-padding masks.

``x = x + attn(norm1(x))`` then ``x = x + ffn(norm2(x))`` (METHOD.md defect 3: the research code
added the attention output to itself and dropped the layer input). Attention is
``F.scaled_dot_product_attention`` (fused kernels on CPU and GPU). The feed-forward part is a
dense MLP, a :class:`~moe_retriever.nn.moe.SparseMoE` (``moe_experts > 0``) or absent
(``ffn=False``, attention-only block, as used inside the retriever).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from moe_retriever.nn.moe import MoEOutput, SparseMoE


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over (B, L, D) with an optional key-padding mask."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} is not divisible by n_heads={n_heads}")
        self.dim, self.n_heads = dim, n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``key_padding_mask`` (B, L) bool, True = a real token that may be attended to.

        Every row needs at least one real token (otherwise its output is undefined).
        """
        B, L, D = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).reshape(B, L, 3, h, D // h).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(o.transpose(1, 2).reshape(B, L, D))


class FeedForward(nn.Module):
    """Dense MLP D -> H -> D with GELU."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class BlockOutput:
    """Block result: tokens, the MoE balance loss (0 without MoE) and routing stats."""

    x: Tensor
    aux_loss: Tensor
    routing: dict[str, Tensor] = field(default_factory=dict)


class TransformerBlock(nn.Module):
    """Pre-norm block: attention and (dense | sparse-MoE | no) feed-forward, both residual."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn_mult: int = 2,
        dropout: float = 0.0,
        ffn: bool = True,
        moe_experts: int = 0,
        moe_top_k: int = 2,
        noisy_gating: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, n_heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.norm2: nn.Module | None = None
        self.ffn: nn.Module | None = None
        if ffn:
            self.norm2 = nn.LayerNorm(dim)
            if moe_experts > 0:
                self.ffn = SparseMoE(
                    dim, moe_experts, moe_top_k, hidden=ffn_mult * dim, noisy_gating=noisy_gating
                )
            else:
                self.ffn = FeedForward(dim, ffn_mult * dim, dropout)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> BlockOutput:
        x = x + self.drop(self.attn(self.norm1(x), key_padding_mask))
        aux = x.new_zeros(())
        routing: dict[str, Tensor] = {}
        if self.ffn is not None and self.norm2 is not None:
            h = self.norm2(x)
            if isinstance(self.ffn, SparseMoE):
                B, L, D = h.shape
                flat = h.reshape(B * L, D)
                if key_padding_mask is None:
                    res: MoEOutput = self.ffn(flat)
                    y = res.output
                else:  # route only real tokens
                    keep = key_padding_mask.reshape(-1)
                    res = self.ffn(flat[keep])
                    y = flat.new_zeros(B * L, res.output.shape[1]).index_put(
                        (keep.nonzero().squeeze(1),), res.output
                    )
                aux = res.balance_loss
                routing = {
                    "expert_index": res.expert_index,
                    "expert_weight": res.expert_weight,
                    "counts": res.counts,
                }
                x = x + self.drop(y.reshape(B, L, -1))
            else:
                x = x + self.drop(self.ffn(h))
        return BlockOutput(x, aux, routing)


__all__ = ["BlockOutput", "FeedForward", "MultiHeadSelfAttention", "TransformerBlock"]
