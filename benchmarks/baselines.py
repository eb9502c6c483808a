"""Plain-Python baselines for ``planner plan --backend omics-batch``, and the floor.

Each is run by ``run.py`` in its own process::

    python benchmarks/baselines.py {stdlib,stdlib_dumps,orjson,floor} SHEET DEFAULTS OUTDIR

and prints one JSON line on stdout (rows, files, bytes, internal timings).

What a careful user would write without the planner:

* read the sheet row by row: ``csv.DictReader`` for CSV; for Parquet, pyarrow
  ``iter_batches`` + ``RecordBatch.to_pylist()`` (the fair equivalent);
* route each column like the planner does (``name``/``outputUri``/``priority``/
  ``outputBucketOwnerId`` are run fields, ``tag.KEY`` run tags, ``param.KEY`` and any
  other column workflow parameters, the id column included, so a per-sample workflow
  gets its sample id); an empty cell means "not set";
* merge each row with ``[run]`` of the defaults file with a dict merge (``parameters``
  and ``runTags`` per key, row winning; every other field replaced whole) and validate
  the merged run: unique non-empty id, ``priority`` an integer in 0..100000 (the
  StartRunBatch model), ``outputUri`` present, ``s3://...`` and <= 750 characters, at
  most 50 run tags;
* emit the StartRunBatch entry with only the row's own settings
  ``{"runSettingId", "outputUri"?, "priority"? (int), "parameters"?, "runTags"?}`` (the
  service merges ``defaultRunSetting``; empty maps left out, as the planner does), 100,000 entries per file;
* write each chunk and record its md5 and sha256.

Variants:

``stdlib``        ``json.dump(chunk, f)``, then md5+sha256 by reading the file back
                  (``json.dump`` is what the issue names; note CPython runs it through
                  the pure-Python ``iterencode``, only ``json.dumps`` uses the C encoder);
``stdlib_dumps``  the same with ``json.dumps(chunk).encode()`` hashed in memory, then written;
``orjson``        the same with ``orjson.dumps(chunk)`` hashed in memory, then written;
``floor``         builds every entry first (untimed), then times only: ``orjson.dumps``
                  per 100k chunk, md5 + sha256 of those bytes, and the write.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CHUNK = 100_000
FIELDS = ("name", "outputUri", "priority", "outputBucketOwnerId")
PRIORITY_MIN, PRIORITY_MAX = 0, 100_000
MAX_TAGS = 50
MAX_URI = 750


class Invalid(Exception):
    pass


def load_defaults(path: str) -> tuple[dict[str, Any], str]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    run = doc.get("run", {})
    id_column = doc.get("sheet", {}).get("id_column", "sample")
    return run, id_column


def read_rows(path: str) -> Iterator[dict[str, Any]]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=65_536):
            yield from batch.to_pylist()
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield from csv.DictReader(f)


def build_entries(
    rows: Iterable[dict[str, Any]], run: dict[str, Any], id_column: str, errors: list[str]
) -> Iterator[dict[str, Any]]:
    """Route, merge and validate each row; yield the row's own StartRunBatch entry."""
    def_params = run.get("parameters", {})
    def_tags = run.get("runTags", {})
    seen: set[str] = set()
    routes: list[tuple[str, str, str]] | None = None
    for n, row in enumerate(rows, 1):
        if routes is None:
            routes = []
            for col in row:  # the id column is routed too: it is also a parameter, as in the planner
                if col in FIELDS:
                    routes.append((col, "field", col))
                elif col.startswith("tag."):
                    routes.append((col, "tag", col[4:]))
                elif col.startswith("param."):
                    routes.append((col, "param", col[6:]))
                else:
                    routes.append((col, "param", col))
        sid = row[id_column]
        if not sid:
            errors.append(f"row {n}: {id_column}: empty id")
            continue
        if sid in seen:
            errors.append(f"row {n}: {sid}: duplicate id")
            continue
        seen.add(sid)
        entry: dict[str, Any] = {"runSettingId": sid}
        params: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        for col, kind, key in routes:
            value = row[col]
            if value is None or value == "":
                continue
            if kind == "param":
                params[key] = value
            elif kind == "tag":
                tags[key] = value
            else:
                entry[key] = value
        try:
            if "priority" in entry:
                try:
                    entry["priority"] = int(entry["priority"])
                except ValueError:
                    raise Invalid(f"priority {entry['priority']!r} is not an integer") from None
            merged = {**run, **entry}
            merged["parameters"] = {**def_params, **params}
            merged["runTags"] = {**def_tags, **tags}
            p = merged.get("priority")
            if p is not None and not PRIORITY_MIN <= p <= PRIORITY_MAX:
                raise Invalid(f"priority {p} not in {PRIORITY_MIN}..{PRIORITY_MAX}")
            uri = merged.get("outputUri")
            if not uri:
                raise Invalid("outputUri is required")
            if not uri.startswith("s3://") or len(uri) > MAX_URI:
                raise Invalid(f"outputUri {uri!r} must be s3://... of at most {MAX_URI} characters")
            if len(merged["runTags"]) > MAX_TAGS:
                raise Invalid(f"{len(merged['runTags'])} run tags, at most {MAX_TAGS}")
        except Invalid as exc:
            errors.append(f"row {n}: {sid}: {exc}")
            continue
        if params:
            entry["parameters"] = params
        if tags:
            entry["runTags"] = tags
        yield entry


