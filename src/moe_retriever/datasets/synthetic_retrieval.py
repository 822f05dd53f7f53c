"""``synthetic-retrieval``: a generated setting in which retrieving the hidden modality pays.

Three modalities, for sample i in latent cluster k_i (clusters of equal size, order shuffled):

    context  x_i,A = sep * a[k_i] + noise_A * u_i        a[k] ~ N(0, I_FA)   (cluster code)
    hidden   x_i,B = L_B b[k_i]   + noise_B * v_i        b[k] uniform on the unit sphere of R^r
    partner  x_i,C = L_C c_i      + noise_C * w_i        c_i ~ N(0, I_r)
    label    y_i   = 1[ b[k_i] . c_i > 0 ]               classes "neg", "pos"

``L_B`` (F_B x r) and ``L_C`` (F_C x r) are fixed random loadings with N(0, 1/r) entries, the
same for every sample. ``b[k]`` is a cluster's random *prototype*: every sample of cluster k
carries the same one in its hidden modality, up to noise. The label is the sign of the inner
product of that prototype with the sample's own partner latent ``c_i``.

Why this is a setting where retrieval should win:

* **No modality alone carries the label.** ``context`` only says which cluster a sample is in,
  and inside every cluster half the labels are positive (``c_i`` is symmetric), so it is at
  chance; ``partner`` alone is at chance too (over random prototypes, ``b . c`` is symmetric);
  ``hidden`` alone is at chance for the same reason. Late fusion of per-modality classifiers is
  therefore at chance: the label exists only in the *interaction* of ``hidden`` with
  ``partner``.
* **Given ``hidden`` and ``partner`` the rule is simple and global**: one bilinear form
  ``x_B^T W x_C`` for every cluster, learnable from all samples that observe ``hidden``.
* **``hidden`` is missing for a large fraction of samples** (``hidden_missing``, default 0.5;
  ``context`` and ``partner`` are always observed), and for those it is recoverable *only from
  other samples that share the observed context*: the training samples of the same cluster
  (same ``context`` code) that observe ``hidden`` carry the very prototype ``b[k]``. A
  completion that brings back the cluster's prototype (from samples sharing the context, or
  from a mapping context -> hidden learned on them) turns a missing-``hidden`` sample into one
  the global rule classifies. Zero or mean fill of ``hidden`` gives every such sample the same
  constant, on which the global rule is at chance: a model without retrieval must classify
  them from ``context`` and ``partner``, i.e. learn the per-cluster rule below.
* **Without retrieval the label is hard to learn from the labels alone**: from ``context`` and
  ``partner`` the rule is a *different* linear rule in ``partner`` for each of ``n_clusters``
  clusters, each to be learnt from the few labelled samples of its cluster (about
  ``0.65 * n_samples / n_clusters`` training samples, a binary label each), while retrieval
  learns the prototype from the full ``hidden`` vectors of the cluster's samples (dense,
  label-free) and the rule once from all of them. This is the only honest advantage retrieval
  can have here: every quantity is a function of (cluster, ``c_i``), so a flexible model given
  unlimited labelled data could learn it without retrieval; with ~10 labelled samples per
  cluster it cannot.

The supporting groups of :mod:`moe_retriever.completion.support` are drawn from training
samples with the same observed *combination*, not the same cluster: in this library the
retriever recovers ``b[k]`` through what it learns from ``context`` (its inter-modal context and
the alignment self-supervision on samples that observe ``hidden``), while the ``knn`` baseline
retrieves it explicitly from the nearest samples in the observed modalities.

Natural missingness is built in (``hidden`` hidden for a ``hidden_missing`` fraction of
samples, chosen at random independently of cluster and label); run the benchmark with
``--missing-rates 0`` to keep exactly that. ``attrs`` keeps the truth (``cluster``,
``prototypes``, ``partner_latent``, ``hidden_full``: the hidden modality before it was hidden)
for tests and fidelity checks. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import numpy as np

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.readers import from_arrays

__all__ = ["MODALITIES", "make_synthetic_retrieval"]

#: modality names, in order: the context (cluster code), the hidden one, the partner
MODALITIES = ("context", "hidden", "partner")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_synthetic_retrieval(
    n_samples: int = 1000,
    n_clusters: int = 40,
    context_dim: int = 16,
    hidden_dim: int = 16,
    partner_dim: int = 16,
    interaction_dim: int = 4,
    separation: float = 1.0,
    context_noise: float = 0.3,
    hidden_noise: float = 0.2,
    partner_noise: float = 0.2,
    hidden_missing: float = 0.5,
    seed: int = 0,
) -> MultimodalData:
    """Generate the dataset described in the module docstring.

    ``separation`` scales the cluster codes of ``context`` against ``context_noise`` (how
    clearly the context reveals the cluster); ``interaction_dim`` is r, the dimension of the
    prototypes and of the partner latent. Ids are ``r00000`` ..., classes ``neg``, ``pos``.
    """
    if n_clusters < 2 or n_samples < 2 * n_clusters:
        raise ValueError(
            f"need n_clusters >= 2 and n_samples >= 2 * n_clusters (two samples per cluster), "
            f"got n_samples={n_samples}, n_clusters={n_clusters}"
        )
    dims = {"context_dim": context_dim, "hidden_dim": hidden_dim, "partner_dim": partner_dim}
    for what, d in {**dims, "interaction_dim": interaction_dim}.items():
        if d < 1:
            raise ValueError(f"{what} must be >= 1, got {d}")
    noises = {
        "separation": separation,
        "context_noise": context_noise,
        "hidden_noise": hidden_noise,
        "partner_noise": partner_noise,
    }
    for what, v in noises.items():
        if v < 0:
            raise ValueError(f"{what} must be >= 0, got {v}")
    if not 0.0 <= hidden_missing < 1.0:
        raise ValueError(f"hidden_missing must be in [0, 1), got {hidden_missing}")

    rng = np.random.default_rng(seed)
    r = interaction_dim
    cluster = rng.permutation(np.arange(n_samples) % n_clusters).astype(np.int64)
    codes = rng.standard_normal((n_clusters, context_dim))
    prototypes = _unit_rows(rng.standard_normal((n_clusters, r)))
    load_b = rng.standard_normal((hidden_dim, r)) / np.sqrt(r)
    load_c = rng.standard_normal((partner_dim, r)) / np.sqrt(r)
    c = rng.standard_normal((n_samples, r))
    y = (np.einsum("nr,nr->n", prototypes[cluster], c) > 0).astype(np.int64)

    noise_a = rng.standard_normal((n_samples, context_dim))
    noise_b = rng.standard_normal((n_samples, hidden_dim))
    noise_c = rng.standard_normal((n_samples, partner_dim))
    x_a = separation * codes[cluster] + context_noise * noise_a
    x_b = prototypes[cluster] @ load_b.T + hidden_noise * noise_b
    x_c = c @ load_c.T + partner_noise * noise_c

    n_hidden = round(hidden_missing * n_samples)
    hidden_rows = rng.permutation(n_samples)[:n_hidden]
    observed = np.ones((n_samples, 3), dtype=bool)
    observed[hidden_rows, 1] = False

    attrs: dict[str, object] = {
        "generator": {
            "n_samples": n_samples,
            "n_clusters": n_clusters,
            "context_dim": context_dim,
            "hidden_dim": hidden_dim,
            "partner_dim": partner_dim,
            "interaction_dim": interaction_dim,
            **noises,
            "hidden_missing": hidden_missing,
            "seed": seed,
        },
        "log1p": [],
        "cluster": cluster,
        "prototypes": prototypes.astype(np.float32),
        "partner_latent": c.astype(np.float32),
        "hidden_full": x_b.astype(np.float32),
    }
    width = max(len(str(n_samples - 1)), 5)
    return from_arrays(
        dict(zip(MODALITIES, (x_a, x_b, x_c))),
        labels=y,
        observed=observed,
        ids=[f"r{i:0{width}d}" for i in range(n_samples)],
        class_names=["neg", "pos"],
        name="synthetic-retrieval",
        attrs=attrs,
    )
