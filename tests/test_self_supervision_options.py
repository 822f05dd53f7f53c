"""Options of retrieval self-supervision. ``model.retrieval_dropout_match``: "modality" (true),
modality m is hidden with probability min(retrieval_dropout, the training pool's missing share
of m); "pool", every modality with min(retrieval_dropout, the pool's share of missing entries);
off, every modality is hidden at retrieval_dropout with exactly the draws it had before.
``model.hidden_head_input``: the head sees a hidden entry's retrieved tokens ("completed") or
its real ones ("real"). ``model.align_contrast``: an InfoNCE term in the alignment loss.
``model.align_loss``: its base term, 1 - cosine or the relative MSE (1 - R² per modality). That
every parameter gets a gradient with each option is tested in tests/test_model.py."""

from __future__ import annotations

import math

import pytest
import torch

from moe_retriever.model import ModelConfig, MultimodalClassifier

SMALL = dict(n_tokens=4, dim=16, n_heads=2, head_hidden=16, dropout=0.0)
DIMS = {"always": 5, "half": 4, "rare": 6}


def _pool(n: int = 400) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    obs = torch.ones(n, 3, dtype=torch.bool)
    obs[: n // 2, 1] = False  # "half" misses in 50 % of the pool
    obs[: n // 20, 2] = False  # "rare" misses in 5 %
    x = {
        m: torch.randn(n, d, generator=g) * obs[:, j, None] for j, (m, d) in enumerate(DIMS.items())
    }
    return x, obs


def _model(match: bool | str, p: float = 0.3) -> MultimodalClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, retrieval_dropout=p, retrieval_dropout_match=match)  # type: ignore[arg-type]
    return MultimodalClassifier(DIMS, 3, cfg, "moe-retriever").train()


def _seeded(match: bool | str, seed: int) -> tuple[MultimodalClassifier, torch.Tensor]:
    """A model with the pool of :func:`_pool` and its hiding generator seeded; the mask."""
    x, obs = _pool()
    model = _model(match)
    model.set_training_pool(x, obs)
    assert model.hide_generator is not None
    model.hide_generator.manual_seed(seed)
    return model, obs


def test_probability_is_capped_by_the_pool_missing_share() -> None:
    x, obs = _pool()
    model = _model(True)
    model.set_training_pool(x, obs)
    torch.testing.assert_close(model.hide_probability, torch.tensor([0.0, 0.3, 0.05]))
    off = _model(False)
    off.set_training_pool(x, obs)
    torch.testing.assert_close(off.hide_probability, torch.full((3,), 0.3))


def test_pool_mode_caps_every_modality_by_the_pool_share_of_missing_entries() -> None:
    """Pool shares 0, 0.5 and 0.05: 0.55 / 3 of the entries are missing, under the 0.3 cap;
    below the share the cap wins; a pool that misses nothing hides nothing."""
    x, obs = _pool()
    share = float((~obs).float().mean())
    assert abs(share - 0.55 / 3) < 1e-6
    model = _model("pool")
    model.set_training_pool(x, obs)
    torch.testing.assert_close(model.hide_probability, torch.full((3,), share))
    capped = _model("pool", p=0.1)
    capped.set_training_pool(x, obs)
    torch.testing.assert_close(capped.hide_probability, torch.full((3,), 0.1))
    full = _model("pool")
    full.set_training_pool(x, torch.ones_like(obs))
    torch.testing.assert_close(full.hide_probability, torch.zeros(3))
    assert full._draw_hidden(obs) is None  # nothing to hide: no draw, no hidden mask


def test_pool_mode_draws_at_the_shared_rate() -> None:
    model, _ = _seeded("pool", 2)
    hidden = model._draw_hidden(torch.ones(20000, 3, dtype=torch.bool))
    assert hidden is not None
    rates = hidden.float().mean(dim=0)
    assert all(abs(float(r) - 0.55 / 3) < 0.02 for r in rates)


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (True, "modality"),
        (False, "off"),
        ("true", "modality"),
        ("false", "off"),
        ("modality", "modality"),
        ("pool", "pool"),
    ],
)
def test_match_spellings(value: bool | str, mode: str) -> None:
    """Booleans (and their command-line strings) are the earlier spellings of off / modality."""
    assert _model(value).match_mode == mode


def test_an_unknown_match_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="must be one of off, modality, pool"):
        _model("sample")


