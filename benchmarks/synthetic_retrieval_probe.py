"""Does a completion method bring back the right cluster's ``hidden`` tokens?

Diagnostic for docs/SYNTHETIC_RETRIEVAL.md. On ``synthetic-retrieval`` (library defaults of the
dataset), for each seed: the benchmark's split (``make_split(data, seed=seed)``), one deep model
per method fitted on train/val with the given ``--set`` overrides, then on the test samples
that DO observe ``hidden`` the entry is hidden and completed. In the model's own token space
(mean over the P tokens) it reports, per method:

* ``cos_own``: cosine of the completed ``hidden`` embedding to the sample's own encoded one;
* ``specificity``: ``cos_own`` minus the mean cosine to other test samples' encoded ones;
* ``cluster_gap``: mean cosine to encoded ``hidden`` of test samples of the SAME latent cluster
  minus that to samples of OTHER clusters (about 0 = the completion ignores the context;
  large = it retrieves the cluster's prototype);
* ``f1_hidden_masked`` / ``f1_observed``: test macro-F1 on those samples with ``hidden``
  hidden vs observed (what completion costs the classifier).

With ``--classical`` it instead checks the design with scikit-learn alone (no deep model): on
the test samples whose ``hidden`` is missing, accuracy of a logistic regression on the
interaction features ``hidden x partner`` (outer product) when ``hidden`` is filled by the mean
of the 3 nearest training samples in ``context`` space that observe it, against the same model
with ``hidden`` zero-filled plus ``context x partner`` features (what a model without retrieval
can use). Training rows: the first 70% of the generated order; test: the rest.

    .venv/bin/python benchmarks/synthetic_retrieval_probe.py --methods moe-retriever knn mean \
        --seeds 0 1 --set model.dim=64 ...
    .venv/bin/python benchmarks/synthetic_retrieval_probe.py --classical --seeds 0 1 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import f1_score

from moe_retriever.data.splits import apply_split, make_split
from moe_retriever.datasets import load_dataset
from moe_retriever.training.config import TrainConfig, apply_overrides
from moe_retriever.training.estimator import MoERetrieverClassifier


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def probe(method: str, seed: int, cfg: TrainConfig) -> dict[str, float]:
    data = load_dataset("synthetic-retrieval")
    train, val, test = apply_split(data, make_split(data, seed=seed))
    est = MoERetrieverClassifier(method=method, config=cfg, seed=seed)
    est.fit(train, val)
    has_b = np.flatnonzero(test.observed[:, 1])
    full = test.subset(has_b)
    obs = full.observed.copy()
    obs[:, 1] = False
    masked = full.with_observed(obs)
    true = _unit(np.asarray(est.encode(full))[:, 1].mean(axis=1))
    done = _unit(np.asarray(est.retrieve(masked))[:, 1].mean(axis=1))
    cos = done @ true.T
    n = len(has_b)
    off = ~np.eye(n, dtype=bool)
    cluster = np.asarray(data.attrs["cluster"])[np.searchsorted(data.ids, full.ids)]
    same = (cluster[:, None] == cluster[None, :]) & off
    other = cluster[:, None] != cluster[None, :]
    return {
        "cos_own": float(np.diag(cos).mean()),
        "specificity": float(np.diag(cos).mean() - cos[off].mean()),
        "cluster_gap": float(cos[same].mean() - cos[other].mean()),
        "f1_hidden_masked": float(f1_score(full.y, est.predict(masked), average="macro")),
        "f1_observed": float(f1_score(full.y, est.predict(full), average="macro")),
    }


def classical(seed: int) -> dict[str, float]:
    """Retrieval-then-rule vs no retrieval, with logistic regressions (see module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    data = load_dataset("synthetic-retrieval", seed=seed)
    a, b, c = (data.X[m] for m in ("context", "hidden", "partner"))
    y, has_b, n = data.y, data.observed[:, 1], data.n_samples
    train = np.arange(n) < int(0.7 * n)
    target = ~train & ~has_b
    pool = np.flatnonzero(train & has_b)
    _, idx = NearestNeighbors(n_neighbors=3).fit(a[pool]).kneighbors(a)
    b_knn = np.where(has_b[:, None], b, b[pool[idx]].mean(axis=1))
    b_zero = np.where(has_b[:, None], b, 0.0)

    def outer(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.einsum("ni,nj->nij", p, q).reshape(n, -1)

    def accuracy(x: np.ndarray) -> float:
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(max_iter=3000).fit(scaler.transform(x[train]), y[train])
        return float((model.predict(scaler.transform(x[target])) == y[target]).mean())

    return {
        "acc_knn_fill": accuracy(outer(b_knn, c)),
        "acc_no_retrieval": accuracy(np.hstack([outer(b_zero, c), outer(a, c)])),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["moe-retriever", "knn", "mean"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", dest="overrides", nargs="+", default=[])
    p.add_argument("--classical", action="store_true", help="the scikit-learn design check")
    args = p.parse_args()
    if args.classical:
        for seed in args.seeds:
            r = classical(seed)
            print(f"classical seed {seed}: " + " ".join(f"{k}={v:.3f}" for k, v in r.items()))
        return
    torch.set_num_threads(1)
    cfg = TrainConfig()
    cfg.runtime.progress_bar = False
    cfg = apply_overrides(cfg, args.overrides)
    cfg.validate()
    for method in args.methods:
        for seed in args.seeds:
            r = probe(method, seed, cfg)
            print(f"{method} seed {seed}: " + " ".join(f"{k}={v:.3f}" for k, v in r.items()))


if __name__ == "__main__":
    main()
