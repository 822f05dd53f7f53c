"""I2MoE's interaction weights on synthetic tasks where one interaction type carries the label.

Two modalities, P = 2 tokens of width 8. Tasks: ``unique`` (label = sign of modality a's first
feature: a's uniqueness) and ``xor`` (label = XOR of both modalities' signs: synergy). The
I2MoE head alone (no encoders) is trained on the tokens with Adam, then its mean weights
(U_a, U_b, S, R) and accuracy on 512 fresh samples are reported, with every expert's accuracy
alone.

Two token layouts (``--layout``):

* ``cancel`` (default; the unit test's): token 1 = -token 0, so the mean-pooled tokens the
  reweighting MLP reads are zero and it cannot classify by itself: its weights must pick the
  expert that does;
* ``raw``: one token holds the features, the other is independent noise; the reweighting MLP
  reads the label-carrying feature directly.

    .venv/bin/python benchmarks/i2moe_weights.py --seeds 0 1 2 3 --layout cancel raw

prints one line per (layout, task, seed) and writes JSON (default
``benchmarks/results/i2moe_weights_cpu.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from moe_retriever.architecture import ModelConfig
from moe_retriever.heads import HeadContext, create_head

EXPERTS = ["U_a", "U_b", "S", "R"]


def task(kind: str, layout: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    t0 = torch.randn(n, 2, 1, 8, generator=g)
    other = -t0 if layout == "cancel" else torch.randn(n, 2, 1, 8, generator=g)
    tokens = torch.cat([t0, other], dim=2)
    s = t0[:, :, 0, 0] > 0
    y = s[:, 0] if kind == "unique" else s[:, 0] ^ s[:, 1]
    return tokens, y.long()


def run(kind: str, layout: str, seed: int, steps: int, lambda_int: float) -> dict[str, Any]:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_tokens=2, dim=8, n_heads=1, head_hidden=16, dropout=0.0)
    head = create_head(
        "i2moe",
        ["a", "b"],
        2,
        8,
        2,
        cfg,
        lambda_int=lambda_int,
        rw_layers=1,
        rw_hidden=16,
        rw_dropout=0.0,
    )
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    full = torch.ones(64, 2, dtype=torch.bool)
    t_start = time.perf_counter()
    for step in range(steps):
        tokens, y = task(kind, layout, 64, g)
        head.generator.manual_seed(step)
        out = head(tokens, full, HeadContext(training=True, generator=head.generator, y=y))
        loss = F.cross_entropy(out.logits, y) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    tokens, y = task(kind, layout, 512, torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        out = head(tokens, torch.ones(512, 2, dtype=torch.bool), HeadContext())
    interp = out.info["interpret"]
    experts_alone = (interp["expert_logits"].argmax(-1) == y[:, None]).float().mean(0)
    return {
        "layout": layout,
        "task": kind,
        "seed": seed,
        "weights": dict(zip(EXPERTS, interp["weights"].mean(0).tolist(), strict=True)),
        "accuracy": float((out.logits.argmax(1) == y).float().mean()),
        "expert_accuracy": dict(zip(EXPERTS, experts_alone.tolist(), strict=True)),
        "seconds": time.perf_counter() - t_start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--layout", nargs="+", choices=["cancel", "raw"], default=["cancel", "raw"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lambda-int", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/i2moe_weights_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for layout in args.layout:
        for kind in ("unique", "xor"):
            for seed in args.seeds:
                r = run(kind, layout, seed, args.steps, args.lambda_int)
                rows.append(r)
                w = " ".join(f"{k} {v:.2f}" for k, v in r["weights"].items())
                alone = " ".join(f"{k} {v:.2f}" for k, v in r["expert_accuracy"].items())
                print(
                    f"{layout:6s} {kind:6s} seed {seed}: weights {w} | accuracy "
                    f"{r['accuracy']:.3f}, experts alone {alone}"
                )
    out = {
        "command": "benchmarks/i2moe_weights.py "
        + " ".join(
            [
                f"--seeds {' '.join(map(str, args.seeds))}",
                f"--layout {' '.join(args.layout)}",
                f"--steps {args.steps}",
                f"--lambda-int {args.lambda_int}",
            ]
        ),
        "runs": rows,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
