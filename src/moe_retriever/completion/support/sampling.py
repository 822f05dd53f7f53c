"""The mixin that gives a completion method its supporting groups (random draws or the similar
selection) for the missing pairs of a batch."""

from __future__ import annotations

from torch import Tensor

from moe_retriever.completion.base import CompletionContext, TrainingPool
from moe_retriever.completion.support.codes import combination_codes
from moe_retriever.completion.support.index import INDEX_KINDS, SimilarSelector
from moe_retriever.completion.support.pools import SupportDraw, SupportingGroupSampler
from moe_retriever.completion.support.similar import SUPPORT_SELECT, ConcatSimilarSelector


class SupportSampling:
    """Mixin for completion methods that draw supporting groups from the training pool.

    Keeps one :class:`SupportingGroupSampler` per training pool (rebuilt only when the pool
    tensor changes: a new pool or a device move; or when ``seed`` changes), and draws groups
    for the missing pairs of a batch, repeated ``eval_draws`` times at evaluation.
    """

    support_k: int | None
    eval_draws: int
    seed: int
    support_select: str
    similar_index: str

    def _init_sampling(
        self,
        k: int | None,
        eval_draws: int,
        seed: int,
        support_select: str = "random",
        similar_index: str = "auto",
    ) -> None:
        if eval_draws < 1:
            raise ValueError(f"eval_draws must be >= 1, got {eval_draws}")
        if support_select not in SUPPORT_SELECT:
            raise ValueError(
                f"support_select must be one of {SUPPORT_SELECT}, got {support_select!r}"
            )
        if similar_index not in INDEX_KINDS:
            raise ValueError(f"similar_index must be one of {INDEX_KINDS}, got {similar_index!r}")
        self.similar_index = similar_index
        self.support_k = k
        self.eval_draws = int(eval_draws)
        self.seed = int(seed)
        self.support_select = support_select
        self._sampler: SupportingGroupSampler | None = None
        self._sampler_source: Tensor | None = None

    def set_seed(self, seed: int) -> None:
        """Seed of the supporting-group draws: evaluation groups are a hash of it (and of the
        sample, target, draw and slot), and the training generator starts from it. The model
        passes the run's seed here, so two seeds of a run draw different evaluation groups."""
        self.seed = int(seed)

    def sampler_for(self, pool: TrainingPool) -> SupportingGroupSampler:
        if (
            self._sampler is None
            or self._sampler_source is not pool.observed
            or self._sampler.seed != self.seed
        ):
            self._sampler = SupportingGroupSampler(pool.observed, k=self.support_k, seed=self.seed)
            self._sampler_source = pool.observed
        return self._sampler

    def _select_similar(
        self, context: CompletionContext, b_idx: Tensor, m_idx: Tensor, codes: Tensor
    ) -> SupportDraw:
        pool = context.pool
        assert pool is not None
        if context.x is None and b_idx.numel():
            raise ValueError(
                'support_select="similar" compares raw inputs: the completion context needs '
                "the batch's inputs (context.x); MultimodalClassifier passes them"
            )
        key = (
            "similar-concat"
            if self.support_select == "similar-concat"
            else f"similar:{self.similar_index}"
        )
        selector = pool.cache.get(key)
        if selector is None:  # built once per pool, shared by the models drawing from it
            if self.support_select == "similar-concat":
                selector = ConcatSimilarSelector(pool)
            else:
                selector = SimilarSelector(pool, kind=self.similar_index)
            pool.cache[key] = selector
        exclude = None
        if context.training and context.pool_index is not None:
            exclude = context.pool_index.to(b_idx.device)[b_idx]
        sampler = self.sampler_for(pool)
        return selector.select(
            sampler, context.x or {}, b_idx, m_idx, codes, exclude, training=context.training
        )

    def draw_pairs(
        self, observed: Tensor, context: CompletionContext
    ) -> tuple[Tensor, Tensor, Tensor, SupportDraw, int]:
        """Missing pairs of the batch (repeated R times at evaluation) and their groups.

        Returns (b_idx, m_idx, codes, draw, R) with pairs ordered draw-major: pair p of draw r
        sits at r * n_pairs + p. With ``support_select="similar"`` the group is the pool's k
        most similar members (:class:`SimilarSelector`), one deterministic group (R = 1).
        """
        if context.pool is None:
            raise ValueError(
                f"completion {type(self).__name__} needs the training pool; "
                "call model.set_training_pool(x, observed) first"
            )
        sampler = self.sampler_for(context.pool)
        b_idx, m_idx = (~observed).nonzero(as_tuple=True)
        codes = combination_codes(observed)[b_idx]
        if self.support_select != "random":  # similar: deterministic, one group per pair
            return b_idx, m_idx, codes, self._select_similar(context, b_idx, m_idx, codes), 1
        R = 1 if context.training else self.eval_draws
        keys = None
        if not context.training:
            if context.sample_keys is None:
                # No stable ids given: fall back to batch positions (deterministic per batch).
                keys = b_idx
            else:
                keys = context.sample_keys.to(observed.device)[b_idx]
        exclude = None
        if context.training and context.pool_index is not None:
            exclude = context.pool_index.to(observed.device)[b_idx]
        draw = sampler.draw(m_idx, codes, context.training, keys, exclude=exclude, n_draws=R)
        if R > 1:  # pairs repeated draw-major, like the draws
            b_idx, m_idx, codes = b_idx.repeat(R), m_idx.repeat(R), codes.repeat(R)
        return b_idx, m_idx, codes, draw, R
