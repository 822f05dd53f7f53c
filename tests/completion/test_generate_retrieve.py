"""generate-retrieve: the generated member joins the retriever's attention and pooling, both
parts learn, the contract of complete() holds, and moe-retriever without it is unchanged."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moe_retriever.architecture import ModelConfig
from moe_retriever.completion import CompletionContext, TrainingPool, create_completion
from moe_retriever.completion.generate_retrieve import GenerateRetrieveCompletion
from moe_retriever.completion.moe_retriever import MoERetrieverCompletion
from moe_retriever.completion.support import combination_codes, encode_support_unique
from moe_retriever.encoders import PatchEncoder
from moe_retriever.model import MultimodalClassifier

MODS = ["a", "b", "c"]
DIMS = {"a": 9, "b": 6, "c": 11}
P, D = 3, 16
SMALL = {"n_candidates": 2, "n_shared": 1, "top_k": 2, "d_y": 8, "d_m": 8, "decoder_hidden": 16}


def _setup(seed: int = 0, n_train: int = 60, batch: int = 10):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoders = {m: PatchEncoder(DIMS[m], P, D) for m in MODS}

    def encode(m: str, x: torch.Tensor) -> torch.Tensor:
        return encoders[m](x)

    def observed(n: int) -> torch.Tensor:
        obs = torch.rand(n, len(MODS), generator=g) < 0.6
        obs[obs.sum(1) == 0, 1] = True
        return obs

    obs_tr = observed(n_train)
    x_tr = {
        m: torch.randn(n_train, DIMS[m], generator=g) * obs_tr[:, j, None]
        for j, m in enumerate(MODS)
    }
    pool = TrainingPool(MODS, x_tr, obs_tr)
    obs = observed(batch)
    obs[0] = torch.tensor([True, False, False])
    obs[1] = torch.tensor([False, True, True])
    obs[2] = torch.tensor([True, True, True])
    obs[3] = torch.tensor([True, False, True])
    x = {m: torch.randn(batch, DIMS[m], generator=g) * obs[:, j, None] for j, m in enumerate(MODS)}
    tokens = torch.stack([encode(m, x[m]) * obs[:, j, None, None] for j, m in enumerate(MODS)], 1)
    return encode, pool, obs, tokens, x, encoders


def _make(**cfg) -> GenerateRetrieveCompletion:
    comp = create_completion("generate-retrieve", MODS, P, D, **{**SMALL, **cfg})
    with torch.no_grad():
        comp.moe.w_gate.normal_(0, 1)  # no ties in top-k
    assert isinstance(comp, GenerateRetrieveCompletion)
    return comp


def _ctx(encode, pool, training, x=None, keys=None) -> CompletionContext:
    return CompletionContext(
        encode=encode, pool=pool, training=training, modalities=MODS, x=x, sample_keys=keys
    )


def _reference(comp, encode, pool, tokens, observed, b_idx, m_idx, draw, gen, gw):
    """One pair at a time: [supporting; own observed; generated] members, hand-written
    attention, fixed or attention pooling, the router by hand (residual experts)."""
    blk, moe = comp.attention, comp.moe
    att = blk.attn
    H = att.n_heads
    out = []
    for i in range(len(b_idx)):
        b, m = int(b_idx[i]), int(m_idx[i])
        members, roles = [], []
        for r in draw.index[i][draw.mask[i]].tolist():
            t = encode(MODS[m], pool.x[MODS[m]][r : r + 1])[0]
            members.append(t + comp.role_emb[0] + comp.position_emb + comp.modality_emb[m])
            roles.append(0)
        for o in range(len(MODS)):
            if observed[b, o]:
                e = comp.role_emb[1] + comp.position_emb + comp.modality_emb[o]
                members.append(tokens[b, o] + e)
                roles.append(1)
        e = comp.generated_role + comp.position_emb + comp.modality_emb[m]
        members.append(gen[i] + e)
        roles.append(2)
        G = len(members)
        x = torch.cat(members, 0)
        q, k, v = att.qkv(blk.norm1(x)).chunk(3, dim=-1)
        heads = []
        for h in range(H):
            sl = slice(h * D // H, (h + 1) * D // H)
            a = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(D // H), dim=-1)
            heads.append(a @ v[:, sl])
        hseq = (x + att.out(torch.cat(heads, 1))).reshape(G, P, D)
        if comp.pooling == "attention":
            w = torch.softmax((hseq * comp.pool_query).sum(-1) / math.sqrt(D), dim=0)
        else:
            ns, no = roles.count(0), roles.count(1)
            ws = 0.5 if ns and no else (1.0 if ns else 0.0)
            per = {0: ws / max(ns, 1), 1: (1 - ws) / max(no, 1)}
            w = torch.tensor([gw if r == 2 else (1 - gw) * per[r] for r in roles])
            w = w[:, None].expand(G, P)

        def candidate(tok: torch.Tensor, m: int = m) -> torch.Tensor:
            logits = (comp.norm(tok) @ moe.w_gate).masked_fill(~comp.eligible[m], -math.inf)
            vals, idx = logits.topk(moe.top_k)
            y = torch.zeros(D)
            for gte, e in zip(torch.softmax(vals, 0), idx.tolist()):
                hid = F.gelu(comp.norm(tok) @ moe.w1[e] + moe.b1[e])
                y = y + gte * (hid @ moe.w2[e] + moe.b2[e])
            return y + tok

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
        {"routing": "pooled", "pooling": "fixed"},
        {"routing": "tokens", "pooling": "fixed", "generated_weight": 0.5},
        {"routing": "pooled", "pooling": "attention"},
    ],
)
def test_generated_member_is_attended_and_pooled_like_the_reference(cfg):
    encode, pool, obs, tokens, x, _ = _setup()
    comp = _make(support_select="random", k=None, **cfg).eval()
    b_idx, m_idx = (~obs).nonzero(as_tuple=True)
    draw = comp.sampler_for(pool).draw(m_idx, combination_codes(obs)[b_idx], True)
    with torch.no_grad():
        gen = comp.generator.generate(tokens, obs, b_idx, m_idx, _ctx(encode, pool, False, x))
        support = encode_support_unique(encode, pool, m_idx, draw, P, D)
        extra = (gen, comp.generated_role, comp.generated_weight)
        got, _, _ = comp.retrieve_pairs(tokens, obs, b_idx, m_idx, draw, support, extra=extra)
        ref = _reference(
            comp, encode, pool, tokens, obs, b_idx, m_idx, draw, gen, comp.generated_weight
        )
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_contract_observed_unchanged_losses_split_and_info():
    encode, pool, obs, tokens, x, _ = _setup()
    comp = _make(n_classes=3).train()
    y = torch.arange(obs.shape[0]) % 3
    ctx = CompletionContext(encode=encode, pool=pool, training=True, modalities=MODS, x=x, y=y)
    out = comp(tokens, obs, ctx)
    assert out.tokens.shape == tokens.shape
    assert torch.equal(out.tokens[obs], tokens[obs])
    assert bool((out.tokens[~obs].abs().sum((-1, -2)) > 0).all())
    # balance loss in aux_loss (weighted by the model), MFM's weighted terms in loss
    assert out.aux_loss.dim() == 0 and float(out.aux_loss.detach()) > 0
    assert out.loss is not None and torch.isfinite(out.loss)
    assert set(out.info["mfm"]["losses"]) == {"recon", "surrogate", "mmd", "label"}
    assert int(out.info["fallback"]["pairs"]) == int((~obs).sum())
    assert out.info["routing"]["target"].numel() > 0


def test_gradients_reach_generator_and_retriever():
    encode, pool, obs, tokens, x, _ = _setup()
    comp = _make(n_classes=3).train()
    y = torch.arange(obs.shape[0]) % 3
    ctx = CompletionContext(encode=encode, pool=pool, training=True, modalities=MODS, x=x, y=y)
    torch.manual_seed(1)
    out = comp(tokens, obs, ctx)
    (out.tokens[~obs].pow(2).mean() + out.aux_loss + out.loss).backward()
    missing = [n for n, p in comp.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing
    # the downstream loss alone reaches the generator through the retriever's members
    comp.zero_grad()
    torch.manual_seed(1)
    comp(tokens.detach(), obs, ctx).tokens[~obs].pow(2).mean().backward()
    dec = comp.generator.decoders[0][-1].weight.grad
    assert dec is not None and float(dec.abs().sum()) > 0
    assert comp.generated_role.grad is not None and float(comp.generated_role.grad.abs().sum()) > 0


def test_router_sees_the_generated_member_even_with_zero_pooling_weight():
    encode, pool, obs, tokens, x, _ = _setup()
    comp = _make(generated_weight=0.0).eval()
    ctx = _ctx(encode, pool, False, x, torch.arange(obs.shape[0]))
    with torch.no_grad():
        a = comp(tokens, obs, ctx).tokens
        # move modality b's generated token, not by a constant: a shift of every element is
        # removed by the attention's layer norm, and the test then compared float noise
        bias = comp.generator.decoders[1][-1].bias
        bias.add_(torch.linspace(-1.0, 1.0, bias.numel()))
        b = comp(tokens, obs, ctx).tokens
    missing_b = ~obs[:, 1]
    assert not torch.allclose(a[missing_b, 1], b[missing_b, 1])  # through the attention
    assert torch.equal(a[obs], b[obs])


def test_eval_is_deterministic():
    encode, pool, obs, tokens, x, _ = _setup(seed=2)
    keys = torch.arange(obs.shape[0]) * 7
    for select in ("similar", "random"):
        comp = _make(support_select=select).eval()
        with torch.no_grad():
            a = comp(tokens, obs, _ctx(encode, pool, False, x, keys))
            b = comp(tokens, obs, _ctx(encode, pool, False, x, keys))
        assert torch.equal(a.tokens, b.tokens), select
        assert a.loss is None


def test_plain_path_is_moe_retriever_and_the_generated_member_changes_it():
    """The retriever inside generate-retrieve IS moe-retriever: with the same weights, its
    plain path (no generated member) gives moe-retriever's output exactly."""
    encode, pool, obs, tokens, x, _ = _setup(seed=3)
    gr = _make().eval()
    retr_opts = {k: v for k, v in SMALL.items() if k in ("n_candidates", "n_shared", "top_k")}
    plain = create_completion("moe-retriever", MODS, P, D, **retr_opts).eval()
    assert isinstance(plain, MoERetrieverCompletion)
    own = {k: v for k, v in gr.state_dict().items() if k in plain.state_dict()}
    assert set(own) == set(plain.state_dict())
    plain.load_state_dict(own)
    ctx = _ctx(encode, pool, False, x, torch.arange(obs.shape[0]))
    with torch.no_grad():
        ref = plain(tokens, obs, ctx).tokens
        same = MoERetrieverCompletion.complete(gr, tokens, obs, ctx).tokens
        got = gr(tokens, obs, ctx).tokens
    assert torch.equal(same, ref)
    assert not torch.allclose(got[~obs], ref[~obs])


