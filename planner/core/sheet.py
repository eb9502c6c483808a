"""Reading sample sheets: CSV, TSV, Parquet and NDJSON, local, globbed or on S3.

CSV and TSV cells are read as strings (``007`` stays ``007``) and an empty cell
means "not set"; a column's type is declared in the defaults file.  Parquet and
NDJSON keep their own types.  Every row carries ``__row``, its 1-based number
among the data rows (the header is not counted), so every message can name it.
"""

from __future__ import annotations

import contextlib
import csv
import glob as globlib
import hashlib
import io
import os
import re
import shutil
import stat
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from planner.errors import DefaultsError, SheetError, setting

# An s3:// sheet's reader, from the service layer: the URI in, local copies of its files out.
Download = Callable[[str], list[str]]

ROW = "__row"
RAW_PREFIX = "__raw__"
ID_CANDIDATES = ("sample_id", "sample", "id")
SHEET_TYPES = {"string": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "json": pl.String}
_TEXT_FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSON_LINES = {".ndjson", ".jsonl"}
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


@dataclass
class Sheet:
    """A sample sheet opened lazily, with its id column and declared types resolved.

    In ``frame`` the sheet's columns are renamed ``c0``, ``c1``, ...: polars reads a
    name like ``^x$`` or ``*`` in ``pl.col`` as a pattern, and a sheet may well have a
    column called ``__row``.  ``source`` maps each column name of the sheet to its
    name in ``frame``; messages always use the sheet's own names.
    """

    frame: pl.LazyFrame  # every column of the sheet (internal names), plus __row
    columns: list[str]  # the sheet's column names in order
    source: dict[str, str]  # sheet column name -> column of ``frame``
    id_column: str
    path: str
    sha256: str
    raw_json: set[str] = field(default_factory=set)  # frame columns whose cells are JSON text (type "json")
    type_problems: list[tuple[str, str]] = field(default_factory=list)  # (sheet column, declared type) to check per row
    prepare: Callable[[pl.LazyFrame, int], pl.LazyFrame] | None = None  # raw rows -> the columns of ``frame``
    bytes_per_row: float | None = None  # a rough size of one row, to size batches (None: unknown)
    parquet_files: list[str] | None = None  # read in record batches with pyarrow (see ``batches``)

    def batches(self, rows: int) -> Iterator[pl.LazyFrame] | None:
        """The sheet as frames of at most ``rows`` rows, each like ``frame``, or None to stream ``frame``.

        polars' streaming Parquet reader holds several row groups at once (about 650 MB for a
        1M-row, 20-column sheet); pyarrow's record batches keep memory to a batch.
        """
        if not self.parquet_files or self.prepare is None:
            return None
        return self._parquet_batches(rows)

    def _parquet_batches(self, rows: int) -> Iterator[pl.LazyFrame]:
        import pyarrow.parquet as pq  # start-up: pyarrow loads only for the sheets and files that need it

        assert self.prepare is not None and self.parquet_files is not None
        first = 1
        for file in self.parquet_files:
            reader = pq.ParquetFile(file)
            # One row group at a time: iter_batches over a whole file keeps memory it has
            # read (about 20 bytes a row), so the peak would grow with the sheet.
            for record_batch in (
                b
                for g in range(reader.metadata.num_row_groups)
                for b in reader.iter_batches(batch_size=rows, row_groups=[g])
            ):
                batch = pl.from_arrow(record_batch)
                assert isinstance(batch, pl.DataFrame)
                yield self.prepare(batch.lazy(), first)
                first += batch.height

    def name_of(self, internal: str) -> str:
        """The sheet's name for a column of ``frame``."""
        for name, column in self.source.items():
            if column == internal:
                return name
        return internal


