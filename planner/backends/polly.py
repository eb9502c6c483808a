"""Elucidata Polly pipelines: one run (create_run) holding one job per sample (submit_job).

Polly has no botocore model, so its rules are written here from the SDK reference
(seeds/003, polly-python's ``pipelines.py``): a run has a ``pipeline_id``, an optional
``run_name`` (sent as the attribute ``name``, as the SDK does), a ``priority`` of
low, medium or high, ``tags`` and a ``domain_context``; a job has a ``name``,
``parameters`` and ``config`` ``{"infra": {"cpu", "memory", "storage"}}``.  The job
name is the sample id, which makes resubmission checkable: a resumed submit lists
the run's jobs and submits only the missing names.

Submission speaks Polly's JSON:API through ``planner/polly_api.py`` (calls, retries,
where the API key comes from and where it never goes).

One run per plan.  Its name is ``[submission] run_name`` (with ``-retry-<plan id>``
for a plan made by ``planner retry``) or ``planner-<plan id>``, and its tags carry
``planner_plan_id``.  Polly does not require run names to be unique, so the run is
recognised by name and that tag: before creating it, submit looks it up (a crash
between the call and the journal, or a lost ledger, cannot make a second run).
Jobs go ``JOBS_PER_REQUEST`` to a request (fewer when ``MAX_REQUEST_BYTES`` would be
passed), packed over the whole plan in plan order, so each request's ledger key is
the same on every resume.  Before sending, the run's jobs are listed (once, lazily):
names the run already has are recorded, not sent again; a 409 (a job name the run
already has) is settled the same way.

States: the SDK's jobs carry ``stage``, ``progress``, ``errored`` and ``finished``;
the ledger's state is FAILED (errored), COMPLETED (finished), PENDING (not started:
stage Queued or progress 0/N) or RUNNING, so ``planner retry`` picks errored jobs by
its default FAILED.  Polly's API has no cancel: ``planner cancel`` says so.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from planner.backends.base import ALREADY_FINAL, Backend, CancelOutcome, CancelReport
from planner.core.jsontext import dumps
from planner.core.ledger import SampleState
from planner.core.model import FieldRule, check_scalar
from planner.core.plandir import Manifest
from planner.core.spec import BackendSpec, RoutedField
from planner.engine.context import Context
from planner.engine.engine import Call, Created, Phase, Place
from planner.errors import PollyHTTPError, Problem, SubmissionError
from planner.services.polly_api import SANDBOX_KEY, JobsAnswer, PollyAPI

PRIORITIES = ("low", "medium", "high")
JOB_NAME = FieldRule("name", "string", min=1, max=255)
_INFRA = {name: FieldRule(name, "integer", min=1, max=1_000_000) for name in ("cpu", "memory", "storage")}
_RUN_FIELDS = {"parameters", "config"}
_SUBMISSION_RULES = {
    "pipeline_id": FieldRule("pipeline_id", "string", min=1, max=255),
    "run_name": FieldRule("run_name", "string", min=1, max=255),
    "priority": FieldRule("priority", "string", enum=PRIORITIES),
    "base_url": FieldRule("base_url", "string", min=1, pattern=r"^https?://\S+$"),
}


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found: list[Problem] = []
    for key in run:
        if key not in _RUN_FIELDS:
            found.append(
                Problem(None, None, key, None, "unknown-field", "a Polly job takes only parameters and config.infra")
            )
    config = run.get("config") or {}
    for key in config:
        if key != "infra":
            found.append(Problem(None, None, f"config.{key}", None, "unknown-field", "config holds only infra"))
    for key, value in (config.get("infra") or {}).items():
        rule = _INFRA.get(key)
        if rule is None:
            found.append(
                Problem(None, None, f"config.infra.{key}", None, "unknown-field", "infra takes cpu, memory and storage")
            )
        else:
            found += check_scalar(rule, value, f"config.infra.{key}")
    if "pipeline_id" not in submission:
        found.append(
            Problem(None, None, "submission.pipeline_id", None, "required", "is required: the Polly pipeline to run")
        )
    for key, value in submission.items():
        rule = _SUBMISSION_RULES.get(key)
        if rule is not None:
            found += check_scalar(rule, value, f"submission.{key}")
        elif key in ("tags", "domain_context"):
            if not isinstance(value, dict):
                found.append(Problem(None, None, f"submission.{key}", None, "type", "must be a table"))
        elif "key" in key.lower() or "token" in key.lower() or "secret" in key.lower():
            # The value is not echoed: it may be the key itself.
            found.append(
                Problem(
                    None,
                    None,
                    f"submission.{key}",
                    None,
                    "secret",
                    "an API key never goes in the plan: set POLLY_API_KEY in the environment",
                )
            )
        else:
            found.append(
                Problem(
                    None,
                    None,
                    f"submission.{key}",
                    None,
                    "unknown-field",
                    "create_run takes pipeline_id, run_name, priority, tags, domain_context (and base_url)",
                )
            )
    return found


SPEC = BackendSpec(
    name="polly",
    title="Elucidata Polly pipelines (create_run + submit_job)",
    moving_states=frozenset({"PENDING", "RUNNING"}),  # what job_state maps a job still under way to
    id_field="name",
    id_rule=JOB_NAME,
    fields={name: RoutedField(("config", "infra", name), rule) for name, rule in _INFRA.items()},
    request_only=frozenset(_SUBMISSION_RULES) - {"base_url"} | {"tags", "domain_context", "config"},
    parameters_path=("parameters",),
    check_defaults=_check_defaults,
    submission_keys=frozenset(_SUBMISSION_RULES) | {"tags", "domain_context"},
)


# ---------------------------------------------------------------------------
# Submission.

JOBS_PER_REQUEST = 50
MAX_REQUEST_BYTES = 1024 * 1024
PLAN_TAG = "planner_plan_id"
RUN_KEY = "create_run"
RUN_PLACEHOLDER = "<the id create_run returns>"
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "DELETED"})
_JOB_STATUSES = {
    "SUCCEEDED": "COMPLETED",
    "SUCCESS": "COMPLETED",
    "COMPLETED": "COMPLETED",
    "FINISHED": "COMPLETED",
    "ERRORED": "FAILED",
    "ERROR": "FAILED",
    "FAILED": "FAILED",
    "RUNNING": "RUNNING",
    "PROCESSING": "RUNNING",
    "PENDING": "PENDING",
    "QUEUED": "PENDING",
    "CANCELLED": "CANCELLED",
    "ABORTED": "CANCELLED",
}


def run_name(manifest: Manifest) -> str:
    given = manifest.submission.get("run_name")
    if not given:
        return f"planner-{manifest.plan_id}"
    if manifest.retry_of:
        suffix = f"-retry-{manifest.plan_id[:12]}"
        return str(given)[: 255 - len(suffix)] + suffix
    return str(given)


def run_priority(manifest: Manifest) -> str:
    return str(manifest.submission.get("priority") or "low")  # the SDK's default


def run_request(manifest: Manifest) -> dict[str, Any]:
    """The create_run body; the SDK's defaults (priority low, empty tags and context) made explicit."""
    submission = manifest.submission
    tags = dict(submission.get("tags") or {})
    tags[PLAN_TAG] = manifest.plan_id
    # The SDK's create_run takes the keyword run_name and sends it as the attribute name.
    attributes = {
        "name": run_name(manifest),
        "priority": run_priority(manifest),
        "domain_context": dict(submission.get("domain_context") or {}),
        "tags": tags,
        "pipeline_id": submission["pipeline_id"],
    }
    return {"data": {"type": "runs", "attributes": attributes}}


