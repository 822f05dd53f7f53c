"""miniACC: 92 TCGA adrenocortical carcinoma patients, five assays with natural missingness.

Files: ``files/miniacc/`` (CSV, see PROVENANCE.md there; Artistic-2.0, see LICENSE.md).
Modalities, in the MultiAssayExperiment order: ``RNASeq2GeneNorm`` (198 genes),
``gistict`` (198), ``RPPAArray`` (33), ``Mutations`` (97), ``miRNASeqGene`` (471).
Only 43 patients have all five. Default label: ``vital_status`` (0 -> "alive", 1 -> "dead").
RNA-seq and miRNA-seq are raw-scale counts, so ``attrs["log1p"]`` names them for the
:class:`~moe_retriever.data.preprocessing.Preprocessor`.

Optional sixth modality ``clinical`` (``clinical=True``), observed for every patient, built
from the coldata columns in :data:`CLINICAL_COLUMNS` (numbers as they are, categories one-hot
as ``column=value``, a missing category leaving NaN cells for the preprocessor to impute).
Left out, and why:

* outcome columns ``vital_status``, ``days_to_death``, ``days_to_last_followup``: they are, or
  reveal, the label;
* ``date_of_initial_pathologic_diagnosis``: the diagnosis year fixes how long a patient could
  be followed, so it predicts whether a death was recorded (censoring), not the disease;
* molecular subtype / cluster columns (``C1A.C1B``, ``mRNA_K4``, ``MethyLevel``,
  ``miRNA.cluster``, ``SCNA.cluster``, ``protein.cluster``, ``COC``, ``OncoSign``) and
  assay-derived scores (``purity``, ``ploidy``, ``genome_doublings``, ``ADS``): they were
  computed from the assays themselves, so they would copy assay information into the
  clinical modality (and leak a missing assay's content), and several were fitted with the
  outcome in view;
* ``patientID`` (the id) and ``tumor_tissue_site`` (one value for everyone).

``label=`` picks another coldata column as the class (e.g. ``"C1A.C1B"`` or ``"gender"``);
that column is then also kept out of ``clinical``. Patients without a value in that column
are dropped (a warning gives the count; ``attrs["n_unlabelled_dropped"]`` records it). Using an
assay-derived cluster as the label makes the task partly circular (the assays define it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.readers import from_pandas

__all__ = [
    "ASSAYS",
    "CLINICAL_COLUMNS",
    "EXCLUDED_COLUMNS",
    "FILES",
    "load_miniacc",
]

FILES = Path(__file__).parent / "files" / "miniacc"
ASSAYS = ["RNASeq2GeneNorm", "gistict", "RPPAArray", "Mutations", "miRNASeqGene"]
LOG1P_ASSAYS = ["RNASeq2GeneNorm", "miRNASeqGene"]
OUTCOME_COLUMNS = ["vital_status", "days_to_death", "days_to_last_followup"]
CLINICAL_COLUMNS = [
    "years_to_birth",
    "pathologic_stage",
    "pathology_T_stage",
    "pathology_N_stage",
    "gender",
    "radiation_therapy",
    "histological_type",
    "residual_tumor",
    "number_of_lymph_nodes",
    "race",
    "ethnicity",
    "Histology",
]
EXCLUDED_COLUMNS = [
    *OUTCOME_COLUMNS,
    "date_of_initial_pathologic_diagnosis",
    "patientID",
    "tumor_tissue_site",
    "C1A.C1B",
    "mRNA_K4",
    "MethyLevel",
    "miRNA.cluster",
    "SCNA.cluster",
    "protein.cluster",
    "COC",
    "OncoSign",
    "purity",
    "ploidy",
    "genome_doublings",
    "ADS",
]


def _coldata() -> pd.DataFrame:
    df = pd.read_csv(FILES / "coldata.csv", index_col=0)
    df.index = df.index.astype(str)
    return df


def _clinical(coldata: pd.DataFrame, label: str) -> pd.DataFrame:
    """Non-leaking coldata columns as numbers: one-hot categories, NaN where unknown."""
    parts = []
    for col in CLINICAL_COLUMNS:
        if col == label:
            continue
        s = coldata[col]
        if pd.api.types.is_numeric_dtype(s):
            parts.append(s.astype(np.float64).rename(col).to_frame())
            continue
        dummies = pd.get_dummies(s, prefix=col, prefix_sep="=", dtype=np.float64)
        dummies.loc[s.isna(), :] = np.nan
        parts.append(dummies)
    return pd.concat(parts, axis=1)


def load_miniacc(clinical: bool = False, label: str = "vital_status") -> MultimodalData:
    """The miniACC dataset (see the module docstring for modalities, label and clinical)."""
    coldata = _coldata()
    if label not in coldata.columns:
        raise ValueError(
            f"miniacc: label {label!r} is not a coldata column; columns: {list(coldata.columns)}"
        )
    frames = {}
    for assay in ASSAYS:
        df = pd.read_csv(FILES / f"{assay}.csv", index_col=0)
        df.index = df.index.astype(str)
        frames[assay] = df
    if clinical:
        frames["clinical"] = _clinical(coldata, label)

    labels = coldata[label]
    n_dropped = int(labels.isna().sum())
    if n_dropped:
        warnings.warn(
            f"miniacc: {n_dropped} patients have no {label!r} value and are left out",
            stacklevel=2,
        )
        keep = labels.notna()
        labels = labels[keep]
        frames = {m: f.loc[f.index.isin(labels.index)] for m, f in frames.items()}
    class_names = ["alive", "dead"] if label == "vital_status" else None
    attrs = {
        "log1p": list(LOG1P_ASSAYS),
        "label": label,
        "source": "Bioconductor MultiAssayExperiment miniACC (TCGA-ACC)",
        "license": "Artistic-2.0",
        "excluded_columns": [c for c in EXCLUDED_COLUMNS if c != label],
        "n_unlabelled_dropped": n_dropped,
    }
    return from_pandas(frames, labels=labels, class_names=class_names, name="miniacc", attrs=attrs)
