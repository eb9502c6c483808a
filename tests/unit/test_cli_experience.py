"""The first hour of a new user, through the installed entry point: exit codes, names a person mistypes,
help that answers, output that says what happened; and a Python API as informative as the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers import SAMPLE_SHEETS, defaults_for, write_csv, write_defaults

import planner

ROOT = Path(__file__).resolve().parents[2]


def _planner(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planner.cli", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["submit", "status", "cancel", "report", "clean"])
def test_a_path_that_is_not_a_plan_is_invalid_input(tmp_path: Path, command: str) -> None:
    """Was a bug: `planner submit` on a missing path or a folder that is not a plan exited 1."""
    extra = ["--out", str(tmp_path / "r.html")] if command == "report" else []
    missing = _planner(command, tmp_path / "nowhere", *extra)
    assert missing.returncode == 2 and "no such plan directory" in _one_line(missing.stderr)
    (tmp_path / "empty").mkdir()
    empty = _planner(command, tmp_path / "empty", *extra)
    assert empty.returncode == 2 and "not a plan directory (no plan.json)" in _one_line(empty.stderr)


def test_retry_of_a_folder_that_is_not_a_plan_is_invalid_input(tmp_path: Path) -> None:
    done = _planner("retry", tmp_path, "--out", tmp_path / "r")
    assert done.returncode == 2 and "not a plan directory" in _one_line(done.stderr)


def test_a_mistyped_backend_is_named(tmp_path: Path) -> None:
    done = _planner(
        "plan",
        SAMPLE_SHEETS / "omics_batch_samples.csv",
        "--backend",
        "omics_batch",
        "--defaults",
        SAMPLE_SHEETS / "omics_batch_defaults.toml",
        "--out",
        tmp_path / "p",
    )
    assert done.returncode == 2
    assert "--backend 'omics_batch' (did you mean 'omics-batch'?)" in _one_line(done.stderr)
    assert not (tmp_path / "p").exists()


def test_a_mistyped_list_column_is_named(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "fastq_1", "fastq_2"], [["a", "x", "y"]])
    done = _planner(
        "plan",
        sheet,
        "-b",
        "omics-batch",
        "-d",
        write_defaults(tmp_path / "d.toml", defaults_for("omics-batch")),
        "-o",
        tmp_path / "p",
        "--group",
        "--list-columns",
        "fastq1,fastq_2",
    )
    assert done.returncode == 2 and "'fastq1' (did you mean 'fastq_1'?)" in _one_line(done.stderr)


def test_a_mistyped_retry_state_is_named(tmp_path: Path) -> None:
    plan_dir = tmp_path / "p"
    planner.plan(pl.DataFrame({"sample": ["a"]}), backend="omics-batch", defaults=defaults_for("omics-batch")).write(
        plan_dir
    )
    done = _planner("retry", plan_dir, "--out", tmp_path / "r", "--states", "FAILD")
    assert done.returncode == 2 and "--states 'FAILD' (did you mean 'FAILED'?)" in _one_line(done.stderr)


def test_every_command_explains_itself_with_an_example() -> None:
    commands = ("plan", "submit", "status", "retry", "cancel", "report", "clean", "check", "policy")
    for command in (*commands, "child-settings", "sandbox"):
        shown = _planner(command, "--help")
        assert shown.returncode == 0 and len(shown.stdout) > 400, command
        assert "Example" in shown.stdout, command
        if command in ("submit", "status", "retry", "cancel", "report", "clean"):
            assert "a plan directory written by `planner plan`" in shown.stdout, command
    assert "Polly's API has no cancel" in _planner("cancel", "--help").stdout.replace("\n", " ")
    sandbox = _planner("sandbox", "--help").stdout
    assert "PLANNER_SANDBOX_DIR" in sandbox and "4" in sandbox and "moto" in sandbox


def test_plan_says_sizes_in_one_unit_style(tmp_path: Path) -> None:
    done = _planner(
        "plan",
        SAMPLE_SHEETS / "omics_batch_samples.csv",
        "-b",
        "omics-batch",
        "-d",
        SAMPLE_SHEETS / "omics_batch_defaults.toml",
        "-o",
        tmp_path / "p",
    )
    assert done.returncode == 0, done.stderr
    assert " kB" in done.stdout and "bytes" not in done.stdout  # 3.7 kB, not "3,741 bytes"
    assert done.stderr == ""  # a 12-row sheet flashes no progress bar


def test_submit_dry_run_of_a_submitted_plan_says_nothing_would_be_sent(tmp_path: Path) -> None:
    from helpers import ledger_of

    plan_dir = tmp_path / "p"
    manifest = planner.plan(
        pl.DataFrame({"sample": ["a", "b"]}), backend="omics-batch", defaults=defaults_for("omics-batch")
    ).write(plan_dir)
    ledger = ledger_of(plan_dir) if (plan_dir / "ledger.sqlite").exists() else None
    assert ledger is None
    from planner.core.ledger import Ledger

    ledger = Ledger.open(plan_dir, manifest.plan_id, manifest.backend)
    ledger.intent("StartRunBatch:00000", "StartRunBatch", shard=0, token="t")
    ledger.result("StartRunBatch:00000", "1234", {"id": "1234"})
    ledger.close()
    done = _planner("submit", plan_dir, "--dry-run")
    assert done.returncode == 0 and done.stdout == ""  # no request would be sent
    assert "nothing would be sent" in done.stderr and "1 already submitted" in done.stderr


# ---------------------------------------------------------------- the Python API


def test_a_plan_shows_its_problems_before_anything_is_written(tmp_path: Path) -> None:
    """Was a bug: planner.plan("dup.csv") gave a Plan whose problems were [] and an error only at write(),
    whose message named no problem: a notebook's traceback showed nothing useful."""
    sheet = write_csv(tmp_path / "dup.csv", ["sample", "priority"], [["a", "1"], ["a", "2"], ["b", "x"]])
    plan = planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"))
    assert "rows not read yet" in repr(plan) and "omics-batch" in repr(plan)
    problems = plan.check()
    assert [(p.row, p.rule) for p in problems] == [(1, "unique"), (3, "type")]
    assert repr(plan).endswith("3 rows, 2 problems>")
    with pytest.raises(planner.ValidationError) as caught:
        plan.write(tmp_path / "out")
    message = str(caught.value)
    assert message.startswith("2 problems found; nothing was written: row 1 (id 'a'), column 'sample'")
    assert "row 3 (id 'b'), column 'priority' = 'x'" in message and not (tmp_path / "out").exists()


