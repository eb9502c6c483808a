"""The one journaled-submission engine under every backend.

A backend describes each creating call as a ``Call`` (its ledger key, the samples
it covers, how to build its request, how to send it and, for a service without an
idempotency token, how to find an earlier attempt's result again) and hands the
engine ``Phase``s of them.  The engine does the rest, the same way for all five:

    for each call, on a bounded thread pool (in order, for calls that name the one before):
        journaled done           -> counted "already", nothing sent
        a sample handed over     -> counted "handed over", nothing sent: `planner retry` planned it
                                    again in a new plan, which runs it (sending it here would run it twice)
        find() finds it          -> journaled as found (reconciled), nothing sent
        build the request; pass the rate limit; journal the intent
        send:  answered          -> journal the result, mark its samples SUBMITTED
               "later"           -> wait (throttling, a full concurrency limit), say so once, send again; capped
               outcome unknown   -> find() before sending again; give up after MAX_UNKNOWN_OUTCOMES
               refused           -> journal the failure, mark its samples FAILED, go on with the rest
               no access at all  -> journal the failure and stop (every other call would fail alike)
    the refused calls summed up at the end (``Incomplete``, which carries the report)

Stop means stop: every call goes out on a worker thread, never the one that hands them out,
so Ctrl-C there reaches no call on the wire.  It sets ``ctx.stop``; queued calls are dropped,
waiting ones (the rate limit, a "later" answer) wake and send nothing, and the calls in flight
finish and are journaled before ``KeyboardInterrupt`` goes on up.  ``ctx.stop`` is looked at
before every creating call too: `planner cancel` (or a failure threshold) stops a running
submit through it (``Stopped``).

``no_blind_retry`` turns botocore's own resend of a call without an idempotency token
(AWS Batch SubmitJob, Glue StartJobRun) into ``OutcomeUnknown``: a 5xx or a broken
connection may hide a call that was carried out, so it is looked up, never resent blind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.validate import ParamValidator

from planner.core.ledger import DONE, SampleState
from planner.core.model import check_shape, operation_input
from planner.core.progress import Tracker
from planner.engine.context import Context, attend, finished, refusal, wait_reason
from planner.errors import AccessError, Incomplete, Stopped, SubmissionError
from planner.services.aws import MAX_BACKOFF

MAX_UNKNOWN_OUTCOMES = 5
UNKNOWN_BACKOFF = 30.0
SHOWN_FAILURES = 5
SUBMITTED = "SUBMITTED"
FAILED = "FAILED"


class OutcomeUnknown(Exception):
    """A creating call whose answer was lost (a 5xx, a broken connection): it may have been carried out."""


class Later(Exception):
    """The service said "not now" for a reason a backend knows (e.g. Glue's run slots): wait, send again."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def no_blind_retry(client: Any, operation: str) -> None:
    """Make botocore raise ``OutcomeUnknown`` instead of resending ``operation`` after a 5xx or a lost answer."""
    service = client.meta.service_model.endpoint_prefix

    def hook(response: Any = None, caught_exception: Exception | None = None, **_: Any) -> None:
        if caught_exception is not None:
            raise OutcomeUnknown(str(caught_exception)) from caught_exception
        if response is not None and response[0].status_code >= 500:
            raise OutcomeUnknown(f"HTTP {response[0].status_code}")

    client.meta.events.register_first(
        f"needs-retry.{service}.{operation}", hook, unique_id=f"planner-no-blind-retry-{service}-{operation}"
    )


@dataclass(frozen=True)
class Place:
    """Where a sample sits in the plan."""

    id: str
    shard: int
    position: int


@dataclass(frozen=True)
class Created:
    """What a creating call made (or an earlier attempt made, found again)."""

    remote_id: str  # the batch, array job, run or job run id
    response: Mapping[str, Any] = field(default_factory=dict)  # journaled as the call's result
    state: str | None = None  # the first state of what was made, for a call that makes one sample's run
    uuid: str | None = None
    per_sample: Mapping[str, tuple[str, str | None]] | None = None  # sample -> (remote id, state), for a call of many
    existed: bool = False  # the service handed back what an earlier submission made, started nothing new


@dataclass
class Call:
    """One creating call, described by a backend; the engine journals and sends it."""

    key: str  # the ledger key, stable across resumes: "StartRunBatch:00003", "StartRun:<sample>"
    operation: str
    label: str  # for messages: "shard 3", "sample S1"
    covers: Callable[[], Sequence[Place]]  # the samples it submits
    build: Callable[[], dict[str, Any]]
    send: Callable[[dict[str, Any]], Created]
    # An earlier attempt's result, when no token dedupes; ``fresh``: after a lost answer, ask the service anew.
    find: Callable[[bool], Created | None] | None = None
    token: str | None = None  # the idempotency token or deterministic name it carries
    shard: int | None = None
    sample: str | None = None
    count: int = 1  # what it counts for in the tally (a Polly request of 50 jobs counts 50)
    one_to_one: bool = False  # it makes the run of exactly one sample: the remote id is the sample's
    where: Mapping[str, Any] = field(default_factory=dict)  # shown in --dry-run lines: {"shard": 3}
    check: Callable[[dict[str, Any]], list[str]] | None = None  # --dry-run: what is wrong with the request


@dataclass
class Phase:
    """Calls of one operation, sent together: on a pool, or in order when each names the one before."""

    operation: str
    unit: str  # what one counted item is: "batch", "run", "array job", "job run", "job"
    calls: Iterable[Call]
    total: int  # items (sum of counts) in the phase, for progress and the report
    ordered: bool = False
    find_first: bool = False  # look for an earlier attempt before the first send too (a lost ledger)


@dataclass
class Tally:
    """What one phase did."""

    operation: str
    unit: str
    total: int
    created: int = 0
    found: int = 0  # made by an earlier attempt of this plan whose result was not journaled: recorded now
    already: int = 0  # journaled as done before this run: nothing sent
    existed: int = 0  # the service answered with what an earlier submission made: nothing new started
    handed_over: int = 0  # covers samples `planner retry` planned again elsewhere: not sent from here
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    retries: set[tuple[str, str]] = field(default_factory=set)  # (plan id, path) of those retry plans

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "unit": self.unit,
            "total": self.total,
            "created": self.created,
            "found": self.found,
            "already": self.already,
            "existed": self.existed,
            "handed_over": self.handed_over,
            "failed": self.failed,
        }


