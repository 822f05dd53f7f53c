"""``model.ensemble_k`` (TabM members in the head) against ``train.ensemble`` (N models).

On miniacc with the split and the mask fixed (``benchmarks/stability.py``'s machinery: one
split, one mask, only the model seed varies), trains model seeds ``--seeds`` for every
``model.ensemble_k`` in ``--ks`` and every ``train.ensemble`` in ``--ensembles`` (the library
defaults otherwise, one CPU thread) and writes per setting: mean and sd over the seeds of
test macro-F1, balanced accuracy, accuracy and AUROC; the median training-step time (forward,
backward and optimiser step of the steps with retrieval on, all members together) and the
mean fit time, both also relative to ``k = 1``. ``train.ensemble: 1`` is the ``k = 1`` model
itself and is not trained twice.

    OMP_NUM_THREADS=1 python benchmarks/ensemble_k.py --seeds 0 1 2 3 4

Writes ``--out`` (default ``benchmarks/results/ensemble_k_cpu.json``) after every seed, so an
interrupted run keeps what it measured; ``--resume`` skips settings already complete there.
Runs of seeds not in ``--seeds`` already stored for a setting are kept (add seeds later).
Processes measuring different settings (``--ks 1 4 --ensembles`` in one, ``--ks --ensembles 5``
in another) may share ``--out``: each keeps the others' entries.
Numbers and the choice of the default: docs/ENSEMBLE_K.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stability import run_one, sd

METRICS = ("macro_f1", "balanced_accuracy", "accuracy", "auroc")


@contextmanager
def step_timer(times: list[float]) -> Iterator[None]:
    """Record the wall time of every training step with retrieval on (from Lightning's
    ``on_train_batch_start`` to ``on_train_batch_end``: forward, backward, optimiser step)."""
    from moe_retriever.training.module import ClassifierModule

    start, end = ClassifierModule.on_train_batch_start, ClassifierModule.on_train_batch_end
    t0: list[float] = []

    def on_start(self: Any, batch: Any, batch_idx: int) -> None:
        start(self, batch, batch_idx)
        t0[:] = [time.perf_counter()]

    def on_end(self: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if t0 and self.retrieval_on():
            times.append(time.perf_counter() - t0[0])
        end(self, outputs, batch, batch_idx)

    ClassifierModule.on_train_batch_start = on_start  # type: ignore[method-assign]
    ClassifierModule.on_train_batch_end = on_end  # type: ignore[method-assign]
    try:
        yield
    finally:
        ClassifierModule.on_train_batch_start = start  # type: ignore[method-assign]
        ClassifierModule.on_train_batch_end = end  # type: ignore[method-assign]


def settings(ks: list[int], ensembles: list[int]) -> dict[str, dict[str, Any]]:
    out = {f"k={k}": {"model.ensemble_k": k} for k in ks}
    out.update({f"N={n}": {"train.ensemble": n} for n in ensembles if n > 1})
    return out


def entry(res: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """One setting: stability's summary plus all four metrics and the step time (median over
    the runs of each run's median step, ``runs[i]["step_s_median"]``). ``previous``: a stored
    entry of the same setting whose runs of other seeds are kept (seeds added in a later run).
    """
    runs = list(res["runs"])
    if previous is not None and previous.get("overrides") == res.get("overrides"):
        mine = {r["seed"] for r in runs}
        runs = sorted(
            [r for r in previous.get("runs", []) if r["seed"] not in mine] + runs,
            key=lambda r: r["seed"],
        )
    out = {k: v for k, v in res.items() if k != "runs"}
    out["seeds"] = [r["seed"] for r in runs]
    for m in METRICS:
        vals = [r[m] for r in runs]
        out[f"{m}_mean"], out[f"{m}_sd"] = statistics.fmean(vals), sd(vals)
    out["fit_s_mean"] = statistics.fmean(r["fit_s"] for r in runs)
    steps = [r["step_s_median"] for r in runs if "step_s_median" in r]
    out["step_s_median"] = statistics.median(steps) if steps else float("nan")
    out["runs"] = runs
    return out


def relative(results: dict[str, dict[str, Any]]) -> None:
    """Step and fit time relative to ``k=1`` (when measured)."""
    base = results.get("k=1")
    for r in results.values():
        if base is None:
            continue
        r["step_rel_k1"] = r["step_s_median"] / base["step_s_median"]
        r["fit_rel_k1"] = r["fit_s_mean"] / base["fit_s_mean"]
        r["macro_f1_sd_rel_k1"] = (
            r["macro_f1_sd"] / base["macro_f1_sd"] if base["macro_f1_sd"] > 0 else float("nan")
        )


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| setting | seeds | macro-F1 | bal. acc. | accuracy | AUROC | step ms | step / k=1 | "
        "fit s | fit / k=1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        cells = " | ".join(
            f"{100 * r[f'{m}_mean']:.1f} ± {100 * r[f'{m}_sd']:.2f}" for m in METRICS
        )
        lines.append(
            f"| {name} | {len(r['seeds'])} | {cells} | {1000 * r['step_s_median']:.1f} | "
            f"{r.get('step_rel_k1', float('nan')):.2f} | {r['fit_s_mean']:.1f} | "
            f"{r.get('fit_rel_k1', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def step_cost(ks: list[int], rounds: int, steps: int, batch_size: int = 16) -> dict[str, Any]:
    """Training-step time on miniacc batches (retrieval and self-supervision on, library
    defaults), one model per ``k`` plus ``batch x k``: the single model on k times the batch,
    what BatchEnsemble in the encoders would at least cost (every part downstream, retrieval
    included, then runs once per member). Rounds are interleaved (each setting ``steps``
    steps per round) so a slow moment of a shared machine hits all alike; median per step."""
    from moe_retriever.benchmark.harness import benchmark_config, prepare_run
    from moe_retriever.data.preprocessing import Preprocessor
    from moe_retriever.data.splits import apply_split
    from moe_retriever.datasets import load_dataset
    from moe_retriever.heads.ensemble import member_targets
    from moe_retriever.training.datamodule import TensorSet
    from moe_retriever.training.module import build_model

    data = load_dataset("miniacc")
    cfg = benchmark_config()
    split, masked, _ = prepare_run(data, 0.0, 0, cfg.data.val_fraction, cfg.data.test_fraction)
    train = apply_split(masked, split)[0]
    pre = Preprocessor(log1p=cfg.data.log1p, standardize=cfg.data.standardize).fit(train)
    t = TensorSet.from_data(pre.transform(train))
    n = len(t)

    def setup(k: int, batch: int) -> tuple[Any, Any, int]:
        c = benchmark_config()
        c.model.ensemble_k = k
        torch.manual_seed(0)
        model = build_model(c, train.dims, train.n_classes, seed=0)
        model.set_training_pool(t.pool_x(), t.observed)
        model.train()
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), batch

    runs = {f"k={k}": setup(k, batch_size) for k in ks}
    runs.update({f"batch x {k}": setup(1, batch_size * k) for k in ks if k > 1 and k <= 8})
    times: dict[str, list[float]] = {name: [] for name in runs}
    g = torch.Generator().manual_seed(0)
    for _ in range(rounds):
        for name, (model, opt, batch) in runs.items():
            for _ in range(steps):
                idx = torch.randint(0, n, (batch,), generator=g)
                b = t.batch(idx)
                t0 = time.perf_counter()
                out = model(b["x"], b["observed"], b["keys"], pool_index=b["index"], y=b["y"])
                z = out.member_logits
                ce = (
                    torch.nn.functional.cross_entropy(out.logits, b["y"])
                    if z is None
                    else torch.nn.functional.cross_entropy(
                        z.flatten(0, 1), member_targets(b["y"], z.shape[1])
                    )
                )
                opt.zero_grad()
                (ce + out.aux_loss).backward()
                opt.step()
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[f"k={ks[0]}"])
    return {
        name: {
            "step_ms": 1000 * statistics.median(v),
            "rel_first": statistics.median(v) / base,
            "parameters": sum(p.numel() for p in runs[name][0].parameters()),
        }
        for name, v in times.items()
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(5)))
    p.add_argument("--ks", nargs="*", type=int, default=[1, 4, 8, 16, 32])
    p.add_argument("--ensembles", nargs="*", type=int, default=[1, 5])
    p.add_argument("--split-seed", type=int, default=0, help="seed of the split and the mask")
    p.add_argument("--out", default="benchmarks/results/ensemble_k_cpu.json")
    p.add_argument("--resume", action="store_true", help="skip settings complete in --out")
    p.add_argument(
        "--step-cost",
        action="store_true",
        help="only the interleaved step-cost measurement (to --out's name + _step_cost.json)",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.step_cost:
        cost = step_cost(args.ks, args.rounds, args.steps)
        for name, c in cost.items():
            print(
                f"{name}: {c['step_ms']:.1f} ms/step ({c['rel_first']:.2f} x), "
                f"{c['parameters']} parameters",
                flush=True,
            )
        out = Path(args.out)
        out = out.with_name(out.stem + "_step_cost.json")
        doc = {
            "command": "python benchmarks/ensemble_k.py " + " ".join(argv or sys.argv[1:]),
            "torch": torch.__version__,
            "threads": 1,
            "rounds": args.rounds,
            "steps": args.steps,
            "settings": cost,
        }
        out.write_text(json.dumps(doc, indent=1))
        return
    out = Path(args.out)
    results: dict[str, dict[str, Any]] = {}
    if out.exists():
        results = json.loads(out.read_text())["results"]

    def save() -> None:
        # re-read: runs of other settings in parallel processes write the same file
        if out.exists():
            stored = json.loads(out.read_text())["results"]
            results.update({k: v for k, v in stored.items() if k not in mine})
        relative(results)
        out.parent.mkdir(parents=True, exist_ok=True)
        commands = json.loads(out.read_text()).get("commands", []) if out.exists() else []
        command = "python benchmarks/ensemble_k.py " + " ".join(argv or sys.argv[1:])
        doc = {
            "commands": commands + [command] * (command not in commands),
            "dataset": "miniacc",
            "torch": torch.__version__,
            "threads": 1,
            "note": "train.ensemble N=1 is the k=1 model",
        }
        out.write_text(json.dumps({**doc, "results": results}, indent=1))

    mine: set[str] = set()
    for name, overrides in settings(args.ks, args.ensembles).items():
        mine.add(name)
        done = results.get(name, {})
        if args.resume and done.get("complete") and done.get("seeds") == args.seeds:
            continue
        steps: list[float] = []
        previous = results.get(name)
        seen = [0]  # steps of the runs stored so far

        def store(
            res: dict[str, Any],
            name: str = name,
            steps: list[float] = steps,
            previous: dict[str, Any] | None = previous,
            seen: list[int] = seen,
        ) -> None:
            mine = steps[seen[0] :]
            res["runs"][-1]["step_s_median"] = statistics.median(mine) if mine else math.nan
            res["runs"][-1]["steps"] = len(mine)
            seen[0] = len(steps)
            results[name] = entry(res, previous)
            save()

        with step_timer(steps):
            run_one("miniacc", name, overrides, args.seeds, args.split_seed, on_seed=store)
        print(table(results), flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
