"""The first hour of a new user, through the CLI (``planner.cli.main``, in-process): exit codes, names a
person mistypes, help that answers, output that says what happened; and a Python API as informative as
the CLI. tests/integration/test_cli_process.py runs the CLI as a real process."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from helpers import SAMPLE_SHEETS, defaults_for, run_cli, write_csv, write_defaults

import planner


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["submit", "status", "cancel", "report", "clean"])
def test_a_path_that_is_not_a_plan_is_invalid_input(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a bug: `planner submit` on a missing path or a folder that is not a plan exited 1."""
    extra = ["--out", str(tmp_path / "r.html")] if command == "report" else []
    missing = run_cli([command, tmp_path / "nowhere", *extra], capsys)
    assert missing.code == 2 and "no such plan directory" in _one_line(missing.err)
    (tmp_path / "empty").mkdir()
    empty = run_cli([command, tmp_path / "empty", *extra], capsys)
    assert empty.code == 2 and "not a plan directory (no plan.json)" in _one_line(empty.err)


def test_retry_of_a_folder_that_is_not_a_plan_is_invalid_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = run_cli(["retry", tmp_path, "--out", tmp_path / "r"], capsys)
    assert done.code == 2 and "not a plan directory" in _one_line(done.err)


def test_a_mistyped_backend_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = run_cli(
        [
            "plan",
            SAMPLE_SHEETS / "omics_batch_samples.csv",
            "--backend",
            "omics_batch",
            "--defaults",
            SAMPLE_SHEETS / "omics_batch_defaults.toml",
            "--out",
            tmp_path / "p",
        ],
        capsys,
    )
    assert done.code == 2
    assert "--backend 'omics_batch' (did you mean 'omics-batch'?)" in _one_line(done.err)
    assert not (tmp_path / "p").exists()


def test_a_mistyped_list_column_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "fastq_1", "fastq_2"], [["a", "x", "y"]])
    done = run_cli(
        [
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
        ],
        capsys,
    )
    assert done.code == 2 and "'fastq1' (did you mean 'fastq_1'?)" in _one_line(done.err)


def test_a_mistyped_retry_state_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_dir = tmp_path / "p"
    planner.plan(pl.DataFrame({"sample": ["a"]}), backend="omics-batch", defaults=defaults_for("omics-batch")).write(
        plan_dir
    )
    done = run_cli(["retry", plan_dir, "--out", tmp_path / "r", "--states", "FAILD"], capsys)
    assert done.code == 2 and "--states 'FAILD' (did you mean 'FAILED'?)" in _one_line(done.err)


def test_every_command_explains_itself_with_an_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps help to the terminal: as wide as a pipe's, not the tty's
    commands = ("plan", "submit", "status", "retry", "cancel", "report", "clean", "check", "policy")
    for command in (*commands, "child-settings", "sandbox"):
        shown = run_cli([command, "--help"], capsys)
        assert shown.code == 0 and len(shown.out) > 400, command
        assert "Example" in shown.out, command
        if command in ("submit", "status", "retry", "cancel", "report", "clean"):
            assert "a plan directory written by `planner plan`" in shown.out, command
    assert "Polly's API has no cancel" in run_cli(["cancel", "--help"], capsys).out.replace("\n", " ")
    sandbox = run_cli(["sandbox", "--help"], capsys).out
    assert "PLANNER_SANDBOX_DIR" in sandbox and "4" in sandbox and "moto" in sandbox


def test_plan_says_sizes_in_one_unit_style(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = run_cli(
        [
            "plan",
            SAMPLE_SHEETS / "omics_batch_samples.csv",
            "-b",
            "omics-batch",
            "-d",
            SAMPLE_SHEETS / "omics_batch_defaults.toml",
            "-o",
            tmp_path / "p",
        ],
        capsys,
    )
    assert done.code == 0, done.err
    assert " kB" in done.out and "bytes" not in done.out  # 3.7 kB, not "3,741 bytes"
    assert done.err == ""  # a 12-row sheet flashes no progress bar


def test_submit_dry_run_of_a_submitted_plan_says_nothing_would_be_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    done = run_cli(["submit", plan_dir, "--dry-run"], capsys)
    assert done.code == 0 and done.out == ""  # no request would be sent
    assert "nothing would be sent" in done.err and "1 already submitted" in done.err


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


def test_a_sheet_given_where_a_plan_is_expected_is_told_apart(capsys: pytest.CaptureFixture[str]) -> None:
    done = run_cli(["submit", SAMPLE_SHEETS / "omics_batch_samples.csv"], capsys)
    assert done.code == 2 and "is a file, not a plan directory; to plan it: `planner plan" in _one_line(done.err)


def test_argument_errors_are_one_line_with_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse printed its usage block first; a mistyped command or option was not named."""
    command = run_cli(["stauts", tmp_path], capsys)
    assert command.code == 2 and "(did you mean 'status'?)" in _one_line(command.err)
    option = run_cli(["submit", tmp_path, "--dryrun"], capsys)
    line = _one_line(option.err)
    assert option.code == 2 and line.startswith("planner submit: error: unrecognized arguments: --dryrun")
    assert "(did you mean '--dry-run'?)" in line and line.endswith("see `planner submit --help`")
    bad_value = run_cli(["status", tmp_path, "--interval", "0"], capsys)
    assert bad_value.code == 2 and "--interval" in _one_line(bad_value.err)


def test_status_out_is_checked_before_any_refresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
        done = run_cli(["status", plan_dir, "--watch", "--endpoint-url", "http://127.0.0.1:9", "--out", out], capsys)
        assert done.code == 2 and said in _one_line(done.err), done.err


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
