"""A newcomer's first mistakes, as the planner answers them in a real process.

A misspelt defaults key or ``--set`` key gets "did you mean"; the names a table takes
are listed once, not once per problem; a defaults file written for another backend is
said to be one; a problem in a ``--set`` names the ``--set``; a sheet saved as
Windows-1252 or Latin-1 is refused naming the row, the column and the encoding.
Every case runs the CLI (``planner.cli.main``, in-process) in the test's folder as a user would: exit
status 2, the exact message on stderr, nothing on stdout, nothing written.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import botocore.session
import pytest
from helpers import SAMPLE_SHEETS, assert_nothing_written, defaults_for, plan_argv, run_cli, write_defaults

from planner.errors import Problem

# What [run] takes for omics-batch: StartRunBatch's defaultRunSetting members in the installed botocore
# model, sorted (botocore 1.44 added requesterPaysEnabled; the floor in pyproject.toml is older).
OMICS_BATCH_FIELDS = ", ".join(
    sorted(
        botocore.session.get_session()
        .get_service_model("omics")
        .shape_for("StartRunBatchRequest")
        .members["defaultRunSetting"]
        .members
    )
)


HERE = Path(".")  # every test runs in its tmp_path (``at_home``): the paths in messages are as a user types them


@pytest.fixture(autouse=True)
def at_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's tmp_path is the working directory, with a one-row ``sheet.csv`` a test may replace."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sheet.csv").write_text("sample,fastq_1\nA,s3://b/a.fq\n", encoding="utf-8")


def _refused(result: tuple[int, str, str], tmp_path: Path) -> list[str]:
    """The stderr lines of a run refused as bad input."""
    code, out, err = result
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert_nothing_written(tmp_path / "plan")
    return err.splitlines()


# Item 8: "did you mean" for defaults keys and --set keys; a field is a field; --set is named.


def test_a_misspelt_run_field_is_offered_the_right_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = defaults_for("omics-batch")
    document["run"]["workflowID"] = document["run"].pop("workflowId")
    lines = _refused(run_cli(plan_argv(HERE, "sheet.csv", defaults=document), capsys), tmp_path)
    # The missing workflowId is not reported again: the suggestion says it.
    assert lines == [
        "planner: error: defaults, field '[run] workflowID': is not a field of this request "
        f"(did you mean 'workflowId'?); [run] takes {OMICS_BATCH_FIELDS} [unknown-field]",
        "planner: 1 problem found; nothing was written",
    ]


def test_several_unknown_fields_list_the_known_ones_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = defaults_for("omics-batch")
    document["run"].update(priorty=1, storagetype="STATIC", bogus=1)
    lines = _refused(run_cli(plan_argv(HERE, "sheet.csv", defaults=document), capsys), tmp_path)
    assert lines == [
        "planner: error: defaults, field '[run] priorty': is not a field of this request "
        f"(did you mean 'priority'?); [run] takes {OMICS_BATCH_FIELDS} [unknown-field]",
        "planner: error: defaults, field '[run] storagetype': is not a field of this request "
        "(did you mean 'storageType'?) [unknown-field]",
        "planner: error: defaults, field '[run] bogus': is not a field of this request [unknown-field]",
        "planner: 3 problems found; nothing was written",
    ]


def test_an_unknown_submission_key_is_offered_the_right_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = defaults_for("omics-batch")
    document["submission"] = {"batchname": "x"}
    lines = _refused(run_cli(plan_argv(HERE, "sheet.csv", defaults=document), capsys), tmp_path)
    assert lines == [
        "planner: error: defaults, field '[submission] batchname': is not a field of this request "
        "(did you mean 'batchName'?); [submission] takes batchName, tags [unknown-field]",
        "planner: 1 problem found; nothing was written",
    ]


def test_a_nested_unknown_field_lists_its_own_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = defaults_for("batch")
    document["run"]["retryStrategy"] = {"atempts": 2}
    lines = _refused(run_cli(plan_argv(HERE, "sheet.csv", backend="batch", defaults=document), capsys), tmp_path)
    assert lines == [
        "planner: error: defaults, field '[run] retryStrategy.atempts': is not a field of this request "
        "(did you mean 'attempts'?); [run] retryStrategy takes attempts, evaluateOnExit [unknown-field]",
        "planner: 1 problem found; nothing was written",
    ]


@pytest.mark.parametrize(
    ("assignment", "line"),
    [
        (
            "priorty=3",
            "planner: error: --set 'priorty': is not a field of this request (did you mean 'priority'?); "
            f"[run] takes {OMICS_BATCH_FIELDS} [unknown-field]",
        ),
        (
            "submission.batchNam=x",
            "planner: error: --set 'submission.batchNam': is not a field of this request "
            "(did you mean 'batchName'?); [submission] takes batchName, tags [unknown-field]",
        ),
        (
            "submision.batchName=x",  # a misspelt table lands in [run]
            "planner: error: --set 'submision': is not a field of this request (did you mean 'submission'?); "
            f"[run] takes {OMICS_BATCH_FIELDS} [unknown-field]",
        ),
        ("storageType=FAST", "planner: error: --set 'storageType' = 'FAST': must be one of STATIC, DYNAMIC [enum]"),
    ],
)
def test_a_problem_in_a_set_names_the_set(
    tmp_path: Path, assignment: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _refused(run_cli(plan_argv(HERE, "sheet.csv", "--set", assignment), capsys), tmp_path)
    assert lines == [line, "planner: 1 problem found; nothing was written"]


def test_a_set_key_unknown_to_polly_is_offered_the_right_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(
        plan_argv(HERE, "sheet.csv", "--set", "config.infra.cpus=4", "--set", "paramters.a=1", backend="polly"), capsys
    )
    assert _refused(result, tmp_path) == [
        "planner: error: --set 'paramters': a Polly job takes only parameters and config.infra "
        "(did you mean 'parameters'?) [unknown-field]",
        "planner: error: --set 'config.infra.cpus': infra takes cpu, memory and storage (did you mean 'cpu'?) "
        "[unknown-field]",
        "planner: 2 problems found; nothing was written",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rnu]\nx = 1\n", "unknown section(s) 'rnu' (did you mean 'run'?); a defaults file has [run], [submission], "),
        (
            '[sheet]\nidcolumn = "sample"\n',
            "[sheet] takes id_column and types, not 'idcolumn' (did you mean 'id_column'?)",
        ),
        (
            '[staging]\nurl = "s3://b/p/"\n',
            "[staging] takes uri, kms_key_id and expected_bucket_owner, not 'url' (did you mean 'uri'?)",
        ),
    ],
    ids=["section", "sheet key", "staging key"],
)
def test_misspelt_sections_and_keys_are_offered_the_right_one(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_defaults(tmp_path / "base.toml", defaults_for("omics-batch"))
    (tmp_path / "defaults.toml").write_text(path.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    lines = _refused(run_cli(plan_argv(HERE, "sheet.csv", defaults=Path("defaults.toml")), capsys), tmp_path)
    assert len(lines) == 1 and lines[0].startswith(f"planner: error: defaults.toml: {message}")


def test_problems_of_the_defaults_call_a_field_a_field() -> None:
    assert Problem(None, None, "[run] storageType", "FAST", "enum", "must be one of STATIC, DYNAMIC").describe() == (
        "defaults, field '[run] storageType' = 'FAST': must be one of STATIC, DYNAMIC [enum]"
    )
    # A KEY=VALUE setting's problem: its column is "sets KEY"; the API names the keyword (the CLI, --set)
    assert Problem(0, None, "sets a\nb", None, "unknown-field", "no").describe() == "sets 'a\\nb': no [unknown-field]"
    assert Problem(3, "x", "priority", "hi", "type", "must be an integer").describe() == (
        "row 3 (id 'x'), column 'priority' = 'hi': must be an integer [type]"
    )


# Item 9: a defaults file written for another backend is said to be one, in one message.


def test_the_batch_sample_defaults_with_omics_batch_say_whose_file_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(plan_argv(HERE, "sheet.csv", defaults=SAMPLE_SHEETS / "batch_defaults.toml"), capsys)
    assert _refused(result, tmp_path) == [
        "planner: error: defaults: this defaults file looks like one for `--backend batch` "
        "(it has jobQueue, jobDefinition, retryStrategy): AWS HealthOmics StartRunBatch (`--backend omics-batch`) "
        "takes none of jobQueue, jobDefinition, retryStrategy, timeout in [run]; plan with `--backend batch`, "
        f"or write a defaults file for omics-batch ([run] takes {OMICS_BATCH_FIELDS}) [other-backend]",
        "planner: 1 problem found; nothing was written",
    ]


@pytest.mark.parametrize(
    ("file", "backend", "looks_like"),
    [
        ("batch_defaults.toml", "glue", "`--backend batch` (it has jobQueue, jobDefinition, retryStrategy)"),
        ("batch_defaults.toml", "polly", "`--backend batch` (it has jobQueue, jobDefinition, retryStrategy)"),
        (
            "glue_defaults.toml",
            "omics-run",
            "`--backend glue` (it has JobName, WorkerType, NumberOfWorkers, Arguments)",
        ),
        ("polly_defaults.toml", "batch", "`--backend polly` (it has domain_context, pipeline_id, run_name)"),
        ("omics_batch_defaults.toml", "omics-run", "`--backend omics-batch` (it has runTags, batchName)"),
        ("omics_run_defaults.toml", "polly", "`--backend omics-batch` or `--backend omics-run` (it has workflowId, "),
    ],
)
def test_a_defaults_file_for_another_backend_is_said_to_be_one(
    tmp_path: Path, file: str, backend: str, looks_like: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = tomllib.loads((SAMPLE_SHEETS / file).read_text(encoding="utf-8")).get("sheet", {})
    columns = [sheet.get("id_column", "sample"), *sheet.get("types", {})]  # what [sheet] asks the sheet to have
    (tmp_path / "sheet.csv").write_text(",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n")
    lines = _refused(
        run_cli(plan_argv(HERE, "sheet.csv", backend=backend, defaults=SAMPLE_SHEETS / file), capsys), tmp_path
    )
    assert lines[0].startswith(f"planner: error: defaults: this defaults file looks like one for {looks_like}")
    assert lines[0].endswith("[other-backend]")
    assert lines[1:] == ["planner: 1 problem found; nothing was written"]
    assert lines[0].count("[run] takes ") == 1  # what the target takes is listed once


def test_a_field_of_another_backend_in_a_set_is_not_taken_for_another_backends_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _refused(run_cli(plan_argv(HERE, "sheet.csv", "--set", "jobQueue=q"), capsys), tmp_path)
    assert lines == [
        f"planner: error: --set 'jobQueue': is not a field of this request; [run] takes {OMICS_BATCH_FIELDS} "
        "[unknown-field]",
        "planner: 1 problem found; nothing was written",
    ]


# Item 10: a sheet that is not UTF-8 names the row, the column and the encoding it looks like.


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "sheet.csv",
            "sample,fastq_1\nJosé,s3://b/a.fq\n".encode("cp1252"),
            "row 1, column 'sample': byte 0xE9 is not UTF-8; the file looks like Windows-1252 (é, as in 'José'): "
            "save it as UTF-8",
        ),
        (
            "sheet.csv",  # past the first 64 KiB, found by polars while planning
            ("sample,x\n" + "".join(f"S{i},1\n" for i in range(20_000)) + "S20000,café\n").encode("cp1252"),
            "row 20001, column 'x': byte 0xE9 is not UTF-8; the file looks like Windows-1252 (é, as in 'café'): "
            "save it as UTF-8",
        ),
        (
            "sheet.csv",  # a quoted cell spanning lines is one row; a BOM and CRLF change nothing
            b'\xef\xbb\xbfsample,note\r\nA,"two\r\nlines"\r\nB,\x93quoted\x94\r\n',
            "row 2, column 'note': byte 0x93 is not UTF-8; the file looks like Windows-1252 (“, as in '“quoted”'): "
            "save it as UTF-8",
        ),
        (
            "sheet.tsv",
            "sample\tRégion\nA\tx\n".encode("latin-1"),
            "the header, column 2: byte 0xE9 is not UTF-8; the file looks like Windows-1252 (é, as in 'Région'): "
            "save it as UTF-8",
        ),
        (
            "sheet.csv",  # 0x81 means nothing in Windows-1252
            b"sample,note\nA,x\x81y\n",
            "row 1, column 'note': byte 0x81 is not UTF-8; the file looks like Latin-1 (ISO-8859-1): save it as UTF-8",
        ),
        (
            "sheet.csv",
            "sample,x\nJosé,1\n".encode("utf-16"),
            "is not UTF-8 text (it begins with a UTF-16 byte-order mark); save it as UTF-8",
        ),
    ],
    ids=["row 1", "far in", "multi-line cell", "header", "latin-1", "utf-16 bom"],
)
def test_a_sheet_not_in_utf8_names_row_column_and_encoding(
    tmp_path: Path, name: str, data: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / name).write_bytes(data)
    result = run_cli(
        ["plan", name, "--backend", "batch", "--defaults", _batch_defaults_without_outputs(tmp_path), "--out", "plan"],
        capsys,
    )
    assert _refused(result, tmp_path) == [f"planner: error: {name}: {message}"]


def _batch_defaults_without_outputs(tmp_path: Path) -> Path:
    """The Batch example's defaults without its [workflow] table: these sheets have no outdir column."""
    text = (SAMPLE_SHEETS / "batch_defaults.toml").read_text(encoding="utf-8")
    path = tmp_path / "batch_defaults.toml"
    path.write_text(text[: text.index("[workflow]")] + text[text.index("[staging]") :], encoding="utf-8")
    return path


def test_a_glob_of_sheets_names_the_file_not_in_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sheets").mkdir()
    (tmp_path / "sheets" / "a.csv").write_text("sample,x\nA,1\n", encoding="utf-8")
    (tmp_path / "sheets" / "b.csv").write_bytes("sample,x\nB,1\nC,né\n".encode("cp1252"))
    defaults = _batch_defaults_without_outputs(tmp_path)
    result = run_cli(["plan", "sheets/*.csv", "--backend", "batch", "--defaults", defaults, "--out", "plan"], capsys)
    assert _refused(result, tmp_path) == [
        "planner: error: sheets/*.csv (sheets/b.csv): row 2, column 'x': byte 0xE9 is not UTF-8; "
        "the file looks like Windows-1252 (é, as in 'né'): save it as UTF-8"
    ]
