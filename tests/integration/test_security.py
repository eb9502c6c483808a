"""Security against moto's server on loopback: SSE-KMS staging, the expected bucket owner.

moto does two things S3 does not, measured with moto 5.2.5: it answers an SSE-KMS
object's ETag with the MD5 of its bytes (S3 documents that such an ETag is not an
MD5), and it ignores ``ExpectedBucketOwner``.  So the opaque-ETag path is shown with
an ``OpaqueETags`` wrapper on the client (every ETag S3 reports replaced by one that is
not an MD5, translated back for ``If-Match``), and the bucket-owner rule by recording
the parameters of every S3 call the planner makes, plus a fault that answers 403
when the expected owner is not the bucket's, as S3 does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest
from botocore.config import Config

import planner
import planner.cli
from planner.commands.child_settings import read_child_settings
from planner.commands.submit import submit
from planner.core.ledger import Ledger
from planner.core.plandir import PlanDirectory
from planner.engine.context import staging_options
from planner.errors import AccessError, PlannerError, SheetError, SubmissionError
from planner.services.staging import Stager, composite_sha256

MiB = 1024 * 1024
MOTO_ACCOUNT = "123456789012"  # what moto's STS answers GetCallerIdentity with
OMICS_DEFAULTS = {
    "run": {"workflowId": "1234567", "roleArn": "arn:aws:iam::123456789012:role/omics", "outputUri": "s3://out/r/"}
}


# ---------------------------------------------------------------- fixtures and seams


@pytest.fixture()
def kms(moto_server: str) -> Any:
    return boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")


@pytest.fixture()
def key(kms: Any) -> str:
    """A KMS key made in moto: its ARN."""
    return str(kms.create_key(Description="planner staging")["KeyMetadata"]["Arn"])


@pytest.fixture()
def staging(bucket: str) -> str:
    return f"s3://{bucket}/planner/"


def _omics_plan(
    tmp_path: Path, runs: int, *, padding: int = 0, part_size: int | None = None, name: str = "plan"
) -> str:
    frame = pl.DataFrame({"sample": [f"S{i:06d}" for i in range(runs)]}).with_columns(
        pl.lit("x" * padding).alias("padding") if padding else pl.lit("s3://in/a.fq.gz").alias("fastq_1")
    )
    out = str(tmp_path / name)
    planner.plan(frame, backend="omics-batch", defaults=OMICS_DEFAULTS, part_size=part_size).write(out)
    return out


def _stager(plan_dir: str, s3: Any, staging: str, **options: Any) -> Stager:
    plan = PlanDirectory(plan_dir)
    ledger = Ledger.open(plan_dir, plan.plan_id, plan.manifest.backend)
    return Stager(s3, ledger, plan, staging, concurrency=4, **options)


class S3Calls:
    """Every S3 call the planner's clients make: (operation, parameters), in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def attach(self, client: Any) -> Any:
        client.meta.events.register("provide-client-params.s3.*", self.record)
        return client

    def operations(self) -> set[str]:
        return {name for name, _ in self.calls}


@pytest.fixture()
def planner_s3_calls(monkeypatch: pytest.MonkeyPatch) -> S3Calls:
    """Records the parameters of every S3 call of every client the planner makes from now on."""
    from planner.services import aws

    calls = S3Calls()
    original = aws.Clients._make

    def make(self: Any, service: str) -> Any:
        client = original(self, service)
        return calls.attach(client) if service == "s3" else client

    monkeypatch.setattr(aws.Clients, "_make", make)
    return calls


