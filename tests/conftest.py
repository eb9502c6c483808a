"""What every test shares: the environment it runs in, moto's server, the emulators and their clock.

* ``tests/helpers.py`` is importable (``import helpers``); hypothesis has its profiles.
* ``aws_environment`` (autouse): dummy credentials in us-east-1, no profile, no config
  or credentials file, no endpoint, Polly or debug setting from the developer's shell,
  a sandbox state directory of the test's own, and no workflow lookup at plan time: no
  test can reach a real account or a user's ``~/.cache/planner``.
* ``moto_server``: moto on a free loopback port, started once per session (S3, Batch
  without Docker, Glue, IAM).
* ``clock``, ``make_omics_emulator(**options)``, ``make_polly_emulator(**options)``:
  emulators on the test's ``FakeClock`` (the HealthOmics one on moto's S3), all
  stopped at teardown.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Plans touch the file system and polars; examples are slower than a pure function's.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("thorough", parent=settings.get_profile("default"))  # helpers.examples() scales counts
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


class FakeClock:
    """A clock the test moves by hand; the emulators' state follows it."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


# ---------------------------------------------------------------- the environment


@pytest.fixture(scope="session", autouse=True)
def shared_service_models() -> Iterator[None]:
    """Read and parse each botocore JSON file (service model, endpoint rules, partitions) once per session.

    The planner makes a new boto3 session for every command (as a CLI process
    would), so every submit and status loads the S3, HealthOmics, Batch or Glue
    model again: gunzip, then ``json.loads`` with an ``OrderedDict`` hook, most of
    a client's cost and much of the fault suite's time.

    Every caller gets its own copy, made by unpickling the first parse: about four
    times faster than loading the file and unlike a shared dict it cannot leak one
    session's edits into another. botocore does edit what it loaded (S3's
    ``requestUri`` loses its ``/{Bucket}`` in ``remove_bucket_from_url_paths_from_model``),
    and moto's server, in this process, builds its routes from the same loader:
    handing out one shared dict made moto 5.2.6 answer HTTP 500 to every S3 call
    ("URL rule '' must start with a slash"). tests/integration/test_conftest_models.py
    holds the copy to that.
    """
    import pickle

    import botocore.loaders

    original = botocore.loaders.JSONFileLoader.load_file
    parsed: dict[str, bytes | None] = {}

    def load_file(self: Any, file_path: str) -> Any:
        if file_path not in parsed:
            data = original(self, file_path)
            parsed[file_path] = None if data is None else pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
        frozen = parsed[file_path]
        return None if frozen is None else pickle.loads(frozen)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.loaders.JSONFileLoader, "load_file", load_file)
        yield


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dummy credentials and a region, never a real profile, endpoint or sandbox.

    A test that needs another value sets it with ``monkeypatch`` after this ran.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in [n for n in os.environ if n.startswith(("AWS_ENDPOINT_URL", "POLLY_"))] + ["PLANNER_DEBUG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLANNER_SANDBOX_DIR", str(tmp_path_factory.mktemp("sandbox")))
    # A sandbox daemon throttles in real time: at 100 times the documented API rates its quotas stay on
    # without a test's few StartRun calls waiting real seconds (the emulators of make_omics_emulator keep
    # the documented rates, in the test's time).
    monkeypatch.setenv("PLANNER_SANDBOX_API_RATES", "100")
    # The per-user index of what was submitted (run_index.py): each test starts with none, like a new user.
    monkeypatch.setenv("PLANNER_HOME", str(tmp_path_factory.mktemp("home")))
    # `planner plan` reads a HealthOmics workflow when credentials are at hand: these dummy ones reach no
    # workflow; a test of that lookup points it at the emulator and deletes this.
    monkeypatch.setenv("PLANNER_NO_WORKFLOW_LOOKUP", "1")


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port, for the whole session; yields its endpoint URL.

    Batch jobs run without Docker (moto moves them through their states itself).
    """
    import logging

    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)  # one log line per request drowns a failure's report
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        request = urllib.request.Request(
            f"{url}/moto-api/config", data=json.dumps({"batch": {"use_docker": False}}).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10).read()
        yield url
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


class ClientWaits:
    """The time the emulators' rate quotas refill by in a test: its ``FakeClock`` plus every wait of a
    throttled client.  botocore's retry backoff (``time.sleep`` in ``botocore.endpoint``) adds its
    seconds here instead of sleeping them (or hands them on to a fixture that patched it first, such as
    the fault suite's ``waits``), and so does the planner's own wait once botocore has given up on a
    throttled call (``Patience.pause`` for a throttling reason; its other waits are left as they are).
    A throttled call is retried at once, in the test's time, without moving the runs, which follow the
    ``FakeClock`` alone."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.waited = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.clock.now + self.waited

    def sleep(self, seconds: float) -> None:
        # At least a second: botocore's backoff is random (up to 1 s, 2 s, 4 s...), and a test must not depend
        # on its draw; after a second's wait every documented rate (StartRun's 1 a second the lowest) has a token.
        with self.lock:
            self.waited += max(seconds, 1.0)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import time

        import botocore.endpoint

        previous = botocore.endpoint.time
        waits = self

        class _Time:
            def __getattr__(self, name: str) -> Any:
                return getattr(previous, name)

            @staticmethod
            def sleep(seconds: float) -> None:
                waits.sleep(seconds)
                if previous is not time:
                    previous.sleep(seconds)

        monkeypatch.setattr(botocore.endpoint, "time", _Time())

        from planner.engine.context import THROTTLING, Patience

        pausing = threading.local()  # Patience is shared by a command's threads: the reason is per thread
        pause, init = Patience.pause, Patience.__init__

        def throttled_pause(patience: Patience, what: str, reason: str, waited: float, delay: float) -> float:
            pausing.throttled = reason.split(":", 1)[0] in THROTTLING
            try:
                return pause(patience, what, reason, waited, delay)
            finally:
                pausing.throttled = False

        def patience_init(patience: Patience, max_wait: float, sleep: Callable[[float], None], *rest: Any) -> None:
            def wait(seconds: float) -> None:
                (waits.sleep if getattr(pausing, "throttled", False) else sleep)(seconds)

            init(patience, max_wait, wait, *rest)

        monkeypatch.setattr(Patience, "pause", throttled_pause)
        monkeypatch.setattr(Patience, "__init__", patience_init)


@pytest.fixture()
def make_omics_emulator(
    moto_server: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """Start HealthOmics emulators (on moto's S3 and the test's clock unless given others); all stop at teardown.

    They answer ThrottlingException above the documented API rates (``api_rates="documented"``, sources.md:
    throttling) unless given ``api_rates=None``, their buckets refilled by ``ClientWaits``: a throttled
    client's backoff passes in the test's time, never in real seconds."""
    from planner.sandbox.omics_emulator import OmicsEmulator

    started: list[OmicsEmulator] = []
    waits = ClientWaits(clock)
    installed: list[bool] = []

    def make(**options: Any) -> OmicsEmulator:
        options.setdefault("s3_endpoint_url", moto_server)
        options.setdefault("clock", clock)
        options.setdefault("api_rates", "documented")
        if options["clock"] is clock and "rate_clock" not in options:
            if not installed:
                waits.install(monkeypatch)  # once, when the test's first emulator starts (after its other fixtures)
                installed.append(True)
            options["rate_clock"] = waits
        emulator = OmicsEmulator(**options).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture()
def make_polly_emulator(clock: FakeClock) -> Iterator[Callable[..., Any]]:
    """Start Polly emulators (on the test's clock unless given another); all stop at teardown."""
    from planner.sandbox.polly_emulator import PollyEmulator

    started: list[PollyEmulator] = []

    def make(**options: Any) -> PollyEmulator:
        options.setdefault("clock", clock)
        emulator = PollyEmulator(**options).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()
