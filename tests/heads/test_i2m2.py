"""I2M2 head: the tests of SEED_METHODS.md 1.9 (PoE identity, reductions to late fusion and to
the base model, missing invariance, gradient routing, interpretation) and the expert CE extra."""

from __future__ import annotations

import pytest
import torch
from heads_util import MODS, C, D, P, arch, batch, ctx
from torch import nn

from moe_retriever.heads import I2M2Head, TransformerHead, create_head
from moe_retriever.heads.i2m2 import UnimodalExpert


def _head(masked: bool = False, **options: object) -> I2M2Head:
    """The head as the model builds it: the default architecture, and no status embedding in
    masked mode (nothing to mark) whatever the default says."""
    torch.manual_seed(0)
    a = arch(status_embedding=False) if masked else arch()
    head = create_head("i2m2", MODS, P, D, C, a, **options)
    assert isinstance(head, I2M2Head)
    return head


def _experts(head: I2M2Head, tokens: torch.Tensor, observed: torch.Tensor, masked: bool):
    """Each expert's logits computed directly from its modules: (inter, [u_m])."""
    assert head.inter is not None and head.intra is not None
    inter = head.inter(tokens, observed, ctx(masked)).logits
    u = [e(tokens[:, m]) for m, e in enumerate(head.intra)]
    return inter, u


@pytest.mark.parametrize("masked", [False, True])
def test_poe_identity(masked: bool) -> None:
    """Logits = inter + the observed modalities' unimodal logits; log_softmax of the sum = the
    renormalised sum of the active experts' log-probabilities."""
    head = _head().eval()
    tokens, observed, _ = batch()
    if masked:
        tokens = tokens.masked_fill(~observed[:, :, None, None], 0.0)
    out = head(tokens, observed, ctx(masked))
    inter, u = _experts(head, tokens, observed, masked)
    expected = inter + sum(torch.where(observed[:, m, None], u[m], 0.0) for m in range(3))
    torch.testing.assert_close(out.logits, expected, atol=1e-6, rtol=0)
    logp = out.info["interpret"]["expert_logprobs"]  # (B, M+1, C), NaN where dropped
    assert logp.shape == (6, 4, C)
    assert torch.isnan(logp[:, :3]).equal(~observed[:, :, None].expand(-1, -1, C))
    summed = torch.nan_to_num(logp, nan=0.0).sum(dim=1)
    renorm = summed - summed.logsumexp(dim=1, keepdim=True)
    torch.testing.assert_close(torch.log_softmax(out.logits, 1), renorm, atol=1e-6, rtol=0)


