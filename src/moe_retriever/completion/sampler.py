"""Supporting-group sampler: which TRAINING samples support the retrieval of a missing modality.

For a sample i with observed set O_i that misses modality m, the supporting group is k samples
drawn from the pool of training samples that observe m and every modality in O_i (METHOD.md
step 1). This module builds those pools once from the training observed mask and draws groups
for a whole batch of (sample, missing modality) pairs with tensor operations.

Layout (cheap for M up to 16 and beyond, as long as the number of distinct observed
combinations is moderate):

* every training sample gets a bitmask code of its observed modalities; samples are sorted by
  code, so each distinct code is one contiguous segment of the sorted index;
* a pool is identified by the key (m, O) = ``O * 64 + m`` and is the union of the segments of
  all codes that contain O and m. Keys are built for every combination O that occurs in the
  training mask (and for O = {} per modality: the fallback pools), never for all 2^M subsets;
* a pool is stored as its list of segments plus a global cumulative length, so drawing the r-th
  member of a pool is a ``searchsorted`` away; pools are never materialised as index lists.

Draws: k members per pair (default k = |O_i|, as in the reference code; ``k`` fixes it), without
replacement when the pool holds at least k samples (Floyd's algorithm, vectorized over pairs, k
sequential steps), otherwise with replacement. A pair whose key was never built (a combination
that does not occur in training) or whose pool is empty falls back to the training samples that
observe m; both cases are counted. If no training sample observes m, the pair gets no supporting
members (counted as ``no_support``); the retriever then works from the sample's own modalities.

Randomness: training draws come from a ``torch.Generator`` seeded with ``seed`` (so a run is
reproducible and independent of the global RNG); evaluation draws are a hash of (seed, sample
key, target modality, draw number, slot), so a sample's supporting group does not depend on
its batch, on the order of evaluation or on any RNG state.

No evaluation sample can enter a pool: the sampler only ever sees the training mask, and it
returns row indices into the training pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from moe_retriever.completion.base import CompletionContext, TrainingPool

_MASK31 = (1 << 31) - 1
_KEY_STRIDE = 64  # key = O * 64 + m; M <= 40 keeps keys far from int64 overflow
MAX_MODALITIES = 40
_EXCLUDE_ROUNDS = 4  # redraws of a slot that drew its pair's excluded row, then it is dropped


def _mix31(x: Tensor) -> Tensor:
    """A 31-bit integer hash (xorshift-multiply), int64 arithmetic without overflow."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK31
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK31
    return (x >> 16) ^ x


def hash_uniform(*parts: Tensor) -> Tensor:
    """Deterministic float64 uniforms in [0, 1) from int64 tensors (broadcast together)."""
    h = torch.zeros((), dtype=torch.long, device=parts[0].device)
    for i, p in enumerate(parts):
        p = p.long()
        lo, hi = p & _MASK31, (p >> 31) & _MASK31
        h = _mix31(h ^ _mix31(lo + 0x2545F49 * (i + 1)))
        h = _mix31(h ^ _mix31(hi + 0x1B873593))
    return h.double() / float(1 << 31)


def combination_codes(observed: Tensor) -> Tensor:
    """(N, M) bool -> (N,) int64 bitmask, bit j set when modality j is observed."""
    M = observed.shape[1]
    if M > MAX_MODALITIES:
        raise ValueError(f"at most {MAX_MODALITIES} modalities are supported, got {M}")
    weights = torch.ones(M, dtype=torch.long, device=observed.device) << torch.arange(
        M, device=observed.device
    )
    return (observed.long() * weights).sum(dim=1)


@dataclass
class SupportDraw:
    """Supporting groups of n pairs: ``index`` (n, k_max) rows of the training pool, ``mask``
    (n, k_max) True for real members, ``counts`` detached int64 scalars (fallbacks etc.)."""

    index: Tensor
    mask: Tensor
    counts: dict[str, Tensor] = field(default_factory=dict)


