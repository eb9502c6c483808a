"""The sandbox: a local AWS on loopback, so the whole flow runs with no account.

``Sandbox`` starts, in this process, moto's server (S3, Batch, Glue, IAM) and the
project's HealthOmics and Polly emulators.  The CLI's ``--sandbox`` needs the same
servers across commands (``submit`` then ``status``), so it runs them in a small daemon
process (``planner sandbox start``) whose endpoints are kept in a state file;
``--sandbox`` starts one when none is running, and it stops by itself after
``--lifetime`` seconds (4 hours), or with ``planner sandbox stop``.

A sandbox belongs to one install: its state lives in
``~/.cache/planner/sandbox/<key>/``, the key a hash of the directory the planner
package is imported from, so a second clone or virtualenv gets a sandbox of its own
(``PLANNER_SANDBOX_DIR`` names the directory instead).  The state file records the
planner's version and a hash of its source files; a daemon running other code than
this process (the install was edited or upgraded since it started) is stopped and a
new one started, never reused.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from planner.errors import InputError, SubmissionError, setting

# What it starts, reuses or replaces goes to the planner logger (the CLI prints it; a script may not want it).
logger = logging.getLogger("planner")

DEFAULT_LIFETIME = 4 * 3600
API_RATES_ENV = "PLANNER_SANDBOX_API_RATES"  # the API rates of a sandbox --sandbox starts (default: documented)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../planner

HELP = """\
The sandbox is a local AWS on loopback, so that plan, submit, status, retry and cancel
run with --sandbox on a machine with no AWS account. It runs, in one background process:

  moto's server           S3, AWS Batch (jobs move through their states without Docker),
                          AWS Glue, IAM and STS
  a HealthOmics emulator  StartRunBatch, StartRun, GetRun and the rest of what the planner
                          calls (moto has no HealthOmics)
  a Polly emulator        create_run, submit_job and their status

Everything lives in memory: stopping the sandbox forgets every bucket, job and run.

A command run with --sandbox starts one when none is running (and says so on stderr),
else uses the running one. It stops by itself 4 hours after it started, or with
`planner sandbox stop`. `planner sandbox status` prints its endpoints.

Each install (a clone or virtualenv) has its own sandbox, kept in
~/.cache/planner/sandbox/<key>/ (the key a hash of where the planner is installed):
sandbox.json holds its process id, endpoints and start time, sandbox.log its output.
To try retry, cancel and --cancel-if-failed, `planner sandbox start --failure-rate 0.2`
starts one whose HealthOmics and Polly runs fail at that rate (a fixed subset, each with
one of the failure reasons HealthOmics documents); AWS Batch and Glue jobs, run by moto,
always succeed. A running sandbox with another rate is replaced (what it held is forgotten).

Its HealthOmics answers ThrottlingException above the default rate of each API that the
User Guide's "HealthOmics API quotas" page lists (StartRun 1 a second, GetRun and ListRuns
10...), as an account with default quotas does: `planner sandbox start --api-rates 10` allows
ten times those rates, `--api-rates off` none (PLANNER_SANDBOX_API_RATES sets the same for a
sandbox that --sandbox starts). A running sandbox with other rates is replaced.

A sandbox started by other planner code (this install edited or upgraded since) is
stopped and replaced, not reused. Set PLANNER_SANDBOX_DIR to keep the state in another
directory, e.g. one per project or per test run.
"""


def install_key() -> str:
    """A short hash of where this planner is installed: one sandbox per install."""
    return hashlib.sha256(os.path.realpath(_PACKAGE_DIR).encode()).hexdigest()[:12]


@functools.cache
def code_version() -> str:
    """The planner's version and a hash of its source files: a sandbox serves only the code that started it."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(_PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".html", ".json")):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, _PACKAGE_DIR).encode() + b"\0")
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return f"{importlib.metadata.version('planner')}+{digest.hexdigest()[:16]}"


def state_dir() -> str:
    """Where this install's sandbox keeps its state: PLANNER_SANDBOX_DIR, else ~/.cache/planner/sandbox/<key>."""
    chosen = os.environ.get("PLANNER_SANDBOX_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "planner", "sandbox", install_key()
    )
    return os.path.abspath(chosen)  # the daemon runs in another directory


def _state_file() -> str:
    return os.path.join(state_dir(), "sandbox.json")


