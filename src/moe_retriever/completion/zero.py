"""``zero``: missing modalities get zero tokens (the warm-up behaviour; the simplest baseline)."""

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
class ZeroCompletion(Completion):
    """Replace every missing slot by zeros; no parameters, no pool."""

    name = "zero"

    def __init__(self, modalities: list[str], n_tokens: int, dim: int) -> None:
        super().__init__(modalities, n_tokens, dim)

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        completed = self.keep_observed(torch.zeros_like(tokens), tokens, observed)
        return CompletionOutput(completed, self.no_loss(tokens), {})
