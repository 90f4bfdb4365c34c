"""The import graph of ``landscope``: no cycles, one-way layers, no private names across modules.

Every module under ``src/landscope`` is parsed with :mod:`ast` (not imported). Every ``import`` and
``from … import`` statement counts, wherever it is: at module level, inside a function (a lazy
import is a cycle waiting to be hoisted) or under ``if TYPE_CHECKING:``. Relative imports are
resolved, and ``from pkg import name`` is an edge to ``pkg.name`` when that is a submodule, else to
``pkg`` (its ``__init__``). Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``;
those implicit edges are not drawn: an edge is what a module names.

Layers, left to right; a module may import its own component and those of earlier groups, never
one to its right nor a peer in its own group::

    errors → checks → background → data → curvature → (distributed | models) → training
           → analysis → experiments → report

- ``errors`` imports nothing of landscope; ``checks`` (argument checks every layer shares) only
  ``errors``; ``background`` (a process-pool actor) only ``errors``.
- ``distributed`` (a data-parallel Hessian operator) imports ``curvature`` and ``errors``;
  ``models`` (network definitions) only ``errors`` and ``checks``. Neither imports the other, and the
  model-agnostic ``data`` and ``curvature`` import neither.
- ``monitor`` stands beside the layers: it may import ``errors``, ``checks``, ``background``,
  ``data``, ``curvature`` and ``training``; no layer imports it.
- ``cli`` and the root package (``landscope/__init__``, the public facade) may import anything;
  only ``cli`` imports the root package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "landscope"
ROOT = "landscope"  # the component name of the root package's own __init__

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "version"),
    ("checks",),  # imports errors, so a group of its own after it (peers may not import each other)
    ("background",),
    ("data",),
    ("curvature",),
    ("distributed", "models"),
    ("training",),
    ("train",),  # the deprecated shim of landscope.training (old import paths)
    ("analysis",),
    ("experiments",),
    ("report",),
)
BESIDE: dict[str, frozenset[str]] = {
    "monitor": frozenset({"errors", "checks", "background", "data", "curvature", "training"}),
}
ANYTHING = frozenset({"cli", ROOT})  # may import any component
IMPORTED_ONLY_BY: dict[str, frozenset[str]] = {ROOT: frozenset({"cli"}), "cli": frozenset()}

# Known violations in files this test's author could not change, keyed without a line number
# (importer, imported module[, name]) so that edits elsewhere in the file do not break them.
# test_exceptions_are_still_needed fails once one is fixed, so that it leaves the list.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}
CYCLE_EXCEPTIONS: dict[tuple[str, str], str] = {}
PRIVATE_EXCEPTIONS: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One imported module (and the name taken from it, for ``from module import name``)."""

    importer: str
    target: str
    name: str | None
    line: int

    def where(self) -> str:
        what = self.target if self.name is None else f"{self.target}.{self.name}"
        return f"{self.importer}:{self.line} imports {what}"


def discover(src: Path = SRC, package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, whether it is a package's ``__init__``)."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(
    module: str, tree: ast.AST, is_package: bool, modules: Iterable[str], package: str = PACKAGE
) -> list[Import]:
    """Every import of a module of ``package`` in ``tree``, at any depth."""
    known = set(modules)

    def ours(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, None, node.lineno) for a in node.names if ours(a.name)]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if not ours(target):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append(
                    Import(module, sub, None, node.lineno)
                    if sub in known
                    else Import(module, target, a.name, node.lineno)
                )
    return sorted(out, key=lambda i: (i.line, i.target, i.name or ""))


