"""Fault injection for the reliability suite: seams, faults and a child process to SIGKILL.

Nothing in ``planner/`` is changed for these tests.  Faults get in through public seams:

* every boto3 client the planner makes comes from ``planner.services.aws.Clients._make``;
  wrapping it lets a test register botocore event handlers on each new client
  (``before-call``/``after-call`` to kill the process at a step boundary,
  ``before-send`` to answer a request with a fault instead of the server, or after
  forwarding it to the server, so the call is carried out and its answer lost);
* Polly's HTTP calls all go through ``PollyAPI.request`` and, below it, urllib3's
  ``PoolManager.urlopen``;
* the journal's result write is ``Ledger.result``.

``child_main`` is what runs in the child process a matrix test kills: it installs
one kill point (or a barrier that holds the first creating call until another
process reaches its own) and calls ``planner.commands.submit.submit``; ``cli_main`` does
the same around the command line's own ``planner.cli.main``.  This module imports
nothing from pytest, so the children can import it.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

FAULTS_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(FAULTS_DIR)


# ---------------------------------------------------------------- counting


class Counter:
    """Thread-safe: ``hit()`` returns the 1-based number of this call."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def hit(self) -> int:
        with self._lock:
            self.count += 1
            return self.count


def die() -> None:
    """SIGKILL this process: no cleanup, no finally blocks, no atexit."""
    os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- client hooks


Hook = tuple[str, Callable[..., Any]]  # (event name, handler)


def patch_clients(hooks: list[Hook], setattr_: Callable[[Any, str, Any], None] | None = None) -> None:
    """Register ``hooks`` on every boto3 client the planner makes from now on.

    ``setattr_`` is ``monkeypatch.setattr`` in a test (undone at teardown); in the
    child process plain ``setattr`` is fine.
    """
    from planner.services import aws

    original = aws.Clients._make

    def make(self: Any, service: str) -> Any:
        client = original(self, service)
        for event, handler in hooks:
            client.meta.events.register(event, handler)
        return client

    (setattr_ or setattr)(aws.Clients, "_make", make)


class _Raw:
    """The raw body botocore reads from an ``AWSResponse``."""

    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def aws_error(url: str, status: int, code: str, message: str, *, xml: bool = False, query: bool = False) -> Any:
    """An error response as a service would send it (JSON protocols, S3's XML, or the query protocol's)."""
    from botocore.awsrequest import AWSResponse

    if query:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>faults</RequestId></ErrorResponse>"
        ).encode()
        headers = {"Content-Type": "text/xml"}
    elif xml:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
        ).encode()
        headers = {"Content-Type": "application/xml"}
    else:
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
    return AWSResponse(url, status, headers, _Raw(body))


def forward(request: Any) -> int:
    """Send a prepared botocore request to its server ourselves: the call is carried out."""
    body = request.body
    if hasattr(body, "read"):
        position = body.tell()
        data = body.read()
        body.seek(position)
        body = data
    if isinstance(body, str):
        body = body.encode()
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
    forwarded = urllib.request.Request(request.url, data=body, headers=headers, method=request.method)
    try:
        with urllib.request.urlopen(forwarded, timeout=30) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class SendFault:
    """A ``before-send`` handler: the first ``times`` sends of an operation meet a fault.

    ``mode``:
      * ``"refuse"``: answered with ``status``/``code`` without reaching the server;
      * ``"lose"``: forwarded to the server (carried out), then answered 500: the answer is lost;
      * ``"reset"``: forwarded, then the connection breaks before the answer (ConnectionClosedError).
    """

    mode: str
    times: int
    status: int = 500
    code: str = "InternalServerException"
    xml: bool = False
    sends: Counter = field(default_factory=Counter)
    faults: int = 0
    carried_out: list[int] = field(default_factory=list)

    def __call__(self, request: Any, **_: Any) -> Any:
        number = self.sends.hit()
        if number > self.times:
            return None  # let botocore send it
        self.faults += 1
        if self.mode == "refuse":
            return aws_error(request.url, self.status, self.code, "injected fault", xml=self.xml)
        self.carried_out.append(forward(request))
        if self.mode == "lose":
            return aws_error(request.url, 500, "InternalServerException", "injected: the answer was lost", xml=self.xml)
        from botocore.exceptions import ConnectionClosedError

        raise ConnectionClosedError(endpoint_url=request.url)


