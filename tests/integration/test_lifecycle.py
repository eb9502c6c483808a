"""The life of a submission after it starts, walked as a user walks it, on the emulators and moto's server.

Some runs fail, the user retries (twice), cancels while some runs have finished,
asks for status after runs were deleted, and watches a large plan.  Each test pins
a behaviour that was wrong before the submission engine (the issue "Lifecycle
correctness on every backend"); the test names say which.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import boto3
import orjson
import polars as pl
import pytest
from botocore.config import Config
from helpers import access_of, ledger_of, make_plan, open_plan, run_cli, sheet_frame

import planner
from planner.backends.healthomics import REASONS_PER_GROUP
from planner.commands.status import status
from planner.commands.submit import run_submission, submit
from planner.core.plandir import PlanDirectory
from planner.errors import Incomplete, PlanDirError

ROLE = "arn:aws:iam::123456789012:role/omics"
BATCH_DEFAULTS: dict[str, Any] = {
    "run": {
        "workflowId": "1234567",
        "roleArn": ROLE,
        "outputUri": "s3://results/cohort/",
        "parameters": {"reference": "s3://refs/hg38.fa"},
    },
    "submission": {"batchName": "cohort"},
}
RUN_DEFAULTS: dict[str, Any] = {
    "run": {"workflowId": "7654321", "roleArn": ROLE, "outputUri": "s3://results/run/", "parameters": {"genome": "38"}}
}
DEFAULTS_OF = {"omics-batch": BATCH_DEFAULTS, "omics-run": RUN_DEFAULTS}
SHEET: dict[str, Any] = {"width": 5, "bam": "s3://in/{sample}.bam"}  # sheet_frame(n, **SHEET): the sheet of these tests


@pytest.fixture()
def omics_world(moto_server: str, make_emulator: Any, bucket: str, clock: Any) -> Any:
    """An emulator factory and the options that reach it (created on first use, with the test's options)."""

    class World:
        emulator: Any = None

        def start(self, **emulator_options: Any) -> dict[str, Any]:
            self.emulator = make_emulator(**emulator_options)
            return self.options

        @property
        def options(self) -> dict[str, Any]:
            endpoints = {"s3": moto_server, "omics": self.emulator.endpoint_url}
            return {"sandbox": True, "endpoints": endpoints, "staging": f"s3://{bucket}/staging/"}

        def calls(self, *operations: str) -> list[str]:
            return [op for op, _ in self.emulator.requests() if not operations or op in operations]

        def client(self) -> Any:
            return boto3.client(
                "omics",
                endpoint_url=self.emulator.endpoint_url,
                region_name="us-east-1",
                config=Config(inject_host_prefix=False, retries={"mode": "standard", "max_attempts": 2}),
            )

    return World()


def _settle(clock: Any, steps: int = 12) -> None:
    for _ in range(steps):
        clock.advance(1.0)


def _states(table: pl.DataFrame) -> dict[str, str | None]:
    return dict(table.select("id", "state").iter_rows())


def _fail_all(settings: dict[str, Any]) -> tuple[str, str]:
    return ("WORKFLOW_RUN_FAILED", "the reference is not readable")


# ---------------------------------------------------------------- 1. a retry always runs again


@pytest.mark.parametrize("backend", ["omics-batch", "omics-run"])
def test_a_retry_of_failed_runs_starts_new_runs_and_its_resubmit_starts_nothing(
    tmp_path: Path, omics_world: Any, clock: Any, backend: str
) -> None:
    """Was a bug: retry_of was not in the plan id, so the retry sent the same requestIds and HealthOmics
    answered with the old failed batch (or runs): `retry` then `submit` started nothing."""
    options = omics_world.start(fail_when=_fail_all)
    plan_dir = make_plan(tmp_path, sheet_frame(6, **SHEET), backend, defaults=DEFAULTS_OF[backend])
    submit(plan_dir, **options)
    _settle(clock)
    assert set(_states(status(plan_dir, **access_of(options))).values()) == {"FAILED"}

    first = planner.retry(plan_dir, str(tmp_path / "retry1"), **access_of(options))
    assert (
        first.plan_id != planner.read_plan(plan_dir).plan_id and first.retry_of == planner.read_plan(plan_dir).plan_id
    )
    runs_before = omics_world.emulator.run_count()
    report = submit(str(tmp_path / "retry1"), **options)
    assert sum(t.created for t in report.phases) >= 1 and sum(t.existed for t in report.phases) == 0
    _settle(clock)  # (a batch submits its runs a few steps after it is made)
    assert omics_world.emulator.run_count() == runs_before + 6  # six new runs, none handed back
    again = submit(str(tmp_path / "retry1"), **options)
    assert [t.already for t in again.phases] == [t.total for t in again.phases]  # resubmitting starts nothing
    _settle(clock)
    assert omics_world.emulator.run_count() == runs_before + 6

    second = planner.retry(str(tmp_path / "retry1"), str(tmp_path / "retry2"), **access_of(options))
    assert second.plan_id not in (first.plan_id, planner.read_plan(plan_dir).plan_id)
    submit(str(tmp_path / "retry2"), **options)
    _settle(clock)
    assert omics_world.emulator.run_count() == runs_before + 12  # a retry of a retry runs again too


def test_two_retries_of_the_same_plan_are_two_attempts(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """A deliberate retry is never deduplicated against an earlier one, even from the same failures."""
    options = omics_world.start(fail_when=_fail_all)
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    one = planner.retry(plan_dir, str(tmp_path / "r1"), **access_of(options))
    two = planner.retry(plan_dir, str(tmp_path / "r2"), **access_of(options))
    assert one.plan_id != two.plan_id and one.shards[0].sha256 == two.shards[0].sha256  # same runs, new identity
    submit(str(tmp_path / "r1"), **options)
    submit(str(tmp_path / "r2"), **options)
    assert omics_world.emulator.batch_count() == 3


# ---------------------------------------------------------------- 2, 3. a refused batch is retried, with --set


def test_a_refused_start_run_batch_marks_its_samples_failed_and_retry_set_fixes_it(
    tmp_path: Path, omics_world: Any, clock: Any
) -> None:
    """Was a bug: a StartRunBatch that failed left its samples NOT SUBMITTED; retry found nothing to retry
    and `status --watch` never ended."""
    options = omics_world.start()
    defaults = {**BATCH_DEFAULTS, "run": {**BATCH_DEFAULTS["run"], "cacheBehavior": "CACHE_ALWAYS"}}  # no cacheId
    plan_dir = make_plan(tmp_path, sheet_frame(4, **SHEET), defaults=defaults)
    with pytest.raises(Incomplete, match="could not be submitted") as caught:
        submit(plan_dir, **options)
    assert caught.value.report.tally("StartRunBatch").failed == 1
    table = status(plan_dir, **access_of(options))
    assert set(table.get_column("submission_status")) == {"FAILED"}
    assert all("cacheId" in reason for reason in table.get_column("reason"))
    last = planner.watch(
        plan_dir, interval=1, sleep=lambda s: pytest.fail("waited: nothing can change"), **access_of(options)
    )
    assert last.settled

    retried = planner.retry(plan_dir, str(tmp_path / "retry"), sets=["cacheId=4242"], **access_of(options))
    assert retried.runs == 4 and retried.defaults["cacheId"] == "4242"  # a string field: the text as given
    assert retried.sheet.retry_sets == ("cacheId=4242",)
    report = submit(str(tmp_path / "retry"), **options)
    assert report.tally("StartRunBatch").created == 1
    ((_, request),) = [(op, p) for op, p in omics_world.emulator.requests() if op == "StartRunBatch"][-1:]
    assert request["defaultRunSetting"]["cacheId"] == "4242"


def test_retry_set_reaches_every_run_of_a_backend_that_sends_merged_runs(
    tmp_path: Path, omics_world: Any, clock: Any
) -> None:
    options = omics_world.start(fail_when=_fail_all)
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    sets = ["workflowVersionName=v2", "parameters.genome=39", "storageCapacity=2400"]
    retried = planner.retry(plan_dir, str(tmp_path / "retry"), sets=sets, **access_of(options))
    entries = [
        orjson.loads(line)
        for line in Path(os.path.join(tmp_path, "retry", retried.shards[0].path)).read_bytes().splitlines()[1:-1]
        for line in [line.rstrip(b",")]
    ]
    assert all(e["workflowVersionName"] == "v2" and e["storageCapacity"] == 2400 for e in entries)
    assert all(e["parameters"]["genome"] == 39 and e["parameters"]["bam"].endswith(".bam") for e in entries)
    with pytest.raises(planner.ValidationError):  # a --set is checked against the model like any default
        planner.retry(plan_dir, str(tmp_path / "bad"), sets=["storageType=FAST"], **access_of(options))
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- 4. cancel goes on past what has finished


def test_cancel_skips_a_finished_batch_and_cancels_the_rest(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Was a bug: cancel stopped at the first batch that had finished (ConflictException), exit 1,
    leaving later batches running."""
    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(9, **SHEET), defaults=BATCH_DEFAULTS, max_entries=3)  # three batches
    submit(plan_dir, **options)
    ledger = ledger_of(plan_dir)
    first_batch = ledger.submission("StartRunBatch:00000").remote_id
    ledger.close()
    clock.advance(0.5)  # past CREATING, which cannot be cancelled
    omics_world.client().cancel_run_batch(batchId=first_batch)  # ended behind the planner's back
    clock.advance(0.5)  # STOPPING, then CANCELLED
    report = planner.cancel(plan_dir, **access_of(options))
    assert (report.count("stopping"), report.count("already final"), report.count("not cancelled")) == (2, 1, 0)
    assert report.complete
    clock.advance(0.5)
    assert set(_states(status(plan_dir, **access_of(options))).values()) == {"CANCELLED"}


def test_cancel_reports_runs_that_could_not_be_cancelled_and_the_cli_exits_1(
    tmp_path: Path, omics_world: Any, clock: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = omics_world.start(uncancellable=lambda settings: settings.get("runSettingId") == "S00004")
    plan_dir = make_plan(tmp_path, sheet_frame(6, **SHEET), defaults=BATCH_DEFAULTS, max_entries=3)
    submit(plan_dir, **options)
    _settle(clock, steps=3)  # the batches have submitted their runs, which are starting
    assert planner.cancel(plan_dir, **access_of(options)).count("stopping") == 2  # asked; not yet done
    clock.advance(0.5)  # the batches are CANCELLED: their submissionSummary says what could not be cancelled
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", options["endpoints"]["omics"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", options["endpoints"]["s3"])
    done = run_cli(["cancel", plan_dir, "--json"], capsys)
    assert done.code == 1, done.err  # something could not be cancelled
    report = orjson.loads(done.out)
    assert (report["already_final"], report["not_cancelled"]) == (1, 1)
    (refused,) = [o for o in report["outcomes"] if o["outcome"] == "not cancelled"]
    assert refused["detail"] == "1 of its runs could not be cancelled" and "(shard 1)" in refused["target"]


def test_omics_run_cancel_leaves_finished_runs_alone(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Runs started a step apart: at cancel time the first have finished (ConflictException on CancelRun
    for any the ledger still thought running), the rest are cancelled; cancel does not stop at the first."""
    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(6, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    ctx = open_plan(plan_dir, concurrency=1, **options)
    ctx.clients.get("omics").meta.events.register("after-call.omics.StartRun", lambda **_: clock.advance(1.0))
    run_submission(ctx)
    ctx.ledger.close()
    report = planner.cancel(plan_dir, **access_of(options))
    finished = sum(o.samples for o in report.outcomes if o.outcome == "already final")
    assert finished >= 2 and report.count("cancelled") == 6 - finished and report.complete
    states = _states(status(plan_dir, **access_of(options)))
    assert sorted(states.values()).count("CANCELLED") == 6 - finished


# ---------------------------------------------------------------- 5. status that scales


def test_status_asks_only_about_what_moved(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Was a bug: every refresh made GetBatch plus every page of ListRunsInBatch and ListRuns, even when
    every run was final (5,003 calls for 250,000 runs)."""
    options = omics_world.start(failure_rate=0.1, seed=4)
    plan_dir = make_plan(
        tmp_path, sheet_frame(2_500, **SHEET), defaults=BATCH_DEFAULTS, max_entries=1_000
    )  # three batches of S3 settings
    submit(plan_dir, **options)
    _settle(clock)
    before = len(omics_world.calls())
    table = status(plan_dir, **access_of(options))
    assert set(table.get_column("state")) <= {"COMPLETED", "FAILED"} and table.get_column("remote_id").null_count() == 0
    first = omics_world.calls()[before:]
    failed = table.filter(pl.col("state") == "FAILED").height
    # GetBatch each, ListRunsInBatch once (25 pages of 100), one listing of the rarer final state, and the
    # reasons of a few failed runs per batch (the rest on demand: test_failure_reasons_are_asked_...).
    assert first.count("GetBatch") == 3 and first.count("ListRunsInBatch") == 25
    assert first.count("GetRun") == 3 * REASONS_PER_GROUP < failed and first.count("ListRuns") <= 3 * 3
    before = len(omics_world.calls())
    again = status(plan_dir, **access_of(options))
    assert omics_world.calls()[before:] == ["GetBatch"] * 3  # all final, nothing moved: one call a batch
    assert _states(again) == _states(table)


# Three kinds of failure (values of the User Guide's "Run failure reasons" table), by sample number.
_KINDS = {
    0: ("OUT_OF_MEMORY_ERROR", "a task ran out of memory"),
    1: ("INPUT_URI_NOT_FOUND", "an input URI does not exist"),
    2: ("RUN_TASK_FAILED", "a task failed"),
}


def _fail_by_kind(settings: dict[str, Any]) -> tuple[str, str] | None:
    number = int(settings["runSettingId"][1:])
    return _KINDS[number % 3] if number % 10 < 4 else None  # 40% fail, in three kinds


def test_failure_reasons_are_asked_for_a_few_runs_per_batch_and_the_rest_on_demand(
    tmp_path: Path, omics_world: Any, clock: Any, capsys: Any, monkeypatch: Any
) -> None:
    """Was a cost: the first refresh asked GetRun of every failed run for its reason (75,000 calls for 250,000
    runs with 30% failed: two hours at GetRun's documented 10 TPS).  Now a refresh asks a few per batch, every
    sample's state is still right, the ledger lists the unasked ones, and `status --why` asks them on demand."""
    from helpers import run_cli

    from planner.commands.status import REASON_NOT_ASKED

    options = omics_world.start(fail_when=_fail_by_kind)
    plan_dir = make_plan(tmp_path, sheet_frame(600, **SHEET), defaults=BATCH_DEFAULTS, max_entries=300)  # two batches
    submit(plan_dir, **options)
    _settle(clock)
    before = len(omics_world.calls())
    table = status(plan_dir, **access_of(options))
    first = omics_world.calls()[before:]
    expected = {f"S{i:05d}": "FAILED" if i % 10 < 4 else "COMPLETED" for i in range(600)}
    assert _states(table) == expected
    assert first.count("GetRun") == 2 * REASONS_PER_GROUP  # not 240
    reasons = dict(table.select("id", "reason").iter_rows())
    told = {s: r for s, r in reasons.items() if expected[s] == "FAILED" and r != REASON_NOT_ASKED}
    assert len(told) == 2 * REASONS_PER_GROUP
    assert all(r == ": ".join(_KINDS[int(s[1:]) % 3]) for s, r in told.items())
    assert {r for s, r in reasons.items() if expected[s] == "COMPLETED"} == {None}
    ledger = ledger_of(plan_dir)
    try:
        unasked = ledger.unasked()
    finally:
        ledger.close()
    assert set(unasked) == {s for s, state in expected.items() if state == "FAILED"} - set(told)
    # The report groups the unasked ones apart from the reasons the service gave.
    planner.report(plan_dir, str(tmp_path / "report.html"), **access_of(options))
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "reason not asked yet" in html and all(": ".join(kind) in html for kind in _KINDS.values())
    # One sample asked on demand: one GetRun, its reason recorded, no longer unasked.
    sample = unasked[0]
    before = len(omics_world.calls())
    _cli_reaches(options, monkeypatch)
    code, out, _ = run_cli(["status", plan_dir, "--why", sample], capsys)
    assert code == 0 and omics_world.calls()[before:] == ["GetBatch", "GetBatch", "GetRun"]
    assert f"{sample}: FAILED: {': '.join(_KINDS[int(sample[1:]) % 3])}" in out.splitlines()
    # The rest at once, without a refresh; then no reason is left unasked and every one is the service's.
    before = len(omics_world.calls())
    table = status(plan_dir, refresh=False, why="all", **access_of(options))
    assert omics_world.calls()[before:] == ["GetRun"] * (len(unasked) - 1)
    failed = table.filter(pl.col("state") == "FAILED")
    assert failed.height == 240
    assert all(r == ": ".join(_KINDS[int(s[1:]) % 3]) for s, r in failed.select("id", "reason").iter_rows())
    ledger = ledger_of(plan_dir)
    try:
        assert ledger.unasked() == []
    finally:
        ledger.close()
    # Retry plans exactly the failed samples, whether or not their reason was asked.
    planner.retry(plan_dir, out=str(tmp_path / "retry"), **access_of(options))
    retried = PlanDirectory(str(tmp_path / "retry")).samples().get_column("id").to_list()
    assert sorted(retried) == sorted(s for s, state in expected.items() if state == "FAILED")


def test_status_why_names_an_unknown_sample_in_one_line(
    tmp_path: Path, omics_world: Any, capsys: Any, monkeypatch: Any
) -> None:
    from helpers import run_cli

    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _cli_reaches(options, monkeypatch)
    code, out, err = run_cli(["status", plan_dir, "--why", "S00001,NOPE"], capsys)
    assert code == 2 and out == "" and "NOPE" in err and len(err.strip().splitlines()) == 1


def _cli_reaches(options: dict[str, Any], monkeypatch: Any) -> None:
    """The CLI pointed at the test's emulator and moto's S3."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", options["endpoints"]["omics"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", options["endpoints"]["s3"])


def test_omics_run_status_never_pages_the_whole_account(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Was a bug: above 200 runs status paged an unfiltered ListRuns over every run of the account."""
    options = omics_world.start()
    client = omics_world.client()
    for i in range(600):  # a busy account: other people's finished runs
        client.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/x/", requestId=f"other-{i}")
    _settle(clock)
    plan_dir = make_plan(tmp_path, sheet_frame(300, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    before = len(omics_world.emulator.requests())
    status(plan_dir, **access_of(options))
    asked = omics_world.emulator.requests()[before:]
    assert all(params.get("status") for op, params in asked if op == "ListRuns")  # only the active runs are listed
    _settle(clock)
    before = len(omics_world.emulator.requests())
    table = status(plan_dir, **access_of(options))
    asked = [op for op, _ in omics_world.emulator.requests()[before:]]
    assert asked.count("GetRun") == 300 and set(table.get_column("state")) == {"COMPLETED"}  # each run once, at its end
    before = len(omics_world.emulator.requests())
    status(plan_dir, **access_of(options))
    assert omics_world.emulator.requests()[before:] == []  # all final: nothing to ask


# ---------------------------------------------------------------- 6. deleted runs and batches are a state


def test_status_and_retry_after_runs_and_batches_were_deleted(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Was a bug: a deleted batch or run made status and retry fail for the whole plan (ResourceNotFound)."""
    options = omics_world.start(fail_when=lambda s: _fail_all(s) if s["runSettingId"] == "S00000" else None)
    plan_dir = make_plan(tmp_path, sheet_frame(6, **SHEET), defaults=BATCH_DEFAULTS, max_entries=3)
    submit(plan_dir, **options)
    _settle(clock)
    assert _states(status(plan_dir, **access_of(options)))["S00000"] == "FAILED"
    ledger = ledger_of(plan_dir)
    batches = [ledger.submission(f"StartRunBatch:0000{i}").remote_id for i in range(2)]
    ledger.close()
    client = omics_world.client()
    client.delete_run_batch(batchId=batches[0])  # its runs are deleted
    client.delete_batch(batchId=batches[1])  # the batch record is gone, its runs stay
    table = status(plan_dir, **access_of(options))
    states = _states(table)
    # Runs deleted after they ended keep their outcome (the ledger knew it): the failed one is still retried.
    assert [states[f"S0000{i}"] for i in range(3)] == ["FAILED", "COMPLETED", "COMPLETED"]
    assert [states[f"S0000{i}"] for i in range(3, 6)] == ["COMPLETED"] * 3
    assert planner.retry(plan_dir, str(tmp_path / "retry"), **access_of(options)).runs == 1


def test_runs_deleted_before_anyone_saw_them_end_are_deleted(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    options = omics_world.start(fail_when=lambda s: _fail_all(s) if s["runSettingId"] == "S00000" else None)
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)  # ended, but no status has looked since submit
    ledger = ledger_of(plan_dir)
    batch = ledger.submission("StartRunBatch:00000").remote_id
    ledger.close()
    omics_world.client().delete_run_batch(batchId=batch)
    clock.advance(0.5)  # RUNS_DELETING, then RUNS_DELETED
    assert set(_states(status(plan_dir, **access_of(options))).values()) == {"DELETED"}
    with pytest.raises(planner.NothingToRetry, match="nothing to retry"):  # what they ended as is not known
        planner.retry(plan_dir, str(tmp_path / "retry"), **access_of(options))


def test_a_deleted_omics_run_is_shown_deleted(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    ledger = ledger_of(plan_dir)
    run_id = ledger.submission("StartRun:S00001").remote_id
    ledger.close()
    _settle(clock)
    omics_world.client().delete_run(id=run_id)
    states = _states(status(plan_dir, **access_of(options)))
    assert states == {"S00000": "COMPLETED", "S00001": "DELETED", "S00002": "COMPLETED"}


# ---------------------------------------------------------------- 7, 8. why runs failed, and their uuids


def test_failed_runs_carry_their_reason_and_every_run_its_uuid(
    tmp_path: Path, omics_world: Any, clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(settings: dict[str, Any]) -> tuple[str, str] | None:
        number = int(settings["runSettingId"][1:])
        if number % 3 == 1:
            return ("WORKFLOW_RUN_FAILED", "task FASTQC exited with 137")
        if number % 3 == 2:
            return ("INVALID_INPUT", "s3://in/missing.bam not found")
        return None

    options = omics_world.start(fail_when=fail)
    plan_dir = make_plan(tmp_path, sheet_frame(9, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    table = status(plan_dir, **access_of(options))
    reasons = dict(table.select("id", "reason").iter_rows())
    assert reasons["S00001"] == "WORKFLOW_RUN_FAILED: task FASTQC exited with 137"
    assert reasons["S00002"] == "INVALID_INPUT: s3://in/missing.bam not found"
    assert reasons["S00000"] is None
    assert table.get_column("remote_uuid").null_count() == 0 and table.get_column("remote_uuid").n_unique() == 9
    assert table.filter(pl.col("state") == "FAILED").get_column("log").null_count() == 0
    done = run_cli(["status", plan_dir, "--no-refresh", "--json"], capsys)
    groups = orjson.loads(done.out)["failures"]
    assert [(g["reason"], g["count"]) for g in groups] == [
        ("INVALID_INPUT: s3://in/missing.bam not found", 3),
        ("WORKFLOW_RUN_FAILED: task FASTQC exited with 137", 3),
    ]
    assert groups[0]["samples"] == ["S00002", "S00005", "S00008"]


# ---------------------------------------------------------------- 9. no silent waits


def test_a_quota_that_waiting_cannot_free_fails_fast_naming_it(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Was a bug: ServiceQuotaExceededException was waited out for up to 15 minutes per call, printing nothing."""
    options = omics_world.start(max_retained_runs=5)
    plan_dir = make_plan(tmp_path, sheet_frame(8, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    ctx = open_plan(plan_dir, concurrency=4, **options)
    slept: list[float] = []
    ctx.sleep = slept.append
    with pytest.raises(Incomplete) as caught:
        run_submission(ctx)
    ctx.ledger.close()
    tally = caught.value.report.tally("StartRun")
    assert (tally.created, tally.failed) == (5, 3) and slept == []
    assert "ServiceQuotaExceededException" in str(caught.value) and "maximum number of runs" in str(caught.value)
    assert "waiting will not free it" in str(caught.value)


def test_throttling_is_waited_out_with_one_line_saying_so(
    tmp_path: Path, omics_world: Any, clock: Any, caplog: Any
) -> None:
    options = omics_world.start(throttle_per_second=5)
    plan_dir = make_plan(tmp_path, sheet_frame(30, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    with caplog.at_level(logging.WARNING, logger="planner"):
        ctx = open_plan(plan_dir, concurrency=8, max_attempts=1, **options)
        try:
            report = run_submission(ctx)
        finally:
            ctx.ledger.close()
    assert report.tally("StartRun").created == 30 and omics_world.emulator.run_count() == 30
    told = [r.getMessage() for r in caplog.records if "ThrottlingException" in r.getMessage()]
    assert len(told) == 1 and "waiting up to 15 min" in told[0]


# ---------------------------------------------------------------- 11. what happened, not what was asked


@pytest.mark.parametrize("backend", ["omics-batch", "omics-run"])
def test_the_same_plan_submitted_from_a_second_directory_says_it_started_nothing(
    tmp_path: Path, omics_world: Any, clock: Any, backend: str
) -> None:
    """Was a bug: a second directory of the same plan reported `batches_created: 1` (`runs_started: 9`)
    while the service handed back the first directory's finished work."""
    options = omics_world.start()
    first = make_plan(tmp_path, sheet_frame(4, **SHEET), backend, defaults=DEFAULTS_OF[backend], name="first")
    second = make_plan(tmp_path, sheet_frame(4, **SHEET), backend, defaults=DEFAULTS_OF[backend], name="second")
    assert planner.read_plan(first).plan_id == planner.read_plan(second).plan_id
    submit(first, **options)
    _settle(clock)
    runs = omics_world.emulator.run_count()
    report = submit(second, **options)
    assert sum(t.existed for t in report.phases) == sum(t.total for t in report.phases)
    assert sum(t.created for t in report.phases) == 0 and omics_world.emulator.run_count() == runs
    assert any("nothing new was started" in note for note in report.notes)


# ---------------------------------------------------------------- 12. a plan changed after planning


def test_an_edited_plan_json_is_refused(
    tmp_path: Path, omics_world: Any, clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(4, **SHEET), defaults=BATCH_DEFAULTS)
    path = Path(plan_dir, "plan.json")
    data = orjson.loads(path.read_bytes())
    data["defaults"]["outputUri"] = "s3://elsewhere/"
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    with pytest.raises(PlanDirError, match="changed after it was planned"):
        submit(plan_dir, **options)
    assert omics_world.calls() == []
    done = run_cli(["status", plan_dir], capsys)
    assert done.code == 2 and "changed after it was planned" in done.err


def test_an_edited_inline_shard_is_refused_before_any_call(tmp_path: Path, omics_world: Any) -> None:
    options = omics_world.start()
    plan_dir = make_plan(
        tmp_path, sheet_frame(4, **SHEET), defaults=BATCH_DEFAULTS
    )  # inline: not staged, so not checked by S3
    shard = Path(plan_dir, "shards", "00000.json")
    shard.write_bytes(shard.read_bytes().replace(b"S00001", b"S00009"))
    with pytest.raises(PlanDirError, match="the shard was changed"):
        submit(plan_dir, **options)
    assert "StartRunBatch" not in omics_world.calls()


# ---------------------------------------------------------------- per-run fields come from the model


def test_a_per_run_engine_settings_column_is_refused_not_made_a_parameter(tmp_path: Path) -> None:
    """Was a bug: engineSettings (an inlineSettings member) and defaultRunSetting-only fields became
    workflow parameters silently when a sheet had such a column."""
    sheet = sheet_frame(2, **SHEET, workflowVersionName=pl.lit("v2"))
    with pytest.raises(planner.SheetError, match="set it in \\[run\\]"):
        planner.plan(sheet, backend="omics-batch", defaults=BATCH_DEFAULTS).write(str(tmp_path / "p"))
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_status_of_250000_finished_runs_costs_one_call_a_batch(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """The issue's figure: 5,003 calls per refresh of 250,000 finished runs before; now the first refresh
    after the runs end maps and places them once, and every later one asks GetBatch of each batch only."""
    options = omics_world.start(failure_rate=0.01, seed=2)
    plan_dir = make_plan(tmp_path, sheet_frame(250_000, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    before = len(omics_world.calls())
    table = status(plan_dir, **access_of(options))
    first = omics_world.calls()[before:]
    assert table.get_column("remote_id").null_count() == 0
    failed = table.filter(pl.col("state") == "FAILED").height
    assert 0 < failed < 5_000 and first.count("GetRun") == 3 * REASONS_PER_GROUP  # a few reasons per batch
    per_batch = table.filter(pl.col("state") == "FAILED").group_by("submission_id").len().get_column("len")
    # Samples to runs once (ListRunsInBatch, 100 a page); the rarer final state listed, the larger inferred.
    assert first.count("ListRunsInBatch") == 2_500
    assert first.count("ListRuns") == sum(-(-n // 100) for n in per_batch.to_list())
    before = len(omics_world.calls())
    status(plan_dir, **access_of(options))
    assert omics_world.calls()[before:] == ["GetBatch"] * 3


# ---------------------------------------------------------------- 9. cancel and delete are asynchronous


def test_a_batch_cancel_is_reported_stopping_until_get_batch_shows_its_end(
    tmp_path: Path, omics_world: Any, clock: Any
) -> None:
    """Was a bug: CancelRunBatch only starts a cancel (STOPPING); the planner reported the batch cancelled at
    once, and a second cancel's ConflictException ("one cancel or delete per batch at a time") as finished."""
    options = omics_world.start(uncancellable=lambda settings: settings.get("runSettingId") == "S00001")
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock, steps=3)  # the runs are starting
    report = planner.cancel(plan_dir, **access_of(options))
    assert [o.outcome for o in report.outcomes] == ["stopping"] and report.complete
    assert report.to_json()["stopping"] == 1
    states = _states(status(plan_dir, **access_of(options)))
    assert set(states.values()) == {"STOPPING"}  # not final: the cancel has not reached the runs yet
    mark = len(omics_world.calls())
    again = planner.cancel(plan_dir, **access_of(options))
    assert [o.outcome for o in again.outcomes] == ["stopping"]
    assert "CancelRunBatch" not in omics_world.calls()[mark:]  # a second cancel would be a ConflictException
    clock.advance(0.5)  # the batch has stopped
    states = _states(status(plan_dir, **access_of(options)))
    assert states == {"S00000": "CANCELLED", "S00001": "STARTING", "S00002": "CANCELLED"}
    after = planner.cancel(plan_dir, **access_of(options))
    (outcome,) = after.outcomes
    assert (outcome.outcome, outcome.detail) == ("not cancelled", "1 of its runs could not be cancelled")


def test_clean_runs_reports_deleting_while_the_batch_deletes_its_runs(
    tmp_path: Path, omics_world: Any, clock: Any
) -> None:
    """Was a bug: a batch in RUNS_DELETING was reported already deleted, and DeleteRunBatch's answer as done."""
    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    done = planner.clean(plan_dir, runs=True, **access_of(options))
    assert [(o.outcome, o.detail) for o in done.runs] == [("deleting", "RUNS_DELETING")]
    again = planner.clean(plan_dir, runs=True, **access_of(options))
    assert [(o.outcome, o.detail) for o in again.runs] == [("deleting", "RUNS_DELETING")]
    clock.advance(0.5)
    last = planner.clean(plan_dir, runs=True, **access_of(options))
    assert [(o.outcome, o.detail) for o in last.runs] == [("already deleted", "RUNS_DELETED")]
    assert omics_world.calls().count("DeleteRunBatch") == 1


# ---------------------------------------------------------------- 10. run ids are reused: the uuid says whose run it is


def _reuse_the_id_of(client: Any, run_id: str) -> str:
    """Delete ``run_id`` (cancelled first if need be) and start someone else's run, which gets that id."""
    if client.get_run(id=run_id)["status"] not in ("COMPLETED", "FAILED", "CANCELLED"):
        client.cancel_run(id=run_id)
    client.delete_run(id=run_id)
    other = client.start_run(workflowId="1", roleArn=ROLE, outputUri="s3://o/", requestId=f"someone-else-{run_id}")
    assert other["id"] == run_id  # the emulator reuses a deleted run's id at once, as the guide says HealthOmics may
    return str(other["uuid"])


def test_a_reused_run_id_is_not_this_samples_run(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Was a bug: a sample's run deleted and its id reused by another run took that run's state and uuid."""
    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    ledger = ledger_of(plan_dir)
    (mine,) = [sample for sample in ledger.samples() if sample.id == "S00001"]
    run_id, uuid = mine.remote_id, mine.remote_uuid
    ledger.close()
    assert run_id and uuid
    other = _reuse_the_id_of(omics_world.client(), run_id)
    _settle(clock)  # the other run completes
    table = status(plan_dir, **access_of(options))
    row = table.filter(pl.col("id") == "S00001").row(0, named=True)
    assert (row["state"], row["remote_id"], row["remote_uuid"]) == ("DELETED", run_id, uuid)
    assert other in row["reason"] and "another run" in row["reason"]
    assert _states(table)["S00000"] == "COMPLETED"


def test_clean_runs_never_deletes_another_run_that_reuses_the_id(tmp_path: Path, omics_world: Any, clock: Any) -> None:
    """Was a bug: clean --runs sent DeleteRun for the ledger's run id, deleting whichever run holds it now."""
    options = omics_world.start()
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    assert set(_states(status(plan_dir, **access_of(options))).values()) == {"COMPLETED"}
    ledger = ledger_of(plan_dir)
    run_id = ledger.submission("StartRun:S00002").remote_id
    ledger.close()
    other = _reuse_the_id_of(omics_world.client(), run_id)
    _settle(clock)  # the other run has ended: DeleteRun would delete it
    done = planner.clean(plan_dir, runs=True, **access_of(options))
    outcomes = {o.target: o.outcome for o in done.runs}
    assert outcomes[f"run {run_id} (sample S00002)"] == "already deleted"
    assert omics_world.client().get_run(id=run_id)["uuid"] == other  # the other run is still there


def test_runs_over_the_retained_run_quota_fail_alone_and_the_batch_goes_on(
    tmp_path: Path, omics_world: Any, clock: Any
) -> None:
    """ServiceQuotaExceeded is a per-run submissionFailureReason: the other samples run; retry finds the rest."""
    options = omics_world.start(max_retained_runs=4)
    plan_dir = make_plan(tmp_path, sheet_frame(6, **SHEET), defaults=BATCH_DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    table = status(plan_dir, **access_of(options))
    failed = table.filter(pl.col("submission_status") == "FAILED")
    assert failed.get_column("id").to_list() == ["S00004", "S00005"]
    assert all("maximum number of runs (4)" in reason for reason in failed.get_column("reason").to_list())
    assert sorted(_states(table).values(), key=str).count("COMPLETED") == 4
