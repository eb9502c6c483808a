"""AWS HealthOmics StartRunBatch: up to 100,000 runs that share one defaultRunSetting.

Limits (seeds/001): inlineSettings holds at most 100 runs; s3UriSettings names a
JSON array of at most 100,000 runs and 6 GB, whose ETag the service records (the
batch fails if the file changes).  ``parameters`` and ``runTags`` merge per key with
the run's keys winning; the service does that merge, so shards carry only each
row's own settings and ``plan.json`` carries ``defaultRunSetting``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from planner.backends.base import (
    ALREADY_FINAL,
    BY_EARLIER_CANCEL,
    CANCELLED,
    NOT_CANCELLED,
    STOPPING,
    Backend,
    CancelOutcome,
    CancelReport,
)
from planner.backends.healthomics import (
    FINAL,
    OUTCOMES,
    conflict,
    explain,
    get_runs,
    list_runs,
    not_found,
    reasons_to_ask,
)
from planner.core.ledger import SampleState
from planner.core.model import SCALAR_TYPES, check_shape, operation_input, required_problems, rule_for
from planner.core.progress import Tracker
from planner.core.shard import ShardInfo
from planner.core.spec import BackendSpec, RoutedField
from planner.engine.engine import Call, Created, Phase, model_check
from planner.errors import Problem, SubmissionError, setting

MAX_INLINE_RUNS = 100
MAX_S3_RUNS = 100_000
MAX_S3_BYTES = 6_000_000_000
MAX_RUN_TAGS = 50

_INPUT = operation_input("omics", "StartRunBatch")
_DEFAULT = _INPUT.members["defaultRunSetting"]
_INLINE = _INPUT.members["batchRunSettings"].members["inlineSettings"].member
_TAGS = _INLINE.members["runTags"]
# What one run of a batch may set: the scalar members of inlineSettings, as the model has them
# (runSettingId is the sample id; parameters and runTags are the per-key maps).
_PER_RUN = [n for n, shape in _INLINE.members.items() if shape.type_name in SCALAR_TYPES and n != "runSettingId"]
# Everything else the batch takes (defaultRunSetting's own fields, and engineSettings, a JSON value a
# run would replace whole, "Overrides defaultRunSetting.engineSettings for this run" in the model) is set
# in [run].
_REQUEST_ONLY = frozenset(_DEFAULT.members) - set(_PER_RUN) - {"parameters", "runTags"}

# outputUri "must begin with s3://" (seeds/001); the model's pattern allows any text.
_OVERRIDES = {"outputUri": rule_for("outputUri", _DEFAULT.members["outputUri"]).with_limits(prefix="s3://")}


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_DEFAULT, run, "", _OVERRIDES)
    found += required_problems(_DEFAULT, run, "", set(), by_row=False)  # workflowId and roleArn cannot come from a row
    request = {k: v for k, v in submission.items() if k in ("batchName", "tags")}
    found += check_shape(_INPUT, request, "")
    if len(run.get("runTags", {}) or {}) > MAX_RUN_TAGS:
        found.append(Problem(None, None, "runTags", None, "max-tags", f"at most {MAX_RUN_TAGS} run tags per run"))
    if run.get("workflowType") == "READY2RUN":  # model doc of workflowType; the User Guide's batch prerequisites
        found.append(
            Problem(
                None,
                None,
                "workflowType",
                "READY2RUN",
                "ready2run",
                f"batch runs are not supported with READY2RUN workflows: plan with {setting('backend', 'omics-run')}",
            )
        )
    return found


SPEC = BackendSpec(
    name="omics-batch",
    title="AWS HealthOmics StartRunBatch",
    id_field="runSettingId",
    id_rule=rule_for("runSettingId", _INLINE.members["runSettingId"]),
    fields={
        name: RoutedField((name,), _OVERRIDES.get(name) or rule_for(name, _INLINE.members[name])) for name in _PER_RUN
    },
    request_only=_REQUEST_ONLY,
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

# The model's BatchStatus, all eleven values (the User Guide's "Batch runs" page says what each means):
# StartRunBatch answers CREATING; the batch then moves through PENDING, SUBMITTING and INPROGRESS to PROCESSED,
# or FAILED before it could create runs.  CancelRunBatch and DeleteRunBatch are asynchronous: STOPPING ends
# CANCELLED, RUNS_DELETING ends RUNS_DELETED or RUNS_DELETE_FAILED, and while either is under way the service
# answers ConflictException to another ("only one cancel or delete operation per batch is allowed at a time").
BATCH_STARTING = frozenset({"CREATING", "PENDING", "SUBMITTING", "INPROGRESS"})
BATCH_OPERATING = frozenset({"STOPPING", "RUNS_DELETING"})
BATCH_ENDED = frozenset({"PROCESSED", "FAILED", "CANCELLED", "RUNS_DELETED", "RUNS_DELETE_FAILED"})
# CancelRunBatch: "Cancel is only allowed on batches in PENDING, SUBMITTING, or INPROGRESS state" (model doc).
BATCH_CANCELLABLE = frozenset({"PENDING", "SUBMITTING", "INPROGRESS"})
# DeleteRunBatch: "Delete is only allowed on batches in PROCESSED or CANCELLED state" (model doc).
BATCH_RUNS_DELETABLE = frozenset({"PROCESSED", "CANCELLED"})
# Past every cancel: ended, or deleting the runs of a batch that had ended.
BATCH_FINAL = BATCH_ENDED | {"RUNS_DELETING"}
# GetBatch's runSummary, by the run status each count is of.
RUN_COUNTS = {
    "pendingRunCount": "PENDING",
    "startingRunCount": "STARTING",
    "runningRunCount": "RUNNING",
    "stoppingRunCount": "STOPPING",
    "completedRunCount": "COMPLETED",
    "deletedRunCount": "DELETED",
    "failedRunCount": "FAILED",
    "cancelledRunCount": "CANCELLED",
}


def request_id(plan_id: str, index: int) -> str:
    return f"planner-{plan_id}-{index:05d}"


def batch_name(submission: dict[str, Any], plan_id: str, index: int, count: int) -> str:
    base = str(submission.get("batchName") or f"planner-{plan_id[:12]}")
    if count == 1:
        return base
    suffix = f"-{index + 1}of{count}"
    return base[: 64 - len(suffix)] + suffix


class OmicsBatch(Backend):
    spec = SPEC

    def phases(self) -> Iterator[Phase]:
        shards = self.ctx.manifest.shards
        yield Phase("StartRunBatch", "batch", (self._call(s) for s in shards), total=len(shards), ordered=True)

    def _call(self, shard: ShardInfo) -> Call:
        manifest = self.ctx.manifest
        token = request_id(manifest.plan_id, shard.index)

        def build() -> dict[str, Any]:
            request: dict[str, Any] = {
                "batchName": batch_name(manifest.submission, manifest.plan_id, shard.index, len(manifest.shards)),
                "requestId": token,
                "defaultRunSetting": manifest.defaults,
            }
            if manifest.submission.get("tags"):
                request["tags"] = manifest.submission["tags"]
            if shard.mode == "inline":
                self.ctx.plan.check_shard(shard)  # not staged, so not checked by S3: check it here
                request["batchRunSettings"] = {"inlineSettings": self.ctx.plan.entries(shard)}
            elif self.ctx.dry_run:
                where = self.ctx.staging_location()
                request["batchRunSettings"] = {"s3UriSettings": where.uri(manifest.plan_id, shard.sha256)}
            else:
                staged = self.ctx.ledger.staged(shard.index)
                if staged is None:
                    raise SubmissionError(f"shard {shard.index} is not staged; staging must come first")
                staged = self.ctx.stager.verify(staged)  # the service fails the batch if the file changed
                request["batchRunSettings"] = {"s3UriSettings": staged.uri}
            return request

        def send(request: dict[str, Any]) -> Created:
            response = dict(self.ctx.clients.get("omics").start_run_batch(**request))
            response.pop("ResponseMetadata", None)
            # A requestId the service has seen is answered with the batch made then; one that has
            # moved past PENDING was made by an earlier submission of this plan, not by this call.
            existed = response.get("status") not in (None, "PENDING", "CREATING")
            return Created(response["id"], response, uuid=response.get("uuid"), existed=existed)

        return Call(
            key=f"StartRunBatch:{shard.index:05d}",
            operation="StartRunBatch",
            label=f"shard {shard.index}",
            covers=lambda: self.places(shard),
            build=build,
            send=send,
            token=token,
            shard=shard.index,
            where={"shard": shard.index},
            check=model_check("omics", "StartRunBatch"),
        )

    # Status: GetBatch per batch, and lists only for what moved.
    #
    # A batch whose GetBatch (status and counts) is what the last refresh saw has not
    # moved: nothing more is asked.  Otherwise ListRunsInBatch maps samples to runs
    # (while some sample has none yet), and the runs whose state may have changed
    # (those not yet final) are placed by elimination: ListRuns(batchId, status) for
    # each status they may now be in, cheapest first, all but the largest, which
    # takes the rest.  A plan whose runs have all finished costs one GetBatch a batch.
    # Of the runs a refresh finds newly FAILED in a batch, at most REASONS_PER_GROUP are
    # asked their reason (GetRun); the ledger lists the others as unasked (`status --why`).

    def refresh(self) -> None:
        omics = self.ctx.clients.get("omics")
        known = _Known(self.ctx.ledger)  # read from the ledger only once a batch has moved
        for submission in self.ctx.ledger.submissions("done", kind="StartRunBatch"):
            if submission.remote_id is not None and submission.shard is not None:
                self._refresh_batch(
                    omics, submission.key, submission.remote_id, submission.shard, known, submission.remote_summary
                )

    def _refresh_batch(
        self,
        omics: Any,
        key: str,
        batch_id: str,
        shard: int,
        known: _Known,
        seen: dict[str, Any] | None,
    ) -> None:
        ledger = self.ctx.ledger
        try:
            batch = self.ctx.call(f"GetBatch {batch_id}", omics.get_batch, batchId=batch_id)
        except SubmissionError as exc:
            if not not_found(exc):
                raise
            self._mark_deleted(shard, known, f"batch {batch_id} was deleted (it is no longer in HealthOmics)")
            ledger.remote_seen(key, "DELETED", None)
            return
        summary = {
            "status": batch.get("status"),
            "runSummary": batch.get("runSummary") or {},
            "submissionSummary": batch.get("submissionSummary") or {},
        }
        if summary == seen:
            return  # nothing moved since the last look
        rows = {p.id: known.get(p.id) or SampleState(p.id, p.shard, p.position) for p in self.places(shard)}
        self._map_runs(omics, batch_id, rows, summary["submissionSummary"])
        unasked: list[str] = []
        self._place_runs(omics, batch_id, rows, summary["runSummary"], unasked)
        if summary["status"] in ("FAILED", "CANCELLED"):
            # Samples the batch never submitted share its fate.
            reason = batch.get("failureReason") or f"batch {batch_id} {str(summary['status']).lower()}"
            for sample, row in rows.items():
                if row.remote_id is None and row.submission_status in (None, "SUBMITTED"):
                    rows[sample] = row._replace(state=summary["status"], reason=reason)
        elif summary["status"] == "STOPPING":
            # A cancel under way: every sample not yet final is being stopped, until GetBatch shows the end.
            for sample, row in rows.items():
                if row.state not in FINAL and row.submission_status != "FAILED":
                    rows[sample] = row._replace(state="STOPPING", reason=f"batch {batch_id} is being cancelled")
        ledger.upsert_samples(rows.values())
        ledger.reasons_unasked(unasked)
        for sample, row in rows.items():
            known[sample] = row
        ledger.remote_seen(key, summary["status"], summary)

    def _map_runs(self, omics: Any, batch_id: str, rows: dict[str, SampleState], submitted: dict[str, Any]) -> None:
        """Which run each sample got (ListRunsInBatch), while some sample has none yet."""
        processed = int(submitted.get("successfulStartSubmissionCount") or 0) + int(
            submitted.get("failedStartSubmissionCount") or 0
        )
        mapped = sum(1 for r in rows.values() if r.remote_id is not None or r.submission_status == "FAILED")
        if processed <= mapped:
            return
        params: dict[str, Any] = {"batchId": batch_id}
        pages = -(-processed // 100)  # the service's default page holds 100 runs
        with Tracker(self.ctx.progress, f"ListRunsInBatch {batch_id}", "page", pages) as bar:
            self._list_runs_in_batch(omics, batch_id, rows, params, bar)

    def _list_runs_in_batch(
        self, omics: Any, batch_id: str, rows: dict[str, SampleState], params: dict[str, Any], bar: Tracker
    ) -> None:
        while True:
            page = self.ctx.call(f"ListRunsInBatch {batch_id}", omics.list_runs_in_batch, **params)
            bar.advance()
            for item in page.get("runs", []):
                row = rows.get(item.get("runSettingId"))
                if row is None:
                    continue
                failed = item.get("submissionStatus") == "FAILED"
                reason = item.get("submissionFailureMessage") or item.get("submissionFailureReason")
                rows[row.id] = row._replace(
                    remote_id=item.get("runId") or row.remote_id,
                    remote_uuid=item.get("runInternalUuid") or row.remote_uuid,
                    submission_status=item.get("submissionStatus") or row.submission_status,
                    reason=reason if failed else row.reason,
                )
            token = page.get("nextToken")
            if not token:
                return
            params["startingToken"] = token

    def _place_runs(
        self, omics: Any, batch_id: str, rows: dict[str, SampleState], summary: dict[str, Any], unasked: list[str]
    ) -> None:
        counts = {state: int(summary.get(name) or 0) for name, state in RUN_COUNTS.items()}
        by_run = {r.remote_id: r for r in rows.values() if r.remote_id is not None}
        held = dict.fromkeys(counts, 0)
        for row in by_run.values():
            if row.state in held:
                held[row.state] += 1
        if held == counts:
            return
        # Runs that may have moved: every one not yet final (and the final ones too when
        # runs were deleted, since a finished run can still become DELETED).
        moving = {run for run, row in by_run.items() if row.state not in FINAL or counts["DELETED"] != held["DELETED"]}
        settled = dict.fromkeys(counts, 0)
        for run, row in by_run.items():
            if run not in moving and row.state in settled:
                settled[row.state] += 1
        needed = {state: counts[state] - settled[state] for state in counts if counts[state] - settled[state] > 0}
        found: dict[str, str] = {}
        listed = sorted(needed, key=lambda state: counts[state])
        infer = None
        if listed and sum(needed.values()) == len(moving):
            # A deleted run is listed nowhere, so DELETED can only be inferred; else the costliest list is.
            infer = "DELETED" if "DELETED" in needed else listed[-1]
            listed.remove(infer)
        elif "DELETED" in listed:
            listed.remove("DELETED")  # nothing lists deleted runs: those left over are asked with GetRun
        for state in listed:
            for run in list_runs(
                self.ctx, omics, f"ListRuns of batch {batch_id} ({state})", batchId=batch_id, status=state
            ):
                if run in moving:
                    found[run] = state
        if infer is not None:
            for run in moving:
                found.setdefault(run, infer)
        # Runs that no list placed (the counts did not add up) are asked where they are.  Of the runs newly
        # FAILED, a few are asked why (ListRuns items carry no reason, and GetRun's rate quota makes one call
        # per failed run hours for a large batch): the rest are left unasked, for `status --why`.
        unplaced = [run for run in moving if run not in found]
        newly_failed = [run for run, state in found.items() if state == "FAILED" and by_run[run].state != "FAILED"]
        asked = reasons_to_ask(newly_failed)
        details = get_runs(self.ctx, omics, {run: by_run[run].remote_uuid for run in asked + unplaced})
        unasked.extend(by_run[run].id for run in newly_failed if run not in details)
        for run in unplaced:
            found[run] = details[run].status
        for run, state in found.items():
            row = by_run[run]
            detail = details.get(run)
            if row.state in OUTCOMES and (detail.status if detail else state) == "DELETED":
                continue  # deleted after it ended (planner clean --runs): its outcome is what retry needs
            rows[row.id] = row._replace(
                state=detail.status if detail else state,
                reason=detail.reason if detail else row.reason,
                log=detail.log if detail else row.log,
            )

    def explain(self, samples: list[SampleState]) -> list[SampleState]:
        return explain(self.ctx, samples)

    def _mark_deleted(self, shard: int, known: _Known, reason: str) -> None:
        rows = []
        for place in self.places(shard):
            row = known.get(place.id) or SampleState(place.id, place.shard, place.position)
            if row.state not in FINAL or row.state is None:
                rows.append(row._replace(state="DELETED", reason=reason))
        self.ctx.ledger.upsert_samples(rows)

    # Cancel: CancelRunBatch for each batch still cancellable.  The cancel is asynchronous:
    # the batch is STOPPING until it is CANCELLED, and only then does submissionSummary say how
    # many of its runs could not be cancelled.  So a batch asked to stop is reported "stopping",
    # a STOPPING one is not asked again (ConflictException: one cancel or delete at a time),
    # and an ended one is read: CANCELLED with failed cancels is "not cancelled".  Each CancelRunBatch
    # is journaled first (asking_to_cancel): a batch found STOPPING or CANCELLED that an earlier cancel,
    # killed before it could report, had asked is counted as cancelled by that cancel.

    def cancel(self) -> CancelReport:
        omics = self.ctx.clients.get("omics")
        report = self.report()
        asked = self.cancels_asked()
        for submission in self.ctx.ledger.submissions("done", kind="StartRunBatch"):
            if submission.remote_id is None or submission.shard is None:
                continue
            batch_id = submission.remote_id
            target = f"batch {batch_id} (shard {submission.shard})"
            samples = self.ctx.manifest.shard(submission.shard).entries
            batch = self._get_batch(omics, batch_id)
            if batch is None or str(batch.get("status")) not in BATCH_CANCELLABLE:
                report.outcomes.append(_cancel_outcome(target, batch, samples, batch_id in asked))
                continue
            try:
                self.asking_to_cancel(batch_id)
                self.ctx.call(f"CancelRunBatch {batch_id}", omics.cancel_run_batch, batchId=batch_id)
            except SubmissionError as exc:
                if not conflict(exc):
                    report.outcomes.append(CancelOutcome(target, NOT_CANCELLED, str(exc), samples))
                    continue
                # The batch moved on meanwhile (ended, or another cancel or delete is under way): say where it is.
                found = self._get_batch(omics, batch_id)
                report.outcomes.append(_cancel_outcome(target, found, samples, batch_id in asked))
                continue
            report.outcomes.append(CancelOutcome(target, STOPPING, "STOPPING", samples))
        return report

    def _get_batch(self, omics: Any, batch_id: str) -> dict[str, Any] | None:
        """GetBatch, or None for a deleted batch."""
        try:
            return dict(self.ctx.call(f"GetBatch {batch_id}", omics.get_batch, batchId=batch_id))
        except SubmissionError as exc:
            if not not_found(exc):
                raise
            return None

    def delete_runs(self, dry_run: bool) -> list[CancelOutcome]:
        """DeleteRunBatch for each of the plan's batches that has finished (it frees the retained-run quota)."""
        omics = self.ctx.clients.get("omics")
        outcomes = []
        for submission in self.ctx.ledger.submissions("done", kind="StartRunBatch"):
            if submission.remote_id is None or submission.shard is None:
                continue
            batch_id, samples = submission.remote_id, self.ctx.manifest.shard(submission.shard).entries
            target = f"batch {batch_id} (shard {submission.shard})"
            batch = self._get_batch(omics, batch_id)
            if batch is None or str(batch.get("status")) not in BATCH_RUNS_DELETABLE:
                outcomes.append(_delete_outcome(target, batch, samples))
            elif dry_run:
                outcomes.append(CancelOutcome(target, "would delete", None, samples))
            else:
                try:
                    self.ctx.call(f"DeleteRunBatch {batch_id}", omics.delete_run_batch, batchId=batch_id)
                except SubmissionError as exc:
                    if conflict(exc):  # another cancel or delete got there first: say where the batch is
                        outcomes.append(_delete_outcome(target, self._get_batch(omics, batch_id), samples))
                    else:
                        outcomes.append(CancelOutcome(target, "kept", str(exc), samples))
                    continue
                # Asynchronous: RUNS_DELETING until GetBatch shows RUNS_DELETED (or RUNS_DELETE_FAILED).
                outcomes.append(CancelOutcome(target, "deleting", "RUNS_DELETING", samples))
        return outcomes


