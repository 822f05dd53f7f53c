"""A synthetic multimodal dataset with a known shared latent factor.

Generative model, for sample i with class y_i (classes balanced, order shuffled):

    z_i   = mu[y_i] + e_i                      e_i ~ N(0, I_latent_dim)
    x_i,m = strength_m * (A_m z_i) + noise * u_i,m      u_i,m ~ N(0, I_F_m)

``mu`` (n_classes x latent_dim) holds class means drawn from N(0, I), so the label is
learnable from z; ``A_m`` (F_m x latent_dim) is a per-modality loading matrix with
N(0, 1/latent_dim) entries, so ``A_m z`` has unit-order variance. ``strength_m``
(``label_strength``) scales how much of the shared latent, and with it of the label, modality
m carries relative to its private noise: 0 makes it pure noise. Because every modality is a
noisy view of the same z, a missing modality is predictable from the observed ones, which is
what retrieval relies on; ``attrs`` keeps the truth (``latent``, ``loadings``, ``class_means``)
when the arrays are small (at most :data:`MAX_TRUTH_VALUES` values each), for fidelity tests.

``missing_rate > 0`` hides entries with :func:`~moe_retriever.data.missingness.simulate_missing`
(same seed). Everything is deterministic in ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.missingness import simulate_missing
from moe_retriever.data.readers import from_arrays

__all__ = ["MAX_TRUTH_VALUES", "make_synthetic"]

#: truth arrays with more values than this are not stored in ``attrs``
MAX_TRUTH_VALUES = 200_000


def _per_modality(value: float | int | Sequence[float] | Sequence[int], n: int, what: str) -> list:
    if isinstance(value, (int, float, np.integer, np.floating)):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} values for {n} modalities")
    return values


def make_synthetic(
    n_samples: int = 600,
    n_modalities: int = 4,
    dims: int | Sequence[int] = 64,
    n_classes: int = 3,
    latent_dim: int = 8,
    noise: float = 0.5,
    label_strength: float | Sequence[float] = 1.0,
    missing_rate: float = 0.0,
    seed: int = 0,
) -> MultimodalData:
    """Generate the dataset described in the module docstring.

    Modalities are named ``m0`` .. ``m{M-1}``, ids ``s00000`` ..., classes ``c0`` ....
    """
    if n_modalities < 2:
        raise ValueError(f"n_modalities must be >= 2, got {n_modalities}")
    if n_samples < n_classes or n_classes < 2:
        raise ValueError(
            f"need n_classes >= 2 and n_samples >= n_classes, got {n_samples}, {n_classes}"
        )
    if latent_dim < 1 or noise < 0:
        raise ValueError(f"latent_dim must be >= 1 and noise >= 0, got {latent_dim}, {noise}")
    dim_list = [int(d) for d in _per_modality(dims, n_modalities, "dims")]
    if min(dim_list) < 1:
        raise ValueError(f"dims must be >= 1, got {dim_list}")
    strengths = [float(s) for s in _per_modality(label_strength, n_modalities, "label_strength")]
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)
    mu = rng.standard_normal((n_classes, latent_dim))
    z = mu[y] + rng.standard_normal((n_samples, latent_dim))
    names = [f"m{j}" for j in range(n_modalities)]
    X: dict[str, np.ndarray] = {}
    loadings: dict[str, np.ndarray] = {}
    for m, d, s in zip(names, dim_list, strengths):
        A = rng.standard_normal((d, latent_dim)) / np.sqrt(latent_dim)
        X[m] = s * (z @ A.T) + noise * rng.standard_normal((n_samples, d))
        loadings[m] = A
    attrs: dict[str, object] = {
        "generator": {
            "n_samples": n_samples,
            "n_modalities": n_modalities,
            "dims": dim_list,
            "n_classes": n_classes,
            "latent_dim": latent_dim,
            "noise": noise,
            "label_strength": strengths,
            "missing_rate": missing_rate,
            "seed": seed,
        },
        "log1p": [],
    }
    if z.size <= MAX_TRUTH_VALUES:
        attrs["latent"] = z.astype(np.float32)
        attrs["class_means"] = mu.astype(np.float32)
    if all(a.size <= MAX_TRUTH_VALUES for a in loadings.values()):
        attrs["loadings"] = {m: a.astype(np.float32) for m, a in loadings.items()}
    width = len(str(n_samples - 1))
    data = from_arrays(
        X,
        labels=y,
        ids=[f"s{i:0{max(width, 5)}d}" for i in range(n_samples)],
        class_names=[f"c{k}" for k in range(n_classes)],
        name="synthetic",
        attrs=attrs,
    )
    if missing_rate > 0:
        data, _ = simulate_missing(data, rate=missing_rate, seed=seed)
    return data
