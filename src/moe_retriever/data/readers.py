"""Build :class:`MultimodalData` from arrays, pandas tables, folders of files and scverse objects.

Every reader ends in :func:`from_arrays`, so all inputs pass the same checks. The conventions:

* **Missing modality.** A (sample, modality) entry is missing when the sample has no row in
  that modality's table, or its row is entirely NaN, or an explicit ``observed`` mask says so.
  Single NaN cells inside an observed row are kept; the
  :class:`~moe_retriever.data.preprocessing.Preprocessor` imputes them from training data.
* **Labels.** String labels are encoded to integer codes with ``class_names`` sorted; numeric
  labels are encoded by their sorted distinct values (names are the values as text). Passing
  ``class_names`` fixes the order (codes = positions in that list).
* **Empty samples.** A sample with no observed modality is kept (``describe`` counts it);
  training drops it with :func:`~moe_retriever.data.validation.drop_empty`.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moe_retriever.data.core import DataValidationError, DataWarning, MultimodalData
from moe_retriever.data.validation import check_numeric_frame, check_unique, preview

__all__ = [
    "encode_labels",
    "from_anndata",
    "from_arrays",
    "from_mudata",
    "from_pandas",
    "read_folder",
    "write_folder",
]

META_FILE = "meta.json"
FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _ordered_union(frames: Any) -> list[str]:
    """Sample ids of all tables: the first table's order, then each later table's new ids."""
    ids: list[str] = []
    seen: set[str] = set()
    for df in frames:
        for i in df.index:
            if i not in seen:
                seen.add(i)
                ids.append(i)
    return ids


# ---------------------------------------------------------------------------- labels
def _label_text(v: Any) -> str:
    """A label value as text: integral floats lose their ``.0`` (``1.0`` -> ``"1"``)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def encode_labels(
    labels: Sequence[Any] | np.ndarray | pd.Series,
    ids: Sequence[str] | np.ndarray,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Labels -> (int64 codes, class names). Missing labels raise naming the samples.

    Without ``class_names``: distinct values sorted (numerically when all are numbers).
    With ``class_names``: each label is matched by its text to a class name; if that fails and
    all labels are integers in ``range(len(class_names))`` they are taken as codes.
    """
    values = pd.Series(np.asarray(labels, dtype=object), dtype=object)
    ids = np.asarray(ids, dtype=object)
    if len(values) != len(ids):
        raise DataValidationError(f"{len(values)} labels for {len(ids)} samples")
    missing = values.isna().to_numpy()
    if missing.any():
        raise DataValidationError(
            f"missing labels for {int(missing.sum())} sample(s): {preview(ids[missing])}; "
            "give every sample a label, or pass labels=None for unlabelled data"
        )
    numeric = all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in values
    )
    if class_names is not None:
        names = [str(c) for c in class_names]
        check_unique(names, "class_names")
        pos = {c: i for i, c in enumerate(names)}
        texts = [_label_text(v) for v in values]
        texts = [t if t in pos else t.strip() for t in texts]
        if all(t in pos for t in texts):
            return np.array([pos[t] for t in texts], dtype=np.int64), names
        if numeric and all(float(v).is_integer() and 0 <= v < len(names) for v in values):
            return np.array([int(v) for v in values], dtype=np.int64), names
        bad = np.array([t not in pos for t in texts])
        raise DataValidationError(
            f"labels {preview(sorted({t for t, b in zip(texts, bad) if b}))} of samples "
            f"{preview(ids[bad])} are not among class_names {names}"
        )
    if numeric:
        uniq = sorted({float(v) for v in values})
        names = [_label_text(u) for u in uniq]
        pos_f = {u: i for i, u in enumerate(uniq)}
        return np.array([pos_f[float(v)] for v in values], dtype=np.int64), names
    texts = [str(v) for v in values]
    stripped = [t.strip() for t in texts]
    changed = [i for i, (t, u) in enumerate(zip(texts, stripped)) if t != u]
    if changed:
        warnings.warn(
            f"labels of {len(changed)} sample(s) had spaces around them and were stripped "
            f"(e.g. {texts[changed[0]]!r} -> {stripped[changed[0]]!r}, samples "
            f"{preview(ids[changed])}); otherwise they would form extra classes",
            DataWarning,
            stacklevel=2,
        )
        texts = stripped
    names = sorted(set(texts))
    pos = {c: i for i, c in enumerate(names)}
    return np.array([pos[t] for t in texts], dtype=np.int64), names


# ---------------------------------------------------------------------------- arrays
def _as_float_matrix(x: Any, modality: str) -> np.ndarray:
    if isinstance(x, pd.DataFrame):
        return check_numeric_frame(x, modality).to_numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataValidationError(
            f"modality {modality!r}: expected a 2-D array (samples x features), got shape "
            f"{arr.shape}"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.number):
        frame = pd.DataFrame(arr).infer_objects()
        frame.columns = [str(c) for c in frame.columns]
        return check_numeric_frame(frame, modality).to_numpy()
    return arr.astype(np.float64, copy=False)


def from_arrays(
    X: Mapping[str, Any],
    labels: Sequence[Any] | np.ndarray | pd.Series | None = None,
    observed: np.ndarray | Mapping[str, Any] | None = None,
    ids: Sequence[Any] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    feature_names: Mapping[str, Sequence[str]] | None = None,
    name: str = "data",
    attrs: Mapping[str, Any] | None = None,
) -> MultimodalData:
    """Data from a dict ``modality -> (N, F_m)`` array.

    ``observed`` is optional: without it an all-NaN row marks a missing modality. With it
    (a bool (N, M) array in the order of ``X``, or a dict modality -> (N,) bool) the mask is
    authoritative: rows it marks missing are set to NaN whatever they hold (so zero-filled
    arrays plus a mask work), and a row it marks observed must hold at least one value.
    ``ids`` default to ``"0" .. "N-1"``. See the module docstring for label encoding.
    """
    if not X:
        raise DataValidationError("no modalities given")
    modalities = [str(m) for m in X]
    arrays = {str(m): _as_float_matrix(v, str(m)) for m, v in X.items()}
    sizes = {m: a.shape[0] for m, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise DataValidationError(
            f"modalities have different numbers of rows: {sizes}; every array needs one row "
            "per sample (use NaN rows for missing modalities)"
        )
    n = next(iter(sizes.values()))
    if ids is None:
        ids_arr = np.array([str(i) for i in range(n)], dtype=object)
    else:
        ids_arr = np.array([str(i) for i in ids], dtype=object)
        if len(ids_arr) != n:
            raise DataValidationError(f"{len(ids_arr)} ids for {n} rows in each modality")
    check_unique(ids_arr.tolist(), "sample ids")

    allnan = np.stack([np.isnan(arrays[m]).all(axis=1) for m in modalities], axis=1)
    if observed is None:
        obs = ~allnan
    else:
        if isinstance(observed, Mapping):
            unknown = sorted(set(map(str, observed)) - set(modalities))
            if unknown:
                raise DataValidationError(
                    f"observed mask names unknown modalities {unknown}; known: {modalities}"
                )
            obs = np.stack(
                [
                    np.asarray(observed[m], dtype=bool) if m in observed else ~allnan[:, j]
                    for j, m in enumerate(modalities)
                ],
                axis=1,
            )
        else:
            obs = np.asarray(observed, dtype=bool)
        if obs.shape != (n, len(modalities)):
            raise DataValidationError(
                f"observed mask has shape {obs.shape}, expected ({n}, {len(modalities)}) for "
                f"modalities {modalities}"
            )
        for j, m in enumerate(modalities):
            bad = obs[:, j] & allnan[:, j]
            if bad.any():
                raise DataValidationError(
                    f"modality {m!r}: samples {preview(ids_arr[bad])} are marked observed but "
                    "their rows are all NaN"
                )
            arrays[m] = arrays[m].copy()
            arrays[m][~obs[:, j]] = np.nan

    for j, m in enumerate(modalities):
        if n and not obs[:, j].any():
            warnings.warn(
                f"modality {m!r} is observed in no sample (every row is missing or all NaN); "
                "it carries no information here",
                DataWarning,
                stacklevel=2,
            )
    fnames: dict[str, list[str]] = {}
    for m in modalities:
        if feature_names is not None and m in feature_names:
            names = [str(c) for c in feature_names[m]]
            if len(names) != arrays[m].shape[1]:
                raise DataValidationError(
                    f"modality {m!r}: {len(names)} feature names for {arrays[m].shape[1]} columns"
                )
        else:
            names = [f"{m}_{j}" for j in range(arrays[m].shape[1])]
        check_unique(names, f"modality {m!r}: feature names")
        fnames[m] = names

    y: np.ndarray | None = None
    names_out: list[str] = [str(c) for c in class_names] if class_names is not None else []
    if labels is not None:
        y, names_out = encode_labels(labels, ids_arr, class_names)
    return MultimodalData(
        modalities=modalities,
        X={m: arrays[m].astype(np.float32) for m in modalities},
        observed=obs,
        y=y,
        ids=ids_arr,
        class_names=names_out,
        feature_names=fnames,
        name=name,
        attrs=dict(attrs or {}),
    )


# ---------------------------------------------------------------------------- pandas
def from_pandas(
    frames: Mapping[str, pd.DataFrame],
    labels: pd.Series | Mapping[Any, Any] | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "data",
    attrs: Mapping[str, Any] | None = None,
) -> MultimodalData:
    """Data from a dict ``modality -> DataFrame`` indexed by sample id, plus a label Series.

    Tables are OUTER-joined on their index: a sample absent from a table misses that
    modality. Sample order: with ``labels``, the labels' order (a labelled sample that
    appears in no table is kept, with nothing observed); an id found in a table but not in
    ``labels`` is an error naming those ids. Without labels: the first table's order, then
    ids new in each later table in that table's order. Nothing is dropped silently.
    """
    if not frames:
        raise DataValidationError("no modalities given")
    clean: dict[str, pd.DataFrame] = {}
    for m, df in frames.items():
        m = str(m)
        if not isinstance(df, pd.DataFrame):
            raise DataValidationError(
                f"modality {m!r}: expected a pandas DataFrame, got {type(df).__name__}"
            )
        index = [str(i) for i in df.index]
        check_unique(index, f"modality {m!r}: sample ids (index)")
        columns = [str(c) for c in df.columns]
        check_unique(columns, f"modality {m!r}: column names")
        df = df.copy()
        df.index = pd.Index(index, dtype=object)
        df.columns = columns
        clean[m] = check_numeric_frame(df, m)

    if labels is not None:
        lab = labels if isinstance(labels, pd.Series) else pd.Series(dict(labels))
        lab_ids = [str(i) for i in lab.index]
        check_unique(lab_ids, "labels: sample ids")
        ids = lab_ids
        known = set(ids)
        extra: list[str] = []
        for df in clean.values():
            extra += [i for i in df.index if i not in known and i not in extra]
        if extra:
            raise DataValidationError(
                f"{len(extra)} sample(s) in the tables have no label: {preview(extra)}; add "
                "them to the labels or remove them from the tables"
            )
        label_values: np.ndarray | None = lab.to_numpy(dtype=object)
    else:
        ids = _ordered_union(clean.values())
        label_values = None

    index = pd.Index(ids, dtype=object)
    X = {m: df.reindex(index).to_numpy(dtype=np.float64) for m, df in clean.items()}
    feature_names = {m: list(df.columns) for m, df in clean.items()}
    return from_arrays(
        X,
        labels=label_values,
        ids=ids,
        class_names=class_names,
        feature_names=feature_names,
        name=name,
        attrs=attrs,
    )


# ---------------------------------------------------------------------------- folders
def _read_table(path: Path) -> pd.DataFrame:
    """One modality file; its first column (or a stored pandas index) holds the sample ids.

    A file with the header row only is valid: the modality is observed in no sample (the
    way to say "absent for everyone" at prediction time). Refused with one line naming the
    file: an empty file, a header with repeated column names (pandas would rename them
    silently), a file that is not comma-separated (one column whose name holds ``;`` or a
    tab), text in a numeric column (naming sample and column).
    """
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        if isinstance(df.index, pd.RangeIndex) and df.index.name is None:
            if df.shape[1] == 0:
                raise DataValidationError(f"{path}: no columns")
            df = df.set_index(df.columns[0])
        check_unique([str(c) for c in df.columns], f"{path}: column names")
    else:
        try:
            raw_header = pd.read_csv(path, nrows=0, header=None)
        except pd.errors.EmptyDataError:
            raise DataValidationError(
                f"{path}: the file is empty; write a header row (id, feature names), and "
                "no data rows if the modality is observed in no sample"
            ) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataValidationError(f"{path}: not a readable CSV file ({reason})") from None
        raw_header = pd.read_csv(path, nrows=1, header=None, dtype=str, keep_default_na=False)
        names = [str(c) for c in raw_header.iloc[0].tolist()] if len(raw_header) else []
        if len(names) == 1 and any(sep in names[0] for sep in (";", "\t", "|")):
            raise DataValidationError(
                f"{path}: one column named {names[0][:40]!r}; modality files must be "
                "comma-separated (this one looks separated by ';', tab or '|')"
            )
        if len(names) < 2:
            raise DataValidationError(
                f"{path}: needs a sample id column and at least one feature column, found "
                f"columns {names}"
            )
        check_unique(names[1:], f"{path}: column names")
        try:
            # ids as text ("007" stays "007"); index_col would parse them as numbers first
            df = pd.read_csv(path, converters={0: str})
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataValidationError(f"{path}: not a readable CSV file ({reason})") from None
        df = df.set_index(df.columns[0])
    df.index = pd.Index([str(i) for i in df.index], dtype=object)
    df.columns = [str(c) for c in df.columns]
    check_unique(df.index.tolist(), f"{path}: sample ids (first column)")
    return check_numeric_frame(df, path.stem, source=str(path))


def _read_labels(path: Path, as_text: bool) -> pd.Series:
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        df.columns = [str(c) for c in df.columns]
    else:
        df = pd.read_csv(path, dtype={"id": str, **({"label": str} if as_text else {})})
    if "id" not in df.columns:
        raise DataValidationError(
            f"{path}: needs columns 'id' and 'label', found {list(df.columns)}"
        )
    if "label" not in df.columns:
        raise DataValidationError(
            f"{path}: needs columns 'id' and 'label', found {list(df.columns)}"
        )
    values = df["label"].astype(object)
    if as_text:
        values = values.where(values.isna(), values.astype(str))
    return pd.Series(values.to_numpy(dtype=object), index=[str(i) for i in df["id"]])


def read_folder(path: str | Path) -> MultimodalData:
    """Read a folder: one table per modality plus an optional labels file.

    Layout::

        folder/
          <modality>.csv | <modality>.parquet   one per modality; rows = samples, first
                                                column (or the stored pandas index) = sample id,
                                                other columns = numeric features
          labels.csv | labels.parquet           columns ``id``, ``label`` (optional: without
                                                it the data is unlabelled)
          meta.json                             optional, written by :func:`write_folder`:
                                                modality order, class names, name, attrs

    Without ``meta.json`` the modalities are the table files in sorted file-name order and
    the dataset name is the folder name. Tables are joined as in :func:`from_pandas`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder at {str(folder)!r}")
    meta: dict[str, Any] = {}
    if (folder / META_FILE).exists():
        meta = json.loads((folder / META_FILE).read_text())
    tables: dict[str, Path] = {}
    label_files = []
    for f in sorted(folder.iterdir()):
        if f.suffix not in (".csv", ".parquet") or not f.is_file():
            continue
        if f.stem == "labels":
            label_files.append(f)
            continue
        if f.stem in tables:
            raise DataValidationError(
                f"modality {f.stem!r} has two files in {str(folder)!r}: "
                f"{tables[f.stem].name} and {f.name}; keep one"
            )
        tables[f.stem] = f
    if len(label_files) > 1:
        raise DataValidationError(
            f"{str(folder)!r} has both {label_files[0].name} and {label_files[1].name}; keep one"
        )
    order = [str(m) for m in meta.get("modalities", sorted(tables))]
    absent = [m for m in order if m not in tables]
    if absent:
        raise DataValidationError(
            f"{str(folder)!r}: {META_FILE} lists modalities {absent} with no "
            f"<name>.csv/.parquet file"
        )
    if len(order) < 2:
        raise DataValidationError(
            f"{str(folder)!r}: found {len(order)} modality file(s) {sorted(tables)}; need at "
            "least two <modality>.csv or .parquet files"
        )
    frames = {m: _read_table(tables[m]) for m in order}
    class_names = meta.get("class_names") or None
    labels = _read_labels(label_files[0], as_text=class_names is not None) if label_files else None
    data = from_pandas(
        frames,
        labels=labels,
        class_names=class_names,
        name=str(meta.get("name", folder.name)),
        attrs=meta.get("attrs", {}),
    )
    if labels is None and meta.get("ids") is not None:
        data = data_with_order(data, [str(i) for i in meta["ids"]])
    if labels is None and class_names:
        data.class_names = list(class_names)
    return data


