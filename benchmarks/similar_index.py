"""Similar supporting groups from the faiss index vs today's exact selection (issue 24).

Generated data as in ``scaling.py`` (``--n`` training rows, ``--modalities`` modalities of 8
features, each (row, modality) missing with probability 0.5, at least one observed), batches of
``--batch`` training rows in training mode (each missing pair excludes its own row), one
thread for torch and faiss. For the same batches:

* ``ms_per_batch``: :func:`moe_retriever.completion.support.index.select_similar` over the
  :class:`~moe_retriever.completion.support.index.SimilarIndex` (``--kind``, default auto);
* ``exact_ms_per_batch``: the selection before the index (one (samples x N) similarity matrix
  per batch, cosine over the concatenated standardized inputs, :class:`ConcatSimilarSelector` at
  ``support_select="similar"`` before issue 24);
* ``recall_at_k``: overlap of the index's groups with the EXACT groups of the same similarity
  (sum of per-modality cosines over the sample's observed modalities, pool members only),
  computed by brute force over all N rows in torch;
* ``overlap_with_concat_cosine``: overlap of the index's groups with the old selection's groups
  (the change of definition, not an error of the index).

Medians over ``--batches`` batches (at least 5). Writes JSON (``--json``).

    python benchmarks/similar_index.py --n 1000000 --modalities 16 --json OUT
    python benchmarks/similar_index.py --n 1000000 --modalities 4 --kind ivf --json OUT
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import FEATURES, MISSING, _observed

from moe_retriever.completion.base import TrainingPool
from moe_retriever.completion.support import (
    ConcatSimilarSelector,
    SupportingGroupSampler,
    combination_codes,
    top_k_stable,
)
from moe_retriever.completion.support.index import SimilarIndex, select_similar


def exact_groups(
    index: SimilarIndex,
    x: dict[str, torch.Tensor],
    rows: torch.Tensor,
    b: torch.Tensor,
    t: torch.Tensor,
    codes: torch.Tensor,
    k: int,
    z: torch.Tensor,
) -> list[set[int]]:
    """Brute force: every pair's k best pool members by the sum of per-modality cosines."""
    q = torch.from_numpy(index.queries(x, rows[b], codes.numpy()))
    score = q @ z.T  # (pairs, N)
    all_codes = torch.from_numpy(index.codes)
    need = codes | (1 << t)
    member = (all_codes[None, :] & need[:, None]) == need[:, None]
    member[torch.arange(len(b)), rows[b]] = False
    score.masked_fill_(~member, -torch.inf)
    top = top_k_stable(score, k)
    ok = score.gather(1, top) > -torch.inf
    return [set(r[o].tolist()) for r, o in zip(top, ok, strict=True)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="training rows (default 10^6)")
    p.add_argument("--modalities", type=int, default=16, help="modalities (default 16)")
    p.add_argument("--batch", type=int, default=64, help="samples per batch (default 64)")
    p.add_argument("--batches", type=int, default=7, help="measured batches (>= 5, default 7)")
    p.add_argument("--k", type=int, default=5, help="group size (default 5, the library's)")
    p.add_argument("--kind", default="auto", choices=["auto", "exact", "ivf"])
    p.add_argument("--nprobe", type=int, default=None, help="ivf: cells probed per query")
    p.add_argument("--no-exact", action="store_true", help="skip today's exact selection")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.batches < 5:
        p.error("--batches must be at least 5")
    import faiss

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    n, M, k = args.n, args.modalities, args.k
    obs = _observed(n, M, seed=0)
    g = torch.Generator().manual_seed(1)
    x = {f"m{j}": torch.randn(n, FEATURES, generator=g) * obs[:, j, None] for j in range(M)}
    t0 = time.perf_counter()
    index = SimilarIndex(x, obs, kind=args.kind, nprobe=args.nprobe)
    build_s = time.perf_counter() - t0
    print(f"{index}: built in {build_s:.1f} s, mean candidate set {index.mean_scan:.0f} rows")
    # the unit-block vectors for the brute-force reference (rebuilt here, not read from faiss)
    z = torch.from_numpy(index.queries(x, torch.arange(n), index.codes))
    old = sampler = None
    if not args.no_exact:
        pool = TrainingPool(list(x), x, obs)
        sampler = SupportingGroupSampler(obs, k=k, seed=0)
        old = ConcatSimilarSelector(pool)
    codes_all = combination_codes(obs)
    times: list[float] = []
    old_times: list[float] = []
    hit = tot = ov = 0
    pairs = []
    for _ in range(args.batches + 1):  # the first batch warms up and is not timed
        rows = torch.randint(0, n, (args.batch,), generator=g)
        b, t = (~obs[rows]).nonzero(as_tuple=True)
        codes = codes_all[rows][b]
        xb = {m: v[rows] for m, v in x.items()}
        t0 = time.perf_counter()
        got = select_similar(index, xb, b, t, codes, k, exclude=rows[b])
        times.append(time.perf_counter() - t0)
        if old is not None and sampler is not None:
            t0 = time.perf_counter()
            draw = old.select(sampler, xb, b, t, codes, rows[b])
            old_times.append(time.perf_counter() - t0)
            for p_, (r, mk) in enumerate(zip(draw.index, draw.mask, strict=True)):
                ov += len(set(r[mk].tolist()) & set(got.rows[p_][got.rows[p_] >= 0].tolist()))
        ref = exact_groups(index, x, rows, b, t, codes, k, z)
        for p_, want in enumerate(ref):
            hit += len(want & set(got.rows[p_][got.rows[p_] >= 0].tolist()))
            tot += len(want)
        pairs.append(int(b.numel()))
    out: dict[str, Any] = {
        "n": n,
        "modalities": M,
        "features_per_modality": FEATURES,
        "missing_rate": MISSING,
        "batch": args.batch,
        "k": k,
        "batches": args.batches,
        "pairs_per_batch": statistics.median(pairs[1:]),
        "threads": 1,
        "kind": index.kind,
        "n_lists": len(index.list_keys),
        "n_cells": index.n_cells,
        "nprobe": index.nprobe,
        "mean_candidate_rows": index.mean_scan,
        "build_s": build_s,
        "index_mb": index.nbytes / 2**20,
        "ms_per_batch": 1000 * statistics.median(times[1:]),
        "ms_per_batch_all": [1000 * v for v in times[1:]],
        "exact_ms_per_batch": 1000 * statistics.median(old_times[1:]) if old_times else None,
        "recall_at_k": hit / max(tot, 1),
        "overlap_with_concat_cosine": ov / max(tot, 1) if old is not None else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
    }
    print(
        f"N={n} M={M}: index {out['ms_per_batch']:.1f} ms/batch of {args.batch} "
        f"({out['pairs_per_batch']} pairs), today's exact "
        + (f"{out['exact_ms_per_batch']:.0f} ms" if old_times else "skipped")
        + f"; recall@{k} {out['recall_at_k']:.4f}"
        + (
            f", overlap with the concatenated cosine {out['overlap_with_concat_cosine']:.3f}"
            if old is not None
            else ""
        )
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