class OpaqueETags:
    """Makes a client see S3 as it is for SSE-KMS objects: an ETag that is no MD5 of the bytes.

    Every ETag in an answer becomes the sha1 of the real one (32 hex digits, quoted); an
    ``If-Match`` the client sends is translated back before it reaches moto."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def opaque(self, etag: str) -> str:
        fake = '"' + hashlib.sha1(etag.encode()).hexdigest()[:32] + '"'
        self.real[fake] = etag
        return fake

    def answer(self, parsed: dict[str, Any], **_: Any) -> None:
        if isinstance(parsed, dict) and isinstance(parsed.get("ETag"), str):
            parsed["ETag"] = self.opaque(parsed["ETag"])

    def ask(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("IfMatch") in self.real:
            params["IfMatch"] = self.real[params["IfMatch"]]

    def attach(self, client: Any) -> Any:
        client.meta.events.register("after-call.s3.*", self.answer)
        client.meta.events.register("provide-client-params.s3.GetObject", self.ask)
        return client


def _s3(moto_server: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1", config=Config(s3={"addressing_style": "path"})
    )


def _mode(path: str | Path) -> int:
    return os.stat(path).st_mode & 0o777


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# ---------------------------------------------------------------- SSE-KMS staging


def test_without_a_key_the_predicted_etag_is_the_check(tmp_path, s3, bucket, staging):
    plan_dir = _omics_plan(tmp_path, 250)
    stager = _stager(plan_dir, s3, staging, expected_bucket_owner=MOTO_ACCOUNT)
    staged = stager.stage([0])[0]
    shard = PlanDirectory(plan_dir).manifest.shard(0)
    assert (staged.content_check, staged.etag, staged.checksum, staged.kms_key_id) == ("etag", shard.etag, None, None)
    assert "ServerSideEncryption" not in s3.head_object(Bucket=bucket, Key=staged.key) or (
        s3.head_object(Bucket=bucket, Key=staged.key)["ServerSideEncryption"] == "AES256"
    )
    stager.verify(staged)


def test_sse_kms_single_part_is_checked_by_its_sha256_checksum(tmp_path, s3, bucket, staging, key):
    plan_dir = _omics_plan(tmp_path, 250)
    stager = _stager(plan_dir, s3, staging, kms_key_id=key, expected_bucket_owner=MOTO_ACCOUNT)
    staged = stager.stage([0])[0]
    data = Path(plan_dir, PlanDirectory(plan_dir).manifest.shard(0).path).read_bytes()
    head = s3.head_object(Bucket=bucket, Key=staged.key, ChecksumMode="ENABLED")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)
    assert head["ChecksumSHA256"] == _b64_sha256(data) == staged.checksum
    assert (staged.content_check, staged.kms_key_id, staged.etag) == ("checksum-sha256", key, head["ETag"])
    stager.verify(staged)
    row = sqlite3.connect(os.path.join(plan_dir, "ledger.sqlite")).execute(
        "SELECT content_check, checksum, kms_key_id, etag FROM staged WHERE kind = 'shard'"
    )
    assert row.fetchone() == ("checksum-sha256", staged.checksum, key, staged.etag)  # the ledger says which check


def test_sse_kms_multipart_is_checked_by_the_composite_checksum(tmp_path, s3, bucket, staging, key):
    plan_dir = _omics_plan(tmp_path, 1200, padding=10_000, part_size=5 * MiB)
    shard = PlanDirectory(plan_dir).manifest.shard(0)
    assert shard.bytes > 2 * shard.part_size  # three parts
    calls = S3Calls()
    calls.attach(s3)
    stager = _stager(plan_dir, s3, staging, kms_key_id=key, expected_bucket_owner=MOTO_ACCOUNT)
    staged = stager.stage([0])[0]
    data = Path(plan_dir, shard.path).read_bytes()
    parts = [data[i : i + shard.part_size] for i in range(0, len(data), shard.part_size)]
    expected = composite_sha256([hashlib.sha256(p).digest() for p in parts])
    assert expected.endswith("-3") and staged.checksum == expected  # worked out here from the bytes
    created = [p for name, p in calls.calls if name == "CreateMultipartUpload"]
    assert [(p["ServerSideEncryption"], p["SSEKMSKeyId"], p["ChecksumAlgorithm"]) for p in created] == [
        ("aws:kms", key, "SHA256")
    ]
    uploaded = sorted((p["PartNumber"], p["ChecksumSHA256"]) for name, p in calls.calls if name == "UploadPart")
    assert uploaded == [(n, _b64_sha256(p)) for n, p in enumerate(parts, 1)]
    head = s3.head_object(Bucket=bucket, Key=staged.key, ChecksumMode="ENABLED")
    assert (head["SSEKMSKeyId"], head["ETag"]) == (key, staged.etag)
    assert s3.get_object(Bucket=bucket, Key=staged.key)["Body"].read() == data
    stager.verify(staged)
    again = _stager(plan_dir, s3, staging, kms_key_id=key, expected_bucket_owner=MOTO_ACCOUNT)
    assert again.stage([0])[0] == staged and again.uploaded == 0  # journaled: nothing sent again


def test_an_object_already_there_is_adopted_only_with_the_same_checksum_and_key(
    tmp_path, s3, bucket, staging, key, kms
):
    plan_dir = _omics_plan(tmp_path, 250)
    data = Path(plan_dir, PlanDirectory(plan_dir).manifest.shard(0).path).read_bytes()
    stager = _stager(plan_dir, s3, staging, kms_key_id=key, expected_bucket_owner=MOTO_ACCOUNT)
    target = stager.shard_uri(PlanDirectory(plan_dir).manifest.shard(0))[len(f"s3://{bucket}/") :]
    other = kms.create_key()["KeyMetadata"]["Arn"]
    s3.put_object(
        Bucket=bucket,
        Key=target,
        Body=data,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=other,
        ChecksumAlgorithm="SHA256",
    )
    with pytest.raises(SubmissionError, match=f"encrypted under KMS key {other}, not {key}"):
        stager.stage([0])
    s3.put_object(Bucket=bucket, Key=target, Body=data, ChecksumAlgorithm="SHA256")  # no SSE-KMS
    with pytest.raises(SubmissionError, match="without SSE-KMS"):
        stager.stage([0])
    s3.put_object(
        Bucket=bucket,
        Key=target,
        Body=data,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key,
        ChecksumAlgorithm="SHA256",
    )
    staged = stager.stage([0])[0]  # the same bytes under the same key: reused
    assert stager.reused == 1 and staged.checksum == _b64_sha256(data)


def test_verify_refuses_an_object_whose_key_or_encryption_changed_after_staging(
    tmp_path, s3, bucket, staging, key, kms
):
    plan_dir = _omics_plan(tmp_path, 250)
    stager = _stager(plan_dir, s3, staging, kms_key_id=key, expected_bucket_owner=MOTO_ACCOUNT)
    staged = stager.stage([0])[0]
    body = s3.get_object(Bucket=bucket, Key=staged.key)["Body"].read()
    other = kms.create_key()["KeyMetadata"]["Arn"]
    # The same bytes again under another key: moto even keeps the ETag (its MD5), so only the key tells.
    s3.put_object(
        Bucket=bucket,
        Key=staged.key,
        Body=body,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=other,
        ChecksumAlgorithm="SHA256",
    )
    with pytest.raises(SubmissionError, match=f"encrypted under KMS key {other}"):
        stager.verify(staged)
    s3.put_object(Bucket=bucket, Key=staged.key, Body=body, ChecksumAlgorithm="SHA256")
    with pytest.raises(SubmissionError, match="without SSE-KMS"):
        stager.verify(staged)


def test_a_bucket_that_encrypts_with_kms_by_default_asks_for_the_key(tmp_path, s3, bucket, staging, key):
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}]
        },
    )
    plan_dir = _omics_plan(tmp_path, 250)
    stager = _stager(plan_dir, s3, staging, expected_bucket_owner=MOTO_ACCOUNT)
    with pytest.raises(SubmissionError, match=f"SSE-KMS \\(key {key}\\).*set \\[staging\\] kms_key_id"):
        stager.stage([0])
    # With the key set, the same bucket works: the object S3 kept is checked by checksum and adopted.
    staged = _stager(plan_dir, s3, staging, kms_key_id=key, expected_bucket_owner=MOTO_ACCOUNT).stage([0])[0]
    assert staged.content_check == "checksum-sha256"


def test_an_alias_is_compared_with_the_key_arn_s3_reports(tmp_path, s3, bucket, staging, key, kms):
    alias = f"alias/planner-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    plan_dir = _omics_plan(tmp_path, 250)
    resolved: list[str] = []

    def resolve(name: str) -> str:
        resolved.append(name)
        return str(kms.describe_key(KeyId=name)["KeyMetadata"]["Arn"])

    stager = _stager(plan_dir, s3, staging, kms_key_id=alias, expected_bucket_owner=MOTO_ACCOUNT, resolve_alias=resolve)
    assert stager.same_key(key) and resolved == [alias]  # S3 reports the key's ARN for an alias
    staged = stager.stage([0])[0]
    stager.verify(staged)
    other = kms.create_key()["KeyMetadata"]["Arn"]
    assert not stager.same_key(other)


# ---------------------------------------------------------------- an ETag that is not an MD5


def test_with_kms_an_opaque_etag_is_recorded_and_is_the_one_the_children_use(
    tmp_path, moto_server, bucket, key, planner_s3_calls, monkeypatch
):
    """S3 answers an SSE-KMS object with an ETag that is no MD5: the planner records it, checks the
    checksum instead, and the array job's children read with If-Match on that very ETag."""
    from planner.services import aws

    wrapper = OpaqueETags()
    original = aws.Clients._make
    monkeypatch.setattr(
        aws.Clients,
        "_make",
        lambda self, service: wrapper.attach(original(self, service)) if service == "s3" else original(self, service),
    )
    queue = f"q-{uuid.uuid4().hex[:12]}"
    plan_dir = _prepared(_batch_plan(tmp_path, 4, queue), moto_server)
    shard = PlanDirectory(plan_dir).manifest.shard(0)
    with staging_options(kms_key_id=key):
        submit(plan_dir, **_batch_options(moto_server, bucket))
    ledger = Ledger.open(plan_dir, shard_plan_id(plan_dir), "batch", create=False)
    staged, index = ledger.staged(0), ledger.staged(0, "index")
    ledger.close()
    assert staged.content_check == index.content_check == "checksum-sha256"
    assert staged.etag != shard.etag and staged.etag in wrapper.real  # the opaque one, not the predicted MD5
    environment = _job_environment(moto_server, plan_dir)
    assert environment["PLANNER_MANIFEST_ETAG"] == staged.etag
    assert environment["PLANNER_INDEX_ETAG"] == index.etag
    reader = wrapper.attach(_s3(moto_server))
    settings = read_child_settings(environ=dict(environment, AWS_BATCH_JOB_ARRAY_INDEX="2"), s3=reader)
    assert settings["id"] == "S000002"
    # A client that sees moto's own ETags does not match the recorded one: If-Match is really checked.
    with pytest.raises(PlannerError, match="changed since it was submitted"):
        read_child_settings(environ=dict(environment, AWS_BATCH_JOB_ARRAY_INDEX="2"), s3=_s3(moto_server))


