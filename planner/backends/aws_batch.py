"""AWS Batch SubmitJob: each shard becomes one array job of 2..10,000 children.

SubmitJob cannot carry settings per child, so every child's merged settings go in
the shard (child i reads entry i) and the job learns where the shard is from its
container environment.  Limits (seeds/004): an array has 2..10,000 children (a
shard of one run becomes a plain job, and the packer avoids lone runs); at most 20
``dependsOn``; retry attempts 1..10; a timeout of at least 60 seconds; no
environment variable name starting with ``AWS_BATCH``; job names of at most 128
characters from ``[A-Za-z0-9_-]``, the first alphanumeric.

Submission, per shard:

* The shard is staged like every staged shard (``staging.py``), and beside it its
  line index, ``<prefix>/<plan_id>/<sha256 of the index>.index`` (the format is in
  ``child_settings.py``), content-addressed and written with ``IfNoneMatch="*"``
  too.  The ledger records the index in ``staged`` under the *virtual shard number*
  ``-1 - index`` (shard 0's index is row -1), so real shard rows stay untouched.
* One SubmitJob: the defaults file's request (a plan of one run sends that run's
  merged settings instead, as a plain job), ``jobName`` = ``<jobName default or
  "planner">-<plan_id>-<shard:05d>``, ``arrayProperties.size`` = entries when there
  are at least 2, and ``containerOverrides.environment`` = the defaults' variables
  plus PLANNER_MANIFEST, PLANNER_MANIFEST_ETAG, PLANNER_INDEX_URI,
  PLANNER_INDEX_ETAG and PLANNER_FIRST_INDEX, so ``planner child-settings`` needs
  no arguments inside a child.
* Optional ordering, ``[submission] dependsOnType``: ``SEQUENTIAL`` gives every
  array a ``{"type": "SEQUENTIAL"}`` dependency (its children run one after another
  from index 0) and makes each job wait for the whole previous one, so the plan
  runs in sheet order; ``N_TO_N`` makes child i of each array wait for child i of
  the previous array (``{"jobId": previous, "type": "N_TO_N"}``), falling back to
  waiting for the whole previous job when the two differ in size (the last,
  shorter shard), since Batch pairs children by index.  Added to the defaults' own
  ``dependsOn``; the total stays within 20.
* SubmitJob has no idempotency token and botocore retries its 5xx, so the call is
  journaled (intent, then result) and on resume an intent without a result is
  reconciled first: ``ListJobs(jobQueue, filters=[JOB_NAME = name])`` finds a job
  already created under the deterministic name, which is then recorded instead of
  submitting a second one.

Status: DescribeJobs (at most 100 ids a call) for the jobs submitted; an array's
children come from ``ListJobs(arrayJobId, jobStatus)`` for each status its
``statusSummary`` counts, and map back to samples by array index (child ``i`` is
position ``i`` of the shard).  A child not listed (not yet spawned) shows its
parent's state.  Batch has no CANCELLED state: a cancelled or terminated job is
FAILED with a ``statusReason``, so ``retry`` (whose default states are FAILED and
CANCELLED) plans it with the failures.  ``cancel`` terminates the array parents
(and plain jobs) not yet finished; Batch terminates their children.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import polars as pl
from tqdm import tqdm

from ..child_settings import (
    FIRST_INDEX_ENV,
    INDEX_ETAG_ENV,
    INDEX_URI_ENV,
    MANIFEST_ENV,
    MANIFEST_ETAG_ENV,
    entry_count,
    line_index,
)
from ..errors import InputError, Problem, SubmissionError
from ..model import FieldRule, check_scalar, check_shape, operation_input
from ..spec import BackendSpec

MAX_ARRAY_SIZE = 10_000
MAX_DEPENDS_ON = 20
# dependsOnType adds to every job: SEQUENTIAL its own {"type": "SEQUENTIAL"} and the previous job; N_TO_N the previous job.
ADDED_DEPENDENCIES = {"SEQUENTIAL": 2, "N_TO_N": 1}
# Each child's manifest location travels in containerOverrides.environment, which these kinds of job do not read.
UNSUPPORTED_OVERRIDES = ("ecsPropertiesOverride", "eksPropertiesOverride", "nodeOverrides")
JOB_NAME = FieldRule("jobName", "string", min=1, max=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_INPUT = operation_input("batch", "SubmitJob")


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_INPUT, run, "")
    for name in ("jobQueue", "jobDefinition"):
        if name not in run:
            found.append(Problem(None, None, name, None, "required", "is required in the defaults file"))
    if "jobName" in run:
        # The planner appends the plan id and shard index to this prefix; keep room for them.
        found += check_scalar(JOB_NAME.with_limits(max=128 - 40), run["jobName"], "jobName")
    order = submission.get("dependsOnType")
    added = ADDED_DEPENDENCIES.get(order, 0) if isinstance(order, str) else 0
    if len(run.get("dependsOn", []) or []) + added > MAX_DEPENDS_ON:
        extra = f" (dependsOnType {order} adds {added})" if added else ""
        found.append(
            Problem(None, None, "dependsOn", None, "max", f"at most {MAX_DEPENDS_ON} dependencies per job{extra}")
        )
    attempts = (run.get("retryStrategy") or {}).get("attempts")
    if attempts is not None and not (isinstance(attempts, int) and 1 <= attempts <= 10):
        found.append(
            Problem(None, None, "retryStrategy.attempts", repr(attempts), "range", "must be an integer from 1 to 10")
        )
    seconds = (run.get("timeout") or {}).get("attemptDurationSeconds")
    if seconds is not None and not (isinstance(seconds, int) and seconds >= 60):
        found.append(
            Problem(None, None, "timeout.attemptDurationSeconds", repr(seconds), "min", "must be at least 60 seconds")
        )
    for index, variable in enumerate((run.get("containerOverrides") or {}).get("environment", []) or []):
        name = str((variable or {}).get("name", ""))
        if name.startswith("AWS_BATCH"):
            found.append(
                Problem(
                    None,
                    None,
                    f"containerOverrides.environment[{index}].name",
                    name,
                    "reserved",
                    "names starting with AWS_BATCH are reserved for AWS Batch",
                )
            )
    for name in UNSUPPORTED_OVERRIDES:
        if name in run:
            found.append(
                Problem(
                    None,
                    None,
                    name,
                    None,
                    "unsupported",
                    "each child learns where its settings are from containerOverrides.environment; jobs needing this override are not supported yet",
                )
            )
    if order is not None and order not in ("N_TO_N", "SEQUENTIAL"):
        found.append(
            Problem(None, None, "submission.dependsOnType", str(order), "enum", "must be N_TO_N or SEQUENTIAL")
        )
    return found


SPEC = BackendSpec(
    # Batch has no CANCELLED: a terminated job is FAILED with a reason.
    final_states=frozenset({"SUCCEEDED", "FAILED"}),
    retry_states=("FAILED",),
    name="batch",
    title="AWS Batch SubmitJob (array jobs)",
    id_field="id",
    id_rule=None,
    # Children of one array job share the job's request; only parameters differ per child.
    fields={},
    parameters_path=("parameters",),
    max_entries=MAX_ARRAY_SIZE,
    max_bytes=5 * 1024**3,
    min_entries=2,
    shard_mode=lambda submission: "s3",  # every child reads its settings from the staged shard
    check_defaults=_check_defaults,
    run_shape=_INPUT,
    submission_keys=frozenset({"dependsOnType"}),
)


# ---------------------------------------------------------------- names and requests

DESCRIBE_MAX = 100  # DescribeJobs takes at most 100 job ids
JOB_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
FINAL = frozenset({"SUCCEEDED", "FAILED"})
CANCEL_REASON = "cancelled by planner"
INDEX_CONTENT_TYPE = "application/octet-stream"


def job_name(manifest: dict[str, Any], index: int) -> str:
    """``<jobName default or "planner">-<plan_id>-<shard:05d>``: the same on every resume."""
    prefix = str(manifest["defaults"].get("jobName") or "planner")
    return f"{prefix}-{manifest['plan_id']}-{index:05d}"


def index_row(shard_index: int) -> int:
    """The ledger's ``staged`` row of a shard's line index: a virtual shard number below 0."""
    return -1 - shard_index


def stage_indexes(manifest: dict[str, Any]) -> list[int]:
    _check_depends_on(manifest)  # called before anything is staged: refuse early
    return [s["index"] for s in manifest["shards"]]  # every child reads its own line of its shard


def _name_of(reference: str) -> str:
    """A queue or job definition name from a name or an ARN (``...:job-queue/NAME``)."""
    return reference.rsplit("/", 1)[-1] if reference.startswith("arn:") else reference


def _depends_on(manifest: dict[str, Any], shard: dict[str, Any], previous: str | None) -> list[dict[str, Any]]:
    own = [dict(d) for d in (manifest["defaults"].get("dependsOn") or [])]
    order = manifest["submission"].get("dependsOnType")
    is_array = shard["entries"] >= 2
    if order == "SEQUENTIAL":
        if is_array:
            own.append({"type": "SEQUENTIAL"})
        if previous is not None:
            own.append({"jobId": previous})
    elif order == "N_TO_N" and previous is not None:
        before = manifest["shards"][shard["index"] - 1]
        same_size = is_array and before["entries"] == shard["entries"]
        own.append({"jobId": previous, "type": "N_TO_N"} if same_size else {"jobId": previous})
    return own


def _check_depends_on(manifest: dict[str, Any]) -> None:
    extra = ADDED_DEPENDENCIES.get(manifest["submission"].get("dependsOnType"), 0)
    count = len(manifest["defaults"].get("dependsOn") or []) + extra
    if count > MAX_DEPENDS_ON:
        raise InputError(
            f"dependsOn: the defaults' {count - extra} dependencies plus the {extra} the planner adds for dependsOnType exceed {MAX_DEPENDS_ON}"
        )


def build_request(
    manifest: dict[str, Any],
    shard: dict[str, Any],
    environment: dict[str, str],
    *,
    previous: str | None = None,
    lone_run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The SubmitJob request of one shard.

    ``environment`` holds the PLANNER_* variables; ``previous`` is the job id of the
    shard before (for dependsOnType); ``lone_run`` the merged settings of the only run
    of a one-run shard, which then goes as a plain job with its own parameters.
    """
    base = lone_run if lone_run is not None else manifest["defaults"]
    request: dict[str, Any] = {
        k: v for k, v in base.items() if k not in ("id", "jobName", "dependsOn", "arrayProperties")
    }
    if lone_run is not None and request.get("parameters"):
        # SubmitJob parameters are strings; the run's typed values (a number, a list) go as JSON text.
        request["parameters"] = {
            k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in request["parameters"].items()
        }
    request["jobName"] = job_name(manifest, shard["index"])
    if shard["entries"] >= 2:
        request["arrayProperties"] = {"size": shard["entries"]}
    overrides = dict(request.get("containerOverrides") or {})
    own = [v for v in overrides.get("environment") or [] if v.get("name") not in environment]
    overrides["environment"] = own + [{"name": name, "value": value} for name, value in environment.items()]
    request["containerOverrides"] = overrides
    depends = _depends_on(manifest, shard, previous)
    if depends:
        request["dependsOn"] = depends
    return request


