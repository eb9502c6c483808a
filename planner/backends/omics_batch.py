"""AWS HealthOmics StartRunBatch: up to 100,000 runs that share one defaultRunSetting.

Limits (seeds/001): inlineSettings holds at most 100 runs; s3UriSettings names a
JSON array of at most 100,000 runs and 6 GB, whose ETag the service records (the
batch fails if the file changes).  ``parameters`` and ``runTags`` merge per key with
the run's keys winning; the service does that merge, so shards carry only each
row's own settings and ``plan.json`` carries ``defaultRunSetting``.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ..errors import Problem
from ..model import check_shape, operation_input, required_problems, rule_for
from ..spec import BackendSpec, RoutedField

MAX_INLINE_RUNS = 100
MAX_S3_RUNS = 100_000
MAX_S3_BYTES = 6_000_000_000
MAX_RUN_TAGS = 50

_INPUT = operation_input("omics", "StartRunBatch")
_DEFAULT = _INPUT.members["defaultRunSetting"]
_INLINE = _INPUT.members["batchRunSettings"].members["inlineSettings"].member
_TAGS = _INLINE.members["runTags"]

# outputUri "must begin with s3://" (seeds/001); the model's pattern allows any text.
_OVERRIDES = {"outputUri": rule_for("outputUri", _DEFAULT.members["outputUri"]).with_limits(prefix="s3://")}


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_DEFAULT, run, "", _OVERRIDES)
    found += required_problems(_DEFAULT, run, "", set())  # workflowId and roleArn cannot come from a row
    request = {k: v for k, v in submission.items() if k in ("batchName", "tags")}
    found += check_shape(_INPUT, request, "")
    if len(run.get("runTags", {}) or {}) > MAX_RUN_TAGS:
        found.append(Problem(None, None, "runTags", None, "max-tags", f"at most {MAX_RUN_TAGS} run tags per run"))
    return found


SPEC = BackendSpec(
    name="omics-batch",
    title="AWS HealthOmics StartRunBatch",
    id_field="runSettingId",
    id_rule=rule_for("runSettingId", _INLINE.members["runSettingId"]),
    fields={
        name: RoutedField((name,), _OVERRIDES.get(name) or rule_for(name, _INLINE.members[name]))
        for name in ("name", "outputUri", "priority", "outputBucketOwnerId")
    },
    parameters_path=("parameters",),
    tags_path=("runTags",),
    tag_key_rule=rule_for("runTags key", _TAGS.key),
    tag_value_rule=rule_for("runTags value", _TAGS.value),
    max_tags=MAX_RUN_TAGS,
    server_merge=True,
    required=("outputUri",),
    max_entries=MAX_S3_RUNS,
    max_bytes=MAX_S3_BYTES,
    inline_max=MAX_INLINE_RUNS,
    check_defaults=_check_defaults,
    run_shape=_DEFAULT,
    submission_keys=frozenset({"batchName", "tags"}),
)


# Submission: one StartRunBatch per shard.  The requestId is derived from the plan
# id and the shard index, so a repeated or resumed submit gets the same batch back
# from the service instead of a second one.


def request_id(plan_id: str, index: int) -> str:
    return f"planner-{plan_id}-{index:05d}"


def batch_name(manifest: dict[str, Any], index: int) -> str:
    count = len(manifest["shards"])
    base = str(manifest["submission"].get("batchName") or f"planner-{manifest['plan_id'][:12]}")
    if count == 1:
        return base
    suffix = f"-{index + 1}of{count}"
    return base[: 64 - len(suffix)] + suffix


def stage_indexes(manifest: dict[str, Any]) -> list[int]:
    return [s["index"] for s in manifest["shards"] if s["mode"] == "s3"]


def build_request(ctx: Any, shard: dict[str, Any], settings_uri: str | None) -> dict[str, Any]:
    manifest = ctx.manifest
    request: dict[str, Any] = {
        "batchName": batch_name(manifest, shard["index"]),
        "requestId": request_id(manifest["plan_id"], shard["index"]),
        "defaultRunSetting": manifest["defaults"],
    }
    if manifest["submission"].get("tags"):
        request["tags"] = manifest["submission"]["tags"]
    if shard["mode"] == "inline":
        request["batchRunSettings"] = {"inlineSettings": ctx.shard_runs(shard["index"])}
    else:
        request["batchRunSettings"] = {"s3UriSettings": settings_uri}
    return request


def _would_stage_at(ctx: Any, shard: dict[str, Any]) -> str:
    from ..staging import StagingPrefix

    location = StagingPrefix.parse(ctx.staging_uri or "s3://STAGING-BUCKET/")
    return f"s3://{location.bucket}/{location.key(ctx.plan_id, shard['sha256'])}"


def submit(ctx: Any) -> dict[str, Any]:
    from ..errors import SubmissionError
    from ..submit import request_problems

    omics = None if ctx.dry_run else ctx.clients.get("omics")
    samples = ctx.samples()
    created = reused = 0
    for shard in ctx.manifest["shards"]:
        index = shard["index"]
        key = f"StartRunBatch:{index:05d}"
        known = ctx.ledger.submission(key)
        if known is not None and known.state == "done":
            reused += 1
            continue
        staged = None
        if shard["mode"] == "s3":
            if ctx.dry_run:
                uri = _would_stage_at(ctx, shard)
            else:
                staged = ctx.ledger.staged(index)
                if staged is None:
                    raise SubmissionError(f"shard {index} is not staged; staging must come first")
                uri = ctx.stager.uri(staged)
        else:
            uri = None
        request = build_request(ctx, shard, uri)
        if ctx.dry_run:
            problems = request_problems("omics", "StartRunBatch", request)
            ctx.emit({"operation": "StartRunBatch", "shard": index, "problems": problems, "request": request})
            continue
        if staged is not None:
            ctx.stager.verify(staged)  # the service fails the batch if the file changed; refuse before that
        ctx.ledger.intent(key, "StartRunBatch", shard=index, token=request["requestId"])
        try:
            response = ctx.call(f"StartRunBatch for shard {index}", omics.start_run_batch, **request)
        except SubmissionError as exc:
            ctx.ledger.failure(key, str(exc))
            raise
        response.pop("ResponseMetadata", None)
        ctx.ledger.result(key, response["id"], response)
        created += 1
        rows = samples.filter(pl.col("shard") == index)
        ctx.ledger.upsert_samples(
            (sample, index, position, None, "SUBMITTED", None, None)
            for sample, position in rows.select("id", "position").iter_rows()
        )
    return {
        "backend": SPEC.name,
        "plan_id": ctx.plan_id,
        "batches_created": created,
        "batches_already_submitted": reused,
        "runs": ctx.manifest["runs"],
    }


def refresh(ctx: Any) -> None:
    """Map every runSettingId to its runId and state: GetBatch, ListRunsInBatch, ListRuns(batchId)."""
    omics = ctx.clients.get("omics")
    samples = ctx.samples()
    for submission in ctx.ledger.submissions("done"):
        if submission.kind != "StartRunBatch" or submission.remote_id is None:
            continue
        batch_id = submission.remote_id
        batch = ctx.call(f"GetBatch {batch_id}", omics.get_batch, batchId=batch_id)
        submitted: dict[str, tuple[str | None, str | None, str | None]] = {}
        for page in omics.get_paginator("list_runs_in_batch").paginate(batchId=batch_id):
            for item in page.get("runs", []):
                reason = item.get("submissionFailureMessage") or item.get("submissionFailureReason")
                submitted[item["runSettingId"]] = (item.get("runId"), item.get("submissionStatus"), reason)
        states: dict[str, str] = {}
        for page in omics.get_paginator("list_runs").paginate(batchId=batch_id):
            for item in page.get("items", []):
                states[item["id"]] = item["status"]
        rows = samples.filter(pl.col("shard") == submission.shard)
        updates = []
        for sample, position in rows.select("id", "position").iter_rows():
            run_id, submission_status, reason = submitted.get(sample, (None, None, None))
            state = states.get(run_id) if run_id else None
            if submission_status is None and batch.get("status") in ("FAILED", "CANCELLED"):
                state, reason = batch["status"], batch.get("failureReason") or f"batch {batch['status'].lower()}"
            updates.append((sample, submission.shard, position, run_id, submission_status, state, reason))
        ctx.ledger.upsert_samples(updates)


def cancel(ctx: Any) -> int:
    omics = ctx.clients.get("omics")
    cancelled = 0
    for submission in ctx.ledger.submissions("done"):
        if submission.kind == "StartRunBatch" and submission.remote_id:
            ctx.call(f"CancelRunBatch {submission.remote_id}", omics.cancel_run_batch, batchId=submission.remote_id)
            cancelled += 1
    return cancelled
