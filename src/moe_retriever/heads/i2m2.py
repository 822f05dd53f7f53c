"""``i2m2``: inter- and intra-modality modeling (Madaan et al., NeurIPS 2024) as a head.

A product of experts (SEED_METHODS.md section 1): one classifier per modality (intra) and one
joint classifier over all modalities (inter, the base fusion + MLP of :class:`TransformerHead`),
their logits summed::

    u_m = W2_m GELU(LN(W1_m mean_P T[:, m]))          (B, C)   W1: D -> 2D, W2: 2D -> C
    g   = TransformerHead(T)                          (B, C)
    s   = g + sum_m a[:, m] * u_m                      (B, C)   returned as logits

``log_softmax(s)`` is the paper's renormalised product of the experts' softmaxes (each
expert's normaliser is a per-sample constant), so the library's cross-entropy is the paper's
objective. There are no mixing weights (the published ones are dead code).

Missing modalities (a library design; the paper has none): a missing modality's own
classifier drops out of the sum (``policy="drop"``, ``a = observed``), which is the same as a
uniform factor in the product; it would only re-read the imputation and count the other
modalities twice. ``policy="keep"`` (``a = 1``) is the ablation. In masked mode (completion
``none``) the inter expert masks the missing slots out of attention and the intra experts of
missing modalities are dropped whatever the policy, so the output does not depend on what a
missing slot holds. A sample with fewer observed modalities has fewer factors and a less
confident prediction; this is intended (no rescaling).

Options: ``policy`` ("drop" | "keep"); ``experts`` ("all" | "intra" | "inter": the late-fusion
and base-model ablations; the unused experts are not built); ``expert_ce_weight`` (a library
extra, default 0: the mean cross-entropy of each expert's own logits, unimodal experts on the
samples that observe their modality, added with this weight in training); ``private_blocks``
(each unimodal expert gets its own k transformer blocks over its P tokens before pooling).

Interpretation (``info["interpret"]``, experts ordered as the modalities, then ``inter``):
``expert_logprobs`` (B, M+1, C), each expert's log_softmax, NaN for dropped or absent experts;
``share`` (B, M+1): for the predicted class c*, each expert's centred logit
``z_k[c*] - mean_c z_k`` over the sum of their absolute values (active experts; 0 elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads.base import Head, HeadContext, HeadOutput, register_head
from moe_retriever.heads.summary import weight_summary, write_weight_report
from moe_retriever.heads.transformer import TransformerHead
from moe_retriever.nn.transformer import TransformerBlock

POLICIES = ("drop", "keep")
EXPERT_SETS = ("all", "intra", "inter")


class UnimodalExpert(nn.Module):
    """One modality's classifier: optional private blocks over its P tokens, mean-pool,
    Linear(D, 2D), LayerNorm, GELU, Linear(2D, C) (the published VQA/NLVR2 head)."""

    def __init__(self, dim: int, n_classes: int, arch: ModelConfig, private_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, arch.n_heads, ffn_mult=arch.ffn_mult, dropout=arch.dropout)
            for _ in range(private_blocks)
        )
        self.norm = nn.LayerNorm(dim) if private_blocks else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Linear(2 * dim, n_classes)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, P, D) tokens of one modality -> (B, C) logits."""
        h = tokens
        for block in self.blocks:
            h = block(h).x
        return self.mlp(self.norm(h).mean(dim=1))


