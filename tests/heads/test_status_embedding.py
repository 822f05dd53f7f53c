"""The fusion's observation-status embedding (``model.status_embedding``): completed mode only,
zero at the start, tells the head which slots the completion filled, reaches the objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from heads_util import MODS, C, D, P, arch, batch, ctx

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads import create_head
from moe_retriever.model import MultimodalClassifier


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    with_status = create_head("transformer", MODS, P, D, C, arch(status_embedding=True))
    torch.manual_seed(0)
    without = create_head("transformer", MODS, P, D, C, arch(status_embedding=False))
    return with_status.eval(), without.eval()


def test_zero_at_the_start_so_the_head_begins_as_without_it() -> None:
    with_status, without = _pair()
    tokens, observed, _ = batch()
    a = with_status(tokens, observed, ctx(False)).logits
    b = without(tokens, observed, ctx(False)).logits
    torch.testing.assert_close(a, b)


def test_the_head_can_tell_a_completed_slot_from_an_observed_one() -> None:
    with_status, without = _pair()
    with torch.no_grad():
        with_status.fusion.status_emb.copy_(torch.randn(2, D))
    tokens, _, _ = batch()
    full = torch.ones(tokens.shape[0], len(MODS), dtype=torch.bool)
    one_completed = full.clone()
    one_completed[:, 1] = False  # same tokens, slot b marked as completed
    assert not torch.allclose(
        with_status(tokens, full, ctx(False)).logits,
        with_status(tokens, one_completed, ctx(False)).logits,
    )
    # without it, the same tokens give the same logits whatever the mask says
    torch.testing.assert_close(
        without(tokens, full, ctx(False)).logits, without(tokens, one_completed, ctx(False)).logits
    )


def test_both_rows_get_a_gradient_from_a_mixed_batch() -> None:
    with_status, _ = _pair()
    tokens, observed, y = batch()
    out = with_status.train()(tokens, observed, ctx(False, training=True, y=y))
    F.cross_entropy(out.logits, y).backward()
    grad = with_status.fusion.status_emb.grad
    assert grad is not None and bool((grad.abs().sum(dim=1) > 0).all())


def test_masked_mode_heads_get_none_and_completed_mode_heads_get_it() -> None:
    dims = {"a": 5, "b": 4, "c": 6}
    cfg = ModelConfig(n_tokens=P, dim=D, n_heads=2, head_hidden=16, status_embedding=True)
    masked = MultimodalClassifier(dims, C, cfg, completion="none")
    completed = MultimodalClassifier(dims, C, cfg, completion="moe-retriever")
    assert not any("status_emb" in n for n, _ in masked.named_parameters())
    assert any("status_emb" in n for n, _ in completed.named_parameters())
    off = MultimodalClassifier(dims, C, ModelConfig(n_tokens=P, dim=D, n_heads=2), "zero")
    assert not any("status_emb" in n for n, _ in off.named_parameters())  # the default: off


def test_entries_hidden_by_self_supervision_are_marked_observed() -> None:
    """The mark says what the data lacks: an entry hidden for retrieval self-supervision is
    completed but keeps the observed mark, so in training as at test the "missing" mark means
    the data lacks the modality."""
    dims = {"a": 5, "b": 4, "c": 6}
    cfg = ModelConfig(
        n_tokens=P, dim=D, n_heads=2, head_hidden=16, status_embedding=True, retrieval_dropout=0.5
    )
    torch.manual_seed(0)
    model = MultimodalClassifier(dims, C, cfg, completion="moe-retriever").train()
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(40, 3, generator=g) < 0.7
    obs[obs.sum(1) == 0, 0] = True
    x = {
        m: torch.randn(40, d, generator=g) * obs[:, j, None]
        for j, (m, d) in enumerate(dims.items())
    }
    model.set_training_pool(x, obs)
    seen: dict[str, torch.Tensor] = {}

    def grab(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen["status"], seen["observed"] = kwargs["status"], args[1] if len(args) > 1 else None

    model.head.fusion.register_forward_pre_hook(grab, with_kwargs=True)
    assert model.hide_generator is not None
    model.hide_generator.manual_seed(0)
    model(x, obs)
    torch.testing.assert_close(seen["status"], obs)  # the data's mask, not observed & ~hidden
    model.hide_generator.manual_seed(0)
    assert bool(model._draw_hidden(obs).any())  # something was hidden in that step
