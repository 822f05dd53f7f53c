"""Typed options: turn YAML/CLI values into the types a dataclass or a constructor declares.

Used by the run configuration (:mod:`moe_retriever.training.config`) and by the part registries
(:mod:`moe_retriever.registry`), so that an ill-typed value is refused the same way everywhere:
one ``ValueError`` that names the key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal


def build_dataclass(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"config section {prefix[:-1] or '(top)'!r} must be a mapping")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        where = f" under {prefix[:-1]!r}" if prefix else ""
        raise ValueError(
            f"unknown config key {prefix + str(unknown[0])!r}; valid keys{where}: "
            f"{', '.join(names)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: coerce(v, hints[k], prefix + k) for k, v in d.items()}
    return cls(**kwargs)


def _is_instance(value: Any, tp: Any) -> bool:
    try:
        return isinstance(value, typing.get_origin(tp) or tp)
    except TypeError:
        return False


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` or a ``ValueError`` naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_dataclass(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        # exact type matches first so "auto" stays a str and true stays a bool
        ordered = sorted(
            (a for a in args if a is not type(None)),
            key=lambda a: 0 if _is_instance(value, a) else 1,
        )
        for a in ordered:
            try:
                return coerce(value, a, key)
            except ValueError:
                continue
        raise ValueError(f"config key {key!r}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"config key {key!r}: {value!r} is not one of {list(args)}")
    if origin is list:
        (item_tp,) = args or (Any,)
        if isinstance(value, tuple | list):
            return [coerce(v, item_tp, key) for v in value]
        return [coerce(value, item_tp, key)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ValueError(f"config key {key!r}: {value!r} is not a boolean (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r}: {value!r} is not an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r}: {value!r} is not a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"config key {key!r}: {value!r} is not a string")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f"config key {key!r}: {value!r} is not {_type_name(tp)}")
    return value


__all__ = ["build_dataclass", "coerce"]