@dataclass
class SubmitReport:
    """What ``submit`` did, for people (``lines()``) and scripts (``to_json()``)."""

    backend: str
    plan_id: str
    runs: int
    dry_run: bool = False
    staged_uploaded: int = 0
    staged_reused: int = 0
    phases: list[Tally] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.phases)

    def tally(self, operation: str) -> Tally:
        return next(t for t in self.phases if t.operation == operation)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "plan_id": self.plan_id,
            "runs": self.runs,
            "dry_run": self.dry_run,
            "staged": {"uploaded": self.staged_uploaded, "reused": self.staged_reused},
            "submissions": [t.to_json() for t in self.phases],
            "notes": list(self.notes),
        }

    def lines(self) -> list[str]:
        head = f"{self.backend} plan {self.plan_id}: {self.runs:,} run{'s' if self.runs != 1 else ''}"
        out = [head + (" (dry run: nothing was sent)" if self.dry_run else "")]
        if self.staged_uploaded or self.staged_reused:
            out.append(f"  staged on S3: {self.staged_uploaded} uploaded, {self.staged_reused} already there")
        for t in self.phases:
            parts = []
            for count, words in (
                (t.created, "would be sent" if self.dry_run else "created"),
                (t.found, "found from an earlier attempt"),
                (t.already, "already submitted"),
                (t.existed, "already existed (nothing new started)"),
                (t.handed_over, "handed over to a retry plan (not sent)"),
                (t.failed, "FAILED"),
            ):
                if count:
                    parts.append(f"{count:,} {words}")
            unit = t.unit if t.total == 1 else _plural(t.unit)
            out.append(f"  {t.operation}: {t.total:,} {unit}: {', '.join(parts) or 'nothing to do'}")
        out += [f"  note: {n}" for n in self.notes]
        return out


