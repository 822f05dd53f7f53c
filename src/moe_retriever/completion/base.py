"""The completion interface: fill the token slots of missing modalities.

Every method (zero, mean, bank, knn, official-average, moe-retriever, ...) is one subclass of
:class:`Completion` registered under a name, created with :func:`create_completion`.

``complete(tokens, observed, context)`` takes

* ``tokens``: (B, M, P, D) encoder outputs; slots of unobserved modalities hold anything
  (the model passes zeros) and must be replaced;
* ``observed``: (B, M) bool;
* ``context``: :class:`CompletionContext` with what a method may use: a way to encode raw
  inputs of a modality, the TRAINING pool (never validation or test samples) and stable
  per-sample keys for deterministic evaluation draws;

and returns :class:`CompletionOutput` with the completed tokens (observed slots unchanged),
an auxiliary loss (a scalar tensor, zero where the method has none) that the caller adds to
the objective, and an ``info`` dict (routing statistics and the like) for inspection.
Methods keep no per-step state: losses and statistics travel in the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from moe_retriever.registry import Registry


@dataclass
class TrainingPool:
    """Raw (preprocessed, NaN-free) inputs of the TRAINING split, on the model's device.

    ``x[m]`` is (N_train, F_m) with zeros in rows where modality m is unobserved;
    ``observed`` is (N_train, M) bool. Built once per fit; never holds evaluation samples.
    """

    modalities: list[str]
    x: dict[str, Tensor]
    observed: Tensor
    #: structures derived from the pool (e.g. the similar selection's standardized copy),
    #: built once and shared by every model that draws from this pool object (the live model
    #: and its weight average)
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n(self) -> int:
        return int(self.observed.shape[0])

    def to(self, device: torch.device | str) -> TrainingPool:
        return TrainingPool(
            self.modalities,
            {m: v.to(device) for m, v in self.x.items()},
            self.observed.to(device),
        )


@dataclass
class CompletionContext:
    """What a completion method may use besides the batch's own tokens."""

    # encode(modality_name, raw inputs (n, F_m)) -> tokens (n, P, D), with the model's encoder
    encode: Callable[[str, Tensor], Tensor] | None = None
    pool: TrainingPool | None = None
    # (B,) int64 keys stable per sample (derived from sample ids) for deterministic draws
    sample_keys: Tensor | None = None
    training: bool = False
    modalities: list[str] = field(default_factory=list)
    # (B,) int64 rows of the batch's samples in the training pool, or None. Given only for
    # training batches drawn from the pool itself (the model's retrieval self-supervision
    # hides entries those samples observe): a sample must not support its own hidden entry.
    pool_index: Tensor | None = None
    # the batch's raw (preprocessed) inputs ``x[m]`` (B, F_m), zeros where unobserved, for
    # methods that compare samples in input space (``support_select="similar"``)
    x: dict[str, Tensor] | None = None
    # (B,) labels of a training batch (None in evaluation), for methods with a label term
    y: Tensor | None = None


@dataclass
class CompletionOutput:
    """``tokens``: completed (B, M, P, D); ``aux_loss``: the method's mixture-of-experts
    balance loss (the model weights it by ``ModelConfig.balance_weight``, like the fusion's);
    ``loss``: any other training term, **already weighted**, added to the objective as is
    (reconstruction, prior matching...); ``info``: detached diagnostics."""

    tokens: Tensor
    aux_loss: Tensor
    info: dict[str, Any] = field(default_factory=dict)
    loss: Tensor | None = None


class Completion(nn.Module):
    """Base class; subclasses set ``name`` and implement :meth:`complete`."""

    name: ClassVar[str] = ""
    #: whether the method needs ``context.pool`` (the model then keeps the training pool)
    needs_pool: ClassVar[bool] = False
    #: whether the method has trainable parameters
    learns: ClassVar[bool] = False
    #: False for ``none``: missing slots stay zero and heads must ignore them (masked mode)
    fills: ClassVar[bool] = True

    def __init__(self, modalities: list[str], n_tokens: int, dim: int) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.n_tokens = n_tokens
        self.dim = dim

    def complete(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        raise NotImplementedError

    def forward(
        self, tokens: Tensor, observed: Tensor, context: CompletionContext
    ) -> CompletionOutput:
        return self.complete(tokens, observed, context)

    # ------------------------------------------------------------------ reporting hooks
    def summarize(self, infos: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A method-specific, JSON-able summary of a fitted method over an evaluation set,
        from the per-batch ``CompletionOutput.info`` dicts (moe-retriever: router usage and
        entropy). ``None``: nothing to say. The harness and ``train`` call this without
        knowing the method."""
        return None

    def report(self, summary: dict[str, Any], out_dir: Path) -> list[Path]:
        """Write files (tables, plots) from :meth:`summarize`'s output under ``out_dir``;
        return their paths. The default writes nothing."""
        return []

    @staticmethod
    def keep_observed(completed: Tensor, tokens: Tensor, observed: Tensor) -> Tensor:
        """Observed slots from ``tokens``, missing ones from ``completed``."""
        mask = observed[:, :, None, None]
        return torch.where(mask, tokens, completed)

    @staticmethod
    def no_loss(ref: Tensor) -> Tensor:
        return ref.new_zeros(())


#: completion classes by name; constructors take (modalities, n_tokens, dim) then options
COMPLETIONS: Registry[Completion] = Registry("completion method", Completion, fixed=3)


def register_completion(cls: type[Completion]) -> type[Completion]:
    """Class decorator: make a method available to :func:`create_completion` by its name."""
    out: type[Completion] = COMPLETIONS.register(cls)
    return out


def list_completions() -> list[str]:
    return COMPLETIONS.names()


def create_completion(
    name: str, modalities: list[str], n_tokens: int, dim: int, **options: Any
) -> Completion:
    """The one factory: ``create_completion("moe-retriever", mods, P, D, n_experts=8)``.
    Unknown or ill-typed options raise ``ValueError`` naming the valid ones."""
    return COMPLETIONS.create(name, modalities, n_tokens, dim, **options)