@contextlib.contextmanager
def polars_errors(path: str) -> Iterator[None]:
    """Map the errors polars raises while reading a sheet into SheetError."""
    try:
        yield
    except (
        pl.exceptions.ComputeError,
        pl.exceptions.NoDataError,
        pl.exceptions.SchemaError,
        pl.exceptions.ShapeError,
    ) as exc:
        if "more fields than defined" in str(exc):
            raise SheetError(
                f"{path}: {_ragged_row(path)}has more cells than the header: check quoting and the delimiter"
            ) from exc
        if "invalid utf-8" in str(exc).lower():
            raise SheetError(_not_utf8_in(path)) from exc
        raise SheetError(f"{path}: cannot read the sheet: {_first_line(exc)}") from exc
    except pl.exceptions.PolarsError as exc:
        raise SheetError(f"{path}: cannot read the sheet: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _ragged_row(path: str, fewer: bool = False) -> str:
    """``"row N "`` of the first data row with more (or, with ``fewer``, fewer) cells than the
    header (error path only: the csv module is slow, but it counts records as polars does)."""
    suffix = _suffix(path)
    if suffix not in _TEXT_FORMATS or not os.path.isfile(path):
        return "a row "
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter=_TEXT_FORMATS[suffix])
        width = len(next(reader, []))
        for number, record in enumerate(reader, start=1):
            if (0 < len(record) < width) if fewer else len(record) > width:
                return (
                    f"row {number} ({len(record)} {'cell' if len(record) == 1 else 'cells'}, the header has {width}) "
                )
    return "a row "


# Byte-order marks of the encodings a spreadsheet may save "Unicode text" in.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_ESCAPED = re.compile("[\udc80-\udcff]+")  # bytes that are not UTF-8, as errors="surrogateescape" keeps them


def _not_utf8_in(label: str) -> str:
    """The message for a CSV/TSV sheet polars found not to be UTF-8 past its first 64 KiB (error path only)."""
    files = [label] if os.path.isfile(label) else sorted(globlib.glob(label)) if globlib.has_magic(label) else []
    for file in files:
        suffix = _suffix(file)
        if suffix not in _TEXT_FORMATS:
            continue
        with open(file, "rb") as handle:
            head = handle.read(1 << 16)
        found = _not_utf8(file, _TEXT_FORMATS[suffix], head, quiet=True)
        if found:
            return f"{label}: {found}" if file == label else f"{label} ({file}): {found}"
    return f"{label}: is not UTF-8 text; save it as UTF-8"


