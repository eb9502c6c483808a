"""Open intents: creating calls the ledger journaled as about to be sent whose answer it never
recorded (a ``planner submit`` killed between the service's answer and the ledger's write).

``submit`` settles them itself before sending anything (``engine.py``).  Every other command
that reads the ledger (status, watch, retry, cancel, clean, report) settles them first too,
here, without sending anything: a backend whose calls can be looked up (AWS Batch by job name,
Glue by run key, Polly by run name) has what it finds journaled as the call's result, exactly as
``submit`` would.  HealthOmics can be asked about a StartRunBatch or StartRun only by sending it
again with its requestId, which may start it; so for those the commands refuse (or ``cancel``
reports them as not cancelled) and say to run ``planner submit PLAN`` to reconcile first.

While a submit of the plan is running its intents are its own, in flight: nothing is settled.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.backends import backend_class
from planner.core.ledger import INTENT, Submission
from planner.core.progress import log
from planner.engine.context import Context
from planner.engine.engine import Engine
from planner.engine.lock import submitting
from planner.errors import Unreconciled, setting

SHOWN = 3


@dataclass(frozen=True)
class Unsettled:
    """An open intent that could not be settled without sending the call again."""

    key: str
    operation: str
    label: str

    def describe(self) -> str:
        return f"{self.operation} for {self.label}"


def settle(ctx: Context, *, ask: bool, locked: bool = False) -> list[Unsettled]:
    """Settle the ledger's open intents; returns those that only ``planner submit`` can settle.

    ``ask``: the command may call the service (False for ``status --no-refresh`` and a report
    without ``--refresh``: then a warning says what the ledger cannot tell).  ``locked``: the caller
    holds the plan's submit lock itself (``cancel``, once the running submit it stopped has ended), so
    no submit is running and every open intent is an interrupted one; without it the lock held means
    a submit runs and its intents are in flight."""
    open_intents = {s.key: s for s in ctx.ledger.submissions(INTENT)}
    if not open_intents or (not locked and submitting(ctx.plan.path)):
        return []
    if not ask:
        log.warning(
            "%d creating call(s) of an interrupted submit have no recorded answer: their samples show as NOT "
            "SUBMITTED though they may be running; ask the service "
            f"(without {setting('refresh=False')}, or report with {setting('refresh=True')}) "
            "or run `planner submit %s` to reconcile",
            len(open_intents),
            ctx.plan.path,
        )
        return []

    engine = Engine(ctx)
    left: list[Unsettled] = []
    found = 0
    phases = backend_class(ctx.manifest.backend)(ctx).phases()
    try:
        for phase in phases:
            for call in phase.calls:
                if call.find is None:
                    # No call of this operation can be looked up (HealthOmics): its open intents are
                    # named from the ledger, without reading the rest of the plan's shards.
                    for key, intent in list(open_intents.items()):
                        if intent.kind == call.operation:
                            del open_intents[key]
                            left.append(Unsettled(key, intent.kind, _label(intent)))
                    break
                if call.key not in open_intents:
                    continue
                del open_intents[call.key]
                # Found is journaled; found nothing means the call was never carried out, and its
                # samples are rightly NOT SUBMITTED until `planner submit` sends it.
                found += engine.reconcile(call)
                if not open_intents:
                    break
            if not open_intents:
                break
    finally:
        close = getattr(phases, "close", None)
        if close is not None:
            close()
    if found:
        log.info("%d call(s) of an interrupted submit found at the service and recorded in the ledger", found)
    # Keys the plan's calls no longer make (a plan changed since): only submit can say more.
    left += [Unsettled(key, s.kind, _label(s)) for key, s in open_intents.items()]
    return left


def _label(intent: Submission) -> str:
    if intent.sample is not None:
        return f"sample {intent.sample}"
    return f"shard {intent.shard}" if intent.shard is not None else intent.key


def unreconciled(plan_dir: str, unsettled: list[Unsettled]) -> Unreconciled[Unsettled]:
    """The refusal of a command that finds open intents only ``planner submit`` can settle."""
    shown = "; ".join(u.describe() for u in unsettled[:SHOWN])
    if len(unsettled) > SHOWN:
        shown += f"; and {len(unsettled) - SHOWN} more"
    return Unreconciled(
        f"{plan_dir}: {len(unsettled)} call(s) of an interrupted `planner submit` have no recorded answer "
        f"({shown}): they may have started runs the ledger does not know.  {remedy(plan_dir)}, then run this "
        "command again",
        unsettled,
    )


def remedy(plan_dir: str) -> str:
    return (
        f"Run `planner submit {plan_dir}` to reconcile first (it sends them again with the same requestId, so "
        "HealthOmics hands back what it made and starts nothing twice; it also sends what that submit had not reached)"
    )


def require_settled(ctx: Context, *, ask: bool) -> None:
    """``settle``, and refuse (exit 2) when some intent only ``planner submit`` can settle."""
    left = settle(ctx, ask=ask)
    if left:
        raise unreconciled(ctx.plan.path, left)
