"""Cost of a retrieval training step against a zero-fill step over cheaper settings (issue 24).

For a grid of settings of the cost knobs (tokens per modality P, width D, supporting-group size
k, encoder width, the retriever's experts C / S / top-k, retrieval dropout), each applied to the
library defaults, one process builds one model per setting on the same synthetic data as
``retrieval_speed.py`` (N=4000, 5 modalities of 64-256 features, 50 % missing, batch 64) and
times training steps (forward + backward + Adam) with retrieval and with zero fill, **round
robin over all settings and both ways** (machine load hits every setting alike). Per setting:

* ``time_ratio``: median retrieval step / median zero-fill step (``overhead_vs_zero_fill`` of
  ``retrieval_speed.py``, pooled routing), ``ms_retrieval`` / ``ms_zero_fill``: the medians;
* ``flop_ratio``: matmul + attention FLOPs of a retrieval step / a zero-fill step (forward and
  backward, ``torch.utils.flop_counter``, with torch's SDPA formula for the CPU kernel), the
  model's work only: the similar selection's similarity matmuls (no gradient) are counted
  apart (``gflop.retrieval_selection``; ``flop_ratio_with_selection`` includes them);
  ``time_ratio_without_selection``: the time ratio less the forward time of ``draw_pairs``;
* ``forward_ms``: the retrieval step's forward by section (medians): ``draw_pairs`` (pairs and
  supporting groups: the similar selection), ``encode_support`` (the distinct supporting rows
  through the encoders), ``retrieve_pairs`` (the retriever proper), ``rest`` (batch encoders,
  hiding, head, losses); ``backward_ms`` and ``adam_ms`` whole;
* ``work``: per step (means): missing pairs the retriever fills (``pairs``; with retrieval
  dropout the hidden entries are pairs too), supporting slots and distinct supporting rows
  encoded, real members attended (``members``) and tokens attended per pair.

    python benchmarks/frontier.py --threads 1                 # the grid, ~10 min on 1 core
    python benchmarks/frontier.py --threads 1 --batch 16      # at the library's batch size

Writes ``benchmarks/results/frontier_cpu.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count_cpu_attention_flops, make_step, retriever_defaults, synthetic

import moe_retriever.completion.moe_retriever as mr
from moe_retriever.architecture import ModelConfig
from moe_retriever.model import MultimodalClassifier

DIMS = [64, 96, 128, 192, 256]

#: the grid: label -> overrides of the library defaults ("model.<field>" for ModelConfig,
#: "completion.<option>" for the moe-retriever completion). Chosen to vary one knob at a
#: time from the defaults, then the cheap combinations.
GRID: dict[str, dict[str, Any]] = {
    "defaults": {},
    "rd0": {"model.retrieval_dropout": 0.0},
    "k3": {"completion.k": 3},
    "P8": {"model.n_tokens": 8},
    "P4": {"model.n_tokens": 4},
    "D64": {"model.dim": 64},
    "P4-D64": {"model.n_tokens": 4, "model.dim": 64},
    "experts-C4-S2-top2": {
        "completion.n_candidates": 4,
        "completion.n_shared": 2,
        "completion.top_k": 2,
    },
    "P4-D64-k3": {"model.n_tokens": 4, "model.dim": 64, "completion.k": 3},
    "P4-D64-rd0": {"model.n_tokens": 4, "model.dim": 64, "model.retrieval_dropout": 0.0},
    "P4-D64-k3-rd0": {
        "model.n_tokens": 4,
        "model.dim": 64,
        "completion.k": 3,
        "model.retrieval_dropout": 0.0,
    },
    "P4-D64-k3-rd0-h128-top2": {
        "model.n_tokens": 4,
        "model.dim": 64,
        "completion.k": 3,
        "model.retrieval_dropout": 0.0,
        "model.encoder_hidden": 128,
        "completion.n_candidates": 4,
        "completion.n_shared": 2,
        "completion.top_k": 2,
    },
    # the cheapest retriever the structure allows (one supporting member, one expert, no
    # hidden pairs): a floor of the ratio, not a candidate
    "floor-P4-D64-k1-rd0-C1-S0-top1": {
        "model.n_tokens": 4,
        "model.dim": 64,
        "completion.k": 1,
        "model.retrieval_dropout": 0.0,
        "completion.n_candidates": 1,
        "completion.n_shared": 0,
        "completion.top_k": 1,
    },
}

# ---------------------------------------------------------------- section timers / counters
_SECTIONS: dict[str, float] = collections.defaultdict(float)
_WORK: dict[str, float] = collections.defaultdict(float)


def _timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            _SECTIONS[label] += time.perf_counter() - t0

    return wrapper


#: while counting FLOPs: the supporting-group selection's own FLOPs (counted apart)
_SELECT_FLOPS: list[float] | None = None


def _selection_apart(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``draw_pairs`` with its FLOPs (the similar selection's similarity matmuls, no
    gradient, not the model's work) counted into ``_SELECT_FLOPS`` instead of the step's."""

    def wrapper(*a: Any, **k: Any) -> Any:
        if _SELECT_FLOPS is None:
            return fn(*a, **k)
        from torch.utils._python_dispatch import _disable_current_modes
        from torch.utils.flop_counter import FlopCounterMode

        with _disable_current_modes(), FlopCounterMode(display=False) as counter:
            out = fn(*a, **k)
        _SELECT_FLOPS.append(counter.get_total_flops() / 1e9)
        return out

    return wrapper


