"""I2MoE head: the tests of SEED_METHODS.md 2.9 (weights, temperature, reduction, loss
semantics, eligibility, pass counting, gradients, global weights, reweighting input) and a
synthetic task on which the matching interaction expert's weight rises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from heads_util import MODS, C, D, P, arch, batch, ctx
from torch import nn

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads import HeadContext, I2MoEHead, TransformerHead, create_head
from moe_retriever.heads.i2moe import redundancy_loss, synergy_loss, uniqueness_loss

K = len(MODS) + 2


def _head(**options: object) -> I2MoEHead:
    torch.manual_seed(0)
    head = create_head("i2moe", MODS, P, D, C, arch(), **options)
    assert isinstance(head, I2MoEHead)
    return head


@pytest.mark.parametrize("training", [True, False])
def test_weights_are_a_distribution_over_k_experts(training: bool) -> None:
    head = _head().train(training)
    assert len(head.experts) == K and head.expert_names() == ["U_a", "U_b", "U_c", "S", "R"]
    tokens, observed, y = batch()
    out = head(tokens, observed, ctx(False, training=training, y=y if training else None))
    w = out.info["interpret"]["weights"]
    assert w.shape == (6, K) and bool((w >= 0).all())
    torch.testing.assert_close(w.sum(-1), torch.ones(6), atol=1e-6, rtol=0)
    assert out.info["interpret"]["expert_logits"].shape == (6, K, C)
    assert out.logits.shape == (6, C)


def test_temperature_limits() -> None:
    tokens, observed, _ = batch()
    hot = _head(tau=1e6).eval()(tokens, observed, ctx(False)).info["interpret"]["weights"]
    torch.testing.assert_close(hot, torch.full((6, K), 1.0 / K), atol=1e-5, rtol=0)
    cold = _head(tau=1e-6).eval()(tokens, observed, ctx(False)).info["interpret"]["weights"]
    assert torch.equal(cold.max(-1).values, torch.ones(6))
    assert int((cold > 0).sum()) == 6


@pytest.mark.parametrize("masked", [False, True])
def test_reduces_to_the_base_fusion_with_tied_experts(masked: bool) -> None:
    head = _head(lambda_int=0.0).train()
    shared = head.experts[0]
    head.experts = nn.ModuleList([shared] * K)
    tokens, observed, y = batch()
    out = head(tokens, observed, ctx(masked, training=True, y=y))
    base = TransformerHead(MODS, P, D, C, arch())
    base.load_state_dict(shared.state_dict())
    expected = base(tokens, observed, ctx(masked)).logits
    torch.testing.assert_close(out.logits, expected, atol=1e-6, rtol=1e-6)
    assert float(out.aux_loss) == 0.0 and "interaction" not in out.info["losses"]


def test_uniqueness_loss_semantics() -> None:
    B, M, margin = 4, 3, 1.0
    a = torch.zeros(B, C)
    far, near = torch.full((B, C), 3.0), torch.full((B, C), 0.1)
    valid = torch.ones(B, M, dtype=torch.bool)
    perturbed = torch.stack([far, near, near], 1)  # slot 0 = the negative of U_0
    assert float(uniqueness_loss(a, perturbed, 0, valid, margin)) == 0.0
    swapped = torch.stack([near, far, near], 1)
    assert float(uniqueness_loss(a, swapped, 0, valid, margin)) >= margin / (M - 1)
    # no eligible pair: 0, not NaN
    none = torch.zeros(B, M, dtype=torch.bool)
    assert float(uniqueness_loss(a, swapped, 0, none, margin)) == 0.0


class Reader(nn.Module):
    """A tiny linear expert that reads only one modality's tokens."""

    def __init__(self, modality: int) -> None:
        super().__init__()
        self.modality = modality
        self.lin = nn.Linear(D, C)
        torch.nn.init.normal_(self.lin.weight, std=1.0)

    def forward(self, tokens: torch.Tensor, observed: torch.Tensor, context: HeadContext):
        from moe_retriever.heads import HeadOutput

        logits = self.lin(tokens[:, self.modality].mean(1))
        return HeadOutput(logits, logits.new_zeros(()), {"losses": {"balance": torch.zeros(())}})


