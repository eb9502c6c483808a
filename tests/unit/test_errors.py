"""The one exception tree: every error the package raises on purpose is defined in ``planner/errors.py``,
drawn in its docstring's tree where it sits, and exported by ``planner``.

The package is read with ``ast``, so a class defined anywhere (a command, a backend, the sandbox) is
found whether or not anything imports it.
"""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import planner
from planner import errors

PACKAGE = Path(planner.__file__).parent
ERRORS = PACKAGE / "errors.py"
NAME = re.compile(r"[A-Z]\w+")


def classes() -> dict[str, tuple[Path, list[str]]]:
    """Every class of the package: name -> (file, the names of its bases)."""
    found: dict[str, tuple[Path, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                # Generic[X] is a Subscript: its value names Generic, not an exception
                found[node.name] = (path, [b for b in bases if b])
    return found


def planner_errors(found: dict[str, tuple[Path, list[str]]]) -> dict[str, Path]:
    """The classes deriving (through any number of steps) from PlannerError, by name."""
    derived = {"PlannerError"}
    grew = True
    while grew:
        grew = False
        for name, (_, bases) in found.items():
            if name not in derived and derived & set(bases):
                derived.add(name)
                grew = True
    return {name: found[name][0] for name in derived}


def tree() -> dict[str, str | None]:
    """The docstring's tree: each class named in it -> its parent there (None for the root).  A name's
    column, in steps of four ("│   ", "├── ", ...), is its depth."""
    doc = ast.get_docstring(ast.parse(ERRORS.read_text(encoding="utf-8"))) or ""
    drawing = doc.split("\n\n")[1]  # the docstring's second paragraph
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in drawing.splitlines():
        match = NAME.search(line[4:])
        assert match is not None, f"not a line of the tree: {line!r}"
        depth = match.start() // 4
        path[depth:] = [match[0]]
        parents[match[0]] = path[depth - 1] if depth else None
    return parents


def test_every_public_error_is_defined_in_errors_py() -> None:
    outside = {
        name: str(path.relative_to(PACKAGE.parent))
        for name, path in planner_errors(classes()).items()
        if not name.startswith("_") and path != ERRORS
    }
    assert outside == {}, f"errors defined outside planner/errors.py (move them there): {outside}"


def test_every_public_error_is_in_the_docstring_tree_under_its_parent() -> None:
    drawn = tree()
    public = {name for name in planner_errors(classes()) if not name.startswith("_")}
    assert public - drawn.keys() == set(), "errors missing from errors.py's tree"
    assert drawn.keys() - public == set(), "the tree names classes that are not errors of the package"
    for name, parent in drawn.items():
        if parent is not None:
            assert issubclass(getattr(errors, name), getattr(errors, parent)), f"{name} is drawn under {parent}"


def test_every_public_error_is_exported() -> None:
    public = {name for name in planner_errors(classes()) if not name.startswith("_")}
    assert public - set(planner.__all__) == set(), "errors a user may catch, missing from planner.__all__"
    for name in public:
        assert getattr(planner, name) is getattr(errors, name)


def test_other_exceptions_are_named_in_errors_py_as_internal() -> None:
    """An exception class outside the tree is control flow that never leaves the package: errors.py's
    docstring names each one, so a reader knows it exists and where it is caught."""
    doc = ast.get_docstring(ast.parse(ERRORS.read_text(encoding="utf-8"))) or ""
    found = classes()
    ours = planner_errors(found)
    others = {
        name for name, (_, bases) in found.items() if name not in ours and any(_is_exception(b, found) for b in bases)
    }
    assert {"OutcomeUnknown", "Later", "_AlreadyThere", "ServiceError"} <= others, "the walk is broken"
    unnamed = sorted(name for name in others if f"``{name}``" not in doc)
    assert unnamed == [], f"exceptions outside the tree that errors.py's docstring does not name: {unnamed}"


def _is_exception(base: str, found: dict[str, tuple[Path, list[str]]]) -> bool:
    """``base`` names an exception class: a built-in one, one of another library's (by its name), or
    one of the package's deriving from either."""
    if base in found:
        return any(_is_exception(b, found) for b in found[base][1])
    builtin = getattr(builtins, base, None)
    if isinstance(builtin, type):
        return issubclass(builtin, BaseException)
    return base.endswith(("Error", "Exception"))


def test_the_tree_reader_reads_nesting() -> None:
    drawn = tree()
    assert drawn["PlannerError"] is None
    assert drawn["InputError"] == "PlannerError"
    assert drawn["PreflightError"] == "ValidationError"
    assert drawn["ThresholdCrossed"] == "Stopped"
