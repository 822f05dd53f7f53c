"""``knn``: average the target-modality tokens of the k most similar TRAINING samples.

For a sample i missing modality m, the candidates are the training-pool members that observe m.
Their similarity to i is measured on the modalities both observe: the cosine similarity of the
mean-pooled encoder tokens of each shared modality, averaged over the shared modalities (the
batch's own tokens against the pool's tokens, encoded under no_grad with the model's current
encoders). The k most similar candidates' modality-m inputs are then encoded again WITH
gradient and their tokens averaged, so the encoder learns from the fills it produces.

The completion interface hands a method the batch's tokens, not its raw inputs, which is why
similarity lives in token space; with the default patch encoders (one linear map per modality)
the cosine of the tokens tracks the cosine of the standardised inputs from the first step.

Candidates sharing no modality with the sample rank below every candidate that shares one
(counted in ``info["no_shared"]``); if fewer than k candidates exist the available ones are
averaged; a modality that no training sample observes stays at zero (``info["empty_pool"]``).
Pools larger than ``max_pool`` are subsampled: at random per training step, a fixed evenly
spaced subset at evaluation (deterministic predictions).

During training the batch itself is drawn from the pool. A pool member whose tokens are
identical to the query's on every modality the query observes (the query itself, or an exact
duplicate carrying the same information) is excluded, so a sample can never retrieve its own
hidden modality even when the training loop hides modalities for augmentation. At evaluation
nothing is excluded: evaluation samples are not in the pool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moe_retriever.completion.base import (
    Completion,
    CompletionContext,
    CompletionOutput,
    register_completion,
)


@register_completion
class KNNCompletion(Completion):
    """Missing slots get the mean target-modality tokens of the k nearest training samples."""

    name = "knn"
    needs_pool = True
    learns = False

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        k: int = 5,
        max_pool: int = 4096,
        chunk_size: int = 2048,
    ) -> None:
        super().__init__(modalities, n_tokens, dim)
        if k < 1:
            raise ValueError(f"knn completion: k must be >= 1, got {k}")
        if max_pool < 1:
            raise ValueError(f"knn completion: max_pool must be >= 1, got {max_pool}")
        self.k = int(k)
        self.max_pool = int(max_pool)
        self.chunk_size = int(chunk_size)

    def _pool_subset(self, n: int, training: bool, device: torch.device) -> Tensor:
        if n <= self.max_pool:
            return torch.arange(n, device=device)
        if training:
            return torch.randperm(n, device=device)[: self.max_pool].sort().values
        pick = torch.linspace(0, n - 1, self.max_pool, device=device)
        return pick.round().long().unique()

    @torch.no_grad()
    def _pool_features(self, context: CompletionContext, modality: str, rows: Tensor) -> Tensor:
        """(n, D) mean-pooled tokens of pool members ``rows`` for ``modality`` (no gradient)."""
        assert context.encode is not None and context.pool is not None
        x = context.pool.x[modality][rows]
        parts = [
            context.encode(modality, x[s : s + self.chunk_size]).float().mean(dim=1)
            for s in range(0, x.shape[0], self.chunk_size)
        ]
        return torch.cat(parts) if parts else x.new_zeros((0, self.dim))

    @torch.no_grad()
    def similarity(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext, rows: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Against pool members ``rows``: (B, n) mean cosine over shared modalities,
        (B, n) number of shared modalities, (B, n) identical-on-every-query-modality."""
        assert context.pool is not None
        pool_obs = context.pool.observed.to(tokens.device)[rows]
        b, n = observed.shape[0], rows.numel()
        total = torch.zeros((b, n), device=tokens.device)
        shared = torch.zeros((b, n), device=tokens.device)
        same = torch.ones((b, n), dtype=torch.bool, device=tokens.device)
        for j, m in enumerate(self.modalities):
            q_obs = observed[:, j]
            if not bool(q_obs.any()):
                continue
            both = q_obs[:, None] & pool_obs[None, :, j]
            if not bool(both.any()):
                same &= ~q_obs[:, None]
                continue
            q = tokens[:, j].detach().float().mean(dim=1)
            r = self._pool_features(context, m, rows)
            cos = F.normalize(q, dim=1) @ F.normalize(r, dim=1).T
            total += cos * both
            shared += both
            # exact-duplicate test (relative tolerance on the squared distance)
            qq = (q * q).sum(1, keepdim=True)
            rr = (r * r).sum(1)[None, :]
            dist = (qq + rr - 2 * q @ r.T).clamp_min(0)
            ident = dist <= 1e-6 * (qq + rr) + 1e-12
            same &= ~q_obs[:, None] | (both & ident)
        return total / shared.clamp_min(1.0), shared, same

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        if context.pool is None or context.encode is None:
            raise ValueError(
                "knn completion needs the training pool and the encoder in its context "
                "(call set_training_pool on the model before fitting or predicting)"
            )
        missing = ~observed
        info: dict[str, object] = {"empty_pool": {}, "no_shared": 0, "excluded_self": 0}
        if not bool(missing.any()):
            return CompletionOutput(tokens, self.no_loss(tokens), info)
        pool = context.pool
        rows_pool = self._pool_subset(pool.n, context.training, tokens.device)
        pool_obs = pool.observed.to(tokens.device)[rows_pool]
        sim, shared, same = self.similarity(tokens, observed, context, rows_pool)
        # rank: candidates sharing a modality by similarity (cosine >= -1), then the others
        score = torch.where(shared > 0, sim, sim.new_full((), -3.0))
        if context.training:
            self_mask = same & observed.any(1)[:, None]
            info["excluded_self"] = int(self_mask.sum())
            score = score.masked_fill(self_mask, float("-inf"))
        completed = torch.zeros_like(tokens)
        empty: dict[str, int] = {}
        no_shared = 0
        for j, m in enumerate(self.modalities):
            rows = torch.nonzero(missing[:, j], as_tuple=False).flatten()
            if rows.numel() == 0:
                continue
            cand = pool_obs[:, j]
            n_cand = int(cand.sum())
            if n_cand == 0:
                empty[m] = int(rows.numel())
                continue
            s = score[rows].masked_fill(~cand[None, :], float("-inf"))
            top_s, top_i = s.topk(min(self.k, n_cand), dim=1)  # (R, k)
            valid = torch.isfinite(top_s)
            no_shared += int(((top_s <= -3.0) & valid).sum())
            uniq, inverse = torch.unique(rows_pool[top_i], return_inverse=True)
            enc = context.encode(m, pool.x[m][uniq])  # (U, P, D), with gradient
            w = valid.to(enc.dtype)
            w = w / w.sum(dim=1, keepdim=True).clamp_min(1.0)
            fill = (enc[inverse] * w[:, :, None, None]).sum(dim=1)
            completed[rows, j] = fill.to(tokens.dtype)
        info["empty_pool"] = empty
        info["no_shared"] = no_shared
        out = self.keep_observed(completed, tokens, observed)
        return CompletionOutput(out, self.no_loss(tokens), info)