def test_bad_generated_weight_is_refused():
    with pytest.raises(ValueError, match="generated_weight"):
        _make(generated_weight=1.5)


@pytest.mark.parametrize("target", ["tokens", "features"])
def test_in_the_model_both_targets_train_and_predict(target):
    _, pool, obs, _, x, _ = _setup(seed=4)
    model = MultimodalClassifier(
        DIMS,
        3,
        ModelConfig(n_tokens=P, dim=D, n_heads=2, head_hidden=8),
        completion="generate-retrieve",
        completion_cfg={**SMALL, "target": target},
    )
    assert model.completion.generator.n_classes == 3
    model.set_training_pool(pool.x, pool.observed)
    model.train()
    y = torch.arange(obs.shape[0]) % 3
    out = model(x, obs, y=y)
    (F.cross_entropy(out.logits, y) + out.aux_loss).backward()
    assert model.completion.generator.label_head.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, obs).logits, model(x, obs).logits)


def test_benchmark_cli_runs_mfm_generate_retrieve_and_reports_their_fidelity(tmp_path):
    import json

    from moe_retriever.cli import main

    out = tmp_path / "bench"
    methods = ["mfm", "generate-retrieve", "moe-retriever"]
    opts = "train.epochs=2 train.warmup_epochs=1 model.n_tokens=2 model.dim=8"
    opts += " model.head_hidden=8 model.n_heads=2 runtime.threads=1"
    argv = ["benchmark", "synthetic", "--methods", *methods, "--missing-rates", "0.5"]
    rc = main([*argv, "--seeds", "0", "--out", str(out), "--quiet", "--set", *opts.split()])
    assert rc == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["methods"] == methods and not payload["failures"]
    fid = {r["method"]: r["value"] for r in payload["rows"] if r["metric"] == "fidelity_cosine"}
    assert set(fid) == set(methods)  # the harness measures every completion's fills
    assert all(math.isfinite(v) for v in fid.values())