def test_a_dry_run_under_kms_does_not_pretend_to_know_the_etag(tmp_path, capsys):
    """Under SSE-KMS S3 assigns the ETag: a dry run shows a placeholder, not the MD5 it could compute;
    without KMS it shows the MD5, which is what S3 will answer."""
    import orjson

    plan_dir = _batch_plan(tmp_path, 4, "q")
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    shard = PlanDirectory(plan_dir).manifest.shard(0)

    def environment(**options):
        submit(plan_dir, dry_run=True, staging="s3://b/s/", **options)
        (line,) = [orjson.loads(text) for text in capsys.readouterr().out.splitlines()]
        pairs = line["request"]["containerOverrides"]["environment"]
        return {pair["name"]: pair["value"] for pair in pairs}

    with staging_options(kms_key_id=key):  # the CLI's --staging-kms-key
        encrypted = environment()
    assert encrypted["PLANNER_MANIFEST_ETAG"] == encrypted["PLANNER_INDEX_ETAG"] == "ASSIGNED-BY-S3-UNDER-SSE-KMS"
    assert environment(staging_kms_key=key) == encrypted  # the API's keyword
    plain = environment()
    assert plain["PLANNER_MANIFEST_ETAG"] == shard.etag and plain["PLANNER_INDEX_ETAG"].startswith('"')


