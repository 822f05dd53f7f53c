"""What the retriever consumes of a supporting group: its members' encoder tokens (each distinct
training row encoded once) and the fixed pooling weights over [supporting members; own
modalities]."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from moe_retriever.completion.base import TrainingPool
from moe_retriever.completion.support.pools import SupportDraw


def encode_support_unique(
    encode: Callable[[str, Tensor], Tensor],
    pool: TrainingPool,
    target: Tensor,
    draw: SupportDraw,
    n_tokens: int,
    dim: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Encode each distinct (target modality, training row) of the supporting groups ONCE.

    Returns ``(enc, enc_target, slot_row)``: ``enc`` (U + 1, P, D) the encodings followed by
    one zero row, ``enc_target`` (U + 1,) the modality index of each row (0 for the zero row)
    and ``slot_row`` (n, k_max) the row of ``enc`` for every slot (padded slots -> the zero
    row U). The loop runs over modalities, never over pairs.
    """
    n, k_max = draw.index.shape
    dev = draw.index.device
    chunks: list[Tensor] = []
    targets: list[Tensor] = []
    slot_row = torch.zeros(n, k_max, dtype=torch.long, device=dev)
    offset = 0
    for j, mod in enumerate(pool.modalities):
        sel = (target[:, None] == j) & draw.mask
        rows = draw.index[sel]
        if rows.numel() == 0:
            continue
        uniq, inv = torch.unique(rows, return_inverse=True)
        chunks.append(encode(mod, pool.x[mod][uniq]))
        targets.append(torch.full((uniq.shape[0],), j, dtype=torch.long, device=dev))
        slot_row = slot_row.masked_scatter(sel, inv + offset)
        offset += int(uniq.shape[0])
    zero = pool.x[pool.modalities[0]].new_zeros(1, n_tokens, dim)
    enc = torch.cat([*chunks, zero], 0)
    enc_target = torch.cat([*targets, torch.zeros(1, dtype=torch.long, device=dev)])
    slot_row = torch.where(draw.mask, slot_row, torch.full_like(slot_row, offset))
    return enc, enc_target, slot_row


def encode_support(
    encode: Callable[[str, Tensor], Tensor],
    pool: TrainingPool,
    target: Tensor,
    draw: SupportDraw,
    n_tokens: int,
    dim: int,
) -> Tensor:
    """Encoder tokens (n, k_max, P, D) of the supporting members' target-modality inputs
    (each distinct training row encoded once; padded slots hold zeros)."""
    enc, _, slot_row = encode_support_unique(encode, pool, target, draw, n_tokens, dim)
    return enc[slot_row]


def member_weights(support_mask: Tensor, own_mask: Tensor, support_weight: float = 0.5) -> Tensor:
    """Fixed pooling weights (n, k_max + M) over [supporting members; own modalities].

    ``support_weight`` (reference 0.5) is split evenly over the real supporting members and
    ``1 - support_weight`` over the sample's own observed modalities; when one side is empty the
    other gets all the weight. Padded / unobserved members get 0.
    """
    s, o = support_mask.float(), own_mask.float()
    ns, no = s.sum(1, keepdim=True), o.sum(1, keepdim=True)
    ws = torch.where(no > 0, torch.full_like(ns, support_weight), torch.ones_like(ns))
    ws = torch.where(ns > 0, ws, torch.zeros_like(ws))
    wo = 1.0 - ws
    return torch.cat([s * ws / ns.clamp_min(1.0), o * wo / no.clamp_min(1.0)], dim=1)
