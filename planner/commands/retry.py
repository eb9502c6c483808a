"""``planner retry``: a new plan of the samples whose runs failed, were cancelled, or failed to
submit, each with exactly the settings it had in the original plan (``--set`` aside).

The entries are copied from the original shards, not re-planned from the sheet, so a
sheet edited since cannot change what is retried.  A retry is a new submission: its
plan id carries its lineage (the plan retried, and a fresh attempt id), so every
requestId, job name, run key and run name differs from every earlier attempt's and
the services start new runs, while submitting the same retry plan again still starts
nothing.  ``--set KEY=VALUE`` changes a setting for every retried run (a new
``workflowVersionName``, ``cacheId`` and ``cacheBehavior`` to resume from a HealthOmics
run cache, more storage), recorded in the new plan's ``sheet.retry_sets``.

The hand-over is recorded in the original plan's ledger (``Ledger.record_handover``), under
the original's lock and before the new plan is in place: a later `planner submit` of the
original sends nothing for those samples (it would run them a second time) and says which
plan runs them now.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import polars as pl

from planner.backends import get_backend
from planner.commands.status import status
from planner.core.defaults import load_defaults
from planner.core.ledger import Ledger
from planner.core.plandir import Manifest, PlanContent, PlanDirectory, atomic_directory, write_plan
from planner.core.progress import ProgressCallback, log
from planner.core.shard import ShardWriter
from planner.core.spec import BackendSpec
from planner.core.suggest import did_you_mean
from planner.core.validate import set_problems
from planner.engine.lock import plan_lock
from planner.errors import DefaultsError, InputError, NothingToRetry, ValidationError, setting

_BATCH = 10_000


def retry(
    plan_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    states: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    force: bool = False,
    refresh: bool = True,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Plan into ``out`` the samples of ``plan_dir`` whose run is in ``states`` (default: the
    backend's failed states) or whose submission failed.  The access keyword arguments are
    ``status``'s (sandbox, profile, region, ...), used to refresh the states first."""
    plan = PlanDirectory(plan_dir)
    manifest = plan.manifest
    spec = get_backend(manifest.backend)
    states = _states(states, spec)
    if os.path.abspath(out) == os.path.abspath(plan.path):
        raise InputError(f"{setting('out')} must be a new directory, not the plan being retried")
    defaults, submission, assignments = _with_sets(manifest, spec, sets)
    table = status(
        plan.path,
        refresh=refresh,
        sandbox=sandbox,
        endpoint_url=endpoint_url,
        profile=profile,
        region=region,
        retry_mode=retry_mode,
        max_attempts=max_attempts,
        endpoints=endpoints,
        progress=progress,
    )
    wanted = table.filter(pl.col("state").is_in(list(states)) | (pl.col("submission_status") == "FAILED")).sort(
        "shard", "position"
    )
    left_out = _deleted_left_out(table, states)
    if wanted.height == 0:
        raise NothingToRetry(
            f"{plan.path}: no sample is in {', '.join(states)} or failed to submit; nothing to retry"
            + (f" ({left_out})" if left_out else "")
        )
    if left_out:
        log.warning(left_out)
    options = manifest.options
    part_size = manifest.shards[0].part_size
    with atomic_directory(out, force) as directory:
        writer = ShardWriter(
            directory,
            max_entries=options.max_entries,
            max_bytes=options.max_bytes,
            part_size=part_size,
            min_entries=spec.min_entries,
        )
        try:
            for (shard_index,), rows in wanted.group_by("shard", maintain_order=True):
                shard = manifest.shard(int(shard_index))
                ids = rows.get_column("id").to_list()
                entries = plan.entries_at(shard, rows.get_column("position").to_list())
                if assignments:
                    entries = [_assign(entry, assignments, spec) for entry in entries]
                for start in range(0, len(ids), _BATCH):
                    writer.add(
                        pl.Series(ids[start : start + _BATCH], dtype=pl.String),
                        pl.Series([e.decode() for e in entries[start : start + _BATCH]], dtype=pl.String),
                    )
        except BaseException:
            writer.abort()
            raise
        shards = writer.close()
        sheet = dataclasses.replace(
            manifest.sheet,
            retry_of=manifest.plan_id,
            retried_states=tuple(states),
            retry_attempt=uuid.uuid4().hex,  # a deliberate retry is a new identity, always
            retry_sets=tuple(sets),
        )
        samples = wanted.select(pl.col("row").cast(pl.Int64), "id")
        # A retry without --set runs each sample with the settings it had: the original's hashes hold.
        # With --set they changed, and are not known here: such a retry is compared with no other plan.
        settings = plan.settings() if not sets else None
        if settings is not None:
            samples = samples.join(settings, on="id", how="left", maintain_order="left")
        content = PlanContent(
            defaults=defaults,
            submission=submission,
            sheet=sheet,
            options=options,
            staging=manifest.staging,  # a retry stages as its plan did (key, expected owner)
            inline=options.inline,
            settings_hash=manifest.settings_hash if settings is not None else None,
        )
        written = write_plan(directory, spec, shards, [samples], content)
        _hand_over(plan, written.plan_id, os.path.abspath(out), wanted.get_column("id").to_list())
        return written