def data_with_order(data: MultimodalData, ids: Sequence[str]) -> MultimodalData:
    """``data`` in the order of ``ids``; listed ids absent from it become empty samples."""
    known = set(data.ids.tolist())
    extra = [i for i in ids if i not in known]
    if not extra:
        return data.select_ids(ids)
    n_new = len(extra)
    full = {
        m: np.concatenate([data.X[m], np.full((n_new, d), np.nan, np.float32)])
        for m, d in data.dims.items()
    }
    grown = data.replace(
        X=full,
        observed=np.concatenate([data.observed, np.zeros((n_new, data.n_modalities), bool)]),
        y=None,
        ids=np.concatenate([data.ids, np.array(extra, dtype=object)]),
    )
    return grown.select_ids(ids)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_folder(data: MultimodalData, path: str | Path) -> Path:
    """Write ``data`` as Parquet files that :func:`read_folder` reads back identically.

    One ``<modality>.parquet`` per modality with the observed rows only (index ``id``, float32
    columns named by the feature names, NaN cells kept), ``labels.parquet`` (``id``, ``label``
    as class name) when the data is labelled, and ``meta.json`` with the modality order,
    class names, name, attrs (made JSON-able: arrays become lists) and, for unlabelled data,
    the sample order. Existing files of the same names are overwritten.
    """
    folder = Path(path)
    for m in data.modalities:
        if not _SAFE_NAME.match(m) or m in ("labels", "meta"):
            raise DataValidationError(
                f"modality {m!r} cannot be used as a file name; rename it to letters, digits, "
                "'.', '_', '+', '-' (and not 'labels' or 'meta')"
            )
    folder.mkdir(parents=True, exist_ok=True)
    for j, m in enumerate(data.modalities):
        rows = data.observed[:, j]
        df = pd.DataFrame(
            data.X[m][rows],
            index=pd.Index(data.ids[rows].tolist(), name="id", dtype=object),
            columns=data.feature_names[m],
        )
        df.to_parquet(folder / f"{m}.parquet")
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": data.name,
        "modalities": list(data.modalities),
        "class_names": list(data.class_names),
        "attrs": _jsonable(data.attrs),
    }
    labels_path = folder / "labels.parquet"
    if data.y is not None:
        names = np.asarray(data.class_names, dtype=object)
        pd.DataFrame({"id": data.ids.tolist(), "label": names[data.y].tolist()}).to_parquet(
            labels_path, index=False
        )
    else:
        meta["ids"] = data.ids.tolist()
        if labels_path.exists():
            labels_path.unlink()
    # attrs values JSON cannot hold (custom objects) are written as their text
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return folder