def test_a_written_plan_says_where_and_how_many_runs_and_shards(tmp_path: Path) -> None:
    plan = planner.plan(
        SAMPLE_SHEETS / "omics_batch_samples.csv",
        backend="omics-batch",
        defaults=SAMPLE_SHEETS / "omics_batch_defaults.toml",
        max_entries=5,
    )
    plan.write(tmp_path / "out")
    assert repr(plan).endswith(f"12 rows, 0 problems; written to {tmp_path / 'out'}: 12 runs in 3 shards>")


def test_a_sheet_given_where_a_plan_is_expected_is_told_apart() -> None:
    done = _planner("submit", SAMPLE_SHEETS / "omics_batch_samples.csv")
    assert done.returncode == 2 and "is a file, not a plan directory; to plan it: `planner plan" in _one_line(
        done.stderr
    )


def test_argument_errors_are_one_line_with_did_you_mean(tmp_path: Path) -> None:
    """argparse printed its usage block first; a mistyped command or option was not named."""
    command = _planner("stauts", tmp_path)
    assert command.returncode == 2 and "(did you mean 'status'?)" in _one_line(command.stderr)
    option = _planner("submit", tmp_path, "--dryrun")
    line = _one_line(option.stderr)
    assert option.returncode == 2 and line.startswith("planner submit: error: unrecognized arguments: --dryrun")
    assert "(did you mean '--dry-run'?)" in line and line.endswith("see `planner submit --help`")
    bad_value = _planner("status", tmp_path, "--interval", "0")
    assert bad_value.returncode == 2 and "--interval" in _one_line(bad_value.stderr)


def test_status_out_is_checked_before_any_refresh(tmp_path: Path) -> None:
    """Was a bug: a bad --out was refused only after the refresh (or a whole --watch) had been spent."""
    plan_dir = tmp_path / "plan"
    planner.plan(
        SAMPLE_SHEETS / "omics_batch_samples.csv",
        backend="omics-batch",
        defaults=SAMPLE_SHEETS / "omics_batch_defaults.toml",
    ).write(str(plan_dir))
    # No ledger and an unreachable endpoint: had the refresh come first, it would fail on either.
    for out, said in (
        (tmp_path / "x.xlsx", "use a .csv, .parquet or .jsonl"),
        (tmp_path / "no" / "x.csv", "does not exist"),
    ):
        done = _planner("status", plan_dir, "--watch", "--endpoint-url", "http://127.0.0.1:9", "--out", out)
        assert done.returncode == 2 and said in _one_line(done.stderr), done.stderr


def test_retry_set_errors_name_the_set(tmp_path: Path) -> None:
    from planner.core.ledger import Ledger

    plan_dir = tmp_path / "plan"
    planner.plan(
        SAMPLE_SHEETS / "omics_run_samples.csv",
        backend="omics-run",
        defaults=SAMPLE_SHEETS / "omics_run_defaults.toml",
    ).write(str(plan_dir))
    manifest = planner.read_plan(plan_dir)
    Ledger.open(str(plan_dir), manifest.plan_id, manifest.backend, create=True).close()  # as a submit leaves it
    with pytest.raises(planner.ValidationError) as caught:
        planner.retry(str(plan_dir), str(tmp_path / "r"), sets=["workflowID=2"], refresh=False)
    (problem,) = caught.value.problems
    assert problem.describe().startswith("sets 'workflowID': is not a field of this request (did you mean")  # API
