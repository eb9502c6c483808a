"""Elucidata Polly pipelines: one run (create_run) holding one job per sample (submit_job).

Polly has no botocore model, so its rules are written here from the SDK reference
(seeds/003): a run has a ``pipeline_id``, an optional ``run_name``, a ``priority`` of
low, medium or high, ``tags`` and a ``domain_context``; a job has a ``name``,
``parameters`` and ``config`` ``{"infra": {"cpu", "memory", "storage"}}``.  The job
name is the sample id, which makes resubmission checkable: a resumed submit lists
the run's jobs and submits only the missing names.

Submission speaks Polly's JSON:API over HTTPS with urllib3 (a botocore dependency),
not through the ``polly-python`` SDK, whose constructor calls home, whose calls send
telemetry, and which cannot be pointed at a local server.  The calls::

    GET  <base>/runs?filter[name]=N&page[size]=100      find this plan's run (reconciliation)
    POST <base>/runs   {"data": {"type": "runs", "attributes": {pipeline_id, run_name, priority, tags, domain_context}}}
    POST <base>/jobs   {"data": [{"type": "jobs", "attributes": {run_id, name, config, parameters}}, ...]}
    GET  <base>/runs/{id}
    GET  <base>/jobs?filter[run_id]=R&page[size]=100    then each response's links.next (JSON:API cursor paging)

Where to, and with what key: the base URL is the sandbox's Polly endpoint, else
``POLLY_BASE_URL``, else ``[submission] base_url``; the key (header ``x-api-key``) is
``POLLY_API_KEY``, or the fixed key ``sandbox`` under ``--sandbox``.  The key never
comes from, nor goes into, the plan, the ledger or a message; it is never sent over
plain HTTP except to a loopback address, and redirects are not followed.

One run per plan.  Its name is ``[submission] run_name`` (with ``-retry-<plan id>``
for a plan made by ``planner retry``) or ``planner-<plan id>``, and its tags carry
``planner_plan_id``.  Polly does not require run names to be unique, so the run is
recognised by name and that tag: before creating it, submit looks it up (a crash
between the call and the journal, or a lost ledger, cannot make a second run).
Jobs go ``JOBS_PER_REQUEST`` to a request (fewer when ``MAX_REQUEST_BYTES`` would be
passed); each request is journaled (intent with its job names, then the job ids).
On resume the run's jobs are listed and only the missing names are sent; a 409
(a job name the run already has) is reconciled the same way.

Retries: 429 waits ``Retry-After`` (else backs off), 500/502/503/504 and broken
connections back off (1 s doubling to 60 s) for up to ``ctx.max_wait`` seconds; a
POST that may have been carried out before it failed is reconciled, not repeated
blindly.  401/403 stop everything with "Polly rejected the API key".

States: the SDK's jobs carry ``stage``, ``progress``, ``errored`` and ``finished``;
the ledger's state is FAILED (errored), COMPLETED (finished), PENDING (not started:
stage Queued or progress 0/N) or RUNNING, so ``planner retry`` picks errored jobs by
its default FAILED.  Polly's API has no cancel: ``planner cancel`` says so.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import ipaddress
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import orjson
import urllib3
from tqdm import tqdm

from ..errors import Problem, SubmissionError
from ..jsontext import dumps
from ..model import FieldRule, check_scalar
from ..spec import BackendSpec, RoutedField

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
    for key, value in config.items():
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
    id_field="name",
    id_rule=JOB_NAME,
    fields={name: RoutedField(("config", "infra", name), rule) for name, rule in _INFRA.items()},
    parameters_path=("parameters",),
    check_defaults=_check_defaults,
    submission_keys=frozenset(_SUBMISSION_RULES) | {"tags", "domain_context"},
)


# ---------------------------------------------------------------------------
# Submission over Polly's JSON:API.

JOBS_PER_REQUEST = 50
MAX_REQUEST_BYTES = 1024 * 1024
LIST_PAGE_SIZE = 100
PLAN_TAG = "planner_plan_id"
SANDBOX_KEY = "sandbox"
RUN_KEY = "create_run"
MAX_BACKOFF = 60.0
TRANSPORT_ATTEMPTS = 4  # a server that cannot be reached at all is not waited for as long as a busy one
_MEDIA_TYPE = "application/vnd.api+json"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
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


class PollyHTTPError(SubmissionError):
    """Polly answered with an error status (after retries, where they apply)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class PollyAuthError(PollyHTTPError):
    """Polly refused the API key (401 or 403)."""


