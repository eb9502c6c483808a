"""Staging against moto's S3 server on loopback: predicted ETags, no overwrite, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import make_plan, sheet_frame

from planner.core.ledger import Ledger
from planner.core.plandir import PlanDirectory
from planner.errors import SubmissionError
from planner.services.staging import Stager

MiB = 1024 * 1024
SHEET = {"width": 6, "fastq_1": "s3://in/a.fq.gz"}  # sheet_frame(n, **SHEET): 250 runs fit one part
PADDED = {"width": 6, "padding": "x" * 40_000}  # 300 runs of these: ~12 MiB, three 5 MiB parts
DEFAULTS = {
    "run": {
        "workflowId": "1234567",
        "roleArn": "arn:aws:iam::123456789012:role/omics",
        "outputUri": "s3://out/results/",
    },
}


@pytest.fixture()
def staging(bucket: str) -> str:
    return f"s3://{bucket}/planner/"


def _stager(plan_dir: str, s3, concurrency: int = 4) -> tuple[Stager, dict]:
    plan = PlanDirectory(plan_dir)
    ledger = Ledger.open(plan_dir, plan.plan_id, plan.manifest.backend)
    stager = Stager(s3, ledger, plan, str(plan.manifest.staging_uri), concurrency=concurrency)
    return stager, plan.manifest.to_json()


class CallCounter:
    def __init__(self, client):
        self.calls: list[str] = []
        client.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model, **_):
        self.calls.append(model.name)


def test_single_part_shard_gets_the_predicted_etag(tmp_path, s3, bucket, staging):
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(250, **SHEET),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
    )
    stager, manifest = _stager(plan_dir, s3)
    shard = manifest["shards"][0]
    assert shard["mode"] == "s3" and shard["bytes"] <= shard["part_size"]
    staged = stager.stage([0])[0]
    head = s3.head_object(Bucket=bucket, Key=staged.key)
    assert staged.key == f"planner/{manifest['plan_id']}/{shard['sha256']}.json"
    assert head["ETag"] == shard["etag"] == staged.etag == f'"{shard["md5"]}"'
    assert head["Metadata"]["planner-sha256"] == shard["sha256"]
    body = s3.get_object(Bucket=bucket, Key=staged.key)["Body"].read()
    assert body == Path(os.path.join(plan_dir, shard["path"])).read_bytes()
    stager.verify(staged)


def test_multipart_shard_gets_the_predicted_etag(tmp_path, s3, bucket, staging):
    # ~12 MiB of runs with 5 MiB parts: three parts, ETag "md5-of-md5s-3".
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(300, **PADDED),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
        part_size=5 * MiB,
    )
    stager, manifest = _stager(plan_dir, s3)
    shard = manifest["shards"][0]
    assert shard["etag"].endswith('-3"'), shard
    counter = CallCounter(s3)
    staged = stager.stage([0])[0]
    assert counter.calls.count("UploadPart") == 3 and "CompleteMultipartUpload" in counter.calls
    assert s3.head_object(Bucket=bucket, Key=staged.key)["ETag"] == shard["etag"] == staged.etag
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


class CompleteConflict:
    """A ``before-send`` hook: the first CompleteMultipartUpload is answered 409 ConditionalRequestConflict
    (moto never answers it); what UploadId each completion named is kept."""

    def __init__(self, client):
        self.completed_ids: list[str] = []
        client.meta.events.register("before-send.s3.CompleteMultipartUpload", self._send)

    def _send(self, request, **_):
        from urllib.parse import parse_qs, urlsplit

        from botocore.awsrequest import AWSResponse

        self.completed_ids.append(parse_qs(urlsplit(request.url).query)["uploadId"][0])
        if len(self.completed_ids) > 1:
            return None
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
            b"<Message>A conflicting conditional operation is in progress</Message></Error>"
        )
        return AWSResponse(request.url, 409, {"Content-Type": "application/xml"}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def test_a_409_on_complete_multipart_upload_starts_a_new_upload(tmp_path, s3, bucket, staging):
    """S3 model, CompleteMultipartUpload IfNoneMatch: "On a 409 failure you should re-initiate the multipart
    upload with CreateMultipartUpload and re-upload each part" -- not complete the same UploadId again."""
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(300, **PADDED),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
        part_size=5 * MiB,
    )
    stager, manifest = _stager(plan_dir, s3)
    stager.sleep = lambda seconds: None
    conflict = CompleteConflict(s3)
    counter = CallCounter(s3)
    staged = stager.stage([0])[0]
    first, second = conflict.completed_ids
    assert first != second  # a new upload, not the conflicted one again
    assert counter.calls.count("CreateMultipartUpload") == 2 and counter.calls.count("UploadPart") == 6
    assert counter.calls.count("AbortMultipartUpload") == 1  # the conflicted upload is not left behind
    assert s3.head_object(Bucket=bucket, Key=staged.key)["ETag"] == manifest["shards"][0]["etag"] == staged.etag
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_second_staging_uploads_nothing(tmp_path, s3, bucket, staging):
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(250, **SHEET),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
    )
    stager, _ = _stager(plan_dir, s3)
    stager.stage([0])
    counter = CallCounter(s3)
    stager_again, _ = _stager(plan_dir, s3)
    stager_again.stage([0])
    assert not {"PutObject", "UploadPart", "CreateMultipartUpload"} & set(counter.calls)
    # A fresh ledger (e.g. the plan copied elsewhere) finds the object and reuses it too.
    os.unlink(os.path.join(plan_dir, "ledger.sqlite"))
    stager_fresh, _ = _stager(plan_dir, s3)
    stager_fresh.stage([0])
    assert "PutObject" not in counter.calls and "HeadObject" in counter.calls