def _install_timers() -> None:
    cls = mr.MoERetrieverCompletion
    cls.draw_pairs = _timed(_selection_apart(cls.draw_pairs), "draw_pairs")  # type: ignore[method-assign]
    mr.encode_support_unique = _timed(mr.encode_support_unique, "encode_support")  # type: ignore[assignment]
    inner = cls.retrieve_pairs

    def retrieve_pairs(self: Any, tokens: Any, observed: Any, b_idx: Any, m_idx: Any,
                       draw: Any, support: Any, *a: Any, **k: Any) -> Any:  # fmt: skip
        n = int(b_idx.numel())
        members = draw.mask.sum(1) + observed[b_idx].sum(1)
        _WORK["pairs"] += n
        _WORK["support_slots"] += float(draw.mask.sum())
        _WORK["support_rows_encoded"] += float(support[0].shape[0] - 1)
        _WORK["members"] += float(members.sum())
        _WORK["tokens_per_pair"] += float(members.float().mean()) * tokens.shape[2] if n else 0.0
        _WORK["calls"] += 1
        return inner(self, tokens, observed, b_idx, m_idx, draw, support, *a, **k)

    cls.retrieve_pairs = _timed(retrieve_pairs, "retrieve_pairs")  # type: ignore[method-assign]


def build(overrides: dict[str, Any], x: Any, obs: Any, seed: int) -> MultimodalClassifier:
    model_kw = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("model.")}
    comp_kw = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("completion.")}
    torch.manual_seed(seed)
    dims = {m: v.shape[1] for m, v in x.items()}
    model = MultimodalClassifier(
        dims,
        4,
        ModelConfig(**model_kw),
        "moe-retriever",
        {"routing": "pooled", "seed": seed, **comp_kw},
    )
    model.set_training_pool(x, obs)
    model.train()
    return model


def forward_parts(counter: Any) -> dict[str, float]:
    """GFLOP of one forward pass per part of the model (as ``retrieval_profile.py``)."""
    row: dict[str, float] = collections.defaultdict(float)
    for name, ops in counter.get_flop_counts().items():
        if name.count(".") == 2 and name.startswith("MultimodalClassifier.encoders."):
            part = "encoders"
        elif name in (
            "MultimodalClassifier.completion.attention.attn.qkv",
            "MultimodalClassifier.completion.attention.attn.out",
        ):
            part = "retriever_qkv_out"
        elif name == "MultimodalClassifier.completion.moe":
            part = "retriever_router_experts"
        elif name == "MultimodalClassifier.head":
            part = "head"
        else:
            continue
        row[part] += sum(ops.values()) / 1e9
    total = counter.get_total_flops() / 1e9
    # what no named part holds: the retriever's attention scores (SDPA) and the rest
    row["retriever_attention_and_rest"] = total - sum(row.values())
    row["total"] = total
    return dict(row)


