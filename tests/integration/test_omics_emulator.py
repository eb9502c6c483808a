"""The HealthOmics emulator, driven by a real boto3 client over loopback HTTP.

S3 is moto's server; time is a fake clock the tests move by whole steps.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
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
    assert response["status"] == "CREATING"
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
    kwargs = {
        "workflowId": "1234567",
        "roleArn": ROLE,
        "outputUri": "s3://results/out/",
        "name": "s1",
        "requestId": "plan-9/s1",
    }
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
    assert seen_batches == ["CREATING", "SUBMITTING", "INPROGRESS", "INPROGRESS", "INPROGRESS", "PROCESSED"]
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
    clock.advance(STEP / 2)  # STOPPING, then CANCELLED
    assert omics.get_batch(batchId=batch_id)["status"] == "CANCELLED"
    assert set(run_states(omics, batch_id).values()) == {"CANCELLED"}
    assert {m["submissionStatus"] for m in runs_in_batch(omics, batch_id)} == {"CANCEL_SUCCESS"}
    clock.advance(10 * STEP)
    assert set(run_states(omics, batch_id).values()) == {"CANCELLED"}
    with pytest.raises(omics.exceptions.ConflictException):
        omics.cancel_run_batch(batchId=batch_id)

    early = start_inline_batch(omics, 10, requestId="cancel-early")
    clock.advance(STEP / 2)  # PENDING: CREATING cannot be cancelled
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
    clock.advance(STEP / 2)  # RUNS_DELETING, then RUNS_DELETED
    batch = omics.get_batch(batchId=a)
    assert batch["status"] == "RUNS_DELETED" and batch["runSummary"]["deletedRunCount"] == 2
    assert run_states(omics, a) == {}  # deleted runs are no longer listed
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
    with pytest.raises(raw.exceptions.ValidationException, match=r"defaultRunSetting\.roleArn"):
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


def test_start_run_validates_and_records_requests(omics, omics_emulator, clock):
    with pytest.raises(omics.exceptions.ValidationException, match="logLevel"):
        omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="x", logLevel="VERBOSE")
    clock.advance(1.0)  # StartRun's documented rate is one a second, refused requests included
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
    assert len([op for op, _ in emulator.requests(throttled=True) if op == "GetBatch"]) == 20  # nothing was retried
    assert len([op for op, _ in emulator.requests() if op == "GetBatch"]) == outcomes.count("ok")


def test_throttle_is_absorbed_by_standard_retries(make_emulator, make_omics_client):
    emulator = make_emulator(throttle_per_second=5)
    omics = make_omics_client(emulator, retries={"mode": "standard", "max_attempts": 10})
    batch_id = start_inline_batch(omics, 1, requestId="t")
    statuses = [omics.get_batch(batchId=batch_id)["status"] for _ in range(20)]
    assert len(statuses) == 20
    get_batches = [op for op, _ in emulator.requests(throttled=True) if op == "GetBatch"]
    assert len(get_batches) > 20  # some were throttled and retried
    assert emulator.batch_count() == 1


# ---------------------------------------------------------------------------
# concurrency


def test_concurrent_duplicates_make_one_batch_and_distinct_runs_are_all_kept(make_emulator, make_omics_client):
    omics_emulator = make_emulator(api_rates=None)  # 60 StartRun at once: about idempotency, not StartRun's rate
    omics = make_omics_client(omics_emulator)
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


# ---------------------------------------------------------------------------
# the shared loopback dispatch


def test_both_emulators_answer_through_the_shared_loopback_handler(omics_emulator, clock):
    from planner.sandbox.loopback import LoopbackHandler
    from planner.sandbox.polly_emulator import PollyEmulator

    with urllib.request.urlopen(f"{omics_emulator.endpoint_url}/runBatch", timeout=10) as answer:
        assert answer.headers["Server"] == "OmicsEmulator/1.0"
        assert answer.headers["x-amzn-RequestId"]
        assert json.loads(answer.read()) == {"items": []}
    with PollyEmulator(clock=clock, api_key=None) as polly:
        assert PollyEmulator.handler is LoopbackHandler and type(omics_emulator).handler is LoopbackHandler
        request = urllib.request.Request(f"{polly.endpoint_url}/runs?page[size]=1", headers={"x-api-key": "k"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.headers["Server"] == "PollyEmulator/1.0"
            document = json.loads(answer.read())
        # Polly's links are paths (the SDK joins links.next to its host: docs/sources-polly.md)
        api_path = urllib.parse.urlsplit(polly.endpoint_url).path
        assert document["data"] == [] and document["links"]["self"].startswith(api_path)


# ---------------------------------------------------------------------------
# failure reasons, uuid and logs


def test_fail_when_fails_runs_with_their_own_reasons(make_emulator, make_omics_client, clock):
    reasons = {
        "sample-00001": ("OUT_OF_MEMORY_ERROR", "task align ran out of memory"),
        "sample-00004": ("INPUT_URI_NOT_FOUND", "s3://in/sample-00004.fq.gz does not exist"),
    }
    seen: list[dict[str, Any]] = []

    def fail_when(settings: dict[str, Any]) -> tuple[str, str] | None:
        seen.append(settings)
        return reasons.get(settings.get("runSettingId") or settings["name"])

    emulator = make_emulator(fail_when=fail_when, failure_rate=1.0)  # fail_when alone decides
    omics = make_omics_client(emulator)
    batch_id = start_inline_batch(omics, 6, requestId="reasons")
    single = omics.start_run(
        workflowId="1234567", roleArn=ROLE, outputUri="s3://o/", requestId="one", name="sample-00004"
    )["id"]
    clock.advance(5 * STEP)
    by_setting = {m["runSettingId"]: m["runId"] for m in runs_in_batch(omics, batch_id)}
    runs = {setting: omics.get_run(id=run_id) for setting, run_id in by_setting.items()}
    assert {s: r["status"] for s, r in runs.items() if r["status"] == "FAILED"} == dict.fromkeys(reasons, "FAILED")
    for setting, (reason, message) in reasons.items():
        assert (runs[setting]["failureReason"], runs[setting]["statusMessage"]) == (reason, message)
    assert "failureReason" not in runs["sample-00000"] and "statusMessage" not in runs["sample-00000"]
    alone = omics.get_run(id=single)
    assert (alone["status"], alone["failureReason"]) == ("FAILED", "INPUT_URI_NOT_FOUND")
    # fail_when saw the merged settings, as GetRun shows them
    first = next(s for s in seen if s.get("runSettingId") == "sample-00001")
    assert first["parameters"]["reference"] == "s3://refs/hg38.fa" and first["tags"]["sample"] == "sample-00001"
    # ListRuns items carry no reason (the model's RunListItem has none)
    items = omics.list_runs(batchId=batch_id)["items"]
    assert {i["status"] for i in items} == {"COMPLETED", "FAILED"}
    assert not any("failureReason" in i or "statusMessage" in i for i in items)
    assert omics.get_batch(batchId=batch_id)["runSummary"]["failedRunCount"] == 2


def test_failure_rate_gives_each_failed_run_a_reason_from_the_guide(make_emulator, make_omics_client, clock):
    from planner.sandbox.omics_emulator import FAILURE_REASONS

    def reasons(seed: int) -> dict[str, tuple[str, str]]:
        omics = make_omics_client(make_emulator(failure_rate=0.5, seed=seed))
        batch_id = start_inline_batch(omics, 60, requestId="plan-r/shard-0")
        clock.advance(5 * STEP)
        found = {}
        for m in runs_in_batch(omics, batch_id):
            run = omics.get_run(id=m["runId"])
            if run["status"] == "FAILED":
                found[m["runSettingId"]] = (run["failureReason"], run["statusMessage"])
        return found

    first = reasons(11)
    assert first == reasons(11)
    assert set(first.values()) <= set(FAILURE_REASONS)
    assert len({reason for reason, _ in first.values()}) >= 3  # different runs fail for different reasons


def test_every_run_has_a_uuid_and_its_log_streams(omics, clock):
    started = omics.start_run(workflowId="1234567", roleArn=ROLE, outputUri="s3://o/", requestId="u1")
    run = omics.get_run(id=started["id"])
    assert started["uuid"] and run["uuid"] == started["uuid"]
    assert run["logLocation"]["runLogStream"].endswith(f":log-stream:run/{run['id']}")
    assert run["logLocation"]["engineLogStream"].endswith(f":log-stream:run/{run['id']}/engine")
    assert run["logLocation"]["runLogStream"].startswith("arn:aws:logs:us-east-1:123456789012:log-group:")
    batch_id = start_inline_batch(omics, 3, requestId="u2")
    clock.advance(2 * STEP)
    for item in runs_in_batch(omics, batch_id):
        batch_run = omics.get_run(id=item["runId"])
        assert batch_run["uuid"] == item["runInternalUuid"] and batch_run["arn"] == item["runArn"]
        assert batch_run["logLocation"]["runLogStream"].endswith(f"run/{item['runId']}")
    assert len({r["runInternalUuid"] for r in runs_in_batch(omics, batch_id)} | {run["uuid"]}) == 4


# ---------------------------------------------------------------------------
# deletion and retention


def start_run(omics: Any, request_id: str, **kwargs: Any) -> str:
    kwargs.setdefault("workflowId", "1234567")
    return omics.start_run(roleArn=ROLE, outputUri="s3://o/", requestId=request_id, **kwargs)["id"]


def test_delete_run_only_once_final_then_the_run_is_gone(omics, omics_emulator, clock):
    ids = [start_run(omics, f"d{i}", name=f"run-{i}") for i in range(5)]
    with pytest.raises(omics.exceptions.ConflictException, match="PENDING"):
        omics.delete_run(id=ids[0])
    first_page = omics.list_runs(maxResults=2)
    assert [i["id"] for i in first_page["items"]] == ids[:2]
    clock.advance(3 * STEP)
    omics.delete_run(id=ids[0])  # between two pages: the next page neither skips nor repeats a run
    second_page = omics.list_runs(maxResults=2, startingToken=first_page["nextToken"])
    assert [i["id"] for i in second_page["items"]] == [ids[2], ids[3]]
    omics.delete_run(id=ids[4])
    assert omics.list_runs(maxResults=2, startingToken=second_page["nextToken"])["items"] == []
    omics.delete_run(id=ids[2])
    for call in (omics.get_run, omics.cancel_run, omics.delete_run):
        with pytest.raises(omics.exceptions.ResourceNotFoundException):
            call(id=ids[2])
    assert [i["id"] for i in omics.list_runs()["items"]] == [ids[1], ids[3]]
    assert omics.list_runs(name="run-2")["items"] == []
    assert omics.list_runs(status="DELETED")["items"] == []
    assert omics_emulator.run_count() == 2
    again = omics.start_run(workflowId="1234567", roleArn=ROLE, outputUri="s3://o/", requestId="d2", name="run-2")
    assert (again["id"], again["status"]) == (ids[2], "DELETED")  # the token still answers; nothing is started
    assert omics_emulator.run_count() == 2
    cancelled = start_run(omics, "d5")
    omics.cancel_run(id=cancelled)
    omics.delete_run(id=cancelled)  # a CANCELLED run is final too
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_run(id=cancelled)


def test_delete_run_batch_only_when_processed_or_cancelled(omics, clock, s3, bucket):
    batch_id = start_inline_batch(omics, 4, requestId="drb")
    clock.advance(2 * STEP)
    with pytest.raises(omics.exceptions.ConflictException, match="INPROGRESS"):
        omics.delete_run_batch(batchId=batch_id)
    clock.advance(3 * STEP)
    run_ids = [m["runId"] for m in runs_in_batch(omics, batch_id)]
    omics.delete_run(id=run_ids[0])  # one run deleted by itself first
    omics.delete_run_batch(batchId=batch_id)
    clock.advance(STEP / 2)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "RUNS_DELETED"
    assert batch["runSummary"]["deletedRunCount"] == 4 and batch["runSummary"]["completedRunCount"] == 0
    assert batch["submissionSummary"]["successfulDeleteSubmissionCount"] == 4
    assert batch["submissionSummary"]["successfulStartSubmissionCount"] == 4
    mapping = runs_in_batch(omics, batch_id)
    assert {m["submissionStatus"] for m in mapping} == {"DELETE_SUCCESS"}
    assert [m["runId"] for m in mapping] == run_ids  # the batch still says what it started
    for run_id in run_ids:
        with pytest.raises(omics.exceptions.ResourceNotFoundException):
            omics.get_run(id=run_id)
        with pytest.raises(omics.exceptions.ResourceNotFoundException):
            omics.cancel_run(id=run_id)
    assert omics.list_runs(batchId=batch_id)["items"] == [] and omics.list_runs()["items"] == []
    with pytest.raises(omics.exceptions.ConflictException):
        omics.delete_run_batch(batchId=batch_id)  # RUNS_DELETED
    s3.put_object(Bucket=bucket, Key="bad.json", Body=b"{not json")
    failed = omics.start_run_batch(
        requestId="drb-failed",
        defaultRunSetting=default_setting(),
        batchRunSettings={"s3UriSettings": f"s3://{bucket}/bad.json"},
    )["id"]
    clock.advance(2 * STEP)
    assert omics.get_batch(batchId=failed)["status"] == "FAILED"
    with pytest.raises(omics.exceptions.ConflictException, match="FAILED"):
        omics.delete_run_batch(batchId=failed)


def test_delete_batch_removes_the_batch_but_not_its_runs(omics, omics_emulator, clock):
    batch_id = start_inline_batch(omics, 3, requestId="db")
    clock.advance(5 * STEP)
    run_ids = [m["runId"] for m in runs_in_batch(omics, batch_id)]
    omics.delete_batch(batchId=batch_id)
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_batch(batchId=batch_id)
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.list_runs_in_batch(batchId=batch_id)
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.cancel_run_batch(batchId=batch_id)
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.delete_run_batch(batchId=batch_id)
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.delete_batch(batchId=batch_id)
    assert omics.list_batch()["items"] == [] and omics_emulator.batch_count() == 0
    assert {omics.get_run(id=r)["batchId"] for r in run_ids} == {batch_id}  # "does not delete the runs"
    assert set(run_states(omics, batch_id)) == set(run_ids)
    assert start_inline_batch(omics, 3, requestId="db") == batch_id  # the requestId still answers
    assert omics_emulator.run_count() == 3 and omics_emulator.batch_count() == 0


def test_remove_mode_runs_are_removed_oldest_first_at_the_limit(make_emulator, make_omics_client, clock):
    emulator = make_emulator(max_retained_runs=3)
    omics = make_omics_client(emulator)
    kept = start_run(omics, "keep")  # RETAIN: never removed
    removable = [start_run(omics, f"rm{i}", retentionMode="REMOVE") for i in range(2)]
    uuids = {run_id: omics.get_run(id=run_id)["uuid"] for run_id in removable}
    newer = [start_run(omics, f"rm{i}", retentionMode="REMOVE") for i in range(2, 4)]  # each removes the oldest
    assert newer == removable  # the removed runs' ids are reused: only the uuid tells the runs apart
    assert all(omics.get_run(id=run_id)["uuid"] != uuids[run_id] for run_id in removable)
    assert [i["id"] for i in omics.list_runs()["items"]] == [kept, *newer]
    assert omics.get_run(id=newer[0])["status"] == "PENDING"  # removal does not wait for runs to finish
    assert emulator.run_count() == 3
    with pytest.raises(omics.exceptions.ServiceQuotaExceededException, match="RETAIN"):
        start_run(omics, "retain-over")  # a RETAIN run does not remove REMOVE runs
    assert emulator.run_count() == 3


def test_retain_runs_over_the_limit_are_refused_until_runs_are_deleted(make_emulator, make_omics_client, clock):
    emulator = make_emulator(max_retained_runs=2)
    omics = make_omics_client(emulator)
    first, _second = start_run(omics, "r1"), start_run(omics, "r2")
    with pytest.raises(omics.exceptions.ServiceQuotaExceededException) as caught:
        start_run(omics, "r3")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    with pytest.raises(omics.exceptions.ServiceQuotaExceededException, match="none of them with retentionMode REMOVE"):
        start_run(omics, "r3-remove", retentionMode="REMOVE")
    clock.advance(3 * STEP)
    omics.delete_run(id=first)
    third = start_run(omics, "r3")
    assert omics.get_run(id=third)["status"] == "PENDING" and emulator.run_count() == 2


def test_a_batch_passing_the_limit_fails_those_runs_and_goes_on_with_retain_and_removes_its_oldest_with_remove(
    make_emulator, make_omics_client, clock
):
    """The quota fails each run that finds no room, as a submissionFailureReason, and the batch goes on
    (API reference: ListRunsInBatch submissionStatus/submissionFailureReason; User Guide "Batch runs",
    run-level failures).  The run retention page says instead that "the batch fails" (docs/sources.md:
    batch-quota-per-run notes the disagreement)."""
    omics = make_omics_client(make_emulator(max_retained_runs=5))
    batch_id = start_inline_batch(omics, 8, requestId="over")
    clock.advance(2 * STEP)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "INPROGRESS" and "failureReason" not in batch
    mapping = runs_in_batch(omics, batch_id)
    assert [m["submissionStatus"] for m in mapping] == ["SUCCESS"] * 5 + ["FAILED"] * 3
    assert {m["submissionFailureReason"] for m in mapping[5:]} == {"ServiceQuotaExceededException"}
    assert all("maximum number of runs (5)" in m["submissionFailureMessage"] for m in mapping[5:])
    assert batch["submissionSummary"]["successfulStartSubmissionCount"] == 5
    assert batch["submissionSummary"]["failedStartSubmissionCount"] == 3
    clock.advance(3 * STEP)  # the runs started go on to their end
    assert set(run_states(omics, batch_id).values()) == {"COMPLETED"}
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "PROCESSED" and batch["runSummary"]["completedRunCount"] == 5

    omics = make_omics_client(make_emulator(max_retained_runs=5))
    batch_id = start_inline_batch(omics, 8, requestId="over", defaultRunSetting=default_setting(retentionMode="REMOVE"))
    clock.advance(5 * STEP)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "PROCESSED" and batch["submissionSummary"]["successfulStartSubmissionCount"] == 8
    assert batch["runSummary"]["deletedRunCount"] == 3 and batch["runSummary"]["completedRunCount"] == 5
    mapping = runs_in_batch(omics, batch_id)
    assert list(run_states(omics, batch_id)) == [m["runId"] for m in mapping[3:]]
    assert mapping[0]["runId"] == mapping[5]["runId"]  # a removed run's id, reused by a later run of the batch
    reused = omics.get_run(id=mapping[0]["runId"])["uuid"]
    assert reused == mapping[5]["runInternalUuid"] != mapping[0]["runInternalUuid"]


# ---------------------------------------------------------------------------
# cancel


def test_cancel_of_a_finished_batch_is_a_conflict(omics, clock, s3, bucket):
    done = start_inline_batch(omics, 2, requestId="fin")
    clock.advance(5 * STEP)
    assert omics.get_batch(batchId=done)["status"] == "PROCESSED"
    with pytest.raises(omics.exceptions.ConflictException, match="PROCESSED"):
        omics.cancel_run_batch(batchId=done)
    for run_id in run_states(omics, done):
        with pytest.raises(omics.exceptions.ConflictException, match="COMPLETED"):
            omics.cancel_run(id=run_id)
    s3.put_object(Bucket=bucket, Key="gone.json", Body=json.dumps(inline(2)).encode())
    failed = omics.start_run_batch(
        requestId="fin-failed",
        defaultRunSetting=default_setting(),
        batchRunSettings={"s3UriSettings": f"s3://{bucket}/gone.json"},
    )["id"]
    s3.delete_object(Bucket=bucket, Key="gone.json")
    clock.advance(2 * STEP)
    assert omics.get_batch(batchId=failed)["status"] == "FAILED"
    with pytest.raises(omics.exceptions.ConflictException, match="FAILED"):
        omics.cancel_run_batch(batchId=failed)


def test_cancels_that_fail_leave_their_runs_running_and_are_counted(make_emulator, make_omics_client, clock):
    stuck = {"sample-00002", "sample-00005"}
    emulator = make_emulator(uncancellable=lambda settings: settings.get("name") in stuck)
    omics = make_omics_client(emulator)
    batch_id = start_inline_batch(omics, 8, requestId="stuck")
    clock.advance(3.5 * STEP)  # runs STARTING
    omics.cancel_run_batch(batchId=batch_id)
    clock.advance(STEP / 2)  # STOPPING, then CANCELLED with the runs RUNNING
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "CANCELLED"
    assert batch["submissionSummary"]["successfulCancelSubmissionCount"] == 6
    assert batch["submissionSummary"]["failedCancelSubmissionCount"] == 2
    assert batch["runSummary"]["cancelledRunCount"] == 6 and batch["runSummary"]["runningRunCount"] == 2
    statuses = {m["runSettingId"]: m["submissionStatus"] for m in runs_in_batch(omics, batch_id)}
    assert {s for s, status in statuses.items() if status == "CANCEL_FAILED"} == stuck
    assert omics.list_runs_in_batch(batchId=batch_id, submissionStatus="CANCEL_FAILED")["runs"][0]["runId"]
    assert sorted(run_states(omics, batch_id).values()).count("RUNNING") == 2
    omics.delete_run_batch(batchId=batch_id)  # the two still run: their deletes fail
    clock.advance(STEP / 2)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "RUNS_DELETE_FAILED"
    assert batch["submissionSummary"]["failedDeleteSubmissionCount"] == 2
    assert batch["submissionSummary"]["successfulDeleteSubmissionCount"] == 6
    assert batch["submissionSummary"]["failedCancelSubmissionCount"] == 2  # counts of operations stay
    assert batch["runSummary"]["deletedRunCount"] == 6 and batch["runSummary"]["runningRunCount"] == 2
    clock.advance(STEP)
    assert set(run_states(omics, batch_id).values()) == {"COMPLETED"}
    single = start_run(omics, "stuck-single", name="sample-00002")
    with pytest.raises(omics.exceptions.ConflictException, match="could not be cancelled"):
        omics.cancel_run(id=single)
    assert omics.get_run(id=single)["status"] == "PENDING"


# ---------------------------------------------------------------------------
# listing and counts


def test_list_runs_filters_combine_and_page(make_emulator, make_omics_client, clock):
    emulator = make_emulator(
        fail_when=lambda s: ("RUN_TASK_FAILED", "task failed") if s["name"].endswith("3") else None,
        api_rates=None,  # StartRun after StartRun, at no moment of the clock: about the filters, not the rate
    )
    omics = make_omics_client(emulator)
    group_a = start_inline_batch(omics, 6, requestId="la", defaultRunSetting=default_setting(runGroupId="11"))
    group_b = start_inline_batch(omics, 4, requestId="lb")
    singles = [start_run(omics, f"ls{i}", name=f"single-{i}", runGroupId="11") for i in range(3)]
    clock.advance(2 * STEP)
    assert [i["id"] for i in omics.list_runs(name="single-1")["items"]] == [singles[1]]
    in_group = [i["id"] for i in omics.list_runs(runGroupId="11")["items"]]
    assert in_group == singles + list(run_states(omics, group_a))
    assert len(in_group) == 9 and not set(in_group) & set(run_states(omics, group_b))
    clock.advance(3 * STEP)
    omics.cancel_run(id=start_run(omics, "ls-cancel", name="sample-00003"))
    failed_a = omics.list_runs(batchId=group_a, status="FAILED")["items"]
    assert [i["name"] for i in failed_a] == ["sample-00003"] and failed_a[0]["batchId"] == group_a
    assert [i["name"] for i in omics.list_runs(status="FAILED")["items"]] == ["sample-00003"] * 2  # one per batch
    assert [i["name"] for i in omics.list_runs(status="CANCELLED")["items"]] == ["sample-00003"]
    assert omics.list_runs(batchId=group_b, status="CANCELLED")["items"] == []
    assert len(omics.list_runs(name="sample-00003", status="FAILED")["items"]) == 2
    assert omics.list_runs(name="sample-00003", runGroupId="11", status="FAILED")["items"][0]["batchId"] == group_a
    calls = lambda: [op for op, _ in emulator.requests()].count("ListRuns")  # noqa: E731
    before = calls()
    paged = [
        item["id"]
        for page in omics.get_paginator("list_runs").paginate(status="COMPLETED", PaginationConfig={"PageSize": 3})
        for item in page["items"]
    ]
    assert len(paged) == len(set(paged)) == 6 + 4 + 3 - 2  # a failed run in each batch
    assert calls() - before == 4  # every call recorded: pages of 3, 3, 3 and 2
    with pytest.raises(omics.exceptions.ValidationException, match="startingToken"):
        omics.list_runs(startingToken="not-a-token")


def test_run_summary_stays_consistent_with_list_runs_through_the_lifecycle(make_emulator, make_omics_client, clock):
    failing = {"sample-00001", "sample-00004", "sample-00007"}
    emulator = make_emulator(
        fail_when=lambda s: ("SERVICE_ERROR", "transient") if s["runSettingId"] in failing else None,
        uncancellable=lambda s: s["runSettingId"] == "sample-00009",
        max_retained_runs=40,
    )
    omics = make_omics_client(emulator)
    batch_id = start_inline_batch(omics, 12, requestId="life")
    names = {"pendingRunCount": "PENDING", "startingRunCount": "STARTING", "runningRunCount": "RUNNING"}
    names |= {"completedRunCount": "COMPLETED", "failedRunCount": "FAILED", "cancelledRunCount": "CANCELLED"}

    def check() -> dict[str, int]:
        summary = omics.get_batch(batchId=batch_id)["runSummary"]
        listed = list(run_states(omics, batch_id).values())
        for key, status in names.items():
            assert summary[key] == listed.count(status), (key, summary, listed)
        assert summary["stoppingRunCount"] == 0
        assert summary["deletedRunCount"] + len(listed) == 12
        return summary

    clock.advance(2 * STEP)
    by_setting = {m["runSettingId"]: m["runId"] for m in runs_in_batch(omics, batch_id)}
    assert check()["pendingRunCount"] == 12
    clock.advance(STEP)
    omics.cancel_run(id=by_setting["sample-00000"])
    omics.cancel_run(id=by_setting["sample-00001"])  # would have failed: cancelled counts as cancelled
    assert check()["cancelledRunCount"] == 2
    omics.delete_run(id=by_setting["sample-00000"])
    assert check()["deletedRunCount"] == 1
    clock.advance(STEP)
    assert check()["runningRunCount"] == 10
    clock.advance(STEP)
    summary = check()
    assert (summary["completedRunCount"], summary["failedRunCount"]) == (8, 2)
    omics.delete_run(id=by_setting["sample-00004"])  # a failed run
    omics.delete_run(id=by_setting["sample-00005"])  # a completed one
    summary = check()
    assert (summary["completedRunCount"], summary["failedRunCount"], summary["deletedRunCount"]) == (7, 1, 3)
    assert omics.get_batch(batchId=batch_id)["status"] == "PROCESSED"
    omics.delete_run_batch(batchId=batch_id)
    clock.advance(STEP / 2)
    summary = check()
    assert summary["deletedRunCount"] == 12 and emulator.run_count() == 0


# ---------------------------------------------------------------------------
# workflows and their parameter templates


TEMPLATE = {
    "reference": {"description": "FASTA of the reference", "optional": False},
    "fastq": {"description": "reads"},  # optional not given: required
    "threads": {"description": "threads", "optional": True},
    "mode": {"optional": True},
}


def create_workflow(omics: Any, request_id: str = "wf-1", **kwargs: Any) -> str:
    kwargs.setdefault("parameterTemplate", TEMPLATE)
    kwargs.setdefault("definitionUri", "s3://workflows/align.zip")
    return omics.create_workflow(name="align", engine="NEXTFLOW", requestId=request_id, **kwargs)["id"]


def test_a_workflow_is_creating_for_one_step_then_active(omics, omics_emulator, clock):
    created = omics.create_workflow(
        name="align",
        engine="NEXTFLOW",
        definitionUri="s3://workflows/align.zip",
        parameterTemplate=TEMPLATE,
        tags={"team": "genomics"},
        requestId="wf-1",
    )
    assert created["status"] == "CREATING" and created["uuid"] and created["arn"].endswith(f"workflow/{created['id']}")
    workflow = omics.get_workflow(id=created["id"])
    assert (workflow["status"], workflow["type"], workflow["name"]) == ("CREATING", "PRIVATE", "align")
    assert workflow["parameterTemplate"] == TEMPLATE and workflow["tags"] == {"team": "genomics"}
    clock.advance(STEP)
    assert omics.get_workflow(id=created["id"])["status"] == "ACTIVE"
    assert omics.get_workflow(id=created["id"], type="PRIVATE", workflowOwnerId="123456789012")["id"] == created["id"]
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_workflow(id=created["id"], type="READY2RUN")
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_workflow(id=created["id"], workflowOwnerId="210987654321")
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_workflow(id="42")
    assert create_workflow(omics, "wf-1") == created["id"]  # the requestId dedupes
    with pytest.raises(omics.exceptions.ValidationException, match="definition"):
        omics.create_workflow(name="nothing", requestId="wf-2")
    omics_emulator.set_workflow_status(created["id"], "FAILED", message="main.nf does not parse")
    failed = omics.get_workflow(id=created["id"])
    assert (failed["status"], failed["statusMessage"]) == ("FAILED", "main.nf does not parse")


def test_workflow_versions_have_their_own_template_and_status(omics, omics_emulator, clock):
    workflow_id = create_workflow(omics)
    version_template = {"reference": {"optional": True}, "bam": {"description": "aligned reads"}}
    created = omics.create_workflow_version(
        workflowId=workflow_id,
        versionName="v2",
        definitionUri="s3://workflows/align-v2.zip",
        parameterTemplate=version_template,
        requestId="wf-1-v2",
    )
    assert (created["status"], created["workflowId"], created["versionName"]) == ("CREATING", workflow_id, "v2")
    clock.advance(STEP)
    version = omics.get_workflow_version(workflowId=workflow_id, versionName="v2")
    assert (version["status"], version["type"]) == ("ACTIVE", "PRIVATE")
    assert version["parameterTemplate"] == version_template and version["arn"] == created["arn"]
    with pytest.raises(omics.exceptions.ConflictException):
        omics.create_workflow_version(
            workflowId=workflow_id, versionName="v2", definitionUri="s3://w/x.zip", requestId="other"
        )
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.get_workflow_version(workflowId=workflow_id, versionName="v3")
    with pytest.raises(omics.exceptions.ResourceNotFoundException):
        omics.create_workflow_version(workflowId="42", versionName="v1", definitionUri="s3://w/x.zip", requestId="r")
    other = create_workflow(omics, "wf-2")  # a requestId dedupes versions of one workflow only
    twin = omics.create_workflow_version(
        workflowId=other, versionName="v2", definitionUri="s3://w/x.zip", requestId="wf-1-v2"
    )
    assert (twin["workflowId"], twin["uuid"] != created["uuid"]) == (other, True)
    omics_emulator.set_workflow_status(workflow_id, "INACTIVE", version_name="v2")
    assert omics.get_workflow_version(workflowId=workflow_id, versionName="v2")["status"] == "INACTIVE"
    assert omics.get_workflow(id=workflow_id)["status"] == "ACTIVE"


def test_start_run_is_checked_against_the_workflow_template(omics, omics_emulator, clock):
    workflow_id = create_workflow(omics)
    good = {"reference": "s3://refs/hg38.fa", "fastq": "s3://in/a.fq.gz"}
    with pytest.raises(omics.exceptions.ValidationException, match="CREATING"):
        start_run(omics, "t0", workflowId=workflow_id, parameters=good)
    clock.advance(STEP)
    run_id = start_run(omics, "t1", workflowId=workflow_id, parameters={**good, "threads": 4})
    assert omics.get_run(id=run_id)["workflowUuid"] == omics.get_workflow(id=workflow_id)["uuid"]
    assert omics.list_runs()["items"][0]["workflowName"] == "align"
    with pytest.raises(omics.exceptions.ValidationException, match="'colour'") as caught:
        start_run(omics, "t2", workflowId=workflow_id, parameters={**good, "colour": "blue"})
    assert "not defined in the parameter template" in caught.value.response["Error"]["Message"]
    with pytest.raises(omics.exceptions.ValidationException, match="required parameter 'fastq'"):
        start_run(omics, "t3", workflowId=workflow_id, parameters={"reference": "s3://refs/hg38.fa"})
    with pytest.raises(omics.exceptions.ValidationException, match="'reference', 'fastq'"):
        start_run(omics, "t4", workflowId=workflow_id)
    duplicate = omics.start_run(runId=run_id, roleArn=ROLE, outputUri="s3://o/", requestId="t5")
    assert omics.get_run(id=duplicate["id"])["parameters"]["threads"] == 4  # a duplicated run is checked too
    omics.create_workflow_version(
        workflowId=workflow_id,
        versionName="v2",
        definitionUri="s3://workflows/align-v2.zip",
        parameterTemplate={"bam": {"description": "aligned reads"}},
        requestId="v2",
    )
    clock.advance(STEP)
    start_run(omics, "t6", workflowId=workflow_id, workflowVersionName="v2", parameters={"bam": "s3://in/a.bam"})
    with pytest.raises(omics.exceptions.ValidationException, match="'reference'"):
        start_run(omics, "t7", workflowId=workflow_id, workflowVersionName="v2", parameters={"bam": "x", **good})
    with pytest.raises(omics.exceptions.ResourceNotFoundException, match="v9"):
        start_run(omics, "t8", workflowId=workflow_id, workflowVersionName="v9", parameters=good)
    for status in ("FAILED", "INACTIVE", "DELETED"):
        omics_emulator.set_workflow_status(workflow_id, status)
        with pytest.raises(omics.exceptions.ValidationException, match=status):
            start_run(omics, f"t9-{status}", workflowId=workflow_id, parameters=good)
    # a workflow the emulator does not know is accepted unchecked
    start_run(omics, "t10", workflowId="7654321", parameters={"anything": 1})
    assert omics_emulator.run_count() == 4


def test_batch_runs_are_checked_against_the_workflow_template(omics, omics_emulator, clock):
    workflow_id = create_workflow(omics)
    clock.advance(STEP)
    entries = inline(5)  # each sets fastq and mode; the default sets reference, threads and mode
    entries[1]["parameters"]["colour"] = "blue"
    entries[3]["parameters"] = {"mode": "sample"}  # no fastq
    batch_id = start_inline_batch(
        omics,
        5,
        requestId="tb",
        defaultRunSetting=default_setting(workflowId=workflow_id),
        batchRunSettings={"inlineSettings": entries},
    )
    clock.advance(2 * STEP)
    by_setting = {m["runSettingId"]: m for m in runs_in_batch(omics, batch_id)}
    assert [by_setting[f"sample-{i:05d}"]["submissionStatus"] for i in range(5)] == [
        "SUCCESS",
        "FAILED",
        "SUCCESS",
        "FAILED",
        "SUCCESS",
    ]
    assert by_setting["sample-00001"]["submissionFailureReason"] == "ValidationException"
    assert "'colour'" in by_setting["sample-00001"]["submissionFailureMessage"]
    assert "required parameter 'fastq'" in by_setting["sample-00003"]["submissionFailureMessage"]
    assert "runId" not in by_setting["sample-00003"]
    assert omics.get_batch(batchId=batch_id)["submissionSummary"]["failedStartSubmissionCount"] == 2
    assert omics_emulator.run_count() == 3


def test_start_run_batch_validates_the_workflow_synchronously(make_emulator, make_omics_client, clock):
    """Model: StartRunBatch "validates common fields synchronously"; the workflow is defaultRunSetting's
    (docs/sources.md: batch-sync-validation)."""
    emulator = make_emulator(known_workflows_only=True)
    omics = make_omics_client(emulator)
    emulator.put_workflow("42", versions={"v1": None})
    emulator.set_workflow_status("42", "INACTIVE")
    with pytest.raises(omics.exceptions.ValidationException, match="INACTIVE"):
        start_inline_batch(omics, 3, requestId="inactive", defaultRunSetting=default_setting(workflowId="42"))
    emulator.set_workflow_status("42", "ACTIVE")
    with pytest.raises(omics.exceptions.ResourceNotFoundException, match="no version v9"):
        start_inline_batch(
            omics, 3, requestId="v9", defaultRunSetting=default_setting(workflowId="42", workflowVersionName="v9")
        )
    with pytest.raises(omics.exceptions.ResourceNotFoundException, match="Workflow 77 not found"):
        start_inline_batch(omics, 3, requestId="unknown", defaultRunSetting=default_setting(workflowId="77"))
    with pytest.raises(omics.exceptions.ResourceNotFoundException, match="Workflow 77 not found"):
        omics.start_run(workflowId="77", roleArn=ROLE, outputUri="s3://o/", requestId="unknown-run")
    assert emulator.batch_count() == 0 and emulator.run_count() == 0
    assert start_inline_batch(omics, 3, requestId="fine", defaultRunSetting=default_setting(workflowId="42"))


# ---------------------------------------------------------------------------
# asynchronous cancel and delete, CREATING, reused run ids (docs/sources.md: batch-status, batch-one-operation,
# run-id-reuse)

BATCH_STATUSES = (
    "CREATING",
    "PENDING",
    "SUBMITTING",
    "INPROGRESS",
    "STOPPING",
    "CANCELLED",
    "FAILED",
    "PROCESSED",
    "RUNS_DELETING",
    "RUNS_DELETE_FAILED",
    "RUNS_DELETED",
)


def test_the_model_has_the_eleven_batch_statuses_the_emulator_knows(omics):
    enum = omics.meta.service_model.shape_for("BatchStatus").enum
    assert tuple(enum) == BATCH_STATUSES


def test_start_run_batch_answers_creating_then_the_batch_is_pending_then_submitting(omics, clock):
    created = omics.start_run_batch(
        requestId="creating", defaultRunSetting=default_setting(), batchRunSettings={"inlineSettings": inline(2)}
    )
    assert created["status"] == "CREATING"  # model: StartRunBatch "returns ... with a batch ID and status CREATING"
    seen = []
    for _ in range(6):
        seen.append(omics.get_batch(batchId=created["id"])["status"])
        clock.advance(STEP / 2)
    assert seen == ["CREATING", "PENDING", "SUBMITTING", "SUBMITTING", "INPROGRESS", "INPROGRESS"]
    with pytest.raises(omics.exceptions.ConflictException, match="CREATING"):
        omics.cancel_run_batch(batchId=start_inline_batch(omics, 2, requestId="creating-2"))


def test_cancel_run_batch_is_stopping_for_a_step_and_one_operation_runs_at_a_time(omics, clock):
    batch_id = start_inline_batch(omics, 10, requestId="stopping")
    clock.advance(3 * STEP)  # runs STARTING
    omics.cancel_run_batch(batchId=batch_id)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "STOPPING"
    assert batch["submissionSummary"]["successfulCancelSubmissionCount"] == 0  # not done yet
    for second in (omics.cancel_run_batch, omics.delete_run_batch, omics.delete_batch):
        with pytest.raises(omics.exceptions.ConflictException, match="STOPPING"):
            second(batchId=batch_id)
    clock.advance(STEP)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "CANCELLED"
    assert batch["submissionSummary"]["successfulCancelSubmissionCount"] == 10
    assert set(run_states(omics, batch_id).values()) == {"CANCELLED"}


def test_delete_run_batch_is_runs_deleting_for_a_step(omics, clock):
    batch_id = start_inline_batch(omics, 3, requestId="deleting")
    clock.advance(5 * STEP)
    assert omics.get_batch(batchId=batch_id)["status"] == "PROCESSED"
    omics.delete_run_batch(batchId=batch_id)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "RUNS_DELETING" and batch["runSummary"]["deletedRunCount"] == 0
    for second in (omics.delete_run_batch, omics.cancel_run_batch, omics.delete_batch):
        with pytest.raises(omics.exceptions.ConflictException, match="RUNS_DELETING"):
            second(batchId=batch_id)
    clock.advance(STEP)
    batch = omics.get_batch(batchId=batch_id)
    assert batch["status"] == "RUNS_DELETED" and batch["runSummary"]["deletedRunCount"] == 3
    assert batch["submissionSummary"]["successfulDeleteSubmissionCount"] == 3


def test_a_deleted_run_id_is_reused_by_a_later_run_with_another_uuid(omics, clock):
    first = omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="reuse-1")
    clock.advance(3 * STEP)
    omics.delete_run(id=first["id"])
    second = omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="reuse-2")
    assert second["id"] == first["id"] and second["uuid"] != first["uuid"]  # guide: "reuses deleted run IDs"
    assert omics.get_run(id=first["id"])["uuid"] == second["uuid"]
    again = omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="reuse-1")
    assert (again["uuid"], again["status"]) == (first["uuid"], "DELETED")  # the first token still answers
    third = omics.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId="reuse-3")
    assert int(third["id"]) > int(first["id"])
    assert [item["id"] for item in omics.list_runs()["items"]] == [second["id"], third["id"]]  # creation order


def test_a_runs_engine_settings_replace_the_defaults_whole(omics, clock):
    """Model: InlineSetting.engineSettings "Overrides defaultRunSetting.engineSettings for this run", while
    parameters and runTags are "Merged with defaultRunSetting" (docs/sources.md: batch-merge)."""
    entries = inline(2)
    entries[0]["engineSettings"] = {"profile": "big"}
    batch_id = start_inline_batch(
        omics,
        2,
        requestId="engine",
        defaultRunSetting=default_setting(engineSettings={"profile": "small", "resume": True}),
        batchRunSettings={"inlineSettings": entries},
    )
    clock.advance(2 * STEP)
    runs = {m["runSettingId"]: omics.get_run(id=m["runId"]) for m in runs_in_batch(omics, batch_id)}
    assert runs["sample-00000"]["engineSettings"] == {"profile": "big"}
    assert runs["sample-00001"]["engineSettings"] == {"profile": "small", "resume": True}
    assert runs["sample-00000"]["parameters"]["reference"] == "s3://refs/hg38.fa"  # parameters still merge per key


# ---------------------------------------------------------------------------
# faults the service makes: 5xx and slow answers, injected by tests


def test_injected_5xx_answers_are_retried_by_botocore_and_counted(omics_emulator, make_omics_client, clock):
    omics = make_omics_client(omics_emulator)  # standard retries
    batch_id = start_inline_batch(omics, 2, requestId="faulty")
    omics_emulator.fail("GetBatch", 500, 503)
    assert omics.get_batch(batchId=batch_id)["id"] == batch_id  # the third attempt answers
    assert [op for op, _ in omics_emulator.requests()].count("GetBatch") == 3
    single = make_omics_client(omics_emulator, retries={"total_max_attempts": 1})
    omics_emulator.fail("GetBatch", 500)
    with pytest.raises(single.exceptions.InternalServerException):
        single.get_batch(batchId=batch_id)


def test_an_injected_slow_answer_times_the_client_out_and_the_retry_answers(omics_emulator, make_omics_client):
    from botocore.exceptions import ReadTimeoutError

    quick = make_omics_client(omics_emulator, retries={"total_max_attempts": 1}, read_timeout=0.2)
    run_id = start_run(quick, "slow")
    omics_emulator.slow("GetRun", 1.0)
    with pytest.raises(ReadTimeoutError):
        quick.get_run(id=run_id)
    patient = make_omics_client(omics_emulator, read_timeout=0.2)  # standard retries
    omics_emulator.slow("GetRun", 1.0)
    assert patient.get_run(id=run_id)["id"] == run_id


def test_list_runs_in_batch_and_list_batch_take_one_filter_per_call(omics, clock):
    """Model doc of ListRunsInBatch and ListBatch: "Only one filter per call is supported" (sources.md:
    list-runs).  UNDOCUMENTED: the error; ValidationException here."""
    batch_id = start_inline_batch(omics, 3, requestId="one-filter", batchName="one")
    clock.advance(2 * STEP)
    with pytest.raises(omics.exceptions.ValidationException, match="one filter"):
        omics.list_runs_in_batch(batchId=batch_id, submissionStatus="SUCCESS", runSettingId="sample-00001")
    with pytest.raises(omics.exceptions.ValidationException, match="one filter"):
        omics.list_batch(status="INPROGRESS", name="one")
    assert len(omics.list_runs_in_batch(batchId=batch_id, submissionStatus="SUCCESS")["runs"]) == 3
    assert [b["id"] for b in omics.list_batch(name="one")["items"]] == [batch_id]


def test_documented_api_rates_throttle_each_operation_on_its_own(make_emulator, make_omics_client):
    """api_rates="documented": StartRun 1 TPS, GetRun 10 TPS, each its own bucket (User Guide "HealthOmics API
    quotas"; sources.md: throttling).  A burst over StartRun's rate meets ThrottlingException while GetRun goes on."""
    from planner.sandbox.omics_protocol import DOCUMENTED_TPS

    assert (DOCUMENTED_TPS["StartRun"], DOCUMENTED_TPS["GetRun"]) == (1.0, 10.0)
    emulator = make_emulator(api_rates="documented")
    once = make_omics_client(emulator, retries={"total_max_attempts": 1})
    outcomes = []
    for i in range(5):
        try:
            outcomes.append(once.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId=f"r{i}")["id"])
        except once.exceptions.ThrottlingException:
            outcomes.append("throttled")
    assert outcomes[0] != "throttled" and "throttled" in outcomes
    assert once.get_run(id=outcomes[0])["id"] == outcomes[0]  # GetRun's own bucket is full
    with pytest.raises(ValueError, match="documented"):
        make_emulator(api_rates="fast")


def test_api_rates_scale_the_documented_rates_or_turn_them_off(make_emulator, make_omics_client):
    """api_rates=10: ten times each documented TPS (an account with raised quotas); None: no rate quota."""
    burst = []
    for rates in (10, None):
        client = make_omics_client(make_emulator(api_rates=rates), retries={"total_max_attempts": 1})
        outcomes = []
        for i in range(12):
            try:
                client.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId=f"s{i}")
                outcomes.append("ok")
            except client.exceptions.ThrottlingException:
                outcomes.append("throttled")
        burst.append(outcomes.count("ok"))
    assert burst == [10, 12]  # StartRun 10 a second (a second's worth held); then no limit
    for bad in ("fast", 0, -1, float("nan")):
        with pytest.raises(ValueError, match="documented"):
            make_emulator(api_rates=bad)


def test_sandbox_start_refuses_unknown_api_rates_in_one_line_before_starting_anything(capsys):
    from helpers import run_cli

    from planner.sandbox.local import read_state

    code, out, err = run_cli(["sandbox", "start", "--api-rates", "fast"], capsys)
    assert code == 2 and out == "" and "--api-rates 'fast'" in err and len(err.strip().splitlines()) == 1
    assert read_state() is None