# ---------------------------------------------------------------------------- scverse
def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"reading {module} objects needs the optional package {module!r}: "
            "pip install 'moe-retriever[scverse]'"
        ) from exc


def _dense_frame(adata: Any, where: str, layer: str | None = None) -> pd.DataFrame:
    """AnnData ``X`` (or ``layer``) as a float64 frame indexed by ``obs_names``; ``where``
    names the source in the error (a modality, a file)."""
    x = adata.X if layer is None else adata.layers[layer]
    if x is None:
        raise DataValidationError(f"{where}: the AnnData object has no X matrix")
    if hasattr(x, "toarray"):
        x = x.toarray()
    return pd.DataFrame(
        np.asarray(x, dtype=np.float64),
        index=[str(i) for i in adata.obs_names],
        columns=[str(v) for v in adata.var_names],
    )


def _labels_from_obs(
    obs_tables: Mapping[str, pd.DataFrame], label: str, order: Sequence[str]
) -> pd.Series:
    """One label per sample from ``obs`` columns; disagreeing values raise naming the samples."""
    found: dict[str, Any] = {}
    where = [m for m, obs in obs_tables.items() if label in obs.columns]
    if not where:
        raise DataValidationError(
            f"label column {label!r} is in none of the obs tables "
            f"({ {m: list(o.columns)[:10] for m, o in obs_tables.items()} })"
        )
    conflicts = []
    for m in where:
        col = obs_tables[m][label]
        for i, v in zip(col.index, col.to_numpy(dtype=object)):
            i = str(i)
            if pd.isna(v):
                continue
            if i in found and str(found[i]) != str(v):
                conflicts.append(i)
            found.setdefault(i, v)
    if conflicts:
        raise DataValidationError(
            f"label {label!r} differs between tables for samples {preview(conflicts)}"
        )
    return pd.Series([found.get(i, np.nan) for i in order], index=list(order), dtype=object)


