"""A backend whose service is a dict in this process: the planner's API end to end with no server.

The stub follows the ``Backend`` interface like the five real backends (the contract
suite in ``tests/contract`` holds it to the same signatures and lifecycle), so the
API's own logic (options, the engine's journal and report, progress, status, watch,
retry, cancel) can be tested in milliseconds::

    with installed(StubService(fail_when=...)) as service:
        planner.plan(sheet, backend="stub", defaults=DEFAULTS).write(plan_dir)
        planner.submit(plan_dir)
        service.advance()                     # every run moves one step on
        planner.status(plan_dir)

The service, modelled on HealthOmics StartRun:

* ``StartRun`` makes one run per sample; its ``requestId`` (derived from the plan id
  and the sample, never random) is an idempotency token: a repeat answers with the
  run made first, and creates nothing.
* A run is PENDING, then RUNNING, then COMPLETED, or FAILED with the reason
  ``fail_when(request)`` gives; each ``advance()`` moves every unfinished run one step,
  but a run ``hold(request)`` is true for stays RUNNING.
* ``refuse(request)``, when it gives a message, makes ``StartRun`` answer
  ``ValidationException`` with it (a refused call, as botocore raises it).
* ``GetRuns`` answers for up to ``GET_MAX`` runs; ``CancelRun`` cancels an unfinished
  run, and answers ``ConflictException`` for a finished one.
* ``calls`` records every operation asked of the service, in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from botocore.exceptions import ClientError

from planner.backends import register, unregister
from planner.backends.base import ALREADY_FINAL, CANCELLED, NOT_CANCELLED, Backend, CancelOutcome, CancelReport
from planner.core.model import FieldRule
from planner.core.spec import BackendSpec, RoutedField
from planner.engine.engine import Call, Created, Phase, Place
from planner.errors import AccessError, SubmissionError

NAME = "stub"
GET_MAX = 100
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "DELETED"})

SPEC = BackendSpec(
    name=NAME,
    title="an in-memory stub service (tests)",
    id_field="name",
    id_rule=FieldRule("name", "string", min=1, max=128),
    fields={"priority": RoutedField(("priority",), FieldRule("priority", "integer", min=0, max=9))},
    parameters_path=("parameters",),
    tags_path=("tags",),
)


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@dataclass
class StubRun:
    id: str
    request: dict[str, Any]
    status: str = "PENDING"
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "reason": self.reason, "name": self.request.get("name")}


@dataclass
class StubService:
    """What a service would hold: runs by id, found again by their request token."""

    fail_when: Callable[[dict[str, Any]], str | None] | None = None
    refuse: Callable[[dict[str, Any]], str | None] | None = None
    hold: Callable[[dict[str, Any]], bool] | None = None
    runs: dict[str, StubRun] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start_run(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            self.calls.append("StartRun")
            message = self.refuse(request) if self.refuse is not None else None
            if message:
                raise _error("ValidationException", message, "StartRun")
            known = self.tokens.get(request["requestId"])
            if known is not None:
                return self.runs[known].to_json()
            run = StubRun(f"run-{len(self.runs):05d}", dict(request))
            self.runs[run.id] = run
            self.tokens[request["requestId"]] = run.id
            return run.to_json()

    def get_runs(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            self.calls.append("GetRuns")
            if len(ids) > GET_MAX:
                raise _error("ValidationException", f"at most {GET_MAX} ids", "GetRuns")
            gone = {"status": "DELETED", "reason": "the run is no longer in the service"}
            return {i: self.runs[i].to_json() if i in self.runs else dict(gone, id=i) for i in ids}

    def cancel_run(self, id: str) -> None:
        with self._lock:
            self.calls.append("CancelRun")
            run = self.runs.get(id)
            if run is None:
                raise _error("ResourceNotFoundException", f"run {id} does not exist", "CancelRun")
            if run.status in FINAL:
                raise _error("ConflictException", f"run {id} is {run.status}", "CancelRun")
            run.status = "CANCELLED"

    def advance(self, steps: int = 1) -> None:
        """Every unfinished run moves ``steps`` steps on (PENDING -> RUNNING -> COMPLETED or FAILED)."""
        with self._lock:
            for _ in range(steps):
                for run in self.runs.values():
                    if run.status == "PENDING":
                        run.status = "RUNNING"
                    elif run.status == "RUNNING" and not (self.hold is not None and self.hold(run.request)):
                        reason = self.fail_when(run.request) if self.fail_when is not None else None
                        run.status, run.reason = ("FAILED", reason) if reason else ("COMPLETED", None)

    def states(self) -> dict[str, str]:
        """Each run's sample (its ``name``) -> status, for tests (not recorded as a call)."""
        with self._lock:
            return {str(run.request["name"]): run.status for run in self.runs.values()}


