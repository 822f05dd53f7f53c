"""Transformer block: real residuals, key-padding masks, attention equal to a reference."""

from __future__ import annotations

import math

import torch

from moe_retriever.nn.transformer import MultiHeadSelfAttention, TransformerBlock


def _reference_attention(att: MultiHeadSelfAttention, x: torch.Tensor, keep: torch.Tensor):
    B, L, D = x.shape
    h = att.n_heads
    q, k, v = att.qkv(x).chunk(3, dim=-1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, L, h, D // h).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / math.sqrt(D // h)
    s = s.masked_fill(~keep[:, None, None, :], float("-inf"))
    o = torch.softmax(s, -1) @ v
    return att.out(o.transpose(1, 2).reshape(B, L, D))


def test_attention_matches_reference_with_mask() -> None:
    torch.manual_seed(0)
    att = MultiHeadSelfAttention(16, 4).eval()
    x = torch.randn(3, 7, 16)
    keep = torch.rand(3, 7) > 0.4
    keep[:, 0] = True
    torch.testing.assert_close(att(x, keep), _reference_attention(att, x, keep), atol=1e-5, rtol=0)


def test_padded_tokens_do_not_influence_real_ones() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, ffn_mult=2).eval()
    x = torch.randn(2, 6, 16)
    keep = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    y1 = block(x, keep).x
    x2 = x.clone()
    x2[~keep] = 100.0
    y2 = block(x2, keep).x
    torch.testing.assert_close(y1[keep], y2[keep])


def test_residual_keeps_the_input() -> None:
    """With attention and FFN outputs zeroed the block is the identity (defect 3)."""
    block = TransformerBlock(8, 2).eval()
    for lin in (block.attn.out, block.ffn.net[-1]):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(block(x).x, x)


def test_block_with_moe_ffn_returns_balance_loss_and_routing() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, moe_experts=4, moe_top_k=2).train()
    keep = torch.ones(3, 5, dtype=torch.bool)
    keep[0, 3:] = False
    out = block(torch.randn(3, 5, 8), keep)
    assert out.x.shape == (3, 5, 8)
    assert out.aux_loss.requires_grad
    assert out.routing["expert_index"].shape == (13, 2)  # only real tokens are routed