def job_resource(run_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A submit_job body for one shard entry (the merged parameters and config of a sample)."""
    attributes = {
        "run_id": run_id,
        "name": entry["name"],
        "config": entry.get("config") or {},
        "parameters": entry.get("parameters") or {},
    }
    return {"type": "jobs", "attributes": attributes}


def job_state(attributes: dict[str, Any]) -> tuple[str, str | None]:
    """The ledger's (state, reason) for a job's attributes."""
    stage = attributes.get("stage")
    progress = attributes.get("progress")
    where = " ".join(
        str(p) for p in (f"at stage {stage}" if stage else None, f"({progress})" if progress else None) if p
    )
    if attributes.get("errored"):
        return "FAILED", f"errored {where}".strip()
    if attributes.get("finished"):
        return "COMPLETED", None
    status = attributes.get("status")
    if isinstance(status, str) and status.upper() in _JOB_STATUSES:
        state = _JOB_STATUSES[status.upper()]
        return state, (f"{status} {where}".strip() if state == "FAILED" else None)
    if isinstance(status, str) and status.strip():
        # A status the SDK documents nowhere (TERMINATED, KILLED...): kept as Polly says it, so
        # `planner status` shows it as unknown instead of taking it for a job still running.
        return status.strip().upper(), f"Polly job status {status!r}, which planner does not know"
    if str(stage or "").lower() in ("", "queued", "pending", "submitted") or str(progress or "").startswith("0/"):
        return "PENDING", None
    return "RUNNING", None


@dataclass(frozen=True)
class JobsRequest:
    """One POST /jobs: the samples it creates and their job bodies."""

    places: list[Place]
    jobs: list[dict[str, Any]]

    @property
    def names(self) -> list[str]:
        return [p.id for p in self.places]

    @property
    def key(self) -> str:
        digest = hashlib.sha256("\n".join(self.names).encode()).hexdigest()[:16]
        return f"submit_job:{self.names[0]}:{digest}"

    def body(self, run_id: str, only: set[str] | None = None) -> dict[str, Any]:
        return {
            "data": [
                dict(job, attributes=dict(job["attributes"], run_id=run_id))
                for place, job in zip(self.places, self.jobs, strict=True)
                if only is None or place.id in only
            ]
        }


@dataclass
class _RunJobs:
    """The run's jobs by name, listed once when first needed and again after a lost answer."""

    api: PollyAPI
    run_id: str
    jobs: dict[str, dict[str, Any]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        with self.lock:
            if self.jobs is None or fresh:
                self.jobs = self.api.jobs(self.run_id)
            return self.jobs


class Polly(Backend):
    spec = SPEC

    def staged_shards(self) -> list[int]:
        return []  # jobs travel in the requests themselves

    def phases(self) -> Iterator[Phase]:
        manifest = self.ctx.manifest
        api = None if self.ctx.dry_run else open_api(self.ctx)
        try:
            before = self.ctx.ledger.submission(RUN_KEY)
            yield Phase("create_run", "run", [self._run_call(api)], total=1, find_first=True)
            known = self.ctx.ledger.submission(RUN_KEY)
            run_id = known.remote_id if known is not None and known.remote_id else RUN_PLACEHOLDER
            listing = _RunJobs(api, run_id) if api is not None else None
            if (
                listing is not None
                and before is None
                and known is not None
                and not (known.response or {}).get("reconciled")
            ):
                listing.jobs = {}  # the run was made just now: it has no jobs yet, no need to ask
            calls = (self._jobs_call(api, listing, run_id, request) for request in self._requests())
            yield Phase("submit_job", "job", calls, total=manifest.runs, find_first=True)
        finally:
            if api is not None:
                api.close()

    def _run_call(self, api: PollyAPI | None) -> Call:
        manifest = self.ctx.manifest
        name = run_name(manifest)

        def found(run: dict[str, Any]) -> Created:
            attributes = run.get("attributes") or {}
            summary = {"id": run["id"], "name": attributes.get("name"), "pipeline_id": attributes.get("pipeline_id")}
            return Created(str(run["id"]), dict(summary, status=attributes.get("status")))

        def find(fresh: bool) -> Created | None:
            assert api is not None
            # A crash after the call, or a lost ledger: the run is recognised by its name and plan tag.
            run = api.find_run(name, run_priority(manifest), PLAN_TAG, manifest.plan_id)
            return found(run) if run is not None else None

        def send(request: dict[str, Any]) -> Created:
            assert api is not None
            return found(
                api.create_run(request, lambda: api.find_run(name, run_priority(manifest), PLAN_TAG, manifest.plan_id))
            )

        return Call(
            key=RUN_KEY,
            operation="create_run",
            label=f"run {name}",
            covers=lambda: [],
            build=lambda: run_request(manifest),
            send=send,
            find=find,
            token=name,
            check=lambda request: [
                p.describe() for p in _check_defaults(manifest.defaults, manifest.submission, set())
            ],
        )

    def _requests(self) -> Iterator[JobsRequest]:
        """Every sample's job, packed JOBS_PER_REQUEST to a request within MAX_REQUEST_BYTES, in plan order."""
        places: list[Place] = []
        jobs: list[dict[str, Any]] = []
        size = 16  # {"data":[]}
        for shard in self.ctx.manifest.shards:
            for position, line in enumerate(self.ctx.plan.lines(shard)):
                entry = orjson.loads(line)
                job = job_resource(RUN_PLACEHOLDER, entry)
                job_size = len(dumps(job)) + 1
                if jobs and (len(jobs) >= JOBS_PER_REQUEST or size + job_size > MAX_REQUEST_BYTES):
                    yield JobsRequest(places, jobs)
                    places, jobs, size = [], [], 16
                places.append(Place(str(entry["name"]), shard.index, position))
                jobs.append(job)
                size += job_size
        if jobs:
            yield JobsRequest(places, jobs)

    def _jobs_call(self, api: PollyAPI | None, listing: _RunJobs | None, run_id: str, request: JobsRequest) -> Call:
        what = f"submit_job for {len(request.names)} jobs from {request.names[0]}"

        def present(jobs: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
            return {
                n: (str(jobs[n]["id"]), job_state(jobs[n].get("attributes") or {})[0])
                for n in request.names
                if n in jobs
            }

        def find(fresh: bool) -> Created | None:
            assert listing is not None
            have = present(listing.get(fresh))
            if len(have) < len(request.names):
                return None
            return Created(run_id, {"jobs": {n: job for n, (job, _) in have.items()}}, per_sample=have)

        def send(body: dict[str, Any]) -> Created:
            assert api is not None and listing is not None
            have = present(listing.get())  # jobs of this request the run already has are not sent again
            missing = {n for n in request.names if n not in have}
            try:
                answer = api.post_jobs(request.body(run_id, missing), what) if missing else JobsAnswer({}, [])
            except PollyHTTPError as exc:
                if exc.status != 409:
                    raise
                have = present(listing.get(fresh=True))  # some of them were made after all: send the rest
                missing = {n for n in request.names if n not in have}
                answer = api.post_jobs(request.body(run_id, missing), what) if missing else JobsAnswer({}, [])
            made = {n: (str(job["id"]), job_state(job.get("attributes") or {})[0]) for n, job in answer.created.items()}
            every = {**have, **made}
            lacking = [n for n in request.names if n not in every]
            if lacking:
                # Those made are in the run: the next submit lists them and sends only the rest.
                said = f": {'; '.join(answer.refused[:3])}" if answer.refused else ""
                raise SubmissionError(
                    f"{what}: Polly did not make job{'s' if len(lacking) > 1 else ''} "
                    f"{', '.join(lacking[:3])}{' and more' if len(lacking) > 3 else ''}{said}"
                )
            return Created(run_id, {"jobs": {n: job for n, (job, _) in every.items()}}, per_sample=every)

        return Call(
            key=request.key,
            operation="submit_job",
            label=f"jobs {request.names[0]}..{request.names[-1]}",
            covers=lambda: request.places,
            build=lambda: request.body(run_id),
            send=send,
            find=find,
            token=orjson.dumps(request.names).decode(),
            count=len(request.names),
            where={"jobs": len(request.names), "first": request.names[0]},
        )

    def refresh(self) -> None:
        """Every sample's job id and state: get_run, then the run's jobs page by page."""
        known = self.ctx.ledger.submission(RUN_KEY)
        if known is None or known.state != "done" or not known.remote_id:
            return
        samples = {s.id: s for s in self.ctx.ledger.samples()}
        if samples and all(s.state in FINAL or s.submission_status == "FAILED" for s in samples.values()):
            return  # every job has ended: nothing can change any more
        api = open_api(self.ctx)
        try:
            try:
                api.get_run(known.remote_id)
            except PollyHTTPError as exc:
                if exc.status != 404:
                    raise
                gone = f"Polly's run {known.remote_id} was deleted"
                self.ctx.ledger.upsert_samples(
                    s._replace(state="DELETED", reason=gone) for s in samples.values() if s.state not in FINAL
                )
                return
            jobs = api.jobs(known.remote_id)
        finally:
            api.close()
        rows = []
        for place in self.place_index().values():
            job = jobs.get(place.id)
            if job is not None:
                state, reason = job_state(job.get("attributes") or {})
                rows.append(
                    SampleState(place.id, place.shard, place.position, str(job["id"]), None, "SUBMITTED", state, reason)
                )
        self.ctx.ledger.upsert_samples(rows)

    def cancel(self) -> CancelReport:
        # Nothing left to cancel is not a failure to cancel: say so, as the other backends do.
        self.refresh()
        known = self.ctx.ledger.submission(RUN_KEY)
        samples = self.ctx.ledger.samples()
        if known is not None and samples and all(s.state in FINAL or s.submission_status == "FAILED" for s in samples):
            target = f"run {known.remote_id}" if known.remote_id else "run"
            outcome = CancelOutcome(target, ALREADY_FINAL, "every job had ended", samples=len(samples))
            return CancelReport(self.ctx.manifest.backend, self.ctx.manifest.plan_id, [outcome])
        raise SubmissionError(
            "Polly's API has no cancel: the pipelines SDK offers create_run, submit_job, get_run and get_jobs only, "
            "so nothing was cancelled"
        )


BACKEND = Polly


def open_api(ctx: Context) -> PollyAPI:
    """The API client for this context: the sandbox's emulator, or POLLY_BASE_URL / [submission] base_url."""
    endpoints = getattr(ctx.clients, "endpoints", {}) or {}
    if ctx.clients.sandbox:
        base_url = endpoints.get("polly")
        if not base_url:
            raise SubmissionError(
                "the running sandbox has no Polly emulator (an older planner started it): "
                "run `planner sandbox stop`, then try again"
            )
        return PollyAPI(
            base_url,
            SANDBOX_KEY,
            key_source="(the sandbox key)",
            sleep=ctx.sleep,
            max_wait=ctx.options.max_wait,
            pool_size=ctx.options.concurrency,
        )
    base_url = endpoints.get("polly") or os.environ.get("POLLY_BASE_URL") or ctx.manifest.submission.get("base_url")
    if not base_url:
        raise SubmissionError(
            "no Polly API address: set POLLY_BASE_URL, or base_url in the [submission] table of the defaults file"
        )
    key = os.environ.get("POLLY_API_KEY")
    if not key:
        raise SubmissionError("no Polly API key: set POLLY_API_KEY")
    return PollyAPI(
        base_url,
        key,
        key_source="from POLLY_API_KEY",
        sleep=ctx.sleep,
        max_wait=ctx.options.max_wait,
        pool_size=ctx.options.concurrency,
    )
