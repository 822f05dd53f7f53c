"""The faiss similarity index of similar supporting groups (issue 24)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_retriever.completion.support.index import SimilarIndex, select_similar

pytest.importorskip("faiss")


def _data(n: int = 600, dims: tuple[int, ...] = (3, 7, 4, 10, 2), p: float = 0.6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, len(dims), generator=g) < p
    obs[~obs.any(1), 0] = True
    x = {f"m{j}": torch.randn(n, d, generator=g) * obs[:, j, None] for j, d in enumerate(dims)}
    return x, obs


def _brute(index: SimilarIndex, x, obs, sample_x, code: int, target: int, k: int, own: int):
    """The definition, written out: the pool's k best rows by the sum over the sample's
    modalities of the cosine of standardized blocks, ties to the lower row; the rows
    observing the target when the pool is empty."""
    n = obs.shape[0]
    score = torch.zeros(n, dtype=torch.float64)
    for j, m in enumerate(x):
        if not (code >> j) & 1:
            continue
        mean = torch.from_numpy(index.mean[m]).double()
        std = torch.from_numpy(index.std[m]).double()
        z = (x[m].double() - mean) / std
        q = (sample_x[m].double() - mean) / std
        cos = (z @ q) / (z.norm(dim=1) * q.norm()).clamp_min(1e-300)
        score += torch.where(obs[:, j], cos, torch.zeros_like(cos))
    need = code | (1 << target)
    codes = torch.from_numpy(index.codes)
    member = (codes & need) == need
    if own >= 0:
        member[own] = False
    if not member.any() and not (own >= 0 and (int(codes[own]) & need) == need):
        member = (codes >> target) & 1 == 1
        if own >= 0:
            member[own] = False
    s = torch.where(member, score, torch.full_like(score, -torch.inf))
    order = torch.sort(s, descending=True, stable=True)
    return [
        int(r) for r, v in zip(order.indices[:k], order.values[:k], strict=True) if v > -torch.inf
    ]


def _pairs(obs: torch.Tensor, rows: torch.Tensor, hide: float = 0.0, seed: int = 0):
    """Missing pairs of ``rows`` plus (training self-supervision) observed entries hidden at
    random, with each pair's observed set as the model sees it."""
    g = torch.Generator().manual_seed(seed)
    seen = obs[rows].clone()
    if hide:
        drop = (torch.rand(seen.shape, generator=g) < hide) & seen
        keep_one = seen.sum(1) - drop.sum(1) < 1
        drop[keep_one] = False
        seen &= ~drop
    b, t = (~seen).nonzero(as_tuple=True)
    codes = (seen.long() << torch.arange(obs.shape[1])).sum(1)[b]
    return b, t, codes


@pytest.mark.parametrize("hide", [0.0, 0.4])
def test_exact_index_is_the_definition(hide: float) -> None:
    x, obs = _data()
    index = SimilarIndex(x, obs, kind="exact")
    rows = torch.arange(0, 120)
    b, t, codes = _pairs(obs, rows, hide)
    xb = {m: v[rows] for m, v in x.items()}
    got = select_similar(index, xb, b, t, codes, 5, exclude=rows[b])
    for p in range(len(b)):
        i = int(rows[b[p]])
        want = _brute(
            index, x, obs, {m: v[i] for m, v in x.items()}, int(codes[p]), int(t[p]), 5, i
        )
        assert [int(r) for r in got.rows[p] if r >= 0] == want, p
        assert got.size[p] == len(want)


def test_members_stay_in_the_pool_and_small_pools_are_whole() -> None:
    x, obs = _data(n=300, p=0.35)
    index = SimilarIndex(x, obs, kind="exact")
    rows = torch.arange(300)
    b, t, codes = _pairs(obs, rows)
    got = select_similar(index, {m: v[rows] for m, v in x.items()}, b, t, codes, 5, rows[b])
    all_codes = index.codes
    for p in range(len(b)):
        need = int(codes[p]) | (1 << int(t[p]))
        members = got.rows[p][got.rows[p] >= 0]
        assert int(rows[b[p]]) not in members.tolist()  # never the sample's own row
        pool = np.nonzero((all_codes & need) == need)[0]
        pool = pool[pool != int(rows[b[p]])]
        if len(pool):
            assert not got.empty[p]
            assert set(members.tolist()) <= set(pool.tolist())
            assert len(members) == min(5, len(pool))
        else:  # empty pool: rows observing the target, flagged
            assert got.empty[p] or got.self_in[p]
            assert all((all_codes[r] >> int(t[p])) & 1 for r in members)


