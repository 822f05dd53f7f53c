"""Peak memory of reading a 10,000-scan ADNI image array, against its size on disk (issue 15).

Writes an ADNI-layout folder under /tmp with ``image/ADNI_G.npy`` of ``--scans`` rows x
``--voxels`` float32 columns (written in chunks, never held whole), ``ADNI_subj.txt`` (some
subjects scanned more than once), ``label.csv``, ``PTID_splits.json`` and a small clinical
table, then measures the peak resident memory (``ru_maxrss``) of fresh child processes, each
doing one stage (peak = ``VmHWM`` of ``/proc/self/status``):

* ``import``: import the package, numpy, pandas and torch (the floor every stage pays);
* ``read``: ``read_adni_layout(root, ["image", "clinical"])`` (which reads every image row
  once to refuse infinite values);
* ``epoch``: read, split by the splits file, fit the preprocessor on the training part (image
  statistics chunk by chunk), transform, build the training ``TensorSet`` and draw one epoch
  of batches of 16 through the data loader (every training image row read once more). The
  model's training pool (which keeps the training rows of every modality in memory for
  retrieval) is not part of this measurement.

The folder is deleted at the end. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout_memory.py
    .venv/bin/python benchmarks/layout_memory.py --scans 2000 --voxels 20000   # quick

JSON: ``benchmarks/results/layout_memory_cpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_folder(root: Path, scans: int, voxels: int, seed: int = 0) -> dict[str, Any]:
    """An ADNI-layout folder with a big image array; returns sizes and timings."""
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True)
    (root / "clinical").mkdir()
    n_subj = int(scans * 0.6)
    ptids = [f"{(i % 900) + 2:03d}_S_{i:05d}" for i in range(n_subj)]
    owner = np.concatenate([np.arange(n_subj), rng.integers(0, n_subj, scans - n_subj)])
    rng.shuffle(owner)
    t0 = time.perf_counter()
    # written with plain file writes: a writable memory map would leave the whole file resident
    # in this process, and a child started from it inherits its peak (ru_maxrss survives exec)
    chunk = max(1, (64 << 20) // (4 * voxels))  # 64 MB per write
    with open(root / "image" / "ADNI_G.npy", "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (scans, voxels)}
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, scans, chunk):
            stop = min(scans, start + chunk)
            f.write(rng.standard_normal((stop - start, voxels), dtype=np.float32).tobytes())
    write_s = time.perf_counter() - t0
    lines = [
        f"{ptids[o]}_MR_MPRAGE_{k:05d}_{2005 + (k % 15)}-{1 + k % 12:02d}-{1 + k % 28:02d}"
        for k, o in enumerate(owner)
    ]
    (root / "image" / "ADNI_subj.txt").write_text("\n".join(lines) + "\n")
    y = rng.integers(1, 4, n_subj)
    with open(root / "label.csv", "w") as f:
        f.write("PTID,DIAGNOSIS\n" + "".join(f"{p},{d}\n" for p, d in zip(ptids, y)))
    order = rng.permutation(n_subj)
    n_tr, n_va = int(0.6 * n_subj), int(0.2 * n_subj)
    split = {
        "training": [ptids[i] for i in order[:n_tr]],
        "validation": [ptids[i] for i in order[n_tr : n_tr + n_va]],
        "testing": [ptids[i] for i in order[n_tr + n_va :]],
    }
    (root / "PTID_splits.json").write_text(json.dumps(split))
    clinical = rng.normal(size=(n_subj, 5)).round(4)
    with open(root / "clinical" / "clinical_merged.csv", "w") as f:
        f.write("PTID,a,b,c,d,e\n")
        f.writelines(f"{p},{','.join(map(str, row))}\n" for p, row in zip(ptids, clinical))
    size = (root / "image" / "ADNI_G.npy").stat().st_size
    return {"n_subjects": n_subj, "file_bytes": size, "write_seconds": round(write_s, 1)}


def peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` (reset by exec, unlike
    ``ru_maxrss``, which a child inherits from the process it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(stage: str, root: str) -> None:
    """One stage in this (fresh) process; prints its peak RSS and seconds as JSON."""
    t0 = time.perf_counter()
    import pandas  # noqa: F401
    import torch

    from moe_retriever.data.layouts import layout_split, read_adni_layout
    from moe_retriever.data.preprocessing import Preprocessor
    from moe_retriever.data.splits import apply_split
    from moe_retriever.training.datamodule import TensorSet, eval_loader

    out: dict[str, Any] = {"stage": stage}
    if stage in ("read", "epoch"):
        data = read_adni_layout(root, ["image", "clinical"])
        out["n_samples"] = data.n_samples
        out["n_image_observed"] = int(data.observed[:, 0].sum())
    if stage == "epoch":
        split = layout_split(data)
        assert split is not None
        train, _, _ = apply_split(data, split)
        pre = Preprocessor(log1p=False).fit(train)
        tensors = TensorSet.from_data(pre.transform(train))
        total, n_batches = 0.0, 0
        for batch in eval_loader(tensors, batch_size=16):
            total += float(batch["x"]["image"].sum())
            n_batches += 1
        out["n_batches"] = n_batches
        out["checksum_finite"] = bool(np.isfinite(total))
        del torch
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_bytes"] = peak_rss()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scans", type=int, default=10_000)
    ap.add_argument("--voxels", type=int, default=200_000, help="gray-matter voxels per scan")
    ap.add_argument("--out", default="benchmarks/results/layout_memory_cpu.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.root)
        return
    tmp = Path(tempfile.mkdtemp(prefix="layout-memory-", dir="/tmp"))
    try:
        info = write_folder(tmp / "adni", args.scans, args.voxels)
        print(
            f"wrote {args.scans} scans x {args.voxels} voxels: "
            f"{info['file_bytes'] / 2**30:.2f} GiB on disk in {info['write_seconds']} s"
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        stages = {}
        for stage in ("import", "read", "epoch"):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", stage, "--root", str(tmp / "adni")],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            stages[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
            peak = stages[stage]["peak_rss_bytes"]
            print(
                f"{stage:>6}: peak RSS {peak / 2**20:8.1f} MiB "
                f"({peak / info['file_bytes']:.3f} x the file), {stages[stage]['seconds']} s"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = info["file_bytes"]
    result = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layout_memory.py "
        f"--scans {args.scans} --voxels {args.voxels}",
        "scans": args.scans,
        "voxels": args.voxels,
        **info,
        "stages": stages,
        "peak_rss_over_file": {k: v["peak_rss_bytes"] / size for k, v in stages.items()},
        "read_minus_import_bytes": stages["read"]["peak_rss_bytes"]
        - stages["import"]["peak_rss_bytes"],
        "epoch_minus_import_bytes": stages["epoch"]["peak_rss_bytes"]
        - stages["import"]["peak_rss_bytes"],
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
