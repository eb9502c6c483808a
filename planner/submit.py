"""Submit, status, retry and cancel: what every backend shares.

A backend's runtime is a module with four functions over a ``Context``:
``stage_indexes(manifest)`` (the shards it needs on S3), ``submit(ctx)``,
``refresh(ctx)`` (ask the service, update the ledger's per-sample state) and
``cancel(ctx)``.  This module opens the plan and ledger, builds the clients
(the sandbox's when asked), stages what must be staged, and hands over.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson
import polars as pl
from botocore.exceptions import BotoCoreError, ClientError
from botocore.validate import ParamValidator

from .aws import Clients
from .backends import backend_module
from .errors import InputError, SubmissionError
from .jsontext import dumps
from .ledger import LEDGER_FILE, Ledger
from .model import check_shape, operation_input
from .plan import SAMPLES_FILE, read_plan
from .staging import Stager

SANDBOX_STAGING = "s3://planner-sandbox/staging/"
# Errors that mean "later", not "never": wait and try again, beyond botocore's own retries.
RETRY_LATER = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ServiceQuotaExceededException",
        "ConcurrentRunsExceededException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)


def runtime(backend: str) -> ModuleType:
    """The backend module, which defines stage_indexes, submit, refresh and cancel
    (and, optionally, prepare_sandbox: create in the sandbox what the plan refers to)."""
    module = backend_module(backend)
    if not hasattr(module, "submit"):
        raise SubmissionError(f"submitting to {backend} is not available in this version yet (planning is)")
    return module


@dataclass
class Context:
    plan_dir: str
    manifest: dict[str, Any]
    ledger: Ledger
    clients: Clients
    staging_uri: str | None = None
    concurrency: int = 8
    rate: float | None = None  # requests per second, over all workers
    dry_run: bool = False
    progress: bool = False
    emit: Callable[[dict[str, Any]], None] = field(default=lambda request: None)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    max_wait: float = 900.0  # how long "later" errors are waited out, per call
    _stager: Stager | None = None

    @property
    def plan_id(self) -> str:
        return str(self.manifest["plan_id"])

    @property
    def stager(self) -> Stager:
        if self._stager is None:
            if not self.staging_uri:
                raise InputError(
                    "this plan needs S3 staging: give --staging s3://bucket/prefix/ or [staging] uri in the defaults file"
                )
            self._stager = Stager(
                self.clients.get("s3"),
                self.ledger,
                self.plan_dir,
                self.manifest,
                self.staging_uri,
                concurrency=self.concurrency,
                progress=self.progress,
            )
        return self._stager

    def shard_runs(self, index: int) -> list[dict[str, Any]]:
        shard = self.manifest["shards"][index]
        with open(os.path.join(self.plan_dir, shard["path"]), "rb") as handle:
            return orjson.loads(handle.read())  # type: ignore[no-any-return]

    def samples(self) -> pl.DataFrame:
        return pl.read_parquet(os.path.join(self.plan_dir, SAMPLES_FILE))

    def call(self, what: str, method: Callable[..., Any], **params: Any) -> Any:
        """One service call; throttling and quota errors are waited out, not failed."""
        delay = 1.0
        waited = 0.0
        while True:
            try:
                return method(**params)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in RETRY_LATER and waited < self.max_wait:
                    self.sleep(delay)
                    waited += delay
                    delay = min(delay * 2, 60.0)
                    continue
                message = exc.response.get("Error", {}).get("Message", str(exc))
                raise SubmissionError(f"{what}: {code}: {message}") from exc
            except BotoCoreError as exc:
                raise SubmissionError(f"{what}: {exc}") from exc


def request_problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """Everything wrong with a request, by botocore's own check and the model's max, pattern and enum."""
    shape = operation_input(service, operation)
    report = ParamValidator().validate(params, shape)
    found = (
        [
            line.strip()
            for line in report.generate_report().splitlines()
            if line.strip() and not line.startswith("Parameter validation failed")
        ]
        if report.has_errors()
        else []
    )
    found += [p.describe() for p in check_shape(shape, params, "")]
    return found


def open_context(
    plan_dir: str,
    *,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    staging_uri: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    concurrency: int = 8,
    rate: float | None = None,
    dry_run: bool = False,
    progress: bool = False,
    create_ledger: bool = True,
    endpoints: dict[str, str] | None = None,
) -> Context:
    manifest = read_plan(plan_dir)
    if concurrency < 1:
        raise InputError("--concurrency must be at least 1")
    if rate is not None and rate <= 0:
        raise InputError("--rate must be a positive number of requests per second")
    clients = Clients(
        profile=profile,
        region=region,
        endpoint_url=endpoint_url,
        endpoints=dict(endpoints or {}),
        retry_mode=retry_mode,
        max_attempts=max_attempts,
        sandbox=sandbox,
    )
    if sandbox and endpoints is None:  # started only once the options are known to be good
        from .sandbox.local import ensure_running

        clients.endpoints = dict(ensure_running())
    staging = staging_uri or (manifest.get("staging") or {}).get("uri")
    if sandbox and not staging_uri:
        staging = SANDBOX_STAGING  # the plan's own bucket does not exist in the sandbox
    if dry_run and not os.path.exists(os.path.join(plan_dir, LEDGER_FILE)):
        ledger = Ledger.in_memory(manifest)
    else:
        ledger = Ledger.open(plan_dir, manifest, create=create_ledger and not dry_run)
    return Context(
        plan_dir=plan_dir,
        manifest=manifest,
        ledger=ledger,
        clients=clients,
        staging_uri=staging,
        concurrency=concurrency,
        rate=rate,
        dry_run=dry_run,
        progress=progress,
    )


def _ensure_bucket(s3: Any, uri: str) -> None:
    bucket = uri[len("s3://") :].split("/", 1)[0]
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def rate_limited(ctx: Context) -> Iterator[None]:
    """Yields once per allowed request: at most ``ctx.rate`` per second (no limit when None)."""
    interval = 0.0 if not ctx.rate else 1.0 / ctx.rate
    next_at = ctx.clock()
    while True:
        if interval:
            now = ctx.clock()
            if now < next_at:
                ctx.sleep(next_at - now)
            next_at = max(next_at, now) + interval
        yield


def paced(ctx: Context) -> Callable[[], None]:
    """``rate_limited`` for a thread pool: each worker calls the result before a request
    (a generator cannot be advanced from two threads at once)."""
    limiter = rate_limited(ctx)
    gate = threading.Lock()

    def wait() -> None:
        with gate:
            next(limiter)

    return wait


def _lock_plan(plan_dir: str) -> Any:
    """One submit per plan at a time: two at once would both see no result for a call and
    both send it (Batch, Glue and Polly have no idempotency token).  The lock dies with the process."""
    import fcntl

    handle = open(os.path.join(plan_dir, ".submit.lock"), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SubmissionError(
            f"{plan_dir}: another `planner submit` of this plan is running; wait for it to end"
        ) from None
    return handle


def submit(plan_dir: str, **options: Any) -> dict[str, Any]:
    """Stage and submit a plan; safe to run again after a crash or a partial submit."""
    read_plan(plan_dir)  # a clear error for a folder that is not a plan, before anything is created in it
    lock = None if options.get("dry_run") else _lock_plan(plan_dir)
    try:
        ctx = open_context(plan_dir, **options)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    try:
        backend = runtime(ctx.manifest["backend"])
        if ctx.dry_run:
            ctx.emit = lambda request: sys.stdout.buffer.write(dumps(request) + b"\n")
        else:
            if ctx.clients.sandbox and hasattr(backend, "prepare_sandbox"):
                backend.prepare_sandbox(ctx)
            indexes = backend.stage_indexes(ctx.manifest)
            if indexes:
                if ctx.clients.sandbox and ctx.staging_uri:
                    _ensure_bucket(ctx.clients.get("s3"), ctx.staging_uri)  # the sandbox starts with no buckets
                ctx.stager.stage(indexes)
        return backend.submit(ctx)  # type: ignore[no-any-return]
    finally:
        ctx.ledger.close()
        if lock is not None:
            lock.close()  # closing the file releases the lock


STATUS_COLUMNS = ["id", "shard", "position", "remote_id", "submission_status", "state", "reason", "updated_at"]
STATUS_SCHEMA = {
    name: pl.Int64 if name in ("shard", "position") else pl.String for name in STATUS_COLUMNS
}  # the ledger's samples table


def status(plan_dir: str, *, refresh: bool = True, **options: Any) -> pl.DataFrame:
    """The per-sample table: sample id, shard, remote ids, submission status, run state, failure reason."""
    ctx = open_context(plan_dir, create_ledger=False, **options)
    try:
        if refresh:
            runtime(ctx.manifest["backend"]).refresh(ctx)
        return sample_table(ctx)
    finally:
        ctx.ledger.close()


def sample_table(ctx: Context) -> pl.DataFrame:
    # Typed, not inferred: a ledger with no samples yet (a submit that stopped before its first
    # result) would give columns of type null, which cannot be joined with the plan's ids.
    known = pl.DataFrame(ctx.ledger.samples(), schema=STATUS_SCHEMA, orient="row").drop("shard", "position")
    planned = ctx.samples()
    submissions = [s for s in ctx.ledger.submissions() if s.sample is None and s.remote_id is not None]
    batches = pl.DataFrame(
        [(s.shard, s.remote_id) for s in submissions if s.shard is not None],
        schema={"shard": pl.Int32, "submission_id": pl.String},
        orient="row",
    )
    table = planned.join(known, on="id", how="left").join(batches, on="shard", how="left")
    whole_plan = [s.remote_id for s in submissions if s.shard is None]
    if len(whole_plan) == 1:  # one submission for the whole plan (a Polly run): every sample is in it
        table = table.with_columns(pl.col("submission_id").fill_null(pl.lit(whole_plan[0])))
    return table.select(
        "row",
        "id",
        "shard",
        "position",
        "submission_id",
        "remote_id",
        "submission_status",
        "state",
        "reason",
        "updated_at",
    )


def cancel(plan_dir: str, **options: Any) -> int:
    ctx = open_context(plan_dir, create_ledger=False, **options)
    try:
        return int(runtime(ctx.manifest["backend"]).cancel(ctx))
    finally:
        ctx.ledger.close()
