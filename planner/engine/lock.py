"""The plan's submit lock: one `planner submit` of a plan at a time, and how another command waits for it.

Two submits at once would both see no result for a call and both send it (Batch, Glue and Polly have no
idempotency token).  The lock is an ``flock`` on ``PLAN/.submit.lock``: it dies with the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from typing import IO

from planner.core.progress import log
from planner.engine.context import STOP_FILE, request_stop, stop_requester
from planner.errors import Stopped, SubmissionError

LOCK_FILE = ".submit.lock"
LOCK_POLL = 0.1


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def plan_lock(plan_dir: str) -> Iterator[None]:
    """One submit per plan at a time: two at once would both see no result for a call and
    both send it (Batch, Glue and Polly have no idempotency token).  The lock dies with the process.

    A `planner cancel` waiting for the lock (its stop request names a live process) is not
    overtaken; a stop request left by a cancel that has ended is removed."""
    handle = open(os.path.join(plan_dir, LOCK_FILE), "a")  # noqa: SIM115 - held for the whole block
    try:
        if not _try_lock(handle):
            raise SubmissionError(f"{plan_dir}: another `planner submit` of this plan is running; wait for it to end")
        marker = os.path.join(plan_dir, STOP_FILE)
        requester = stop_requester(marker)
        if requester is not None and requester != os.getpid() and _alive(requester):
            raise Stopped(
                f"{plan_dir}: a `planner cancel` of this plan (process {requester}) is under way; nothing was submitted"
            )
        with contextlib.suppress(FileNotFoundError):
            os.remove(marker)  # what an ended cancel (or threshold) asked of a submit that has ended too
        yield
    finally:
        handle.close()  # closing the file releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def _submit_stopped(
    plan_dir: str, reason: str, timeout: float, sleep: Callable[[float], None] = time.sleep
) -> Iterator[None]:
    """Hold the plan's submit lock; if a `planner submit` of the plan holds it, first ask that submit to
    stop (the marker its engine looks at before every creating call) and wait for it to end, at most
    ``timeout`` seconds.  Nothing the plan submits can start while the block runs, nor after it."""
    handle = open(os.path.join(plan_dir, LOCK_FILE), "a")  # noqa: SIM115 - held for the whole block
    marker = None
    try:
        if not _try_lock(handle):
            marker = request_stop(plan_dir, f"asked to stop: {reason}")
            log.warning(
                "a `planner submit` of this plan is running: asked it to stop; waiting up to %.0f s for it to "
                "finish the calls in flight and end",
                timeout,
            )
            deadline = time.monotonic() + timeout
            while not _try_lock(handle):
                if time.monotonic() >= deadline:
                    # The request stays: the submit still stops before its next creating call.
                    marker = None
                    raise SubmissionError(
                        f"{plan_dir}: the running `planner submit` of this plan did not end within {timeout:.0f} s "
                        "(a call in flight may be waiting on the service); it will send nothing more, but "
                        "nothing was cancelled yet: run `planner cancel` again once it has ended"
                    )
                sleep(LOCK_POLL)
        yield
    finally:
        if marker is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(marker)
        handle.close()


def submitting(plan_dir: str | os.PathLike[str]) -> bool:
    """Whether a `planner submit` of this plan is running now (it holds the plan's lock)."""
    path = os.path.join(os.fspath(plan_dir), LOCK_FILE)
    if not os.path.exists(path):
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
