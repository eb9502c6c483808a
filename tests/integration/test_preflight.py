"""Preflight against loopback servers: moto's S3 for the inputs, the HealthOmics emulator for the workflow.

`planner check PLAN`, `planner submit --check` and `planner plan --check-inputs`: missing objects
named by row, id, column and URI; 403 a warning, not missing; prefixes; lists of URIs; listing
instead of heads for full folders; the workflow read at plan time and again at check time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from faults.faultkit import aws_error, patch_clients
from helpers import defaults_for, load_manifest, make_plan, run_cli_process, write_csv, write_defaults

import planner
from planner.commands.check import LIST_MIN, check
from planner.commands.submit import submit
from planner.errors import PreflightError, ValidationError
from planner.sandbox.omics_emulator import OmicsEmulator

TEMPLATE = {
    "sample": {"description": "the sample id"},
    "bam": {"description": "the reads"},
    "reference": {"optional": True},
    "threads": {"optional": True},
    "extra": {"optional": True},
}


def _bucket(s3: Any, *keys: str) -> str:
    """A new bucket with these objects, and the reference genome every test's defaults name."""
    name = f"inputs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    for key in ("refs/hg38.fa", *keys):
        s3.put_object(Bucket=name, Key=key, Body=b"x")
    return name


def _defaults(backend: str, bucket: str) -> dict[str, Any]:
    document = defaults_for(backend)
    document["run"]["parameters"]["reference"] = f"s3://{bucket}/refs/hg38.fa"
    return document


def _lines(report: Any) -> list[str]:
    return [p.describe() for p in report.problems]


# ---------------------------------------------------------------- inputs


def test_missing_objects_are_named_by_row_id_column_and_uri(tmp_path: Path, s3: Any, moto_server: str) -> None:
    bucket = _bucket(s3, "bams/a.bam", "bams/c.bam")
    document = _defaults("batch", bucket)
    rows = [
        ["A", f"s3://{bucket}/bams/a.bam"],
        ["B", f"s3://{bucket}/bams/b.bam"],  # missing
        ["C", f"s3://{bucket}/bams/c.bam"],
        ["D", f"s3://{bucket}/bams/b.bam"],  # the same missing object: asked once, named for both rows
        ["E", "s3://no-such-bucket-here/x.bam"],
    ]
    plan = make_plan(tmp_path, write_csv(tmp_path / "s.csv", ["sample", "bam"], rows), "batch", defaults=document)
    report = check(plan, endpoints={"s3": moto_server}, quotas=False)
    assert _lines(report) == [
        f"row 2 (id 'B'), column 'bam' = 's3://{bucket}/bams/b.bam': no such object in S3 [s3-missing]",
        f"row 4 (id 'D'), column 'bam' = 's3://{bucket}/bams/b.bam': no such object in S3 [s3-missing]",
        "row 5 (id 'E'), column 'bam' = 's3://no-such-bucket-here/x.bam': the bucket does not exist [s3-no-bucket]",
    ]
    assert report.inputs is not None
    # reference (the default, in every merged run) and four bams, deduplicated
    assert (report.inputs.uris, report.inputs.found, report.inputs.missing) == (5, 3, 2)
    assert report.inputs.calls == {"HeadBucket": 2, "HeadObject": 4}
    assert report.warnings == []


def test_a_missing_default_is_said_once_not_per_run(tmp_path: Path, s3: Any, moto_server: str) -> None:
    bucket = _bucket(s3, "a.bam")
    document = defaults_for("omics-batch")
    document["run"]["parameters"]["reference"] = f"s3://{bucket}/refs/gone.fa"
    plan = make_plan(
        tmp_path,
        write_csv(
            tmp_path / "s.csv", ["sample", "bam"], [["A", f"s3://{bucket}/a.bam"]] * 1 + [["B", f"s3://{bucket}/a.bam"]]
        ),
        "omics-batch",
        defaults=document,
    )
    report = check(plan, endpoints={"s3": moto_server}, quotas=False, workflow=False)
    assert _lines(report) == [
        f"defaults, field '[run] parameters.reference' = 's3://{bucket}/refs/gone.fa': "
        "no such object in S3 [s3-missing]"
    ]


