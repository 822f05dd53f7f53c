"""``mfm``: the Multimodal Factorization Model (Tsai et al., ICLR 2019) as a completion method.

MFM splits a sample into one shared, label-relevant factor z_y and one specific factor z_m per
modality, and regenerates a modality from ``[G_y(z_y); G_m(z_m)]`` with a decoder per modality.
A missing modality's specific factor is inferred from what the sample has by a surrogate
network. Here everything works on the model's tokens (docs/SEED_METHODS.md section 3.4)::

    z_m  = Q_m(T[:, m])       one transformer block over the P tokens, mean-pool, Linear -> d_m
    z_y  = Q_y(T, o)          transformer block(s) over the OBSERVED tokens (key mask), pool -> d_y
    ẑ_m  = Ψ_m(T, o)          cross-attention of a learned query (one network per target m)
                              over the observed tokens, MLP -> d_m
    f_y  = G_y(z_y), f_m = G_m(z_m or ẑ_m)           two-layer MLPs, ReLU
    T̂_m  = Dec_m([f_y; f_m])                          MLP -> (P, D) + learned positions
    ŷ    = D(f_y)                                      label head on the shared factor only

A missing slot (b, m) gets ``Dec_m([f_y; G_m(ẑ_m)])``; observed slots come back unchanged.
``target="features"``: Dec_m outputs the raw (preprocessed) features x̂_m (F_m values), the
reconstruction targets are the batch's raw inputs ``context.x``, and a missing slot gets the
model's own encoder tokens of x̂_m (``context.encode``): closer to the paper, and x̂_m is
directly comparable with mean imputation.

Training terms (each a mean over its eligible entries, weighted, summed into
``CompletionOutput.loss``; the unweighted terms are in ``info["losses"]``):

* ``recon`` (``lambda_rec``): observed (b, m) decoded through its own z_m, MSE to the
  stop-gradient target (tokens, or raw features);
* ``surrogate`` (``lambda_sur``): in-method modality dropout: each sample with >= 2 observed
  modalities hides one of them at random with probability ``p_hide`` (o'); then
  ``||Ψ_m(T, o') - sg(z_m)||²``
  ``+ lambda_rec ||Dec_m([G_y(Q_y(T, o')); G_m(Ψ_m(T, o'))]) - sg(T_m)||²``
  (the published code's "MSE to the full-data factors + reconstruct through the surrogate",
  for any pattern). ``detach_targets=False`` lets the gradient reach the targets, as the
  published code does;
* ``mmd`` (``lambda_mmd``): MMD² of z_y and of each z_m (observed rows) to a fresh N(0, I)
  sample, kernel ``"code"`` (the published exp(-||a-b||²/d²)) or ``"imq"``; biased estimator
  unless ``unbiased``; skipped below 2 rows;
* ``label`` (``lambda_y``): CE(D(f_y), y) when the batch has labels (``context.y``, training
  only) and the method knows ``n_classes`` (the model fills it); otherwise skipped, and
  ``info["losses"]`` says so.

The model's hide-and-align self-supervision (``learns = True``) applies on top. Nothing is
drawn at evaluation (no hiding, no prior sample): the same batch gives the same tokens.
Randomness in training (which modality to hide, the prior sample) comes from torch's global
generator, which the training loop reseeds every step.
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
    register_completion,
)
from moe_retriever.nn.transformer import TransformerBlock

KERNELS = ("code", "imq")
TARGETS = ("tokens", "features")


def mmd(x: Tensor, y: Tensor, kernel: str = "code", unbiased: bool = False) -> Tensor:
    """MMD² between samples ``x`` (n, d) and ``y`` (n', d).

    ``kernel="code"``: k(a, b) = exp(-||a - b||² / d²), the published MFM code's kernel (it
    averages the squared differences over dimensions, then divides by d again);
    ``"imq"``: k(a, b) = C / (C + ||a - b||²) with C = 2d (WAE's inverse multiquadratic for a
    unit-variance prior). Biased estimator (means over all pairs, >= 0) unless ``unbiased``
    (diagonals of k(x, x) and k(y, y) left out)."""
    if kernel not in KERNELS:
        raise ValueError(f"mmd kernel must be one of {KERNELS}, got {kernel!r}")
    d = x.shape[1]

    def k(a: Tensor, b: Tensor) -> Tensor:
        sq = torch.cdist(a, b).pow(2)
        if kernel == "code":
            return torch.exp(-sq / float(d * d))
        c = 2.0 * d
        return c / (c + sq)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    n, m = x.shape[0], y.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / max(n * (n - 1), 1)
    syy = (kyy.sum() - kyy.diagonal().sum()) / max(m * (m - 1), 1)
    return sxx + syy - 2.0 * kxy.mean()


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out)
    )


class _SurrogateNet(nn.Module):
    """Ψ_m: a learned query cross-attends over a sample's observed tokens, then an MLP."""

    def __init__(self, dim: int, n_heads: int, d_out: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = _mlp(dim, dim, d_out, dropout)

    def forward(self, keys: Tensor, key_mask: Tensor) -> Tensor:
        """``keys`` (n, L, D) embedded tokens, ``key_mask`` (n, L) True = attend; -> (n, d_out)."""
        n, L, D = keys.shape
        H = self.n_heads
        k, v = self.kv(self.norm(keys)).reshape(n, L, 2, H, D // H).permute(2, 0, 3, 1, 4)
        q = self.q(self.query).reshape(1, H, 1, D // H).expand(n, H, 1, D // H)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        h = self.query + self.out(a.reshape(n, D))
        out: Tensor = self.mlp(h)
        return out


@register_completion
class MFMCompletion(Completion):
    """Factorised generation of missing modalities: shared z_y, specific z_m, surrogates."""

    name = "mfm"
    needs_pool = False
    learns = True

    def __init__(
        self,
        modalities: list[str],
        n_tokens: int,
        dim: int,
        d_y: int = 32,
        d_m: int = 32,
        f_y: int = 32,
        f_m: int = 32,
        decoder_hidden: int = 128,
        n_heads: int = 4,
        shared_blocks: int = 1,
        dropout: float = 0.0,
        lambda_rec: float = 1.0,
        lambda_sur: float = 1.0,
        lambda_mmd: float = 1.0,
        lambda_y: float = 1.0,
        kernel: str = "code",
        unbiased: bool = False,
        p_hide: float = 0.5,
        detach_targets: bool = True,
        target: str = "tokens",
        n_classes: int | None = None,
        dims: dict[str, int] | None = None,
    ) -> None:
        """``n_classes`` (label head) and ``dims`` (feature counts, for
        ``target="features"``) are filled by :class:`~moe_retriever.model.MultimodalClassifier`
        when not given."""
        super().__init__(modalities, n_tokens, dim)
        if kernel not in KERNELS:
            raise ValueError(f"mfm: kernel must be one of {KERNELS}, got {kernel!r}")
        if target not in TARGETS:
            raise ValueError(f"mfm: target must be one of {TARGETS}, got {target!r}")
        if not 0.0 <= p_hide <= 1.0:
            raise ValueError(f"mfm: p_hide must be in [0, 1], got {p_hide}")
        for key, w in (
            ("lambda_rec", lambda_rec),
            ("lambda_sur", lambda_sur),
            ("lambda_mmd", lambda_mmd),
            ("lambda_y", lambda_y),
        ):
            if w < 0:
                raise ValueError(f"mfm: {key} must be >= 0, got {w}")
        for key, v in (("d_y", d_y), ("d_m", d_m), ("f_y", f_y), ("f_m", f_m)):
            if v < 1:
                raise ValueError(f"mfm: {key} must be >= 1, got {v}")
        if shared_blocks < 1:
            raise ValueError(f"mfm: shared_blocks must be >= 1, got {shared_blocks}")
        if n_classes is not None and n_classes < 2:
            raise ValueError(f"mfm: n_classes must be >= 2, got {n_classes}")
        if target == "features":
            missing = [m for m in modalities if dims is None or m not in dims]
            if missing:
                raise ValueError(
                    f"mfm target='features' needs the feature count of every modality (option "
                    f"dims); missing for {missing}"
                )
        M, P, D = len(modalities), n_tokens, dim
        self.d_y, self.d_m = d_y, d_m
        self.lambda_rec, self.lambda_sur = float(lambda_rec), float(lambda_sur)
        self.lambda_mmd, self.lambda_y = float(lambda_mmd), float(lambda_y)
        self.kernel, self.unbiased = kernel, bool(unbiased)
        self.p_hide = float(p_hide)
        self.detach_targets = bool(detach_targets)
        self.target = target
        self.n_classes = n_classes
        self.dims = {m: int(dims[m]) for m in modalities} if dims is not None else None

        self.modality_emb = nn.Parameter(torch.randn(M, D) * 0.02)
        self.position_emb = nn.Parameter(torch.randn(P, D) * 0.02)
        # Q_m: one block per modality over its own P tokens
        self.own_blocks = nn.ModuleList(
            [TransformerBlock(D, n_heads, dropout=dropout) for _ in modalities]
        )
        self.own_out = nn.ModuleList(
            [nn.Sequential(nn.LayerNorm(D), nn.Linear(D, d_m)) for _ in modalities]
        )
        # Q_y: blocks over the observed tokens of all modalities
        self.shared_blocks = nn.ModuleList(
            [TransformerBlock(D, n_heads, dropout=dropout) for _ in range(shared_blocks)]
        )
        self.shared_out = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, d_y))
        # Ψ_m: one surrogate network per target modality
        self.surrogates = nn.ModuleList(
            [_SurrogateNet(D, n_heads, d_m, dropout) for _ in modalities]
        )
        self.g_y = _mlp(d_y, f_y, f_y, dropout)
        self.g_m = nn.ModuleList([_mlp(d_m, f_m, f_m, dropout) for _ in modalities])
        out_dims = [P * D if target == "tokens" else self.dims[m] for m in modalities]  # type: ignore[index]
        self.decoders = nn.ModuleList(
            [_mlp(f_y + f_m, decoder_hidden, out, dropout) for out in out_dims]
        )
        self.decoder_pos = nn.Parameter(torch.randn(P, D) * 0.02) if target == "tokens" else None
        self.label_head = nn.Linear(f_y, n_classes) if n_classes is not None else None

    # ------------------------------------------------------------------ the factor networks
    def _embed(self, tokens: Tensor) -> Tensor:
        """(B, M, P, D) -> (B, M·P, D) with modality and position embeddings."""
        B, M, P, D = tokens.shape
        x = tokens + self.modality_emb[None, :, None] + self.position_emb[None, None]
        return x.reshape(B, M * P, D)

    def specific(self, j: int, tokens_j: Tensor) -> Tensor:
        """z_j = Q_j(T[:, j]): (n, P, D) -> (n, d_m)."""
        h = self.own_blocks[j](tokens_j + self.position_emb).x
        out: Tensor = self.own_out[j](h.mean(1))
        return out

    def shared(self, tokens: Tensor, observed: Tensor) -> Tensor:
        """z_y = Q_y(T, o): (B, M, P, D), (B, M) -> (B, d_y); unobserved slots are never read
        (key mask, masked pooling)."""
        P = tokens.shape[2]
        mask = observed.repeat_interleave(P, dim=1)  # (B, M·P) True = real
        h = self._embed(tokens)
        for blk in self.shared_blocks:
            h = blk(h, mask).x
        w = mask.to(h.dtype)[..., None]
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
        out: Tensor = self.shared_out(pooled)
        return out

    def surrogate(self, tokens: Tensor, observed: Tensor, b_idx: Tensor, m_idx: Tensor) -> Tensor:
        """ẑ = Ψ_m(T_b, o_b) for pairs (b_idx, m_idx): (n, d_m). Slot m of sample b must be
        unobserved in ``observed`` (it is then never read)."""
        P = tokens.shape[2]
        out = tokens.new_zeros(b_idx.shape[0], self.d_m)
        for j in range(len(self.modalities)):
            sel = (m_idx == j).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            rows = b_idx[sel]
            keys = self._embed(tokens[rows])
            mask = observed[rows].repeat_interleave(P, dim=1)
            out = out.index_put((sel,), self.surrogates[j](keys, mask).to(out.dtype))
        return out

    def decode(self, j: int, f_y: Tensor, f_j: Tensor) -> Tensor:
        """Dec_j([f_y; f_j]): (n, P, D) tokens, or (n, F_j) features (``target="features"``)."""
        out: Tensor = self.decoders[j](torch.cat([f_y, f_j], dim=1))
        if self.decoder_pos is None:
            return out
        return out.reshape(-1, self.n_tokens, self.dim) + self.decoder_pos

    def decode_all(self, z_y: Tensor, z_m: Tensor) -> list[Tensor]:
        """Every modality decoded from factors z_y (B, d_y) and z_m (B, M, d_m)."""
        f_y = self.g_y(z_y)
        return [self.decode(j, f_y, self.g_m[j](z_m[:, j])) for j in range(len(self.modalities))]

    def factors(self, tokens: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        """(z_y (B, d_y), z_m (B, M, d_m)); z_m is Q_m of observed slots, 0 elsewhere."""
        z_y = self.shared(tokens, observed)
        z_m = tokens.new_zeros(tokens.shape[0], len(self.modalities), self.d_m)
        for j in range(len(self.modalities)):
            rows = observed[:, j].nonzero().squeeze(1)
            if rows.numel():
                z_m = z_m.index_put(
                    (rows, torch.full_like(rows, j)), self.specific(j, tokens[rows, j])
                )
        return z_y, z_m

    def reconstruct(
        self,
        tokens: Tensor,
        observed: Tensor,
        b_idx: Tensor,
        m_idx: Tensor,
        z_y: Tensor | None = None,
    ) -> list[Tensor]:
        """Decoder outputs for unobserved pairs (b_idx, m_idx), grouped by modality: entry j
        holds Dec_j([G_y(z_y); G_j(Ψ_j)]) for the pairs with m_idx == j, in their order
        (tokens (n_j, P, D) or raw features (n_j, F_j)). ``z_y``: Q_y(T, o) if already known."""
        f_y = self.g_y(self.shared(tokens, observed) if z_y is None else z_y)
        z_hat = self.surrogate(tokens, observed, b_idx, m_idx)
        out = []
        for j in range(len(self.modalities)):
            sel = (m_idx == j).nonzero().squeeze(1)
            out.append(self.decode(j, f_y[b_idx[sel]], self.g_m[j](z_hat[sel])))
        return out

    def generate(
        self,
        tokens: Tensor,
        observed: Tensor,
        b_idx: Tensor,
        m_idx: Tensor,
        context: CompletionContext,
        z_y: Tensor | None = None,
    ) -> Tensor:
        """Generated tokens (n, P, D) of unobserved pairs (b_idx, m_idx); with
        ``target="features"`` the model's encoder tokens of the generated raw features."""
        parts = self.reconstruct(tokens, observed, b_idx, m_idx, z_y)
        out = tokens.new_zeros(b_idx.shape[0], self.n_tokens, self.dim)
        for j, part in enumerate(parts):
            sel = (m_idx == j).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            if self.target == "features":
                if context.encode is None:
                    raise ValueError(
                        "mfm target='features' needs the model's encoders in its context "
                        "(context.encode) to turn generated features into tokens"
                    )
                part = context.encode(self.modalities[j], part)
            out = out.index_put((sel,), part.to(out.dtype))
        return out

    # ------------------------------------------------------------------ training terms
    def _targets(self, j: int, tokens: Tensor, rows: Tensor, context: CompletionContext) -> Tensor:
        """Reconstruction targets of modality j for batch rows ``rows``."""
        if self.target == "tokens":
            t = tokens[rows, j]
        else:
            if context.x is None:
                raise ValueError(
                    "mfm target='features' needs the batch's raw inputs (context.x) to train"
                )
            t = context.x[self.modalities[j]][rows].to(tokens.dtype)
        return t.detach() if self.detach_targets else t

    def losses(
        self,
        tokens: Tensor,
        observed: Tensor,
        context: CompletionContext,
        z_y: Tensor,
        z_m: Tensor,
    ) -> tuple[Tensor, dict[str, Any]]:
        """(weighted sum, detached unweighted terms and diagnostics) of a training batch."""
        M = len(self.modalities)
        zero = tokens.new_zeros(())
        f_y = self.g_y(z_y)
        terms: dict[str, Tensor] = {}
        # recon: observed slots through their own z_m
        errs, counts = [], []
        for j in range(M):
            rows = observed[:, j].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            rec = self.decode(j, f_y[rows], self.g_m[j](z_m[rows, j]))
            err = (rec - self._targets(j, tokens, rows, context)).pow(2).flatten(1).mean(1)
            errs.append(err.sum())
            counts.append(rows.numel())
        recon = torch.stack(errs).sum() / sum(counts) if counts else zero
        terms["recon"] = recon
        # surrogate: hide one observed modality of some samples with >= 2 observed
        sur = zero
        n_hidden = 0
        eligible = (observed.sum(1) >= 2).nonzero().squeeze(1)
        if self.p_hide > 0 and eligible.numel():
            dev = tokens.device
            pick = eligible[torch.rand(eligible.shape[0], device=dev) < self.p_hide]
            if pick.numel():
                u = torch.rand(pick.shape[0], M, device=dev)
                u = torch.where(observed[pick], u, torch.full_like(u, -1.0))
                hide = u.argmax(1)  # a uniformly drawn observed modality
                obs_h = observed[pick].clone()
                obs_h[torch.arange(pick.shape[0], device=dev), hide] = False
                sub_tokens = tokens[pick]
                z_hat = self.surrogate(
                    sub_tokens, obs_h, torch.arange(pick.shape[0], device=dev), hide
                )
                f_y_h = self.g_y(self.shared(sub_tokens, obs_h))
                z_true = z_m[pick, hide]
                z_true = z_true.detach() if self.detach_targets else z_true
                fac = (z_hat - z_true).pow(2).mean(1)
                rec_err = torch.zeros_like(fac)
                for j in range(M):
                    sel = (hide == j).nonzero().squeeze(1)
                    if sel.numel() == 0:
                        continue
                    rec = self.decode(j, f_y_h[sel], self.g_m[j](z_hat[sel]))
                    tgt = self._targets(j, tokens, pick[sel], context)
                    rec_err = rec_err.index_put((sel,), (rec - tgt).pow(2).flatten(1).mean(1))
                sur = (fac + self.lambda_rec * rec_err).mean()
                n_hidden = int(pick.numel())
        terms["surrogate"] = sur
        # mmd of every factor against a fresh prior sample
        mmds = []
        if z_y.shape[0] >= 2:
            mmds.append(mmd(z_y, torch.randn_like(z_y), self.kernel, self.unbiased))
        for j in range(M):
            rows = observed[:, j].nonzero().squeeze(1)
            if rows.numel() >= 2:
                z = z_m[rows, j]
                mmds.append(mmd(z, torch.randn_like(z), self.kernel, self.unbiased))
        terms["mmd"] = torch.stack(mmds).sum() if mmds else zero
        # label term on the shared factor
        label_skipped = None
        if self.label_head is None:
            label_skipped = "n_classes not given"
        elif context.y is None:
            label_skipped = "no labels in the batch"
        label = zero
        if label_skipped is None and self.label_head is not None and context.y is not None:
            label = F.cross_entropy(self.label_head(f_y).float(), context.y.long())
        terms["label"] = label
        total = (
            self.lambda_rec * recon
            + self.lambda_sur * sur
            + self.lambda_mmd * terms["mmd"]
            + self.lambda_y * label
        )
        info: dict[str, Any] = {
            "losses": {k: v.detach() for k, v in terms.items()},
            "surrogate_hidden": n_hidden,
        }
        if label_skipped is not None:
            info["label_skipped"] = label_skipped
        return total, info

    @torch.no_grad()
    def _recon_errors(
        self, tokens: Tensor, observed: Tensor, z_y: Tensor, z_m: Tensor, context: CompletionContext
    ) -> dict[str, Tensor]:
        """Per modality: (sum of squared-error means, count) over observed slots (eval)."""
        f_y = self.g_y(z_y)
        out: dict[str, Tensor] = {}
        for j, m in enumerate(self.modalities):
            rows = observed[:, j].nonzero().squeeze(1)
            if rows.numel() == 0 or (self.target == "features" and context.x is None):
                continue
            rec = self.decode(j, f_y[rows], self.g_m[j](z_m[rows, j]))
            err = (rec - self._targets(j, tokens, rows, context)).pow(2).flatten(1).mean(1)
            out[m] = torch.stack([err.sum(), err.new_tensor(float(rows.numel()))])
        return out

    # ------------------------------------------------------------------ the interface
    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        gen, loss, info = self.run(tokens, observed, context)
        b_idx, m_idx = (~observed).nonzero(as_tuple=True)
        completed = tokens.index_put((b_idx, m_idx), gen) if b_idx.numel() else tokens
        return CompletionOutput(completed, self.no_loss(tokens), info, loss)

    def run(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """(generated tokens (n, P, D) of the unobserved pairs in ``nonzero`` order, the
        weighted training loss (None in eval), info). For methods that compose MFM."""
        b_idx, m_idx = (~observed).nonzero(as_tuple=True)
        z_y, z_m = self.factors(tokens, observed)
        gen = self.generate(tokens, observed, b_idx, m_idx, context, z_y)
        info: dict[str, Any] = {
            "regenerated": torch.bincount(m_idx, minlength=len(self.modalities)).detach()
        }
        loss = None
        if context.training:
            loss, extra = self.losses(tokens, observed, context, z_y, z_m)
            info.update(extra)
            info["factors"] = {"z_y": z_y.detach(), "z_m": z_m.detach()}
        else:
            info["recon_error"] = self._recon_errors(tokens, observed, z_y, z_m, context)
        return gen, loss, info

    # ------------------------------------------------------------------ reporting hooks
    def summarize(self, infos: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Over an evaluation set: regenerated slots per modality and the mean reconstruction
        error of observed slots through their own factors (tokens or raw features)."""
        regen = {m: 0 for m in self.modalities}
        sums: dict[str, list[float]] = {}
        for info in infos:
            counts = info.get("regenerated")
            if counts is not None:
                for j, m in enumerate(self.modalities):
                    regen[m] += int(counts[j])
            for m, v in info.get("recon_error", {}).items():
                s = sums.setdefault(m, [0.0, 0.0])
                s[0] += float(v[0])
                s[1] += float(v[1])
        if not infos:
            return None
        return {
            "target": self.target,
            "regenerated": regen,
            "recon_mse_observed": {m: (s[0] / s[1] if s[1] else math.nan) for m, s in sums.items()},
        }

    def report(self, summary: dict[str, Any], out_dir: Path) -> list[Path]:
        """``mfm.md``: regenerated slots and reconstruction errors per modality."""
        lines = [
            f"# MFM ({summary['target']} space)",
            "",
            "| modality | regenerated slots | reconstruction MSE of observed slots |",
            "|---|---|---|",
        ]
        rec = summary.get("recon_mse_observed", {})
        for m, n in summary.get("regenerated", {}).items():
            lines.append(f"| {m} | {n} | {rec.get(m, math.nan):.4g} |")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "mfm.md"
        path.write_text("\n".join(lines) + "\n")
        return [path]
