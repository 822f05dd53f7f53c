"""Typed options: turn YAML/CLI values into the types a dataclass or a constructor declares.

Used by the run configuration (:mod:`moe_retriever.training.config`) and by the part registries
(:mod:`moe_retriever.registry`), so that an ill-typed value is refused the same way everywhere:
one ``ValueError`` that names the key, the value and the expected type. Type validation and
conversion are pydantic's (``TypeAdapter`` in lax mode); this module only walks the dataclass
sections, so that an unknown key is reported with the valid keys of its section, and turns
pydantic's errors into one line.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError


def build_dataclass(cls: type, d: Any, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from mapping ``d`` (nested sections are dataclasses
    too); unknown keys and ill-typed values raise one-line ``ValueError``s."""
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


#: lax conversion as YAML and the command line need it ("3e-4" -> 3e-4, "true" -> True,
#: 32 -> "32" for a str option); dataclass sections refuse unknown keys
_PYDANTIC = ConfigDict(coerce_numbers_to_str=True, arbitrary_types_allowed=True)

#: what a pydantic error type means, in the words of our one-line messages
_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "a boolean (true/false)",
    "bool_type": "a boolean (true/false)",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
}


@functools.lru_cache(maxsize=512)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp, config=_PYDANTIC)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` validated and converted to type ``tp`` by pydantic (lax mode), or a one-line
    ``ValueError`` naming ``key``, the value and the expected type."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_dataclass(tp, value, key + ".")
    if typing.get_origin(tp) is dict and not isinstance(value, dict):
        raise ValueError(f"config key {key!r} must be a mapping, got {value!r}")
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "literal_error":
            expected = f"one of {list(typing.get_args(tp))}"
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            expected = _type_name(tp)
        else:
            expected = _EXPECTED.get(err["type"], _type_name(tp))
        raise ValueError(f"config key {key!r}: {value!r} is not {expected}") from None


__all__ = ["build_dataclass", "coerce"]
