"""Where the time of a retrieval training step goes (issue 14): section timers.

The configuration of ``retrieval_speed.py`` (N=4000, 5 modalities of 64-256 features, 50%
missing, batch 64, P=16, D=128, the library's defaults). Each section's forward wall time is
taken by wrapping the function that runs it; the backward is timed as a whole (autograd runs
the sections' backwards interleaved). Medians over ``--steps`` steps, for a zero-fill step and
a retrieval step of the same model. Sections (forward):

* ``select``: the supporting groups (``SimilarSelector.select``; ``similarity``: its matmuls);
* ``encode_support``: encoding the distinct supporting rows with the model's encoders;
* ``retrieve_pairs``: the retriever proper (member bank, attention per bucket, router);
  ``moe``: the router alone;
* ``encode_batch``: the batch's own encoders; ``head``: fusion + classifier.

Then ``gflop_forward``: the matmul / attention FLOPs of one forward pass per part of the model
(encoders of the batch and of the supporting rows, the retriever's projections, its attention
scores, its router and experts, the head).

    python benchmarks/retrieval_profile.py --threads 1
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count_cpu_attention_flops, synthetic

import moe_retriever.completion.moe_retriever as mr
import moe_retriever.completion.support as sm
from moe_retriever.model import ModelConfig, MultimodalClassifier

DIMS = [64, 96, 128, 192, 256]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--routing", default="pooled", choices=["pooled", "tokens"])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    step_times: dict[str, float] = collections.defaultdict(float)

    def timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                step_times[label] += time.perf_counter() - t0

        return wrapper

    sm.SimilarSelector.select = timed(sm.SimilarSelector.select, "select")  # type: ignore[method-assign]
    sm.SimilarSelector.similarity = timed(sm.SimilarSelector.similarity, "similarity")  # type: ignore[method-assign]
    mr.encode_support_unique = timed(mr.encode_support_unique, "encode_support")  # type: ignore[assignment]
    mr.MoERetrieverCompletion.retrieve_pairs = timed(  # type: ignore[method-assign]
        mr.MoERetrieverCompletion.retrieve_pairs, "retrieve_pairs"
    )
    mr.SparseMoE.forward = timed(mr.SparseMoE.forward, "moe")  # type: ignore[method-assign]

    torch.manual_seed(0)
    x, obs, y = synthetic(4000, DIMS, 0.5, seed=0)
    dims = {m: v.shape[1] for m, v in x.items()}
    model = MultimodalClassifier(
        dims, 4, ModelConfig(n_tokens=16, dim=128), "moe-retriever", {"routing": args.routing}
    )
    model.encode = timed(model.encode, "encode_batch")  # type: ignore[method-assign]
    model.head.forward = timed(model.head.forward, "head")  # type: ignore[method-assign]
    model.set_training_pool(x, obs)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step(retrieve: bool) -> dict[str, float]:
        step_times.clear()
        idx = torch.randint(0, 4000, (64,), generator=g)
        t0 = time.perf_counter()
        out = model({m: v[idx] for m, v in x.items()}, obs[idx], idx, retrieve=retrieve)
        loss = F.cross_entropy(out.logits, y[idx]) + out.aux_loss
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        return {**step_times, "forward": t1 - t0, "backward": t2 - t1, "adam": t3 - t2}

    report: dict[str, Any] = {"routing": args.routing, "threads": torch.get_num_threads()}
    for way, retrieve in (("zero_fill", False), ("retrieval", True)):
        for _ in range(2):
            step(retrieve)
        runs = [step(retrieve) for _ in range(args.steps)]
        keys = sorted({k for r in runs for k in r})
        ms = {k: 1000 * statistics.median(r.get(k, 0.0) for r in runs) for k in keys}
        ms["total"] = ms["forward"] + ms["backward"] + ms["adam"]
        report[way] = ms
        print(f"{way:9s} (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()))
    # where the arithmetic is: matmul / attention GFLOP of one FORWARD pass per part of the
    # model (torch's FlopCounterMode; element-wise ops are not counted; the backward, about
    # twice the forward, is not attributed to modules reliably, so it is left out). The
    # encoders serve both the batch and, in a retrieval step, the supporting rows.
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_attention_flops()

    def part_of(name: str) -> str | None:
        if name.count(".") == 2 and name.startswith("MultimodalClassifier.encoders."):
            return "encoders (batch + supporting rows)"
        if name in (
            "MultimodalClassifier.completion.attention.attn.qkv",
            "MultimodalClassifier.completion.attention.attn.out",
        ):
            return "retriever QKV + output projections"
        if name == "MultimodalClassifier.completion.moe":
            return "retriever router + experts"
        if name == "MultimodalClassifier.head":
            return "head (fusion + classifier)"
        return None

    gflop: dict[str, dict[str, float]] = {}
    for way, retrieve in (("zero_fill", False), ("retrieval", True)):
        idx = torch.randint(0, 4000, (64,), generator=g)
        with FlopCounterMode(display=False, depth=3) as counter:
            model({m: v[idx] for m, v in x.items()}, obs[idx], idx, retrieve=retrieve)
        total = counter.get_total_flops() / 1e9
        row: dict[str, float] = collections.defaultdict(float)
        for name, ops in counter.get_flop_counts().items():
            part = part_of(name)
            if part is not None:
                row[part] += sum(ops.values()) / 1e9
        # what no named part holds: the retriever's attention scores (SDPA) and the rest
        row["retriever attention (SDPA) + rest"] = total - sum(row.values())
        row["total"] = total
        gflop[way] = dict(row)
        print(f"{way:9s} (forward GFLOP): " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    report["gflop_forward"] = gflop
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
