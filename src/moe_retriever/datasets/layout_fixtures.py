"""Small generated folders in the ADNI and MIMIC-IV layouts of the authors' pipeline.

Neither data set can ship (credentialed access), so the layout readers
(:mod:`moe_retriever.data.layouts`) are tested on files written here in exactly that layout:
a few dozen subjects, small image volumes (12 x 14 x 12 by default), realistic missingness
(scans for about two thirds of the ADNI subjects, several scans for some, biospecimen for
about half; MIMIC notes and codes absent for some subjects as zero rows, labs as NaN rows),
and a class signal in every modality so a short training run learns something.

Each writer returns the truth it wrote by construction (labels, observed mask, the file row
of each subject's latest scan, the split), so tests compare the readers with it rather than
with a second reading of the files. Deterministic in ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["adni_mask", "write_adni_fixture", "write_mimic_fixture"]

_TEMPLATE = "BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz"


def adni_mask(volume: tuple[int, int, int]) -> np.ndarray:
    """A boolean gray-matter mask of ``volume``: an ellipsoidal shell (about a third of it)."""
    axes = [np.linspace(-1.0, 1.0, n) for n in volume]
    r = np.sqrt(sum(a**2 for a in np.meshgrid(*axes, indexing="ij")))
    return (r > 0.45) & (r < 0.95)


def _split(ids: list[str], y: np.ndarray, rng: np.random.Generator) -> dict[str, list[str]]:
    """Per class: 60% training, 20% validation, 20% testing (every class in every part)."""
    parts: dict[str, list[str]] = {"training": [], "validation": [], "testing": []}
    for c in np.unique(y):
        members = [ids[i] for i in rng.permutation(np.nonzero(y == c)[0])]
        n_val = n_test = max(1, round(0.2 * len(members)))
        parts["validation"] += members[:n_val]
        parts["testing"] += members[n_val : n_val + n_test]
        parts["training"] += members[n_val + n_test :]
    return parts


def _observed(n: int, rates: list[float], rng: np.random.Generator) -> np.ndarray:
    """(n, M) observed mask with the given per-modality rates; every subject keeps one."""
    obs = rng.random((n, len(rates))) < np.asarray(rates)
    empty = ~obs.any(axis=1)
    obs[empty, int(np.argmax(rates))] = True
    return obs


def write_adni_fixture(
    root: str | Path,
    n_subjects: int = 36,
    volume: tuple[int, int, int] = (12, 14, 12),
    seed: int = 0,
    template: bool = True,
) -> dict[str, Any]:
    """Write an ADNI-layout folder under ``root``; return the truth.

    ``template``: also write the NIfTI template (needs nibabel); the mask is always written as
    ``image/mask.npy`` too, so the image encoder can be tested without nibabel.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = [f"{rng.integers(2, 999):03d}_S_{1000 + i:04d}" for i in range(n_subjects)]
    y = np.arange(n_subjects) % 3
    rng.shuffle(y)
    modalities = ["image", "genomic", "clinical", "biospecimen"]
    obs = _observed(n_subjects, [0.7, 0.8, 0.85, 0.5], rng)
    for d in ("image", "genomic", "clinical", "biospecimen"):
        (root / d).mkdir(parents=True, exist_ok=True)

    # labels: every subject, plus two labelled PTIDs that no part of the splits lists
    extra = ["941_S_9001", "941_S_9002"]
    pd.DataFrame({"PTID": ids + extra, "DIAGNOSIS": np.concatenate([y + 1, [1, 2]])}).to_csv(
        root / "label.csv", index=False
    )
    split = _split(ids, y, rng)
    (root / "PTID_splits.json").write_text(json.dumps(split))

    # image: one row per scan; some subjects scanned 2-3 times, lines in shuffled order
    mask = adni_mask(volume)
    np.save(root / "image" / "mask.npy", mask)
    n_vox = int(mask.sum())
    pattern = rng.normal(size=(3, n_vox)).astype(np.float32)
    scans: list[tuple[str, str, np.ndarray, bool]] = []
    latest_values: dict[str, np.ndarray] = {}
    for i, s in enumerate(ids):
        if not obs[i, 0]:
            continue
        n_scans = int(rng.choice([1, 1, 2, 3]))
        years = sorted(rng.choice(np.arange(2006, 2020), size=n_scans, replace=False))
        for k, year in enumerate(years):
            value = (pattern[y[i]] + 0.5 * rng.normal(size=n_vox)).astype(np.float32)
            date = f"{year}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
            scans.append((s, date, value, k == n_scans - 1))
            if k == n_scans - 1:
                latest_values[s] = value
    order = rng.permutation(len(scans))
    scans = [scans[k] for k in order]
    np.save(root / "image" / "ADNI_G.npy", np.stack([v for _, _, v, _ in scans]))
    lines = [f"{s}_MR_MPRAGE_br_raw_{k:03d}_{date}" for k, (s, date, _, _) in enumerate(scans)]
    (root / "image" / "ADNI_subj.txt").write_text("\n".join(lines) + "\n")
    latest_row = {s: k for k, (s, _, _, last) in enumerate(scans) if last}
    if template:
        import nibabel as nib

        other = np.where(rng.random(volume) < 0.3, 250, 0)  # other tissue labels, background
        labels = np.where(mask, 150, other).astype(np.int16)
        nib.save(nib.Nifti1Image(labels, np.eye(4)), str(root / "image" / _TEMPLATE))

    # genomic: SNP dosages 0/1/2 in an AnnData, obs index = PTID
    have_g = [i for i in range(n_subjects) if obs[i, 1]]
    snp_p = np.clip(0.2 + 0.25 * y[have_g, None] * (rng.random(12) > 0.5), 0, 0.9)
    genomic = rng.binomial(2, snp_p).astype(np.float32)
    import anndata

    adata = anndata.AnnData(
        X=genomic,
        obs=pd.DataFrame(index=[ids[i] for i in have_g]),
        var=pd.DataFrame(index=[f"rs{1000 + j}" for j in range(genomic.shape[1])]),
    )
    adata.write_h5ad(root / "genomic" / "genomic_merged.h5ad")

    # clinical: first column PTID, label-leak columns the reader must drop, some empty cells
    have_c = [i for i in range(n_subjects) if obs[i, 2]]
    clinical = pd.DataFrame(
        rng.normal(size=(len(have_c), 6)) + y[have_c, None] * 0.8,
        columns=["AGE", "PTEDUCAT", "MMSE", "CDRSB", "ADAS11", "FAQ"],
    )
    clinical.insert(0, "PTID", [ids[i] for i in have_c])
    clinical["PTCOGBEG"] = y[have_c] + 1
    clinical["PTADDX_1"] = y[have_c]
    clinical["PTADBEG"] = y[have_c] * 2.0
    holes = rng.random((len(have_c), 6)) < 0.1
    vals = clinical.iloc[:, 1:7].to_numpy()
    vals[holes] = np.nan
    clinical.iloc[:, 1:7] = vals
    clinical.to_csv(root / "clinical" / "clinical_merged.csv", index=False)
    mean_filled = clinical.copy()
    cols = ["AGE", "PTEDUCAT", "MMSE", "CDRSB", "ADAS11", "FAQ"]
    mean_filled[cols] = mean_filled[cols].fillna(mean_filled[cols].mean())
    mean_filled.to_csv(root / "clinical" / "clinical_merged_mean.csv", index=False)

    # biospecimen: a PTID column that is not first
    have_b = [i for i in range(n_subjects) if obs[i, 3]]
    bio = pd.DataFrame(
        rng.normal(size=(len(have_b), 4)) - y[have_b, None] * 0.6,
        columns=["ABETA", "TAU", "PTAU", "APOE4"],
    )
    bio.insert(1, "PTID", [ids[i] for i in have_b])
    bio.to_csv(root / "biospecimen" / "biospecimen_merged.csv", index=False)
    bio.to_csv(root / "biospecimen" / "biospecimen_merged_mean.csv", index=False)

    return {
        "ids": ids,
        "y": y,
        "modalities": modalities,
        "observed": obs,
        "split": split,
        "latest_row": latest_row,
        "latest_values": latest_values,
        "volume": volume,
        "mask": mask,
        "genomic": {ids[i]: genomic[k] for k, i in enumerate(have_g)},
        "clinical": clinical.set_index("PTID")[cols],
        "clinical_mean": mean_filled.set_index("PTID")[cols],
        "biospecimen": bio.set_index("PTID"),
        "unsplit": extra,
    }


