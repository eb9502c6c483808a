"""The integration tests' clients and buckets on the loopback servers of ``tests/conftest.py``.

moto's server runs once per session; every test gets dummy credentials in its
environment, its own bucket, a fresh emulator on a fake clock it can move, and
boto3 clients that talk HTTP to both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config

from planner.sandbox.omics_emulator import OmicsEmulator
from planner.sandbox.polly_emulator import PollyEmulator


@pytest.fixture()
def s3(moto_server: str) -> Any:
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
def make_emulator(make_omics_emulator: Callable[..., OmicsEmulator]) -> Callable[..., OmicsEmulator]:
    """``make_omics_emulator`` under this package's name."""
    return make_omics_emulator


@pytest.fixture()
def omics_emulator(make_omics_emulator: Callable[..., OmicsEmulator]) -> OmicsEmulator:
    return make_omics_emulator()


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
def make_polly(make_polly_emulator: Callable[..., PollyEmulator]) -> Callable[..., PollyEmulator]:
    """``make_polly_emulator`` under this package's name."""
    return make_polly_emulator