class LateFusion(nn.Module):
    """A separate late-fusion model: one classifier per modality, logits summed."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(UnimodalExpert(D, C, arch(), 0) for _ in MODS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(sum(e(tokens[:, m]) for m, e in enumerate(self.experts)), 1)


def test_reduces_to_late_fusion_without_inter_expert() -> None:
    head = _head(experts="intra").eval()
    assert head.inter is None
    late = LateFusion()
    late.experts.load_state_dict(head.intra.state_dict())  # type: ignore[union-attr]
    tokens, _, _ = batch()
    full = torch.ones(6, 3, dtype=torch.bool)
    out = head(tokens, full, ctx(False))
    torch.testing.assert_close(torch.log_softmax(out.logits, 1), late(tokens), atol=1e-6, rtol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_reduces_to_base_model_without_unimodal_experts(masked: bool) -> None:
    head = _head(experts="inter").eval()
    assert head.intra is None
    base = TransformerHead(MODS, P, D, C, arch()).eval()
    base.load_state_dict(head.inter.state_dict())  # type: ignore[union-attr]
    tokens, observed, _ = batch()
    out = head(tokens, observed, ctx(masked))
    assert torch.equal(out.logits, base(tokens, observed, ctx(masked)).logits)


def _grads(head: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}


def test_masked_mode_ignores_missing_slots_in_logits_and_gradients() -> None:
    tokens, observed, y = batch()
    results = []
    for seed in (1, 2):
        head = _head().train()
        noise = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(seed)) * 5
        t = torch.where(observed[:, :, None, None], tokens, noise)
        out = head(t, observed, ctx(True, training=True, y=y))
        torch.nn.functional.cross_entropy(out.logits, y).backward()
        results.append((out.logits.detach(), _grads(head)))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=0)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-6, rtol=0, msg=name)


def test_completed_mode_drop_policy_zeroes_missing_unimodal_terms() -> None:
    """With policy drop, a missing slot's content reaches the logits only through the inter
    expert; with policy keep its unimodal expert reads it too."""
    tokens, observed, _ = batch()
    other = torch.where(observed[:, :, None, None], tokens, torch.randn_like(tokens))
    for policy, depends in (("drop", False), ("keep", True)):
        head = _head(policy=policy).eval()
        rest = []
        for t in (tokens, other):
            out = head(t, observed, ctx(False))
            rest.append(out.logits - head.inter(t, observed, ctx(False)).logits)  # type: ignore[misc]
        assert (not torch.allclose(rest[0], rest[1], atol=1e-5)) == depends, policy
    head = _head(policy="drop").eval()
    share = head(tokens, observed, ctx(False)).info["interpret"]["share"]
    assert torch.all(share[:, :3][~observed] == 0)


@pytest.mark.parametrize("masked", [False, True])
def test_gradient_routing(masked: bool) -> None:
    """Every active expert gets a gradient; the expert of a modality no sample observes gets
    exactly zero."""
    tokens, observed, y = batch()
    observed = observed.clone()
    observed[:, 1] = False
    observed[4, 0] = True  # keep every row non-empty
    observed[2, 2] = True
    head = _head(masked).train()
    out = head(tokens, observed, ctx(masked, training=True, y=y))
    torch.nn.functional.cross_entropy(out.logits, y).backward()
    assert head.intra is not None and head.inter is not None
    for m, expert in enumerate(head.intra):
        for name, p in expert.named_parameters():
            assert p.grad is not None, name
            if m == 1:
                assert torch.count_nonzero(p.grad) == 0, f"intra.{m}.{name}"
            else:
                assert p.grad.abs().sum() > 0, f"intra.{m}.{name}"
    for name, p in head.inter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"inter.{name}"


def test_interpretation_shapes_and_shares() -> None:
    head = _head().eval()
    tokens, observed, _ = batch()
    interp = head(tokens, observed, ctx(False)).info["interpret"]
    assert interp["expert_logprobs"].shape == (6, 4, C)
    share = interp["share"]
    assert share.shape == (6, 4)
    torch.testing.assert_close(share.abs().sum(dim=1), torch.ones(6), atol=1e-6, rtol=0)
    assert head.interpret_axes()["share"] == ["a", "b", "c", "inter"]
    summary = head.summarize(interp, torch.tensor([0, 1, 2, 0, 1, 2]), observed)
    assert summary is not None and summary["experts"] == ["a", "b", "c", "inter"]
    torch.testing.assert_close(
        torch.tensor(summary["overall"]["weights"], dtype=torch.float64),
        share.double().mean(0),
        atol=1e-9,
        rtol=0,
    )
    assert summary["per_combination"]["a+b+c"]["n"] == 2


def test_expert_ce_reaches_the_objective() -> None:
    """expert_ce_weight > 0 adds each expert's own CE: the auxiliary loss alone then reaches
    every expert; at weight 0 (the paper) there is no auxiliary loss."""
    tokens, observed, y = batch()
    off = _head(True).train()(tokens, observed, ctx(True, training=True, y=y))
    assert float(off.aux_loss) == 0.0 and "expert_ce" not in off.info["losses"]
    head = _head(True, expert_ce_weight=0.5).train()
    out = head(tokens, observed, ctx(True, training=True, y=y))
    assert float(out.info["losses"]["expert_ce"]) > 0
    torch.testing.assert_close(out.aux_loss, 0.5 * out.info["losses"]["expert_ce"])
    out.aux_loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # nothing in evaluation (no labels there)
    ev = head.eval()(tokens, observed, ctx(True))
    assert float(ev.aux_loss) == 0.0


def test_private_blocks_are_used() -> None:
    head = _head(private_blocks=1).train()
    tokens, observed, y = batch()
    out = head(tokens, observed, ctx(False, training=True, y=y))
    torch.nn.functional.cross_entropy(out.logits, y).backward()
    blocks = [p for n, p in head.named_parameters() if ".blocks." in n and n.startswith("intra")]
    assert blocks and all(p.grad is not None and p.grad.abs().sum() > 0 for p in blocks)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"policy": "ignore"}, "policy must be one of drop, keep"),
        ({"experts": "both"}, "experts must be one of all, intra, inter"),
        ({"expert_ce_weight": -1.0}, "expert_ce_weight must be >= 0"),
        ({"nope": 1}, "valid options: policy, experts"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_head("i2m2", MODS, P, D, C, arch(), **options)