def test_lists_of_uris_and_prefixes(tmp_path: Path, s3: Any, moto_server: str) -> None:
    bucket = _bucket(s3, "run1/a_R1.fq", "run1/a_R2.fq", "index/part-0")
    sheet = tmp_path / "s.ndjson"
    sheet.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {
                    "sample": "A",
                    "fastq": [f"s3://{bucket}/run1/a_R1.fq", f"s3://{bucket}/run1/a_R2.fq"],
                    "index": f"s3://{bucket}/index/",
                },
                {"sample": "B", "fastq": [f"s3://{bucket}/run1/b_R1.fq"], "index": f"s3://{bucket}/empty/"},
            ]
        )
        + "\n"
    )
    planner.plan(sheet, backend="batch", defaults=_defaults("batch", bucket)).write(tmp_path / "plan")
    report = check(tmp_path / "plan", endpoints={"s3": moto_server}, quotas=False)
    assert _lines(report) == [
        f"row 2 (id 'B'), column 'fastq[0]' = 's3://{bucket}/run1/b_R1.fq': no such object in S3 [s3-missing]",
        f"row 2 (id 'B'), column 'index' = 's3://{bucket}/empty/': no object under this prefix in S3 [s3-missing]",
    ]
    assert report.inputs is not None and report.inputs.calls.get("ListObjectsV2") == 2  # one per prefix


def test_a_full_folder_is_listed_instead_of_heads(tmp_path: Path, s3: Any, moto_server: str) -> None:
    from moto.s3.models import s3_backends

    bucket = _bucket(s3)
    backend = s3_backends["123456789012"]["aws"]
    for i in range(1500):  # more than one page of ListObjectsV2, written straight into moto's store
        backend.put_object(bucket, f"reads/s{i:05d}.fq", b"x")
    wanted = [f"s{i:05d}" for i in range(0, 1500, 5)] + ["s99999"]  # 300 present, 1 missing
    rows = [[name, f"s3://{bucket}/reads/{name}.fq"] for name in wanted]
    plan = make_plan(
        tmp_path, write_csv(tmp_path / "s.csv", ["sample", "fastq"], rows), "batch", defaults=_defaults("batch", bucket)
    )
    report = check(plan, endpoints={"s3": moto_server}, quotas=False)
    assert _lines(report) == [
        f"row 301 (id 's99999'), column 'fastq' = 's3://{bucket}/reads/s99999.fq': no such object in S3 [s3-missing]"
    ]
    assert report.inputs is not None
    # two pages of one folder for 301 reads; one HeadObject, for the reference genome alone in its folder
    assert report.inputs.calls == {"HeadBucket": 1, "ListObjectsV2": 2, "HeadObject": 1}
    assert len(wanted) >= LIST_MIN


