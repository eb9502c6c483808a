"""A local AWS HealthOmics for tests and the sandbox: the workflow, run and run-batch API on loopback.

``OmicsEmulator`` is an HTTP server (``LoopbackServer``: stdlib ``ThreadingHTTPServer`` in a
background thread) that speaks the rest-json protocol of botocore's ``omics`` service model,
so a plain ``boto3.client("omics", endpoint_url=emu.endpoint_url)`` talks to it::

    with OmicsEmulator(s3_endpoint_url=moto_url) as emu:
        omics = boto3.client("omics", endpoint_url=emu.endpoint_url,
                             config=Config(inject_host_prefix=False))
        omics.start_run_batch(...)

Three modules: this one (the server: routing, validation, throttling, the test hooks),
``omics_protocol`` (the rest-json protocol read from the model) and ``omics_state`` (the state
machine: what each operation does, how runs and batches move with the clock, and the source of
every behaviour, listed in ``docs/sources.md``).

Throttling.  With ``api_rates="documented"``, each operation has its own token bucket at the
default TPS of the User Guide's "HealthOmics API quotas" (``omics_protocol.DOCUMENTED_TPS``;
operations it does not list are not limited).  With ``throttle_per_second``, one token bucket
over every operation.  Buckets hold one second's worth, refill in real time (not by ``clock``)
and answer requests over the rate with HTTP 429 ThrottlingException, which botocore's retry
modes retry.

Faults (sources.md: faults).  ``fail(operation, *statuses)`` answers the next requests of an
operation with these 5xx statuses (500 InternalServerException, the model's; any other, a bare
``ServiceUnavailable``), and ``slow(operation, seconds, times=1)`` answers the next ones after
that many real seconds: both as a service under load does, for botocore's retries to meet.

Test hooks: ``run_count()`` (runs not deleted), ``batch_count()``, ``requests()`` (every
routed request as ``(operation, params)``, throttled ones included), ``recorded_etag(batch_id)``,
``set_workflow_status(workflow_id, status, version_name=None, message=None)`` and
``put_workflow(workflow_id, ...)``, which makes (or replaces) an ACTIVE workflow under an id
of the caller's choosing, with its parameter template: the id a plan names, where
CreateWorkflow would choose one.  The sandbox reaches it over HTTP, as moto's ``/moto-api/``:
``PUT /_emulator/workflows/{id}`` with a JSON body ``{"name", "parameterTemplate",
"versions": {name: {"parameterTemplate"}}}`` (not an AWS API; no SigV4 is checked).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from planner.sandbox.loopback import LoopbackServer
from planner.sandbox.omics_protocol import (
    DOCUMENTED_TPS,
    ServiceError,
    _Router,
    _service_model,
    _TokenBucket,
    parse_request,
    serialize,
    validate_input,
)
from planner.sandbox.omics_state import FAILURE_REASONS, OmicsService

__all__ = ["FAILURE_REASONS", "OmicsEmulator"]


class OmicsEmulator(LoopbackServer):
    """The HealthOmics workflow, run and run-batch API on a loopback HTTP server."""

    server_version = "OmicsEmulator/1.0"
    thread_name = "omics-emulator"

    def __init__(
        self,
        *,
        s3_endpoint_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        failure_rate: float = 0.0,
        seed: int = 0,
        fail_when: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None,
        uncancellable: Callable[[dict[str, Any]], bool] | None = None,
        max_retained_runs: int | None = None,
        known_workflows_only: bool = False,
        throttle_per_second: float | None = None,
        api_rates: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        step_seconds: float = 1.0,
        region: str = "us-east-1",
        account: str = "123456789012",
        run_seconds: float | None = None,
    ):
        if throttle_per_second is not None and throttle_per_second <= 0:
            raise ValueError("throttle_per_second must be positive")
        if api_rates not in (None, "documented"):
            raise ValueError('api_rates is None or "documented" (the User Guide\'s per-API TPS)')
        self.service = OmicsService(
            s3_endpoint_url=s3_endpoint_url,
            failure_rate=failure_rate,
            seed=seed,
            fail_when=fail_when,
            uncancellable=uncancellable,
            max_retained_runs=max_retained_runs,
            known_workflows_only=known_workflows_only,
            clock=clock,
            step_seconds=step_seconds,
            region=region,
            account=account,
            run_seconds=run_seconds,
        )
        self.s3_endpoint_url = s3_endpoint_url
        self.clock = clock
        self._init_server(host, port)
        self._bucket = _TokenBucket(throttle_per_second) if throttle_per_second else None
        # One bucket per operation at its documented rate (sources.md: throttling); unlisted operations are free.
        self._api_buckets = (
            {operation: _TokenBucket(rate) for operation, rate in DOCUMENTED_TPS.items()} if api_rates else {}
        )
        self._router = _Router(_service_model())
        self._lock = threading.Lock()
        self._requests: list[tuple[str, dict[str, Any]]] = []
        self._faults: dict[str, deque[tuple[int, float]]] = {}  # operation -> (status or 0, delay), in order

    # -- test hooks ----------------------------------------------------------

    def run_count(self) -> int:
        """The runs the API still answers for (deleted and removed ones are not counted)."""
        return self.service.run_count()

    def batch_count(self) -> int:
        return self.service.batch_count()

    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._requests)

    def fail(self, operation: str, *statuses: int) -> None:
        """Answer the next requests of ``operation`` with these 5xx statuses, one each."""
        if not all(500 <= status <= 599 for status in statuses):
            raise ValueError("fail() injects server errors: statuses 500..599")
        with self._lock:
            self._faults.setdefault(operation, deque()).extend((status, 0.0) for status in statuses)

    def slow(self, operation: str, seconds: float, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``operation`` after ``seconds`` of real time."""
        with self._lock:
            self._faults.setdefault(operation, deque()).extend((0, float(seconds)) for _ in range(times))

    def recorded_etag(self, batch_id: str) -> str | None:
        """The ETag of the s3UriSettings object recorded when the batch was created."""
        return self.service.recorded_etag(batch_id)

    def set_workflow_status(
        self, workflow_id: str, status: str, *, version_name: str | None = None, message: str | None = None
    ) -> None:
        """Pin a workflow's (or one of its versions') status, e.g. FAILED, INACTIVE or DELETED, from now on."""
        self.service.set_workflow_status(workflow_id, status, version_name=version_name, message=message)

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
        self.service.put_workflow(workflow_id, name=name, parameter_template=parameter_template, versions=versions)

    def _emulator_api(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The hooks over HTTP (``PUT /_emulator/workflows/{id}``), for the sandbox's other processes."""
        match = re.fullmatch(r"/_emulator/workflows/([^/]+)", path)
        if method.upper() != "PUT" or match is None:
            return self._error(ServiceError("UnknownOperationException", f"No hook matches {method} {path}", 404))
        try:
            document = json.loads(body or b"{}")
            self.put_workflow(
                unquote(match.group(1)),
                name=document.get("name"),
                parameter_template=document.get("parameterTemplate"),
                versions=document.get("versions"),
            )
        except (ValueError, AttributeError, TypeError) as exc:
            return self._error(ServiceError("ValidationException", str(exc), 400))
        return 200, {"Content-Type": "application/json"}, json.dumps({"id": unquote(match.group(1))}).encode()

    # -- HTTP ----------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request in, (status, headers, body) out."""
        status, answer_headers, payload = self._handle(method, target, headers, body)
        answer_headers["x-amzn-RequestId"] = str(uuid.uuid4())  # as every AWS answer carries one
        return status, answer_headers, payload

    def _handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        if parts.path.startswith("/_emulator/"):
            return self._emulator_api(method, parts.path, body)
        query = parse_qs(parts.query, keep_blank_values=True)
        route = self._router.match(method.upper(), parts.path, query)
        if route is None:
            with self._lock:
                self._requests.append(("UnknownOperation", {"method": method, "path": target}))
            return self._error(
                ServiceError("UnknownOperationException", f"No operation matches {method} {parts.path}", 404)
            )
        operation, labels = route
        try:
            params = parse_request(operation, labels, query, headers, body)
        except ServiceError as exc:
            with self._lock:
                self._requests.append((operation.name, {}))
            return self._error(exc)
        with self._lock:
            self._requests.append((operation.name, params))
            queued = self._faults.get(operation.name)
            fault = queued.popleft() if queued else None
        if fault is not None:
            status, delay = fault
            if delay:
                time.sleep(delay)  # a slow answer: the client's read timeout may end the wait first
            if status:
                code = "InternalServerException" if status == 500 else "ServiceUnavailable"
                return self._error(ServiceError(code, f"Injected {status} for {operation.name}", status))
        api_bucket = self._api_buckets.get(operation.name)
        if api_bucket is not None and not api_bucket.take():
            return self._error(ServiceError("ThrottlingException", f"Rate exceeded for {operation.name}"))
        if self._bucket is not None and not self._bucket.take():
            return self._error(ServiceError("ThrottlingException", "Rate exceeded"))
        handler = self.service.handlers.get(operation.name)
        if handler is None:
            return self._error(
                ServiceError("NotImplemented", f"{operation.name} is not implemented by the emulator", 501)
            )
        try:
            if operation.input_shape is not None:
                validate_input(operation.input_shape, params)
            result = handler(params)
        except ServiceError as exc:
            return self._error(exc)
        except Exception as exc:  # a bug in the emulator: answer as the service would
            return self._error(ServiceError("InternalServerException", f"{type(exc).__name__}: {exc}", 500))
        return self._response(operation, result or {})

    def _response(self, operation: Any, result: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        status = int(operation.http.get("responseCode", 200))
        headers = {"Content-Type": "application/json"}
        shape = operation.output_shape
        if shape is None:
            return status, headers, b""
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            if location == "header" and result.get(name) is not None:
                headers[member.serialization.get("name", name)] = str(result[name])
            elif location == "statusCode" and result.get(name) is not None:
                status = int(result[name])
        body = serialize(shape, result)
        return status, headers, json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def _error(exc: ServiceError) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": exc.code}
        body = json.dumps({"message": exc.message}).encode()
        return exc.status, headers, body
