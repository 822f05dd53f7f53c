"""Read ADNI and MIMIC-IV as the authors' pipeline lays them out on disk.

The MoE-Retriever paper evaluates on ADNI (MRI image, genomics, clinical, biospecimen; 3-class
diagnosis) and MIMIC-IV (labs, notes, codes; one-year mortality). Neither can ship, so these
readers follow the file layout read by the authors' ``data.py`` (and Flex-MoE's preprocessing)
and turn it into the package's :class:`~moe_retriever.data.core.MultimodalData`, with the
split of the authors' splits file attached (``data.attrs["split"]``, see :func:`layout_split`).

ADNI, under one root (:func:`read_adni_layout`)::

    label.csv                              PTID, DIAGNOSIS (1 = CN, 2 = MCI, 3 = Dementia)
    PTID_splits.json                       {"training": [...], "validation": [...],
                                            "testing": [...]}
    genomic/genomic_merged.h5ad            AnnData, obs index = PTID
    clinical/clinical_merged[_mean].csv    first column PTID
    biospecimen/biospecimen_merged[_mean].csv   column PTID (else the first column)
    image/ADNI_G.npy                       (scans, gray-matter voxels inside the template mask)
    image/ADNI_subj.txt                    one scan per line: <PTID in 3 parts>_..._<date>
    image/BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz   mask = voxels labelled 150

MIMIC-IV, under one root (:func:`read_mimic_layout`)::

    labels.csv                 subject_id, one_year_mortality (0/1)
    PTID_splits_mimic.json     {"training": [...], "validation": [...], "testing": [...]}
    lab_x.pt, note_x.pt, code_x.pt   one 2-D tensor per modality, rows aligned with labels.csv

Conventions (those of every reader, :mod:`moe_retriever.data.readers`):

* The samples are the ids of the splits file, in its order (training, validation, testing);
  labelled ids that no part lists are left out (counted in ``attrs["unsplit_labelled"]``).
  An id of the splits file without a label is an error naming it.
* Labels are 0-based class codes: ADNI ``DIAGNOSIS`` 1..3 -> 0..2, MIMIC 0/1 as is.
* ADNI: a sample lacks a modality when it has no row there (or a row of NaN only, the package's
  convention). Clinical columns starting with ``PTCOGBEG``, ``PTADDX`` or ``PTADBEG`` are
  dropped as label leaks, as the authors do. Of several scans of one PTID the latest (by the
  date ending its line of ``ADNI_subj.txt``) is used. The image modality stays on disk: a
  :class:`~moe_retriever.data.mapped.MappedRows` over ``np.load(..., mmap_mode="r")``.
* MIMIC: the tensors have a row for every subject, so a missing modality is a row that holds
  no information: all NaN, or all zero (no lab value, note embedding or code recorded);
  ``missing="nan"`` counts only all-NaN rows as missing.
* A modality whose folder (ADNI: ``image/``, ``genomic/``...) or tensor file (MIMIC:
  ``<modality>_x.pt``) is absent is absent for the whole folder (many users have no MRI or no
  genotypes). With ``modalities=None`` (the default) the readers read the modalities that
  exist, say in one :class:`~moe_retriever.data.core.DataWarning` line which are absent, and
  list them in ``attrs["absent_modalities"]``; a modality named in ``modalities`` that is
  absent is a one-line error. At least two modalities must be read.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moe_retriever.data.core import DataValidationError, DataWarning, MultimodalData
from moe_retriever.data.mapped import MappedRows
from moe_retriever.data.readers import _dense_frame
from moe_retriever.data.splits import Split
from moe_retriever.data.validation import check_numeric_frame, check_unique, preview

__all__ = [
    "ADNI_CLASSES",
    "ADNI_MODALITIES",
    "ADNI_TEMPLATE",
    "ADNI_VOLUME",
    "LAYOUTS",
    "MIMIC_CLASSES",
    "MIMIC_MODALITIES",
    "detect_layout",
    "layout_split",
    "read_adni_layout",
    "read_layout",
    "read_mimic_layout",
    "resolve_encoder_paths",
]

#: the ADNI modalities in the paper's order (the modality set "IGCB")
ADNI_MODALITIES = ("image", "genomic", "clinical", "biospecimen")
#: the MIMIC-IV modalities in the paper's order (the modality set "LNC")
MIMIC_MODALITIES = ("lab", "note", "code")
#: ADNI DIAGNOSIS codes 1, 2, 3 in order
ADNI_CLASSES = ["CN", "MCI", "Dementia"]
#: one_year_mortality 0, 1 in order
MIMIC_CLASSES = ["survived", "died"]
#: the template of the authors' image preprocessing, under ``image/``
ADNI_TEMPLATE = "BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz"
#: the shape of that template and the label of its gray-matter voxels
ADNI_VOLUME = (91, 109, 91)
ADNI_MASK_LABEL = 150
#: clinical columns the authors drop as label leaks (prefixes)
ADNI_DROPPED_PREFIXES = ("PTCOGBEG", "PTADDX", "PTADBEG")

ADNI_FILES = ("label.csv", "PTID_splits.json")
MIMIC_FILES = ("labels.csv", "PTID_splits_mimic.json")
LAYOUTS = ("adni", "mimic")
_SPLIT_KEYS = {"train": "training", "val": "validation", "test": "testing"}


# ---------------------------------------------------------------------------- helpers
def _choose(
    layout: str,
    root: Path,
    modalities: Sequence[str] | None,
    known: Sequence[str],
    where: dict[str, Path],
) -> tuple[list[str], list[str]]:
    """(modalities to read, absent ones) of a layout folder. ``where[m]``: the folder or file
    whose existence means ``m`` is there."""
    present = [m for m in known if where[m].exists()]
    absent = [m for m in known if m not in present]
    if modalities is None:
        chosen = present
        if absent and len(chosen) >= 2:
            shown = ", ".join(f"{m} ({str(where[m].relative_to(root))!r})" for m in absent)
            warnings.warn(
                f"{layout} layout {str(root)!r}: absent modalities {shown}; reading "
                f"{', '.join(chosen)} (choose with --modalities or data.modalities)",
                DataWarning,
                stacklevel=3,
            )
    else:
        chosen = list(dict.fromkeys(str(m) for m in modalities))
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise ValueError(f"unknown {layout} modalities {unknown}; choose from {list(known)}")
        missing = [m for m in chosen if m not in present]
        if missing:
            m = missing[0]
            raise DataValidationError(
                f"{layout} layout {str(root)!r}: modality {m!r} was asked for but is absent "
                f"(no {str(where[m])!r}); present: {', '.join(present) or 'none'}"
            )
    if len(chosen) < 2:
        raise DataValidationError(
            f"{layout} layout {str(root)!r}: {len(chosen)} modality(ies) to read "
            f"({', '.join(chosen) or 'none'}; absent: {', '.join(absent) or 'none'}); "
            "need at least two"
        )
    return chosen, absent


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file {str(path)!r}")
    return path


def _read_csv(path: Path, **kw: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(f"{str(path)!r} is not a readable CSV file: {first}") from exc


def _columns(frame: pd.DataFrame, path: Path, needed: Sequence[str]) -> None:
    lacking = [c for c in needed if c not in frame.columns]
    if lacking:
        raise DataValidationError(
            f"{str(path)!r}: missing column(s) {lacking}; columns are {preview(frame.columns)}"
        )


def _read_splits(path: Path) -> Split:
    """The authors' splits file as a :class:`Split` (``training`` -> ``train``, ...)."""
    try:
        raw = json.loads(_need(path, "splits file").read_text())
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"split file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataValidationError(f"{str(path)!r}: expected a JSON object with training/testing")
    for key in ("training", "testing"):
        if key not in raw:
            raise DataValidationError(
                f"{str(path)!r}: missing the list {key!r} (keys: {sorted(raw)})"
            )
    for key in _SPLIT_KEYS.values():
        if key in raw and not isinstance(raw[key], list):
            raise DataValidationError(f"{str(path)!r}: {key!r} must be a list of ids")
    parts = {ours: [str(i) for i in raw.get(theirs, [])] for ours, theirs in _SPLIT_KEYS.items()}
    return Split(parts["train"], parts["val"], parts["test"], notes=[f"from {path.name}"])


