"""The plan stage: sheet + defaults -> validated, merged, sharded runs -> PLAN/.

``Plan`` is what ``planner.plan()`` returns.  Cheap checks (header, id column,
routing, the default request) happen when it is built; the rows are checked,
merged and encoded in one streaming polars query, batch by batch, feeding the
shard writer, so memory follows the batch and the shard, not the sheet.

The plan directory's format (plan.json, samples.parquet, writing it atomically)
is in ``plandir.py``; the per-row state spilled to disk while streaming in ``spill.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from planner.backends import get_backend
from planner.commands.check import check_inputs
from planner.core.defaults import Defaults, load_defaults
from planner.core.earlier import SKIPPED, EarlierRuns, workflow_of
from planner.core.merge import MERGED, OWN, json_text, run_json, settings_json
from planner.core.output_locations import (
    KIND,
    LOCATION,
    LocationSpill,
    collision_problems,
    constant_problem,
    output_locations,
)
from planner.core.plandir import (
    REJECTED_FILE,
    SETTINGS,
    SETTINGS_HASH,
    Manifest,
    OptionsRecord,
    PlanContent,
    PlanDirectory,
    SheetRecord,
    atomic_directory,
    settings_hash,
    write_plan,
    write_problems,
)
from planner.core.progress import Bars, ProgressCallback, Tracker, log
from planner.core.routing import Route, route_columns
from planner.core.shard import MAX_PART_SIZE, MIN_PART_SIZE, ShardWriter, default_part_size
from planner.core.sheet import RAW_PREFIX, ROW, Sheet, open_sheet, polars_errors
from planner.core.spec import BackendSpec
from planner.core.spill import HASH, IdHashes, Spill, prefetched
from planner.core.suggest import did_you_mean
from planner.core.validate import ID, Check, _located, coerce_fields, default_problems, row_checks
from planner.errors import InputError, Problem, SheetError, ValidationError, setting
from planner.sandbox.local import ensure_running
from planner.services.aws import Clients
from planner.services.staging import sheet_download
from planner.services.workflow import (
    NEAR_FIELD,
    Lookup,
    WorkflowCheck,
    near_field_problems,
    resolve_workflow,
    template_checks,
)

# A batch's query holds its intermediates (each cell's JSON, the run, the merged settings) at once:
# about 6 KB a row of the benchmark's sheet, seven times the sheet and JSON text the batch is sized
# by.  At 50,000 rows that made half of a 1M-row plan's 600 MB peak; at 25,000, no more CPU.
BATCH_ROWS = 25_000
BATCH_BYTES = 24 * 1024 * 1024  # about this much sheet and JSON text per batch, whatever the row size
MIN_BATCH_ROWS = 64
RUN = "__run"
WHY = "__why"
OUT = "__out"
MAX_SHOWN_PROBLEMS = 20
REJECTED = "__rejected"  # the rule of a row rejected for a problem found after a pass (its own problems replace it)


@dataclass(frozen=True)
class PlanOptions:
    backend: str
    id_column: str | None = None
    group: bool = False
    list_columns: tuple[str, ...] = ()
    skip_invalid: bool = False
    inline: bool = False  # omics-batch: every shard inline (at most 100 runs each), no S3 staging
    part_size: int | None = None
    max_entries: int | None = None  # tighter limits than the service's, e.g. for tests
    max_bytes: int | None = None
    batch_rows: int = BATCH_ROWS
    # Preflight at plan time: S3 existence of every s3:// input (planner check's, see preflight.py), with
    # this access to S3; the workflow template (workflow.py) is checked whenever one is found.
    check_inputs: bool = False
    access: Lookup | None = None
    concurrency: int = 32
    # Earlier plan directories (or globs): samples they ran with the same settings are left out (earlier.py).
    skip_done: tuple[str, ...] = ()


@dataclass(frozen=True)
class _QueryShape:
    """The per-row query as expressions, for any frame of one schema (see ``Plan._shape``)."""

    columns: list[list[pl.Expr]]  # added in turn: the coerced fields, the run's JSON, the settings hash
    selected: list[str | pl.Expr]  # what the stream yields
    checks: list[Check]

    def checked(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        for step in self.columns:
            if step:
                frame = frame.with_columns(step)
        return frame

    def query(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        return self.checked(frame).select(self.selected)


class Plan:
    """A sheet planned for one backend; ``write()`` makes the plan directory."""

    def __init__(
        self,
        sheet: Sheet,
        defaults: Defaults,
        spec: BackendSpec,
        options: PlanOptions,
        workflow: WorkflowCheck | None = None,
    ):
        self.sheet = sheet
        self.defaults = defaults
        self.spec = spec
        self.options = options
        self.routes: list[Route] = route_columns(
            sheet.columns, spec, sheet.source, id_column=sheet.id_column, id_parameter=defaults.id_parameter
        )
        problems = default_problems(spec, defaults, self.routes)
        broken_defaults = bool(problems)  # the template's view of them would only add noise
        # The workflow's parameter template (HealthOmics), when one was found: what the header and the
        # defaults break is said now; what a row breaks, per row (``self.template_checks``).
        self.workflow = workflow
        template = workflow.template if workflow is not None else None
        problems += near_field_problems(
            self.routes, spec, sheet.id_column, template.defined if template is not None else ()
        )
        self.template_checks: list[Any] = []
        if workflow is not None and not broken_defaults:
            problems += workflow.problems
        if template is not None and not broken_defaults:
            found, self.template_checks = template_checks(
                template, spec, defaults.run, self.routes, sheet.id_column, functools.partial(_located, defaults)
            )
            near = {p.column for p in problems if p.rule == NEAR_FIELD}  # "did you mean" says it already
            problems += [p for p in found if p.column not in near]
        self.outputs, output_problems = output_locations(spec, defaults, self.routes)
        if not broken_defaults:
            problems += output_problems
        if problems:
            raise ValidationError(problems)
        self.max_entries = min(options.max_entries or spec.max_entries, spec.max_entries)
        if options.inline:
            if spec.inline_max is None:
                raise InputError(f"{setting('inline=True')} applies to omics-batch only, not {spec.name}")
            self.max_entries = min(self.max_entries, spec.inline_max)
        self.max_bytes = min(options.max_bytes or spec.max_bytes, spec.max_bytes)
        self.part_size = options.part_size or default_part_size(self.max_bytes)
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise InputError(
                f"part size {self.part_size}: S3 parts are {MIN_PART_SIZE} (5 MiB) to {MAX_PART_SIZE} (5 GiB) bytes"
            )
        if -(-self.max_bytes // self.part_size) > 10_000:
            raise InputError(
                f"part size {self.part_size} would split a {self.max_bytes}-byte shard into more than 10,000 parts"
            )
        self.rows = 0
        self.problems: list[Problem] = []
        self.plan_problems: list[Problem] = []
        self._rejected_rows: set[int] = set()
        self.repeated_problems: list[Problem] = []
        self.repeated_ids: set[str] = set()
        self.row_rejects: dict[int, list[Problem]] = {}
        self.checked = False  # every row has been read and checked (by check(), runs() or write())
        self.written: tuple[str, Manifest] | None = None  # where write() put it, and what it wrote
        # What earlier plans ran (--skip-done), read now: a plan that cannot be compared is bad input.
        self.earlier: EarlierRuns | None = None
        if options.skip_done:
            workflow_name = workflow_of(spec.name, defaults.run, defaults.submission)
            self.earlier = EarlierRuns.load(options.skip_done, spec, workflow_name)

    def __repr__(self) -> str:
        columns = len(self.sheet.columns)
        where = f"{self.spec.name} plan of {self.sheet.path} ({columns} columns, id {self.sheet.id_column!r})"
        if not self.checked:
            return f"<{where}: rows not read yet; .check() lists every problem>"
        noun = "problem" if len(self.problems) == 1 else "problems"
        said = f"<{where}: {self.rows:,} rows, {len(self.problems)} {noun}"
        if self.written is not None:
            out, manifest = self.written
            shards = "shard" if len(manifest.shards) == 1 else "shards"
            said += f"; written to {out}: {manifest.runs:,} runs in {len(manifest.shards)} {shards}"
        return said + ">"

    def check(self) -> list[Problem]:
        """Read and check every row (nothing is written): every problem found, or [] when all are valid."""
        mode = OWN if self.spec.server_merge else MERGED
        with tempfile.TemporaryDirectory(prefix="planner-") as scratch:
            for batches in self._passes(mode, progress=None, scratch=scratch):
                for _ in batches:
                    pass
        return list(self.problems) + list(self.plan_problems)

    # The rows, checked and encoded.

    @property
    def batch_rows(self) -> int:
        """Rows per batch: the configured count, fewer when rows are large (60 KB runs come
        1,000 to a batch, not 50,000), so memory follows BATCH_BYTES, not the sheet."""
        per_row = self.sheet.bytes_per_row
        if per_row is None:
            return self.options.batch_rows
        if not self.spec.server_merge:
            per_row += len(orjson.dumps(self.defaults.run))  # merged runs repeat the defaults
        return max(MIN_BATCH_ROWS, min(self.options.batch_rows, int(BATCH_BYTES // (2 * per_row + 1))))

    def _frame(self) -> tuple[pl.LazyFrame, list[Problem], set[str]]:
        """The sheet as one row per run, problems found across rows, and ids to reject whole."""
        with polars_errors(self.sheet.path):
            frame = self.sheet.frame.with_columns(
                pl.col(self.sheet.source[self.sheet.id_column]).cast(pl.String).alias(ID)
            )
            if self.options.group:
                return self._grouped(frame)
        if self.options.list_columns:
            raise InputError(f"{setting('list_columns')} goes with {setting('group=True')}")
        return frame, [], set()

    def _repeated_ids(self, suspects: pl.Series) -> tuple[list[Problem], set[str]]:
        """Ids that appear on several rows, from the rows whose id hashes repeat (``_IdHashes``):
        those few rows are read again to name the ids and rule out hash collisions."""
        if suspects.len() == 0:
            return [], set()
        with polars_errors(self.sheet.path):
            rows = (
                self.sheet.frame.filter(pl.col(ROW).is_in(suspects.implode()))
                .select(ROW, pl.col(self.sheet.source[self.sheet.id_column]).cast(pl.String).alias(ID))
                .collect()
            )
        repeated = rows.filter(pl.col(ID).is_duplicated()).group_by(ID, maintain_order=True).agg(pl.col(ROW).sort())
        problems = [
            Problem(
                rows_of[0],
                sample,
                self.sheet.id_column,
                sample,
                "unique",
                f"id appears in rows {_rows(rows_of)}; ids must be unique "
                "(for several rows per sample, e.g. one per lane, use "
                f"{setting('group=True')} {setting('list_columns', 'fastq_1,fastq_2')})",
            )
            for sample, rows_of in repeated.sort(pl.col(ROW).list.first()).iter_rows()
        ]
        return problems, set(repeated.get_column(ID).to_list())

    def _grouped(self, frame: pl.LazyFrame) -> tuple[pl.LazyFrame, list[Problem], set[str]]:
        """One row per sample: --list-columns gathered into lists, every other column agreeing."""
        columns = [c for c in self.sheet.columns if c != self.sheet.id_column]
        unknown = [c for c in self.options.list_columns if c not in columns]
        if unknown:
            hint = did_you_mean(unknown[0], columns)
            raise InputError(
                f"{setting('list_columns')} names {', '.join(map(repr, unknown))}{hint}, not a column of the sheet "
                f"(it has {', '.join(map(repr, columns))})"
            )
        lists = {self.sheet.source[c] for c in self.options.list_columns}
        lists |= {RAW_PREFIX + c for c in lists}
        data = frame.collect()
        self.rows = data.height
        if self.rows == 0:
            raise SheetError(f"{self.sheet.path}: the sheet has a header but no rows")
        present = [c for c in data.columns if c not in (ROW, ID)]
        agreeing = [c for c in present if c not in lists]
        checked = [c for c in agreeing if not c.startswith(RAW_PREFIX)]
        grouped = data.group_by(ID, maintain_order=True).agg(
            pl.col(ROW).alias("__rows"),
            # Nulls stay in the lists so that fastq_1[i] and fastq_2[i] still describe the same lane.
            *[pl.col(c) for c in present if c in lists],
            *[pl.col(c).first() for c in agreeing],
            *[(pl.col(c).n_unique() > 1).alias(f"__differs_{c}") for c in checked],
            *[_as_text(pl.col(c), data.schema[c]).unique(maintain_order=True).alias(f"__values_{c}") for c in checked],
        )
        problems = []
        for c in checked:
            for record in grouped.filter(pl.col(f"__differs_{c}")).iter_rows(named=True):
                values = record[f"__values_{c}"] or []
                problems.append(
                    Problem(
                        record["__rows"][0],
                        record[ID],
                        self.sheet.name_of(c),
                        " | ".join("" if v is None else str(v) for v in values),
                        "group-agree",
                        f"differs between rows {_rows(record['__rows'])} of this sample; with {setting('group=True')}, "
                        f"columns other than {setting('list_columns')} must agree within a sample",
                    )
                )
        rejected = {p.id for p in problems if p.id is not None}
        out = grouped.with_columns(
            pl.col("__rows").list.first().alias(ROW),
            *[
                pl.when(pl.col(c).list.drop_nulls().list.len() > 0).then(pl.col(c)).alias(c)
                for c in present
                if c in lists
            ],
        ).select([ROW, ID, *present])
        return out.lazy(), problems, rejected

    def _query(
        self, frame: pl.LazyFrame, rejected_ids: set[str], mode: str
    ) -> tuple[pl.LazyFrame, pl.LazyFrame, list[Check]]:
        """The streaming query (row, id, which checks failed, the run's JSON), the checked
        frame (to fetch the offending values of the few bad rows afterwards), and the checks."""
        shape = self._shape(frame.collect_schema(), rejected_ids, mode)
        return shape.query(frame), shape.checked(frame), shape.checks

    def _shape(self, schema: pl.Schema, rejected_ids: set[str], mode: str) -> _QueryShape:
        """The query's expressions for frames of ``schema``: built once and applied to every
        batch of a Parquet sheet (building them takes about 10 ms: 50 batches, half a second)."""
        coercions = coerce_fields(self.routes, schema)
        if coercions:
            schema = pl.LazyFrame(schema=schema).with_columns(coercions).collect_schema()
        checks = row_checks(self.sheet, self.routes, self.spec, self.defaults, schema)
        checks += [Check(c.flag, c.column, pl.lit(""), c.rule, c.message) for c in self.template_checks]
        if self._rejected_rows and self.options.skip_invalid:
            # Rows refused for what only the whole sheet shows (a shared output location, a missing input);
            # their own problems replace this one's once the pass is over.
            checks.append(Check(pl.col(ROW).is_in(sorted(self._rejected_rows)), "*", pl.lit(""), REJECTED, "rejected"))
        if rejected_ids and self.options.skip_invalid:
            # Every row of a repeated id is rejected, not just the first: which one is right is unknown.
            checks.append(
                Check(
                    pl.col(ID).is_in(list(rejected_ids)),
                    self.sheet.id_column,
                    pl.col(ID),
                    "unique",
                    "rejected with the other rows of this repeated id",
                )
            )
        run = run_json(self.routes, self.spec, self.defaults.run, ID, schema, self.sheet.raw_json, mode).alias(RUN)
        # The settings compared with earlier plans are the effective run, whatever the shards carry,
        # with its keys in one order whatever the sheet's column order.
        merged = settings_json(self.routes, self.spec, self.defaults.run, ID, schema, self.sheet.raw_json)
        size_limit = self.max_bytes - 5
        checks.append(
            Check(
                pl.col(RUN).str.len_bytes() > size_limit,
                "*",
                pl.col(RUN).str.len_bytes().cast(pl.String),
                "max-bytes",
                f"the run's settings take more than the {size_limit} bytes a shard may hold",
            )
        )
        why = pl.concat_str(
            [pl.when(c.flag).then(pl.lit(str(i))) for i, c in enumerate(checks)], separator=",", ignore_nulls=True
        )
        outputs = [o.expr(schema).alias(f"{OUT}{i}") for i, o in enumerate(self.outputs) if not o.constant]
        return _QueryShape(
            columns=[coercions, [run], [settings_hash(merged).alias(SETTINGS)]],
            selected=[ROW, ID, pl.when(why != "").then(why).alias(WHY), RUN, SETTINGS, *outputs],
            checks=checks,
        )

    def _batches(
        self, mode: str, progress: ProgressCallback | None, scratch: str, rejected_ids: set[str] | None = None
    ) -> Iterator[pl.DataFrame]:
        """Checked and encoded batches; problems accumulate in ``self.problems``.

        Repeated ids are found only at the end of the stream, from id hashes spilled to
        ``scratch``.  When ``rejected_ids`` is given (the second pass of --skip-invalid),
        their rows are rejected as they come.
        """
        frame, problems, grouped_rejects = self._frame()
        self.problems = list(problems)
        seen = valid = 0
        check_ids = not self.options.group and rejected_ids is None
        query, checked, checks = self._query(frame, grouped_rejects | (rejected_ids or set()), mode)
        hashes = IdHashes(scratch) if check_ids else None
        first_pass = rejected_ids is None
        varying = [(i, o) for i, o in enumerate(self.outputs) if not o.constant]
        locations = LocationSpill(scratch) if first_pass and varying else None
        bad_rows: list[pl.DataFrame] = []
        self.failed = bool(self.problems)
        bar = Tracker(progress, "plan", "row", self._expected_rows())
        try:
            with polars_errors(self.sheet.path):
                for batch in self._collect(query, grouped_rejects | (rejected_ids or set()), mode):
                    seen += batch.height
                    if hashes is not None:
                        hashes.add(
                            batch.filter(pl.col(ID).is_not_null()).select(ROW, pl.col(ID).hash(seed=1).alias(HASH))
                        )
                    bad = batch.filter(pl.col(WHY).is_not_null())
                    if bad.height:
                        bad_rows.append(bad.select(ROW, ID, WHY))
                        self.failed = True
                        batch = batch.filter(pl.col(WHY).is_null())
                    bar.advance(batch.height + bad.height)
                    valid += batch.height
                    if locations is not None:
                        for i, _ in varying:
                            locations.add(
                                batch.select(
                                    pl.col(ROW).cast(pl.Int64),
                                    ID,
                                    pl.col(f"{OUT}{i}").alias(LOCATION),
                                    pl.lit(i, dtype=pl.Int64).alias(KIND),
                                )
                            )
                    yield batch.select(ROW, ID, RUN, SETTINGS)
        finally:
            bar.close()
            if hashes is not None:
                hashes.close()
            if locations is not None:
                locations.close()
        if seen == 0:
            raise SheetError(f"{self.sheet.path}: the sheet has a header but no rows")
        if not self.options.group:
            self.rows = seen  # with --group, _grouped counted the sheet's rows, not its samples
        if bad_rows:
            self.problems += self._row_problems(pl.concat(bad_rows), checked, checks)
        if hashes is not None:
            self.repeated_problems, self.repeated_ids = self._repeated_ids(hashes.suspects())
        self.problems += self.repeated_problems
        if locations is not None:
            for problem in collision_problems(locations.shared(), self.outputs):
                self.row_rejects.setdefault(problem.row or 0, []).append(problem)
        if first_pass and valid > 1:
            self.plan_problems += [constant_problem(o, valid) for o in self.outputs if o.constant]
        # Rows rejected for problems found after a pass: their own problems, not the placeholder's.
        self.problems = [p for p in self.problems if p.rule != REJECTED]
        self.problems += [p for found in self.row_rejects.values() for p in found]
        self.failed = bool(self.problems or self.plan_problems)
        self.problems.sort(key=lambda p: p.row or 0)
        self.checked = True

    def _collect(self, query: pl.LazyFrame, rejected_ids: set[str], mode: str) -> Iterator[pl.DataFrame]:
        """The streaming query's results batch by batch; a Parquet sheet is read in pyarrow
        record batches and each goes through the same query, which bounds memory to a batch."""
        parts = None if self.options.group else self.sheet.batches(self.batch_rows)
        if parts is None:
            yield from query.collect_batches(chunk_size=self.batch_rows)
            return
        ident = pl.col(self.sheet.source[self.sheet.id_column]).cast(pl.String).alias(ID)
        shape: tuple[pl.Schema, _QueryShape] | None = None
        for part in prefetched(parts):
            frame = part.with_columns(ident)
            schema = frame.collect_schema()
            if shape is None or shape[0] != schema:
                shape = (schema, self._shape(schema, rejected_ids, mode))
            # The streaming engine splits the batch in morsels and encodes them on every core
            # (the in-memory engine runs a string expression on one chunk single-threaded);
            # it keeps the rows in order.
            yield shape[1].query(frame).collect(engine="streaming")

    def _row_problems(self, bad: pl.DataFrame, checked: pl.LazyFrame, checks: Sequence[Check]) -> list[Problem]:
        """Problems of the bad rows: their offending values are read again for those rows only,
        which keeps the value columns out of the streaming query of every row."""
        values = [pl.when(c.flag).then(c.value.cast(pl.String)).alias(f"__v{i}") for i, c in enumerate(checks)]
        with polars_errors(self.sheet.path):
            shown = checked.filter(pl.col(ROW).is_in(bad.get_column(ROW).implode())).select(ROW, *values).collect()
        return _problems(bad.join(shown, on=ROW, how="left", maintain_order="left"), checks)

    def _passes(self, mode: str, progress: ProgressCallback | None, scratch: str) -> Iterator[Iterator[pl.DataFrame]]:
        """One pass over the sheet; more when --skip-invalid must drop rows that only the whole
        sheet (repeated ids, shared output locations) or the written plan (missing inputs) shows."""
        self.repeated_problems = []
        self.repeated_ids = set()
        self.row_rejects = {}  # row -> problems found after a pass
        self.plan_problems = []  # found after a pass, of no one row: nothing can be planned
        self._rejected_rows = set()
        yield self._batches(mode, progress, scratch)
        excluded_ids = False
        while self.options.skip_invalid and not self.plan_problems:
            more = set(self.row_rejects) - self._rejected_rows
            if not more and (excluded_ids or not self.repeated_ids):
                return
            self._rejected_rows |= more
            excluded_ids = True
            yield self._batches(mode, progress, scratch, rejected_ids=self.repeated_ids)

    def runs(self, merged: bool = True) -> pl.DataFrame:
        """Every valid run as a row: ``row``, ``id`` and ``run`` (the JSON sent, or the merged view)."""
        mode = MERGED if merged or not self.spec.server_merge else OWN
        parts: list[pl.DataFrame] = []
        with tempfile.TemporaryDirectory(prefix="planner-") as scratch:
            for batches in self._passes(mode, progress=None, scratch=scratch):
                parts = list(batches)
        self._raise_problems()
        out = (
            pl.concat(parts).select(ROW, ID, RUN)
            if parts
            else pl.DataFrame(schema={ROW: pl.UInt32, ID: pl.String, RUN: pl.String})
        )
        return out.rename({ROW: "row", ID: "id", RUN: "run"})

    def _raise_problems(self) -> None:
        if self.plan_problems:
            raise ValidationError(self.problems + self.plan_problems)
        if self.problems and not self.options.skip_invalid:
            raise ValidationError(self.problems)

    # The plan directory.

    def write(
        self, out: str | os.PathLike[str], *, force: bool = False, progress: bool | ProgressCallback = False
    ) -> Manifest:
        """Write the plan directory atomically and return its manifest (what ``plan.json`` holds).

        ``progress``: True for a bar on stderr, or a callback taking ``ProgressEvent``s."""
        callback = Bars() if progress is True else (progress or None)
        with atomic_directory(out, force) as directory:
            manifest = self._write_into(directory, callback)
        self.written = (os.fspath(out), manifest)
        return manifest

    def _expected_rows(self) -> int | None:
        """About how many rows the sheet has, without reading it: exact from Parquet metadata,
        estimated for a text sheet from its size and the size of its first rows (the bar's
        total is set to the true count when the pass ends)."""
        if self.options.group:
            return None
        if self.sheet.parquet_files:
            import pyarrow.parquet as pq  # start-up: pyarrow loads only for the sheets and files that need it

            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.sheet.parquet_files)
        if self.sheet.bytes_per_row and os.path.isfile(self.sheet.path):
            return max(1, round(os.path.getsize(self.sheet.path) / self.sheet.bytes_per_row))
        return None

    def _write_into(self, directory: str, progress: ProgressCallback | None) -> Manifest:
        mode = OWN if self.spec.server_merge else MERGED
        scratch = os.path.join(directory, ".scratch")  # per-row state spilled while streaming; removed below
        os.makedirs(scratch)
        inputs_checked = False
        for batches in self._passes(mode, progress, scratch):
            shutil.rmtree(os.path.join(directory, "shards"), ignore_errors=True)  # a second pass starts afresh
            writer = ShardWriter(
                directory,
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
                part_size=self.part_size,
                min_entries=self.spec.min_entries,
            )
            samples = Spill(os.path.join(scratch, "samples.arrow"))
            if self.earlier is not None:
                self.earlier.start()
            try:
                for batch in batches:
                    if self.failed and not self.options.skip_invalid:
                        continue  # keep checking to report every problem, but write nothing more
                    if self.earlier is not None:
                        batch = self.earlier.sort(batch, ID, ROW)
                    writer.add(batch.get_column(ID), batch.get_column(RUN))
                    samples.add(batch.select(pl.col(ROW).cast(pl.Int64).alias("row"), pl.col(ID).alias("id"), SETTINGS))
                self._raise_problems()
            except BaseException:
                writer.abort()
                samples.close()
                raise
            shards = writer.close()
            samples.close()
            if self.options.check_inputs and not inputs_checked and shards:
                inputs_checked = True  # once: a later pass only drops rows, it adds no input
                manifest = write_plan(directory, self.spec, shards, samples.frames(), self._content())
                self._check_inputs(PlanDirectory(directory, manifest), progress)
        if not shards:
            if self.earlier is not None and not self.problems and self.earlier.counts[SKIPPED]:
                raise self.earlier.nothing_left()
            raise ValidationError(self.problems) if self.problems else SheetError(f"{self.sheet.path}: no runs to plan")
        if self.problems:
            write_problems(os.path.join(directory, REJECTED_FILE), self.problems)
        # plan.json is written once, with everything it records: the comparison with earlier plans, the
        # declared output parameters (for `planner check` and `planner outputs`), the workflow checked against.
        content = dataclasses.replace(
            self._content(),
            skip_done=self.earlier.record(directory) if self.earlier is not None else None,
            output_parameters=tuple(self.defaults.output_parameters),
            workflow=self.workflow.to_json() if self.workflow is not None else None,
        )
        manifest = write_plan(directory, self.spec, shards, samples.frames(), content)
        if self.workflow is not None and self.workflow.skipped and not self.workflow.asked:
            log.warning(
                "note: the workflow's parameters were not checked: %s (plan.json records it; give "
                f"{setting('parameter_template', 'FILE')}, or run `planner check PLAN` with access to the "
                "workflow)",
                self.workflow.skipped,
            )
        shutil.rmtree(scratch)
        return manifest

    def _content(self) -> PlanContent:
        return PlanContent(
            defaults=self.defaults.run,
            submission=self.defaults.submission,
            staging=self.defaults.staging,  # uri, and kms_key_id / expected_bucket_owner when set
            inline=self.options.inline,
            sheet=SheetRecord(self.sheet.path, self.sheet.sha256, self.rows, self.sheet.id_column),
            options=OptionsRecord(
                group=self.options.group,
                list_columns=tuple(self.options.list_columns),
                skip_invalid=self.options.skip_invalid,
                inline=self.options.inline,
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
            ),
            rejected=len({p.row for p in self.problems}),
            settings_hash=SETTINGS_HASH,
        )

    def _check_inputs(self, written: PlanDirectory, progress: ProgressCallback | None) -> None:
        """--check-inputs: every s3:// input of the plan just written (not yet in place) must exist.

        Rows with a missing input are problems of their own (rejected with --skip-invalid: the
        next pass leaves them out); a missing default input is every run's, and stops the plan."""
        report = check_inputs(
            written,
            access=self.options.access or Lookup(),
            concurrency=self.options.concurrency,
            progress=progress,
        )
        for warning in report.warnings[:MAX_SHOWN_PROBLEMS]:
            log.warning("warning: %s", warning.describe())
        if len(report.warnings) > MAX_SHOWN_PROBLEMS:
            log.warning(
                "warning: ... and %d more that could not be verified", len(report.warnings) - MAX_SHOWN_PROBLEMS
            )
        for problem in report.problems:
            if problem.row:
                self.row_rejects.setdefault(problem.row, []).append(problem)
            else:
                self.plan_problems.append(problem)
        if report.problems and (not self.options.skip_invalid or self.plan_problems):
            raise ValidationError(self.problems + report.problems)


def _problems(bad: pl.DataFrame, checks: Sequence[Check]) -> list[Problem]:
    found = []
    for record in bad.iter_rows(named=True):
        for index in record[WHY].split(","):
            check = checks[int(index)]
            found.append(
                Problem(record[ROW], record[ID], check.column, record[f"__v{index}"], check.rule, check.message)
            )
    return found


def _as_text(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return (
        value.cast(pl.String)
        if dtype in (pl.String, pl.Int64, pl.Float64, pl.Boolean) or dtype.is_numeric()
        else json_text(value)
    )


def _rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:10])
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def plan(
    sheet: str | os.PathLike[str] | pl.DataFrame | pl.LazyFrame,
    *,
    backend: str,
    defaults: str | os.PathLike[str] | dict[str, Any] | None = None,
    sets: Sequence[str] = (),
    id_column: str | None = None,
    group: bool = False,
    list_columns: Sequence[str] = (),
    skip_invalid: bool = False,
    inline: bool = False,
    part_size: int | None = None,
    max_entries: int | None = None,
    max_bytes: int | None = None,
    s3_client: Any = None,
    parameter_template: str | os.PathLike[str] | None = None,
    workflow_lookup: bool = True,
    check_inputs: bool = False,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    endpoints: dict[str, str] | None = None,
    concurrency: int = 32,
    skip_done: Sequence[str | os.PathLike[str]] = (),
) -> Plan:
    """Plan ``sheet`` (a path, glob, s3:// URI, or polars frame) for ``backend``.

    HealthOmics plans are checked against the workflow's parameter template (``workflow.py``):
    ``parameter_template`` (a file; else ``[workflow] parameter_template``), else the service's
    (read with the AWS options, or the sandbox's; never with ``workflow_lookup=False`` or
    PLANNER_NO_WORKFLOW_LOOKUP=1), else the check is skipped, which is logged and recorded.
    ``check_inputs``: when the plan is written, every s3:// input must exist (``preflight.py``).
    ``skip_done``: earlier plan directories (or globs of them); the samples they ran with the same
    effective settings, and that completed or are still pending or running, are left out (``earlier.py``).

    Raises an ``InputError`` (``ValidationError`` with every problem) for bad input.
    """
    for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes), ("part_size", part_size)):
        # The same rule as the CLI's: 0 is not "unset" but a limit nothing fits in.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{name.replace('_', '-')} {value!r}: must be a positive whole number")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency {concurrency!r}: must be a whole number, at least 1")
    spec = get_backend(backend)
    loaded = load_defaults(defaults, sets, spec)
    opened = open_sheet(
        sheet,
        id_column=id_column or loaded.id_column,
        types=loaded.types,
        download=sheet_download(
            s3_client,
            loaded.staging_expected_bucket_owner,
            _sheet_clients(sheet, sandbox, endpoint_url, profile, region, endpoints),
        ),
    )
    access = Lookup.from_environment(
        enabled=workflow_lookup,
        sandbox=sandbox,
        endpoint_url=endpoint_url,
        profile=profile,
        region=region,
        endpoints=endpoints,
    )
    template_file = os.fspath(parameter_template) if parameter_template is not None else loaded.parameter_template
    workflow = resolve_workflow(spec, loaded.run, opened.columns, template_file, access)
    options = PlanOptions(
        backend=backend,
        id_column=opened.id_column,
        group=group,
        list_columns=tuple(list_columns),
        skip_invalid=skip_invalid,
        inline=inline,
        part_size=part_size,
        max_entries=max_entries,
        max_bytes=max_bytes,
        check_inputs=check_inputs,
        access=access,
        concurrency=concurrency,
        skip_done=tuple(os.fspath(p) for p in ([skip_done] if isinstance(skip_done, str | os.PathLike) else skip_done)),
    )
    return Plan(opened, loaded, spec, options, workflow)


def _sheet_clients(
    sheet: object,
    sandbox: bool,
    endpoint_url: str | None,
    profile: str | None,
    region: str | None,
    endpoints: dict[str, str] | None,
) -> Any:
    """The clients an ``s3://`` sheet is read with: the command's AWS options, or the sandbox's
    endpoints (started only for such a sheet); None for a local sheet or a frame."""
    if not (isinstance(sheet, str) and sheet.startswith("s3://")):
        return None

    clients = Clients(
        profile=profile, region=region, endpoint_url=endpoint_url, endpoints=dict(endpoints or {}), sandbox=sandbox
    )
    if sandbox and endpoints is None:
        clients.endpoints = dict(ensure_running())
    return clients
