"""``planner outputs``: where each sample's run wrote, as a sample sheet the next stage plans from.

One row per sample in the chosen states (default: the runs that succeeded, COMPLETED, or
SUCCEEDED on Batch and Glue): the sample id (under the sheet's own id column name), the
sheet's columns the user keeps (``keep``), then ``run_id``, ``run_uuid``, ``state``, and the
output location:

* HealthOmics: ``runOutputUri``, from GetRun (the location the service itself reports:
  seeds/000, GetRun's response); one GetRun per run, on the command's bounded thread pool.
  A run id is reused after a deletion, so a GetRun answering another uuid gives no location.
* Batch, Glue, Polly: one column per ``[workflow] output_parameters`` name, its value in the
  run's settings as planned (read from the shards, with polars' JSON path, not per row).

``check``: each distinct location must hold at least one object: one ListObjectsV2 with
``MaxKeys=1`` under ``LOCATION/`` per location (a location is a folder), bounded
concurrency; the ``outputs_found`` column says which.

The output file's format follows its extension: .csv, .tsv, .parquet, .jsonl/.ndjson; it is
created 0600 (it lists sample ids) and is written with no formula escaping, since a sample
sheet must keep its values exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
from botocore.exceptions import ClientError

from planner.backends import get_backend
from planner.backends.healthomics import not_found
from planner.commands.access import Access
from planner.commands.status import _status, where_expr
from planner.core.output_locations import output_key
from planner.core.plandir import PlanDirectory, private_file
from planner.core.progress import ProgressCallback, log
from planner.core.sheet import ROW, open_sheet
from planner.core.spec import BackendSpec
from planner.core.suggest import did_you_mean
from planner.engine.context import Context, Options, error_code
from planner.errors import InputError, SubmissionError, setting
from planner.services.staging import sheet_download

RUN_COLUMNS = ("run_id", "run_uuid", "state")
# The plan's own columns while the table is built: no sheet column kept by --keep can be named like them.
_ID, _ROW, _SHARD, _POSITION = "__planner_id", "__planner_row", "__planner_shard", "__planner_position"
RUN_OUTPUT_URI = "runOutputUri"  # GetRun's field, spelled as HealthOmics spells it
FOUND = "outputs_found"
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".jsonl": "ndjson", ".ndjson": "ndjson"}
# States a run may be seen in, any backend (besides each backend's final ones): what --states accepts.
_MOVING = frozenset(
    {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "STOPPING", "WAITING", "QUEUED", "NOT SUBMITTED"}
)


def table_format(path: str) -> str:
    """The format an output file's extension names; refused before any call is made."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise InputError(
            f"{setting('out', path)}: name a .csv, .tsv, .parquet or .jsonl file (the format follows the extension)"
        )
    return FORMATS[extension]


def write_outputs(table: pl.DataFrame, path: str) -> None:
    kind = table_format(path)
    private_file(path)
    if kind == "parquet":
        table.write_parquet(path)
    elif kind == "ndjson":
        table.write_ndjson(path)
    else:
        table.write_csv(path, separator="\t" if kind == "tsv" else ",")


def success_states(spec: BackendSpec) -> tuple[str, ...]:
    """What a run that did its work ends as: COMPLETED (HealthOmics, Polly), SUCCEEDED (Batch, Glue)."""
    return tuple(sorted(spec.final_states - set(spec.retry_states) - {"DELETED"}))


def chosen_states(states: Sequence[str] | None, spec: BackendSpec) -> tuple[str, ...]:
    if not states:
        return success_states(spec)
    known = sorted(spec.final_states | set(spec.retry_states) | _MOVING)
    chosen = tuple(s.strip().upper() for s in states if s.strip())
    for state in chosen:
        if state not in known:
            raise InputError(
                f"{setting('states', repr(state))}{did_you_mean(state, known)}: choose from {', '.join(known)}"
            )
    if not chosen:
        raise InputError(f"{setting('states')} names no state")
    return chosen


@dataclass(frozen=True)
class OutputsReport:
    """What ``outputs`` found: the table, and the calls it made."""

    table: pl.DataFrame
    calls: dict[str, int]
    missing: int  # locations --check found empty


