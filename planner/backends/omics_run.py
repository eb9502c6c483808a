"""AWS HealthOmics StartRun: one request per run.

Every StartRun field except ``requestId`` may be set per sample by a column of the
same name; ``parameters`` and ``tags`` merge per key over the defaults.  The
``requestId`` is derived from the plan id and the sample id at submit time, never
random, so a resumed submit cannot start a second run (seeds/000).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import polars as pl
from tqdm import tqdm

from ..errors import Problem
from ..model import SCALAR_TYPES, check_shape, operation_input, rule_for
from ..spec import BackendSpec, RoutedField

MAX_TAGS = 50

_INPUT = operation_input("omics", "StartRun")
_TAGS = _INPUT.members["tags"]
_OVERRIDES = {"outputUri": rule_for("outputUri", _INPUT.members["outputUri"]).with_limits(prefix="s3://")}
_PER_RUN = [
    name
    for name, shape in _INPUT.members.items()
    if shape.type_name in SCALAR_TYPES and name not in ("requestId", "runId")
]


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

LIST_INSTEAD_OF_GET = 200  # above this many runs, one ListRuns pass beats a GetRun each


def request_id(plan_id: str, sample: str) -> str:
    return f"planner-{plan_id}-{hashlib.sha256(sample.encode()).hexdigest()[:32]}"


def stage_indexes(manifest: dict[str, Any]) -> list[int]:
    return []  # StartRun takes its settings in the request itself


def _runs(ctx: Any) -> Iterator[tuple[str, int, int, str]]:
    """(sample, shard, position, run JSON) in plan order, read line by line."""
    samples = ctx.samples()
    for shard in ctx.manifest["shards"]:
        ids = samples.filter(pl.col("shard") == shard["index"]).sort("position").get_column("id").to_list()
        with open(os.path.join(ctx.plan_dir, shard["path"]), encoding="utf-8") as handle:
            next(handle)  # "["
            for position, (sample, line) in enumerate(zip(ids, handle)):
                yield sample, shard["index"], position, line.rstrip("\n").removesuffix(",")


def submit(ctx: Any) -> dict[str, Any]:
    from ..errors import SubmissionError
    from ..submit import paced, request_problems

    omics = None if ctx.dry_run else ctx.clients.get("omics")
    done = ctx.ledger.done_keys()
    pending = [run for run in _runs(ctx) if f"StartRun:{run[0]}" not in done]
    wait_turn = paced(ctx)
    failures: list[str] = []

    def start(run: tuple[str, int, int, str]) -> None:
        sample, shard, position, text = run
        request = dict(orjson.loads(text), requestId=request_id(ctx.plan_id, sample))
        if ctx.dry_run:
            ctx.emit(
                {
                    "operation": "StartRun",
                    "sample": sample,
                    "problems": request_problems("omics", "StartRun", request),
                    "request": request,
                }
            )
            return
        key = f"StartRun:{sample}"
        wait_turn()
        ctx.ledger.intent(key, "StartRun", shard=shard, sample=sample, token=request["requestId"])
        try:
            response = ctx.call(f"StartRun for {sample}", omics.start_run, **request)
        except SubmissionError as exc:
            ctx.ledger.failure(key, str(exc))
            ctx.ledger.upsert_samples([(sample, shard, position, None, "FAILED", None, str(exc))])
            failures.append(f"{sample}: {exc}")
            return
        response.pop("ResponseMetadata", None)
        ctx.ledger.result(key, response["id"], response)
        ctx.ledger.upsert_samples([(sample, shard, position, response["id"], "SUCCESS", response.get("status"), None)])

    with tqdm(
        total=len(pending), unit="run", desc="StartRun", file=sys.stderr, disable=not ctx.progress, leave=False
    ) as bar:
        if ctx.dry_run:
            for run in pending:
                start(run)
        else:
            with ThreadPoolExecutor(max_workers=ctx.concurrency, thread_name_prefix="planner-startrun") as pool:
                for _ in pool.map(start, pending):
                    bar.update(1)
    if failures:
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise SubmissionError(
            f"{len(failures)} of {len(pending)} runs could not be started ({shown}); `planner status` lists them and `planner retry` plans them again"
        )
    return {
        "backend": SPEC.name,
        "plan_id": ctx.plan_id,
        "runs_started": len(pending),
        "runs_already_started": ctx.manifest["runs"] - len(pending),
        "runs": ctx.manifest["runs"],
    }


def refresh(ctx: Any) -> None:
    """Each started run's state: one ListRuns pass when many runs are still moving, else a
    GetRun each (on the submit's thread pool and rate).  A run the ledger already holds in
    a final state never changes again and is not asked about: a long ``status --watch``
    costs less as runs finish."""
    from ..submit import paced

    omics = ctx.clients.get("omics")
    settled = {row[0] for row in ctx.ledger.samples() if row[5] in SPEC.final_states}
    started = {
        s.sample: s.remote_id
        for s in ctx.ledger.submissions("done")
        if s.kind == "StartRun" and s.remote_id and s.sample not in settled
    }
    if not started:
        return
    states: dict[str, tuple[str, str | None]] = {}
    if len(started) > LIST_INSTEAD_OF_GET:
        wanted = set(started.values())
        for page in omics.get_paginator("list_runs").paginate():
            for item in page.get("items", []):
                if item["id"] in wanted:
                    states[item["id"]] = (item["status"], None)
    wait_turn = paced(ctx)

    def get(run_id: str) -> None:
        wait_turn()
        run = ctx.call(f"GetRun {run_id}", omics.get_run, id=run_id)
        states[run_id] = (run["status"], run.get("failureReason") or run.get("statusMessage"))

    missing = [run_id for run_id in started.values() if run_id not in states]
    with ThreadPoolExecutor(max_workers=ctx.concurrency, thread_name_prefix="planner-getrun") as pool:
        list(pool.map(get, missing))
    places = {
        sample: (shard, position)
        for sample, shard, position in ctx.samples().select("id", "shard", "position").iter_rows()
    }
    ctx.ledger.upsert_samples(
        (sample, *places[sample], run_id, "SUCCESS", states[run_id][0], states[run_id][1])
        for sample, run_id in started.items()
    )


def cancel(ctx: Any) -> int:
    omics = ctx.clients.get("omics")
    cancelled = 0
    states = {row[0]: row[5] for row in ctx.ledger.samples()}
    for submission in ctx.ledger.submissions("done"):
        if submission.kind != "StartRun" or not submission.remote_id:
            continue
        if states.get(submission.sample) in SPEC.final_states:
            continue
        ctx.call(f"CancelRun {submission.remote_id}", omics.cancel_run, id=submission.remote_id)
        cancelled += 1
    return cancelled