def test_403_is_a_warning_that_cannot_verify_not_missing(
    tmp_path: Path, s3: Any, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(s3, "ok.bam", "secret.bam")

    def forbid(request: Any, **_: Any) -> Any:
        if "secret" in request.url:
            return aws_error(request.url, 403, "403", "Forbidden", xml=True)
        return None

    patch_clients([("before-send.s3.HeadObject", forbid)], monkeypatch.setattr)
    rows = [["A", f"s3://{bucket}/ok.bam"], ["B", f"s3://{bucket}/secret.bam"]]
    plan = make_plan(
        tmp_path, write_csv(tmp_path / "s.csv", ["sample", "bam"], rows), "batch", defaults=_defaults("batch", bucket)
    )
    report = check(plan, endpoints={"s3": moto_server}, quotas=False)
    assert report.problems == [] and report.ok
    assert [w.describe() for w in report.warnings] == [
        f"row 2 (id 'B'), column 'bam' = 's3://{bucket}/secret.bam': cannot verify: S3 answered 403 Forbidden (these "
        "credentials may not read it, or, without s3:ListBucket, S3 says 403 for a missing object too) [s3-403]"
    ]
    assert report.inputs is not None and report.inputs.unverified == 1 and report.inputs.missing == 0


def test_slowdown_is_waited_out(tmp_path: Path, s3: Any, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = _bucket(s3, "a.bam")
    answered: list[int] = []

    def slow_down(request: Any, **_: Any) -> Any:
        answered.append(1)
        if len(answered) <= 2:
            return aws_error(request.url, 503, "SlowDown", "Please reduce your request rate.", xml=True)
        return None

    patch_clients([("before-send.s3.HeadObject", slow_down)], monkeypatch.setattr)
    monkeypatch.setattr("planner.engine.context.time.sleep", lambda seconds: None)
    plan = make_plan(
        tmp_path,
        write_csv(tmp_path / "s.csv", ["sample", "bam"], [["A", f"s3://{bucket}/a.bam"]]),
        "batch",
        defaults=_defaults("batch", bucket),
    )
    report = check(plan, endpoints={"s3": moto_server}, quotas=False, max_attempts=1)
    assert report.ok and report.inputs is not None and report.inputs.found == 2  # a.bam and the reference


def test_the_check_command_exit_status_json_and_problems_csv(tmp_path: Path, s3: Any, moto_server: str) -> None:
    bucket = _bucket(s3)
    rows = [[f"s{i}", f"s3://{bucket}/x/{i}.bam"] for i in range(25)]
    plan = make_plan(
        tmp_path, write_csv(tmp_path / "s.csv", ["sample", "bam"], rows), "batch", defaults=_defaults("batch", bucket)
    )
    done = run_cli_process(["check", plan, "--endpoint-url", moto_server, "--json", "--no-quotas"])
    assert done.returncode == 2
    report = orjson.loads(done.stdout)
    assert report["ok"] is False and len(report["problems"]) == 25 and report["inputs"]["missing"] == 25
    assert report["problems"][0] == {
        "row": 1,
        "id": "s0",
        "column": "bam",
        "value": f"s3://{bucket}/x/0.bam",
        "rule": "s3-missing",
        "message": "no such object in S3",
    }
    lines = done.stderr.splitlines()
    assert lines[0].startswith("planner: error: row 1 (id 's0'), column 'bam'")
    assert f"planner: ... and 5 more; the full list is in {plan}.problems.csv" in lines
    assert lines[-1] == "planner: 25 problems found by the preflight check"
    assert pl.read_csv(f"{plan}.problems.csv").height == 25
    fine = run_cli_process(["check", plan, "--endpoint-url", moto_server, "--no-inputs", "--no-quotas"])
    assert fine.returncode == 0 and fine.stdout.splitlines()[-1] == "no problems found"


def test_check_inputs_at_plan_time_with_skip_invalid(tmp_path: Path, s3: Any, moto_server: str) -> None:
    bucket = _bucket(s3, "a.bam", "c.bam")
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "bam"],
        [["A", f"s3://{bucket}/a.bam"], ["B", f"s3://{bucket}/b.bam"], ["C", f"s3://{bucket}/c.bam"]],
    )
    defaults = write_defaults(tmp_path / "d.toml", _defaults("batch", bucket))
    refused = run_cli_process(
        [
            "plan",
            sheet,
            "-b",
            "batch",
            "-d",
            defaults,
            "-o",
            tmp_path / "p1",
            "--check-inputs",
            "--endpoint-url",
            moto_server,
        ]
    )
    assert refused.returncode == 2 and not (tmp_path / "p1").exists()
    assert refused.stderr.splitlines() == [
        f"planner: error: row 2 (id 'B'), column 'bam' = 's3://{bucket}/b.bam': no such object in S3 [s3-missing]",
        "planner: 1 problem found; nothing was written",
    ]
    kept = run_cli_process(
        [
            "plan",
            sheet,
            "-b",
            "batch",
            "-d",
            defaults,
            "-o",
            tmp_path / "p2",
            "--check-inputs",
            "--skip-invalid",
            "--endpoint-url",
            moto_server,
        ]
    )
    assert kept.returncode == 0, kept.stderr
    assert load_manifest(tmp_path / "p2")["runs"] == 2
    rejected = pl.read_csv(tmp_path / "p2" / "rejected.csv")
    assert rejected.select("row", "id", "column", "rule").rows() == [(2, "B", "bam", "s3-missing")]


# ---------------------------------------------------------------- submit --check


