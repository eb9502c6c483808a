"""Defaults files (TOML and JSON), --set, and precedence: file < --set < row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import SAMPLE_SHEETS, defaults_for, load_manifest, run_cli, shard_entries, write_csv, write_defaults

import planner
from planner.backends import get_backend
from planner.core.defaults import load_defaults


def merged_runs(sheet: Any, backend: str = "omics-batch", **kw: Any) -> list[dict[str, Any]]:
    return [orjson.loads(t) for t in planner.plan(sheet, backend=backend, **kw).runs(merged=True).get_column("run")]


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_toml_and_json_defaults_give_the_same_plan(tmp_path: Path, suffix: str) -> None:
    document = defaults_for(
        "omics-batch", sheet={"id_column": "lims", "types": {"threads": "int"}}, staging={"uri": "s3://bucket/staging/"}
    )
    path = write_defaults(tmp_path / f"defaults{suffix}", document)
    sheet = write_csv(tmp_path / "s.csv", ["lims", "threads"], [["L1", "4"], ["L2", None]])
    manifest = planner.plan(sheet, backend="omics-batch", defaults=path).write(tmp_path / "plan").to_json()
    assert manifest["defaults"] == document["run"]
    assert manifest["submission"] == document["submission"]
    assert manifest["staging"] == {"uri": "s3://bucket/staging/"}
    assert manifest["sheet"]["id_column"] == "lims"
    (entries,) = shard_entries(tmp_path / "plan", manifest)
    assert entries == [
        {"runSettingId": "L1", "parameters": {"lims": "L1", "threads": 4}},
        {"runSettingId": "L2", "parameters": {"lims": "L2"}},
    ]


def test_toml_and_json_agree_byte_for_byte(tmp_path: Path) -> None:
    document = defaults_for("omics-batch")
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["a", "1"]])
    for suffix in (".toml", ".json"):
        planner.plan(sheet, backend="omics-batch", defaults=write_defaults(tmp_path / f"d{suffix}", document)).write(
            tmp_path / suffix[1:]
        )
    assert (tmp_path / "toml" / "plan.json").read_bytes() == (tmp_path / "json" / "plan.json").read_bytes()


def test_toml_with_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (SAMPLE_SHEETS / "omics_batch_defaults.toml").read_bytes())
    assert load_defaults(path).run["workflowId"] == "1234567"


@pytest.mark.parametrize("backend", ["omics-batch", "omics-run", "batch", "glue", "polly"])
def test_example_defaults_files_are_valid(tmp_path: Path, backend: str) -> None:
    stem = backend.replace("-", "_")
    manifest = (
        planner.plan(
            SAMPLE_SHEETS / f"{stem}_samples.csv", backend=backend, defaults=SAMPLE_SHEETS / f"{stem}_defaults.toml"
        )
        .write(tmp_path / "plan")
        .to_json()
    )
    assert manifest["runs"] == pl.read_csv(SAMPLE_SHEETS / f"{stem}_samples.csv", infer_schema=False).height


def test_precedence_file_then_set_then_row(tmp_path: Path) -> None:
    document = defaults_for("omics-batch")
    document["run"].update(
        priority=1,
        parameters={"threads": 8, "genome": "file", "keep": "file"},
        runTags={"project": "file", "team": "file"},
    )
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "priority", "genome", "tag.project"],
        [["row-wins", "3", "row", "row"], ["set-wins", None, None, None]],
    )
    runs = merged_runs(
        sheet,
        defaults=document,
        sets=["priority=2", "parameters.genome=set", "runTags.project=set", "parameters.threads=16"],
    )
    assert runs[0]["priority"] == 3 and runs[1]["priority"] == 2
    assert runs[0]["parameters"] == {"threads": 16, "genome": "row", "keep": "file", "sample": "row-wins"}
    assert runs[1]["parameters"] == {"threads": 16, "genome": "set", "keep": "file", "sample": "set-wins"}
    assert runs[0]["runTags"] == {"project": "row", "team": "file"}
    assert runs[1]["runTags"] == {"project": "set", "team": "file"}
    # The shards (own settings) carry only the row; --set lands in defaultRunSetting.
    manifest = (
        planner.plan(sheet, backend="omics-batch", defaults=document, sets=["priority=2", "parameters.genome=set"])
        .write(tmp_path / "plan")
        .to_json()
    )
    assert manifest["defaults"]["priority"] == 2 and manifest["defaults"]["parameters"]["genome"] == "set"
    (entries,) = shard_entries(tmp_path / "plan", manifest)
    assert entries[1] == {"runSettingId": "set-wins", "parameters": {"sample": "set-wins"}}


def test_later_set_wins_over_earlier_set() -> None:
    loaded = load_defaults(
        defaults_for("omics-batch"), ["parameters.threads=2", "parameters.threads=3"], get_backend("omics-batch")
    )
    assert loaded.run["parameters"]["threads"] == 3


def test_set_values_are_json_when_they_parse(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    sets = [
        "parameters.threads=16",
        "parameters.ratio=0.5",
        "parameters.flag=true",
        "parameters.list=[1,2]",
        "parameters.name=hello",
        'parameters.quoted="16"',
        "parameters.empty=",
    ]
    (run,) = merged_runs(sheet, defaults=defaults_for("omics-batch"), sets=sets)
    params = run["parameters"]
    assert params["threads"] == 16 and isinstance(params["threads"], int)
    assert params["ratio"] == 0.5 and params["flag"] is True and params["list"] == [1, 2]
    assert params["name"] == "hello" and params["quoted"] == "16" and params["empty"] == ""


def test_set_string_fields_stay_strings_omics_run(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample_id"], [["a"]])
    (run,) = merged_runs(
        sheet,
        backend="omics-run",
        defaults=defaults_for("omics-run"),
        sets=["workflowId=1234567", "tags.build=42", "name=007"],
    )
    assert run["workflowId"] == "1234567"
    assert run["tags"]["build"] == "42"
    assert run["name"] == "007"


def test_set_tag_values_stay_strings_omics_batch(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    (run,) = merged_runs(
        sheet, defaults=defaults_for("omics-batch"), sets=["runTags.build=42", "outputBucketOwnerId=123456789012"]
    )
    assert run["runTags"]["build"] == "42"
    assert run["outputBucketOwnerId"] == "123456789012"


def test_set_workflow_id_stays_a_string_omics_batch(tmp_path: Path) -> None:
    # workflowId is a string in the service model (a defaultRunSetting field, not a per-row one).
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    plan = planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), sets=["workflowId=1234567"])
    assert plan.defaults.run["workflowId"] == "1234567"
    manifest = plan.write(tmp_path / "plan").to_json()
    assert manifest["defaults"]["workflowId"] == "1234567"


def test_set_batch_parameter_number_stays_a_string(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    (run,) = merged_runs(sheet, backend="batch", defaults=defaults_for("batch"), sets=["parameters.min_mapq=20"])
    assert run["parameters"]["min_mapq"] == "20"


@pytest.mark.parametrize(
    ("backend", "assignment", "path", "expected"),
    [
        # Types come from the service model: text fields stay text, numbers become numbers.
        ("omics-batch", "workflowId=007", ("workflowId",), "007"),
        ("omics-batch", "priority=7", ("priority",), 7),
        ("omics-run", "storageCapacity=1200", ("storageCapacity",), 1200),
        ("batch", "jobQueue=123", ("jobQueue",), "123"),
        ("batch", "retryStrategy.attempts=3", ("retryStrategy", "attempts"), 3),
        ("glue", "JobName=42", ("JobName",), "42"),
        ("glue", "NumberOfWorkers=4", ("NumberOfWorkers",), 4),
        ("glue", "Arguments.--threads=8", ("Arguments", "--threads"), "8"),
    ],
)
def test_set_types_follow_the_service_model(
    backend: str, assignment: str, path: tuple[str, ...], expected: Any
) -> None:
    value: Any = load_defaults(defaults_for(backend), [assignment], get_backend(backend)).run
    for name in path:
        value = value[name]
    assert value == expected and type(value) is type(expected)


def test_set_submission_batch_name_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"], ["b"]])
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("omics-batch"))
    out = tmp_path / "plan"
    code, _, err = run_cli(
        [
            "plan",
            sheet,
            "--backend",
            "omics-batch",
            "--defaults",
            defaults,
            "--out",
            out,
            "--set",
            "submission.batchName=from-cli",
            "--set",
            "submission.tags.owner=me",
        ],
        capsys,
    )
    assert code == 0, err
    manifest = load_manifest(out)
    assert manifest["submission"] == {"batchName": "from-cli", "tags": {"owner": "me"}}
    assert "batchName" not in manifest["defaults"]


def test_set_with_run_prefix_is_the_same_as_without() -> None:
    spec = get_backend("omics-batch")
    assert (
        load_defaults(defaults_for("omics-batch"), ["run.parameters.x=1"], spec).run
        == load_defaults(defaults_for("omics-batch"), ["parameters.x=1"], spec).run
    )


def test_set_creates_missing_tables() -> None:
    loaded = load_defaults({"run": {}}, ["parameters.a=1", "runTags.t=v"])
    assert loaded.run == {"parameters": {"a": 1}, "runTags": {"t": "v"}}


@pytest.mark.parametrize("assignment", ["noequals", "=value", "a..b=1", "parameters.=1"])
def test_malformed_set_is_a_defaults_error(assignment: str) -> None:
    with pytest.raises(planner.DefaultsError, match=r"^sets=\[") as caught:  # the API's keyword, not the flag
        load_defaults(defaults_for("omics-batch"), [assignment])
    assert "--set" not in str(caught.value)


def test_set_into_a_scalar_is_a_defaults_error() -> None:
    with pytest.raises(planner.DefaultsError, match="not a table"):
        load_defaults(defaults_for("omics-batch"), ["workflowId.x=1"])


def test_set_with_a_bad_value_is_a_validation_problem(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), sets=["priority=high"])
    # The problem names the KEY=VALUE setting that put the value there, not the defaults file.
    assert [(p.column, p.rule) for p in caught.value.problems] == [("sets priority", "type")]
    assert caught.value.problems[0].describe().startswith("sets 'priority' = 'high': must be an integer")


def test_no_defaults_at_all(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["a", "1"]])
    # Polly needs nothing in [run]; the pipeline comes from --set.
    (run,) = merged_runs(sheet, backend="polly", defaults=None, sets=["submission.pipeline_id=pl-1"])
    assert run == {"parameters": {"sample": "a", "x": "1"}, "name": "a"}
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet, backend="omics-batch", defaults=None)
    assert {p.column for p in caught.value.problems} >= {"[run] workflowId", "[run] roleArn"}


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({"run": [], "sheet": {}}, r"\[run\] must be a table"),
        ({"sheet": {"idcolumn": "x"}}, "id_column and types"),
        ({"sheet": {"types": {"x": 1}}}, r"\[sheet.types\]"),
        ({"runs": {}}, "unknown section"),
    ],
)
def test_malformed_defaults_documents(document: dict[str, Any], match: str) -> None:
    with pytest.raises(planner.DefaultsError, match=match):
        load_defaults(document)


def test_defaults_file_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b"[1, 2]")
    with pytest.raises(planner.DefaultsError, match="table"):
        load_defaults(path)


def test_sheet_types_must_name_sheet_columns(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["a", "1"]])
    with pytest.raises(planner.DefaultsError, match="'threads'"):
        planner.plan(
            sheet, backend="omics-batch", defaults=defaults_for("omics-batch", sheet={"types": {"threads": "int"}})
        )


def test_glue_defaults_arguments_need_the_dash_prefix(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "input"], [["a", "s3://x/"]])
    document = defaults_for("glue")
    document["run"]["Arguments"] = {"input_format": "parquet"}
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet, backend="glue", defaults=document)
    assert [(p.column, p.rule) for p in caught.value.problems] == [("[run] Arguments.input_format", "prefix")]


def test_glue_timeout_must_stay_below_a_week(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "Timeout"], [["a", "10079"], ["b", "10080"]])
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet, backend="glue", defaults=defaults_for("glue")).runs()
    assert [(p.row, p.column, p.rule) for p in caught.value.problems] == [(2, "Timeout", "max")]


def test_batch_defaults_rules(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"], ["b"]])
    document = defaults_for("batch")
    document["run"].update(
        retryStrategy={"attempts": 11},
        timeout={"attemptDurationSeconds": 30},
        containerOverrides={"environment": [{"name": "AWS_BATCH_JOB_ID", "value": "x"}]},
    )
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet, backend="batch", defaults=document)
    assert {p.rule for p in caught.value.problems} >= {"range", "min", "reserved"}


def test_polly_priority_enum(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"]])
    document = defaults_for("polly")
    document["submission"]["priority"] = "urgent"
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet, backend="polly", defaults=document)
    assert [(p.column, p.rule) for p in caught.value.problems] == [("[submission] priority", "enum")]


@pytest.mark.parametrize("backend", ["omics-run", "omics-batch"])
def test_defaults_nested_to_the_limit_plan_one_deeper_is_refused(backend: str, tmp_path: Path) -> None:
    """[run] may nest 253 levels (itself one of them): plan.json holds it one level down, and orjson writes 254."""
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["S1"]])

    def deep(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = {"a": value}
        return value

    document = defaults_for(backend)
    document["run"]["parameters"]["deep"] = deep(251)  # [run] 1, parameters 2, then 251 levels: 253
    manifest = planner.plan(sheet, backend=backend, defaults=document).write(tmp_path / "plan").to_json()
    assert orjson.dumps(manifest["defaults"]["parameters"]["deep"]) == orjson.dumps(deep(251))
    document["run"]["parameters"]["deep"] = deep(252)
    with pytest.raises(
        planner.DefaultsError, match=r"<dict>: \[run\] parameters\.deep\.a\.a.*: nested deeper than 253 levels"
    ):
        planner.plan(sheet, backend=backend, defaults=document)


def test_deep_submission_table_and_deep_toml_are_refused(tmp_path: Path) -> None:
    table: Any = 1
    for _ in range(300):
        table = [table]
    with pytest.raises(planner.DefaultsError, match=r"\[submission\] x\.0\.0"):
        load_defaults({"submission": {"x": table}})
    path = tmp_path / "d.toml"
    path.write_text("[run]\nx = " + "[" * 3000 + "]" * 3000 + "\n")  # tomllib recurses per level
    with pytest.raises(planner.DefaultsError, match="nested too deeply to read"):
        load_defaults(path)