_service: StubService | None = None


def service() -> StubService:
    """The service the backend talks to (as a client would find its endpoint)."""
    if _service is None:
        raise AccessError("no stub service is installed (tests/stub_backend.py: `with installed(...)`)")
    return _service


@contextlib.contextmanager
def installed(stub: StubService | None = None) -> Iterator[StubService]:
    """Register the ``stub`` backend and serve it from ``stub`` (a new service by default) inside the block."""
    global _service
    _service = stub if stub is not None else StubService()
    register(NAME, sys.modules[__name__])
    try:
        yield _service
    finally:
        unregister(NAME)
        _service = None


def request_id(plan_id: str, sample: str) -> str:
    return f"stub-{plan_id}-{hashlib.sha256(sample.encode()).hexdigest()[:24]}"


def _check(request: dict[str, Any]) -> list[str]:
    """What a dry run reports about a request: the fields the service requires."""
    return [f"{name}: is required" for name in ("workflow", "name", "requestId") if not request.get(name)]


class StubBackend(Backend):
    spec = SPEC

    def phases(self) -> Iterator[Phase]:
        yield Phase("StartRun", "run", self._calls(), total=self.ctx.manifest.runs)

    def _calls(self) -> Iterator[Call]:
        for shard in self.ctx.manifest.shards:
            if not self.ctx.dry_run:
                self.ctx.plan.check_shard(shard)
            ids = self.ids_by_position(shard).to_list()
            for position, (sample, line) in enumerate(zip(ids, self.ctx.plan.lines(shard), strict=True)):
                yield self._call(Place(sample, shard.index, position), line)

    def _call(self, place: Place, line: bytes) -> Call:
        token = request_id(self.ctx.plan_id, place.id)

        def build() -> dict[str, Any]:
            return dict(orjson.loads(line), requestId=token)

        def send(request: dict[str, Any]) -> Created:
            run = service().start_run(**request)
            # A token the service has seen is answered with its run: one that has moved on was not started now.
            return Created(run["id"], run, run["status"], existed=run["status"] != "PENDING")

        return Call(
            key=f"StartRun:{place.id}",
            operation="StartRun",
            label=f"sample {place.id}",
            covers=lambda: [place],
            build=build,
            send=send,
            token=token,
            shard=place.shard,
            sample=place.id,
            one_to_one=True,
            where={"sample": place.id},
            check=_check,
        )

    def refresh(self) -> None:
        """GetRuns for the runs the ledger does not hold as final, ``GET_MAX`` at a time."""
        moving = [s for s in self.ctx.ledger.samples() if s.remote_id and s.state not in FINAL]
        rows = []
        for start in range(0, len(moving), GET_MAX):
            chunk = moving[start : start + GET_MAX]
            found = self.ctx.call("GetRuns", service().get_runs, [str(s.remote_id) for s in chunk])
            for row in chunk:
                run = found[row.remote_id]
                rows.append(row._replace(state=run["status"], reason=run["reason"]))
        self.ctx.ledger.upsert_samples(rows)

    def cancel(self) -> CancelReport:
        """CancelRun for every run not yet final (states refreshed first); finished ones are left alone."""
        self.refresh()
        report = self.report()
        samples = [s for s in self.ctx.ledger.samples() if s.remote_id]
        final = sum(1 for s in samples if s.state in FINAL)
        if final:
            report.outcomes.append(CancelOutcome(f"{final} runs", ALREADY_FINAL, "had finished", final))
        for row in samples:
            if row.state in FINAL:
                continue
            target = f"run {row.remote_id} (sample {row.id})"
            try:
                self.ctx.call(f"CancelRun {row.remote_id}", service().cancel_run, str(row.remote_id))
            except SubmissionError as exc:
                cause = exc.__cause__
                if isinstance(cause, ClientError) and cause.response["Error"]["Code"] == "ConflictException":
                    report.outcomes.append(CancelOutcome(target, ALREADY_FINAL, "finished before the cancel"))
                else:
                    report.outcomes.append(CancelOutcome(target, NOT_CANCELLED, str(exc)))
                continue
            report.outcomes.append(CancelOutcome(target, CANCELLED))
        return report


BACKEND = StubBackend