def _split_ids(split: Split) -> list[str]:
    return [*split.train, *split.val, *split.test]


def _labels_for(
    split: Split, labels: pd.Series, path: Path, what: str
) -> tuple[list[str], np.ndarray, int]:
    """(sample ids, raw labels in that order, count of labelled ids left out)."""
    ids = _split_ids(split)
    unlabelled = [i for i in ids if i not in labels.index]
    if unlabelled:
        raise DataValidationError(
            f"{what}: {len(unlabelled)} id(s) of the splits file have no label in "
            f"{str(path)!r}: {preview(unlabelled)}"
        )
    values = labels.reindex(ids)
    missing = values.isna().to_numpy()
    if missing.any():
        raise DataValidationError(
            f"{str(path)!r}: empty label for {int(missing.sum())} id(s) of the splits file: "
            f"{preview(np.asarray(ids, dtype=object)[missing])}"
        )
    return ids, values.to_numpy(), len(set(labels.index) - set(ids))


def _one_row_per_id(frame: pd.DataFrame, path: Path, what: str) -> pd.DataFrame:
    frame.index = frame.index.map(lambda v: str(v).strip())
    frame.index.name = None
    check_unique(list(frame.index), f"{what} ({str(path)!r}): ids")
    return frame


def _aligned(
    frame: pd.DataFrame, ids: Sequence[str], modality: str, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(values (N, F) float32 aligned to ``ids``, observed (N,)): no row or all-NaN = missing."""
    values = check_numeric_frame(frame, modality, source=str(path))
    x = values.reindex(list(ids)).to_numpy(dtype=np.float32)
    observed = ~np.isnan(x).all(axis=1) if x.shape[1] else np.zeros(len(ids), bool)
    return x, observed


# ---------------------------------------------------------------------------- ADNI
def _adni_labels(root: Path) -> pd.Series:
    path = _need(root / "label.csv", "ADNI layout")
    frame = _read_csv(path)
    _columns(frame, path, ["PTID", "DIAGNOSIS"])
    frame["PTID"] = frame["PTID"].astype(str).str.strip()
    frame = frame.dropna(subset=["DIAGNOSIS"])
    codes = pd.to_numeric(frame["DIAGNOSIS"], errors="coerce")
    bad = ~codes.isin([1, 2, 3])
    if bad.any():
        raise DataValidationError(
            f"{str(path)!r}: DIAGNOSIS must be 1, 2 or 3 (CN, MCI, Dementia); PTIDs "
            f"{preview(frame.loc[bad, 'PTID'])} have {preview(frame.loc[bad, 'DIAGNOSIS'])}"
        )
    frame = frame.assign(DIAGNOSIS=codes.astype(np.int64))
    per_id = frame.groupby("PTID", sort=False)["DIAGNOSIS"]
    differ = per_id.nunique()
    differ = differ[differ > 1]
    if len(differ):
        warnings.warn(
            f"{str(path)!r}: {len(differ)} PTID(s) have several different DIAGNOSIS rows "
            f"({preview(differ.index)}); the first row of each is used, as the authors' code "
            "does",
            DataWarning,
            stacklevel=3,
        )
    return per_id.first()


def _adni_image_rows(root: Path, ids: Sequence[str]) -> tuple[MappedRows, np.ndarray]:
    """The image modality on disk: the latest scan of each sample (``-1``: no scan)."""
    array_path = _need(root / "image" / "ADNI_G.npy", "ADNI image modality")
    subj_path = _need(root / "image" / "ADNI_subj.txt", "ADNI image modality")
    try:
        source = np.load(array_path, mmap_mode="r")
    except ValueError as exc:
        raise DataValidationError(f"{str(array_path)!r} is not a .npy array: {exc}") from exc
    if source.ndim != 2:
        raise DataValidationError(
            f"{str(array_path)!r}: expected (scans, voxels), got shape {source.shape}"
        )
    if not np.issubdtype(source.dtype, np.floating):
        raise DataValidationError(
            f"{str(array_path)!r}: expected floating-point voxel values, got {source.dtype}"
        )
    lines = [ln.strip() for ln in subj_path.read_text().splitlines()]
    if lines and not lines[-1]:
        lines = [ln for ln in lines if ln]
    if len(lines) != source.shape[0]:
        raise DataValidationError(
            f"{str(subj_path)!r} names {len(lines)} scans, {str(array_path)!r} has "
            f"{source.shape[0]} rows; they must match line for row"
        )
    latest: dict[str, tuple[pd.Timestamp, int]] = {}
    for row, line in enumerate(lines):
        parts = line.split("_")
        if len(parts) < 4:
            raise DataValidationError(
                f"{str(subj_path)!r} line {row + 1}: {line!r} is not "
                "<PTID in three parts>_..._<date>"
            )
        ptid = "_".join(parts[:3])
        date = pd.to_datetime(parts[-1], errors="coerce")
        if pd.isna(date):
            raise DataValidationError(
                f"{str(subj_path)!r} line {row + 1}: {parts[-1]!r} at the end of {line!r} "
                "is not a date"
            )
        if ptid not in latest or date >= latest[ptid][0]:  # same date: the later line wins
            latest[ptid] = (date, row)
    rows = np.array([latest[i][1] if i in latest else -1 for i in ids], dtype=np.int64)
    return MappedRows(source, rows), rows >= 0


def read_adni_layout(
    root: str | Path,
    modalities: Sequence[str] | None = None,
    *,
    mean_filled: bool = False,
    name: str = "adni",
) -> MultimodalData:
    """ADNI in the authors' layout under ``root`` (see the module docstring).

    ``modalities``: a subset of ``image, genomic, clinical, biospecimen`` (the paper's "IGCB");
    only their files are read. ``None`` (default): those whose folder exists, the absent ones
    warned about in one line (``attrs["absent_modalities"]``). ``mean_filled``: read the
    ``_mean`` variants of the clinical and biospecimen tables (missing cells filled with means
    by the authors' preprocessing) instead of the plain ones. The split of
    ``PTID_splits.json`` is in ``attrs["split"]``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ADNI layout: {str(root)!r} is not a folder")
    _need(root / "label.csv", "ADNI layout")
    modalities, absent = _choose(
        "ADNI", root, modalities, ADNI_MODALITIES, {m: root / m for m in ADNI_MODALITIES}
    )
    labels = _adni_labels(root)
    split_path = root / "PTID_splits.json"
    split = _read_splits(split_path)
    ids, raw, n_unsplit = _labels_for(split, labels, root / "label.csv", "ADNI layout")
    y = np.asarray(raw, dtype=np.int64) - 1
    suffix = "_mean" if mean_filled else ""
    X: dict[str, Any] = {}
    observed: dict[str, np.ndarray] = {}
    feature_names: dict[str, list[str]] = {}
    attrs: dict[str, Any] = {"layout": "adni", "root": str(root), "absent_modalities": absent}
    for m in modalities:
        if m == "image":
            X[m], observed[m] = _adni_image_rows(root, ids)
            feature_names[m] = [f"voxel_{j}" for j in range(X[m].shape[1])]
            attrs["image"] = {
                "array": str(root / "image" / "ADNI_G.npy"),
                "template": str(root / "image" / ADNI_TEMPLATE),
                "mask_label": ADNI_MASK_LABEL,
                "volume": list(ADNI_VOLUME),
            }
            continue
        if m == "genomic":
            path = _need(root / "genomic" / "genomic_merged.h5ad", "ADNI genomic modality")
            frame = _read_h5ad(path)
        elif m == "clinical":
            path = _need(root / "clinical" / f"clinical_merged{suffix}.csv", "ADNI clinical")
            frame = _read_csv(path, index_col=0)
            dropped = [c for c in frame.columns if str(c).startswith(ADNI_DROPPED_PREFIXES)]
            frame = frame.drop(columns=dropped)
            attrs["dropped_columns"] = [str(c) for c in dropped]
        else:
            path = _need(
                root / "biospecimen" / f"biospecimen_merged{suffix}.csv", "ADNI biospecimen"
            )
            frame = _read_csv(path)
            frame = frame.set_index("PTID" if "PTID" in frame.columns else frame.columns[0])
        frame = _one_row_per_id(frame, path, f"ADNI {m}")
        frame.columns = [str(c) for c in frame.columns]
        X[m], observed[m] = _aligned(frame, ids, m, path)
        feature_names[m] = list(frame.columns)
    attrs["split"] = split.to_dict()
    attrs["split_file"] = str(split_path)
    attrs["unsplit_labelled"] = n_unsplit
    return MultimodalData(
        modalities=list(modalities),
        X=X,
        observed=np.stack([observed[m] for m in modalities], axis=1),
        y=y,
        ids=np.asarray(ids, dtype=object),
        class_names=list(ADNI_CLASSES),
        feature_names=feature_names,
        name=name,
        attrs=attrs,
    )


def _read_h5ad(path: Path) -> pd.DataFrame:
    try:
        import anndata
    except ImportError as exc:
        raise DataValidationError(
            f"reading {str(path)!r} needs the optional package 'anndata': "
            "pip install 'moe-retriever[scverse]'"
        ) from exc
    return _dense_frame(anndata.read_h5ad(path), repr(str(path)))


# ---------------------------------------------------------------------------- MIMIC-IV
def _load_tensor(path: Path) -> np.ndarray:
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise DataValidationError(
            f"{str(path)!r} is not a tensor file torch.load(weights_only=True) can read: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise DataValidationError(f"{str(path)!r}: expected one 2-D tensor, got {shape}")
    if value.is_complex() or value.dtype == torch.bool:
        value = value.float()
    return value.to(torch.float32).numpy()


def read_mimic_layout(
    root: str | Path,
    modalities: Sequence[str] | None = None,
    *,
    missing: str = "nan-or-zero",
    name: str = "mimic",
) -> MultimodalData:
    """MIMIC-IV in the authors' layout under ``root`` (see the module docstring).

    ``modalities``: a subset of ``lab, note, code``; ``None`` (default): those whose
    ``<modality>_x.pt`` exists, the absent ones warned about in one line.
    ``missing``: which rows of a modality tensor mean "not observed": ``"nan-or-zero"``
    (default; rows of NaN only or of zeros only) or ``"nan"`` (rows of NaN only). The split of
    ``PTID_splits_mimic.json`` is in ``attrs["split"]``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MIMIC layout: {str(root)!r} is not a folder")
    if missing not in ("nan-or-zero", "nan"):
        raise ValueError(f"missing must be 'nan-or-zero' or 'nan', got {missing!r}")
    label_path = _need(root / "labels.csv", "MIMIC layout")
    modalities, absent = _choose(
        "MIMIC",
        root,
        modalities,
        MIMIC_MODALITIES,
        {m: root / f"{m}_x.pt" for m in MIMIC_MODALITIES},
    )
    frame = _read_csv(label_path)
    _columns(frame, label_path, ["subject_id", "one_year_mortality"])
    subjects = [str(s).strip() for s in frame["subject_id"]]
    check_unique(subjects, f"{str(label_path)!r}: subject_id")
    codes = pd.to_numeric(frame["one_year_mortality"], errors="coerce")
    bad = codes.notna() & ~codes.isin([0, 1])
    if bad.any():
        raise DataValidationError(
            f"{str(label_path)!r}: one_year_mortality must be 0 or 1; subjects "
            f"{preview(np.asarray(subjects, dtype=object)[bad.to_numpy()])} have "
            f"{preview(frame.loc[bad, 'one_year_mortality'])}"
        )
    labels = pd.Series(codes.to_numpy(), index=subjects).dropna()
    split_path = root / "PTID_splits_mimic.json"
    split = _read_splits(split_path)
    ids, raw, n_unsplit = _labels_for(split, labels, label_path, "MIMIC layout")
    position = {s: i for i, s in enumerate(subjects)}
    rows = np.array([position[i] for i in ids], dtype=np.int64)
    X: dict[str, np.ndarray] = {}
    observed: dict[str, np.ndarray] = {}
    for m in modalities:
        path = _need(root / f"{m}_x.pt", f"MIMIC {m} modality")
        full = _load_tensor(path)
        if full.shape[0] != len(subjects):
            raise DataValidationError(
                f"{str(path)!r} has {full.shape[0]} rows, {str(label_path)!r} has "
                f"{len(subjects)} subjects; the rows must be aligned with labels.csv"
            )
        x = full[rows]
        empty = np.isnan(x).all(axis=1)
        if missing == "nan-or-zero":
            empty |= (np.nan_to_num(x, nan=0.0) == 0).all(axis=1)
        x[empty] = np.nan
        X[m], observed[m] = x, ~empty
    return MultimodalData(
        modalities=list(modalities),
        X=X,
        observed=np.stack([observed[m] for m in modalities], axis=1),
        y=np.asarray(raw, dtype=np.int64),
        ids=np.asarray(ids, dtype=object),
        class_names=list(MIMIC_CLASSES),
        name=name,
        attrs={
            "layout": "mimic",
            "root": str(root),
            "missing_rows": missing,
            "absent_modalities": absent,
            "split": split.to_dict(),
            "split_file": str(split_path),
            "unsplit_labelled": n_unsplit,
        },
    )


# ---------------------------------------------------------------------------- dispatch
def detect_layout(root: str | Path) -> str | None:
    """``"adni"`` or ``"mimic"`` when ``root`` holds that layout's label and splits files."""
    root = Path(root)
    if all((root / f).is_file() for f in ADNI_FILES):
        return "adni"
    if all((root / f).is_file() for f in MIMIC_FILES):
        return "mimic"
    return None


def read_layout(root: str | Path, layout: str | None = None, **options: Any) -> MultimodalData:
    """Read ``root`` in the named layout, or in the one :func:`detect_layout` finds."""
    chosen = layout or detect_layout(root)
    if chosen is None:
        raise FileNotFoundError(
            f"{str(root)!r} holds neither the ADNI layout ({', '.join(ADNI_FILES)}) nor the "
            f"MIMIC-IV layout ({', '.join(MIMIC_FILES)})"
        )
    if chosen not in LAYOUTS:
        raise ValueError(f"unknown layout {chosen!r}; choose from {list(LAYOUTS)}")
    reader = read_adni_layout if chosen == "adni" else read_mimic_layout
    return reader(root, **options)


def layout_split(data: MultimodalData) -> Split | None:
    """The split a layout reader attached (``attrs["split"]``), restricted to ``data``'s ids,
    or ``None`` for data without one."""
    raw = data.attrs.get("split")
    if raw is None:
        return None
    split = Split.from_dict(raw, source=str(data.attrs.get("split_file", "split")))
    known = set(data.ids.tolist())
    return Split(
        train=[i for i in split.train if i in known],
        val=[i for i in split.val if i in known],
        test=[i for i in split.test if i in known],
        seed=None,
        notes=list(split.notes),
    )


def resolve_encoder_paths(encoders: dict[str, Any], data: MultimodalData) -> dict[str, Any]:
    """``model.encoders`` with each relative ``mask`` path that is not a file here but is one
    under the data folder of a layout (``attrs["root"]``) made absolute.

    A preset (``configs/paper_adni.yaml``) can then name the template as the layout places it
    (``image/BLSA_...nii.gz``) and run on any ADNI folder; paths that exist as given are kept.
    """
    root = data.attrs.get("root")
    out: dict[str, Any] = {}
    for modality, spec in encoders.items():
        if root and isinstance(spec, dict) and isinstance(spec.get("mask"), str):
            mask = Path(spec["mask"])
            if spec["mask"] and not mask.is_absolute() and not mask.exists():
                candidate = Path(root) / mask
                if candidate.exists():
                    spec = {**spec, "mask": str(candidate.resolve())}
        out[modality] = spec
    return out
