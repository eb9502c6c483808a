"""AWS HealthOmics StartRun: one request per run.

Every StartRun field except ``requestId`` may be set per sample by a column of the
same name; ``parameters`` and ``tags`` merge per key over the defaults.  The
``requestId`` is derived from the plan id and the sample id at submit time, never
random, so a resumed submit cannot start a second run (seeds/000).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from planner.backends.base import (
    ALREADY_FINAL,
    BY_EARLIER_CANCEL,
    CANCELLED,
    NOT_CANCELLED,
    Backend,
    CancelOutcome,
    CancelReport,
)
from planner.backends.healthomics import ACTIVE, FINAL, conflict, get_runs, gone_or_reused, list_runs, not_found
from planner.core.model import SCALAR_TYPES, check_shape, operation_input, rule_for
from planner.core.spec import BackendSpec, RoutedField
from planner.engine.engine import Call, Created, Phase, Place, model_check
from planner.errors import Problem, SubmissionError

MAX_TAGS = 50

_INPUT = operation_input("omics", "StartRun")
_TAGS = _INPUT.members["tags"]
_OVERRIDES = {"outputUri": rule_for("outputUri", _INPUT.members["outputUri"]).with_limits(prefix="s3://")}
_PER_RUN = [
    name
    for name, shape in _INPUT.members.items()
    if shape.type_name in SCALAR_TYPES and name not in ("requestId", "runId")
]
# The request's other members (engineSettings, sessionPolicy...) are set in [run], not per sample.
_REQUEST_ONLY = frozenset(_INPUT.members) - set(_PER_RUN) - {"parameters", "tags"}


def _check_defaults(run: dict[str, Any], submission: dict[str, Any], sheet_fields: set[str]) -> list[Problem]:
    found = check_shape(_INPUT, run, "", _OVERRIDES)
    if "requestId" in run:
        found.append(
            Problem(None, None, "requestId", None, "derived", "is derived per sample by the planner; remove it")
        )
    return found


SPEC = BackendSpec(
    name="omics-run",
    title="AWS HealthOmics StartRun",
    id_field=None,
    id_rule=None,
    fields={
        name: RoutedField((name,), _OVERRIDES.get(name) or rule_for(name, _INPUT.members[name])) for name in _PER_RUN
    },
    request_only=_REQUEST_ONLY,
    parameters_path=("parameters",),
    tags_path=("tags",),
    tag_key_rule=rule_for("tags key", _TAGS.key),
    tag_value_rule=rule_for("tags value", _TAGS.value),
    max_tags=MAX_TAGS,
    required=("outputUri", "roleArn"),
    check_defaults=_check_defaults,
    run_shape=_INPUT,
)


# Submission: one StartRun per sample, with bounded concurrency and a rate limit.
# The requestId is derived from the plan id and the sample id, so a resumed submit
# gets the same run back from the service (botocore would otherwise fill in a
# random token, which defeats deduplication after a crash).

LIST_INSTEAD_OF_GET = 200  # above this many moving runs, lists of the active ones beat a GetRun each


def request_id(plan_id: str, sample: str) -> str:
    return f"planner-{plan_id}-{hashlib.sha256(sample.encode()).hexdigest()[:32]}"


class OmicsRun(Backend):
    spec = SPEC

    def phases(self) -> Iterator[Phase]:
        yield Phase("StartRun", "run", self._calls(), total=self.ctx.manifest.runs)

    def _calls(self) -> Iterator[Call]:
        for shard in self.ctx.manifest.shards:
            if not self.ctx.dry_run:
                self.ctx.plan.check_shard(shard)  # not staged, so not checked by S3: check it here
            ids = self.ids_by_position(shard).to_list()
            for position, (sample, line) in enumerate(zip(ids, self.ctx.plan.lines(shard), strict=True)):
                yield self._call(Place(sample, shard.index, position), line)

    def _call(self, place: Place, line: bytes) -> Call:
        token = request_id(self.ctx.plan_id, place.id)

        def build() -> dict[str, Any]:
            return dict(orjson.loads(line), requestId=token)

        def send(request: dict[str, Any]) -> Created:
            response = dict(self.ctx.clients.get("omics").start_run(**request))
            response.pop("ResponseMetadata", None)
            # The service answers a requestId it has seen with the run made then (seeds/000):
            # one that has moved past PENDING was not started by this call.
            existed = response.get("status") not in (None, "PENDING")
            return Created(response["id"], response, response.get("status"), response.get("uuid"), existed=existed)

        return Call(
            key=f"StartRun:{place.id}",
            operation="StartRun",
            label=f"sample {place.id}",
            covers=lambda: [place],
            build=build,
            send=send,
            token=token,
            shard=place.shard,
            sample=place.id,
            one_to_one=True,
            where={"sample": place.id},
            check=model_check("omics", "StartRun"),
        )

    def refresh(self) -> None:
        """Each moving run's state.  A run the ledger holds as final is never asked about again;
        a few moving runs are asked with GetRun each, many by listing the account's active runs
        (PENDING, STARTING, RUNNING, STOPPING: bounded by how many runs can be active, not by
        how many the account keeps) and a GetRun for each that has left them, once, at its end."""
        omics = self.ctx.clients.get("omics")
        moving = {s.remote_id: s for s in self.ctx.ledger.samples() if s.remote_id and s.state not in FINAL}
        if not moving:
            return
        active: dict[str, str] = {}
        if len(moving) > LIST_INSTEAD_OF_GET:
            for state in ACTIVE:
                for run in list_runs(self.ctx, omics, f"ListRuns ({state})", status=state):
                    if run in moving:
                        active[run] = state
        details = get_runs(self.ctx, omics, {run: row.remote_uuid for run, row in moving.items() if run not in active})
        rows = []
        for run, row in moving.items():
            detail = details.get(run)
            if detail is None:
                rows.append(row._replace(state=active[run]))
            else:
                rows.append(
                    row._replace(state=detail.status, reason=detail.reason, log=detail.log, remote_uuid=detail.uuid)
                )
        self.ctx.ledger.upsert_samples(rows)

    def cancel(self) -> CancelReport:
        """CancelRun for every run not yet final (states refreshed first); one that finished
        meanwhile (ConflictException) or was deleted is reported as such, and the rest go on."""
        self.refresh()
        omics = self.ctx.clients.get("omics")
        report = self.report()
        samples = self.ctx.ledger.samples()
        asked = self.cancels_asked()  # by a cancel killed before it could report them
        earlier = {s.id for s in samples if s.remote_id in asked and s.state in ("STOPPING", "CANCELLED")}
        for row in samples:
            if row.id in earlier:
                target = f"run {row.remote_id} (sample {row.id})"
                report.outcomes.append(CancelOutcome(target, CANCELLED, BY_EARLIER_CANCEL))
        final = sum(1 for s in samples if s.remote_id and s.state in FINAL and s.id not in earlier)
        if final:
            report.outcomes.append(CancelOutcome(f"{final} runs", ALREADY_FINAL, "had finished", final))
        moving = [s for s in samples if s.remote_id and s.state not in FINAL and s.id not in earlier]

        def stop(row: Any) -> CancelOutcome:
            target = f"run {row.remote_id} (sample {row.id})"
            if len(moving) > LIST_INSTEAD_OF_GET:  # states came from listings, which carry no uuid: check it
                gone = gone_or_reused(self.ctx, omics, row.remote_id, row.remote_uuid)
                if gone is not None:
                    return CancelOutcome(target, ALREADY_FINAL, gone)
            try:
                self.asking_to_cancel(str(row.remote_id))
                self.ctx.call(f"CancelRun {row.remote_id}", omics.cancel_run, id=row.remote_id)
            except SubmissionError as exc:
                if conflict(exc):
                    return CancelOutcome(target, ALREADY_FINAL, "finished before the cancel")
                if not_found(exc):
                    return CancelOutcome(target, ALREADY_FINAL, "deleted")
                return CancelOutcome(target, NOT_CANCELLED, str(exc))
            return CancelOutcome(target, CANCELLED)

        report.outcomes += self.ctx.map(stop, moving, task="CancelRun", unit="run")
        return report

    def delete_runs(self, dry_run: bool) -> list[CancelOutcome]:
        """DeleteRun for each of the plan's runs that has ended (it frees the retained-run quota), once GetRun
        shows the id still holds this sample's run (ids are reused after deletion)."""
        omics = self.ctx.clients.get("omics")
        rows = [s for s in self.ctx.ledger.samples() if s.remote_id]

        def delete(row: Any) -> CancelOutcome:
            target = f"run {row.remote_id} (sample {row.id})"
            if row.state == "DELETED":
                return CancelOutcome(target, "already deleted")
            if row.state not in FINAL:
                return CancelOutcome(target, "kept", f"{row.state}: only a run that has ended is deleted")
            if dry_run:
                return CancelOutcome(target, "would delete")
            gone = gone_or_reused(self.ctx, omics, row.remote_id, row.remote_uuid)  # DeleteRun names an id only
            if gone is not None:
                return CancelOutcome(target, "already deleted", gone)
            try:
                self.ctx.call(f"DeleteRun {row.remote_id}", omics.delete_run, id=row.remote_id)
            except SubmissionError as exc:
                if not_found(exc):
                    return CancelOutcome(target, "already deleted", "the run is gone")
                return CancelOutcome(target, "kept", str(exc))
            return CancelOutcome(target, "deleted")

        return self.ctx.map(delete, rows, task="DeleteRun", unit="run")


BACKEND = OmicsRun
