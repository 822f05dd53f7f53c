"""``transformer``: the library's base fusion and classifier (the head of MoE-Retriever).

:class:`TransformerFusion` (a plain module other heads reuse, e.g. as an expert): add modality
and patch-position embeddings to the (B, M, P, D) tokens (in completed mode also a learned
observation-status embedding, ``arch.status_embedding``: whether the data has the modality,
``context.status``), run ``arch.fusion_layers`` pre-norm transformer blocks over all M * P
tokens (optionally with a sparse MoE feed-forward), final LayerNorm, mean-pool each modality's P
tokens -> (B, M, D).

:class:`TransformerHead`: that fusion, the M pooled vectors concatenated (B, M * D), then an MLP
(``arch.head_hidden``, GELU, dropout) -> logits; with ``arch.ensemble_k`` = k > 1 the MLP is k
TabM members (:mod:`moe_retriever.heads.ensemble`) and the logits are (B, k, C). Its
auxiliary loss is the fusion MoE balance loss times ``arch.balance_weight`` (zero without a
fusion MoE).

Masked mode (``context.masked``, completion ``none``): the missing slots are zeroed, their
tokens are excluded from attention as keys (``key_padding_mask``) and their pooled vectors are
set to zero, so nothing depends on what a missing slot held.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads.base import (
    Head,
    HeadContext,
    HeadOutput,
    ensemble_size,
    register_head,
)
from moe_retriever.heads.ensemble import ensemble_classifier
from moe_retriever.nn.transformer import TransformerBlock


class TransformerFusion(nn.Module):
    """Tokens (B, M, P, D) -> per-modality pooled vectors (B, M, D), MoE balance loss, routing."""

    def __init__(self, n_modalities: int, n_tokens: int, dim: int, arch: ModelConfig) -> None:
        super().__init__()
        self.n_modalities, self.n_tokens, self.dim = n_modalities, n_tokens, dim
        self.modality_emb = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)
        self.position_emb = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        # row 0: the data lacks the modality, row 1: it has it (completed mode only); zero at
        # the start, so the fusion begins as it would without it
        self.status_emb = nn.Parameter(torch.zeros(2, dim)) if arch.status_embedding else None
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                arch.n_heads,
                ffn_mult=arch.ffn_mult,
                dropout=arch.dropout,
                moe_experts=arch.fusion_experts if arch.fusion_moe else 0,
                moe_top_k=arch.fusion_top_k,
                noisy_gating=arch.noisy_gating,
            )
            for _ in range(arch.fusion_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, tokens: Tensor, observed: Tensor | None = None, status: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
        """``observed`` given = masked mode (missing slots ignored); None = completed mode.
        ``status`` (B, M) bool, completed mode: True where the data has the modality, False
        where it lacks it (the slot was completed); it selects the status embedding (when the
        fusion has one). Returns pooled (B, M, D), the unweighted balance loss and the
        blocks' routing."""
        B, M, P, D = tokens.shape
        key_mask = None
        if observed is not None:
            tokens = tokens.masked_fill(~observed[:, :, None, None], 0.0)
            key_mask = observed[:, :, None].expand(B, M, P).reshape(B, M * P)
        h = tokens + self.modality_emb[None, :, None] + self.position_emb[None, None]
        if status is not None and self.status_emb is not None:
            h = h + self.status_emb[status.long()][:, :, None]
        h = h.reshape(B, M * P, D)
        aux = h.new_zeros(())
        routing = []
        for block in self.blocks:
            res = block(h, key_mask)
            h = res.x
            aux = aux + res.aux_loss
            if res.routing:
                routing.append(res.routing)
        pooled = self.norm(h).reshape(B, M, P, D).mean(dim=2)
        if observed is not None:
            pooled = pooled.masked_fill(~observed[:, :, None], 0.0)
        return pooled, aux, routing


@register_head
class TransformerHead(Head):
    """Base fusion + MLP classifier over the concatenated pooled modality vectors."""

    name = "transformer"
    supports_ensemble = True

    def __init__(
        self, modalities: list[str], n_tokens: int, dim: int, n_classes: int, arch: ModelConfig
    ) -> None:
        super().__init__(modalities, n_tokens, dim, n_classes, arch)
        M = len(self.modalities)
        self.balance_weight = arch.balance_weight
        self.fusion = TransformerFusion(M, n_tokens, dim, arch)
        k = ensemble_size(arch)
        self.classifier: nn.Module
        if k > 1:  # TabM members sharing the classifier's weights: logits (B, k, C)
            self.classifier = ensemble_classifier(
                M * dim, arch.head_hidden, n_classes, arch.dropout, k, [dim] * M
            )
        else:
            self.classifier = nn.Sequential(
                nn.Linear(M * dim, arch.head_hidden),
                nn.GELU(),
                nn.Dropout(arch.dropout),
                nn.Linear(arch.head_hidden, n_classes),
            )

    def forward(self, tokens: Tensor, observed: Tensor, context: HeadContext) -> HeadOutput:
        if context.masked:
            pooled, balance, routing = self.fusion(tokens, observed)
        else:
            status = observed if context.status is None else context.status
            pooled, balance, routing = self.fusion(tokens, status=status)
        logits = self.classifier(pooled.reshape(pooled.shape[0], -1))
        info: dict[str, Any] = {"fusion": routing, "losses": {"balance": balance.detach()}}
        return HeadOutput(logits, self.balance_weight * balance, info)


__all__ = ["TransformerFusion", "TransformerHead"]
