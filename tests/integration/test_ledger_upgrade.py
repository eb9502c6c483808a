"""A plan directory and ledger written by an older release, read by this one (issue 25, item 7).

``tests/fixtures/omics-run-schema1`` was written by planner at commit 5c10189 (ledger schema 1,
plan format 1) with ``tests/fixtures/README.md``: an omics-run plan of three
samples, submitted one at a time to that release's HealthOmics emulator (run ids 1000001..3, in
sample order), and a status refresh that saw all three RUNNING.  The emulator's fail_when fails S2.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import planner.cli
from planner.core.ledger import LEDGER_FILE, Ledger, SampleState

from .conftest import omics_client

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "omics-run-schema1")


def _fail_s2(settings: dict[str, Any]) -> tuple[str, str] | None:
    if settings.get("parameters", {}).get("sample") == "S2":
        return ("RUN_FAILED", "the workflow failed")
    return None


@pytest.fixture()
def old_plan(tmp_path: Any) -> str:
    target = str(tmp_path / "plan")
    shutil.copytree(FIXTURE, target)
    return target


def test_the_fixture_is_a_schema_1_ledger(old_plan: str) -> None:
    with sqlite3.connect(os.path.join(old_plan, LEDGER_FILE)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        columns = [row[1] for row in db.execute("PRAGMA table_info(samples)")]
    assert "remote_uuid" not in columns and "log" not in columns


def test_an_upgraded_ledger_writes_samples_by_column_name(old_plan: str) -> None:
    """Was a bug: the 1->2 upgrade appends remote_uuid and log at the end of samples, but rows were
    inserted by position, so a sample's run state landed in another column."""
    with open(os.path.join(old_plan, "plan.json"), "rb") as handle:
        manifest = orjson.loads(handle.read())
    ledger = Ledger.open(old_plan, manifest["plan_id"], manifest["backend"], create=False)
    try:
        ledger.upsert_samples(
            [SampleState("S2", 0, 1, "1000002", "uuid-2", "SUBMITTED", "FAILED", "RUN_FAILED", "log")]
        )
        ledger.result(
            "StartRun:S3", "1000003", {}, [SampleState("S3", 0, 2, "1000003", "uuid-3", "SUBMITTED", "PENDING")]
        )
        by_id = {s.id: s for s in ledger.samples()}
    finally:
        ledger.close()
    assert by_id["S2"] == SampleState("S2", 0, 1, "1000002", "uuid-2", "SUBMITTED", "FAILED", "RUN_FAILED", "log")
    assert by_id["S3"] == SampleState("S3", 0, 2, "1000003", "uuid-3", "SUBMITTED", "PENDING")


def test_status_and_retry_of_an_old_release_plan_after_its_runs_end(
    old_plan: str,
    tmp_path: Any,
    make_omics_emulator: Callable[..., Any],
    clock: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The service still holds the old release's three runs (started again here in the same order,
    so they have the same ids); they end, S2 failed.  This release's status must say so, and retry
    must plan S2."""
    emulator = make_omics_emulator(fail_when=_fail_s2)
    omics = omics_client(emulator)
    with open(os.path.join(old_plan, "shards", "00000.json"), "rb") as handle:
        requests = orjson.loads(handle.read())
    ids = [omics.start_run(**request, requestId=f"fixture-{i}")["id"] for i, request in enumerate(requests)]
    assert ids == ["1000001", "1000002", "1000003"]
    clock.advance(60)
    access = ["--endpoint-url", emulator.endpoint_url]
    assert planner.cli.main(["status", old_plan, "--json", *access]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["counts"] == {"COMPLETED": 2, "FAILED": 1}, summary
    assert [g["samples"] for g in summary["failures"]] == [["S2"]]
    retry_dir = str(tmp_path / "retry")
    assert planner.cli.main(["retry", old_plan, "--out", retry_dir, "--no-refresh"]) == 0
    assert "planned 1 run to retry" in capsys.readouterr().out