def private_attributes(
    module: str, tree: ast.AST, modules: Iterable[str], package: str = PACKAGE
) -> list[Import]:
    """``alias._name`` where ``alias`` is a landscope module bound by an import."""
    known = set(modules)
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == package:
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else package
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in known:
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        chain, value = [], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in bound:
            continue
        target = bound[value.id]
        for attr in reversed(chain):
            if f"{target}.{attr}" not in known:
                break
            target = f"{target}.{attr}"
        else:
            if target != module:
                out.append(Import(module, target, node.attr, node.lineno))
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, …, a]``, or ``None`` if it is acyclic (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        color[start] = GREY
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = BLACK
                stack.pop()
                continue
            state = color.get(nxt, WHITE)
            if state == GREY:
                return path[path.index(nxt) :] + [nxt]
            if state == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def component(module: str) -> str:
    """``landscope.curvature.lanczos`` → ``curvature``; the root package → ``landscope``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def layer_allows(src: str, dst: str) -> bool:
    """Whether component ``src`` may import component ``dst`` (see the module docstring)."""
    if src == dst:
        return True
    if dst in IMPORTED_ONLY_BY:
        return src in IMPORTED_ONLY_BY[dst]
    if src in ANYTHING:
        return True
    if src in BESIDE:
        return dst in BESIDE[src]
    if dst in BESIDE:
        return False
    rank = {c: i for i, group in enumerate(LAYERS) for c in group}
    return rank[dst] < rank[src]


@pytest.fixture(scope="module")
def parsed() -> dict[str, tuple[ast.AST, bool]]:
    return {
        name: (ast.parse(path.read_text(), str(path)), is_package)
        for name, (path, is_package) in discover().items()
    }


@pytest.fixture(scope="module")
def edges(parsed: dict[str, tuple[ast.AST, bool]]) -> list[Import]:
    return [
        i for name, (tree, is_package) in parsed.items() for i in imports_of(name, tree, is_package, parsed)
    ]


def test_the_graph_sees_the_package(parsed: dict[str, tuple[ast.AST, bool]], edges: list[Import]) -> None:
    # A parser that found nothing would pass every rule below.
    assert {"landscope", "landscope.curvature.lanczos", "landscope.monitor.sinks"} <= set(parsed)
    assert any(
        i.importer == "landscope.curvature.lanczos" and i.target == "landscope.curvature.power" for i in edges
    )
    # function-level imports count, and `from pkg import submodule` is an edge to the submodule
    assert any(i.importer == "landscope.cli" and i.target == "landscope.report.html" for i in edges)
    assert any(
        i.importer == "landscope" and i.target == "landscope.analysis" and i.name is None for i in edges
    )


def test_no_import_cycles(edges: list[Import]) -> None:
    graph: dict[str, set[str]] = {}
    for i in edges:
        graph.setdefault(i.importer, set())
        if i.target != i.importer and (i.importer, i.target) not in CYCLE_EXCEPTIONS:
            graph[i.importer].add(i.target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_layers_are_one_way(edges: list[Import]) -> None:
    known = {c for group in LAYERS for c in group} | set(BESIDE) | ANYTHING
    assert {component(i.importer) for i in edges} <= known, "a component missing from LAYERS"
    bad = [
        f"{i.where()} ({component(i.importer)} → {component(i.target)})"
        for i in edges
        if not layer_allows(component(i.importer), component(i.target))
        and (i.importer, i.target) not in LAYER_EXCEPTIONS
    ]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_private_names_across_modules(
    parsed: dict[str, tuple[ast.AST, bool]], edges: list[Import]
) -> None:
    bad = []
    for i in edges + [
        a for name, (tree, _) in parsed.items() for a in private_attributes(name, tree, parsed)
    ]:
        if (
            i.name is not None
            and _is_private(i.name)
            and (i.importer, i.target, i.name) not in PRIVATE_EXCEPTIONS
        ):
            bad.append(i.where())
        # a private module (data/_checks.py) is for its own package only
        parts = i.target.split(".")
        for k, part in enumerate(parts):
            if _is_private(part) and not i.importer.startswith(".".join(parts[:k]) + "."):
                bad.append(i.where())
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_exceptions_are_still_needed(parsed: dict[str, tuple[ast.AST, bool]], edges: list[Import]) -> None:
    # Fixed violations must leave the exception lists, so that they cannot come back unnoticed.
    pairs = {(i.importer, i.target) for i in edges}
    names = {(i.importer, i.target, i.name) for i in edges}
    stale = [k for k in [*LAYER_EXCEPTIONS, *CYCLE_EXCEPTIONS] if k not in pairs]
    stale += [k for k in PRIVATE_EXCEPTIONS if k not in names]
    assert not stale, f"fixed, remove from the exception lists: {stale}"


# The checker itself, on toy graphs and sources: each rule can fail.


def test_find_cycle_on_toy_graphs() -> None:
    assert find_cycle({}) is None
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None  # a diamond is no cycle
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    cycle = find_cycle({"a": ["b"], "b": [], "x": ["y"], "y": ["z"], "z": ["y", "w"]})
    assert cycle == ["y", "z", "y"]
    assert find_cycle({"a": ["b"]}) is None  # an edge to a node without entry


def test_imports_of_resolves_lazy_relative_and_submodule_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from landscope.curvature import lanczos, eigenpairs\n"
        "from . import power\n"
        "from .ritz import small_eigh\n"
        "if TYPE_CHECKING:\n"
        "    from landscope.monitor.monitor import MonitorRecord\n"
        "def f():\n"
        "    import landscope\n"
    )
    modules = {
        "landscope",
        "landscope.curvature",
        "landscope.curvature.lanczos",
        "landscope.curvature.power",
        "landscope.curvature.ritz",
        "landscope.curvature.density",
        "landscope.monitor.monitor",
    }
    got = {
        (i.target, i.name)
        for i in imports_of("landscope.curvature.density", ast.parse(source), False, modules)
    }
    assert got == {
        ("landscope.curvature.lanczos", None),
        ("landscope.curvature", "eigenpairs"),
        ("landscope.curvature.power", None),
        ("landscope.curvature.ritz", "small_eigh"),
        ("landscope.monitor.monitor", "MonitorRecord"),
        ("landscope", None),
    }


def test_private_attribute_access_is_seen() -> None:
    source = (
        "import landscope.curvature.lanczos as lz\nimport landscope\n"
        "from landscope.curvature import ritz\n"
        "a = lz._lanczos\nb = landscope.curvature.lanczos._dense\nc = ritz._COMBINE_BLOCK\n"
        "d = lz.eigenpairs\ne = lz.__name__\n"
    )
    modules = {"landscope", "landscope.curvature", "landscope.curvature.lanczos", "landscope.curvature.ritz"}
    got = {(i.target, i.name) for i in private_attributes("landscope.x", ast.parse(source), modules)}
    assert got == {
        ("landscope.curvature.lanczos", "_lanczos"),
        ("landscope.curvature.lanczos", "_dense"),
        ("landscope.curvature.ritz", "_COMBINE_BLOCK"),
    }


def test_layer_rule_on_examples() -> None:
    assert layer_allows("training", "curvature") and not layer_allows("curvature", "training")
    assert not layer_allows("models", "distributed") and not layer_allows("distributed", "models")
    assert layer_allows("monitor", "training") and not layer_allows("monitor", "analysis")
    assert not layer_allows("report", "monitor") and not layer_allows("data", "monitor")
    assert layer_allows("cli", "monitor") and layer_allows(ROOT, "monitor")
    assert layer_allows("cli", ROOT) and not layer_allows("report", ROOT)
    assert not layer_allows(ROOT, "cli")
