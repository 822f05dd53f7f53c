"""Supporting-group sampler: pools, draws, fallbacks, determinism."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from moe_retriever.completion.support import (
    SupportingGroupSampler,
    combination_codes,
    hash_uniform,
    member_weights,
)


def _observed(n: int, m: int, seed: int = 0, p: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, m, generator=g) < p
    obs[obs.sum(1) == 0, 0] = True
    return obs


def test_pools_equal_brute_force() -> None:
    obs = _observed(300, 5)
    s = SupportingGroupSampler(obs)
    codes = combination_codes(obs)
    occurring = set(codes.tolist())
    n_keys = 0
    for c in occurring | {0}:
        for m in range(5):
            if (c >> m) & 1:
                continue
            need = c | (1 << m)
            expected = ((codes & need) == need).nonzero().squeeze(1)
            got = s.pool_members(m, c).sort().values
            assert torch.equal(got, expected), (m, c)
            n_keys += 1
    assert s.n_pools == n_keys  # pools only for combinations that occur (+ fallbacks)


def _pairs(obs: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, m = (~obs[rows]).nonzero(as_tuple=True)
    return m, combination_codes(obs[rows])[b]


def test_members_observe_target_and_combination_and_are_distinct() -> None:
    obs = _observed(400, 4, seed=1)
    s = SupportingGroupSampler(obs, seed=3)
    test_obs = _observed(60, 4, seed=2)
    target, codes = _pairs(test_obs, torch.arange(60))
    for training in (True, False):
        d = s.draw(target, codes, training, sample_keys=torch.arange(len(target)))
        assert torch.equal(d.mask.sum(1), s.group_sizes(codes))  # k = |O_i| by default
        for i in range(len(target)):
            rows = d.index[i][d.mask[i]]
            need = int(codes[i]) | (1 << int(target[i]))
            assert bool(((combination_codes(obs[rows]) & need) == need).all())
            pool_size = len(s.pool_members(int(target[i]), int(codes[i])))
            if pool_size >= len(rows):
                assert len(set(rows.tolist())) == len(rows)  # without replacement
        assert int(d.index.max()) < 400  # rows of the TRAINING pool only


def test_small_pool_draws_with_replacement_and_counts_it() -> None:
    obs = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)
    s = SupportingGroupSampler(obs, k=3)
    # target modality 2 with O = {0}: only training row 0 observes {0, 2}
    d = s.draw(torch.tensor([2]), torch.tensor([0b001]), True)
    assert d.index[0].tolist() == [0, 0, 0]
    assert int(d.counts["with_replacement"]) == 1


def test_unseen_combination_gets_its_superset_pool_and_only_empty_pools_fall_back() -> None:
    obs = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    s = SupportingGroupSampler(obs, k=2)
    # code 0b011 occurs (row 0) but no training sample has {0, 1, 2}: empty pool
    # code 0b110 occurs too (row 2) -> target 0 pool empty; code 0b100 never occurs in
    # training, but row 1 observes {0, 2}: its pool is {row 1}, no fallback
    target = torch.tensor([2, 0, 0])
    codes = torch.tensor([0b011, 0b110, 0b100])
    for n_draws in (1, 3):
        d = s.draw(target, codes, False, sample_keys=torch.tensor([1, 2, 3]), n_draws=n_draws)
        assert d.index.shape[0] == 3 * n_draws
        assert int(d.counts["fallback_empty_pool"]) == 2  # once per pair, not per draw
        assert int(d.counts["unseen_combination"]) == 1
        assert int(d.counts["pairs"]) == 3
        for i, m in enumerate(target.tolist() * n_draws):  # fallback = samples having m
            assert bool(obs[d.index[i][d.mask[i]], m].all())
        for r in range(n_draws):  # the unseen combination draws from its superset pool
            assert d.index[r * 3 + 2][d.mask[r * 3 + 2]].tolist() == [1, 1]


def test_modality_never_observed_in_training_gives_no_support() -> None:
    obs = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    s = SupportingGroupSampler(obs)
    d = s.draw(torch.tensor([2, 1]), torch.tensor([0b001, 0b001]), True)
    assert d.mask[0].sum() == 0 and d.mask[1].sum() == 1
    assert int(d.counts["no_support"]) == 1


def test_training_draws_follow_the_seed() -> None:
    obs = _observed(500, 4)
    target, codes = _pairs(_observed(50, 4, seed=5), torch.arange(50))
    a = SupportingGroupSampler(obs, seed=7).draw(target, codes, True).index
    b = SupportingGroupSampler(obs, seed=7).draw(target, codes, True).index
    c = SupportingGroupSampler(obs, seed=8).draw(target, codes, True).index
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_evaluation_draws_depend_only_on_the_sample() -> None:
    obs = _observed(500, 4)
    s = SupportingGroupSampler(obs, seed=1)
    target, codes = _pairs(_observed(50, 4, seed=5), torch.arange(50))
    keys = torch.arange(len(target)) * 7919 + 12345
    full = s.draw(target, codes, False, keys).index
    s.draw(target, codes, True)  # training draws in between must not matter
    perm = torch.randperm(len(target))
    shuffled = s.draw(target[perm], codes[perm], False, keys[perm]).index
    assert torch.equal(shuffled, full[perm])
    other = s.draw(target, codes, False, keys, draw_ids=torch.ones_like(target)).index
    assert not torch.equal(other, full)
    with pytest.raises(ValueError, match="sample_keys"):
        s.draw(target, codes, False)


def test_draws_are_roughly_uniform_over_the_pool() -> None:
    obs = torch.ones(10, 2, dtype=torch.bool)
    obs[0, 1] = False  # the pair's sample (not in the pool: pool = rows observing both)
    s = SupportingGroupSampler(obs, k=1)
    n = 9000
    d = s.draw(torch.full((n,), 1), torch.full((n,), 0b01), False, torch.arange(n))
    freq = torch.bincount(d.index[:, 0], minlength=10).float() / n
    assert freq[0] == 0
    assert torch.allclose(freq[1:], torch.full((9,), 1 / 9), atol=0.02)


def test_sixteen_modalities_are_cheap() -> None:
    obs = _observed(3000, 16, seed=3, p=0.9)
    t0 = time.perf_counter()
    s = SupportingGroupSampler(obs)
    build = time.perf_counter() - t0
    target, codes = _pairs(_observed(64, 16, seed=4, p=0.9), torch.arange(64))
    d = s.draw(target, codes, True)
    assert build < 10.0
    assert d.index.shape[0] == len(target)
    assert int(d.counts["unseen_combination"]) > 0  # 16 bits: most codes are new
    codes_train = combination_codes(obs)
    n_empty = 0
    for i in range(len(target)):  # ... and still get members observing O and the target
        need = int(codes[i]) | (1 << int(target[i]))
        if not bool(((codes_train & need) == need).any()):
            n_empty += 1
            continue
        rows = d.index[i][d.mask[i]]
        assert bool(((codes_train[rows] & need) == need).all())
    assert int(d.counts["fallback_empty_pool"]) == n_empty
    # the cache holds the M fallback pools and the distinct keys met, not 2^16 of anything
    assert s.n_pools == 16 + len(set(zip(target.tolist(), codes.tolist())))


def test_hash_uniform_range_and_determinism() -> None:
    u = hash_uniform(torch.arange(10000), torch.tensor(3))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.02
    assert torch.equal(u, hash_uniform(torch.arange(10000), torch.tensor(3)))


def test_member_weights() -> None:
    sup = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]]).bool()
    own = torch.tensor([[1, 0], [1, 1], [0, 0]]).bool()
    w = member_weights(sup, own)
    torch.testing.assert_close(w[0], torch.tensor([0.25, 0.25, 0, 0.5, 0]))
    torch.testing.assert_close(w[1], torch.tensor([0, 0, 0, 0.5, 0.5]))
    torch.testing.assert_close(w[2], torch.tensor([1.0, 0, 0, 0, 0]))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    M=st.integers(2, 6),
    p=st.floats(0.2, 0.95),
    n_pairs=st.integers(1, 30),
    k=st.one_of(st.none(), st.integers(1, 5)),
    n_draws=st.integers(1, 3),
    training=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_members_observe_combination_and_target_whenever_possible(
    n: int,
    M: int,
    p: float,
    n_pairs: int,
    k: int | None,
    n_draws: int,
    training: bool,
    seed: int,
) -> None:
    """Property: for ANY query combination O (occurring in training or not) and target m not
    in O, every member observes O and m when some training sample does; otherwise the pair
    falls back to samples observing m, and that is counted once per pair."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, M, generator=g) < p
    target = torch.randint(0, M, (n_pairs,), generator=g)
    codes = torch.randint(0, 1 << M, (n_pairs,), generator=g)
    codes = codes & ~(torch.ones_like(target) << target)  # any O without m (even {})
    s = SupportingGroupSampler(obs, k=k, seed=seed)
    d = s.draw(target, codes, training, sample_keys=torch.arange(n_pairs), n_draws=n_draws)
    codes_train = combination_codes(obs)
    need = codes | (torch.ones_like(target) << target)
    has_pool = ((codes_train[None, :] & need[:, None]) == need[:, None]).any(dim=1)
    has_m = obs[:, target].any(dim=0)
    assert d.index.shape[0] == n_pairs * n_draws
    for i in range(n_pairs * n_draws):
        j = i % n_pairs
        rows = d.index[i][d.mask[i]]
        assert bool((rows >= 0).all()) and bool((rows < n).all())
        if bool(has_pool[j]):
            assert bool(((codes_train[rows] & need[j]) == need[j]).all())
            assert len(rows) == (k if k is not None else bin(int(codes[j])).count("1"))
        elif bool(has_m[j]):
            assert bool(obs[rows, target[j]].all()) and len(rows) > 0
        else:
            assert len(rows) == 0
    assert int(d.counts["fallback_empty_pool"]) == int((~has_pool).sum())
    assert int(d.counts["no_support"]) == int((~has_m).sum())
    assert int(d.counts["pairs"]) == n_pairs
    unseen = ~(codes[:, None] == codes_train[None, :]).any(dim=1)
    assert int(d.counts["unseen_combination"]) == int(unseen.sum())


