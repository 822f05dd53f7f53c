"""``support_select="similar-concat"``: the similar selection before the faiss index.

:class:`ConcatSimilarSelector` takes the pool's k members closest to the sample in ONE cosine
over the concatenation of its observed modalities' standardized inputs (so a wide modality
weighs as much as its width), by an exact (samples x N_train) similarity matrix per batch: its
cost grows linearly with N_train (3.3 s per batch of 64 at N = 10^6, M = 16:
``benchmarks/similar_index.py``). It was the default ``"similar"`` until issue 24, which
moved ``"similar"`` to the sum of per-modality cosines searched in a faiss index
(:mod:`.index`); it stays as the reference that the index and the change of definition are
measured against. The pools, fallback and self-exclusion are those of
:class:`~moe_retriever.completion.support.pools.SupportingGroupSampler`; ties are broken by
:func:`top_k_stable`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from moe_retriever.completion.base import TrainingPool
from moe_retriever.completion.support.codes import code_bits, combination_codes
from moe_retriever.completion.support.pools import SupportDraw, SupportingGroupSampler

SUPPORT_SELECT = ("random", "similar", "similar-concat")


class ConcatSimilarSelector:
    """``support_select="similar-concat"``: the k pool members most similar to the sample.

    Similarity is the cosine between the sample's and the member's standardized raw inputs
    over the sample's observed modalities O_i (every member of the (m, O_i) pool observes them
    by construction; in a fallback pool a member's unobserved modalities count as zeros).
    Standardization uses the TRAINING pool's per-feature mean and std over the rows observing
    the modality (computed once per pool, no RNG, no evaluation data). Selection is
    deterministic: ties go to the lower training row (:func:`top_k_stable`). The pool, its
    fallback and the exclusion of the sample's own row are those of
    :class:`SupportingGroupSampler`. When a pool has fewer than k members (after exclusion),
    all of them are the group. Cost: one (samples x N_train) similarity matrix per batch, built
    with one matmul per modality, and a top-k of each pair's row: time per batch grows with
    N_train; memory stays within ``chunk_entries`` (pairs go in chunks when N_train is large).
    """

    def __init__(
        self,
        pool: TrainingPool,
        eps: float = 1e-6,
        chunk_entries: int = 1 << 25,
        compact_fraction: float = 0.25,
    ) -> None:
        #: most (pair, training row) entries of the similarity matrix held at once
        self.chunk_entries = int(chunk_entries)
        #: a sample whose candidate rows are at most this fraction of the pool gets its
        #: per-pair masking and top-k over those rows only (:meth:`select`)
        self.compact_fraction = float(compact_fraction)
        self.modalities = list(pool.modalities)
        self.codes = combination_codes(pool.observed)
        self.mean: dict[str, Tensor] = {}
        self.std: dict[str, Tensor] = {}
        z, sq, widths = [], [], []
        for j, m in enumerate(self.modalities):
            v = pool.x[m].float()
            obs = pool.observed[:, j]
            rows = v[obs]
            mean = rows.mean(0) if rows.shape[0] else v.new_zeros(v.shape[1])
            std = rows.std(0, unbiased=False) if rows.shape[0] > 1 else v.new_ones(v.shape[1])
            std = torch.where(std > eps, std, torch.ones_like(std))
            zj = torch.where(obs[:, None], (v - mean) / std, torch.zeros_like(v))
            self.mean[m], self.std[m] = mean, std
            z.append(zj)
            sq.append((zj * zj).sum(1))
            widths.append(v.shape[1])
        #: (N, sum F_m) standardized pool, all modalities side by side (zeros where unobserved)
        self.z = torch.cat(z, 1)
        del z
        #: feature columns of each modality in ``z``
        self.feature_modality = torch.repeat_interleave(
            torch.arange(len(widths), device=self.z.device), torch.tensor(widths)
        )
        self.sq_norm = torch.stack(sq, 1)  # (N, M) squared norm per row and modality
        #: (M, N + 1) bool: observed mask by modality, plus a column N (padding of the
        #: compacted candidate lists) that observes nothing
        self.observed_t = torch.cat(
            [pool.observed.T, pool.observed.new_zeros(pool.observed.shape[1], 1)], 1
        )
        self.observed_f = pool.observed.float()  # (N, M)

    def similarity(self, x: dict[str, Tensor], b_idx: Tensor, codes: Tensor) -> Tensor:
        """(n, N) cosine of each sample to every training row over the sample's modalities
        (``codes``): three matmuls (dot products over all modalities at once, the rows' norms
        over the sample's modalities), never a loop over modalities on (n, N) matrices."""
        zb, has = self._standardize(x, b_idx, codes)
        dot = zb @ self.z.T
        other = has @ self.sq_norm.T
        own = (zb * zb).sum(1)
        return dot.div_((own.sqrt()[:, None] * other.sqrt_()).clamp_min_(1e-12))

    def _standardize(
        self, x: dict[str, Tensor], b_idx: Tensor, codes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The samples' standardized inputs over their modalities (n, sum F_m), zeros
        elsewhere, and their modality indicator (n, M) float."""
        dev = self.z.device
        M = len(self.modalities)
        has = code_bits(codes.to(dev), M).float()
        parts = [
            (x[m][b_idx].float().to(dev) - self.mean[m]) / self.std[m] for m in self.modalities
        ]
        zb = torch.cat(parts, 1) * has[:, self.feature_modality]
        return zb, has

    def select(
        self,
        sampler: SupportingGroupSampler,
        x: dict[str, Tensor],
        b_idx: Tensor,
        target: Tensor,
        codes: Tensor,
        exclude: Tensor | None = None,
        training: bool = False,
    ) -> SupportDraw:
        """Groups of the top-k most similar members of each pair's pool (see the class).

        Pool sizes come from the similarity pass itself (the rows that observe the pair's
        modalities and its target), so no pool is built. Per sample, the rows observing its
        whole observed set (its candidates) are compacted when they are at most
        ``compact_fraction`` of the pool: the per-pair masking and top-k then run over the
        candidates only (at M = 16 a sample observing 8 modalities has ~N / 256 of them), with
        the same values and the same tie rule (candidates keep the ascending row order).
        ``training`` changes nothing here (the interface of :class:`.index.SimilarSelector`)."""
        dev = target.device
        n = target.shape[0]
        k_i = sampler.group_sizes(codes)
        ex = exclude.to(dev) if exclude is not None else None
        counts = {
            "with_replacement": torch.zeros((), dtype=torch.long, device=dev),
            "unseen_combination": (~torch.isin(codes, sampler.codes)).sum(),
            "pairs": torch.tensor(n, device=dev),
        }
        k_req = int(k_i.max()) if n else 0
        order = torch.zeros(n, k_req, dtype=torch.long, device=dev)
        size = torch.zeros(n, dtype=torch.long, device=dev)  # pool size, excluded row out
        empty = torch.zeros(n, dtype=torch.bool, device=dev)
        self_in = torch.zeros(n, dtype=torch.bool, device=dev)
        if k_req > 0:  # in float32 even under autocast: the selection must not depend on it
            with torch.autocast(dev.type, enabled=False):
                self._select_chunks(x, b_idx, target, codes, ex, k_req, order, size, empty, self_in)
        k_eff = torch.minimum(k_i, size)
        counts["fallback_empty_pool"] = empty.sum()
        counts["no_support"] = (size == 0).sum()
        if exclude is not None:
            counts["self_dropped"] = (self_in & (size < k_i)).sum()
        k_max = int(k_eff.max()) if n else 0
        mask = torch.arange(k_max, device=dev)[None, :] < k_eff[:, None]
        rows = torch.where(mask, order[:, :k_max], torch.zeros_like(mask, dtype=torch.long))
        return SupportDraw(rows, mask, counts)

    def _select_chunks(
        self,
        x: dict[str, Tensor],
        b_idx: Tensor,
        target: Tensor,
        codes: Tensor,
        ex: Tensor | None,
        k: int,
        order: Tensor,
        size: Tensor,
        empty: Tensor,
        self_in: Tensor,
    ) -> None:
        """Fill ``order`` (top-k rows), ``size``, ``empty`` and ``self_in`` per pair.

        The similarity depends on the sample and its observed set, not on the target: a
        sample missing several modalities is compared with the training rows once. Pairs go
        in chunks (sorted by sample) so that the (pairs x N_train) matrices stay within
        ``chunk_entries`` whatever N; every pair's result is independent of the chunking."""
        dev = target.device
        M = len(self.modalities)
        N = self.codes.shape[0]
        uniq, inv = torch.unique(torch.stack([b_idx, codes], 1), dim=0, return_inverse=True)
        by_row = torch.argsort(inv, stable=True)
        step = max(1, self.chunk_entries // max(N, 1))
        for s in range(0, target.shape[0], step):
            pairs = by_row[s : s + step]
            u_lo, u_hi = int(inv[pairs[0]]), int(inv[pairs[-1]]) + 1
            u_codes = uniq[u_lo:u_hi, 1]
            sim_u = self.similarity(x, uniq[u_lo:u_hi, 0], u_codes)
            has = code_bits(u_codes, M).float()
            cand = (has @ self.observed_f.T) > has.sum(1, keepdim=True) - 0.5  # observe all O
            n_cand = torch.count_nonzero(cand, dim=1)
            iu = inv[pairs] - u_lo
            t_p = target[pairs]
            ex_p = ex[pairs] if ex is not None else torch.full_like(t_p, -1)
            small = n_cand[iu] <= self.compact_fraction * N
            # pairs whose sample has few candidates, in groups of similar candidate counts
            # (powers of two), each over its samples' candidates compacted (ascending rows,
            # padded with the row N that observes nothing); the others over all rows
            level = torch.log2(n_cand[iu].clamp_min(1).double()).ceil().long()
            groups: list[tuple[Tensor, Tensor | None, Tensor | None]] = []
            for lv in torch.unique(level[small]).tolist():
                part = (small & (level == lv)).nonzero().squeeze(1)
                su, slot_of = torch.unique(iu[part], return_inverse=True)
                C = int(n_cand[su].max())
                r, c = cand[su].nonzero(as_tuple=True)
                start = torch.cumsum(n_cand[su], 0) - n_cand[su]
                pos = torch.arange(r.shape[0], device=dev) - start[r]
                cols = torch.full((su.shape[0], C), N, dtype=torch.long, device=dev)
                vals = torch.full((su.shape[0], C), -math.inf, device=dev)
                cols[r, pos] = c
                vals[r, pos] = sim_u[su[r], c]
                groups.append((part, cols[slot_of], vals[slot_of]))
            groups.append(((~small).nonzero().squeeze(1), None, None))
            for part, col_c, val_c in groups:
                if part.numel() == 0:
                    continue
                tp, ep = t_p[part], ex_p[part]
                if col_c is not None and val_c is not None:
                    col, v = col_c, val_c
                    bad = ~self.observed_t[tp[:, None], col]  # members observe the target
                    bad |= col == ep[:, None]  # not the sample's own row
                    v.masked_fill_(bad, -math.inf)
                else:
                    col = torch.arange(N, device=dev).expand(part.shape[0], N)
                    v = sim_u[iu[part]]
                    v.masked_fill_(~(cand[iu[part]] & self.observed_t[tp, :N]), -math.inf)
                    _mask_own_rows(v, ep)
                n_ok = torch.count_nonzero(v > -math.inf, dim=1)
                # the excluded row was a member: the pool is not empty, only the group smaller
                need = codes[pairs[part]] | (1 << tp)
                own = (ep >= 0) & ((self.codes[ep.clamp_min(0)] & need) == need)
                fb = (n_ok == 0) & ~own  # an empty pool: every row observing the target
                if bool(fb.any()):
                    fi = fb.nonzero().squeeze(1)
                    v_f = sim_u[iu[part[fi]]].masked_fill(~self.observed_t[tp[fi], :N], -math.inf)
                    _mask_own_rows(v_f, ep[fi])
                    own_f = (ep[fi] >= 0) & self.observed_t[tp[fi], ep[fi].clamp_min(0)]
                    n_f = torch.count_nonzero(v_f > -math.inf, dim=1)
                    glob = pairs[part[fi]]
                    kk = min(k, N)
                    order[glob, :kk] = top_k_stable(v_f, kk)
                    size[glob], empty[glob], self_in[glob] = n_f, True, own_f
                keep = (~fb).nonzero().squeeze(1)
                if keep.numel():
                    glob = pairs[part[keep]]
                    kk = min(k, v.shape[1])
                    top = top_k_stable(v[keep], kk)
                    order[glob, :kk] = col[keep].gather(1, top)
                    size[glob], self_in[glob] = n_ok[keep], own[keep]


def _mask_own_rows(score: Tensor, own: Tensor) -> None:
    """Set ``score[i, own[i]]`` to -inf in place where ``own[i] >= 0`` (the pair's own row)."""
    rows = (own >= 0).nonzero().squeeze(1)
    score[rows, own[rows]] = -math.inf


def top_k_stable(score: Tensor, k: int) -> Tensor:
    """Column indices (n, k) of the k largest entries of each row of ``score`` (n, N), in
    descending order, ties to the LOWER column: the first k of a stable descending sort.

    ``torch.topk`` (O(N) per row instead of a full O(N log N) sort) does not promise an order
    among equal values, so its k winners are reordered by (value desc, column asc), and the
    rows where a value equal to the k-th one is left out (a tie across the cut, where topk
    may have kept a higher column) fall back to the stable sort (rare with real-valued
    similarities; -inf non-members tie when a pool is smaller than k). The result equals the
    stable sort's on every input without NaN (tests/completion/test_sampler.py).
    """
    n, N = score.shape
    k = min(k, N)
    if n == 0 or k == 0:
        return torch.zeros(n, k, dtype=torch.long, device=score.device)
    val, idx = torch.topk(score, k, dim=1, largest=True, sorted=False)
    by_col = idx.argsort(dim=1)
    val, idx = val.gather(1, by_col), idx.gather(1, by_col)
    by_val = val.argsort(dim=1, descending=True, stable=True)
    val, idx = val.gather(1, by_val), idx.gather(1, by_val)
    kth = val[:, -1:]
    # a tie across the cut: more entries equal to the k-th value in the row than among the k
    cut_tie = (score == kth).sum(1) > (val == kth).sum(1)
    if bool(cut_tie.any()):
        rows = cut_tie.nonzero().squeeze(1)
        full = torch.sort(score[rows], dim=1, descending=True, stable=True).indices[:, :k]
        idx = idx.index_put((rows,), full)
    return idx
