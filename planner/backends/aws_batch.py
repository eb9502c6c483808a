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
  ``child_settings.py``), through the same conditional write.
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
* SubmitJob has no idempotency token and botocore would resend it after a 5xx, so
  before every first SubmitJob (a lost ledger) and after any answer that was lost,
  ``ListJobs(jobQueue, filters=[JOB_NAME = name])`` looks for a job already created
  under the deterministic name, which is then recorded instead of a second one.

Status: DescribeJobs (at most 100 ids a call) for the jobs submitted; an array whose
status and ``statusSummary`` are what the last refresh saw is not asked about
again; the others' children come from ``ListJobs(arrayJobId, jobStatus)`` for each
status the summary counts, and map back to samples by array index (child ``i`` is
position ``i`` of the shard), with each child's ``statusReason``.  A child not listed (not yet spawned) shows its
parent's state.  Batch has no CANCELLED state: a cancelled or terminated job is
FAILED with a ``statusReason``, so ``retry`` (whose default states are FAILED and
CANCELLED) plans it with the failures.  ``cancel`` terminates the array parents
(and plain jobs) not yet finished; Batch terminates their children.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import polars as pl

from planner.backends.base import ALREADY_FINAL, CANCELLED, NOT_CANCELLED, Backend, CancelOutcome, CancelReport
from planner.core.ledger import SampleState
from planner.core.line_index import (
    EXPECTED_OWNER_ENV,
    FIRST_INDEX_ENV,
    INDEX_ETAG_ENV,
    INDEX_URI_ENV,
    MANIFEST_ENV,
    MANIFEST_ETAG_ENV,
)
from planner.core.model import FieldRule, check_scalar, check_shape, operation_input
from planner.core.plandir import Manifest
from planner.core.shard import ShardInfo
from planner.core.spec import BackendSpec
from planner.engine.engine import Call, Created, Phase, model_check, no_blind_retry
from planner.errors import InputError, Problem, SubmissionError

MAX_ARRAY_SIZE = 10_000
MAX_DEPENDS_ON = 20
# dependsOnType adds to every job: SEQUENTIAL its own {"type": "SEQUENTIAL"} and the previous job;
# N_TO_N the previous job.
ADDED_DEPENDENCIES = {"SEQUENTIAL": 2, "N_TO_N": 1}
# Each child's manifest location travels in containerOverrides.environment, which these kinds of job do not read.
UNSUPPORTED_OVERRIDES = ("ecsPropertiesOverride", "eksPropertiesOverride", "nodeOverrides")
JOB_NAME = FieldRule("jobName", "string", min=1, max=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_INPUT = operation_input("batch", "SubmitJob")
# AWS Batch User Guide, "AWS Batch service quotas": "Maximum job payload size (for SubmitJob API operations)
# 30 KiB" (SubmitJob answers ClientException "Job size must be less than 30 KiB, got N KiB").
MAX_JOB_PAYLOAD_BYTES = 30 * 1024
# ECS API Reference, RunTask ``overrides``: "A total of 8192 characters are allowed for overrides. This limit
# includes the JSON formatting characters of the override structure."  A Batch job on ECS past it is accepted by
# SubmitJob, then FAILED with statusReason "Container Overrides length must be at most 8192".  What the planner
# sends is only part of what counts (Batch adds its AWS_BATCH_* variables and the job definition's command), so
# this refuses only requests that must fail.
MAX_CONTAINER_OVERRIDES_CHARS = 8192
# Room for what the planner adds at submit to the defaults' request: the PLANNER_* variables (two S3 URIs, counted
# at STAGED_URI_ALLOWANCE characters each, two ETags, the first index, the bucket owner), jobName, arrayProperties
# and the dependencies dependsOnType adds.  submit checks the exact request again (check_request_size).
STAGED_URI_ALLOWANCE = 300


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
                    "each child learns where its settings are from containerOverrides.environment; "
                    "jobs needing this override are not supported yet",
                )
            )
    found += _size_problems(_planned_request(run, submission))
    if order is not None and order not in ("N_TO_N", "SEQUENTIAL"):
        found.append(
            Problem(None, None, "submission.dependsOnType", str(order), "enum", "must be N_TO_N or SEQUENTIAL")
        )
    return found


