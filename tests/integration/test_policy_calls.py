"""``planner policy`` is enough: every call the planner makes while it submits, refreshes and cancels
a plan (recorded on its own clients, against moto and the HealthOmics emulator) is allowed by the
submitter document it prints, on the resource the call touched (S3 objects and buckets, the job queue)."""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest

import planner
from planner.commands.cancel import cancel
from planner.commands.policy import CALLS, S3_STAGING_CALLS, policies
from planner.commands.status import status
from planner.commands.submit import submit

MiB = 1024 * 1024
REGION, ACCOUNT = "us-east-1", "123456789012"
NO_PERMISSION = {("sts", "GetCallerIdentity")}  # which account must own the staging bucket: always allowed


class Recorder:
    """(service, operation, parameters) of every call of every client the planner makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from planner.services import aws

        original = aws.Clients._make

        def make(clients: Any, service: str) -> Any:
            client = original(clients, service)
            client.meta.events.register(
                "provide-client-params",
                lambda model, params, **_: self.calls.append((service, model.name, dict(params))),
            )
            return client

        monkeypatch.setattr(aws.Clients, "_make", make)


def allowed(document: dict[str, Any], action: str, resource: str | None) -> bool:
    for statement in document["Statement"]:
        if action in statement["Action"] and (
            resource is None or any(fnmatch.fnmatchcase(resource, pattern) for pattern in statement["Resource"])
        ):
            return True
    return False


def _s3_resource(operation: str, params: dict[str, Any]) -> str:
    if operation == "ListMultipartUploads":
        return f"arn:aws:s3:::{params['Bucket']}"
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def check_calls(plan_dir: str, recorder: Recorder, staging: str | None, **extra: Any) -> set[str]:
    """Each recorded call is allowed by the printed submitter policy; returns the operations seen."""
    found = policies(plan_dir, staging=staging, region=REGION, account=ACCOUNT, **extra)
    backend = found.backend
    table: dict[str, list[str]] = {}
    for operation, action in (*CALLS[backend], *S3_STAGING_CALLS):
        table.setdefault(operation, []).append(action)
    seen = set()
    for service, operation, params in recorder.calls:
        seen.add(operation)
        if (service, operation) in NO_PERMISSION:
            continue
        assert operation in table, f"{service}.{operation} is called but planner.policy.CALLS does not list it"
        for action in table[operation]:
            if action == "iam:PassRole":
                assert allowed(
                    found.submitter, action, str(params.get("roleArn") or params["defaultRunSetting"]["roleArn"])
                )
                continue
            resource = _s3_resource(operation, params) if service == "s3" else None
            if action == "batch:SubmitJob":
                resource = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{params['jobQueue']}"
            if action == "batch:TagResource":
                resource = f"arn:aws:batch:{REGION}:{ACCOUNT}:job/a-new-job-id"
            if action == "glue:StartJobRun":
                resource = f"arn:aws:glue:{REGION}:{ACCOUNT}:job/{params['JobName']}"
            assert allowed(found.submitter, action, resource), (operation, action, resource)
    return seen


def _omics_defaults(bucket: str) -> dict[str, Any]:
    return {
        "run": {"workflowId": "1234567", "roleArn": f"arn:aws:iam::{ACCOUNT}:role/omics", "outputUri": "s3://out/r/"},
        "staging": {"uri": f"s3://{bucket}/staging/"},
    }


def _frame(runs: int, padding: int = 0) -> pl.DataFrame:
    frame = pl.DataFrame({"sample": [f"S{i:05d}" for i in range(runs)]})
    return frame.with_columns(pl.lit("x" * padding).alias("padding")) if padding else frame


def test_omics_batch_calls_are_all_in_the_policy(
    tmp_path: Path,
    moto_server: str,
    bucket: str,
    make_omics_emulator: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = make_omics_emulator()
    plan_dir = str(tmp_path / "plan")
    # Two S3 shards, the first multipart: every staging call there is.
    planner.plan(
        _frame(700, 10_000), backend="omics-batch", defaults=_omics_defaults(bucket), part_size=5 * MiB, max_entries=600
    ).write(plan_dir)
    recorder = Recorder()
    recorder.install(monkeypatch)
    access = {"endpoints": {"s3": moto_server, "omics": emulator.endpoint_url}}
    submit(plan_dir, **access)
    status(plan_dir, **access)
    cancel(plan_dir, **access)
    seen = check_calls(plan_dir, recorder, None)
    assert {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "HeadObject"} <= seen
    assert {"StartRunBatch", "GetBatch", "GetCallerIdentity"} <= seen


def test_omics_run_calls_are_all_in_the_policy(
    tmp_path: Path, moto_server: str, make_omics_emulator: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = make_omics_emulator()
    plan_dir = str(tmp_path / "plan")
    planner.plan(_frame(3), backend="omics-run", defaults=_omics_defaults("unused")).write(plan_dir)
    recorder = Recorder()
    recorder.install(monkeypatch)
    access = {"endpoints": {"s3": moto_server, "omics": emulator.endpoint_url}}
    submit(plan_dir, **access)
    status(plan_dir, **access)
    cancel(plan_dir, **access)
    seen = check_calls(plan_dir, recorder, None)
    assert {"StartRun", "CancelRun"} <= seen and "GetCallerIdentity" not in seen  # nothing staged, no owner asked


def test_batch_calls_are_all_in_the_policy(
    tmp_path: Path, moto_server: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import open_plan

    from planner.commands.sandbox_prepare import prepare_batch

    queue = f"q-{uuid.uuid4().hex[:12]}"
    plan_dir = str(tmp_path / "plan")
    defaults = {"run": {"jobQueue": queue, "jobDefinition": "planner-test-jobdef:1", "tags": {"p": "1"}}}
    planner.plan(_frame(5), backend="batch", defaults=defaults, max_entries=3).write(plan_dir)
    ctx = open_plan(plan_dir, sandbox=True, endpoints={"batch": moto_server, "iam": moto_server})
    try:
        prepare_batch(ctx)
    finally:
        ctx.ledger.close()
    recorder = Recorder()
    recorder.install(monkeypatch)
    access = {"endpoints": {"s3": moto_server, "batch": moto_server}}
    staging = f"s3://{bucket}/staging/"
    submit(plan_dir, staging=staging, **access)
    status(plan_dir, **access)
    cancel(plan_dir, **access)
    seen = check_calls(plan_dir, recorder, staging)
    assert {"SubmitJob", "ListJobs", "PutObject", "HeadObject"} <= seen


def test_glue_manifest_calls_are_all_in_the_policy(
    tmp_path: Path, moto_server: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    glue = boto3.client("glue", endpoint_url=moto_server, region_name=REGION)
    job = f"etl-{uuid.uuid4().hex[:10]}"
    glue.create_job(
        Name=job,
        Role=f"arn:aws:iam::{ACCOUNT}:role/glue",
        GlueVersion="4.0",
        Command={"Name": "glueetl", "ScriptLocation": "s3://scripts/etl.py", "PythonVersion": "3"},
        ExecutionProperty={"MaxConcurrentRuns": 5},
    )
    plan_dir = str(tmp_path / "plan")
    defaults = {"run": {"JobName": job, "WorkerType": "G.1X", "NumberOfWorkers": 2}, "submission": {"mode": "manifest"}}
    planner.plan(_frame(4), backend="glue", defaults=defaults, max_entries=2).write(plan_dir)
    recorder = Recorder()
    recorder.install(monkeypatch)
    access = {"endpoints": {"s3": moto_server, "glue": moto_server}}
    staging = f"s3://{bucket}/staging/"
    submit(plan_dir, staging=staging, **access)
    status(plan_dir, **access)
    cancel(plan_dir, **access)
    seen = check_calls(plan_dir, recorder, staging)
    assert {"StartJobRun", "GetJobRuns", "PutObject"} <= seen


class EveryClient:
    """(service, operation, parameters) of every call of every botocore client, however it was made
    (``planner check`` reads the workflow and the quota on clients of its own)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from botocore.client import BaseClient

        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        original = BaseClient._make_api_call

        def record(client: Any, operation: str, params: dict[str, Any]) -> Any:
            self.calls.append((client.meta.service_model.service_name, operation, dict(params)))
            return original(client, operation, params)

        monkeypatch.setattr(BaseClient, "_make_api_call", record)


