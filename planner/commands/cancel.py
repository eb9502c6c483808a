"""``planner cancel``: stop a running submit, then cancel what is still pending or running."""

from __future__ import annotations

import contextlib
import os

from planner.backends import backend_class
from planner.backends.base import NOT_CANCELLED, CancelOutcome, CancelReport
from planner.commands.access import Access
from planner.commands.intents import remedy, settle
from planner.core.plandir import PlanDirectory
from planner.core.progress import ProgressCallback
from planner.engine.context import Context, Options
from planner.engine.lock import _submit_stopped
from planner.errors import SubmissionError

STOP_TIMEOUT = 300.0  # seconds `cancel` waits for a running submit to finish its calls in flight and end


def cancel(
    plan_dir: str | os.PathLike[str],
    *,
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
    reason: str = "asked by the user",
    stop_timeout: float = STOP_TIMEOUT,
) -> CancelReport:
    """Cancel what the plan submitted that is still pending or running; what has finished is left alone.

    A `planner submit` of the plan still running is asked to stop first, and waited for (at most
    ``stop_timeout`` seconds): its calls in flight end and are journaled, it sends nothing more, and
    what it made is cancelled with the rest.  No submit of the plan can start while cancel runs.

    The report says per batch, job or run what was cancelled, what had already
    finished, and what could not be cancelled (``complete`` is False then)."""
    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    plan = PlanDirectory(plan_dir)
    with _submit_stopped(plan.path, f"`planner cancel` ({reason})", stop_timeout):
        options = Options(concurrency=concurrency, rate=rate)
        ctx = access.open(plan.path, options, progress=progress, create_ledger=False)
        try:
            return _cancel(ctx, reason)
        finally:
            ctx.ledger.close()


def _cancel(ctx: Context, reason: str) -> CancelReport:
    # What an interrupted submit started is cancelled too, once found.  Cancel holds the plan's lock
    # (``_submit_stopped``): no submit runs, so every open intent is an interrupted submit's.
    unsettled = settle(ctx, ask=True, locked=True)
    backend = backend_class(ctx.manifest.backend)(ctx)
    report = backend.cancel()
    for call in unsettled:  # may be running, unknown to the ledger: never "cancelled 0" and exit 0
        detail = f"no recorded answer (a submit was interrupted); {remedy(ctx.plan.path)}, then cancel again"
        report.outcomes.append(CancelOutcome(call.describe(), NOT_CANCELLED, detail))
    ctx.ledger.record_event("cancel", {"reason": reason, **report.to_json()})
    with contextlib.suppress(SubmissionError):  # the states after the cancel, as far as the service tells now
        backend.refresh()
    return report
