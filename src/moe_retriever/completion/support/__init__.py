"""Supporting groups: which TRAINING samples support the retrieval of a missing modality.

For a sample i with observed set O_i that misses modality m, the supporting group is k samples
drawn from the pool of training samples that observe m and every modality in O_i (METHOD.md
step 1). The pool of (m, O_i) is built on demand from the training observed mask, for any
combination the model meets (:mod:`.pools`, where its layout is described), and groups are
drawn for a whole batch of (sample, missing modality) pairs with tensor operations.

Draws: k members per pair (default k = |O_i|, as in the reference code; ``k`` fixes it), without
replacement when the pool holds at least k samples (Floyd's algorithm, vectorized over pairs, k
sequential steps), otherwise with replacement. Only a pair whose pool is EMPTY (no training
sample observes m and all of O_i) falls back to the training samples that observe m (counted
``fallback_empty_pool``, once per pair however many evaluation draws it gets). If no training
sample observes m, the pair gets no supporting members (counted as ``no_support``); the
retriever then works from the sample's own modalities. ``unseen_combination`` counts pairs whose
combination O_i no training sample has exactly (served by their superset pool: not a fallback).

Randomness: training draws come from a ``torch.Generator`` seeded with ``seed`` (so a run is
reproducible and independent of the global RNG); evaluation draws are a hash of (seed, sample
key, target modality, draw number, slot), so a sample's supporting group does not depend on
its batch, on the order of evaluation or on any RNG state.

No evaluation sample can enter a pool: the sampler only ever sees the training mask, and it
returns row indices into the training pool.

Modules, each one concept:

* :mod:`.codes`: bitmask codes of observed combinations (``combination_codes``,
  ``code_bits``) and ``hash_uniform``, the counter-based hash behind evaluation draws;
* :mod:`.pools`: :class:`SupportingGroupSampler`, the pools (layout, on-demand cache, subcube
  draws) and the random draws of :class:`SupportDraw` groups from them;
* :mod:`.index`: ``support_select="similar"`` (the default), :class:`SimilarIndex` (a faiss
  index of the pool whose inverted lists are the observed-modality combinations) and
  :class:`SimilarSelector` (the k pool members with the highest sum of per-modality cosines);
* :mod:`.similar`: ``support_select="similar-concat"``, :class:`ConcatSimilarSelector` (the
  exact selection by one cosine over the concatenated inputs, the default before issue 24)
  and :func:`top_k_stable`;
* :mod:`.encoding`: the members' encoder tokens (:func:`encode_support_unique`,
  :func:`encode_support`) and the fixed pooling weights (:func:`member_weights`);
* :mod:`.sampling`: :class:`SupportSampling`, the mixin that gives a completion method its
  groups for the missing pairs of a batch.
"""

from moe_retriever.completion.support.codes import (
    MAX_MODALITIES,
    code_bits,
    combination_codes,
    hash_uniform,
)
from moe_retriever.completion.support.encoding import (
    encode_support,
    encode_support_unique,
    member_weights,
)
from moe_retriever.completion.support.index import (
    INDEX_KINDS,
    SimilarIndex,
    SimilarSelector,
    select_similar,
)
from moe_retriever.completion.support.pools import SupportDraw, SupportingGroupSampler
from moe_retriever.completion.support.sampling import SupportSampling
from moe_retriever.completion.support.similar import (
    SUPPORT_SELECT,
    ConcatSimilarSelector,
    top_k_stable,
)

__all__ = [
    "INDEX_KINDS",
    "MAX_MODALITIES",
    "SUPPORT_SELECT",
    "ConcatSimilarSelector",
    "SimilarIndex",
    "SimilarSelector",
    "SupportDraw",
    "SupportSampling",
    "SupportingGroupSampler",
    "code_bits",
    "combination_codes",
    "encode_support",
    "encode_support_unique",
    "hash_uniform",
    "member_weights",
    "select_similar",
    "top_k_stable",
]
