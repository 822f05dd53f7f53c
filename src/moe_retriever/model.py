"""The classifier, built from parts: encoders -> completion -> head (fusion + classifier).

``MultimodalClassifier`` is a plain ``nn.Module`` usable without our trainer. Each part is a
plain module too, given by name (a registry entry or an import path, with typed options) or as
an already-built module:

>>> model = MultimodalClassifier(dims, 3, ModelConfig(), completion="knn", head="transformer")
>>> model = MultimodalClassifier(dims, 3, arch, completion=my_completion, head=my_head,
...                              encoders={"image": my_cnn})

>>> model = MultimodalClassifier({"rna": 200, "protein": 50}, n_classes=3, config=ModelConfig())
>>> model.set_training_pool(train_x, train_observed)      # raw TRAINING inputs, zeros if missing
>>> out = model(batch_x, batch_observed, sample_keys=keys)  # retrieval on
>>> loss = F.cross_entropy(out.logits, y) + out.aux_loss    # aux_loss already weighted

Data flow for a batch (B samples, M modalities, P tokens of width D):

1. every modality's encoder (:mod:`moe_retriever.encoders`) maps its observed rows (B_m, F_m) to
   (B_m, P, D); missing slots are zeros -> tokens (B, M, P, D);
2. the completion method (:mod:`moe_retriever.completion`) fills the missing slots
   (``retrieve=False``: warm-up, they stay zero and the retriever is off);
3. the head (:mod:`moe_retriever.heads`; default ``transformer``: modality + position
   embeddings, fusion transformer blocks, per-modality mean-pooling, MLP) gives logits.

``ensemble_k`` = k > 1 (:mod:`moe_retriever.heads.ensemble`): the head's classifier is k TabM
members sharing its weights; everything before it runs once; ``ModelOutput.member_logits``
(B, k, C) are the members' logits, ``logits`` the log of their mean probability.

``aux_loss`` = ``balance_weight`` * completion's balance loss + the completion's own weighted
loss + the head's weighted loss + ``align_weight`` * alignment loss (below).

Retrieval self-supervision (``retrieval_dropout`` > 0, training mode, ``retrieve=True``, and only
for completion methods that learn, e.g. moe-retriever and bank): before completion, each observed
entry of a sample with at least 2 observed modalities is hidden with probability
``retrieval_dropout`` (never all of them: if every observed entry was drawn, one drawn at random
stays); with ``retrieval_dropout_match: modality`` modality m's probability is at most the
share of the training pool that misses m (a modality the data always has is never hidden); with
``retrieval_dropout_match: pool`` every modality's is at most the share of the pool's entries
that are missing (a cohort that misses little is trained with little hiding). Hidden entries are
completed by the completion method exactly like naturally missing ones (supporting groups from the
training pool, keyed by the reduced observed set) and fusion and head see the completed tokens. The
alignment loss is ``1 - cosine`` between each hidden entry's completed tokens and the encoder's
tokens of its true input, per token (P vectors of width D), averaged over the hidden entries'
tokens; the target is detached (stop-gradient), so the loss moves the retriever (and, through the
supporting and own tokens, the encoders) towards the encoder's token space without pulling the
encoder towards the retriever's output. Cosine and not MSE: it is scale-free (what counts downstream
is direction after the fusion's LayerNorm, and the encoders' token scale drifts during training), it
cannot be lowered by shrinking the retrieved tokens towards the mean, and it is the fidelity measure
the benchmark reports. Without the loss the retriever learns only from the classification loss,
which does not tie its output to the missing modality's token space (measured: cosine ~0.01 to the
true tokens). The cosine alone can be won by collapse: on modalities of a few features a completion
that is nearly the same for every sample scored cosine 0.97 with a negative probe R² of the hidden
features (docs/DEFAULTS.md section 10). ``align_contrast`` > 0 (default 0: the cosine alone)
adds an InfoNCE term inside the alignment loss: each hidden entry's completion must be nearer its
own sample's encoder tokens than those of the batch's other hidden entries of its modality
(temperature ``align_temperature``); it helped on one real cohort and cost on another (same
section), so it is an option. ``align_loss: relative_mse`` replaces the cosine by the squared
error over the true tokens' spread around their modality's batch mean (1 - R² in token space),
which also asks for the tokens' scale and offset. A sample's own pool row is excluded from the
supporting groups of its hidden entries (``pool_index``), otherwise the retriever could copy the
sample's own hidden input. The draws use a ``torch.Generator`` owned by the model
(``hide_generator``), which the training module reseeds every step like the sampler's. At
evaluation nothing is hidden: the method is unchanged at inference. docs/METHOD_NOTES.md has the
measurements behind the defaults.

Custom encoders: pass ``encoders={"image": module}``, where ``module`` maps a batch (B, F_m) of
that modality's raw inputs to (B, P, D) with P = ``config.n_tokens`` and D = ``config.dim``; it
is used for the modality's own tokens and to encode supporting samples for the retriever.
Other modalities get ``config.encoders[m]`` (a name or {name, options}) or else
``config.encoder`` with ``config.encoder_options``; an encoder option ``hidden`` / ``dropout``
left unset takes ``config.encoder_hidden`` / ``config.dropout``.

The training pool (preprocessed TRAINING inputs with the observed mask) lives in persistent
buffers, so a saved ``state_dict`` predicts after ``load_state_dict`` with no other state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import moe_retriever.completion
import moe_retriever.encoders
import moe_retriever.heads  # noqa: F401  (registers the built-in heads)
from moe_retriever.architecture import ModelConfig
from moe_retriever.completion.base import (
    COMPLETIONS,
    Completion,
    CompletionContext,
    CompletionOutput,
    TrainingPool,
    create_completion,
)
from moe_retriever.encoders.base import ENCODERS, create_encoder
from moe_retriever.heads.base import Head, HeadContext, create_head
from moe_retriever.heads.ensemble import mean_probability_logits

#: base terms of the alignment loss (``ModelConfig.align_loss``)
ALIGN_LOSSES = ("cosine", "relative_mse")
#: modes of ``ModelConfig.retrieval_dropout_match`` (how the hiding probability follows the
#: training pool's missingness)
DROPOUT_MATCH = ("off", "modality", "pool")


def _match_mode(value: bool | str) -> str:
    if isinstance(value, bool):
        return "modality" if value else "off"
    legacy = {"true": "modality", "false": "off"}
    mode = legacy.get(str(value).lower(), str(value))
    if mode not in DROPOUT_MATCH:
        raise ValueError(
            f"retrieval_dropout_match must be one of {', '.join(DROPOUT_MATCH)} (or true/false), "
            f"got {value!r}"
        )
    return mode


@dataclass
class ModelOutput:
    """``logits`` (B, C); ``aux_loss`` scalar, already weighted: add it to the task loss;
    ``tokens`` (B, M, P, D) completed tokens fed to the head; ``info``: ``info["completion"]``
    from the completion method, ``info["head"]`` from the head (its ``interpret`` outputs),
    ``info["fusion"]`` the fusion MoE routing per block (transformer head);
    ``member_logits`` (B, k, C): with ``ModelConfig.ensemble_k`` = k > 1, each TabM member's
    logits (train on the mean of their cross-entropies), and ``logits`` is then
    ``log(mean_j softmax(member_logits[:, j]))`` (its softmax is the members' mean probability;
    :mod:`moe_retriever.heads.ensemble`); None for a single model."""

    logits: Tensor
    aux_loss: Tensor
    tokens: Tensor
    info: dict[str, Any] = field(default_factory=dict)
    member_logits: Tensor | None = None


def _safe_keys(names: list[str]) -> dict[str, str]:
    """Module-safe, unique keys for arbitrary modality names ('.' etc. are not allowed)."""
    keys: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = "m_" + re.sub(r"[^0-9A-Za-z_]", "_", name)
        key, i = base, 1
        while key in used:
            key, i = f"{base}_{i}", i + 1
        used.add(key)
        keys[name] = key
    return keys


class _PoolBuffers(nn.Module):
    """Persistent buffers holding the training pool; resized on ``load_state_dict``."""

    def __init__(self, keys: dict[str, str], dims: dict[str, int], n_modalities: int) -> None:
        super().__init__()
        for name, key in keys.items():
            self.register_buffer(key, torch.zeros(0, dims[name]))
        self.register_buffer("observed", torch.zeros(0, n_modalities, dtype=torch.bool))
        self.register_load_state_dict_pre_hook(_PoolBuffers._resize)
        #: the :class:`TrainingPool` over these buffers (rebuilt when they change); it lives
        #: here so that models sharing this module (a weight average) share it and its cache
        self.view: TrainingPool | None = None

    @staticmethod
    def _resize(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        # always fresh tensors: the pool may share memory with the caller's arrays
        # (set_training_pool), which a load must never write into
        for name, buf in list(module._buffers.items()):
            src = state_dict.get(prefix + name)
            if buf is not None and src is not None:
                module._buffers[name] = torch.empty(src.shape, dtype=buf.dtype, device=buf.device)


class MultimodalClassifier(nn.Module):
    """Encoders -> completion (retrieval) -> head, each part a plain module."""

    def __init__(
        self,
        dims: dict[str, int],
        n_classes: int,
        config: ModelConfig | None = None,
        completion: str | Completion = "moe-retriever",
        completion_cfg: dict[str, Any] | None = None,
        encoders: dict[str, nn.Module] | None = None,
        seed: int | None = None,
        head: str | Head = "transformer",
        head_cfg: dict[str, Any] | None = None,
    ) -> None:
        """``completion`` / ``head``: a registered name or import path (built with the typed
        options ``completion_cfg`` / ``head_cfg``) or a built module. ``seed``: the run's
        seed, handed to the completion method's supporting-group draws (evaluation groups are
        a hash of it, so two seeds of a run see different groups and the same seed the same
        ones). An explicit ``completion_cfg["seed"]`` wins; with neither, the method's own
        default (0) is used. Methods without draws ignore it. A completion given by name whose
        options include ``n_classes`` or ``dims`` (``mfm``: label head, raw-feature decoders)
        gets the model's values unless ``completion_cfg`` sets them."""
        super().__init__()
        config = config or ModelConfig()
        if len(dims) < 2:
            raise ValueError(f"need at least 2 modalities, got {list(dims)}")
        bad = {m: d for m, d in dims.items() if int(d) < 1}
        if bad:
            raise ValueError(f"modality feature counts must be >= 1, got {bad}")
        if n_classes < 2:
            raise ValueError(f"need at least 2 classes, got n_classes={n_classes}")
        for label, given in (("custom encoders", encoders), ("model.encoders", config.encoders)):
            unknown = sorted(set(given or {}) - set(dims))
            if unknown:
                raise ValueError(f"{label} for unknown modalities {unknown}; known: {list(dims)}")
        self.config = config
        self.modalities = [str(m) for m in dims]
        self.dims = {str(m): int(d) for m, d in dims.items()}
        self.n_classes = n_classes
        self._keys = _safe_keys(self.modalities)
        M, P, D = len(self.modalities), config.n_tokens, config.dim

        self.encoders = nn.ModuleDict()
        for m in self.modalities:
            if encoders and m in encoders:
                self.encoders[self._keys[m]] = encoders[m]
            else:
                name, options = self.encoder_spec(m)
                self.encoders[self._keys[m]] = create_encoder(name, self.dims[m], P, D, **options)
        if isinstance(completion, Completion):
            if completion_cfg:
                raise ValueError("completion_cfg is for a completion given by name, not a module")
            self.completion = completion
        else:
            self.completion = create_completion(
                completion, self.modalities, P, D, **self._fill_options(completion, completion_cfg)
            )
        self.completion_name = self.completion.name or type(self.completion).__name__
        set_seed = getattr(self.completion, "set_seed", None)
        if seed is not None and "seed" not in (completion_cfg or {}) and callable(set_seed):
            set_seed(int(seed))
        if isinstance(head, Head):
            if head_cfg:
                raise ValueError("head_cfg is for a head given by name, not a module")
            self.head = head
        else:
            # the status embedding marks completed slots: a completion that fills nothing
            # (masked mode) has none to mark, so the head gets no such parameter
            head_arch = config if self.completion.fills else replace(config, status_embedding=False)
            self.head = create_head(
                head, self.modalities, P, D, n_classes, head_arch, **(head_cfg or {})
            )
        self.head_name = self.head.name or type(self.head).__name__
        if config.ensemble_k > 1 and not type(self.head).supports_ensemble:
            raise ValueError(
                f"head {self.head_name!r} does not support model.ensemble_k > 1 (got "
                f"{config.ensemble_k}); set model.ensemble_k: 1 (train.ensemble: N fits N models)"
            )
        self.pool = _PoolBuffers(self._keys, self.dims, M)
        if not 0.0 <= config.retrieval_dropout < 1.0:
            raise ValueError(f"retrieval_dropout must be in [0, 1), got {config.retrieval_dropout}")
        _match_mode(config.retrieval_dropout_match)  # refuses an unknown value here
        if config.hidden_head_input not in ("completed", "real"):
            raise ValueError(
                f"hidden_head_input must be 'completed' or 'real', got {config.hidden_head_input!r}"
            )
        if config.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {config.align_weight}")
        if config.align_loss not in ALIGN_LOSSES:
            raise ValueError(
                f"align_loss must be one of {', '.join(ALIGN_LOSSES)}, got {config.align_loss!r}"
            )
        if config.align_contrast < 0 or config.align_temperature <= 0:
            raise ValueError(
                f"align_contrast must be >= 0 and align_temperature > 0, got "
                f"{config.align_contrast} and {config.align_temperature}"
            )
        #: draws of the entries hidden by retrieval self-supervision (only when it is on);
        #: seeded from the global RNG here, reseeded per step by the training module
        self.hide_generator: torch.Generator | None = None
        #: (M,) per-modality hiding probability, set with the training pool; a buffer (not
        #: saved), so it follows the model to its device and a step does not copy it there
        self.hide_probability: Tensor
        self.register_buffer(
            "hide_probability", torch.full((M,), float(config.retrieval_dropout)), persistent=False
        )
        #: whether any modality can be hidden (a Python bool, so a step that has nothing to
        #: hide, e.g. ``retrieval_dropout_match: pool`` on a complete pool, skips the draw)
        self._may_hide = config.retrieval_dropout > 0
        if config.retrieval_dropout > 0 and self.completion.learns:
            self.hide_generator = torch.Generator(device="cpu")
            self.hide_generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))

    def _fill_options(self, completion: str, given: dict[str, Any] | None) -> dict[str, Any]:
        """``given`` plus what the model knows and the completion asks for by name and did not
        get: ``n_classes`` (a label term) and ``dims`` (feature counts, to generate raw
        features), so that its parameters exist at construction."""
        options = dict(given or {})
        names = set(COMPLETIONS.option_names(completion))
        if "n_classes" in names and options.get("n_classes") is None:
            options["n_classes"] = self.n_classes
        if "dims" in names and options.get("dims") is None:
            options["dims"] = dict(self.dims)
        return options

    def encoder_spec(self, modality: str) -> tuple[str, dict[str, Any]]:
        """(name, checked options) of the encoder the config gives ``modality``."""
        cfg = self.config
        spec = cfg.encoders.get(modality)
        if spec is None:
            name, options = cfg.encoder, dict(cfg.encoder_options)
        elif isinstance(spec, str):
            name, options = spec, {}
        elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
            options = {k: v for k, v in spec.items() if k != "name"}
            name = spec["name"]
        else:
            raise ValueError(
                f"model.encoders.{modality} must be an encoder name or a mapping with a 'name' "
                f"key, got {spec!r}"
            )
        fields = ENCODERS.option_names(name)
        if "hidden" in fields and "hidden" not in options:
            options["hidden"] = cfg.encoder_hidden
        if "dropout" in fields and "dropout" not in options:
            options["dropout"] = cfg.dropout
        return name, ENCODERS.check_options(name, options)

    def _param_ref(self) -> Tensor:
        """A parameter of the model (device and dtype of the token tensor)."""
        for p in self.parameters():
            return p
        return self.pool._buffers["observed"].float()  # type: ignore[union-attr]

    def _device(self) -> torch.device:
        return self._param_ref().device

    # ------------------------------------------------------------------ training pool
    def set_training_pool(self, x: dict[str, Tensor], observed: Tensor) -> None:
        """Keep the TRAINING inputs (``x[m]`` (N, F_m), preprocessed) and ``observed`` (N, M)
        for methods that draw from them. Unobserved rows are zeroed (they may hold NaN);
        observed rows must be finite. Never pass validation or test samples here.

        No copy when it is not needed: a float32 ``x[m]`` on the model's device whose
        unobserved rows are already zero (a :class:`~moe_retriever.training.datamodule.TensorSet`
        is) is kept as is, sharing memory with the caller's array; otherwise one zero-filled
        float32 copy is made. ``load_state_dict`` never writes into it (fresh buffers)."""
        obs = torch.as_tensor(observed)
        if obs.dtype != torch.bool or obs.dim() != 2 or obs.shape[1] != len(self.modalities):
            raise ValueError(
                f"observed must be a (N, {len(self.modalities)}) bool tensor, got "
                f"{obs.dtype} {tuple(obs.shape)}"
            )
        dev = self._device()
        for j, m in enumerate(self.modalities):
            if m not in x:
                raise ValueError(f"training pool is missing modality {m!r}")
            v = torch.as_tensor(x[m], dtype=torch.float32)
            if v.shape != (obs.shape[0], self.dims[m]):
                raise ValueError(
                    f"training pool modality {m!r}: expected shape ({obs.shape[0]}, "
                    f"{self.dims[m]}), got {tuple(v.shape)}"
                )
            o = obs[:, j].to(v.device)
            if bool((v[~o] != 0).any()):  # NaN counts as non-zero: zero-fill, one copy
                v = torch.where(o[:, None], v, torch.zeros_like(v))
            bad = (~torch.isfinite(v)).any(dim=1).nonzero().squeeze(1)
            if bad.numel():
                raise ValueError(
                    f"training pool modality {m!r}: non-finite values in observed rows "
                    f"{bad[:5].tolist()} (impute before training)"
                )
            self.pool._buffers[self._keys[m]] = v.to(dev)
        self.pool._buffers["observed"] = obs.to(dev)
        self.pool.view = None
        self.hide_probability = self._hide_probability(obs)
        self._may_hide = bool((self.hide_probability > 0).any())

    def _hide_probability(self, observed: Tensor) -> Tensor:
        """(M,) probability of hiding an observed entry of each modality in training:
        ``retrieval_dropout``, capped by the pool's missing share of the modality
        (``retrieval_dropout_match: modality``) or of all its entries (``pool``)."""
        p = torch.full((len(self.modalities),), float(self.config.retrieval_dropout))
        match = self.match_mode
        if match != "off" and observed.shape[0] > 0:
            missing = 1.0 - observed.float().mean(dim=0).cpu()
            if match == "pool":
                missing = missing.mean().expand_as(p)
            p = torch.minimum(p, missing)
        return p.to(self._device())

    @property
    def match_mode(self) -> str:
        """``retrieval_dropout_match`` as one of :data:`DROPOUT_MATCH` (bools are the legacy
        spellings of "off" and "modality")."""
        return _match_mode(self.config.retrieval_dropout_match)

    @property
    def has_training_pool(self) -> bool:
        return int(self._pool_observed().shape[0]) > 0

    def _pool_observed(self) -> Tensor:
        obs = self.pool._buffers["observed"]
        assert obs is not None
        return obs

    def training_pool(self) -> TrainingPool:
        """The pool as a :class:`TrainingPool` (one object per buffer set, so methods can cache
        their per-pool structures)."""
        obs = self._pool_observed()
        view = self.pool.view
        if view is None or view.observed is not obs:
            view = self.pool.view = TrainingPool(
                list(self.modalities),
                {m: getattr(self.pool, self._keys[m]) for m in self.modalities},
                obs,
            )
        return view

    # ------------------------------------------------------------------ encoding
    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        """Tokens (n, P, D) of raw inputs (n, F_m) of one modality, with its encoder."""
        out = self.encoders[self._keys[modality]](x)
        P, D = self.config.n_tokens, self.config.dim
        if out.shape != (x.shape[0], P, D):
            raise ValueError(
                f"encoder of modality {modality!r} returned {tuple(out.shape)}, expected "
                f"({x.shape[0]}, {P}, {D}) = (batch, config.n_tokens, config.dim)"
            )
        return out

    def encode(self, x: dict[str, Tensor], observed: Tensor) -> Tensor:
        """Encoder tokens (B, M, P, D) of the observed entries; zeros in unobserved slots.
        Only observed rows go through the encoders.

        The token tensor has the parameters' dtype (float32 under mixed precision too); the
        encoders' outputs are cast to it where they are written. Under autocast they come out
        in the autocast dtype (bf16/fp16), and ``index_put`` requires equal dtypes; the
        downstream layers autocast their own inputs again, so nothing else changes."""
        B = observed.shape[0]
        P, D = self.config.n_tokens, self.config.dim
        out = []
        for j, m in enumerate(self.modalities):
            rows = observed[:, j].nonzero().squeeze(1)
            t = self._param_ref().new_zeros(B, P, D)
            if rows.numel():
                t = t.index_put((rows,), self.encode_modality(m, x[m][rows]).to(t.dtype))
            out.append(t)
        return torch.stack(out, dim=1)

    def _check_batch(self, x: dict[str, Tensor], observed: Tensor) -> None:
        M = len(self.modalities)
        if observed.dim() != 2 or observed.shape[1] != M or observed.dtype != torch.bool:
            raise ValueError(
                f"observed must be a (B, {M}) bool tensor, got {observed.dtype} "
                f"{tuple(observed.shape)}"
            )
        for m in self.modalities:
            if m not in x:
                raise ValueError(f"batch is missing modality {m!r}; expected {self.modalities}")
            if x[m].shape != (observed.shape[0], self.dims[m]):
                raise ValueError(
                    f"modality {m!r}: expected input ({observed.shape[0]}, {self.dims[m]}), "
                    f"got {tuple(x[m].shape)}"
                )

    # ------------------------------------------------------------------ forward
    def complete(
        self,
        tokens: Tensor,
        observed: Tensor,
        sample_keys: Tensor | None = None,
        retrieve: bool = True,
        pool_index: Tensor | None = None,
        x: dict[str, Tensor] | None = None,
        y: Tensor | None = None,
    ) -> CompletionOutput:
        """Fill the missing slots of encoder ``tokens`` (retrieve=False: zero tokens).
        ``pool_index``: the samples' rows in the training pool (training batches only);
        ``x``: the batch's raw inputs (for methods that compare samples in input space);
        ``y``: training labels (for methods with a label term)."""
        if not retrieve:
            return CompletionOutput(tokens, tokens.new_zeros(()), {"retrieve": False})
        pool = None
        if self.completion.needs_pool:
            if not self.has_training_pool:
                raise ValueError(
                    f"completion {self.completion_name!r} draws from the training pool: call "
                    "model.set_training_pool(train_x, train_observed) first"
                )
            pool = self.training_pool()
        ctx = CompletionContext(
            encode=self.encode_modality,
            pool=pool,
            sample_keys=sample_keys,
            training=self.training,
            modalities=list(self.modalities),
            pool_index=pool_index,
            x=x,
            y=y,
        )
        return self.completion(tokens, observed, ctx)

    def forward(
        self,
        x: dict[str, Tensor],
        observed: Tensor,
        sample_keys: Tensor | None = None,
        retrieve: bool = True,
        pool_index: Tensor | None = None,
        y: Tensor | None = None,
    ) -> ModelOutput:
        """Logits for a batch: ``x[m]`` (B, F_m) with zeros in unobserved rows, ``observed``
        (B, M) bool, ``sample_keys`` (B,) int64 stable per sample (deterministic evaluation
        draws), ``retrieve=False`` for warm-up (zero tokens, retriever off), ``pool_index``
        (B,) int64: the samples' rows in the training pool, for training batches drawn from
        it (excludes a sample from supporting its own hidden entries; pass None otherwise),
        ``y`` (B,) labels of a training batch for parts with a label term (never in eval)."""
        self._check_batch(x, observed)
        if pool_index is not None and pool_index.shape != observed.shape[:1]:
            raise ValueError(
                f"pool_index must be ({observed.shape[0]},), got {tuple(pool_index.shape)}"
            )
        y = y if self.training else None
        tokens = self.encode(x, observed)
        data_observed = observed  # before self-supervision hides anything
        hidden = self._draw_hidden(observed) if retrieve else None
        if hidden is not None:
            true_tokens = tokens
            observed = observed & ~hidden
            tokens = tokens.masked_fill(hidden[:, :, None, None], 0.0)
        comp = self.complete(tokens, observed, sample_keys, retrieve, pool_index, x, y)
        completed = comp.tokens
        align = completed.new_zeros(())
        if hidden is not None:
            # the hidden entries (n,) in hidden's row-major order, and each one's modality
            rows, modality = hidden.nonzero().unbind(1)
            pred, target = completed[rows, modality], true_tokens[rows, modality].detach()
            if pred.shape[0]:
                if self.config.align_loss == "relative_mse":
                    align = _relative_mse(pred, target, modality, len(self.modalities))
                else:
                    align = (1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-6)).mean()
                if self.config.align_contrast > 0:
                    align = align + self.config.align_contrast * _contrastive_alignment(
                        pred, target, modality, self.config.align_temperature
                    )
        ctx = HeadContext(
            training=self.training,
            modalities=list(self.modalities),
            masked=not self.completion.fills,
            generator=self.head.generator if self.training else None,
            x=x,
            y=y,
            status=data_observed,
        )
        head_tokens, head_observed = completed, observed
        if hidden is not None and self.config.hidden_head_input == "real":
            # the hidden entries' completions train the retriever (alignment loss) only; the
            # head classifies the sample as the data has it
            head_tokens = torch.where(hidden[:, :, None, None], true_tokens, completed)
            head_observed = data_observed
        out = self.head(head_tokens, head_observed, ctx)
        info: dict[str, Any] = {
            "completion": comp.info,
            "head": out.info,
            "fusion": out.info.get("fusion", []),
        }
        if hidden is not None:
            info["self_supervision"] = {
                "hidden": hidden.sum().detach(),
                "align_loss": align.detach(),
            }
        aux_loss = (
            self.config.balance_weight * comp.aux_loss
            + out.aux_loss
            + self.config.align_weight * align
        )
        if comp.loss is not None:
            aux_loss = aux_loss + comp.loss
        if out.logits.dim() == 3:  # (B, k, C): the head's ensemble members
            return ModelOutput(
                mean_probability_logits(out.logits), aux_loss, completed, info, out.logits
            )
        return ModelOutput(out.logits, aux_loss, completed, info)

    def _draw_hidden(self, observed: Tensor) -> Tensor | None:
        """(B, M) bool: observed entries to hide for retrieval self-supervision, or None when
        it is off (evaluation, ``retrieval_dropout`` 0, a completion that does not learn, or a
        hiding probability of 0 for every modality).
        Each observed entry of a sample with >= 2 observed is hidden with probability
        ``hide_probability`` of its modality (``retrieval_dropout``, or less with
        ``retrieval_dropout_match``); if all of a sample's entries were drawn, its entry with
        the largest uniform stays observed."""
        gen = self.hide_generator
        if not self.training or gen is None or not self._may_hide:
            return None
        u = torch.rand(observed.shape, generator=gen).to(observed.device)
        eligible = observed & (observed.sum(dim=1, keepdim=True) >= 2)
        hidden = eligible & (u < self.hide_probability[None, :])
        all_hidden = (hidden == eligible).all(dim=1) & eligible.any(dim=1)
        keep = torch.where(observed, u, torch.full_like(u, -1.0)).argmax(dim=1)
        unhide = F.one_hot(keep, observed.shape[1]).bool() & all_hidden[:, None]
        return hidden & ~unhide


