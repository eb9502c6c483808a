"""A newcomer's second hour (issue 29), through the CLI in-process: ids, values, messages that send
the user the right way, and exit codes, with no AWS at all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_nothing_written, run_cli, write_csv

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "sample_sheets"
OMICS = ["--backend", "omics-batch", "--defaults", str(EXAMPLES / "omics_batch_defaults.toml")]
HEADER = ["sample", "strandedness", "fasta", "gtf", "fastq_1"]
CELLS = ["auto", "s3://refs/genome.fa", "s3://refs/genes.gtf", "s3://reads/r1.fq.gz"]  # a row's cells after its id


# ---------------------------------------------------------------- 4. whitespace around ids


def test_ids_with_surrounding_whitespace_are_refused_naming_the_rows(tmp_path: Path, capsys: Any) -> None:
    sheet = write_csv(
        tmp_path / "samples.csv", HEADER, [[i, *CELLS] for i in ("CTRL_REP1", "CTRL_REP2", "CTRL_REP2 ", "\tKO_REP1")]
    )
    code, _, err = run_cli(["plan", sheet, *OMICS, "--out", tmp_path / "plan"], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "[whitespace]" in line]
    assert len(lines) == 2 and lines[0].startswith("planner: error: row 3 (id 'CTRL_REP2 ')"), err
    assert lines[1].startswith("planner: error: row 4 (id '\\tKO_REP1')"), err
    assert_nothing_written(tmp_path / "plan")


# ---------------------------------------------------------------- 5. out-of-range integers


@pytest.mark.parametrize("typed", ["99999999999999999999999999", "10000000000000000000000", "100001"])
def test_an_integer_above_the_fields_maximum_has_one_message_wherever_it_is_typed(
    tmp_path: Path, capsys: Any, typed: str
) -> None:
    expected = f"= '{typed}': must be at most 100000 [max]"
    code, _, err = run_cli(
        ["plan", EXAMPLES / "omics_batch_samples.csv", *OMICS, "--out", tmp_path / "a", "--set", f"priority={typed}"],
        capsys,
    )
    assert code == 2 and expected in err, err
    sheet = write_csv(tmp_path / "samples.csv", [*HEADER, "priority"], [["S1", *CELLS, str(typed)]])
    code, _, err = run_cli(["plan", sheet, *OMICS, "--out", tmp_path / "b"], capsys)
    assert code == 2 and expected in err, err
    defaults = tmp_path / "defaults.toml"
    text = (EXAMPLES / "omics_batch_defaults.toml").read_text(encoding="utf-8")
    defaults.write_text(re.sub(r"(?m)^priority = .*$", f"priority = {typed}", text), encoding="utf-8")
    (tmp_path / "omics_workflow_template.json").write_bytes((EXAMPLES / "omics_workflow_template.json").read_bytes())
    argv = ["plan", EXAMPLES / "omics_batch_samples.csv", "--backend", "omics-batch", "--defaults", defaults]
    code, _, err = run_cli([*argv, "--out", tmp_path / "c"], capsys)
    assert code == 2 and expected in err, err


def test_a_negative_integer_beyond_64_bits_is_below_the_minimum(tmp_path: Path, capsys: Any) -> None:
    sheet = write_csv(tmp_path / "samples.csv", [*HEADER, "priority"], [["S1", *CELLS, "-99999999999999999999999"]])
    code, _, err = run_cli(["plan", sheet, *OMICS, "--out", tmp_path / "b"], capsys)
    assert code == 2 and "= '-99999999999999999999999': must be at least 0 [min]" in err, err


def test_an_integer_beyond_64_bits_where_no_field_rule_applies_is_refused_not_a_crash(
    tmp_path: Path, capsys: Any
) -> None:
    polly = ["--backend", "polly", "--defaults", str(EXAMPLES / "polly_defaults.toml")]
    typed = "99999999999999999999999999"
    argv = ["plan", EXAMPLES / "polly_samples.csv", *polly, "--out", tmp_path / "p", "--set", f"parameters.big={typed}"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "internal error" not in err, err
    assert f"parameters.big = {typed}: must be at most 9223372036854775807 (a 64-bit integer)" in err, err
    assert_nothing_written(tmp_path / "p")


# ---------------------------------------------------------------- 6-8. messages that send the user the right way


def test_a_missing_role_for_omics_batch_does_not_send_the_user_to_a_sheet_column(tmp_path: Path, capsys: Any) -> None:
    text = (EXAMPLES / "omics_batch_defaults.toml").read_text(encoding="utf-8")
    defaults = tmp_path / "defaults.toml"
    defaults.write_text("".join(line for line in text.splitlines(True) if not line.startswith("roleArn")))
    (tmp_path / "omics_workflow_template.json").write_bytes((EXAMPLES / "omics_workflow_template.json").read_bytes())
    argv = ["plan", EXAMPLES / "omics_batch_samples.csv", "--backend", "omics-batch", "--defaults", defaults]
    code, _, err = run_cli([*argv, "--out", tmp_path / "plan"], capsys)
    assert code == 2 and "roleArn" in err and "--set roleArn=" in err, err
    assert "or as a sheet column" not in err and "no sheet column can set it" in err, err


def test_set_memory_for_polly_points_to_config_infra_memory(tmp_path: Path, capsys: Any) -> None:
    polly = ["--backend", "polly", "--defaults", str(EXAMPLES / "polly_defaults.toml")]
    code, _, err = run_cli(
        ["plan", EXAMPLES / "polly_samples.csv", *polly, "--out", tmp_path / "p", "--set", "memory=16"], capsys
    )
    assert code == 2 and "did you mean 'config.infra.memory'?" in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    code, _, err = run_cli(
        ["plan", EXAMPLES / "polly_samples.csv", *polly, "--out", tmp_path / "p", "--set", "config.infra.memory=16"],
        capsys,
    )
    assert code == 0, err


# ---------------------------------------------------------------- 9. exit codes and small things


def test_max_attempts_0_is_refused(tmp_path: Path, capsys: Any) -> None:
    code, _, err = run_cli(["plan", EXAMPLES / "omics_batch_samples.csv", *OMICS, "--out", tmp_path / "plan"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["status", tmp_path / "plan", "--max-attempts", "0"], capsys)
    assert code == 2 and "--max-attempts 0: must be a whole number, 1 or more" in err, err


def test_one_of_a_thing_is_not_plural(tmp_path: Path, capsys: Any) -> None:
    sheet = write_csv(tmp_path / "samples.csv", HEADER, [["S1", *CELLS]])
    code, out, err = run_cli(["plan", sheet, *OMICS, "--out", tmp_path / "plan"], capsys)
    assert code == 0, err
    assert "planned 1 run of 1 row for omics-batch" in out and "; 1 shard (inline)" in out, out


def test_sandbox_status_with_none_running_exits_1(capsys: Any) -> None:
    code, out, _ = run_cli(["sandbox", "status"], capsys)
    assert code == 1 and out.startswith("no sandbox is running")
    code, out, _ = run_cli(["sandbox", "status", "--json"], capsys)
    assert code == 1 and out.strip() == "null"


# ---------------------------------------------------------------- 11. progress without a terminal


class _Clock:
    """Each reading is ``step`` seconds after the last: work that takes long, without waiting."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_without_a_terminal_long_work_prints_a_progress_line_at_most_every_10_s(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import planner.core.progress

    monkeypatch.setattr(planner.core.progress, "monotonic", _Clock(11.0))  # every event comes 11 s after the last
    rows = [[f"S{i:03d}", *CELLS] for i in range(40)]
    code, _, err = run_cli(
        ["plan", write_csv(tmp_path / "samples.csv", HEADER, rows), *OMICS, "--out", tmp_path / "plan"], capsys
    )
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("planner: plan: ")]
    assert lines, err
    shape = r"planner: plan: [\d,]+ (of [\d,]+ )?rows?, [\d,.]+ rows?/s(, done)?"
    assert all(re.fullmatch(shape, line) for line in lines), lines
    code, _, err = run_cli(
        ["plan", write_csv(tmp_path / "samples.csv", HEADER, rows), *OMICS, "--out", tmp_path / "quiet", "-q"], capsys
    )
    assert code == 0 and "planner: plan: " not in err, err


def test_progress_lines_are_10_s_apart_and_say_what_how_many_and_how_fast() -> None:
    import io

    from planner.core.progress import Lines, ProgressEvent

    moments = iter([0.0, 3.0, 9.9, 10.0, 15.0, 20.5, 21.0])
    stream = io.StringIO()
    lines = Lines(stream=stream, clock=lambda: next(moments), every=10.0)
    for done in (0, 100, 200, 300, 400, 500):
        lines(ProgressEvent("refresh", "sample", done, 200_000))
    lines(ProgressEvent("refresh", "sample", 600, 200_000, finished=True))
    assert stream.getvalue().splitlines() == [
        "planner: refresh: 300 of 200,000 samples, 30 samples/s",
        "planner: refresh: 500 of 200,000 samples, 24.4 samples/s",
        "planner: refresh: 600 of 200,000 samples, 28.6 samples/s, done",
    ]
