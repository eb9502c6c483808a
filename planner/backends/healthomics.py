"""What the two AWS HealthOmics backends (StartRunBatch and StartRun) share: run states and GetRun.

Run states (the model's RunStatus): PENDING, STARTING, RUNNING, STOPPING while a run
moves; COMPLETED, FAILED, CANCELLED, DELETED once it has ended.  ListRuns items carry
no failure reason (the model's RunListItem has none), so the reason of a FAILED run,
and its log location, come from one GetRun per run, asked once, when it is first
seen to have failed.  A run deleted since (DeleteRun, DeleteRunBatch, retention
mode REMOVE) answers ResourceNotFoundException: it shows as DELETED, never stops a
status for the whole plan; a run the ledger already saw end keeps that outcome (what
``retry`` needs after ``planner clean --runs``).

Failure reasons are asked for a few runs per group, not for every failed run: GetRun's
documented rate (10 TPS, User Guide "HealthOmics API quotas") makes one call per failed run
two hours for 75,000 failures.  A status refresh asks at most ``REASONS_PER_GROUP`` of the
runs it finds newly FAILED in one batch, chosen by a hash of the run id; the ledger
lists the rest as unasked (``Ledger.unasked``), the status table shows them with
``commands.status.REASON_NOT_ASKED``, and ``explain`` (``planner status --why``) asks them on demand.

Run ids are reused: "HealthOmics reuses deleted run IDs ... we recommend that you use the
run uuid to uniquely identify runs" (User Guide, "Using HealthOmics runs").  The ledger keeps
each sample's run uuid (StartRun's ``uuid``, ListRunsInBatch's ``runInternalUuid``) and every
GetRun compares it: a run id that answers with another uuid belongs to another run now, so
this sample's run was deleted; its state is never adopted, and nothing is cancelled or
deleted by that id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from planner.core.ledger import SampleState
from planner.core.progress import Tracker
from planner.engine.context import Context, error_code
from planner.errors import SubmissionError

ACTIVE = ("PENDING", "STARTING", "RUNNING", "STOPPING")
# What a run ended as; a run deleted after that (DeleteRun, DeleteRunBatch) keeps it in the ledger.
OUTCOMES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
FINAL = OUTCOMES | {"DELETED"}
NOT_FOUND = "ResourceNotFoundException"
DELETED_REASON = "the run was deleted (it is no longer in HealthOmics)"
CONFLICT = "ConflictException"
REASONS_PER_GROUP = 10  # GetRun calls a refresh spends on the reasons of one batch's newly failed runs


@dataclass(frozen=True)
class RunDetail:
    id: str
    status: str
    reason: str | None = None
    log: str | None = None
    uuid: str | None = None


def not_found(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, SubmissionError) else exc
    return isinstance(cause, ClientError) and error_code(cause) == NOT_FOUND


def conflict(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, SubmissionError) else exc
    return isinstance(cause, ClientError) and error_code(cause) == CONFLICT


def reason_of(run: dict[str, Any]) -> str | None:
    """A failed run's reason as the service gives it: ``failureReason: statusMessage``."""
    parts = [str(p) for p in (run.get("failureReason"), run.get("statusMessage")) if p]
    if len(parts) == 2 and parts[1].startswith(parts[0]):
        parts = parts[1:]
    return ": ".join(parts) or None


def log_of(run: dict[str, Any]) -> str | None:
    location = run.get("logLocation") or {}
    return location.get("runLogStream") or location.get("engineLogStream")


def get_runs(ctx: Context, omics: Any, runs: Mapping[str, str | None]) -> dict[str, RunDetail]:
    """GetRun for each run id (mapped to the uuid the ledger holds for it, if any), on the command's thread
    pool; a deleted run comes back DELETED, and so does a run whose id now answers with another uuid."""

    def get(run_id: str) -> RunDetail:
        expected = runs[run_id]
        try:
            run = ctx.call(f"GetRun {run_id}", omics.get_run, id=run_id)
        except SubmissionError as exc:
            if not_found(exc):
                return RunDetail(run_id, "DELETED", DELETED_REASON, uuid=expected)
            raise
        found = run.get("uuid")
        if expected is not None and found is not None and found != expected:
            return RunDetail(run_id, "DELETED", reused_reason(run_id, expected, str(found)), uuid=expected)
        status = str(run.get("status"))
        reason = reason_of(run) if status == "FAILED" else None
        return RunDetail(run_id, status, reason, log_of(run), found or expected)

    return {detail.id: detail for detail in ctx.map(get, list(runs), task="GetRun", unit="run")}


def reasons_to_ask(failed: list[str], limit: int = REASONS_PER_GROUP) -> list[str]:
    """At most ``limit`` of one group's failed runs, in the given order: those whose run id hashes lowest.

    A sample the same on every refresh, but not every k-th run: failures that follow the sheet's order
    (every third sample of a sheet with a bad column) would make an even spread see one kind only."""
    if len(failed) <= limit:
        return list(failed)
    chosen = set(sorted(failed, key=lambda run: hashlib.sha256(run.encode()).digest())[:limit])
    return [run for run in failed if run in chosen]


def explain(ctx: Context, samples: list[SampleState]) -> list[SampleState]:
    """GetRun for each of these samples' runs: their state, reason and log, recorded in the ledger (and no
    longer unasked).  A run deleted since it ended keeps its outcome; its reason can no longer be asked."""
    omics = ctx.clients.get("omics")
    with_run = [s for s in samples if s.remote_id]
    details = get_runs(ctx, omics, {str(s.remote_id): s.remote_uuid for s in with_run})
    rows = []
    for row in with_run:
        detail = details[str(row.remote_id)]
        if detail.status == "DELETED" and row.state in OUTCOMES:
            reason = row.reason or f"{detail.reason}: its failure reason can no longer be asked"
            rows.append(row._replace(reason=reason))
        else:
            rows.append(row._replace(state=detail.status, reason=detail.reason, log=detail.log))
    ctx.ledger.upsert_samples(rows)
    ctx.ledger.reasons_asked(s.id for s in with_run)
    return rows


def gone_or_reused(ctx: Context, omics: Any, run_id: str, expected: str | None) -> str | None:
    """Why ``run_id`` is no longer this sample's run (deleted, or its id reused), or None while it is.

    Asked right before a CancelRun or DeleteRun, which name a run by id only: the uuid check keeps
    them from stopping or deleting another run that now holds the id."""
    try:
        run = ctx.call(f"GetRun {run_id}", omics.get_run, id=run_id)
    except SubmissionError as exc:
        if not_found(exc):
            return "the run is gone"
        raise
    found = run.get("uuid")
    if expected is not None and found is not None and found != expected:
        return reused_reason(run_id, expected, str(found))
    return None


def reused_reason(run_id: str, expected: str, found: str) -> str:
    return (
        f"the run was deleted: run id {run_id} now belongs to another run (uuid {found}, not this sample's {expected})"
    )


def list_runs(ctx: Context, omics: Any, what: str, **filters: Any) -> dict[str, dict[str, Any]]:
    """Every ListRuns item for ``filters`` (batchId, status...), by run id, page by page."""
    found: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = dict(filters)
    with Tracker(ctx.progress, what, "page") as bar:
        while True:
            page = ctx.call(what, omics.list_runs, **params)
            bar.advance()
            for item in page.get("items", []):
                found[item["id"]] = item
            token = page.get("nextToken")
            if not token:
                return found
            params["startingToken"] = token