def _not_utf8(file: str, separator: str, head: bytes, quiet: bool = False) -> str:
    """Where the first byte that is not UTF-8 is (row and column) and the encoding the file looks like.

    Only on the error path: the csv module reads the file up to that row, with the bytes that
    do not decode kept as lone surrogates, so a record spanning lines still counts as one row.
    With ``quiet``, "" when every byte decodes.
    """
    if head.startswith(_UTF16_BOMS):
        return "is not UTF-8 text (it begins with a UTF-16 byte-order mark); save it as UTF-8"
    if b"\x00" in head:
        return "is not UTF-8 text (it holds NUL bytes, as UTF-16 does); save it as UTF-8"
    header: list[str] = []
    try:
        with open(file, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            for number, record in enumerate(csv.reader(handle, delimiter=separator)):
                if number == 0:
                    header = record
                for index, cell in enumerate(record):
                    if _ESCAPED.search(cell):
                        return _bad_cell(number, index, header, cell)
    except (csv.Error, OSError):
        pass
    return "" if quiet else "is not UTF-8 text; save it as UTF-8"


def _bad_cell(row: int, index: int, header: list[str], cell: str) -> str:
    """``row 1, column 'sample': byte 0xE9 is not UTF-8; the file looks like Windows-1252 (é, as in 'José')...``"""
    runs = _ESCAPED.findall(cell)
    byte = ord(runs[0][0]) - 0xDC00
    codec, title = "cp1252", "Windows-1252"
    try:
        for run in runs:
            _decoded(run, codec)
    except UnicodeDecodeError:  # a byte Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D)
        codec, title = "latin-1", "Latin-1 (ISO-8859-1)"

    def readable(text: str) -> str:
        return _ESCAPED.sub(lambda found: _decoded(found.group(), codec, "replace"), text)

    if row == 0:
        where = f"the header, column {index + 1}"
    elif index < len(header):
        where = f"row {row}, column {readable(header[index])!r}"
    else:
        where = f"row {row}, column {index + 1}"
    letters = _decoded(runs[0], codec)
    example = f" ({letters}, as in {_clip(readable(cell))!r})" if letters.isprintable() else ""
    return f"{where}: byte 0x{byte:02X} is not UTF-8; the file looks like {title}{example}: save it as UTF-8"


def _decoded(escaped: str, codec: str, errors: str = "strict") -> str:
    """Bytes kept as lone surrogates (errors="surrogateescape"), decoded with ``codec``."""
    return bytes(ord(ch) - 0xDC00 for ch in escaped).decode(codec, errors)


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _CellCount:
    """Separators and line ends of a CSV/TSV file, counted while it is hashed.

    polars fills a row with fewer cells than the header with nulls, silently: a line cut
    short would plan with defaults where its values were.  When the file has no quote
    character every record is one line, so if the separators number (width - 1) per line
    no row is short (one with more cells polars refuses itself).  Otherwise
    ``_refuse_short_rows`` parses the file to find out.
    """

    def __init__(self, separator: str):
        self.separator = separator.encode()
        self.separators = 0
        self.lines = 0
        self.quoted = False
        self.last = b"\n"

    def feed(self, chunk: bytes) -> None:
        self.separators += chunk.count(self.separator)
        self.lines += chunk.count(b"\n")
        self.quoted = self.quoted or b'"' in chunk
        self.last = chunk[-1:]

    def even(self, width: int) -> bool:
        records = self.lines + (self.last != b"\n")  # the header included
        return not self.quoted and self.separators == (width - 1) * records


def _refuse_short_rows(file: str, separator: str, width: int, label: str) -> None:
    """SheetError naming the first data row with fewer cells than the header, if any.

    pyarrow's parser (C++, quoted separators and newlines understood) only finds out
    whether there is one; the csv module then names its row.  Blank lines are not rows
    with fewer cells: polars reads them as empty rows, which fail the id check.
    """
    # start-up: pyarrow loads only for the sheets and files that need it
    import pyarrow as pa
    import pyarrow.csv as pacsv

    short: list[Any] = []

    def invalid(row: Any) -> str:
        if row.actual_columns < row.expected_columns:
            short.append(row)
            return "error"  # one is enough: stop parsing
        return "skip"  # more cells than the header: polars refuses those, naming the row

    try:
        # The header is read as a row like any other (pyarrow's skip_rows counts lines, not
        # records, and a quoted header may span lines); only the first column is converted.
        reader = pacsv.open_csv(
            file,
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=separator, newlines_in_values=True, invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=["f0"], column_types={"f0": pa.string()}, check_utf8=False
            ),
        )
        for _ in reader:
            pass
    except (pa.ArrowException, OSError):
        pass  # anything else wrong with the file is polars' to report, as for any sheet
    if short:
        located = _ragged_row(file, fewer=True)
        if located == "a row ":  # the csv module read it otherwise: say what pyarrow saw
            located = f"a row ({short[0].actual_columns} of {width} cells) "
        raise SheetError(
            f"{label}: {located}has fewer cells than the header: a cell is missing or the line was cut short; "
            'write every cell (an empty one for "not set") and check quoting and the delimiter'
        )