def _contrastive_alignment(
    pred: Tensor, target: Tensor, modality: Tensor, temperature: float
) -> Tensor:
    """InfoNCE of each hidden entry's completion against the (detached) encoder tokens of the
    batch's hidden entries of the same modality: its own sample's are the positive, the other
    samples' the negatives. ``pred``, ``target`` (n, P, D), ``modality`` (n,). A completion that
    is the same for every sample (a collapse the cosine term alone does not penalise) scores at
    least log(group size) on average, chance. Entries alone in their modality group add
    nothing."""
    q = F.normalize(pred.flatten(1), dim=1, eps=1e-6)
    k = F.normalize(target.flatten(1), dim=1, eps=1e-6)
    logits = q @ k.T / temperature  # (n, n)
    same = modality[:, None] == modality[None, :]
    logits = logits.masked_fill(~same, float("-inf"))
    grouped = same.sum(dim=1) > 1
    if not bool(grouped.any()):
        return pred.new_zeros(())
    labels = torch.arange(pred.shape[0], device=pred.device)
    return F.cross_entropy(logits[grouped], labels[grouped])


def _relative_mse(pred: Tensor, target: Tensor, modality: Tensor, n_modalities: int) -> Tensor:
    """sum ||pred - target||² / sum ||target - mean of its modality's targets||² over the
    hidden entries: 1 - R² of the completions in token space, the batch's per-modality mean of
    the true tokens as the baseline. ``pred``, ``target`` (n, P, D), ``modality`` (n,). Unlike
    the cosine it is not scale-free: a completion must match the true tokens' scale and offset,
    and one that is the same for every sample scores at best 1 (the modality mean), so a
    collapse cannot win it. The ratio is invariant to a common rescaling of the encoder's tokens
    (their scale drifts in training). Entries alone in their modality give no spread; the
    denominator has a floor (1e-6 per entry) so a batch of such entries cannot divide by 0."""
    flat = target.flatten(1)  # (n, P*D)
    sums = flat.new_zeros(n_modalities, flat.shape[1]).index_add_(0, modality, flat)
    counts = torch.bincount(modality, minlength=n_modalities).clamp(min=1).to(flat.dtype)
    centred = flat - (sums / counts[:, None])[modality]
    spread = centred.pow(2).sum()
    error = (pred.flatten(1) - flat).pow(2).sum()
    return error / (spread + 1e-6 * flat.shape[0])


__all__ = ["ALIGN_LOSSES", "ModelConfig", "ModelOutput", "MultimodalClassifier"]