def test_a_modality_the_data_always_has_is_never_hidden_and_rates_follow() -> None:
    model, _ = _seeded(True, 1)
    full = torch.ones(20000, 3, dtype=torch.bool)
    hidden = model._draw_hidden(full)
    assert hidden is not None
    assert not bool(hidden[:, 0].any())
    rates = hidden.float().mean(dim=0)
    assert abs(float(rates[1]) - 0.3) < 0.02 and abs(float(rates[2]) - 0.05) < 0.01


def test_off_keeps_the_uniform_draws() -> None:
    """The default (off) draws exactly what a uniform ``u < retrieval_dropout`` draws."""
    model, obs = _seeded(False, 3)
    hidden = model._draw_hidden(obs)
    u = torch.rand(obs.shape, generator=torch.Generator().manual_seed(3))
    eligible = obs & (obs.sum(dim=1, keepdim=True) >= 2)
    expected = eligible & (u < 0.3)
    all_hidden = (expected == eligible).all(dim=1) & eligible.any(dim=1)
    assert hidden is not None
    assert torch.equal(hidden[~all_hidden], expected[~all_hidden])


def test_real_head_input_gives_the_head_the_hidden_entries_real_tokens() -> None:
    x, obs = _pool(60)
    obs[::3, 0] = False  # some natural missingness in every modality
    for m, v in x.items():
        v[~obs[:, list(DIMS).index(m)]] = 0.0
    seen: dict[str, torch.Tensor] = {}

    def grab(_module: torch.nn.Module, args: tuple) -> None:
        seen["tokens"], seen["observed"] = args[0], args[1]

    for mode in ("completed", "real"):
        torch.manual_seed(0)
        cfg = ModelConfig(**SMALL, retrieval_dropout=0.5, hidden_head_input=mode)  # type: ignore[arg-type]
        model = MultimodalClassifier(DIMS, 3, cfg, "moe-retriever").train()
        model.set_training_pool(x, obs)
        hook = model.head.register_forward_pre_hook(grab)
        assert model.hide_generator is not None
        model.hide_generator.manual_seed(0)
        out = model(x, obs)
        hook.remove()
        model.hide_generator.manual_seed(0)
        hidden = model._draw_hidden(obs)
        assert hidden is not None and bool(hidden.any())
        enc = model.encode(x, obs)
        if mode == "real":
            torch.testing.assert_close(seen["tokens"][hidden], enc[hidden])
            assert torch.equal(seen["observed"], obs)
        else:  # the retrieved tokens, which the model also returns
            torch.testing.assert_close(seen["tokens"][hidden], out.tokens[hidden])
            assert not torch.allclose(seen["tokens"][hidden], enc[hidden])
            assert torch.equal(seen["observed"], obs & ~hidden)


def test_hidden_head_input_is_checked() -> None:
    with pytest.raises(ValueError, match="hidden_head_input"):
        _model_with(hidden_head_input="true")


def _model_with(**kw: object) -> MultimodalClassifier:
    return MultimodalClassifier(DIMS, 3, ModelConfig(**SMALL, **kw), "moe-retriever")  # type: ignore[arg-type]


def test_contrastive_alignment_scores_a_collapse_and_prefers_the_own_sample() -> None:
    from moe_retriever.model import _contrastive_alignment

    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 4, 8, generator=g)
    modality = torch.tensor([0, 0, 0, 1, 1, 2])  # the lone modality-2 entry adds nothing
    collapsed = target[:5].mean(dim=0, keepdim=True).expand(6, 4, 8)
    loss = _contrastive_alignment(collapsed, target, modality, temperature=1.0)
    # one query for the whole group: its mean CE is at least log(group size) (chance), since
    # logsumexp of n scores is at least their mean plus log n
    chance = (3 * math.log(3) + 2 * math.log(2)) / 5
    assert float(loss) >= chance - 1e-6
    exact = _contrastive_alignment(target, target, modality, temperature=0.05)
    assert float(exact) < 0.05  # its own sample's tokens win by far
    alone = _contrastive_alignment(target[:1], target[:1], modality[:1], temperature=0.1)
    assert float(alone) == 0.0


