"""Router usage over a whole data set: merge per-batch routing info into one summary.

The ``moe-retriever`` completion returns, per batch, ``info["routing"]`` with one row per
routed token (target modality, observed-combination bitmask, chosen expert ids and gate
weights) and ``info["fallback"]`` counts of the supporting-group sampler. This module
concatenates those over batches and summarises them per target modality and observed
combination (``summarize_routing``), with expert ids turned into readable labels
(``"<modality>#c"`` for modality-specific candidates, ``"shared#s"`` for shared ones).
Methods that do not route give an empty ``usage``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

ROUTING_KEYS = ("target", "combination", "expert_index", "expert_weight")


def _find(info: Mapping[str, Any], key: str) -> Any:
    """``info[key]`` at the top level or one level down (the model may nest per part)."""
    if key in info:
        return info[key]
    for value in info.values():
        if isinstance(value, Mapping) and key in value:
            return value[key]
    return None


def expert_labels(modalities: Sequence[str], n_candidates: int, n_shared: int) -> list[str]:
    """Labels of the expert ids of a retriever with ``n_candidates`` per modality + shared."""
    labels = [f"{m}#{c}" for m in modalities for c in range(n_candidates)]
    return labels + [f"shared#{s}" for s in range(n_shared)]


def merge_routing_info(
    infos: Sequence[Mapping[str, Any]],
    modalities: Sequence[str],
    n_candidates: int | None = None,
    n_shared: int | None = None,
) -> dict[str, Any]:
    """Summarise the routing info of many batches.

    Returns ``{"usage": {target: {combination: {"tokens": n, "experts": {label: count},
    "mean_weight": {label: w}}}}, "fallback": {name: count}}``.
    """
    from moe_retriever.completion.moe_retriever import summarize_routing

    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ROUTING_KEYS}
    fallback: dict[str, int] = {}
    for info in infos:
        routing = _find(info, "routing")
        if isinstance(routing, Mapping) and all(k in routing for k in ROUTING_KEYS):
            for k in ROUTING_KEYS:
                parts[k].append(torch.as_tensor(routing[k]).detach().cpu())
        fb = _find(info, "fallback")
        if isinstance(fb, Mapping):
            for name, value in fb.items():
                fallback[name] = fallback.get(name, 0) + int(torch.as_tensor(value).sum())
    usage: dict[str, Any] = {}
    if parts["target"]:
        merged = {k: torch.cat(v) for k, v in parts.items()}
        usage = summarize_routing(merged, list(modalities))
        if n_candidates is not None and n_shared is not None:
            labels = expert_labels(modalities, n_candidates, n_shared)
            for per_combo in usage.values():
                for entry in per_combo.values():
                    entry["experts"] = {labels[e]: c for e, c in entry["experts"].items()}
                    entry["mean_weight"] = {labels[e]: w for e, w in entry["mean_weight"].items()}
    return {"usage": usage, "fallback": fallback}