def _cancel_outcome(target: str, batch: dict[str, Any] | None, samples: int, asked_before: bool) -> CancelOutcome:
    """What a cancel finds of a batch it does not (or no longer can) ask to stop.

    ``asked_before``: an earlier `planner cancel` of this plan, killed before it could report, had asked
    CancelRunBatch for this batch; a batch found STOPPING or CANCELLED is counted as cancelled by it."""
    if batch is None:
        return CancelOutcome(target, ALREADY_FINAL, "deleted", samples)
    state = str(batch.get("status"))
    refused = int((batch.get("submissionSummary") or {}).get("failedCancelSubmissionCount") or 0)
    if state == "CANCELLED" and refused:  # read once CANCELLED, whichever cancel asked
        return CancelOutcome(target, NOT_CANCELLED, f"{refused} of its runs could not be cancelled", samples)
    if asked_before and state in ("STOPPING", "CANCELLED"):
        return CancelOutcome(target, CANCELLED, BY_EARLIER_CANCEL, samples)
    if state == "STOPPING":
        return CancelOutcome(target, STOPPING, state, samples)
    if state == "CREATING":  # not yet cancellable (model doc of CancelRunBatch); PENDING follows shortly
        return CancelOutcome(target, NOT_CANCELLED, "the batch is still CREATING: cancel again in a moment", samples)
    return CancelOutcome(target, ALREADY_FINAL, state, samples)