@register_head
class I2M2Head(Head):
    """Sum of the logits of M unimodal experts (dropped where their modality is missing) and a
    joint expert (the base fusion + MLP)."""

    name = "i2m2"

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        n_classes: int,
        arch: ModelConfig,
        policy: str = "drop",
        experts: str = "all",
        expert_ce_weight: float = 0.0,
        private_blocks: int = 0,
    ) -> None:
        super().__init__(modalities, n_tokens, dim, n_classes, arch)
        if policy not in POLICIES:
            raise ValueError(f"i2m2 policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if experts not in EXPERT_SETS:
            raise ValueError(
                f"i2m2 experts must be one of {', '.join(EXPERT_SETS)}, got {experts!r}"
            )
        if expert_ce_weight < 0:
            raise ValueError(f"i2m2 expert_ce_weight must be >= 0, got {expert_ce_weight}")
        if private_blocks < 0:
            raise ValueError(f"i2m2 private_blocks must be >= 0, got {private_blocks}")
        self.policy, self.experts = policy, experts
        self.expert_ce_weight = expert_ce_weight
        self.inter = (
            TransformerHead(modalities, n_tokens, dim, n_classes, arch)
            if experts != "intra"
            else None
        )
        self.intra = (
            nn.ModuleList(
                UnimodalExpert(dim, n_classes, arch, private_blocks) for _ in self.modalities
            )
            if experts != "inter"
            else None
        )

    def expert_names(self) -> list[str]:
        return [*self.modalities, "inter"]

    def interpret_axes(self) -> dict[str, list[str]]:
        names = self.expert_names()
        return {"expert_logprobs": names, "share": names}

    def gate(self, observed: Tensor, masked: bool) -> Tensor:
        """(B, M) bool: which unimodal experts enter the sum."""
        if self.policy == "keep" and not masked:
            return torch.ones_like(observed)
        return observed

    def forward(self, tokens: Tensor, observed: Tensor, context: HeadContext) -> HeadOutput:
        B, M = observed.shape
        C = self.n_classes
        active = tokens.new_zeros(B, M + 1, dtype=torch.bool)
        z = tokens.new_zeros(B, M + 1, C)  # each expert's logits, zero where inactive
        aux = tokens.new_zeros(())
        losses: dict[str, Tensor] = {}
        if self.inter is not None:
            out = self.inter(tokens, observed, context)
            z[:, M] = out.logits
            active[:, M] = True
            aux = aux + out.aux_loss
            losses.update(out.info["losses"])
        if self.intra is not None:
            a = self.gate(observed, context.masked)
            if context.masked:  # nothing may depend on a missing slot's content
                tokens = tokens.masked_fill(~observed[:, :, None, None], 0.0)
            u = torch.stack([e(tokens[:, m]) for m, e in enumerate(self.intra)], dim=1)
            z[:, :M] = torch.where(a[:, :, None], u, torch.zeros_like(u))
            active[:, :M] = a
        logits = z.sum(dim=1)
        if self.expert_ce_weight > 0 and context.training and context.y is not None:
            ce = self._expert_ce(z, active, observed, context.y)
            losses["expert_ce"] = ce.detach()
            aux = aux + self.expert_ce_weight * ce
        info: dict[str, Any] = {
            "losses": losses,
            "interpret": self._interpret(z.detach(), active, logits.detach()),
        }
        return HeadOutput(logits, aux, info)

    def _expert_ce(self, z: Tensor, active: Tensor, observed: Tensor, y: Tensor) -> Tensor:
        """Mean over experts of each expert's own cross-entropy on its rows (unimodal experts:
        the samples observing their modality; experts with no row are left out)."""
        M = observed.shape[1]
        rows = torch.cat([observed & active[:, :M], active[:, M:]], dim=1)
        terms = [
            F.cross_entropy(z[rows[:, k], k].float(), y[rows[:, k]])
            for k in range(M + 1)
            if bool(rows[:, k].any())
        ]
        return torch.stack(terms).mean() if terms else z.new_zeros(())

    @staticmethod
    def _interpret(z: Tensor, active: Tensor, logits: Tensor) -> dict[str, Tensor]:
        logp = torch.log_softmax(z.float(), dim=-1).masked_fill(~active[:, :, None], float("nan"))
        pred = logits.argmax(dim=-1)
        centred = z.float() - z.float().mean(dim=-1, keepdim=True)  # (B, K, C)
        idx = pred[:, None, None].expand(-1, z.shape[1], 1)
        c = centred.gather(2, idx).squeeze(2).masked_fill(~active, 0.0)
        share = c / c.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
        return {"expert_logprobs": logp, "share": share}

    # ------------------------------------------------------------------ reporting
    def summarize(
        self, interpret: dict[str, Tensor], y: Tensor | None, observed: Tensor
    ) -> dict[str, Any] | None:
        """Mean expert shares of the decision, overall, per class, per observed combination."""
        if "share" not in interpret:
            return None
        return weight_summary(interpret["share"], self.expert_names(), self.modalities, y, observed)

    def report(self, summary: dict[str, Any], out_dir: Path) -> list[Path]:
        return write_weight_report(
            summary,
            out_dir,
            "expert_shares",
            "I2M2: experts' share of the decision (predicted class)",
            "mean share",
        )


__all__ = ["I2M2Head", "UnimodalExpert"]
