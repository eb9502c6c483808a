"""``planner status``: where every sample is, one row each, from the ledger after asking the service."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO

import polars as pl

from planner.backends import backend_class
from planner.commands.access import Access
from planner.commands.run_index import record_status
from planner.core.ledger import SAMPLE_COLUMNS
from planner.core.plandir import check_output_file, private_file, safe_csv
from planner.core.progress import ProgressCallback
from planner.core.spec import BackendSpec
from planner.engine.context import Context, Options
from planner.errors import InputError, setting

NOT_SUBMITTED = "NOT SUBMITTED"
# The reason shown for a failed sample whose reason the service was not asked yet (``Ledger.unasked``).
REASON_NOT_ASKED = "reason not asked yet (status with why=SAMPLE asks it)"


# The per-sample table, in the order `planner status` writes it.
STATUS_COLUMNS = [
    "row",
    "id",
    "shard",
    "position",
    "submission_id",
    "remote_id",
    "remote_uuid",
    "submission_status",
    "state",
    "reason",
    "log",
    "updated_at",
]


_LEDGER_SCHEMA = {name: pl.Int32 if name in ("shard", "position") else pl.String for name in SAMPLE_COLUMNS}


def status(
    plan_dir: str | os.PathLike[str],
    *,
    refresh: bool = True,
    concurrency: int = 8,
    rate: float | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    why: Sequence[str] | str | None = None,
) -> pl.DataFrame:
    """The per-sample table (``STATUS_COLUMNS``): sheet row, id, where it was submitted, its run, state, reason.

    With ``refresh`` the service is asked first (only about what can still change).  ``why``: sample
    ids whose run the service is asked about now, failure reason included (HealthOmics asks only a few
    reasons per batch at a refresh), or ``"all"`` for every failed sample whose reason was not asked yet."""
    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    options = Options(concurrency=concurrency, rate=rate)
    ctx = access.read(plan_dir, options, ask=refresh or bool(why), progress=progress)
    try:
        return _status(ctx, refresh, why)
    finally:
        ctx.ledger.close()


def _status(ctx: Context, refresh: bool, why: Sequence[str] | str | None = None) -> pl.DataFrame:
    wanted = _why_samples(ctx, why)
    if refresh or wanted:
        backend = backend_class(ctx.manifest.backend)(ctx)
        if refresh:
            backend.refresh()
        if wanted:
            known = {s.id: s for s in ctx.ledger.samples()}
            backend.explain([known[i] for i in wanted if i in known])
    table = sample_table(ctx)
    if refresh:
        ctx.ledger.record_refresh(state_counts(table))

        record_status(ctx.plan, table)  # what ran, for the guard at submit
    return table


def named_samples(why: Sequence[str] | str | None) -> list[str]:
    """The names a ``why`` gives (comma-separated, repeatable), in order, once each."""
    given = [why] if isinstance(why, str) else list(why or [])
    ids = [sample.strip() for text in given for sample in text.split(",")]
    return list(dict.fromkeys(i for i in ids if i))


def _why_samples(ctx: Context, why: Sequence[str] | str | None) -> list[str]:
    """The sample ids ``status(why=...)`` names: ``"all"`` is every one whose reason was not asked yet."""
    if not why:
        return []
    if why == "all" or (not isinstance(why, str) and list(why) == ["all"]):
        return ctx.ledger.unasked()
    ids = named_samples(why)
    planned = set(ctx.plan.samples().get_column("id").to_list())
    unknown = [i for i in ids if i not in planned]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise InputError(f"{setting('why', shown)}: not a sample of this plan (the sheet's ids; or all)")
    return ids


def sample_table(ctx: Context) -> pl.DataFrame:
    """Every planned sample with what the ledger knows of it."""
    # Typed, not inferred: a ledger with no samples yet (a submit that stopped before its first
    # result) would give columns of type null, which cannot be joined with the plan's ids.
    known = pl.DataFrame(ctx.ledger.sample_rows(), schema=_LEDGER_SCHEMA, orient="row").drop("shard", "position")
    planned = ctx.plan.samples()
    submissions = [s for s in ctx.ledger.submissions("done") if s.sample is None and s.remote_id is not None]
    batches = pl.DataFrame(
        [(s.shard, s.remote_id) for s in submissions if s.shard is not None],
        schema={"shard": pl.Int32, "submission_id": pl.String},
        orient="row",
    )
    table = planned.join(known, on="id", how="left").join(batches, on="shard", how="left")
    whole_plan = [s.remote_id for s in submissions if s.shard is None]
    if len(whole_plan) == 1:  # one submission for the whole plan (a Polly run): every sample is in it
        table = table.with_columns(pl.col("submission_id").fill_null(pl.lit(whole_plan[0])))
    why = cancel_reason(ctx)
    if why is not None:  # the service gives a cancelled run no reason; the ledger recorded planner's
        unexplained = (pl.col("state") == "CANCELLED") & pl.col("reason").is_null()
        table = table.with_columns(pl.when(unexplained).then(pl.lit(why)).otherwise(pl.col("reason")).alias("reason"))
    unasked = ctx.ledger.unasked()
    if unasked:  # failed, and not asked why yet: said so, never shown as a run the service gave no reason
        pending = pl.col("id").is_in(unasked) & pl.col("reason").is_null()
        table = table.with_columns(
            pl.when(pending).then(pl.lit(REASON_NOT_ASKED)).otherwise(pl.col("reason")).alias("reason")
        )
    return table.select(STATUS_COLUMNS)


def cancel_reason(ctx: Context) -> str | None:
    """Why planner last cancelled this plan's runs (``planner cancel``, or a watch's failure threshold)."""
    reasons = [detail.get("reason") for _, _, detail in ctx.ledger.events("cancel")]
    return f"cancelled by planner: {reasons[-1]}" if reasons and reasons[-1] else None


def where_expr() -> pl.Expr:
    """A sample's place in the lifecycle: its run state, else its submission status, else NOT SUBMITTED."""
    return pl.coalesce(pl.col("state"), pl.col("submission_status"), pl.lit(NOT_SUBMITTED))


