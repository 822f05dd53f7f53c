"""Scaling of a moe-retriever training epoch in N (samples) and M (modalities) (issue 3).

For every (N, M) in N = 1k, 10k, 100k and M = 2, 4, 8 (synthetic data, 64 features per
modality, 50% of (sample, modality) pairs missing, batch 64, P=16, D=128, pooled routing), one
fresh subprocess builds the model and its training pool, runs ``--warmup`` steps, then times
``--steps`` training steps (forward + backward + Adam). Time per epoch is EXTRAPOLATED as
ceil(N / batch) x median step time (running 100k-sample epochs would take far longer than the
benchmark is meant to; the step time itself is what could depend on N, and is reported).

Memory: on CPU, the growth of the process' resident set from after setup to the peak during the
timed steps (``step_peak_mb``, from ``ru_maxrss``; the setup's own peak is excluded by
``setup_peak_mb``); on CUDA, ``torch.cuda.max_memory_allocated`` during the steps minus what
was allocated before them. ``pool_mb`` is the training pool kept by the model (linear in N by
design). Expected: ``epoch_s`` linear in N, ``step_s`` and ``step_peak_mb`` flat in N.

    python benchmarks/scaling.py                       # CPU, ~2-5 minutes
    python benchmarks/scaling.py --n 1000 10000 --m 2 4 --steps 5 --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(n: int, m: int, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in this process (called in a fresh subprocess by main)."""
    import torch

    sys.path.insert(0, str(HERE))
    from _common import make_step, synthetic

    from moe_retriever.model import ModelConfig, MultimodalClassifier

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    x, obs, y = synthetic(n, [64] * m, 0.5, seed=0, device=args.device)
    model = MultimodalClassifier(
        {k: v.shape[1] for k, v in x.items()},
        4,
        ModelConfig(n_tokens=16, dim=128),
        "moe-retriever",
        {"routing": args.routing},
    ).to(args.device)
    t0 = time.perf_counter()
    model.set_training_pool(x, obs)
    model.completion.sampler_for(model.training_pool())  # type: ignore[attr-defined]
    build_s = time.perf_counter() - t0
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = make_step(model, opt, x, obs, y, args.batch, args.device)
    for _ in range(args.warmup):
        step(True)
    setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss0 = _rss_mb()
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = [step(True) for _ in range(args.steps)]
    if cuda:
        step_peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        step_peak = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0)
    step_s = statistics.median(times)
    steps_per_epoch = math.ceil(n / args.batch)
    pool_mb = sum(v.numel() * 4 for v in x.values()) / 2**20
    return {
        "n": n,
        "m": m,
        "step_s": step_s,
        "steps_per_epoch": steps_per_epoch,
        "epoch_s": step_s * steps_per_epoch,
        "samples_per_s": args.batch / step_s,
        "step_peak_mb": step_peak,
        "setup_peak_mb": setup_peak,
        "pool_mb": pool_mb,
        "sampler_build_s": build_s,
        "n_pools": model.completion._sampler.n_pools,  # type: ignore[attr-defined,union-attr]
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000], help="sample counts")
    p.add_argument("--m", type=int, nargs="+", default=[2, 4, 8], help="modality counts")
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--routing", default="pooled", choices=["pooled", "tokens"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # internal: N M
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args)))
        return {}
    rows = []
    passthrough = [
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
        "--routing", args.routing, "--device", args.device, "--threads", str(args.threads),
    ]  # fmt: skip
    for m in args.m:
        for n in args.n:
            cmd = [sys.executable, __file__, "--one", str(n), str(m), *passthrough]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"N={n} M={m} failed:\n{res.stderr[-2000:]}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"M={m:2d} N={n:7d}: step {row['step_s'] * 1000:7.1f} ms, epoch "
                f"{row['epoch_s']:8.1f} s (extrapolated), step peak {row['step_peak_mb']:7.1f} "
                f"MB, pool {row['pool_mb']:7.1f} MB, {row['n_pools']} pools built in "
                f"{row['sampler_build_s']:.2f} s"
            )
    report = {
        "rows": rows,
        "config": {
            "features_per_modality": 64,
            "missing_rate": 0.5,
            "batch": args.batch,
            "n_tokens": 16,
            "dim": 128,
            "routing": args.routing,
            "device": args.device,
            "steps": args.steps,
            "epoch_time": "extrapolated: ceil(N / batch) x median step time",
            "threads": args.threads or "torch default",
            "cpu_count": os.cpu_count(),
        },
    }
    out = Path(args.out) if args.out else HERE / "results" / f"scaling_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