def stage_indexes(manifest: dict[str, Any]) -> list[int]:
    return []  # jobs travel in the requests themselves


def run_name(manifest: dict[str, Any]) -> str:
    submission = manifest["submission"]
    plan_id = str(manifest["plan_id"])
    given = submission.get("run_name")
    if not given:
        return f"planner-{plan_id}"
    if (manifest.get("sheet") or {}).get("retry_of"):
        suffix = f"-retry-{plan_id[:12]}"
        return str(given)[: 255 - len(suffix)] + suffix
    return str(given)


def run_request(manifest: dict[str, Any]) -> dict[str, Any]:
    """The create_run body; the SDK's defaults (priority low, empty tags and context) made explicit."""
    submission = manifest["submission"]
    tags = dict(submission.get("tags") or {})
    tags[PLAN_TAG] = str(manifest["plan_id"])
    attributes = {
        "pipeline_id": submission["pipeline_id"],
        "run_name": run_name(manifest),
        "priority": submission.get("priority") or "low",
        "tags": tags,
        "domain_context": dict(submission.get("domain_context") or {}),
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
    if str(stage or "").lower() in ("", "queued", "pending", "submitted") or str(progress or "").startswith("0/"):
        return "PENDING", None
    return "RUNNING", None


@dataclass(frozen=True)
class JobsRequest:
    """One POST /jobs: the names it creates, where they sit in the plan, and its body."""

    names: list[str]
    places: list[tuple[int, int]]  # (shard, position) per name
    jobs: list[dict[str, Any]]

    @property
    def key(self) -> str:
        digest = hashlib.sha256("\n".join(self.names).encode()).hexdigest()[:16]
        return f"submit_job:{self.names[0]}:{digest}"

    def body(self, run_id: str) -> dict[str, Any]:
        return {"data": [dict(job, attributes=dict(job["attributes"], run_id=run_id)) for job in self.jobs]}


class PollyAPI:
    """Polly's runs and jobs endpoints: JSON:API over urllib3, with retries and no secrets in messages."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        key_source: str,
        sleep: Callable[[float], None],
        max_wait: float,
        pool_size: int = 8,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SubmissionError(f"the Polly base URL must be an http(s) URL, not {base_url!r}")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise SubmissionError(
                f"refusing to send the Polly API key over plain HTTP to {parts.hostname}: use an https:// base URL"
            )
        self.base_url = base_url.rstrip("/") + "/"
        self.origin = (parts.scheme, parts.hostname, parts.port)
        self._key = api_key
        self.key_source = key_source
        self.sleep = sleep
        self.max_wait = max_wait
        self.http = urllib3.PoolManager(
            num_pools=2,
            maxsize=max(pool_size, 1),
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=10.0, read=120.0),
        )

    def close(self) -> None:
        self.http.clear()

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        body: dict[str, Any] | None = None,
        reconcile: Callable[[], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """One call, retried while Polly says "later"; ``reconcile`` is asked, before a POST
        is sent again, whether its first attempt was carried out after all."""
        headers = {"x-api-key": self._key, "Accept": _MEDIA_TYPE}
        payload = None
        if body is not None:
            payload = dumps(body)
            headers["Content-Type"] = _MEDIA_TYPE
        delay, waited, broken = 1.0, 0.0, 0
        while True:
            try:
                response = self.http.request(
                    method, url, body=payload, headers=headers, redirect=False, preload_content=True
                )
            except urllib3.exceptions.HTTPError as exc:
                broken += 1
                if broken >= TRANSPORT_ATTEMPTS or waited >= self.max_wait:
                    raise SubmissionError(
                        self.redact(f"{what}: cannot reach Polly at {self.base_url}: {exc}")
                    ) from None
                wait: float | None = delay
                # A connection never made sent nothing; a broken one may have been carried out.
                maybe_done = not isinstance(exc, urllib3.exceptions.ConnectTimeoutError)
            else:
                status = response.status
                if 200 <= status < 300:
                    return _json(response.data, self.redact) if response.data else {}
                if status in (401, 403):
                    said = self.redact(_error_text(response))
                    raise PollyAuthError(
                        f"{what}: Polly rejected the API key {self.key_source} (HTTP {status}: {said}): set POLLY_API_KEY",
                        status,
                    )
                if status not in _RETRY_STATUSES or waited >= self.max_wait:
                    raise PollyHTTPError(self.redact(f"{what}: HTTP {status}: {_error_text(response)}"), status)
                wait = _retry_after(response.headers.get("Retry-After")) if status == 429 else None
                if wait is None:
                    wait = delay
                maybe_done = status != 429  # "too many requests" was refused, not carried out
            wait = max(0.0, min(wait, self.max_wait - waited))
            self.sleep(wait)
            waited += wait
            delay = min(delay * 2, MAX_BACKOFF)
            if reconcile is not None and maybe_done:
                done = reconcile()
                if done is not None:
                    return done

    def pages(self, path: str, params: dict[str, str], *, what: str) -> Iterator[list[dict[str, Any]]]:
        """Every page of a listing, following links.next (same origin only)."""
        url: str | None = (
            self.url(path) + "?" + "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in params.items())
        )
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise SubmissionError(f"{what}: Polly's paging went round in a circle at {url}")
            seen.add(url)
            document = self.request("GET", url, what=what)
            data = document.get("data") or []
            if not isinstance(data, list):
                raise SubmissionError(f"{what}: expected a list of resources from Polly, got {type(data).__name__}")
            yield data
            following = (document.get("links") or {}).get("next")
            if not following or not data:
                return
            url = urljoin(url, following)
            parts = urlsplit(url)
            if (parts.scheme, parts.hostname, parts.port) != self.origin:
                raise SubmissionError(
                    f"{what}: Polly's next-page link leads to another host ({parts.hostname}); not sending the API key there"
                )

    # The calls.

    def find_run(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """This plan's run, by its name and plan-id tag, or None."""
        name, plan_id = run_name(manifest), str(manifest["plan_id"])
        for page in self.pages("runs", {"filter[name]": name, "page[size]": str(LIST_PAGE_SIZE)}, what="get_runs"):
            for run in page:
                attributes = run.get("attributes") or {}
                if attributes.get("name") == name and (attributes.get("tags") or {}).get(PLAN_TAG) == plan_id:
                    return run
        return None

    def create_run(self, manifest: dict[str, Any]) -> dict[str, Any]:
        def reconcile() -> dict[str, Any] | None:
            found = self.find_run(manifest)
            return {"data": found} if found is not None else None

        document = self.request(
            "POST", self.url("runs"), what="create_run", body=run_request(manifest), reconcile=reconcile
        )
        return _resource(document, "create_run")

    def get_run(self, run_id: str) -> dict[str, Any]:
        try:
            return _resource(
                self.request("GET", self.url(f"runs/{quote(run_id, safe='')}"), what=f"get_run {run_id}"), "get_run"
            )
        except PollyHTTPError as exc:
            if exc.status == 404:
                raise SubmissionError(
                    f"Polly has no run {run_id} (the run this plan created): was it deleted?"
                ) from None
            raise

    def jobs(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's jobs by name."""
        found: dict[str, dict[str, Any]] = {}
        for page in self.pages(
            "jobs", {"filter[run_id]": run_id, "page[size]": str(LIST_PAGE_SIZE)}, what=f"get_jobs for run {run_id}"
        ):
            for job in page:
                found[str((job.get("attributes") or {}).get("name"))] = job
        return found

    def submit_jobs(self, run_id: str, request: JobsRequest) -> dict[str, dict[str, Any]]:
        """Create the request's jobs; those the run already has (409) are found, not sent twice."""
        wanted = set(request.names)
        what = f"submit_job for {len(request.names)} jobs from {request.names[0]}"
        try:
            # No reconcile before a repeat: job names are unique in a run, so a request
            # that was carried out after all comes back 409, handled below.
            document = self.request("POST", self.url("jobs"), what=what, body=request.body(run_id))
        except PollyHTTPError as exc:
            if exc.status != 409:
                raise
            present = {n: j for n, j in self.jobs(run_id).items() if n in wanted}
            rest = [i for i, name in enumerate(request.names) if name not in present]
            if not rest:
                return present
            again = JobsRequest(
                [request.names[i] for i in rest], [request.places[i] for i in rest], [request.jobs[i] for i in rest]
            )
            document = self.request("POST", self.url("jobs"), what=what, body=again.body(run_id))
            return present | _by_name(document, what)
        return _by_name(document, what)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(data: bytes, redact: Callable[[str], str]) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        # The answer may echo the request (a proxy's or a debug page): never let the key through.
        raise SubmissionError(redact(f"Polly answered with something that is not JSON: {data[:120]!r}")) from None
    if not isinstance(document, dict):
        raise SubmissionError("Polly answered with JSON that is not a JSON:API document")
    return document


def _resource(document: dict[str, Any], what: str) -> dict[str, Any]:
    data = document.get("data")
    if not isinstance(data, dict) or not data.get("id"):
        raise SubmissionError(f"{what}: Polly's answer holds no resource with an id")
    return data


def _by_name(document: dict[str, Any], what: str) -> dict[str, dict[str, Any]]:
    data = document.get("data")
    data = data if isinstance(data, list) else [data]
    found = {}
    for job in data:
        if not isinstance(job, dict) or not job.get("id"):
            raise SubmissionError(f"{what}: Polly's answer holds a job without an id")
        found[str((job.get("attributes") or {}).get("name"))] = job
    return found


def _error_text(response: Any) -> str:
    """The JSON:API errors of a response, shortly."""
    try:
        errors = json.loads(response.data).get("errors") or []
        texts = [
            f"{e.get('title', '')}: {e.get('detail', '')}".strip(": ")
            + (f" at {e['source']['pointer']}" if (e.get("source") or {}).get("pointer") else "")
            for e in errors
        ]
    except (ValueError, AttributeError, TypeError):
        texts = []
    if not texts:
        return (response.data or b"").decode("utf-8", "replace")[:200] or (response.reason or "")
    shown = "; ".join(texts[:3])
    return shown + (f"; and {len(texts) - 3} more" if len(texts) > 3 else "")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())


def open_api(ctx: Any) -> PollyAPI:
    """The API client for this context: the sandbox's emulator, or POLLY_BASE_URL / [submission] base_url."""
    endpoints = getattr(ctx.clients, "endpoints", {}) or {}
    if ctx.clients.sandbox:
        base_url = endpoints.get("polly")
        if not base_url:
            raise SubmissionError(
                "the running sandbox has no Polly emulator (an older planner started it): run `planner sandbox stop`, then try again"
            )
        return PollyAPI(
            base_url,
            SANDBOX_KEY,
            key_source="(the sandbox key)",
            sleep=ctx.sleep,
            max_wait=ctx.max_wait,
            pool_size=ctx.concurrency,
        )
    base_url = endpoints.get("polly") or os.environ.get("POLLY_BASE_URL") or ctx.manifest["submission"].get("base_url")
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
        max_wait=ctx.max_wait,
        pool_size=ctx.concurrency,
    )