def test_submit_check_stops_before_anything_is_staged(
    tmp_path: Path, s3: Any, moto_server: str, make_omics_emulator: Callable[..., OmicsEmulator]
) -> None:
    emulator = make_omics_emulator()
    emulator.put_workflow("1234567", parameter_template=TEMPLATE)
    bucket = _bucket(s3)
    rows = [[f"s{i}", f"s3://{bucket}/{i}.bam"] for i in range(150)]  # more than 100 runs: staged on S3
    plan = make_plan(
        tmp_path,
        write_csv(tmp_path / "s.csv", ["sample", "bam"], rows),
        "omics-batch",
        defaults=_defaults("omics-batch", bucket),
    )
    endpoints = {"s3": moto_server, "omics": emulator.endpoint_url, "sts": moto_server}
    with pytest.raises(PreflightError) as caught:
        submit(plan, staging=f"s3://{bucket}/staging/", endpoints=endpoints, check=True)
    assert len(caught.value.problems) == 150
    assert "nothing was staged or submitted" in caught.value.summary
    assert s3.list_objects_v2(Bucket=bucket, Prefix="staging/").get("KeyCount") == 0
    assert emulator.batch_count() == 0 and not (Path(plan) / "ledger.sqlite").exists()
    for i in range(150):
        s3.put_object(Bucket=bucket, Key=f"{i}.bam", Body=b"x")
    report = submit(plan, staging=f"s3://{bucket}/staging/", endpoints=endpoints, check=True)
    assert emulator.batch_count() == 1 and report.phases[0].created == 1


# ---------------------------------------------------------------- the workflow, from the service


@pytest.fixture()
def lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLANNER_NO_WORKFLOW_LOOKUP")


def _workflow(emulator: OmicsEmulator, template: dict[str, Any] | None = None, **versions: Any) -> str:
    emulator.put_workflow("1234567", parameter_template=template or TEMPLATE, versions=versions or None)
    return "1234567"


def test_plan_reads_the_workflow_from_the_service(
    tmp_path: Path, lookup: None, make_omics_emulator: Callable[..., OmicsEmulator]
) -> None:
    emulator = make_omics_emulator()
    _workflow(emulator)
    sheet = write_csv(tmp_path / "s.csv", ["sample", "bam", "extr"], [["A", "s3://b/a.bam", "1"]])
    endpoints = {"omics": emulator.endpoint_url}
    with pytest.raises(ValidationError) as caught:
        planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), endpoints=endpoints)
    (problem,) = caught.value.problems
    assert problem.describe().startswith(
        "header 'extr': becomes parameter 'extr', which workflow 1234567 does not define (did you mean 'extra'"
    )
    assert ("GetWorkflow", {"id": "1234567"}) in emulator.requests()
    good = write_csv(tmp_path / "g.csv", ["sample", "bam"], [["A", "s3://b/a.bam"]])
    planner.plan(good, backend="omics-batch", defaults=defaults_for("omics-batch"), endpoints=endpoints).write(
        tmp_path / "plan"
    )
    record = load_manifest(tmp_path / "plan")["workflow"]
    assert record["source"] == "GetWorkflow 1234567" and record["status"] == "ACTIVE"


def test_a_version_named_by_the_run_is_read_and_must_be_active(
    tmp_path: Path, lookup: None, make_omics_emulator: Callable[..., OmicsEmulator]
) -> None:
    emulator = make_omics_emulator()
    _workflow(emulator, v2={**TEMPLATE, "bam": {"optional": True}})
    emulator.set_workflow_status("1234567", "FAILED", version_name="v2", message="bad container")
    document = defaults_for("omics-batch")
    document["run"]["workflowVersionName"] = "v2"
    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["A"]])
    with pytest.raises(ValidationError) as caught:
        planner.plan(sheet, backend="omics-batch", defaults=document, endpoints={"omics": emulator.endpoint_url})
    assert [p.describe() for p in caught.value.problems] == [
        "defaults, field '[run] workflowVersionName' = 'v2': version v2 of workflow 1234567 is FAILED (bad "
        "container) in GetWorkflowVersion 1234567 v2; a run starts only on an ACTIVE workflow [workflow-status]"
    ]


def test_an_unknown_version_names_the_version(
    tmp_path: Path, lookup: None, make_omics_emulator: Callable[..., OmicsEmulator]
) -> None:
    emulator = make_omics_emulator()
    _workflow(emulator)
    document = defaults_for("omics-batch")
    document["run"]["workflowVersionName"] = "v9"
    sheet = write_csv(tmp_path / "s.csv", ["sample", "bam"], [["A", "s3://b/a.bam"]])
    with pytest.raises(ValidationError) as caught:
        planner.plan(sheet, backend="omics-batch", defaults=document, endpoints={"omics": emulator.endpoint_url})
    (problem,) = caught.value.problems
    assert (problem.column, problem.value, problem.rule) == ("[run] workflowVersionName", "v9", "workflow-not-found")