def _hand_over(plan: PlanDirectory, retry_plan_id: str, path: str, samples: list[str]) -> None:
    """Record in the original's ledger that ``samples`` are the retry's now; a submit of the original
    running meanwhile (it holds the lock) refuses the retry, which is then not written."""
    with plan_lock(plan.path):
        ledger = Ledger.open(plan.path, plan.manifest.plan_id, plan.manifest.backend, create=False)
        try:
            ledger.record_handover(retry_plan_id, path, samples)
        finally:
            ledger.close()


def _deleted_left_out(table: pl.DataFrame, states: tuple[str, ...]) -> str | None:
    """Samples whose run was deleted before its outcome was seen are not retried unless asked: say so."""
    if "DELETED" in states:
        return None
    deleted = table.filter(pl.col("state") == "DELETED").height
    if not deleted:
        return None
    return (
        f"{deleted:,} sample{'s' if deleted != 1 else ''} whose runs were deleted before planner saw them end "
        f"{'were' if deleted != 1 else 'was'} left out (state DELETED, outcome unknown); "
        f"to retry them too: {setting('states', ','.join((*states, 'DELETED')))}"
    )


def _states(states: Sequence[str] | str | None, spec: BackendSpec) -> tuple[str, ...]:
    if isinstance(states, str):  # "FAILED" or "FAILED,CANCELLED", as --states takes it: not its letters
        states = states.split(",")
    if not states:
        return spec.retry_states
    known = sorted(spec.final_states | set(spec.retry_states))
    chosen = tuple(s.strip().upper() for s in states if s.strip())
    unknown = [s for s in chosen if s not in known]
    if unknown:
        first = unknown[0]
        raise InputError(
            f"{setting('states', repr(first))}{did_you_mean(first, known)}: not a final state of {spec.name}; "
            f"choose from {', '.join(known)}"
        )
    return chosen


def _with_sets(
    manifest: Manifest, spec: BackendSpec, sets: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[tuple[str, ...], Any]]]:
    """The retry's defaults and request-level settings, and the per-run assignments ``sets`` make."""
    if not sets:
        return manifest.defaults, manifest.submission, []
    loaded = load_defaults({"run": manifest.defaults, "submission": manifest.submission}, sets, spec)
    problems = set_problems(spec, loaded)
    if problems:
        raise ValidationError(problems)
    assignments = []
    for path in sorted(getattr(loaded, "set_by", {}) or {}):
        table, *keys = path.split(".")
        if table != "run" or not keys:
            continue
        value: Any = loaded.run
        for key in keys:
            value = value[key]
        if not isinstance(value, dict):
            assignments.append((tuple(keys), value))
    if not assignments and not any(s.partition("=")[0].strip().startswith("submission.") for s in sets):
        raise DefaultsError(f"{setting('sets', repr(sets[0]))}: changes nothing a run is sent")
    return loaded.run, loaded.submission, assignments


def _assign(entry: bytes, assignments: list[tuple[tuple[str, ...], Any]], spec: BackendSpec) -> bytes:
    """One retried run with the ``--set`` values in it.  For a service that merges the
    defaults itself (StartRunBatch) an entry is changed only where it sets the field itself:
    elsewhere the new defaults reach it."""
    run = orjson.loads(entry)
    for keys, value in assignments:
        if spec.server_merge and keys[0] not in run:
            continue
        node = run
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return orjson.dumps(run)
