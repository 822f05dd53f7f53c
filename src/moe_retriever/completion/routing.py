"""Router usage over a whole data set: merge per-batch routing info into one summary.

The ``moe-retriever`` completion returns, per batch, ``info["routing"]`` with one row per
routed token (target modality, observed-combination bitmask, chosen expert ids and gate
weights) and ``info["fallback"]`` counts of the supporting-group sampler. This module
concatenates those over batches and summarises them per target modality and observed
combination (``summarize_routing``), with expert ids turned into readable labels
(``"<modality>#c"`` for modality-specific candidates, ``"shared#s"`` for shared ones).
Methods that do not route give an empty ``usage``.

Router inspection (``routing_shares``, ``routing_markdown``; used by the completion's
``summarize``/``report`` hooks, the harness and the run folders):

Input: ``MoERetrieverClassifier.routing_stats(data)``, i.e. ``{"usage": {target: {combination:
{"tokens": n, "experts": {label: count}, "mean_weight": {label: w}}}}, "fallback": {...}}``
where a label is ``"<modality>#c"`` (a candidate of that modality) or ``"shared#s"``.

Output of :func:`routing_shares` (JSON-able, stored in results.json under ``routing``):

* ``per_target``: for each target modality, the share of top-k choices that went to each
  expert (all observed combinations together), the number of routed tokens, and
  ``entropy``: the entropy of that usage divided by log(number of ELIGIBLE experts), so 1
  means perfectly balanced over the experts the target may use and 0 means one expert only;
* ``per_combination``: the same shares and entropy per (target, observed combination);
* ``entropy``: the token-weighted mean of the per-target entropies (the headline number,
  ``router_entropy`` in the tables);
* ``shared_share``: the fraction of choices that went to shared experts;
* ``fallback``: the supporting-group sampler's fallback counts.

The number of eligible experts is ``n_candidates + n_shared`` when known (labels of the
eligible experts are then spelled out), else the number of distinct experts seen per target.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

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


def summarize_routing(routing: dict[str, Tensor], modalities: list[str]) -> dict[str, Any]:
    """Readable routing statistics: ``{target: {"a+b": {"tokens": n, "experts": {e: count},
    "mean_weight": {e: w}}}}`` per target modality and observed combination (names joined by
    '+'). Runs on the host; meant for inspection, not for the training loop."""
    target = routing["target"].cpu().tolist()
    combo = routing["combination"].cpu().tolist()
    idx = routing["expert_index"].cpu().tolist()
    wt = routing["expert_weight"].cpu().tolist()
    count: dict[tuple[int, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    wsum: dict[tuple[int, int], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    ntok: dict[tuple[int, int], int] = defaultdict(int)
    for t, c, es, ws in zip(target, combo, idx, wt):
        ntok[(t, c)] += 1
        for e, w in zip(es, ws):
            if e >= 0:
                count[(t, c)][e] += 1
                wsum[(t, c)][e] += w
    out: dict[str, Any] = {}
    for (t, c), n in sorted(ntok.items()):
        name = "+".join(m for j, m in enumerate(modalities) if (c >> j) & 1) or "(none)"
        out.setdefault(modalities[t], {})[name] = {
            "tokens": n,
            "experts": dict(sorted(count[(t, c)].items())),
            "mean_weight": {e: wsum[(t, c)][e] / count[(t, c)][e] for e in sorted(count[(t, c)])},
        }
    return out


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


def _entropy(counts: Mapping[str, float], n_eligible: int) -> float:
    total = float(sum(counts.values()))
    if total <= 0 or n_eligible <= 1:
        return math.nan if total <= 0 else 0.0
    h = -sum((c / total) * math.log(c / total) for c in counts.values() if c > 0)
    return h / math.log(n_eligible)


def _shares(counts: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(counts.values()))
    return {k: (v / total if total else 0.0) for k, v in sorted(counts.items())}


def routing_shares(
    stats: Mapping[str, Any],
    n_candidates: int | None = None,
    n_shared: int | None = None,
) -> dict[str, Any]:
    """Shares, entropies and fallbacks from :func:`merge_routing_info`'s output (below)."""
    usage: Mapping[str, Mapping[str, Any]] = stats.get("usage", {}) or {}
    per_target: dict[str, Any] = {}
    per_combination: dict[str, Any] = {}
    weighted, tokens_all, shared_choices, all_choices = 0.0, 0, 0.0, 0.0
    for target, combos in usage.items():
        counts: dict[str, float] = {}
        n_tok = 0
        for combo, entry in combos.items():
            c = {str(k): float(v) for k, v in entry.get("experts", {}).items()}
            n_tok += int(entry.get("tokens", 0))
            for k, v in c.items():
                counts[k] = counts.get(k, 0.0) + v
            n_elig = (
                (n_candidates + n_shared)
                if n_candidates is not None and n_shared is not None
                else max(len(c), 1)
            )
            per_combination[f"{target} <- {combo}"] = {
                "tokens": int(entry.get("tokens", 0)),
                "shares": _shares(c),
                "entropy": _entropy(c, n_elig),
            }
        n_elig = (
            (n_candidates + n_shared)
            if n_candidates is not None and n_shared is not None
            else max(len(counts), 1)
        )
        ent = _entropy(counts, n_elig)
        per_target[target] = {
            "tokens": n_tok,
            "n_eligible": n_elig,
            "shares": _shares(counts),
            "entropy": ent,
        }
        if not math.isnan(ent):
            weighted += ent * n_tok
            tokens_all += n_tok
        shared_choices += sum(v for k, v in counts.items() if k.startswith("shared"))
        all_choices += sum(counts.values())
    return {
        "entropy": weighted / tokens_all if tokens_all else math.nan,
        "shared_share": shared_choices / all_choices if all_choices else math.nan,
        "per_target": per_target,
        "per_combination": per_combination,
        "fallback": dict(stats.get("fallback", {}) or {}),
    }


def routing_markdown(routing: Mapping[str, Mapping[str, Any]], top: int = 4) -> str:
    """A Markdown section: per (rate, seed) and target, entropy and the most used experts."""
    if not routing:
        return ""
    lines = [
        "## MoE-Retriever router inspection (test split)",
        "",
        "Normalised entropy of expert usage over the eligible experts (1 = balanced) and the "
        f"{top} most chosen experts with their share of top-k choices; full per-combination "
        "tables in results.json (`routing`).",
        "",
        "| run | target | tokens | entropy | top experts |",
        "|---|---|---|---|---|",
    ]
    for key, summary in routing.items():
        for target, t in summary.get("per_target", {}).items():
            best = sorted(t["shares"].items(), key=lambda kv: -kv[1])[:top]
            tops = ", ".join(f"{k} {v:.2f}" for k, v in best)
            ent = t["entropy"]
            ent_s = "–" if isinstance(ent, float) and math.isnan(ent) else f"{ent:.3f}"
            lines.append(f"| {key} | {target} | {t['tokens']} | {ent_s} | {tops} |")
    return "\n".join(lines) + "\n"
