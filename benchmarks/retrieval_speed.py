"""Training-step throughput of retrieval: batched vs per-sample loop vs zero fill (issue 3).

The same model (the library defaults: ``ModelConfig()`` and the moe-retriever preset's
completion options, read at run time: P=16, D=128, MLP encoder of hidden width 256, retrieval
dropout 0.3, similar supporting groups of k=5, C=8 candidates + S=4 shared experts, top-4;
every one of them can be overridden: ``--n-tokens``, ``--dim``, ``--encoder-hidden``,
``--retrieval-dropout``, ``--support-k``, ``--n-candidates``, ``--n-shared``, ``--top-k``, ...)
is trained on the same synthetic data (N=4000, 5 modalities of 64-256 features, 50% of
(sample, modality) pairs missing, batch 64; the library's training batch is 16, ``--batch``)
three ways, interleaved round by round in one process so that machine load hits all three
alike:

* ``batched``: our retriever, all missing pairs of a batch at once;
* ``per_sample_loop``: the same retriever modules called once per missing (sample, modality)
  pair, each drawing and encoding its own supporting group (the research code's structure);
* ``zero_fill``: missing modalities as zero tokens, no retrieval (the warm-up mode).

Each measured step is forward + backward + Adam step. Reported: median samples/s per way,
``speedup_vs_loop`` = batched / loop and ``overhead_vs_zero_fill`` = step time batched / step
time zero fill, for both routing modes (top-level keys: the default ``pooled`` mode), and
beside it ``flops_vs_zero_fill``: the ratio of the two steps' matmul / attention FLOPs
(forward + backward, ``torch.utils.flop_counter``), i.e. how much more work the retrieval step
does; a time ratio near the FLOP ratio means the overhead is the method's own arithmetic.

``--precision bf16-mixed`` / ``16-mixed`` run the forward under ``torch.autocast`` (weights
and Adam in float32). ``--device cuda`` without a usable GPU prints that it was skipped and
exits 0 without writing anything.

    python benchmarks/retrieval_speed.py --threads 1      # CPU, writes benchmarks/results/
    python benchmarks/retrieval_speed.py --device cuda --precision bf16-mixed --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    LoopCompletion,
    add_model_args,
    count_cpu_attention_flops,
    make_step,
    model_settings,
    synthetic,
)

from moe_retriever.model import ModelConfig, MultimodalClassifier

DIMS = [64, 96, 128, 192, 256]
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def measure(routing: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    x, obs, y = synthetic(args.n, DIMS, args.missing_rate, seed=args.seed, device=args.device)
    dims = {m: v.shape[1] for m, v in x.items()}
    model_cfg, retriever_cfg = model_settings(args)
    model = MultimodalClassifier(
        dims,
        4,
        ModelConfig(**model_cfg),
        "moe-retriever",
        {**retriever_cfg, "routing": routing, "dispatch": args.dispatch, "seed": args.seed},
    ).to(args.device)
    model.set_training_pool(x, obs)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = make_step(
        model,
        opt,
        x,
        obs,
        y,
        args.batch,
        args.device,
        seed=args.seed,
        autocast_dtype=PRECISIONS[args.precision],
    )
    batched_retriever = model.completion
    loop_retriever = LoopCompletion(batched_retriever)

    def run(way: str) -> float:
        if way == "zero_fill":
            return step(False)
        model.completion = loop_retriever if way == "per_sample_loop" else batched_retriever
        try:
            return step(True)
        finally:
            model.completion = batched_retriever

    for way in ("zero_fill", "batched", "per_sample_loop"):  # warm-up
        run(way)
    times: dict[str, list[float]] = {"batched": [], "per_sample_loop": [], "zero_fill": []}
    for r in range(args.steps):
        times["batched"].append(run("batched"))
        times["zero_fill"].append(run("zero_fill"))
        if r % args.loop_every == 0:
            times["per_sample_loop"].append(run("per_sample_loop"))
    # the work itself: matmul / attention FLOPs of one step (forward + backward) per way,
    # counted by torch's FlopCounterMode (element-wise ops are not counted; the CPU attention
    # kernel gets torch's SDPA formula, which torch itself registers only for CUDA kernels)
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_attention_flops()

    flops = {}
    for way in ("batched", "zero_fill"):
        with FlopCounterMode(display=False) as counter:
            run(way)
        flops[way] = counter.get_total_flops()
    med = {k: statistics.median(v) for k, v in times.items()}
    sps = {k: args.batch / v for k, v in med.items()}
    return {
        "samples_per_s": sps,
        "speedup_vs_loop": sps["batched"] / sps["per_sample_loop"],
        "overhead_vs_zero_fill": med["batched"] / med["zero_fill"],
        "flops_vs_zero_fill": flops["batched"] / flops["zero_fill"],
        "gflop_per_step": {k: v / 1e9 for k, v in flops.items()},
        "median_step_s": med,
        "n_steps": {k: len(v) for k, v in times.items()},
        "observed_fraction": float(obs.float().mean()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--steps", type=int, default=30, help="measured rounds per way (default 30)")
    p.add_argument(
        "--loop-every", type=int, default=3, help="run the slow loop every n-th round (default 3)"
    )
    p.add_argument("--n", type=int, default=4000, help="samples (default 4000)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--missing-rate", type=float, default=0.5, help="default 0.5")
    p.add_argument(
        "--routing", nargs="+", default=["pooled", "tokens"], help="routing modes to measure"
    )
    p.add_argument(
        "--dispatch", default="tiles", choices=["tiles", "padded", "loop"], help="MoE dispatch"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    add_model_args(p)  # --n-tokens, --dim, --encoder, ..., --support-k, --n-candidates, ...
    p.add_argument(
        "--precision",
        default="32-true",
        choices=list(PRECISIONS),
        help="32-true (default) or mixed precision under torch.autocast",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device here, skipped (nothing measured or written)")
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {mode: measure(mode, args) for mode in args.routing}
    main_mode = "pooled" if "pooled" in results else args.routing[0]
    report: dict[str, Any] = {
        "samples_per_s": results[main_mode]["samples_per_s"],
        "speedup_vs_loop": results[main_mode]["speedup_vs_loop"],
        "overhead_vs_zero_fill": results[main_mode]["overhead_vs_zero_fill"],
        "routing_mode_of_top_level_keys": main_mode,
        "routing": results,
        "config": {
            "n": args.n,
            "dims": DIMS,
            "missing_rate": args.missing_rate,
            "batch": args.batch,
            "model": model_settings(args)[0],
            "retriever": model_settings(args)[1],
            "dispatch": args.dispatch,
            "steps": args.steps,
            "device": args.device,
            "device_name": torch.cuda.get_device_name(args.device)
            if args.device.startswith("cuda")
            else platform.processor() or "cpu",
            "precision": args.precision,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    out = (
        Path(args.out)
        if args.out
        else (
            Path(__file__).resolve().parent
            / "results"
            / f"retrieval_speed_{args.device.split(':')[0]}"
            f"{'' if args.precision == '32-true' else '_' + args.precision}.json"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for mode, r in results.items():
        s = r["samples_per_s"]
        print(
            f"[{mode}] samples/s batched {s['batched']:.1f}, loop {s['per_sample_loop']:.1f}, "
            f"zero fill {s['zero_fill']:.1f} | speedup vs loop {r['speedup_vs_loop']:.2f}x | "
            f"overhead vs zero fill {r['overhead_vs_zero_fill']:.2f}x (FLOPs "
            f"{r['flops_vs_zero_fill']:.2f}x: {r['gflop_per_step']['batched']:.1f} vs "
            f"{r['gflop_per_step']['zero_fill']:.1f} GFLOP per step)"
        )
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
