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
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import polars as pl

from .backends import backend_class, get_backend
from .backends.base import CancelReport
from .context import Context, Options, open_context
from .engine import Engine, Incomplete, SubmitReport
from .errors import InputError, SubmissionError
from .jsontext import dumps
from .ledger import SAMPLE_COLUMNS
from .plandir import PlanDirectory
from .progress import ProgressCallback

LOCK_FILE = ".submit.lock"
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


@contextlib.contextmanager
def _plan_lock(plan_dir: str) -> Iterator[None]:
    """One submit per plan at a time: two at once would both see no result for a call and
    both send it (Batch, Glue and Polly have no idempotency token).  The lock dies with the process."""
    handle = open(os.path.join(plan_dir, LOCK_FILE), "a")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SubmissionError(
                f"{plan_dir}: another `planner submit` of this plan is running; wait for it to end"
            ) from None
        yield
    finally:
        handle.close()  # closing the file releases the lock


def submitting(plan_dir: str | os.PathLike[str]) -> bool:
    """Whether a `planner submit` of this plan is running now (it holds the plan's lock)."""
    path = os.path.join(os.fspath(plan_dir), LOCK_FILE)
    if not os.path.exists(path):
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


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
    allow_rerun: bool = False,
) -> SubmitReport:
    """Stage and submit a plan; safe to run again after a crash or a partial submit.

    Raises ``engine.Incomplete`` (a ``SubmissionError`` carrying the report) when some
    calls were refused; ``planner status`` then lists those samples as FAILED and
    ``planner retry`` plans them again.  ``dry_run``: build and check every request
    and hand each to ``emit`` (default: a JSON line on stdout), sending nothing.  ``check``: first the
    preflight check (``preflight.py``); its problems raise ``PreflightError`` before anything is staged.
    ``staging_kms_key`` (the CLI's ``--staging-kms-key``) and ``expected_bucket_owner`` override
    plan.json's ``[staging] kms_key_id`` and ``expected_bucket_owner``.  Samples another plan
    already ran with identical settings are refused before the first call (``run_index.py``)
    unless ``allow_rerun``.
    """
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
        from .preflight import preflight_submit

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
    lock = contextlib.nullcontext() if dry_run else _plan_lock(plan.path)
    with lock:
        ctx = access.open(plan.path, options, progress=progress)
        guard = None
        try:
            if dry_run:
                ctx.emit = emit or _print_line
            else:
                from .run_index import Guard

                guard = Guard.claim(ctx.plan, allow_rerun=allow_rerun)  # before the first creating call
            return run_submission(ctx)
        finally:
            if guard is not None:
                guard.record(lambda: sample_table(ctx))
                guard.close()
            ctx.ledger.close()


def run_submission(ctx: Context) -> SubmitReport:
    """Submit over an opened context (what ``submit`` does once the plan is locked and opened)."""
    backend = backend_class(ctx.manifest.backend)(ctx)
    report = SubmitReport(ctx.manifest.backend, ctx.plan_id, ctx.manifest.runs, dry_run=ctx.dry_run)
    if not ctx.dry_run:
        staged = backend.staged_shards()
        if ctx.clients.sandbox:
            from .sandbox.prepare import prepare

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
    if report.failed:
        raise Incomplete(report)
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
    ctx = access.open(plan_dir, Options(concurrency=concurrency, rate=rate), progress=progress, create_ledger=False)
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
        from .run_index import record_status

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
    return table.select(STATUS_COLUMNS)


def where_expr() -> pl.Expr:
    """A sample's place in the lifecycle: its run state, else its submission status, else NOT SUBMITTED."""
    return pl.coalesce(pl.col("state"), pl.col("submission_status"), pl.lit(NOT_SUBMITTED))


def state_counts(table: pl.DataFrame) -> dict[str, int]:
    counts = table.group_by(where_expr().alias("where")).len().sort("where")
    return {str(where): int(count) for where, count in counts.iter_rows()}


