"""docs/sources.md and the HealthOmics emulator name each other: every behaviour listed is named in the
code (``sources.md: ENTRY``), and every name in the code is listed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = sorted((ROOT / "planner" / "sandbox").glob("omics_*.py"))


def _listed() -> set[str]:
    text = (ROOT / "docs" / "sources.md").read_text(encoding="utf-8")
    section = text[text.index("## HealthOmics emulator") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE))


def _named() -> set[str]:
    """Entry names after ``sources.md:`` in the emulator: hyphenated words, and listed one-word entries."""
    listed, names = _listed(), set()
    for path in EMULATOR:
        for mention in re.findall(r"sources\.md: ([a-z0-9 ,()-]+)", path.read_text(encoding="utf-8")):
            names |= set(re.findall(r"[a-z0-9]+-[a-z0-9-]+", mention))
            names |= set(re.findall(r"[a-z0-9]+", mention)) & listed
    return names


def test_every_listed_behaviour_is_named_in_the_emulator_and_every_name_is_listed() -> None:
    listed, named = _listed(), _named()
    assert len(listed) >= 25
    assert listed - named == set(), "listed in docs/sources.md but named nowhere in the emulator"
    assert named - listed == set(), "named in the emulator but not listed in docs/sources.md"
