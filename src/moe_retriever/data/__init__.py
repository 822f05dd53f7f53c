"""The data layer: one data model, readers (the paper layouts of ADNI and MIMIC-IV included),
validation, preprocessing, splits, missingness."""

from moe_retriever.data.core import DataValidationError, MultimodalData, stable_keys
from moe_retriever.data.layouts import read_adni_layout, read_layout, read_mimic_layout
from moe_retriever.data.mapped import MappedRows
from moe_retriever.data.missingness import MissingnessReport, simulate_missing
from moe_retriever.data.preprocessing import Preprocessor
from moe_retriever.data.readers import (
    from_anndata,
    from_arrays,
    from_mudata,
    from_pandas,
    read_folder,
    write_folder,
)
from moe_retriever.data.splits import Split, apply_split, make_split
from moe_retriever.data.validation import check_predictable, drop_empty

__all__ = [
    "DataValidationError",
    "MappedRows",
    "MissingnessReport",
    "MultimodalData",
    "Preprocessor",
    "Split",
    "apply_split",
    "check_predictable",
    "drop_empty",
    "from_anndata",
    "from_arrays",
    "from_mudata",
    "from_pandas",
    "make_split",
    "read_adni_layout",
    "read_folder",
    "read_layout",
    "read_mimic_layout",
    "simulate_missing",
    "stable_keys",
    "write_folder",
]