def _environment(manifest_uri: str, manifest_etag: str, index_uri: str, index_etag: str) -> dict[str, str]:
    return {
        MANIFEST_ENV: manifest_uri,
        MANIFEST_ETAG_ENV: manifest_etag,
        INDEX_URI_ENV: index_uri,
        INDEX_ETAG_ENV: index_etag,
        FIRST_INDEX_ENV: "0",  # a shard is one whole array: child i reads entry i
    }


# ---------------------------------------------------------------- the line index on S3


def _index_key(ctx: Any, sha256: str) -> tuple[str, str]:
    from ..staging import StagingPrefix

    location = StagingPrefix.parse(ctx.staging_uri or "s3://STAGING-BUCKET/")
    name = f"{ctx.plan_id}/{sha256}.index"
    return location.bucket, f"{location.prefix}/{name}" if location.prefix else name


def _index_bytes(ctx: Any, shard: dict[str, Any]) -> bytes:
    data = line_index(os.path.join(ctx.plan_dir, shard["path"]))
    if entry_count(data) != shard["entries"]:
        raise SubmissionError(
            f"{shard['path']}: {entry_count(data)} lines, but plan.json says {shard['entries']} entries: the plan directory was changed; plan again"
        )
    return data


def _stage_index(ctx: Any, shard: dict[str, Any]) -> Any:
    """Put the shard's line index beside it (never overwriting) and journal it."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ..ledger import Staged
    from ..staging import SHA256_METADATA

    known = ctx.ledger.staged(index_row(shard["index"]))
    if known is not None:
        return known
    data = _index_bytes(ctx, shard)
    sha256 = hashlib.sha256(data).hexdigest()
    md5 = hashlib.md5(data)
    expected = f'"{md5.hexdigest()}"'
    bucket, key = _index_key(ctx, sha256)
    s3 = ctx.clients.get("s3")
    try:
        response = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            IfNoneMatch="*",
            ContentType=INDEX_CONTENT_TYPE,
            ContentMD5=base64.b64encode(md5.digest()).decode(),
            ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
            Metadata={SHA256_METADATA: sha256},
        )
        etag, version = response["ETag"], response.get("VersionId")
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 412 and exc.response.get("Error", {}).get("Code") not in (
            "PreconditionFailed",
            "ConditionalRequestConflict",
        ):
            raise SubmissionError(f"s3://{bucket}/{key}: cannot stage the line index: {exc}") from exc
        head = ctx.call(f"HeadObject s3://{bucket}/{key}", s3.head_object, Bucket=bucket, Key=key)
        etag, version = head["ETag"], head.get("VersionId")  # already there: fine if it is the same bytes
    except BotoCoreError as exc:
        raise SubmissionError(f"s3://{bucket}/{key}: cannot reach S3: {exc}") from exc
    if etag != expected:
        raise SubmissionError(
            f"s3://{bucket}/{key} has ETag {etag}, but this line index's is {expected}: refusing to use it; remove the object or stage under another prefix"
        )
    staged = Staged(index_row(shard["index"]), f"s3://{bucket}/{key}", bucket, key, etag, sha256, version, len(data))
    ctx.ledger.record_staged(staged)
    return staged


# ---------------------------------------------------------------- submit


def _lone_run(ctx: Any, shard: dict[str, Any]) -> dict[str, Any] | None:
    return ctx.shard_runs(shard["index"])[0] if shard["entries"] == 1 else None  # type: ignore[no-any-return]


def list_jobs(ctx: Any, batch: Any, what: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every job summary ListJobs gives for ``params``, page by page (throttling waited out)."""
    token = None
    while True:
        page = ctx.call(what, batch.list_jobs, **params, **({"nextToken": token} if token else {}))
        yield from page.get("jobSummaryList", [])
        token = page.get("nextToken")
        if not token:
            return


