"""The sandbox belongs to one install: its state directory, its code hash and its help text (no daemon here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import planner
from planner.sandbox import local


@pytest.fixture()
def copied_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the planner package, as a second clone would hold it, taken for this install."""
    package = tmp_path / "clone" / "planner"
    shutil.copytree(Path(planner.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(local, "_PACKAGE_DIR", str(package))
    local.code_version.cache_clear()
    yield package
    local.code_version.cache_clear()


def test_the_state_directory_is_keyed_to_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLANNER_SANDBOX_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    here = local.state_dir()
    assert here == str(tmp_path / "home" / ".cache" / "planner" / "sandbox" / local.install_key())
    monkeypatch.setattr(local, "_PACKAGE_DIR", str(tmp_path / "another-clone" / "planner"))
    assert local.state_dir() != here
    assert len(local.install_key()) == 12


def test_planner_sandbox_dir_names_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLANNER_SANDBOX_DIR", "relative/sandbox")
    # Absolute: the daemon runs in another working directory and must find the same place.
    assert local.state_dir() == str(tmp_path / "relative" / "sandbox")


def test_the_code_version_changes_with_the_source(copied_package: Path) -> None:
    before = local.code_version()
    assert before.startswith(f"{planner.__version__}+")
    assert local.code_version() == before  # stable while nothing changes
    with open(copied_package / "suggest.py", "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    local.code_version.cache_clear()
    assert local.code_version() != before


def test_the_help_says_what_runs_where_and_for_how_long() -> None:
    text = local.HELP
    for fragment in (
        "moto's server",
        "S3, AWS Batch",
        "AWS Glue",
        "HealthOmics emulator",
        "Polly emulator",
        "~/.cache/planner/sandbox/<key>/",
        "PLANNER_SANDBOX_DIR",
        "4 hours",
        "planner sandbox stop",
    ):
        assert fragment in text, fragment
    assert all(len(line) <= 100 for line in text.splitlines())  # readable in a terminal as argparse prints it


@pytest.mark.parametrize(("seconds", "text"), [(4 * 3600, "4 h"), (5400, "90 min"), (30, "30 s")])
def test_the_lifetime_is_said_in_hours_when_whole(seconds: int, text: str) -> None:
    assert local._lifetime_text(seconds) == text
