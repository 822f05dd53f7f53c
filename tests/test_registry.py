"""The registry's options dataclasses: typed, defaulted, and never sharing a mutable default."""

from __future__ import annotations

from moe_retriever.registry import Registry


class Part:
    def __init__(self, width: int, sizes: list[int] = [1, 2], scale: float = 1.0) -> None:  # noqa: B006
        self.width, self.sizes, self.scale = width, list(sizes), scale


def test_options_take_the_constructor_keywords_with_their_defaults() -> None:
    reg: Registry[Part] = Registry("part", Part, fixed=1)
    reg.register(Part, name="p")
    assert reg.option_names("p") == ["sizes", "scale"]
    assert reg.defaults("p") == {"sizes": [1, 2], "scale": 1.0}


def test_two_options_objects_do_not_share_a_mutable_default() -> None:
    reg: Registry[Part] = Registry("part", Part, fixed=1)
    reg.register(Part, name="p")
    opts = reg.options("p")
    a, b = opts(), opts()
    a.sizes.append(3)
    assert b.sizes == [1, 2]
    assert reg.defaults("p") == {"sizes": [1, 2], "scale": 1.0}