def test_contrastive_alignment_reaches_the_objective() -> None:
    """The InfoNCE term is in the auxiliary loss (its gradients: tests/test_model.py)."""
    x, obs = _pool(60)
    losses = []
    for contrast in (0.0, 1.0):
        torch.manual_seed(0)
        cfg = ModelConfig(**SMALL, retrieval_dropout=0.5, align_contrast=contrast)  # type: ignore[arg-type]
        model = MultimodalClassifier(DIMS, 3, cfg, "moe-retriever").train()
        model.set_training_pool(x, obs)
        assert model.hide_generator is not None
        model.hide_generator.manual_seed(0)
        losses.append(float(model(x, obs).aux_loss.detach()))
    assert losses[1] > losses[0]


def test_relative_mse_is_one_minus_r2_of_the_true_tokens_per_modality() -> None:
    """0 for the true tokens, exactly 1 for each modality's batch mean (a collapse cannot do
    better), above 1 for a constant elsewhere, the same after a common rescaling."""
    from moe_retriever.model import _relative_mse

    g = torch.Generator().manual_seed(0)
    target = torch.randn(7, 2, 3, generator=g)
    target[4:] += 5.0  # modality 1 sits elsewhere: centring is per modality
    modality = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    assert float(_relative_mse(target, target, modality, 2)) == pytest.approx(0.0, abs=1e-9)
    means = torch.cat(
        [target[:4].mean(0, keepdim=True).expand(4, -1, -1), target[4:].mean(0).expand(3, -1, -1)]
    )
    assert float(_relative_mse(means, target, modality, 2)) == pytest.approx(1.0, rel=1e-5)
    # one mean over both modalities is a worse constant than each modality's own
    pooled = target.mean(0, keepdim=True).expand_as(target)
    assert float(_relative_mse(pooled, target, modality, 2)) > 1.5
    noisy = target + 0.3 * torch.randn(target.shape, generator=g)
    base = float(_relative_mse(noisy, target, modality, 2))
    assert float(_relative_mse(4 * noisy, 4 * target, modality, 2)) == pytest.approx(base, rel=1e-5)
    # a completion at the right direction but the wrong scale is penalised (the cosine is not)
    assert float(_relative_mse(3 * target, target, modality, 2)) > 1.0


def test_relative_mse_alignment_is_the_objective_with_its_weight() -> None:
    """aux_loss = align_weight * relative MSE over the hidden entries (balance off)."""
    from moe_retriever.model import _relative_mse

    x, obs = _pool(60)
    torch.manual_seed(0)
    cfg = ModelConfig(  # type: ignore[arg-type]
        **SMALL,
        retrieval_dropout=0.5,
        align_weight=2.0,
        balance_weight=0.0,
        align_loss="relative_mse",
    )
    model = MultimodalClassifier(DIMS, 3, cfg, "moe-retriever").train()
    model.set_training_pool(x, obs)
    assert model.hide_generator is not None
    model.hide_generator.manual_seed(3)
    out = model(x, obs, pool_index=torch.arange(60))
    model.hide_generator.manual_seed(3)
    hidden = model._draw_hidden(obs)
    assert hidden is not None and bool(hidden.any())
    true = model.encode(x, obs).detach()
    expected = _relative_mse(out.tokens[hidden], true[hidden], hidden.nonzero()[:, 1], 3)
    assert float(out.aux_loss.detach()) == pytest.approx(2.0 * float(expected.detach()), rel=1e-4)


def test_an_unknown_align_loss_is_refused() -> None:
    cfg = ModelConfig(**SMALL, align_loss="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="align_loss must be one of cosine, relative_mse"):
        MultimodalClassifier(DIMS, 3, cfg, "moe-retriever")


def test_the_default_is_pool_and_draws_like_off_where_a_third_or_more_is_missing() -> None:
    """The library default hides like the earlier default (off) wherever 30 % or more of the
    pool's entries are missing: the same probabilities and the same draws."""
    assert ModelConfig().retrieval_dropout_match == "pool"
    x, obs = _pool()
    heavy = obs.clone()
    heavy[::3, 0] = False  # (1/3 + 0.5 + 0.05) / 3 = 0.29 -> 0.3 with the next line
    heavy[1::7, 2] = False
    assert float((~heavy).float().mean()) >= 0.3
    draws = []
    for match in ("pool", False):
        model = _model(match)
        model.set_training_pool(x, heavy)
        assert model.hide_generator is not None
        model.hide_generator.manual_seed(5)
        torch.testing.assert_close(model.hide_probability, torch.full((3,), 0.3))
        draws.append(model._draw_hidden(heavy))
    assert draws[0] is not None and draws[1] is not None
    assert torch.equal(draws[0], draws[1])
