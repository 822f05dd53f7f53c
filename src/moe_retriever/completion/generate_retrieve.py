"""``generate-retrieve``: MoE-Retriever with MFM's generated token as one more member.

"Generate, then retrieve": for every missing (sample, modality) pair, an MFM generator
(:mod:`.mfm`) first estimates the missing modality's tokens from what the sample has
(shared factor + surrogate specific factor, decoded). That estimate then joins the retriever's
members (:mod:`.moe_retriever`): beside the k supporting samples' tokens of the target
modality and the sample's own observed modalities, the sequence gets the generated P tokens
with their own learned role embedding (plus the target's modality and the patch positions). The
attention runs across all members, so the router sees a context that contains the generated
estimate, and the fixed pooling gives it ``generated_weight`` of the weight (the supporting and
own members share the rest in their usual ``support_weight`` proportion). Everything is
trained end to end: the classification loss and the model's hide-and-align loss reach the
generator through the retriever, and the generator's own MFM terms (reconstruction, surrogate,
MMD, label) are added as ``CompletionOutput.loss``; the retriever's balance loss is the
``aux_loss`` (weighted by the model's ``balance_weight``).

The options are the retriever's (same names and defaults as ``moe-retriever``) and the
generator's (same as ``mfm``), plus ``generated_weight``. With the generated member left out,
the retriever's computation is exactly ``moe-retriever``'s (the extra member is an optional
argument of :meth:`MoERetrieverCompletion.retrieve_pairs`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from moe_retriever.completion.base import (
    CompletionContext,
    CompletionOutput,
    register_completion,
)
from moe_retriever.completion.mfm import MFMCompletion
from moe_retriever.completion.moe_retriever import MoERetrieverCompletion
from moe_retriever.completion.support import encode_support_unique


@register_completion
class GenerateRetrieveCompletion(MoERetrieverCompletion):
    """MoE-Retriever whose members include the MFM-generated token of the missing modality."""

    name = "generate-retrieve"
    needs_pool = True
    learns = True

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        # the retriever (moe-retriever's options)
        n_candidates: int = 8,
        n_shared: int = 4,
        top_k: int = 4,
        n_heads: int = 4,
        k: int | None = 3,
        routing: str = "pooled",
        pooling: str = "fixed",
        support_weight: float = 0.5,
        expert_hidden: int | None = None,
        noisy_gating: bool = True,
        dropout: float = 0.0,
        eval_draws: int = 4,
        seed: int = 0,
        dispatch: str = "tiles",
        tile: int = 128,
        residual: bool = True,
        support_select: str = "similar",
        similar_index: str = "auto",
        # the generated member
        generated_weight: float = 1.0 / 3.0,
        # the generator (mfm's options)
        d_y: int = 32,
        d_m: int = 32,
        f_y: int = 32,
        f_m: int = 32,
        decoder_hidden: int = 128,
        shared_blocks: int = 1,
        lambda_rec: float = 1.0,
        lambda_sur: float = 1.0,
        lambda_mmd: float = 1.0,
        lambda_y: float = 1.0,
        kernel: str = "code",
        unbiased: bool = False,
        p_hide: float = 0.5,
        detach_targets: bool = True,
        target: str = "tokens",
        n_classes: int | None = None,
        dims: dict[str, int] | None = None,
    ) -> None:
        super().__init__(
            modalities,
            n_tokens,
            dim,
            n_candidates=n_candidates,
            n_shared=n_shared,
            top_k=top_k,
            n_heads=n_heads,
            k=k,
            routing=routing,
            pooling=pooling,
            support_weight=support_weight,
            expert_hidden=expert_hidden,
            noisy_gating=noisy_gating,
            dropout=dropout,
            eval_draws=eval_draws,
            seed=seed,
            dispatch=dispatch,
            tile=tile,
            residual=residual,
            support_select=support_select,
            similar_index=similar_index,
        )
        if not 0.0 <= generated_weight <= 1.0:
            raise ValueError(
                f"generate-retrieve: generated_weight must be in [0, 1], got {generated_weight}"
            )
        self.generated_weight = float(generated_weight)
        self.generated_role = nn.Parameter(torch.randn(dim) * 0.02)
        self.generator = MFMCompletion(
            modalities,
            n_tokens,
            dim,
            d_y=d_y,
            d_m=d_m,
            f_y=f_y,
            f_m=f_m,
            decoder_hidden=decoder_hidden,
            n_heads=n_heads,
            shared_blocks=shared_blocks,
            dropout=dropout,
            lambda_rec=lambda_rec,
            lambda_sur=lambda_sur,
            lambda_mmd=lambda_mmd,
            lambda_y=lambda_y,
            kernel=kernel,
            unbiased=unbiased,
            p_hide=p_hide,
            detach_targets=detach_targets,
            target=target,
            n_classes=n_classes,
            dims=dims,
        )

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        b_idx, m_idx, codes, draw, R = self.draw_pairs(observed, context)
        gen, gen_loss, gen_info = self.generator.run(tokens, observed, context)
        info: dict[str, Any] = {
            "fallback": {k: v.detach() for k, v in draw.counts.items()},
            "mfm": gen_info,
        }
        if b_idx.numel() == 0:
            return CompletionOutput(tokens, self.no_loss(tokens), info, gen_loss)
        pool, encode = self._need(context)
        support = encode_support_unique(encode, pool, m_idx, draw, self.n_tokens, self.dim)
        # pairs are the batch's missing slots in nonzero order, repeated R times draw-major
        extra = (gen.repeat(R, 1, 1), self.generated_role, self.generated_weight)
        out, loss, stats = self.retrieve_pairs(
            tokens, observed, b_idx, m_idx, draw, support, extra=extra
        )
        n = out.shape[0] // R
        out = out.reshape(R, n, *out.shape[1:]).mean(0)
        completed = tokens.index_put((b_idx[:n], m_idx[:n]), out)
        info["routing"] = self._routing_info(m_idx, codes, stats)
        return CompletionOutput(completed, loss, info, gen_loss)
