"""Human-readable text for ``moe-retriever data describe`` (the JSON comes from ``describe``)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_description"]

#: at most this many observed-modality combinations are listed; the rest are summed
MAX_COMBINATIONS = 30


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def format_description(summary: dict[str, Any]) -> str:
    """A plain-text report of a :meth:`MultimodalData.describe` summary.

    Sections: totals (samples, complete, empty), classes with counts, one row per modality
    (dimension, observed count and share) and the observed-combination table, where each
    modality is a column marked ``x`` when observed.
    """
    n = int(summary["n_samples"])
    mods: dict[str, dict[str, int]] = summary["modalities"]
    names = list(mods)
    lines = [f"dataset: {summary.get('name', 'data')}"]
    lines.append(
        f"samples: {n}   complete (all {len(names)} modalities): {summary['n_complete']}"
        f"   with none observed: {summary.get('n_empty', 0)}"
    )
    classes = summary.get("classes")
    if classes:
        lines += ["", f"classes ({len(classes)}):"]
        rows = [[c, str(k), f"{100 * k / max(n, 1):.1f}%"] for c, k in classes.items()]
        lines += ["  " + s for s in _table(["class", "samples", "share"], rows, {1, 2})]
    else:
        lines += ["", "classes: unlabelled"]
    lines += ["", f"modalities ({len(names)}):"]
    rows = [
        [
            f"m{i}",
            m,
            str(v["dim"]),
            str(v["n_observed"]),
            f"{100 * v['n_observed'] / max(n, 1):.1f}%",
        ]
        for i, (m, v) in enumerate(mods.items())
    ]
    lines += [
        "  " + s for s in _table(["key", "modality", "dim", "observed", "share"], rows, {2, 3, 4})
    ]
    combos = summary["combinations"]
    lines += ["", f"observed combinations ({len(combos)}; x = observed):"]
    header = ["count", *[f"m{i}" for i in range(len(names))]]
    rows = []
    for c in combos[:MAX_COMBINATIONS]:
        present = set(c["modalities"])
        rows.append([str(c["count"]), *["x" if m in present else "." for m in names]])
    lines += ["  " + s for s in _table(header, rows, {0})]
    if len(combos) > MAX_COMBINATIONS:
        rest = sum(int(c["count"]) for c in combos[MAX_COMBINATIONS:])
        lines.append(f"  ... {len(combos) - MAX_COMBINATIONS} more combinations, {rest} samples")
    return "\n".join(lines)
