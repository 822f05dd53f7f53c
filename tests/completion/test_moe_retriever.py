"""The retriever: batched computation equals a per-pair reference; contract of complete()."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moe_retriever.completion import CompletionContext, TrainingPool, create_completion
from moe_retriever.completion.moe_retriever import MoERetrieverCompletion
from moe_retriever.completion.routing import summarize_routing
from moe_retriever.completion.support import (
    combination_codes,
    encode_support_unique,
)
from moe_retriever.encoders import PatchEncoder

MODS = ["a", "b", "c", "d"]
DIMS = {"a": 12, "b": 7, "c": 20, "d": 5}
P, D = 4, 16


def _setup(seed: int = 0, n_train: int = 80, batch: int = 12):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoders = {m: PatchEncoder(DIMS[m], P, D) for m in MODS}

    def encode(m: str, x: torch.Tensor) -> torch.Tensor:
        return encoders[m](x)

    def observed(n: int) -> torch.Tensor:
        obs = torch.rand(n, len(MODS), generator=g) < 0.55
        obs[obs.sum(1) == 0, 1] = True
        return obs

    obs_tr = observed(n_train)
    x_tr = {
        m: torch.randn(n_train, DIMS[m], generator=g) * obs_tr[:, j, None]
        for j, m in enumerate(MODS)
    }
    pool = TrainingPool(MODS, x_tr, obs_tr)
    obs = observed(batch)
    obs[0] = torch.tensor([True, False, False, False])  # at least one of each
    obs[1] = torch.tensor([False, True, True, True])
    x = {m: torch.randn(batch, DIMS[m], generator=g) * obs[:, j, None] for j, m in enumerate(MODS)}
    tokens = torch.stack([encode(m, x[m]) * obs[:, j, None, None] for j, m in enumerate(MODS)], 1)
    return encode, pool, obs, tokens


def _make(**cfg) -> MoERetrieverCompletion:
    # random supporting groups of k = |O_i| (METHOD.md, the reference) unless a test asks
    # otherwise: these tests pin the drawing mechanism and the per-pair reference loop
    cfg = {"support_select": "random", "k": None, **cfg}
    comp = create_completion(
        "moe-retriever", MODS, P, D, n_candidates=3, n_shared=2, top_k=2, **cfg
    )
    with torch.no_grad():
        comp.moe.w_gate.normal_(0, 1)  # no ties in top-k
    assert isinstance(comp, MoERetrieverCompletion)
    return comp


def _reference(comp, encode, pool, tokens, observed, b_idx, m_idx, draw) -> torch.Tensor:
    """One pair at a time, no padding, attention and MoE written out by hand."""
    blk = comp.attention
    att = blk.attn
    H = att.n_heads
    moe = comp.moe
    out = []
    for i in range(len(b_idx)):
        b, m = int(b_idx[i]), int(m_idx[i])
        rows = draw.index[i][draw.mask[i]].tolist()
        members, roles = [], []
        for r in rows:
            t = encode(MODS[m], pool.x[MODS[m]][r : r + 1])[0]
            members.append(t + comp.role_emb[0] + comp.position_emb + comp.modality_emb[m])
            roles.append(0)
        for o in range(len(MODS)):
            if observed[b, o]:
                members.append(
                    tokens[b, o] + comp.role_emb[1] + comp.position_emb + comp.modality_emb[o]
                )
                roles.append(1)
        G = len(members)
        x = torch.cat(members, 0)  # (G * P, D)
        q, k, v = att.qkv(blk.norm1(x)).chunk(3, dim=-1)
        heads = []
        for h in range(H):
            sl = slice(h * D // H, (h + 1) * D // H)
            a = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(D // H), dim=-1)
            heads.append(a @ v[:, sl])
        hseq = (x + att.out(torch.cat(heads, 1))).reshape(G, P, D)
        ns, no = roles.count(0), roles.count(1)
        if comp.pooling == "attention":
            s = (hseq * comp.pool_query).sum(-1) / math.sqrt(D)
            w = torch.softmax(s, dim=0)  # (G, P)
        else:
            ws = 0.5 if ns and no else (1.0 if ns else 0.0)
            w = torch.tensor([ws / ns if r == 0 else (1 - ws) / no for r in roles])
            w = w[:, None].expand(G, P)

        def route(tok: torch.Tensor, m: int = m) -> torch.Tensor:
            logits = comp.norm(tok) @ moe.w_gate
            logits = logits.masked_fill(~comp.eligible[m], float("-inf"))
            vals, idx = logits.topk(moe.top_k)
            gates = torch.softmax(vals, 0)
            y = torch.zeros(D)
            for gte, e in zip(gates, idx.tolist()):
                hid = F.gelu(comp.norm(tok) @ moe.w1[e] + moe.b1[e])
                y = y + gte * (hid @ moe.w2[e] + moe.b2[e])
            return y

        def candidate(tok: torch.Tensor) -> torch.Tensor:
            # residual experts: x + sum_e g_e f_e(x)
            return route(tok) + tok if comp.residual else route(tok)

        if comp.routing == "pooled":
            pooled = (w[..., None] * hseq).sum(0)
            res = torch.stack([candidate(pooled[p]) for p in range(P)])
        else:
            routed = torch.stack(
                [torch.stack([candidate(hseq[j, p]) for p in range(P)]) for j in range(G)]
            )
            res = (w[..., None] * routed).sum(0)
        out.append(res)
    return torch.stack(out)


@pytest.mark.parametrize(
    "cfg",
    [
        {"routing": "pooled", "pooling": "fixed", "residual": False},
        {"routing": "tokens", "pooling": "fixed", "residual": False},
        {"routing": "pooled", "pooling": "attention", "residual": False},
        {"routing": "tokens", "pooling": "attention", "k": 2, "residual": False},
        {"routing": "pooled", "pooling": "fixed", "residual": True},
        {"routing": "tokens", "pooling": "fixed", "residual": True},
        {"routing": "pooled", "pooling": "attention", "residual": True},
        {"routing": "tokens", "pooling": "attention", "k": 2, "residual": True},
    ],
)
def test_batched_equals_per_pair_reference(cfg: dict) -> None:
    encode, pool, obs, tokens = _setup()
    comp = _make(**cfg).eval()
    b_idx, m_idx = (~obs).nonzero(as_tuple=True)
    sampler = comp.sampler_for(pool)
    draw = sampler.draw(m_idx, combination_codes(obs)[b_idx], True)  # fixed draws
    with torch.no_grad():
        support = encode_support_unique(encode, pool, m_idx, draw, P, D)
        got, _, _ = comp.retrieve_pairs(tokens, obs, b_idx, m_idx, draw, support)
        ref = _reference(comp, encode, pool, tokens, obs, b_idx, m_idx, draw)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_complete_replaces_only_missing_slots_and_routes_eligible_experts() -> None:
    encode, pool, obs, tokens = _setup()
    comp = _make().train()
    ctx = CompletionContext(encode=encode, pool=pool, training=True, modalities=MODS)
    out = comp(tokens, obs, ctx)
    assert out.tokens.shape == tokens.shape
    assert torch.equal(out.tokens[obs], tokens[obs])
    assert bool((out.tokens[~obs].abs().sum((-1, -2)) > 0).all())
    r = out.info["routing"]
    idx, target = r["expert_index"], r["target"]
    C, M = comp.n_candidates, len(MODS)
    own = (idx >= target[:, None] * C) & (idx < (target[:, None] + 1) * C)
    shared = idx >= M * C
    assert bool((own | shared).all())
    assert int(r["expert_counts"].sum()) == idx.numel()
    summary = summarize_routing(r, MODS)
    assert set(summary) <= set(MODS)
    assert int(out.info["fallback"]["pairs"]) == int((~obs).sum())
    out.aux_loss.backward()
    assert float(comp.moe.w_gate.grad.abs().sum()) > 0


def test_loop_baseline_equals_batched_in_evaluation() -> None:
    encode, pool, obs, tokens = _setup(seed=1)
    comp = _make(routing="pooled", eval_draws=1).eval()  # the loop draws one group per pair
    keys = torch.arange(obs.shape[0]) * 101
    ctx = CompletionContext(
        encode=encode, pool=pool, sample_keys=keys, training=False, modalities=MODS
    )
    with torch.no_grad():
        a = comp.complete(tokens, obs, ctx).tokens
        b = comp.complete_loop(tokens, obs, ctx).tokens
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_evaluation_is_deterministic_and_eval_draws_average() -> None:
    encode, pool, obs, tokens = _setup(seed=2)
    keys = torch.arange(obs.shape[0])
    ctx = CompletionContext(
        encode=encode, pool=pool, sample_keys=keys, training=False, modalities=MODS
    )
    comp = _make().eval()
    with torch.no_grad():
        a = comp(tokens, obs, ctx).tokens
        comp(tokens, obs, CompletionContext(encode=encode, pool=pool, training=True))
        b = comp(tokens, obs, ctx).tokens
        comp.eval_draws = 3
        c = comp(tokens, obs, ctx).tokens
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(c[obs], tokens[obs])


def test_no_missing_pairs_is_a_no_op() -> None:
    encode, pool, _, tokens = _setup()
    obs = torch.ones(tokens.shape[:2], dtype=torch.bool)
    out = _make()(tokens, obs, CompletionContext(encode=encode, pool=pool, training=True))
    assert torch.equal(out.tokens, tokens) and float(out.aux_loss) == 0.0


def test_missing_pool_and_bad_options_raise() -> None:
    _, _, obs, tokens = _setup()
    with pytest.raises(ValueError, match="set_training_pool"):
        _make()(tokens, obs, CompletionContext(training=True))
    with pytest.raises(ValueError, match="routing"):
        create_completion("moe-retriever", MODS, P, D, routing="dense")
    with pytest.raises(ValueError, match="top_k"):
        create_completion("moe-retriever", MODS, P, D, n_candidates=1, n_shared=1, top_k=3)
    with pytest.raises(ValueError, match="has no option 'n_experts'; valid options: n_candidates"):
        create_completion("moe-retriever", MODS, P, D, n_experts=3)
    with pytest.raises(ValueError, match="'zero' has no option 'seed'; valid options: \\(none\\)"):
        create_completion("zero", MODS, P, D, seed=4)
    with pytest.raises(ValueError, match=r"'knn.k': 'many' is not an integer"):
        create_completion("knn", MODS, P, D, k="many")


def test_zero_and_official_average() -> None:
    encode, pool, obs, tokens = _setup(seed=3)
    ctx = CompletionContext(
        encode=encode,
        pool=pool,
        sample_keys=torch.arange(len(obs)),
        training=False,
        modalities=MODS,
    )
    zero = create_completion("zero", MODS, P, D)(tokens + 1.0, obs, ctx).tokens
    assert torch.equal(zero[~obs], torch.zeros_like(zero[~obs]))
    assert torch.equal(zero[obs], tokens[obs] + 1.0)
    avg = create_completion("official-average", MODS, P, D, eval_draws=1)  # one draw to compare
    with torch.no_grad():
        out = avg(tokens, obs, ctx).tokens
    b_idx, m_idx = (~obs).nonzero(as_tuple=True)
    draw = avg.sampler_for(pool).draw(
        m_idx, combination_codes(obs)[b_idx], False, torch.arange(len(obs))[b_idx]
    )
    for i in range(len(b_idx)):
        b, m = int(b_idx[i]), int(m_idx[i])
        rows = draw.index[i][draw.mask[i]]
        with torch.no_grad():
            sup = encode(MODS[m], pool.x[MODS[m]][rows]).mean(0)
        own = tokens[b][obs[b]].mean(0)
        torch.testing.assert_close(out[b, m], 0.5 * sup + 0.5 * own)


def test_excluded_row_never_supports_its_own_pair() -> None:
    """Self-supervision hides entries a training sample observes: the sample is then in its
    own pool and must not be drawn for it. A pool holding only that sample gives no member."""
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(60, 3, generator=g) < 0.7
    obs[obs.sum(1) == 0, 0] = True
    obs[obs.all(1), 2] = False
    obs[59] = torch.tensor([True, True, True])  # the only sample observing all three
    from moe_retriever.completion.support import SupportingGroupSampler

    sampler = SupportingGroupSampler(obs, k=3, seed=1)
    rows = torch.arange(60)
    # every sample observing modality 0, as a pair "target 0, observed = its other modalities"
    sel = rows[obs[:, 0]]
    codes = combination_codes(obs[sel]) & ~1
    for training in (True, False):
        draw = sampler.draw(torch.zeros_like(sel), codes, training, sample_keys=sel, exclude=sel)
        members = torch.where(draw.mask, draw.index, torch.full_like(draw.index, -1))
        assert not bool((members == sel[:, None]).any())
        for i, s in enumerate(sel.tolist()):  # members still come from the pair's pool
            pool = set(sampler.pool_members(0, int(codes[i])).tolist()) - {s}
            assert set(members[i][draw.mask[i]].tolist()) <= pool
            if not pool:
                assert not bool(draw.mask[i].any())
    last = int((sel == 59).nonzero())
    assert not bool(draw.mask[last].any())  # pool {0,1,2} = {59}: dropped, counted
    assert int(draw.counts["self_dropped"]) >= 3


def test_residual_experts_start_at_the_context_aware_token() -> None:
    """residual=True: output = pooled token + gate-weighted expert outputs, so with the
    experts' last layer at zero the retrieved tokens ARE the pooled context-aware tokens."""
    encode, pool, obs, tokens = _setup()
    outs = {}
    for residual in (False, True):
        torch.manual_seed(3)
        comp = _make(residual=residual).eval()
        with torch.no_grad():
            comp.moe.w2.zero_()
            comp.moe.b2.zero_()
        b_idx, m_idx = (~obs).nonzero(as_tuple=True)
        draw = comp.sampler_for(pool).draw(m_idx, combination_codes(obs)[b_idx], True)
        with torch.no_grad():
            support = encode_support_unique(encode, pool, m_idx, draw, P, D)
            outs[residual], _, _ = comp.retrieve_pairs(tokens, obs, b_idx, m_idx, draw, support)
    assert float(outs[False].abs().max()) == 0.0
    assert float(outs[True].abs().sum((-1, -2)).min()) > 0.0
