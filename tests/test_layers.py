"""One direction of flow in ``src/poolwise``: the import graph has no cycle, and the named
layers only import downward.

The graph is read with :mod:`ast` from every module's source, so it holds every import that
can run: module-level ones and lazy ones inside functions and methods. Imports under
``if TYPE_CHECKING:`` never run and are left out. Importing ``poolwise.a.b`` also runs the
package ``poolwise.a`` (its ``__init__``), so a module's import of ``poolwise.a.b`` is an edge
to both; the root package ``poolwise`` (the public facade that imports the whole library) is
left out of that rule.

A module may state why one of its imports goes back up (a repr handing over to the
presentation modules, say) with a line in its docstring::

    Import cycle: poolwise.a -> poolwise.b, poolwise.c: why

The statement excuses exactly those edges, may stand in the docstring of either end, and must
name an edge that exists. Without the excused edges the graph must be acyclic.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "poolwise"

#: bottom to top; a name stands for the module and, for a package, every module in it. The
#: engine is two layers: its numba kernels sit below the model (the link and prior registries
#: use them), its adapter (``layout`` packs a ModelSpec, ``sampler`` runs nutpie) above it;
#: the package ``poolwise.engine`` itself imports nothing.
LAYERS = (
    "poolwise.engine.density",
    "poolwise.parameterization",
    "poolwise.model",
    "poolwise.engine.layout",
    "poolwise.engine.sampler",
    "poolwise.plan",
    "poolwise.sampling",
    "poolwise.repair",
    "poolwise.fit",
    "poolwise.pooling",
    "poolwise.report",
    "poolwise.cli",
)


_EXCUSE = re.compile(
    r"Import cycle: (poolwise[\w.]*) -> (poolwise[\w.]*(?:, poolwise[\w.]*)*):"
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module that ``import name`` (or ``from a import b`` as ``a.b``) runs last."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _with_packages(name: str, importer: str) -> set[str]:
    """``name`` and the packages above it that importing it runs: not the root, and not the
    importer's own packages (they are being imported already)."""
    out = {name}
    parent = name.rpartition(".")[0]
    while parent.count(".") and not (importer + ".").startswith(parent + "."):
        out.add(parent)
        parent = parent.rpartition(".")[0]
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.Module, package: str, importer: str | None = None) -> set[str]:
    """Every poolwise module that the source of ``importer`` (in ``package``) may import at
    run time."""
    importer = importer or package
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            resolved = _resolve(name)
            if resolved is not None:
                found |= _with_packages(resolved, importer)
    return found - {"poolwise"}


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = frozenset(imports_of(tree, _package_of(module), module) - {module})
    return graph


@functools.cache
def excused_edges() -> dict[tuple[str, str], str]:
    """``(importer, imported) -> module whose docstring states why``."""
    out = {}
    for module, path in MODULES.items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        for m in _EXCUSE.finditer(" ".join(doc.split())):
            for target in m.group(2).split(", "):
                out[(m.group(1), target)] = module
    return out


def find_cycle(graph: dict[str, frozenset[str]] | dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (c := visit(w)) is not None:
                return c
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (c := visit(v)) is not None:
            return c
    return None


def reachable(graph: dict[str, frozenset[str]] | dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _layer(module: str) -> int | None:
    """The layer of ``module``: the most specific name of :data:`LAYERS` that covers it."""
    hits = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    return max(hits, key=lambda i: len(LAYERS[i])) if hits else None


def _without_excused(graph: dict[str, frozenset[str]]) -> dict[str, set[str]]:
    """The graph less the stated edges (an excused import of ``a.b.c`` also excuses the
    edges to the packages ``a.b`` that it runs)."""
    excused = excused_edges()

    def ok(v: str, w: str) -> bool:
        return not any(src == v and (dst == w or dst.startswith(w + ".")) for src, dst in excused)

    return {v: {w for w in ws if ok(v, w)} for v, ws in graph.items()}


# ---------------------------------------------------------------------------------------------


def test_the_reader_sees_lazy_imports_and_skips_type_checking_ones():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from poolwise.model import ModelSpec\n"
        "if TYPE_CHECKING:\n    from poolwise.fit import Fit\n"
        "def f():\n    from poolwise.repair import repair_fit\n"
        "    import poolwise.engine.sampler\n"
    )
    found = imports_of(tree, "poolwise")
    assert {"poolwise.model", "poolwise.repair", "poolwise.engine.sampler",
            "poolwise.engine"} <= found
    assert "poolwise.fit" not in found


def test_the_cycle_finder_finds_a_cycle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_stated_cycle_names_an_edge_that_exists():
    graph = import_graph()
    excused = excused_edges()
    assert excused, "the known back edges are stated in docstrings"
    for (src, dst), where in excused.items():
        assert src in MODULES, f"{where}: states an import cycle from unknown module {src}"
        assert dst in graph[src], (
            f"{where} states the import {src} -> {dst}, which no longer exists: drop the line"
        )
        assert where in (src, dst), f"{where} states an import cycle between other modules"


def test_no_import_cycle_except_where_a_docstring_states_why():
    cycle = find_cycle(_without_excused(import_graph()))
    assert cycle is None, (
        "import cycle " + " -> ".join(cycle) + " (break it, or state why in a docstring: "
        "'Import cycle: a -> b: why')"
    )


def test_the_fit_repair_cycle_is_gone_with_nothing_excused_for_it():
    """sampling -> repair -> fit: neither imports the one above it, lazily or not, and no
    stated cycle involves them except the reprs' hand-over to the presentation modules."""
    graph = import_graph()
    assert "poolwise.sampling" in graph["poolwise.repair"]
    assert {"poolwise.sampling", "poolwise.repair"} <= graph["poolwise.fit"]
    assert not graph["poolwise.sampling"] & {"poolwise.repair", "poolwise.fit"}
    assert "poolwise.fit" not in graph["poolwise.repair"]
    for src, dst in excused_edges():
        assert "poolwise.fit" not in (src, dst)
        if src in ("poolwise.sampling", "poolwise.repair"):
            assert dst.startswith("poolwise.report.") or dst == "poolwise.summary"


@pytest.mark.parametrize("low", LAYERS[:-1])
def test_a_layer_imports_nothing_above_it(low):
    graph = _without_excused(import_graph())
    members = [m for m in MODULES if _layer(m) == LAYERS.index(low)]
    assert members, f"no module for layer {low}"
    for module in members:
        above = sorted(m for m in reachable(graph, module)
                       if (layer := _layer(m)) is not None and layer > LAYERS.index(low))
        assert not above, f"{module} imports (maybe through others) {', '.join(above)}"


#: the size above which a module states why it is one module ("Why one module: ..." in its
#: docstring) or is split
MAX_LINES = 500
#: modules another branch owns right now; their reason or split lands with that branch
PENDING: dict[str, str] = {}


def test_a_long_module_states_why_it_is_one_module():
    missing = []
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= MAX_LINES or module in PENDING:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Why one module:" not in doc:
            missing.append(f"{module} ({text.count(chr(10))} lines)")
    assert not missing, "state why in the docstring ('Why one module: ...') or split: " + (
        ", ".join(missing))