def test_pool_cache_order_and_contents_do_not_change_draws() -> None:
    """Pools are built on demand; draws must not depend on which keys were cached before (no
    RNG state, no order dependence in the cache), so a resumed run replays exactly."""
    obs = _observed(300, 6, seed=11)
    target, codes = _pairs(_observed(80, 6, seed=12, p=0.5), torch.arange(80))
    keys = torch.arange(len(target)) * 31 + 7
    fresh = SupportingGroupSampler(obs, seed=5, cube_draws=False)  # the pool cache itself
    warm = SupportingGroupSampler(obs, seed=5, cube_draws=False)
    other_t, other_c = _pairs(_observed(50, 6, seed=13, p=0.4), torch.arange(50))
    warm.draw(other_t, other_c, False, sample_keys=torch.arange(len(other_t)))
    assert warm.n_pools > fresh.n_pools
    fresh.generator.manual_seed(99)
    warm.generator.manual_seed(99)
    for training in (True, False):
        a = fresh.draw(target, codes, training, sample_keys=keys)
        b = warm.draw(target, codes, training, sample_keys=keys)
        assert torch.equal(a.index, b.index) and torch.equal(a.mask, b.mask)
    met = set(zip(target.tolist(), codes.tolist())) | set(zip(other_t.tolist(), other_c.tolist()))
    n_keys = len(met)
    assert warm.n_pools == 6 + n_keys  # fallbacks + distinct keys met