def _json_length(value: Any) -> int:
    return len(orjson.dumps(value))


def _size_problems(request: dict[str, Any]) -> list[Problem]:
    """One SubmitJob request against the documented sizes (MAX_JOB_PAYLOAD_BYTES, MAX_CONTAINER_OVERRIDES_CHARS)."""
    found = []
    payload = _json_length(request)
    if payload > MAX_JOB_PAYLOAD_BYTES:
        found.append(
            Problem(
                None,
                None,
                "SubmitJob request",
                f"{payload} bytes",
                "job-size",
                f"an AWS Batch job payload is at most 30 KiB ({MAX_JOB_PAYLOAD_BYTES} bytes; AWS Batch service "
                "quotas), counting what the planner adds: move large values into the job definition or files on S3",
            )
        )
    overrides = request.get("containerOverrides")
    if overrides:
        length = len(orjson.dumps(overrides).decode())
        if length > MAX_CONTAINER_OVERRIDES_CHARS:
            found.append(
                Problem(
                    None,
                    None,
                    "containerOverrides",
                    f"{length} characters",
                    "overrides-size",
                    f"container overrides are at most {MAX_CONTAINER_OVERRIDES_CHARS} characters of JSON (ECS RunTask "
                    'overrides; Batch fails such a job with "Container Overrides length must be at most 8192"), '
                    "counting the planner's own PLANNER_* variables: move environment values into the job definition",
                )
            )
    return found


def _planned_request(run: dict[str, Any], submission: dict[str, Any]) -> dict[str, Any]:
    """The defaults' SubmitJob request as submit will build it, with the planner's additions at their largest."""
    uri = "s3://" + "u" * (STAGED_URI_ALLOWANCE - len("s3://"))
    etag = '"' + "0" * 32 + '-10000"'
    environment = _environment(uri, etag, uri, etag) | {EXPECTED_OWNER_ENV: "0" * 12}
    request = {k: v for k, v in run.items() if k not in ("id", "jobName", "dependsOn", "arrayProperties")}
    request["jobName"] = "j" * JOB_NAME.max  # type: ignore[operator]
    request["arrayProperties"] = {"size": MAX_ARRAY_SIZE}
    overrides = dict(request.get("containerOverrides") or {})
    overrides["environment"] = list(overrides.get("environment") or []) + [
        {"name": name, "value": value} for name, value in environment.items()
    ]
    request["containerOverrides"] = overrides
    order = submission.get("dependsOnType")
    added = ADDED_DEPENDENCIES.get(order, 0) if isinstance(order, str) else 0
    request["dependsOn"] = list(run.get("dependsOn") or []) + [{"jobId": "0" * 36, "type": "N_TO_N"}] * added
    return request


_MODEL_CHECK = model_check("batch", "SubmitJob")


def _dry_run_check(request: dict[str, Any]) -> list[str]:
    """What --dry-run reports of a request: the model's rules and the documented sizes."""
    return _MODEL_CHECK(request) + [p.describe() for p in _size_problems(request)]


def check_request_size(request: dict[str, Any], what: str) -> None:
    """Refuse, before sending, a SubmitJob request past a documented size limit."""
    problems = _size_problems(request)
    if problems:
        raise InputError(f"{what}: " + "; ".join(p.describe() for p in problems) + "; nothing was submitted for it")


