"""Sparse mixture of experts with noisy top-k gating and an eligibility mask.

The layer maps tokens (T, D) to (T, D_out). Each token is sent to ``top_k`` of ``E`` experts
(two-layer MLPs stored as batched weight tensors (E, D, H) and (E, H, D_out)); the gate weights
(a softmax over the chosen logits) mix the experts' outputs.

* Eligibility: ``eligible`` (T, E) bool marks the experts a token may use. Ineligible logits are
  set to -inf BEFORE top-k, so they are never chosen (and get no gate weight and no gradient).
  Should a token have fewer eligible experts than ``top_k``, only its eligible ones are used.
* Noisy gating (Shazeer et al. 2017): in training, Gaussian noise with a learned,
  input-dependent scale is added to the logits; ``noisy_gating=False`` turns it off, and it is
  always off in eval mode, so evaluation is deterministic.
* Dispatch: the (token, expert) assignments are sorted by expert, so each expert's tokens are a
  contiguous block; experts are then evaluated as
  ``dispatch="tiles"``: every block cut into tiles of ``tile`` rows, each tile gathers its
  expert's weights, one batched matmul over all tiles (padding < one tile per expert);
  ``dispatch="padded"``: one (E, max_count, D) @ (E, D, H) batched matmul (padding to the
  busiest expert: wasteful when shared experts take most tokens);
  ``dispatch="loop"``: one matmul per expert with tokens.
  No Python loop over tokens or samples in any of them. Measured on the retriever's shapes
  (2560 tokens, 44 experts, top-4, 1 CPU thread, fwd+bwd): tiles ~55 ms, loop ~80 ms, padded
  ~125 ms, so the retriever uses ``tiles``; the layer's own default stays ``padded`` (simplest,
  fine for the few, evenly loaded experts of the fusion MoE).
* Balance loss: importance (sum of gate weights per expert) + load, each as squared coefficient
  of variation, computed over the ELIGIBLE experts only. Tokens may be split into groups with
  different eligible sets (the retriever groups by target modality); the loss is then computed
  per group over that group's eligible experts and averaged over the groups present. Load is the
  smooth noisy-top-k probability estimator (Shazeer et al.) when noise is on in training, else the
  hard assignment counts (which carry no gradient; importance still does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_NEG = -1e30  # finite stand-in for -inf inside softmax (no NaN when a row is empty)


@dataclass
class MoEOutput:
    """Result of :class:`SparseMoE`.

    ``expert_index`` (T, k) holds the chosen experts (-1 where a token had fewer eligible
    experts than k); ``expert_weight`` (T, k) their gate weights; ``counts`` (E,) the number of
    tokens routed to each expert. Statistics are detached.
    """

    output: Tensor
    balance_loss: Tensor
    expert_index: Tensor
    expert_weight: Tensor
    counts: Tensor


def cv_squared(values: Tensor, mask: Tensor) -> Tensor:
    """Squared coefficient of variation of each row of ``values`` over the entries in ``mask``.

    ``values`` and ``mask`` are (G, E); returns (G,). Unbiased variance (as in Shazeer et al.'s
    reference code); rows with fewer than two entries give 0.
    """
    m = mask.to(values.dtype)
    n = m.sum(dim=1)
    mean = (values * m).sum(dim=1) / n.clamp_min(1.0)
    var = (((values - mean[:, None]) ** 2) * m).sum(dim=1) / (n - 1.0).clamp_min(1.0)
    out = var / (mean**2 + 1e-10)
    return torch.where(n > 1, out, torch.zeros_like(out))


class SparseMoE(nn.Module):
    """Noisy top-k gated mixture of ``n_experts`` MLP experts, D -> H -> D_out."""

    def __init__(
        self,
        dim: int,
        n_experts: int,
        top_k: int,
        hidden: int | None = None,
        out_dim: int | None = None,
        noisy_gating: bool = True,
        dispatch: str = "padded",
        tile: int = 64,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..n_experts={n_experts}, got {top_k}")
        if dispatch not in ("padded", "loop", "tiles"):
            raise ValueError(f"dispatch must be 'padded', 'tiles' or 'loop', got {dispatch!r}")
        hidden = hidden or 2 * dim
        out_dim = out_dim or dim
        self.dim, self.hidden, self.out_dim = dim, hidden, out_dim
        self.n_experts = n_experts
        self.top_k = top_k
        self.noisy_gating = noisy_gating
        self.dispatch = dispatch
        self.tile = tile
        # Gates start at zero (uniform routing at first, as in Shazeer et al.); noise scale too.
        self.w_gate = nn.Parameter(torch.zeros(dim, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(dim, n_experts))
        self.w1 = nn.Parameter(torch.empty(n_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, out_dim))
        self.b2 = nn.Parameter(torch.zeros(n_experts, out_dim))
        bound1, bound2 = 1.0 / math.sqrt(dim), 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.w1, -bound1, bound1)
        nn.init.uniform_(self.w2, -bound2, bound2)

    # ------------------------------------------------------------------ gating
    def _gate(
        self, x: Tensor, eligible: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
        """Return (k_idx, k_gates, k_valid, clean, noisy, noise_std, top_vals).

        The router runs with autocast off, in at least the gate weights' precision: under mixed
        precision (tokens in bf16/fp16) its logits, gates and load statistics stay in float32,
        the usual practice for routers (top-k choices and the balance loss are sensitive to
        rounding)."""
        with torch.autocast(x.device.type, enabled=False):
            return self._gate_exact(x.to(torch.promote_types(x.dtype, self.w_gate.dtype)), eligible)

    def _gate_exact(
        self, x: Tensor, eligible: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
        clean = x @ self.w_gate.to(x.dtype)
        noisy: Tensor | None = None
        noise_std: Tensor | None = None
        logits = clean
        if self.training and self.noisy_gating:
            noise_std = F.softplus(x @ self.w_noise.to(x.dtype)) + 1e-2
            noisy = clean + torch.randn_like(clean) * noise_std
            logits = noisy
        if eligible is not None:
            logits = logits.masked_fill(~eligible, float("-inf"))
        kk = min(self.top_k + 1, self.n_experts)
        top_vals, top_idx = logits.topk(kk, dim=1)
        k_vals, k_idx = top_vals[:, : self.top_k], top_idx[:, : self.top_k]
        k_valid = torch.isfinite(k_vals)
        k_gates = torch.softmax(torch.where(k_valid, k_vals, torch.full_like(k_vals, _NEG)), 1)
        k_gates = k_gates * k_valid
        return k_idx, k_gates, k_valid, clean, noisy, noise_std, top_vals

    def _load(
        self,
        clean: Tensor,
        noisy: Tensor | None,
        noise_std: Tensor | None,
        top_vals: Tensor,
        gates_dense: Tensor,
    ) -> Tensor:
        """(T, E) per-token load contribution: smooth estimator with noise, else hard counts."""
        if noisy is None or noise_std is None or top_vals.shape[1] <= self.top_k:
            return (gates_dense > 0).to(clean.dtype)
        # Probability that expert e stays in the top-k when only its own noise is redrawn.
        thr_in = top_vals[:, self.top_k : self.top_k + 1]  # (k+1)-th value: e inside top-k
        thr_out = top_vals[:, self.top_k - 1 : self.top_k]  # k-th value: e outside top-k
        is_in = noisy > thr_in
        normal = torch.distributions.Normal(0.0, 1.0)
        # A -inf threshold (fewer eligible experts than k + 1) means "always in": probability 1,
        # set directly so that no inf * 0 reaches the gradient.
        fin_in, fin_out = torch.isfinite(thr_in), torch.isfinite(thr_out)
        p_in = normal.cdf((clean - torch.where(fin_in, thr_in, 0.0)) / noise_std)
        p_out = normal.cdf((clean - torch.where(fin_out, thr_out, 0.0)) / noise_std)
        p_in = torch.where(fin_in, p_in, torch.ones_like(p_in))
        p_out = torch.where(fin_out, p_out, torch.ones_like(p_out))
        return torch.where(is_in, p_in, p_out)

    # ------------------------------------------------------------------ experts
    def _experts(self, x_sorted: Tensor, e_sorted: Tensor, counts: Tensor) -> Tensor:
        """Evaluate each assignment's expert; inputs sorted by expert id (contiguous blocks)."""
        n_assign = x_sorted.shape[0]
        if n_assign == 0:
            return x_sorted.new_zeros(0, self.out_dim)
        if self.dispatch == "loop":
            outs = []
            for e, chunk in enumerate(torch.split(x_sorted, counts.tolist())):
                if chunk.shape[0]:
                    h = F.gelu(torch.addmm(self.b1[e], chunk, self.w1[e]))
                    outs.append(torch.addmm(self.b2[e], h, self.w2[e]))
            return torch.cat(outs, 0)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(n_assign, device=x_sorted.device) - starts[e_sorted]
        cap = int(counts.max())
        buf = x_sorted.new_zeros(self.n_experts, cap, self.dim)
        buf = buf.index_put((e_sorted, pos), x_sorted)
        h = F.gelu(torch.baddbmm(self.b1[:, None, :], buf, self.w1))
        out = torch.baddbmm(self.b2[:, None, :], h, self.w2)
        return out[e_sorted, pos]

    def _tiled(
        self, x: Tensor, t_sorted: Tensor, e_sorted: Tensor, g_sorted: Tensor, counts: Tensor
    ) -> Tensor:
        """Grouped matmul without global padding: each expert's block of assignments is cut
        into tiles of ``tile`` rows; every tile slot points at its token (or at an appended
        zero row for padding), every tile takes its expert's weights, one ``bmm`` runs all
        tiles, and slot outputs are gate-weighted and summed back per token. Padding is below
        one tile per expert however unbalanced the load; gathers use ``index_select`` (its
        backward is a plain ``index_add``)."""
        T, tile, dev = x.shape[0], self.tile, x.device
        n_assign = t_sorted.shape[0]
        if n_assign == 0:
            return x.new_zeros(T, self.out_dim)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(n_assign, device=dev) - starts[e_sorted]
        n_tiles_e = (counts + tile - 1) // tile
        tile_expert = torch.repeat_interleave(torch.arange(self.n_experts, device=dev), n_tiles_e)
        first_tile = torch.cumsum(n_tiles_e, 0) - n_tiles_e
        slot = (first_tile[e_sorted] + pos // tile) * tile + pos % tile
        n_slots = int(tile_expert.shape[0]) * tile
        slot_token = torch.full((n_slots,), T, dtype=torch.long, device=dev)
        slot_token[slot] = t_sorted
        slot_gate = x.new_zeros(n_slots).index_put((slot,), g_sorted)
        x_ext = torch.cat([x, x.new_zeros(1, x.shape[1])], 0)
        buf = x_ext.index_select(0, slot_token).view(-1, tile, self.dim)
        w1 = self.w1.index_select(0, tile_expert)
        w2 = self.w2.index_select(0, tile_expert)
        b1 = self.b1.index_select(0, tile_expert)[:, None]
        b2 = self.b2.index_select(0, tile_expert)[:, None]
        h = F.gelu(torch.baddbmm(b1, buf, w1))
        o = torch.baddbmm(b2, h, w2).reshape(n_slots, self.out_dim)
        # under autocast the expert matmuls return the autocast dtype: accumulate in x's
        o = (o * slot_gate[:, None]).to(x.dtype)
        out = x.new_zeros(T + 1, self.out_dim).index_add(0, slot_token, o)
        return out[:T]

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor,
        eligible: Tensor | None = None,
        group: Tensor | None = None,
        n_groups: int = 1,
    ) -> MoEOutput:
        """Route tokens ``x`` (T, D).

        ``eligible`` (T, E) bool: experts each token may use (None: all). ``group`` (T,) int64 in
        ``range(n_groups)``: balance-loss groups (None: one group); a group's eligible set is the
        union of its tokens' eligible sets.
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"SparseMoE expects tokens (T, {self.dim}), got {tuple(x.shape)}")
        T, E, k = x.shape[0], self.n_experts, self.top_k
        if eligible is not None and eligible.shape != (T, E):
            raise ValueError(f"eligible must be ({T}, {E}), got {tuple(eligible.shape)}")
        k_idx, k_gates, k_valid, clean, noisy, noise_std, top_vals = self._gate(x, eligible)

        # Dispatch: sort the (token, expert) assignments by expert id.
        flat_e = torch.where(k_valid, k_idx, torch.full_like(k_idx, E)).reshape(-1)
        flat_t = torch.arange(T, device=x.device).repeat_interleave(k)
        flat_g = k_gates.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        e_sorted, t_sorted, g_sorted = flat_e[order], flat_t[order], flat_g[order]
        counts_all = torch.bincount(e_sorted, minlength=E + 1)
        counts = counts_all[:E]
        # Assignments of tokens with fewer than k eligible experts sort last (id E): drop them.
        keep = T * k - int(counts_all[E])
        e_sorted, t_sorted, g_sorted = e_sorted[:keep], t_sorted[:keep], g_sorted[:keep]
        g_x = g_sorted.to(x.dtype)  # expert outputs are mixed in x's dtype
        if self.dispatch == "tiles":
            out = self._tiled(x, t_sorted, e_sorted, g_x, counts)
        else:
            y_sorted = self._experts(x[t_sorted], e_sorted, counts)
            y_sorted = (y_sorted * g_x[:, None]).to(x.dtype)  # autocast: back to x's
            out = x.new_zeros(T, self.out_dim).index_add(0, t_sorted, y_sorted)

        # Balance loss over the eligible experts of each group (in the router's dtype).
        gates_dense = k_gates.new_zeros(T, E).scatter(1, k_idx, k_gates)
        load = self._load(clean, noisy, noise_std, top_vals, gates_dense)
        elig = eligible.to(k_gates.dtype) if eligible is not None else k_gates.new_ones(T, E)
        load = load * elig
        if group is None:
            group = torch.zeros(T, dtype=torch.long, device=x.device)
            n_groups = 1
        importance_g = k_gates.new_zeros(n_groups, E).index_add(0, group, gates_dense)
        load_g = k_gates.new_zeros(n_groups, E).index_add(0, group, load)
        elig_g = k_gates.new_zeros(n_groups, E).index_add(0, group, elig) > 0
        present = (torch.bincount(group, minlength=n_groups) > 0).to(k_gates.dtype)
        per_group = cv_squared(importance_g, elig_g) + cv_squared(load_g, elig_g)
        balance = (per_group * present).sum() / present.sum().clamp_min(1.0)

        expert_index = torch.where(k_valid, k_idx, torch.full_like(k_idx, -1))
        return MoEOutput(
            output=out,
            balance_loss=balance,
            expert_index=expert_index.detach(),
            expert_weight=k_gates.detach(),
            counts=counts.detach(),
        )
