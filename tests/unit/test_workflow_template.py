"""The workflow's parameter template at plan time (HealthOmics): what a run may and must send.

Templates come from a file here (``--parameter-template`` or ``[workflow] parameter_template``);
reading them from the service is in tests/integration/test_preflight.py.  CLI behaviour is
checked through ``planner.cli.main`` in-process (``helpers.run_cli``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import SAMPLE_SHEETS, defaults_for, load_manifest, plan_argv, run_cli, write_csv, write_defaults

import planner
from planner.errors import InputError, ValidationError
from planner.services.workflow import WorkflowTemplate, load_template_file, near_miss, template_problems

TEMPLATE = {
    "sample": {"description": "the sample id"},
    "fastq_1": {"description": "read 1"},
    "fastq_2": {"description": "read 2", "optional": True},
    "reference": {"description": "genome", "optional": True},
    "threads": {"optional": True},
}


def _template(tmp_path: Path, template: dict[str, Any] | None = None, **wrapped: Any) -> Path:
    path = tmp_path / "template.json"
    document: Any = template if template is not None else TEMPLATE
    if wrapped:
        document = {**wrapped, "parameterTemplate": document}
    path.write_bytes(orjson.dumps(document))
    return path


def _problems(tmp_path: Path, sheet: Path, backend: str = "omics-batch", **options: Any) -> list[str]:
    options.setdefault("defaults", defaults_for(backend))
    with pytest.raises(ValidationError) as caught:
        planner.plan(sheet, backend=backend, **options).write(tmp_path / "plan")
    return [p.describe() for p in caught.value.problems]


GOOD = [["A", "s3://b/a_1.fq", "s3://b/a_2.fq"], ["B", "s3://b/b_1.fq", None]]


# ---------------------------------------------------------------- reading a template


def test_a_template_file_may_be_getworkflows_answer_or_the_template_itself(tmp_path: Path) -> None:
    bare = load_template_file(str(_template(tmp_path)))
    assert bare.required == ["fastq_1", "sample"] and bare.workflow_id is None and bare.status is None
    answer = load_template_file(str(_template(tmp_path, id="1234567", status="ACTIVE", name="rnaseq")))
    assert answer.parameters == bare.parameters and answer.workflow_id == "1234567" and answer.status == "ACTIVE"
    assert answer.sha256 == bare.sha256  # the digest is of the template, not of where it came from
    version = load_template_file(str(_template(tmp_path, workflowId="1234567", versionName="v2", status="FAILED")))
    assert version.version_name == "v2" and version.version_status == "FAILED" and version.status is None


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"[1, 2]", "must hold a JSON object"),
        (b"{not json", "is not JSON"),
        (b'{"a": {"optional": "yes"}}', "optional must be true or false"),
        (b'{"a": {"type": "string"}}', 'must be an object of "description" and "optional"'),
    ],
)
def test_a_bad_template_file_is_an_input_error_naming_the_file(tmp_path: Path, content: bytes, said: str) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=said) as caught:
        load_template_file(str(path))
    assert str(path) in str(caught.value)


def test_the_rule_for_one_run() -> None:
    template = WorkflowTemplate(TEMPLATE, profiles={"gpu": {"gpus": {"optional": True}}})
    assert template_problems({"sample": "a", "fastq_1": "x", "gpus": 1}, template) == ([], [])
    assert template_problems({"fastq1": "x", "sample": "a"}, template) == (["fastq1"], ["fastq_1"])


# ---------------------------------------------------------------- plan time


def test_a_sheet_that_fits_the_template_plans_and_plan_json_records_the_template(tmp_path: Path) -> None:
    template = _template(tmp_path)
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1", "fastq_2"], GOOD)
    manifest = planner.plan(
        sheet,
        backend="omics-batch",
        defaults=defaults_for("omics-batch"),
        parameter_template=template,
    ).write(tmp_path / "plan")
    record = load_manifest(tmp_path / "plan")["workflow"]
    assert record["check"] == "template" and record["source"] == f"file {template}"
    assert record["parameterTemplate"] == TEMPLATE and len(record["template_sha256"]) == 64
    assert manifest.runs == 2


def test_a_column_the_template_does_not_define_is_refused_with_the_closest_names(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq1", "fastq_2"], GOOD)
    lines = _problems(tmp_path, sheet, parameter_template=_template(tmp_path))
    assert lines[0].startswith("header 'fastq1': becomes parameter 'fastq1', which the parameter template in ")
    assert "(did you mean 'fastq_1'" in lines[0] and "its template defines fastq_1, fastq_2, reference" in lines[0]
    assert lines[0].endswith("[template-unknown]")
    # fastq_1, required, is then set by no run: said once, pointing at the column meant for it
    assert any(
        line.startswith("defaults, field '[run] parameters.fastq_1': is required by") and "'fastq1' looks meant" in line
        for line in lines
    )


def test_a_default_and_a_set_the_template_does_not_define_are_named(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"]])
    document = defaults_for("omics-batch")
    document["run"]["parameters"] = {"referenc": "s3://refs/hg38.fa"}
    lines = _problems(
        tmp_path, sheet, defaults=document, sets=["parameters.thread=4"], parameter_template=_template(tmp_path)
    )
    assert lines == [
        "defaults, field '[run] parameters.referenc' = 's3://refs/hg38.fa': is not a parameter of the parameter "
        f"template in {tmp_path / 'template.json'} (did you mean 'reference'?); its template defines fastq_1, "
        "fastq_2, reference, sample, threads [template-unknown]",
        f"sets 'parameters.thread' = '4': is not a parameter of the parameter template in {tmp_path / 'template.json'}"
        " (did you mean 'threads'?); its template defines fastq_1, fastq_2, reference, sample, threads "
        "[template-unknown]",
    ]


def test_rows_missing_a_required_parameter_are_named(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"], ["B", None], ["C", None]])
    lines = _problems(tmp_path, sheet, parameter_template=_template(tmp_path))
    assert [line.split(":")[0] for line in lines] == [
        "row 2 (id 'B'), column 'fastq_1' = ''",
        "row 3 (id 'C'), column 'fastq_1' = ''",
    ]
    assert all("requires parameter 'fastq_1', which has no default" in line for line in lines)
    assert all(line.endswith("[template-required]") for line in lines)


def test_skip_invalid_plans_the_rows_that_fit_and_rejects_the_others(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"], ["B", None], ["C", "s3://b/c.fq"]]
    )
    planned = planner.plan(
        sheet,
        backend="omics-batch",
        defaults=defaults_for("omics-batch"),
        parameter_template=_template(tmp_path),
        skip_invalid=True,
    )
    manifest = planned.write(tmp_path / "plan")
    assert manifest.runs == 2 and manifest.rejected == 1
    rejected = (tmp_path / "plan" / "rejected.csv").read_text()
    assert "B" in rejected and "template-required" in rejected


def test_a_required_parameter_with_a_default_is_set_for_every_run(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_2"], [["A", None], ["B", "s3://b/b_2.fq"]])
    document = defaults_for("omics-batch")
    document["run"]["parameters"]["fastq_1"] = "s3://b/shared.fq"
    manifest = planner.plan(sheet, backend="omics-batch", defaults=document, parameter_template=_template(tmp_path))
    assert manifest.write(tmp_path / "plan").runs == 2


def test_a_workflow_that_is_not_active_is_refused(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"]])
    template = _template(tmp_path, id="1234567", status="INACTIVE", statusMessage="retired")
    lines = _problems(tmp_path, sheet, defaults=defaults_for("omics-batch"), parameter_template=template)
    assert lines == [
        "defaults, field '[run] workflowId' = '1234567': workflow 1234567 is INACTIVE in "
        f"file {template}; a run starts only on an ACTIVE workflow [workflow-status]"
    ]


# ---------------------------------------------------------------- the id column (item 2)


@pytest.mark.parametrize(
    ("id_parameter", "parameters"),
    [
        (None, {"sample": "A"}),
        ("sample_name", {"sample_name": "A"}),
        (False, {}),
    ],
    ids=["own name", "another name", "not at all"],
)
def test_the_id_column_goes_where_workflow_id_parameter_says(
    tmp_path: Path, id_parameter: Any, parameters: dict[str, str]
) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "x"], [["A", "1"]])
    document = defaults_for("omics-batch")
    document["run"]["parameters"] = {}
    if id_parameter is not None:
        document["workflow"] = {"id_parameter": id_parameter}
    runs = planner.plan(sheet, backend="omics-batch", defaults=document).runs(merged=False)
    run = json.loads(runs.get_column("run")[0])
    assert run["runSettingId"] == "A"  # the run is still named by the id
    assert run["parameters"] == {**parameters, "x": "1"}


def test_a_template_without_the_id_parameter_says_what_id_parameter_should_be(tmp_path: Path) -> None:
    template = _template(tmp_path, {**{k: v for k, v in TEMPLATE.items() if k != "sample"}, "sample_id": {}})
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"]])
    lines = _problems(tmp_path, sheet, parameter_template=template)
    assert lines[0] == (
        "header 'sample': is the id column, sent as parameter 'sample', which the parameter template in "
        f"{template} does not define: set [workflow] id_parameter = 'sample_id' (its name in the template) or "
        "id_parameter = false [template-unknown]"
    )
    document = defaults_for("omics-batch", workflow={"id_parameter": "sample_id"})
    assert (
        planner.plan(sheet, backend="omics-batch", defaults=document, parameter_template=template)
        .write(tmp_path / "ok")
        .runs
        == 1
    )


def test_id_parameter_false_with_a_template_needing_it_says_so(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"]])
    document = defaults_for("omics-batch", workflow={"id_parameter": False})
    lines = _problems(tmp_path, sheet, defaults=document, parameter_template=_template(tmp_path))
    assert lines == [
        "defaults, field '[run] parameters.sample': is required by the parameter template in "
        f"{tmp_path / 'template.json'}, and no run sets it: set it in [run.parameters], with "
        "sets=[parameters.sample=...], or as a sheet column; [workflow] id_parameter = 'sample' sends the sample id "
        "as it [template-required]"
    ]


@pytest.mark.parametrize("bad", ["", 3, ["a"]])
def test_id_parameter_is_a_name_or_false(tmp_path: Path, bad: Any) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample"], [["A"]])
    with pytest.raises(InputError, match=r"\[workflow\] id_parameter is the parameter the sample id is sent as"):
        planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch", workflow={"id_parameter": bad}))


# ---------------------------------------------------------------- near misses, with or without a template


@pytest.mark.parametrize(
    ("backend", "column", "meant"),
    [
        ("omics-batch", "priorty", "priority"),
        ("omics-batch", "workflowID", "workflowId"),
        ("omics-batch", "output_uri", "outputUri"),
        ("omics-run", "Name", "name"),
        ("glue", "timeout", "Timeout"),
        ("polly", "memroy", "memory"),
    ],
)
def test_a_column_one_edit_from_a_field_is_refused_not_sent_as_a_parameter(
    tmp_path: Path, backend: str, column: str, meant: str
) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", column], [["A", "3"]])
    lines = _problems(tmp_path, sheet, backend=backend)
    assert len(lines) == 1 and lines[0].startswith(f"header {column!r}: is one edit from the ")
    assert f"(did you mean {meant!r}?)" in lines[0] and f"name the column param.{column}" in lines[0]
    assert lines[0].endswith("[near-field]")


def test_param_prefix_and_short_names_are_left_alone(tmp_path: Path) -> None:
    # `lane` is a sequencing lane, not a misspelt `name`; param.priorty says a parameter is meant.
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "lane", "param.priorty"], [["A", "L001", "3"]])
    runs = planner.plan(sheet, backend="omics-run", defaults=defaults_for("omics-run")).runs()
    assert json.loads(runs.get_column("run")[0])["parameters"] == {
        "genome": "GRCh38",
        "sample": "A",
        "lane": "L001",
        "priorty": "3",
    }


def test_near_miss_rule() -> None:
    fields = ["priority", "name", "outputUri", "workflowId"]
    assert near_miss("priorty", fields) == "priority"
    assert near_miss("PRIORITY", fields) == "priority"
    assert near_miss("output-uri", fields) == "outputUri"
    assert near_miss("lane", fields) is None and near_miss("priority", fields) is None
    assert near_miss("fastq_1", fields) is None


# ---------------------------------------------------------------- the CLI: before and after


def test_priorty_in_the_example_sheet_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (SAMPLE_SHEETS / "omics_batch_samples.csv").read_text(encoding="utf-8")
    sheet = tmp_path / "s.csv"
    sheet.write_text(text.replace(",priority,", ",priorty,", 1), encoding="utf-8")
    done = run_cli(plan_argv(tmp_path, sheet, defaults=SAMPLE_SHEETS / "omics_batch_defaults.toml"), capsys)
    assert done.code == 2 and done.out == ""
    assert done.err.splitlines() == [
        "planner: error: header 'priorty': is one edit from the AWS HealthOmics StartRunBatch field 'priority' "
        "(did you mean 'priority'?): as spelt it would be sent as a parameter 'priorty' while priority keeps its "
        "default; a column named priority sets it per run, or name the column param.priorty to send a parameter "
        "of that name [near-field]",
        "planner: 1 problem found; nothing was written",
    ]
    assert not (tmp_path / "plan").exists()


def test_the_example_is_checked_against_its_template_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = run_cli(
        plan_argv(
            tmp_path,
            SAMPLE_SHEETS / "omics_batch_samples.csv",
            "--json",
            defaults=SAMPLE_SHEETS / "omics_batch_defaults.toml",
        ),
        capsys,
    )
    assert done.code == 0 and done.err == ""
    record = orjson.loads(done.out)["workflow"]
    assert record["check"] == "template" and record["source"].endswith("omics_workflow_template.json")
    assert record == load_manifest(tmp_path / "plan")["workflow"]


def test_without_a_template_or_credentials_the_plan_says_the_check_was_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("omics-batch"))
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"]])
    for name in ("PLANNER_NO_WORKFLOW_LOOKUP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "")
    done = run_cli(["plan", sheet, "-b", "omics-batch", "-d", defaults, "-o", tmp_path / "plan"], capsys)
    assert done.code == 0, done.err
    assert done.err.splitlines() == [
        "planner: note: the workflow's parameters were not checked: no AWS credentials to read workflow 1234567 "
        "(plan.json records it; give --parameter-template FILE, or run `planner check PLAN` with access to the "
        "workflow)"
    ]
    assert load_manifest(tmp_path / "plan")["workflow"] == {
        "check": "skipped",
        "reason": "no AWS credentials to read workflow 1234567",
    }


def test_parameter_template_option_and_byte_identical_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"]])
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("omics-batch"))
    template = _template(tmp_path)
    outs = []
    for name in ("p1", "p2"):
        done = run_cli(
            [
                "plan",
                sheet,
                "-b",
                "omics-batch",
                "-d",
                defaults,
                "-o",
                tmp_path / name,
                "--parameter-template",
                template,
            ],
            capsys,
        )
        assert done.code == 0 and done.err == "", done.err
        outs.append((tmp_path / name / "plan.json").read_bytes())
    assert outs[0] == outs[1]
    # the plan id is what the services are sent: the same with or without the template
    plain = planner.plan(sheet, backend="omics-batch", defaults=str(defaults)).write(tmp_path / "p3")
    assert plain.plan_id == orjson.loads(outs[0])["plan_id"]


def test_a_missing_template_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "samples.csv", ["sample", "fastq_1"], [["A", "s3://b/a.fq"]])
    done = run_cli(
        plan_argv(
            tmp_path,
            sheet,
            "--parameter-template",
            tmp_path / "nope.json",
            defaults=SAMPLE_SHEETS / "omics_batch_defaults.toml",
        ),
        capsys,
    )
    assert done.code == 2 and done.err.startswith("planner: error: --parameter-template ")
    assert "cannot read it" in done.err and "Traceback" not in done.err
