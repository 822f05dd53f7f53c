"""Built-in datasets: miniacc facts, mfeat shapes and classes, synthetic determinism."""

from __future__ import annotations

import numpy as np
import pytest

from moe_retriever.data.preprocessing import Preprocessor
from moe_retriever.datasets import list_datasets, load_data, load_dataset
from moe_retriever.datasets.miniacc import ASSAYS, EXCLUDED_COLUMNS, FILES
from moe_retriever.datasets.synthetic import make_synthetic


def test_registry() -> None:
    assert list_datasets() == [
        "mfeat",
        "miniacc",
        "smart",
        "support2",
        "synthetic",
        "synthetic-retrieval",
    ]
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*miniacc"):
        load_dataset("nope")


def test_load_data_unknown_source_message(tmp_path) -> None:
    with pytest.raises(
        ValueError,
        match=r"not a built-in dataset \(mfeat, miniacc, smart, support2, synthetic, "
        r"synthetic-retrieval\).*"
        r"not found",
    ):
        load_data(str(tmp_path / "missing"))
    (tmp_path / "f.csv").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_data(tmp_path / "f.csv")


def test_miniacc_facts() -> None:
    d = load_dataset("miniacc")
    assert d.n_samples == 92 and d.modalities == ASSAYS
    assert int(d.observed.all(axis=1).sum()) == 43
    assert d.dims == {
        "RNASeq2GeneNorm": 198,
        "gistict": 198,
        "RPPAArray": 33,
        "Mutations": 97,
        "miRNASeqGene": 471,
    }
    assert d.observed.sum(axis=0).tolist() == [79, 90, 46, 90, 80]
    assert d.class_names == ["alive", "dead"]
    assert np.bincount(d.y).tolist() == [58, 34]
    assert d.attrs["log1p"] == ["RNASeq2GeneNorm", "miRNASeqGene"]
    assert Preprocessor().fit(d).log1p_modalities_ == ["RNASeq2GeneNorm", "miRNASeqGene"]
    assert (FILES / "PROVENANCE.md").exists() and (FILES / "LICENSE.md").exists()
    assert d.ids[0].startswith("TCGA-")


def test_miniacc_clinical_never_leaks() -> None:
    d = load_dataset("miniacc", clinical=True)
    assert d.modalities[-1] == "clinical" and d.observed[:, -1].all()
    cols = d.feature_names["clinical"]
    bases = {c.split("=")[0] for c in cols}
    assert not bases & set(EXCLUDED_COLUMNS)
    assert not any("death" in c or "followup" in c or "vital" in c for c in cols)
    assert "gender=male" in cols and "years_to_birth" in cols
    # the clinical table's one-hot cells are 0/1 or NaN (unknown category)
    x = d.X["clinical"][:, [c.startswith("gender=") for c in cols]]
    assert set(np.unique(x[~np.isnan(x)]).tolist()) <= {0.0, 1.0}


def test_miniacc_other_label() -> None:
    with pytest.warns(UserWarning, match="14 patients have no 'C1A.C1B'"):
        d = load_dataset("miniacc", label="C1A.C1B", clinical=True)
    assert d.class_names == ["C1A", "C1B"] and d.n_samples == 78
    assert d.attrs["n_unlabelled_dropped"] == 14
    g = load_dataset("miniacc", label="gender", clinical=True)
    assert g.class_names == ["female", "male"]
    assert not any(c.startswith("gender") for c in g.feature_names["clinical"])
    with pytest.raises(ValueError, match="not a coldata column"):
        load_dataset("miniacc", label="nope")


def test_mfeat_shapes_and_classes() -> None:
    d = load_dataset("mfeat")
    assert d.n_samples == 2000
    assert d.dims == {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}
    assert d.class_names == [str(k) for k in range(10)]
    assert np.bincount(d.y).tolist() == [200] * 10
    assert d.observed.all()
    assert d.y[:200].tolist() == [0] * 200  # source order: sorted by digit
    assert d.X["mor"][0, 3] == pytest.approx(133.15)  # first row of mfeat-mor, exact value
    assert Preprocessor().fit(d).log1p_modalities_ == []
    two = load_dataset("mfeat", views=["pix", "fou"])
    assert two.modalities == ["pix", "fou"]


def test_synthetic_determinism_and_structure() -> None:
    a = make_synthetic(n_samples=90, n_modalities=3, dims=[5, 6, 7], n_classes=3, seed=4)
    b = load_dataset("synthetic", n_samples=90, n_modalities=3, dims=[5, 6, 7], n_classes=3, seed=4)
    for m in a.modalities:
        np.testing.assert_array_equal(a.X[m], b.X[m])
    np.testing.assert_array_equal(a.y, b.y)
    c = make_synthetic(n_samples=90, n_modalities=3, dims=[5, 6, 7], n_classes=3, seed=5)
    assert not np.array_equal(a.X["m0"], c.X["m0"])
    assert a.dims == {"m0": 5, "m1": 6, "m2": 7} and np.bincount(a.y).tolist() == [30] * 3
    # the stored truth regenerates the noiseless signal
    z, A = a.attrs["latent"], a.attrs["loadings"]["m1"]
    resid = a.X["m1"] - z @ A.T
    assert abs(resid.std() - 0.5) < 0.1  # only the private noise is left


def test_synthetic_label_strength_and_missing() -> None:
    d = make_synthetic(
        n_samples=300, n_modalities=2, dims=4, label_strength=[1.0, 0.0], noise=1.0, seed=0
    )
    # modality m1 carries no shared signal: its features are pure noise
    assert abs(d.X["m1"].std() - 1.0) < 0.1 and d.X["m0"].std() > 1.2
    with pytest.raises(ValueError, match="label_strength: 3 values for 2"):
        make_synthetic(n_modalities=2, label_strength=[1, 1, 1])
    m = make_synthetic(n_samples=200, missing_rate=0.4, seed=1)
    assert m.attrs["missingness"]["achieved_rate"] == pytest.approx(0.4, abs=0.01)
    assert m.observed.any(axis=1).all()
