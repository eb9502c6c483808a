"""Loopback servers for the integration tests: moto (S3) and the HealthOmics emulator.

moto's server is started once per session; every test gets fresh credentials in
its environment, its own bucket, a fresh emulator on a fake clock it can move,
and boto3 clients that talk HTTP to both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from planner.sandbox.omics_emulator import OmicsEmulator
from planner.sandbox.polly_emulator import PollyEmulator


class FakeClock:
    """A clock the test moves by hand; the emulator's state follows it."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and a region, never a real profile."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3(moto_server: str, aws_environment: None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}),
    )


@pytest.fixture()
def bucket(s3: Any) -> str:
    """A fresh bucket in moto for this test."""
    name = f"omics-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def make_emulator(moto_server: str, clock: FakeClock, aws_environment: None) -> Iterator[Callable[..., OmicsEmulator]]:
    """Start emulators (on the test's fake clock unless given another); all stop at teardown."""
    started: list[OmicsEmulator] = []

    def make(**options: Any) -> OmicsEmulator:
        options.setdefault("s3_endpoint_url", moto_server)
        options.setdefault("clock", clock)
        emulator = OmicsEmulator(**options).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture()
def omics_emulator(make_emulator: Callable[..., OmicsEmulator]) -> OmicsEmulator:
    return make_emulator()


def omics_client(emulator: OmicsEmulator, *, retries: dict[str, Any] | None = None, **config: Any) -> Any:
    """A boto3 omics client on the emulator (standard retries, no host prefix).

    Note botocore's meaning: ``retries={"max_attempts": n}`` allows n *retries*
    (n + 1 attempts); ``{"total_max_attempts": 1}`` is a single attempt.
    """
    return boto3.client(
        "omics",
        endpoint_url=emulator.endpoint_url,
        region_name="us-east-1",
        config=Config(inject_host_prefix=False, retries=retries or {"mode": "standard", "max_attempts": 3}, **config),
    )


@pytest.fixture()
def make_omics_client() -> Callable[..., Any]:
    """``make_omics_client(emulator, retries={...}, **Config options)``."""
    return omics_client


@pytest.fixture()
def omics(omics_emulator: OmicsEmulator) -> Any:
    return omics_client(omics_emulator)


@pytest.fixture()
def make_polly(clock: FakeClock) -> Iterator[Callable[..., PollyEmulator]]:
    """Start Polly emulators (on the test's fake clock unless given another); all stop at teardown."""
    started: list[PollyEmulator] = []

    def make(**options: Any) -> PollyEmulator:
        options.setdefault("clock", clock)
        emulator = PollyEmulator(**options).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()
