"""Retrieval fidelity: how close completed tokens are to the tokens of the hidden true data.

For every (sample, modality) entry that the missingness simulator hid, compare the tokens a
method put in that slot (``estimator.retrieve`` on the masked data) with the tokens the SAME
trained encoder gives the hidden true values (``estimator.encode`` on the unmasked data).

* ``cosine``: cosine similarity of the flattened (P*D) token blocks, averaged over entries
  (a zero block, e.g. the ``zero`` method, has cosine 0 with anything);
* ``mse``: mean squared difference over the P*D values, averaged over entries.

Both are reported overall and per modality. Only the encoder of the method's own trained model
is used, so the measure asks "did the method put what this model would have seen", which is
comparable across methods only in the sense of each method against its own encoder; the
``cosine`` is scale-free and therefore the headline number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def entry_fidelity(
    completed: np.ndarray, true: np.ndarray, hidden: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per hidden entry: (cosine, mse). Arrays are (N, M, P, D), ``hidden`` is (N, M) bool.

    Returns two 1-D arrays in row-major order of ``np.nonzero(hidden)``.
    """
    completed = np.asarray(completed, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    hidden = np.asarray(hidden, dtype=bool)
    if completed.shape != true.shape:
        raise ValueError(
            f"completed tokens {completed.shape} and true tokens {true.shape} differ in shape"
        )
    if hidden.shape != completed.shape[:2]:
        raise ValueError(f"hidden mask {hidden.shape} does not match tokens {completed.shape}")
    rows, cols = np.nonzero(hidden)
    width = int(np.prod(completed.shape[2:]))
    a = completed[rows, cols].reshape(rows.size, width)
    b = true[rows, cols].reshape(rows.size, width)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = na * nb
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), 0.0)
    mse = ((a - b) ** 2).mean(axis=1) if a.shape[1] else np.zeros(rows.size)
    return cos, mse


def token_fidelity(
    completed: np.ndarray,
    true: np.ndarray,
    hidden: np.ndarray,
    modalities: Sequence[str],
) -> dict[str, float]:
    """Mean cosine and MSE over hidden entries, overall and per modality.

    Keys: ``fidelity_cosine``, ``fidelity_mse``, ``fidelity_n`` (number of entries) and
    ``fidelity_cosine/<modality>``, ``fidelity_mse/<modality>``. ``nan`` where no entry is
    hidden.
    """
    hidden = np.asarray(hidden, dtype=bool)
    cos, mse = entry_fidelity(completed, true, hidden)
    _, cols = np.nonzero(hidden)
    out: dict[str, float] = {
        "fidelity_cosine": float(cos.mean()) if cos.size else math.nan,
        "fidelity_mse": float(mse.mean()) if mse.size else math.nan,
        "fidelity_n": float(cos.size),
    }
    for j, m in enumerate(modalities):
        sel = cols == j
        out[f"fidelity_cosine/{m}"] = float(cos[sel].mean()) if sel.any() else math.nan
        out[f"fidelity_mse/{m}"] = float(mse[sel].mean()) if sel.any() else math.nan
    return out
