"""One registry style for every part of the model: encoders, completion methods, heads.

A part is a class; registering it makes it available by name::

    from moe_retriever.heads import Head, register_head

    @register_head
    class MyHead(Head):
        name = "my-head"
        def __init__(self, modalities, n_tokens, dim, n_classes, arch, scale: float = 1.0): ...

    create_head("my-head", mods, P, D, C, arch, scale=2.0)

The part's **options** are the keyword parameters of its constructor after the structural ones
(modalities, sizes...), with their annotations and defaults: :meth:`Registry.options` turns
them into a dataclass, so the constructor is the single source of truth, as jsonargparse and
timm's ``create_model`` do. :meth:`Registry.check_options` refuses an unknown option (naming the
valid ones) and an ill-typed value (naming the expected type) before anything is built, and
coerces YAML/CLI values (``"3"`` for an ``int``).

A name may also be an import path, ``"mypackage.encoders:MyEncoder"``: the class is imported
and must subclass the registry's base class; it then behaves like a registered part (options
checked the same way). Importing runs that module's top-level code, so a config naming an
import path is code, exactly like the Python script that would otherwise use the class.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
import typing
from typing import Any, Generic, TypeVar

from moe_retriever.options import coerce

T = TypeVar("T")


def is_import_path(name: str) -> bool:
    """``"pkg.module:Class"``: a module path, one colon, an attribute name."""
    return isinstance(name, str) and name.count(":") == 1 and all(name.split(":"))


def import_object(path: str) -> Any:
    """The object named by ``"pkg.module:attr"``, with one-line errors."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} (from {path!r}): {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names -> classes of one kind of part, with typed options taken from the constructors.

    ``kind``: what the parts are called in messages ("completion method", "head"...);
    ``base``: the class every part derives from; ``fixed``: how many positional constructor
    parameters (after ``self``) are structural and not options.
    """

    def __init__(self, kind: str, base: type[T], fixed: int) -> None:
        self.kind = kind
        self.base = base
        self.fixed = fixed
        self._classes: dict[str, type[T]] = {}
        self._options: dict[type, type] = {}

    # ------------------------------------------------------------------ registering
    def register(self, cls: type[T] | None = None, *, name: str | None = None) -> Any:
        """Class decorator (``@reg.register`` or ``@reg.register(name="x")``); the name
        defaults to the class attribute ``name``. Options are checked at registration, so a
        constructor that cannot be described (``**kwargs``, unannotated) fails here."""

        def deco(c: type[T]) -> type[T]:
            key = name or getattr(c, "name", "")
            if not key:
                raise ValueError(f"{c.__name__} has no name: set the class attribute `name`")
            if not (isinstance(c, type) and issubclass(c, self.base)):
                raise TypeError(f"{c!r} is not a subclass of {self.base.__name__}")
            if key in self._classes and self._classes[key] is not c:
                raise ValueError(f"{self.kind} name {key!r} registered twice")
            self.options(c)  # fails early on constructors we cannot type
            self._classes[key] = c
            return c

        return deco(cls) if cls is not None else deco

    def unregister(self, name: str) -> None:
        """Remove a name (tests that register toy parts clean up with this)."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, or imported from ``"pkg.module:Class"``."""
        if name in self._classes:
            return self._classes[name]
        if is_import_path(name):
            obj = import_object(name)
            if not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise ValueError(
                    f"{name!r} is not an {self.kind} class: it must be a subclass of "
                    f"{self.base.__module__}.{self.base.__name__}"
                )
            self.options(obj)
            return obj
        raise ValueError(
            f"unknown {self.kind} {name!r}; known: {', '.join(self.names())} "
            "(or an import path 'package.module:Class')"
        )

    def options(self, name_or_cls: str | type[T]) -> type:
        """The options dataclass of a part: its constructor's keyword parameters after the
        structural ones, with their annotations and defaults."""
        cls = self.get(name_or_cls) if isinstance(name_or_cls, str) else name_or_cls
        if cls in self._options:
            return self._options[cls]
        init = cls.__init__  # type: ignore[misc]
        sig = inspect.signature(init)
        params = list(sig.parameters.values())[1 + self.fixed :]
        try:
            hints = typing.get_type_hints(init)
        except Exception as exc:
            raise TypeError(f"{cls.__name__}: cannot read constructor annotations: {exc}") from None
        fields: list[tuple[str, Any, Any]] = []
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(
                    f"{self.kind} {cls.__name__} takes *{p.name}: list its options as typed "
                    "keyword parameters so that unknown ones can be refused"
                )
            if p.default is p.empty:
                raise TypeError(f"{self.kind} {cls.__name__}: option {p.name!r} needs a default")
            tp = hints.get(p.name, Any)
            default = p.default
            if isinstance(default, list | dict | set):
                # each options object gets its own copy: a shared mutable default would leak
                # one instance's changes into the next
                factory = functools.partial(copy.deepcopy, default)
                fields.append((p.name, tp, dataclasses.field(default_factory=factory)))
            else:
                fields.append((p.name, tp, dataclasses.field(default=default)))
        opts = dataclasses.make_dataclass(f"{cls.__name__}Options", fields)
        opts.__doc__ = f"Options of the {self.kind} {cls.__name__} (from its constructor)."
        self._options[cls] = opts
        return opts

    def option_names(self, name: str) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options(name))]

    def defaults(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(self.options(name)())

    def check_options(self, name: str, options: dict[str, Any] | None) -> dict[str, Any]:
        """``options`` checked against the part's typed options and coerced; an unknown or
        ill-typed option raises ``ValueError`` naming the part and the valid options."""
        opts = self.options(name)
        fields = {f.name: f for f in dataclasses.fields(opts)}
        hints = typing.get_type_hints(opts)
        out: dict[str, Any] = {}
        for key, value in (options or {}).items():
            if key not in fields:
                valid = ", ".join(fields) or "(none)"
                raise ValueError(
                    f"{self.kind} {name!r} has no option {key!r}; valid options: {valid}"
                )
            out[key] = coerce(value, hints.get(key, Any), f"{name}.{key}")
        return out

    def create(self, name: str, *args: Any, **options: Any) -> T:
        """Build part ``name`` from its structural arguments and checked options."""
        cls = self.get(name)
        return cls(*args, **self.check_options(name, options))


def describe(registry: Registry[Any]) -> dict[str, dict[str, Any]]:
    """``{name: {option: default}}`` of every registered part (for ``--help`` and docs)."""
    return {n: registry.defaults(n) for n in registry.names()}


__all__ = ["Registry", "describe", "import_object", "is_import_path"]
