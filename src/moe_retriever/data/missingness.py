"""Simulated missingness on top of the natural one: hide observed (sample, modality) entries.

Definition of ``rate``: the fraction of the currently observed (sample, modality) entries of
the chosen modalities to hide, overall. With ``modalities=None`` every modality is eligible
(MCAR per entry); with ``modalities=["x"]`` the call means "remove modality x from a fraction
``rate`` of the samples that have it".

Rules:

* only observed entries are hidden (the truth stays in the input data, and
  :attr:`MissingnessReport.hidden` says where, for measuring retrieval fidelity);
* a sample never loses its last observed modality: sample i can lose at most
  ``min(#eligible_i, #observed_i - 1)`` entries. When the request exceeds that capacity the
  number hidden is clamped to it, ``clamped`` is set and a warning says so;
* entries are chosen uniformly at random among those allowed (each sample's eligible entries
  are ranked by a random key and only its first ``capacity_i`` may go; the globally smallest
  keys among allowed entries are hidden), vectorized in NumPy;
* the same data, rate, modalities and seed give the same mask.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moe_retriever.data.core import DataValidationError, MultimodalData

__all__ = ["MissingnessReport", "simulate_missing"]


@dataclass
class MissingnessReport:
    """What :func:`simulate_missing` did.

    ``achieved_rate``: hidden / eligible observed entries overall; ``per_modality``: for each
    modality, hidden / originally observed entries of that modality (0 for non-eligible ones).
    ``hidden`` is the (N, M) bool mask of the entries that were hidden.
    """

    requested_rate: float
    achieved_rate: float
    per_modality: dict[str, float]
    n_hidden: dict[str, int]
    n_eligible: int
    capacity: int
    clamped: bool
    seed: int
    modalities: list[str]
    hidden: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the mask)."""
        return {
            "requested_rate": self.requested_rate,
            "achieved_rate": self.achieved_rate,
            "per_modality": dict(self.per_modality),
            "n_hidden": dict(self.n_hidden),
            "n_eligible": self.n_eligible,
            "capacity": self.capacity,
            "clamped": self.clamped,
            "seed": self.seed,
            "modalities": list(self.modalities),
        }


def simulate_missing(
    data: MultimodalData,
    rate: float = 0.3,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
) -> tuple[MultimodalData, MissingnessReport]:
    """Hide a fraction ``rate`` of the observed entries (see the module docstring).

    Returns the data with those entries set to NaN/unobserved (``attrs["missingness"]`` holds
    the report's summary) and the :class:`MissingnessReport`.
    """
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if modalities is None:
        chosen = list(data.modalities)
    else:
        chosen = [str(m) for m in modalities]
        unknown = [m for m in chosen if m not in data.modalities]
        if unknown:
            raise DataValidationError(
                f"simulate_missing: unknown modalities {unknown}; known: {data.modalities}"
            )
    col = np.isin(np.asarray(data.modalities, dtype=object), np.asarray(chosen, dtype=object))
    obs = data.observed
    eligible = obs & col[None, :]
    n_eligible = int(eligible.sum())
    per_sample_cap = np.minimum(eligible.sum(axis=1), np.maximum(obs.sum(axis=1) - 1, 0))
    capacity = int(per_sample_cap.sum())
    target = round(float(rate) * n_eligible)
    clamped = target > capacity
    if clamped:
        warnings.warn(
            f"simulate_missing: rate {rate} asks to hide {target} of {n_eligible} observed "
            f"entries, but only {capacity} can go without emptying a sample; hiding {capacity} "
            f"(achieved rate {capacity / max(n_eligible, 1):.3f})",
            stacklevel=2,
        )
        target = capacity

    rng = np.random.default_rng(seed)
    key = rng.random(obs.shape)
    key = np.where(eligible, key, np.inf)
    rank = np.argsort(np.argsort(key, axis=1, kind="stable"), axis=1, kind="stable")
    allowed = eligible & (rank < per_sample_cap[:, None])
    hidden = np.zeros(obs.shape, dtype=bool)
    if target > 0:
        flat_key = np.where(allowed, key, np.inf).ravel()
        pick = np.argpartition(flat_key, target - 1)[:target]
        hidden.ravel()[pick] = True
    out = data.with_observed(obs & ~hidden)

    n_obs = obs.sum(axis=0)
    n_hid = hidden.sum(axis=0)
    report = MissingnessReport(
        requested_rate=float(rate),
        achieved_rate=float(n_hid.sum() / n_eligible) if n_eligible else 0.0,
        per_modality={
            m: float(n_hid[j] / n_obs[j]) if n_obs[j] else 0.0
            for j, m in enumerate(data.modalities)
        },
        n_hidden={m: int(n_hid[j]) for j, m in enumerate(data.modalities)},
        n_eligible=n_eligible,
        capacity=capacity,
        clamped=bool(clamped),
        seed=int(seed),
        modalities=chosen,
        hidden=hidden,
    )
    out.attrs["missingness"] = report.to_dict()
    return out, report