def from_anndata(
    adatas: Mapping[str, Any],
    label: str | None = None,
    layer: str | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "data",
) -> MultimodalData:
    """Data from a dict ``modality -> AnnData`` (one AnnData per modality, joined on obs_names).

    ``label`` names an ``obs`` column holding the class (it must agree across the tables
    that have it); ``layer`` reads ``adata.layers[layer]`` instead of ``X``. Sparse matrices
    are densified. Needs ``pip install 'moe-retriever[scverse]'``.
    """
    _require("anndata")
    frames = {str(m): _dense_frame(a, f"modality {str(m)!r}", layer) for m, a in adatas.items()}
    order = _ordered_union(frames.values())
    labels = None
    if label is not None:
        obs = {str(m): a.obs.set_axis([str(i) for i in a.obs_names]) for m, a in adatas.items()}
        labels = _labels_from_obs(obs, label, order)
    return from_pandas(frames, labels=labels, class_names=class_names, name=name)


def from_mudata(
    mdata: Any,
    label: str | None = None,
    layer: str | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> MultimodalData:
    """Data from a MuData object: one modality per ``mdata.mod`` entry, in its order.

    ``label`` is looked up in the global ``mdata.obs`` first, then in each modality's
    ``obs``. Sample order: ``mdata.obs_names``. Needs ``pip install 'moe-retriever[scverse]'``.
    """
    _require("mudata")
    mods = dict(mdata.mod)
    frames = {str(m): _dense_frame(a, f"modality {str(m)!r}", layer) for m, a in mods.items()}
    order = [str(i) for i in mdata.obs_names]
    labels = None
    if label is not None:
        tables = {"(global obs)": mdata.obs.set_axis(order)}
        for m, a in mods.items():
            tables[str(m)] = a.obs.set_axis([str(i) for i in a.obs_names])
        if label not in tables["(global obs)"].columns:
            del tables["(global obs)"]
        labels = _labels_from_obs(tables, label, order)
    data = from_pandas(frames, labels=labels, class_names=class_names, name=name or "mudata")
    if labels is None:  # keep MuData's sample order
        data = data_with_order(data, order)
    return data