def _entries(ctx: Any, skip: set[str]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(shard, position, entry) in plan order, shard files read line by line."""
    for shard in ctx.manifest["shards"]:
        with open(os.path.join(ctx.plan_dir, shard["path"]), "rb") as handle:
            next(handle)  # "["
            for position, line in enumerate(handle):
                line = line.rstrip(b"\n").removesuffix(b",")
                if line == b"]":
                    break
                entry = orjson.loads(line)
                if entry["name"] not in skip:
                    yield shard["index"], position, entry


def _requests(entries: Iterator[tuple[int, int, dict[str, Any]]], run_id: str) -> Iterator[JobsRequest]:
    """Jobs packed JOBS_PER_REQUEST to a request, within MAX_REQUEST_BYTES."""
    names: list[str] = []
    places: list[tuple[int, int]] = []
    jobs: list[dict[str, Any]] = []
    size = 16  # {"data":[]}
    for shard, position, entry in entries:
        job = job_resource(run_id, entry)
        job_size = len(dumps(job)) + 1
        if jobs and (len(jobs) >= JOBS_PER_REQUEST or size + job_size > MAX_REQUEST_BYTES):
            yield JobsRequest(names, places, jobs)
            names, places, jobs, size = [], [], [], 16
        names.append(entry["name"])
        places.append((shard, position))
        jobs.append(job)
        size += job_size
    if jobs:
        yield JobsRequest(names, places, jobs)


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    attributes = run.get("attributes") or {}
    return {
        "id": run["id"],
        "name": attributes.get("name"),
        "pipeline_id": attributes.get("pipeline_id"),
        "status": attributes.get("status"),
    }


def _ensure_run(ctx: Any, api: PollyAPI) -> tuple[str, str]:
    """This plan's run id, and how it was had: "journaled", "found" or "created"."""
    known = ctx.ledger.submission(RUN_KEY)
    if known is not None and known.state == "done" and known.remote_id:
        return known.remote_id, "journaled"
    name = run_name(ctx.manifest)
    found = api.find_run(ctx.manifest)  # a crash after the call, or a lost ledger: never a second run
    ctx.ledger.intent(RUN_KEY, "create_run", token=name)
    if found is not None:
        ctx.ledger.result(RUN_KEY, found["id"], _run_summary(found))
        return str(found["id"]), "found"
    try:
        run = api.create_run(ctx.manifest)
    except SubmissionError as exc:
        ctx.ledger.failure(RUN_KEY, str(exc))
        raise
    ctx.ledger.result(RUN_KEY, run["id"], _run_summary(run))
    return str(run["id"]), "created"


def _known_jobs(ctx: Any, api: PollyAPI, run_id: str, how: str) -> dict[str, str]:
    """Job ids by name that the run already has: from the ledger when it is clean, else from Polly."""
    pages = [s for s in ctx.ledger.submissions() if s.kind == "submit_job"]
    if how == "created":
        return {}
    if how == "journaled" and all(s.state == "done" for s in pages):
        return {name: job_id for s in pages for name, job_id in ((s.response or {}).get("jobs") or {}).items()}
    present = {name: str(job["id"]) for name, job in api.jobs(run_id).items()}
    for s in pages:  # requests whose outcome is unknown (a crash) or failed: settle them by what the run holds
        if s.state == "done":
            continue
        names = orjson.loads(s.token) if s.token else []
        if names and all(n in present for n in names):
            ctx.ledger.result(s.key, run_id, {"jobs": {n: present[n] for n in names}, "reconciled": True})
        elif s.state == "intent":
            ctx.ledger.failure(s.key, "not in the run when reconciled; its jobs are sent again")
    return present


def submit(ctx: Any) -> dict[str, Any]:
    from ..submit import rate_limited

    manifest = ctx.manifest
    if ctx.dry_run:
        ctx.emit(
            {
                "operation": "create_run",
                "problems": [
                    p.describe() for p in _check_defaults(manifest["defaults"], manifest["submission"], set())
                ],
                "request": run_request(manifest),
            }
        )
        for request in _requests(_entries(ctx, set()), "<the id create_run returns>"):
            ctx.emit(
                {
                    "operation": "submit_job",
                    "jobs": len(request.names),
                    "first": request.names[0],
                    "request": request.body("<the id create_run returns>"),
                }
            )
        return {"backend": SPEC.name, "plan_id": ctx.plan_id, "run_name": run_name(manifest), "runs": manifest["runs"]}

    api = open_api(ctx)
    try:
        run_id, how = _ensure_run(ctx, api)
        known = _known_jobs(ctx, api, run_id, how)
        if known:
            places = {
                sample: (shard, position)
                for sample, shard, position in ctx.samples().select("id", "shard", "position").iter_rows()
            }
            ctx.ledger.upsert_samples(
                (name, *places[name], job_id, "SUBMITTED", None, None)
                for name, job_id in known.items()
                if name in places
            )
        sent = _submit_jobs(
            ctx,
            api,
            run_id,
            _requests(_entries(ctx, set(known)), run_id),
            rate_limited(ctx),
            total=manifest["runs"] - len(known),
        )
    finally:
        api.close()
    return {
        "backend": SPEC.name,
        "plan_id": ctx.plan_id,
        "run_id": run_id,
        "run_name": run_name(manifest),
        "run_created": how == "created",
        "jobs_submitted": sent,
        "jobs_already_submitted": len(known),
        "runs": manifest["runs"],
    }


def _submit_jobs(
    ctx: Any, api: PollyAPI, run_id: str, requests: Iterator[JobsRequest], limiter: Iterator[None], total: int
) -> int:
    gate = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    sent = [0]

    def send(request: JobsRequest) -> None:
        if stop.is_set():
            return
        with gate:
            next(limiter)
        ctx.ledger.intent(request.key, "submit_job", token=orjson.dumps(request.names).decode())
        try:
            created = api.submit_jobs(run_id, request)
        except SubmissionError as exc:
            ctx.ledger.failure(request.key, str(exc))
            if isinstance(exc, PollyAuthError):
                stop.set()
                raise
            reason = str(exc)
            ctx.ledger.upsert_samples(
                (name, *place, None, "FAILED", None, reason) for name, place in zip(request.names, request.places)
            )
            with gate:
                failures.append(reason)
            return
        missing = [name for name in request.names if name not in created]
        if missing:
            ctx.ledger.failure(request.key, f"Polly's answer lacks jobs {missing[:3]}")
            raise SubmissionError(
                f"submit_job: Polly's answer lacks jobs it was sent ({', '.join(missing[:3])}); run submit again to reconcile"
            )
        ctx.ledger.result(request.key, run_id, {"jobs": {name: str(created[name]["id"]) for name in request.names}})
        ctx.ledger.upsert_samples(
            (name, *place, str(created[name]["id"]), "SUBMITTED", *job_state(created[name].get("attributes") or {}))
            for name, place in zip(request.names, request.places)
        )
        with gate:
            sent[0] += len(request.names)

    slots = threading.BoundedSemaphore(ctx.concurrency * 2)  # pages are built as they are sent: memory stays bounded
    futures: list[Future[None]] = []
    with tqdm(
        total=total, unit="job", desc="submit_job", file=sys.stderr, disable=not ctx.progress, leave=False
    ) as bar:
        with ThreadPoolExecutor(max_workers=ctx.concurrency, thread_name_prefix="planner-polly") as pool:
            for request in requests:
                if stop.is_set():
                    break
                slots.acquire()
                future = pool.submit(send, request)
                future.add_done_callback(lambda _f, n=len(request.names): (slots.release(), bar.update(n)))
                futures.append(future)
        for future in futures:
            future.result()  # the first error that stopped the submission (an auth refusal)
    if failures:
        shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
        raise SubmissionError(
            f"{len(failures)} submit_job requests failed ({shown}); `planner status` lists the samples and `planner retry` plans them again"
        )
    return sent[0]


def refresh(ctx: Any) -> None:
    """Map every sample to its job id and state: get_run, then the run's jobs page by page."""
    known = ctx.ledger.submission(RUN_KEY)
    if known is None or known.state != "done" or not known.remote_id:
        return
    api = open_api(ctx)
    try:
        api.get_run(known.remote_id)
        jobs = api.jobs(known.remote_id)
    finally:
        api.close()
    rows = []
    for sample, shard, position in ctx.samples().select("id", "shard", "position").iter_rows():
        job = jobs.get(sample)
        if job is not None:
            rows.append((sample, shard, position, str(job["id"]), "SUBMITTED", *job_state(job.get("attributes") or {})))
    ctx.ledger.upsert_samples(rows)


def cancel(ctx: Any) -> int:
    raise SubmissionError(
        "Polly's API has no cancel: the pipelines SDK offers create_run, submit_job, get_run and get_jobs only, "
        "so nothing was cancelled"
    )
