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
(another client took a slot) is waited out by the engine, with one line on stderr.  A request
with ``JobRunQueuingEnabled = true`` is sent at once: Glue queues it.

Manifest mode (``[submission] mode = "manifest"``): each shard is staged on S3
as it is, and one job run per shard gets, besides the default ``Arguments``:
``--planner-manifest`` (its s3:// URI), ``--planner-manifest-etag`` (the ETag as S3
reports it, quotes included, for ``IfMatch``), ``--planner-first-index`` (``"0"``:
entry 0 of the shard is the run's first sample), ``--planner-index-uri`` and
``--planner-index-etag``: the shard's line index (``child_settings.line_index``:
8-byte big-endian offsets of each entry's line, then where the closing ``]`` line
starts), staged beside it as ``<plan_id>/<sha256 of the index>.index``.  A Glue
script reads entry i with two ranged GETs: ``planner.commands.child_settings.read_child_settings(
**glue_arguments(sys.argv), index=i)``.  The job run itself takes its fields
(``JobName``, ``WorkerType``, ...) from ``[run]``, so a sheet column naming one of
those fields is refused in this mode (a ``param.`` column passes the value to the script).

Status comes from ``GetJobRuns`` (paginated, every page read), mapped back to samples by the run
key, the later attempt where Glue retried a run (``later_attempt``: never the listing's order, which
is newest first on AWS and oldest first in moto): ``state`` is the ``JobRunState``,
``reason`` the ``ErrorMessage`` and ``log`` the run's CloudWatch log group and stream
(its id); a plan whose runs have all ended asks nothing.  Runs
that ended badly are in FAILED, ERROR, TIMEOUT, STOPPED or EXPIRED
(``RETRY_STATES``).  ``cancel`` stops runs with ``BatchStopJobRun``, 25 ids a call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import ClientError

from planner.backends.base import ALREADY_FINAL, CANCELLED, NOT_CANCELLED, Backend, CancelOutcome, CancelReport
from planner.core.ledger import SampleState
from planner.core.model import SCALAR_TYPES, check_shape, operation_input, rule_for
from planner.core.progress import log
from planner.core.shard import ShardInfo
from planner.core.spec import BackendSpec, RoutedField
from planner.engine.context import Context, error_code
from planner.engine.engine import Call, Created, Later, Phase, Place, model_check, no_blind_retry
from planner.errors import InputError, Problem, SubmissionError
from planner.services.aws import MAX_BACKOFF

MAX_TIMEOUT_MINUTES = 10_079
RESERVED_PREFIX = "--planner-"  # the planner's own arguments: run key and manifest location
_INPUT = operation_input("glue", "StartJobRun")
_ARGUMENTS = _INPUT.members["Arguments"]
_OVERRIDES = {"Timeout": rule_for("Timeout", _INPUT.members["Timeout"]).with_limits(max=MAX_TIMEOUT_MINUTES)}
_PER_RUN = [name for name, shape in _INPUT.members.items() if shape.type_name in SCALAR_TYPES and name != "JobRunId"]
_REQUEST_ONLY = frozenset(_INPUT.members) - set(_PER_RUN) - {"Arguments"}  # NotificationProperty, JobRunId...


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
                f"sheet column{'s' if len(per_sample) > 1 else ''} {', '.join(per_sample)} set job-run fields "
                "per sample, but in manifest mode one job run serves a whole shard and takes its fields "
                "from [run]: set them in [run], or name the columns "
                f"param.{per_sample[0]} (and so on) to pass them to the script as arguments",
            )
        )
    return found