def outputs(
    plan_dir: str | os.PathLike[str],
    *,
    keep: Sequence[str] = (),
    states: Sequence[str] | None = None,
    check: bool = False,
    run_columns: bool = True,
    rename: dict[str, str] | None = None,
    refresh: bool = False,
    concurrency: int = 16,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> pl.DataFrame:
    """One row per sample in ``states`` (default: succeeded) with where its run wrote, as a polars
    DataFrame (the next stage's sample sheet).  See ``outputs_report`` for the calls made."""
    return outputs_report(
        plan_dir,
        keep=keep,
        states=states,
        check=check,
        run_columns=run_columns,
        rename=rename,
        refresh=refresh,
        concurrency=concurrency,
        sandbox=sandbox,
        endpoint_url=endpoint_url,
        profile=profile,
        region=region,
        retry_mode=retry_mode,
        max_attempts=max_attempts,
        endpoints=endpoints,
        progress=progress,
    ).table


def outputs_report(
    plan_dir: str | os.PathLike[str],
    *,
    keep: Sequence[str] = (),
    states: Sequence[str] | None = None,
    check: bool = False,
    run_columns: bool = True,
    rename: dict[str, str] | None = None,
    refresh: bool = False,
    concurrency: int = 16,
    progress: ProgressCallback | None = None,
    **access: Any,
) -> OutputsReport:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"{setting('concurrency', repr(concurrency))}: must be a whole number, at least 1")
    plan = PlanDirectory(plan_dir)
    spec = get_backend(plan.manifest.backend)
    wanted = chosen_states(states, spec)
    location_columns = _location_columns(plan, spec)  # what is unknown is said before any call
    keep = [c.strip() for c in keep if c.strip()]
    id_column = plan.manifest.sheet.id_column or "id"
    names = [id_column, *[c for c in keep if c != id_column]]
    names += list(RUN_COLUMNS) if run_columns else []
    names += location_columns + ([FOUND] if check else [])
    renamed = _renamed(names, rename or {})
    ctx = Access(**access).open(plan_dir, Options(concurrency=concurrency), progress=progress, create_ledger=False)
    try:
        kept = _kept_columns(ctx, [c for c in keep if c != id_column], location_columns) if keep else None
        calls: dict[str, int] = {}
        table = _status(ctx, refresh)
        chosen = table.filter(where_expr().is_in(list(wanted))).select(
            pl.col("row").alias(_ROW),
            pl.col("id").alias(_ID),
            pl.col("shard").alias(_SHARD),
            pl.col("position").alias(_POSITION),
            pl.col("remote_id").alias("run_id"),
            pl.col("remote_uuid").alias("run_uuid"),
            where_expr().alias("state"),
        )
        if spec.name.startswith("omics"):
            located = chosen.join(_run_output_uris(ctx, chosen, calls), on=_ID, how="left", maintain_order="left")
        else:
            located = _parameter_locations(ctx, chosen, spec, location_columns)
        if kept is not None:
            located = located.join(kept, on=_ROW, how="left", maintain_order="left")
        missing = 0
        if check:
            found, missing = _check_locations(ctx, located, location_columns, calls)
            located = located.with_columns(found)
        located = located.rename({_ID: id_column})
        return OutputsReport(located.select(pl.col(c).alias(renamed[c]) for c in names), calls, missing)
    finally:
        ctx.ledger.close()


def _renamed(names: list[str], rename: dict[str, str]) -> dict[str, str]:
    """Each column's name in the table written (``--rename OLD=NEW``: a next stage's parameter name)."""
    for old, new in rename.items():
        if old not in names:
            raise InputError(
                f"{setting('rename')} {old}={new}: {old!r}{did_you_mean(old, names)} is not a column of the table"
            )
        if not new.strip():
            raise InputError(f"{setting('rename')} {old}=: the new name is empty")
    out = {name: rename.get(name, name) for name in names}
    if len(set(out.values())) != len(out):
        raise InputError(f"{setting('rename')}: two columns would be named alike ({', '.join(out.values())})")
    return out


def _location_columns(plan: PlanDirectory, spec: BackendSpec) -> list[str]:
    if spec.name.startswith("omics"):
        return [RUN_OUTPUT_URI]
    names = list(plan.manifest.output_parameters)
    if not names:
        raise InputError(
            f"{plan.path}: the plan names no output parameters, so where its runs wrote is not known; "
            'set [workflow] output_parameters = ["outdir"] in the defaults and plan again'
        )
    return [str(n) for n in names]


def _kept_columns(ctx: Context, keep: list[str], location_columns: list[str]) -> pl.DataFrame:
    """row and the kept columns of the sheet the plan was made from (which must not have changed)."""
    sheet_record = ctx.manifest.sheet
    path = sheet_record.path
    taken = [c for c in keep if c in location_columns or c in RUN_COLUMNS]
    if taken:
        raise InputError(
            f"{setting('keep', taken[0])}: the table has a column of that name already (where the run wrote)"
        )
    if not path or path.startswith("<") or not (path.startswith("s3://") or os.path.exists(path)):
        raise InputError(
            f"{setting('keep')}: the sheet the plan was made from ({path or 'a data frame'}) cannot be read again"
        )
    s3 = ctx.clients.get("s3") if path.startswith("s3://") else None
    sheet = open_sheet(path, id_column=sheet_record.id_column, download=sheet_download(s3))
    if sheet.sha256 != sheet_record.sha256:
        raise InputError(
            f"{setting('keep')}: {path} changed since the plan was made from it; its rows may not be the same"
        )
    for column in keep:
        if column not in sheet.columns:
            raise InputError(
                f"{setting('keep', repr(column))}{did_you_mean(column, sheet.columns)}: not a column of {path} "
                f"(it has {', '.join(sheet.columns)})"
            )
    frame = sheet.frame.select(
        pl.col(ROW).cast(pl.Int64).alias(_ROW), *[pl.col(sheet.source[c]).alias(c) for c in keep]
    ).collect()
    return frame.unique(_ROW, keep="first", maintain_order=True)  # with --group a sample is its first row


