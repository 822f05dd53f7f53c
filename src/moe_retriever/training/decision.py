"""The post-hoc decision: ``logits - tau * log(prior)``, with tau fixed (``train.posthoc_adjust``)
or chosen on the validation part (``train.posthoc_select``).

tau = 1 is the balanced-error rule for a calibrated model (Menon et al., ICLR 2021). A user who
reports macro-F1 is not served best by it: on the real cohort ``smart`` a tau chosen on
validation for macro-F1 gave +4-5 macro-F1 and about +12 accuracy points for 2.5-4 points of
balanced accuracy (docs/DEFAULTS.md section 6, ``benchmarks/decision_rule.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the taus ``train.posthoc_select`` tries: 0 (no adjustment) to 3 in steps of 0.1
TAU_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(31))
#: the validation metrics ``train.posthoc_select`` can maximise
SELECT_METRICS: tuple[str, ...] = ("balanced_accuracy", "macro_f1")


def adjusted_proba(log_p: np.ndarray, log_prior: np.ndarray, tau: float) -> np.ndarray:
    """softmax(``log_p`` - tau * ``log_prior``) row by row: (N, C) log-probabilities (or
    logits) and the (C,) log prior."""
    z = np.asarray(log_p, dtype=np.float64) - tau * np.asarray(log_prior, dtype=np.float64)[None]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def choose_tau(
    y: np.ndarray,
    log_p: np.ndarray,
    log_prior: np.ndarray,
    metric: str,
    taus: Sequence[float] = TAU_GRID,
) -> float:
    """The tau in ``taus`` whose decision argmax(``log_p`` - tau * ``log_prior``) maximises
    ``metric`` on the labels ``y``; ties go to the tau nearest 1 (the balanced-error rule)."""
    from moe_retriever.training.metrics import classification_metrics

    if metric not in SELECT_METRICS:
        raise ValueError(f"metric must be one of {', '.join(SELECT_METRICS)}, got {metric!r}")
    if not len(taus):
        raise ValueError("no taus to choose from")
    best: tuple[float, float] | None = None
    for tau in sorted(taus, key=lambda t: (abs(t - 1.0), t)):
        score = classification_metrics(y, adjusted_proba(log_p, log_prior, tau))[metric]
        if best is None or score > best[1]:
            best = (float(tau), score)
    assert best is not None
    return best[0]


__all__ = ["SELECT_METRICS", "TAU_GRID", "adjusted_proba", "choose_tau"]