def _argument_name_check(key: str) -> str | None:
    """A sheet column becomes ``--KEY``; Glue's getResolvedOptions cannot read a name with a hyphen ("Accessing
    parameters using getResolvedOptions", AWS Glue Developer Guide: "The arguments use only underscores, not
    hyphens. Your arguments need to follow this convention to be resolved").  Glue's own hyphenated job
    parameters (--enable-metrics, ...; "Using job parameters in AWS Glue jobs") are read by Glue itself,
    not the script: they are set once for all runs in [run.Arguments], where they are not refused."""
    name = key[2:] if key.startswith("--") else key
    if "-" not in name:
        return None
    return (
        f"becomes the Glue argument --{name}, which the job's script cannot read with getResolvedOptions "
        f"(Glue argument names use underscores, not hyphens): rename the column so that it is "
        f"--{name.replace('-', '_')}; "
        "one of Glue's own job parameters goes in [run.Arguments] of the defaults file"
    )


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
    request_only=_REQUEST_ONLY,
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
    parameter_name_check=_argument_name_check,
    final_states=FINAL_STATES,
    retry_states=RETRY_STATES,
    moving_states=frozenset({"STARTING", "RUNNING", "STOPPING", "WAITING"}),  # the model's JobRunState, less final
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

# Glue writes job arguments to its logs (seeds/002): names like these deserve a warning.
_SECRET_NAME = re.compile(r"password|secret|token|key|credential", re.IGNORECASE)


def run_key(plan_id: str, sample: str) -> str:
    return f"{plan_id}:{hashlib.sha256(sample.encode()).hexdigest()[:32]}"


def shard_run_key(plan_id: str, index: int) -> str:
    return f"{plan_id}:shard-{index:05d}"


def manifest_mode(submission: dict[str, Any]) -> bool:
    return submission.get("mode") == "manifest"


@dataclass
class _Start:
    """One StartJobRun to make: a sample's run, or in manifest mode a shard's."""

    key: str  # the ledger key
    run_key: str
    shard: ShardInfo
    place: Place | None  # None in manifest mode: the run serves the whole shard
    request: dict[str, Any]

    @property
    def job(self) -> str:
        return str(self.request["JobName"])

    @property
    def label(self) -> str:
        return f"sample {self.place.id}" if self.place is not None else f"shard {self.shard.index}"


def job_runs(ctx: Context, glue: Any, job: str) -> Iterator[dict[str, Any]]:
    """Every run of ``job``, page by page."""
    params: dict[str, Any] = {"JobName": job, "MaxResults": PAGE_SIZE}
    while True:
        page = ctx.call(f"GetJobRuns {job}", glue.get_job_runs, **params)
        yield from page.get("JobRuns", [])
        if not page.get("NextToken"):
            return
        params["NextToken"] = page["NextToken"]


def later_attempt(known: dict[str, Any] | None, run: dict[str, Any]) -> dict[str, Any]:
    """Of two runs with one run key (Glue's own retry of a run carries its Arguments), the later attempt.

    Not the order of GetJobRuns: AWS lists newest first (API reference), moto oldest first.  A run that
    names the other as ``PreviousRunId`` is its retry; otherwise the higher ``Attempt``, then ``StartedOn``.
    """
    if known is None or run.get("PreviousRunId") == known.get("Id"):
        return run
    if known.get("PreviousRunId") == run.get("Id"):
        return known

    def rank(candidate: dict[str, Any]) -> tuple[int, float]:
        started = candidate.get("StartedOn")
        return int(candidate.get("Attempt") or 0), started.timestamp() if isinstance(started, dt.datetime) else 0.0

    return run if rank(run) > rank(known) else known


@dataclass
class _JobRuns:
    active: int  # runs of the job holding a slot, whoever started them
    ours: dict[str, dict[str, Any]]  # this plan's runs by run key


def _scan(ctx: Context, glue: Any, job: str) -> _JobRuns:
    prefix = f"{ctx.plan_id}:"
    active = 0
    ours: dict[str, dict[str, Any]] = {}
    for run in job_runs(ctx, glue, job):
        if run.get("JobRunState") in ACTIVE_STATES:
            active += 1
        key = (run.get("Arguments") or {}).get(RUN_KEY)
        if key and key.startswith(prefix):
            ours[key] = later_attempt(ours.get(key), run)
    return _JobRuns(active, ours)