def _run_output_uris(ctx: Context, chosen: pl.DataFrame, calls: dict[str, int]) -> pl.DataFrame:
    """id and runOutputUri of each chosen run, from GetRun; a run whose uuid is not the ledger's
    (its id was reused after a deletion) or that is gone gives none."""
    omics = ctx.clients.get("omics")
    runs = chosen.filter(pl.col("run_id").is_not_null()).select(_ID, "run_id", "run_uuid").rows()

    def locate(run: tuple[str, str, str | None]) -> tuple[str, str | None]:
        sample, run_id, run_uuid = run
        try:
            found = ctx.call(f"GetRun {run_id}", omics.get_run, id=run_id)
        except SubmissionError as exc:
            if not_found(exc):
                return sample, None
            raise
        if run_uuid and found.get("uuid") and found["uuid"] != run_uuid:
            return sample, None
        return sample, found.get(RUN_OUTPUT_URI)

    located = ctx.map(locate, runs, task="GetRun", unit="run")
    calls["GetRun"] = calls.get("GetRun", 0) + len(runs)
    lost = sum(1 for _, uri in located if uri is None)
    if lost:
        log.warning("warning: %d runs report no output location (deleted, or their id now names another run)", lost)
    return pl.DataFrame(located, schema={_ID: pl.String, RUN_OUTPUT_URI: pl.String}, orient="row")


def _parameter_locations(ctx: Context, chosen: pl.DataFrame, spec: BackendSpec, names: list[str]) -> pl.DataFrame:
    """The chosen samples with the value of each output parameter in their planned settings."""
    parts = []
    for (shard_index,), rows in chosen.group_by(_SHARD, maintain_order=True):
        shard = ctx.manifest.shard(int(shard_index))
        entries = pl.Series("entry", [line.decode() for line in ctx.plan.lines(shard)], dtype=pl.String)
        settings = rows.with_columns(entries.gather(rows.get_column(_POSITION)).alias("entry"))
        paths = {name: _json_path((*spec.parameters_path, output_key(name, spec))) for name in names}
        parts.append(settings.with_columns(pl.col("entry").str.json_path_match(p).alias(n) for n, p in paths.items()))
    if not parts:
        return chosen.with_columns(pl.lit(None, dtype=pl.String).alias(n) for n in names)
    return pl.concat(parts).drop("entry")


def _json_path(keys: Sequence[str]) -> str:
    return "$" + "".join(f"[{orjson.dumps(key).decode()!s}]".replace('"', "'") for key in keys)


def _check_locations(
    ctx: Context, table: pl.DataFrame, columns: list[str], calls: dict[str, int]
) -> tuple[pl.Expr, int]:
    """One ListObjectsV2 (MaxKeys=1) per distinct location: does anything lie under it?"""
    values = pl.concat([table.get_column(c).drop_nulls() for c in columns]).unique().sort().to_list()
    s3 = ctx.clients.get("s3")

    def look(uri: str) -> tuple[str, bool | None]:
        if not uri.startswith("s3://"):
            return uri, None
        bucket, _, key = uri[len("s3://") :].partition("/")
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""  # a folder: s3://b/out/1 is not s3://b/out/10
        try:
            page = ctx.call(f"ListObjectsV2 {uri}", s3.list_objects_v2, Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except SubmissionError as exc:
            if isinstance(exc.__cause__, Exception) and _code(exc.__cause__) == "NoSuchBucket":
                return uri, False
            raise
        return uri, bool(page.get("KeyCount") or page.get("Contents"))

    looked = ctx.map(look, values, task="ListObjectsV2", unit="location")
    calls["ListObjectsV2"] = calls.get("ListObjectsV2", 0) + sum(1 for v in values if v.startswith("s3://"))
    found = dict(looked)
    empty = sorted(uri for uri, ok in found.items() if ok is False)
    for uri in empty[:20]:
        log.warning("warning: nothing found under %s", uri)
    if len(empty) > 20:
        log.warning("warning: ... and %d more locations with nothing under them", len(empty) - 20)
    every = pl.all_horizontal([pl.col(c).replace_strict(found, default=None, return_dtype=pl.Boolean) for c in columns])
    return every.alias(FOUND), len(empty)


def _code(exc: Exception) -> str | None:
    return error_code(exc) if isinstance(exc, ClientError) else None
