"""The layout contract of issue 20: every module imports, imports go one way, functions stay short.

The import graph is read from the source (module-level and function-level imports alike, since a
lazy import is still a dependency); an edge to a package is an edge to its ``__init__``. Imports
under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "scoresde"
MAX_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The scoresde module ``name`` refers to (a module, or a package's ``__init__``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(mod: str, path: Path) -> set[str]:
    """The scoresde modules that ``mod`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = ".".join(base[: len(base) - node.level + 1])
                pkg = f"{root}.{node.module}" if node.module else root
            else:
                pkg = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            targets = [
                f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in MODULES else pkg for a in node.names
            ]
        else:
            targets = []
        for name in targets:
            if name.split(".")[0] == "scoresde":
                target = _resolve(name)
                if target is not None and target != mod:
                    out.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules, or None (iterative three-colour DFS)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def import_graph() -> dict[str, set[str]]:
    """``module -> the scoresde modules it imports`` for every module of the package."""
    return {mod: _imports(mod, path) for mod, path in MODULES.items()}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_every_module_imports(mod: str) -> None:
    importlib.import_module(mod)


def test_module_import_graph_is_acyclic() -> None:
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    body = fn.body
    doc: range = range(0)
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        doc = range(first.lineno, (first.end_lineno or first.lineno) + 1)
    end = fn.end_lineno or fn.lineno
    return sum(
        1
        for ln in range(fn.lineno, end + 1)
        if ln not in doc and lines[ln - 1].strip() and not lines[ln - 1].strip().startswith("#")
    )


def test_no_function_over_80_lines_of_code() -> None:
    long = []
    for mod, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > MAX_LINES:
                    long.append(f"{mod}.{node.name} ({n} lines)")
    assert not long, "functions over 80 lines of code: " + ", ".join(long)


DESIGN = SRC.parent / "docs" / "design.md"


def _layers() -> dict[str, int]:
    """``top-level unit -> layer`` from the ``layer N: ...`` lines of docs/design.md."""
    layers = {}
    for line in DESIGN.read_text().splitlines():
        head, _, names = line.partition(":")
        if head.startswith("layer ") and head[6:].isdigit():
            for name in names.split():
                layers[name] = int(head[6:])
    return layers


def _unit(mod: str) -> str:
    """The layer unit of a module: its top-level module or package below ``scoresde``."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "scoresde"


def test_design_lists_every_module() -> None:
    text = DESIGN.read_text()
    missing = [
        str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if f" {p.relative_to(PKG)} " not in text
    ]
    assert not missing, f"docs/design.md 'Layout as built' does not list: {missing}"


def test_every_unit_has_a_layer() -> None:
    layers = _layers()
    missing = sorted({_unit(m) for m in MODULES} - set(layers))
    assert not missing, f"docs/design.md gives no layer to: {missing}"


def test_imports_go_down_the_layers() -> None:
    layers = _layers()
    wrong = [
        f"{mod} -> {dep}"
        for mod, deps in import_graph().items()
        for dep in deps
        if _unit(dep) != _unit(mod) and layers.get(_unit(dep), 99) >= layers.get(_unit(mod), -1)
    ]
    assert not wrong, "imports against the layers of docs/design.md: " + ", ".join(wrong)
