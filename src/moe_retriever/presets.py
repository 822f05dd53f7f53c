"""Methods as presets: a named combination of parts (completion + head, with their options).

``method: knn`` in a config, ``MoERetrieverClassifier(method="knn")`` and
``benchmark --methods knn`` all name a preset. Every registered completion method is a preset
of its own (that completion + the ``transformer`` head), so a new completion is usable by name
with nothing else to write; presets that combine parts differently (a head over some
completion, default options) are registered with :func:`register_preset`.

The config may name parts separately, overriding the preset's::

    method: moe-retriever
    completion: {name: knn, k: 3}   # another completion (its options only)
    head: {name: transformer}       # another head

Without ``name`` the section holds options of the preset's part, merged over the preset's own.
:func:`resolve_parts` returns the parts with their options checked against each part's typed
options (an unknown or ill-typed option is a one-line ``ValueError`` naming the valid ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import moe_retriever.completion
import moe_retriever.heads  # noqa: F401  (registers the built-in heads)
from moe_retriever.completion.base import COMPLETIONS
from moe_retriever.heads.base import HEADS


@dataclass(frozen=True)
class Preset:
    """A method: which completion and head, and their default options."""

    name: str
    completion: str
    head: str = "transformer"
    completion_options: dict[str, Any] = field(default_factory=dict)
    head_options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: why the method is slow at the defaults ("" = not slow); the benchmark's groups
    #: (``--methods all``...) leave a slow method out unless it is named
    slow: str = ""

    @property
    def kind(self) -> str:
        """``"completion"`` for a completion over the default head, ``"head"`` for a preset
        whose point is its head (i2m2, i2moe): the benchmark's ``kind`` column."""
        return "completion" if self.head == "transformer" else "head"


@dataclass(frozen=True)
class Parts:
    """The resolved parts of a method, options checked."""

    method: str
    completion: str
    completion_options: dict[str, Any]
    head: str
    head_options: dict[str, Any]


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Make ``preset.name`` a method name (config ``method``, estimator, ``benchmark``)."""
    if preset.name in _PRESETS and _PRESETS[preset.name] != preset:
        raise ValueError(f"preset {preset.name!r} registered twice")
    _PRESETS[preset.name] = preset
    return preset


def unregister_preset(name: str) -> None:
    _PRESETS.pop(name, None)


def get_preset(name: str) -> Preset:
    """The preset ``name``: a registered one, else a completion method with the default head."""
    if name in _PRESETS:
        return _PRESETS[name]
    if name in COMPLETIONS:
        return Preset(name, completion=name, description=f"{name} completion + transformer head")
    raise ValueError(f"unknown method {name!r}; known: {', '.join(list_presets())}")


def list_presets() -> list[str]:
    """Every method name: completion methods first, then the other presets."""
    comps = [n for n in COMPLETIONS.names() if n not in _PRESETS]
    return comps + sorted(_PRESETS)


def _split(section: dict[str, Any] | None, where: str) -> tuple[str | None, dict[str, Any]]:
    section = dict(section or {})
    name = section.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{where}.name must be a string, got {name!r}")
    return name, section


def resolve_parts(
    method: str,
    completion: dict[str, Any] | None = None,
    head: dict[str, Any] | None = None,
) -> Parts:
    """The parts of ``method`` after the config's ``completion`` / ``head`` sections."""
    preset = get_preset(method)
    c_name, c_opts = _split(completion, "completion")
    h_name, h_opts = _split(head, "head")
    if c_name is None or c_name == preset.completion:
        c_name, c_opts = preset.completion, {**preset.completion_options, **c_opts}
    if h_name is None or h_name == preset.head:
        h_name, h_opts = preset.head, {**preset.head_options, **h_opts}
    return Parts(
        method,
        c_name,
        COMPLETIONS.check_options(c_name, c_opts),
        h_name,
        HEADS.check_options(h_name, h_opts),
    )


def applicable_options(
    method: str, completion: dict[str, Any], head: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The subsets of ``completion`` / ``head`` options that ``method``'s parts take.

    For a benchmark running several methods with one config: ``completion: {k: 3}`` applies
    to every method whose completion has a ``k`` and is left out for the others. A section
    that names its part (``name: ...``) applies whole to every method."""
    parts = resolve_parts(method)
    out: list[dict[str, Any]] = []
    for section, part, reg in (
        (completion, parts.completion, COMPLETIONS),
        (head, parts.head, HEADS),
    ):
        if "name" in section:
            out.append(dict(section))
            continue
        valid = set(reg.option_names(part))
        out.append({k: v for k, v in section.items() if k in valid})
    return out[0], out[1]


def unused_options(
    methods: list[str], completion: dict[str, Any], head: dict[str, Any]
) -> list[str]:
    """Options (``completion.k``...) that none of ``methods`` takes: a typo, most likely."""
    used: set[str] = set()
    for m in methods:
        c, h = applicable_options(m, completion, head)
        used |= {f"completion.{k}" for k in c} | {f"head.{k}" for k in h}
    given = {f"completion.{k}" for k in completion} | {f"head.{k}" for k in head}
    return sorted(given - used)


# ---------------------------------------------------------------------------- built-in presets
# The fusion heads of SEED_METHODS.md run in masked mode by default (completion ``none``): the
# published methods impute nothing, and masked mode is where each head's missing-data design is
# exact (I2M2's output does not depend on a missing slot; I2MoE's reweighting sees the mask and
# its perturbations count only where the modality is observed). Another completion is a config
# away: ``method: i2moe`` + ``completion: {name: moe-retriever}`` ("completed" mode).
register_preset(
    Preset(
        "i2m2",
        completion="none",
        head="i2m2",
        description="I2M2: per-modality classifiers + a joint one, logits summed (masked mode)",
    )
)
register_preset(
    Preset(
        "i2moe",
        completion="none",
        head="i2moe",
        description="I2MoE: uniqueness/synergy/redundancy experts, reweighted (masked mode)",
        slow="at the defaults a step costs 23-38x a transformer head's (docs/RESULTS.md)",
    )
)


__all__ = [
    "Parts",
    "Preset",
    "applicable_options",
    "get_preset",
    "list_presets",
    "register_preset",
    "resolve_parts",
    "unregister_preset",
    "unused_options",
]