def incomplete(report: SubmitReport) -> Incomplete[SubmitReport]:
    """The error for a submit some of whose calls were refused: it carries the report."""
    failures = [f for t in report.phases for f in t.failures]
    shown = "; ".join(failures[:SHOWN_FAILURES])
    if len(failures) > SHOWN_FAILURES:
        shown += f"; and {len(failures) - SHOWN_FAILURES} more"
    tally = next(t for t in report.phases if t.failed)
    return Incomplete(
        f"{tally.failed:,} of {tally.total:,} {_plural(tally.unit)} could not be submitted ({shown}); "
        "`planner status` lists them and `planner retry` plans them again",
        report,
    )


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("ch", "sh", "s")) else "s")


class Engine:
    """Journals, sends and accounts for the creating calls of one submit."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.pace = ctx.pacer()
        self.handed = ctx.ledger.handovers()  # sample -> the retry plan that runs it now

    def run(self, phase: Phase) -> Tally:
        tally = Tally(phase.operation, phase.unit, phase.total)
        lock = threading.Lock()
        stop = threading.Event()
        errors: list[BaseException] = []

        def one(call: Call) -> None:
            if stop.is_set():
                return
            try:
                self._one(call, phase, tally, lock)
            except BaseException as exc:  # a stop: no access, a changed plan, asked to stop
                stop.set()
                with lock:
                    errors.append(exc)
            finally:
                bar.advance(call.count)

        def in_order() -> None:
            for call in phase.calls:
                one(call)
                if stop.is_set():
                    break

        sequential = phase.ordered or self.ctx.options.concurrency == 1 or self.ctx.dry_run
        workers = 1 if sequential else self.ctx.options.concurrency
        with (
            Tracker(self.ctx.progress, phase.operation, phase.unit, phase.total) as bar,
            self.ctx.stop.pool(workers, "planner-submit") as pool,
        ):
            if sequential:
                finished(pool.submit(in_order))
            else:
                window = threading.BoundedSemaphore(self.ctx.options.concurrency * 2)  # calls built as they go
                futures: list[Future[None]] = []
                for call in phase.calls:
                    if stop.is_set():
                        break
                    attend(lambda timeout: window.acquire(timeout=timeout))
                    future = pool.submit(one, call)
                    future.add_done_callback(lambda _f: window.release())
                    futures.append(future)
                attend(lambda timeout: not futures_wait(futures, timeout=timeout).not_done)
        if errors:
            raise errors[0]
        return tally

    def _one(self, call: Call, phase: Phase, tally: Tally, lock: threading.Lock) -> None:
        ledger = self.ctx.ledger
        self.ctx.stop.check()
        known = ledger.submission(call.key)
        if known is not None and known.state == DONE:
            with lock:
                tally.already += call.count
            return
        if self.handed:
            retries = {self.handed[p.id] for p in call.covers() if p.id in self.handed}
            if retries:
                with lock:
                    tally.handed_over += call.count
                    tally.retries |= retries
                return
        if call.find is not None and (known is not None or phase.find_first) and not self.ctx.dry_run:
            # An intent without a result (or a failure after which the call may have been made
            # after all, or a lost ledger): look before sending anything again.
            found = call.find(False)
            if found is not None:
                if known is None:  # a lost ledger: journal the intent the earlier attempt's record lost
                    ledger.intent(call.key, call.operation, shard=call.shard, sample=call.sample, token=call.token)
                self._record(call, found, reconciled=True)
                with lock:
                    tally.found += call.count
                return
        request = call.build()
        if self.ctx.dry_run:
            line = {"operation": call.operation, **call.where}
            line["problems"] = call.check(request) if call.check is not None else []
            line["request"] = request
            self.ctx.emit(line)
            with lock:
                tally.created += call.count
            return
        self.pace()  # raises Stopped, sending nothing, once the submit must stop
        ledger.intent(call.key, call.operation, shard=call.shard, sample=call.sample, token=call.token)
        try:
            created = self._send(call, request)
        except Stopped:
            # Stopped while the call was under way (botocore's resend held back, a wait ended): the
            # service may have carried out an attempt, so its intent stays open, for the next submit
            # (or a reader, ``intents.py``) to settle; never journaled FAILED, as if refused.
            raise
        except AccessError as exc:
            self._fail(call, str(exc))
            raise
        except SubmissionError as exc:
            self._fail(call, str(exc))
            with lock:
                tally.failed += call.count
                tally.failures.append(f"{call.label}: {exc}")
            return
        self._record(call, created)
        with lock:
            if created.existed and known is not None:
                tally.found += call.count  # made by this plan's own earlier, unjournaled attempt
            elif created.existed:
                tally.existed += call.count
            else:
                tally.created += call.count

    def reconcile(self, call: Call) -> bool:
        """Settle an open intent without sending anything (``intents.settle``): journal what
        ``find`` finds.  False when the call has no ``find`` or the service lists nothing it made."""
        found = call.find(False) if call.find is not None else None
        if found is None:
            return False
        self._record(call, found, reconciled=True)
        return True

    def _send(self, call: Call, request: dict[str, Any]) -> Created:
        what = f"{call.operation} for {call.label}"
        waited, delay, unknown = 0.0, 1.0, 0
        while True:
            try:
                return call.send(request)
            except Later as exc:
                waited += self.ctx.patience.pause(what, exc.reason, waited, delay)
                delay = min(delay * 2, MAX_BACKOFF)
            except ClientError as exc:
                reason = wait_reason(exc)
                if reason is None:
                    raise refusal(what, exc) from exc
                waited += self.ctx.patience.pause(what, reason, waited, delay)
                delay = min(delay * 2, MAX_BACKOFF)
            except BotoCoreError as exc:
                raise refusal(what, exc) from exc
            except OutcomeUnknown as exc:
                # The call may have been carried out: look for what it would have made first.
                unknown += 1
                self.ctx.sleep(min(2.0 ** (unknown - 1), UNKNOWN_BACKOFF))
                self.ctx.stop.check()
                if call.find is not None:
                    found = call.find(True)
                    if found is not None:
                        return Created(
                            found.remote_id,
                            dict(found.response, reconciled=True),
                            found.state,
                            found.uuid,
                            found.per_sample,
                        )
                if unknown >= MAX_UNKNOWN_OUTCOMES:
                    detail = "and the service lists nothing it made" if call.find is not None else "every time"
                    raise SubmissionError(f"{what}: no answer ({exc}) {unknown} times, {detail}") from exc

    def _record(self, call: Call, created: Created, *, reconciled: bool = False) -> None:
        response = dict(created.response)
        if reconciled:
            response["reconciled"] = True
        rows = []
        for place in call.covers():
            if created.per_sample is not None:
                remote_id, state = created.per_sample.get(place.id, (None, None))
                rows.append(SampleState(place.id, place.shard, place.position, remote_id, None, SUBMITTED, state))
            elif call.one_to_one:
                rows.append(
                    SampleState(
                        place.id, place.shard, place.position, created.remote_id, created.uuid, SUBMITTED, created.state
                    )
                )
            else:
                rows.append(SampleState(place.id, place.shard, place.position, None, None, SUBMITTED))
        self.ctx.ledger.result(call.key, created.remote_id, response, rows)

    def _fail(self, call: Call, error: str) -> None:
        rows = [SampleState(p.id, p.shard, p.position, None, None, FAILED, None, error) for p in call.covers()]
        self.ctx.ledger.failure(call.key, error, rows)
        if self.ctx.on_refused is not None:
            self.ctx.on_refused(len(rows))  # a failure threshold counts them as they come


def model_check(service: str, operation: str) -> Callable[[dict[str, Any]], list[str]]:
    """A ``Call.check`` from the botocore model: botocore's own validation plus max, pattern and enum."""
    shape = operation_input(service, operation)

    def check(request: dict[str, Any]) -> list[str]:
        report = ParamValidator().validate(request, shape)
        found = []
        if report.has_errors():
            found = [
                line.strip()
                for line in report.generate_report().splitlines()
                if line.strip() and not line.startswith("Parameter validation failed")
            ]
        return found + [p.describe() for p in check_shape(shape, request, "")]

    return check