def chunks(entries: Iterable[dict[str, Any]], size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for e in entries:
        chunk.append(e)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_stdlib(chunk: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(chunk, f)
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            md5.update(block)
            sha.update(block)
            size += len(block)
    return {"path": path.name, "entries": len(chunk), "bytes": size, "md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _write_bytes(data: bytes, path: Path, entries: int) -> dict[str, Any]:
    info = {
        "path": path.name,
        "entries": entries,
        "bytes": len(data),
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    with open(path, "wb") as f:
        f.write(data)
    return info


def write_stdlib_dumps(chunk: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    return _write_bytes(json.dumps(chunk).encode("utf-8"), path, len(chunk))


def write_orjson(chunk: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    import orjson

    return _write_bytes(orjson.dumps(chunk), path, len(chunk))


WRITERS = {"stdlib": write_stdlib, "stdlib_dumps": write_stdlib_dumps, "orjson": write_orjson}


def run(method: str, sheet: str, defaults: str, out: str) -> dict[str, Any]:
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    defaults_run, id_column = load_defaults(defaults)
    errors: list[str] = []
    t0 = time.perf_counter()
    result: dict[str, Any] = {"method": method}
    files: list[dict[str, Any]] = []
    if method == "floor":
        import orjson

        built = list(chunks(build_entries(read_rows(sheet), defaults_run, id_column, errors)))
        result["build_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        for i, chunk in enumerate(built):
            data = orjson.dumps(chunk)
            files.append(_write_bytes(data, outdir / f"{i:05d}.json", len(chunk)))
        result["timed_s"] = time.perf_counter() - t1
    else:
        write = WRITERS[method]
        for i, chunk in enumerate(chunks(build_entries(read_rows(sheet), defaults_run, id_column, errors))):
            files.append(write(chunk, outdir / f"{i:05d}.json"))
        result["timed_s"] = time.perf_counter() - t0
    if errors:
        print(f"{len(errors)} invalid rows; first: {errors[0]}", file=sys.stderr)
        raise SystemExit(2)
    result["rows"] = sum(f["entries"] for f in files)
    result["files"] = files
    result["bytes"] = sum(f["bytes"] for f in files)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in (*WRITERS, "floor"):
        print(__doc__, file=sys.stderr)
        return 2
    method, sheet, defaults, out = argv
    res = run(method, sheet, defaults, out)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
