"""Submit, status, watch and cancel: the operations on a plan directory after ``planner plan``.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import polars as pl

from planner.backends import backend_class, get_backend
from planner.backends.base import NOT_CANCELLED, CancelOutcome, CancelReport
from planner.commands.check import preflight_submit
from planner.commands.intents import remedy, require_settled, settle
from planner.commands.report import render_report
from planner.commands.run_index import Guard, record_status
from planner.commands.sandbox_prepare import prepare
from planner.core.earlier import RECORD_KEY, skip_record
from planner.core.jsontext import dumps
from planner.core.ledger import SAMPLE_COLUMNS
from planner.core.plandir import PlanDirectory, check_output_file, private_file, safe_csv
from planner.core.progress import ProgressCallback, log
from planner.core.spec import BackendSpec
from planner.engine.context import STOP_FILE, Context, Options, open_context
from planner.engine.engine import Engine, SubmitReport, incomplete
from planner.engine.lock import _submit_stopped, plan_lock, submitting
from planner.errors import InputError, Stopped, SubmissionError, ThresholdCrossed, setting
from planner.sandbox.local import ensure_running

STOP_TIMEOUT = 300.0  # seconds `cancel` waits for a running submit to finish its calls in flight and end
NOT_SUBMITTED = "NOT SUBMITTED"
# The per-sample table, in the order `planner status` writes it.
STATUS_COLUMNS = [
    "row",
    "id",
    "shard",
    "position",
    "submission_id",
    "remote_id",
    "remote_uuid",
    "submission_status",
    "state",
    "reason",
    "log",
    "updated_at",
]
_LEDGER_SCHEMA = {name: pl.Int32 if name in ("shard", "position") else pl.String for name in SAMPLE_COLUMNS}


@dataclass(frozen=True)
class Access:
    """How to reach the services: the standard boto3 chain plus these."""

    sandbox: bool = False
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 8
    endpoints: dict[str, str] | None = None  # per service (tests, and the sandbox's daemon)

    def __post_init__(self) -> None:
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise InputError(f"retry mode {self.retry_mode!r}: choose standard or adaptive")

    def read(
        self, plan_dir: str | os.PathLike[str], options: Options, *, ask: bool, progress: ProgressCallback | None
    ) -> Context:
        """Open a submitted plan to read its ledger, with the open intents of an interrupted submit
        settled first (``intents.py``; ``ask``: the service may be called), or refused."""
        ctx = self.open(plan_dir, options, progress=progress, create_ledger=False)
        try:
            require_settled(ctx, ask=ask)
        except BaseException:
            ctx.ledger.close()
            raise
        return ctx

    def status(self, plan_dir: str) -> pl.DataFrame:
        """``status`` with these settings (refreshed)."""
        return status(plan_dir, **vars(self))

    def open(self, plan_dir: str | os.PathLike[str], options: Options, **kwargs: Any) -> Context:
        return open_context(
            plan_dir,
            options=options,
            sandbox=self.sandbox,
            endpoint_url=self.endpoint_url,
            profile=self.profile,
            region=self.region,
            retry_mode=self.retry_mode,
            max_attempts=self.max_attempts,
            endpoints=self.endpoints,
            **kwargs,
        )


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
                table = self.access.status(self.ctx.plan.path)
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


# ---------------------------------------------------------------- status


def status(
    plan_dir: str | os.PathLike[str],
    *,
    refresh: bool = True,
    concurrency: int = 8,
    rate: float | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> pl.DataFrame:
    """The per-sample table (``STATUS_COLUMNS``): sheet row, id, where it was submitted, its run, state, reason.

    With ``refresh`` the service is asked first (only about what can still change)."""
    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    ctx = access.read(plan_dir, Options(concurrency=concurrency, rate=rate), ask=refresh, progress=progress)
    try:
        return _status(ctx, refresh)
    finally:
        ctx.ledger.close()


def _status(ctx: Context, refresh: bool) -> pl.DataFrame:
    if refresh:
        backend_class(ctx.manifest.backend)(ctx).refresh()
    table = sample_table(ctx)
    if refresh:
        ctx.ledger.record_refresh(state_counts(table))

        record_status(ctx.plan, table)  # what ran, for the guard at submit
    return table


def sample_table(ctx: Context) -> pl.DataFrame:
    """Every planned sample with what the ledger knows of it."""
    # Typed, not inferred: a ledger with no samples yet (a submit that stopped before its first
    # result) would give columns of type null, which cannot be joined with the plan's ids.
    known = pl.DataFrame(ctx.ledger.sample_rows(), schema=_LEDGER_SCHEMA, orient="row").drop("shard", "position")
    planned = ctx.plan.samples()
    submissions = [s for s in ctx.ledger.submissions("done") if s.sample is None and s.remote_id is not None]
    batches = pl.DataFrame(
        [(s.shard, s.remote_id) for s in submissions if s.shard is not None],
        schema={"shard": pl.Int32, "submission_id": pl.String},
        orient="row",
    )
    table = planned.join(known, on="id", how="left").join(batches, on="shard", how="left")
    whole_plan = [s.remote_id for s in submissions if s.shard is None]
    if len(whole_plan) == 1:  # one submission for the whole plan (a Polly run): every sample is in it
        table = table.with_columns(pl.col("submission_id").fill_null(pl.lit(whole_plan[0])))
    why = cancel_reason(ctx)
    if why is not None:  # the service gives a cancelled run no reason; the ledger recorded planner's
        unexplained = (pl.col("state") == "CANCELLED") & pl.col("reason").is_null()
        table = table.with_columns(pl.when(unexplained).then(pl.lit(why)).otherwise(pl.col("reason")).alias("reason"))
    return table.select(STATUS_COLUMNS)


def cancel_reason(ctx: Context) -> str | None:
    """Why planner last cancelled this plan's runs (``planner cancel``, or a watch's failure threshold)."""
    reasons = [detail.get("reason") for _, _, detail in ctx.ledger.events("cancel")]
    return f"cancelled by planner: {reasons[-1]}" if reasons and reasons[-1] else None


def where_expr() -> pl.Expr:
    """A sample's place in the lifecycle: its run state, else its submission status, else NOT SUBMITTED."""
    return pl.coalesce(pl.col("state"), pl.col("submission_status"), pl.lit(NOT_SUBMITTED))