SPEC = BackendSpec(
    # Batch has no CANCELLED: a terminated job is FAILED with a reason.
    final_states=frozenset({"SUCCEEDED", "FAILED"}),
    retry_states=("FAILED",),
    # The model's JobStatus enum, less the final states.
    moving_states=frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"}),
    name="batch",
    title="AWS Batch SubmitJob (array jobs)",
    id_field="id",
    id_rule=None,
    # Children of one array job share the job's request; only parameters differ per child.
    fields={},
    request_only=frozenset(_INPUT.members) - {"parameters"},
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


def job_name(manifest: Manifest, index: int) -> str:
    """``<jobName default or "planner">-<plan_id>-<shard:05d>``: the same on every resume."""
    prefix = str(manifest.defaults.get("jobName") or "planner")
    return f"{prefix}-{manifest.plan_id}-{index:05d}"


def _depends_on(manifest: Manifest, shard: ShardInfo, previous: str | None) -> list[dict[str, Any]]:
    own = [dict(d) for d in (manifest.defaults.get("dependsOn") or [])]
    order = manifest.submission.get("dependsOnType")
    is_array = shard.entries >= 2
    if order == "SEQUENTIAL":
        if is_array:
            own.append({"type": "SEQUENTIAL"})
        if previous is not None:
            own.append({"jobId": previous})
    elif order == "N_TO_N" and previous is not None:
        before = manifest.shards[shard.index - 1]
        same_size = is_array and before.entries == shard.entries
        own.append({"jobId": previous, "type": "N_TO_N"} if same_size else {"jobId": previous})
    return own


def _check_depends_on(manifest: Manifest) -> None:
    extra = ADDED_DEPENDENCIES.get(str(manifest.submission.get("dependsOnType") or ""), 0)
    count = len(manifest.defaults.get("dependsOn") or []) + extra
    if count > MAX_DEPENDS_ON:
        raise InputError(
            f"dependsOn: the defaults' {count - extra} dependencies plus the {extra} the planner adds "
            f"for dependsOnType exceed {MAX_DEPENDS_ON}"
        )


def build_request(
    manifest: Manifest,
    shard: ShardInfo,
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
    base = lone_run if lone_run is not None else manifest.defaults
    excluded = ("id", "jobName", "dependsOn", "arrayProperties")
    request: dict[str, Any] = {k: v for k, v in base.items() if k not in excluded}
    if lone_run is not None and request.get("parameters"):
        # SubmitJob parameters are strings; the run's typed values (a number, a list) go as JSON text.
        request["parameters"] = {
            k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in request["parameters"].items()
        }
    request["jobName"] = job_name(manifest, shard.index)
    if shard.entries >= 2:
        request["arrayProperties"] = {"size": shard.entries}
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


class AwsBatch(Backend):
    spec = SPEC

    def staged_shards(self) -> list[int]:
        _check_depends_on(self.ctx.manifest)  # before anything is staged: refuse early
        return [s.index for s in self.ctx.manifest.shards]  # every child reads its own line of its shard

    def phases(self) -> Iterator[Phase]:
        manifest = self.ctx.manifest
        _check_depends_on(manifest)
        if not self.ctx.dry_run:
            no_blind_retry(self.ctx.clients.get("batch"), "SubmitJob")
        chained = manifest.submission.get("dependsOnType") in ("SEQUENTIAL", "N_TO_N")
        calls = (self._call(shard, chained) for shard in manifest.shards)
        # Each job of a chain names the one before it: one at a time, in order.
        yield Phase("SubmitJob", "array job", calls, total=len(manifest.shards), ordered=chained, find_first=True)

    def _call(self, shard: ShardInfo, chained: bool) -> Call:
        manifest = self.ctx.manifest
        name = job_name(manifest, shard.index)
        queue = str(manifest.defaults["jobQueue"])

        def find(fresh: bool) -> Created | None:
            jobs = self.find_jobs(queue, name)  # always asked afresh: one ListJobs
            if not jobs:
                return None
            job = jobs[0]  # the first made, should there be several
            return Created(
                job["jobId"], {"jobId": job["jobId"], "jobName": name, "jobArn": job.get("jobArn"), "found": len(jobs)}
            )

        def build() -> dict[str, Any]:
            previous = self._previous(shard) if chained and shard.index > 0 else None
            lone = self.ctx.plan.entries(shard)[0] if shard.entries == 1 else None
            index = self.line_index(shard)
            if self.ctx.dry_run:
                environment = _environment(*self.ctx.predicted_staging(shard, index))
                environment |= self.ctx.child_environment()  # the bucket's expected owner (or CALLER-ACCOUNT)
                return build_request(manifest, shard, environment, previous=previous, lone_run=lone)
            staged = self.ctx.ledger.staged(shard.index)
            if staged is None:
                raise SubmissionError(f"shard {shard.index} is not staged; staging must come first")
            staged_index = self.ctx.stager.stage_index(shard, index)
            # Children read both with If-Match: refuse now rather than fail every child later.
            staged = self.ctx.stager.verify(staged)
            staged_index = self.ctx.stager.verify(staged_index, index)
            environment = _environment(staged.uri, staged.etag, staged_index.uri, staged_index.etag)
            environment |= self.ctx.child_environment()  # children read with ExpectedBucketOwner too
            request = build_request(manifest, shard, environment, previous=previous, lone_run=lone)
            check_request_size(request, f"SubmitJob for shard {shard.index}")
            return request

        def send(request: dict[str, Any]) -> Created:
            response = dict(self.ctx.clients.get("batch").submit_job(**request))
            response.pop("ResponseMetadata", None)
            return Created(response["jobId"], response)

        return Call(
            key=f"SubmitJob:{shard.index:05d}",
            operation="SubmitJob",
            label=f"shard {shard.index}",
            covers=lambda: self.places(shard),
            build=build,
            send=send,
            find=find,
            token=name,
            shard=shard.index,
            one_to_one=shard.entries == 1,
            where={"shard": shard.index},
            check=_dry_run_check,
        )

    def _previous(self, shard: ShardInfo) -> str:
        before = self.ctx.ledger.submission(f"SubmitJob:{shard.index - 1:05d}")
        if before is not None and before.state == "done" and before.remote_id:
            return before.remote_id
        if self.ctx.dry_run:
            return f"(the job id of {job_name(self.ctx.manifest, shard.index - 1)})"
        raise SubmissionError(f"shard {shard.index} depends on shard {shard.index - 1}, which has no job yet")

    def list_jobs(self, what: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every job summary ListJobs gives for ``params``, page by page."""
        batch = self.ctx.clients.get("batch")
        token = None
        while True:
            page = self.ctx.call(what, batch.list_jobs, **params, **({"nextToken": token} if token else {}))
            yield from page.get("jobSummaryList", [])
            token = page.get("nextToken")
            if not token:
                return

    def find_jobs(self, queue: str, name: str) -> list[dict[str, Any]]:
        """Jobs (not array children) named exactly ``name`` in ``queue``, oldest first."""
        listed = self.list_jobs(
            f"ListJobs {name} in {queue}", jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        found = [
            job
            for job in listed
            # The filter matches case-insensitively and with * wildcards; moto lists array children too.
            if job.get("jobName") == name
            and ":" not in job["jobId"]
            and "index" not in (job.get("arrayProperties") or {})
        ]
        return sorted(found, key=lambda job: (job.get("createdAt") or 0, job["jobId"]))

    # ------------------------------------------------------------ status and cancel

    def _describe(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        batch = self.ctx.clients.get("batch")
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), DESCRIBE_MAX):
            chunk = job_ids[start : start + DESCRIBE_MAX]
            response = self.ctx.call(f"DescribeJobs ({len(chunk)} jobs)", batch.describe_jobs, jobs=chunk)
            for job in response.get("jobs", []):
                found[job["jobId"]] = job
        return found

    def _children(self, parent: dict[str, Any]) -> pl.DataFrame:
        """(position, remote_id, state, reason) of every listed child of an array job."""
        summary = (parent.get("arrayProperties") or {}).get("statusSummary")
        statuses = [s for s in JOB_STATUSES if summary.get(s)] if summary else list(JOB_STATUSES)
        rows: dict[int, tuple[str, str, str | None]] = {}
        for status in statuses:
            # Without jobStatus ListJobs lists only RUNNING jobs: ask per status.
            what = f"ListJobs of array {parent['jobId']}"
            for child in self.list_jobs(what, arrayJobId=parent["jobId"], jobStatus=status):
                position = (child.get("arrayProperties") or {}).get("index")
                if position is None:
                    position = int(child["jobId"].rsplit(":", 1)[1])  # child ids are <parent id>:<index>
                rows[int(position)] = (child["jobId"], child.get("status") or status, child.get("statusReason"))
        return pl.DataFrame(
            [(position, *values) for position, values in rows.items()],
            schema=_CHILDREN,
            orient="row",
        )

    def refresh(self) -> None:
        submitted = [
            s for s in self.ctx.ledger.submissions("done", kind="SubmitJob") if s.remote_id and s.shard is not None
        ]
        if not submitted:
            return
        jobs = self._describe([str(s.remote_id) for s in submitted])
        for submission in submitted:
            job = jobs.get(str(submission.remote_id))
            if job is None:
                continue  # gone from Batch's history: keep what the ledger knows
            summary = {
                "status": job.get("status"),
                "statusSummary": (job.get("arrayProperties") or {}).get("statusSummary"),
            }
            if summary == submission.remote_summary:
                continue  # nothing moved since the last look
            self._refresh_job(self.ctx.manifest.shard(int(submission.shard or 0)), job)
            self.ctx.ledger.remote_seen(submission.key, job.get("status"), summary)

    def _refresh_job(self, shard: ShardInfo, job: dict[str, Any]) -> None:
        rows = self.ctx.plan.samples_of(shard.index).select("id", "position")
        if shard.entries == 1:
            reason = job.get("statusReason")
            children = pl.DataFrame(
                {"position": [0], "remote_id": [job["jobId"]], "state": [job.get("status")], "reason": [reason]},
                schema=_CHILDREN,
            )
        else:
            children = self._children(job)
        # A child not listed yet (its parent has not spawned it) shows the parent's state.
        parent_state = pl.lit(job.get("status"), pl.String)
        table = rows.join(children, on="position", how="left").with_columns(
            pl.col("state").fill_null(parent_state),
            pl.when(pl.col("state").is_null())
            .then(pl.lit(job.get("statusReason"), pl.String))
            .otherwise(pl.col("reason"))
            .alias("reason"),
        )
        log = ((job.get("container") or {}).get("logStreamName")) if shard.entries == 1 else None
        self.ctx.ledger.upsert_samples(
            SampleState(sample, shard.index, position, remote_id, None, "SUBMITTED", state, reason, log)
            for sample, position, remote_id, state, reason in table.select(
                "id", "position", "remote_id", "state", "reason"
            ).iter_rows()
        )

    def cancel(self) -> CancelReport:
        """TerminateJob for every submitted job not finished yet; Batch ends an array's children with it."""
        batch = self.ctx.clients.get("batch")
        report = self.report()
        submitted = [
            s for s in self.ctx.ledger.submissions("done", kind="SubmitJob") if s.remote_id and s.shard is not None
        ]
        jobs = self._describe([str(s.remote_id) for s in submitted])
        for submission in submitted:
            job_id = str(submission.remote_id)
            target = f"job {job_id} (shard {submission.shard})"
            samples = self.ctx.manifest.shard(int(submission.shard or 0)).entries
            job = jobs.get(job_id)
            if job is None or job.get("status") in FINAL:
                detail = "no longer in Batch's history" if job is None else str(job.get("status"))
                report.outcomes.append(CancelOutcome(target, ALREADY_FINAL, detail, samples))
                continue
            try:
                self.ctx.call(f"TerminateJob {job_id}", batch.terminate_job, jobId=job_id, reason=CANCEL_REASON)
            except SubmissionError as exc:
                report.outcomes.append(CancelOutcome(target, NOT_CANCELLED, str(exc), samples))
                continue
            report.outcomes.append(CancelOutcome(target, CANCELLED, None, samples))
        return report


_CHILDREN = {"position": pl.Int32, "remote_id": pl.String, "state": pl.String, "reason": pl.String}

BACKEND = AwsBatch
