"""``moe-retriever demo``: MoE-Retriever vs zero-fill on the embedded miniacc data set.

Both methods train on the same split with the same seeds (``configs/demo.yaml``: a smaller
model and schedule than the defaults, chosen so that 2 methods x 3 seeds finish in well under
3 minutes on 2 CPU cores), then a comparison table (mean ± std over seeds of each test metric)
is printed and written with the run folders and plots::

    runs/demo/
      comparison.md / comparison.json / comparison.png
      moe-retriever/   a run folder (see moe_retriever.training.runs)
      zero/            a run folder
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moe_retriever.training.config import TrainConfig, default_config_path
from moe_retriever.training.runs import (
    format_per_class,
    format_table,
    is_main_process,
    make_run_split,
    plot_comparison,
    train_run,
)

DEMO_DATASET = "miniacc"
DEMO_METHODS: tuple[str, ...] = ("moe-retriever", "zero")


def demo_config() -> TrainConfig:
    """The demo's configuration (``configs/demo.yaml`` shipped with the package)."""
    return TrainConfig.from_yaml(default_config_path("demo"))


def run_demo(
    out: str | Path = "runs/demo",
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = DEMO_METHODS,
    config: TrainConfig | None = None,
    log: bool = True,
) -> dict[str, Any]:
    """Train ``methods`` x ``seeds`` on miniacc; print and write the comparison."""
    from moe_retriever.datasets import load_dataset

    t0 = time.perf_counter()
    out = Path(out)
    say = print if (log and is_main_process()) else (lambda *a, **k: None)
    base = (config or demo_config()).copy()
    base.seeds = [int(s) for s in seeds]
    data = load_dataset(DEMO_DATASET)
    split = make_run_split(data, base)
    results: dict[str, Any] = {}
    for method in methods:
        run_dir = out / method
        if run_dir.exists() and is_main_process():
            if not (run_dir / "run.json").is_file() and any(run_dir.iterdir()):
                raise FileExistsError(
                    f"{str(run_dir)!r} exists and is not a run folder; choose another --out"
                )
            shutil.rmtree(run_dir)  # a previous demo run: start afresh
        cfg = base.copy()
        cfg.method = method
        results[method] = train_run(DEMO_DATASET, cfg, run_dir, data=data, split=split, log=log)
    elapsed = time.perf_counter() - t0
    table = format_table(results)
    per_class = format_per_class(results)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        summary = {
            "dataset": DEMO_DATASET,
            "seeds": base.seeds,
            "elapsed_seconds": elapsed,
            "methods": {m: r["test"] for m, r in results.items()},
            "per_class": {m: r["per_class"] for m, r in results.items()},
        }
        (out / "comparison.json").write_text(json.dumps(summary, indent=2))
        (out / "comparison.md").write_text(
            f"# {' vs '.join(methods)} on {DEMO_DATASET}, seeds {base.seeds}\n\n```\n{table}\n```\n"
            f"\n## Per class (test)\n\n```\n{per_class}\n```\n"
        )
        plot_comparison(results, out / "comparison.png")
    say("")
    say(f"test metrics on {DEMO_DATASET} (mean ± std over seeds {base.seeds}):")
    say(table)
    say("")
    say("per class (test recall and F1):")
    say(per_class)
    plots = [
        f
        for r in results.values()
        for seed in r.get("per_seed", {}).values()
        for f in seed.get("report_files", [])
        if str(f).endswith(".png")
    ]
    if plots:  # e.g. I2MoE's interaction weights, I2M2's expert shares
        say("\ninterpretation plots (test split, per seed):")
        for f in plots:
            say(f"  {f}")
    say(f"\nrun folders, plots and comparison.png in {out}/  ({elapsed:.0f} s)")
    return {"results": results, "table": table, "elapsed_seconds": elapsed}