def settled(table: pl.DataFrame, final_states: frozenset[str]) -> bool:
    """Nothing can change any more: every sample's run has ended, or its submission failed,
    or it was never submitted (then only `planner submit` can change it)."""
    moving = table.filter(
        pl.col("submission_status").is_not_null()
        & (pl.col("submission_status") != "FAILED")
        & ~pl.col("state").is_in(list(final_states | {"DELETED"})).fill_null(False)
    )
    return moving.height == 0


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
                        f"--cancel-if-failed {text!r}: a share of the plan is from 0% to less than 100% (e.g. 5%)"
                    )
                return cls(percent=percent)
            count = int(value)
            if count < 0:
                raise ValueError
            return cls(count=count)
        except ValueError:
            raise InputError(
                f"--cancel-if-failed {text!r}: give a number of samples (e.g. 50) or a share of the plan (e.g. 5%)"
            ) from None

    def crossed(self, failed: int, total: int) -> bool:
        if self.count is not None:
            return failed > self.count
        return self.percent is not None and failed * 100 > self.percent * total

    def __str__(self) -> str:
        return f"{self.count} samples" if self.count is not None else f"{self.percent:g}% of the plan"


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
    threshold = Threshold.parse(cancel_if_failed) if isinstance(cancel_if_failed, str) else cancel_if_failed
    spec = get_backend(PlanDirectory(plan_dir).manifest.backend)
    if sandbox and not endpoints:
        from .sandbox.local import ensure_running

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
    while True:
        table = status(plan_dir, refresh=refresh, **access)
        counts = state_counts(table)
        changes = {}
        if previous is not None:
            for name in sorted(set(counts) | set(previous)):
                delta = counts.get(name, 0) - previous.get(name, 0)
                if delta:
                    changes[name] = delta
        done = settled(table, spec.final_states) and not submitting(plan_dir)
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
) -> CancelReport:
    """Cancel what the plan submitted that is still pending or running; what has finished is left alone.

    The report says per batch, job or run what was cancelled, what had already
    finished, and what could not be cancelled (``complete`` is False then)."""
    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    ctx = access.open(plan_dir, Options(concurrency=concurrency, rate=rate), progress=progress, create_ledger=False)
    try:
        return _cancel(ctx, reason)
    finally:
        ctx.ledger.close()


def _cancel(ctx: Context, reason: str) -> CancelReport:
    backend = backend_class(ctx.manifest.backend)(ctx)
    report = backend.cancel()
    ctx.ledger.record_event("cancel", {"reason": reason, **report.to_json()})
    with contextlib.suppress(SubmissionError):  # the states after the cancel, as far as the service tells now
        backend.refresh()
    return report


TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")


def check_table_path(path: str) -> None:
    """Refuse an ``--out`` the table cannot be written to, before any refresh or watch is spent."""
    if not path.endswith(TABLE_SUFFIXES):
        raise InputError(f"--out {path}: use a .csv, .parquet or .jsonl file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"--out {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"--out {path}: cannot be written here (permissions)")


def write_table(table: pl.DataFrame, path: str, stream: IO[str] | None = None) -> None:
    """The per-sample table as CSV (spreadsheet formulas neutralised), Parquet or JSON lines, by the file name."""
    from .plandir import private_file, safe_csv

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
        raise InputError(f"--out {path}: use a .csv, .parquet or .jsonl file name")


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
    folder = os.path.dirname(os.path.abspath(os.fspath(out)))
    if not os.path.isdir(folder):
        raise InputError(f"--out {out}: the folder {folder} does not exist")
    from .htmlreport import render_report

    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    ctx = access.open(plan_dir, Options(), progress=progress, create_ledger=False)
    try:
        table = _status(ctx, refresh)
        where = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if where is None and ctx.clients.sandbox:
            where = "us-east-1"
        from .earlier import RECORD_KEY, skip_record

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
        )
    finally:
        ctx.ledger.close()
