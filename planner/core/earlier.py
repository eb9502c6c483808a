"""Plans already run: which of a sheet's samples an earlier plan ran with the same settings.

Every plan records per sample a hash of its effective run (``settings`` in samples.parquet:
the defaults merged with the row, what the service runs, whatever the shards carry, with its
keys sorted: ``merge.settings_json``).
``planner plan --skip-done EARLIER`` joins the sheet's samples with the earlier plans' on
(id, settings), batch by batch, and sorts each sample into one of:

    new            no earlier plan ran this id
    changed        an earlier plan ran this id with other settings: planned, and listed
    done           ran with the same settings, and its run COMPLETED (SUCCEEDED) or is still
                   pending or running: not planned
    failed before  ran with the same settings, but the run failed, was cancelled or deleted, or
                   its submission failed: planned

"Ran" is what the earlier plan's ledger says, as of its last ``planner status``; an earlier
plan never submitted ran nothing.  Settings are comparable only between plans of one backend
and one workflow (HealthOmics workflowId, Batch job definition, Glue JobName, Polly
pipeline_id), hashed by one scheme (``plandir.SETTINGS_HASH``): anything else is refused.

The new plan records what was compared (plan.json ``skip_done``: the plans and the counts),
and lists the samples skipped as done (``skipped.csv``) and those whose settings changed
(``changed.csv``): row, id, the earlier plan.
"""

from __future__ import annotations

import glob
import os
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from planner.core.plandir import SETTINGS, SETTINGS_HASH, Manifest, PlanDirectory, SkipDone, safe_csv
from planner.core.progress import log
from planner.core.spec import BackendSpec
from planner.errors import InputError, PlanDirError, setting

LEDGER_FILE = "ledger.sqlite"  # ledger.py's; read here read-only, without its upgrades
SKIPPED_FILE = "skipped.csv"
CHANGED_FILE = "changed.csv"

# What an earlier run of a sample came to (``outcome``).
DONE = "done"  # completed
ACTIVE = "active"  # submitted, pending or running: it will end without our help
FAILED = "failed"  # failed, cancelled, deleted, or its submission was refused

NEW = "new"
CHANGED = "changed"
SKIPPED = "done"
FAILED_BEFORE = "failed before"
VERDICTS = (NEW, CHANGED, SKIPPED, FAILED_BEFORE)

VERDICT = "__verdict"
EARLIER_PLAN = "__earlier_plan"


def workflow_of(backend: str, run: Mapping[str, Any], submission: Mapping[str, Any]) -> str | None:
    """What names the workflow a plan runs: settings of two workflows are never comparable."""
    if backend.startswith("omics"):
        value = run.get("workflowId")
    elif backend == "batch":
        # A new revision of one job definition is a change of settings (the hash sees it), not another workflow.
        value = re.sub(r":\d+$", "", str(run.get("jobDefinition") or "")) or None
    elif backend == "glue":
        value = run.get("JobName")
    else:
        value = submission.get("pipeline_id")
    return None if value is None else str(value)


def outcome_expr(spec: BackendSpec) -> pl.Expr:
    """A ledger sample's outcome (DONE, ACTIVE, FAILED), or null when it was never submitted."""
    succeeded = sorted(spec.final_states - set(spec.retry_states) - {"DELETED"})
    final = sorted(spec.final_states)
    state, submitted = pl.col("state"), pl.col("submission_status")
    return (
        pl.when(submitted == "FAILED")
        .then(pl.lit(FAILED))
        .when(state.is_in(succeeded))
        .then(pl.lit(DONE))
        .when(state.is_in(final))
        .then(pl.lit(FAILED))
        .when(state.is_not_null() | submitted.is_not_null())
        .then(pl.lit(ACTIVE))
    )


LEDGER_CHUNK = 100_000  # ledger rows held as Python tuples at once (about 25 MB)


