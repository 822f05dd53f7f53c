"""Global views of per-sample head weights (I2MoE's interaction weights, I2M2's expert shares).

A head that exports one weight per expert and sample, (N, K), summarises it over an evaluation
set with :func:`weight_summary`: the mean weight of every expert overall, per true class and per
observed combination (the samples' ``observed`` rows). Per-group means are plain means of the
rows in the group, so the group means weighted by their counts average back to the overall mean
(SEED_METHODS.md 2.9, item 9). :func:`write_weight_report` writes the summary as JSON, a
markdown table and one bar plot (matplotlib, Agg backend).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def combination_name(row: Tensor | np.ndarray, modalities: list[str]) -> str:
    """``"rna+protein"``: the observed modalities of one ``observed`` row, in model order."""
    return "+".join(m for m, o in zip(modalities, row.tolist(), strict=True) if o)


def _mean(values: Tensor) -> list[float]:
    return [float(v) for v in values.double().mean(dim=0)]


def weight_summary(
    weights: Tensor,
    experts: list[str],
    modalities: list[str],
    y: Tensor | None,
    observed: Tensor,
) -> dict[str, Any]:
    """``{"experts", "overall": {"weights", "n"}, "per_class": {c: ...},
    "per_combination": {combo: ...}}`` from ``weights`` (N, K); ``y`` (N,) class indices or
    None (no per-class view); ``observed`` (N, M) bool. Classes and combinations with no sample
    are left out."""
    w = torch.as_tensor(weights).detach().cpu()
    if w.dim() != 2 or w.shape[1] != len(experts):
        raise ValueError(f"weights must be (N, {len(experts)}), got {tuple(w.shape)}")
    obs = torch.as_tensor(observed).cpu().bool()
    if obs.shape != (w.shape[0], len(modalities)):
        raise ValueError(
            f"observed must be ({w.shape[0]}, {len(modalities)}), got {tuple(obs.shape)}"
        )
    out: dict[str, Any] = {
        "experts": list(experts),
        "overall": {"weights": _mean(w), "n": int(w.shape[0])},
        "per_class": {},
        "per_combination": {},
    }
    if y is not None:
        labels = torch.as_tensor(y).cpu().long()
        for c in sorted(set(labels.tolist())):
            rows = labels == c
            out["per_class"][str(c)] = {"weights": _mean(w[rows]), "n": int(rows.sum())}
    combos: dict[str, list[int]] = {}
    for i, row in enumerate(obs):
        combos.setdefault(combination_name(row, modalities), []).append(i)
    for combo in sorted(combos, key=lambda c: (-len(combos[c]), c)):
        idx = torch.tensor(combos[combo])
        out["per_combination"][combo] = {"weights": _mean(w[idx]), "n": int(idx.numel())}
    return out


def _markdown(summary: dict[str, Any], title: str) -> str:
    experts = summary["experts"]
    lines = [f"# {title}", "", "| group | n | " + " | ".join(experts) + " |"]
    lines.append("|---|---:|" + "---:|" * len(experts))

    def row(label: str, entry: dict[str, Any]) -> None:
        cells = " | ".join(f"{v:.3f}" for v in entry["weights"])
        lines.append(f"| {label} | {entry['n']} | {cells} |")

    row("overall", summary["overall"])
    for c, entry in summary["per_class"].items():
        row(f"class {c}", entry)
    for combo, entry in summary["per_combination"].items():
        row(f"observed {combo}", entry)
    return "\n".join(lines) + "\n"


def write_weight_report(
    summary: dict[str, Any], out_dir: Path, stem: str, title: str, ylabel: str
) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` (bars: the experts' mean weights
    overall, per class, per observed combination) under ``out_dir``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md, png = (out_dir / f"{stem}{ext}" for ext in (".json", ".md", ".png"))
    js.write_text(json.dumps(summary, indent=2))
    md.write_text(_markdown(summary, title))

    experts = summary["experts"]
    panels = [("overall", {"all": summary["overall"]})]
    if summary["per_class"]:
        panels.append(("per class", {f"class {c}": e for c, e in summary["per_class"].items()}))
    if summary["per_combination"]:
        panels.append(("per observed combination", summary["per_combination"]))
    if len(panels) == 3 and len(panels[2][1]) > 8:  # the 8 most frequent combinations
        top = sorted(panels[2][1].items(), key=lambda kv: -kv[1]["n"])[:8]
        panels[2] = (
            f"per observed combination (8 most frequent of {len(panels[2][1])})",
            dict(top),
        )
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4 + 3.8 * (len(panels) - 1), 4.2), squeeze=False
    )
    for ax, (name, groups) in zip(axes[0], panels, strict=True):
        labels = list(groups)
        width = 0.8 / len(experts)
        x = np.arange(len(labels))
        for k, expert in enumerate(experts):
            vals = [groups[g]["weights"][k] for g in labels]
            ax.bar(x + (k - (len(experts) - 1) / 2) * width, vals, width, label=expert)
        ax.set_xticks(x)
        # combination names stacked one modality per line, so neighbours do not overlap
        ticks = [f"{g.replace('+', chr(10))}\n(n={groups[g]['n']})" for g in labels]
        ax.set_xticklabels(ticks, fontsize=6)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(ylabel)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(experts), 7), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return [js, md, png]


__all__ = ["combination_name", "weight_summary", "write_weight_report"]