class _Slots:
    """The run slots of one job: a start goes out only while one is free.

    ``free`` is what the last count left, minus the starts let through since.
    When it reaches 0, the next start waits for the starts still in flight to
    return, then counts the job's active runs (GetJobRuns); while none is free
    it backs off on ``ctx.sleep`` and counts again.  One thread waits and counts
    at a time, and only with nothing in flight, so a count is never stale.
    """

    def __init__(self, ctx: Context, glue: Any, job: str, limit: int, active: int):
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
                    log.warning(
                        "glue: all %d run slots of job %s (MaxConcurrentRuns) are taken; waiting for runs to end "
                        "(JobRunQueuingEnabled = true in the defaults lets Glue queue runs instead)",
                        self.limit,
                        self.job,
                    )
                self.ctx.sleep(delay)
                self.ctx.stop.check()  # asked to stop while waiting for a slot: start nothing
                delay = min(delay * 2, MAX_BACKOFF)

    def release(self, *, started: bool, refused: bool = False) -> None:
        with self._changed:
            self.calls -= 1
            if refused:
                self.free = 0  # someone else holds slots: count again before the next start
            elif not started:
                self.free += 1
            self._changed.notify_all()


class Glue(Backend):
    spec = SPEC

    def phases(self) -> Iterator[Phase]:
        manifest = self.ctx.manifest
        in_manifest_mode = manifest_mode(manifest.submission)
        starts = list(self._manifest_starts() if in_manifest_mode else self._per_run_starts())
        _warn_secrets(starts)
        self._ours: dict[str, dict[str, Any]] = {}
        self._slots: dict[str, _Slots] = {}
        if not self.ctx.dry_run:
            glue = self.ctx.clients.get("glue")
            no_blind_retry(glue, "StartJobRun")
            pending = [s for s in starts if s.key not in self._done]
            for job in sorted({s.job for s in pending}):
                # Before anything is sent: how many runs hold the job's slots, and which are this plan's.
                limit = self._max_concurrent_runs(glue, job)
                runs = _scan(self.ctx, glue, job)
                self._slots[job] = _Slots(self.ctx, glue, job, limit, runs.active)
                self._ours.update(runs.ours)
        unit = "job run"
        total = len(manifest.shards) if in_manifest_mode else manifest.runs
        yield Phase("StartJobRun", unit, (self._call(s) for s in starts), total=total, find_first=True)

    @property
    def _done(self) -> set[str]:
        if not hasattr(self, "_done_keys"):
            self._done_keys = self.ctx.ledger.done_keys()
        return self._done_keys

    def _per_run_starts(self) -> Iterator[_Start]:
        """A start per sample not yet journaled as done, in plan order, its shard read line by line."""
        for shard in self.ctx.manifest.shards:
            ids = self.ids_by_position(shard).to_list()
            for position, (sample, line) in enumerate(zip(ids, self.ctx.plan.lines(shard), strict=True)):
                key = f"StartJobRun:{sample}"
                place = Place(sample, shard.index, position)
                if key in self._done:
                    yield _Start(key, run_key(self.ctx.plan_id, sample), shard, place, {"JobName": ""})
                    continue
                request = orjson.loads(line)
                arguments = request.get("Arguments") or {}
                reserved = sorted(name for name in arguments if name.startswith(RESERVED_PREFIX))
                if reserved:
                    raise InputError(
                        f"sample {sample}: argument {reserved[0]} is reserved for the planner; rename the column"
                    )
                token = run_key(self.ctx.plan_id, sample)
                request["Arguments"] = {**arguments, RUN_KEY: token}
                yield _Start(key, token, shard, place, request)

    def _manifest_starts(self) -> Iterator[_Start]:
        for shard in self.ctx.manifest.shards:
            key = f"StartJobRun:{shard.index:05d}"
            job = {"JobName": str(self.ctx.manifest.defaults.get("JobName"))}  # the full request is built when sent
            yield _Start(key, shard_run_key(self.ctx.plan_id, shard.index), shard, None, job)

    def _manifest_request(self, start: _Start) -> dict[str, Any]:
        shard = start.shard
        index = self.line_index(shard)
        if self.ctx.dry_run:
            shard_uri, shard_etag, index_uri, index_etag = self.ctx.predicted_staging(shard, index)
        else:
            staged = self.ctx.ledger.staged(shard.index)
            if staged is None:
                raise SubmissionError(f"shard {shard.index} is not staged; staging must come first")
            staged = self.ctx.stager.verify(staged)  # the script reads it with IfMatch: refuse a changed object
            staged_index = self.ctx.stager.verify(self.ctx.stager.stage_index(shard, index), index)
            shard_uri, shard_etag, index_uri, index_etag = staged.uri, staged.etag, staged_index.uri, staged_index.etag
        request = orjson.loads(orjson.dumps(self.ctx.manifest.defaults))
        request["Arguments"] = {
            **(request.get("Arguments") or {}),
            MANIFEST: shard_uri,
            MANIFEST_ETAG: shard_etag,
            FIRST_INDEX: "0",
            INDEX_URI: index_uri,
            INDEX_ETAG: index_etag,
            RUN_KEY: start.run_key,
            **self.ctx.child_arguments(),  # --planner-expected-bucket-owner: the script reads with it
        }
        return request

    def _call(self, start: _Start) -> Call:
        def covers() -> list[Place]:
            return [start.place] if start.place is not None else self.places(start.shard)

        def build() -> dict[str, Any]:
            if start.place is None:
                start.request = self._manifest_request(start)
            return start.request

        def find(fresh: bool) -> Created | None:
            job = start.job
            if fresh:
                self._ours.update(_scan(self.ctx, self.ctx.clients.get("glue"), job).ours)
            run = self._ours.get(start.run_key)
            if run is None or run.get("JobName", job) != job:
                return None
            return Created(run["Id"], {"JobName": job, "JobRunId": run["Id"]}, run.get("JobRunState"))

        def send(request: dict[str, Any]) -> Created:
            job = str(request["JobName"])
            slots = None if request.get("JobRunQueuingEnabled") else self._slots.get(job)
            if slots is not None:
                slots.acquire()
            started = refused = False
            try:
                response = self.ctx.clients.get("glue").start_job_run(**request)
                started = True
            except ClientError as exc:
                if error_code(exc) != "ConcurrentRunsExceededException":
                    raise
                refused = True
                raise Later(f"ConcurrentRunsExceededException: all run slots of job {job} are taken") from exc
            finally:
                if slots is not None:
                    slots.release(started=started, refused=refused)
            return Created(response["JobRunId"], {"JobName": job, "JobRunId": response["JobRunId"]})

        return Call(
            key=start.key,
            operation="StartJobRun",
            label=start.label,
            covers=covers,
            build=build,
            send=send,
            find=find,
            token=start.run_key,
            shard=start.shard.index,
            sample=start.place.id if start.place is not None else None,
            one_to_one=start.place is not None,
            where={"sample": start.place.id} if start.place is not None else {"shard": start.shard.index},
            check=model_check("glue", "StartJobRun"),
        )

    def _max_concurrent_runs(self, glue: Any, job: str) -> int:
        found = self.ctx.call(f"GetJob {job}", glue.get_job, JobName=job)["Job"]
        return int((found.get("ExecutionProperty") or {}).get("MaxConcurrentRuns") or DEFAULT_MAX_CONCURRENT_RUNS)

    def _jobs(self, started: list[Any]) -> list[str]:
        default = self.ctx.manifest.defaults.get("JobName")
        return sorted({str((s.response or {}).get("JobName") or default) for s in started})

    def refresh(self) -> None:
        """Every moving run's JobRunState and ErrorMessage, one GetJobRuns pass per job."""
        known = {s.id: s for s in self.ctx.ledger.samples()}
        started = [s for s in self.ctx.ledger.submissions("done", kind="StartJobRun") if s.remote_id]
        moving = [s for s in started if not self._settled(s, known)]
        if not moving:
            return
        glue = self.ctx.clients.get("glue")
        by_key: dict[str, dict[str, Any]] = {}
        by_id: dict[str, dict[str, Any]] = {}
        for job in self._jobs(moving):
            for run in job_runs(self.ctx, glue, job):
                key = (run.get("Arguments") or {}).get(RUN_KEY)
                if key and key.startswith(f"{self.ctx.plan_id}:"):
                    by_key[key] = later_attempt(by_key.get(key), run)
                by_id[run["Id"]] = run
        places = self.place_index()
        updates: list[SampleState] = []
        for submission in moving:
            found = by_key.get(submission.token or "") or by_id.get(str(submission.remote_id))
            if found is None:
                continue  # no longer listed (Glue keeps job runs for a limited time): the ledger keeps what it knew
            state, reason = found.get("JobRunState"), found.get("ErrorMessage")
            log_at = f"{found.get('LogGroupName') or '/aws-glue/jobs'} {found['Id']}"
            if submission.sample is not None:
                place = places[submission.sample]
                updates.append(
                    SampleState(place.id, place.shard, place.position, found["Id"], None, None, state, reason, log_at)
                )
            else:
                updates.extend(
                    SampleState(p.id, p.shard, p.position, found["Id"], None, None, state, reason, log_at)
                    for p in self.places(int(submission.shard or 0))
                )
        self.ctx.ledger.upsert_samples(updates)

    def _settled(self, submission: Any, known: dict[str, SampleState]) -> bool:
        if submission.sample is not None:
            row = known.get(submission.sample)
            return row is not None and row.state in FINAL_STATES
        return all(
            (known.get(p.id) is not None and known[p.id].state in FINAL_STATES)
            for p in self.places(int(submission.shard or 0))
        )

    def cancel(self) -> CancelReport:
        """Stop every started run that has not ended (states refreshed first): BatchStopJobRun, 25 run ids a call."""
        self.refresh()
        glue = self.ctx.clients.get("glue")
        report = self.report()
        known = {s.id: s for s in self.ctx.ledger.samples()}
        by_shard = {s.shard: s for s in known.values()}
        by_job: dict[str, list[tuple[str, int]]] = {}
        final = 0
        for submission in self.ctx.ledger.submissions("done", kind="StartJobRun"):
            if not submission.remote_id:
                continue
            row = (
                known.get(submission.sample)
                if submission.sample is not None
                else by_shard.get(int(submission.shard or 0))
            )
            samples = (
                1 if submission.sample is not None else self.ctx.manifest.shard(int(submission.shard or 0)).entries
            )
            run_id = (row.remote_id if row is not None else None) or submission.remote_id
            if row is not None and row.state in FINAL_STATES:
                final += samples
                continue
            job = self._jobs([submission])[0]
            if all(run_id != r for r, _ in by_job.get(job, [])):
                by_job.setdefault(job, []).append((run_id, samples))
        if final:
            report.outcomes.append(CancelOutcome(f"{final} job runs' samples", ALREADY_FINAL, "had ended", final))
        for job, runs in sorted(by_job.items()):
            for start in range(0, len(runs), MAX_STOP_IDS):
                chunk = dict(runs[start : start + MAX_STOP_IDS])
                try:
                    response = self.ctx.call(
                        f"BatchStopJobRun {job}", glue.batch_stop_job_run, JobName=job, JobRunIds=list(chunk)
                    )
                except SubmissionError as exc:
                    report.outcomes += [
                        CancelOutcome(f"run {r} of {job}", NOT_CANCELLED, str(exc), n) for r, n in chunk.items()
                    ]
                    continue
                for done in response.get("SuccessfulSubmissions", []):
                    run = done.get("JobRunId")
                    report.outcomes.append(CancelOutcome(f"run {run} of {job}", CANCELLED, None, chunk.get(run, 1)))
                for error in response.get("Errors", []):
                    detail = error.get("ErrorDetail") or {}
                    run = error.get("JobRunId")
                    said = f"{detail.get('ErrorCode', '')}: {detail.get('ErrorMessage', '')}".strip(": ")
                    report.outcomes.append(CancelOutcome(f"run {run} of {job}", NOT_CANCELLED, said, chunk.get(run, 1)))
        return report


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
        plural = len(names) > 1
        log.warning(
            "Glue argument%s %s look%s like a secret, and Glue may log job arguments: "
            "pass secrets through Secrets Manager or a Glue connection instead",
            "s" if plural else "",
            ", ".join(names),
            "" if plural else "s",
        )


BACKEND = Glue