# The sandbox's own setup under --sandbox (the IAM role, compute environment, queue and
# job definition it creates for Batch): not the planner's submission path, left alone.
SANDBOX_SETUP = frozenset(
    {
        "CreateRole",
        "GetRole",
        "CreateComputeEnvironment",
        "CreateJobQueue",
        "RegisterJobDefinition",
        "DescribeComputeEnvironments",
        "DescribeJobQueues",
        "DescribeJobDefinitions",
    }
)


@dataclass
class EveryCallFault:
    """A ``before-send`` handler for all calls: the first send of every operation but ``spare``
    (and the sandbox's setup) meets a fault ("refuse": a throttle or 5xx answer; "timeout":
    carried out, then a read timeout)."""

    mode: str
    spare: str | None = None  # the operation left alone (the creating call has rows of its own)
    status: int = 500
    faulted: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    THROTTLE: ClassVar[dict[str, tuple[int, str]]] = {
        "s3": (503, "SlowDown"),
        "glue": (400, "ThrottlingException"),
        "iam": (400, "Throttling"),
        "batch": (429, "TooManyRequestsException"),
        "sts": (400, "Throttling"),
    }

    def __call__(self, request: Any, event_name: str, **_: Any) -> Any:
        _, service, operation = event_name.split(".")[:3]
        with self._lock:
            if operation == self.spare or operation in SANDBOX_SETUP or event_name in self._seen:
                return None
            self._seen.add(event_name)
            self.faulted.append(f"{service}.{operation}")
        xml = service == "s3"
        query = service == "sts"  # GetCallerIdentity (the staging bucket's expected owner): the query protocol
        if self.mode == "refuse" and self.status == 429:
            status, code = self.THROTTLE.get(service, (429, "ThrottlingException"))
            return aws_error(request.url, status, code, "injected throttle", xml=xml, query=query)
        if self.mode == "refuse":
            return aws_error(
                request.url,
                self.status,
                "InternalError" if xml else "InternalServerException",
                "injected fault",
                xml=xml,
                query=query,
            )
        forward(request)
        from botocore.exceptions import ReadTimeoutError

        raise ReadTimeoutError(endpoint_url=request.url)


def event_name(service: str) -> str:
    """botocore's event name for a service (its hyphenated service id, lower-cased)."""
    return {"s3": "s3", "omics": "omics", "batch": "batch", "glue": "glue"}[service]


# ---------------------------------------------------------------- Polly seams


def patch_polly_request(
    before: Callable[[str, str], None] | None,
    after: Callable[[str, str], None] | None,
    setattr_: Callable[[Any, str, Any], None] | None = None,
) -> None:
    """Call ``before(method, path)`` / ``after(method, path)`` around every Polly HTTP call."""
    from planner.services import polly_api as polly

    original = polly.PollyAPI.request

    def request(self: Any, method: str, url: str, **kwargs: Any) -> Any:
        path = urlsplit(url).path
        if before is not None:
            before(method, path)
        answer = original(self, method, url, **kwargs)
        if after is not None:
            after(method, path)
        return answer

    (setattr_ or setattr)(polly.PollyAPI, "request", request)


