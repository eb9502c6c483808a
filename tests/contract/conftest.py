"""Fixtures of the contract suite: the loopback servers of ``tests/conftest.py`` as a fault rig's ``World``,
and the in-memory stub backend registered for the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import stub_backend
from faults.rigs import World, new_versioned_bucket

if TYPE_CHECKING:
    from conftest import FakeClock  # tests/conftest.py


@pytest.fixture()
def world(
    moto_server: str, clock: FakeClock, make_omics_emulator: Callable[..., Any], make_polly_emulator: Callable[..., Any]
) -> World:
    """A fresh versioned staging bucket; emulators started when a rig asks (stopped by their factories)."""
    here = World(moto_server, "", clock, make_omics_emulator, make_polly_emulator)
    here.bucket = new_versioned_bucket(here.s3)
    return here


@pytest.fixture()
def stub() -> Iterator[stub_backend.StubService]:
    """The ``stub`` backend, registered and served by a fresh in-memory service for this test."""
    with stub_backend.installed() as service:
        yield service
