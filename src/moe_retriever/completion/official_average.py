"""``official-average``: the research code's effective behaviour, kept ON PURPOSE as a baseline.

METHOD.md defect 1: in the authors' code the retriever's output is overwritten by
``0.5 * mean(supporting members' encoder outputs) + 0.5 * mean(own observed encoder outputs)``,
so the retriever never trains. This method computes exactly that average (same supporting-group
sampler as ``moe-retriever``, same training pool) and has no parameters of its own, so the
difference the retriever makes can be measured.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from moe_retriever.completion.base import (
    Completion,
    CompletionContext,
    CompletionOutput,
    register_completion,
)
from moe_retriever.completion.support import SupportSampling, encode_support, member_weights


@register_completion
class OfficialAverageCompletion(SupportSampling, Completion):
    """0.5 * mean(supporting encoder tokens) + 0.5 * mean(own observed encoder tokens)."""

    name = "official-average"
    needs_pool = True

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        k: int | None = None,
        support_weight: float = 0.5,
        eval_draws: int = 1,
        seed: int = 0,
        support_select: str = "random",
        similar_index: str = "auto",
    ) -> None:
        """``eval_draws`` defaults to 1:
        the research code draws one supporting group per sample at evaluation, and this method
        is the authors'-behaviour baseline (``completion.eval_draws`` sets it explicitly).
        ``support_select``: "random" (the authors') or "similar" / "similar-concat" (as in
        moe-retriever; ``similar_index`` picks the index kind of "similar")."""
        Completion.__init__(self, modalities, n_tokens, dim)
        self._init_sampling(k, eval_draws, seed, support_select, similar_index)
        self.support_weight = support_weight

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        b_idx, m_idx, _codes, draw, R = self.draw_pairs(observed, context)
        info: dict[str, Any] = {"fallback": {k: v.detach() for k, v in draw.counts.items()}}
        if b_idx.numel() == 0:
            return CompletionOutput(tokens, self.no_loss(tokens), info)
        if context.encode is None or context.pool is None:
            raise ValueError("official-average needs context.encode and context.pool")
        support = encode_support(context.encode, context.pool, m_idx, draw, self.n_tokens, self.dim)
        own = tokens[b_idx]  # (n, M, P, D); unobserved slots get weight 0
        w = member_weights(draw.mask, observed[b_idx], self.support_weight)
        avg = (w[:, :, None, None] * torch.cat([support, own], dim=1)).sum(1)
        n = avg.shape[0] // R
        avg = avg.reshape(R, n, *avg.shape[1:]).mean(0)
        completed = tokens.index_put((b_idx[:n], m_idx[:n]), avg)
        return CompletionOutput(completed, self.no_loss(tokens), info)
