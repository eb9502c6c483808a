"""Progress, as one callback protocol that the CLI, the Python API and the tests share.

Long work (planning a sheet, staging shards, submitting calls, refreshing status)
reports ``ProgressEvent``s: which task, how much of it is done, of how much, in
what unit, and when it has finished.  The CLI draws them as tqdm bars on stderr,
or, when stderr is not a terminal (cron, CI logs), as a line at most every 10 s;
an API caller passes any callable (a notebook widget, a log line, a list in a test).
Messages worth a person's attention (what is being waited for, and how long) go
to the ``planner`` logger, which the CLI prints on stderr.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import IO, Any

log = logging.getLogger("planner")


@dataclass(frozen=True)
class ProgressEvent:
    task: str  # "plan", "stage", "StartRunBatch", "refresh", ...
    unit: str  # "row", "B", "run", "batch", "job", ...
    done: int
    total: int | None
    finished: bool = False


ProgressCallback = Callable[[ProgressEvent], None]


def ignore(event: ProgressEvent) -> None:
    """The default callback: progress is not shown."""


class Tracker:
    """One task's progress, advanced from any thread, reported to a callback."""

    def __init__(self, callback: ProgressCallback | None, task: str, unit: str, total: int | None = None):
        self.callback = callback or ignore
        self.task, self.unit, self.total = task, unit, total
        self.done = 0
        self._lock = threading.Lock()
        self.callback(ProgressEvent(task, unit, 0, total))

    def advance(self, amount: int = 1) -> None:
        with self._lock:  # the callback inside the lock: counts reach it in order from any number of workers
            self.done += amount
            self.callback(ProgressEvent(self.task, self.unit, self.done, self.total))

    def close(self) -> None:
        self.callback(ProgressEvent(self.task, self.unit, self.done, self.total, finished=True))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bars:
    """The CLI's callback: a tqdm bar per task on stderr, shown only for work that takes
    more than a second (a bar that flashes for a 9-row sheet helps nobody)."""

    def __init__(self, enabled: bool = True, delay: float = 1.0):
        self.enabled = enabled
        self.delay = delay
        self._bars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm  # start-up: a bar's library loads only when a bar is drawn

        with self._lock:
            bar = self._bars.get(event.task)
            if bar is None:
                # Bytes as kB/MB, and counts past a few thousand as k/M: "762k row/s", not "762400.19row/s".
                scale = event.unit == "B" or (event.total or 0) >= 10_000
                bar = tqdm(
                    total=event.total,
                    desc=event.task,
                    unit=event.unit,
                    unit_scale=scale,
                    file=sys.stderr,
                    delay=self.delay,
                    leave=True,
                    dynamic_ncols=True,
                )
                self._bars[event.task] = bar
            if event.total is not None and bar.total != event.total:
                bar.total = event.total
            if event.finished and bar.total is not None and bar.total != event.done:
                bar.total = event.done  # an estimated total (a text sheet's rows) gives way to the count
            bar.update(event.done - bar.n)
            if event.finished:
                bar.close()
                del self._bars[event.task]


class Lines:
    """The CLI's callback when stderr is not a terminal: no bar (its carriage returns make a log
    unreadable), but one line per task at most every ``every`` seconds, saying what, how many and
    how fast; and a last line when a task that printed one finishes.  Work shorter than ``every``
    prints nothing."""

    def __init__(self, stream: IO[str] | None = None, clock: Callable[[], float] | None = None, every: float = 10.0):
        self.stream = stream
        self.clock = clock or (lambda: monotonic())  # looked up at each call: tests replace it
        self.every = every
        self._started: dict[str, float] = {}
        self._printed: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            now = self.clock()
            started = self._started.setdefault(event.task, now)
            last = self._printed.get(event.task, started)
            if event.finished:
                self._started.pop(event.task, None)
                if self._printed.pop(event.task, None) is not None:
                    self._say(event, now - started, ", done")
            elif now - last >= self.every:
                self._printed[event.task] = now
                self._say(event, now - started, "")

    def _say(self, event: ProgressEvent, elapsed: float, tail: str) -> None:
        unit = event.unit if event.unit == "B" else f"{event.unit}s"
        of = f" of {event.total:,}" if event.total is not None else ""
        rate = event.done / elapsed if elapsed > 0 else 0.0
        shown = f"{rate:,.0f}" if rate >= 100 or rate.is_integer() else f"{rate:,.1f}"
        print(
            f"planner: {event.task}: {event.done:,}{of} {unit}, {shown} {unit}/s{tail}", file=self.stream or sys.stderr
        )


def stderr_progress(quiet: bool = False) -> ProgressCallback:
    """What the CLI reports long work with: bars on a terminal, timed lines otherwise, nothing with --quiet."""
    if quiet:
        return ignore
    return Bars() if sys.stderr.isatty() else Lines()
