"""No import cycles between the modules of the package.

Every module under ``src/moe_retriever`` is parsed with :mod:`ast`; each ``import`` /
``from ... import`` statement ANYWHERE in the file counts, at the top or inside a function (a
lazy import hides a cycle from the interpreter, not from the design), in ``try`` blocks alike.
Statements are resolved to modules of the package:

* ``import moe_retriever.a.b`` imports ``moe_retriever.a.b`` (the longest prefix that is a
  module of the package);
* ``from moe_retriever.a import b`` imports ``moe_retriever.a.b`` when ``b`` is a submodule,
  else the module ``moe_retriever.a`` (for a package: its ``__init__.py``); relative imports
  are resolved against the importing module's package;
* the implicit import of parent packages that Python performs is NOT an edge (otherwise every
  package ``__init__`` that imports its own submodules would be a cycle). So a package
  ``__init__`` that re-exports from its submodules is fine, but a submodule that then imports
  the names back from the package (``from moe_retriever.a import name``) is a cycle: submodules
  import from the concrete sibling module instead.

Excluded: imports inside an ``if TYPE_CHECKING:`` block (``typing.TYPE_CHECKING`` too), which
never run; they exist to name a type for annotations without a runtime dependency. Imports by
string (``importlib.import_module``) cannot be seen and do not count.

The test fails naming every strongly connected component of more than one module, with one
cycle through it and where each of its imports is (file:line). The cycle finder and the
resolver are checked on hand-made graphs and a synthetic package, so the test cannot pass
because it looks at nothing.
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path

import moe_retriever

Graph = Mapping[str, Iterable[str]]
#: (importer, imported) -> "file:line" of the first import statement making that edge
Where = dict[tuple[str, str], str]


# ---------------------------------------------------------------------------- the graph
def package_modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every .py under ``root``
    (the package folder; its name is the top-level name)."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, but those under ``if TYPE_CHECKING``
    (their ``else`` branch still counts)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _owner(name: str, modules: Mapping[str, object]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a module of the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path) -> tuple[dict[str, set[str]], Where]:
    """Directed graph module -> modules it imports (package modules only, no self-edges), and
    where each edge comes from."""
    modules = package_modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: Where = {}
    for mod, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _imports(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_owner(alias.name, modules) for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else _owner(base, modules))
            for target in targets:
                if target is None or target == mod:
                    continue
                graph[mod].add(target)
                where.setdefault((mod, target), f"{path.relative_to(root.parent)}:{node.lineno}")
    return graph, where


# ---------------------------------------------------------------------------- cycles
def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a stable order."""
    nodes = sorted(set(graph) | {w for ws in graph.values() for w in ws})
    succ = {v: sorted(graph.get(v, ())) for v in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            if i < len(succ[v]):
                work.append((v, i + 1))
                w = succ[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
            if work:  # back in the caller: fold the callee's low link
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return sorted(out)


def cycles(graph: Graph) -> list[list[str]]:
    """The components of more than one module."""
    return [c for c in strongly_connected(graph) if len(c) > 1]


def one_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module: [a, ..., a]."""
    inside = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ())):
            if w not in inside:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {component}")


def describe(graph: Graph, where: Where, component: list[str]) -> str:
    path = one_cycle(graph, component)
    hops = [f"{a} -> {b} ({where.get((a, b), '?')})" for a, b in pairwise(path)]
    return f"{len(component)} modules: {', '.join(component)}\n    " + "\n    ".join(hops)


# ---------------------------------------------------------------------------- the package
PACKAGE = Path(moe_retriever.__file__).parent


def test_package_has_no_import_cycles() -> None:
    graph, where = import_graph(PACKAGE)
    found = cycles(graph)
    assert not found, "import cycles in moe_retriever:\n  " + "\n  ".join(
        describe(graph, where, c) for c in found
    )


def test_the_graph_sees_the_package() -> None:
    """Not vacuous: the modules are found and known imports are edges, lazy ones included."""
    graph, _ = import_graph(PACKAGE)
    assert len(graph) > 50
    assert "moe_retriever.benchmark.grid" in graph["moe_retriever.benchmark.harness"]
    # cli imports the harness inside a function only
    assert "moe_retriever.benchmark.harness" in graph["moe_retriever.cli"]
    # a package import: completion's __init__ imports the support package's __init__
    assert "moe_retriever.completion.support" in graph["moe_retriever.completion"]


# ---------------------------------------------------------------------------- the finder
def test_cycle_finder_on_hand_made_graphs() -> None:
    graph = {
        "a": {"b"},
        "b": {"c"},
        "c": {"a", "d"},  # a -> b -> c -> a
        "d": {"e"},
        "e": {"e"},  # a self-loop is not a cycle between modules
        "f": {"g"},
        "g": {"f"},  # f <-> g
        "h": {"a", "f"},  # reaches both cycles, in none
    }
    assert cycles(graph) == [["a", "b", "c"], ["f", "g"]]
    assert one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert one_cycle(graph, ["f", "g"]) == ["f", "g", "f"]
    assert cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []
    # a long chain closed at its end: one component (and no recursion limit)
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(5000)}
    chain["m5000"] = {"m0"}
    assert [len(c) for c in cycles(chain)] == [5001]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_resolver_on_a_synthetic_package(tmp_path: Path) -> None:
    """Lazy imports, package re-exports and relative imports make edges; TYPE_CHECKING ones
    do not."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.api import helper\n",
            # a submodule importing from its package's __init__: a cycle with it
            "pkg/api.py": "from pkg import VERSION\n\ndef helper(): ...\n",
            "pkg/lazy_a.py": "def f():\n    from pkg.lazy_b import g\n    return g\n",
            "pkg/lazy_b.py": "import pkg.lazy_a as a\n\ndef g(): ...\n",
            "pkg/typed.py": textwrap.dedent(
                """\
                from typing import TYPE_CHECKING

                from .leaf import x

                if TYPE_CHECKING:
                    from pkg.uses_typed import T
                else:
                    import pkg.sub
                """
            ),
            "pkg/uses_typed.py": "from pkg.typed import x\nT = int\n",
            "pkg/leaf.py": "import os\nx = 1\n",
            "pkg/sub/__init__.py": "from . import deep\n",
            "pkg/sub/deep.py": "from ..leaf import x\n",
        },
    )
    graph, where = import_graph(tmp_path / "pkg")
    assert graph["pkg"] == {"pkg.api"}
    assert graph["pkg.api"] == {"pkg"}
    assert graph["pkg.lazy_a"] == {"pkg.lazy_b"}
    assert graph["pkg.lazy_b"] == {"pkg.lazy_a"}
    assert graph["pkg.typed"] == {"pkg.leaf", "pkg.sub"}  # not pkg.uses_typed
    assert graph["pkg.uses_typed"] == {"pkg.typed"}
    assert graph["pkg.leaf"] == set()
    assert graph["pkg.sub"] == {"pkg.sub.deep"}
    assert graph["pkg.sub.deep"] == {"pkg.leaf"}
    assert where[("pkg.lazy_a", "pkg.lazy_b")] == "pkg/lazy_a.py:2"
    assert cycles(graph) == [["pkg", "pkg.api"], ["pkg.lazy_a", "pkg.lazy_b"]]
    text = describe(graph, where, ["pkg", "pkg.api"])
    assert "pkg -> pkg.api (pkg/__init__.py:1)" in text
    assert "pkg.api -> pkg (pkg/api.py:1)" in text
