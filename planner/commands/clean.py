"""``planner clean``: remove what a plan staged on S3 (and, with ``runs``, its HealthOmics runs),
once nothing can change any more.

Only what this plan's ledger recorded is ever touched: each staged object (a shard, a
line index) is looked at first and removed only while it still has the ETag the
ledger recorded for it (an object changed since is someone else's now, and is kept);
in a versioned bucket the very version the plan wrote is removed.  Nothing is removed
while a run may still read a staged file: every sample must have ended (or failed to
submit), and no `planner submit` of the plan may be running.  ``runs`` deletes the
plan's HealthOmics runs or batches that have ended (DeleteRunBatch, DeleteRun), which
frees the account's retained-run quota.  ``dry_run`` says what would be removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from planner.backends import backend_class, get_backend
from planner.backends.base import CancelOutcome
from planner.commands.access import Access
from planner.commands.intents import require_settled
from planner.commands.status import _status, settled
from planner.core.ledger import Staged
from planner.core.progress import ProgressCallback
from planner.engine.context import Options, error_code
from planner.engine.lock import submitting
from planner.errors import InputError, SubmissionError
from planner.services.staging import is_access_denied


@dataclass
class CleanReport:
    plan_id: str
    dry_run: bool
    removed: list[str] = field(default_factory=list)  # s3:// URIs removed (or that would be)
    gone: list[str] = field(default_factory=list)  # recorded, but no longer there
    kept: list[tuple[str, str]] = field(default_factory=list)  # (URI, why it was left alone)
    runs: list[CancelOutcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "dry_run": self.dry_run,
            "removed": self.removed,
            "already_gone": self.gone,
            "kept": [{"uri": uri, "why": why} for uri, why in self.kept],
            "runs": [o.to_json() for o in self.runs],
        }

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"plan {self.plan_id}: {verb} {len(self.removed)} staged object(s); {len(self.gone)} already gone"]
        out += [f"  kept {uri}: {why}" for uri, why in self.kept]
        if self.runs:
            tally: dict[str, int] = {}
            for outcome in self.runs:
                tally[outcome.outcome] = tally.get(outcome.outcome, 0) + 1
            out.append("  runs: " + ", ".join(f"{count} {what}" for what, count in sorted(tally.items())))
            out += [f"  {o.target}: {o.outcome}: {o.detail}" for o in self.runs if o.outcome == "kept"]
        return out


def clean(
    plan_dir: str | os.PathLike[str],
    *,
    runs: bool = False,
    dry_run: bool = False,
    refresh: bool = True,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> CleanReport:
    """Remove the plan's staged objects (and with ``runs`` its HealthOmics runs) once every sample has ended."""
    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    ctx = access.open(plan_dir, Options(), progress=progress, create_ledger=False)
    try:
        spec = get_backend(ctx.manifest.backend)
        if submitting(ctx.plan.path):
            raise InputError(f"{ctx.plan.path}: a `planner submit` of this plan is running; clean removes nothing now")
        require_settled(ctx, ask=True)  # a batch an interrupted submit started may read a staged shard
        table = _status(ctx, refresh)
        if not settled(table, spec.final_states):
            moving = table.filter(
                ~table.get_column("state").is_in(list(spec.final_states | {"DELETED"})).fill_null(False)
            )
            raise InputError(
                f"{moving.height:,} samples may still be running (e.g. {moving.get_column('id')[0]}); clean removes "
                "nothing a run may still read: wait for them, or `planner cancel` first"
            )
        report = CleanReport(ctx.plan_id, dry_run)
        staged = ctx.ledger.all_staged()
        if staged:
            s3 = ctx.clients.get("s3")
            owner = ctx.expected_bucket_owner()  # a bucket of the same name in another account is not ours
            for item in staged:
                _remove(s3, item, report, dry_run, owner)
        if runs:
            report.runs = backend_class(ctx.manifest.backend)(ctx).delete_runs(dry_run)
        if not dry_run:
            ctx.ledger.record_event("clean", report.to_json())
        return report
    finally:
        ctx.ledger.close()


def _remove(s3: Any, item: Staged, report: CleanReport, dry_run: bool, owner: str | None) -> None:
    mine = {"ExpectedBucketOwner": owner} if owner else {}
    try:
        head = s3.head_object(Bucket=item.bucket, Key=item.key, **mine)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            report.gone.append(item.uri)
            return
        if is_access_denied(exc):  # kept, and the rest still cleaned: one refusal need not stop them
            report.kept.append((item.uri, _refused(exc, owner)))
            return
        raise SubmissionError(f"{item.uri}: cannot check the object: {exc}") from exc
    except BotoCoreError as exc:
        raise SubmissionError(f"{item.uri}: cannot reach S3: {exc}") from exc
    if head.get("ETag") != item.etag:
        report.kept.append((item.uri, f"its ETag is {head.get('ETag')}, not the {item.etag} staged: not this plan's"))
        return
    report.removed.append(item.uri)
    if dry_run:
        return
    params: dict[str, Any] = {"Bucket": item.bucket, "Key": item.key, **mine}
    if item.version_id and item.version_id != "null":
        params["VersionId"] = item.version_id  # the version this plan wrote, not a newer one
    try:
        s3.delete_object(**params)
    except (ClientError, BotoCoreError) as exc:
        report.removed.pop()
        report.kept.append((item.uri, f"could not be removed: {exc}"))


def _refused(exc: ClientError, owner: str | None) -> str:
    code = error_code(exc) or "403"
    return (
        f"S3 refused HeadObject ({code}): it may be gone already (without s3:ListBucket S3 answers 403, "
        "not 404, for a missing object)"
        + (f", the bucket may not be owned by account {owner}" if owner else "")
        + ", or these credentials lack s3:GetObject on it (see the clean document of `planner policy PLAN`)"
    )