MAX_UNKNOWN_OUTCOMES = 5


class _OutcomeUnknown(Exception):
    """A SubmitJob whose answer was lost (5xx, broken connection): it may have made the job."""


def _no_blind_retry(response: Any = None, caught_exception: Exception | None = None, **_: Any) -> None:
    """needs-retry hook: SubmitJob has no idempotency token, so botocore must not resend it;
    the planner looks the job up by its name first."""
    if caught_exception is not None:
        raise _OutcomeUnknown(str(caught_exception)) from caught_exception
    if response is not None and response[0].status_code >= 500:
        raise _OutcomeUnknown(f"HTTP {response[0].status_code}")


def find_jobs(ctx: Any, batch: Any, queue: str, name: str) -> list[dict[str, Any]]:
    """Jobs (not array children) named exactly ``name`` in ``queue``, oldest first."""
    found = [
        job
        for job in list_jobs(
            ctx, batch, f"ListJobs {name} in {queue}", jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        # The filter matches case-insensitively and with * wildcards; moto lists array children too.
        if job.get("jobName") == name and ":" not in job["jobId"] and "index" not in (job.get("arrayProperties") or {})
    ]
    return sorted(found, key=lambda job: (job.get("createdAt") or 0, job["jobId"]))


def submit(ctx: Any) -> dict[str, Any]:
    from ..submit import rate_limited, request_problems

    manifest = ctx.manifest
    _check_depends_on(manifest)
    batch = None if ctx.dry_run else ctx.clients.get("batch")
    if batch is not None:
        batch.meta.events.register_first(
            "needs-retry.batch.SubmitJob", _no_blind_retry, unique_id="planner-batch-no-blind-retry"
        )
    queue = str(manifest["defaults"]["jobQueue"])
    samples = None if ctx.dry_run else ctx.samples()
    chained = manifest["submission"].get("dependsOnType") in ("SEQUENTIAL", "N_TO_N")
    limiter = rate_limited(ctx)
    gate = threading.Lock()  # the limiter and the counts are shared by the workers
    counts = {"created": 0, "reconciled": 0, "reused": 0}

    def count(what: str) -> None:
        with gate:
            counts[what] += 1

    def mark_samples(index: int, job_id: str | None, submission_status: str, reason: str | None = None) -> None:
        assert samples is not None
        rows = samples.filter(pl.col("shard") == index).select("id", "position")
        plain = manifest["shards"][index]["entries"] == 1
        ctx.ledger.upsert_samples(
            (sample, index, position, job_id if plain else None, submission_status, None, reason)
            for sample, position in rows.iter_rows()
        )

    def dry(shard: dict[str, Any]) -> None:
        from ..staging import StagingPrefix

        known = ctx.ledger.submission(f"SubmitJob:{shard['index']:05d}")
        if known is not None and known.state == "done":
            return  # already submitted: nothing would be sent

        location = StagingPrefix.parse(ctx.staging_uri or "s3://STAGING-BUCKET/")
        data = _index_bytes(ctx, shard)
        bucket, key = _index_key(ctx, hashlib.sha256(data).hexdigest())
        environment = _environment(
            f"s3://{location.bucket}/{location.key(ctx.plan_id, shard['sha256'])}",
            shard["etag"],
            f"s3://{bucket}/{key}",
            f'"{hashlib.md5(data).hexdigest()}"',
        )
        previous = None
        if chained and shard["index"] > 0:
            before = ctx.ledger.submission(f"SubmitJob:{shard['index'] - 1:05d}")
            previous = (
                before.remote_id
                if before is not None and before.remote_id
                else f"(job id of {job_name(manifest, shard['index'] - 1)})"
            )
        request = build_request(manifest, shard, environment, previous=previous, lone_run=_lone_run(ctx, shard))
        ctx.emit(
            {
                "operation": "SubmitJob",
                "shard": shard["index"],
                "problems": request_problems("batch", "SubmitJob", request),
                "request": request,
            }
        )

    def one(shard: dict[str, Any]) -> str:
        """Submit (or find) the job of one shard; returns its job id."""
        index = shard["index"]
        key = f"SubmitJob:{index:05d}"
        name = job_name(manifest, index)
        known = ctx.ledger.submission(key)
        if known is not None and known.state == "done" and known.remote_id:
            count("reused")
            return str(known.remote_id)
        if known is not None:
            # An intent without a result (or a call that failed after botocore's retries):
            # the job may exist already.  Look before sending anything again.
            existing = find_jobs(ctx, batch, queue, name)
            if existing:
                job = existing[0]
                ctx.ledger.result(
                    key,
                    job["jobId"],
                    {
                        "jobId": job["jobId"],
                        "jobName": name,
                        "jobArn": job.get("jobArn"),
                        "reconciled": True,
                        "found": len(existing),
                    },
                )
                mark_samples(index, job["jobId"], "SUBMITTED")
                count("reconciled")
                return str(job["jobId"])
        previous = None
        if chained and index > 0:
            before = ctx.ledger.submission(f"SubmitJob:{index - 1:05d}")
            if before is None or before.state != "done" or not before.remote_id:
                raise SubmissionError(f"shard {index} depends on shard {index - 1}, which has no job yet")
            previous = before.remote_id
        staged = ctx.ledger.staged(index)
        if staged is None:
            raise SubmissionError(f"shard {index} is not staged; staging must come first")
        staged_index = _stage_index(ctx, shard)
        ctx.stager.verify(staged)  # children read these with If-Match: refuse now rather than fail every child later
        ctx.stager.verify(staged_index)
        environment = _environment(staged.uri, staged.etag, staged_index.uri, staged_index.etag)
        request = build_request(manifest, shard, environment, previous=previous, lone_run=_lone_run(ctx, shard))
        with gate:
            next(limiter)
        ctx.ledger.intent(key, "SubmitJob", shard=index, token=name)
        for attempt in range(MAX_UNKNOWN_OUTCOMES + 1):
            try:
                response = ctx.call(f"SubmitJob for shard {index}", batch.submit_job, **request)
                break
            except _OutcomeUnknown as exc:
                # The call may have been carried out: look for the job by name before sending again.
                existing = find_jobs(ctx, batch, queue, name)
                if existing:
                    response = {
                        "jobId": existing[0]["jobId"],
                        "jobName": name,
                        "jobArn": existing[0].get("jobArn"),
                        "reconciled": True,
                    }
                    break
                if attempt == MAX_UNKNOWN_OUTCOMES:
                    ctx.ledger.failure(key, str(exc))
                    mark_samples(index, None, "FAILED", str(exc))
                    raise SubmissionError(
                        f"SubmitJob for shard {index}: {exc}; no job was made (ListJobs finds none)"
                    ) from exc
                ctx.sleep(min(2.0**attempt, 30.0))
            except SubmissionError as exc:
                ctx.ledger.failure(key, str(exc))
                mark_samples(index, None, "FAILED", str(exc))
                raise
        response.pop("ResponseMetadata", None)
        ctx.ledger.result(key, response["jobId"], response)
        mark_samples(index, response["jobId"], "SUBMITTED")
        count("created")
        return str(response["jobId"])

    shards = manifest["shards"]
    if ctx.dry_run:
        for shard in shards:
            dry(shard)
        return {
            "backend": SPEC.name,
            "plan_id": ctx.plan_id,
            "dry_run": True,
            "jobs": len(shards),
            "runs": manifest["runs"],
        }
    with tqdm(
        total=len(shards), unit="job", desc="SubmitJob", file=sys.stderr, disable=not ctx.progress, leave=False
    ) as bar:
        if chained or ctx.concurrency == 1 or len(shards) == 1:
            for shard in shards:  # each job names the one before it: one at a time, in order
                one(shard)
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=ctx.concurrency, thread_name_prefix="planner-submitjob") as pool:
                for _ in pool.map(one, shards):
                    bar.update(1)
    return {
        "backend": SPEC.name,
        "plan_id": ctx.plan_id,
        "jobs_submitted": counts["created"],
        "jobs_reconciled": counts["reconciled"],
        "jobs_already_submitted": counts["reused"],
        "runs": manifest["runs"],
    }


