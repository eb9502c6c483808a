"""The plan stage: sheet + defaults -> validated, merged, sharded runs -> PLAN/.

``Plan`` is what ``planner.plan()`` returns.  Cheap checks (header, id column,
routing, the default request) happen when it is built; the rows are checked,
merged and encoded in one streaming polars query, batch by batch, feeding the
shard writer, so memory follows the batch and the shard, not the sheet.

The directory is written under a temporary name beside its target and renamed
into place only when everything succeeded: a failure leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
from tqdm import tqdm

from .backends import get_backend
from .defaults import Defaults, load_defaults
from .errors import InputError, PlanDirError, Problem, SheetError, ValidationError
from .merge import MERGED, OWN, json_text, run_json
from .routing import Route, route_columns
from .shard import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    ShardInfo,
    ShardWriter,
    default_part_size,
)
from .sheet import RAW_PREFIX, ROW, Sheet, open_sheet, polars_errors
from .spec import BackendSpec
from .validate import ID, Check, coerce_fields, default_problems, row_checks

FORMAT = 1
BATCH_ROWS = 50_000
BATCH_BYTES = 64 * 1024 * 1024  # about this much sheet and JSON text per batch, whatever the row size
MIN_BATCH_ROWS = 64
RUN = "__run"
WHY = "__why"
PLAN_FILE = "plan.json"
SAMPLES_FILE = "samples.parquet"
SAMPLES_ROW_GROUP = 1 << 18
REJECTED_FILE = "rejected.csv"
MAX_SHOWN_PROBLEMS = 20


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


class Plan:
    """A sheet planned for one backend; ``write()`` makes the plan directory."""

    def __init__(self, sheet: Sheet, defaults: Defaults, spec: BackendSpec, options: PlanOptions):
        self.sheet = sheet
        self.defaults = defaults
        self.spec = spec
        self.options = options
        self.routes: list[Route] = route_columns(sheet.columns, spec, sheet.source)
        problems = default_problems(spec, defaults, self.routes)
        if problems:
            raise ValidationError(problems)
        self.max_entries = min(options.max_entries or spec.max_entries, spec.max_entries)
        if options.inline:
            if spec.inline_max is None:
                raise InputError(f"--inline applies to omics-batch only, not {spec.name}")
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
            raise InputError("--list-columns goes with --group")
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
                "(for several rows per sample, e.g. one per lane, use --group --list-columns fastq_1,fastq_2)",
            )
            for sample, rows_of in repeated.sort(pl.col(ROW).list.first()).iter_rows()
        ]
        return problems, set(repeated.get_column(ID).to_list())

    def _grouped(self, frame: pl.LazyFrame) -> tuple[pl.LazyFrame, list[Problem], set[str]]:
        """One row per sample: --list-columns gathered into lists, every other column agreeing."""
        columns = [c for c in self.sheet.columns if c != self.sheet.id_column]
        unknown = [c for c in self.options.list_columns if c not in columns]
        if unknown:
            raise InputError(
                f"--list-columns names {', '.join(map(repr, unknown))}, not columns of the sheet (it has {', '.join(map(repr, columns))})"
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
                        f"differs between rows {_rows(record['__rows'])} of this sample; with --group, columns other than --list-columns must agree within a sample",
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
        schema = frame.collect_schema()
        coercions = coerce_fields(self.routes, schema)
        if coercions:
            frame = frame.with_columns(coercions)
            schema = frame.collect_schema()
        checks = row_checks(self.sheet, self.routes, self.spec, self.defaults, schema)
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
        frame = frame.with_columns(run)
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
        query = frame.select(ROW, ID, pl.when(why != "").then(why).alias(WHY), RUN)
        return query, frame, checks

    def _batches(
        self, mode: str, progress: bool, scratch: str, rejected_ids: set[str] | None = None
    ) -> Iterator[pl.DataFrame]:
        """Checked and encoded batches; problems accumulate in ``self.problems``.

        Repeated ids are found only at the end of the stream, from id hashes spilled to
        ``scratch``.  When ``rejected_ids`` is given (the second pass of --skip-invalid),
        their rows are rejected as they come.
        """
        frame, problems, grouped_rejects = self._frame()
        self.problems = list(problems)
        seen = 0
        check_ids = not self.options.group and rejected_ids is None
        query, checked, checks = self._query(frame, grouped_rejects | (rejected_ids or set()), mode)
        hashes = _IdHashes(scratch) if check_ids else None
        bad_rows: list[pl.DataFrame] = []
        self.failed = bool(self.problems)
        bar = tqdm(unit="row", desc="plan", file=sys.stderr, disable=not progress, leave=False)
        try:
            with polars_errors(self.sheet.path):
                for batch in self._collect(query, grouped_rejects | (rejected_ids or set()), mode):
                    seen += batch.height
                    if hashes is not None:
                        hashes.add(
                            batch.filter(pl.col(ID).is_not_null()).select(ROW, pl.col(ID).hash(seed=1).alias(_HASH))
                        )
                    bad = batch.filter(pl.col(WHY).is_not_null())
                    if bad.height:
                        bad_rows.append(bad.select(ROW, ID, WHY))
                        self.failed = True
                        batch = batch.filter(pl.col(WHY).is_null())
                    bar.update(batch.height + bad.height)
                    yield batch.select(ROW, ID, RUN)
        finally:
            bar.close()
            if hashes is not None:
                hashes.close()
        if seen == 0:
            raise SheetError(f"{self.sheet.path}: the sheet has a header but no rows")
        if not self.options.group:
            self.rows = seen  # with --group, _grouped counted the sheet's rows, not its samples
        if bad_rows:
            self.problems += self._row_problems(pl.concat(bad_rows), checked, checks)
        if hashes is not None:
            self.repeated_problems, self.repeated_ids = self._repeated_ids(hashes.suspects())
        self.problems += self.repeated_problems
        self.failed = bool(self.problems)
        self.problems.sort(key=lambda p: p.row or 0)

    def _collect(self, query: pl.LazyFrame, rejected_ids: set[str], mode: str) -> Iterator[pl.DataFrame]:
        """The streaming query's results batch by batch; a Parquet sheet is read in pyarrow
        record batches and each goes through the same query, which bounds memory to a batch."""
        parts = None if self.options.group else self.sheet.batches(self.batch_rows)
        if parts is None:
            yield from query.collect_batches(chunk_size=self.batch_rows)
            return
        ident = pl.col(self.sheet.source[self.sheet.id_column]).cast(pl.String).alias(ID)
        for part in _prefetched(parts):
            # The streaming engine splits the batch in morsels and encodes them on every core
            # (the in-memory engine runs a string expression on one chunk single-threaded);
            # it keeps the rows in order.
            yield self._query(part.with_columns(ident), rejected_ids, mode)[0].collect(engine="streaming")

    def _row_problems(self, bad: pl.DataFrame, checked: pl.LazyFrame, checks: Sequence[Check]) -> list[Problem]:
        """Problems of the bad rows: their offending values are read again for those rows only,
        which keeps the value columns out of the streaming query of every row."""
        values = [pl.when(c.flag).then(c.value.cast(pl.String)).alias(f"__v{i}") for i, c in enumerate(checks)]
        with polars_errors(self.sheet.path):
            shown = checked.filter(pl.col(ROW).is_in(bad.get_column(ROW).implode())).select(ROW, *values).collect()
        return _problems(bad.join(shown, on=ROW, how="left", maintain_order="left"), checks)

    def _passes(self, mode: str, progress: bool, scratch: str) -> Iterator[Iterator[pl.DataFrame]]:
        """One pass over the sheet; a second when --skip-invalid must drop repeated ids."""
        self.repeated_problems: list[Problem] = []
        self.repeated_ids: set[str] = set()
        yield self._batches(mode, progress, scratch)
        if self.repeated_ids and self.options.skip_invalid:
            yield self._batches(mode, progress, scratch, rejected_ids=self.repeated_ids)

    def runs(self, merged: bool = True) -> pl.DataFrame:
        """Every valid run as a row: ``row``, ``id`` and ``run`` (the JSON sent, or the merged view)."""
        mode = MERGED if merged or not self.spec.server_merge else OWN
        parts: list[pl.DataFrame] = []
        with tempfile.TemporaryDirectory(prefix="planner-") as scratch:
            for batches in self._passes(mode, progress=False, scratch=scratch):
                parts = list(batches)
        self._raise_problems()
        out = pl.concat(parts) if parts else pl.DataFrame(schema={ROW: pl.UInt32, ID: pl.String, RUN: pl.String})
        return out.rename({ROW: "row", ID: "id", RUN: "run"})

    def _raise_problems(self) -> None:
        if self.problems and not self.options.skip_invalid:
            raise ValidationError(self.problems)

    # The plan directory.

    def write(self, out: str | os.PathLike[str], *, force: bool = False, progress: bool = False) -> dict[str, Any]:
        """Write the plan directory atomically and return what ``plan.json`` holds."""
        with atomic_directory(out, force) as directory:
            return self._write_into(directory, progress)

    def _write_into(self, directory: str, progress: bool) -> dict[str, Any]:
        mode = OWN if self.spec.server_merge else MERGED
        scratch = os.path.join(directory, ".scratch")  # per-row state spilled while streaming; removed below
        os.makedirs(scratch)
        for batches in self._passes(mode, progress, scratch):
            shutil.rmtree(os.path.join(directory, "shards"), ignore_errors=True)  # a second pass starts afresh
            writer = ShardWriter(
                directory,
                max_entries=self.max_entries,
                max_bytes=self.max_bytes,
                part_size=self.part_size,
                min_entries=self.spec.min_entries,
            )
            samples = _Spill(os.path.join(scratch, "samples.arrow"))
            try:
                for batch in batches:
                    if self.failed and not self.options.skip_invalid:
                        continue  # keep checking to report every problem, but write nothing more
                    writer.add(batch.get_column(ID), batch.get_column(RUN))
                    samples.add(batch.select(pl.col(ROW).cast(pl.Int64).alias("row"), pl.col(ID).alias("id")))
                self._raise_problems()
            except BaseException:
                writer.abort()
                samples.close()
                raise
            shards = writer.close()
            samples.close()
        if not shards:
            raise ValidationError(self.problems) if self.problems else SheetError(f"{self.sheet.path}: no runs to plan")
        if self.problems:
            write_problems(os.path.join(directory, REJECTED_FILE), self.problems)
        manifest = finish_plan(
            directory,
            self.spec,
            shards,
            samples.frames(),
            inline=self.options.inline,
            defaults=self.defaults.run,
            submission=self.defaults.submission,
            staging_uri=self.defaults.staging_uri,
            sheet={
                "path": self.sheet.path,
                "sha256": self.sheet.sha256,
                "rows": self.rows,
                "id_column": self.sheet.id_column,
            },
            options={
                "group": self.options.group,
                "list_columns": list(self.options.list_columns),
                "skip_invalid": self.options.skip_invalid,
                "inline": self.options.inline,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
            },
            rejected=len({p.row for p in self.problems}),
        )
        shutil.rmtree(scratch)
        return manifest


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike[str], force: bool) -> Iterator[str]:
    """A temporary directory beside ``out``, renamed to ``out`` only if the block succeeds."""
    target = os.path.abspath(os.fspath(out))
    _check_target(target, force)
    parent = os.path.dirname(target)
    created = parent
    while not os.path.exists(os.path.dirname(created)):
        created = os.path.dirname(created)  # the outermost folder this call creates, if any
    made_parent = not os.path.exists(parent)
    os.makedirs(parent, exist_ok=True)
    staging_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    try:
        yield staging_dir
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staging_dir, target)
    except BaseException:
        shutil.rmtree(created if made_parent else staging_dir, ignore_errors=True)
        raise


def finish_plan(
    directory: str,
    spec: BackendSpec,
    shards: list[ShardInfo],
    samples: Iterable[pl.DataFrame],
    *,
    inline: bool,
    defaults: dict[str, Any],
    submission: dict[str, Any],
    staging_uri: str | None,
    sheet: dict[str, Any],
    options: dict[str, Any],
    rejected: int = 0,
) -> dict[str, Any]:
    """Name shard modes, write samples.parquet and plan.json; return the manifest."""
    _set_modes(shards, spec, inline, submission)
    _write_samples(directory, samples, shards)
    canonical = {
        "format": FORMAT,
        "backend": spec.name,
        "defaults": defaults,
        "submission": submission,
        "shards": [[s.sha256, s.entries, s.mode] for s in shards],
    }
    manifest = {
        "format": FORMAT,
        "backend": spec.name,
        "plan_id": hashlib.sha256(orjson.dumps(canonical)).hexdigest()[:24],
        "runs": sum(s.entries for s in shards),
        "rejected": rejected,
        "defaults": defaults,
        "submission": submission,
        "staging": {"uri": staging_uri},
        "sheet": sheet,
        "options": options,
        "shards": [s.to_json() for s in shards],
    }
    with open(os.path.join(directory, PLAN_FILE), "wb") as handle:
        handle.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def _write_samples(directory: str, samples: Iterable[pl.DataFrame], shards: list[ShardInfo]) -> None:
    """samples.parquet: every planned sample's sheet row, id, shard and position in it.

    Written a row group at a time from pieces in shard order; row groups hold a fixed
    number of rows, so the file's bytes do not depend on how the sheet was batched.
    """
    import pyarrow.parquet as pq

    sizes = pl.Series([s.entries for s in shards], dtype=pl.Int64)
    ends = sizes.cum_sum()
    starts = ends - sizes
    path = os.path.join(directory, SAMPLES_FILE)
    schema = {"row": pl.Int64, "id": pl.String}
    writer: Any = None
    offset = 0

    def write(piece: pl.DataFrame) -> None:
        nonlocal writer, offset
        ordinal = pl.int_range(offset, offset + piece.height, dtype=pl.Int64, eager=True)
        shard = ends.search_sorted(ordinal, side="right")
        table = piece.with_columns(
            shard.cast(pl.Int32).alias("shard"), (ordinal - starts.gather(shard)).cast(pl.Int32).alias("position")
        ).to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd", write_statistics=False)
        writer.write_table(table, row_group_size=SAMPLES_ROW_GROUP)
        offset += piece.height

    pending = pl.DataFrame(schema=schema)
    try:
        for piece in samples:
            pending = pl.concat([pending, piece.select(pl.col("row").cast(pl.Int64), pl.col("id").cast(pl.String))])
            while pending.height >= SAMPLES_ROW_GROUP:
                write(pending.head(SAMPLES_ROW_GROUP))
                pending = pending.slice(SAMPLES_ROW_GROUP)
        if pending.height or writer is None:
            write(pending)
    finally:
        if writer is not None:
            writer.close()


def _set_modes(shards: list[ShardInfo], spec: BackendSpec, inline: bool, submission: dict[str, Any]) -> None:
    if spec.inline_max is not None:
        total = sum(s.entries for s in shards)
        mode = "inline" if inline or (len(shards) == 1 and total <= spec.inline_max) else "s3"
    else:
        mode = spec.shard_mode(submission)
    for shard in shards:
        shard.mode = mode


def _check_target(target: str, force: bool) -> None:
    if not os.path.exists(target):
        return
    if not force:
        raise InputError(f"{target} already exists; plan into a new directory, or pass --force to replace it")
    if not os.path.isfile(os.path.join(target, PLAN_FILE)):
        raise InputError(f"{target} exists and is not a plan directory; refusing to replace it")
    if os.path.exists(os.path.join(target, "ledger.sqlite")):
        raise PlanDirError(
            f"{target} has been submitted (ledger.sqlite); it is the record of what was sent: plan into a new directory"
        )


def _problems(bad: pl.DataFrame, checks: Sequence[Check]) -> list[Problem]:
    found = []
    for record in bad.iter_rows(named=True):
        for index in record[WHY].split(","):
            check = checks[int(index)]
            found.append(
                Problem(record[ROW], record[ID], check.column, record[f"__v{index}"], check.rule, check.message)
            )
    return found


def write_problems(path: str, problems: Iterable[Problem]) -> None:
    rows = [(p.row, p.id, p.column, p.value, p.rule, p.message) for p in problems]
    table = pl.DataFrame(
        rows,
        schema={
            "row": pl.Int64,
            "id": pl.String,
            "column": pl.String,
            "value": pl.String,
            "rule": pl.String,
            "message": pl.String,
        },
        orient="row",
    )
    safe_csv(table, path)


def safe_csv(table: pl.DataFrame, path: str) -> None:
    """Write CSV with spreadsheet formulas neutralised: a text cell starting with = + - @ (or a
    tab or CR) gets a leading quote, so opening the file in a spreadsheet runs nothing."""
    texts = [c for c, t in table.schema.items() if t == pl.String]
    table.with_columns(
        pl.when(pl.col(c).str.contains(r"^[=+\-@\t\r]")).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in texts
    ).write_csv(path)


def _as_text(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return (
        value.cast(pl.String)
        if dtype in (pl.String, pl.Int64, pl.Float64, pl.Boolean) or dtype.is_numeric()
        else json_text(value)
    )


_HASH = "__hash"


class _Spill:
    """Frames of one schema appended to an Arrow IPC stream on disk, read back in order:
    per-row state of the whole sheet lives on disk, not in memory, while the plan streams."""

    def __init__(self, path: str):
        self.path = path
        self.writer: Any = None

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        import pyarrow as pa

        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pa.ipc.new_stream(self.path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def frames(self) -> Iterator[pl.DataFrame]:
        if not os.path.exists(self.path):
            return
        import pyarrow as pa

        # Read, not memory-mapped: mapped pages would count in the process's RSS.
        with pa.OSFile(self.path) as source:
            for record_batch in pa.ipc.open_stream(source):
                frame = pl.from_arrow(record_batch)
                assert isinstance(frame, pl.DataFrame)
                yield frame


class _IdHashes:
    """Every row's 8-byte id hash, spilled to disk in 16 partitions by its top bits.

    Equal hashes land in the same partition, so repeats are found one partition at a
    time: memory for this check is a sixteenth of the sheet's hashes, not all of them.
    """

    PARTS = 16

    def __init__(self, scratch: str):
        self.spills = [_Spill(os.path.join(scratch, f"ids-{i:02d}.arrow")) for i in range(self.PARTS)]

    def add(self, frame: pl.DataFrame) -> None:
        parts = frame.with_columns((pl.col(_HASH) // (1 << 60)).cast(pl.Int64).alias("__part"))
        for (part,), piece in parts.partition_by("__part", as_dict=True, include_key=False).items():
            self.spills[int(part)].add(piece)  # type: ignore[call-overload]

    def close(self) -> None:
        for spill in self.spills:
            spill.close()

    def suspects(self) -> pl.Series:
        """Rows whose id hash some other row shares, in row order."""
        found = []
        for spill in self.spills:
            frames = list(spill.frames())
            if frames:
                part = pl.concat(frames)
                found.append(part.filter(pl.col(_HASH).is_duplicated()).get_column(ROW))
            with contextlib.suppress(FileNotFoundError):
                os.remove(spill.path)
        return pl.concat(found).sort() if found else pl.Series(ROW, [], dtype=pl.UInt32)


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced on a background thread up to ``depth`` ahead.

    Decoding the next Parquet batch (pyarrow releases the GIL) then overlaps with polars
    encoding this one; at most ``depth`` batches wait, so memory stays bounded.
    """
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(("end", None))
        except BaseException as exc:
            ready.put(("error", exc))

    thread = threading.Thread(target=produce, name="planner-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)  # unblock a producer waiting to hand over
        thread.join()


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
) -> Plan:
    """Plan ``sheet`` (a path, glob, s3:// URI, or polars frame) for ``backend``.

    Raises an ``InputError`` (``ValidationError`` with every problem) for bad input.
    """
    spec = get_backend(backend)
    loaded = load_defaults(defaults, sets, spec)
    opened = open_sheet(sheet, id_column=id_column or loaded.id_column, types=loaded.types, s3_client=s3_client)
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
    )
    return Plan(opened, loaded, spec, options)


def read_plan(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``plan.json`` of a plan directory, checked for format."""
    path = os.path.join(os.fspath(directory), PLAN_FILE)
    try:
        with open(path, "rb") as handle:
            manifest = orjson.loads(handle.read())
    except FileNotFoundError:
        raise PlanDirError(
            f"{directory}: not a plan directory (no {PLAN_FILE}); make one with `planner plan`"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise PlanDirError(f"{path}: damaged: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise PlanDirError(f"{path}: plan format {manifest.get('format')!r}; this planner reads format {FORMAT}")
    return manifest