def open_sheet(
    source: str | os.PathLike[str] | pl.DataFrame | pl.LazyFrame,
    *,
    id_column: str | None = None,
    types: dict[str, str] | None = None,
    download: Download | None = None,
) -> Sheet:
    """Open a sheet lazily; check its header, id column and declared types.

    An ``s3://`` sheet is read through ``download`` (``planner.services.staging.sheet_download``
    makes one): the service layer copies it into a private temporary folder and returns the
    files, which are removed here when the sheet is refused or the ``Sheet`` is gone."""
    types = dict(types or {})
    for column, kind in types.items():
        if kind not in SHEET_TYPES:
            raise DefaultsError(f"[sheet.types] {column} = {kind!r}: unknown type; use one of {', '.join(SHEET_TYPES)}")
    downloaded: str | None = None
    header: list[str] | None = None
    parquet: list[str] | None = None
    files: list[str] = []
    if isinstance(source, (pl.DataFrame, pl.LazyFrame)):
        frame, label, digest = _from_frame(source)
    else:
        frame, label, digest, header, files = _from_path(str(source), download)
        if str(source).startswith("s3://"):
            downloaded = os.path.dirname(files[0])
        if _suffix(files[0]) == ".parquet":
            parquet = files
    # A sheet downloaded from S3 is removed if it is refused here (or, below, when the Sheet is gone).
    with removed_on_error(downloaded):
        read_names = frame.collect_schema().names()
        # The csv module reads escaped quotes in a header ("say ""hi""") the way the file means them.
        columns = header if header is not None and len(header) == len(read_names) else read_names
        _check_header(columns, label)
        chosen = _choose_id_column(columns, id_column, label)
        missing = sorted(set(types) - set(columns))
        if missing:
            raise DefaultsError(
                f"[sheet.types] names {', '.join(map(repr, missing))}, which the sheet {label} does not have; its "
                f"columns are {', '.join(map(repr, columns))}"
            )
        source_of = {name: f"c{index}" for index, name in enumerate(columns)}
        renames = dict(zip(read_names, source_of.values(), strict=False))
        schema = frame.rename(renames).collect_schema()
        internal_types = {source_of[c]: k for c, k in types.items()}
        raw_json = {c for c, k in internal_types.items() if k == "json" and schema[c] == pl.String}

        def prepare(raw: pl.LazyFrame, first_row: int) -> pl.LazyFrame:
            renamed = raw.rename(renames)
            # An empty string means "not set" in every format, not only in CSV cells.
            renamed = renamed.with_columns(pl.when(pl.col(pl.String) != "").then(pl.col(pl.String)))
            return _apply_types(renamed, schema, internal_types).with_row_index(ROW, offset=first_row)

        checks = [(c, k) for c, k in types.items() if k != "string" and schema[source_of[c]] == pl.String]
        sheet = Sheet(
            frame=prepare(frame, 1),
            columns=list(columns),
            source=source_of,
            id_column=chosen,
            path=label,
            sha256=digest,
            raw_json=raw_json,
            type_problems=checks,
            prepare=prepare,
            parquet_files=parquet,
            bytes_per_row=_row_size(source, files),
        )
        if downloaded is not None:
            # The frame reads the downloaded copy lazily: remove it when the sheet is gone.
            weakref.finalize(sheet, shutil.rmtree, downloaded, True)
        return sheet


def _from_frame(source: pl.DataFrame | pl.LazyFrame) -> tuple[pl.LazyFrame, str, str]:
    frame = source.lazy()
    digest = hashlib.sha256()
    # A content hash of an in-memory frame: its rows' hashes, in order.
    with polars_errors("<frame>"):
        hashes = frame.select(pl.struct(pl.all()).hash(seed=0)).collect().to_series()
    digest.update(hashes.to_arrow().buffers()[1] or b"")
    digest.update(orjson.dumps(frame.collect_schema().names()))
    return frame, "<frame>", digest.hexdigest()


def _from_path(path: str, download: Download | None) -> tuple[pl.LazyFrame, str, str, list[str] | None, list[str]]:
    """The scan of a local or S3 sheet, its label and hash, (CSV, TSV) the header as the
    csv module reads it, and the local files read (an S3 sheet is downloaded first)."""
    files = _resolve(path, download)
    with removed_on_error(os.path.dirname(files[0]) if path.startswith("s3://") else None):
        return _scanned(path, files)