# ---------------------------------------------------------------- status and cancel


def _describe(ctx: Any, batch: Any, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), DESCRIBE_MAX):
        chunk = job_ids[start : start + DESCRIBE_MAX]
        response = ctx.call(f"DescribeJobs ({len(chunk)} jobs)", batch.describe_jobs, jobs=chunk)
        for job in response.get("jobs", []):
            found[job["jobId"]] = job
    return found


def _children(ctx: Any, batch: Any, parent: dict[str, Any]) -> pl.DataFrame:
    """(position, remote_id, state, reason) of every listed child of an array job."""
    summary = (parent.get("arrayProperties") or {}).get("statusSummary")
    statuses = [s for s in JOB_STATUSES if summary.get(s)] if summary else list(JOB_STATUSES)
    rows: dict[int, tuple[str, str, str | None]] = {}
    for status in statuses:
        # Without jobStatus ListJobs lists only RUNNING jobs: ask per status.
        for child in list_jobs(
            ctx, batch, f"ListJobs of array {parent['jobId']}", arrayJobId=parent["jobId"], jobStatus=status
        ):
            position = (child.get("arrayProperties") or {}).get("index")
            if position is None:
                position = int(child["jobId"].rsplit(":", 1)[1])  # child ids are <parent id>:<index>
            rows[int(position)] = (child["jobId"], child.get("status") or status, child.get("statusReason"))
    return pl.DataFrame(
        [(position, *values) for position, values in rows.items()],
        schema={"position": pl.Int32, "remote_id": pl.String, "state": pl.String, "reason": pl.String},
        orient="row",
    )