def state_counts(table: pl.DataFrame) -> dict[str, int]:
    counts = table.group_by(where_expr().alias("where")).len().sort("where")
    return {str(where): int(count) for where, count in counts.iter_rows()}


def unknown_states(table: pl.DataFrame, spec: BackendSpec) -> dict[str, int]:
    """Samples by run state, for the states the service does not document (``BackendSpec.moving_states``
    and ``final_states``): a new HealthOmics status, Polly's TERMINATED..."""
    known = sorted(spec.known_states | {"DELETED"})
    strange = table.filter(pl.col("state").is_not_null() & ~pl.col("state").is_in(known))
    return {str(state): int(count) for state, count in strange.group_by("state").len().sort("state").iter_rows()}


def settled(table: pl.DataFrame, final_states: frozenset[str]) -> bool:
    """Nothing can change any more: every sample's run has ended, or its submission failed,
    or it was never submitted (then only `planner submit` can change it)."""
    moving = table.filter(
        pl.col("submission_status").is_not_null()
        & (pl.col("submission_status") != "FAILED")
        & ~pl.col("state").is_in(list(final_states | {"DELETED"})).fill_null(False)
    )
    return moving.height == 0


def unknown_warning(state: str, count: int, spec: BackendSpec) -> str:
    return (
        f"{count:,} sample(s) in state {state}, which {spec.title} does not document as far as planner knows "
        "(look at them in the service's console)"
    )


