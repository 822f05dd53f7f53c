"""Reading a cohort table shipped inside the SurvSet package (the ``cohorts`` extra).

SurvSet (PyPI ``survset``, GPLv3, Drysdale 2022) bundles each cohort as a pickled pandas
DataFrame under ``SurvSet/resources/pickles/``: one row a patient, ``pid``, ``event``,
``time``, continuous columns ``num_*`` and categorical columns ``fac_*`` (a missing category
reads ``"missing"``). Nothing is downloaded and nothing is copied into this repository: the
loaders read the installed package's file.
"""

from __future__ import annotations

import importlib.resources
import importlib.util

import numpy as np
import pandas as pd

__all__ = ["EXTRA_HINT", "SURVSET_VERSION", "numeric", "one_hot", "ordinal", "read_survset"]

SURVSET_VERSION = "0.2.11"
EXTRA_HINT = "pip install 'moe-retriever[cohorts]'  (or: pip install survset==0.2.11)"


def read_survset(name: str, dataset: str) -> pd.DataFrame:
    """The SurvSet table ``name``, indexed by ``pid`` as strings; a clear error without it."""
    if importlib.util.find_spec("SurvSet") is None:
        raise ImportError(
            f"{dataset}: needs the SurvSet package, which is not installed; install the "
            f"'cohorts' extra: {EXTRA_HINT}"
        )
    path = importlib.resources.files("SurvSet").joinpath("resources", "pickles", f"{name}.pickle")
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: the installed SurvSet has no {name}.pickle; install the version this "
            f"loader was written for: {EXTRA_HINT}"
        )
    with path.open("rb") as f:
        df = pd.read_pickle(f)
    df.index = pd.Index([f"{name}-{int(p)}" for p in df["pid"]], dtype=object)
    return df


def _as_category(s: pd.Series) -> pd.Series:
    """Categories as strings with SurvSet's ``"missing"`` turned into NaN."""
    out = s.astype(object).map(lambda v: v if pd.isna(v) else str(v))
    return out.where(out != "missing")


def ordinal(s: pd.Series, order: dict[str, float]) -> pd.Series:
    """A categorical column as numbers (``order``: category -> value); missing -> NaN."""
    cat = _as_category(s)
    unknown = sorted(set(cat.dropna()) - set(order))
    if unknown:
        raise ValueError(f"column {s.name!r}: categories {unknown} have no value in {order}")
    return cat.map(order).astype(np.float64)


def one_hot(s: pd.Series, prefix: str) -> pd.DataFrame:
    """A categorical column one-hot as ``prefix=category``; a missing category -> NaN cells."""
    cat = _as_category(s)
    dummies = pd.get_dummies(cat, prefix=prefix, prefix_sep="=", dtype=np.float64)
    dummies.loc[cat.isna(), :] = np.nan
    return dummies


def numeric(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Columns ``num_<col>`` as float64 named ``<col>``. Missing cells become a plain NaN:
    the pickles keep R's NA (a NaN with a payload), which warns when cast to float32."""
    out = df[[f"num_{c}" for c in cols]].astype(np.float64).set_axis(cols, axis=1)
    values = out.to_numpy(copy=True)
    values[np.isnan(values)] = np.nan
    return pd.DataFrame(values, index=out.index, columns=cols)