def refresh(ctx: Any) -> None:
    batch = ctx.clients.get("batch")
    submitted = {
        s.shard: s.remote_id
        for s in ctx.ledger.submissions("done")
        if s.kind == "SubmitJob" and s.remote_id is not None
    }
    if not submitted:
        return
    jobs = _describe(ctx, batch, list(submitted.values()))
    samples = ctx.samples()
    for shard_index, job_id in submitted.items():
        job = jobs.get(job_id)
        if job is None:
            continue  # gone from Batch's history: keep what the ledger knows
        rows = samples.filter(pl.col("shard") == shard_index).select("id", "position")
        if ctx.manifest["shards"][shard_index]["entries"] == 1:
            children = pl.DataFrame(
                {
                    "position": [0],
                    "remote_id": [job_id],
                    "state": [job.get("status")],
                    "reason": [job.get("statusReason")],
                },
                schema={"position": pl.Int32, "remote_id": pl.String, "state": pl.String, "reason": pl.String},
            )
        else:
            children = _children(ctx, batch, job)
        # A child not listed yet (its parent has not spawned it) shows the parent's state.
        table = rows.join(children, on="position", how="left").with_columns(
            pl.col("state").fill_null(pl.lit(job.get("status"), pl.String)),
            pl.when(pl.col("state").is_null())
            .then(pl.lit(job.get("statusReason"), pl.String))
            .otherwise(pl.col("reason"))
            .alias("reason"),
        )
        ctx.ledger.upsert_samples(
            (sample, shard_index, position, remote_id, "SUBMITTED", state, reason)
            for sample, position, remote_id, state, reason in table.select(
                "id", "position", "remote_id", "state", "reason"
            ).iter_rows()
        )


