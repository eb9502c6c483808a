"""``planner submit``: stage a plan and make its runs, journaled, safe to run again.

Each opens the plan (``plandir.py``), its ledger and the clients (``context.py``),
and hands the backend (``backends/``) to the engine (``engine.py``) or asks it for
status.  These functions are the Python API; the CLI is a thin front over them, so
both check the same things and report the same way.

AWS access takes the standard boto3 chain (profile, region, environment,
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``), plus ``endpoint_url``,
``profile``, ``region``, ``retry_mode`` and ``max_attempts``; ``sandbox=True`` runs
against the local sandbox on loopback (started when none runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from planner.backends import backend_class
from planner.commands.access import Access
from planner.commands.cancel import cancel
from planner.commands.check import preflight_submit
from planner.commands.run_index import Guard
from planner.commands.sandbox_prepare import prepare
from planner.commands.status import sample_table, status
from planner.commands.watch import Threshold, _threshold, failed_samples
from planner.core.jsontext import dumps
from planner.core.plandir import PlanDirectory
from planner.core.progress import ProgressCallback, log
from planner.engine.context import STOP_FILE, Context, Options
from planner.engine.engine import Engine, SubmitReport, incomplete
from planner.engine.lock import plan_lock
from planner.errors import InputError, Stopped, SubmissionError, ThresholdCrossed


def submit(
    plan_dir: str | os.PathLike[str],
    *,
    staging: str | None = None,
    dry_run: bool = False,
    concurrency: int = 8,
    rate: float | None = None,
    max_wait: float = 900.0,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    emit: Callable[[dict[str, Any]], None] | None = None,
    check: bool = False,
    staging_kms_key: str | None = None,
    expected_bucket_owner: str | None = None,
    cancel_if_failed: Threshold | str | None = None,
    interval: float = 30.0,
    allow_rerun: bool = False,
) -> SubmitReport:
    """Stage and submit a plan; safe to run again after a crash or a partial submit.

    Raises ``Incomplete`` (a ``SubmissionError`` carrying the report) when some
    calls were refused; ``planner status`` then lists those samples as FAILED and
    ``planner retry`` plans them again.  ``dry_run``: build and check every request
    and hand each to ``emit`` (default: a JSON line on stdout), sending nothing.  ``check``: first the
    preflight check (``preflight.py``); its problems raise ``PreflightError`` before anything is staged.
    ``staging_kms_key`` (the CLI's ``--staging-kms-key``) and ``expected_bucket_owner`` override
    plan.json's ``[staging] kms_key_id`` and ``expected_bucket_owner``.

    ``cancel_if_failed`` (``watch``'s threshold) is guarded while submitting too: refused calls are
    counted as they come and the runs refreshed every ``interval`` seconds; once more samples than
    that have failed nothing more is sent, everything submitted is cancelled, and ``ThresholdCrossed``
    (a ``Stopped`` carrying the ``CancelReport``) is raised.  Samples another plan already ran with
    identical settings are refused before the first call (``run_index.py``) unless ``allow_rerun``.
    """
    threshold = _threshold(cancel_if_failed)
    if not (isinstance(interval, (int, float)) and 0 < interval < float("inf")):
        raise InputError(f"interval {interval!r}: must be a positive number of seconds")
    options = Options(
        staging_uri=staging,
        concurrency=concurrency,
        rate=rate,
        dry_run=dry_run,
        max_wait=max_wait,
        staging_kms_key=staging_kms_key,
        expected_bucket_owner=expected_bucket_owner,
    )
    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    plan = PlanDirectory(plan_dir)  # a clear error for a folder that is not a plan, before anything is made in it
    if check and not dry_run:
        preflight_submit(
            plan.path,
            concurrency=concurrency,
            rate=rate,
            max_wait=max_wait,
            sandbox=sandbox,
            endpoint_url=endpoint_url,
            profile=profile,
            region=region,
            retry_mode=retry_mode,
            max_attempts=max_attempts,
            endpoints=endpoints,
            progress=progress,
        )
    lock = contextlib.nullcontext() if dry_run else plan_lock(plan.path)
    guard = None
    with lock:
        ctx = access.open(plan.path, options, progress=progress)
        claim = None  # this plan's samples in the per-user run index (run_index.py)
        try:
            if dry_run:
                ctx.emit = emit or _print_line
            else:
                claim = Guard.claim(ctx.plan, allow_rerun=allow_rerun)  # before the first creating call
                ctx.stop.watch(os.path.join(plan.path, STOP_FILE))  # `planner cancel` asks through it
                if threshold is not None:
                    guard = _Guard(ctx, threshold, interval, access)
            return run_submission(ctx)
        except Stopped as exc:
            if guard is None or guard.reason is None:
                raise Stopped(
                    f"{exc}; nothing more was sent, the calls in flight were journaled "
                    "(`planner status` shows where every sample is)"
                ) from None
        finally:
            if guard is not None:
                guard.end()
            if claim is not None:
                claim.record(lambda: sample_table(ctx))
                claim.close()
            ctx.ledger.close()
    # The threshold stopped the submit: cancel what it made (the plan's lock is free again for that).
    assert guard is not None and guard.reason is not None
    reach = dataclasses.replace(access, endpoints=guard.access.endpoints)
    report = cancel(plan.path, reason=guard.reason, concurrency=concurrency, progress=progress, **vars(reach))
    raise ThresholdCrossed(
        f"{guard.reason}: sent nothing more, and {report.brief()}; the reason is recorded in the ledger",
        guard.reason,
        guard.failed,
        report,
    )


class _Guard:
    """A failure threshold kept while submitting: refused calls are counted as the engine meets them,
    and a thread of its own refreshes the runs every ``interval`` seconds (as `status --watch` does),
    so failing runs count too.  Once crossed, the submit is stopped (``ctx.stop``)."""

    def __init__(self, ctx: Context, threshold: Threshold, interval: float, access: Access):
        self.ctx, self.threshold, self.interval = ctx, threshold, interval
        # The endpoints the submit found (the sandbox's daemon), not looked for again at each refresh.
        self.access = dataclasses.replace(access, endpoints=dict(ctx.clients.endpoints) or access.endpoints)
        self.total = ctx.manifest.runs
        self.failure_states = backend_class(ctx.manifest.backend).spec.retry_states
        self.refused = 0
        self.failed = 0
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        ctx.on_refused = self._refused
        self._thread = threading.Thread(target=self._watch, name="planner-threshold", daemon=True)
        self._thread.start()

    def _refused(self, samples: int) -> None:
        with self._lock:
            self.refused += samples
            self._judge(self.refused)

    def _judge(self, failed: int) -> None:
        if self.reason is None and self.threshold.crossed(failed, self.total):
            self.failed = failed
            self.reason = f"more than {self.threshold} failed ({failed:,} of {self.total:,} samples)"
            self.ctx.stop.set(f"the failure threshold: {self.reason}")

    def _watch(self) -> None:
        told = False
        while not self._done.wait(self.interval) and self.reason is None:
            try:
                table = status(self.ctx.plan.path, **vars(self.access))
            except SubmissionError as exc:  # a refresh that fails now may work next time
                if not told:
                    told = True
                    log.warning("the failure threshold could not refresh the runs (%s); trying again", exc)
                continue
            failed = failed_samples(table, self.failure_states)
            with self._lock:
                self._judge(max(failed, self.refused))

    def end(self) -> None:
        self._done.set()
        self._thread.join(timeout=1)  # a refresh under way ends on its own; nothing it does sends anything


def run_submission(ctx: Context) -> SubmitReport:
    """Submit over an opened context (what ``submit`` does once the plan is locked and opened)."""
    backend = backend_class(ctx.manifest.backend)(ctx)
    report = SubmitReport(ctx.manifest.backend, ctx.plan_id, ctx.manifest.runs, dry_run=ctx.dry_run)
    if not ctx.dry_run:
        staged = backend.staged_shards()
        if ctx.clients.sandbox:
            prepare(ctx, stages=bool(staged))
        if staged:
            ctx.stager.stage(staged)
    engine = Engine(ctx)
    phases = backend.phases()
    try:
        for phase in phases:
            tally = engine.run(phase)
            report.phases.append(tally)
            if tally.failed:
                break  # a later phase builds on this one (Polly's jobs need their run)
    finally:
        close = getattr(phases, "close", None)
        if close is not None:
            close()  # a backend's generator lets go of what it holds (Polly's HTTP pool)
    if ctx._stager is not None:
        report.staged_uploaded, report.staged_reused = ctx._stager.uploaded, ctx._stager.reused
    if ctx.dry_run and report.phases and all(t.already == t.total for t in report.phases):
        report.notes.append("every submission of this plan is already journaled as made: nothing would be sent")
    existed = sum(t.existed for t in report.phases)
    if existed:
        report.notes.append(
            f"the service answered {existed} request(s) with what an earlier submission of this same plan "
            f"(plan id {ctx.plan_id}, perhaps from another directory) had made: nothing new was started for them; "
            "`planner retry` plans samples to run again"
        )
    handed = sum(t.handed_over for t in report.phases)
    if handed:
        retries = sorted({retry for t in report.phases for retry in t.retries})
        where = "; ".join(f"plan {plan_id} in {path}" for plan_id, path in retries)
        report.notes.append(
            f"{handed:,} {'call was' if handed == 1 else 'calls were'} not sent: `planner retry` planned their "
            f"samples again ({where}), which runs them; `planner submit` of that plan submits them"
        )
    if report.failed:
        raise incomplete(report)
    return report


def _print_line(line: dict[str, Any]) -> None:
    sys.stdout.buffer.write(dumps(line) + b"\n")
    sys.stdout.flush()