@contextlib.contextmanager
def removed_on_error(directory: str | None) -> Iterator[None]:
    """Remove ``directory`` (a downloaded S3 sheet) if the block fails: a refused sheet leaves no copy behind."""
    try:
        yield
    except BaseException:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _scanned(path: str, files: list[str]) -> tuple[pl.LazyFrame, str, str, list[str] | None, list[str]]:
    suffix = _suffix(files[0])
    if any(_suffix(f) != suffix for f in files):
        raise SheetError(f"{path}: the glob matches sheets of different formats")
    for file in files:
        # Checked before reading: a device is read forever (/dev/zero), a named pipe blocks.
        where = path if len(files) == 1 else f"{path} ({file})"
        try:
            mode = os.stat(file).st_mode
        except OSError as exc:
            raise SheetError(f"{where}: cannot read the sheet: {exc.strerror}") from exc
        if not stat.S_ISREG(mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(mode)
                else "a named pipe"
                if stat.S_ISFIFO(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "a device"
            )
            raise SheetError(f"{where}: is {kind}, not a regular file; save the sheet to a file and plan that")
    digest = hashlib.sha256()
    counts: list[tuple[str, str, _CellCount]] = []
    for file in files:
        where = path if len(files) == 1 else f"{path} ({file})"
        depth = _DepthScan() if suffix in _JSON_LINES else None
        cells = _CellCount(_TEXT_FORMATS[suffix]) if suffix in _TEXT_FORMATS else None
        try:
            with open(file, "rb") as handle, ThreadPoolExecutor(1, thread_name_prefix="planner-sheet-hash") as hasher:
                hashed: Future[None] | None = None
                while chunk := handle.read(1 << 23):
                    if hashed is not None:
                        hashed.result()
                    hashed = hasher.submit(
                        digest.update, chunk
                    )  # hashlib lets go of the GIL: the scans below overlap it
                    if depth is not None:
                        depth.feed(chunk)
                    if cells is not None:
                        cells.feed(chunk)
                if hashed is not None:
                    hashed.result()
        except OSError as exc:
            raise SheetError(f"{where}: cannot read the sheet: {exc.strerror}") from exc
        if depth is not None and depth.suspect:
            _refuse_deep_lines(file, where)
        if cells is not None:
            _refuse_compressed_looking(file, where)
            counts.append((file, where, cells))
    header = None
    if suffix in _TEXT_FORMATS:
        separator, header = _sniff(files[0], suffix, path)
        for file, where, cells in counts:
            if not cells.even(len(header)):
                _refuse_short_rows(file, separator, len(header), where)
    with polars_errors(path):
        if suffix in _TEXT_FORMATS:
            frame = pl.scan_csv(
                files, separator=separator, infer_schema=False, quote_char='"', encoding="utf8", raise_if_empty=True
            )
        elif suffix == ".parquet":
            frame = pl.scan_parquet(files)
        elif suffix in _JSON_LINES:
            frame = pl.scan_ndjson(files, infer_schema_length=None)
        else:
            raise SheetError(
                f"{path}: unknown sheet format {suffix!r}; use .csv, .tsv, .tab, .parquet, .ndjson or .jsonl"
            )
        frame.collect_schema()
    return frame, path, digest.hexdigest(), header, files


# polars decompresses a CSV whose first bytes are a gzip, zlib or zstd header, whatever its name,
# and fails ("corrupt deflate stream") on text that only starts like one: a header "x^..." is a zlib
# header to it. A sheet is plain UTF-8 text, so such a start is refused with a way out.
_COMPRESSED_STARTS = (b"\x1f\x8b", b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x28\xb5\x2f\xfd")


def _refuse_compressed_looking(file: str, where: str) -> None:
    with open(file, "rb") as handle:
        start = handle.read(4)
    if start.startswith(_COMPRESSED_STARTS):
        shown = start[:2].decode("utf-8", "backslashreplace")
        raise SheetError(
            f"{where}: the sheet starts with {shown!r}, which reads as the header of a compressed stream: "
            "a sheet must be uncompressed text; rename its first column (or save it with a UTF-8 BOM)"
        )


# orjson writes JSON at most 254 levels deep, and polars (2.1) crashes reading NDJSON nested a
# few hundred levels deep; JSON values nested deeper are refused.
MAX_JSON_DEPTH = 254
_MAX_LINE_DEPTH = MAX_JSON_DEPTH + 1  # an NDJSON line: the row's own object, then its values
_KEEP_OPENERS = bytes(b for b in range(256) if b not in b"{[\n")
_BRACKET_TO_BRACE = bytes.maketrans(b"[", b"{")
_TOO_MANY_OPENERS = b"{" * (_MAX_LINE_DEPTH + 1)
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class _DepthScan:
    """A cheap streaming check that no NDJSON line opens more than ``_MAX_LINE_DEPTH`` brackets.

    Each chunk is reduced (in C) to its ``{``/``[`` and newlines, and a run of more openers
    than the limit within one line is searched for; a line that has one is only a suspect
    (brackets inside strings count too): ``_refuse_deep_lines`` then measures it exactly.
    """

    def __init__(self) -> None:
        self.carry = b""  # the openers of the line still open at the end of the last chunk
        self.suspect = False

    def feed(self, chunk: bytes) -> None:
        if self.suspect:
            return
        openers = self.carry + chunk.translate(_BRACKET_TO_BRACE, _KEEP_OPENERS)
        if _TOO_MANY_OPENERS in openers:
            self.suspect = True
        self.carry = openers[openers.rfind(b"\n") + 1 :]


def _refuse_deep_lines(file: str, label: str) -> None:
    """SheetError naming the first line of an NDJSON file nested deeper than the limit, if any."""
    with open(file, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.count(b"{") + line.count(b"[") > _MAX_LINE_DEPTH and json_depth(line) > _MAX_LINE_DEPTH:
                raise SheetError(
                    f"{label}: line {number}: JSON nested deeper than {MAX_JSON_DEPTH} levels (inside the row's "
                    f"object); the planner handles at most {MAX_JSON_DEPTH}"
                )


def json_depth(text: bytes) -> int:
    """How deep the brackets of JSON text nest (strings skipped; malformed text is measured as it stands)."""
    depth = deepest = 0
    for token in _JSON_TOKENS.findall(text):
        if token in (b"{", b"["):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"}", b"]"):
            depth = max(depth - 1, 0)
    return deepest


def _row_size(source: object, files: list[str]) -> float | None:
    """About how many bytes one row takes, from the file's start or its metadata (cheap)."""
    if isinstance(source, pl.DataFrame):
        return source.estimated_size() / max(1, source.height)
    if not files:
        return None
    if _suffix(files[0]) == ".parquet":
        import pyarrow.parquet as pq  # start-up: pyarrow loads only for the sheets and files that need it

        metadata = pq.ParquetFile(files[0]).metadata
        total = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        return total / max(1, metadata.num_rows)
    with open(files[0], "rb") as handle:
        head = handle.read(1 << 22)
    return len(head) / max(1, head.count(b"\n"))


def _suffix(file: str) -> str:
    return Path(file).suffix.lower()


def _resolve(path: str, download: Download | None) -> list[str]:
    if path.startswith("s3://"):
        if download is None:
            raise SheetError(f"{path}: a sheet on S3 needs the S3 access of a command (planner plan, the Python API)")
        return download(path)
    if any(ch in path for ch in "*?["):
        files = sorted(globlib.glob(path))
        if not files:
            raise SheetError(f"{path}: no file matches this glob")
        return files
    if not os.path.exists(path):
        raise SheetError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SheetError(f"{path}: is a directory, not a sheet")
    return [path]


def _sniff(file: str, suffix: str, label: str) -> tuple[str, list[str]]:
    """Read the header with the csv module to catch what polars would silently rename."""
    expected = _TEXT_FORMATS[suffix]
    with open(file, "rb") as handle:
        head = handle.read(1 << 16)
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if len(head) == 1 << 16 and exc.start > len(head) - 4:
            text = head[: exc.start].decode("utf-8-sig")
        else:
            raise SheetError(f"{label}: {_not_utf8(file, expected, head)}") from exc
    if not text.strip():
        raise SheetError(f"{label}: the sheet is empty: it needs a header row and one row per sample")
    if "\x00" in text.split("\n", 1)[0]:
        # NUL bytes beside letters: UTF-16 or UTF-32 without a byte-order mark.
        raise SheetError(f"{label}: is not UTF-8 text (it holds NUL bytes, as UTF-16 does); save it as UTF-8")
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), delimiter=expected), [])
    except csv.Error as exc:
        raise SheetError(f"{label}: cannot read the header: {exc} (lines must end with LF or CRLF)") from exc

    if len(header) == 1:
        for other, name in (("\t", "tab"), (",", "comma"), (";", "semicolon"), ("|", "pipe")):
            if other != expected and other in header[0]:
                raise SheetError(
                    f"{label}: the header has one column but contains {name}s: the file looks {name}-separated; "
                    f"a {suffix} sheet must be separated by {'tabs' if expected == chr(9) else 'commas'} (rename it "
                    "or convert it)"
                )
    return expected, header