class SupportingGroupSampler:
    """Pools per (target modality, observed combination) of the training set; batched draws."""

    def __init__(
        self,
        observed: Tensor,
        k: int | None = None,
        seed: int = 0,
        block_keys: int = 4096,
    ) -> None:
        if observed.dim() != 2 or observed.dtype != torch.bool:
            raise ValueError(
                f"observed must be a (N, M) bool tensor, got {observed.dtype} "
                f"{tuple(observed.shape)}"
            )
        if k is not None and k < 1:
            raise ValueError(f"supporting group size k must be >= 1 or None, got {k}")
        self.n_train, self.n_modalities = observed.shape
        M = self.n_modalities
        self.k = k
        self.seed = int(seed)
        dev = observed.device
        self.device = dev
        codes = combination_codes(observed)
        order = torch.argsort(codes, stable=True)
        self.sorted_index = order  # training rows sorted by code
        uniq, seg_counts = torch.unique_consecutive(codes[order], return_counts=True)
        seg_start = torch.cumsum(seg_counts, 0) - seg_counts
        self.codes = uniq

        # Keys (m, O): O over the occurring codes plus the empty set, m not in O.
        base = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), uniq[uniq != 0]])
        mods = torch.arange(M, device=dev)
        combo = base[:, None].expand(-1, M).reshape(-1)
        m = mods[None, :].expand(base.shape[0], -1).reshape(-1)
        keep = ((combo >> m) & 1) == 0
        combo, m = combo[keep], m[keep]
        need = combo | (torch.ones_like(m) << m)
        keys = combo * _KEY_STRIDE + m
        key_order = torch.argsort(keys)
        self.keys_sorted = keys[key_order]
        m, need = m[key_order], need[key_order]
        self.key_target = m
        n_keys = keys.shape[0]

        # Superset segments per key, in blocks of keys to bound memory.
        key_ids, seg_ids = [], []
        for s in range(0, n_keys, block_keys):
            nb = need[s : s + block_keys]
            sup = (uniq[None, :] & nb[:, None]) == nb[:, None]
            ki, si = sup.nonzero(as_tuple=True)
            key_ids.append(ki + s)
            seg_ids.append(si)
        key_of_seg = torch.cat(key_ids)
        seg_of_seg = torch.cat(seg_ids)
        seg_len = seg_counts[seg_of_seg]
        self.pool_size = torch.zeros(n_keys, dtype=torch.long, device=dev).index_add(
            0, key_of_seg, seg_len
        )
        self.key_base = torch.cumsum(self.pool_size, 0) - self.pool_size
        self.seg_end = torch.cumsum(seg_len, 0)  # global cumulative end of each pool segment
        self.seg_begin = self.seg_end - seg_len
        self.seg_sorted_start = seg_start[seg_of_seg]  # where it starts in sorted_index
        # Fallback key per modality: (m, O = {}).
        self.fallback_key = torch.searchsorted(self.keys_sorted, mods)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)

    # ------------------------------------------------------------------ inspection
    @property
    def n_pools(self) -> int:
        return int(self.keys_sorted.shape[0])

    def pool_members(self, target: int, combination: int) -> Tensor:
        """Training rows in the pool of (target modality index, observed-combination bitmask)."""
        q = torch.tensor([combination * _KEY_STRIDE + target], device=self.device)
        pos = int(torch.searchsorted(self.keys_sorted, q))
        if pos >= self.n_pools or int(self.keys_sorted[pos]) != int(q):
            return torch.zeros(0, dtype=torch.long, device=self.device)
        size = int(self.pool_size[pos])
        r = torch.arange(size, device=self.device)
        return self._rows(torch.full_like(r, pos), r)

    # ------------------------------------------------------------------ drawing
    def _rows(self, key_id: Tensor, r: Tensor) -> Tensor:
        """Training rows of members ``r`` (any shape) of pools ``key_id`` (same shape)."""
        g = self.key_base[key_id] + r
        seg = torch.searchsorted(self.seg_end, g, right=True).clamp_max(self.seg_end.numel() - 1)
        return self.sorted_index[self.seg_sorted_start[seg] + (g - self.seg_begin[seg])]

    def group_sizes(self, codes: Tensor) -> Tensor:
        """k per pair: ``self.k`` or |O_i| (the number of observed modalities)."""
        if self.k is not None:
            return torch.full_like(codes, self.k)
        bits = (codes[:, None] >> torch.arange(self.n_modalities, device=codes.device)) & 1
        return bits.sum(dim=1)

    def draw(
        self,
        target: Tensor,
        codes: Tensor,
        training: bool,
        sample_keys: Tensor | None = None,
        draw_ids: Tensor | None = None,
        exclude: Tensor | None = None,
    ) -> SupportDraw:
        """Supporting groups for n pairs (target modality index, observed-combination code).

        ``training``: draw from the seeded generator; otherwise from the hash of
        (seed, ``sample_keys``, target, ``draw_ids``, slot). ``sample_keys`` (n,) are required
        for evaluation draws; ``draw_ids`` (n,) distinguish repeated draws of one pair.
        ``exclude`` (n,): a training row that must not be a member of the pair's group (the
        pair's own sample when it is in the pool; -1 = none). A slot that drew it is redrawn
        uniformly from the pool (up to ``_EXCLUDE_ROUNDS`` times; a redrawn member may repeat
        another member) and dropped from the group if it still holds it, e.g. when the sample
        is its pool's only member (counted as ``self_dropped``).
        """
        dev = target.device
        n = target.shape[0]
        q = codes * _KEY_STRIDE + target
        pos = torch.searchsorted(self.keys_sorted, q).clamp_max(self.n_pools - 1)
        found = self.keys_sorted[pos] == q
        empty = found & (self.pool_size[pos] == 0)
        use_fb = ~found | empty
        key_id = torch.where(use_fb, self.fallback_key[target], pos)
        size = self.pool_size[key_id]
        k_i = self.group_sizes(codes)
        k_i = torch.where(size > 0, k_i, torch.zeros_like(k_i))
        k_max = int(k_i.max()) if n else 0
        counts = {
            "fallback_unknown_combination": (~found).sum(),
            "fallback_empty_pool": empty.sum(),
            "no_support": (size == 0).sum(),
            "with_replacement": ((size > 0) & (size < k_i)).sum(),
            "pairs": torch.tensor(n, device=dev),
        }
        if k_max == 0:
            z = torch.zeros(n, 0, dtype=torch.long, device=dev)
            return SupportDraw(z, z.bool(), counts)
        if training:
            u = torch.rand(n, k_max, generator=self.generator, dtype=torch.float64).to(dev)
        else:
            if sample_keys is None:
                raise ValueError("evaluation draws need sample_keys (stable per-sample keys)")
            d = draw_ids if draw_ids is not None else torch.zeros_like(target)
            slots = torch.arange(k_max, device=dev)
            u = hash_uniform(
                torch.tensor(self.seed, device=dev),
                sample_keys[:, None],
                target[:, None],
                d[:, None],
                slots[None, :],
            )
        mask = torch.arange(k_max, device=dev)[None, :] < k_i[:, None]
        replace = size < k_i
        sz = size.clamp_min(1).double()
        r = torch.zeros(n, k_max, dtype=torch.long, device=dev)
        for j in range(k_max):  # Floyd: uniform k-subset in k vectorized steps
            J = (size - k_i + j).clamp_min(0)
            t = torch.floor(u[:, j] * (J + 1).double()).long()
            taken = (r[:, :j] == t[:, None]).any(dim=1) if j else torch.zeros_like(replace)
            floyd = torch.where(taken, J, t)
            rep = torch.floor(u[:, j] * sz).long()
            r[:, j] = torch.where(replace, rep, floyd)
        r = torch.where(mask, r, torch.zeros_like(r))
        rows = self._rows(key_id[:, None].expand(-1, k_max), r)
        if exclude is not None:
            kept = mask
            rows, mask = self._exclude(rows, mask, key_id, size, exclude, training, u)
            counts["self_dropped"] = (kept & ~mask).sum()
        rows = torch.where(mask, rows, torch.zeros_like(rows))
        return SupportDraw(rows, mask, counts)

    def _exclude(
        self,
        rows: Tensor,
        mask: Tensor,
        key_id: Tensor,
        size: Tensor,
        exclude: Tensor,
        training: bool,
        u: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Redraw the slots holding their pair's excluded row; drop those that still do."""
        ex = exclude.to(rows.device)[:, None]
        keys = key_id[:, None].expand_as(rows)
        for round_ in range(_EXCLUDE_ROUNDS):
            clash = mask & (rows == ex)
            if not bool(clash.any()):
                break
            if training:
                u2 = torch.rand(rows.shape, generator=self.generator, dtype=torch.float64)
                u2 = u2.to(rows.device)
            else:  # deterministic: a hash of the slot's own uniform and the round
                bits = (u * float(1 << 31)).long()
                u2 = hash_uniform(bits, torch.tensor(round_ + 1, device=rows.device))
            r2 = torch.floor(u2 * size.clamp_min(1).double()[:, None]).long()
            rows = torch.where(clash, self._rows(keys, r2), rows)
        return rows, mask & (rows != ex)


def encode_support_unique(
    encode: Callable[[str, Tensor], Tensor],
    pool: TrainingPool,
    target: Tensor,
    draw: SupportDraw,
    n_tokens: int,
    dim: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Encode each distinct (target modality, training row) of the supporting groups ONCE.

    Returns ``(enc, enc_target, slot_row)``: ``enc`` (U + 1, P, D) the encodings followed by
    one zero row, ``enc_target`` (U + 1,) the modality index of each row (0 for the zero row)
    and ``slot_row`` (n, k_max) the row of ``enc`` for every slot (padded slots -> the zero
    row U). The loop runs over modalities, never over pairs.
    """
    n, k_max = draw.index.shape
    dev = draw.index.device
    chunks: list[Tensor] = []
    targets: list[Tensor] = []
    slot_row = torch.zeros(n, k_max, dtype=torch.long, device=dev)
    offset = 0
    for j, mod in enumerate(pool.modalities):
        sel = (target[:, None] == j) & draw.mask
        rows = draw.index[sel]
        if rows.numel() == 0:
            continue
        uniq, inv = torch.unique(rows, return_inverse=True)
        chunks.append(encode(mod, pool.x[mod][uniq]))
        targets.append(torch.full((uniq.shape[0],), j, dtype=torch.long, device=dev))
        slot_row = slot_row.masked_scatter(sel, inv + offset)
        offset += int(uniq.shape[0])
    zero = pool.x[pool.modalities[0]].new_zeros(1, n_tokens, dim)
    enc = torch.cat([*chunks, zero], 0)
    enc_target = torch.cat([*targets, torch.zeros(1, dtype=torch.long, device=dev)])
    slot_row = torch.where(draw.mask, slot_row, torch.full_like(slot_row, offset))
    return enc, enc_target, slot_row


def encode_support(
    encode: Callable[[str, Tensor], Tensor],
    pool: TrainingPool,
    target: Tensor,
    draw: SupportDraw,
    n_tokens: int,
    dim: int,
) -> Tensor:
    """Encoder tokens (n, k_max, P, D) of the supporting members' target-modality inputs
    (each distinct training row encoded once; padded slots hold zeros)."""
    enc, _, slot_row = encode_support_unique(encode, pool, target, draw, n_tokens, dim)
    return enc[slot_row]


class SupportSampling:
    """Mixin for completion methods that draw supporting groups from the training pool.

    Keeps one :class:`SupportingGroupSampler` per training pool (rebuilt only when the pool
    tensor changes: a new pool or a device move), and draws groups for the missing pairs of a
    batch, repeated ``eval_draws`` times at evaluation.
    """

    support_k: int | None
    eval_draws: int
    seed: int

    def _init_sampling(self, k: int | None, eval_draws: int, seed: int) -> None:
        if eval_draws < 1:
            raise ValueError(f"eval_draws must be >= 1, got {eval_draws}")
        self.support_k = k
        self.eval_draws = int(eval_draws)
        self.seed = int(seed)
        self._sampler: SupportingGroupSampler | None = None
        self._sampler_source: Tensor | None = None

    def sampler_for(self, pool: TrainingPool) -> SupportingGroupSampler:
        if self._sampler is None or self._sampler_source is not pool.observed:
            self._sampler = SupportingGroupSampler(pool.observed, k=self.support_k, seed=self.seed)
            self._sampler_source = pool.observed
        return self._sampler

    def draw_pairs(
        self, observed: Tensor, context: CompletionContext
    ) -> tuple[Tensor, Tensor, Tensor, SupportDraw, int]:
        """Missing pairs of the batch (repeated R times at evaluation) and their groups.

        Returns (b_idx, m_idx, codes, draw, R) with pairs ordered draw-major: pair p of draw r
        sits at r * n_pairs + p.
        """
        if context.pool is None:
            raise ValueError(
                f"completion {type(self).__name__} needs the training pool; "
                "call model.set_training_pool(x, observed) first"
            )
        sampler = self.sampler_for(context.pool)
        b_idx, m_idx = (~observed).nonzero(as_tuple=True)
        codes = combination_codes(observed)[b_idx]
        R = 1 if context.training else self.eval_draws
        keys = None
        if not context.training:
            if context.sample_keys is None:
                # No stable ids given: fall back to batch positions (deterministic per batch).
                keys = b_idx
            else:
                keys = context.sample_keys.to(observed.device)[b_idx]
        if R > 1:
            n = b_idx.shape[0]
            b_idx, m_idx, codes = b_idx.repeat(R), m_idx.repeat(R), codes.repeat(R)
            keys = keys.repeat(R) if keys is not None else None
            draw_ids = torch.arange(R, device=observed.device).repeat_interleave(n)
        else:
            draw_ids = None
        exclude = None
        if context.training and context.pool_index is not None:
            exclude = context.pool_index.to(observed.device)[b_idx]
        draw = sampler.draw(m_idx, codes, context.training, keys, draw_ids, exclude)
        return b_idx, m_idx, codes, draw, R


def member_weights(support_mask: Tensor, own_mask: Tensor, support_weight: float = 0.5) -> Tensor:
    """Fixed pooling weights (n, k_max + M) over [supporting members; own modalities].

    ``support_weight`` (reference 0.5) is split evenly over the real supporting members and
    ``1 - support_weight`` over the sample's own observed modalities; when one side is empty the
    other gets all the weight. Padded / unobserved members get 0.
    """
    s, o = support_mask.float(), own_mask.float()
    ns, no = s.sum(1, keepdim=True), o.sum(1, keepdim=True)
    ws = torch.where(no > 0, torch.full_like(ns, support_weight), torch.ones_like(ns))
    ws = torch.where(ns > 0, ws, torch.zeros_like(ws))
    wo = 1.0 - ws
    return torch.cat([s * ws / ns.clamp_min(1.0), o * wo / no.clamp_min(1.0)], dim=1)
