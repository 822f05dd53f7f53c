"""``none``: no completion; missing slots stay zero and the head ignores them (masked mode).

Heads receive ``context.masked = True`` and must not read missing slots (the transformer head
masks their tokens out of attention and zeroes their pooled vectors; SEED_METHODS.md section 0).
This is the "no imputation" arm of a comparison: the model sees only what each sample has.
"""

from __future__ import annotations

from torch import Tensor

from moe_retriever.completion.base import (
    Completion,
    CompletionContext,
    CompletionOutput,
    register_completion,
)


@register_completion
class NoCompletion(Completion):
    """Leave missing slots at zero and ask the head to mask them."""

    name = "none"
    fills = False

    def __init__(self, modalities: list[str], n_tokens: int, dim: int) -> None:
        super().__init__(modalities, n_tokens, dim)

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        completed = tokens.masked_fill(~observed[:, :, None, None], 0.0)
        return CompletionOutput(completed, self.no_loss(tokens), {})