@dataclass(frozen=True)
class Threshold:
    """When a watch gives up on a submission: more than ``count`` samples failed, or more than
    ``percent`` of the plan (``--cancel-if-failed 50`` or ``--cancel-if-failed 5%``)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> Threshold:
        value = text.strip()
        try:
            if value.endswith("%"):
                percent = float(value[:-1])
                if not 0 <= percent < 100:
                    raise InputError(
                        f"{setting('cancel_if_failed', repr(text))}: a share of the plan is from 0% to less than "
                        "100% (e.g. 5%)"
                    )
                return cls(percent=percent)
            count = int(value)
            if count < 0:
                raise ValueError
            return cls(count=count)
        except ValueError:
            raise InputError(
                f"{setting('cancel_if_failed', repr(text))}: give a number of samples (e.g. 50) or a share of the "
                "plan (e.g. 5%)"
            ) from None

    def crossed(self, failed: int, total: int) -> bool:
        if self.count is not None:
            return failed > self.count
        return self.percent is not None and failed * 100 > self.percent * total

    def __str__(self) -> str:
        if self.count is not None:
            return f"{self.count} sample" + ("" if self.count == 1 else "s")
        return f"{self.percent:g}% of the plan"


def _threshold(given: Threshold | str | None) -> Threshold | None:
    return Threshold.parse(given) if isinstance(given, str) else given


@dataclass(frozen=True)
class Snapshot:
    """One refresh of ``watch``: when, the table, its counts, and what changed since the last one."""

    at: float
    table: pl.DataFrame
    counts: dict[str, int]
    changes: dict[str, int] = field(default_factory=dict)  # state -> difference in count
    settled: bool = False
    first: bool = False
    failed: int = 0
    cancelled: CancelReport | None = None  # what the failure threshold cancelled, when it was crossed

    def __repr__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        counts = ", ".join(f"{state} {count:,}" for state, count in self.counts.items())
        end = "; settled" if self.settled else ""
        end += "; the failure threshold cancelled the rest" if self.cancelled is not None else ""
        return f"<Snapshot at {when}: {self.table.height:,} samples: {counts}{end}>"


def failed_samples(table: pl.DataFrame, failure_states: tuple[str, ...]) -> int:
    """Samples whose run ended badly or whose submission failed."""
    bad = pl.col("state").is_in(list(failure_states)).fill_null(False) | (pl.col("submission_status") == "FAILED")
    return table.filter(bad.fill_null(False)).height


def watch(
    plan_dir: str | os.PathLike[str],
    *,
    interval: float = 30.0,
    cancel_if_failed: Threshold | str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    on_refresh: Callable[[Snapshot], None] | None = None,
    refresh: bool = True,
    concurrency: int = 8,
    rate: float | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> Snapshot:
    """Refresh every ``interval`` seconds until nothing can change any more; returns the last snapshot.

    ``cancel_if_failed``: once more samples than that have failed, cancel everything still
    pending or running (the reason is recorded in the ledger) and return at once, the
    snapshot's ``cancelled`` saying what was done.  ``on_refresh`` sees each snapshot (the CLI
    prints the time and what changed).  The other keyword arguments are ``status``'s."""
    if not (isinstance(interval, (int, float)) and 0 < interval < float("inf")):
        raise InputError(f"interval {interval!r}: must be a positive number of seconds")
    threshold = _threshold(cancel_if_failed)
    spec = get_backend(PlanDirectory(plan_dir).manifest.backend)
    if sandbox and not endpoints:
        endpoints = dict(ensure_running())  # found (or started) once, not at every refresh
    access: dict[str, Any] = {
        "concurrency": concurrency,
        "rate": rate,
        "sandbox": sandbox,
        "endpoint_url": endpoint_url,
        "profile": profile,
        "region": region,
        "retry_mode": retry_mode,
        "max_attempts": max_attempts,
        "endpoints": endpoints,
        "progress": progress,
    }
    previous: dict[str, int] | None = None
    warned: set[str] = set()
    while True:
        table = status(plan_dir, refresh=refresh, **access)
        counts = state_counts(table)
        changes = {}
        if previous is not None:
            for name in sorted(set(counts) | set(previous)):
                delta = counts.get(name, 0) - previous.get(name, 0)
                if delta:
                    changes[name] = delta
        unknown = unknown_states(table, spec)
        for state in sorted(set(unknown) - warned):  # once each: the watch does not wait on them
            warned.add(state)
            log.warning(unknown_warning(state, unknown[state], spec) + "; not waited for")
        done = settled(table, spec.final_states | set(unknown)) and not submitting(plan_dir)
        failed = failed_samples(table, spec.retry_states)
        cancelled = None
        if threshold is not None and not done and threshold.crossed(failed, table.height):
            reason = f"more than {threshold} failed ({failed:,} of {table.height:,} samples)"
            cancelled = cancel(plan_dir, reason=reason, **access)
        snapshot = Snapshot(clock(), table, counts, changes, done, previous is None, failed, cancelled)
        if on_refresh is not None:
            on_refresh(snapshot)
        if done or cancelled is not None:
            return snapshot
        previous = counts
        sleep(interval)


