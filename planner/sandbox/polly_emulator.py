"""A local Polly pipelines API for tests and the sandbox: runs and jobs over JSON:API on loopback.

``PollyEmulator`` is an HTTP server (stdlib ``ThreadingHTTPServer`` in a background
thread) answering the endpoints behind the calls of Polly's pipelines SDK.

Sources.  Every behaviour is an entry of ``docs/sources-polly.md`` (P1, P2, ...), named beside
its code.  [SDK] is polly-python's ``polly/pipelines.py`` (the release whose ``Pipelines``
class has ``create_run``, ``submit_job``, ``get_runs``, ``get_run``, ``get_jobs``; seeds/003
is its rendered reference).  [reading] marks what the SDK does not show: this project's
own reading, to be checked against the real service when one is at hand.

    POST {base}/runs       create_run [SDK]: {"data": {"type": "runs", "attributes":
                           {name, priority, domain_context, tags, pipeline_id}}} -> 201 {"data": <run>} [reading: 201]
    GET  {base}/runs/{id}  get_run [SDK] -> 200 {"data": <run>}; 404 for an unknown run [reading]
    GET  {base}/runs       get_runs [SDK]: ?filter[status]=&filter[priority]=&filter[org_id]=&filter[user_id]=
                           &page[size]= -> 200 {"data": [<run>, ...], "links": {"self": PATH, "next": PATH or null}}
    POST {base}/jobs       submit_job [SDK, a list of one; reading: several]: {"data": [{"type": "jobs",
                           "attributes": {run_id, name, config, parameters}}, ...]} -> 201 {"data": [<job>, ...]}
    GET  {base}/jobs/{id}  get_job [SDK] -> 200 {"data": <job>}
    GET  {base}/jobs       get_jobs [SDK]: ?filter[run_id]=R&filter[org_id]=&filter[user_id]=&page[size]= -> as runs

``{base}`` is ``/pravaah/orchestration`` (the SDK's ``orchestration_url``), so
``endpoint_url`` is ``http://127.0.0.1:PORT/pravaah/orchestration``.  [SDK] Listings
send ``page[size]=20`` (``default_page_size``; 20 is this emulator's default too) and
follow ``links.next``, a *path* the SDK appends to the host (``f"{self.base_url}{next_link}"``
where ``base_url`` is ``https://apis.<env>.elucidata.io``), until it is null.  The SDK
filters only by ``run_id`` (jobs), ``org_id``, ``status``, ``priority`` and ``user_id``;
any other filter (``filter[name]`` included) is refused with 400 [reading: the real API
may ignore it instead; refusing keeps a client from depending on it].  [reading] The
cursor inside ``links.next`` (``page[after]``, the id of the last item of the previous
page), the page size bound (1..100), and the order (creation order) are this
emulator's; a client must not build the cursor itself nor rely on the order.

Resources have the shapes of the SDK's examples [SDK docstrings, seeds/003].  A run's
``attributes`` carry ``name``, ``pipeline_id``, ``priority``, ``tags``,
``domain_context``, ``num_jobs``, ``num_successful_jobs``, ``num_failed_jobs`` and
``status``; a job's carry ``name``, ``run_id``, ``parameters``, ``config``, ``stage``,
``progress``, ``errored`` and ``finished`` (jobs have no ``status`` field in the SDK's
examples, so none here).

Behaviour, on a timeline driven by the injected ``clock`` in steps of
``step_seconds`` (computed on each request, no background work):

* [reading, shaped by the SDK's examples] A job is queued for one step (stage
  ``Queued``, progress ``0/2``), processing for the next (``Processing``, ``1/2``), then
  finished (``Completed``, ``2/2``, ``finished`` true), or errored at ``Processing``
  (``errored`` true, ``finished`` false, as the SDK's example shows) when it falls in
  the deterministic failure subset: a hash of ``seed``, the run id and the job name
  below ``failure_rate``.
* A run is PENDING until a job starts, RUNNING while any job is unfinished, then
  COMPLETED (no job errored), ERRORED (every job errored) or PARTIALLY_COMPLETED
  [SDK examples show PENDING, ERRORED, PARTIALLY_COMPLETED; RUNNING and COMPLETED are
  a reading].
* Requests are validated [SDK: priority low|medium|high, config ``{"infra": {"cpu",
  "memory", "storage"}}`` integers; reading: the rest]: JSON:API ``type``, required
  attributes, no unknown attributes (``run_name``, the SDK's keyword, is not an
  attribute: the SDK sends it as ``name``), ``tags`` and ``domain_context`` objects,
  ``parameters`` an object, ``config`` an object holding only ``infra`` with positive
  integers, job names of 1..255 characters, at most ``max_jobs_per_request`` jobs per
  request, bodies of at most ``max_body_bytes``.  A request with any invalid job
  creates none (422).
* [reading] Job names are unique within a run: a request naming a job the run
  already has, or the same name twice, is refused whole with 409 Conflict (P10).  Run
  names are not unique (P6) (the SDK's default name is a timestamp to the minute): that is the
  client's business.
* [reading] Every request needs the ``x-api-key`` header (the SDK's session carries
  its token in a way it does not show): 401 when it is missing or is not ``api_key``
  (``api_key=None`` accepts any key).
* [reading] Errors are JSON:API error documents ``{"errors": [{"status", "title",
  "detail", "source"?}]}``: 400 malformed request, 401, 404 unknown run, job or path,
  405, 409, 413, 415 (a body that is not JSON), 422 invalid attributes.

Faults a service makes, injectable by tests (``inject()``, ``inject_slow()``, or the
constructor's ``fail_next``/``fail_after``), each optionally for one method and path:

* an error status answered before the request is looked at (``fail_next``; a 429
  carries ``Retry-After``);
* an error status answered *after* the request was carried out (``fail_after``,
  ``inject(after=True)``): the answer is lost, as behind a gateway that timed out;
* a slow answer (``inject_slow(seconds)``): the request is carried out and its answer
  held for that many real seconds (``stop()`` releases it), so a client's read
  timeout fires after the work was done;
* a job refused inside a 2xx answer (``inject_job_errors(names)``, P23): its item in
  ``data`` is ``{"errors": [...]}``, and it is not made, the request's other jobs are
  [SDK: ``submit_job`` checks ``data[0]`` for ``error``/``errors``; what causes it is not shown].

Test hooks: ``runs()``, ``jobs(run_id=None)`` (with an emulator-side ``status``:
PENDING, RUNNING, SUCCEEDED or ERRORED) and ``requests()`` (method, path below
``{base}``, query, body and the status answered, for every request).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from planner.sandbox.loopback import LoopbackServer, fraction

__all__ = ["PollyEmulator"]

PRIORITIES = ("low", "medium", "high")
INFRA_KEYS = ("cpu", "memory", "storage")
BASE_PATH = "/pravaah/orchestration"  # P1 [SDK] Pipelines.orchestration_url
RUN_ATTRIBUTES = frozenset({"name", "priority", "domain_context", "tags", "pipeline_id"})  # P2 [SDK] create_run
JOB_ATTRIBUTES = frozenset({"run_id", "name", "config", "parameters"})  # P7 [SDK] submit_job's body
RUN_FILTERS = frozenset({"org_id", "status", "priority", "user_id"})  # P12 [SDK] get_runs, _add_arguments_to_url
JOB_FILTERS = frozenset({"run_id", "org_id", "user_id"})  # P12 [SDK] get_jobs and its docstring
DEFAULT_PAGE_SIZE = 20  # P13 [SDK] default_page_size, sent by every listing
MAX_PAGE_SIZE = 100  # P13 [reading]
ORG_ID = USER_ID = "1"  # [SDK examples] every resource belongs to org "1"; one user here
MAX_NAME = 255
MAX_SHOWN_ERRORS = 20
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """An error answered as a JSON:API error document (P21)."""

    def __init__(self, status: int, detail: str | list[tuple[str, str | None]], title: str | None = None):
        self.status = status
        self.title = title or _TITLES.get(status, "Error")
        self.details = [(detail, None)] if isinstance(detail, str) else detail
        super().__init__(f"{status} {self.title}: {self.details[0][0] if self.details else ''}")

    def document(self) -> dict[str, Any]:
        errors = []
        for detail, pointer in self.details[:MAX_SHOWN_ERRORS]:
            error: dict[str, Any] = {"status": str(self.status), "title": self.title, "detail": detail}
            if pointer is not None:
                error["source"] = {"pointer": pointer}
            errors.append(error)
        return {"errors": errors}


@dataclass
class _Job:
    id: str
    run_id: str
    name: str
    parameters: dict[str, Any]
    config: dict[str, Any]
    created: float  # on the emulator's clock
    fails: bool


@dataclass
class _Run:
    id: str
    name: str
    pipeline_id: str
    priority: str
    tags: dict[str, Any]
    domain_context: dict[str, Any]
    created: float
    jobs: list[_Job] = field(default_factory=list)
    by_name: dict[str, _Job] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)  # job id -> index in jobs


@dataclass
class _Fault:
    status: int | None  # None: the request's own answer, only late
    after: bool  # carry the request out, then answer this status instead
    method: str | None
    path: str | None
    delay: float = 0.0  # real seconds the answer is held back


class PollyEmulator(LoopbackServer):
    """Polly's pipelines API (runs and jobs) on a loopback HTTP server."""

    server_version = "PollyEmulator/1.0"
    thread_name = "polly-emulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = "sandbox",
        clock: Callable[[], float] = time.monotonic,
        step_seconds: float = 1.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        fail_next: Iterable[int] | None = None,
        fail_after: Iterable[int] | None = None,
        retry_after: int = 1,
        max_jobs_per_request: int = 100,
        max_body_bytes: int = 10 * 1024 * 1024,
        base_path: str = BASE_PATH,
    ):
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be within [0, 1]")
        if step_seconds <= 0:
            raise ValueError("step_seconds must be positive")
        self._init_server(host, port)
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.origin = ""
        self.api_key = api_key
        self.clock = clock
        self.step_seconds = float(step_seconds)
        self.failure_rate = failure_rate
        self.seed = seed
        self.retry_after = retry_after
        self.max_jobs_per_request = max_jobs_per_request
        self.max_body_bytes = max_body_bytes
        self._lock = threading.RLock()
        self._ids = random.Random(seed)
        self._clock0 = clock()
        self._wall0 = time.time()
        self._runs: dict[str, _Run] = {}
        self._run_order: list[_Run] = []
        self._run_position: dict[str, int] = {}
        self._jobs: dict[str, _Job] = {}
        self._faults: deque[_Fault] = deque()
        self._requests: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self._job_errors: dict[str, str] = {}
        self.inject(fail_next or ())
        self.inject(fail_after or (), after=True, method="POST")

    def start(self) -> PollyEmulator:
        super().start()
        self.origin = self.endpoint_url
        self.endpoint_url = self.origin + self.base_path
        return self

    def stop(self) -> None:
        self._stopping.set()  # answers held back by inject_slow go out now
        super().stop()

    # -- test hooks ----------------------------------------------------------

    def inject(  # P22
        self, statuses: Iterable[int], *, after: bool = False, method: str | None = None, path: str | None = None
    ) -> None:
        """Answer the next matching requests with these statuses (``after``: once carried out)."""
        with self._lock:
            for status in statuses:
                self._faults.append(_Fault(int(status), after, method.upper() if method else None, path))

    def inject_slow(
        self, seconds: float, *, count: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Carry out the next ``count`` matching requests, then hold each answer ``seconds`` real seconds."""
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault(None, True, method.upper() if method else None, path, float(seconds)))

    def inject_job_errors(self, names: Iterable[str], detail: str = "the job was refused") -> None:
        """The next POST /jobs naming each of these jobs answers 201 with an error item in its place, not made."""
        with self._lock:
            self._job_errors.update(dict.fromkeys(names, detail))

    def runs(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            return [dict(self._run_resource(run, now)["attributes"], id=run.id) for run in self._run_order]

    def jobs(self, run_id: str | None = None) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            runs = [self._runs[run_id]] if run_id is not None else self._run_order
            return [
                dict(self._job_resource(job, now)["attributes"], id=job.id, status=self._job_status(job, now))
                for run in runs
                for job in run.jobs
            ]

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    # -- HTTP ----------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request in, (status, headers, body) out."""
        method = method.upper()
        parts = urlsplit(target)
        full_path = parts.path.rstrip("/") or "/"
        inside = full_path == self.base_path or full_path.startswith(self.base_path + "/")
        path = (full_path[len(self.base_path) :] or "/") if inside else full_path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        record: dict[str, Any] = {"method": method, "path": path, "query": query, "body": None, "status": None}
        try:
            record["body"] = json.loads(body) if body else None
        except ValueError:
            record["body"] = body[:200].decode("utf-8", "replace")
        with self._lock:
            self._requests.append(record)
            fault = self._take_fault(method, path)
        if fault is not None and not fault.after and fault.status is not None:
            status, answer_headers, payload = self._error(ApiError(fault.status, "injected failure"))
        else:
            try:
                if not inside:
                    raise ApiError(404, f"no such endpoint: {full_path} (the API lives under {self.base_path})")
                status, document = self._route(method, path, query, headers, body)
                answer_headers, payload = (
                    {"Content-Type": "application/vnd.api+json"},
                    json.dumps(document, separators=(",", ":")).encode(),
                )
            except ApiError as exc:
                status, answer_headers, payload = self._error(exc)
            except Exception as exc:  # a bug in the emulator: answer as a server would
                status, answer_headers, payload = self._error(ApiError(500, f"{type(exc).__name__}: {exc}"))
            if fault is not None and fault.status is None:
                self._stopping.wait(fault.delay)  # carried out; the answer is late
            elif fault is not None and fault.status is not None and 200 <= status < 300:
                status, answer_headers, payload = self._error(
                    ApiError(fault.status, "injected failure after the request was carried out")
                )
            elif fault is not None:  # the request failed anyway: the fault stays for the next one
                with self._lock:
                    self._faults.appendleft(fault)
        record["status"] = status
        return status, answer_headers, payload

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if (fault.method is None or fault.method == method) and (fault.path is None or fault.path == path):
                del self._faults[index]
                return fault
        return None

    def _error(self, exc: ApiError) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/vnd.api+json"}
        if exc.status == 429:
            headers["Retry-After"] = str(self.retry_after)
        return exc.status, headers, json.dumps(exc.document(), separators=(",", ":")).encode()

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        segments = [s for s in path.split("/") if s]
        if not segments or segments[0] not in ("runs", "jobs") or len(segments) > 2:
            raise ApiError(404, f"no such endpoint: {path}")
        self._authorise(headers)
        collection = segments[0]
        if len(segments) == 2:
            if method != "GET":
                raise ApiError(405, f"{method} is not allowed on {path}")
            return 200, {"data": self._get_one(collection, segments[1])}
        if method == "GET":
            return 200, self._list(collection, query, path)
        if method != "POST":
            raise ApiError(405, f"{method} is not allowed on {path}")
        if len(body) > self.max_body_bytes:
            raise ApiError(413, f"the request body is {len(body)} bytes; at most {self.max_body_bytes} are accepted")
        content_type = str(headers.get("Content-Type") or "")
        if "json" not in content_type:
            raise ApiError(415, "send a JSON:API document (Content-Type: application/vnd.api+json)")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(document, dict) or "data" not in document:
            raise ApiError(400, "the body must be a JSON:API document with a top-level 'data' member")
        if collection == "runs":
            return 201, {"data": self._create_run(document["data"])}
        return 201, {"data": self._create_jobs(document["data"])}

    def _authorise(self, headers: Any) -> None:  # P20
        key = headers.get("x-api-key")
        if not key:
            raise ApiError(401, "missing API key: send it in the x-api-key header")
        if self.api_key is not None and key != self.api_key:
            raise ApiError(401, "invalid API key")

    # -- resources -----------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _millis(self, moment: float) -> int:
        return int((self._wall0 + (moment - self._clock0)) * 1000)

    def _job_phase(self, job: _Job, now: float) -> int:
        """0 queued, 1 processing, 2 ended (finished or errored)."""
        return min(2, max(0, int((now - job.created) // self.step_seconds)))

    def _job_status(self, job: _Job, now: float) -> str:
        phase = self._job_phase(job, now)
        if phase < 2:
            return ("PENDING", "RUNNING")[phase]
        return "ERRORED" if job.fails else "SUCCEEDED"

    def _job_resource(self, job: _Job, now: float) -> dict[str, Any]:  # P17, P18
        phase = self._job_phase(job, now)
        errored = phase == 2 and job.fails
        if phase == 0:
            stage, progress = "Queued", "0/2"
        elif phase == 1 or errored:
            stage, progress = "Processing", "1/2"
        else:
            stage, progress = "Completed", "2/2"
        return {
            "id": job.id,
            "type": "jobs",
            "attributes": {
                "name": job.name,
                "parameters": job.parameters,
                "config": job.config,
                "run_id": job.run_id,
                "stage": stage,
                "progress": progress,
                "errored": errored,
                "finished": phase == 2 and not job.fails,
                "created_at": self._millis(job.created),
                "last_updated_at": self._millis(job.created + phase * self.step_seconds),
            },
        }

    def _run_resource(self, run: _Run, now: float) -> dict[str, Any]:  # P16, P19
        statuses = [self._job_status(job, now) for job in run.jobs]
        succeeded = statuses.count("SUCCEEDED")
        errored = statuses.count("ERRORED")
        if not statuses or all(s == "PENDING" for s in statuses):
            status = "PENDING"
        elif succeeded + errored < len(statuses):
            status = "RUNNING"
        elif errored == 0:
            status = "COMPLETED"
        elif succeeded == 0:
            status = "ERRORED"
        else:
            status = "PARTIALLY_COMPLETED"
        updated = max([run.created] + [job.created + self._job_phase(job, now) * self.step_seconds for job in run.jobs])
        return {
            "id": run.id,
            "type": "runs",
            "attributes": {
                "name": run.name,
                "created_at": self._millis(run.created),
                "pipeline_id": run.pipeline_id,
                "priority": run.priority,
                "domain_context": run.domain_context,
                "tags": run.tags,
                "org_id": "1",
                "user_id": "1",
                "user_name": "sandbox@planner.invalid",
                "num_jobs": len(statuses),
                "num_successful_jobs": succeeded,
                "num_failed_jobs": errored,
                "status": status,
                "last_updated_at": self._millis(updated),
            },
        }

    def _get_one(self, collection: str, resource_id: str) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            if collection == "runs":
                run = self._runs.get(resource_id)
                if run is None:
                    raise ApiError(404, f"run {resource_id} not found")
                return self._run_resource(run, now)
            job = self._jobs.get(resource_id)
            if job is None:
                raise ApiError(404, f"job {resource_id} not found")
            return self._job_resource(job, now)

    def _list(self, collection: str, query: dict[str, str], path: str) -> dict[str, Any]:
        size_text = query.get("page[size]", str(DEFAULT_PAGE_SIZE))
        if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
            raise ApiError(400, f"page[size] must be an integer from 1 to {MAX_PAGE_SIZE}")
        size = int(size_text)
        after = query.get("page[after]")  # P15 [reading]: the cursor is the emulator's own
        known_filters = JOB_FILTERS if collection == "jobs" else RUN_FILTERS
        filters = {k[len("filter[") : -1]: v for k, v in query.items() if k.startswith("filter[") and k.endswith("]")}
        unknown = sorted(set(filters) - known_filters)
        if unknown:
            raise ApiError(
                400,
                f"unknown filter {unknown[0]!r}; {collection} take filter[{'], filter['.join(sorted(known_filters))}]",
            )
        now = self.clock()
        with self._lock:
            if collection == "jobs":
                run_id = filters.get("run_id")
                if not run_id:
                    raise ApiError(400, "filter[run_id] is required: jobs are listed per run")
                run = self._runs.get(run_id)
                if run is None:
                    raise ApiError(404, f"run {run_id} not found")
                items: list[Any] = run.jobs
                positions = run.position
                render: Callable[[Any, float], dict[str, Any]] = self._job_resource

                def keep(item: Any) -> bool:
                    return filters.get("org_id", ORG_ID) == ORG_ID and filters.get("user_id", USER_ID) == USER_ID
            else:
                items, positions, render = self._run_order, self._run_position, self._run_resource

                def keep(item: Any) -> bool:
                    run: _Run = item
                    attributes = None
                    for name, value in filters.items():
                        if name == "priority":
                            if run.priority != value:
                                return False
                        elif name in ("org_id", "user_id"):
                            if value != ORG_ID:
                                return False
                        else:
                            attributes = attributes or self._run_resource(run, now)["attributes"]
                            if attributes["status"] != value:
                                return False
                    return True

            start = 0
            if after is not None:
                if after not in positions:
                    raise ApiError(400, f"page[after]={after!r} is not a cursor of this listing")
                start = positions[after] + 1
            page: list[Any] = []
            index = start
            while index < len(items) and len(page) < size:
                if keep(items[index]):
                    page.append(items[index])
                index += 1
            while index < len(items) and not keep(items[index]):
                index += 1
            data = [render(item, now) for item in page]
            more = index < len(items) and bool(page)
        links: dict[str, Any] = {"self": self._link(path, query), "next": None}
        if more:
            links["next"] = self._link(path, dict(query, **{"page[after]": page[-1].id, "page[size]": str(size)}))
        return {"data": data, "links": links}

    def _link(self, path: str, query: dict[str, str]) -> str:
        """P14 [SDK] A link is a path from the host's root: the SDK appends it to ``https://apis.<env>.elucidata.io``."""
        return f"{self.base_path}{path}" + (f"?{urlencode(query)}" if query else "")

    def _create_run(self, data: Any) -> dict[str, Any]:
        problems: list[tuple[str, str | None]] = []
        attributes = _resource(data, "runs", "/data", problems)
        if attributes is not None:
            for name in sorted(set(attributes) - RUN_ATTRIBUTES):
                hint = " (the SDK's run_name keyword travels as name)" if name == "run_name" else ""  # P3
                problems.append(
                    (
                        f"unknown attribute {name!r}; a run takes {', '.join(sorted(RUN_ATTRIBUTES))}{hint}",
                        f"/data/attributes/{name}",
                    )
                )
            pipeline_id = attributes.get("pipeline_id")
            if not isinstance(pipeline_id, str) or not pipeline_id:
                problems.append(("pipeline_id is required: a non-empty string", "/data/attributes/pipeline_id"))
            run_name = attributes.get("name")
            if run_name is not None and not (isinstance(run_name, str) and 1 <= len(run_name) <= MAX_NAME):
                problems.append((f"name must be a string of 1 to {MAX_NAME} characters", "/data/attributes/name"))
            priority = attributes.get("priority", "low")  # P4
            if priority not in PRIORITIES:
                problems.append(
                    (f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}", "/data/attributes/priority")
                )
            for member in ("tags", "domain_context"):
                if not isinstance(attributes.get(member, {}), dict):
                    problems.append((f"{member} must be an object", f"/data/attributes/{member}"))
        if problems:
            raise ApiError(422, problems)
        assert attributes is not None
        with self._lock:
            run = _Run(
                id=self._new_id(),
                name="",
                pipeline_id=attributes["pipeline_id"],
                priority=attributes.get("priority", "low"),
                tags=dict(attributes.get("tags") or {}),
                domain_context=dict(attributes.get("domain_context") or {}),
                created=self.clock(),
            )
            # P5 [reading] The SDK always sends a name (a timestamp when none is given): an unnamed run gets its id.
            run.name = attributes.get("name") or run.id
            self._runs[run.id] = run
            self._run_position[run.id] = len(self._run_order)
            self._run_order.append(run)
            return self._run_resource(run, run.created)

    def _create_jobs(self, data: Any) -> list[dict[str, Any]]:
        entries = data if isinstance(data, list) else [data]
        if not entries:
            raise ApiError(422, "data holds no job")
        if len(entries) > self.max_jobs_per_request:  # P8
            raise ApiError(422, f"{len(entries)} jobs in one request; at most {self.max_jobs_per_request} are accepted")
        problems: list[tuple[str, str | None]] = []
        jobs: list[dict[str, Any]] = []
        for index, entry in enumerate(entries):
            where = f"/data/{index}" if isinstance(data, list) else "/data"
            attributes = _resource(entry, "jobs", where, problems)
            if attributes is None:
                continue
            for name in sorted(set(attributes) - JOB_ATTRIBUTES):
                problems.append(
                    (
                        f"unknown attribute {name!r}; a job takes {', '.join(sorted(JOB_ATTRIBUTES))}",
                        f"{where}/attributes/{name}",
                    )
                )
            if not isinstance(attributes.get("run_id"), str) or not attributes.get("run_id"):
                problems.append(("run_id is required: a string", f"{where}/attributes/run_id"))
            job_name = attributes.get("name")
            if job_name is not None and not (isinstance(job_name, str) and 1 <= len(job_name) <= MAX_NAME):
                problems.append((f"name must be a string of 1 to {MAX_NAME} characters", f"{where}/attributes/name"))
            if not isinstance(attributes.get("parameters"), dict):
                problems.append(
                    ("parameters is required: an object of the pipeline's parameters", f"{where}/attributes/parameters")
                )
            problems += _config_problems(attributes.get("config"), f"{where}/attributes/config")  # P9
            jobs.append(attributes)
        if problems:  # P11: none of the request's jobs is made
            raise ApiError(422, problems)
        with self._lock:
            missing = sorted({str(job["run_id"]) for job in jobs} - set(self._runs))
            if missing:
                raise ApiError(404, f"run {missing[0]} not found")
            seen: dict[tuple[str, str], int] = {}
            conflicts: list[tuple[str, str | None]] = []
            for index, job in enumerate(jobs):
                if job.get("name") is None:
                    continue
                key = (job["run_id"], job["name"])
                if key in seen:
                    conflicts.append(
                        (f"job name {job['name']!r} appears twice in this request", f"/data/{index}/attributes/name")
                    )
                elif job["name"] in self._runs[job["run_id"]].by_name:
                    conflicts.append(
                        (
                            f"run {job['run_id']} already has a job named {job['name']!r}",
                            f"/data/{index}/attributes/name",
                        )
                    )
                seen[key] = index
            if conflicts:  # P10
                raise ApiError(409, conflicts)
            now = self.clock()
            created: list[dict[str, Any]] = []
            for job in jobs:
                run = self._runs[job["run_id"]]
                refusal = self._job_errors.pop(str(job.get("name")), None)
                if refusal is not None:  # P23: refused inside a 2xx answer, the others made
                    created.append({"errors": [{"status": "422", "title": _TITLES[422], "detail": refusal}]})
                    continue
                job_id = self._new_id()
                name = job.get("name") or f"job#{len(run.jobs)}"
                record = _Job(
                    id=job_id,
                    run_id=run.id,
                    name=name,
                    parameters=job["parameters"],
                    config=job["config"],
                    created=now,
                    fails=fraction(f"{self.seed}:{run.id}:{name}") < self.failure_rate,
                )
                run.position[job_id] = len(run.jobs)
                run.jobs.append(record)
                run.by_name[name] = record
                self._jobs[job_id] = record
                created.append(self._job_resource(record, now))
            return created


def _resource(data: Any, kind: str, where: str, problems: list[tuple[str, str | None]]) -> dict[str, Any] | None:
    """The attributes of a JSON:API resource object of ``kind``, or None (with a problem noted)."""
    if not isinstance(data, dict):
        problems.append((f'must be a resource object {{"type": "{kind}", "attributes": {{...}}}}', where))
        return None
    if data.get("type") != kind:
        problems.append((f"type must be {kind!r}, not {data.get('type')!r}", f"{where}/type"))
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        problems.append(("attributes must be an object", f"{where}/attributes"))
        return None
    return attributes


def _config_problems(config: Any, where: str) -> list[tuple[str, str | None]]:
    if not isinstance(config, dict):
        return [('config is required: an object {"infra": {"cpu", "memory", "storage"}}', where)]
    found: list[tuple[str, str | None]] = []
    for key in sorted(set(config) - {"infra"}):
        found.append((f"unknown config member {key!r}; config holds only infra", f"{where}/{key}"))
    infra = config.get("infra", {})
    if not isinstance(infra, dict):
        return [*found, ("infra must be an object of cpu, memory and storage", f"{where}/infra")]
    for key, value in infra.items():
        if key not in INFRA_KEYS:
            found.append((f"unknown infra member {key!r}; infra takes cpu, memory and storage", f"{where}/infra/{key}"))
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            found.append((f"infra.{key} must be a positive integer, not {value!r}", f"{where}/infra/{key}"))
    return found
