"""Training-step and evaluation cost of the heads, side by side, as ratios to ``transformer``.

Each head alone (no encoders, no completion) on random tokens (B, M, P, D) with every modality
observed; a training step is forward + backward + Adam, evaluation is one forward under
``inference_mode``. Rounds are interleaved (every head once per round), so a slow moment of a
shared machine hits all heads alike; the median over rounds is reported.

    .venv/bin/python benchmarks/head_step_cost.py                      # library defaults
    .venv/bin/python benchmarks/head_step_cost.py --tokens 4 --dim 64  # a reduced model

I2MoE runs K (M + 1) expert passes per training step (K = M + 2 experts), K in evaluation;
I2M2 one fusion pass plus M small MLPs. Writes JSON (default
``benchmarks/results/head_step_cost_cpu.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads import HeadContext, create_head


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--heads", nargs="+", default=["transformer", "i2m2", "i2moe"])
    p.add_argument("--modalities", type=int, default=5)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/head_step_cost_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mods = [f"m{i}" for i in range(args.modalities)]
    arch = ModelConfig(n_tokens=args.tokens, dim=args.dim)
    heads = {n: create_head(n, mods, args.tokens, args.dim, args.classes, arch) for n in args.heads}
    opts = {n: torch.optim.Adam(h.parameters(), lr=1e-4) for n, h in heads.items()}
    B, M = args.batch, args.modalities
    tokens = torch.randn(B, M, args.tokens, args.dim)
    observed = torch.ones(B, M, dtype=torch.bool)
    y = torch.randint(0, args.classes, (B,))
    train_s: dict[str, list[float]] = {n: [] for n in heads}
    eval_s: dict[str, list[float]] = {n: [] for n in heads}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, head in heads.items():
            head.train()
            head.generator.manual_seed(r)
            ctx = HeadContext(training=True, modalities=mods, generator=head.generator, y=y)
            t0 = time.perf_counter()
            out = head(tokens, observed, ctx)
            loss = F.cross_entropy(out.logits, y) + out.aux_loss
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            t1 = time.perf_counter()
            head.eval()
            with torch.inference_mode():
                head(tokens, observed, HeadContext(modalities=mods))
            t2 = time.perf_counter()
            if r:
                train_s[name].append(t1 - t0)
                eval_s[name].append(t2 - t1)
    result: dict[str, object] = {"settings": vars(args), "heads": {}}
    ref = args.heads[0]
    for name in heads:
        tr, ev = statistics.median(train_s[name]), statistics.median(eval_s[name])
        result["heads"][name] = {  # type: ignore[index]
            "train_step_ms": 1e3 * tr,
            "eval_ms": 1e3 * ev,
            "train_ratio": tr / statistics.median(train_s[ref]),
            "eval_ratio": ev / statistics.median(eval_s[ref]),
            "parameters": sum(p.numel() for p in heads[name].parameters()),
        }
        row = result["heads"][name]  # type: ignore[index]
        print(
            f"{name:12s} train step {row['train_step_ms']:8.1f} ms ({row['train_ratio']:5.1f}x "
            f"{ref}), eval {row['eval_ms']:7.1f} ms ({row['eval_ratio']:4.1f}x), "
            f"{row['parameters']} parameters"
        )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
