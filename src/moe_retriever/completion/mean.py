"""``mean``: fill a missing modality with the mean token embedding of the training pool.

The simplest imputation in embedding space. For target modality m the fill is the mean, over
TRAINING samples that observe m, of the (P, D) tokens the model's modality-m encoder gives
them. It is computed from ``context.pool`` with ``context.encode`` and never from the batch
itself, so no validation or test sample can influence it.

Design choice (documented, measured in docs/DEFAULTS.md only indirectly):

* **Training: a differentiable mean over a random subsample of the pool.** Each training step
  encodes up to ``max_pool`` pool members of every needed modality (a fresh random draw from
  torch's global generator, seeded by the run seed) and averages them with gradient. The fill
  therefore follows the encoder as it learns, and the encoder learns that its mean embedding is
  what incomplete samples carry. A ``no_grad`` mean would be a constant per step and would
  lag behind the encoder; the gradient costs one extra small encode per step.
* **Evaluation: a deterministic mean.** The whole pool when it holds at most ``max_pool``
  members per modality (every built-in dataset), otherwise a fixed, evenly spaced subset of
  ``max_pool`` members, so predictions do not depend on any random state.

A modality that no training sample observes cannot have a mean; its slots are left at zero
and counted in ``info["empty_pool"]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moe_retriever.completion.base import (
    Completion,
    CompletionContext,
    CompletionOutput,
    register_completion,
)


@register_completion
class MeanCompletion(Completion):
    """Missing slots get the training-pool mean of the modality's encoder tokens."""

    name = "mean"
    needs_pool = True
    learns = False

    def __init__(
        self, modalities: list[str], n_tokens: int, dim: int, max_pool: int = 1024
    ) -> None:
        super().__init__(modalities, n_tokens, dim)
        if max_pool < 1:
            raise ValueError(f"mean completion: max_pool must be >= 1, got {max_pool}")
        self.max_pool = int(max_pool)

    def _members(self, have: Tensor, training: bool) -> Tensor:
        """Indices of the pool members that observe the modality (subsampled if many)."""
        idx = torch.nonzero(have, as_tuple=False).flatten()
        if idx.numel() <= self.max_pool:
            return idx
        if training:
            pick = torch.randperm(idx.numel(), device=idx.device)[: self.max_pool]
            return idx[pick.sort().values]
        pick = torch.linspace(0, idx.numel() - 1, self.max_pool, device=idx.device)
        return idx[pick.round().long().unique()]

    def mean_tokens(self, context: CompletionContext, modality: str) -> Tensor | None:
        """(P, D) mean encoder tokens of ``modality`` over the pool; None if nobody has it."""
        if context.pool is None or context.encode is None:
            raise ValueError(
                "mean completion needs the training pool and the encoder in its context "
                "(call set_training_pool on the model before fitting or predicting)"
            )
        pool = context.pool
        j = pool.modalities.index(modality)
        members = self._members(pool.observed[:, j], context.training)
        if members.numel() == 0:
            return None
        return context.encode(modality, pool.x[modality][members]).mean(dim=0)

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        completed = torch.zeros_like(tokens)
        missing = ~observed
        empty: dict[str, int] = {}
        for j, m in enumerate(self.modalities):
            if not bool(missing[:, j].any()):
                continue
            mean = self.mean_tokens(context, m)
            if mean is None:
                empty[m] = int(missing[:, j].sum())
                continue
            # expand keeps the graph to the encoder; rows of observed samples are dropped below
            completed[:, j] = mean.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        out = self.keep_observed(completed, tokens, observed)
        return CompletionOutput(out, self.no_loss(tokens), {"empty_pool": empty})
