"""What the two AWS HealthOmics backends (StartRunBatch and StartRun) share: run states and GetRun.

Run states (the model's RunStatus): PENDING, STARTING, RUNNING, STOPPING while a run
moves; COMPLETED, FAILED, CANCELLED, DELETED once it has ended.  ListRuns items carry
no failure reason (the model's RunListItem has none), so the reason of a FAILED run,
and its log location, come from one GetRun per run, asked once, when it is first
seen to have failed.  A run deleted since (DeleteRun, DeleteRunBatch, retention
mode REMOVE) answers ResourceNotFoundException: it shows as DELETED, never stops a
status for the whole plan; a run the ledger already saw end keeps that outcome (what
``retry`` needs after ``planner clean --runs``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..context import Context, error_code
from ..errors import SubmissionError
from ..progress import Tracker

ACTIVE = ("PENDING", "STARTING", "RUNNING", "STOPPING")
# What a run ended as; a run deleted after that (DeleteRun, DeleteRunBatch) keeps it in the ledger.
OUTCOMES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
FINAL = OUTCOMES | {"DELETED"}
NOT_FOUND = "ResourceNotFoundException"
CONFLICT = "ConflictException"


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


def get_runs(ctx: Context, omics: Any, run_ids: Iterable[str]) -> dict[str, RunDetail]:
    """GetRun for each run, on the command's thread pool; a deleted run comes back DELETED."""

    def get(run_id: str) -> RunDetail:
        try:
            run = ctx.call(f"GetRun {run_id}", omics.get_run, id=run_id)
        except SubmissionError as exc:
            if not_found(exc):
                return RunDetail(run_id, "DELETED", "the run was deleted (it is no longer in HealthOmics)")
            raise
        status = str(run.get("status"))
        reason = reason_of(run) if status == "FAILED" else None
        return RunDetail(run_id, status, reason, log_of(run), run.get("uuid"))

    return {detail.id: detail for detail in ctx.map(get, list(run_ids), task="GetRun", unit="run")}


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
