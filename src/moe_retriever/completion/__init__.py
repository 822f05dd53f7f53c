"""Completion methods: one interface (:class:`Completion`), one file per method.

Importing this package registers every built-in method with :func:`create_completion`.
"""

from moe_retriever.completion import bank as _bank  # noqa: F401
from moe_retriever.completion import generate_retrieve as _generate_retrieve  # noqa: F401
from moe_retriever.completion import knn as _knn  # noqa: F401
from moe_retriever.completion import mean as _mean  # noqa: F401
from moe_retriever.completion import mfm as _mfm  # noqa: F401
from moe_retriever.completion import moe_retriever as _moe_retriever  # noqa: F401
from moe_retriever.completion import none as _none  # noqa: F401
from moe_retriever.completion import official_average as _official_average  # noqa: F401
from moe_retriever.completion import zero as _zero  # noqa: F401
from moe_retriever.completion.base import (
    COMPLETIONS,
    Completion,
    CompletionContext,
    CompletionOutput,
    TrainingPool,
    create_completion,
    list_completions,
    register_completion,
)
from moe_retriever.completion.support import SupportingGroupSampler

__all__ = [
    "COMPLETIONS",
    "Completion",
    "CompletionContext",
    "CompletionOutput",
    "SupportingGroupSampler",
    "TrainingPool",
    "create_completion",
    "list_completions",
    "register_completion",
]