def test_pool_members_of_any_combination_equal_brute_force() -> None:
    obs = _observed(200, 5, seed=4, p=0.5)
    s = SupportingGroupSampler(obs)
    codes = combination_codes(obs)
    for c in range(1 << 5):  # every subset, occurring in training or not
        for m in range(5):
            if (c >> m) & 1:
                continue
            need = c | (1 << m)
            expected = ((codes & need) == need).nonzero().squeeze(1)
            assert torch.equal(s.pool_members(m, c).sort().values, expected), (m, c)
    with pytest.raises(ValueError, match="already contains target"):
        s.pool_members(1, 0b10)


def test_completion_counts_fallbacks_once_per_pair_with_several_eval_draws() -> None:
    from moe_retriever.model import ModelConfig, MultimodalClassifier

    torch.manual_seed(0)
    # training: modality 2 is only ever observed alone, so (2, O={0}) has an empty pool
    obs = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    dims = {"a": 3, "b": 4, "c": 2}
    x = {m: torch.randn(5, d) for m, d in dims.items()}
    cfg = ModelConfig(n_tokens=2, dim=8, n_heads=2, head_hidden=8, retrieval_dropout=0.0)
    for method in ("moe-retriever", "official-average"):
        model = MultimodalClassifier(dims, 2, cfg, method, {"eval_draws": 3}).eval()
        model.set_training_pool(x, obs)
        batch = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)
        bx = {m: torch.randn(3, d) * batch[:, j, None] for j, (m, d) in enumerate(dims.items())}
        fb = model(bx, batch, sample_keys=torch.arange(3)).info["completion"]["fallback"]
        # 6 missing pairs, each counted once (not 3 times): (c | {a}) twice has an empty pool;
        # (b | {a}), (a | {b}), (c | {b}) do not; {b} alone is not a training combination
        assert int(fb["pairs"]) == 6
        assert int(fb["fallback_empty_pool"]) == 2
        assert int(fb["unseen_combination"]) == 2