def test_an_unknown_workflow_is_a_problem_and_no_credentials_skip_the_check(
    tmp_path: Path, lookup: None, make_omics_emulator: Callable[..., OmicsEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = make_omics_emulator()
    sheet = write_csv(tmp_path / "s.csv", ["sample", "bam"], [["A", "s3://b/a.bam"]])
    with pytest.raises(ValidationError) as caught:
        planner.plan(
            sheet,
            backend="omics-batch",
            defaults=defaults_for("omics-batch"),
            endpoints={"omics": emulator.endpoint_url},
        )
    (problem,) = caught.value.problems
    assert problem.rule == "workflow-not-found" and problem.column == "[run] workflowId"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    planned = planner.plan(
        sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), endpoints={"omics": emulator.endpoint_url}
    )
    assert planned.workflow is not None and planned.workflow.skipped == "no AWS credentials to read workflow 1234567"


def test_check_sees_a_template_changed_since_planning(
    tmp_path: Path, lookup: None, s3: Any, moto_server: str, make_omics_emulator: Callable[..., OmicsEmulator]
) -> None:
    emulator = make_omics_emulator()
    _workflow(emulator)
    bucket = _bucket(s3, "a.bam", "b.bam")
    endpoints = {"omics": emulator.endpoint_url, "s3": moto_server}
    rows = [["A", f"s3://{bucket}/a.bam"], ["B", f"s3://{bucket}/b.bam"]]
    plan = make_plan(
        tmp_path,
        write_csv(tmp_path / "s.csv", ["sample", "bam"], rows),
        "omics-batch",
        defaults=_defaults("omics-batch", bucket),
        endpoints=endpoints,
    )
    unchanged = check(plan, endpoints=endpoints, quotas=False)
    assert unchanged.ok and unchanged.workflow is not None and unchanged.workflow.changed is False
    # The workflow's owner adds a required parameter and drops one the plan sends.
    _workflow(emulator, {**{k: v for k, v in TEMPLATE.items() if k != "threads"}, "genome": {}})
    changed = check(plan, endpoints=endpoints, quotas=False)
    assert changed.workflow is not None and changed.workflow.changed is True
    assert [w.rule for w in changed.warnings] == ["template-changed"]
    assert "added genome" in changed.warnings[0].message and "removed threads" in changed.warnings[0].message
    assert _lines(changed) == [
        "defaults, field '[run] parameters.threads': is not a parameter of workflow 1234567; its template defines "
        "bam, extra, genome, reference, sample [template-unknown]",
        "defaults, field '[run] parameters.genome': is required by workflow 1234567, and no run of this plan sets "
        "it: plan again with it in [run.parameters] or a sheet column [template-required]",
    ]


def test_check_applies_the_template_to_a_plan_made_without_one(
    tmp_path: Path, lookup: None, make_omics_emulator: Callable[..., OmicsEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = make_omics_emulator()
    rows = [["A", "s3://b/a.bam"], ["B", None]]
    monkeypatch.setenv("PLANNER_NO_WORKFLOW_LOOKUP", "1")
    plan = make_plan(
        tmp_path,
        write_csv(tmp_path / "s.csv", ["sample", "bam"], rows),
        "omics-run",
        defaults=defaults_for("omics-run"),
    )
    assert load_manifest(plan)["workflow"]["check"] == "skipped"
    emulator.put_workflow("7654321", parameter_template={"sample": {}, "bam": {}, "genome": {}})
    report = check(plan, endpoints={"omics": emulator.endpoint_url}, inputs=False, quotas=False)
    assert _lines(report) == [
        "row 2 (id 'B'), column 'parameters.bam': the run lacks parameter 'bam', which workflow 7654321 requires "
        "[template-required]"
    ]


# ---------------------------------------------------------------- quotas


def test_the_retained_run_quota_warns_with_the_fix(
    tmp_path: Path, make_omics_emulator: Callable[..., OmicsEmulator], make_omics_client: Callable[..., Any]
) -> None:
    from botocore.stub import Stubber

    from planner.commands.check import open_check_context
    from planner.core.plandir import PlanDirectory
    from planner.services.quotas import quota_value, retained_runs
    from planner.services.workflow import Lookup

    emulator = make_omics_emulator()
    omics = make_omics_client(emulator)
    for i in range(3):
        omics.start_run(
            workflowId="1", roleArn="arn:aws:iam::123456789012:role/r", outputUri="s3://b/o/", requestId=f"r{i}"
        )
    plan = make_plan(
        tmp_path,
        write_csv(tmp_path / "s.csv", ["sample"], [["A"], ["B"]]),
        "omics-batch",
        defaults=_defaults("omics-batch", "none"),
    )
    ctx = open_check_context(PlanDirectory(plan), Lookup(endpoints={"omics": emulator.endpoint_url}))
    found, warnings = retained_runs(ctx, PlanDirectory(plan), quota=4)
    assert found["account_runs"] == 3 and found["retain_runs"] == 2
    (warning,) = warnings
    assert warning.rule == "retained-runs" and 'set retentionMode = "REMOVE" in [run]' in warning.message
    assert retained_runs(ctx, PlanDirectory(plan), quota=5)[1] == []

    import boto3

    client = boto3.client("service-quotas", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("get_service_quota", "NoSuchResourceException")  # by code first (L-C9679DBC)
        stub.add_response(
            "list_service_quotas",
            {
                "Quotas": [
                    {"QuotaName": "Maximum concurrent runs", "Value": 10.0},
                    {"QuotaName": "Maximum number of runs", "Value": 5000.0},
                ]
            },
            {"ServiceCode": "omics"},
        )
        assert quota_value(client) == (5000.0, "Maximum number of runs")


# ---------------------------------------------------------------- 100,000 rows


@pytest.mark.slow
def test_100k_distinct_inputs_are_checked_by_folder(tmp_path: Path, s3: Any, moto_server: str) -> None:
    from moto.s3.models import s3_backends

    base = _bucket(s3)
    store = s3_backends["123456789012"]["aws"]
    # 10 buckets of 10 folders of 1,000 objects (moto scans a whole bucket per listing: smaller buckets list faster)
    for b in range(10):
        store.create_bucket(f"{base}-{b}", "us-east-1")
    gone = {17, 50_001, 99_999}
    for i in range(100_000):
        if i not in gone:
            store.put_object(f"{base}-{i // 10_000}", f"run/{i // 1000:03d}/s{i:06d}.bam", b"x")
    sheet = tmp_path / "s.parquet"
    n = pl.int_range(100_000)
    pl.select(
        pl.format("s{}", n.cast(pl.String).str.zfill(6)).alias("sample"),
        pl.format(
            "s3://{}-{}/run/{}/s{}.bam",
            pl.lit(base),
            (n // 10_000).cast(pl.String),
            (n // 1000).cast(pl.String).str.zfill(3),
            n.cast(pl.String).str.zfill(6),
        ).alias("bam"),
    ).write_parquet(sheet)
    planner.plan(sheet, backend="batch", defaults=_defaults("batch", base)).write(tmp_path / "plan")
    report = check(tmp_path / "plan", endpoints={"s3": moto_server}, quotas=False)
    assert [(p.row, p.id, p.rule) for p in report.problems] == [
        (i + 1, f"s{i:06d}", "s3-missing") for i in sorted(gone)
    ]
    assert report.inputs is not None and report.inputs.uris == 100_001
    # a listing per folder of 1,000 (one page each), not 100,000 HeadObjects
    assert report.inputs.calls == {"HeadBucket": 11, "ListObjectsV2": 100, "HeadObject": 1}


@pytest.mark.slow
def test_100k_rows_against_a_template(tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_bytes(
        orjson.dumps({"sample": {}, "bam": {}, "reference": {"optional": True}, "threads": {"optional": True}})
    )
    empty = {5, 77_777}
    sheet = tmp_path / "s.parquet"
    pl.select(
        pl.format("s{}", pl.int_range(100_000)).alias("sample"),
        pl.when(~pl.int_range(100_000).is_in(list(empty)))
        .then(pl.format("s3://b/{}.bam", pl.int_range(100_000)))
        .alias("bam"),
    ).write_parquet(sheet)
    with pytest.raises(ValidationError) as caught:
        planner.plan(
            sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), parameter_template=template
        ).write(tmp_path / "plan")
    assert [(p.row, p.column, p.rule) for p in caught.value.problems] == [
        (i + 1, "bam", "template-required") for i in sorted(empty)
    ]


# ---------------------------------------------------------------- output locations, at check time


@pytest.mark.parametrize(
    ("backend", "column", "declared"),
    [("glue", "output_path", "output_path"), ("omics-batch", "outdir", "outdir"), ("batch", "outdir", "outdir")],
)
def test_check_finds_runs_sharing_an_output_location(tmp_path: Path, backend: str, column: str, declared: str) -> None:
    # A plan made without [workflow] output_parameters (by an older planner, say) is told about its collisions
    # once plan.json names them.
    rows = [["A", "s3://b/o/a/"], ["B", None], ["C", "s3://b/o/a"], ["D", None], ["E", "s3://b/o/e/"]]
    document = defaults_for(backend)
    key = f"--{column}" if backend == "glue" else column
    document["run"]["parameters" if backend != "glue" else "Arguments"][key] = "s3://b/o/default/"
    plan = make_plan(tmp_path, write_csv(tmp_path / "s.csv", ["sample", column], rows), backend, defaults=document)
    manifest = orjson.loads((Path(plan) / "plan.json").read_bytes())
    (Path(plan) / "plan.json").write_bytes(orjson.dumps({**manifest, "output_parameters": [declared]}))
    report = check(plan, inputs=False, quotas=False, workflow=False)
    assert [(p.row, p.id, p.value, p.rule) for p in report.problems] == [
        (1, "A", "s3://b/o/a", "output-collision"),
        (2, "B", "s3://b/o/default", "output-collision"),
        (3, "C", "s3://b/o/a", "output-collision"),
        (4, "D", "s3://b/o/default", "output-collision"),
    ]
    assert report.problems[0].message == "the same output location as rows 3 ('C')"
    assert report.outputs == 4


def test_submit_check_on_the_command_line(tmp_path: Path, s3: Any, moto_server: str) -> None:
    bucket = _bucket(s3, "a.bam")
    rows = [["A", f"s3://{bucket}/a.bam"], ["B", f"s3://{bucket}/b.bam"]]
    plan = make_plan(
        tmp_path, write_csv(tmp_path / "s.csv", ["sample", "bam"], rows), "batch", defaults=_defaults("batch", bucket)
    )
    staging = f"s3://{bucket}/staging/"
    done = run_cli_process(["submit", plan, "--check", "--staging", staging, "--endpoint-url", moto_server])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"planner: error: row 2 (id 'B'), column 'bam' = 's3://{bucket}/b.bam': no such object in S3 [s3-missing]",
        "planner: 1 problem found by the preflight check; nothing was staged or submitted",
    ]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="staging/").get("KeyCount") == 0
    assert not (Path(plan) / "ledger.sqlite").exists()


@pytest.mark.parametrize(
    ("backend", "column"), [("glue", "output_path"), ("batch", "outdir"), ("omics-batch", "outdir")]
)
def test_output_parameters_are_not_inputs(tmp_path: Path, s3: Any, moto_server: str, backend: str, column: str) -> None:
    # Where a run writes is not there before it runs: neither the check nor the check's policy asks S3 about it.
    bucket = _bucket(s3, "a.bam")
    document = defaults_for(backend, workflow={"output_parameters": [column]})
    arguments = document["run"]["parameters" if backend != "glue" else "Arguments"]
    prefix = "--" if backend == "glue" else ""
    arguments[f"{prefix}reference"] = f"s3://{bucket}/refs/hg38.fa"
    arguments[f"{prefix}{column}"] = f"s3://{bucket}/out/default/"
    rows = [["A", f"s3://{bucket}/a.bam", f"s3://{bucket}/out/A/"], ["B", f"s3://{bucket}/a.bam", None]]
    plan = make_plan(
        tmp_path, write_csv(tmp_path / "s.csv", ["sample", "bam", column], rows), backend, defaults=document
    )
    report = check(plan, endpoints={"s3": moto_server}, quotas=False, workflow=False)
    assert _lines(report) == [] and report.warnings == []
    assert report.inputs is not None and report.inputs.uris == 2  # the reads and the reference, not the outputs
    found = planner.policies(plan, staging="s3://b/p/", region="us-east-1", account="123456789012")
    assert found.check is not None
    read = [r for s in found.check["Statement"] if "s3:GetObject" in s["Action"] for r in s["Resource"]]
    assert read == [f"arn:aws:s3:::{bucket}/*", f"arn:aws:s3:::{bucket}/refs/*"]
