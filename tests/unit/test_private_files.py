"""Private local files: a plan directory, its ledger, the listings and exports are the owner's alone
(directories 0700, files 0600) whatever the umask; a file that already exists keeps its mode."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

import planner
import planner.cli
from planner.core.ledger import SCHEMA_VERSION, Ledger
from planner.core.plandir import PlanDirectory, private_file, safe_csv

DEFAULTS = {
    "run": {"workflowId": "1234567", "roleArn": "arn:aws:iam::123456789012:role/omics", "outputUri": "s3://out/r/"}
}


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _modes(directory: Path) -> dict[str, int]:
    found = {".": mode(directory)}
    for path in directory.rglob("*"):
        found[str(path.relative_to(directory))] = mode(path)
    return found


def test_a_plan_directory_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    frame = pl.DataFrame(
        {"sample": [f"S{i}" for i in range(300)], "priority": ["x" if i == 7 else "1" for i in range(300)]}
    )
    out = tmp_path / "deep" / "plan"
    planner.plan(frame, backend="omics-batch", defaults=DEFAULTS, skip_invalid=True, max_entries=100).write(out)
    modes = _modes(out)
    assert {"plan.json", "samples.parquet", "rejected.csv", "shards", "shards/00000.json"} <= set(modes)
    assert {name: m for name, m in modes.items() if m != (0o700 if (out / name).is_dir() else 0o600)} == {}


def test_the_ledger_and_its_wal_are_private(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "plan"
    planner.plan(pl.DataFrame({"sample": ["S1", "S2"]}), backend="omics-batch", defaults=DEFAULTS).write(out)
    plan = PlanDirectory(out)
    ledger = Ledger.open(out, plan.plan_id, plan.manifest.backend)
    ledger.record_event("test", {"x": 1})  # a write: the WAL and shared-memory files exist now
    names = [n for n in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm") if (out / n).exists()]
    assert "ledger.sqlite-wal" in names
    assert {n: mode(out / n) for n in names} == dict.fromkeys(names, 0o600)
    ledger.close()


def test_the_problem_listing_beside_a_refused_plan_is_private(
    tmp_path: Path, umask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = tmp_path / "s.csv"
    sheet.write_text("sample,priority\n" + "".join(f"S{i},high\n" for i in range(30)))
    defaults = tmp_path / "d.toml"
    defaults.write_text(
        '[run]\nworkflowId = "1234567"\nroleArn = "arn:aws:iam::123456789012:role/r"\noutputUri = "s3://o/"\n'
    )
    code = planner.cli.main(
        ["plan", str(sheet), "--backend", "omics-batch", "--defaults", str(defaults), "--out", str(tmp_path / "p")]
    )
    assert code == 2 and "p.problems.csv" in capsys.readouterr().err
    assert mode(tmp_path / "p.problems.csv") == 0o600


def test_a_new_csv_export_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path, umask: int) -> None:
    table = pl.DataFrame({"id": ["S1", "=1+1"], "state": ["COMPLETED", "FAILED"]})
    fresh = tmp_path / "status.csv"
    safe_csv(table, str(fresh))
    assert mode(fresh) == 0o600 and fresh.read_text().splitlines()[2].startswith("'=1+1")
    shared = tmp_path / "shared.csv"
    shared.write_text("")
    os.chmod(shared, 0o644)  # the user made it readable by the group on purpose
    safe_csv(table, str(shared))
    assert mode(shared) == 0o644 and "COMPLETED" in shared.read_text()


@pytest.mark.parametrize("name", ["status.csv", "status.parquet", "status.jsonl"])
def test_status_out_exports_are_private_unless_they_exist(tmp_path: Path, umask: int, name: str) -> None:
    from planner.commands.status import write_table

    table = pl.DataFrame({"id": ["S1"], "state": ["RUNNING"]})
    out = tmp_path / name
    write_table(table, str(out))
    assert mode(out) == 0o600 and out.stat().st_size > 0
    os.chmod(out, 0o644)
    write_table(table, str(out))
    assert mode(out) == 0o644


def test_private_file_is_exact_and_leaves_an_existing_file_alone(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "x"
    private_file(path)
    assert mode(path) == 0o600 and path.read_bytes() == b""
    path.write_text("kept")
    os.chmod(path, 0o640)
    private_file(path)
    assert mode(path) == 0o640 and path.read_text() == "kept"


def test_a_version_2_ledger_is_upgraded_to_3_keeping_what_was_staged(tmp_path: Path) -> None:
    """Schema 3 adds how each staged object's content is checked; a schema 2 ledger gets 'etag'."""
    out = tmp_path / "plan"
    planner.plan(pl.DataFrame({"sample": ["S1"]}), backend="omics-batch", defaults=DEFAULTS).write(out)
    plan = PlanDirectory(out)
    db = sqlite3.connect(out / "ledger.sqlite")
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE staged (
            shard INTEGER NOT NULL, kind TEXT NOT NULL, uri TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
            etag TEXT NOT NULL, sha256 TEXT NOT NULL, version_id TEXT, bytes INTEGER NOT NULL, staged_at TEXT NOT NULL,
            PRIMARY KEY (shard, kind));
        INSERT INTO staged VALUES (0, 'shard', 's3://b/k', 'b', 'k', '"e"', 'ab', NULL, 3, 'then');
        """
    )
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", "2"), ("plan_id", plan.plan_id), ("backend", "omics-batch")],
    )
    db.commit()
    db.close()
    ledger = Ledger.open(out, plan.plan_id, "omics-batch")
    staged = ledger.staged(0)
    assert staged is not None and (staged.etag, staged.content_check, staged.checksum, staged.kms_key_id) == (
        '"e"',
        "etag",
        None,
        None,
    )
    version = ledger.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "3"
    ledger.close()
