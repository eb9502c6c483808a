"""Progress events from several workers: a consumer sees ``done`` only go forward."""

from __future__ import annotations

import threading

from planner.core.progress import ProgressEvent, Tracker


def test_two_workers_deliver_their_counts_in_order() -> None:
    """Was a bug: Tracker.advance counted under its lock but called the callback after releasing it."""
    seen: list[int] = []
    second_counted = threading.Event()

    def callback(event: ProgressEvent) -> None:
        if event.done == 1 and not event.finished:
            # The first worker is slow to deliver: the second counts meanwhile, unless counting waits for it.
            second_counted.wait(timeout=1.0)
        seen.append(event.done)
        if event.done == 2:
            second_counted.set()

    tracker = Tracker(callback, "StartRun", "run", 2)
    first = threading.Thread(target=tracker.advance)
    first.start()
    while tracker.done < 1:  # the first worker has counted its call
        threading.Event().wait(0.001)
    tracker.advance()
    first.join()
    tracker.close()
    assert seen == [0, 1, 2, 2], seen
