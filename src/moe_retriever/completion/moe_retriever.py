"""``moe-retriever``: retrieve the tokens of a missing modality with a sparse MoE router.

METHOD.md steps 1-6, for ALL (sample, missing modality) pairs of a batch at once:

1. supporting group: k training samples from the pool of (target m, observed set O_i)
   (:mod:`moe_retriever.completion.support`); their modality-m inputs are encoded once per batch
   (each distinct training row once) with the model's own encoder of m. ``support_select``:
   ``"similar"`` (default) takes the k = 3 pool members whose standardized raw inputs are
   closest to the sample's by the sum of per-modality cosines over the sample's observed
   modalities (deterministic, one group per pair, searched in a faiss index built once per
   training pool, ``similar_index`` auto | exact | ivf; :mod:`.support.index`);
   ``"similar-concat"`` is the selection before issue 24 (one cosine over the concatenated
   inputs, exact, linear in N_train per batch); ``"random"`` draws them uniformly from the
   pool as METHOD.md step 1 and the reference code do (k = |O_i| there: ``k=None``). Why the
   default differs from the reference: docs/METHOD_NOTES.md ("Similarity-chosen supporting
   groups") and docs/SYNTHETIC_RETRIEVAL.md;
2. inter-modal context: the sample's own observed modalities' encoder tokens;
3. one sequence per pair, [k supporting members' P tokens; M own-modality slots' P tokens], plus
   learned role (support / own), modality and patch-position embeddings, goes through a pre-norm
   multi-head self-attention block with a real residual, ACROSS all members' tokens (defects 3
   and 4), with a key-padding mask for variable k and |O_i| (unobserved own slots are masked);
4. routing with the target modality's C candidate experts + S shared ones eligible (all other
   experts masked before top-k, noisy top-k gating):
   ``routing="pooled"`` (default): pool the attended members into P tokens, then route those P
   tokens, so the router mixes candidates for the one embedding being retrieved;
   ``routing="tokens"``: route every member token (the research code's structure), then pool;
5. pooling ``"fixed"``: 0.5 split evenly over the supporting members, 0.5 over the own observed
   modalities; ``"attention"``: a learned query scores every member token, softmax over the
   members (per patch position);
6. the balance loss over the eligible experts (per target modality) is returned as
   ``aux_loss`` (unweighted; the model applies ``balance_weight``).

The retrieved P x D tokens replace the missing slots; observed slots are untouched. Expert layout:
experts ``[j*C, (j+1)*C)`` are modality j's candidates, the last S are shared. Each expert is a
D -> ``expert_hidden`` (default D) -> D MLP; a wider hidden layer costs proportionally more.
See :meth:`MoERetrieverCompletion.retrieve_pairs` for how the batch is organised.

Residual experts (``residual=True``, the default): every candidate is ``x + f_e(x)`` for the
routed context-aware token ``x`` (before the router's LayerNorm), so the gate-weighted mix is
``x + sum_e g_e f_e(x)`` (the top-k gates sum to 1). At initialisation the retrieved tokens thus
start at the context-aware pooled token, which lies in the encoders' token space, instead of at
the output of freshly initialised MLPs; the experts learn corrections. With ``routing="tokens"``
each member token gets its residual before the pooling (the pooling weights sum to 1 per
position, so the result is the pooled token plus the pooled expert outputs). This is a
parametrisation of METHOD.md step 4 ("each chosen expert turns the context-aware token into a
candidate embedding"), not a change of the method; ``residual=False`` gives plain MLP experts.
See docs/METHOD_NOTES.md for the measurements.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_retriever.completion.base import (
    Completion,
    CompletionContext,
    CompletionOutput,
    TrainingPool,
    register_completion,
)
from moe_retriever.completion.routing import (
    merge_routing_info,
    routing_markdown,
    routing_shares,
)
from moe_retriever.completion.support import (
    SupportDraw,
    SupportSampling,
    combination_codes,
    encode_support_unique,
    member_weights,
)
from moe_retriever.nn.moe import SparseMoE
from moe_retriever.nn.transformer import TransformerBlock


@register_completion
class MoERetrieverCompletion(SupportSampling, Completion):
    """The retriever: supporting group + own modalities -> attention -> sparse MoE router."""

    name = "moe-retriever"
    needs_pool = True
    learns = True

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        n_candidates: int = 8,
        n_shared: int = 4,
        top_k: int = 4,
        n_heads: int = 4,
        k: int | None = 3,
        routing: str = "pooled",
        pooling: str = "fixed",
        support_weight: float = 0.5,
        expert_hidden: int | None = None,
        noisy_gating: bool = True,
        dropout: float = 0.0,
        eval_draws: int = 4,
        seed: int = 0,
        dispatch: str = "tiles",
        tile: int = 128,
        residual: bool = True,
        support_select: str = "similar",
        similar_index: str = "auto",
    ) -> None:
        Completion.__init__(self, modalities, n_tokens, dim)
        self._init_sampling(k, eval_draws, seed, support_select, similar_index)
        if routing not in ("pooled", "tokens"):
            raise ValueError(f"routing must be 'pooled' or 'tokens', got {routing!r}")
        if pooling not in ("fixed", "attention"):
            raise ValueError(f"pooling must be 'fixed' or 'attention', got {pooling!r}")
        if n_candidates < 0 or n_shared < 0 or n_candidates + n_shared < 1:
            raise ValueError(
                f"need at least one eligible expert per modality, got n_candidates="
                f"{n_candidates}, n_shared={n_shared}"
            )
        if not 1 <= top_k <= n_candidates + n_shared:
            raise ValueError(
                f"top_k={top_k} must be in 1..n_candidates + n_shared = "
                f"{n_candidates + n_shared} (the experts eligible for one modality)"
            )
        M = len(modalities)
        self.n_candidates, self.n_shared, self.top_k = n_candidates, n_shared, top_k
        self.routing, self.pooling = routing, pooling
        self.support_weight = support_weight
        self.residual = bool(residual)
        self.n_experts = M * n_candidates + n_shared
        self.role_emb = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.modality_emb = nn.Parameter(torch.randn(M, dim) * 0.02)
        self.position_emb = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.attention = TransformerBlock(dim, n_heads, dropout=dropout, ffn=False)
        self.norm = nn.LayerNorm(dim)
        self.moe = SparseMoE(
            dim,
            self.n_experts,
            top_k,
            hidden=expert_hidden or dim,
            noisy_gating=noisy_gating,
            dispatch=dispatch,
            tile=tile,
        )
        self.pool_query = nn.Parameter(torch.randn(dim) * 0.02) if pooling == "attention" else None
        elig = torch.zeros(M, self.n_experts, dtype=torch.bool)
        for j in range(M):
            elig[j, j * n_candidates : (j + 1) * n_candidates] = True
        elig[:, M * n_candidates :] = True
        self.eligible: Tensor
        self.register_buffer("eligible", elig, persistent=False)

    # ------------------------------------------------------------------ the batched core
    def retrieve_pairs(
        self,
        tokens: Tensor,
        observed: Tensor,
        b_idx: Tensor,
        m_idx: Tensor,
        draw: SupportDraw,
        support: tuple[Tensor, Tensor, Tensor],
        extra: tuple[Tensor, Tensor, float] | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Retrieved tokens (n, P, D) for the pairs (b_idx, m_idx); returns (retrieved,
        balance loss, routing stats).

        ``extra`` = (tokens (n, P, D), role embedding (D,), weight): one more member per pair
        (``generate-retrieve``: the generated estimate of the missing modality), embedded with
        its own role, the pair's target modality and the patch positions, attended with the
        other members and given ``weight`` of the fixed pooling (the supporting and own members
        share the rest in their usual proportions). ``None``: the plain method, unchanged.

        ``support`` = :func:`encode_support_unique` output: distinct supporting encodings, their
        modality and the slot -> encoding map. How the work is batched:

        * member bank: every distinct supporting encoding and every observed (sample, modality)
          slot of the batch gets its embeddings once; pairs gather their members' rows (real
          members only, no padding) and LayerNorm + QKV run on those rows. (Projecting the bank
          before gathering saves nothing here, each row serves ~1-2 pairs, and its backward
          scatter into a bank-sized zero buffer cost more: measured);
        * buckets: pairs are grouped by their number of real members g (supporting + own
          observed; at most 2M distinct values), so each group's attention runs on exactly
          g * P tokens with no padding and no mask (one fused attention call per bucket);
        * fixed pooling with pooled routing (the default): the residual stream is linear in the
          attention output, so the members are pooled before the output projection
          (sum_j w_j (x_j + W a_j + b) = sum_j w_j x_j + W sum_j w_j a_j + b, weights sum to 1).
        """
        enc, enc_target, slot_row = support
        n = draw.mask.shape[0]
        B, M, P, D = tokens.shape
        blk = self.attention
        att = blk.attn
        H = att.n_heads
        pos = self.position_emb
        # member bank: [distinct supporting encodings; observed (sample, modality) slots]
        obs_slot = observed.reshape(-1).nonzero().squeeze(1)  # b * M + o of observed slots
        own_mod = obs_slot % M
        bank_x = torch.cat(
            [
                enc + (self.role_emb[0] + pos)[None] + self.modality_emb[enc_target][:, None],
                tokens.reshape(B * M, P, D)[obs_slot]
                + (self.role_emb[1] + pos)[None]
                + self.modality_emb[own_mod][:, None],
            ],
            dim=0,
        )
        n_sup = enc.shape[0]
        slot_to_bank = torch.zeros(B * M, dtype=torch.long, device=tokens.device)
        slot_to_bank[obs_slot] = torch.arange(obs_slot.shape[0], device=tokens.device) + n_sup
        own_src = slot_to_bank[b_idx[:, None] * M + torch.arange(M, device=tokens.device)[None]]
        src = torch.cat([slot_row, own_src], dim=1)  # (n, k_max + M); invalid slots unused
        valid = torch.cat([draw.mask, observed[b_idx]], dim=1)
        w_fixed = member_weights(draw.mask, observed[b_idx], self.support_weight)
        if extra is not None:  # one more member per pair, after the bank's rows
            gen, role, weight = extra
            gen_rows = gen.to(bank_x.dtype) + (role + pos)[None] + self.modality_emb[m_idx][:, None]
            gen_src = torch.arange(n, device=tokens.device) + bank_x.shape[0]
            bank_x = torch.cat([bank_x, gen_rows], dim=0)
            src = torch.cat([src, gen_src[:, None]], dim=1)
            valid = torch.cat([valid, valid.new_ones(n, 1)], dim=1)
            w_fixed = torch.cat(
                [w_fixed * (1.0 - weight), w_fixed.new_full((n, 1), float(weight))], dim=1
            )
        # compact real members to the front of each row, count them
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        src = src.gather(1, order)
        w_fixed = w_fixed.gather(1, order)
        count = valid.sum(1)
        # pairs sorted by member count: each bucket is a contiguous block, and ONE gather
        # serves all buckets (one backward scatter into the bank instead of one per bucket)
        pair_order = torch.argsort(count, stable=True)
        count_sorted = count[pair_order]
        real = torch.arange(src.shape[1], device=src.device)[None] < count_sorted[:, None]
        rows = src[pair_order][real]  # real members, pair-major
        x_all = bank_x.index_select(0, rows)  # (R, P, D)
        w_all = w_fixed[pair_order][real]  # (R,)
        g_values, g_counts = torch.unique_consecutive(count_sorted, return_counts=True)

        fast = self.routing == "pooled" and self.pooling == "fixed"
        drop_p = att.dropout if self.training else 0.0
        pair_parts: list[Tensor] = []
        out_parts: list[Tensor] = []  # fast: pooled attention; else pooled h (pooled routing)
        xpool_parts: list[Tensor] = []  # fast: pooled residual stream
        tok_parts: list[Tensor] = []  # tokens routing: member tokens (T, D)
        tokw_parts: list[Tensor] = []  # tokens routing: their pooling weights (T,)
        buckets = list(zip(g_values.tolist(), g_counts.tolist()))
        # split (not slice) the member rows into buckets: split's backward is one concat, a
        # slice's backward would allocate a full-size zero gradient per bucket
        sizes = [g * ng for g, ng in buckets]
        pair_split = pair_order.split([ng for _, ng in buckets])
        for (g, ng), sel, x_g, w_g in zip(
            buckets, pair_split, x_all.split(sizes), w_all.split(sizes)
        ):
            if g == 0:
                continue
            # LayerNorm + QKV per bucket, after the split: the split's backward then
            # concatenates the (R, P, D) input gradients, not the 3x wider QKV ones (measured)
            qkv_g = att.qkv(blk.norm1(x_g))
            q, k, v = qkv_g.reshape(ng, g * P, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=drop_p)
            a = a.transpose(1, 2).reshape(ng, g, P, D)
            x_g = x_g.reshape(ng, g, P, D)
            w_g = w_g.reshape(ng, g)
            pair_parts.append(sel)
            if fast:  # weighted sums over the g members as batched matmuls
                w = w_g[:, None, :]  # (ng, 1, g)
                out_parts.append(torch.bmm(w, a.reshape(ng, g, P * D)).reshape(ng, P, D))
                xpool_parts.append(torch.bmm(w, x_g.reshape(ng, g, P * D)).reshape(ng, P, D))
                continue
            h = x_g + blk.drop(att.out(a))
            if self.pooling == "attention" and self.pool_query is not None:
                w = torch.softmax((h * self.pool_query).sum(-1) / math.sqrt(D), dim=1)
            else:
                w = w_g[:, :, None].expand(ng, g, P)
            if self.routing == "pooled":
                out_parts.append((w[..., None] * h).sum(1))
            else:
                tok_parts.append(h.reshape(-1, D))
                tokw_parts.append(w.reshape(-1))
        pair = torch.cat(pair_parts) if pair_parts else b_idx.new_zeros(0)

        if self.routing == "pooled":
            if fast:
                pooled = torch.cat(xpool_parts) + blk.drop(att.out(torch.cat(out_parts)))
            else:
                pooled = torch.cat(out_parts)  # (n_real, P, D), rows ordered by `pair`
            n_real = pooled.shape[0]
            token_pair = pair.repeat_interleave(P)
            res = self.moe(
                self.norm(pooled).reshape(n_real * P, D),
                self.eligible[m_idx[token_pair]],
                m_idx[token_pair],
                M,
            )
            routed = res.output.reshape(n_real, P, D)
            if self.residual:  # x + sum_e g_e f_e(x): gates sum to 1
                routed = routed + pooled
        else:
            counts_g = [t.shape[0] // P for t in tok_parts]  # member-slots per bucket
            flat = torch.cat(tok_parts)  # (T, D): bucket, pair, member, position
            weights = torch.cat(tokw_parts)
            # pair and position of every routed token, in the same order
            token_pair = torch.cat(
                [
                    sel.repeat_interleave(c // sel.shape[0] * P)
                    for sel, c in zip(pair_parts, counts_g)
                ]
            )
            token_pos = torch.cat(
                [torch.arange(P, device=tokens.device).repeat(c) for c in counts_g]
            )
            res = self.moe(self.norm(flat), self.eligible[m_idx[token_pair]], m_idx[token_pair], M)
            member_out = res.output + flat if self.residual else res.output
            routed_flat = tokens.new_zeros(n * P, D).index_add(
                0, token_pair * P + token_pos, (member_out * weights[:, None]).to(tokens.dtype)
            )
            routed = routed_flat.reshape(n, P, D)[pair]
        # memberless pairs: zero. Under autocast ``routed`` comes in the autocast dtype; the
        # token tensor keeps the model's dtype (MultimodalClassifier.encode), so cast to it
        out = tokens.new_zeros(n, P, D).index_put((pair,), routed.to(tokens.dtype))
        stats = {
            "token_pair": token_pair,
            "expert_index": res.expert_index,
            "expert_weight": res.expert_weight,
        }
        return out, res.balance_loss, stats

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        b_idx, m_idx, codes, draw, R = self.draw_pairs(observed, context)
        info: dict[str, Any] = {"fallback": {k: v.detach() for k, v in draw.counts.items()}}
        if b_idx.numel() == 0:
            return CompletionOutput(tokens, self.no_loss(tokens), info)
        pool, encode = self._need(context)
        support = encode_support_unique(encode, pool, m_idx, draw, self.n_tokens, self.dim)
        out, loss, stats = self.retrieve_pairs(tokens, observed, b_idx, m_idx, draw, support)
        n = out.shape[0] // R
        out = out.reshape(R, n, *out.shape[1:]).mean(0)
        completed = tokens.index_put((b_idx[:n], m_idx[:n]), out)
        info["routing"] = self._routing_info(m_idx, codes, stats)
        return CompletionOutput(completed, loss, info)

    # ------------------------------------------------------------------ reporting hooks
    def summarize(self, infos: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Router usage over an evaluation set: shares of each expert per target modality and
        observed combination, normalised entropies, fallback counts
        (:func:`moe_retriever.completion.routing.routing_shares`)."""
        stats = merge_routing_info(infos, self.modalities, self.n_candidates, self.n_shared)
        return routing_shares(stats, self.n_candidates, self.n_shared)

    def report(self, summary: dict[str, Any], out_dir: Path) -> list[Path]:
        """``routing.md``: the per-target expert shares and entropies as a table."""
        text = routing_markdown({"this run": summary})
        if not text:
            return []
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "routing.md"
        path.write_text(text)
        return [path]

    def complete_loop(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        """The research code's structure: one retriever call per missing (sample, modality)
        pair, each drawing and encoding its own supporting group. Same modules, same result
        distribution; kept only as the speed baseline (benchmarks/retrieval_speed.py)."""
        pool, encode = self._need(context)
        sampler = self.sampler_for(pool)
        codes_all = combination_codes(observed)
        completed = tokens
        losses = []
        M = observed.shape[1]
        for b in range(observed.shape[0]):
            for m in range(M):
                if bool(observed[b, m]):
                    continue
                bi = torch.tensor([b], device=tokens.device)
                mi = torch.tensor([m], device=tokens.device)
                keys = None
                if not context.training:
                    keys = bi if context.sample_keys is None else context.sample_keys[bi]
                draw = sampler.draw(mi, codes_all[bi], context.training, keys)
                support = encode_support_unique(encode, pool, mi, draw, self.n_tokens, self.dim)
                out, loss, _ = self.retrieve_pairs(tokens, observed, bi, mi, draw, support)
                completed = completed.index_put((bi, mi), out)
                losses.append(loss)
        loss = torch.stack(losses).mean() if losses else self.no_loss(tokens)
        return CompletionOutput(completed, loss, {})

    # ------------------------------------------------------------------ helpers
    def _need(self, context: CompletionContext) -> tuple[TrainingPool, Any]:
        if context.pool is None or context.encode is None:
            raise ValueError(
                "moe-retriever needs the training pool and the model's encoders: call "
                "model.set_training_pool(x, observed) before retrieval"
            )
        return context.pool, context.encode

    def _routing_info(self, m_idx: Tensor, codes: Tensor, stats: dict[str, Tensor]) -> dict:
        """Detached routing statistics: per routed token its pair's target modality and
        observed combination, chosen experts and gate weights; plus counts (M, E) per target."""
        tp = stats["token_pair"]
        target = m_idx[tp]
        idx, wt = stats["expert_index"], stats["expert_weight"]
        M = len(self.modalities)
        counts = torch.zeros(M, self.n_experts + 1, device=idx.device)
        t_rep = target[:, None].expand_as(idx)
        e = torch.where(idx >= 0, idx, torch.full_like(idx, self.n_experts))
        counts = counts.index_put((t_rep, e), torch.ones_like(wt), accumulate=True)
        return {
            "target": target.detach(),
            "combination": codes[tp].detach(),
            "expert_index": idx,
            "expert_weight": wt,
            "expert_counts": counts[:, : self.n_experts].detach(),
        }
