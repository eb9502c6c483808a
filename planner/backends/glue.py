"""AWS Glue StartJobRun: one job run per sample (or, in manifest mode, per shard).

Glue ``Arguments`` are a map of strings named ``--KEY`` that replace the job's own
defaults per key (seeds/002), so sheet parameters become ``--COLUMN`` with string
values (other JSON values are JSON-encoded).  ``Timeout`` must stay below 10,080
minutes (seven days).

Submission.  StartJobRun has no idempotency token, so every run carries
``--planner-run-key``: ``<plan_id>:<sha256(sample)[:32]>``, or in manifest mode
``<plan_id>:shard-<index>``.  Each start is journaled (intent, then result), and
before anything is sent one paginated ``GetJobRuns`` pass per job finds the runs
this plan already started (a crash between StartJobRun and the ledger write, a
lost ledger) and counts the runs that hold one of the job's slots.  botocore's
own retries of a StartJobRun that may have reached Glue (a 5xx, a dropped
connection) are turned off: the planner looks for the run key before sending again.

Concurrency.  A job allows ``ExecutionProperty.MaxConcurrentRuns`` runs at once
(1 when unset); no more of the plan's starts are let through than leave that many
runs in STARTING, RUNNING, STOPPING or WAITING, and a ``ConcurrentRunsExceededException``
(another client took a slot) is waited out with backoff on ``ctx.sleep``.  A request
with ``JobRunQueuingEnabled = true`` is sent at once: Glue queues it.

Manifest mode (``[submission] mode = "manifest"``): each shard is staged on S3
as it is, and one job run per shard gets, besides the default ``Arguments``:
``--planner-manifest`` (its s3:// URI), ``--planner-manifest-etag`` (the ETag as S3
reports it, quotes included, for ``IfMatch``), ``--planner-first-index`` (``"0"``:
entry 0 of the shard is the run's first sample), ``--planner-index-uri`` and
``--planner-index-etag``: the shard's line index (``child_settings.line_index``:
8-byte big-endian offsets of each entry's line, then where the closing ``]`` line
starts), staged beside it as ``<plan_id>/<sha256 of the index>.index``.  A Glue
script reads entry i with two ranged GETs: ``planner.child_settings.read_child_settings(
**glue_arguments(sys.argv), index=i)``.  The job run itself takes its fields
(``JobName``, ``WorkerType``, ...) from ``[run]``, so a sheet column naming one of
those fields is refused in this mode (a ``param.`` column passes the value to the script).

Status comes from ``GetJobRuns`` (paginated), mapped back to samples by the run
key: ``state`` is the ``JobRunState`` and ``reason`` the ``ErrorMessage``.  Runs
that ended badly are in FAILED, ERROR, TIMEOUT, STOPPED or EXPIRED
(``RETRY_STATES``).  ``cancel`` stops runs with ``BatchStopJobRun``, 25 ids a call.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from ..errors import InputError, Problem, SubmissionError
from ..model import SCALAR_TYPES, check_shape, operation_input, rule_for
from ..spec import BackendSpec, RoutedField

MAX_TIMEOUT_MINUTES = 10_079
RESERVED_PREFIX = "--planner-"  # the planner's own arguments: run key and manifest location
_INPUT = operation_input("glue", "StartJobRun")
_ARGUMENTS = _INPUT.members["Arguments"]
_OVERRIDES = {"Timeout": rule_for("Timeout", _INPUT.members["Timeout"]).with_limits(max=MAX_TIMEOUT_MINUTES)}
_PER_RUN = [name for name, shape in _INPUT.members.items() if shape.type_name in SCALAR_TYPES and name != "JobRunId"]


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_INPUT, run, "", _OVERRIDES)
    for key in run.get("Arguments") or {}:
        if not str(key).startswith("--"):
            found.append(Problem(None, None, f"Arguments.{key}", None, "prefix", "Glue argument names begin with --"))
        elif str(key).startswith(RESERVED_PREFIX):
            found.append(
                Problem(
                    None,
                    None,
                    f"Arguments.{key}",
                    None,
                    "reserved",
                    f"argument names beginning with {RESERVED_PREFIX} are set by the planner",
                )
            )
    mode = submission.get("mode", "per-run")
    if mode not in ("per-run", "manifest"):
        found.append(Problem(None, None, "submission.mode", str(mode), "enum", "must be per-run or manifest"))
    per_sample = sorted(sheet_fields & set(_PER_RUN))
    if mode == "manifest" and per_sample:
        # One job run serves a whole shard: a per-sample JobName or WorkerType could not apply,
        # and leaving it in the manifest alone would look as if it did.
        found.append(
            Problem(
                None,
                None,
                "submission.mode",
                "manifest",
                "manifest-fields",
                f"sheet column{'s' if len(per_sample) > 1 else ''} {', '.join(per_sample)} set job-run fields per sample, but in manifest mode "
                "one job run serves a whole shard and takes its fields from [run]: set them in [run], or name the columns "
                f"param.{per_sample[0]} (and so on) to pass them to the script as arguments",
            )
        )
    return found


FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED"})
RETRY_STATES = ("FAILED", "ERROR", "TIMEOUT", "STOPPED", "EXPIRED")  # what `planner retry` picks by default

SPEC = BackendSpec(
    name="glue",
    title="AWS Glue StartJobRun",
    id_field=None,
    id_rule=None,
    fields={
        name: RoutedField((name,), _OVERRIDES.get(name) or rule_for(name, _INPUT.members[name])) for name in _PER_RUN
    },
    parameters_path=("Arguments",),
    parameter_key_prefix="--",
    parameters_as_strings=True,
    parameter_key_rule=rule_for("Arguments key", _ARGUMENTS.key),
    parameter_rule=rule_for("Arguments value", _ARGUMENTS.value),
    required=("JobName",),
    check_defaults=_check_defaults,
    run_shape=_INPUT,
    submission_keys=frozenset({"mode"}),
    reserved_parameter_prefix="--planner-",
    final_states=FINAL_STATES,
    retry_states=RETRY_STATES,
    shard_mode=lambda submission: "s3" if submission.get("mode") == "manifest" else "inline",
)


# Submission.

RUN_KEY = "--planner-run-key"
MANIFEST = "--planner-manifest"
MANIFEST_ETAG = "--planner-manifest-etag"
FIRST_INDEX = "--planner-first-index"
INDEX_URI = "--planner-index-uri"
INDEX_ETAG = "--planner-index-etag"

ACTIVE_STATES = frozenset({"STARTING", "RUNNING", "STOPPING", "WAITING"})  # a run that holds a slot
DEFAULT_MAX_CONCURRENT_RUNS = 1  # Glue's own default for a job without ExecutionProperty
MAX_STOP_IDS = 25  # BatchStopJobRun JobRunIds: 1..25
PAGE_SIZE = 200  # GetJobRuns MaxResults: 1..200
MAX_UNKNOWN_OUTCOMES = 5  # StartJobRun calls that may have reached Glue, looked up and sent again
MAX_BACKOFF = 60.0
SANDBOX_ROLE = "arn:aws:iam::123456789012:role/planner-sandbox-glue"
SANDBOX_SCRIPT = "s3://planner-sandbox/glue/planner_job.py"
SANDBOX_MAX_CONCURRENT_RUNS = 2

# Glue writes job arguments to its logs (seeds/002): names like these deserve a warning.
_SECRET_NAME = re.compile(r"password|secret|token|key|credential", re.IGNORECASE)


def run_key(plan_id: str, sample: str) -> str:
    return f"{plan_id}:{hashlib.sha256(sample.encode()).hexdigest()[:32]}"


def shard_run_key(plan_id: str, index: int) -> str:
    return f"{plan_id}:shard-{index:05d}"


def manifest_mode(manifest: dict[str, Any]) -> bool:
    return manifest.get("submission", {}).get("mode") == "manifest"


def stage_indexes(manifest: dict[str, Any]) -> list[int]:
    return [s["index"] for s in manifest["shards"] if s["mode"] == "s3"]  # manifest mode: every shard


@dataclass
class _Start:
    """One StartJobRun to make: a sample's run, or in manifest mode a shard's."""

    key: str  # the ledger key
    run_key: str
    shard: int
    sample: str | None  # None in manifest mode: the run serves the whole shard
    position: int | None
    request: dict[str, Any]

    @property
    def job(self) -> str:
        return str(self.request["JobName"])

    @property
    def label(self) -> str:
        return self.sample if self.sample is not None else f"shard {self.shard}"


class _NoSlot(Exception):
    """StartJobRun answered ConcurrentRunsExceededException: wait for a slot, then send again."""


class _OutcomeUnknown(Exception):
    """StartJobRun may have started a run (a 5xx or a lost connection): look before sending again."""


def _no_blind_retry(response: Any = None, caught_exception: Exception | None = None, **_: Any) -> None:
    """needs-retry hook: botocore would resend a StartJobRun that may already have started a run."""
    if caught_exception is not None:
        raise _OutcomeUnknown(str(caught_exception)) from caught_exception
    if response is not None and response[0].status_code >= 500:
        raise _OutcomeUnknown(f"HTTP {response[0].status_code}")


def _glue(ctx: Any) -> Any:
    glue = ctx.clients.get("glue")
    glue.meta.events.register_first(
        "needs-retry.glue.StartJobRun", _no_blind_retry, unique_id="planner-glue-no-blind-retry"
    )
    return glue


def _job_runs(ctx: Any, glue: Any, job: str) -> Iterator[dict[str, Any]]:
    """Every run of ``job``, page by page."""
    params: dict[str, Any] = {"JobName": job, "MaxResults": PAGE_SIZE}
    while True:
        page = ctx.call(f"GetJobRuns {job}", glue.get_job_runs, **params)
        yield from page.get("JobRuns", [])
        if not page.get("NextToken"):
            return
        params["NextToken"] = page["NextToken"]


@dataclass
class _JobRuns:
    active: int  # runs of the job holding a slot, whoever started them
    ours: dict[str, dict[str, Any]]  # this plan's runs by run key


def _scan(ctx: Any, glue: Any, job: str) -> _JobRuns:
    prefix = f"{ctx.plan_id}:"
    active = 0
    ours: dict[str, dict[str, Any]] = {}
    for run in _job_runs(ctx, glue, job):
        if run.get("JobRunState") in ACTIVE_STATES:
            active += 1
        key = (run.get("Arguments") or {}).get(RUN_KEY)
        if key and key.startswith(prefix):
            ours.setdefault(key, run)  # newest first: a retried run (JobRunId) shows its latest attempt
    return _JobRuns(active, ours)


def _max_concurrent_runs(ctx: Any, glue: Any, job: str) -> int:
    found = ctx.call(f"GetJob {job}", glue.get_job, JobName=job)["Job"]
    return int((found.get("ExecutionProperty") or {}).get("MaxConcurrentRuns") or DEFAULT_MAX_CONCURRENT_RUNS)


class _Slots:
    """The run slots of one job: a start goes out only while one is free.

    ``free`` is what the last count left, minus the starts let through since.
    When it reaches 0, the next start waits for the starts still in flight to
    return, then counts the job's active runs (GetJobRuns); while none is free
    it backs off on ``ctx.sleep`` and counts again.  One thread waits and counts
    at a time, and only with nothing in flight, so a count is never stale.
    """

    def __init__(self, ctx: Any, glue: Any, job: str, limit: int, active: int):
        self.ctx, self.glue, self.job, self.limit = ctx, glue, job, limit
        self.free = limit - active
        self.calls = 0  # starts let through whose StartJobRun has not returned
        self._turn = threading.Lock()  # one waiter at a time
        self._changed = threading.Condition()  # guards free and calls; never held while sleeping or counting
        self._told = False

    def _take(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        self.calls += 1
        return True

    def acquire(self) -> None:
        delay = 1.0
        with self._turn:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self.free > 0 or self.calls == 0)
                    if self._take():
                        return
                active = _scan(self.ctx, self.glue, self.job).active
                with self._changed:
                    self.free = self.limit - active  # nothing is in flight, and no other start can begin meanwhile
                    if self._take():
                        return
                if not self._told:
                    self._told = True
                    print(
                        f"glue: all {self.limit} run slots of job {self.job} (MaxConcurrentRuns) are taken; waiting for runs to end "
                        "(JobRunQueuingEnabled = true in the defaults lets Glue queue runs instead)",
                        file=sys.stderr,
                    )
                self.ctx.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def release(self, *, started: bool, refused: bool = False) -> None:
        with self._changed:
            self.calls -= 1
            if refused:
                self.free = 0  # someone else holds slots: count again before the next start
            elif not started:
                self.free += 1
            self._changed.notify_all()


class _Submitter:
    """Starts job runs on a thread pool, within each job's slots and the rate limit."""

    def __init__(self, ctx: Any, glue: Any, slots: dict[str, _Slots]):
        from ..submit import rate_limited

        self.ctx, self.glue, self.slots = ctx, glue, slots
        self._limiter = rate_limited(ctx)
        self._gate = threading.Lock()
        self._samples: pl.DataFrame | None = None
        self.started = 0
        self.failures: list[str] = []

    def record(self, start: _Start, run_id: str, state: str | None = None) -> None:
        self.ctx.ledger.result(start.key, run_id, {"JobName": start.job, "JobRunId": run_id})
        self.ctx.ledger.upsert_samples(
            (sample, start.shard, position, run_id, "SUBMITTED", state, None) for sample, position in self._rows(start)
        )

    def _rows(self, start: _Start) -> list[tuple[str, int]]:
        if start.sample is not None:
            return [(start.sample, int(start.position or 0))]
        with self._gate:
            if self._samples is None:
                self._samples = self.ctx.samples()
        rows = self._samples.filter(pl.col("shard") == start.shard).sort("position")
        return list(rows.select("id", "position").iter_rows())

    def _fail(self, start: _Start, error: str) -> None:
        self.ctx.ledger.failure(start.key, error)
        self.ctx.ledger.upsert_samples(
            (sample, start.shard, position, None, "FAILED", None, error) for sample, position in self._rows(start)
        )
        with self._gate:
            self.failures.append(f"{start.label}: {error}")

    def _send(self, **request: Any) -> Any:
        try:
            return self.glue.start_job_run(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConcurrentRunsExceededException":
                raise _NoSlot() from exc
            raise

    def start(self, start: _Start) -> None:
        queued = bool(start.request.get("JobRunQueuingEnabled"))
        slots = None if queued else self.slots[start.job]
        delay = 1.0
        unknown = 0
        while True:
            if slots is not None:
                slots.acquire()
            started = refused = False
            try:
                with self._gate:
                    next(self._limiter)
                self.ctx.ledger.intent(
                    start.key, "StartJobRun", shard=start.shard, sample=start.sample, token=start.run_key
                )
                try:
                    response = self.ctx.call(f"StartJobRun for {start.label}", self._send, **start.request)
                except _NoSlot:
                    refused = True
                except _OutcomeUnknown as exc:
                    self.ctx.sleep(delay)  # give the run, if there is one, time to be listed
                    delay = min(delay * 2, MAX_BACKOFF)
                    try:
                        found = _scan(self.ctx, self.glue, start.job).ours.get(start.run_key)
                    except SubmissionError as lookup:
                        self._fail(
                            start,
                            f"StartJobRun may have started a run ({exc}) and GetJobRuns failed: {lookup}; submit again to reconcile",
                        )
                        return
                    if found is not None:
                        started = True
                        self._started(start, found["Id"], found.get("JobRunState"))
                        return
                    unknown += 1
                    if unknown >= MAX_UNKNOWN_OUTCOMES:
                        self._fail(
                            start, f"StartJobRun did not answer ({exc}) {unknown} times, and no run carries its key"
                        )
                        return
                    continue
                except SubmissionError as exc:
                    self._fail(start, str(exc))
                    return
                else:
                    started = True
                    self._started(start, response["JobRunId"])
                    return
            finally:
                if slots is not None:
                    slots.release(started=started, refused=refused)
            if slots is None:  # queuing asked for, yet refused: wait as the service asks
                self.ctx.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _started(self, start: _Start, run_id: str, state: str | None = None) -> None:
        self.record(start, run_id, state)
        with self._gate:
            self.started += 1


def _per_run_starts(ctx: Any, done: set[str]) -> Iterator[_Start]:
    """A start per sample not yet journaled as done, in plan order, its shard read line by line."""
    samples = ctx.samples()
    for shard in ctx.manifest["shards"]:
        ids = samples.filter(pl.col("shard") == shard["index"]).sort("position").get_column("id").to_list()
        with open(_path(ctx, shard), encoding="utf-8") as handle:
            next(handle)  # "["
            for position, (sample, line) in enumerate(zip(ids, handle)):
                key = f"StartJobRun:{sample}"
                if key in done:
                    continue
                request = orjson.loads(line.rstrip("\n").removesuffix(","))
                arguments = request.get("Arguments") or {}
                reserved = sorted(name for name in arguments if name.startswith(RESERVED_PREFIX))
                if reserved:
                    raise InputError(
                        f"sample {sample}: argument {reserved[0]} is reserved for the planner; rename the column"
                    )
                token = run_key(ctx.plan_id, sample)
                request["Arguments"] = {**arguments, RUN_KEY: token}
                yield _Start(key, token, shard["index"], sample, position, request)


def _path(ctx: Any, shard: dict[str, Any]) -> str:
    return os.path.join(ctx.plan_dir, shard["path"])


def _manifest_request(ctx: Any, shard: dict[str, Any], uri: str, etag: str, index: tuple[str, str]) -> dict[str, Any]:
    request = orjson.loads(orjson.dumps(ctx.manifest["defaults"]))
    request["Arguments"] = {
        **(request.get("Arguments") or {}),
        MANIFEST: uri,
        MANIFEST_ETAG: etag,
        FIRST_INDEX: "0",
        INDEX_URI: index[0],
        INDEX_ETAG: index[1],
        RUN_KEY: shard_run_key(ctx.plan_id, shard["index"]),
    }
    return request


def _manifest_starts(ctx: Any, done: set[str]) -> Iterator[_Start]:
    for shard in ctx.manifest["shards"]:
        index = shard["index"]
        key = f"StartJobRun:{index:05d}"
        if key in done:
            continue
        data = _index_bytes(ctx, shard)
        bucket, index_key = _index_location(ctx, data)
        if ctx.dry_run:
            index_etag = f'"{hashlib.md5(data).hexdigest()}"'
            request = _manifest_request(
                ctx,
                shard,
                f"s3://{bucket}/{_staged_key(ctx, shard)}",
                shard["etag"],
                (f"s3://{bucket}/{index_key}", index_etag),
            )
        else:
            staged = ctx.ledger.staged(index)
            if staged is None:
                raise SubmissionError(f"shard {index} is not staged; staging must come first")
            ctx.stager.verify(staged)  # the script reads it with IfMatch: refuse a changed object before starting
            request = _manifest_request(
                ctx, shard, ctx.stager.uri(staged), staged.etag, _stage_index(ctx, data, bucket, index_key)
            )
        yield _Start(key, shard_run_key(ctx.plan_id, index), index, None, None, request)


def _warn_secrets(starts: Iterable[_Start]) -> None:
    names = sorted(
        {
            name
            for start in starts
            for name in (start.request.get("Arguments") or {})
            if _SECRET_NAME.search(name) and not name.startswith(RESERVED_PREFIX)
        }
    )
    if names:
        print(
            f"warning: Glue argument{'s' if len(names) > 1 else ''} {', '.join(names)} look{'' if len(names) > 1 else 's'} like "
            "a secret, and Glue may log job arguments: pass secrets through Secrets Manager or a Glue connection instead",
            file=sys.stderr,
        )


def submit(ctx: Any) -> dict[str, Any]:
    from ..submit import request_problems

    done = ctx.ledger.done_keys()
    manifest = manifest_mode(ctx.manifest)
    starts = list(_manifest_starts(ctx, done) if manifest else _per_run_starts(ctx, done))
    _warn_secrets(starts)
    summary = {"backend": SPEC.name, "plan_id": ctx.plan_id, "mode": "manifest" if manifest else "per-run"}
    total = len(ctx.manifest["shards"]) if manifest else ctx.manifest["runs"]
    if ctx.dry_run:
        for start in starts:
            where = {"sample": start.sample} if start.sample is not None else {"shard": start.shard}
            ctx.emit(
                {
                    "operation": "StartJobRun",
                    **where,
                    "problems": request_problems("glue", "StartJobRun", start.request),
                    "request": start.request,
                }
            )
        return {**summary, "job_runs": total}

    glue = _glue(ctx)
    jobs = sorted({start.job for start in starts})
    slots: dict[str, _Slots] = {}
    found: dict[str, dict[str, Any]] = {}
    for job in jobs:  # before anything is sent: what runs already, and which of those are this plan's
        limit = _max_concurrent_runs(ctx, glue, job)
        runs = _scan(ctx, glue, job)
        slots[job] = _Slots(ctx, glue, job, limit, runs.active)
        found.update(runs.ours)
    submitter = _Submitter(ctx, glue, slots)
    pending = []
    for start in starts:
        run = found.get(start.run_key)
        if run is not None and run.get("JobName", start.job) == start.job:
            ctx.ledger.intent(start.key, "StartJobRun", shard=start.shard, sample=start.sample, token=start.run_key)
            submitter.record(start, run["Id"], run.get("JobRunState"))
        else:
            pending.append(start)
    with (
        tqdm(
            total=len(pending), unit="run", desc="StartJobRun", file=sys.stderr, disable=not ctx.progress, leave=False
        ) as bar,
        ThreadPoolExecutor(max_workers=ctx.concurrency, thread_name_prefix="planner-startjobrun") as pool,
    ):
        for _ in pool.map(submitter.start, pending):
            bar.update(1)
    failures = submitter.failures
    if failures:
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise SubmissionError(
            f"{len(failures)} of {len(pending)} job runs could not be started ({shown}); `planner status` lists them and `planner retry` plans them again"
        )
    return {
        **summary,
        "job_runs_started": submitter.started,
        "job_runs_found": len(starts) - len(pending),  # started before, found by their run key
        "job_runs_already_started": total - len(starts),
        "job_runs": total,
        "runs": ctx.manifest["runs"],
    }


def refresh(ctx: Any) -> None:
    """Every started run's JobRunState and ErrorMessage, one GetJobRuns pass per job."""
    started = [s for s in ctx.ledger.submissions("done") if s.kind == "StartJobRun" and s.remote_id]
    if not started:
        return
    glue = ctx.clients.get("glue")
    jobs = sorted({str((s.response or {}).get("JobName") or ctx.manifest["defaults"].get("JobName")) for s in started})
    by_key: dict[str, dict[str, Any]] = {}
    by_id: dict[str, dict[str, Any]] = {}
    for job in jobs:
        for run in _job_runs(ctx, glue, job):
            key = (run.get("Arguments") or {}).get(RUN_KEY)
            if key and key.startswith(f"{ctx.plan_id}:"):
                by_key.setdefault(key, run)
            by_id[run["Id"]] = run
    samples = ctx.samples()
    places: dict[str, tuple[int, int]] | None = None
    updates: list[tuple[str, int, int, str | None, str | None, str | None, str | None]] = []
    for submission in started:
        run = by_key.get(submission.token or "") or by_id.get(submission.remote_id)
        if run is None:
            continue  # no longer listed (Glue keeps job runs for a limited time): the ledger keeps what it knew
        state, reason = run.get("JobRunState"), run.get("ErrorMessage")
        if submission.sample is not None:
            if places is None:
                places = {
                    sample: (shard, position)
                    for sample, shard, position in samples.select("id", "shard", "position").iter_rows()
                }
            updates.append((submission.sample, *places[submission.sample], run["Id"], None, state, reason))
        else:
            rows = samples.filter(pl.col("shard") == submission.shard)
            updates.extend(
                (sample, int(submission.shard or 0), position, run["Id"], None, state, reason)
                for sample, position in rows.select("id", "position").iter_rows()
            )
    ctx.ledger.upsert_samples(updates)


def cancel(ctx: Any) -> int:
    """Stop every started run that has not ended (states refreshed first): BatchStopJobRun, 25 run ids a call."""
    refresh(ctx)
    glue = ctx.clients.get("glue")
    # The latest run and state, per sample and per shard (a Glue retry attempt is a new run id).
    by_sample = {row[0]: (row[3], row[5]) for row in ctx.ledger.samples()}
    by_shard = {row[1]: (row[3], row[5]) for row in ctx.ledger.samples()}
    by_job: dict[str, list[str]] = {}
    for submission in ctx.ledger.submissions("done"):
        if submission.kind != "StartJobRun" or not submission.remote_id:
            continue
        known = by_sample.get(submission.sample) if submission.sample is not None else by_shard.get(submission.shard)
        run_id, state = (known[0] or submission.remote_id, known[1]) if known else (submission.remote_id, None)
        if state in FINAL_STATES:
            continue
        job = str((submission.response or {}).get("JobName") or ctx.manifest["defaults"].get("JobName"))
        if run_id not in by_job.setdefault(job, []):
            by_job[job].append(run_id)
    stopped = 0
    for job, run_ids in sorted(by_job.items()):
        for start in range(0, len(run_ids), MAX_STOP_IDS):
            chunk = run_ids[start : start + MAX_STOP_IDS]
            response = ctx.call(f"BatchStopJobRun {job}", glue.batch_stop_job_run, JobName=job, JobRunIds=chunk)
            stopped += len(response.get("SuccessfulSubmissions", []))
            for error in response.get("Errors", []):
                detail = error.get("ErrorDetail") or {}
                print(
                    f"glue: run {error.get('JobRunId')} of {job} not stopped: {detail.get('ErrorCode', '')}: {detail.get('ErrorMessage', '')}",
                    file=sys.stderr,
                )
    return stopped


# The line index of a manifest, in the format ``child_settings`` reads.


def _index_bytes(ctx: Any, shard: dict[str, Any]) -> bytes:
    from ..child_settings import entry_count, line_index

    data = line_index(_path(ctx, shard))
    if entry_count(data) != shard["entries"]:
        raise SubmissionError(
            f"{shard['path']}: {entry_count(data)} lines, but plan.json says {shard['entries']} entries: the plan directory was changed; plan again"
        )
    return data


def _staged_key(ctx: Any, shard: dict[str, Any]) -> str:
    from ..staging import StagingPrefix

    return StagingPrefix.parse(ctx.staging_uri or "s3://STAGING-BUCKET/").key(ctx.plan_id, shard["sha256"])


def _index_location(ctx: Any, data: bytes) -> tuple[str, str]:
    from ..staging import StagingPrefix

    location = StagingPrefix.parse(ctx.staging_uri or "s3://STAGING-BUCKET/")
    return location.bucket, location.key(ctx.plan_id, hashlib.sha256(data).hexdigest()).removesuffix(".json") + ".index"


def _stage_index(ctx: Any, data: bytes, bucket: str, key: str) -> tuple[str, str]:
    """Put a shard's line index on S3, never over another object; reuse an identical one.  (URI, ETag)"""
    digest = hashlib.md5(data).digest()
    etag = f'"{digest.hex()}"'
    uri = f"s3://{bucket}/{key}"
    s3 = ctx.clients.get("s3")

    def existing() -> str | None:
        try:
            return str(s3.head_object(Bucket=bucket, Key=key)["ETag"])
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404 or exc.response.get(
                "Error", {}
            ).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise SubmissionError(f"{uri}: cannot check the index object: {exc}") from exc
        except BotoCoreError as exc:
            raise SubmissionError(f"{uri}: cannot reach S3: {exc}") from exc

    def same_or_fail(found: str) -> tuple[str, str]:
        if found != etag:
            raise SubmissionError(
                f"{uri} already exists with ETag {found}, but this shard's line index has ETag {etag}: refusing to overwrite it; remove the object or stage under another prefix"
            )
        return uri, etag

    found = existing()
    if found is not None:
        return same_or_fail(found)
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            IfNoneMatch="*",
            ContentType="application/octet-stream",
            ContentMD5=base64.b64encode(digest).decode(),
        )
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 412 or exc.response.get("Error", {}).get("Code") in (
            "PreconditionFailed",
            "ConditionalRequestConflict",
        ):
            found = existing()  # another writer got there first: fine if it wrote the same bytes
            if found is not None:
                return same_or_fail(found)
        raise SubmissionError(f"{uri}: cannot stage the line index: {exc}") from exc
    except BotoCoreError as exc:
        raise SubmissionError(f"{uri}: cannot reach S3: {exc}") from exc
    return uri, etag


def prepare_sandbox(ctx: Any) -> None:
    """Create in the sandbox the Glue jobs the plan names (a glueetl job, MaxConcurrentRuns 2)."""
    glue = ctx.clients.get("glue")
    jobs = {str(ctx.manifest["defaults"].get("JobName"))}
    if not manifest_mode(ctx.manifest):
        jobs |= {start.job for start in _per_run_starts(ctx, set())}
    for job in sorted(jobs):
        try:
            glue.get_job(JobName=job)
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "EntityNotFoundException":
                raise SubmissionError(f"GetJob {job}: {exc}") from exc
        ctx.call(
            f"CreateJob {job}",
            glue.create_job,
            Name=job,
            Role=SANDBOX_ROLE,
            GlueVersion="4.0",
            Command={"Name": "glueetl", "ScriptLocation": SANDBOX_SCRIPT, "PythonVersion": "3"},
            ExecutionProperty={"MaxConcurrentRuns": SANDBOX_MAX_CONCURRENT_RUNS},
        )
