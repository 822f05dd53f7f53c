"""Scaling of the supporting-group machinery in N (samples) and M (modalities), and a full
training epoch at N = 10^6, M = 16 (issue 14).

Grid (default): for every M in 2, 4, 8, 16 and N in 10^4, 10^5, 10^6, one fresh subprocess
generates a training set (``F`` = 8 features per modality, each (sample, modality) pair missing
with probability 0.5, at least one modality per sample: about min(N, 2^M) distinct observed
combinations occur, the hardest case for the pools) and measures

* ``build_s``: building the pool index (:class:`SupportingGroupSampler`: rows sorted by
  observed-combination code, the occurring codes and their bitsets); ``index_mb`` its tensors;
* ``draw_first_s`` / ``draw_s``: random supporting groups (``support_select="random"``) for
  the missing pairs of a batch of ``--batch`` training samples (own rows excluded): the first
  batch, which builds its pools, and the median of the next ``--draws`` batches (new keys
  still build their pools); ``cache_mb`` the pool cache afterwards (bounded by
  ``max_segments``);
* ``similar_build_s`` / ``similar_s``: ``support_select="similar-concat"`` (the exact
  selection that was the default before issue 24): the standardized copy of the pool
  (``similar_mb``) and the median of three selections for a batch of ``--similar-batch``
  samples (a similarity row over all N training rows per sample: time per batch linear in N
  by construction). The default ``"similar"`` (the faiss index) is measured by
  ``similar_index.py``;
* ``peak_rss_mb``: the child's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``) at the
  end, ``base_rss_mb`` the same right after the imports (Python + torch), so
  ``peak_rss_mb - base_rss_mb`` is what the point added.

The fitted exponents (slope of log time / log memory against log N, per M, over the grid) are
printed and saved: 1 = linear in N.

Epoch (``--epoch``): one full epoch (every training sample once, retrieval on from the first
step, random supporting groups, or with ``--epoch-select similar`` the default similar
groups from the faiss index) on a generated N = 10^6, M = 16, F = 8 data set (same
missingness) with a small model (P = 2 tokens of width 16), through the library's data path
(TensorSet, the data module's loader) and model with a plain Adam loop; reports the epoch's
wall time, steps and peak RSS (progress lines on stderr while it runs).

    python benchmarks/scaling.py --threads 1            # grid, writes results/scaling_cpu.json
    python benchmarks/scaling.py --threads 1 --epoch    # + the 10^6 x 16 epoch (adds its row)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FEATURES = 8
MISSING = 0.5


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mb(*tensors: Any) -> float:
    return sum(int(t.numel()) * t.element_size() for t in tensors) / 2**20


def _observed(n: int, m: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, m, generator=g) >= MISSING
    empty = ~obs.any(1)
    obs[empty, torch.randint(0, m, (int(empty.sum()),), generator=g)] = True
    return obs


def run_point(n: int, m: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (N, M) point, in this process (main runs it in a fresh subprocess)."""
    import torch

    from moe_retriever.completion.base import TrainingPool
    from moe_retriever.completion.support import (
        ConcatSimilarSelector,
        SupportingGroupSampler,
        combination_codes,
    )

    base = _peak_mb()
    if args.threads:
        torch.set_num_threads(args.threads)
    obs = _observed(n, m, seed=0)
    g = torch.Generator().manual_seed(1)
    x = {f"m{j}": torch.randn(n, FEATURES, generator=g) * obs[:, j, None] for j in range(m)}
    t0 = time.perf_counter()
    sampler = SupportingGroupSampler(obs, k=None, seed=0)
    build_s = time.perf_counter() - t0
    index_mb = _mb(
        sampler.sorted_index, sampler.codes, sampler._code_len, sampler._code_start
    ) + _mb(sampler._has_bit)
    codes_all = combination_codes(obs)
    times = []
    for _ in range(args.draws + 1):
        rows = torch.randint(0, n, (args.batch,), generator=g)
        bi, target = (~obs[rows]).nonzero(as_tuple=True)
        t0 = time.perf_counter()
        sampler.draw(target, codes_all[rows][bi], True, exclude=rows[bi])
        times.append(time.perf_counter() - t0)
    cache_mb = _mb(
        sampler.keys_sorted,
        sampler._sorted_to_id,
        sampler.key_target,
        sampler.pool_size,
        sampler.key_base,
        sampler.seg_end,
        sampler.seg_begin,
        sampler.seg_sorted_start,
    )
    pool = TrainingPool(list(x), x, obs)
    t0 = time.perf_counter()
    selector = ConcatSimilarSelector(pool)
    similar_build_s = time.perf_counter() - t0
    similar_mb = _mb(
        selector.z, selector.sq_norm, selector.codes, selector.observed_t, selector.observed_f
    )
    sim_times = []
    for _ in range(3):  # median of 3 batches: one call is at the mercy of a shared machine
        rows = torch.randint(0, n, (args.similar_batch,), generator=g)
        bi, target = (~obs[rows]).nonzero(as_tuple=True)
        xb = {k: v[rows] for k, v in x.items()}
        t0 = time.perf_counter()
        selector.select(sampler, xb, bi, target, codes_all[rows][bi], rows[bi])
        sim_times.append(time.perf_counter() - t0)
    similar_s = statistics.median(sim_times)
    return {
        "n": n,
        "m": m,
        "occurring_combinations": int(sampler.codes.numel()),
        "build_s": build_s,
        "index_mb": index_mb,
        "draw_first_s": times[0],
        "draw_s": statistics.median(times[1:]),
        "pools_cached": sampler.n_pools,
        "cache_mb": cache_mb,
        "cache_clears": sampler.n_clears,
        "similar_build_s": similar_build_s,
        "similar_mb": similar_mb,
        "similar_s": similar_s,
        "data_mb": _mb(*x.values(), obs),
        "base_rss_mb": base,
        "peak_rss_mb": _peak_mb(),
    }


