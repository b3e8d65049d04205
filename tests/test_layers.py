"""One direction of flow in ``src/poolwise``: every module belongs to a layer of the table in
``docs/architecture.md``, imports only from its own layer or below, and the import graph has
no cycle at all.

The graph is read with :mod:`ast` from every module's source, so it holds every import that
can run: module-level ones and lazy ones inside functions and methods. Imports under
``if TYPE_CHECKING:`` never run and are left out. Importing ``poolwise.a.b`` also runs the
package ``poolwise.a`` (its ``__init__``), so a module's import of ``poolwise.a.b`` is an edge
to both; the root package ``poolwise`` (the public facade that imports the whole library) is
left out of that rule.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "poolwise"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _layer_table() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The rows of the layer table in docs/architecture.md, bottom up: (layer, module names).
    A name stands for the module and, for a package, every module in it."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("<!-- layers -->")[1].split("<!-- /layers -->")[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[1].startswith("`"):
            continue
        rows.append((cells[0], tuple(re.findall(r"`(poolwise[\w.]*)`", cells[1]))))
    return tuple(rows)


LAYER_TABLE = _layer_table()
LAYERS = tuple(LAYER_TABLE)


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
    """The layer of ``module``: the row of the table with the most specific name covering it."""
    best: tuple[int, int] | None = None  # (length of the name, row)
    for i, (_, names) in enumerate(LAYER_TABLE):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                    best is None or len(name) > best[0]):
                best = (len(name), i)
    return None if best is None else best[1]




# ---------------------------------------------------------------------------------------------


def test_the_reader_sees_lazy_imports_and_skips_type_checking_ones():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from poolwise.model.spec import ModelSpec\n"
        "if TYPE_CHECKING:\n    from poolwise.inference.fitted import Fit\n"
        "def f():\n    from poolwise.inference.repair import repair_fit\n"
        "    import poolwise.engine.sampler\n"
    )
    found = imports_of(tree, "poolwise")
    assert {"poolwise.model.spec", "poolwise.model", "poolwise.inference.repair",
            "poolwise.inference", "poolwise.engine.sampler", "poolwise.engine"} <= found
    assert "poolwise.inference.fitted" not in found


def test_the_cycle_finder_finds_a_cycle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_layer_table_is_read_and_covers_every_module():
    assert [name for name, _ in LAYER_TABLE][:2] == ["foundations", "kernels"]
    unlisted = sorted(m for m in MODULES if m != "poolwise" and _layer(m) is None)
    assert not unlisted, (
        "modules missing from the layer table of docs/architecture.md: " + ", ".join(unlisted))
    for _, names in LAYER_TABLE:
        for name in names:
            assert name in MODULES, f"docs/architecture.md lists {name}, which does not exist"


def test_no_import_cycle_at_all():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle " + " -> ".join(cycle) + " (break it)"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "poolwise"))
def test_a_module_imports_nothing_above_its_layer(module):
    graph = import_graph()
    mine = _layer(module)
    above = sorted(m for m in graph[module] if (layer := _layer(m)) is not None and layer > mine)
    assert not above, (
        f"{module} (layer {LAYER_TABLE[mine][0]}) imports {', '.join(above)} from above it")


def test_the_fitting_steps_import_only_downwards():
    """sampling -> repair -> fit: none imports the one above it, lazily or not."""
    graph = import_graph()
    assert "poolwise.inference.sampling" in graph["poolwise.inference.repair"]
    assert {"poolwise.inference.sampling", "poolwise.inference.repair"} <= graph[
        "poolwise.inference.fit"]
    assert not graph["poolwise.inference.sampling"] & {
        "poolwise.inference.repair", "poolwise.inference.fit"}
    assert "poolwise.inference.fit" not in graph["poolwise.inference.repair"]


def test_result_types_hand_nothing_over_to_the_output_layer():
    """A Fit, a Diagnosis, a RepairLog or a PoolingComparison displays itself with the views of
    its own layer; nothing below the output layer reaches it."""
    graph = import_graph()
    output = next(i for i, (name, _) in enumerate(LAYER_TABLE) if name == "output")
    for module in MODULES:
        if module == "poolwise" or _layer(module) >= output:
            continue
        reached = {m for m in reachable(graph, module) if _layer(m) == output}
        assert not reached, f"{module} reaches the output layer: {', '.join(sorted(reached))}"


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


#: the most lines of code a function may have (its docstring not counted): above it, it is
#: split into helpers that each do one thing, or it is listed in LONG_FUNCTIONS with the reason
MAX_FUNCTION_LINES = 60
#: functions excused from MAX_FUNCTION_LINES: "module.qualname" -> why. An entry whose function
#: is gone or has become short fails the test too, so the list only shrinks.
LONG_FUNCTIONS: dict[str, str] = {
    "poolwise.engine.density.logp_grad": "numba kernel: inlining",
    "poolwise.engine.density._cell_pass": "numba kernel: inlining",
    "poolwise.cli._run_compare": "owned by another change, split there",
    "poolwise.comparison.pooling.compare_fits": "owned by another change, split there",
    "poolwise.comparison.pooling.compare_pooling": "its signature lists the options (30 "
    "keywords, held to FitOptions by tests/test_options.py)",
    "poolwise.model.quadrature._nested_log_density": "owned by another change, split there",
    "poolwise.inference.repair.repair_fit": "owned by another change, split there",
}


def function_lines(tree: ast.Module, module: str) -> dict[str, int]:
    """Every function and method of a module (nested ones too) -> its lines of code: from the
    ``def`` line to the last line, less its docstring's lines."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = child.end_lineno - child.lineno + 1
                first = child.body[0]
                if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                        and isinstance(first.value.value, str)):
                    lines -= first.end_lineno - first.lineno + 1
                out[f"{prefix}.{child.name}"] = lines
                visit(child, f"{prefix}.{child.name}")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}")

    visit(tree, module)
    return out


def test_function_lines_leave_out_the_docstring():
    tree = ast.parse('def f():\n    """One\n    two."""\n    x = 1\n    return x\n\n'
                     "class C:\n    def m(self):\n        def inner():\n            pass\n"
                     "        return inner\n")
    assert function_lines(tree, "m") == {"m.f": 3, "m.C.m": 4, "m.C.m.inner": 2}


def test_a_long_function_is_split_or_says_why():
    lines: dict[str, int] = {}
    for module, path in MODULES.items():
        lines.update(function_lines(ast.parse(path.read_text(encoding="utf-8")), module))
    long = sorted(f"{name} ({n} lines)" for name, n in lines.items()
                  if n > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS)
    assert not long, (
        f"functions over {MAX_FUNCTION_LINES} lines of code: split them into helpers that each "
        "do one thing, or list them in LONG_FUNCTIONS with the reason: " + ", ".join(long))
    stale = sorted(name for name in LONG_FUNCTIONS if lines.get(name, 0) <= MAX_FUNCTION_LINES)
    assert not stale, "remove from LONG_FUNCTIONS (short now, or gone): " + ", ".join(stale)
