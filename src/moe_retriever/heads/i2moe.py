"""``i2moe``: interpretable multimodal interaction-aware mixture of experts (Xin et al., ICML
2025) as a head (SEED_METHODS.md section 2).

K = M + 2 experts, each an independent base fusion + MLP (:class:`TransformerHead`): one
uniqueness expert U_m per modality, a synergy expert S and a redundancy expert R. A reweighting
MLP reads the mean-pooled tokens of every modality (and, by default, the observed mask) and
gives per-sample weights ``w = softmax(MLP(q) / tau)`` (B, K); the logits are
``sum_k w[:, k] * E_k(T)``.

Training adds the interaction loss, from perturbing one modality j at a time (its tokens
replaced by fresh N(0, 1) noise, zeros, the batch mean, or masked out of attention) and running
every expert again on the perturbed tokens (K (1 + n_perturb) expert passes per step; eval runs
K):

* U_i (triplet, margin): its output must move when modality i is perturbed (negative) and stay
  put when another modality is (positives);
* S: mean cosine between anchor and perturbed outputs (minimised: losing any modality must
  change the direction);
* R: mean ``1 - cosine`` (losing one modality must not change the direction);
* ``L_int = (sum_i L_U_i + L_S + L_R) / K``; ``aux_loss = lambda_int * L_int`` + the experts'
  weighted MoE balance losses (fusion MoE only).

Missing modalities (the paper drops incomplete samples; this is our design, SEED_METHODS.md
2.4): the experts and the reweighting run on completed tokens, or with key masks in masked mode
(completion ``none``). A perturbation of modality j counts for sample b only where b observes
j (perturbing an imputed slot teaches nothing about the modality): U_i needs o[b, i] (the
negative) and uses the positives j with o[b, j]; S and R average over the j with o[b, j]; each
term is a mean over its eligible (sample, j) pairs, and 0 when there is none. In ``mask`` mode a
sample whose only observed modality is j is not masked on j (nothing would be left to attend
to). The reweighting input includes ``observed`` (``rw_use_mask``), so the weights can react to
missingness; in masked mode the pooled vectors of missing slots are zeroed in that input.

Interpretation (``info["interpret"]``): ``weights`` (B, K) in the order U_1..U_M, S, R
(non-negative, summing to 1) and ``expert_logits`` (B, K, C). :meth:`summarize` gives the global
weights (their mean) overall, per class and per observed combination; :meth:`report` writes
``interaction_weights.{png,json,md}``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads.base import Head, HeadContext, HeadOutput, register_head
from moe_retriever.heads.summary import weight_summary, write_weight_report
from moe_retriever.heads.transformer import TransformerHead

PERTURBATIONS = ("gaussian", "zero", "mean", "mask")
EXPERT_INITS = ("independent", "copy")


# ---------------------------------------------------------------------------- losses
def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 (a constant, no NaN) when the mask is empty."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def uniqueness_loss(
    anchor: Tensor, perturbed: Tensor, i: int, valid: Tensor, margin: float
) -> Tensor:
    """L_U_i: triplet loss of expert U_i's outputs. ``anchor`` (B, C) unperturbed output,
    ``perturbed`` (B, M, C) output with modality j perturbed in slot j, ``valid`` (B, M) bool:
    perturbation j is eligible for sample b (j perturbed this step and observed by b). Negative
    = slot i, positives = the other eligible slots; ``max(0, d(a, p) - d(a, n) + margin)``
    averaged over eligible (b, j) pairs (distances as ``torch.nn.TripletMarginLoss``)."""
    M = perturbed.shape[1]
    d_neg = F.pairwise_distance(anchor, perturbed[:, i])  # (B,)
    terms, masks = [], []
    for j in range(M):
        if j == i:
            continue
        d_pos = F.pairwise_distance(anchor, perturbed[:, j])
        terms.append(F.relu(d_pos - d_neg + margin))
        masks.append(valid[:, i] & valid[:, j])
    if not terms:
        return anchor.new_zeros(())
    return _masked_mean(torch.stack(terms, 1), torch.stack(masks, 1))


def synergy_loss(anchor: Tensor, perturbed: Tensor, valid: Tensor) -> Tensor:
    """L_S: mean cosine between the anchor (B, C) and each eligible perturbed output (B, M, C)."""
    cos = F.cosine_similarity(anchor[:, None], perturbed, dim=-1)  # (B, M)
    return _masked_mean(cos, valid)


def redundancy_loss(anchor: Tensor, perturbed: Tensor, valid: Tensor) -> Tensor:
    """L_R: mean ``1 - cosine`` between the anchor and each eligible perturbed output."""
    cos = F.cosine_similarity(anchor[:, None], perturbed, dim=-1)
    return _masked_mean(1.0 - cos, valid)


# ---------------------------------------------------------------------------- head
class Reweighting(nn.Module):
    """``rw_layers`` hidden layers (Linear, ReLU, dropout) of width ``rw_hidden``, then a
    Linear to K scores (``rw_layers=0``: one Linear)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float, k: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        mods.append(nn.Linear(width, k))
        self.net = nn.Sequential(*mods)
        self.in_dim = in_dim

    def forward(self, q: Tensor) -> Tensor:
        return self.net(q)