def write_mimic_fixture(root: str | Path, n_subjects: int = 48, seed: int = 0) -> dict[str, Any]:
    """Write a MIMIC-IV-layout folder under ``root``; return the truth.

    Missing modalities: a lab row of NaN only, a note or code row of zeros only (what a
    subject without notes or codes gets from a padded tensor).
    """
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_all = n_subjects + 3  # three labelled subjects no part of the splits lists
    subjects = [str(10_000_000 + int(v)) for v in rng.choice(9_000_000, n_all, replace=False)]
    y_all = (rng.random(n_all) < 0.35).astype(np.int64)
    y_all[:2] = [0, 1]
    obs_all = _observed(n_all, [0.9, 0.6, 0.75], rng)
    dims = {"lab": 10, "note": 16, "code": 20}
    truth_x: dict[str, np.ndarray] = {}
    for j, m in enumerate(("lab", "note", "code")):
        if m == "code":
            p = np.clip(0.15 + 0.3 * y_all[:, None] * (rng.random(dims[m]) > 0.6), 0, 1)
            x = rng.binomial(1, p).astype(np.float32)
            x[obs_all[:, j] & (x.sum(1) == 0), 0] = 1.0  # an observed row holds a code
        else:
            x = (rng.normal(size=(n_all, dims[m])) + 0.9 * y_all[:, None]).astype(np.float32)
        x[~obs_all[:, j]] = np.nan if m == "lab" else 0.0
        truth_x[m] = x
        torch.save(torch.from_numpy(x), root / f"{m}_x.pt")
    pd.DataFrame({"subject_id": [int(s) for s in subjects], "one_year_mortality": y_all}).to_csv(
        root / "labels.csv", index=False
    )
    ids = subjects[:n_subjects]
    split = _split(ids, y_all[:n_subjects], rng)
    as_int = {k: [int(v) for v in vs] for k, vs in split.items()}  # the authors store integers
    (root / "PTID_splits_mimic.json").write_text(json.dumps(as_int))
    return {
        "ids": ids,
        "subjects": subjects,
        "y": y_all[:n_subjects],
        "modalities": ["lab", "note", "code"],
        "observed": obs_all[:n_subjects],
        "split": split,
        "x": {m: v[:n_subjects] for m, v in truth_x.items()},
        "unsplit": subjects[n_subjects:],
    }
