"""Bad input: exit status 2, one clear ``planner: `` line per problem, nothing written.

"Nothing written" means the --out directory does not exist afterwards and no
``.NAME.tmp-*`` directory is left beside it.  Each case builds its own sheet and
defaults in tmp_path and runs ``planner.cli.main`` in-process; tests/integration/test_cli_process.py
runs a few of these cases in a real child process to prove no traceback reaches the user.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers import (
    assert_clean_stderr,
    assert_nothing_written,
    defaults_for,
    plan_argv,
    run_cli,
    to_toml,
    write_csv,
)

import planner

Case = Callable[[Path], tuple[list[Any], list[str]]]


# Each case returns (argv, fragments every one of which stderr must contain).


def case_duplicate_ids(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(
        tmp_path / "sheet.csv",
        ["sample", "x"],
        [["a", "1"], ["b", "2"], ["a", "3"], ["b", "4"], ["a", "5"], ["c", "6"]],
    )
    return plan_argv(tmp_path, sheet), ["rows 1, 3, 5", "rows 2, 4", "'a'", "'b'", "'sample'", "--group"]


def case_missing_id_column(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["name_of_sample", "x"], [["a", "1"]])
    return plan_argv(tmp_path, sheet), ["no id column", "--id-column", "sample_id"]


def case_unknown_type(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "threads"], [["a", "1"]])
    return plan_argv(tmp_path, sheet, defaults=defaults_for("omics-batch", sheet={"types": {"threads": "integer"}})), [
        "[sheet.types]",
        "threads",
        "'integer'",
        "unknown type",
    ]


def case_name_too_long(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "name"], [["a", "ok"], ["b", "n" * 129]])
    return plan_argv(tmp_path, sheet), ["row 2", "'b'", "'name'", "at most 128", "[max]"]


def case_bad_enum_in_row(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "logLevel"], [["a", "ALL"], ["b", "LOUD"]])
    return plan_argv(tmp_path, sheet, backend="omics-run"), ["row 2", "'logLevel'", "'LOUD'", "[enum]"]


def case_bad_pattern(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(
        tmp_path / "sheet.csv", ["sample", "outputBucketOwnerId"], [["a", "123456789012"], ["b", "abcdefghijkl"]]
    )
    return plan_argv(tmp_path, sheet), ["row 2", "'outputBucketOwnerId'", "'abcdefghijkl'", "[pattern]"]


def case_short_owner_id(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "outputBucketOwnerId"], [["a", "abc"]])
    return plan_argv(tmp_path, sheet), ["row 1", "'outputBucketOwnerId'", "'abc'", "[min]", "[pattern]"]


def case_output_uri_not_s3(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(
        tmp_path / "sheet.csv", ["sample", "outputUri"], [["a", "s3://ok/"], ["b", "https://bucket/out/"]]
    )
    return plan_argv(tmp_path, sheet), ["row 2", "'outputUri'", "s3://", "[prefix]"]


def case_too_many_tags(tmp_path: Path) -> tuple[list[Any], list[str]]:
    header = ["sample"] + [f"tag.k{i}" for i in range(51)]
    sheet = write_csv(tmp_path / "sheet.csv", header, [["a"] + ["v"] * 51])
    defaults = defaults_for("omics-batch")
    defaults["run"].pop("runTags")
    return plan_argv(tmp_path, sheet, defaults=defaults), ["row 1", "'a'", "at most 50", "[max-tags]"]


def case_too_many_tags_with_defaults(tmp_path: Path) -> tuple[list[Any], list[str]]:
    header = ["sample"] + [f"tag.k{i}" for i in range(50)]
    rows = [["full"] + ["v"] * 50, ["fine"] + ["v"] * 49 + [None]]
    sheet = write_csv(tmp_path / "sheet.csv", header, rows)  # the default tag 'project' makes 51 on row 1 only
    return plan_argv(tmp_path, sheet), ["row 1", "'full'", "[max-tags]"]


def case_ready2run_workflow_in_a_batch(tmp_path: Path) -> tuple[list[Any], list[str]]:
    # "Batch runs are not supported with READY2RUN workflows" (model doc of DefaultRunSetting.workflowType).
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "x"], [["a", "1"]])
    defaults = defaults_for("omics-batch")
    defaults["run"]["workflowType"] = "READY2RUN"
    return plan_argv(tmp_path, sheet, defaults=defaults), ["workflowType", "'READY2RUN'", "omics-run", "[ready2run]"]


def case_priority_not_integer(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], [["a", "10"], ["b", "high"]])
    return plan_argv(tmp_path, sheet), ["row 2", "'b'", "'priority'", "'high'", "integer", "[type]"]


def case_priority_out_of_range(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], [["a", "100001"], ["b", "-1"]])
    return plan_argv(tmp_path, sheet), ["row 1", "at most 100000", "row 2", "at least 0"]


def case_more_fields_than_header(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,x\na,1\nb,2,3\n", encoding="utf-8")
    return plan_argv(tmp_path, sheet), ["sheet.csv", "more"]


def case_empty_file(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(b"")
    return plan_argv(tmp_path, sheet), ["sheet.csv", "empty"]


def case_header_only(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,fastq_1\n", encoding="utf-8")
    return plan_argv(tmp_path, sheet), ["sheet.csv", "no rows"]


def case_tab_separated_named_csv(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample\tfastq_1\na\ts3://r/a.fq\n", encoding="utf-8")
    return plan_argv(tmp_path, sheet), ["sheet.csv", "tab"]


def case_unknown_field_in_run(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    defaults = defaults_for("omics-batch")
    defaults["run"]["workflowIdd"] = "1"
    # Problems in the defaults are printed one per line, like a row's.
    return plan_argv(tmp_path, sheet, defaults=defaults), [
        "1 problem",
        "planner: error: ",
        "'[run] workflowIdd'",
        "[unknown-field]",
    ]


def case_unknown_section(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    defaults = defaults_for("omics-batch", runs={"x": 1})
    return plan_argv(tmp_path, sheet, defaults=defaults), ["unknown section", "runs"]


def case_set_without_equals(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    return plan_argv(tmp_path, sheet, "--set", "outputUri"), ["--set", "'outputUri'", "KEY=VALUE"]


def case_list_columns_without_group(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "fastq_1"], [["a", "x"]])
    return plan_argv(tmp_path, sheet, "--list-columns", "fastq_1"), ["--list-columns", "--group"]


def case_list_column_not_in_sheet(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "fastq_1"], [["a", "x"]])
    return plan_argv(tmp_path, sheet, "--group", "--list-columns", "fastq_1,fastq_3"), ["'fastq_3'"]


def case_nonexistent_sheet(tmp_path: Path) -> tuple[list[Any], list[str]]:
    return plan_argv(tmp_path, tmp_path / "missing.csv"), ["missing.csv", "no such file"]


def case_nonexistent_defaults(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    return plan_argv(tmp_path, sheet, defaults=tmp_path / "nope.toml"), ["nope.toml", "cannot read"]


def case_invalid_toml(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    defaults = tmp_path / "bad.toml"
    defaults.write_text("[run\nworkflowId = 1\n", encoding="utf-8")
    return plan_argv(tmp_path, sheet, defaults=defaults), ["bad.toml", "TOML"]


def case_unknown_format(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = tmp_path / "sheet.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    return plan_argv(tmp_path, sheet), ["sheet.xlsx", "unknown sheet format"]


def case_empty_id(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "x"], [["a", "1"], [None, "2"]])
    return plan_argv(tmp_path, sheet), ["row 2", "'sample'", "empty"]


def case_missing_required_output_uri(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "outputUri"], [["a", "s3://b/a/"], ["b", None]])
    defaults = defaults_for("omics-batch")
    defaults["run"].pop("outputUri")
    return plan_argv(tmp_path, sheet, defaults=defaults), ["row 2", "'outputUri'", "[required]"]


def case_inline_for_other_backend(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"], ["b"]])
    return plan_argv(tmp_path, sheet, "--inline", backend="batch"), ["--inline", "omics-batch"]


def case_non_positive_limit(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    return plan_argv(tmp_path, sheet, "--max-entries", "0"), ["--max-entries"]


def case_run_larger_than_max_bytes(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "x"], [["a", "short"], ["b", "y" * 500]])
    return plan_argv(tmp_path, sheet, "--max-bytes", "300"), ["row 2", "'b'", "[max-bytes]"]


def case_tag_on_backend_without_tags(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "tag.cohort"], [["a", "x"]])
    return plan_argv(tmp_path, sheet, backend="batch"), ["'tag.cohort'", "param.cohort"]


def case_two_columns_one_parameter(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "threads", "param.threads"], [["a", "1", "2"]])
    return plan_argv(tmp_path, sheet), ["'threads'", "'param.threads'", "parameters.threads"]


def case_id_too_long(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "x"], [["a", "1"], ["s" * 129, "2"]])
    return plan_argv(tmp_path, sheet), ["row 2", "'sample'", "at most 128", "[max]"]


def case_tag_key_too_long(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "tag." + "k" * 129], [["a", "v"]])
    return plan_argv(tmp_path, sheet), ["1 problem", "planner: error: ", "key must be at most 128 characters", "[max]"]


def case_tag_value_too_long(tmp_path: Path) -> tuple[list[Any], list[str]]:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "tag.note"], [["a", "v"], ["b", "v" * 257]])
    return plan_argv(tmp_path, sheet), ["row 2", "'tag.note'", "at most 256", "[max]"]


CASES: dict[str, Case] = {name[len("case_") :]: fn for name, fn in list(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_and_writes_nothing(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, fragments = CASES[name](tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2, err
    assert out == ""
    assert_clean_stderr(err)
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in stderr:\n{err}"
    assert_nothing_written(tmp_path / "plan")


# ---------------------------------------------------------------- the problems themselves (Python API)


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "sheet.csv",
        ["sample", "priority", "outputUri"],
        [["a", "high", "s3://ok/"], ["b", "5", "s3://ok/"], ["c", "1", "gs://nope/"], ["d", "x", "ftp://"]],
    )
    plan = planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"))
    with pytest.raises(planner.ValidationError) as caught:
        plan.write(tmp_path / "plan")
    found = sorted((p.row, p.id, p.column, p.value, p.rule) for p in caught.value.problems)
    assert found == [
        (1, "a", "priority", "high", "type"),
        (3, "c", "outputUri", "gs://nope/", "prefix"),
        (4, "d", "outputUri", "ftp://", "prefix"),
        (4, "d", "priority", "x", "type"),
    ]
    assert_nothing_written(tmp_path / "plan")


def test_two_bad_rows_are_two_lines_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], [["a", "high"], ["b", "1"], ["c", "low"]])
    code, _, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert [line for line in lines if "[type]" in line] == [
        "planner: error: row 1 (id 'a'), column 'priority' = 'high': must be an integer for priority [type]",
        "planner: error: row 3 (id 'c'), column 'priority' = 'low': must be an integer for priority [type]",
    ]
    assert lines[-1] == "planner: 2 problems found; nothing was written"


def test_default_problems_are_reported_with_their_fields() -> None:
    defaults = defaults_for("omics-batch")
    defaults["run"].update(storageType="FAST", logLevel="LOUD", outputUri="https://b/o/", bogus=1)
    defaults["submission"]["nope"] = 1
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(pl.DataFrame({"sample": ["a"]}), backend="omics-batch", defaults=defaults)
    found = {(p.column, p.rule) for p in caught.value.problems}
    assert found == {
        ("[run] storageType", "enum"),
        ("[run] logLevel", "enum"),
        ("[run] outputUri", "prefix"),
        ("[run] bogus", "unknown-field"),
        ("[submission] nope", "unknown-field"),
    }
    assert all(p.row is None for p in caught.value.problems)


def test_default_problems_are_printed_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"]])
    defaults = defaults_for("omics-batch")
    defaults["run"]["storageType"] = "FAST"
    code, out, err = run_cli(plan_argv(tmp_path, sheet, defaults=defaults), capsys)
    assert code == 2 and out == ""
    assert_clean_stderr(err)
    line = next(line for line in err.splitlines() if "storageType" in line)
    assert line.startswith("planner: error: ") and "'FAST'" in line and "[enum]" in line
    assert err.strip().splitlines()[-1] == "planner: 1 problem found; nothing was written"
    assert_nothing_written(tmp_path / "plan")


def test_malformed_csv_names_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,x\na,1\nb,2\nc,3,4\nd,5\n", encoding="utf-8")
    code, out, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 2 and out == ""
    assert_clean_stderr(err)
    assert "row 3 (3 cells, the header has 2)" in err
    assert_nothing_written(tmp_path / "plan")


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        # Rows are data records: a quoted cell spanning two lines is one row.
        ("sheet.tsv", b'sample\tx\na\t"l1\nl2"\nb\t2\t3\n', "row 2 (3 cells, the header has 2) has more cells"),
        (
            "sheet.csv",
            b'\xef\xbb\xbfsample,x\r\na,"q,\r\nq"\r\nb,2\r\nc,3,4,5\r\n',
            "row 3 (4 cells, the header has 2) has more cells",
        ),
        # Fewer: polars alone would fill the missing cells with nulls and plan the row with defaults.
        (
            "sheet.csv",
            b"sample,x,outputUri\na,1,s3://o/a/\nb,2\nc,3,s3://o/c/\n",
            "row 2 (2 cells, the header has 3) has fewer cells",
        ),
        # The file was cut short: its last line has no end and lacks a cell.
        ("sheet.csv", b"sample,x\na,1\nb,2\nc", "row 3 (1 cell, the header has 2) has fewer cells"),
        ("sheet.tsv", b"sample\tx\na\t1\nb\n", "row 2 (1 cell, the header has 2) has fewer cells"),
        # Quoted separators and newlines: counting separators cannot tell, the parser can.
        (
            "sheet.csv",
            b'sample,x,y\na,"1,5","l1\nl2"\nb,"2,5"\nc,3,4\n',
            "row 2 (2 cells, the header has 3) has fewer cells",
        ),
        (
            "sheet.csv",
            b'\xef\xbb\xbf"sample","x"\r\n"a","1"\r\n"b"\r\n',
            "row 2 (1 cell, the header has 2) has fewer cells",
        ),
    ],
)
def test_a_ragged_row_is_refused_by_its_record_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, data: bytes, fragment: str
) -> None:
    sheet = tmp_path / name
    sheet.write_bytes(data)
    code, out, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 2 and out == ""
    assert_clean_stderr(err)
    assert fragment in err
    assert_nothing_written(tmp_path / "plan")


@pytest.mark.parametrize(
    "data",
    [
        b'sample,x,y\na,"1,5","l1\nl2"\nb,",",""\n',  # separators and newlines inside quotes
        b"sample,x\na,\nb,\n",  # empty cells are cells
        b"sample,x\r\na,1\r\nb,2",  # CRLF, no newline at the end
        b'sample,"x\ny"\na,\n',  # a quoted header spanning two lines (found by the property test)
    ],
)
def test_rows_with_every_cell_are_not_taken_for_short_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(data)
    code, _, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 0, err
    assert (tmp_path / "plan" / "plan.json").is_file()


def test_a_blank_line_is_an_empty_row_not_a_short_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(b"sample,x\na,1\n\nb,2\n")
    code, _, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 2
    assert "fewer cells" not in err and "row 2" in err and "empty" in err
    assert_nothing_written(tmp_path / "plan")


# ---------------------------------------------------------------- --skip-invalid


def test_skip_invalid_writes_rejected_csv_and_plans_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = write_csv(
        tmp_path / "sheet.csv",
        ["sample", "priority", "x"],
        [["a", "1", "p"], ["b", "high", "q"], ["c", "2", "r"], ["d", "3", "s"], ["d", "4", "t"], ["e", None, "u"]],
    )
    out = tmp_path / "plan"
    code, stdout, err = run_cli(plan_argv(tmp_path, sheet, "--skip-invalid"), capsys)
    assert code == 0, err
    assert "skipped" in err and "row 2" in err
    rejected = pl.read_csv(out / "rejected.csv", infer_schema=False)
    assert rejected.columns == ["row", "id", "column", "value", "rule", "message"]
    assert sorted(set(rejected.get_column("id").to_list())) == ["b", "d"]  # both rows of the repeated id
    assert sorted(set(rejected.get_column("row").cast(pl.Int64).to_list())) == [2, 4, 5]
    assert ("2", "b", "priority", "high", "type") in rejected.select("row", "id", "column", "value", "rule").rows()
    manifest = planner.read_plan(out).to_json()
    assert manifest["runs"] == 3 and manifest["rejected"] == 3 and manifest["sheet"]["rows"] == 6
    entries = [e for s in manifest["shards"] for e in pl.read_json(out / s["path"]).rows(named=True)]
    assert [e["runSettingId"] for e in entries] == ["a", "c", "e"]
    samples = pl.read_parquet(out / "samples.parquet")
    assert samples.get_column("id").to_list() == ["a", "c", "e"]
    assert samples.get_column("row").to_list() == [1, 3, 6]
    assert "3 rows rejected" in stdout


def test_without_skip_invalid_there_is_no_rejected_csv(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], [["a", "1"]])
    planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch")).write(tmp_path / "plan")
    assert not (tmp_path / "plan" / "rejected.csv").exists()


def test_skip_invalid_with_every_row_bad_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], [["a", "x"], ["b", "y"]])
    code, _, err = run_cli(plan_argv(tmp_path, sheet, "--skip-invalid"), capsys)
    assert code == 2
    assert_clean_stderr(err)
    assert_nothing_written(tmp_path / "plan")


# ---------------------------------------------------------------- the --out directory


def test_existing_out_without_force_is_exit_2_and_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"], ["b"]])
    out = tmp_path / "plan"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    code, _, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 2
    assert "already exists" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_force_refuses_a_directory_that_is_not_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"], ["b"]])
    out = tmp_path / "plan"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    code, _, err = run_cli(plan_argv(tmp_path, sheet, "--force"), capsys)
    assert code == 2
    assert "not a plan directory" in err
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_force_replaces_an_earlier_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan"
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"], ["b"]])
    assert run_cli(plan_argv(tmp_path, sheet), capsys)[0] == 0
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["c"]])
    assert run_cli(plan_argv(tmp_path, sheet, "--force"), capsys)[0] == 0
    assert planner.read_plan(out).to_json()["runs"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".plan.tmp-")] == []


def test_failed_replan_with_force_keeps_the_old_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan"
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"], ["b"]])
    assert run_cli(plan_argv(tmp_path, sheet), capsys)[0] == 0
    before = (out / "plan.json").read_bytes()
    bad = write_csv(tmp_path / "bad.csv", ["sample", "priority"], [["c", "high"]])
    code, _, _ = run_cli(plan_argv(tmp_path, bad, "--force"), capsys)
    assert code == 2
    assert (out / "plan.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".plan.tmp-")] == []


def test_submitted_plan_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan"
    sheet = write_csv(tmp_path / "sheet.csv", ["sample"], [["a"], ["b"]])
    assert run_cli(plan_argv(tmp_path, sheet), capsys)[0] == 0
    (out / "ledger.sqlite").write_bytes(b"")
    code, _, err = run_cli(plan_argv(tmp_path, sheet, "--force"), capsys)
    assert code == 2  # refused as input: the directory is the record of what was sent, and nothing is written
    assert "ledger.sqlite" in err
    assert (out / "ledger.sqlite").exists()


# ---------------------------------------------------------------- long problem lists


def test_more_than_20_problems_says_where_the_full_list_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [[f"s{i:02d}", "bad"] for i in range(30)] + [["good", "5"]]
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], rows)
    code, _, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 2
    assert_clean_stderr(err)
    lines = err.strip().splitlines()
    assert len([line for line in lines if line.startswith("planner: error: row ")]) == 20
    listing = tmp_path / "plan.problems.csv"
    assert f"10 more; the full list is in {listing}" in err
    problems = pl.read_csv(listing, infer_schema=False)
    assert problems.columns == ["row", "id", "column", "value", "rule", "message"]
    assert problems.height == 30
    assert problems.get_column("id").to_list() == [f"s{i:02d}" for i in range(30)]
    assert_nothing_written(tmp_path / "plan")


def test_twenty_problems_are_all_shown_without_a_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [[f"s{i:02d}", "bad"] for i in range(20)]
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], rows)
    code, _, err = run_cli(plan_argv(tmp_path, sheet), capsys)
    assert code == 2
    assert len([line for line in err.splitlines() if line.startswith("planner: error: row ")]) == 20
    assert "full list" not in err
    assert not (tmp_path / "plan.problems.csv").exists()


def test_defaults_toml_written_by_helper_round_trips(tmp_path: Path) -> None:
    """The tests' own TOML writer produces what tomllib reads back (guards the other tests)."""
    document = defaults_for("omics-batch", sheet={"types": {"a b": "int"}})
    document["run"]["parameters"]['odd "key"'] = "line\nbreak\x7f"
    assert tomllib.loads(to_toml(document)) == document