def test_a_different_object_under_the_key_is_refused_naming_both_etags(tmp_path, s3, bucket, staging):
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(250, **SHEET),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
    )
    stager, manifest = _stager(plan_dir, s3)
    shard = manifest["shards"][0]
    key = f"planner/{manifest['plan_id']}/{shard['sha256']}.json"
    other = s3.put_object(Bucket=bucket, Key=key, Body=b"[]\n")["ETag"]
    with pytest.raises(SubmissionError) as caught:
        stager.stage([0])
    assert other in str(caught.value) and shard["etag"] in str(caught.value)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"[]\n"  # not overwritten


def test_a_concurrent_write_of_the_same_bytes_is_a_412_and_is_reused(tmp_path, s3, bucket, staging):
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(250, **SHEET),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
    )
    stager, manifest = _stager(plan_dir, s3)
    shard = manifest["shards"][0]
    data = Path(os.path.join(plan_dir, shard["path"])).read_bytes()
    key = f"planner/{manifest['plan_id']}/{shard['sha256']}.json"
    statuses = []

    def racing_writer(params, **_):
        if params.get("Key") == key and not statuses:
            statuses.append("raced")
            s3.put_object(Bucket=bucket, Key=key, Body=data)  # the other writer wins

    def record_status(http_response, **_):
        statuses.append(http_response.status_code)

    s3.meta.events.register("before-parameter-build.s3.PutObject", racing_writer)
    s3.meta.events.register("after-call.s3.PutObject", record_status)
    try:
        staged = stager.stage([0])[0]
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.PutObject", racing_writer)
        s3.meta.events.unregister("after-call.s3.PutObject", record_status)
    assert 412 in statuses
    assert staged.etag == shard["etag"]


def test_verify_refuses_an_object_changed_after_staging(tmp_path, s3, bucket, staging):
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(250, **SHEET),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
    )
    stager, _ = _stager(plan_dir, s3)
    staged = stager.stage([0])[0]
    s3.put_object(Bucket=bucket, Key=staged.key, Body=b"[]\n")
    with pytest.raises(SubmissionError, match="changed"):
        stager.verify(staged)


def test_sigkill_during_multipart_staging_then_resume(tmp_path, s3, bucket, staging, moto_server):
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(300, **PADDED),
        defaults={**DEFAULTS, "staging": {"uri": staging}},
        part_size=5 * MiB,
    )
    script = textwrap.dedent(
        f"""
        import os, signal, boto3
        from planner.core.ledger import Ledger
        from planner.core.plandir import PlanDirectory, read_plan
        from planner.services.staging import Stager
        s3 = boto3.client("s3", endpoint_url={moto_server!r}, region_name="us-east-1")
        parts = []
        def die_after_two(**_):
            parts.append(1)
            if len(parts) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        s3.meta.events.register("after-call.s3.UploadPart", die_after_two)
        plan = PlanDirectory({plan_dir!r})
        ledger = Ledger.open({plan_dir!r}, plan.plan_id, plan.manifest.backend)
        Stager(s3, ledger, plan, plan.manifest.staging_uri, concurrency=1).stage([0])
        """
    )
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1  # left behind by the crash

    stager, manifest = _stager(plan_dir, s3)
    staged = stager.stage([0])[0]
    assert staged.etag == manifest["shards"][0]["etag"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [staged.key]
