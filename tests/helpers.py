"""Shared helpers for the plan-stage tests: sheets, defaults, the CLI, plan directories.

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
from typing import Any

import orjson

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


# ---------------------------------------------------------------- running the CLI


def run_cli(argv: Sequence[str], capsys: Any) -> tuple[int, str, str]:
    """``planner.cli.main(argv)`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = planner.cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def run_cli_process(
    argv: Sequence[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m planner.cli argv`` in a child process."""
    environment = dict(os.environ)
    environment.pop("PLANNER_DEBUG", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "planner.cli", *map(str, argv)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


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


def load_manifest(plan_dir: Path) -> dict[str, Any]:
    return orjson.loads((plan_dir / "plan.json").read_bytes())


def shard_entries(plan_dir: Path, manifest: Mapping[str, Any] | None = None) -> list[list[Any]]:
    """The parsed entries of every shard, in shard order."""
    manifest = manifest or load_manifest(plan_dir)
    return [orjson.loads((plan_dir / s["path"]).read_bytes()) for s in manifest["shards"]]


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