def state_counts(table: pl.DataFrame) -> dict[str, int]:
    counts = table.group_by(where_expr().alias("where")).len().sort("where")
    return {str(where): int(count) for where, count in counts.iter_rows()}


def unknown_states(table: pl.DataFrame, spec: BackendSpec) -> dict[str, int]:
    """Samples by run state, for the states the service does not document (``BackendSpec.moving_states``
    and ``final_states``): a new HealthOmics status, Polly's TERMINATED..."""
    known = sorted(spec.known_states | {"DELETED"})
    strange = table.filter(pl.col("state").is_not_null() & ~pl.col("state").is_in(known))
    return {str(state): int(count) for state, count in strange.group_by("state").len().sort("state").iter_rows()}


def settled(table: pl.DataFrame, final_states: frozenset[str]) -> bool:
    """Nothing can change any more: every sample's run has ended, or its submission failed,
    or it was never submitted (then only `planner submit` can change it)."""
    moving = table.filter(
        pl.col("submission_status").is_not_null()
        & (pl.col("submission_status") != "FAILED")
        & ~pl.col("state").is_in(list(final_states | {"DELETED"})).fill_null(False)
    )
    return moving.height == 0


def unknown_warning(state: str, count: int, spec: BackendSpec) -> str:
    return (
        f"{count:,} sample(s) in state {state}, which {spec.title} does not document as far as planner knows "
        "(look at them in the service's console)"
    )


TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")


def check_table_path(path: str) -> None:
    """Refuse an ``--out`` the table cannot be written to, before any refresh or watch is spent."""
    check_output_file(path, example="status.csv")
    if not path.endswith(TABLE_SUFFIXES):
        raise InputError(f"{setting('out', path)}: use a .csv, .parquet or .jsonl file name")


def write_table(table: pl.DataFrame, path: str, stream: IO[str] | None = None) -> None:
    """The per-sample table as CSV (spreadsheet formulas neutralised), Parquet or JSON lines, by the file name."""
    check_table_path(path)
    if path.endswith((".parquet", ".jsonl", ".ndjson")):
        private_file(path)  # created 0600 unless it exists (then it keeps its mode), as safe_csv does for CSV
    if path.endswith(".parquet"):
        table.write_parquet(path)
    elif path.endswith(".csv"):
        safe_csv(table, path)
    elif path.endswith((".jsonl", ".ndjson")):
        table.write_ndjson(path)
    else:
        raise InputError(f"{setting('out', path)}: use a .csv, .parquet or .jsonl file name")
