"""``bank``: a learnable missing-modality embedding bank, as in Flex-MoE.

Every (observed combination, missing modality) pair has its own learnable (P, D) embedding: a
sample observing {a, c} and missing b gets the embedding of slot ({a, c}, b), whatever its
values are. The bank learns by backpropagation from the task loss.

Parameterisation: slot(O, m) = ``base[m]`` + ``delta[O, m]``. ``base`` is one embedding per
modality, ``delta`` one per (combination bitmask, modality), initialised at zero. This is the
same family of functions as an independent embedding per slot, but

* a combination never seen in training (``context.pool``, the TRAINING observed mask, decides
  what was seen) falls back to ``base[m]`` alone, which every training sample missing m has
  trained: unseen combinations are handled, never a crash, and counted in
  ``info["fallback"]``;
* rare combinations start from the modality's shared embedding instead of noise.

The delta table is indexed directly by ``bitmask * M + m`` and so holds ``2**M * M`` rows
(a few hundred for the built-in datasets); ``max_modalities`` bounds it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moe_retriever.completion.base import (
    Completion,
    CompletionContext,
    CompletionOutput,
    register_completion,
)


def combination_bitmask(observed: Tensor) -> Tensor:
    """(B, M) bool -> (B,) int64 with bit j set when modality j is observed."""
    weights = 2 ** torch.arange(observed.shape[1], device=observed.device, dtype=torch.int64)
    return (observed.to(torch.int64) * weights).sum(dim=1)


@register_completion
class BankCompletion(Completion):
    """Missing slots get a learned embedding per (observed combination, missing modality)."""

    name = "bank"
    needs_pool = True  # only to know which combinations occurred in training
    learns = True

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        init_std: float = 0.02,
        max_modalities: int = 10,
    ) -> None:
        super().__init__(modalities, n_tokens, dim)
        n_mod = len(self.modalities)
        if n_mod > max_modalities:
            raise ValueError(
                f"bank completion holds one embedding per (combination, modality): "
                f"{n_mod} modalities would need 2**{n_mod} * {n_mod} slots; raise "
                f"max_modalities (now {max_modalities}) or use 'knn' / 'moe-retriever'"
            )
        self.base = nn.Parameter(torch.randn(n_mod, n_tokens, dim) * init_std)
        self.delta = nn.Embedding(2**n_mod * n_mod, n_tokens * dim)
        nn.init.zeros_(self.delta.weight)

    def seen_combinations(self, context: CompletionContext, device: torch.device) -> Tensor:
        """(2**M,) bool: which observed combinations the training pool holds."""
        seen = torch.zeros(2 ** len(self.modalities), dtype=torch.bool, device=device)
        if context.pool is not None and context.pool.n > 0:
            seen[combination_bitmask(context.pool.observed.to(device))] = True
        return seen

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        b, n_mod, p, d = tokens.shape
        code = combination_bitmask(observed)  # (B,)
        if context.pool is None:
            # without a pool nothing is known about training combinations: base only,
            # except in training where the batch itself is training data
            known = torch.full((b,), context.training, dtype=torch.bool, device=tokens.device)
        else:
            known = self.seen_combinations(context, tokens.device)[code] | context.training
        slot = code[:, None] * n_mod + torch.arange(n_mod, device=tokens.device)[None, :]
        delta = self.delta(slot).view(b, n_mod, p, d) * known[:, None, None, None]
        completed = self.base[None].to(tokens.dtype) + delta.to(tokens.dtype)
        out = self.keep_observed(completed, tokens, observed)
        missing = ~observed
        n_fallback = int((missing & ~known[:, None]).sum())
        info = {
            "fallback": n_fallback,
            "fallback_by_modality": {
                m: int((missing[:, j] & ~known).sum()) for j, m in enumerate(self.modalities)
            },
        }
        return CompletionOutput(out, self.no_loss(tokens), info)