def test_without_kms_an_etag_that_is_not_the_predicted_md5_is_refused(tmp_path, moto_server, bucket, staging):
    wrapper = OpaqueETags()
    s3 = wrapper.attach(_s3(moto_server))
    plan_dir = _omics_plan(tmp_path, 250)
    stager = _stager(plan_dir, s3, staging, expected_bucket_owner=MOTO_ACCOUNT)
    with pytest.raises(SubmissionError, match="but the plan predicted"):
        stager.stage([0])


# ---------------------------------------------------------------- the expected bucket owner


def _batch_plan(tmp_path: Path, runs: int, queue: str, name: str = "plan") -> str:
    frame = pl.DataFrame(
        {"sample": [f"S{i:06d}" for i in range(runs)], "bam": [f"s3://in/{i}.bam" for i in range(runs)]}
    )
    defaults = {"run": {"jobQueue": queue, "jobDefinition": "planner-test-jobdef:1", "jobName": "cohort"}}
    out = str(tmp_path / name)
    planner.plan(frame, backend="batch", defaults=defaults).write(out)
    return out


def _batch_options(moto_server: str, bucket: str) -> dict[str, Any]:
    """Not the sandbox: nothing but the planner's own calls (the job queue is made by ``_prepared``)."""
    return {
        "endpoints": {"s3": moto_server, "batch": moto_server, "iam": moto_server},
        "staging": f"s3://{bucket}/staging/",
    }