class Sandbox:
    """moto's server and the HealthOmics and Polly emulators, on loopback, in this process."""

    def __init__(self, *, omics_options: dict[str, Any] | None = None, polly_options: dict[str, Any] | None = None):
        self.omics_options = omics_options or {}
        self.polly_options = polly_options or {}
        self.endpoints: dict[str, str] = {}
        self._moto: Any = None
        self._omics: Any = None
        self._polly: Any = None

    def start(self) -> Sandbox:
        from moto.server import ThreadedMotoServer  # an optional extra: `pip install 'planner[sandbox]'`

        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        # Batch jobs run without Docker: moto then moves them through their states itself.
        request = urllib.request.Request(
            f"{moto_url}/moto-api/config", data=json.dumps({"batch": {"use_docker": False}}).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10).read()
        self.endpoints = {
            "s3": moto_url,
            "batch": moto_url,
            "glue": moto_url,
            "sts": moto_url,
            "iam": moto_url,
            "ec2": moto_url,
            "ecs": moto_url,
            "logs": moto_url,
            "kms": moto_url,
        }
        # start-up: the emulators' code loads only in the process that serves the sandbox
        from planner.sandbox.omics_emulator import OmicsEmulator

        self._omics = OmicsEmulator(s3_endpoint_url=moto_url, **self.omics_options).start()
        self.endpoints["omics"] = self._omics.endpoint_url
        from planner.sandbox.polly_emulator import PollyEmulator  # start-up: as above

        self._polly = PollyEmulator(**self.polly_options).start()
        self.endpoints["polly"] = self._polly.endpoint_url
        return self

    def stop(self) -> None:
        if self._polly is not None:
            self._polly.stop()
        if self._omics is not None:
            self._omics.stop()
        if self._moto is not None:
            self._moto.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(state: dict[str, Any]) -> bool:
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError, TypeError):
        return False
    try:
        urllib.request.urlopen(state["endpoints"]["s3"] + "/moto-api/", timeout=2).read()
    except (OSError, KeyError, TypeError):
        return False
    return True


def read_state() -> dict[str, Any] | None:
    """The state of this install's running sandbox (pid, endpoints, started, code), or None."""
    try:
        with open(_state_file(), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and _alive(state) else None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One process at a time starts or replaces the sandbox of a state directory."""
    os.makedirs(state_dir(), exist_ok=True)
    with open(os.path.join(state_dir(), "sandbox.lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lifetime_text(seconds: int) -> str:
    if seconds >= 3600 and not seconds % 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def _clock(started: Any) -> str:
    try:
        return time.strftime("%H:%M", time.localtime(float(started)))
    except (TypeError, ValueError, OverflowError):
        return "an unknown time"


def ensure_running(
    lifetime: int = DEFAULT_LIFETIME,
    wait: float = 60.0,
    failure_rate: float | None = None,
    run_seconds: float | None = None,
    api_rates: str | None = None,
) -> dict[str, str]:
    """The endpoints of this install's running sandbox daemon, starting one when none runs.

    Says (on the ``planner`` logger) whether it started one or uses a running one, and where the
    state is.  A daemon that runs other code than this process is stopped and replaced; so is one
    whose runs fail at another rate than ``failure_rate``, last another ``run_seconds`` or throttle
    at other ``api_rates`` ("documented", "off" or a factor; None: whatever runs, else
    ``PLANNER_SANDBOX_API_RATES`` or "documented"; for the others, None: none fail and runs take one step).
    """
    if api_rates is not None:
        api_rate_text(api_rates)  # refused before anything is stopped or started
    with _locked():
        state = read_state()
        differs = _differs(state, failure_rate, run_seconds, api_rates) if state is not None else None
        if state is not None and state.get("code") == code_version() and differs is not None:
            logger.info(
                f"the sandbox started at {_clock(state.get('started'))} {differs}: stopping it "
                "(what it held is forgotten) to start a new one",
            )
            _stop(state)
            state = None
        if state is not None and state.get("code") == code_version():
            logger.info(
                f"using the sandbox started at {_clock(state.get('started'))} (state in {state_dir()})",
            )
            return state["endpoints"]
        if state is not None:
            logger.info(
                f"the sandbox started at {_clock(state.get('started'))} runs other planner code "
                f"({state.get('code') or 'an older version'}, this is {code_version()}): "
                "stopping it (what it held is forgotten) to start a new one",
            )
            _stop(state)
        # The API rates are not in the line below (`planner sandbox status` names them).
        rates = api_rate_text(api_rates or os.environ.get(API_RATES_ENV) or "documented")
        endpoints = _start(lifetime, wait, failure_rate or 0.0, run_seconds, rates)
    failing = f"; {failure_rate:.0%} of its HealthOmics and Polly runs fail" if failure_rate else ""
    if run_seconds:
        failing += f"; its HealthOmics runs run for about {run_seconds:g} s each"
    logger.info(
        f"started a sandbox (state in {state_dir()}; stops by itself after {_lifetime_text(lifetime)} "
        f"or with `planner sandbox stop`){failing}",
    )
    return endpoints


def api_rate_text(api_rates: str) -> str:
    """``--api-rates`` checked: "documented", "off", or a positive factor of the documented rates."""
    # start-up: the emulator's code loads only when a sandbox's rates are read
    from planner.sandbox.omics_emulator import api_rate_scale

    text = str(api_rates).strip().lower()
    try:
        scale = api_rate_scale(text)
    except ValueError as exc:
        raise InputError(
            f"{setting('api_rates', repr(api_rates))}: documented (HealthOmics' default API quotas), off, or a "
            "factor of them such as 10"
        ) from exc
    return "off" if not scale else "documented" if scale == 1.0 else f"{scale:g}"


def _differs(
    state: dict[str, Any], failure_rate: float | None, run_seconds: float | None, api_rates: str | None = None
) -> str | None:
    """How the running sandbox differs from the one asked for (None: it will do)."""
    running_rates = str(state.get("api_rates") or "off")
    if api_rates is not None and running_rates != api_rate_text(api_rates):
        return f"throttles at API rates {running_rates}, not {api_rate_text(api_rates)}"
    running_rate = float(state.get("failure_rate") or 0.0)
    if failure_rate is not None and running_rate != failure_rate:
        return f"fails {running_rate:.0%} of its runs, not {failure_rate:.0%}"
    running_seconds = state.get("run_seconds")
    if run_seconds is not None and running_seconds != run_seconds:
        took = f"{running_seconds:g} s" if running_seconds else "one step"
        return f"runs its HealthOmics runs for {took}, not {run_seconds:g} s"
    return None


def _start(
    lifetime: int, wait: float, failure_rate: float, run_seconds: float | None = None, api_rates: str = "documented"
) -> dict[str, str]:
    log_path = os.path.join(state_dir(), "sandbox.log")
    command = [sys.executable, "-m", "planner.sandbox.local", "serve", "--lifetime", str(lifetime)]
    command += ["--api-rates", api_rates]
    lengths = ["--run-seconds", repr(run_seconds)] if run_seconds else []
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*command, "--failure-rate", repr(failure_rate), *lengths],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            # Run this install's planner, not one the working directory happens to hold.
            cwd=os.path.dirname(_PACKAGE_DIR),
            env={**os.environ, "PLANNER_SANDBOX_DIR": state_dir()},
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state = read_state()
        if state is not None and state.get("pid") == process.pid:
            return state["endpoints"]
        if process.poll() is not None:
            break
        time.sleep(0.2)
    if process.poll() is None:
        process.terminate()
    raise SubmissionError(f"the sandbox did not start within {wait:.0f} s; see {log_path}")


def _stop(state: dict[str, Any]) -> None:
    os.kill(int(state["pid"]), signal.SIGTERM)
    for _ in range(50):
        if not _alive(state):
            return
        time.sleep(0.1)


def stop_running() -> bool:
    """Stop this install's sandbox (or PLANNER_SANDBOX_DIR's); False when none was running."""
    state = read_state()
    if state is None:
        return False
    _stop(state)
    return True


def serve(
    lifetime: int, failure_rate: float = 0.0, run_seconds: float | None = None, api_rates: str = "documented"
) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    failing = {"failure_rate": failure_rate}
    api_rates = api_rate_text(api_rates)
    # The documented API rates in real time (sources.md: throttling), as an account with default quotas has.
    omics = {**failing, "run_seconds": run_seconds, "api_rates": None if api_rates == "off" else api_rates}
    sandbox = Sandbox(omics_options=omics, polly_options=dict(failing)).start()
    os.makedirs(state_dir(), exist_ok=True)
    temporary = _state_file() + f".{os.getpid()}"
    state = {
        "pid": os.getpid(),
        "endpoints": sandbox.endpoints,
        "started": time.time(),
        "lifetime": lifetime,
        "failure_rate": failure_rate,
        "run_seconds": run_seconds,
        "api_rates": api_rates,
        "code": code_version(),  # of the code this process runs, which is what it serves
        "package": _PACKAGE_DIR,
    }
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(temporary, _state_file())
    deadline = time.monotonic() + lifetime
    try:
        # Waited in short steps: a signal that lands on one of the servers' threads sets only a
        # flag, and the handler runs when the main thread next runs Python code.  One long wait
        # would sleep through `planner sandbox stop` for the whole lifetime.
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, 0.5))
    finally:
        try:
            with open(_state_file(), encoding="utf-8") as handle:
                if json.load(handle).get("pid") == os.getpid():
                    os.unlink(_state_file())
        except (OSError, ValueError):
            pass
        sandbox.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m planner.sandbox.local")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME)
    serve_parser.add_argument("--failure-rate", type=float, default=0.0)
    serve_parser.add_argument("--run-seconds", type=float, default=None)
    serve_parser.add_argument("--api-rates", default="documented")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.lifetime, args.failure_rate, args.run_seconds, args.api_rates)


if __name__ == "__main__":
    main()
