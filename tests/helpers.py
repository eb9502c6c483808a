"""The tests' one set of builders: sheets, defaults, plans, the CLI; and readers of plan directories.

* a sheet: ``sheet_frame(n, **columns)`` (a polars frame, S0000, S0001, ...), written with
  ``write_sheet(path, frame)``; or ``write_csv(path, header, rows)`` (a sheet file, byte for byte as given);
* defaults: ``DEFAULTS`` / ``defaults_for(backend, **sections)`` (a valid document per backend),
  ``write_defaults(path, document)`` (TOML or JSON by suffix);
* a plan: ``make_plan(tmp_path, sheet, backend, defaults=..., **options)`` (``planner.plan(...).write``);
* the CLI: ``plan_argv(tmp_path, sheet, *extra)`` (the arguments of ``planner plan``);
  ``run_cli(argv, capsys)`` (``planner.cli.main`` in-process: exit status, stdout, stderr), the way to
  test what a command says and its exit status; ``run_cli_process(argv)`` and ``start_cli_process(argv)``
  (``python -m planner.cli`` as a child process), only for what a real process shows: start-up, signals,
  the entry point, that no traceback reaches the terminal.

Everything a test writes goes under its own tmp_path; nothing here touches the repo.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import polars as pl

import planner
import planner.cli

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SHEETS = REPO / "sample_sheets"
REAL_SHEETS = REPO.parent / "shared" / "real_sheets"

ROLE = "arn:aws:iam::123456789012:role/omics-batch"

# A small valid defaults document per backend (the shape of the files in sample_sheets/).
DEFAULTS: dict[str, dict[str, Any]] = {
    "omics-batch": {
        "run": {
            "workflowId": "1234567",
            "roleArn": ROLE,
            "outputUri": "s3://bucket/results/",
            "storageType": "DYNAMIC",
            "parameters": {"reference": "s3://refs/hg38.fa", "threads": 8},
            "runTags": {"project": "cohort-2026"},
        },
        "submission": {"batchName": "cohort-2026-11"},
    },
    "omics-run": {
        "run": {
            "workflowId": "7654321",
            "roleArn": ROLE,
            "outputUri": "s3://bucket/results/",
            "parameters": {"genome": "GRCh38"},
            "tags": {"project": "germline"},
        },
    },
    "batch": {
        "run": {"jobQueue": "queue", "jobDefinition": "jobdef:1", "parameters": {"reference": "s3://refs/hg38.fa"}},
    },
    "glue": {
        "run": {
            "JobName": "etl",
            "WorkerType": "G.1X",
            "NumberOfWorkers": 2,
            "Arguments": {"--input_format": "parquet"},
        },
    },
    "polly": {
        "run": {"parameters": {"genome": "GRCh38"}, "config": {"infra": {"cpu": 2, "memory": 8}}},
        "submission": {"pipeline_id": "pl-rnaseq"},
    },
}


def defaults_for(backend: str, **sections: Any) -> dict[str, Any]:
    """A deep copy of the backend's valid defaults, with whole sections replaced or added."""
    document = copy.deepcopy(DEFAULTS[backend])
    document.update(copy.deepcopy(sections))
    return document


# ---------------------------------------------------------------- writing inputs


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string, but for DEL (which TOML wants escaped).
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007F")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(document: Mapping[str, Any]) -> str:
    """A TOML text for a defaults document (tables of scalars, nested tables as [a.b])."""
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{name}]")
        for key, value in scalars.items():
            lines.append(f"{_toml_string(key)} = {_toml_value(value)}")
        lines.append("")
        for key, value in tables.items():
            table(f"{name}.{_toml_string(key)}", value)

    for section, values in document.items():
        table(section, values)
    return "\n".join(lines) + "\n"


