"""The CLI as a real child process (``python -m planner.cli``): what only a process shows.

What a command says and its exit status are tested in-process (``helpers.run_cli``) in tests/unit/;
here a few bad inputs go through a real interpreter start-up, the module's ``__main__`` entry and
``sys.exit``, to prove the exit status reaches the shell and no traceback reaches the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from helpers import (
    SAMPLE_SHEETS,
    assert_clean_stderr,
    assert_nothing_written,
    defaults_for,
    load_manifest,
    plan_argv,
    run_cli_process,
    write_csv,
)


def _duplicate_ids(tmp_path: Path) -> tuple[list[str], list[str]]:
    rows = [["a", "1"], ["b", "2"], ["a", "3"], ["b", "4"], ["a", "5"], ["c", "6"]]
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "x"], rows)
    return plan_argv(tmp_path, sheet), ["rows 1, 3, 5", "rows 2, 4", "'a'", "'b'", "'sample'", "--group"]


def _more_fields_than_header(tmp_path: Path) -> tuple[list[str], list[str]]:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,x\na,1\nb,2,3\n", encoding="utf-8")
    return plan_argv(tmp_path, sheet), ["sheet.csv", "more"]


def _nonexistent_sheet(tmp_path: Path) -> tuple[list[str], list[str]]:
    return plan_argv(tmp_path, tmp_path / "missing.csv"), ["missing.csv", "no such file"]


def _bad_enum_in_row(tmp_path: Path) -> tuple[list[str], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "logLevel"], [["a", "ALL"], ["b", "LOUD"]])
    return plan_argv(tmp_path, sheet, backend="omics-run"), ["row 2", "'logLevel'", "'LOUD'", "[enum]"]


def _unknown_field_in_run(tmp_path: Path) -> tuple[list[str], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    defaults = defaults_for("omics-batch")
    defaults["run"]["workflowIdd"] = "1"
    fragments = ["1 problem", "planner: error: ", "'[run] workflowIdd'", "[unknown-field]"]
    return plan_argv(tmp_path, sheet, defaults=defaults), fragments


# The same cases as tests/unit/test_bad_input.py's of these names (there in-process, with every other case).
CASES: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {
    "duplicate_ids": _duplicate_ids,
    "more_fields_than_header": _more_fields_than_header,
    "nonexistent_sheet": _nonexistent_sheet,
    "bad_enum_in_row": _bad_enum_in_row,
    "unknown_field_in_run": _unknown_field_in_run,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_in_a_real_process_has_no_traceback(name: str, tmp_path: Path) -> None:
    argv, fragments = CASES[name](tmp_path)
    result = run_cli_process(argv, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_clean_stderr(result.stderr)
    for fragment in fragments:
        assert fragment in result.stderr
    assert_nothing_written(tmp_path / "plan")


def test_real_process_success(tmp_path: Path) -> None:
    out = tmp_path / "plan"
    result = run_cli_process(
        [
            "plan",
            SAMPLE_SHEETS / "batch_samples.csv",
            "--backend",
            "batch",
            "--defaults",
            SAMPLE_SHEETS / "batch_defaults.toml",
            "--out",
            out,
            "--json",
            "--max-entries",
            "5",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    manifest = orjson.loads(result.stdout)
    assert manifest == load_manifest(out)
    assert [s["entries"] for s in manifest["shards"]] == [5, 5, 2]


def test_argument_errors_in_a_real_process_exit_2(tmp_path: Path) -> None:
    """argparse's errors leave through ``SystemExit``, not ``main``'s return: the shell still sees 2."""
    mistyped = run_cli_process(["stauts", tmp_path])
    assert mistyped.returncode == 2 and "(did you mean 'status'?)" in mistyped.stderr
    assert "Traceback" not in mistyped.stderr and mistyped.stdout == ""
