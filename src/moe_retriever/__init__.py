"""moe-retriever: classification on multimodal data with modalities missing sample by sample."""

from moe_retriever.data.core import DataValidationError, MultimodalData

__version__ = "0.1.0"

__all__ = ["DataValidationError", "MultimodalData", "__version__"]
