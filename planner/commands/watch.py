"""``planner watch`` (``status --watch``): refresh until nothing can change, with a failure threshold."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from planner.backends import get_backend
from planner.backends.base import CancelReport
from planner.commands.cancel import cancel
from planner.commands.status import settled, state_counts, status, unknown_states, unknown_warning
from planner.core.plandir import PlanDirectory
from planner.core.progress import ProgressCallback, log
from planner.engine.lock import submitting
from planner.errors import InputError, setting
from planner.sandbox.local import ensure_running


@dataclass(frozen=True)
class Threshold:
    """When a watch gives up on a submission: more than ``count`` samples failed, or more than
    ``percent`` of the plan (``--cancel-if-failed 50`` or ``--cancel-if-failed 5%``)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> Threshold:
        value = text.strip()
        try:
            if value.endswith("%"):
                percent = float(value[:-1])
                if not 0 <= percent < 100:
                    raise InputError(
                        f"{setting('cancel_if_failed', repr(text))}: a share of the plan is from 0% to less than "
                        "100% (e.g. 5%)"
                    )
                return cls(percent=percent)
            count = int(value)
            if count < 0:
                raise ValueError
            return cls(count=count)
        except ValueError:
            raise InputError(
                f"{setting('cancel_if_failed', repr(text))}: give a number of samples (e.g. 50) or a share of the "
                "plan (e.g. 5%)"
            ) from None

    def crossed(self, failed: int, total: int) -> bool:
        if self.count is not None:
            return failed > self.count
        return self.percent is not None and failed * 100 > self.percent * total

    def __str__(self) -> str:
        if self.count is not None:
            return f"{self.count} sample" + ("" if self.count == 1 else "s")
        return f"{self.percent:g}% of the plan"


def _threshold(given: Threshold | str | None) -> Threshold | None:
    return Threshold.parse(given) if isinstance(given, str) else given


@dataclass(frozen=True)
class Snapshot:
    """One refresh of ``watch``: when, the table, its counts, and what changed since the last one."""

    at: float
    table: pl.DataFrame
    counts: dict[str, int]
    changes: dict[str, int] = field(default_factory=dict)  # state -> difference in count
    settled: bool = False
    first: bool = False
    failed: int = 0
    cancelled: CancelReport | None = None  # what the failure threshold cancelled, when it was crossed

    def __repr__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        counts = ", ".join(f"{state} {count:,}" for state, count in self.counts.items())
        end = "; settled" if self.settled else ""
        end += "; the failure threshold cancelled the rest" if self.cancelled is not None else ""
        return f"<Snapshot at {when}: {self.table.height:,} samples: {counts}{end}>"


def failed_samples(table: pl.DataFrame, failure_states: tuple[str, ...]) -> int:
    """Samples whose run ended badly or whose submission failed."""
    bad = pl.col("state").is_in(list(failure_states)).fill_null(False) | (pl.col("submission_status") == "FAILED")
    return table.filter(bad.fill_null(False)).height


def watch(
    plan_dir: str | os.PathLike[str],
    *,
    interval: float = 30.0,
    cancel_if_failed: Threshold | str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    on_refresh: Callable[[Snapshot], None] | None = None,
    refresh: bool = True,
    concurrency: int = 8,
    rate: float | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> Snapshot:
    """Refresh every ``interval`` seconds until nothing can change any more; returns the last snapshot.

    ``cancel_if_failed``: once more samples than that have failed, cancel everything still
    pending or running (the reason is recorded in the ledger) and return at once, the
    snapshot's ``cancelled`` saying what was done.  ``on_refresh`` sees each snapshot (the CLI
    prints the time and what changed).  The other keyword arguments are ``status``'s."""
    if not (isinstance(interval, (int, float)) and 0 < interval < float("inf")):
        raise InputError(f"interval {interval!r}: must be a positive number of seconds")
    threshold = _threshold(cancel_if_failed)
    spec = get_backend(PlanDirectory(plan_dir).manifest.backend)
    if sandbox and not endpoints:
        endpoints = dict(ensure_running())  # found (or started) once, not at every refresh
    access: dict[str, Any] = {
        "concurrency": concurrency,
        "rate": rate,
        "sandbox": sandbox,
        "endpoint_url": endpoint_url,
        "profile": profile,
        "region": region,
        "retry_mode": retry_mode,
        "max_attempts": max_attempts,
        "endpoints": endpoints,
        "progress": progress,
    }
    previous: dict[str, int] | None = None
    warned: set[str] = set()
    while True:
        table = status(plan_dir, refresh=refresh, **access)
        counts = state_counts(table)
        changes = {}
        if previous is not None:
            for name in sorted(set(counts) | set(previous)):
                delta = counts.get(name, 0) - previous.get(name, 0)
                if delta:
                    changes[name] = delta
        unknown = unknown_states(table, spec)
        for state in sorted(set(unknown) - warned):  # once each: the watch does not wait on them
            warned.add(state)
            log.warning(unknown_warning(state, unknown[state], spec) + "; not waited for")
        done = settled(table, spec.final_states | set(unknown)) and not submitting(plan_dir)
        failed = failed_samples(table, spec.retry_states)
        cancelled = None
        if threshold is not None and not done and threshold.crossed(failed, table.height):
            reason = f"more than {threshold} failed ({failed:,} of {table.height:,} samples)"
            cancelled = cancel(plan_dir, reason=reason, **access)
        snapshot = Snapshot(clock(), table, counts, changes, done, previous is None, failed, cancelled)
        if on_refresh is not None:
            on_refresh(snapshot)
        if done or cancelled is not None:
            return snapshot
        previous = counts
        sleep(interval)