def test_groups_do_not_depend_on_the_batch() -> None:
    x, obs = _data()
    index = SimilarIndex(x, obs)
    rows = torch.arange(40, 100)
    b, t, codes = _pairs(obs, rows)
    xb = {m: v[rows] for m, v in x.items()}
    full = select_similar(index, xb, b, t, codes, 5)
    again = select_similar(index, xb, b, t, codes, 5)
    np.testing.assert_array_equal(full.rows, again.rows)
    half = slice(0, len(b) // 2)
    part = select_similar(index, xb, b[half], t[half], codes[half], 5)
    np.testing.assert_array_equal(part.rows, full.rows[half])


def test_auto_chooses_by_candidate_set_and_ivf_recall() -> None:
    # clustered data, few modalities: large candidate sets, where the ivf mode is meant
    g = torch.Generator().manual_seed(3)
    n, M, F = 4000, 3, 6
    centers = torch.randn(16, M * F, generator=g) * 3
    label = torch.randint(0, 16, (n,), generator=g)
    full = centers[label] + torch.randn(n, M * F, generator=g)
    obs = torch.rand(n, M, generator=g) < 0.7
    obs[~obs.any(1), 0] = True
    x = {f"m{j}": full[:, j * F : (j + 1) * F] * obs[:, j, None] for j in range(M)}
    assert SimilarIndex(x, obs).kind == "exact"
    approx = SimilarIndex(x, obs, max_scan=100, n_cells=32, nprobe=8)
    assert approx.kind == "ivf" and approx.n_cells == 32
    exact = SimilarIndex(x, obs, kind="exact")
    rows = torch.arange(0, 300)
    b, t, codes = _pairs(obs, rows)
    xb = {m: v[rows] for m, v in x.items()}
    want = select_similar(exact, xb, b, t, codes, 5, rows[b])
    got = select_similar(approx, xb, b, t, codes, 5, rows[b])
    hits = sum(
        len(set(w[w >= 0].tolist()) & set(r[r >= 0].tolist()))
        for w, r in zip(want.rows, got.rows, strict=True)
    )
    assert hits / (want.rows >= 0).sum() >= 0.9
    # probing every cell is exact
    every = SimilarIndex(x, obs, kind="ivf", n_cells=32, nprobe=32)
    np.testing.assert_array_equal(
        select_similar(every, xb, b, t, codes, 5, rows[b]).rows, want.rows
    )


def test_wide_modality_does_not_drown_a_narrow_one() -> None:
    """Sum of per-modality cosines: a row matching the sample on the narrow modality and
    orthogonal on the wide one scores as much as the reverse (one cosine over the concatenated
    inputs would rank the wide match far ahead)."""
    n = 50
    g = torch.Generator().manual_seed(0)
    x = {"narrow": torch.randn(n, 2, generator=g), "wide": torch.randn(n, 200, generator=g)}
    obs = torch.ones(n, 3, dtype=torch.bool)
    x["target"] = torch.randn(n, 4, generator=g)
    index = SimilarIndex(x, obs, kind="exact")
    q_rows = torch.tensor([0])
    code = torch.tensor([0b011])
    xq = {m: v[q_rows] for m, v in x.items()}
    got = select_similar(
        index, xq, torch.tensor([0]), torch.tensor([2]), code, 3, torch.tensor([0])
    )
    sample = {m: v[0] for m, v in x.items()}
    assert [int(r) for r in got.rows[0]] == _brute(index, x, obs, sample, 0b011, 2, 3, 0)


def test_bad_kind() -> None:
    x, obs = _data(n=20)
    with pytest.raises(ValueError, match="kind"):
        SimilarIndex(x, obs, kind="hnsw")


def test_capped_search_subsamples_inside_the_pool() -> None:
    """``max_scan`` (training's cap): no effect when the candidate sets are smaller; when it
    binds, members stay in the pool, groups are still full and the result is deterministic."""
    x, obs = _data(n=3000, dims=(2,) * 8, p=0.5, seed=1)
    index = SimilarIndex(x, obs, kind="exact")
    rows = torch.arange(0, 200)
    b, t, codes = _pairs(obs, rows, hide=0.3)
    xb = {m: v[rows] for m, v in x.items()}
    full = select_similar(index, xb, b, t, codes, 5, rows[b])
    same = select_similar(index, xb, b, t, codes, 5, rows[b], max_scan=10**9)
    np.testing.assert_array_equal(full.rows, same.rows)
    capped = select_similar(index, xb, b, t, codes, 5, rows[b], max_scan=200)
    assert (capped.rows != full.rows).any()  # the cap binds on this data
    for p in range(len(b)):
        need = int(codes[p]) | (1 << int(t[p]))
        got = capped.rows[p][capped.rows[p] >= 0]
        if not capped.empty[p]:
            assert all((index.codes[r] & need) == need for r in got)
    need = (obs.long() << torch.arange(8)).sum(1).numpy()[:50] & 0b11  # large candidate sets
    lists = index._lists(np.zeros((50, index.dim), np.float32), need)
    cand, _ = index.search(np.zeros((50, index.dim), np.float32), need, 5, max_scan=200)
    assert (cand >= 0).all()
    kept = [int(index.list_size[li].sum()) for li in lists]
    assert min(kept) > 200  # uncapped they exceed the cap
    again, _ = index.search(np.zeros((50, index.dim), np.float32), need, 5, max_scan=200)
    np.testing.assert_array_equal(cand, again)  # deterministic