def _prepared(plan_dir: str, moto_server: str) -> str:
    """The plan's job queue and job definition, made in moto as --sandbox would."""
    from helpers import open_plan

    from planner.commands.sandbox_prepare import prepare_batch

    ctx = open_plan(plan_dir, sandbox=True, endpoints={"batch": moto_server, "iam": moto_server})
    try:
        prepare_batch(ctx)
    finally:
        ctx.ledger.close()
    return plan_dir


def shard_plan_id(plan_dir: str) -> str:
    return PlanDirectory(plan_dir).plan_id


def _job_environment(moto_server: str, plan_dir: str) -> dict[str, str]:
    batch = boto3.client("batch", endpoint_url=moto_server, region_name="us-east-1")
    ledger = Ledger.open(plan_dir, shard_plan_id(plan_dir), "batch", create=False)
    (job_id,) = [s.remote_id for s in ledger.submissions("done") if s.kind == "SubmitJob"]
    ledger.close()
    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    return {v["name"]: v["value"] for v in job["container"]["environment"] if not v["name"].startswith("AWS_BATCH")}


def test_every_staging_call_carries_the_caller_account_as_expected_owner(
    tmp_path, moto_server, bucket, planner_s3_calls
):
    queue = f"q-{uuid.uuid4().hex[:12]}"
    plan_dir = _prepared(_batch_plan(tmp_path, 5, queue), moto_server)
    submit(plan_dir, **_batch_options(moto_server, bucket))
    staging_calls = [(n, p) for n, p in planner_s3_calls.calls if p.get("Bucket") == bucket]
    assert {"HeadObject", "PutObject"} <= {n for n, _ in staging_calls}
    assert [n for n, p in staging_calls if p.get("ExpectedBucketOwner") != MOTO_ACCOUNT] == []  # every one
    # The children are told, and read with it too.
    environment = _job_environment(moto_server, plan_dir)
    assert environment["PLANNER_EXPECTED_BUCKET_OWNER"] == MOTO_ACCOUNT
    child = S3Calls()
    read_child_settings(environ=dict(environment, AWS_BATCH_JOB_ARRAY_INDEX="1"), s3=child.attach(_s3(moto_server)))
    assert [(n, p["ExpectedBucketOwner"]) for n, p in child.calls] == [("GetObject", MOTO_ACCOUNT)] * 2


def test_a_configured_owner_is_sent_on_every_call_including_multipart(tmp_path, moto_server, s3, bucket, key):
    calls = S3Calls()
    calls.attach(s3)
    plan_dir = _omics_plan(tmp_path, 1200, padding=10_000, part_size=5 * MiB)
    stager = _stager(plan_dir, s3, f"s3://{bucket}/p/", kms_key_id=key, expected_bucket_owner="111122223333")
    staged = stager.stage([0])[0]
    stager.verify(staged)
    operations = [n for n, _ in calls.calls]
    for needed in (
        "HeadObject",
        "ListMultipartUploads",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    ):
        assert needed in operations
    assert {p.get("ExpectedBucketOwner") for _, p in calls.calls} == {"111122223333"}


