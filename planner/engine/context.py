"""What every backend works with: the plan, its ledger, the clients, the options, and how to wait.

``Context`` is built once per command by ``open_context`` and handed to the backend
and the engine.  ``Context.call`` makes one service call that does not create
anything (GetBatch, ListJobs, DescribeJobs...); the engine uses the same waiting
rules for the calls that do.

Waiting (the reliability rule "wait only where waiting can help"):

* throttling (``ThrottlingException``, ``TooManyRequestsException``, ``SlowDown``...)
  and concurrency limits (Glue's ``ConcurrentRunsExceededException``, a HealthOmics
  ``ServiceQuotaExceededException`` about active or concurrent runs) are waited out:
  backoff from 1 s doubling to 60 s, at most ``max_wait`` seconds per call, with one
  line on stderr (the ``planner`` logger) saying what is waited for and for how long;
  once a wait for a reason has run out, later calls hitting the same reason fail at
  once instead of each waiting the whole time again;
* any other quota fails fast, naming the quota (the service's message);
* credentials refused or an endpoint that cannot be reached stop everything
  (``AccessError``): every further call would fail alike.

Stopping (the reliability rule "stop means stop"): every wait above, the rate limit's
included, sleeps on ``Context.stop`` (``Stop``), which ends it at once when the command is
asked to stop: Ctrl-C reaching the thread that hands work to the pools (``Stop.pool``), or,
for a running submit, the marker ``PLAN/.stop-request`` that `planner cancel` (or a failure
threshold) writes.  A stopped wait raises ``Stopped``: the call it was waiting to send is not
sent.  Calls already on the wire finish and are journaled.

Staging settings (``Options.staging_kms_key``, ``Options.expected_bucket_owner``, or
``staging_options(...)`` around an API call) override plan.json's staging table;
``--sandbox`` without ``--staging`` ignores the plan's (its bucket, key and account do
not exist there).  The account that must own the staging bucket, when none is given,
is the caller's own, asked of STS GetCallerIdentity once, on the first S3 call to the
staging bucket, and never in a dry run (which then shows ``CALLER-ACCOUNT``).  STS is
asked where ``AWS_ENDPOINT_URL_STS``/``AWS_ENDPOINT_URL``/``endpoint_url`` say, else,
for an S3 endpoint that is not AWS's (moto, the sandbox), at that endpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from planner.core.defaults import check_account, check_kms_key_id
from planner.core.ledger import LEDGER_FILE, Ledger
from planner.core.line_index import EXPECTED_OWNER_ARGUMENT, EXPECTED_OWNER_ENV
from planner.core.plandir import Manifest, PlanDirectory
from planner.core.progress import ProgressCallback, Tracker, log
from planner.core.shard import ShardInfo
from planner.errors import AccessError, InputError, Stopped, SubmissionError, setting
from planner.sandbox.local import ensure_running
from planner.services.aws import MAX_BACKOFF, Clients
from planner.services.staging import Stager, StagingPrefix, is_aws_endpoint

T = TypeVar("T")
R = TypeVar("R")

SANDBOX_STAGING = "s3://planner-sandbox/staging/"
DRY_RUN_OWNER = "CALLER-ACCOUNT"  # a dry run asks no one which account the caller is
KMS_ETAG = "ASSIGNED-BY-S3-UNDER-SSE-KMS"  # a dry run's ETag of an object S3 will encrypt: not an MD5
STOP_FILE = ".stop-request"  # in the plan directory: a running submit is asked to stop
MARKER_POLL = 0.2  # seconds between looks at the marker while waiting
SIGNAL_POLL = 0.1  # seconds the thread handing out work blocks at a time: Ctrl-C is seen that soon

THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
    }
)
CONCURRENCY = frozenset({"ConcurrentRunsExceededException"})
QUOTA = "ServiceQuotaExceededException"
# A quota that frees itself as runs end: the only kind of quota worth waiting for.
_ACTIVE_RUNS = re.compile(r"\b(active|concurrent|running|in[- ]progress)\b", re.IGNORECASE)
ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "") or exc)


def wait_reason(exc: ClientError) -> str | None:
    """What a "later" answer waits for, or None when waiting cannot help."""
    code = error_code(exc)
    if code in THROTTLING:
        return f"{code}: the service is throttling requests"
    if code in CONCURRENCY:
        return f"{code}: the concurrent-run limit is reached; waiting for runs to end"
    if code == QUOTA and _ACTIVE_RUNS.search(error_message(exc)):
        return f"{code}: {error_message(exc)}; waiting for runs to end"
    return None


def refusal(what: str, exc: ClientError | BotoCoreError) -> SubmissionError:
    """A service error as the planner's exception, with the fix named where there is one."""
    if isinstance(exc, BotoCoreError):
        if isinstance(exc, NoCredentialsError):
            return AccessError(
                f"{what}: {exc}: configure AWS credentials (aws configure, AWS_PROFILE or {setting('profile')}), "
                f"or add {setting('sandbox=True')} if this plan was submitted to the sandbox"
            )
        if isinstance(exc, EndpointConnectionError):
            return AccessError(f"{what}: {exc}")
        return SubmissionError(f"{what}: {exc}")
    code, message = error_code(exc), error_message(exc)
    if code in ACCESS_DENIED:
        return AccessError(f"{what}: {code}: {message}")
    if code == QUOTA:
        return SubmissionError(
            f"{what}: {code}: {message} (a service quota: waiting will not free it; "
            "raise it in Service Quotas, or remove what holds it)"
        )
    return SubmissionError(f"{what}: {code}: {message}")