def resolved(overrides: dict[str, Any]) -> dict[str, Any]:
    """The full setting: library defaults with the overrides applied."""
    cfg = ModelConfig()
    model = {k: getattr(cfg, k) for k in ("n_tokens", "dim", "encoder_hidden", "retrieval_dropout")}
    comp = dict(retriever_defaults())
    for key, v in overrides.items():
        part, name = key.split(".", 1)
        (model if part == "model" else comp)[name] = v
    return {"model": model, "completion": comp}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=12, help="measured rounds (default 12)")
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--batch", type=int, default=64, help="default 64 (retrieval_speed.py's)")
    p.add_argument("--missing-rate", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--only", nargs="+", default=None, help="grid labels to run (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=None, help="JSON (default benchmarks/results/frontier_cpu.json)"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = {k: v for k, v in GRID.items() if args.only is None or k in args.only}
    _install_timers()
    x, obs, y = synthetic(args.n, DIMS, args.missing_rate, seed=args.seed)
    models: dict[str, Any] = {}
    model_of: dict[str, MultimodalClassifier] = {}
    for label, ov in grid.items():
        model = build(ov, x, obs, args.seed)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        models[label] = make_step(model, opt, x, obs, y, args.batch, "cpu", seed=args.seed)
        model_of[label] = model
    g_parts = torch.Generator().manual_seed(args.seed + 1)
    parts: dict[str, dict[str, dict[str, float]]] = {k: {} for k in grid}
    times: dict[str, dict[str, list[float]]] = {k: {"retrieval": [], "zero_fill": []} for k in grid}
    sections: dict[str, list[dict[str, float]]] = {k: [] for k in grid}
    work: dict[str, list[dict[str, float]]] = {k: [] for k in grid}
    for step in models.values():  # warm-up
        step(True)
        step(False)
    t_start = time.perf_counter()
    for r in range(args.rounds):
        for label, step in models.items():
            _SECTIONS.clear()
            _WORK.clear()
            times[label]["retrieval"].append(step(True))
            sections[label].append(dict(_SECTIONS))
            work[label].append(dict(_WORK))
            times[label]["zero_fill"].append(step(False))
        print(f"round {r + 1}/{args.rounds} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    # FLOPs of one step per way (forward + backward + Adam's matmuls: none)
    from torch.utils.flop_counter import FlopCounterMode

    global _SELECT_FLOPS
    count_cpu_attention_flops()
    flops: dict[str, dict[str, float]] = {}
    for label, step in models.items():
        flops[label] = {}
        for way, retrieve in (("retrieval", True), ("zero_fill", False)):
            _SELECT_FLOPS = []
            with FlopCounterMode(display=False) as counter:
                step(retrieve)
            flops[label][way] = counter.get_total_flops() / 1e9
            flops[label][way + "_selection"] = sum(_SELECT_FLOPS)
        _SELECT_FLOPS = None
        # where the forward's work is, per part of the model (forward only: the backward is
        # not attributed to modules reliably; it is about twice the forward)
        model = model_of[label]
        idx = torch.randint(0, args.n, (args.batch,), generator=g_parts)
        xb = {m: v[idx] for m, v in x.items()}
        for way, retrieve in (("retrieval", True), ("zero_fill", False)):
            _SELECT_FLOPS = []
            with FlopCounterMode(display=False, depth=3) as counter:
                model(xb, obs[idx], idx, retrieve=retrieve)
            parts[label][way] = forward_parts(counter)
            _SELECT_FLOPS = None

    rows: dict[str, Any] = {}
    for label in grid:
        med = {w: 1000 * statistics.median(v) for w, v in times[label].items()}
        sec_keys = ("draw_pairs", "encode_support", "retrieve_pairs")
        fwd = {
            k: 1000 * statistics.median(s.get(k, 0.0) for s in sections[label]) for k in sec_keys
        }
        fwd["retrieval_total"] = sum(fwd.values())
        wk = {
            k: statistics.mean(w.get(k, 0.0) for w in work[label])
            for k in (
                "pairs",
                "support_slots",
                "support_rows_encoded",
                "members",
                "tokens_per_pair",
            )
        }
        rows[label] = {
            "overrides": grid[label],
            "setting": resolved(grid[label]),
            "time_ratio": med["retrieval"] / med["zero_fill"],
            # the model's work only (the selection's similarity FLOPs counted apart)
            "flop_ratio": flops[label]["retrieval"] / flops[label]["zero_fill"],
            # with the selection's FLOPs too
            "flop_ratio_with_selection": (
                flops[label]["retrieval"] + flops[label]["retrieval_selection"]
            )
            / flops[label]["zero_fill"],
            # the time ratio if the pairs and groups (the similar selection) cost nothing
            "time_ratio_without_selection": (med["retrieval"] - fwd["draw_pairs"])
            / med["zero_fill"],
            "ms_retrieval": med["retrieval"],
            "ms_zero_fill": med["zero_fill"],
            "ms_extra": med["retrieval"] - med["zero_fill"],
            "gflop": flops[label],
            "gflop_forward_parts": parts[label],
            "forward_ms": fwd,
            "work": wk,
            "n_rounds": len(times[label]["retrieval"]),
        }
    report = {
        "rows": rows,
        "config": {
            "n": args.n,
            "dims": DIMS,
            "missing_rate": args.missing_rate,
            "batch": args.batch,
            "routing": "pooled",
            "rounds": args.rounds,
            "library_defaults": resolved({}),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    out = (
        Path(args.out)
        if args.out
        else Path(__file__).resolve().parent / "results" / "frontier_cpu.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(format_table(rows))
    print(f"wrote {out}")
    return report


def format_table(rows: dict[str, Any]) -> str:
    head = (
        "| setting | time ratio | time ratio w/o selection | FLOP ratio (model) "
        "| FLOP ratio (+ selection) | ms/step retrieval | ms/step zero fill "
        "| fwd: select / enc. support / retriever (ms) | pairs | distinct support rows "
        "| members/pair |"
    )
    lines = [head, "|" + "---|" * 11]
    for label, r in rows.items():
        f, w = r["forward_ms"], r["work"]
        mpp = w["members"] / w["pairs"] if w["pairs"] else 0.0
        lines.append(
            f"| {label} | {r['time_ratio']:.2f} | {r['time_ratio_without_selection']:.2f} | "
            f"{r['flop_ratio']:.2f} | {r['flop_ratio_with_selection']:.2f} | "
            f"{r['ms_retrieval']:.0f} | {r['ms_zero_fill']:.0f} | "
            f"{f['draw_pairs']:.0f} / {f['encode_support']:.0f} / {f['retrieve_pairs']:.0f} | "
            f"{w['pairs']:.0f} | {w['support_rows_encoded']:.0f} | {mpp:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