def cancel(ctx: Any) -> int:
    """TerminateJob for every submitted job not finished yet; Batch ends an array's children with it."""
    batch = ctx.clients.get("batch")
    job_ids = [s.remote_id for s in ctx.ledger.submissions("done") if s.kind == "SubmitJob" and s.remote_id]
    jobs = _describe(ctx, batch, job_ids)
    cancelled = 0
    for job_id in job_ids:
        job = jobs.get(job_id)
        if job is None or job.get("status") in FINAL:
            continue  # finished, or gone from Batch's history
        ctx.call(f"TerminateJob {job_id}", batch.terminate_job, jobId=job_id, reason=CANCEL_REASON)
        cancelled += 1
    return cancelled


# ---------------------------------------------------------------- sandbox

SANDBOX_ROLE = "planner-sandbox-batch"
SANDBOX_COMPUTE = "planner-sandbox"


def prepare_sandbox(ctx: Any) -> None:
    """Create in the sandbox's moto what the plan names: a compute environment, the
    job queue and the job definition up to the revision the plan asks for."""
    from botocore.exceptions import ClientError

    batch, iam = ctx.clients.get("batch"), ctx.clients.get("iam")
    defaults = ctx.manifest["defaults"]
    try:
        role = iam.get_role(RoleName=SANDBOX_ROLE)["Role"]["Arn"]
    except ClientError:
        try:
            role = iam.create_role(
                RoleName=SANDBOX_ROLE, AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}'
            )["Role"]["Arn"]
        except ClientError as exc:
            # The answer to an earlier CreateRole was lost (botocore sent it again), or another
            # submit made the role meanwhile: it exists, which is all that is needed.
            if exc.response.get("Error", {}).get("Code") != "EntityAlreadyExists":
                raise
            role = iam.get_role(RoleName=SANDBOX_ROLE)["Role"]["Arn"]
    environments = batch.describe_compute_environments(computeEnvironments=[SANDBOX_COMPUTE]).get(
        "computeEnvironments", []
    )
    if environments:
        compute = environments[0]["computeEnvironmentArn"]
    else:
        compute = batch.create_compute_environment(
            computeEnvironmentName=SANDBOX_COMPUTE, type="UNMANAGED", state="ENABLED", serviceRole=role
        )["computeEnvironmentArn"]
    queue = _name_of(str(defaults["jobQueue"]))
    if not batch.describe_job_queues(jobQueues=[queue]).get("jobQueues"):
        batch.create_job_queue(
            jobQueueName=queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": compute}],
        )
    name, _, revision = _name_of(str(defaults["jobDefinition"])).partition(":")
    wanted = int(revision) if revision.isdigit() else 1
    have = batch.describe_job_definitions(jobDefinitionName=name).get("jobDefinitions", [])
    for _ in range(max((d["revision"] for d in have), default=0), wanted):
        batch.register_job_definition(
            jobDefinitionName=name,
            type="container",
            containerProperties={
                "image": "public.ecr.aws/docker/library/python:3.12-slim",
                "command": ["planner", "child-settings"],
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            },
        )