def test_uniqueness_loss_is_low_for_an_expert_reading_its_own_modality() -> None:
    """L_U_0 of an expert that reads modality 0 is lower than of the same expert reading
    modality 1 (gaussian perturbation, fixed generator), through the head and directly."""
    tokens, _, y = batch()
    full = torch.ones(6, 3, dtype=torch.bool)
    losses = []
    with torch.no_grad():
        for reads in (0, 1):
            head = _head(lambda_int=1.0).train()
            torch.manual_seed(1)
            reader = Reader(reads)
            head.experts = nn.ModuleList([reader] * K)
            y0 = reader(tokens, full, ctx(False)).logits
            terms = head.interaction_losses(
                tokens, full, ctx(False, training=True, y=y, seed=7), y0[:, None].expand(6, K, C)
            )
            perturbed = [
                reader(*head.perturb(tokens, full, j, ctx(False, True, seed=7 + j))).logits
                for j in range(3)
            ]
            direct = uniqueness_loss(y0, torch.stack(perturbed, 1), 0, full, 1.0)
            losses.append((float(terms["uniqueness_a"]), float(direct)))
    assert losses[0][0] < losses[1][0]
    assert losses[0][1] < losses[1][1]


def test_synergy_and_redundancy_semantics() -> None:
    a = torch.randn(5, C)
    same = a[:, None].expand(5, 3, C)
    valid = torch.ones(5, 3, dtype=torch.bool)
    assert float(redundancy_loss(a, same, valid)) == pytest.approx(0.0, abs=1e-6)
    assert float(synergy_loss(a, same, valid)) == pytest.approx(1.0, abs=1e-6)
    assert float(synergy_loss(a, -same, valid)) == pytest.approx(-1.0, abs=1e-6)
    # only eligible pairs count
    mixed = torch.stack([a, -a, a], 1)
    only = torch.tensor([[True, False, True]] * 5)
    assert float(synergy_loss(a, mixed, only)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("perturbation", ["gaussian", "zero", "mean", "mask"])
def test_masked_mode_interaction_loss_ignores_missing_slots(perturbation: str) -> None:
    tokens, observed, y = batch()
    other = torch.where(observed[:, :, None, None], tokens, torch.randn_like(tokens) * 3)
    results = []
    for t in (tokens, other):
        head = _head(perturbation=perturbation, lambda_int=1.0).train()
        head.reweight.eval()  # dropout off: compare two forwards
        out = head(t, observed, ctx(True, training=True, y=y, seed=3))
        results.append((out.logits, out.info["losses"]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=0)
    for key, value in results[0][1].items():
        assert torch.isfinite(value), key
        torch.testing.assert_close(value, results[1][1][key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("masked", [False, True])
def test_no_two_observed_modalities_gives_finite_losses(masked: bool) -> None:
    tokens, _, y = batch()
    single = torch.zeros(6, 3, dtype=torch.bool)
    single[torch.arange(6), torch.tensor([0, 1, 2, 0, 1, 2])] = True
    head = _head(lambda_int=1.0).train()
    losses = head(tokens, single, ctx(masked, training=True, y=y)).info["losses"]
    for key, value in losses.items():
        assert torch.isfinite(value), key
    for m in MODS:
        assert float(losses[f"uniqueness_{m}"]) == 0.0  # no positive anywhere
    if not masked:
        return
    # S and R over the (sample, own modality) pairs only: in masked mode the mask
    # perturbation keeps a lone slot, so the perturbed output equals the anchor
    mask_head = _head(lambda_int=1.0, perturbation="mask").train()
    mask_head.reweight.eval()
    out = mask_head(tokens, single, ctx(masked, training=True, y=y))
    assert float(out.info["losses"]["synergy"]) == pytest.approx(1.0, abs=1e-5)
    assert float(out.info["losses"]["redundancy"]) == pytest.approx(0.0, abs=1e-5)


def _count_passes(head: I2MoEHead) -> list[int]:
    calls = [0]
    for expert in head.experts:
        expert.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(("n_perturb", "passes"), [(None, K * 4), (1, K * 2), (2, K * 3)])
def test_pass_counting(n_perturb: int | None, passes: int) -> None:
    head = _head(n_perturb=n_perturb).train()
    calls = _count_passes(head)
    tokens, observed, y = batch()
    losses = head(tokens, observed, ctx(False, training=True, y=y)).info["losses"]
    assert calls[0] == passes
    n_unique = sum(k.startswith("uniqueness_") for k in losses)
    assert n_unique == (3 if n_perturb is None else n_perturb)  # only perturbed modalities
    head.eval()
    calls[0] = 0
    a = head(tokens, observed, ctx(False)).logits
    b = head(tokens, observed, ctx(False)).logits
    assert calls[0] == 2 * K and torch.equal(a, b)


def test_gradients_reach_every_parameter() -> None:
    """L_int alone reaches every expert; L_task reaches the reweighting MLP; after one step on
    a full batch no parameter is without a gradient."""
    tokens, _, y = batch()
    full = torch.ones(6, 3, dtype=torch.bool)
    head = _head(lambda_int=1.0).train()
    out = head(tokens, full, ctx(False, training=True, y=y))
    out.aux_loss.backward()
    # the triplet loss of a uniqueness expert U_i compares distances between that expert's own
    # outputs, which a shift of its output bias leaves unchanged: L_int gives that bias an
    # exact zero gradient (the full objective below reaches it through L_task); any nonzero
    # value was floating-point noise that depended on the thread count
    out_bias = [n for n, _ in head.experts[0].named_parameters() if n.endswith("bias")][-1]
    n_unique = len(MODS)
    for k, expert in enumerate(head.experts):
        for name, p in expert.named_parameters():
            if k < n_unique and name == out_bias:
                assert p.grad is None or float(p.grad.abs().max()) < 1e-6, name
                continue
            assert p.grad is not None and p.grad.abs().sum() > 0, f"experts.{k}.{name}"
    head.zero_grad()
    out = head(tokens, full, ctx(False, training=True, y=y))
    F.cross_entropy(out.logits, y).backward()
    for name, p in head.reweight.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"reweight.{name}"
    head.zero_grad()
    out = head(tokens, full, ctx(False, training=True, y=y))
    (F.cross_entropy(out.logits, y) + out.aux_loss).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_global_weights_average_back(tmp_path: Path) -> None:
    head = _head().eval()
    tokens, observed, _ = batch()
    interp = head(tokens, observed, ctx(False)).info["interpret"]
    y = torch.tensor([0, 1, 2, 0, 1, 1])
    summary = head.summarize(interp, y, observed)
    assert summary is not None
    w = interp["weights"].double()
    overall = torch.tensor(summary["overall"]["weights"], dtype=torch.float64)
    torch.testing.assert_close(overall, w.mean(0))
    for groups in (summary["per_combination"], summary["per_class"]):
        n = sum(g["n"] for g in groups.values())
        back = sum(
            torch.tensor(g["weights"], dtype=torch.float64) * g["n"] for g in groups.values()
        )
        assert n == 6
        torch.testing.assert_close(back / n, overall)
    torch.testing.assert_close(
        torch.tensor(summary["per_class"]["1"]["weights"], dtype=torch.float64), w[y == 1].mean(0)
    )
    lo, hi = summary["weight_sum_range"]
    assert abs(lo - 1) < 1e-6 and abs(hi - 1) < 1e-6
    files = head.report(summary, tmp_path)
    assert {f.name for f in files} == {
        "interaction_weights.png",
        "interaction_weights.json",
        "interaction_weights.md",
    }
    assert json.loads((tmp_path / "interaction_weights.json").read_text()) == summary
    md = (tmp_path / "interaction_weights.md").read_text()
    assert "| overall | 6 |" in md and "| observed a+b+c | 2 |" in md


@pytest.mark.parametrize(("use_mask", "width"), [(True, 3 * D + 3), (False, 3 * D)])
def test_reweighting_input(use_mask: bool, width: int) -> None:
    head = _head(rw_use_mask=use_mask)
    first = head.reweight.net[0]
    assert isinstance(first, nn.Linear) and first.in_features == width
    tokens, observed, _ = batch()
    head.eval()
    w1 = head(tokens, observed, ctx(False)).info["interpret"]["weights"]
    w2 = head(tokens, torch.ones_like(observed), ctx(False)).info["interpret"]["weights"]
    # completed mode: the mask reaches the weights only through the reweighting input
    assert torch.allclose(w1, w2) != use_mask


def test_expert_init_copy_starts_identical() -> None:
    copied = _head(expert_init="copy")
    fresh = _head()
    for head, same in ((copied, True), (fresh, False)):
        first = head.experts[0].state_dict()
        for expert in head.experts[1:]:
            equal = all(torch.equal(first[k], v) for k, v in expert.state_dict().items())
            assert equal == same


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tau": 0.0}, "tau must be > 0"),
        ({"perturbation": "blur"}, "perturbation must be one of gaussian, zero, mean, mask"),
        ({"n_perturb": 4}, r"n_perturb must be in \[1, 3\]"),
        ({"expert_init": "shared"}, "expert_init must be one of independent, copy"),
        ({"rw_dropout": 1.0}, r"rw_dropout must be in \[0, 1\)"),
        ({"lamda_int": 0.1}, "valid options: tau, rw_layers"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_head("i2moe", MODS, P, D, C, arch(), **options)


# ---------------------------------------------------------------------------- synthetic task
def _task(kind: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two modalities, P = 2 tokens each; token 1 = -token 0, so the mean-pooled tokens the
    reweighting MLP reads are 0 and it cannot classify by itself: its weights must pick the
    expert that does. ``unique``: label = sign of modality a's first feature (a's uniqueness);
    ``xor``: label = XOR of both modalities' signs (synergy)."""
    t0 = torch.randn(n, 2, 1, 8, generator=g)
    tokens = torch.cat([t0, -t0], dim=2)
    s = t0[:, :, 0, 0] > 0
    y = s[:, 0] if kind == "unique" else s[:, 0] ^ s[:, 1]
    return tokens, y.long()


def _train_weights(kind: str, steps: int = 200) -> torch.Tensor:
    torch.manual_seed(0)
    cfg = ModelConfig(n_tokens=2, dim=8, n_heads=1, head_hidden=16, dropout=0.0)
    head = create_head(
        "i2moe",
        ["a", "b"],
        2,
        8,
        2,
        cfg,
        lambda_int=1.0,
        rw_layers=1,
        rw_hidden=16,
        rw_dropout=0.0,
    )
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    full = torch.ones(64, 2, dtype=torch.bool)
    for step in range(steps):
        tokens, y = _task(kind, 64, g)
        head.generator.manual_seed(step)
        ctx_ = HeadContext(training=True, masked=False, generator=head.generator, y=y)
        out = head(tokens, full, ctx_)
        loss = F.cross_entropy(out.logits, y) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    tokens, _ = _task(kind, 256, torch.Generator().manual_seed(99))
    with torch.no_grad():
        out = head(tokens, torch.ones(256, 2, dtype=torch.bool), HeadContext())
    return out.info["interpret"]["weights"].mean(0)  # U_a, U_b, S, R


def test_weights_follow_the_interaction_that_carries_the_label() -> None:
    """Label carried by modality a alone: U_a outweighs U_b and has more weight than on the
    XOR task; label = XOR of a and b: the synergy expert has the most weight, and more than on
    the uniqueness task. Seeds 0-3 of this setup: ``benchmarks/i2moe_weights.py --layout
    cancel`` (docs/SEED_METHODS_IMPL.md)."""
    unique, xor = _train_weights("unique"), _train_weights("xor")
    assert unique[0] > unique[1] and unique[0] > xor[0] + 0.1
    assert int(xor.argmax()) == 2 and xor[2] > unique[2] + 0.2