# ---------------------------------------------------------------- cancel


def cancel(
    plan_dir: str | os.PathLike[str],
    *,
    concurrency: int = 8,
    rate: float | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    reason: str = "asked by the user",
    stop_timeout: float = STOP_TIMEOUT,
) -> CancelReport:
    """Cancel what the plan submitted that is still pending or running; what has finished is left alone.

    A `planner submit` of the plan still running is asked to stop first, and waited for (at most
    ``stop_timeout`` seconds): its calls in flight end and are journaled, it sends nothing more, and
    what it made is cancelled with the rest.  No submit of the plan can start while cancel runs.

    The report says per batch, job or run what was cancelled, what had already
    finished, and what could not be cancelled (``complete`` is False then)."""
    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    plan = PlanDirectory(plan_dir)
    with _submit_stopped(plan.path, f"`planner cancel` ({reason})", stop_timeout):
        options = Options(concurrency=concurrency, rate=rate)
        ctx = access.open(plan.path, options, progress=progress, create_ledger=False)
        try:
            return _cancel(ctx, reason)
        finally:
            ctx.ledger.close()


def _cancel(ctx: Context, reason: str) -> CancelReport:
    # What an interrupted submit started is cancelled too, once found.  Cancel holds the plan's lock
    # (``_submit_stopped``): no submit runs, so every open intent is an interrupted submit's.
    unsettled = settle(ctx, ask=True, locked=True)
    backend = backend_class(ctx.manifest.backend)(ctx)
    report = backend.cancel()
    for call in unsettled:  # may be running, unknown to the ledger: never "cancelled 0" and exit 0
        detail = f"no recorded answer (a submit was interrupted); {remedy(ctx.plan.path)}, then cancel again"
        report.outcomes.append(CancelOutcome(call.describe(), NOT_CANCELLED, detail))
    ctx.ledger.record_event("cancel", {"reason": reason, **report.to_json()})
    with contextlib.suppress(SubmissionError):  # the states after the cancel, as far as the service tells now
        backend.refresh()
    return report


TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")


def check_table_path(path: str) -> None:
    """Refuse an ``--out`` the table cannot be written to, before any refresh or watch is spent."""
    check_output_file(path, example="status.csv")
    if not path.endswith(TABLE_SUFFIXES):
        raise InputError(f"{setting('out', path)}: use a .csv, .parquet or .jsonl file name")


def write_table(table: pl.DataFrame, path: str, stream: IO[str] | None = None) -> None:
    """The per-sample table as CSV (spreadsheet formulas neutralised), Parquet or JSON lines, by the file name."""
    check_table_path(path)
    if path.endswith((".parquet", ".jsonl", ".ndjson")):
        private_file(path)  # created 0600 unless it exists (then it keeps its mode), as safe_csv does for CSV
    if path.endswith(".parquet"):
        table.write_parquet(path)
    elif path.endswith(".csv"):
        safe_csv(table, path)
    elif path.endswith((".jsonl", ".ndjson")):
        table.write_ndjson(path)
    else:
        raise InputError(f"{setting('out', path)}: use a .csv, .parquet or .jsonl file name")


# ---------------------------------------------------------------- report


def report(
    plan_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    refresh: bool = False,
    region: str | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> Any:
    """Write the plan's self-contained HTML report to ``out`` (``htmlreport.render_report``): what was
    planned, the state counts, progress over time, failures by reason, and every sample.

    ``refresh`` asks the service first (else the ledger's last look is shown); ``region`` builds the
    links to the service's console (default: the client's region)."""
    check_output_file(os.fspath(out), example="report.html")

    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    ctx = access.read(plan_dir, Options(), ask=refresh, progress=progress)
    try:
        table = _status(ctx, refresh)
        where = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if where is None and ctx.clients.sandbox:
            where = "us-east-1"

        manifest = ctx.manifest.to_json()
        skipped = skip_record(ctx.plan.path)
        if skipped is not None:
            manifest[RECORD_KEY] = skipped  # samples left out as done: the report counts them apart
        return render_report(
            manifest,
            table,
            ctx.ledger.refreshes(),
            os.fspath(out),
            region=where,
            submitted_at=ctx.ledger.first_intent_at(),
            staged=[staged.uri for staged in ctx.ledger.all_staged()],
        )
    finally:
        ctx.ledger.close()