def run_epoch(n: int, m: int, args: argparse.Namespace) -> dict[str, Any]:
    """One full training epoch (every training sample once, retrieval on from the first step)
    through the library's data path (TensorSet, MultimodalDataModule's loader) and model, with
    a plain Adam loop (no validation or checkpoints, which are not what scales here). Prints
    its progress every ``--epoch-report`` steps (stderr) so a run stopped early still tells
    how far it got."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from moe_retriever.data.core import MultimodalData
    from moe_retriever.model import ModelConfig, MultimodalClassifier
    from moe_retriever.training.datamodule import MultimodalDataModule, TensorSet

    base = _peak_mb()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    obs = _observed(n, m, seed=0).numpy()
    X = {}
    for j in range(m):
        centers = rng.standard_normal((4, FEATURES)).astype(np.float32)
        v = centers[y] + 2.0 * rng.standard_normal((n, FEATURES), dtype=np.float32)
        v[~obs[:, j]] = np.nan
        X[f"m{j}"] = v
    data = MultimodalData(
        modalities=list(X),
        X=X,
        observed=obs,
        y=y,
        ids=np.arange(n).astype(str).astype(object),
        class_names=[f"c{c}" for c in range(4)],
        name="scaling",
    )
    ts = TensorSet.from_data(data)
    del data, X
    cfg = ModelConfig(n_tokens=2, dim=16, n_heads=2, head_hidden=16, encoder_hidden=16)
    model = MultimodalClassifier(
        {f"m{j}": FEATURES for j in range(m)},
        4,
        cfg,
        "moe-retriever",
        {"support_select": args.epoch_select},
        seed=0,
    )
    t0 = time.perf_counter()
    model.set_training_pool(ts.x, ts.observed)
    pool_s = time.perf_counter() - t0
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = MultimodalDataModule(ts, None, args.epoch_batch, seed=0).train_dataloader()
    n_steps = len(loader)
    seen = 0
    losses = []
    t0 = time.perf_counter()
    for step, batch in enumerate(loader):
        out = model(
            batch["x"], batch["observed"], batch["keys"], pool_index=batch["index"], y=batch["y"]
        )
        loss = F.cross_entropy(out.logits, batch["y"]) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += int(batch["index"].shape[0])
        losses.append(float(loss.detach()))
        if (step + 1) % args.epoch_report == 0 or step + 1 == n_steps:
            print(
                f"step {step + 1}/{n_steps}: {time.perf_counter() - t0:.0f} s, "
                f"peak RSS {_peak_mb():.0f} MB, loss {statistics.mean(losses[-50:]):.3f}",
                file=sys.stderr,
                flush=True,
            )
    epoch_s = time.perf_counter() - t0
    return {
        "n_train": n,
        "m": m,
        "features_per_modality": FEATURES,
        "missing_rate": MISSING,
        "batch": args.epoch_batch,
        "steps": n_steps,
        "samples_seen": seen,
        "support_select": args.epoch_select,
        "model": "P=2, D=16, moe-retriever C=8 S=4 top-k 4, retrieval_dropout 0.3",
        "pool_s": pool_s,
        "epoch_s": epoch_s,
        "loss_first_50": statistics.mean(losses[:50]),
        "loss_last_50": statistics.mean(losses[-50:]),
        "base_rss_mb": base,
        "peak_rss_mb": _peak_mb(),
    }


def _child(flag: str, n: int, m: int, passthrough: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, flag, str(n), str(m), *passthrough]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{flag} N={n} M={m} failed (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than 2 positive points)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(xs, ys) if a > 0 and b > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--m", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--batch", type=int, default=256, help="samples per draw batch")
    p.add_argument("--draws", type=int, default=10, help="timed draw batches after the first")
    p.add_argument("--similar-batch", type=int, default=64, help="samples per similar batch")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--epoch", action="store_true", help="also train one epoch at 10^6 x 16")
    p.add_argument("--epoch-n", type=int, default=1_000_000)
    p.add_argument("--epoch-m", type=int, default=16)
    p.add_argument("--epoch-batch", type=int, default=1024)
    p.add_argument("--epoch-select", default="random", choices=["random", "similar"])
    p.add_argument("--epoch-report", type=int, default=25, help="progress every n steps")
    p.add_argument("--skip-grid", action="store_true", help="only the epoch (keeps the grid)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument("--point", nargs=2, type=int, help=argparse.SUPPRESS)  # internal: N M
    p.add_argument("--epoch-point", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.point:
        print(json.dumps(run_point(args.point[0], args.point[1], args)))
        return {}
    if args.epoch_point:
        print(json.dumps(run_epoch(args.epoch_point[0], args.epoch_point[1], args)))
        return {}
    out = Path(args.out) if args.out else HERE / "results" / "scaling_cpu.json"
    passthrough = [
        "--batch", str(args.batch), "--draws", str(args.draws),
        "--similar-batch", str(args.similar_batch), "--threads", str(args.threads),
        "--epoch-batch", str(args.epoch_batch), "--epoch-select", args.epoch_select,
        "--epoch-report", str(args.epoch_report),
    ]  # fmt: skip
    report: dict[str, Any] = json.loads(out.read_text()) if args.skip_grid else {}
    if not args.skip_grid:
        rows = []
        for m in args.m:
            for n in args.n:
                row = _child("--point", n, m, passthrough)
                rows.append(row)
                print(
                    f"M={m:2d} N={n:8d}: {row['occurring_combinations']:6d} combinations | "
                    f"index {row['build_s']:.3f} s {row['index_mb']:.1f} MB | draw "
                    f"{row['draw_first_s'] * 1000:.0f} / {row['draw_s'] * 1000:.0f} ms, cache "
                    f"{row['cache_mb']:.1f} MB | similar {row['similar_build_s']:.2f} s "
                    f"{row['similar_mb']:.0f} MB, {row['similar_s'] * 1000:.0f} ms/batch | "
                    f"peak RSS {row['peak_rss_mb']:.0f} MB (base {row['base_rss_mb']:.0f})",
                    flush=True,
                )
        exps: dict[str, dict[str, float | None]] = {}
        for m in args.m:
            pts = [r for r in rows if r["m"] == m]
            ns = [float(r["n"]) for r in pts]
            exps[str(m)] = {
                k: slope(ns, [float(r[k]) for r in pts])
                for k in ("build_s", "index_mb", "similar_build_s", "similar_mb", "similar_s")
            }
            exps[str(m)]["rss_added_mb"] = slope(
                ns, [float(r["peak_rss_mb"] - r["base_rss_mb"]) for r in pts]
            )
            print(
                f"M={m:2d} exponents vs N: "
                + ", ".join(f"{k} {v:.2f}" for k, v in exps[str(m)].items() if v is not None)
            )
        report = {
            "rows": rows,
            "exponent_vs_n": exps,
            "config": {
                "features_per_modality": FEATURES,
                "missing_rate": MISSING,
                "draw_batch": args.batch,
                "draws": args.draws,
                "similar_batch": args.similar_batch,
                "threads": args.threads or "torch default",
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "command": "python benchmarks/scaling.py"
                + (" --epoch" if args.epoch else "")
                + (f" --threads {args.threads}" if args.threads else ""),
            },
        }
    if not args.epoch and out.exists() and "epoch" in (previous := json.loads(out.read_text())):
        report["epoch"] = previous["epoch"]  # a grid run keeps the last epoch measurement
    if args.epoch:
        ep = _child("--epoch-point", args.epoch_n, args.epoch_m, passthrough)
        ep["command"] = "python " + " ".join(["benchmarks/scaling.py", *sys.argv[1:]])
        report["epoch"] = ep
        print(
            f"epoch: N={ep['n_train']} M={ep['m']} ({ep['steps']} steps of {ep['batch']}, "
            f"{ep['support_select']} groups): {ep['epoch_s']:.0f} s, peak RSS "
            f"{ep['peak_rss_mb']:.0f} MB"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
