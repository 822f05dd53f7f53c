"""Supporting-group sampler: pools, draws, fallbacks, determinism."""

from __future__ import annotations

import time

import pytest
import torch

from moe_retriever.completion.sampler import (
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


def test_unknown_combination_and_empty_pool_fall_back_and_are_counted() -> None:
    obs = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    s = SupportingGroupSampler(obs, k=2)
    # code 0b011 occurs (row 0) but no training sample has {0, 1, 2}: empty pool
    # code 0b110 occurs too (row 2) -> target 0 pool empty; code 0b100 never occurs -> unknown
    target = torch.tensor([2, 0, 0])
    codes = torch.tensor([0b011, 0b110, 0b100])
    d = s.draw(target, codes, False, sample_keys=torch.tensor([1, 2, 3]))
    assert int(d.counts["fallback_empty_pool"]) == 2
    assert int(d.counts["fallback_unknown_combination"]) == 1
    for i, m in enumerate(target.tolist()):  # fallback = training samples having m
        assert bool(obs[d.index[i][d.mask[i]], m].all())


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
    assert int(d.counts["fallback_unknown_combination"]) > 0  # 16 bits: most codes are new


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