def _resource(service: str, operation: str, params: dict[str, Any]) -> str | None:
    """The resource a call touches, as the policy names it (None: the action takes no resource)."""
    if service == "s3":
        return f"arn:aws:s3:::{params['Bucket']}" + (f"/{params['Key']}" if operation in _S3_OBJECT_CALLS else "")
    if operation in ("GetWorkflow", "GetWorkflowVersion"):
        workflow = params.get("id") or params["workflowId"]
        version = f"/version/{params['versionName']}" if "versionName" in params else ""
        return f"arn:aws:omics:{REGION}:{ACCOUNT}:workflow/{workflow}{version}"
    if operation in ("GetBatch", "DeleteRunBatch"):
        return f"arn:aws:omics:{REGION}:{ACCOUNT}:runBatch/{params['batchId']}"
    if operation in ("GetRun", "DeleteRun"):
        return f"arn:aws:omics:{REGION}:{ACCOUNT}:run/{params['id']}"
    return None


_S3_OBJECT_CALLS = {"HeadObject", "GetObject", "DeleteObject"}


def _check_each(document: dict[str, Any], calls: list[tuple[str, str, dict[str, Any]]], table: Any) -> set[str]:
    actions: dict[str, list[str]] = {}
    for operation, action in table:
        actions.setdefault(operation, []).append(action)
    seen = set()
    for service, operation, params in calls:
        seen.add(operation)
        if (service, operation) in NO_PERMISSION:
            continue
        assert operation in actions, f"{service}.{operation} is called but its table does not list it"
        for action in actions[operation]:
            if action == "s3:DeleteObjectVersion" and "VersionId" not in params:
                continue
            resource = _resource(service, operation, params)
            assert allowed(document, action, resource), (operation, action, resource)
    return seen