@pytest.mark.parametrize("batch_rows", [1, 3, 50_000])
def test_repeated_ids_found_across_batches(tmp_path: Path, batch_rows: int) -> None:
    """Repeats far apart (in different streaming batches) are found, every row named."""
    ids = [f"s{i}" for i in range(10)] + ["s2", "s7", "x", "s2"]
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "n"], [[sample, str(i)] for i, sample in enumerate(ids)])
    plan = planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"))
    plan.options = dataclasses.replace(plan.options, batch_rows=batch_rows)
    with pytest.raises(planner.ValidationError) as caught:
        plan.write(tmp_path / "plan")
    assert [(p.row, p.id, p.rule) for p in caught.value.problems] == [(3, "s2", "unique"), (8, "s7", "unique")]
    assert "rows 3, 11, 14" in caught.value.problems[0].message
    assert "rows 8, 12" in caught.value.problems[1].message
    assert_nothing_written(tmp_path / "plan")

    skipping = planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), skip_invalid=True)
    skipping.options = dataclasses.replace(skipping.options, batch_rows=batch_rows)
    manifest = skipping.write(tmp_path / "plan").to_json()
    samples = pl.read_parquet(tmp_path / "plan" / "samples.parquet")
    assert samples.get_column("id").to_list() == [i for i in ids if i not in ("s2", "s7")]
    assert manifest["rejected"] == 5
    rejected = pl.read_csv(tmp_path / "plan" / "rejected.csv", infer_schema=False)
    assert sorted(set(rejected.get_column("row").cast(pl.Int64).to_list())) == [3, 8, 11, 12, 14]


def test_failed_plan_creates_no_parent_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority"], [["a", "high"]])
    argv = plan_argv(tmp_path, sheet)
    argv[argv.index("--out") + 1] = tmp_path / "deep" / "er" / "plan"
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert_clean_stderr(err)
    assert not (tmp_path / "deep").exists()