class Stop:
    """Whether the command must send nothing more, and why; its ``sleep`` ends when it must.

    Set in this process (Ctrl-C in the thread that hands out work, see ``pool``; a failure
    threshold), or asked from outside through a marker file (``watch``): a running submit is
    told to stop by `planner cancel` writing ``PLAN/.stop-request``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason: str | None = None
        self.interrupted = False  # by Ctrl-C (the command line's exit status 130)
        self.marker: str | None = None

    def watch(self, marker: str) -> None:
        """Stop too when ``marker`` appears (looked at before each creating call and while waiting)."""
        self.marker = marker

    def set(self, reason: str, *, interrupted: bool = False) -> None:
        with self._lock:
            if not self._event.is_set():
                self._reason, self.interrupted = reason, interrupted
                self._event.set()

    def reason(self) -> str | None:
        """Why the command must stop, or None."""
        if not self._event.is_set() and self.marker is not None:
            asked = read_stop_request(self.marker)
            if asked is not None:
                self.set(asked)
        return self._reason if self._event.is_set() else None

    def check(self) -> None:
        """Raise ``Stopped`` when the command must stop: what was about to be sent is not."""
        reason = self.reason()
        if reason is not None:
            raise Stopped(reason)

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` that ends at once, raising ``Stopped``, when the command must stop."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._event.wait(min(left, MARKER_POLL) if self.marker is not None else left)

    @contextlib.contextmanager
    def pool(self, workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
        """A thread pool that, when the thread handing it work is interrupted (Ctrl-C), starts nothing
        more: queued work is dropped and the workers' waits end; what is running finishes."""
        executor = ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=_leave_signals_to_the_caller)
        try:
            yield executor
        except KeyboardInterrupt:
            self.set("interrupted", interrupted=True)
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def attend(wait: Callable[[float], object]) -> None:
    """Block until ``wait(timeout)`` answers true, in short waits.  Python runs a signal's handler
    only in the main thread, when it runs Python code: a SIGINT that the kernel hands to another
    thread (tqdm's monitor, say) would otherwise wait for the main thread's lock to be released."""
    while not wait(SIGNAL_POLL):
        pass


def finished(future: Future[R]) -> R:
    """``future.result()``, attentive to Ctrl-C (``attend``)."""
    attend(lambda timeout: not futures_wait([future], timeout=timeout).not_done)
    return future.result()


def _leave_signals_to_the_caller() -> None:
    """A worker blocks SIGINT: the kernel then hands Ctrl-C to the thread waiting on the pool, whose
    wait it breaks (delivered to a worker, it would only be seen once every queued call had gone)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def request_stop(plan_dir: str, reason: str) -> str:
    """Ask a running submit of the plan to stop (``Stop.watch``); returns the marker's path."""
    path = os.path.join(plan_dir, STOP_FILE)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump({"reason": reason, "pid": os.getpid(), "at": time.time()}, handle)
    os.replace(temporary, path)
    return path