def test_the_owner_is_resolved_once_and_never_in_a_dry_run(tmp_path, moto_server, bucket, monkeypatch):
    from planner.services import aws

    asked: list[str] = []
    original = aws.Clients._make

    def make(self: Any, service: str) -> Any:
        client = original(self, service)
        if service == "sts":
            client.meta.events.register("before-call.sts.GetCallerIdentity", lambda **_: asked.append("sts"))
        return client

    monkeypatch.setattr(aws.Clients, "_make", make)
    queue = f"q-{uuid.uuid4().hex[:12]}"
    plan_dir = _prepared(_batch_plan(tmp_path, 3, queue), moto_server)
    lines: list[dict[str, Any]] = []
    submit(plan_dir, dry_run=True, emit=lines.append, **_batch_options(moto_server, bucket))
    assert asked == []  # a dry run needs no credentials
    environment = {v["name"]: v["value"] for v in lines[0]["request"]["containerOverrides"]["environment"]}
    assert environment["PLANNER_EXPECTED_BUCKET_OWNER"] == "CALLER-ACCOUNT"
    submit(plan_dir, **_batch_options(moto_server, bucket))
    assert asked == ["sts"]


def test_planning_a_local_sheet_asks_sts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")  # nothing answers there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    sheet = tmp_path / "s.csv"
    sheet.write_text("sample,fastq_1\nS1,s3://in/1.fq\n")
    defaults = tmp_path / "d.toml"
    defaults.write_text(
        '[run]\nworkflowId = "1234567"\nroleArn = "arn:aws:iam::123456789012:role/r"\noutputUri = "s3://o/"\n'
        '[staging]\nuri = "s3://b/p/"\nkms_key_id = "alias/staging"\nexpected_bucket_owner = "111122223333"\n'
    )
    code = planner.cli.main(
        ["plan", str(sheet), "--backend", "omics-batch", "--defaults", str(defaults), "--out", str(tmp_path / "p")]
    )
    assert code == 0