def _check_header(columns: Sequence[str], label: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(columns, start=1):
        if not str(name).strip():
            raise SheetError(f"{label}: column {index} of the header has no name")
        if name in seen:
            raise SheetError(f"{label}: column {name!r} appears twice in the header")
        seen.add(name)


def _choose_id_column(columns: Sequence[str], wanted: str | None, label: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise SheetError(
                f"{label}: the id column {wanted!r} is not in the sheet; its columns are "
                f"{', '.join(map(repr, columns))}"
            )
        return wanted
    for name in ID_CANDIDATES:
        if name in columns:
            return name
    raise SheetError(
        f"{label}: no id column: name one with {setting('id_column')}, or call a column "
        f"{', '.join(ID_CANDIDATES)}; the columns are {', '.join(map(repr, columns))}"
    )


def _apply_types(frame: pl.LazyFrame, schema: pl.Schema, types: dict[str, str]) -> pl.LazyFrame:
    """Cast declared columns; a cell that does not convert becomes null and is reported by validate."""
    casts = []
    for column, kind in types.items():
        source = pl.col(column)
        if schema[column] == pl.String and kind != "string":
            casts.append(source.alias(RAW_PREFIX + column))  # kept so validate can show what failed to convert
        if schema[column] != pl.String:
            if kind == "json":
                continue  # Parquet and NDJSON values are already typed JSON values.
            casts.append(source.cast(SHEET_TYPES[kind], strict=False))
            continue
        if kind == "int":
            casts.append(source.str.strip_chars().cast(pl.Int64, strict=False))
        elif kind == "float":
            value = source.str.strip_chars().cast(pl.Float64, strict=False)
            casts.append(pl.when(value.is_finite()).then(value))
        elif kind == "bool":
            lowered = source.str.strip_chars().str.to_lowercase()
            casts.append(
                pl.when(lowered.is_in(_TRUE))
                .then(True)
                .when(lowered.is_in(_FALSE))
                .then(False)
                .otherwise(None)
                .alias(column)
            )
        elif kind == "json":
            casts.append(source.map_batches(_canonical_json, return_dtype=pl.String))
    return frame.with_columns(casts) if casts else frame


def _canonical_json(cells: pl.Series) -> pl.Series:
    # Cells declared "json" are opt-in and few: parse each with orjson and write it back
    # compact, so equal values give equal bytes. A cell that does not parse becomes null.
    def one(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            return orjson.dumps(orjson.loads(text)).decode()
        except orjson.JSONDecodeError:
            return None
        except orjson.JSONEncodeError:  # parsed, but nested deeper than orjson writes (see json_too_deep)
            return None

    return pl.Series(cells.name, [one(t) for t in cells.to_list()], dtype=pl.String)


def json_too_deep(cells: pl.Series) -> pl.Series:
    """Whether each JSON text cell nests deeper than ``MAX_JSON_DEPTH`` (null: False)."""
    if cells.null_count() == cells.len():
        return pl.Series(cells.name, [False] * cells.len(), dtype=pl.Boolean)
    return pl.Series(
        cells.name,
        [t is not None and json_depth(t.encode()) > MAX_JSON_DEPTH for t in cells.to_list()],
        dtype=pl.Boolean,
    )
