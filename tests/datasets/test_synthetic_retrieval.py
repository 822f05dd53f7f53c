"""``synthetic-retrieval``: determinism, layout, and the properties that make it honest.

The design claims (module docstring of :mod:`moe_retriever.datasets.synthetic_retrieval`): a
model that sees ``hidden`` and ``partner`` classifies well, no single modality (nor late fusion
of them) does, and the hidden modality is recoverable from training samples that share the
context. Each claim is checked on the generated data with simple, fast classical models.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from moe_retriever.datasets import list_datasets, load_data, load_dataset
from moe_retriever.datasets.synthetic_retrieval import MODALITIES, make_synthetic_retrieval


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic-retrieval", seed=3)


def _first_70(n: int) -> tuple[np.ndarray, np.ndarray]:
    train = np.arange(n) < int(0.7 * n)
    return train, ~train


def _lr_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of a logistic regression fitted on the first 70% of rows."""
    train, test = _first_70(len(y))
    scaler = StandardScaler().fit(x[train])
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(x[train]), y[train])
    return float(model.score(scaler.transform(x[test]), y[test]))


def test_registered_and_loadable_by_name() -> None:
    assert "synthetic-retrieval" in list_datasets()
    d = load_data("synthetic-retrieval", n_samples=200, n_clusters=10, seed=1)
    assert d.name == "synthetic-retrieval" and d.n_samples == 200


def test_deterministic_in_seed() -> None:
    a = make_synthetic_retrieval(n_samples=300, n_clusters=15, seed=5)
    b = make_synthetic_retrieval(n_samples=300, n_clusters=15, seed=5)
    c = make_synthetic_retrieval(n_samples=300, n_clusters=15, seed=6)
    assert np.array_equal(a.y, b.y) and np.array_equal(a.observed, b.observed)
    for m in MODALITIES:
        assert np.array_equal(a.X[m], b.X[m], equal_nan=True)
    assert not np.array_equal(a.X["context"], c.X["context"])
    assert not np.array_equal(a.observed, c.observed)


def test_shapes_and_natural_missingness(data) -> None:
    assert data.modalities == list(MODALITIES)
    assert data.n_samples == 1000 and data.class_names == ["neg", "pos"]
    assert data.dims == {"context": 16, "hidden": 16, "partner": 16}
    # context and partner always observed, hidden missing for exactly half of the samples
    assert data.observed[:, 0].all() and data.observed[:, 2].all()
    assert int((~data.observed[:, 1]).sum()) == 500
    assert np.isnan(data.X["hidden"][~data.observed[:, 1]]).all()
    assert not np.isnan(data.X["hidden"][data.observed[:, 1]]).any()
    # classes roughly balanced; every cluster of equal size
    assert 0.4 < data.y.mean() < 0.6
    assert set(np.bincount(data.attrs["cluster"]).tolist()) == {25}
    other = make_synthetic_retrieval(n_samples=200, n_clusters=10, hidden_missing=0.25, seed=0)
    assert int((~other.observed[:, 1]).sum()) == 50


def test_label_follows_the_generative_rule(data) -> None:
    b = data.attrs["prototypes"][data.attrs["cluster"]]
    rule = (np.einsum("nr,nr->n", b, data.attrs["partner_latent"]) > 0).astype(int)
    assert np.array_equal(rule, data.y)


def test_hidden_with_partner_classifies_but_no_modality_alone_does(data) -> None:
    y = data.y
    full_b = data.attrs["hidden_full"]  # the hidden modality before it was hidden
    c = data.X["partner"]
    interaction = np.einsum("ni,nj->nij", full_b, c).reshape(len(y), -1)
    assert _lr_accuracy(interaction, y) > 0.85  # the oracle that sees hidden and partner
    for x in (data.X["context"], full_b, c, np.hstack([data.X["context"], full_b, c])):
        assert abs(_lr_accuracy(x, y) - 0.5) < 0.1  # each alone, and all linearly: chance


def test_hidden_is_recoverable_from_samples_that_share_the_context(data) -> None:
    """Nearest training samples in context space that observe ``hidden`` carry the sample's
    own cluster prototype: the fill they give is close to the truth, a random one is not."""
    train, test = _first_70(data.n_samples)
    has_b = data.observed[:, 1]
    pool = np.flatnonzero(train & has_b)
    query = np.flatnonzero(test & ~has_b)
    cluster = data.attrs["cluster"]
    nn = NearestNeighbors(n_neighbors=3).fit(data.X["context"][pool])
    _, idx = nn.kneighbors(data.X["context"][query])
    same = (cluster[pool[idx]] == cluster[query, None]).mean()
    assert same > 0.9  # chance is 1 / 40
    fill = data.X["hidden"][pool[idx]].mean(axis=1)
    truth = data.attrs["hidden_full"][query]
    err_nn = np.mean((fill - truth) ** 2)
    err_mean = np.mean((data.X["hidden"][pool].mean(axis=0) - truth) ** 2)
    assert err_nn < 0.3 * err_mean


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 50, "n_clusters": 40}, "two samples per cluster"),
        ({"interaction_dim": 0}, "interaction_dim must be >= 1"),
        ({"hidden_noise": -1.0}, "hidden_noise must be >= 0"),
        ({"hidden_missing": 1.0}, r"hidden_missing must be in \[0, 1\)"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_synthetic_retrieval(**kwargs)
