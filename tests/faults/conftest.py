"""Fixtures of the reliability suite (loopback servers only) and the fault matrix it prints.

Every matrix test carries ``@pytest.mark.fault_cell(row, column)``; its outcome is
recorded here and ``pytest_terminal_summary`` prints the scenario-by-backend
table at the end of the run: ``held``, ``NOT HELD`` (a failure), ``BUG`` (a known
planner bug pinned by a strict xfail), ``XPASS`` (a known bug that no longer shows:
its strict xfail fails until the mark is removed), ``-`` (not applicable).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .rigs import COLUMNS, World, new_versioned_bucket

if TYPE_CHECKING:
    from conftest import FakeClock  # tests/conftest.py

MATRIX_KEY = pytest.StashKey[dict[tuple[str, str], str]]()
ROWS_KEY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault_cell(row, column): a cell of the fault matrix printed at the end of the run"
    )
    config.stash[MATRIX_KEY] = {}
    config.stash[ROWS_KEY] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("fault_cell")
    if marker is None:
        return
    row, column = marker.args
    cells = item.config.stash[MATRIX_KEY]
    rows = item.config.stash[ROWS_KEY]
    if row not in rows:
        rows.append(row)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            cells[(row, column)] = "BUG" if report.skipped else "XPASS"
        elif report.failed and "XPASS(strict)" in str(report.longrepr):
            cells[(row, column)] = "XPASS"  # a known bug no longer shows: its xfail mark can go
        elif report.passed:
            cells[(row, column)] = "held"
        elif report.skipped:
            cells[(row, column)] = "skip"
        else:
            cells[(row, column)] = "NOT HELD"
    elif report.when == "teardown" and report.failed:
        cells[(row, column)] = "NOT HELD"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cells = config.stash.get(MATRIX_KEY, {})
    if not cells:
        return
    rows = config.stash[ROWS_KEY]
    columns = [c for c in COLUMNS if any(column == c for _, column in cells)]
    width = max(len(r) for r in rows) + 2
    widths = [max(len(c), 8) + 2 for c in columns]
    terminalreporter.write_sep("=", "fault matrix (scenario x backend)")
    terminalreporter.write_line("".ljust(width) + "".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        terminalreporter.write_line(
            row.ljust(width) + "".join(cells.get((row, c), "-").ljust(w) for c, w in zip(columns, widths, strict=True))
        )
    values = list(cells.values())
    summary = ", ".join(
        f"{values.count(v)} {v}" for v in ("held", "NOT HELD", "BUG", "XPASS", "skip") if values.count(v)
    )
    terminalreporter.write_line(
        f"{summary}; '-' = not applicable (no staging); glue stages only in manifest mode, used for the S3 rows"
    )


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="package")
def fault_moto(moto_server: str) -> str:
    """The session's moto server (``tests/conftest.py``), under this package's name."""
    return moto_server


@pytest.fixture()
def world(
    fault_moto: str, clock: FakeClock, make_omics_emulator: Callable[..., Any], make_polly_emulator: Callable[..., Any]
) -> World:
    """A fresh versioned staging bucket; emulators started when a rig asks (stopped by their factories)."""
    here = World(fault_moto, "", clock, make_omics_emulator, make_polly_emulator)
    here.bucket = new_versioned_bucket(here.s3)
    return here


class Waits:
    """Every wait of a submit, recorded and cut short: botocore's retry backoff and the planner's own."""

    def __init__(self) -> None:
        self.botocore: list[float] = []
        self.planner: list[float] = []
        self.scale = 0.0  # of the planner's waits that really pass (tiny ones always do)

    def botocore_sleep(self, seconds: float) -> None:
        self.botocore.append(seconds)
        time.sleep(min(seconds, 0.01))

    def planner_sleep(self, seconds: float) -> None:
        self.planner.append(seconds)
        time.sleep(max(min(seconds, 0.02), seconds * self.scale))


@pytest.fixture()
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    """Cut every retry wait short (botocore's ``time.sleep`` in its endpoint, ``ctx.sleep``)."""
    import botocore.endpoint

    import planner.commands.access

    recorded = Waits()

    class _Time:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        sleep = staticmethod(recorded.botocore_sleep)

    monkeypatch.setattr(botocore.endpoint, "time", _Time())
    original = planner.commands.access.open_context

    def open_context(*args: Any, **kwargs: Any) -> Any:
        ctx = original(*args, **kwargs)
        ctx.sleep = recorded.planner_sleep
        return ctx

    monkeypatch.setattr(planner.commands.access, "open_context", open_context)
    return recorded


@pytest.fixture()
def hooks(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[tuple[str, Callable[..., Any]]]], None]:
    """``hooks([(event, handler), ...])``: register botocore handlers on every client the planner makes."""
    from .faultkit import patch_clients

    def install(pairs: list[tuple[str, Callable[..., Any]]]) -> None:
        patch_clients(pairs, monkeypatch.setattr)

    return install
