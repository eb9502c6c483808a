"""The HealthOmics emulator's state machine: what each operation does, and how runs and batches move.

``OmicsService`` holds the runs, batches and workflows, and answers each operation of the
emulator (``omics_emulator.OmicsEmulator``, which routes, validates and serialises the HTTP
side through ``omics_protocol``) with a plain dict, or a ``ServiceError``.  Every behaviour it
models is listed, with its source, in ``docs/sources.md``; the code names the entry
("sources.md: batch-cancel-async").

Implemented operations: StartRun, GetRun, ListRuns, CancelRun, DeleteRun, StartRunBatch,
GetBatch, ListBatch, ListRunsInBatch, CancelRunBatch, DeleteBatch, DeleteRunBatch,
CreateWorkflow, GetWorkflow, CreateWorkflowVersion, GetWorkflowVersion.  Other operations
of the model are routed and answered with HTTP 501.

Time.  Everything moves on the injected ``clock`` in steps of ``step_seconds``, computed
lazily on each request (no background work): a run is PENDING, STARTING, RUNNING for a step
each, then COMPLETED or FAILED (run-lifecycle).  With ``run_seconds``, a run is RUNNING for
between half and one and a half times that (fixed by a hash of the seed and the run id), so
the runs of one batch end one after another, as real runs do, and a failure threshold
(``--cancel-if-failed``) can fire while others still run (``planner sandbox start
--run-seconds``; a sandbox choice, not a documented length).  A batch is CREATING then PENDING for half a
step each, SUBMITTING for a step, then INPROGRESS until its runs end, PROCESSED (batch-status,
batch-creating); a cancel is STOPPING and a delete RUNS_DELETING for half a step, their work
done at its end, one at a time (batch-cancel-async, batch-delete-async, batch-one-operation).

Failures.  How a run ends is decided when it starts: ``fail_when(settings)``, when given,
alone decides (called with the run's merged settings as GetRun shows them, plus
``runSettingId`` for a batch run; it returns ``(failureReason, statusMessage)`` or None);
otherwise ``failure_rate`` fails a deterministic subset, a hash of ``seed`` and the request
below it, with a reason from ``FAILURE_REASONS`` (failure-reasons).  ``uncancellable(settings)``
makes cancels of the runs it is true for fail (cancel-run).  ``max_retained_runs`` is the
retained-run quota (retention, batch-quota-per-run).  ``known_workflows_only`` makes an
unknown workflow not found (workflow-check, batch-sync-validation).

The entries named in parentheses, and every other behaviour modelled here (request-id,
run-defaults, get-run-fields, run-id-reuse, delete-run, s3-settings-etag, s3-settings-content,
batch-merge, batch-run-checks, delete-batch, run-summary, list-runs, workflows), are in
``docs/sources.md`` with the page or model member each comes from, and what no source says.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from planner.sandbox.loopback import fraction
from planner.sandbox.omics_protocol import (
    ServiceError,
    _conflict,
    _not_found,
    _service_model,
    _validation,
    _validation_message,
    _Validator,
)

MAX_INLINE_SETTINGS = 100
MAX_S3_SETTINGS = 100_000
DEFAULT_PAGE_SIZE = 100
_UUID_NAMESPACE = uuid.UUID("5f0c6a53-8d0e-4c1e-9a56-0a2b1f0e7a11")

RUN_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "DELETED"})
# DeleteBatch "requires the batch to be in a terminal state: PROCESSED, FAILED, CANCELLED, RUNS_DELETE_FAILED, or
# RUNS_DELETED" (model doc; the API reference page omits RUNS_DELETE_FAILED: the model is followed).
BATCH_TERMINAL = frozenset({"PROCESSED", "FAILED", "CANCELLED", "RUNS_DELETED", "RUNS_DELETE_FAILED"})
# The statuses in which the clock moves a batch on (sources.md: batch-status, batch-cancel-async, batch-delete-async).
_BATCH_MOVING = frozenset({"CREATING", "PENDING", "SUBMITTING", "INPROGRESS", "STOPPING", "RUNS_DELETING"})
# "Only one cancel or delete operation per batch is allowed at a time" (model doc of CancelRunBatch, DeleteRunBatch).
_BATCH_OPERATING = frozenset({"STOPPING", "RUNS_DELETING"})  # sources.md: batch-one-operation
# The members of a per-run entry merged key by key with defaultRunSetting's: parameters and runTags are "Merged
# with defaultRunSetting" (model doc of InlineSetting); every other member, engineSettings included ("Overrides
# defaultRunSetting.engineSettings for this run"), replaces the default whole (sources.md: batch-merge).
_MERGED_PER_KEY = ("parameters", "runTags")

# ---------------------------------------------------------------------------
# state

# sources.md: failure-reasons.
# The reasons the failure_rate hash gives its failed runs: values of the "Run failure reasons" table of the AWS
# HealthOmics User Guide (workflows-run-errors.html), with our paraphrase of each description as statusMessage.
FAILURE_REASONS: tuple[tuple[str, str], ...] = (
    ("OUT_OF_MEMORY_ERROR", "A workflow task ran out of memory; increase its memory in the workflow definition"),
    ("FILE_SYSTEM_OUT_OF_SPACE", "The run storage ran out of space; increase the storage capacity and run again"),
    ("INPUT_URI_NOT_FOUND", "An input URI does not exist or the run role cannot read it"),
    ("RUN_TASK_FAILED", "The run failed because a task failed; see the task log stream"),
    ("INSTANCE_RESERVATION_FAILED", "Not enough instance capacity to complete the run; try the run again later"),
    ("SERVICE_ERROR", "A transient error occurred in the service; try the run again"),
)
# The model's SubmissionStatus values, each counted in GetBatch's submissionSummary.
_SUBMISSION_STATUSES = ("SUCCESS", "FAILED", "CANCEL_SUCCESS", "CANCEL_FAILED", "DELETE_SUCCESS", "DELETE_FAILED")
# DeleteRun: "You can only delete a run that has reached a COMPLETED, FAILED, or CANCELLED stage" (model doc).
_RUN_DELETABLE = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# CancelRunBatch: "Cancel is only allowed on batches in PENDING, SUBMITTING, or INPROGRESS state" (model doc).
_BATCH_CANCELLABLE = frozenset({"PENDING", "SUBMITTING", "INPROGRESS"})
# DeleteRunBatch: "Delete is only allowed on batches in PROCESSED or CANCELLED state" (model doc).
_BATCH_RUNS_DELETABLE = frozenset({"PROCESSED", "CANCELLED"})
_WORKFLOW_STATUSES = ("CREATING", "ACTIVE", "UPDATING", "DELETED", "FAILED", "INACTIVE")  # the model's WorkflowStatus
_DEFINITION_MEMBERS = ("definitionZip", "definitionUri", "definitionRepository")
# The workflow (and version) request members GetWorkflow and GetWorkflowVersion echo back.
_WORKFLOW_ECHOED = (
    "name",
    "description",
    "engine",
    "main",
    "parameterTemplate",
    "storageType",
    "storageCapacity",
    "accelerators",
    "tags",
    "readmePath",
    "workflowBucketOwnerId",
)
_LOG_GROUP = "/aws/omics/WorkflowLog"  # the log group the HealthOmics User Guide names for run logs


@dataclass(slots=True, eq=False)
class _Run:
    seq: int  # creation order: run ids are reused after deletion (sources.md: run-id-reuse), this never is
    id: str
    uuid: str
    arn: str
    settings: dict[str, Any]
    created_at: float
    failure: tuple[str, str] | None  # (failureReason, statusMessage) when it ends FAILED
    request_id: str | None = None
    batch: _Batch | None = None
    run_setting_id: str | None = None
    source_run_id: str | None = None
    cancelled_at: float | None = None
    deleted_at: float | None = None  # by DeleteRun, DeleteRunBatch or retention: gone from the API


def _run_number(run: _Run) -> int:
    return run.seq


@dataclass(slots=True, eq=False)
class _Submission:
    run_setting_id: str
    status: str  # the model's SubmissionStatus
    run: _Run | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(eq=False)
class _Batch:
    id: str
    uuid: str
    arn: str
    request_id: str
    name: str | None
    tags: dict[str, str] | None
    default: dict[str, Any]
    created_at: float
    entries: list[dict[str, Any]] | None  # None when the S3 file could not be used
    entry_errors: dict[int, str] = field(default_factory=dict)
    content_error: str | None = None
    s3: tuple[str, str, str] | None = None  # bucket, key, ETag at submission
    status: str = "CREATING"  # sources.md: batch-creating
    operation_at: float | None = None  # when the cancel (STOPPING) or delete (RUNS_DELETING) under way was asked
    submitted_at: float | None = None
    processed_at: float | None = None
    failed_at: float | None = None
    failure_reason: str | None = None
    submissions: list[_Submission] = field(default_factory=list)
    # GetBatch answers from counters, not by visiting the runs: every run of a batch starts at submitted_at, so the
    # runs neither cancelled nor deleted share one place on the timeline and differ only in how they end.
    operations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SUBMISSION_STATUSES, 0))
    started: int = 0
    live_completing: int = 0
    live_failing: int = 0
    cancelled: int = 0
    deleted: int = 0


@dataclass(eq=False)
class _WorkflowVersion:
    name: str
    arn: str
    uuid: str
    request: dict[str, Any]
    created_at: float
    request_id: str
    status_override: tuple[str, str | None] | None = None


@dataclass(eq=False)
class _Workflow:
    id: str
    arn: str
    uuid: str
    request: dict[str, Any]
    created_at: float
    request_id: str
    status_override: tuple[str, str | None] | None = None
    versions: dict[str, _WorkflowVersion] = field(default_factory=dict)


class _RunIndex:
    """Listed runs (none deleted) in creation order; a page resumes from a run's place in that order.

    The token is the creation number of the next run to list (not its id: ids are reused), so deletions between
    pages neither skip nor repeat a run.
    """

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[_Run] = []

    def append(self, run: _Run) -> None:
        self.runs.append(run)

    def discard(self, gone: list[_Run]) -> None:
        """Drop runs already marked deleted: a few by bisection, many in one pass."""
        if len(gone) <= 16:
            for run in gone:
                index = bisect_left(self.runs, _run_number(run), key=_run_number)
                if index < len(self.runs) and self.runs[index] is run:
                    del self.runs[index]
        else:
            self.runs = [run for run in self.runs if run.deleted_at is None]

    def page(
        self, token: str | None, size: int | None, keep: Callable[[_Run], bool] | None
    ) -> tuple[list[_Run], str | None]:
        runs = self.runs
        start = 0
        if token is not None:
            if not token.isdigit():
                raise _validation(
                    f"Value '{token}' at 'startingToken' failed to satisfy constraint: Invalid pagination token"
                )
            start = bisect_left(runs, int(token), key=_run_number)
        size = size or DEFAULT_PAGE_SIZE
        if keep is None:
            end = start + size
            return runs[start:end], (str(runs[end].seq) if end < len(runs) else None)
        page: list[_Run] = []
        index = start
        while index < len(runs) and len(page) < size:
            if keep(runs[index]):
                page.append(runs[index])
            index += 1
        while index < len(runs) and not keep(runs[index]):  # no token for an empty last page
            index += 1
        return page, (str(runs[index].seq) if index < len(runs) else None)


def _merge_settings(default: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    merged = dict(default)
    for key, value in entry.items():
        if key == "runSettingId" or value is None:
            continue
        if key in _MERGED_PER_KEY and isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _parse_s3_uri(uri: str) -> tuple[str, str]:
    found = re.fullmatch(r"s3://([^/]+)/(.+)", uri)
    if not found:
        raise _validation(
            f"Value '{uri}' at 'batchRunSettings.s3UriSettings' failed to satisfy constraint: "
            "Member must be an S3 URI of an object (s3://bucket/key)"
        )
    return found.group(1), found.group(2)


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


# ---------------------------------------------------------------------------
# the service


class OmicsService:
    """The HealthOmics workflow, run and run-batch state machine: one handler per operation, params in,
    result out (``ServiceError`` for an error answer), time from the injected ``clock``."""

    def __init__(
        self,
        *,
        s3_endpoint_url: str | None = None,
        failure_rate: float = 0.0,
        seed: int = 0,
        fail_when: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None,
        uncancellable: Callable[[dict[str, Any]], bool] | None = None,
        max_retained_runs: int | None = None,
        known_workflows_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
        step_seconds: float = 1.0,
        region: str = "us-east-1",
        account: str = "123456789012",
        run_seconds: float | None = None,
    ):
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be within [0, 1]")
        if run_seconds is not None and run_seconds <= 0:
            raise ValueError("run_seconds must be positive (None: one step)")
        if max_retained_runs is not None and max_retained_runs < 1:
            raise ValueError("max_retained_runs must be at least 1 (None: no limit)")
        self.s3_endpoint_url = s3_endpoint_url
        self.failure_rate = failure_rate
        self.seed = seed
        self.fail_when = fail_when
        self.uncancellable = uncancellable
        self.max_retained_runs = max_retained_runs
        self.known_workflows_only = known_workflows_only
        self.clock = clock
        self.step_seconds = float(step_seconds)
        self.run_seconds = run_seconds
        self.region = region
        self.account = account
        self._model = _service_model()
        self._lock = threading.RLock()
        self._s3_lock = threading.Lock()
        self._s3_client: Any = None
        self._clock0 = clock()
        self._wall0 = time.time()
        self._runs: dict[str, _Run] = {}  # the retained runs: neither deleted nor removed
        self._listed = _RunIndex()
        self._listed_by_batch: dict[str, _RunIndex] = {}
        self._removable: deque[_Run] = deque()  # runs started with retentionMode REMOVE, oldest first
        self._batches: dict[str, _Batch] = {}  # not deleted by DeleteBatch
        self._unfinished: dict[str, _Batch] = {}  # PENDING, SUBMITTING or INPROGRESS: the clock moves them
        self._run_requests: dict[str, _Run] = {}
        self._batch_requests: dict[str, _Batch] = {}
        self._workflows: dict[str, _Workflow] = {}
        self._workflow_requests: dict[str, _Workflow] = {}
        self._version_requests: dict[tuple[str, str], _WorkflowVersion] = {}
        self._next_run = 1_000_000
        self._run_seq = 0
        self._free_run_ids: deque[str] = deque()  # ids of deleted runs, first freed first reused
        self._next_batch = 9_000_000
        self._next_workflow = 5_000_000
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
            "StartRun": self._start_run,
            "GetRun": self._get_run,
            "ListRuns": self._list_runs,
            "CancelRun": self._cancel_run,
            "DeleteRun": self._delete_run,
            "StartRunBatch": self._start_run_batch,
            "GetBatch": self._get_batch,
            "ListBatch": self._list_batch,
            "ListRunsInBatch": self._list_runs_in_batch,
            "CancelRunBatch": self._cancel_run_batch,
            "DeleteBatch": self._delete_batch,
            "DeleteRunBatch": self._delete_run_batch,
            "CreateWorkflow": self._create_workflow,
            "GetWorkflow": self._get_workflow,
            "CreateWorkflowVersion": self._create_workflow_version,
            "GetWorkflowVersion": self._get_workflow_version,
        }

    # -- what the emulator's test hooks read and set ----------------------------

    def run_count(self) -> int:
        """The runs the API still answers for (deleted and removed ones are not counted)."""
        with self._lock:
            self._advance(self.clock())
            return len(self._runs)

    def batch_count(self) -> int:
        with self._lock:
            self._advance(self.clock())
            return len(self._batches)

    def recorded_etag(self, batch_id: str) -> str | None:
        """The ETag of the s3UriSettings object recorded when the batch was created."""
        with self._lock:
            batch = self._batches.get(batch_id)
            return batch.s3[2] if batch is not None and batch.s3 is not None else None

    def set_workflow_status(
        self, workflow_id: str, status: str, *, version_name: str | None = None, message: str | None = None
    ) -> None:
        """Pin a workflow's (or one of its versions') status, e.g. FAILED, INACTIVE or DELETED, from now on."""
        if status not in _WORKFLOW_STATUSES:
            raise ValueError(f"status must be one of {', '.join(_WORKFLOW_STATUSES)}")
        with self._lock:
            workflow = self._workflows.get(workflow_id)
            if workflow is None:
                raise ValueError(f"no workflow {workflow_id}")
            target: _Workflow | _WorkflowVersion = workflow
            if version_name is not None:
                if version_name not in workflow.versions:
                    raise ValueError(f"workflow {workflow_id} has no version {version_name}")
                target = workflow.versions[version_name]
            target.status_override = (status, message)

    def put_workflow(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        parameter_template: dict[str, Any] | None = None,
        versions: dict[str, dict[str, Any] | None] | None = None,
    ) -> None:
        """Make (or replace) an ACTIVE PRIVATE workflow ``workflow_id`` with this template, and its versions
        (name -> parameter template), as CreateWorkflow and CreateWorkflowVersion would once ACTIVE."""
        if not re.fullmatch(r"[0-9]{1,18}", workflow_id):
            raise ValueError("a workflow id is 1 to 18 digits (model: WorkflowId)")
        with self._lock:
            born = self.clock() - self.step_seconds  # past CREATING already
            request: dict[str, Any] = {"name": name or f"workflow-{workflow_id}", "engine": "NEXTFLOW"}
            if parameter_template is not None:
                request["parameterTemplate"] = parameter_template
            workflow = _Workflow(
                id=workflow_id,
                arn=f"arn:aws:omics:{self.region}:{self.account}:workflow/{workflow_id}",
                uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow_id}")),
                request=request,
                created_at=born,
                request_id=f"put-workflow-{workflow_id}",
            )
            for version, template in (versions or {}).items():
                workflow.versions[version] = _WorkflowVersion(
                    name=version,
                    arn=f"{workflow.arn}/version/{version}",
                    uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow_id}/version/{version}")),
                    request={"parameterTemplate": template} if template is not None else {},
                    created_at=born,
                    request_id=f"put-workflow-{workflow_id}-{version}",
                )
            self._workflows[workflow_id] = workflow

    # -- time ----------------------------------------------------------------

    def _wall(self, moment: float | None) -> float | None:
        return None if moment is None else self._wall0 + (moment - self._clock0)

    def _phase(self, since: float, now: float, running: float | None = None) -> str:
        """Where a run started at ``since`` is: PENDING, STARTING one step each, RUNNING one step
        (or ``running`` seconds), then ENDED (sources.md: run-lifecycle)."""
        steps = (now - since) / self.step_seconds
        if steps < 1:
            return "PENDING"
        if steps < 2:
            return "STARTING"
        if now - since < 2 * self.step_seconds + (self.step_seconds if running is None else running):
            return "RUNNING"
        return "ENDED"

    def _running(self, run: _Run) -> float:
        """How long ``run`` is RUNNING: one step, or with ``run_seconds`` a length of its own around it."""
        if self.run_seconds is None:
            return self.step_seconds
        return self.run_seconds * (0.5 + fraction(f"{self.seed}\x1frunning\x1f{run.id}"))

    def _run_status(self, run: _Run, now: float) -> str:
        if run.deleted_at is not None:
            return "DELETED"
        if run.cancelled_at is not None:
            return "CANCELLED"
        phase = self._phase(run.created_at, now, self._running(run))
        if phase != "ENDED":
            return phase
        return "FAILED" if run.failure is not None else "COMPLETED"

    def _run_times(self, run: _Run, now: float) -> tuple[float | None, float | None]:
        step = self.step_seconds
        started = run.created_at + 2 * step
        stopped = started + self._running(run)
        end = run.cancelled_at
        start_time = started if started <= now and (end is None or started <= end) else None
        stop_time = end if end is not None else (stopped if stopped <= now else None)
        return start_time, stop_time

    def _advance(self, now: float) -> None:
        """Move every unfinished batch along its timeline up to ``now``.

        CREATING for half a step, PENDING for the other half, SUBMITTING for a step, then the runs start
        (sources.md: batch-status, batch-creating); a cancel is STOPPING and a delete RUNS_DELETING for half a
        step, their work done at its end (sources.md: batch-cancel-async, batch-delete-async).
        """
        step = self.step_seconds
        for batch in list(self._unfinished.values()):
            if batch.status == "CREATING" and now >= batch.created_at + step / 2:
                batch.status = "PENDING"
            if batch.status == "PENDING" and now >= batch.created_at + step:
                batch.status = "SUBMITTING"
            if batch.status == "SUBMITTING" and now >= batch.created_at + 2 * step:
                self._submit(batch, batch.created_at + 2 * step)
            if batch.status == "INPROGRESS" and batch.processed_at is not None and now >= batch.processed_at:
                batch.status = "PROCESSED"
            ended = batch.operation_at + step / 2 if batch.operation_at is not None else None
            if batch.status == "STOPPING" and ended is not None and now >= ended:
                self._stop(batch, ended)
            if batch.status == "RUNS_DELETING" and ended is not None and now >= ended:
                self._delete_runs(batch, ended)
            if batch.status not in _BATCH_MOVING:
                del self._unfinished[batch.id]

    def _fail_batch(self, batch: _Batch, moment: float, reason: str) -> None:
        batch.status = "FAILED"
        batch.failed_at = moment
        batch.failure_reason = reason

    def _submit(self, batch: _Batch, moment: float) -> None:
        # sources.md: s3-settings-etag (checked again), s3-settings-content, batch-merge, batch-run-checks.
        if batch.s3 is not None:
            bucket, key, etag = batch.s3
            try:
                head = self._s3().head_object(Bucket=bucket, Key=key)
                current = head.get("ETag")
            except Exception as exc:  # gone, or S3 unreachable
                self._fail_batch(
                    batch,
                    moment,
                    f"The s3UriSettings object s3://{bucket}/{key} could not be read at submission "
                    f"({_client_error_code(exc)}); its ETag was {etag} when the batch was created",
                )
                return
            if current != etag:
                self._fail_batch(
                    batch,
                    moment,
                    f"The s3UriSettings object s3://{bucket}/{key} was modified after the batch was "
                    f"created: ETag {etag} recorded at creation, ETag {current} at submission",
                )
                return
        if batch.content_error is not None or batch.entries is None:
            self._fail_batch(batch, moment, batch.content_error or "The run settings could not be read")
            return
        removed: list[_Run] = []
        for index, entry in enumerate(batch.entries):
            setting_id = entry["runSettingId"]
            code, problem = "ValidationException", batch.entry_errors.get(index)
            merged = _merge_settings(batch.default, entry)
            if problem is None and not merged.get("outputUri"):
                problem = (
                    "Value null at 'outputUri' failed to satisfy constraint: "
                    f"Member must not be null (runSettingId {setting_id})"
                )
            tags = merged.pop("runTags", None)
            merged.pop("outputBucketOwnerId", None)
            if tags:
                merged["tags"] = tags
            _apply_run_defaults(merged)
            if problem is None:
                refusal = self._workflow_refusal(merged, moment)
                if refusal is not None:
                    code, problem = refusal
            if problem is None:
                # A run that finds no room fails alone, as its submissionFailureReason, and the batch goes on
                # (sources.md: batch-quota-per-run).
                quota = self._make_room(merged, moment, removed)
                if quota is not None:
                    code, problem = "ServiceQuotaExceededException", quota
            if problem is not None:
                self._add_submission(batch, _Submission(setting_id, "FAILED", reason=code, message=problem))
                continue
            failure = self._decide_failure(
                merged, f"{self.seed}\x1f{batch.request_id}\x1f{setting_id}", run_setting_id=setting_id
            )
            run = self._new_run(merged, moment, failure, batch=batch, run_setting_id=setting_id)
            self._add_submission(batch, _Submission(setting_id, "SUCCESS", run=run))
        self._unlist(removed)
        batch.submitted_at = moment
        batch.status = "INPROGRESS"
        runs = [s.run for s in batch.submissions if s.run is not None]
        longest = max((self._running(run) for run in runs), default=self.step_seconds)
        batch.processed_at = moment + 2 * self.step_seconds + longest if batch.started else moment

    def _add_submission(self, batch: _Batch, submission: _Submission) -> None:
        batch.submissions.append(submission)
        batch.operations[submission.status] += 1
        if submission.run is not None:
            batch.started += 1

    def _set_submission(self, batch: _Batch, submission: _Submission, status: str) -> None:
        # submissionSummary counts operations: a later delete does not undo the count of an earlier cancel.
        submission.status = status
        batch.operations[status] += 1

    # -- S3 --------------------------------------------------------------------

    def _s3(self) -> Any:
        with self._s3_lock:
            if self._s3_client is None:
                session = boto3.session.Session()
                kwargs: dict[str, Any] = {}
                if session.get_credentials() is None:  # a sandbox without credentials
                    kwargs = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
                self._s3_client = session.client(
                    "s3",
                    endpoint_url=self.s3_endpoint_url,
                    region_name=self.region,
                    config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}),
                    **kwargs,
                )
            return self._s3_client

    # -- runs ----------------------------------------------------------------

    def _new_run(self, settings: dict[str, Any], moment: float, failure: tuple[str, str] | None, **extra: Any) -> _Run:
        # "HealthOmics reuses deleted run IDs ... use the run uuid to uniquely identify runs" (sources.md:
        # run-id-reuse).  UNDOCUMENTED: which freed id comes back and when; here the first freed, at once.
        if self._free_run_ids:
            run_id = self._free_run_ids.popleft()
        else:
            self._next_run += 1
            run_id = str(self._next_run)
        self._run_seq += 1
        run = _Run(
            seq=self._run_seq,
            id=run_id,
            uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"run/{self._run_seq}")),
            arn=f"arn:aws:omics:{self.region}:{self.account}:run/{run_id}",
            settings=settings,
            created_at=moment,
            failure=failure,
            **extra,
        )
        self._runs[run_id] = run
        self._listed.append(run)
        if settings.get("retentionMode") == "REMOVE":
            self._removable.append(run)
        batch = run.batch
        if batch is not None:
            self._listed_by_batch.setdefault(batch.id, _RunIndex()).append(run)
            if failure is None:
                batch.live_completing += 1
            else:
                batch.live_failing += 1
        return run

    def _settings_view(self, settings: dict[str, Any], run_setting_id: str | None) -> dict[str, Any]:
        """What ``fail_when`` and ``uncancellable`` see: the merged settings, plus a batch run's runSettingId."""
        view = dict(settings)
        if run_setting_id is not None:
            view["runSettingId"] = run_setting_id
        return view

    def _decide_failure(
        self, settings: dict[str, Any], key: str, run_setting_id: str | None = None
    ) -> tuple[str, str] | None:
        """How the run will end: None (COMPLETED) or its (failureReason, statusMessage)."""
        if self.fail_when is not None:  # when given, it alone decides
            found = self.fail_when(self._settings_view(settings, run_setting_id))
            if found is None:
                return None
            reason, message = str(found[0]), str(found[1])
            if not 1 <= len(reason) <= 64 or not message:
                raise ValueError("fail_when must return (failureReason of 1..64 characters, statusMessage) or None")
            return reason, message
        if fraction(key) < self.failure_rate:
            return FAILURE_REASONS[int(fraction(key + "\x1freason") * len(FAILURE_REASONS))]
        return None

    def _make_room(self, settings: dict[str, Any], moment: float, removed: list[_Run]) -> str | None:
        """Room for one more retained run, or why there is none (ServiceQuotaExceededException;
        sources.md: retention).

        A new REMOVE run at the maximum removes the oldest retained REMOVE run (whatever its status, whichever
        batch it belongs to); a new RETAIN run at the maximum finds no room (run retention guide).
        """
        limit = self.max_retained_runs
        if limit is None or len(self._runs) < limit:
            return None
        if settings.get("retentionMode") != "REMOVE":
            return (
                f"The account holds the maximum number of runs ({limit}); a run with retentionMode RETAIN "
                "cannot start until runs are deleted"
            )
        while len(self._runs) >= limit:
            while self._removable and self._removable[0].deleted_at is not None:
                self._removable.popleft()
            if not self._removable:
                return (
                    f"The account holds the maximum number of runs ({limit}), none of them with retentionMode "
                    "REMOVE; delete runs to start more"
                )
            victim = self._removable.popleft()
            self._mark_deleted(victim, moment)
            removed.append(victim)
        return None

    def _cancel(self, run: _Run, moment: float) -> None:
        run.cancelled_at = moment
        batch = run.batch
        if batch is not None:
            if run.failure is None:
                batch.live_completing -= 1
            else:
                batch.live_failing -= 1
            batch.cancelled += 1

    def _mark_deleted(self, run: _Run, moment: float) -> None:
        """The run leaves the API (GetRun, CancelRun, DeleteRun: not found); ``_unlist`` drops it from ListRuns."""
        batch = run.batch
        if batch is not None:
            if run.cancelled_at is not None:
                batch.cancelled -= 1
            elif run.failure is None:
                batch.live_completing -= 1
            else:
                batch.live_failing -= 1
            batch.deleted += 1
        run.deleted_at = moment
        del self._runs[run.id]
        self._free_run_ids.append(run.id)

    def _unlist(self, gone: list[_Run]) -> None:
        if not gone:
            return
        self._listed.discard(gone)
        by_batch: dict[str, list[_Run]] = {}
        for run in gone:
            if run.batch is not None:
                by_batch.setdefault(run.batch.id, []).append(run)
        for batch_id, runs in by_batch.items():
            self._listed_by_batch[batch_id].discard(runs)

    def _cannot_cancel(self, run: _Run) -> bool:
        return self.uncancellable is not None and bool(
            self.uncancellable(self._settings_view(run.settings, run.run_setting_id))
        )

    def _run_output_uri(self, run: _Run) -> str | None:
        base = run.settings.get("outputUri")
        if not base:
            return None
        if run.settings.get("outputUriPrefixMode") == "NONE_WITH_OVERWRITE":
            return base
        return f"{base.rstrip('/')}/{run.id}"

    def _log_location(self, run: _Run) -> dict[str, str]:  # sources.md: get-run-fields
        # Stream names run/<id> and run/<id>/engine in /aws/omics/WorkflowLog, as the User Guide's CloudWatch
        # Logs page describes them; the ARN form is CloudWatch's.
        stream = f"arn:aws:logs:{self.region}:{self.account}:log-group:{_LOG_GROUP}:log-stream:run/{run.id}"
        return {"engineLogStream": f"{stream}/engine", "runLogStream": stream}

    def _find_run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise _not_found(f"Run {run_id} not found")
        return run

    def _start_run(self, params: dict[str, Any]) -> dict[str, Any]:  # sources.md: request-id, workflow-check
        now = self.clock()
        with self._lock:
            self._advance(now)
            request_id = params["requestId"]
            run = self._run_requests.get(request_id)
            if run is None:
                settings = {k: v for k, v in params.items() if k not in ("requestId", "runId")}
                source = None
                if params.get("runId") is not None:
                    source = self._find_run(params["runId"])
                    settings = {**source.settings, **settings}
                elif params.get("workflowId") is None:
                    raise _validation(
                        "Value null at 'workflowId' failed to satisfy constraint: workflowId or runId must be provided"
                    )
                _apply_run_defaults(settings)
                refusal = self._workflow_refusal(settings, now)
                if refusal is not None:
                    raise ServiceError(*refusal)
                removed: list[_Run] = []
                quota = self._make_room(settings, now, removed)
                if quota is not None:
                    raise ServiceError("ServiceQuotaExceededException", quota)
                self._unlist(removed)
                failure = self._decide_failure(settings, f"{self.seed}\x1f{request_id}")
                run = self._new_run(
                    settings, now, failure, request_id=request_id, source_run_id=source.id if source else None
                )
                self._run_requests[request_id] = run
            return {
                "arn": run.arn,
                "id": run.id,
                "status": self._run_status(run, now),
                "tags": run.settings.get("tags"),
                "uuid": run.uuid,
                "runOutputUri": self._run_output_uri(run),  # sources.md: run-output-uri
            }

    def _get_run(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            run = self._find_run(params["id"])
            status = self._run_status(run, now)
            start, stop = self._run_times(run, now)
            out = dict(run.settings)
            out.update(
                {
                    "arn": run.arn,
                    "id": run.id,
                    "uuid": run.uuid,
                    "status": status,
                    "batchId": run.batch.id if run.batch is not None else None,
                    "runId": run.source_run_id,
                    "creationTime": self._wall(run.created_at),
                    "startTime": self._wall(start),
                    "stopTime": self._wall(stop),
                    "runOutputUri": self._run_output_uri(run),
                    "startedBy": f"arn:aws:iam::{self.account}:user/omics-emulator",
                    "logLocation": self._log_location(run),
                }
            )
            workflow = self._workflows.get(run.settings.get("workflowId", ""))
            if workflow is not None:
                out["workflowUuid"] = workflow.uuid
            if status == "FAILED" and run.failure is not None:
                out["failureReason"], out["statusMessage"] = run.failure
            elif status == "CANCELLED":
                out["statusMessage"] = "Run cancelled"
            return out

    def _run_summary(self, run: _Run, now: float) -> dict[str, Any]:
        # The model's RunListItem: no failureReason, statusMessage or uuid (sources.md: get-run-fields).
        start, stop = self._run_times(run, now)
        out = {
            key: run.settings.get(key)
            for key in ("workflowId", "name", "priority", "storageCapacity", "storageType", "workflowVersionName")
        }
        workflow = self._workflows.get(run.settings.get("workflowId", ""))
        out.update(
            {
                "arn": run.arn,
                "id": run.id,
                "status": self._run_status(run, now),
                "batchId": run.batch.id if run.batch is not None else None,
                "workflowName": workflow.request.get("name") if workflow is not None else None,
                "creationTime": self._wall(run.created_at),
                "startTime": self._wall(start),
                "stopTime": self._wall(stop),
            }
        )
        return out

    def _list_runs(self, params: dict[str, Any]) -> dict[str, Any]:  # sources.md: list-runs
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch_id = params.get("batchId")
            listed = self._listed if batch_id is None else self._listed_by_batch.get(batch_id, _RunIndex())
            name, group, status = params.get("name"), params.get("runGroupId"), params.get("status")

            def keep(run: _Run) -> bool:
                return (
                    (name is None or run.settings.get("name") == name)
                    and (group is None or run.settings.get("runGroupId") == group)
                    and (status is None or self._run_status(run, now) == status)
                )

            plain = name is None and group is None and status is None
            page, token = listed.page(params.get("startingToken"), params.get("maxResults"), None if plain else keep)
            return {"items": [self._run_summary(r, now) for r in page], "nextToken": token}

    def _cancel_run(self, params: dict[str, Any]) -> None:  # sources.md: cancel-run
        now = self.clock()
        with self._lock:
            self._advance(now)
            run = self._find_run(params["id"])
            status = self._run_status(run, now)
            if status in RUN_TERMINAL:
                raise _conflict(f"Run {run.id} is {status} and cannot be cancelled")
            if self._cannot_cancel(run):
                raise _conflict(f"Run {run.id} could not be cancelled; it is still {status}")
            self._cancel(run, now)

    def _delete_run(self, params: dict[str, Any]) -> None:  # sources.md: delete-run
        now = self.clock()
        with self._lock:
            self._advance(now)
            run = self._find_run(params["id"])
            status = self._run_status(run, now)
            if status not in _RUN_DELETABLE:
                raise _conflict(f"Run {run.id} is {status}; only a COMPLETED, FAILED or CANCELLED run can be deleted")
            self._mark_deleted(run, now)
            self._unlist([run])

    # -- workflows -------------------------------------------------------------

    def _workflow_status(self, item: _Workflow | _WorkflowVersion, now: float) -> tuple[str, str | None]:
        if item.status_override is not None:
            return item.status_override
        return ("CREATING" if now < item.created_at + self.step_seconds else "ACTIVE"), None

    def _find_workflow(self, params: dict[str, Any], key: str = "id") -> _Workflow:
        workflow_id = params[key]
        workflow = self._workflows.get(workflow_id)
        # Only this account's PRIVATE workflows live here: a shared or READY2RUN one is not found.
        owner, kind = params.get("workflowOwnerId"), params.get("type")
        if workflow is None or (owner is not None and owner != self.account) or kind not in (None, "PRIVATE"):
            raise _not_found(f"Workflow {workflow_id} not found")
        return workflow

    def _create_workflow(self, params: dict[str, Any]) -> dict[str, Any]:  # sources.md: workflows
        if all(params.get(name) is None for name in _DEFINITION_MEMBERS):
            raise _validation(f"A workflow definition is required: one of {', '.join(_DEFINITION_MEMBERS)}")
        now = self.clock()
        with self._lock:
            workflow = self._workflow_requests.get(params["requestId"])
            if workflow is None:
                self._next_workflow += 1
                while str(self._next_workflow) in self._workflows:  # an id put_workflow chose
                    self._next_workflow += 1
                workflow_id = str(self._next_workflow)
                workflow = _Workflow(
                    id=workflow_id,
                    arn=f"arn:aws:omics:{self.region}:{self.account}:workflow/{workflow_id}",
                    uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow_id}")),
                    request={k: params[k] for k in _WORKFLOW_ECHOED if params.get(k) is not None},
                    created_at=now,
                    request_id=params["requestId"],
                )
                self._workflows[workflow_id] = workflow
                self._workflow_requests[workflow.request_id] = workflow
            status, _ = self._workflow_status(workflow, now)
            return {
                "arn": workflow.arn,
                "id": workflow.id,
                "status": status,
                "tags": workflow.request.get("tags"),
                "uuid": workflow.uuid,
            }

    def _get_workflow(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            workflow = self._find_workflow(params)
            status, message = self._workflow_status(workflow, now)
            return {
                **workflow.request,
                "arn": workflow.arn,
                "id": workflow.id,
                "uuid": workflow.uuid,
                "type": "PRIVATE",
                "status": status,
                "statusMessage": message,
                "creationTime": self._wall(workflow.created_at),
            }

    def _create_workflow_version(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            workflow = self._find_workflow(params, "workflowId")
            version = self._version_requests.get((workflow.id, params["requestId"]))
            if version is None:
                name = params["versionName"]
                if name in workflow.versions:
                    raise _conflict(f"Workflow {workflow.id} already has a version named {name}")
                if all(params.get(member) is None for member in _DEFINITION_MEMBERS):
                    raise _validation(f"A workflow definition is required: one of {', '.join(_DEFINITION_MEMBERS)}")
                version = _WorkflowVersion(
                    name=name,
                    arn=f"{workflow.arn}/version/{name}",
                    uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow.id}/version/{name}")),
                    request={k: params[k] for k in _WORKFLOW_ECHOED if params.get(k) is not None},
                    created_at=now,
                    request_id=params["requestId"],
                )
                workflow.versions[name] = version
                self._version_requests[(workflow.id, version.request_id)] = version
            status, _ = self._workflow_status(version, now)
            return {
                "arn": version.arn,
                "workflowId": workflow.id,
                "versionName": version.name,
                "status": status,
                "tags": version.request.get("tags"),
                "uuid": version.uuid,
            }

    def _get_workflow_version(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            workflow = self._find_workflow(params, "workflowId")
            version = workflow.versions.get(params["versionName"])
            if version is None:
                raise _not_found(f"Workflow {workflow.id} has no version {params['versionName']}")
            status, message = self._workflow_status(version, now)
            return {
                **version.request,
                "arn": version.arn,
                "workflowId": workflow.id,
                "versionName": version.name,
                "uuid": version.uuid,
                "type": "PRIVATE",
                "status": status,
                "statusMessage": message,
                "creationTime": self._wall(version.created_at),
            }

    def _workflow_refusal(self, settings: dict[str, Any], now: float) -> tuple[str, str] | None:
        """Why a run of a workflow this emulator knows cannot start: (error code, message), or None
        (sources.md: workflow-check).

        A workflowId the emulator does not know (and any READY2RUN or shared workflow) is accepted unchecked,
        unless ``known_workflows_only`` (then an unknown PRIVATE workflow of this account is not found).
        """
        workflow_id = settings.get("workflowId")
        owner = settings.get("workflowOwnerId")
        if workflow_id is None or settings.get("workflowType", "PRIVATE") != "PRIVATE":
            return None
        if owner is not None and owner != self.account:
            return None
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            if self.known_workflows_only:
                return "ResourceNotFoundException", f"Workflow {workflow_id} not found"
            return None
        refusal = self._workflow_unusable(workflow, settings, now)
        if refusal is not None:
            return refusal
        return self._parameter_refusal(workflow, settings)

    def _workflow_unusable(self, workflow: _Workflow, settings: dict[str, Any], now: float) -> tuple[str, str] | None:
        """Why no run of ``workflow`` (and the version the settings name) can start now, or None."""
        workflow_id = workflow.id
        status, _ = self._workflow_status(workflow, now)
        if status != "ACTIVE":
            return "ValidationException", f"Workflow {workflow_id} is {status}; a run can start only once it is ACTIVE"
        version_name = settings.get("workflowVersionName")
        if version_name is not None:
            version = workflow.versions.get(version_name)
            if version is None:
                return "ResourceNotFoundException", f"Workflow {workflow_id} has no version {version_name}"
            status, _ = self._workflow_status(version, now)
            if status != "ACTIVE":
                return (
                    "ValidationException",
                    f"Version {version_name} of workflow {workflow_id} is {status}; "
                    "a run can start only once it is ACTIVE",
                )
        return None

    def _parameter_refusal(self, workflow: _Workflow, settings: dict[str, Any]) -> tuple[str, str] | None:
        """Why a run's merged parameters do not fit the template of the workflow (or version) it names."""
        workflow_id = workflow.id
        template = workflow.request.get("parameterTemplate")
        subject = f"workflow {workflow_id}"
        version_name = settings.get("workflowVersionName")
        if version_name is not None:
            template = workflow.versions[version_name].request.get("parameterTemplate")
            subject = f"workflow {workflow_id} version {version_name}"
        if template is None or settings.get("parametersUri") is not None:
            return None  # no template to check against (the service would generate one), or parameters on S3
        parameters = settings.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            return "ValidationException", f"parameters must be a JSON object of the parameters {subject} defines"
        unknown = [name for name in parameters if name not in template]
        missing = [
            name
            for name, spec in template.items()
            if name not in parameters and (spec or {}).get("optional") is not True
        ]
        problems = []
        if unknown:
            problems.append(
                f"parameter{'s' if len(unknown) > 1 else ''} {_quoted(unknown)} "
                f"not defined in the parameter template of {subject}"
            )
        if missing:
            problems.append(
                f"required parameter{'s' if len(missing) > 1 else ''} {_quoted(missing)} of {subject} missing"
            )
        if problems:
            return "ValidationException", "Run refused: " + "; ".join(problems)
        return None

    # -- batches ---------------------------------------------------------------

    def _find_batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise _not_found(f"Run batch {batch_id} not found")
        return batch

    def _start_run_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        request_id = params["requestId"]
        default = params["defaultRunSetting"]
        settings = params["batchRunSettings"]
        if default.get("workflowType") == "READY2RUN":
            raise _validation(
                "Value 'READY2RUN' at 'defaultRunSetting.workflowType' failed to satisfy constraint: "
                "Batch runs are not supported with READY2RUN workflows"
            )
        if default.get("cacheBehavior") is not None and default.get("cacheId") is None:
            raise _validation(
                "Value null at 'defaultRunSetting.cacheId' failed to satisfy constraint: cacheBehavior requires cacheId"
            )
        with self._lock:
            existing = self._batch_requests.get(request_id)
            if existing is not None:
                return self._batch_created(existing)
            # "StartRunBatch validates common fields synchronously" (model doc; sources.md: batch-sync-validation):
            # the workflow (and version) defaultRunSetting names must exist and be ACTIVE before a batch is made.
            common = dict(default)
            _apply_run_defaults(common)
            unusable = self._common_workflow_refusal(common, self.clock())
            if unusable is not None:
                raise ServiceError(*unusable)
        entries: list[dict[str, Any]] | None = None
        entry_errors: dict[int, str] = {}
        content_error: str | None = None
        s3_ref: tuple[str, str, str] | None = None
        if settings.get("inlineSettings") is not None:
            entries = settings["inlineSettings"]
            seen: set[str] = set()
            for index, entry in enumerate(entries, start=1):
                if entry["runSettingId"] in seen:
                    raise _validation(
                        f"Value '{entry['runSettingId']}' at 'batchRunSettings.inlineSettings.{index}.member."
                        "runSettingId' failed to satisfy constraint: runSettingId must be unique within the batch"
                    )
                seen.add(entry["runSettingId"])
        else:
            bucket, key = _parse_s3_uri(settings["s3UriSettings"])
            try:
                obj = self._s3().get_object(Bucket=bucket, Key=key)
                data = obj["Body"].read()
                etag = obj["ETag"]
            except Exception as exc:
                raise _validation(
                    f"Unable to read s3UriSettings s3://{bucket}/{key}: {_client_error_code(exc)}"
                ) from exc
            s3_ref = (bucket, key, etag)
            entries, entry_errors, content_error = self._read_settings_file(data)
        now = self.clock()
        with self._lock:
            self._advance(now)
            existing = self._batch_requests.get(request_id)  # a concurrent twin won the race
            if existing is not None:
                return self._batch_created(existing)
            self._next_batch += 1
            batch_id = str(self._next_batch)
            batch = _Batch(
                id=batch_id,
                uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"runBatch/{batch_id}")),
                arn=f"arn:aws:omics:{self.region}:{self.account}:runBatch/{batch_id}",
                request_id=request_id,
                name=params.get("batchName"),
                tags=params.get("tags"),
                default=dict(default),
                created_at=now,
                entries=entries,
                entry_errors=entry_errors,
                content_error=content_error,
                s3=s3_ref,
            )
            self._batches[batch_id] = batch
            self._batch_requests[request_id] = batch
            self._unfinished[batch_id] = batch
            return self._batch_created(batch)

    def _common_workflow_refusal(self, settings: dict[str, Any], now: float) -> tuple[str, str] | None:
        """The workflow checks that need no run's own settings: existence (``known_workflows_only``), status."""
        workflow_id = settings.get("workflowId")
        owner = settings.get("workflowOwnerId")
        if workflow_id is None or settings.get("workflowType") != "PRIVATE":
            return None
        if owner is not None and owner != self.account:
            return None
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            if self.known_workflows_only:
                return "ResourceNotFoundException", f"Workflow {workflow_id} not found"
            return None
        return self._workflow_unusable(workflow, settings, now)

    def _read_settings_file(self, data: bytes) -> tuple[list[dict[str, Any]] | None, dict[int, str], str | None]:
        """Entries, per-entry problems and a whole-file problem of an s3UriSettings file."""
        try:
            entries = json.loads(data)
        except ValueError as exc:
            return None, {}, f"The s3UriSettings file is not valid JSON: {exc}"
        if not isinstance(entries, list):
            return None, {}, "The s3UriSettings file must be a JSON array of run settings"
        if not entries:
            return None, {}, "The s3UriSettings file has no run settings"
        if len(entries) > MAX_S3_SETTINGS:
            return (
                None,
                {},
                f"The s3UriSettings file has {len(entries)} run settings; at most {MAX_S3_SETTINGS} are allowed",
            )
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            setting_id = entry.get("runSettingId") if isinstance(entry, dict) else None
            if not isinstance(setting_id, str) or not setting_id:
                return None, {}, f"Run setting {index} of the s3UriSettings file has no runSettingId"
            if setting_id in seen:
                return None, {}, f"Duplicate runSettingId '{setting_id}' in the s3UriSettings file"
            seen.add(setting_id)
        member = (
            self._model.operation_model("StartRunBatch")
            .input_shape.members["batchRunSettings"]
            .members["inlineSettings"]
            .member
        )
        validator = _Validator()
        for index, entry in enumerate(entries):
            validator.check(member, entry, f"[{index}]", group=index)
        problems: dict[int, list[str]] = {}
        for group, message in validator.finish():
            problems.setdefault(group, []).append(message)
        return entries, {i: _validation_message([(i, m) for m in ms]) for i, ms in problems.items()}, None

    def _batch_created(self, batch: _Batch) -> dict[str, Any]:
        return {"id": batch.id, "arn": batch.arn, "status": batch.status, "uuid": batch.uuid, "tags": batch.tags}

    def _get_batch(self, params: dict[str, Any]) -> dict[str, Any]:  # sources.md: run-summary
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            counts = dict.fromkeys(("PENDING", "STARTING", "RUNNING", "COMPLETED"), 0)
            live = batch.live_completing + batch.live_failing
            phase = self._phase(batch.submitted_at, now) if batch.submitted_at is not None else "PENDING"
            if self.run_seconds is not None and batch.submitted_at is not None:
                # Runs of one batch end at times of their own: count them one by one (a sandbox's few).
                phase, failed = "", 0
                for submission in batch.submissions:
                    run = submission.run
                    if run is None or run.cancelled_at is not None or run.deleted_at is not None:
                        continue
                    status = self._run_status(run, now)
                    if status == "FAILED":
                        failed += 1
                    elif status in counts:
                        counts[status] += 1
            elif phase == "ENDED":
                counts["COMPLETED"] = batch.live_completing
                failed = batch.live_failing
            else:
                counts[phase] = live
                failed = 0
            ops = batch.operations
            total = len(batch.entries) if batch.entries is not None else 0
            waiting = batch.submitted_at is None and batch.status in ("CREATING", "PENDING", "SUBMITTING", "STOPPING")
            pending = total - len(batch.submissions) if waiting else 0
            return {
                "id": batch.id,
                "arn": batch.arn,
                "uuid": batch.uuid,
                "name": batch.name,
                "status": batch.status,
                "tags": batch.tags,
                "totalRuns": total,
                "defaultRunSetting": batch.default,
                "submissionSummary": {
                    "successfulStartSubmissionCount": batch.started,
                    "failedStartSubmissionCount": ops["FAILED"],
                    "pendingStartSubmissionCount": pending,
                    "successfulCancelSubmissionCount": ops["CANCEL_SUCCESS"],
                    "failedCancelSubmissionCount": ops["CANCEL_FAILED"],
                    "successfulDeleteSubmissionCount": ops["DELETE_SUCCESS"],
                    "failedDeleteSubmissionCount": ops["DELETE_FAILED"],
                },
                "runSummary": {
                    "pendingRunCount": counts["PENDING"],
                    "startingRunCount": counts["STARTING"],
                    "runningRunCount": counts["RUNNING"],
                    "stoppingRunCount": 0,  # cancels take effect at once here: no run is ever STOPPING
                    "completedRunCount": counts["COMPLETED"],
                    "deletedRunCount": batch.deleted,
                    "failedRunCount": failed,
                    "cancelledRunCount": batch.cancelled,
                },
                "creationTime": self._wall(batch.created_at),
                "submittedTime": self._wall(batch.submitted_at),
                "processedTime": self._wall(batch.processed_at if batch.status == "PROCESSED" else None),
                "failedTime": self._wall(batch.failed_at),
                "failureReason": batch.failure_reason,
            }

    def _list_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batches = list(self._batches.values())
            status, name, group = params.get("status"), params.get("name"), params.get("runGroupId")
            _one_filter("ListBatch", status, name, group)
            batches = [
                b
                for b in batches
                if (status is None or b.status == status)
                and (name is None or b.name == name)
                and (group is None or b.default.get("runGroupId") == group)
            ]
            page, token = _page(batches, params.get("startingToken"), params.get("maxItems"))
            items = [
                {
                    "id": b.id,
                    "name": b.name,
                    "status": b.status,
                    "createdAt": self._wall(b.created_at),
                    "totalRuns": len(b.entries) if b.entries is not None else 0,
                    "workflowId": b.default.get("workflowId"),
                }
                for b in page
            ]
            return {"items": items, "nextToken": token}

    def _list_runs_in_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            status, setting_id, run_id = params.get("submissionStatus"), params.get("runSettingId"), params.get("runId")
            _one_filter("ListRunsInBatch", status, setting_id, run_id)

            def keep(sub: _Submission) -> bool:
                return (
                    (status is None or sub.status == status)
                    and (setting_id is None or sub.run_setting_id == setting_id)
                    and (run_id is None or (sub.run is not None and sub.run.id == run_id))
                )

            plain = status is None and setting_id is None and run_id is None
            page, token = _page(
                batch.submissions, params.get("startingToken"), params.get("maxItems"), None if plain else keep
            )
            runs = []
            for sub in page:
                run = sub.run  # kept after the run is deleted: the batch remembers what it started
                runs.append(
                    {
                        "runSettingId": sub.run_setting_id,
                        "runId": run.id if run else None,
                        "runInternalUuid": run.uuid if run else None,
                        "runArn": run.arn if run else None,
                        "submissionStatus": sub.status,
                        "submissionFailureReason": sub.reason,
                        "submissionFailureMessage": sub.message,
                    }
                )
            return {"runs": runs, "nextToken": token}

    def _one_operation_at_a_time(self, batch: _Batch) -> None:
        if batch.status in _BATCH_OPERATING:
            raise _conflict(
                f"Run batch {batch.id} is {batch.status}: only one cancel or delete operation per batch is "
                "allowed at a time"
            )

    def _cancel_run_batch(self, params: dict[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            self._one_operation_at_a_time(batch)
            if batch.status not in _BATCH_CANCELLABLE:
                raise _conflict(f"Run batch {batch.id} is {batch.status} and cannot be cancelled")
            batch.status = "STOPPING"  # sources.md: batch-cancel-async
            batch.operation_at = now
            self._unfinished[batch.id] = batch

    def _stop(self, batch: _Batch, moment: float) -> None:
        """The end of STOPPING: unsubmitted runs never start, started unfinished ones are cancelled."""
        for sub in batch.submissions:
            run = sub.run
            if run is None or self._run_status(run, moment) in RUN_TERMINAL:
                continue  # nothing to cancel: its submission keeps its status
            if self._cannot_cancel(run):
                self._set_submission(batch, sub, "CANCEL_FAILED")
            else:
                self._cancel(run, moment)
                self._set_submission(batch, sub, "CANCEL_SUCCESS")
        batch.status = "CANCELLED"
        batch.processed_at = None
        batch.operation_at = None

    def _delete_batch(self, params: dict[str, Any]) -> None:  # sources.md: delete-batch
        with self._lock:
            self._advance(self.clock())
            batch = self._find_batch(params["batchId"])
            if batch.status not in BATCH_TERMINAL:
                raise _conflict(f"Run batch {batch.id} is {batch.status}; only a finished batch can be deleted")
            # Its runs stay (DeleteBatch "does not delete the individual workflow runs"); a repeat of its
            # StartRunBatch requestId still answers with it (_batch_requests keeps it).
            del self._batches[batch.id]

    def _delete_run_batch(self, params: dict[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            self._one_operation_at_a_time(batch)
            if batch.status not in _BATCH_RUNS_DELETABLE:
                raise _conflict(
                    f"Run batch {batch.id} is {batch.status}; its runs can be deleted when it is PROCESSED or CANCELLED"
                )
            batch.status = "RUNS_DELETING"  # sources.md: batch-delete-async
            batch.operation_at = now
            self._unfinished[batch.id] = batch

    def _delete_runs(self, batch: _Batch, moment: float) -> None:
        """The end of RUNS_DELETING: each finished run is deleted, as DeleteRun would."""
        gone: list[_Run] = []
        for sub in batch.submissions:
            run = sub.run
            if run is None:
                continue
            if run.deleted_at is None:
                if self._run_status(run, moment) not in _RUN_DELETABLE:
                    self._set_submission(batch, sub, "DELETE_FAILED")  # still running (a cancel that failed)
                    continue
                self._mark_deleted(run, moment)
                gone.append(run)
            self._set_submission(batch, sub, "DELETE_SUCCESS")
        self._unlist(gone)
        batch.status = "RUNS_DELETE_FAILED" if batch.operations["DELETE_FAILED"] else "RUNS_DELETED"
        batch.operation_at = None


def _apply_run_defaults(settings: dict[str, Any]) -> None:  # sources.md: run-defaults
    # StartRun's defaults (seeds/000): a PRIVATE workflow, STATIC storage of 1200 GiB, retentionMode RETAIN.
    settings.setdefault("workflowType", "PRIVATE")
    settings.setdefault("storageType", "STATIC")
    settings.setdefault("retentionMode", "RETAIN")
    if settings["storageType"] == "STATIC":
        settings.setdefault("storageCapacity", 1200)


def _page(
    items: list[Any], token: str | None, size: int | None, keep: Callable[[Any], bool] | None = None
) -> tuple[list[Any], str | None]:
    """One page of ``items`` (those ``keep`` accepts) and the next token.

    The token is a position in ``items``, which only ever grows at the end, so a
    filtered listing costs one pass over the items across all its pages.
    """
    start = 0
    if token is not None:
        if not token.isdigit() or int(token) > len(items):
            raise _validation(
                f"Value '{token}' at 'startingToken' failed to satisfy constraint: Invalid pagination token"
            )
        start = int(token)
    size = size or DEFAULT_PAGE_SIZE
    if keep is None:
        end = start + size
        return items[start:end], (str(end) if end < len(items) else None)
    page: list[Any] = []
    index = start
    while index < len(items) and len(page) < size:
        if keep(items[index]):
            page.append(items[index])
        index += 1
    while index < len(items) and not keep(items[index]):  # no token for an empty last page
        index += 1
    return page, (str(index) if index < len(items) else None)


def _one_filter(operation: str, *filters: Any) -> None:
    # "Only one filter per call is supported" (model doc; sources.md: list-runs).  UNDOCUMENTED: the error.
    if sum(value is not None for value in filters) > 1:
        raise _validation(f"{operation}: only one filter per call is supported")


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return str(error.get("Code") or error.get("Message") or exc)
    return f"{type(exc).__name__}: {exc}"