def test_check_and_clean_calls_are_all_in_their_policies(
    tmp_path: Path,
    moto_server: str,
    bucket: str,
    s3: Any,
    clock: Any,
    make_omics_emulator: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from planner.commands.check import check
    from planner.commands.clean import clean
    from planner.commands.policy import CHECK_CALLS, CHECK_INPUT_CALLS, CLEAN_CALLS, CLEAN_STAGING_CALLS

    emulator = make_omics_emulator()
    template = {"sample": {"optional": False}, "bam": {"optional": False}, "extra": {"optional": True}}
    emulator.put_workflow("1234567", parameter_template=template)
    # Inputs in two folders: 147 keys listed, 3 headed one by one (fewer than LIST_MIN).
    for i in range(150):
        s3.put_object(Bucket=bucket, Key=f"{'many' if i < 147 else 'few'}/{i}.bam", Body=b"x")
    sheet = pl.DataFrame(
        {
            "sample": [f"S{i:05d}" for i in range(150)],
            "bam": [f"s3://{bucket}/{'many' if i < 147 else 'few'}/{i}.bam" for i in range(150)],
        }
    )
    plan_dir = str(tmp_path / "plan")
    defaults = _omics_defaults(bucket)
    defaults["run"]["outputUri"] = f"s3://{bucket}/out/"
    planner.plan(sheet, backend="omics-batch", defaults=defaults).write(plan_dir)  # 150 runs: staged on S3
    found = policies(plan_dir, region=REGION, account=ACCOUNT)
    assert found.check is not None and found.clean is not None
    # moto answers ListServiceQuotas with an error: the check then says the quota is not known.
    access = {"endpoints": {"s3": moto_server, "omics": emulator.endpoint_url, "service-quotas": moto_server}}

    monkeypatch.delenv("PLANNER_NO_WORKFLOW_LOOKUP")
    every = EveryClient(monkeypatch)
    report = check(plan_dir, **access)
    assert not report.problems, report.problems
    seen = _check_each(found.check, every.calls, (*CHECK_CALLS["omics-batch"], *CHECK_INPUT_CALLS))
    assert {"GetWorkflow", "HeadObject", "ListObjectsV2", "ListRuns"} <= seen

    submit(plan_dir, **access)
    for _ in range(12):
        clock.advance(1.0)
    every.calls.clear()
    done = clean(plan_dir, runs=True, **access)
    assert len(done.removed) == 1 and [o.outcome for o in done.runs] == ["deleting"]  # RUNS_DELETING
    seen = _check_each(found.clean, every.calls, (*CLEAN_CALLS["omics-batch"], *CLEAN_STAGING_CALLS))
    assert {"GetBatch", "DeleteRunBatch", "HeadObject", "DeleteObject"} <= seen
