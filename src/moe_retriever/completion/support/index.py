"""The similarity index of the training pool: similar supporting groups from faiss.

``support_select="similar"`` gives a pair (sample i, missing modality m) the k members of its
pool (training rows observing m and every modality i observes, O_i) most similar to i over
O_i. The similarity is the SUM OF PER-MODALITY COSINES over O_i between standardized inputs:

    s(i, r) = sum_{b in O_i} cos(z_ib, z_rb),   z_b = (x_b - mean_b) / std_b

with the training pool's mean and std per feature (over the rows observing b). Every modality
of O_i counts alike, whatever its width (a 20,000-gene block does not drown a 10-feature
clinical block, as it does in one cosine over the concatenated inputs). Unit-normalising each
block of each training row makes s an inner product between the row's vector and the sample's
vector (its unit blocks over O_i, zeros elsewhere): what a faiss index searches.

Layout: a faiss inverted-file index (``IndexIVFFlat``, inner product) whose inverted lists are
not k-means cells but the occurring OBSERVED-MODALITY COMBINATIONS (one list per code), or, in
the approximate mode, (combination, k-means cell) pairs. A query scans only lists of codes that
contain O_i (``search_preassigned`` with the lists chosen here), so a search costs the size of
the sample's candidate set, not N, and the pool filter is exact by construction (no ID
selector over all N rows).

* ``kind="exact"``: lists by combination only; a search scans the sample's whole candidate set
  (the rows observing O_i) and is exact.
* ``kind="ivf"``: rows are also clustered (faiss k-means on the unit-block vectors,
  ``n_cells`` cells); a search probes, within the candidate combinations, only the ``nprobe``
  cells whose centroids score highest against the sample over O_i. Approximate; its recall
  is measured by ``benchmarks/similar_index.py``.
* ``kind="auto"`` (default): ``exact`` while the mean candidate set of a training row is at
  most ``max_scan`` rows, else ``ivf``. At N = 10^6 x M = 16 modalities (half missing) the
  candidate sets are ~1 % of N and ``auto`` is exact; with few modalities and a large N every
  candidate set is a large part of N and ``auto`` clusters.

:func:`select_similar`: one search per distinct (sample, observed set) fetches its top
``k * overfetch`` candidates; each pair keeps the first k that observe its target (and, in
training, are not the sample's own row). A pair left with fewer than k although its search was
cut off searches again over its own pool (lists of codes containing O_i and m), so the result
is the pool's top k either way. A pair whose pool is empty falls back to every training row
observing m (a row's unobserved modalities then add 0 to its score). Ties go to the lower
training row. Everything is built once per pool from the training split only; selection uses
no RNG, so evaluation groups are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from moe_retriever.completion.base import TrainingPool
from moe_retriever.completion.support.pools import SupportDraw, SupportingGroupSampler

INDEX_KINDS = ("auto", "exact", "ivf")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError(
            'support_select="similar" searches a faiss index: pip install faiss-cpu '
            "(or a faiss GPU build on a CUDA machine)"
        ) from err
    return faiss


def _unit(v: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows of ``v`` scaled to unit norm (zero rows stay zero), zeros where ``keep`` is False."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    out = (v / np.where(norm > 0, norm, 1.0)).astype(np.float32)
    out[~keep] = 0.0
    return out


class SimilarIndex:
    """faiss index of a training pool's unit-block vectors (see the module docstring).

    ``kind`` (auto | exact | ivf); ``max_scan``: auto's threshold, the mean candidate rows
    per query above which it clusters; ``n_cells``: k-means cells of ``ivf`` (default about
    sqrt(N)); ``nprobe``: cells probed per query (default a tenth of the cells, at least 8);
    ``overfetch``: candidates fetched per query are ``k * overfetch`` (at least 32).
    """

    def __init__(
        self,
        x: dict[str, Tensor],
        observed: Tensor,
        *,
        kind: str = "auto",
        max_scan: int = 100_000,
        n_cells: int | None = None,
        nprobe: int | None = None,
        overfetch: int = 8,
        seed: int = 0,
        eps: float = 1e-6,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"similar index kind must be one of {INDEX_KINDS}, got {kind!r}")
        faiss = _faiss()
        self.modalities = list(x)
        self.overfetch = max(1, int(overfetch))
        obs = observed.detach().cpu().numpy().astype(bool)
        self.N, M = obs.shape
        self.n_modalities = M
        self.mean: dict[str, np.ndarray] = {}
        self.std: dict[str, np.ndarray] = {}
        blocks = []
        for j, m in enumerate(self.modalities):
            v = x[m].detach().cpu().float().numpy()
            rows = v[obs[:, j]]
            mean = rows.mean(0) if rows.shape[0] else np.zeros(v.shape[1], np.float32)
            std = rows.std(0) if rows.shape[0] > 1 else np.ones(v.shape[1], np.float32)
            std = np.where(std > eps, std, 1.0).astype(np.float32)
            self.mean[m], self.std[m] = mean.astype(np.float32), std
            blocks.append(_unit((v - self.mean[m]) / std, obs[:, j]))
        z = np.ascontiguousarray(np.concatenate(blocks, 1), dtype=np.float32)
        del blocks
        self.dim = int(z.shape[1])
        self.codes = (obs.astype(np.int64) << np.arange(M, dtype=np.int64)).sum(1)
        #: occurring codes (ascending), the row of each code, rows per code
        self.uc, code_of_row, self.code_count = np.unique(
            self.codes, return_inverse=True, return_counts=True
        )
        self.mean_scan = self._mean_candidates()
        if kind == "auto":
            kind = "exact" if self.mean_scan <= max_scan else "ivf"
        self.kind = kind
        self.n_cells = 1
        self.centroids: np.ndarray | None = None
        cell = np.zeros(self.N, dtype=np.int64)
        if kind == "ivf" and self.N > 1:
            c = int(n_cells) if n_cells else max(2, round(math.sqrt(self.N)))
            self.n_cells = min(c, self.N)
            train = z
            if 64 * self.n_cells < self.N:  # enough points per centroid; deterministic pick
                pick = np.random.default_rng(seed).choice(self.N, 64 * self.n_cells, False)
                train = z[np.sort(pick)]
            km = faiss.Kmeans(self.dim, self.n_cells, niter=20, seed=seed)
            km.train(train)
            self.centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
            _, assign = km.index.search(z, 1)
            cell = assign[:, 0].astype(np.int64)
        self.nprobe = min(self.n_cells, int(nprobe) if nprobe else max(8, self.n_cells // 10))
        # one inverted list per occurring (combination, cell), keys ascending
        key = code_of_row.astype(np.int64).reshape(-1) * self.n_cells + cell
        self.list_keys, list_of_row = np.unique(key, return_inverse=True)
        self.list_size = np.bincount(list_of_row.reshape(-1), minlength=len(self.list_keys))
        #: superset lists by need code, kept until they hold this many entries (then cleared)
        self.superset_cache_entries = 1 << 22
        self._superset_cache: dict[int, np.ndarray] = {}
        self._cached_entries = 0
        #: a fixed random order of the lists (seeded): which lists a capped search keeps
        self.list_rank = np.random.default_rng(seed).permutation(len(self.list_keys))
        self._quantizer = faiss.IndexFlatIP(self.dim)  # never used: lists are assigned here
        nlist = max(1, len(self.list_keys))
        index = faiss.IndexIVFFlat(self._quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        # lists filled one after the other, each in one allocation of its final size: a query
        # walks its lists in ascending order, so they lie in memory in that order (filled row
        # by row, the lists' buffers scatter and a search spends most of its time on cache
        # misses: measured 7x slower per list at N = 10^6, M = 16)
        order = np.argsort(list_of_row.reshape(-1), kind="stable")
        bounds = np.searchsorted(list_of_row.reshape(-1)[order], np.arange(nlist + 1))
        invlists = faiss.downcast_InvertedLists(index.invlists)
        row_bytes = np.ascontiguousarray(z[order]).view(np.uint8).reshape(self.N, -1)
        for li in range(len(self.list_keys)):
            lo, hi = int(bounds[li]), int(bounds[li + 1])
            ids = np.ascontiguousarray(order[lo:hi], dtype=np.int64)
            invlists.add_entries(li, hi - lo, faiss.swig_ptr(ids), faiss.swig_ptr(row_bytes[lo:hi]))
        index.ntotal = self.N
        self.index = index

    def __repr__(self) -> str:
        return (
            f"SimilarIndex(kind={self.kind!r}, N={self.N}, dim={self.dim}, "
            f"lists={len(self.list_keys)}, cells={self.n_cells}, nprobe={self.nprobe})"
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the inverted lists (float32 vectors and int64 ids)."""
        return int(self.N * (self.dim * 4 + 8))

    def queries(self, x: dict[str, Tensor], rows: Tensor, codes: np.ndarray) -> np.ndarray:
        """(n, dim) query vectors: the samples' (``x[m][rows]``) unit blocks over the
        modalities of ``codes``, zeros elsewhere."""
        parts = []
        for j, m in enumerate(self.modalities):
            v = x[m][rows].detach().cpu().float().numpy()
            keep = ((codes >> j) & 1).astype(bool)
            parts.append(_unit((v - self.mean[m]) / self.std[m], keep))
        return np.ascontiguousarray(np.concatenate(parts, 1), dtype=np.float32)

    def _mean_candidates(self, sample: int = 512) -> float:
        """Mean number of training rows observing a training row's whole observed set (what
        an exact query of that row scans), over up to ``sample`` rows."""
        if self.N == 0:
            return 0.0
        take, weight = np.unique(self.codes[:: max(1, self.N // sample)], return_counts=True)
        sup = (self.uc[None, :] & take[:, None]) == take[:, None]
        per_code = sup.astype(np.int64) @ self.code_count
        return float((per_code * weight).sum() / weight.sum())

    def _lists(self, q: np.ndarray, need: np.ndarray) -> list[np.ndarray]:
        """Per query, the inverted lists to scan: those of the codes containing ``need`` (and,
        in ivf mode, of the ``nprobe`` cells whose centroids score highest against it)."""
        sup = [self._superset_codes(int(c)) for c in need]
        if self.n_cells == 1:  # list i is code i
            return sup
        assert self.centroids is not None
        top = np.argsort(-(q @ self.centroids.T), axis=1, kind="stable")[:, : self.nprobe]
        out = []
        for s, cells in zip(sup, top, strict=True):
            keys = (s[:, None] * self.n_cells + np.sort(cells)[None, :]).ravel()
            pos = np.searchsorted(self.list_keys, keys)
            ok = pos < len(self.list_keys)
            ok[ok] = self.list_keys[pos[ok]] == keys[ok]
            out.append(pos[ok])
        return out

    def _superset_codes(self, need: int) -> np.ndarray:
        """Ascending indices (into ``uc``) of the occurring codes that contain ``need``: the
        2^free supersets enumerated and looked up when there are fewer of them than occurring
        codes (the common case with many modalities), else one test over the occurring codes.

        The same lookup as :meth:`SupportingGroupSampler._superset_codes`, kept here per need
        and cached because the pools' batched version measured slower for the 64 needs of a
        batch at 10^6 x 16, on a search that has a 50 ms budget per batch."""
        hit = self._superset_cache.get(need)
        if hit is not None:
            return hit
        free = [j for j in range(self.n_modalities) if not (need >> j) & 1]
        if (1 << len(free)) > len(self.uc):
            out = np.nonzero((self.uc & need) == need)[0]
        else:
            r = np.arange(1 << len(free), dtype=np.int64)
            cand = np.full(r.shape, need, dtype=np.int64)
            for i, j in enumerate(free):  # deposit bit i of r at modality j: ascending in r
                cand |= ((r >> i) & 1) << j
            pos = np.searchsorted(self.uc, cand)
            ok = pos < len(self.uc)
            ok[ok] = self.uc[pos[ok]] == cand[ok]
            out = pos[ok]
        if self._cached_entries + len(out) > self.superset_cache_entries:
            self._superset_cache.clear()
            self._cached_entries = 0
        self._superset_cache[need] = out
        self._cached_entries += len(out)
        return out

    def search(
        self, q: np.ndarray, need: np.ndarray, k: int, max_scan: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` training rows by inner product with each query among the rows whose code
        contains the query's ``need`` code: (rows, scores), each (n, k), best first, ties to
        the lower row; row -1 (score -inf) where fewer exist (or, ivf, were probed).

        ``max_scan``: a query whose lists hold more rows scans only those of its lists whose
        fixed random rank (seeded at build) is in the first max_scan / rows of the ranks,
        about max_scan rows: the top k of a deterministic random subsample of the candidates,
        so approximate. ``None``: no cap."""
        n = q.shape[0]
        rows = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        if n == 0 or k == 0 or self.N == 0:
            return rows, scores
        lists = self._lists(q, need)
        if max_scan is not None:
            nlist = len(self.list_keys)
            for i, li in enumerate(lists):
                total = int(self.list_size[li].sum())
                if total > max_scan:
                    # the lists whose fixed random rank falls in the first max_scan / total of
                    # the ranks: about max_scan rows (an evenly spaced pick of the ascending
                    # lists would keep only codes sharing their low bits)
                    keep = self.list_rank[li] < max(1, int(nlist * max_scan / total))
                    lists[i] = li[keep] if keep.any() else li[:1]
        lens = np.array([len(li) for li in lists])
        # queries in groups of similar list counts (powers of two): one faiss call per group
        level = np.ceil(np.log2(np.maximum(lens, 1))).astype(np.int64)
        for lv in np.unique(level):
            sel = np.nonzero(level == lv)[0]
            width = int(lens[sel].max())
            if width == 0:
                continue
            iq = np.full((len(sel), width), -1, dtype=np.int64)
            for a, s in enumerate(sel):
                iq[a, : lens[s]] = lists[s]
            self.index.nprobe = width
            d, i = self.index.search_preassigned(q[sel], k, iq, None)
            rows[sel], scores[sel] = i, d
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=1)
        return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)


@dataclass
class SimilarGroups:
    """Per pair: ``rows`` (n, k) training rows best first, -1 padded; ``size``: members of
    the pool found for the pair (its own row excluded; a lower bound when the search was cut
    at k, which is all that min(k, size) needs); ``empty``: the pool was empty (fallback to the
    rows observing the target); ``self_in``: the pair's own row is a pool member."""

    rows: np.ndarray
    size: np.ndarray
    empty: np.ndarray
    self_in: np.ndarray


def select_similar(
    index: SimilarIndex,
    x: dict[str, Tensor],
    b_idx: Tensor,
    target: Tensor,
    codes: Tensor,
    k: int,
    exclude: Tensor | None = None,
    max_scan: int | None = None,
) -> SimilarGroups:
    """The k most similar pool members of every (sample ``b_idx``, target) pair, searched
    once per distinct (sample, observed set ``codes``); see the module docstring.
    ``max_scan``: see :meth:`SimilarIndex.search` (``None``: every candidate)."""
    n = int(target.shape[0])
    out_rows = np.full((n, k), -1, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    empty = np.zeros(n, dtype=bool)
    self_in = np.zeros(n, dtype=bool)
    if n == 0 or k == 0:
        return SimilarGroups(out_rows, size, empty, self_in)
    b = b_idx.detach().cpu().numpy().astype(np.int64)
    t = target.detach().cpu().numpy().astype(np.int64)
    c = codes.detach().cpu().numpy().astype(np.int64)
    ex = (
        exclude.detach().cpu().numpy().astype(np.int64)
        if exclude is not None
        else np.full(n, -1, dtype=np.int64)
    )
    need = c | (np.int64(1) << t)
    own = ex >= 0
    own[own] = (index.codes[ex[own]] & need[own]) == need[own]
    self_in[:] = own
    # one search per distinct (sample, observed set)
    uniq, inv = np.unique(np.stack([b, c], 1), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    fetch = max(32, k * index.overfetch) + 1
    q = index.queries(x, torch.as_tensor(uniq[:, 0]), uniq[:, 1])
    cand, _ = index.search(q, uniq[:, 1], fetch, max_scan)
    cand_p = cand[inv]  # (n, fetch) per pair
    valid = cand_p >= 0
    member = np.zeros_like(valid)
    member[valid] = ((index.codes[cand_p[valid]] >> t[np.nonzero(valid)[0]]) & 1) == 1
    member &= cand_p != ex[:, None]
    rank = np.cumsum(member, 1)
    found = np.minimum(member.sum(1), k)
    keep = member & (rank <= k)
    r_idx, c_idx = np.nonzero(keep)
    out_rows[r_idx, rank[r_idx, c_idx] - 1] = cand_p[r_idx, c_idx]
    size[:] = found
    # pairs with fewer than k whose search was cut off: search their own pool
    cut = valid[:, -1]
    redo = np.nonzero((found < k) & cut)[0]
    if redo.size:
        rows_r, _ = index.search(q[inv[redo]], need[redo], k + 1, max_scan)
        _write_groups(out_rows, size, redo, rows_r, ex, k)
    # empty pools (nothing observes the target and all of O_i): rows observing the target
    fb = np.nonzero((size == 0) & ~self_in)[0]
    if fb.size:
        t_code = np.int64(1) << t[fb]
        rows_f, _ = index.search(q[inv[fb]], t_code, k + 1, max_scan)
        _write_groups(out_rows, size, fb, rows_f, ex, k)
        empty[fb] = True
        own_f = ex[fb] >= 0
        own_f[own_f] = (index.codes[ex[fb][own_f]] >> t[fb][own_f]) & 1 == 1
        self_in[fb] = own_f
    return SimilarGroups(out_rows, size, empty, self_in)


def _write_groups(
    out_rows: np.ndarray,
    size: np.ndarray,
    pairs: np.ndarray,
    found: np.ndarray,
    ex: np.ndarray,
    k: int,
) -> None:
    """Write each pair's first k ``found`` rows (best first, -1 = none), its own row ``ex``
    left out, as its group and its size."""
    found = np.where(found == ex[pairs, None], -1, found)
    for a, p in enumerate(pairs):
        got = found[a][found[a] >= 0][:k]
        out_rows[p] = -1
        out_rows[p, : len(got)] = got
        size[p] = len(got)


class SimilarSelector:
    """``support_select="similar"`` (the default): the k pool members most similar to the
    sample, by the sum of per-modality cosines over its observed modalities, searched in a
    :class:`SimilarIndex` built once per training pool (see the module docstring). Same
    interface and :class:`SupportDraw` counters as the random draws'.

    ``train_max_scan``: in TRAINING, a query scans at most about this many candidate rows
    (:meth:`SimilarIndex.search`). Training hides observed entries (``retrieval_dropout``), so
    its queries have fewer modalities and far larger candidate sets than evaluation's: at
    N = 10^6 x M = 16 a batch of 1,024 scanned 47 M rows (5.9 s) uncapped. Evaluation is never
    capped. With at most ``train_max_scan`` training rows the cap cannot bind and training
    groups are exact too.
    """

    def __init__(
        self,
        pool: TrainingPool,
        kind: str = "auto",
        train_max_scan: int | None = 4096,
        **index_options: Any,
    ) -> None:
        self.index = SimilarIndex(pool.x, pool.observed, kind=kind, **index_options)
        self.train_max_scan = train_max_scan

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
        """Groups (n, k_max) of the pairs (``b_idx`` rows of ``x``, ``target``) with observed
        sets ``codes``; ``exclude``: each pair's own training row (training), never a member;
        ``training``: apply ``train_max_scan``.
        Group sizes are ``sampler.group_sizes(codes)`` (k, or |O_i| when k is None), cut to
        the pool's size."""
        dev = target.device
        n = int(target.shape[0])
        k_i = sampler.group_sizes(codes)
        k_req = int(k_i.max()) if n else 0
        faiss = _faiss()
        faiss.omp_set_num_threads(torch.get_num_threads())  # runtime.threads applies here too
        cap = self.train_max_scan if training else None
        g = select_similar(self.index, x, b_idx, target, codes, k_req, exclude, cap)
        size = torch.from_numpy(g.size).to(dev)
        k_eff = torch.minimum(k_i, size)
        k_max = int(k_eff.max()) if n else 0
        mask = torch.arange(k_max, device=dev)[None, :] < k_eff[:, None]
        rows = torch.from_numpy(g.rows[:, :k_max].copy()).to(dev)
        rows = torch.where(mask, rows, torch.zeros_like(rows))
        counts = {
            "with_replacement": torch.zeros((), dtype=torch.long, device=dev),
            "unseen_combination": (~torch.isin(codes, sampler.codes)).sum(),
            "pairs": torch.tensor(n, device=dev),
            "fallback_empty_pool": torch.from_numpy(g.empty).to(dev).sum(),
            "no_support": (size == 0).sum(),
        }
        if exclude is not None:
            self_in = torch.from_numpy(g.self_in).to(dev)
            counts["self_dropped"] = (self_in & (size < k_i)).sum()
        return SupportDraw(rows, mask, counts)