def read_stop_request(path: str) -> str | None:
    """The reason a stop request at ``path`` gives, or None when there is none."""
    try:
        with open(path) as handle:
            asked = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "asked to stop (an unreadable stop request)"
    return str(asked.get("reason") or "asked to stop")


def stop_requester(path: str) -> int | None:
    """The process that wrote the stop request at ``path``, when there is one."""
    try:
        with open(path) as handle:
            pid = json.load(handle).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


class Patience:
    """How long "later" answers are waited out, shared by every call of one command."""

    def __init__(self, max_wait: float, sleep: Callable[[float], None], stop: Stop | None = None):
        self.max_wait = max_wait
        self.sleep = sleep
        self.stop = stop or Stop()
        self._told: set[str] = set()
        self._exhausted: set[str] = set()
        self._lock = threading.Lock()

    def pause(self, what: str, reason: str, waited: float, delay: float) -> float:
        """Sleep before trying ``what`` again; returns the seconds slept.  Raises once the wait is over."""
        kind = reason.split(":", 1)[0]
        with self._lock:
            if kind in self._exhausted or waited >= self.max_wait:
                self._exhausted.add(kind)
                raise SubmissionError(f"{what}: {reason}; gave up after waiting {_duration(self.max_wait)}")
            if kind not in self._told:
                self._told.add(kind)
                log.warning("%s; waiting up to %s before giving up", reason, _duration(self.max_wait))
        seconds = min(delay, self.max_wait - waited)
        self.stop.check()
        self.sleep(seconds)
        self.stop.check()
        return seconds


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class Options:
    """The options of submit, status, retry and cancel, checked the same way for the CLI and the API."""

    staging_uri: str | None = None
    concurrency: int = 8
    rate: float | None = None  # creating requests per second, over all workers
    dry_run: bool = False
    max_wait: float = 900.0  # seconds a call waits out "later" answers
    staging_kms_key: str | None = None  # SSE-KMS for staged objects (overrides plan.json's staging kms_key_id)
    expected_bucket_owner: str | None = None  # the staging bucket's account (overrides plan.json's)

    def __post_init__(self) -> None:
        if self.staging_kms_key is not None:
            check_kms_key_id(self.staging_kms_key, setting("staging_kms_key"))
        if self.expected_bucket_owner is not None:
            check_account(self.expected_bucket_owner, "expected bucket owner")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise InputError(f"concurrency {self.concurrency!r}: must be a whole number, at least 1")
        if self.rate is not None and not (isinstance(self.rate, (int, float)) and 0 < self.rate < float("inf")):
            raise InputError(f"rate {self.rate!r}: must be a positive number of requests per second")
        if not self.max_wait >= 0:
            raise InputError(f"max_wait {self.max_wait!r}: must be 0 or more seconds")


