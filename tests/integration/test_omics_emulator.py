"""The HealthOmics emulator, driven by a real boto3 client over loopback HTTP.

S3 is moto's server; time is a fake clock the tests move by whole steps.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config

ROLE = "arn:aws:iam::123456789012:role/omics-batch"
STEP = 1.0


def default_setting(**overrides: Any) -> dict[str, Any]:
    setting = {
        "workflowId": "1234567",
        "roleArn": ROLE,
        "outputUri": "s3://results/out/",
        "storageType": "DYNAMIC",
        "parameters": {"reference": "s3://refs/hg38.fa", "threads": 8, "mode": "default"},
        "runTags": {"project": "p1", "stage": "default"},
    }
    setting.update(overrides)
    return setting


def inline(count: int, prefix: str = "sample") -> list[dict[str, Any]]:
    return [
        {
            "runSettingId": f"{prefix}-{i:05d}",
            "name": f"{prefix}-{i:05d}",
            "parameters": {"fastq": f"s3://in/{prefix}-{i:05d}.fq.gz", "mode": "sample"},
            "runTags": {"stage": "sample", "sample": f"{prefix}-{i:05d}"},
        }
        for i in range(count)
    ]


def start_inline_batch(omics: Any, count: int, **kwargs: Any) -> str:
    kwargs.setdefault("defaultRunSetting", default_setting())
    kwargs.setdefault("batchRunSettings", {"inlineSettings": inline(count)})
    return omics.start_run_batch(**kwargs)["id"]


def runs_in_batch(omics: Any, batch_id: str, page_size: int = 100) -> list[dict[str, Any]]:
    paginator = omics.get_paginator("list_runs_in_batch")
    pages = paginator.paginate(batchId=batch_id, PaginationConfig={"PageSize": page_size})
    return [run for page in pages for run in page["runs"]]


def run_states(omics: Any, batch_id: str) -> dict[str, str]:
    paginator = omics.get_paginator("list_runs")
    return {item["id"]: item["status"] for page in paginator.paginate(batchId=batch_id) for item in page["items"]}


# ---------------------------------------------------------------------------
# batches


def test_inline_batch_of_60_runs_creates_60_runs_with_merged_settings(omics, omics_emulator, clock):
    response = omics.start_run_batch(
        batchName="inline 60",
        requestId="plan-1/shard-0",
        tags={"owner": "planner"},
        defaultRunSetting=default_setting(),
        batchRunSettings={"inlineSettings": inline(60)},
    )
    assert response["status"] == "PENDING"
    assert response["tags"] == {"owner": "planner"}
    batch_id = response["id"]
    assert omics_emulator.run_count() == 0

    clock.advance(2 * STEP)  # PENDING, SUBMITTING, then the runs are submitted
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "INPROGRESS"
    assert batch["totalRuns"] == 60
    assert batch["submissionSummary"]["successfulStartSubmissionCount"] == 60
    assert batch["defaultRunSetting"]["workflowId"] == "1234567"
    assert omics_emulator.run_count() == 60

    mapping = runs_in_batch(omics, batch_id)
    assert [m["runSettingId"] for m in mapping] == [f"sample-{i:05d}" for i in range(60)]
    assert {m["submissionStatus"] for m in mapping} == {"SUCCESS"}
    assert len({m["runId"] for m in mapping}) == 60

    run = omics.get_run(id=mapping[7]["runId"])
    assert run["batchId"] == batch_id
    assert run["name"] == "sample-00007"
    assert run["parameters"] == {
        "reference": "s3://refs/hg38.fa",
        "threads": 8,
        "mode": "sample",
        "fastq": "s3://in/sample-00007.fq.gz",
    }
    assert run["tags"] == {"project": "p1", "stage": "sample", "sample": "sample-00007"}
    assert run["storageType"] == "DYNAMIC"
    assert run["outputUri"] == "s3://results/out/"
    assert run["runOutputUri"] == f"s3://results/out/{run['id']}"
    assert set(run_states(omics, batch_id)) == {m["runId"] for m in mapping}


def test_s3_batch_of_250_runs_records_the_etag_and_creates_the_runs(omics, omics_emulator, clock, s3, bucket):
    body = json.dumps(inline(250)).encode()
    etag = s3.put_object(Bucket=bucket, Key="plans/p1/shard-0.json", Body=body)["ETag"]
    batch_id = omics.start_run_batch(
        requestId="plan-1/shard-0",
        defaultRunSetting=default_setting(),
        batchRunSettings={"s3UriSettings": f"s3://{bucket}/plans/p1/shard-0.json"},
    )["id"]
    assert omics_emulator.recorded_etag(batch_id) == etag

    clock.advance(2 * STEP)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "INPROGRESS" and batch["totalRuns"] == 250
    mapping = runs_in_batch(omics, batch_id)
    assert len(mapping) == 250 and {m["submissionStatus"] for m in mapping} == {"SUCCESS"}
    assert omics_emulator.run_count() == 250
    run = omics.get_run(id=mapping[-1]["runId"])
    assert run["parameters"]["fastq"] == "s3://in/sample-00249.fq.gz"
    assert run["parameters"]["threads"] == 8

    clock.advance(3 * STEP)
    assert omics.get_batch(batchId=batch_id)["status"] == "PROCESSED"


def test_s3_object_modified_after_submission_fails_the_batch(omics, omics_emulator, clock, s3, bucket):
    s3.put_object(Bucket=bucket, Key="shard.json", Body=json.dumps(inline(5)).encode())
    batch_id = omics.start_run_batch(
        requestId="modified",
        defaultRunSetting=default_setting(),
        batchRunSettings={"s3UriSettings": f"s3://{bucket}/shard.json"},
    )["id"]
    recorded = omics_emulator.recorded_etag(batch_id)
    changed = s3.put_object(Bucket=bucket, Key="shard.json", Body=json.dumps(inline(6)).encode())["ETag"]
    assert changed != recorded

    clock.advance(3 * STEP)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "FAILED"
    assert "ETag" in batch["failureReason"] and recorded in batch["failureReason"] and changed in batch["failureReason"]
    assert "failedTime" in batch
    assert runs_in_batch(omics, batch_id) == []
    assert omics_emulator.run_count() == 0


def test_missing_s3_settings_object_is_a_validation_error(omics, omics_emulator, bucket):
    with pytest.raises(omics.exceptions.ValidationException, match="s3UriSettings"):
        omics.start_run_batch(
            requestId="missing",
            defaultRunSetting=default_setting(),
            batchRunSettings={"s3UriSettings": f"s3://{bucket}/nothing-here.json"},
        )
    assert omics_emulator.batch_count() == 0


def test_invalid_entries_in_the_s3_file_fail_only_their_submissions(omics, clock, s3, bucket):
    entries = inline(4)
    entries[1]["priority"] = 100001  # over the model's max
    entries[2]["outputUri"] = "x" * 751  # over the model's max length
    s3.put_object(Bucket=bucket, Key="mixed.json", Body=json.dumps(entries).encode())
    batch_id = omics.start_run_batch(
        requestId="mixed",
        defaultRunSetting=default_setting(),
        batchRunSettings={"s3UriSettings": f"s3://{bucket}/mixed.json"},
    )["id"]
    clock.advance(2 * STEP)
    by_id = {m["runSettingId"]: m for m in runs_in_batch(omics, batch_id)}
    assert [by_id[f"sample-{i:05d}"]["submissionStatus"] for i in range(4)] == [
        "SUCCESS",
        "FAILED",
        "FAILED",
        "SUCCESS",
    ]
    assert "priority" in by_id["sample-00001"]["submissionFailureMessage"]
    assert "outputUri" in by_id["sample-00002"]["submissionFailureMessage"]
    assert "runId" not in by_id["sample-00001"]
    failed = omics.list_runs_in_batch(batchId=batch_id, submissionStatus="FAILED")["runs"]
    assert {m["runSettingId"] for m in failed} == {"sample-00001", "sample-00002"}
    summary = omics.get_batch(batchId=batch_id)["submissionSummary"]
    assert (summary["successfulStartSubmissionCount"], summary["failedStartSubmissionCount"]) == (2, 2)


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"runSettingId": "a"}', json.dumps(inline(2) + inline(1)).encode()]
)
def test_an_unusable_s3_file_fails_the_batch(omics, clock, s3, bucket, content):
    s3.put_object(Bucket=bucket, Key="bad.json", Body=content)
    batch_id = omics.start_run_batch(
        requestId="bad",
        defaultRunSetting=default_setting(),
        batchRunSettings={"s3UriSettings": f"s3://{bucket}/bad.json"},
    )["id"]
    clock.advance(2 * STEP)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "FAILED" and batch["failureReason"]


def test_the_same_request_id_twice_creates_one_batch(omics, omics_emulator, clock):
    first = start_inline_batch(omics, 3, requestId="plan-9/shard-0")
    clock.advance(2 * STEP)
    second = start_inline_batch(omics, 3, requestId="plan-9/shard-0")
    assert first == second
    assert omics_emulator.batch_count() == 1 and omics_emulator.run_count() == 3
    third = start_inline_batch(omics, 3, requestId="plan-9/shard-1")
    assert third != first and omics_emulator.batch_count() == 2


def test_the_same_request_id_twice_starts_one_run(omics, omics_emulator):
    kwargs = dict(workflowId="1234567", roleArn=ROLE, outputUri="s3://results/out/", name="s1", requestId="plan-9/s1")
    first = omics.start_run(**kwargs)
    second = omics.start_run(**kwargs)
    assert first["id"] == second["id"] and first["uuid"] == second["uuid"]
    assert omics_emulator.run_count() == 1


def test_runs_and_batches_move_through_their_states_with_the_clock(omics, clock):
    run_id = omics.start_run(
        workflowId="1234567",
        roleArn=ROLE,
        outputUri="s3://results/out/",
        requestId="single",
        parameters={"a": 1},
        tags={"k": "v"},
    )["id"]
    batch_id = start_inline_batch(omics, 2, requestId="timeline")
    seen_runs, seen_batches = [], []
    for _ in range(6):
        seen_runs.append(omics.get_run(id=run_id)["status"])
        seen_batches.append(omics.get_batch(batchId=batch_id)["status"])
        clock.advance(STEP)
    assert seen_runs == ["PENDING", "STARTING", "RUNNING", "COMPLETED", "COMPLETED", "COMPLETED"]
    assert seen_batches == ["PENDING", "SUBMITTING", "INPROGRESS", "INPROGRESS", "INPROGRESS", "PROCESSED"]
    run = omics.get_run(id=run_id)
    assert run["parameters"] == {"a": 1} and run["tags"] == {"k": "v"}
    assert run["creationTime"] < run["startTime"] < run["stopTime"]
    assert omics.list_runs(status="COMPLETED", batchId=batch_id)["items"][0]["batchId"] == batch_id


def test_failure_rate_fails_a_deterministic_subset(make_emulator, make_omics_client, clock):
    def failed_ids(seed: int) -> set[str]:
        emulator = make_emulator(failure_rate=0.3, seed=seed)
        omics = make_omics_client(emulator)
        batch_id = start_inline_batch(omics, 100, requestId="plan-f/shard-0")
        clock.advance(5 * STEP)
        assert omics.get_batch(batchId=batch_id)["status"] == "PROCESSED"
        mapping = runs_in_batch(omics, batch_id)
        states = run_states(omics, batch_id)
        failed = {m["runSettingId"] for m in mapping if states[m["runId"]] == "FAILED"}
        completed = {m["runSettingId"] for m in mapping if states[m["runId"]] == "COMPLETED"}
        assert len(failed) + len(completed) == 100
        some_failed = next(m["runId"] for m in mapping if states[m["runId"]] == "FAILED")
        assert omics.get_run(id=some_failed)["failureReason"]
        assert omics.get_batch(batchId=batch_id)["runSummary"]["failedRunCount"] == len(failed)
        return failed

    first, again, other = failed_ids(7), failed_ids(7), failed_ids(8)
    assert first == again
    assert 10 <= len(first) <= 50
    assert other != first


def test_list_runs_in_batch_pages_return_every_run_setting_once(omics, clock):
    batch_id = start_inline_batch(omics, 60, requestId="pages")
    clock.advance(2 * STEP)
    first = omics.list_runs_in_batch(batchId=batch_id, maxItems=25)
    assert len(first["runs"]) == 25 and first["nextToken"]
    mapping = runs_in_batch(omics, batch_id, page_size=7)
    ids = [m["runSettingId"] for m in mapping]
    assert len(ids) == 60 and set(ids) == {f"sample-{i:05d}" for i in range(60)}
    one = omics.list_runs_in_batch(batchId=batch_id, runSettingId="sample-00042")["runs"]
    assert [m["runSettingId"] for m in one] == ["sample-00042"]
    assert len(run_states(omics, batch_id)) == 60  # ListRuns pages too (maxResults)
    assert len(omics.list_runs(batchId=batch_id, maxResults=10)["items"]) == 10


def test_cancel_run_batch_cancels_the_batch_and_its_unfinished_runs(omics, omics_emulator, clock):
    batch_id = start_inline_batch(omics, 10, requestId="to-cancel")
    clock.advance(3 * STEP)  # runs STARTING
    omics.cancel_run_batch(batchId=batch_id)
    assert omics.get_batch(batchId=batch_id)["status"] == "CANCELLED"
    assert set(run_states(omics, batch_id).values()) == {"CANCELLED"}
    assert {m["submissionStatus"] for m in runs_in_batch(omics, batch_id)} == {"CANCEL_SUCCESS"}
    clock.advance(10 * STEP)
    assert set(run_states(omics, batch_id).values()) == {"CANCELLED"}
    with pytest.raises(omics.exceptions.ConflictException):
        omics.cancel_run_batch(batchId=batch_id)

    early = start_inline_batch(omics, 10, requestId="cancel-early")
    omics.cancel_run_batch(batchId=early)
    clock.advance(10 * STEP)
    assert omics.get_batch(batchId=early)["status"] == "CANCELLED"
    assert runs_in_batch(omics, early) == []
    assert omics_emulator.run_count() == 10


def test_cancel_run_and_unknown_ids(omics, clock):
    run_id = omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="c1")["id"]
    omics.cancel_run(id=run_id)
    assert omics.get_run(id=run_id)["status"] == "CANCELLED"
    with pytest.raises(omics.exceptions.ConflictException):
        omics.cancel_run(id=run_id)
    done = omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="c2")["id"]
    clock.advance(3 * STEP)
    with pytest.raises(omics.exceptions.ConflictException):
        omics.cancel_run(id=done)
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_run(id="999")
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_batch(batchId="999")
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.cancel_run_batch(batchId="999")


def test_list_batch_and_delete(omics, clock):
    a = start_inline_batch(omics, 2, requestId="a", batchName="alpha")
    b = start_inline_batch(omics, 2, requestId="b", batchName="beta")
    assert [item["id"] for item in omics.list_batch()["items"]] == [a, b]
    assert [item["id"] for item in omics.list_batch(name="beta")["items"]] == [b]
    with pytest.raises(omics.exceptions.ConflictException):
        omics.delete_batch(batchId=a)  # not finished
    clock.advance(5 * STEP)
    assert [item["id"] for item in omics.list_batch(status="PROCESSED")["items"]] == [a, b]
    omics.delete_run_batch(batchId=a)
    assert omics.get_batch(batchId=a)["status"] == "RUNS_DELETED"
    assert set(run_states(omics, a).values()) == {"DELETED"}
    omics.delete_batch(batchId=a)
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_batch(batchId=a)


# ---------------------------------------------------------------------------
# validation


def _batch_kwargs(**changes: Any) -> dict[str, Any]:
    kwargs = {
        "requestId": "v",
        "defaultRunSetting": default_setting(),
        "batchRunSettings": {"inlineSettings": inline(2)},
    }
    kwargs.update(changes)
    return kwargs


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"batchName": "b" * 65}, "batchName"),
        ({"defaultRunSetting": default_setting(storageType="FAST")}, "defaultRunSetting.storageType"),
        ({"defaultRunSetting": default_setting(workflowId="wf-123")}, "defaultRunSetting.workflowId"),
        ({"defaultRunSetting": default_setting(priority=100001)}, "defaultRunSetting.priority"),
        ({"batchRunSettings": {"inlineSettings": inline(101)}}, "batchRunSettings.inlineSettings"),
        (
            {"batchRunSettings": {"inlineSettings": [{"runSettingId": "a", "name": "tab\there"}]}},
            "batchRunSettings.inlineSettings.1.member.name",
        ),
        (
            {"batchRunSettings": {"inlineSettings": inline(1) + inline(1)}},
            "batchRunSettings.inlineSettings.2.member.runSettingId",
        ),
        ({"tags": {"k": "v" * 257}}, "tags"),
    ],
    ids=[
        "batchName-65",
        "storageType-enum",
        "workflowId-pattern",
        "priority-max",
        "inline-101",
        "name-pattern",
        "duplicate-runSettingId",
        "tag-value-max",
    ],
)
def test_start_run_batch_rejects_what_the_model_forbids(omics, omics_emulator, changes, field):
    with pytest.raises(omics.exceptions.ValidationException) as caught:
        omics.start_run_batch(**_batch_kwargs(**changes))
    assert f"'{field}" in caught.value.response["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert omics_emulator.batch_count() == 0


def test_what_botocore_would_refuse_is_refused_by_the_emulator_too(omics_emulator, make_omics_client):
    raw = make_omics_client(omics_emulator, parameter_validation=False)
    setting = default_setting()
    del setting["roleArn"]
    with pytest.raises(raw.exceptions.ValidationException, match="defaultRunSetting.roleArn"):
        raw.start_run_batch(**_batch_kwargs(defaultRunSetting=setting))
    with pytest.raises(raw.exceptions.ValidationException, match="Union"):
        raw.start_run_batch(
            **_batch_kwargs(batchRunSettings={"inlineSettings": inline(1), "s3UriSettings": "s3://b/k"})
        )
    with pytest.raises(raw.exceptions.ValidationException, match="'roleArn'"):
        raw.start_run(workflowId="1", outputUri="s3://o/", requestId="r")
    with pytest.raises(raw.exceptions.ValidationException, match="maxItems"):
        raw.list_runs_in_batch(batchId="1", maxItems=0)
    assert omics_emulator.batch_count() == 0 and omics_emulator.run_count() == 0


def test_start_run_validates_and_records_requests(omics, omics_emulator):
    with pytest.raises(omics.exceptions.ValidationException, match="logLevel"):
        omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="x", logLevel="VERBOSE")
    omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="y")
    operations = [operation for operation, _ in omics_emulator.requests()]
    assert operations == ["StartRun", "StartRun"]
    assert omics_emulator.requests()[1][1]["requestId"] == "y"


# ---------------------------------------------------------------------------
# throttling


def test_throttle_refuses_a_burst_without_retries(make_emulator, make_omics_client):
    emulator = make_emulator(throttle_per_second=5)
    # botocore's retries "max_attempts" counts retries; total_max_attempts=1 is one attempt, no retry.
    omics = make_omics_client(emulator, retries={"mode": "standard", "total_max_attempts": 1})
    batch_id = start_inline_batch(omics, 1, requestId="t")
    outcomes = []
    for _ in range(20):
        try:
            omics.get_batch(batchId=batch_id)
            outcomes.append("ok")
        except omics.exceptions.ThrottlingException as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            outcomes.append("throttled")
    assert "throttled" in outcomes and "ok" in outcomes
    assert len([op for op, _ in emulator.requests() if op == "GetBatch"]) == 20  # nothing was retried


def test_throttle_is_absorbed_by_standard_retries(make_emulator, make_omics_client):
    emulator = make_emulator(throttle_per_second=5)
    omics = make_omics_client(emulator, retries={"mode": "standard", "max_attempts": 10})
    batch_id = start_inline_batch(omics, 1, requestId="t")
    statuses = [omics.get_batch(batchId=batch_id)["status"] for _ in range(20)]
    assert len(statuses) == 20
    get_batches = [op for op, _ in emulator.requests() if op == "GetBatch"]
    assert len(get_batches) > 20  # some were throttled and retried
    assert emulator.batch_count() == 1


# ---------------------------------------------------------------------------
# concurrency


def test_concurrent_duplicates_make_one_batch_and_distinct_runs_are_all_kept(omics, omics_emulator):
    with ThreadPoolExecutor(max_workers=8) as pool:
        batch_ids = set(pool.map(lambda _: start_inline_batch(omics, 5, requestId="same"), range(16)))
        run_ids = set(
            pool.map(
                lambda i: omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId=f"r{i % 20}")[
                    "id"
                ],
                range(60),
            )
        )
    assert len(batch_ids) == 1 and omics_emulator.batch_count() == 1
    assert len(run_ids) == 20 and omics_emulator.run_count() == 20


def test_a_plain_client_needs_only_the_host_prefix_turned_off(omics_emulator):
    # The model's hostPrefix is "workflows-": with it botocore would call workflows-127.0.0.1.
    client = boto3.client(
        "omics",
        endpoint_url=omics_emulator.endpoint_url,
        region_name="us-east-1",
        config=Config(inject_host_prefix=False),
    )
    assert client.list_batch()["items"] == []
    assert client.list_runs()["items"] == []