@register_head
class I2MoEHead(Head):
    """M uniqueness experts, a synergy and a redundancy expert, mixed per sample by a
    reweighting MLP; interaction losses from single-modality perturbations in training."""

    name = "i2moe"

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        n_classes: int,
        arch: ModelConfig,
        tau: float = 1.0,
        rw_layers: int = 3,
        rw_hidden: int = 256,
        rw_dropout: float = 0.5,
        margin: float = 1.0,
        perturbation: str = "gaussian",
        lambda_int: float = 0.01,
        n_perturb: int | None = None,
        expert_init: str = "independent",
        rw_use_mask: bool = True,
    ) -> None:
        super().__init__(modalities, n_tokens, dim, n_classes, arch)
        M = len(self.modalities)
        if M < 2:
            raise ValueError(f"i2moe needs at least 2 modalities, got {M}")
        if not tau > 0:
            raise ValueError(f"i2moe tau must be > 0, got {tau}")
        if rw_layers < 0 or rw_hidden < 1:
            raise ValueError(
                f"i2moe rw_layers must be >= 0 and rw_hidden >= 1, got {rw_layers}, {rw_hidden}"
            )
        if not 0.0 <= rw_dropout < 1.0:
            raise ValueError(f"i2moe rw_dropout must be in [0, 1), got {rw_dropout}")
        if margin < 0 or lambda_int < 0:
            raise ValueError(
                f"i2moe margin and lambda_int must be >= 0, got {margin}, {lambda_int}"
            )
        if perturbation not in PERTURBATIONS:
            raise ValueError(
                f"i2moe perturbation must be one of {', '.join(PERTURBATIONS)}, "
                f"got {perturbation!r}"
            )
        if n_perturb is not None and not 1 <= n_perturb <= M:
            raise ValueError(f"i2moe n_perturb must be in [1, {M}] (or unset), got {n_perturb}")
        if expert_init not in EXPERT_INITS:
            raise ValueError(
                f"i2moe expert_init must be one of {', '.join(EXPERT_INITS)}, got {expert_init!r}"
            )
        self.tau, self.margin, self.lambda_int = tau, margin, lambda_int
        self.perturbation, self.rw_use_mask = perturbation, rw_use_mask
        self.n_perturb = M if n_perturb is None else n_perturb
        self.K = M + 2
        first = TransformerHead(modalities, n_tokens, dim, n_classes, arch)
        others = [
            copy.deepcopy(first)
            if expert_init == "copy"
            else TransformerHead(modalities, n_tokens, dim, n_classes, arch)
            for _ in range(self.K - 1)
        ]
        self.experts = nn.ModuleList([first, *others])
        in_dim = M * dim + (M if rw_use_mask else 0)
        self.reweight = Reweighting(in_dim, rw_hidden, rw_layers, rw_dropout, self.K)

    def expert_names(self) -> list[str]:
        return [f"U_{m}" for m in self.modalities] + ["S", "R"]

    def interpret_axes(self) -> dict[str, list[str]]:
        names = self.expert_names()
        return {"weights": names, "expert_logits": names}

    # ------------------------------------------------------------------ forward
    def weights(self, tokens: Tensor, observed: Tensor, masked: bool) -> Tensor:
        """(B, K) mixing weights from the mean-pooled tokens (and the observed mask)."""
        pooled = tokens.mean(dim=2)  # (B, M, D)
        if masked:
            pooled = pooled.masked_fill(~observed[:, :, None], 0.0)
        q = pooled.reshape(pooled.shape[0], -1)
        if self.rw_use_mask:
            q = torch.cat([q, observed.to(q.dtype)], dim=1)
        return torch.softmax(self.reweight(q) / self.tau, dim=-1)

    def forward(self, tokens: Tensor, observed: Tensor, context: HeadContext) -> HeadOutput:
        outs = [e(tokens, observed, context) for e in self.experts]
        y0 = torch.stack([o.logits for o in outs], dim=1)  # (B, K, C)
        aux = torch.stack([o.aux_loss for o in outs]).sum()
        w = self.weights(tokens, observed, context.masked)
        logits = (w[:, :, None] * y0).sum(dim=1)
        losses: dict[str, Tensor] = {
            "balance": torch.stack([o.info["losses"]["balance"] for o in outs]).sum()
        }
        if context.training and self.lambda_int > 0:
            terms = self.interaction_losses(tokens, observed, context, y0)
            for key, value in terms.items():
                losses[key] = value.detach()
            aux = aux + self.lambda_int * terms["interaction"]
        info: dict[str, Any] = {
            "losses": losses,
            "interpret": {"weights": w.detach(), "expert_logits": y0.detach()},
        }
        return HeadOutput(logits, aux, info)

    def perturbed_modalities(self, M: int, generator: torch.Generator | None) -> list[int]:
        """The modalities perturbed this step: all, or a random subset of ``n_perturb``."""
        if self.n_perturb >= M:
            return list(range(M))
        perm = torch.randperm(M, generator=generator)
        return sorted(perm[: self.n_perturb].tolist())

    def perturb(
        self,
        tokens: Tensor,
        observed: Tensor,
        j: int,
        context: HeadContext,
    ) -> tuple[Tensor, Tensor, HeadContext]:
        """Tokens, observed mask and context for an expert pass with modality j perturbed."""
        B, _, P, D = tokens.shape
        if self.perturbation == "mask":
            base = observed if context.masked else torch.ones_like(observed)
            keep = base.clone()
            keep[:, j] = False
            alone = ~keep.any(dim=1)  # j was the only slot left: leave it
            keep[alone, j] = base[alone, j]
            ctx = copy.copy(context)
            ctx.masked = True
            return tokens, keep, ctx
        if self.perturbation == "gaussian":
            noise = torch.randn(B, P, D, generator=context.generator)
            fill = noise.to(device=tokens.device, dtype=tokens.dtype)
        elif self.perturbation == "zero":
            fill = tokens.new_zeros(B, P, D)
        else:  # mean over the batch rows that observe j (all rows if none does)
            rows = observed[:, j]
            src = tokens[rows, j] if bool(rows.any()) else tokens[:, j]
            fill = src.mean(dim=0, keepdim=True).expand(B, P, D)
        t = tokens.clone()
        t[:, j] = fill
        return t, observed, context

    def interaction_losses(
        self, tokens: Tensor, observed: Tensor, context: HeadContext, y0: Tensor
    ) -> dict[str, Tensor]:
        """Every expert on every perturbed input; the uniqueness, synergy and redundancy terms
        (unweighted) and ``interaction`` = their sum over K."""
        B, M = observed.shape
        J = self.perturbed_modalities(M, context.generator)
        yp = y0.new_zeros(B, self.K, M, y0.shape[-1])  # (B, K, M, C); slots not in J unused
        for j in J:
            for k, expert in enumerate(self.experts):
                # a fresh draw per expert and modality (gaussian), from the step's generator
                t, obs, ctx = self.perturb(tokens, observed, j, context)
                yp[:, k, j] = expert(t, obs, ctx).logits
        in_j = torch.zeros(M, dtype=torch.bool, device=observed.device)
        in_j[J] = True
        valid = observed & in_j[None]  # (B, M): eligible perturbations
        out: dict[str, Tensor] = {}
        total = y0.new_zeros(())
        for i, m in enumerate(self.modalities):
            if i not in J:
                continue
            u = uniqueness_loss(y0[:, i], yp[:, i], i, valid, self.margin)
            out[f"uniqueness_{m}"] = u
            total = total + u
        out["synergy"] = synergy_loss(y0[:, M], yp[:, M], valid)
        out["redundancy"] = redundancy_loss(y0[:, M + 1], yp[:, M + 1], valid)
        out["interaction"] = (total + out["synergy"] + out["redundancy"]) / self.K
        return out

    # ------------------------------------------------------------------ reporting
    def summarize(
        self, interpret: dict[str, Tensor], y: Tensor | None, observed: Tensor
    ) -> dict[str, Any] | None:
        """Global interaction weights (the mean of the local ones) overall, per class and per
        observed combination, and the range of the per-sample weight sums (a check)."""
        if "weights" not in interpret:
            return None
        w = interpret["weights"]
        out = weight_summary(w, self.expert_names(), self.modalities, y, observed)
        sums = w.double().sum(dim=1)
        out["weight_sum_range"] = [float(sums.min()), float(sums.max())] if len(w) else []
        return out

    def report(self, summary: dict[str, Any], out_dir: Path) -> list[Path]:
        return write_weight_report(
            summary,
            out_dir,
            "interaction_weights",
            "I2MoE: interaction weights (U = uniqueness, S = synergy, R = redundancy)",
            "mean weight",
        )


__all__ = ["I2MoEHead", "redundancy_loss", "synergy_loss", "uniqueness_loss"]