@dataclass
class Context:
    """One command's view of a plan: read it, journal in its ledger, talk to the services."""

    plan: PlanDirectory
    ledger: Ledger
    clients: Clients
    options: Options = field(default_factory=Options)
    progress: ProgressCallback | None = None
    emit: Callable[[dict[str, Any]], None] = field(default=lambda line: None)  # --dry-run's request lines
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    stop: Stop = field(default_factory=Stop)
    on_refused: Callable[[int], None] | None = None  # told how many samples each refused call leaves FAILED
    _stager: Stager | None = field(default=None, repr=False)
    _patience: Patience | None = field(default=None, repr=False)
    _owner: list[str | None] = field(default_factory=list, repr=False)  # [account] once resolved
    _owner_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.sleep is time.sleep:
            self.sleep = self.stop.sleep  # every wait of the command ends when it must stop
        self.clients.on_client = self._stop_sends

    def _stop_sends(self, client: Any) -> None:
        """Nothing leaves once the command must stop, botocore's own resends included (a throttled
        creating call retried after its backoff): the call was not carried out, and its journaled
        intent is reconciled by the next submit."""

        def refuse(**_: Any) -> None:
            self.stop.check()

        client.meta.events.register("before-send", refuse, unique_id="planner-stop")

    @property
    def manifest(self) -> Manifest:
        return self.plan.manifest

    @property
    def plan_id(self) -> str:
        return self.plan.plan_id

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run

    @property
    def staging_uri(self) -> str | None:
        return self.options.staging_uri

    @property
    def patience(self) -> Patience:
        if self._patience is None:
            self._patience = Patience(self.options.max_wait, self.sleep, self.stop)
        return self._patience

    @property
    def stager(self) -> Stager:
        if self._stager is None:
            if not self.staging_uri:
                raise InputError(
                    f"this plan needs S3 staging: give {setting('staging', 's3://bucket/prefix/')} "
                    "or [staging] uri in the defaults file"
                )
            self._stager = Stager(
                self.clients.get("s3"),
                self.ledger,
                self.plan,
                self.staging_uri,
                concurrency=self.options.concurrency,
                progress=self.progress,
                sleep=self.sleep,
                kms_key_id=self.options.staging_kms_key,
                expected_bucket_owner=self.expected_bucket_owner,
                resolve_alias=self._key_of_alias,
            )
        return self._stager

    def staging_location(self) -> StagingPrefix:
        """Where shards are staged; in a dry run without one, a placeholder shows where they would go."""
        return StagingPrefix.parse(self.staging_uri or "s3://STAGING-BUCKET/")

    def predicted_staging(self, shard: ShardInfo, index: bytes) -> tuple[str, str, str, str]:
        """A dry run's (shard URI, its ETag, index URI, its ETag), as the children would be told them.

        Without SSE-KMS S3's ETag of a single-part object is the MD5 of its bytes, known now; under
        SSE-KMS it is not (S3 assigns it), so a placeholder says so instead of a wrong value."""
        where = self.staging_location()
        shard_uri = where.uri(self.plan_id, shard.sha256)
        index_uri = where.uri(self.plan_id, hashlib.sha256(index).hexdigest(), ".index")
        if self.options.staging_kms_key:
            return shard_uri, KMS_ETAG, index_uri, KMS_ETAG
        return shard_uri, shard.etag, index_uri, f'"{hashlib.md5(index).hexdigest()}"'

    def expected_bucket_owner(self) -> str | None:
        """The account that must own the staging bucket: as configured, else the caller's own (STS, once).

        None in a dry run with nothing configured: a dry run needs no credentials."""
        with self._owner_lock:
            if not self._owner:
                if self.options.expected_bucket_owner or self.dry_run:
                    self._owner.append(self.options.expected_bucket_owner)
                else:
                    self._owner.append(self._caller_account())
            return self._owner[0]

    def child_environment(self) -> dict[str, str]:
        """What an AWS Batch child needs besides the staged locations: the bucket's expected owner."""
        return {EXPECTED_OWNER_ENV: self.expected_bucket_owner() or DRY_RUN_OWNER}

    def child_arguments(self) -> dict[str, str]:
        """The same for a Glue manifest run, as a job argument."""
        return {EXPECTED_OWNER_ARGUMENT: self.expected_bucket_owner() or DRY_RUN_OWNER}

    def _caller_account(self) -> str:
        if self.clients.endpoint_for("sts") is None:
            s3_endpoint = self.clients.endpoint_for("s3")
            if s3_endpoint and not is_aws_endpoint(s3_endpoint):
                # An S3 emulator (moto, the sandbox) answers STS at the same address; AWS's STS would
                # not know its credentials.
                self.clients.endpoints["sts"] = s3_endpoint
        try:
            identity = self.call("STS GetCallerIdentity", self.clients.get("sts").get_caller_identity)
        except SubmissionError as exc:
            raise AccessError(
                f"cannot tell which account must own the staging bucket ({exc}); set [staging] "
                "expected_bucket_owner in the plan, or make STS reachable with these credentials"
            ) from exc
        return str(identity["Account"])

    def _key_of_alias(self, alias: str) -> str:
        """A KMS alias as the ARN of its key (kms:DescribeKey), to compare with what S3 reports."""
        try:
            found = self.call(f"KMS DescribeKey {alias}", self.clients.get("kms").describe_key, KeyId=alias)
        except SubmissionError as exc:
            raise SubmissionError(
                f"staging KMS key {alias}: S3 reports objects under a key ARN, and the alias could not be "
                f"resolved to compare them ({exc}); give the key ARN as kms_key_id instead"
            ) from exc
        return str(found["KeyMetadata"]["Arn"])

    def call(self, what: str, method: Callable[..., Any], *args: Any, **params: Any) -> Any:
        """One service call; "later" answers are waited out (see the module docstring)."""
        waited, delay = 0.0, 1.0
        while True:
            try:
                return method(*args, **params)
            except ClientError as exc:
                reason = wait_reason(exc)
                if reason is None:
                    raise refusal(what, exc) from exc
                waited += self.patience.pause(what, reason, waited, delay)
                delay = min(delay * 2, MAX_BACKOFF)
            except BotoCoreError as exc:
                raise refusal(what, exc) from exc

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, task: str, unit: str) -> list[R]:
        """``fn`` over ``items`` on ``concurrency`` threads within the rate limit, in order, with progress."""
        if not items:
            return []
        pace = self.pacer()

        def paced(item: T) -> R:
            pace()
            return fn(item)

        with Tracker(self.progress, task, unit, len(items)) as bar:
            if self.options.concurrency == 1 or len(items) == 1:
                out = []
                for item in items:
                    out.append(paced(item))
                    bar.advance()
                return out
            with self.stop.pool(self.options.concurrency, f"planner-{task}") as pool:
                results = []
                for future in [pool.submit(paced, item) for item in items]:
                    results.append(finished(future))
                    bar.advance()
                return results

    def pacer(self) -> Callable[[], None]:
        """A gate each worker passes before a creating request: at most ``rate`` per second over all.
        Raises ``Stopped`` instead of letting a request through once the command must stop."""
        limiter = _RateLimit(self.options.rate, self.clock, self.sleep)
        gate = threading.Lock()

        def wait() -> None:
            with gate:
                self.stop.check()
                limiter.wait()
            self.stop.check()

        return wait