def test_training_on_miniacc_falls_back_only_for_empty_pools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Self-supervision hides observed entries, creating combinations training never shows;
    with pools by superset test none of their pairs falls back unless the pool is empty."""
    from moe_retriever.data.splits import apply_split, make_split
    from moe_retriever.datasets import load_dataset
    from moe_retriever.training.estimator import MoERetrieverClassifier

    seen: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []
    original = SupportingGroupSampler.draw

    def recording_draw(self, target, codes, training, *args, **kwargs):  # type: ignore[no-untyped-def]
        d = original(self, target, codes, training, *args, **kwargs)
        if training:
            seen.append((target.clone(), codes.clone(), dict(d.counts)))
        return d

    monkeypatch.setattr(SupportingGroupSampler, "draw", recording_draw)
    data = load_dataset("miniacc")
    train, val, _ = apply_split(data, make_split(data, seed=0))
    config = {
        "model": {"n_tokens": 4, "dim": 16, "n_heads": 2, "head_hidden": 16},
        "completion": {"support_select": "random"},  # the path that goes through draw()
        "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "patience": None},
        "runtime": {"accelerator": "cpu", "progress_bar": False, "threads": 1},
    }
    clf = MoERetrieverClassifier(config=config, seed=0).fit(train, val)
    assert clf.model_.config.retrieval_dropout > 0  # self-supervision on (the default)
    pool_codes = combination_codes(clf.model_.pool.observed)
    target = torch.cat([t for t, _, _ in seen])
    codes = torch.cat([c for _, c, _ in seen])
    need = codes | (torch.ones_like(target) << target)
    has_pool = ((pool_codes[None, :] & need[:, None]) == need[:, None]).any(dim=1)
    fallbacks = sum(int(c["fallback_empty_pool"]) for _, _, c in seen)
    unseen = sum(int(c["unseen_combination"]) for _, _, c in seen)
    assert len(target) > 100
    assert unseen > 0  # the case that used to fall back: combinations absent from training
    assert fallbacks == int((~has_pool).sum())  # so 0 for every pair with a non-empty pool
    assert fallbacks < len(target) / 20


def test_similar_selection_takes_the_top_k_pool_members_by_cosine() -> None:
    from moe_retriever.completion.base import TrainingPool
    from moe_retriever.completion.support import ConcatSimilarSelector

    g = torch.Generator().manual_seed(0)
    N, dims = 120, {"a": 4, "b": 3, "c": 5, "d": 2}
    obs = _observed(N, 4, seed=21, p=0.6)
    x = {m: torch.randn(N, f, generator=g) * 3 + 1 for m, f in dims.items()}
    x = {m: v * obs[:, j, None] for j, (m, v) in enumerate(x.items())}
    pool = TrainingPool(list(dims), x, obs)
    sampler = SupportingGroupSampler(obs, k=3)
    sel = ConcatSimilarSelector(pool)
    bobs = _observed(20, 4, seed=22, p=0.5)
    bx = {
        m: torch.randn(20, f, generator=g) * bobs[:, j, None]
        for j, (m, f) in enumerate(dims.items())
    }
    b_idx, target = (~bobs).nonzero(as_tuple=True)
    codes = combination_codes(bobs)[b_idx]
    exclude = torch.where(torch.arange(len(b_idx)) % 2 == 0, torch.arange(len(b_idx)), -1)
    d = sel.select(sampler, bx, b_idx, target, codes, exclude)
    d2 = sel.select(sampler, bx, b_idx.flip(0), target.flip(0), codes.flip(0), exclude.flip(0))
    assert torch.equal(d2.index.flip(0), d.index)  # deterministic, per pair
    # brute force: standardize with the pool's observed rows, cosine over the sample's modalities
    z = {}
    for j, m in enumerate(dims):
        rows = x[m][obs[:, j]]
        mu, sd = rows.mean(0), rows.std(0, unbiased=False)
        z[m] = ((x[m] - mu) / sd * obs[:, j, None], (bx[m] - mu) / sd)
    for i in range(len(b_idx)):
        b, m, c = int(b_idx[i]), int(target[i]), int(codes[i])
        mods = [name for j, name in enumerate(dims) if (c >> j) & 1]
        pool_rows = set(sampler.pool_members(m, c).tolist())
        if not pool_rows:  # empty pool: the fallback, training rows observing m
            pool_rows = set(obs[:, m].nonzero().squeeze(1).tolist())
        pool_rows.discard(int(exclude[i]))
        got = d.index[i][d.mask[i]].tolist()
        assert len(got) == min(3, len(pool_rows))
        assert set(got) <= pool_rows
        s = torch.nn.functional.cosine_similarity(
            torch.cat([z[n][1][b] for n in mods])[None],
            torch.cat([z[n][0] for n in mods], dim=1),
            dim=1,
        )
        ranked = sorted(pool_rows, key=lambda r: -float(s[r]))
        assert [round(float(s[r]), 5) for r in got] == [
            round(float(s[r]), 5) for r in ranked[: len(got)]
        ]


def test_similar_selection_runs_in_the_model_and_is_validated() -> None:
    from moe_retriever.model import ModelConfig, MultimodalClassifier

    torch.manual_seed(0)
    dims = {"a": 3, "b": 4, "c": 2}
    obs = _observed(30, 3, seed=5, p=0.6)
    x = {m: torch.randn(30, d) * obs[:, j, None] for j, (m, d) in enumerate(dims.items())}
    cfg = ModelConfig(n_tokens=2, dim=8, n_heads=2, head_hidden=8)
    variants = [
        ("moe-retriever", {"support_select": "similar"}),
        ("moe-retriever", {"support_select": "similar", "similar_index": "ivf"}),
        ("moe-retriever", {"support_select": "similar-concat"}),
        ("official-average", {"support_select": "similar"}),
    ]
    for method, options in variants:
        model = MultimodalClassifier(dims, 2, cfg, method, options)
        model.set_training_pool(x, obs)
        for train in (True, False):
            model.train(train)
            out = model(x, obs, torch.arange(30), pool_index=torch.arange(30) if train else None)
            assert torch.isfinite(out.logits).all()
            assert int(out.info["completion"]["fallback"]["pairs"]) > 0
        model.eval()
        with torch.no_grad():
            a = model(x, obs, torch.arange(30)).tokens
            b = model(x, obs, torch.arange(30) + 1000).tokens  # no dependence on sample keys
        assert torch.equal(a, b)
        with pytest.raises(ValueError, match="support_select"):
            MultimodalClassifier(dims, 2, cfg, method, {"support_select": "nearest"})
        with pytest.raises(ValueError, match="similar_index"):
            MultimodalClassifier(dims, 2, cfg, method, {"similar_index": "hnsw"})


def test_top_k_stable_equals_the_stable_sort_with_ties() -> None:
    """The similar selection's top-k keeps the documented tie rule (ties to the lower training
    row): on scores full of ties, -inf non-members included, it equals the stable sort."""
    from moe_retriever.completion.support import top_k_stable

    g = torch.Generator().manual_seed(3)
    for N, k in ((50, 5), (7, 5), (300, 12), (4, 4)):
        score = torch.randint(0, 4, (40, N), generator=g).float()  # many ties at every cut
        score[torch.rand(40, N, generator=g) < 0.3] = -math.inf
        score[0] = -math.inf  # an empty pool
        ref = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(top_k_stable(score, k), ref)
    real = torch.randn(64, 1000, generator=g)
    ref = torch.sort(real, dim=1, descending=True, stable=True).indices[:, :5]
    assert torch.equal(top_k_stable(real, 5), ref)


def test_superset_bitsets_equal_brute_force_across_word_boundaries() -> None:
    """The packed superset test finds exactly the occurring codes containing each need, in
    ascending order, with more than 64 codes (several words, bit 63 included)."""
    obs = _observed(4000, 12, seed=8, p=0.55)
    s = SupportingGroupSampler(obs)
    assert s.codes.numel() > 200 and s._has_bit.shape[1] >= 4
    g = torch.Generator().manual_seed(1)
    need = torch.randint(1, 1 << 12, (300,), generator=g)
    need = need & torch.randint(0, 1 << 12, (300,), generator=g) | 1  # small and large sets
    key, code = s._superset_codes(need)
    for i in range(need.shape[0]):
        got = s.codes[code[key == i]]
        want = s.codes[(s.codes & need[i]) == need[i]]
        assert torch.equal(got, want)


def test_a_bounded_pool_cache_draws_the_same_groups() -> None:
    """max_segments bounds the cache's memory: it is emptied when full, and since a pool's
    member order depends only on the training mask, the draws are those of an unbounded cache."""
    obs = _observed(3000, 10, seed=9, p=0.6)
    small = SupportingGroupSampler(obs, seed=4, max_segments=50)
    big = SupportingGroupSampler(obs, seed=4)
    for b in range(6):
        bobs = _observed(64, 10, seed=100 + b, p=0.5)
        target, codes = _pairs(bobs, torch.arange(64))
        for training in (True, False):
            keys = torch.arange(len(target)) + 1000 * b
            d1 = small.draw(target, codes, training, keys)
            d2 = big.draw(target, codes, training, keys)
            assert torch.equal(d1.index, d2.index) and torch.equal(d1.mask, d2.mask)
    assert small.n_clears > 0 and big.n_clears == 0
    assert small.seg_end.numel() < big.seg_end.numel()


def test_similar_selection_in_chunks_equals_one_chunk() -> None:
    """Chunking the (pairs x N_train) matrices (for a large training pool) changes nothing."""
    from moe_retriever.completion.base import TrainingPool
    from moe_retriever.completion.support import ConcatSimilarSelector

    g = torch.Generator().manual_seed(5)
    N, dims = 200, {"a": 3, "b": 4, "c": 2}
    obs = _observed(N, 3, seed=31, p=0.6)
    x = {
        m: torch.randn(N, f, generator=g) * obs[:, j, None] for j, (m, f) in enumerate(dims.items())
    }
    pool = TrainingPool(list(dims), x, obs)
    sampler = SupportingGroupSampler(obs, k=4)
    b_idx, target = (~obs[:50]).nonzero(as_tuple=True)
    codes = combination_codes(obs[:50])[b_idx]
    bx = {m: v[:50] for m, v in x.items()}
    exclude = b_idx.clone()  # training batch: the samples' own rows
    one = ConcatSimilarSelector(pool).select(sampler, bx, b_idx, target, codes, exclude)
    tiny = ConcatSimilarSelector(pool, chunk_entries=3 * N)  # 3 pairs per chunk
    many = tiny.select(sampler, bx, b_idx, target, codes, exclude)
    assert torch.equal(one.index, many.index) and torch.equal(one.mask, many.mask)
    for k in one.counts:
        assert int(one.counts[k]) == int(many.counts[k])
    assert (
        int(one.counts["self_dropped"]) >= 0
        and not (many.index == exclude[:, None])[many.mask].any()
    )


def test_superset_enumeration_equals_brute_force_at_sixteen_modalities() -> None:
    """With every combination of 16 modalities occurring, needs leaving few modalities free
    are enumerated (2^f supersets looked up) and the others go through the bitsets: both give
    exactly the occurring supersets, ascending, key-major."""
    obs = _observed(60_000, 16, seed=3, p=0.5)
    s = SupportingGroupSampler(obs)
    g = torch.Generator().manual_seed(2)
    need = torch.randint(0, 1 << 16, (200,), generator=g)
    need[:40] &= torch.randint(0, 1 << 16, (40,), generator=g)  # small needs: bitsets
    free = 16 - torch.tensor([bin(int(v)).count("1") for v in need])
    W = s._has_bit.shape[1]
    enumerated = (1 << free) <= 4 * W
    assert bool(enumerated.any()) and bool((~enumerated).any())
    key, code = s._superset_codes(need)
    assert bool((key[1:] >= key[:-1]).all())
    for i in range(need.shape[0]):
        got = s.codes[code[key == i]]
        want = s.codes[(s.codes & need[i]) == need[i]]
        assert torch.equal(got, want)


def _dense_sampler(**kw: object) -> tuple[SupportingGroupSampler, Tensor]:
    obs = _observed(8000, 10, seed=17, p=0.5)  # all 1024 combinations occur, ~8 rows each
    return SupportingGroupSampler(obs, **kw), obs  # type: ignore[arg-type]


def test_large_pools_of_a_dense_mask_are_drawn_from_their_subcube_without_building_them() -> None:
    s, obs = _dense_sampler(k=4, seed=1)
    codes_train = combination_codes(obs)
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 10, (300,), generator=g)
    codes = torch.randint(0, 1 << 10, (300,), generator=g)
    codes = codes & torch.randint(0, 1 << 10, (300,), generator=g)  # small sets: large pools
    codes = codes & ~(torch.ones_like(target) << target)
    cube = s._cube_pairs(target, codes)
    assert cube is not None
    target, codes = target[cube][:150], codes[cube][:150]
    assert target.numel() == 150
    exclude = torch.randint(0, 8000, (150,), generator=g)
    n_pools = s.n_pools
    for training in (True, False):
        d = s.draw(target, codes, training, sample_keys=torch.arange(150), exclude=exclude)
        assert s.n_pools == n_pools  # nothing built
        assert bool(d.mask.all())
        need = codes | (torch.ones_like(target) << target)
        assert bool(((codes_train[d.index] & need[:, None]) == need[:, None]).all())
        assert bool((d.index != exclude[:, None]).all())
        srt = d.index.sort(1).values
        assert bool((srt[:, 1:] != srt[:, :-1]).all())  # without replacement
    # evaluation draws depend on the sample only, not on the batch it comes in
    perm = torch.randperm(150, generator=g)
    a = s.draw(target, codes, False, sample_keys=torch.arange(150) + 5, n_draws=2)
    b = s.draw(target[perm], codes[perm], False, sample_keys=perm + 5, n_draws=2)
    assert torch.equal(a.index.reshape(2, 150, -1)[:, perm], b.index.reshape(2, 150, -1))
    assert not torch.equal(a.index[:150], a.index[150:])  # two draws, two groups


def test_subcube_draws_are_uniform_over_the_pool() -> None:
    """Rejection from the subcube (uniform code, accepted w.p. len / max len, uniform row of
    the code) draws every pool member with the same probability."""
    s, obs = _dense_sampler(k=1, seed=2)
    target = torch.zeros(40_000, dtype=torch.long)
    codes = torch.full_like(target, 0b10)  # O = {1}, m = 0: pool = rows observing both
    assert bool(s._cube_pairs(target[:1], codes[:1]).all())  # type: ignore[union-attr]
    d = s.draw(target, codes, True)
    pool = (obs[:, 0] & obs[:, 1]).nonzero().squeeze(1)
    counts = torch.bincount(d.index[:, 0], minlength=8000).double()
    assert counts.sum() == counts[pool].sum()  # only pool members
    expected = 40_000 / pool.numel()
    chi2 = float(((counts[pool] - expected) ** 2 / expected).sum())
    dof = pool.numel() - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


def test_a_sparse_subcube_falls_back_to_the_pool_path() -> None:
    """A subcube the rejection rounds miss (here: a pool of 2 rows for a group of 4) goes to
    the built pool, with its replacement rule and counts."""
    obs = _observed(8000, 10, seed=17, p=0.5)
    obs[:, 0] = False
    obs[:2, :2] = True  # only rows 0 and 1 observe modality 0 (and modality 1)
    s = SupportingGroupSampler(obs, k=4, seed=3)
    target, codes = torch.tensor([0]), torch.tensor([0b10])  # m = 0, O = {1}
    assert bool(s._cube_pairs(target, codes).all())  # type: ignore[union-attr]
    d = s.draw(target, codes, True)
    assert set(d.index[0][d.mask[0]].tolist()) <= {0, 1} and int(d.mask.sum()) == 4
    assert int(d.counts["with_replacement"]) == 1 and int(d.counts["fallback_empty_pool"]) == 0


@pytest.mark.parametrize("with_exclude", [True, False])
def test_similar_selection_over_compacted_candidates_equals_full_rows(with_exclude: bool) -> None:
    """Compacting each sample's candidate rows (those observing its whole set) changes no
    group and no count, against the full-row path and against the pools of the sampler;
    fallbacks (empty pools), own rows and tiny pools included."""
    from moe_retriever.completion.base import TrainingPool
    from moe_retriever.completion.support import ConcatSimilarSelector

    g = torch.Generator().manual_seed(7)
    N, M = 600, 8
    dims = {f"m{j}": 2 + j % 3 for j in range(M)}
    obs = _observed(N, M, seed=41, p=0.55)
    obs[:, 7] &= ~obs[:, 6]  # no training row observes both: their pools are empty
    x = {
        m: torch.randn(N, f, generator=g) * obs[:, j, None] for j, (m, f) in enumerate(dims.items())
    }
    x["m0"][5] = x["m0"][4]  # an exact tie between two rows
    pool = TrainingPool(list(dims), x, obs)
    sampler = SupportingGroupSampler(obs, k=5)
    bobs = torch.rand(120, M, generator=g) < 0.85  # large sets: some pools are empty
    bobs[bobs.sum(1) == 0, 1] = True
    b_idx, target = (~bobs).nonzero(as_tuple=True)
    codes = combination_codes(bobs)[b_idx]
    bx = {m: v[:120] for m, v in x.items()}
    exclude = b_idx.clone() if with_exclude else None
    full = ConcatSimilarSelector(pool, compact_fraction=0.0).select(
        sampler, bx, b_idx, target, codes, exclude
    )
    compact = ConcatSimilarSelector(pool, compact_fraction=1.0, chunk_entries=2000).select(
        sampler, bx, b_idx, target, codes, exclude
    )
    assert torch.equal(full.index, compact.index) and torch.equal(full.mask, compact.mask)
    assert {k: int(v) for k, v in full.counts.items()} == {
        k: int(v) for k, v in compact.counts.items()
    }
    assert int(full.counts["fallback_empty_pool"]) > 0
    # members come from the sampler's pools (or the fallback), as many as the pool allows
    for i in range(len(b_idx)):
        m, c = int(target[i]), int(codes[i])
        pool_rows = set(sampler.pool_members(m, c).tolist())
        if not pool_rows:
            pool_rows = set(obs[:, m].nonzero().squeeze(1).tolist())
        if exclude is not None:
            pool_rows.discard(int(exclude[i]))
        got = full.index[i][full.mask[i]].tolist()
        assert set(got) <= pool_rows and len(got) == min(5, len(pool_rows))


def test_similar_selection_is_float32_under_autocast() -> None:
    """Mixed precision (bf16 autocast) must not change which rows are selected."""
    from moe_retriever.completion.base import TrainingPool
    from moe_retriever.completion.support import ConcatSimilarSelector

    g = torch.Generator().manual_seed(9)
    dims = {"a": 5, "b": 3, "c": 4}
    obs = _observed(300, 3, seed=51, p=0.6)
    x = {
        m: torch.randn(300, f, generator=g) * obs[:, j, None]
        for j, (m, f) in enumerate(dims.items())
    }
    sel = ConcatSimilarSelector(TrainingPool(list(dims), x, obs))
    sampler = SupportingGroupSampler(obs, k=4)
    b_idx, target = (~obs[:60]).nonzero(as_tuple=True)
    codes = combination_codes(obs[:60])[b_idx]
    bx = {m: v[:60] for m, v in x.items()}
    ref = sel.select(sampler, bx, b_idx, target, codes, b_idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = sel.select(sampler, bx, b_idx, target, codes, b_idx)
    assert torch.equal(ref.index, mixed.index) and torch.equal(ref.mask, mixed.mask)
