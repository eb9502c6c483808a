"""The package's layers, read from its source with ``ast``: no import runs upward, none makes a cycle.

The layers are listed in ``planner/__init__.py``'s docstring: a module may import from its own
layer or a lower one.  Every import counts, those inside functions and under ``TYPE_CHECKING``
included: a lazy import that runs upward is an upward import that waits to break.  A function-level
import is kept only for an optional extra (plotly, moto) or for start-up time, and says so in a
comment on its line or the line above its group of imports ("optional extra", "start-up").
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import planner

PACKAGE = Path(planner.__file__).parent
# Lowest first: the package's own docstring lists the same order.
LAYERS = ["errors", "core", "sandbox", "services", "engine", "backends", "commands", "cli"]
REASONS = ("optional extra", "start-up")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the planner module (or package) it names
    line: int
    lazy: bool  # inside a function


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # planner/__init__.py: the Python API, with the CLI at the top
        return LAYERS.index("cli")
    return LAYERS.index(parts[1])


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _target(known: dict[str, Path], base: str, name: str) -> str:
    """``from base import name``: the module ``base.name`` when it is one, else ``base``."""
    return f"{base}.{name}" if f"{base}.{name}" in known else base


def imports(known: dict[str, Path]) -> Iterator[tuple[Import, ast.stmt, list[str]]]:
    for module, path in known.items():
        source = path.read_text(encoding="utf-8")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node, lazy in _walk(ast.parse(source), False):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [_target(known, base, alias.name) for alias in node.names]
            else:
                targets = [alias.name for alias in node.names]
            for target in targets:
                yield Import(module, target, node.lineno, lazy), node, source.splitlines()


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node``, and whether it sits inside a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        yield from _walk(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def package_edges() -> list[Import]:
    known = modules()
    return [
        edge for edge, _, _ in imports(known) if edge.target.split(".")[0] == "planner" and edge.target != "planner"
    ]


def test_every_module_sits_in_a_named_layer() -> None:
    strays = [m for m in modules() if len(m.split(".")) > 1 and m.split(".")[1] not in LAYERS]
    assert strays == [], f"modules outside the layers {LAYERS}: {strays}"


def test_no_import_runs_upward() -> None:
    upward = [
        f"{e.module}:{e.line} imports {e.target}{' (inside a function)' if e.lazy else ''}"
        for e in package_edges()
        if layer_of(e.target) > layer_of(e.module)
    ]
    assert upward == [], "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for edge in package_edges():
        graph.setdefault(edge.module, set()).add(edge.target)
    cycles = _cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_function_level_imports_are_for_optional_extras_or_start_up_and_say_so() -> None:
    unexplained = []
    for edge, node, lines in imports(modules()):
        if not edge.lazy:
            continue
        around = " ".join(lines[_group_start(lines, node.lineno) : node.end_lineno or node.lineno]).lower()
        if not any(reason in around for reason in REASONS):
            unexplained.append(f"{edge.module}:{edge.line} imports {edge.target}")
    assert unexplained == [], "function-level imports without a reason:\n" + "\n".join(sorted(set(unexplained)))


def _group_start(lines: list[str], lineno: int) -> int:
    """Index of the line above the block of import lines that holds line ``lineno``: one comment
    before a group of imports speaks for the group."""
    start = lineno - 1
    while start > 0 and lines[start - 1].strip().startswith(("import ", "from ")):
        start -= 1
    return max(0, start - 1)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected
