"""The sandbox: a local AWS on loopback, so the whole flow runs with no account.

``Sandbox`` starts, in this process, moto's server (S3, Batch, Glue) and the
project's HealthOmics emulator.  The CLI's ``--sandbox`` needs the same servers
across commands (``submit`` then ``status``), so it runs them in a small daemon
process (``planner sandbox start``) whose endpoints are kept in a state file;
``--sandbox`` starts one when none is running, and it stops by itself after
``--lifetime`` seconds, or with ``planner sandbox stop``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from ..errors import SubmissionError

DEFAULT_LIFETIME = 4 * 3600


def state_dir() -> str:
    return os.environ.get("PLANNER_SANDBOX_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "planner", "sandbox"
    )


def _state_file() -> str:
    return os.path.join(state_dir(), "sandbox.json")


class Sandbox:
    """moto's server and the HealthOmics emulator, on loopback, in this process."""

    def __init__(self, *, omics_options: dict[str, Any] | None = None, polly_options: dict[str, Any] | None = None):
        self.omics_options = omics_options or {}
        self.polly_options = polly_options or {}
        self.endpoints: dict[str, str] = {}
        self._moto: Any = None
        self._omics: Any = None
        self._polly: Any = None

    def start(self) -> Sandbox:
        from moto.server import ThreadedMotoServer

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
        }
        try:
            from .omics_emulator import OmicsEmulator
        except ImportError:  # the emulator arrives with the HealthOmics backend
            OmicsEmulator = None  # type: ignore[assignment,misc]
        if OmicsEmulator is not None:
            self._omics = OmicsEmulator(s3_endpoint_url=moto_url, **self.omics_options).start()
            self.endpoints["omics"] = self._omics.endpoint_url
        try:
            from .polly_emulator import PollyEmulator
        except ImportError:  # the emulator arrives with the Polly backend
            PollyEmulator = None  # type: ignore[assignment,misc]
        if PollyEmulator is not None:
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
    except (OSError, KeyError, ValueError):
        return False
    try:
        urllib.request.urlopen(state["endpoints"]["s3"] + "/moto-api/", timeout=2).read()
    except OSError:
        return False
    return True


def read_state() -> dict[str, Any] | None:
    try:
        with open(_state_file(), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if _alive(state) else None


def ensure_running(lifetime: int = DEFAULT_LIFETIME, wait: float = 60.0) -> dict[str, str]:
    """The endpoints of a running sandbox daemon, starting one when none runs."""
    state = read_state()
    if state is not None:
        return state["endpoints"]
    os.makedirs(state_dir(), exist_ok=True)
    log = open(os.path.join(state_dir(), "sandbox.log"), "ab")
    subprocess.Popen(
        [sys.executable, "-m", "planner.sandbox.local", "serve", "--lifetime", str(lifetime)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state = read_state()
        if state is not None:
            return state["endpoints"]
        time.sleep(0.2)
    raise SubmissionError(
        f"the sandbox did not start within {wait:.0f} s; see {os.path.join(state_dir(), 'sandbox.log')}"
    )


def stop_running() -> bool:
    state = read_state()
    if state is None:
        return False
    os.kill(int(state["pid"]), signal.SIGTERM)
    for _ in range(50):
        if read_state() is None:
            return True
        time.sleep(0.1)
    return True


def serve(lifetime: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sandbox = Sandbox().start()
    os.makedirs(state_dir(), exist_ok=True)
    temporary = _state_file() + f".{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "endpoints": sandbox.endpoints, "started": time.time()}, handle)
    os.replace(temporary, _state_file())
    try:
        stop.wait(lifetime)
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
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.lifetime)


if __name__ == "__main__":
    main()