class _RateLimit:
    """At most ``rate`` requests per second (no limit when None): ``wait`` before each."""

    def __init__(self, rate: float | None, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.interval = 0.0 if not rate else 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self.next_at = clock()

    def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if now < self.next_at:
            self.sleep(self.next_at - now)
        self.next_at = max(self.next_at, now) + self.interval


_STAGING_OVERRIDES: ContextVar[dict[str, str | None] | None] = ContextVar("planner_staging_overrides", default=None)


@contextlib.contextmanager
def staging_options(*, kms_key_id: str | None = None, expected_bucket_owner: str | None = None) -> Iterator[None]:
    """Staging settings for the contexts opened inside the block (what ``--staging-kms-key`` does for
    ``planner submit``): they win over plan.json's staging table, as ``Options`` fields would."""
    if kms_key_id is not None:
        check_kms_key_id(kms_key_id, setting("staging_kms_key"))
    if expected_bucket_owner is not None:
        check_account(expected_bucket_owner, "expected bucket owner")
    token = _STAGING_OVERRIDES.set({"kms_key_id": kms_key_id, "expected_bucket_owner": expected_bucket_owner})
    try:
        yield
    finally:
        _STAGING_OVERRIDES.reset(token)


def open_context(
    plan_dir: str | os.PathLike[str],
    *,
    options: Options | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    create_ledger: bool = True,
) -> Context:
    """Read the plan, check the options, open (or create) its ledger and prepare the clients."""
    plan = PlanDirectory(plan_dir)
    options = options or Options()
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
        clients.endpoints = dict(ensure_running())
    planned = plan.manifest.staging
    overrides = _STAGING_OVERRIDES.get() or {}
    staging = options.staging_uri or planned.uri
    kms_key_id = options.staging_kms_key or overrides.get("kms_key_id")
    owner = options.expected_bucket_owner or overrides.get("expected_bucket_owner")
    if sandbox and not options.staging_uri:
        staging = SANDBOX_STAGING  # the plan's own bucket (its key, its account) does not exist in the sandbox
    else:
        kms_key_id = kms_key_id or planned.kms_key_id
        owner = owner or planned.expected_bucket_owner
    options = Options(
        staging_uri=staging,
        concurrency=options.concurrency,
        rate=options.rate,
        dry_run=options.dry_run,
        max_wait=options.max_wait,
        staging_kms_key=kms_key_id,
        expected_bucket_owner=owner,
    )
    manifest = plan.manifest
    if options.dry_run and not os.path.exists(plan.file(LEDGER_FILE)):
        ledger = Ledger.in_memory(manifest.plan_id, manifest.backend)
    else:
        ledger = Ledger.open(
            plan.path, manifest.plan_id, manifest.backend, create=create_ledger and not options.dry_run
        )
    return Context(plan=plan, ledger=ledger, clients=clients, options=options, progress=progress)