def _delete_outcome(target: str, batch: dict[str, Any] | None, samples: int) -> CancelOutcome:
    """What ``clean --runs`` finds of a batch whose runs it does not (or no longer can) ask to delete."""
    if batch is None:
        return CancelOutcome(target, "already deleted", "the batch is gone", samples)
    state = str(batch.get("status"))
    if state == "RUNS_DELETED":
        return CancelOutcome(target, "already deleted", state, samples)
    if state == "RUNS_DELETING":
        return CancelOutcome(target, "deleting", state, samples)
    if state == "RUNS_DELETE_FAILED":
        failed = int((batch.get("submissionSummary") or {}).get("failedDeleteSubmissionCount") or 0)
        return CancelOutcome(target, "kept", f"{state}: {failed} of its runs could not be deleted", samples)
    return CancelOutcome(target, "kept", f"{state}: only a finished batch's runs are deleted", samples)


class _Known(dict[str, SampleState]):
    """The ledger's samples by id, read on first use."""

    def __init__(self, ledger: Any):
        super().__init__()
        self.ledger, self.loaded = ledger, False

    def _load(self) -> None:
        if not self.loaded:
            self.loaded = True
            self.update((s.id, s) for s in self.ledger.samples())

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def __setitem__(self, key: str, value: SampleState) -> None:
        self._load()
        super().__setitem__(key, value)


BACKEND = OmicsBatch
