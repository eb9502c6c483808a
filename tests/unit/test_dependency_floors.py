"""`bash .ci/run --floors` installs .ci/floors.txt: it must name exactly pyproject.toml's lower bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    bounds: dict[str, str] = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*>=\s*([0-9][^,;\s]*)", requirement.strip())
        if match:  # '==' pins (ruff, mypy) are their own floor and need no entry
            bounds[match.group(1).lower()] = match.group(2)
    return bounds


def _floors() -> dict[str, str]:
    floors: dict[str, str] = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            floors[name.strip().lower()] = version.strip()
    return floors


def _same_release(a: str, b: str) -> bool:
    def padded(version: str) -> list[int]:
        parts = [int(part) for part in version.split(".")]
        return parts + [0] * (3 - len(parts))

    return padded(a) == padded(b)


def test_floors_file_names_every_lower_bound_at_its_value() -> None:
    bounds, floors = _lower_bounds(), _floors()
    assert set(floors) == set(bounds), "each >= in pyproject.toml needs one line in .ci/floors.txt, and no other"
    wrong = {name: (bounds[name], floors[name]) for name in bounds if not _same_release(bounds[name], floors[name])}
    assert not wrong, f"pyproject.toml bound vs .ci/floors.txt: {wrong}"


def test_the_lock_pins_every_dependency() -> None:
    lock = (ROOT / ".ci" / "requirements.lock").read_text()
    pinned = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", lock, re.MULTILINE)}
    missing = sorted(set(_lower_bounds()) - pinned)
    assert not missing, f"not in .ci/requirements.lock (run bash .ci/lock): {missing}"