@dataclass
class PollyReset:
    """urllib3-level fault for Polly: the first ``times`` ``method`` calls to ``path`` are carried
    out, then their connection is reset before the answer arrives."""

    path: str
    times: int = 1
    method: str = "POST"
    hits: Counter = field(default_factory=Counter)
    resets: int = 0

    def install(self, setattr_: Callable[[Any, str, Any], None]) -> None:
        import urllib3

        original = urllib3.PoolManager.urlopen
        fault = self

        def urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            answer = original(self, method, url, *args, **kwargs)
            if (
                method == fault.method
                and urlsplit(url).path.rstrip("/").endswith(fault.path)
                and fault.hits.hit() <= fault.times
            ):
                fault.resets += 1
                raise urllib3.exceptions.ProtocolError(
                    "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")
                )
            return answer

        setattr_(urllib3.PoolManager, "urlopen", urlopen)


# ---------------------------------------------------------------- the child process


def install_kill(kill: dict[str, Any]) -> None:
    """One kill point, from a JSON-able description.

    ``{"at": "aws", "service": "s3", "operation": "PutObject", "when": "before"|"after", "nth": 2}``
    ``{"at": "polly", "paths": ["/runs", "/jobs"], "when": "before"|"after", "nth": 2}``
    ``{"at": "ledger", "nth": 2}``: right after the nth result is journaled.
    """
    hits = Counter()
    nth = int(kill["nth"])

    def maybe_die(**_: Any) -> None:
        if hits.hit() == nth:
            sys.stderr.write(f"faultkit: SIGKILL at {json.dumps(kill)}\n")
            sys.stderr.flush()
            die()

    if kill["at"] == "aws":
        event = f"{kill['when']}-call.{event_name(kill['service'])}.{kill['operation']}"
        patch_clients([(event, maybe_die)])
    elif kill["at"] == "polly":
        paths = tuple(kill["paths"])

        def check(method: str, path: str) -> None:
            if method == "POST" and path.rstrip("/").endswith(paths):
                maybe_die()

        patch_polly_request(check if kill["when"] == "before" else None, check if kill["when"] == "after" else None)
    elif kill["at"] == "ledger":
        from planner.core.ledger import Ledger

        original = Ledger.result

        def result(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            maybe_die()

        Ledger.result = result  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown kill point {kill!r}")


def install_barrier(barrier: dict[str, Any]) -> None:
    """Hold the first creating call until ``parties`` processes have reached theirs (or ``timeout`` passed).

    ``{"at": "aws", "service": ..., "operation": ..., "directory": ..., "parties": 2, "timeout": 10}``, or
    ``{"at": "polly", "paths": [...], ...}``: each process drops a file in ``directory`` and waits for the others.
    """
    import time

    done = threading.Event()
    lock = threading.Lock()

    def wait(**_: Any) -> None:
        with lock:
            if done.is_set():
                return
            with open(os.path.join(barrier["directory"], f"arrived-{os.getpid()}"), "w"):
                pass
            deadline = time.monotonic() + float(barrier.get("timeout", 10))
            while (
                len(os.listdir(barrier["directory"])) < int(barrier.get("parties", 2)) and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            done.set()

    if barrier["at"] == "aws":
        patch_clients([(f"before-call.{event_name(barrier['service'])}.{barrier['operation']}", wait)])
    else:
        paths = tuple(barrier["paths"])
        patch_polly_request(
            lambda method, path: wait() if method == "POST" and path.rstrip("/").endswith(paths) else None, None
        )


def child_main(spec_json: str) -> None:
    """Run ``planner.commands.submit.submit`` with a kill point (or a barrier); exit 0 if it was never reached."""
    spec = json.loads(spec_json)
    if "kill" in spec:
        install_kill(spec["kill"])
    if "barrier" in spec:
        install_barrier(spec["barrier"])
    from planner.commands.submit import submit

    submit(spec["plan_dir"], **spec["options"])
    sys.exit(0)


CHILD = "import sys; sys.path.insert(0, {tests!r}); from faults import faultkit; faultkit.child_main(sys.argv[1])"


def child_command(
    plan_dir: str, options: dict[str, Any], kill: dict[str, Any] | None = None, barrier: dict[str, Any] | None = None
) -> list[str]:
    spec = json.dumps(
        {
            "plan_dir": plan_dir,
            "options": options,
            **({"kill": kill} if kill else {}),
            **({"barrier": barrier} if barrier else {}),
        }
    )
    return [sys.executable, "-c", CHILD.format(tests=TESTS_DIR), spec]


def cli_main(spec_json: str, argv: list[str]) -> None:
    """``planner ARGV`` through the command line's own entry, with a kill point and/or a barrier installed."""
    spec = json.loads(spec_json)
    if spec.get("kill"):
        install_kill(spec["kill"])
    if spec.get("barrier"):
        install_barrier(spec["barrier"])
    from planner.cli import main

    sys.exit(main(argv))


CLI_CHILD = (
    "import sys; sys.path.insert(0, {tests!r}); "
    "from faults import faultkit; faultkit.cli_main(sys.argv[1], sys.argv[2:])"
)


def cli_child_command(
    argv: list[str], kill: dict[str, Any] | None = None, barrier: dict[str, Any] | None = None
) -> list[str]:
    """``planner ARGV`` (the real command line entry) in a child process, with a kill point or a barrier."""
    return [
        sys.executable,
        "-c",
        CLI_CHILD.format(tests=TESTS_DIR),
        json.dumps({"kill": kill, "barrier": barrier}),
        *map(str, argv),
    ]


# ---------------------------------------------------------------- children forked from a warm server
#
# A child started with ``python -c`` spends a second or more importing boto3, botocore, polars and the
# planner before it reaches its first call; the sweep and the matrix start hundreds. These children are
# forked instead from multiprocessing's fork server, which imported all that once: each is still a process
# of its own, SIGKILLed at its kill point with no cleanup, its exit status seen as a subprocess's (-9),
# resumed by another process; only the start-up it would repeat is gone. The server is started fresh
# (not forked from pytest), holds no thread and has run no polars query, so a fork of it is safe.

_PRELOAD = ["faults.faultkit", "planner", "planner.cli", "planner.commands.submit", "boto3", "botocore.session"]
_CONTEXT: Any = None


def _fork_context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing

        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(_PRELOAD)
        atexit.register(_stop_fork_server)
    return _CONTEXT


def _stop_fork_server() -> None:
    """Stop the server and wait for it (so no process outlives the run, and its CPU time is the run's)."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()


def _forked(kind: str, spec_json: str, argv: list[str], env: dict[str, str], out: str, err: str) -> None:
    """The child's body: the caller's environment and output files, then ``child_main`` or ``cli_main``."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    if kind == "submit":
        child_main(spec_json)
    else:
        cli_main(spec_json, argv)


def run_forked(kind: str, spec_json: str, argv: list[str], timeout: float) -> Any:
    """Run a child to its end (or its kill): a ``subprocess.CompletedProcess`` with bytes stdout and stderr."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="faultkit-") as scratch:
        out, err = os.path.join(scratch, "out"), os.path.join(scratch, "err")
        child = _fork_context().Process(target=_forked, args=(kind, spec_json, argv, dict(os.environ), out, err))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired([kind, *argv], timeout)
        with open(out, "rb") as o, open(err, "rb") as e:
            return subprocess.CompletedProcess([kind, *argv], child.exitcode, o.read(), e.read())


def run_child(plan_dir: str, options: dict[str, Any], kill: dict[str, Any], timeout: float) -> Any:
    """``child_main`` (``planner.commands.submit.submit`` with the kill point) in a forked child, run to its end."""
    return run_forked("submit", json.dumps({"plan_dir": plan_dir, "options": options, "kill": kill}), [], timeout)


def run_cli_child(argv: list[str], kill: dict[str, Any], timeout: float) -> Any:
    """``cli_main`` (``planner ARGV`` with the kill point) in a forked child, run to its end."""
    return run_forked("cli", json.dumps({"kill": kill, "barrier": None}), list(map(str, argv)), timeout)