def ledger_samples(plan_dir: str, keep: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> pl.DataFrame:
    """id, submission_status, state of every sample a plan's ledger knows (empty: never submitted).

    Read-only, without the ledger's own upgrades: another command may be writing it.  Rows are
    fetched ``LEDGER_CHUNK`` at a time, and only ``keep`` of each chunk is kept: a million rows
    fetched at once would be a million Python tuples (about 250 MB) before polars holds them."""
    schema = {"id": pl.String, "submission_status": pl.String, "state": pl.String}
    kept = keep or (lambda chunk: chunk)
    path = os.path.join(plan_dir, LEDGER_FILE)
    if not os.path.exists(path):
        return kept(pl.DataFrame(schema=schema))
    chunks: list[pl.DataFrame] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            # One statement, so one read transaction: every chunk comes from the same state of the ledger.
            cursor = db.execute("SELECT id, submission_status, state FROM samples")
            while rows := cursor.fetchmany(LEDGER_CHUNK):
                chunks.append(kept(pl.DataFrame(rows, schema=schema, orient="row")))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise PlanDirError(f"{path}: cannot be read: {exc}") from exc
    return pl.concat(chunks) if chunks else kept(pl.DataFrame(schema=schema))


@dataclass(frozen=True)
class EarlierPlan:
    path: str
    manifest: Manifest
    ran: int  # samples its ledger shows submitted


def plan_paths(patterns: Sequence[str]) -> list[str]:
    """Each --skip-done value as plan directories: a path, or a glob of them; each directory once."""
    found: list[str] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if glob.has_magic(text):
            matches = sorted(m for m in glob.glob(text) if os.path.isdir(m))
            if not matches:
                raise InputError(f"{setting('skip_done', text)}: no plan directory matches")
        else:
            matches = [text]
        for match in matches:
            if os.path.realpath(match) not in {os.path.realpath(f) for f in found}:
                found.append(match)
    return found


def open_earlier(path: str, spec: BackendSpec, workflow: str | None) -> PlanDirectory:
    """An earlier plan, refused with a reason when its settings cannot be compared with this plan's."""
    try:
        plan = PlanDirectory(path)
    except PlanDirError as exc:
        raise InputError(f"{setting('skip_done', path)}: {_detail(exc, path)}") from None
    manifest = plan.manifest
    if manifest.backend != spec.name:
        raise InputError(
            f"{setting('skip_done', path)}: a plan for {manifest.backend}, not {spec.name}: "
            "its settings are not comparable"
        )
    theirs = workflow_of(manifest.backend, manifest.defaults, manifest.submission)
    if theirs != workflow:
        raise InputError(
            f"{setting('skip_done', path)}: a plan of workflow {theirs!r}, not {workflow!r}: "
            "its settings are not comparable"
        )
    if manifest.settings_hash is None and manifest.retry_of:
        raise InputError(
            f"{setting('skip_done', path)}: a retry with {setting('sets')}, whose runs' settings are not recorded "
            "per sample: "
            "they cannot be compared; give the plan it retried, whose samples that failed are planned again"
        )
    if manifest.settings_hash is None:
        raise InputError(
            f"{setting('skip_done', path)}: planned by a planner that recorded no settings per sample; "
            "its samples cannot be compared (plan it again with this planner to compare)"
        )
    if manifest.settings_hash != SETTINGS_HASH:
        raise InputError(
            f"{setting('skip_done', path)}: its settings were hashed as {manifest.settings_hash}, "
            "this planner hashes as "
            f"{SETTINGS_HASH}: they are not comparable"
        )
    return plan


def _detail(exc: PlanDirError, path: str) -> str:
    text = str(exc)
    return text[len(path) + 2 :] if text.startswith(f"{path}: ") else text


_LOOKUP_SEED = 0x1D5


def _lookup_key(columns: Sequence[str]) -> pl.Expr:
    return pl.struct(pl.col(c).alias(f"k{i}") for i, c in enumerate(columns)).hash(seed=_LOOKUP_SEED)


@dataclass(frozen=True)
class _SortedTable:
    """A table found by binary search on a hash of its key columns, built once.

    A hash join per batch would build its table of the whole earlier plan again for every
    batch (at 1M against 1M: 20 batches, 14 s); a search costs O(batch x log table).  A hash
    match is confirmed on the key columns themselves, so a collision can only miss a match
    (the sample is then planned), never invent one."""

    keys: pl.Series  # sorted
    table: pl.DataFrame  # in the order of keys: the key columns, then the payload
    on: tuple[str, ...]

    @classmethod
    def build(cls, table: pl.DataFrame, on: Sequence[str]) -> _SortedTable:
        keyed = table.with_columns(_lookup_key(on).alias("__key")).sort("__key")
        return cls(keyed.get_column("__key"), keyed.drop("__key"), tuple(on))

    def find(self, batch: pl.DataFrame, on: Sequence[str]) -> pl.DataFrame:
        """The payload of the table's row for each row of ``batch`` (null where none), in batch order."""
        payload = [c for c in self.table.columns if c not in self.on]
        if self.table.height == 0:
            return pl.DataFrame({c: pl.Series(c, [None] * batch.height, dtype=self.table.schema[c]) for c in payload})
        keys = batch.select(_lookup_key(on)).to_series()
        at = self.keys.search_sorted(keys, side="left").clip(upper_bound=self.table.height - 1)
        found = self.table.select(pl.all().gather(at))
        hit = self.keys.gather(at) == keys
        for mine, theirs in zip(on, self.on, strict=True):
            hit = hit & (found.get_column(theirs) == batch.get_column(mine)).fill_null(False)
        return found.select(pl.when(pl.lit(hit)).then(pl.col(c)).alias(c) for c in payload)


@dataclass
class EarlierRuns:
    """The samples earlier plans ran, ready to be joined with a sheet's, batch by batch."""

    plans: list[EarlierPlan]
    same: _SortedTable  # id, settings, __done (bool), __plan_same
    ids: _SortedTable  # id, __plan_id
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[pl.DataFrame] = field(default_factory=list)
    changed: list[pl.DataFrame] = field(default_factory=list)

    @classmethod
    def load(cls, patterns: Sequence[str], spec: BackendSpec, workflow: str | None) -> EarlierRuns:
        plans: list[EarlierPlan] = []
        frames: list[pl.DataFrame] = []
        outcome = outcome_expr(spec).alias("outcome")

        def ran_outcomes(chunk: pl.DataFrame) -> pl.DataFrame:
            # Of the ledger, only the samples that ran, and only their id and outcome, are kept.
            return chunk.select("id", outcome).filter(pl.col("outcome").is_not_null())

        for index, path in enumerate(plan_paths(patterns)):
            plan = open_earlier(path, spec, workflow)
            settings = plan.settings()
            assert settings is not None  # open_earlier refused a plan without
            ran = settings.join(ledger_samples(plan.path, ran_outcomes), on="id", how="inner")
            del settings
            if ran.height == 0:
                log.warning(
                    "note: %s: nothing of it was submitted; none of its samples counts as run",
                    setting("skip_done", path),
                )
            plans.append(EarlierPlan(path, plan.manifest, ran.height))
            # The plan by its place in ``plans``, not its path: a path repeated a million times is tens of MB.
            frames.append(ran.with_columns(pl.lit(index, dtype=pl.UInt32).alias("plan")))
        ran = (
            pl.concat(frames)
            if frames
            else pl.DataFrame(schema={"id": pl.String, SETTINGS: pl.Int64, "outcome": pl.String, "plan": pl.UInt32})
        )
        # Done first: the first row of an (id, settings) says whether any plan has it done, and names that plan.
        ranked = ran.with_columns(pl.col("outcome").is_in([DONE, ACTIVE]).alias("__done")).sort(
            "__done", descending=True, maintain_order=True
        )
        same = ranked.unique(["id", SETTINGS], keep="first", maintain_order=True).select(
            "id", SETTINGS, "__done", pl.col("plan").alias("__plan_same")
        )
        ids = ran.unique("id", keep="first", maintain_order=True).select("id", pl.col("plan").alias("__plan_id"))
        return cls(plans, _SortedTable.build(same, ["id", SETTINGS]), _SortedTable.build(ids, ["id"]))

    def start(self) -> None:
        """A new pass over the sheet: counts and listings start again."""
        self.counts = dict.fromkeys(VERDICTS, 0)
        self.skipped, self.changed = [], []

    def sort(self, batch: pl.DataFrame, id_column: str, row_column: str) -> pl.DataFrame:
        """The batch's samples to plan (new, changed, failed before); the done ones are counted and listed."""
        joined = pl.concat(
            [batch, self.same.find(batch, [id_column, SETTINGS]), self.ids.find(batch, [id_column])],
            how="horizontal",
        ).with_columns(
            pl.when(pl.col("__done"))
            .then(pl.lit(SKIPPED))
            .when(pl.col("__done").not_())
            .then(pl.lit(FAILED_BEFORE))
            .when(pl.col("__plan_id").is_not_null())
            .then(pl.lit(CHANGED))
            .otherwise(pl.lit(NEW))
            .alias(VERDICT),
            pl.coalesce("__plan_same", "__plan_id").alias(EARLIER_PLAN),
        )
        for verdict, count in joined.group_by(VERDICT).len().iter_rows():
            self.counts[verdict] += count
        listed = [pl.col(row_column).cast(pl.Int64).alias("row"), pl.col(id_column).alias("id")]
        paths = [p.path for p in self.plans]
        listed.append(
            pl.col(EARLIER_PLAN)
            .replace_strict(list(range(len(paths))), paths, return_dtype=pl.String)
            .alias("earlier_plan")
        )
        done = joined.filter(pl.col(VERDICT) == SKIPPED)
        if done.height:
            self.skipped.append(done.select(listed))
        changed = joined.filter(pl.col(VERDICT) == CHANGED)
        if changed.height:
            self.changed.append(changed.select(listed))
        return joined.filter(pl.col(VERDICT) != SKIPPED).select(batch.columns)

    def changed_ids(self, limit: int) -> list[str]:
        shown: list[str] = []
        for frame in self.changed:
            shown += frame.get_column("id").head(limit - len(shown)).to_list()
            if len(shown) >= limit:
                break
        return shown

    def nothing_left(self) -> InputError:
        names = ", ".join(p.path for p in self.plans)
        return InputError(
            f"nothing to plan: all {self.counts[SKIPPED]:,} valid samples already ran with these settings "
            f"in {names} (completed, or still pending or running)"
        )

    def record(self, directory: str) -> SkipDone:
        """The listings beside the plan, and what plan.json records of the comparison."""
        for name, frames in ((SKIPPED_FILE, self.skipped), (CHANGED_FILE, self.changed)):
            if frames:
                safe_csv(pl.concat(frames), os.path.join(directory, name))
        return SkipDone(
            plans=tuple({"path": p.path, "plan_id": p.manifest.plan_id, "ran": p.ran} for p in self.plans),
            new=self.counts[NEW],
            changed=self.counts[CHANGED],
            done=self.counts[SKIPPED],
            failed_before=self.counts[FAILED_BEFORE],
        )
