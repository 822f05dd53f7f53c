"""Retrieval fidelity: how close completed tokens are to the tokens of the hidden true data.

For every (sample, modality) entry that the missingness simulator hid, compare the tokens a
method put in that slot (``estimator.retrieve`` on the masked data) with the tokens the SAME
trained encoder gives the hidden true values (``estimator.encode`` on the unmasked data).

* ``cosine``: cosine similarity of the flattened (P*D) token blocks, averaged over entries
  (a zero block, e.g. the ``zero`` method, has cosine 0 with anything);
* ``mse``: mean squared difference over the P*D values, averaged over entries.

Both are reported overall and per modality. Only the encoder of the method's own trained model
is used, so the measure asks "did the method put what this model would have seen", which is
comparable across methods only in the sense of each method against its own encoder.

That token space is the one the alignment loss trains, so cosine can be won by collapse (every
completed token near one typical token). Two measures that collapse cannot win:

* ``probe_r2`` (:func:`probe_fidelity`): a ridge regression from a modality's encoder tokens
  (flattened P*D) to that modality's preprocessed raw features, fitted on the TRAINING rows
  that observe the modality (tokens of the trained encoder on real inputs), then applied to the
  completed tokens of the hidden TEST entries and scored against their true preprocessed
  features: ``R^2 = 1 - SSE / SST`` with SST against the training-mean prediction. A fill that
  carries no sample-specific information (``zero``, ``mean``) lands near 0 or below; a perfect
  fill reaches the probe's own fit. The ridge penalty is chosen on the training rows alone
  (efficient leave-one-out, :class:`sklearn.linear_model.RidgeCV`).
* ``specificity`` (:func:`specificity`): for the hidden test entries of one modality,
  ``cosine(completed_i, true_i) - mean_{j != i} cosine(completed_i, true_j)``: how much closer a
  completed token is to its own sample's true token than to other samples'. The same token for
  every sample scores exactly 0 on average, however high its cosine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: ridge penalties the probe chooses from (leave-one-out on the training rows)
PROBE_ALPHAS: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)


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


def _unit_rows(a: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)


def specificity(completed: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per entry ``cos(completed_i, true_i) - mean_{j != i} cos(completed_i, true_j)``.

    ``completed`` and ``true`` are (K, ...) blocks of K entries of ONE modality (flattened per
    entry). A zero block has cosine 0 with anything. Needs K >= 2 (else an empty array).
    """
    k = completed.shape[0]
    if true.shape[0] != k:
        raise ValueError(f"completed has {k} entries and true {true.shape[0]}")
    if k < 2:
        return np.zeros(0)
    a = _unit_rows(np.asarray(completed, dtype=np.float64).reshape(k, -1))
    b = _unit_rows(np.asarray(true, dtype=np.float64).reshape(k, -1))
    cos = a @ b.T  # (K, K): row i = completed_i against every true_j
    own = np.diag(cos)
    others = (cos.sum(axis=1) - own) / (k - 1)
    return own - others


def fit_probe(
    tokens: np.ndarray, features: np.ndarray, alphas: Sequence[float] = PROBE_ALPHAS
) -> Any:
    """Ridge from flattened tokens (N, P, D) to features (N, F); the penalty from ``alphas``
    by leave-one-out on these rows (training rows only)."""
    from sklearn.linear_model import RidgeCV

    x = np.asarray(tokens, dtype=np.float64).reshape(tokens.shape[0], -1)
    return RidgeCV(alphas=tuple(float(a) for a in alphas)).fit(x, np.asarray(features, float))


def probe_r2(
    probe: Any, completed: np.ndarray, true_features: np.ndarray, train_mean: np.ndarray
) -> tuple[float, float]:
    """``(SSE, SST)`` of the probe applied to completed tokens (K, P, D) against the true
    features (K, F); SST against ``train_mean`` (F,). R^2 = 1 - SSE/SST."""
    x = np.asarray(completed, dtype=np.float64).reshape(completed.shape[0], -1)
    pred = np.asarray(probe.predict(x)).reshape(true_features.shape)
    y = np.asarray(true_features, dtype=np.float64)
    sse = float(((pred - y) ** 2).sum())
    sst = float(((y - np.asarray(train_mean, dtype=np.float64)[None, :]) ** 2).sum())
    return sse, sst


def probe_fidelity(
    train_tokens: np.ndarray,
    train_features: Sequence[np.ndarray] | dict[str, np.ndarray],
    train_observed: np.ndarray,
    completed: np.ndarray,
    true_tokens: np.ndarray,
    test_features: Sequence[np.ndarray] | dict[str, np.ndarray],
    hidden: np.ndarray,
    modalities: Sequence[str],
    alphas: Sequence[float] = PROBE_ALPHAS,
) -> dict[str, float]:
    """Linear-probe R^2 and specificity of completed tokens on hidden test entries.

    ``train_tokens`` (N_train, M, P, D): encoder tokens of the training rows;
    ``train_features``: per modality (N_train, F_m) preprocessed features (rows where
    ``train_observed[:, m]``); ``completed`` / ``true_tokens`` (N_test, M, P, D): completed
    tokens and the encoder tokens of the hidden truth; ``test_features``: per modality
    (N_test, F_m) true preprocessed features (used on ``hidden`` entries only).

    Keys: ``fidelity_probe_r2`` and ``fidelity_specificity`` overall, and ``/<modality>``.
    Per modality, R^2 pools SSE and SST over the modality's hidden entries and features; the
    overall R^2 is the mean of the per-modality values weighted by their numbers of hidden
    entries, and the overall specificity the mean over all hidden entries. ``nan`` where a
    modality has no hidden entry, fewer than 2 (specificity), or fewer than 2 training rows.
    """
    hidden = np.asarray(hidden, dtype=bool)
    train_observed = np.asarray(train_observed, dtype=bool)
    feats_tr = (
        [train_features[m] for m in modalities]
        if isinstance(train_features, dict)
        else list(train_features)
    )
    feats_te = (
        [test_features[m] for m in modalities]
        if isinstance(test_features, dict)
        else list(test_features)
    )
    out: dict[str, float] = {}
    r2_vals: list[tuple[float, int]] = []
    spec_all: list[np.ndarray] = []
    for j, m in enumerate(modalities):
        rows = np.nonzero(hidden[:, j])[0]
        spec = specificity(completed[rows, j], true_tokens[rows, j])
        out[f"fidelity_specificity/{m}"] = float(spec.mean()) if spec.size else math.nan
        spec_all.append(spec)
        tr = np.nonzero(train_observed[:, j])[0]
        if rows.size == 0 or tr.size < 2:
            out[f"fidelity_probe_r2/{m}"] = math.nan
            continue
        y_tr = np.asarray(feats_tr[j], dtype=np.float64)[tr]
        probe = fit_probe(train_tokens[tr, j], y_tr, alphas)
        sse, sst = probe_r2(
            probe, completed[rows, j], np.asarray(feats_te[j], np.float64)[rows], y_tr.mean(0)
        )
        r2 = 1.0 - sse / sst if sst > 0 else math.nan
        out[f"fidelity_probe_r2/{m}"] = r2
        if not math.isnan(r2):
            r2_vals.append((r2, int(rows.size)))
    weights = sum(w for _, w in r2_vals)
    out["fidelity_probe_r2"] = sum(r * w for r, w in r2_vals) / weights if weights else math.nan
    spec_cat = np.concatenate(spec_all) if spec_all else np.zeros(0)
    out["fidelity_specificity"] = float(spec_cat.mean()) if spec_cat.size else math.nan
    return out
