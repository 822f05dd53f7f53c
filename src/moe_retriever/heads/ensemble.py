"""TabM-style efficient ensemble inside one model (``model.ensemble_k``).

TabM (Gorishniy et al., ICLR 2025) trains k members at once that share most of their weights
(BatchEnsemble) and averages their predictions. Here the members live in the head's MLP
classifier, built from the ``tabm`` package's layers (:func:`ensemble_classifier`)::

    pooled (B, M*D) -> EnsembleView -> (B, k, M*D)       k identical views, no copy
      -> LinearBatchEnsemble(M*D, H)  shared W; per-member r (random signs, one sign per
                                      modality's D-chunk: TabM's start scaling), s (ones), bias
      -> GELU -> Dropout (a mask per member)
      -> LinearEnsemble(H, C)         k independent output layers (TabM's output)
      -> member logits (B, k, C)

Everything before the classifier (encoders, completion, fusion transformer) runs once per
sample and is shared by the members. Why there and not further down (measured on miniacc,
benchmarks/ensemble_k.py and docs/ENSEMBLE_K.md): the completion consumes the encoders' tokens
and the fusion consumes the completion's, so BatchEnsemble adapters in the encoders (or the
fusion) would run the retrieval (or the fusion attention) k times per sample: encoder
adapters cost at least 3 x the step at k = 4 (measured: the single model on 4 x the batch)
where the issue allows 2 x; fusion members would cost the fusion's share of the step k times
(not measured separately). A classifier member is about 80 k multiply-adds per sample next
to some 10 M in the fusion, so k members cost at most 1.05 x the step up to k = 16 and
1.19 x at k = 32.

Loss and prediction (TabM's): in training each member is trained on its own prediction (the
cross-entropy is the mean over the members of their cross-entropies, ``member_logits`` of
:class:`~moe_retriever.model.ModelOutput`); the prediction is the mean of the members'
probabilities. The logits the model returns are ``log(mean_j softmax(z_j))``
(:func:`mean_probability_logits`), so ``softmax(logits)`` is exactly the members' mean
probability and everything downstream (``predict_proba``, validation loss and metrics) scores
the ensemble. Auxiliary losses (MoE balance, alignment) are computed once, outside the
members, and reach the objective unchanged.

``ensemble_k = 1`` builds the plain ``nn.Sequential`` classifier of before (same parameters,
same initialisation order, same outputs).
"""

from __future__ import annotations

import math

import torch
from tabm import EnsembleView, LinearBatchEnsemble, LinearEnsemble
from torch import Tensor, nn


def ensemble_classifier(
    in_features: int, hidden: int, n_classes: int, dropout: float, k: int, chunks: list[int]
) -> nn.Sequential:
    """k BatchEnsemble members of ``Linear(in, hidden) - GELU - Dropout - Linear(hidden, C)``:
    (B, in) -> (B, k, C). ``chunks``: sizes of the input's blocks that share one random sign
    of the first scaling (the concatenated per-modality vectors: ``[D] * M``)."""
    return nn.Sequential(
        EnsembleView(k=k),
        LinearBatchEnsemble(
            in_features,
            hidden,
            k=k,
            scaling_init=("random-signs", "ones"),
            first_scaling_init_chunks=chunks,
        ),
        nn.GELU(),
        nn.Dropout(dropout),
        LinearEnsemble(hidden, n_classes, k=k),
    )


def mean_probability_logits(member_logits: Tensor) -> Tensor:
    """(B, k, C) member logits -> (B, C) ``log(mean_j softmax(z_j))`` (float32): its softmax is
    the members' mean probability."""
    z = torch.log_softmax(member_logits.float(), dim=-1)
    return torch.logsumexp(z, dim=1) - math.log(member_logits.shape[1])


def member_targets(y: Tensor, k: int) -> Tensor:
    """Labels (B,) repeated for the rows of ``member_logits.flatten(0, 1)`` (B * k,)."""
    return y.repeat_interleave(k)


__all__ = ["ensemble_classifier", "mean_probability_logits", "member_targets"]
