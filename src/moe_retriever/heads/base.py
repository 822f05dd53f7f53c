"""The head interface: completed tokens -> logits. A head is "fusion + classifier" in one part.

``head(tokens, observed, context) -> HeadOutput(logits, aux_loss, info)``:

* ``tokens``: (B, M, P, D) after completion; missing slots hold the completion method's tokens
  (``completed`` mode) or zeros that must be ignored (``context.masked``: the completion method
  is ``none``, see :class:`~moe_retriever.completion.none.NoCompletion`);
* ``observed``: (B, M) bool, the entries the sample really has (entries hidden by the model's
  retrieval self-supervision count as missing);
* ``context``: :class:`HeadContext`;

and returns :class:`HeadOutput`: logits (B, C), or (B, k, C) member logits for a head that
``supports_ensemble`` built with ``arch.ensemble_k`` = k > 1 (the model turns them into the log
of the members' mean probability, :mod:`moe_retriever.heads.ensemble`); ``aux_loss``, a
scalar **already weighted** that the caller adds to the objective (zero where the head has
none); ``info``, detached diagnostics, with the head's unweighted loss terms under
``info["losses"]`` and its per-sample interpretable outputs under ``info["interpret"]``. No
state is kept between steps.

A head is built as ``Head(modalities, n_tokens, dim, n_classes, arch, **options)`` where
``arch`` is the :class:`~moe_retriever.architecture.ModelConfig` shared by all parts (widths,
depth, dropout) and ``options`` are the head's own typed keyword parameters
(:mod:`moe_retriever.registry`). Register with :func:`register_head`; build with
:func:`create_head`. A method-specific summary of a fitted head over an evaluation set goes in
:meth:`Head.report` (the harness and ``train`` call it without knowing the method).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from moe_retriever.architecture import ModelConfig
from moe_retriever.registry import Registry


@dataclass
class HeadContext:
    """What a head may use besides the tokens."""

    training: bool = False
    modalities: list[str] = field(default_factory=list)
    #: True when missing slots hold zeros to be ignored (completion ``none``): attention must
    #: not read them (``key_padding_mask``) and nothing may depend on their content
    masked: bool = False
    #: step-seeded generator for the head's own draws (perturbations...), or None in eval
    generator: torch.Generator | None = None
    #: the batch's raw (preprocessed) inputs ``x[m]`` (B, F_m), zeros where unobserved
    x: dict[str, Tensor] | None = None
    #: (B,) labels, training batches only (for heads with label-dependent auxiliary losses)
    y: Tensor | None = None
    #: (B, M) bool, the data's observation mask before retrieval self-supervision hid any
    #: entry (what a status embedding marks: a hidden entry counts as observed, so the mark
    #: means "the data lacks this modality" in training as at test); None = ``observed``
    status: Tensor | None = None


@dataclass
class HeadOutput:
    logits: Tensor
    aux_loss: Tensor
    info: dict[str, Any] = field(default_factory=dict)


class Head(nn.Module):
    """Base class; subclasses set ``name`` and implement :meth:`forward`."""

    name: ClassVar[str] = ""
    #: True for heads that build ``arch.ensemble_k`` members and return (B, k, C) logits; a
    #: head without it refuses ``ensemble_k > 1`` at construction
    supports_ensemble: ClassVar[bool] = False

    def __init__(
        self, modalities: list[str], n_tokens: int, dim: int, n_classes: int, arch: ModelConfig
    ) -> None:
        super().__init__()
        k = ensemble_size(arch)
        if k > 1 and not type(self).supports_ensemble:
            raise ValueError(
                f"head {self.name or type(self).__name__!r} does not support model.ensemble_k "
                f"> 1 (got {k}); set model.ensemble_k: 1 (train.ensemble: N fits N models)"
            )
        self.modalities = list(modalities)
        self.n_tokens = n_tokens
        self.dim = dim
        self.n_classes = n_classes
        #: the head's own draws in training (handed over as ``context.generator``); reseeded
        #: every step by the training module; a fixed start, so building a head consumes
        #: nothing of the global RNG
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(0)

    def forward(self, tokens: Tensor, observed: Tensor, context: HeadContext) -> HeadOutput:
        raise NotImplementedError

    # ------------------------------------------------------------------ reporting hooks
    def summarize(
        self, interpret: dict[str, Tensor], y: Tensor | None, observed: Tensor
    ) -> dict[str, Any] | None:
        """A JSON-able summary of the head's per-sample ``info["interpret"]`` tensors over an
        evaluation set (concatenated over batches, rows in data order): e.g. I2MoE's global
        interaction weights, overall, per class (``y``: true class indices when known) and
        per observed combination (``observed`` (N, M)). ``None``: nothing to say."""
        return None

    def interpret_axes(self) -> dict[str, list[str]]:
        """Names along the second axis of each ``info["interpret"]`` tensor (experts, for
        I2MoE's ``weights`` (B, K)); a third axis, where there is one, is the classes. Used to
        name the columns of ``predict --explain``; unnamed axes are numbered."""
        return {}

    def report(self, summary: dict[str, Any], out_dir: Path) -> list[Path]:
        """Write files (tables, plots) from :meth:`summarize`'s output under ``out_dir``;
        return their paths. The default writes nothing."""
        return []

    @staticmethod
    def no_loss(ref: Tensor) -> Tensor:
        return ref.new_zeros(())


def ensemble_size(arch: ModelConfig) -> int:
    """``arch.ensemble_k`` (1 for a config object without it)."""
    return int(getattr(arch, "ensemble_k", 1))


#: head classes by name; constructors take (modalities, n_tokens, dim, n_classes, arch)
HEADS: Registry[Head] = Registry("head", Head, fixed=5)

register_head = HEADS.register


def create_head(
    name: str,
    modalities: list[str],
    n_tokens: int,
    dim: int,
    n_classes: int,
    arch: ModelConfig,
    **options: Any,
) -> Head:
    """The one factory: ``create_head("transformer", mods, P, D, C, arch)``."""
    return HEADS.create(name, modalities, n_tokens, dim, n_classes, arch, **options)


def list_heads() -> list[str]:
    return HEADS.names()


__all__ = [
    "HEADS",
    "Head",
    "HeadContext",
    "HeadOutput",
    "create_head",
    "ensemble_size",
    "list_heads",
    "register_head",
]