def write_defaults(path: Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as TOML or JSON, by the suffix of ``path``."""
    if path.suffix == ".json":
        path.write_bytes(orjson.dumps(document))
    else:
        path.write_text(to_toml(document), encoding="utf-8")
    return path


def csv_text(
    header: Sequence[str],
    rows: Iterable[Sequence[str | None]],
    *,
    sep: str = ",",
    newline: str = "\n",
    quote_all: bool = False,
) -> str:
    """CSV text; ``None`` and ``""`` are written as empty cells."""

    def cell(value: str | None) -> str:
        if value is None or value == "":
            return '""' if quote_all and value == "" else ""
        if quote_all or any(ch in value for ch in (sep, '"', "\r", "\n")):
            return '"' + value.replace('"', '""') + '"'
        return value

    out = [sep.join(cell(h) for h in header)]
    out += [sep.join(cell(v) for v in row) for row in rows]
    return newline.join(out) + newline


def write_csv(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[str | None]], *, bom: bool = False, **kw: Any
) -> Path:
    data = csv_text(header, rows, **kw).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


# ---------------------------------------------------------------- sheets and plans in memory

ROW = pl.int_range(pl.len())
"""The row number (0, 1, ...) as an expression, for columns that differ every k-th row."""


def every(k: int, value: Any) -> pl.Expr:
    """``value`` on every ``k``-th row (rows 0, k, 2k, ...), empty (null) elsewhere."""
    return pl.when(ROW % k == 0).then(pl.lit(value))


def sample_ids(samples: int, *, width: int = 4, prefix: str = "S") -> list[str]:
    """``S0000``, ``S0001``, ... (``width`` digits; 0 for no padding)."""
    return [f"{prefix}{i:0{width}d}" for i in range(samples)]


def sheet_frame(samples: int | Sequence[str], *, width: int = 4, **columns: str | pl.Expr) -> pl.DataFrame:
    """A sample sheet as a polars frame: a ``sample`` column, then one column per keyword, in order.

    ``samples`` is a count (ids from ``sample_ids(samples, width=width)``) or the ids themselves. A
    column is a ``str.format`` template of ``{sample}`` (the row's id) and ``{i}`` (its row number), e.g.
    ``bam="s3://in/{sample}.bam"``, or a polars expression over the frame (``pl.col("sample")``, ``ROW``,
    ``every(3, "30")``).
    """
    ids = sample_ids(samples, width=width) if isinstance(samples, int) else list(samples)
    frame = pl.DataFrame({"sample": ids}, schema={"sample": pl.String})
    for name, column in columns.items():
        if isinstance(column, str):
            frame = frame.with_columns(
                pl.Series(name, [column.format(sample=s, i=i) for i, s in enumerate(ids)], dtype=pl.String)
            )
        else:
            frame = frame.with_columns(column.alias(name))
    return frame


def write_sheet(path: Path, sheet: pl.DataFrame) -> Path:
    """Write a frame (e.g. ``sheet_frame(...)``) as a CSV sheet file."""
    sheet.write_csv(path)
    return path


def make_plan(
    tmp_path: Path | str,
    sheet: int | pl.DataFrame | Path | str,
    backend: str = "omics-batch",
    *,
    defaults: Mapping[str, Any] | Path | str | None = None,
    name: str = "plan",
    **options: Any,
) -> str:
    """Plan ``sheet`` and write it to ``tmp_path/name``; the plan directory's path.

    ``sheet`` is a sample count (``sheet_frame(n)``: a ``sample`` column only), a frame or a sheet file;
    ``defaults`` a document or a file (``defaults_for(backend)`` when not given); ``options`` go to
    ``planner.plan`` (``max_entries``, ``part_size``, ``group``, ...).
    """
    if isinstance(sheet, int):
        sheet = sheet_frame(sheet)
    if defaults is None:
        defaults = defaults_for(backend)
    out = str(Path(tmp_path) / name)
    document = dict(defaults) if isinstance(defaults, Mapping) else defaults
    planner.plan(sheet, backend=backend, defaults=document, **options).write(out)
    return out


# ---------------------------------------------------------------- running the CLI


def plan_argv(
    tmp_path: Path,
    sheet: Path | str,
    *extra: Any,
    backend: str = "omics-batch",
    defaults: Mapping[str, Any] | Path | str | None = None,
    out: str = "plan",
) -> list[str]:
    """The argv of ``planner plan SHEET --backend B --defaults D --out tmp_path/out EXTRA...``.

    A defaults document (``defaults_for(backend)`` when none is given) is first written to
    ``tmp_path/defaults.toml``; a path is passed as it is.
    """
    if defaults is None:
        defaults = defaults_for(backend)
    if isinstance(defaults, Mapping):
        defaults = write_defaults(Path(tmp_path) / "defaults.toml", defaults)
    argv = ["plan", sheet, "--backend", backend, "--defaults", defaults, "--out", Path(tmp_path) / out, *extra]
    return [str(a) for a in argv]


class CliResult(NamedTuple):
    """What ``run_cli`` saw: unpacks as ``code, out, err``."""

    code: int
    out: str
    err: str


def run_cli(argv: Sequence[Any], capsys: Any) -> CliResult:
    """``planner.cli.main(argv)`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = planner.cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def _cli_command(argv: Sequence[Any]) -> list[str]:
    return [sys.executable, "-m", "planner.cli", *map(str, argv)]


def _cli_environment(env: Mapping[str, str] | None, inherit_env: bool) -> dict[str, str]:
    environment = dict(os.environ) if inherit_env else {}
    environment.pop("PLANNER_DEBUG", None)
    environment.update(env or {})
    return environment


def run_cli_process(
    argv: Sequence[Any],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    inherit_env: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m planner.cli argv`` in a child process, to its end: exit status, stdout, stderr.

    ``env`` is added to the test's environment, or with ``inherit_env=False`` is the whole of it.
    """
    return subprocess.run(
        _cli_command(argv),
        cwd=cwd,
        env=_cli_environment(env, inherit_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli_process(
    argv: Sequence[Any], env: Mapping[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """``python -m planner.cli argv`` started and left running (stdout and stderr piped), for a test that
    signals it or watches it work; ``env`` is added to the test's environment."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(_cli_command(argv), env=_cli_environment(env, True), **popen)


def assert_clean_stderr(err: str) -> None:
    """Every stderr line is a one-line ``planner: `` message; no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "expected an error message on stderr"
    for line in lines:
        assert line.startswith("planner: "), f"stderr line not of the form 'planner: ...': {line!r}"


def assert_nothing_written(out: Path) -> None:
    """The plan directory does not exist and no temporary directory is left beside it."""
    assert not out.exists(), f"{out} was written"
    if out.parent.exists():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]
        assert leftovers == [], f"temporary directories left behind: {leftovers}"


# ---------------------------------------------------------------- reading plans


def load_manifest(plan_dir: Path | str) -> dict[str, Any]:
    return orjson.loads((Path(plan_dir) / "plan.json").read_bytes())


def shard_entries(plan_dir: Path | str, manifest: Mapping[str, Any] | None = None) -> list[list[Any]]:
    """The parsed entries of every shard, in shard order."""
    manifest = manifest or load_manifest(plan_dir)
    return [orjson.loads((Path(plan_dir) / s["path"]).read_bytes()) for s in manifest["shards"]]


def md5_etag(data: bytes, part_size: int) -> str:
    """The ETag S3 reports for ``data`` uploaded with ``part_size``, computed from scratch."""
    if len(data) <= part_size:
        return '"' + hashlib.md5(data).hexdigest() + '"'
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def examples(n: int) -> Any:
    """Hypothesis settings with ``n`` examples (ten times more with HYPOTHESIS_PROFILE=thorough)."""
    from hypothesis import settings

    scale = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 1
    return settings(max_examples=n * scale)


# ---------------------------------------------------------------- submitting through the internals


def open_plan(plan_dir: Any, *, staging: str | None = None, concurrency: int = 8, **access: Any) -> Any:
    """An opened ``planner.engine.context.Context`` (the ledger is the caller's to close)."""
    from planner.engine.context import Options, open_context

    return open_context(str(plan_dir), options=Options(staging_uri=staging, concurrency=concurrency), **access)


def access_of(options: Mapping[str, Any]) -> dict[str, Any]:
    """The AWS access part of a test's submit options (what status, retry and cancel take)."""
    return {k: v for k, v in options.items() if k not in ("staging", "concurrency", "rate", "dry_run", "max_wait")}


def ledger_of(plan_dir: Any) -> Any:
    """The plan's ledger, opened read-write (close it after use)."""
    from planner.core.ledger import Ledger
    from planner.core.plandir import read_plan

    manifest = read_plan(str(plan_dir))
    return Ledger.open(str(plan_dir), manifest.plan_id, manifest.backend, create=False)