class _ForeignBucket:
    """S3's answer to a request whose ExpectedBucketOwner is not the bucket's owner: 403 AccessDenied."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.refused: list[str] = []

    def __call__(self, request: Any, event_name: str, **_: Any) -> Any:
        from faults.faultkit import aws_error

        sent = request.headers.get("x-amz-expected-bucket-owner")
        sent = sent.decode() if isinstance(sent, bytes) else sent
        if sent and sent != self.owner:
            self.refused.append(event_name.split(".")[2])
            return aws_error(request.url, 403, "AccessDenied", "Access Denied", xml=True)
        return None


def test_a_staging_bucket_of_another_account_is_refused_with_a_clear_error(
    tmp_path, moto_server, s3, bucket, monkeypatch, capsys
):
    from planner.services import aws

    foreign = _ForeignBucket("999999999999")
    original = aws.Clients._make

    def make(self: Any, service: str) -> Any:
        client = original(self, service)
        if service == "s3":
            client.meta.events.register("before-send.s3", foreign)
        return client

    monkeypatch.setattr(aws.Clients, "_make", make)
    plan_dir = _omics_plan(tmp_path, 250)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", "http://127.0.0.1:9")
    code = planner.cli.main(["submit", plan_dir, "--staging", f"s3://{bucket}/planner/", "--max-attempts", "1"])
    err = capsys.readouterr().err
    assert code == 1 and foreign.refused
    (line,) = [x for x in err.splitlines() if x.startswith("planner: error:")]
    assert f"the bucket {bucket} is not owned by account {MOTO_ACCOUNT} (ExpectedBucketOwner" in line
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing written to it
    with pytest.raises(AccessError):
        stager = _stager(
            plan_dir, foreign_client(moto_server, foreign), f"s3://{bucket}/p/", expected_bucket_owner="111122223333"
        )
        stager.stage([0])


def foreign_client(moto_server: str, foreign: _ForeignBucket) -> Any:
    client = _s3(moto_server)
    client.meta.events.register("before-send.s3", foreign)
    return client


def test_a_child_refused_by_the_owner_check_says_why(tmp_path, moto_server, bucket):
    queue = f"q-{uuid.uuid4().hex[:12]}"
    plan_dir = _prepared(_batch_plan(tmp_path, 3, queue), moto_server)
    submit(plan_dir, **_batch_options(moto_server, bucket))
    environment = _job_environment(moto_server, plan_dir)
    foreign = _ForeignBucket("999999999999")
    with pytest.raises(PlannerError, match=f"not owned by account {MOTO_ACCOUNT} \\(ExpectedBucketOwner"):
        read_child_settings(
            environ=dict(environment, AWS_BATCH_JOB_ARRAY_INDEX="0"), s3=foreign_client(moto_server, foreign)
        )


def test_a_sheet_on_s3_is_read_with_the_expected_owner_into_private_files(
    tmp_path, moto_server, s3, bucket, monkeypatch
):
    import tempfile

    s3.put_object(Bucket=bucket, Key="sheets/a.csv", Body=b"sample,fastq_1\nS1,s3://in/1.fq\n")
    s3.put_object(Bucket=bucket, Key="sheets/b.csv", Body=b"sample,fastq_1\nS2,s3://in/2.fq\n")
    calls = S3Calls()
    calls.attach(s3)
    made: list[str] = []
    mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(mkdtemp(*a, **k)) or made[-1])
    previous = os.umask(0)  # the most permissive umask: the copies must still be the owner's alone
    try:
        opened = planner.plan(
            f"s3://{bucket}/sheets/*.csv", backend="omics-batch", defaults=OMICS_DEFAULTS, s3_client=s3
        )
    finally:
        os.umask(previous)
    (folder,) = [d for d in made if os.path.basename(d).startswith("planner-sheet-")]
    copies = sorted(Path(folder).iterdir())
    assert len(copies) == 2 and _mode(folder) == 0o700 and {_mode(c) for c in copies} == {0o600}
    assert opened.runs().height == 2
    assert {"ListObjectsV2", "HeadObject", "GetObject"} <= calls.operations()
    assert {p.get("ExpectedBucketOwner") for _, p in calls.calls} == {MOTO_ACCOUNT}
    foreign = _ForeignBucket("999999999999")
    with pytest.raises(SheetError, match="not owned by account"):
        planner.plan(
            f"s3://{bucket}/sheets/a.csv",
            backend="omics-batch",
            defaults=OMICS_DEFAULTS,
            s3_client=foreign_client(moto_server, foreign),
        )


# ---------------------------------------------------------------- the command line


def test_submit_staging_kms_key_stages_encrypted_through_the_cli(
    tmp_path, moto_server, s3, bucket, key, make_omics_emulator, monkeypatch
):
    emulator = make_omics_emulator()
    plan_dir = _omics_plan(tmp_path, 250)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", emulator.endpoint_url)
    assert planner.cli.main(["submit", plan_dir, "--staging", f"s3://{bucket}/planner/", "--staging-kms-key", key]) == 0
    ledger = Ledger.open(plan_dir, shard_plan_id(plan_dir), "omics-batch", create=False)
    staged = ledger.staged(0)
    ledger.close()
    head = s3.head_object(Bucket=bucket, Key=staged.key)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"], staged.content_check) == (
        "aws:kms",
        key,
        "checksum-sha256",
    )
    assert planner.cli.main(["submit", plan_dir, "--staging-kms-key", "not-a-key"]) == 2


def test_the_staging_table_of_the_defaults_reaches_plan_json_and_submit_without_changing_the_plan_id(
    tmp_path, moto_server, s3, bucket, key, make_omics_emulator
):
    frame = pl.DataFrame({"sample": [f"S{i:04d}" for i in range(250)]})
    plain = {**OMICS_DEFAULTS, "staging": {"uri": f"s3://{bucket}/planner/"}}
    keyed = {
        "run": OMICS_DEFAULTS["run"],
        "staging": {**plain["staging"], "kms_key_id": key, "expected_bucket_owner": MOTO_ACCOUNT},
    }
    first = planner.plan(frame, backend="omics-batch", defaults=plain).write(str(tmp_path / "plain"))
    second = planner.plan(frame, backend="omics-batch", defaults=keyed).write(str(tmp_path / "keyed"))
    assert first.plan_id == second.plan_id and first.shards == second.shards  # the shards' bytes do not change
    assert second.to_json()["staging"] == {
        "uri": f"s3://{bucket}/planner/",
        "kms_key_id": key,
        "content_check": "checksum-sha256",
        "expected_bucket_owner": MOTO_ACCOUNT,
    }
    assert first.to_json()["staging"] == {"uri": f"s3://{bucket}/planner/"}  # plans without them: as before
    emulator = make_omics_emulator()
    submit(str(tmp_path / "keyed"), endpoints={"s3": moto_server, "omics": emulator.endpoint_url})
    ledger = Ledger.open(str(tmp_path / "keyed"), second.plan_id, "omics-batch", create=False)
    staged = ledger.staged(0)
    ledger.close()
    head = s3.head_object(Bucket=bucket, Key=staged.key)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"], staged.content_check) == (
        "aws:kms",
        key,
        "checksum-sha256",
    )


class _NoListBucket:
    """S3 as it answers a role without ``s3:ListBucket``: a HeadObject of a missing object is 403
    AccessDenied, not 404 ("If you don't have the s3:ListBucket permission, Amazon S3 returns an HTTP
    status code 403 Access Denied error", HeadObject in the S3 API Reference).  The policy
    ``planner policy`` prints grants no ListBucket on the staging bucket, so staging must not need it."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3  # moto, asked directly whether the object is there
        self.refused: list[str] = []

    def __call__(self, request: Any, event_name: str, **_: Any) -> Any:
        from urllib.parse import unquote, urlsplit

        from botocore.exceptions import ClientError
        from faults.faultkit import aws_error

        if request.method != "HEAD":
            return None
        bucket, _, key = unquote(urlsplit(request.url).path).lstrip("/").partition("/")
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError:
            self.refused.append(key)
            return aws_error(request.url, 403, "AccessDenied", "Access Denied", xml=True)
        return None


def test_staging_needs_no_list_bucket_permission(tmp_path, moto_server, s3, bucket, staging):
    plan_dir = _omics_plan(tmp_path, 250)
    refusing = _NoListBucket(s3)
    client = _s3(moto_server)
    client.meta.events.register("before-send.s3", refusing)
    staged = _stager(plan_dir, client, staging).stage([0])
    assert refusing.refused, "the fault never fired: the pre-check no longer asks about a missing object"
    item = staged[0]
    assert s3.head_object(Bucket=bucket, Key=item.key)["ETag"] == item.etag
    # Staged again by a second stager (a lost ledger): the object is there, HeadObject answers, it is reused.
    os.remove(Path(plan_dir) / "ledger.sqlite")
    again = _stager(plan_dir, client, staging)
    assert again.stage([0])[0].etag == item.etag and again.reused == 1


def test_clean_without_list_bucket_keeps_going_and_says_why(tmp_path, moto_server, s3, bucket, staging, monkeypatch):
    from planner.commands.clean import clean
    from planner.services import aws

    plan_dir = _omics_plan(tmp_path, 250)
    ledger_plan = PlanDirectory(plan_dir)
    _stager(plan_dir, _s3(moto_server), staging).stage([0])
    (staged,) = Ledger.open(plan_dir, ledger_plan.plan_id, "omics-batch").all_staged()
    s3.delete_object(Bucket=bucket, Key=staged.key)  # removed by hand already
    original = aws.Clients._make

    def make(self: Any, service: str) -> Any:
        client = original(self, service)
        if service == "s3":
            client.meta.events.register("before-send.s3", _NoListBucket(s3))
        return client

    monkeypatch.setattr(aws.Clients, "_make", make)
    report = clean(plan_dir, endpoints={"s3": moto_server}, refresh=False)
    assert report.removed == []
    ((uri, why),) = report.kept
    assert uri == staged.uri and "403" in why and "s3:ListBucket" in why
