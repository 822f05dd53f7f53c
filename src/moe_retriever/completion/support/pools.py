"""Supporting-group pools of the training mask, and draws of supporting groups from them.

:class:`SupportingGroupSampler` builds the pools once from the training observed mask and
draws groups for a whole batch of (sample, missing modality) pairs with tensor operations
(who belongs to a pool, group sizes, fallbacks and where the randomness of draws comes from:
the package docstring, :mod:`moe_retriever.completion.support`).

Layout (cheap for M up to 40, whatever the number of combinations the model queries):

* every training sample gets a bitmask code of its observed modalities; samples are sorted by
  code, so each distinct (occurring) code is one contiguous segment of the sorted index;
* a pool is identified by the key (m, O) = ``O * 64 + m`` and is the union of the segments of
  all occurring codes that contain O and m (the superset test on bit codes). Pools are built
  ON DEMAND, for any combination O the model meets, in training and evaluation alike:
  combinations that never occur in the training mask (those that retrieval self-supervision
  creates by hiding observed entries, or new ones at test time) get their superset pool like
  any other. The keys of a batch that are not cached yet are built together (one vectorized
  superset test of the new keys against the occurring codes) and cached; memory grows with
  the number of occurring codes and of distinct queried keys, never with 2^M;
* a pool is stored as its list of segments plus a global cumulative length, so drawing the r-th
  member of a pool is a ``searchsorted`` away; pools are never materialised as index lists.
  A pool's member order depends only on the training mask, not on when it was cached, so
  draws do not depend on the order in which keys were met. The cache holds no RNG state.

* subcube draws: when the occurring codes fill a good part of the 2^M combinations (M = 16 at
  N = 10^6: all of them) a pool leaving many modalities free spans thousands of codes, and
  building it would cost that many segments per key. Such pairs draw their members by
  rejection from the pool's subcube instead (a uniform code of the subcube, kept with
  probability len(code) / max len, a uniform row of it): uniform over the pool, nothing built
  (:meth:`SupportingGroupSampler._cube_pairs`, :meth:`~SupportingGroupSampler._draw_cube`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from moe_retriever.completion.support.codes import (
    code_bits,
    combination_codes,
    hash_uniform,
    pack_bits,
)

_KEY_STRIDE = 64  # key = O * 64 + m; M <= 40 keeps keys far from int64 overflow
_CUBE_MIN_FREE = 5  # subcube draws for needs leaving >= 5 modalities free (>= 32 codes)
_CUBE_ROUNDS = 4  # rounds of trials per slot of a subcube draw before the pool path
_EXCLUDE_ROUNDS = 4  # redraws of a slot that drew its pair's excluded row, then it is dropped


@dataclass
class SupportDraw:
    """Supporting groups of n pairs: ``index`` (n, k_max) rows of the training pool, ``mask``
    (n, k_max) True for real members, ``counts`` detached int64 scalars (fallbacks etc.)."""

    index: Tensor
    mask: Tensor
    counts: dict[str, Tensor] = field(default_factory=dict)


class SupportingGroupSampler:
    """Pools per (target modality, observed combination) of the training set, built on demand
    and cached; batched draws."""

    def __init__(
        self,
        observed: Tensor,
        k: int | None = None,
        seed: int = 0,
        block_keys: int = 4096,
        max_segments: int = 1 << 22,
        cube_draws: bool = True,
    ) -> None:
        if observed.dim() != 2 or observed.dtype != torch.bool:
            raise ValueError(
                f"observed must be a (N, M) bool tensor, got {observed.dtype} "
                f"{tuple(observed.shape)}"
            )
        if k is not None and k < 1:
            raise ValueError(f"supporting group size k must be >= 1 or None, got {k}")
        if block_keys < 1:
            raise ValueError(f"block_keys must be >= 1, got {block_keys}")
        if max_segments < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}")
        self.n_train, self.n_modalities = observed.shape
        M = self.n_modalities
        self.k = k
        self.seed = int(seed)
        self.block_keys = int(block_keys)
        self.max_segments = int(max_segments)
        #: draw large pools of a densely filled combination space by rejection from their
        #: subcube instead of building them (:meth:`_cube_pairs`); False: always build pools
        self.cube_draws = bool(cube_draws)
        dev = observed.device
        self.device = dev
        codes = combination_codes(observed)
        order = torch.argsort(codes, stable=True)
        self.sorted_index = order  # training rows sorted by code
        uniq, seg_counts = torch.unique_consecutive(codes[order], return_counts=True)
        #: the distinct observed combinations of the training mask (sorted bit codes)
        self.codes = uniq
        self._code_len = seg_counts  # samples per occurring code
        self._code_start = torch.cumsum(seg_counts, 0) - seg_counts  # offset in sorted_index
        # the superset test works on bitsets: bit c of word row j says "occurring code c
        # observes modality j" ((M, ceil(n_codes / 64)) int64, 64 codes per word)
        self._has_bit = pack_bits(code_bits(uniq, M).T.bool())
        self.n_clears = 0  # times the cache was emptied to respect max_segments

        # The pool cache. Per key id (in the order keys were built): target modality, pool size,
        # offset of its first member in the global member numbering. Keys sorted for lookup,
        # with the permutation to key ids. Segments of all pools, in key-id order: global
        # cumulative end / begin of each, and where its code's rows start in ``sorted_index``.
        z = torch.zeros(0, dtype=torch.long, device=dev)
        self.keys_sorted = z
        self._sorted_to_id = z
        self.key_target = z
        self.pool_size = z
        self.key_base = z
        self.seg_end = z
        self.seg_begin = z
        self.seg_sorted_start = z
        self._n_members = 0  # total members over all cached pools
        # Fallback key per modality: (m, O = {}) = every training sample observing m.
        mods = torch.arange(M, device=dev)
        self.fallback_key = self.key_ids(mods, torch.zeros_like(mods))
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)

    def _clear(self) -> None:
        """Empty the pool cache but for the M fallback pools (rebuilt first, so they keep
        their ids). Draws do not change: a pool's member order depends only on the training
        mask."""
        z = torch.zeros(0, dtype=torch.long, device=self.device)
        self.keys_sorted = self._sorted_to_id = self.key_target = self.pool_size = z
        self.key_base = self.seg_end = self.seg_begin = self.seg_sorted_start = z
        self._n_members = 0
        mods = torch.arange(self.n_modalities, device=self.device)
        self._build(mods)  # keys m of (m, O = {}), ascending: ids 0..M-1 as at construction
        self.n_clears += 1

    # ------------------------------------------------------------------ the pool cache
    @property
    def n_pools(self) -> int:
        """Number of cached pools (keys met so far, plus the M fallback pools)."""
        return int(self.keys_sorted.shape[0])

    def _find(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """(found, sorted position) of keys ``q`` in the cache."""
        if self.n_pools == 0:
            return torch.zeros_like(q, dtype=torch.bool), torch.zeros_like(q)
        pos = torch.searchsorted(self.keys_sorted, q).clamp_max(self.n_pools - 1)
        return self.keys_sorted[pos] == q, pos

    def key_ids(self, target: Tensor, codes: Tensor) -> Tensor:
        """Cache ids of the pools of pairs (target modality, observed-combination code),
        building the pools not cached yet (all new keys of the call together)."""
        q = codes.long() * _KEY_STRIDE + target.long()
        found, _ = self._find(q)
        if not bool(found.all()):
            new = torch.unique(q[~found])
            if self.seg_end.numel() > self.max_segments:
                # bounded memory: start again from the fallbacks (draws are unchanged) and
                # build the call's keys that are not fallbacks
                self._clear()
                new = torch.unique(q[q >= _KEY_STRIDE])
            if new.numel():
                self._build(new)
        _, pos = self._find(q)
        return self._sorted_to_id[pos]

    def _superset_codes(self, need: Tensor) -> tuple[Tensor, Tensor]:
        """(key, code) index pairs, key-major and codes ascending within a key, of the
        occurring codes that contain each ``need`` bitmask.

        Two exact ways, chosen per key by their cost (same result, same order):

        * enumeration, when the need leaves f free modalities with 2^f at most
          ``4 * ceil(n_codes / 64)``: the 2^f supersets of the need, in ascending order (the
          bits of 0..2^f-1 deposited into the free positions), looked up among the occurring
          codes. Many modalities with large observed sets (M = 16: a need of 8 modalities has
          256 supersets, against 65,536 occurring codes) cost 2^f per key, not n_codes;
        * the bitset test otherwise: an AND of the needed bits' bitsets (64 codes per int64
          word), then only the non-zero words are unpacked; M words per 64 codes per key plus
          the result, in blocks of keys to bound memory.
        """
        dev = self.device
        M, W = self._has_bit.shape
        n = need.shape[0]
        free = M - code_bits(need, M).sum(1)
        enum = (free <= 20) & ((torch.ones_like(free) << free.clamp_max(20)) <= 4 * W)
        key_parts: list[Tensor] = []
        code_parts: list[Tensor] = []
        for f in torch.unique(free[enum]).tolist():
            self._enumerate_supersets(
                need, (enum & (free == f)).nonzero().squeeze(1), int(f), key_parts, code_parts
            )
        rest = (~enum).nonzero().squeeze(1)
        block = max(1, min(self.block_keys, (1 << 24) // max(W, 1)))
        bit = torch.arange(64, device=dev)
        for s in range(0, rest.shape[0], block):
            ki = rest[s : s + block]
            nb = need[ki]
            acc = torch.full((nb.shape[0], W), -1, dtype=torch.long, device=dev)
            for j in range(M):
                has = ((nb >> j) & 1).bool()
                if bool(has.any()):
                    acc = torch.where(has[:, None], acc & self._has_bit[j][None, :], acc)
            kw, ww = (acc != 0).nonzero(as_tuple=True)  # row-major: key, then word
            bits = ((acc[kw, ww][:, None] >> bit[None, :]) & 1).bool()
            wi, bi = bits.nonzero(as_tuple=True)  # word-major, bits ascending
            key_parts.append(ki[kw[wi]])
            code_parts.append(ww[wi] * 64 + bi)
        if not key_parts or n == 0:
            z = torch.zeros(0, dtype=torch.long, device=dev)
            return z, z.clone()
        key, code = torch.cat(key_parts), torch.cat(code_parts)
        order = torch.argsort(key, stable=True)  # each key comes from one way, codes ascending
        return key[order], code[order]

    def _enumerate_supersets(
        self, need: Tensor, keys: Tensor, f: int, key_parts: list[Tensor], code_parts: list[Tensor]
    ) -> None:
        """The occurring supersets of ``need[keys]`` (all with f free modalities), by
        enumerating the 2^f candidate codes; appends (key, code index) in ascending codes."""
        dev = self.device
        M = self.n_modalities
        S = 1 << f
        mods = torch.arange(M, device=dev)
        sbits = (torch.arange(S, device=dev)[:, None] >> torch.arange(f, device=dev)) & 1
        n_codes = self.codes.shape[0]
        block = max(1, (1 << 21) // (S * max(f, 1)))
        for s in range(0, keys.shape[0], block):
            ki = keys[s : s + block]
            nd = need[ki]
            zero = code_bits(nd, M) == 0
            pos = mods.expand(ki.shape[0], M)[zero].reshape(ki.shape[0], f)  # ascending
            cand = nd[:, None] | (sbits[None] << pos[:, None, :]).sum(-1)  # (nk, S) ascending
            loc = torch.searchsorted(self.codes, cand).clamp_max(n_codes - 1)
            kk, ss = (self.codes[loc] == cand).nonzero(as_tuple=True)  # key, then ascending
            key_parts.append(ki[kk])
            code_parts.append(loc[kk, ss])

    def _build(self, new_keys: Tensor) -> None:
        """Add the pools of ``new_keys`` (distinct, not cached) to the cache: the superset test
        of their (O | m) against the occurring codes (:meth:`_superset_codes`)."""
        dev = self.device
        combo = new_keys // _KEY_STRIDE
        target = new_keys % _KEY_STRIDE
        need = combo | (torch.ones_like(target) << target)
        key_of_seg, code_of_seg = self._superset_codes(need)
        seg_len = self._code_len[code_of_seg]
        size = torch.zeros(new_keys.shape[0], dtype=torch.long, device=dev).index_add(
            0, key_of_seg, seg_len
        )
        base = self._n_members + torch.cumsum(size, 0) - size
        seg_end = self._n_members + torch.cumsum(seg_len, 0)
        first_id = int(self.pool_size.shape[0])
        self.key_target = torch.cat([self.key_target, target])
        self.pool_size = torch.cat([self.pool_size, size])
        self.key_base = torch.cat([self.key_base, base])
        self.seg_end = torch.cat([self.seg_end, seg_end])
        self.seg_begin = torch.cat([self.seg_begin, seg_end - seg_len])
        self.seg_sorted_start = torch.cat([self.seg_sorted_start, self._code_start[code_of_seg]])
        self._n_members += int(seg_len.sum())
        ids = torch.arange(first_id, first_id + new_keys.shape[0], device=dev)
        keys = torch.cat([self.keys_sorted, new_keys])
        order = torch.argsort(keys)
        self.keys_sorted = keys[order]
        self._sorted_to_id = torch.cat([self._sorted_to_id, ids])[order]

    # ------------------------------------------------------------------ inspection
    def pool_members(self, target: int, combination: int) -> Tensor:
        """Training rows in the pool of (target modality index, observed-combination bitmask):
        the training samples that observe ``target`` and every modality of ``combination``."""
        if not 0 <= target < self.n_modalities:
            raise ValueError(f"target must be in 0..{self.n_modalities - 1}, got {target}")
        if (combination >> target) & 1:
            raise ValueError(f"combination {combination:#b} already contains target {target}")
        t = torch.tensor([target], device=self.device)
        key = self.key_ids(t, torch.tensor([combination], device=self.device))
        size = int(self.pool_size[key])
        r = torch.arange(size, device=self.device)
        return self._rows(key.expand(size), r)

    # ------------------------------------------------------------------ drawing
    def _rows(self, key_id: Tensor, r: Tensor) -> Tensor:
        """Training rows of members ``r`` (any shape) of pools ``key_id`` (same shape).
        Slots of an empty pool (padding, masked out by the caller) get some valid row."""
        g = self.key_base[key_id] + r
        seg = torch.searchsorted(self.seg_end, g, right=True).clamp_max(self.seg_end.numel() - 1)
        pos = self.seg_sorted_start[seg] + (g - self.seg_begin[seg])
        return self.sorted_index[pos.clamp(0, self.n_train - 1)]

    def group_sizes(self, codes: Tensor) -> Tensor:
        """k per pair: ``self.k`` or |O_i| (the number of observed modalities)."""
        if self.k is not None:
            return torch.full_like(codes, self.k)
        return code_bits(codes, self.n_modalities).sum(dim=1)

    def draw(
        self,
        target: Tensor,
        codes: Tensor,
        training: bool,
        sample_keys: Tensor | None = None,
        draw_ids: Tensor | None = None,
        exclude: Tensor | None = None,
        n_draws: int = 1,
    ) -> SupportDraw:
        """Supporting groups for n pairs (target modality index, observed-combination code).

        ``training``: draw from the seeded generator; otherwise from the hash of
        (seed, ``sample_keys``, target, draw number, slot). ``sample_keys`` (n,) are required
        for evaluation draws. ``n_draws`` R: every pair is drawn R times; the result has
        R * n rows, draw-major (row r * n + p is draw r of pair p), and the counts are per
        pair, not per draw. ``draw_ids`` (n,): the draw number of each pair's first draw
        (default 0; draw r of pair p is number ``draw_ids[p] + r``).
        ``exclude`` (n,): a training row that must not be a member of the pair's group (the
        pair's own sample when it is in the pool; -1 = none). A slot that drew it is redrawn
        uniformly from the pool (up to ``_EXCLUDE_ROUNDS`` times; a redrawn member may repeat
        another member) and dropped from the group if it still holds it, e.g. when the sample
        is its pool's only member (counted as ``self_dropped``, slots of the first draw).
        """
        if n_draws < 1:
            raise ValueError(f"n_draws must be >= 1, got {n_draws}")
        if not training and sample_keys is None:
            raise ValueError("evaluation draws need sample_keys (stable per-sample keys)")
        n = target.shape[0]
        d = draw_ids if draw_ids is not None else torch.zeros_like(target)
        cube = self._cube_pairs(target, codes) if n and self.cube_draws else None
        if cube is not None:  # groups of size 0 (k = |O| = 0) keep the pool path's counts
            cube &= self.group_sizes(codes) > 0
        if cube is None or not bool(cube.any()):
            return self._draw_pools(target, codes, training, sample_keys, d, exclude, n_draws)
        return self._draw_split(target, codes, cube, training, sample_keys, d, exclude, n_draws)

    def _draw_pools(
        self,
        target: Tensor,
        codes: Tensor,
        training: bool,
        sample_keys: Tensor | None,
        d: Tensor,
        exclude: Tensor | None,
        n_draws: int,
    ) -> SupportDraw:
        """:meth:`draw` from the cached pools (Floyd's algorithm over each pool's members)."""
        dev = target.device
        n = target.shape[0]
        key_id = self.key_ids(target, codes) if n else target.long()
        empty = self.pool_size[key_id] == 0
        key_id = torch.where(empty, self.fallback_key[target], key_id)
        size = self.pool_size[key_id]
        k_i = self.group_sizes(codes)
        k_i = torch.where(size > 0, k_i, torch.zeros_like(k_i))
        k_max = int(k_i.max()) if n else 0
        counts = {
            "fallback_empty_pool": empty.sum(),
            "no_support": (size == 0).sum(),
            "with_replacement": ((size > 0) & (size < k_i)).sum(),
            "unseen_combination": (~torch.isin(codes, self.codes)).sum(),
            "pairs": torch.tensor(n, device=dev),
        }
        R = int(n_draws)
        if R > 1:
            target, codes, key_id, size, k_i = (
                t.repeat(R) for t in (target, codes, key_id, size, k_i)
            )
            d = d.repeat(R) + torch.arange(R, device=dev).repeat_interleave(n)
            sample_keys = sample_keys.repeat(R) if sample_keys is not None else None
            exclude = exclude.repeat(R) if exclude is not None else None
        nr = n * R
        if k_max == 0:
            z = torch.zeros(nr, 0, dtype=torch.long, device=dev)
            if exclude is not None:
                counts["self_dropped"] = torch.zeros((), dtype=torch.long, device=dev)
            return SupportDraw(z, z.bool(), counts)
        if training:
            u = torch.rand(nr, k_max, generator=self.generator, dtype=torch.float64).to(dev)
        else:
            assert sample_keys is not None
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
        r = torch.zeros(nr, k_max, dtype=torch.long, device=dev)
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
            counts["self_dropped"] = (kept & ~mask)[:n].sum()
        rows = torch.where(mask, rows, torch.zeros_like(rows))
        return SupportDraw(rows, mask, counts)

    # ------------------------------------------------------------------ subcube draws
    def _cube_pairs(self, target: Tensor, codes: Tensor) -> Tensor | None:
        """Pairs drawn by rejection from their subcube instead of a built pool (or None).

        A pool is the union of the segments of the occurring codes that contain
        need = O | m; with f modalities outside the need there are up to 2^f of them, and
        building the pool costs that many segments (M = 16 at N = 10^6: every one of the 65,536
        combinations occurs, and a sample with 4 observed modalities has a pool of 2^11 codes).
        When the occurring codes fill a good part of the 2^M combinations (expected acceptance
        at least 1/8; below that the trials cost more than building the pool: measured at
        M = 16, N = 10^4) and the pool spans many codes (f >= ``_CUBE_MIN_FREE``: 32 or more
        codes), the pair's members are drawn without building anything: a uniform code of the
        subcube, accepted when it occurs with probability len(code) / max len, then a uniform
        row of that code's segment, i.e. a uniform member of the pool (rejection sampling;
        see :meth:`_draw_cube`)."""
        M = self.n_modalities
        if self.codes.shape[0] == 0 or self._cube_rate() < 1 / 8:
            return None
        need = codes | (torch.ones_like(target) << target)
        free = M - code_bits(need, M).sum(1)
        return free >= _CUBE_MIN_FREE

    def _cube_rate(self) -> float:
        """Expected acceptance of a subcube trial: the share of the 2^M combinations that
        occur, times mean / max rows per occurring combination."""
        lengths = self._code_len.double()
        share = self.codes.shape[0] / float(2**self.n_modalities)
        return share * float(lengths.mean()) / float(lengths.max())

    def _draw_cube(
        self,
        target: Tensor,
        codes: Tensor,
        training: bool,
        sample_keys: Tensor | None,
        d: Tensor,
        exclude: Tensor | None,
        k_i: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Groups of n pairs by rejection from their subcubes: (rows (n, k_max), mask, ok (n,)).

        Slot by slot (without replacement), each unfilled slot makes up to ``_CUBE_ROUNDS``
        rounds of T trials; a trial draws s uniform in [0, 2^f), deposits its bits into the
        need's free modalities (the code need | s'), and is accepted when that code occurs,
        with probability len(code) / max len, and the uniform row of its segment is neither
        the excluded row nor a member already drawn. Accepted rows are uniform over the pool
        minus those rows, so a group is a uniform draw without replacement. A pair with a slot
        still unfilled after the rounds (a pool smaller than its group, or much sparser than
        the training mask as a whole) is not ok and goes to the pool path. Uniforms come from
        the generator (training) or the hash of (seed, sample key, target, draw number, slot,
        trial) (evaluation), as for pool draws."""
        dev = target.device
        M = self.n_modalities
        n = target.shape[0]
        need = codes | (torch.ones_like(target) << target)
        mods = torch.arange(M, device=dev)
        zero = code_bits(need, M) == 0
        free = zero.sum(1)
        # the free modalities of each pair, ascending, padded (padding takes no bits: s < 2^f)
        pos = torch.sort(torch.where(zero, mods, M + mods), dim=1).values.clamp_max(M - 1)
        cells = (torch.ones_like(free) << free).double()
        max_len = float(self._code_len.max())
        n_codes = int(self.codes.shape[0])
        rate = self._cube_rate()
        T = int(min(128, max(8, math.ceil(3 / rate))))
        k_max = int(k_i.max()) if n else 0
        rows = torch.zeros(n, k_max, dtype=torch.long, device=dev)
        mask = torch.arange(k_max, device=dev)[None, :] < k_i[:, None]
        ok = torch.ones(n, dtype=torch.bool, device=dev)
        ex = exclude.to(dev) if exclude is not None else torch.full_like(target, -1)
        trial = torch.arange(T, device=dev)
        for j in range(k_max):
            todo = mask[:, j].clone()
            for round_ in range(_CUBE_ROUNDS):
                idx = (todo & ok).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                if training:
                    u = torch.rand(
                        idx.shape[0], T, 3, generator=self.generator, dtype=torch.float64
                    )
                    u = u.to(dev)
                else:
                    assert sample_keys is not None
                    u = hash_uniform(
                        torch.tensor(self.seed, device=dev),
                        sample_keys[idx][:, None, None],
                        target[idx][:, None, None],
                        d[idx][:, None, None],
                        torch.tensor(j, device=dev),
                        ((round_ + 1) * T + trial)[None, :, None],
                        torch.arange(3, device=dev)[None, None, :] + 7,
                    )
                sub = torch.floor(u[..., 0] * cells[idx, None]).long()  # (ni, T) in [0, 2^f)
                code = need[idx, None].expand(-1, T).clone()
                for i in range(int(free[idx].max())):
                    code |= ((sub >> i) & 1) << pos[idx, i, None]
                loc = torch.searchsorted(self.codes, code).clamp_max(n_codes - 1)
                length = self._code_len[loc]
                hit = (self.codes[loc] == code) & (u[..., 1] * max_len < length.double())
                off = torch.floor(u[..., 2] * length.double()).long().clamp_max(length - 1)
                row = self.sorted_index[(self._code_start[loc] + off).clamp(0, self.n_train - 1)]
                hit &= row != ex[idx, None]
                if j:
                    hit &= ~(row[:, :, None] == rows[idx, None, :j]).any(-1)
                got = hit.any(1)
                first = hit.long().argmax(1)
                taken = idx[got]
                rows[taken, j] = row[got, first[got]]
                todo[taken] = False
            ok &= ~todo
        return rows, mask, ok

    def _draw_split(
        self,
        target: Tensor,
        codes: Tensor,
        cube: Tensor,
        training: bool,
        sample_keys: Tensor | None,
        d: Tensor,
        exclude: Tensor | None,
        n_draws: int,
    ) -> SupportDraw:
        """:meth:`draw` with the ``cube`` pairs drawn from their subcubes (:meth:`_draw_cube`)
        and the others (and cube pairs that were not ok) from the pools."""
        dev = target.device
        n, R = target.shape[0], int(n_draws)
        ci = cube.nonzero().squeeze(1)
        k_c = self.group_sizes(codes[ci])
        d_c = d[ci].repeat(R) + torch.arange(R, device=dev).repeat_interleave(ci.shape[0])
        c_rows, c_mask, c_ok = self._draw_cube(  # the cube pairs R times, draw-major
            target[ci].repeat(R),
            codes[ci].repeat(R),
            training,
            None if sample_keys is None else sample_keys[ci].repeat(R),
            d_c,
            None if exclude is None else exclude[ci].repeat(R),
            k_c.repeat(R),
        )
        c_ok = c_ok.reshape(R, -1).all(0)
        exact = ~cube
        exact[ci[~c_ok]] = True
        ei = exact.nonzero().squeeze(1)
        e = self._draw_pools(
            target[ei],
            codes[ei],
            training,
            None if sample_keys is None else sample_keys[ei],
            d[ei],
            None if exclude is None else exclude[ei],
            R,
        )
        nc, ne = ci.shape[0], ei.shape[0]
        kc, ke = int(c_rows.shape[1]), int(e.index.shape[1])
        c_rows = c_rows.reshape(R, nc, kc)[:, c_ok]
        c_mask = c_mask.reshape(R, nc, kc)[:, c_ok]
        ci = ci[c_ok]
        k_max = max(kc, ke)
        index = torch.zeros(R, n, k_max, dtype=torch.long, device=dev)
        mask = torch.zeros(R, n, k_max, dtype=torch.bool, device=dev)
        index[:, ci, :kc] = c_rows
        mask[:, ci, :kc] = c_mask
        index[:, ei, :ke] = e.index.reshape(R, ne, ke)
        mask[:, ei, :ke] = e.mask.reshape(R, ne, ke)
        counts = dict(e.counts)
        counts["unseen_combination"] = (~torch.isin(codes, self.codes)).sum()
        counts["pairs"] = torch.tensor(n, device=dev)
        return SupportDraw(index.reshape(R * n, k_max), mask.reshape(R * n, k_max), counts)

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
