"""HealthOmics submission end to end: planner -> moto S3 + the HealthOmics emulator, over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import boto3
import orjson
import polars as pl
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from helpers import access_of, every, ledger_of, make_plan, open_plan, sheet_frame

import planner
from planner.commands.retry import retry
from planner.commands.status import status
from planner.commands.submit import run_submission, submit
from planner.errors import SubmissionError

DEFAULTS = {
    "run": {
        "workflowId": "1234567",
        "roleArn": "arn:aws:iam::123456789012:role/omics",
        "outputUri": "s3://results/out/",
        "storageType": "DYNAMIC",
        "parameters": {"reference": "s3://refs/hg38.fa"},
        "runTags": {"project": "p1"},
    },
    "submission": {"batchName": "cohort"},
}
RUN_DEFAULTS = {"run": {**{k: v for k, v in DEFAULTS["run"].items() if k != "runTags"}, "tags": {"project": "p1"}}}
DEFAULTS_OF = {"omics-batch": DEFAULTS, "omics-run": RUN_DEFAULTS}
# sheet_frame(n, **SHEET): S000000..., a read per sample, and every third sample's own output folder
SHEET: dict[str, Any] = {
    "width": 6,
    "fastq_1": "s3://in/{sample}_R1.fq.gz",
    "outputUri": every(3, "s3://results/special/"),
}


@pytest.fixture()
def endpoints(moto_server: str, make_emulator: Any, bucket: str) -> dict[str, Any]:
    emulator = make_emulator()
    return {"s3": moto_server, "omics": emulator.endpoint_url, "_emulator": emulator, "_bucket": bucket}


def _options(endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "sandbox": True,
        "endpoints": {k: v for k, v in endpoints.items() if not k.startswith("_")},
        "staging": f"s3://{endpoints['_bucket']}/staging/",
    }


def _settle(endpoints: dict[str, Any], clock: Any, steps: int = 12) -> None:
    for _ in range(steps):
        clock.advance(1.0)


def test_250_runs_go_in_one_s3_batch_and_status_maps_every_sample(tmp_path, endpoints, clock):
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), defaults=DEFAULTS)
    manifest = planner.read_plan(plan_dir).to_json()
    assert [s["mode"] for s in manifest["shards"]] == ["s3"]
    report = submit(plan_dir, **_options(endpoints))
    emulator = endpoints["_emulator"]
    assert report.tally("StartRunBatch").created == 1 and emulator.batch_count() == 1
    ((_operation, params),) = [r for r in emulator.requests() if r[0] == "StartRunBatch"]
    assert params["batchRunSettings"]["s3UriSettings"].endswith(
        f"{manifest['plan_id']}/{manifest['shards'][0]['sha256']}.json"
    )
    assert params["requestId"] == f"planner-{manifest['plan_id']}-00000"
    assert params["defaultRunSetting"] == DEFAULTS["run"]
    _settle(endpoints, clock)
    table = status(plan_dir, **access_of(_options(endpoints)))
    assert table.height == 250
    assert table.get_column("remote_id").null_count() == 0 and table.get_column("remote_id").n_unique() == 250
    assert set(table.get_column("state")) == {"COMPLETED"}
    batch_id = table.get_column("submission_id")[0]
    assert emulator.recorded_etag(batch_id) == manifest["shards"][0]["etag"]


def test_60_runs_go_inline_with_each_rows_own_settings(tmp_path, endpoints):
    plan_dir = make_plan(tmp_path, sheet_frame(60, **SHEET), defaults=DEFAULTS)
    submit(plan_dir, **_options(endpoints))
    ((_operation, params),) = [r for r in endpoints["_emulator"].requests() if r[0] == "StartRunBatch"]
    inline = params["batchRunSettings"]["inlineSettings"]
    assert len(inline) == 60
    assert inline[0] == {
        "runSettingId": "S000000",
        "outputUri": "s3://results/special/",
        "parameters": {"sample": "S000000", "fastq_1": "s3://in/S000000_R1.fq.gz"},
    }
    assert inline[1] == {
        "runSettingId": "S000001",
        "parameters": {"sample": "S000001", "fastq_1": "s3://in/S000001_R1.fq.gz"},
    }


def test_a_second_submit_creates_nothing_new(tmp_path, endpoints):
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), defaults=DEFAULTS)
    submit(plan_dir, **_options(endpoints))
    again = submit(plan_dir, **_options(endpoints))
    batches = again.tally("StartRunBatch")
    assert (batches.created, batches.already) == (0, 1)
    assert endpoints["_emulator"].batch_count() == 1
    assert [r[0] for r in endpoints["_emulator"].requests()].count("StartRunBatch") == 1


def test_sigkill_after_the_batch_call_resumes_without_a_duplicate(tmp_path, endpoints):
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), defaults=DEFAULTS)
    options = _options(endpoints)
    script = textwrap.dedent(
        f"""
        import os, signal
        from planner.engine.context import Options, open_context
        from planner.commands.submit import run_submission
        options = Options(staging_uri={options["staging"]!r})
        ctx = open_context({plan_dir!r}, options=options, sandbox=True, endpoints={options["endpoints"]!r})
        ctx.clients.get("omics").meta.events.register(
            "after-call.omics.StartRunBatch", lambda **_: os.kill(os.getpid(), signal.SIGKILL))
        run_submission(ctx)
        """
    )
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    emulator = endpoints["_emulator"]
    assert emulator.batch_count() == 1
    ledger = ledger_of(plan_dir)
    (intent,) = ledger.submissions()
    assert intent.state == "intent" and intent.remote_id is None  # died before the result was journaled
    ledger.close()

    report = submit(plan_dir, **options)
    batches = report.tally("StartRunBatch")
    assert batches.created + batches.found == 1  # the call was made again...
    assert emulator.batch_count() == 1  # ...and the service answered with the same batch (requestId)
    ledger = ledger_of(plan_dir)
    (result,) = ledger.submissions()
    assert result.state == "done" and result.remote_id is not None
    ledger.close()


def test_a_modified_staged_object_is_refused_before_the_call(tmp_path, endpoints, s3):
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), defaults=DEFAULTS)
    options = _options(endpoints)
    ctx = open_plan(plan_dir, **options)
    staged = ctx.stager.stage([0])[0]
    ctx.ledger.close()
    s3.put_object(Bucket=staged.bucket, Key=staged.key, Body=b"[]\n")
    with pytest.raises(SubmissionError, match="changed"):
        submit(plan_dir, **options)
    assert endpoints["_emulator"].batch_count() == 0


@pytest.mark.slow
def test_three_batches_for_250000_runs(tmp_path, endpoints, clock):
    plan_dir = make_plan(tmp_path, sheet_frame(250_000, **SHEET), defaults=DEFAULTS)
    manifest = planner.read_plan(plan_dir).to_json()
    assert [s["entries"] for s in manifest["shards"]] == [100_000, 100_000, 50_000]
    report = submit(plan_dir, **_options(endpoints))
    assert report.tally("StartRunBatch").created == 3 and endpoints["_emulator"].batch_count() == 3
    names = [p["batchName"] for op, p in endpoints["_emulator"].requests() if op == "StartRunBatch"]
    assert names == ["cohort-1of3", "cohort-2of3", "cohort-3of3"]


def test_throttling_slows_omics_run_down_but_loses_nothing(tmp_path, moto_server, make_emulator, bucket):
    emulator = make_emulator(throttle_per_second=20)
    plan_dir = make_plan(tmp_path, sheet_frame(40, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    options = {"sandbox": True, "endpoints": {"s3": moto_server, "omics": emulator.endpoint_url}, "concurrency": 8}
    report = submit(plan_dir, **options)
    assert report.tally("StartRun").created == 40
    assert emulator.run_count() == 40
    throttled = [r for r in emulator.requests(throttled=True) if r[0] == "StartRun"]
    assert len(throttled) > 40  # some calls were throttled and retried
    table = status(plan_dir, **access_of(options))
    assert table.get_column("remote_id").n_unique() == 40


def test_omics_run_request_ids_are_derived_and_a_resubmit_starts_nothing(tmp_path, moto_server, make_emulator):
    emulator = make_emulator()
    plan_dir = make_plan(tmp_path, sheet_frame(10, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    options = {"sandbox": True, "endpoints": {"s3": moto_server, "omics": emulator.endpoint_url}}
    submit(plan_dir, **options)
    first = {p["requestId"] for op, p in emulator.requests() if op == "StartRun"}
    # A fresh ledger (as if it had been lost) sends the same requestIds and the service dedupes.
    os.unlink(os.path.join(plan_dir, "ledger.sqlite"))
    submit(plan_dir, **options)
    second = [p["requestId"] for op, p in emulator.requests() if op == "StartRun"]
    assert set(second) == first and len(second) == 20
    assert emulator.run_count() == 10


def test_omics_run_status_asks_only_about_runs_that_can_still_change(tmp_path, moto_server, make_emulator, clock):
    emulator = make_emulator(failure_rate=0.3, seed=3)
    plan_dir = make_plan(tmp_path, sheet_frame(12, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    options = {"sandbox": True, "endpoints": {"s3": moto_server, "omics": emulator.endpoint_url}, "concurrency": 4}
    submit(plan_dir, **options)
    calls = lambda: [op for op, _ in emulator.requests() if op in ("GetRun", "ListRuns")]  # noqa: E731
    table = status(plan_dir, **access_of(options))
    assert len(calls()) == 12  # one GetRun per run (on the thread pool)
    assert table.filter(pl.col("state").is_in(["COMPLETED", "FAILED"])).height == 0
    for _ in range(12):
        clock.advance(1.0)
    table = status(plan_dir, **access_of(options))
    assert len(calls()) == 24
    states = dict(zip(table.get_column("id"), table.get_column("state"), strict=False))
    assert set(states.values()) == {"COMPLETED", "FAILED"}
    # Every run is final now: a refresh asks nothing and the table stays as it was.
    again = status(plan_dir, **access_of(options))
    assert len(calls()) == 24
    assert dict(zip(again.get_column("id"), again.get_column("state"), strict=False)) == states


def test_retry_plans_exactly_the_failed_runs(tmp_path, moto_server, make_emulator, bucket, clock):
    emulator = make_emulator(failure_rate=0.3, seed=7)
    plan_dir = make_plan(tmp_path, sheet_frame(60, **SHEET), defaults=DEFAULTS)
    options = {"sandbox": True, "endpoints": {"s3": moto_server, "omics": emulator.endpoint_url}}
    submit(plan_dir, **options)
    for _ in range(12):
        clock.advance(1.0)
    table = status(plan_dir, **access_of(options))
    failed = table.filter(pl.col("state") == "FAILED").get_column("id").to_list()
    assert 0 < len(failed) < 60
    new_plan = str(tmp_path / "retry")
    manifest = retry(plan_dir, new_plan, **access_of(options)).to_json()
    assert manifest["runs"] == len(failed)
    planned = planner.plan(sheet_frame(60, **SHEET), backend="omics-batch", defaults=DEFAULTS).runs(merged=False)
    original = {run["runSettingId"]: run for run in map(orjson.loads, planned.get_column("run"))}
    retried = [
        entry
        for shard in manifest["shards"]
        for entry in orjson.loads(Path(os.path.join(new_plan, shard["path"])).read_bytes())
    ]
    assert [r["runSettingId"] for r in retried] == failed
    assert all(r == original[r["runSettingId"]] for r in retried)
    assert (
        manifest["defaults"] == DEFAULTS["run"]
        and manifest["plan_id"] != planner.read_plan(plan_dir).to_json()["plan_id"]
    )


def test_cancel_cancels_the_batches(tmp_path, endpoints, clock):
    plan_dir = make_plan(tmp_path, sheet_frame(30, **SHEET), defaults=DEFAULTS)
    submit(plan_dir, **_options(endpoints))
    early = planner.cancel(plan_dir, **access_of(_options(endpoints)))
    assert [(o.outcome, o.detail) for o in early.outcomes] == [
        ("not cancelled", "the batch is still CREATING: cancel again in a moment")  # model: PENDING onwards only
    ]
    clock.advance(0.5)
    report = planner.cancel(plan_dir, **access_of(_options(endpoints)))
    assert report.count("stopping") == 1 and report.complete
    assert [r[0] for r in endpoints["_emulator"].requests()].count("CancelRunBatch") == 1


def test_dry_run_sends_nothing_and_writes_no_ledger(tmp_path, endpoints, capsys):
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), defaults=DEFAULTS)
    submit(plan_dir, dry_run=True, **_options(endpoints))
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1 and lines[0]["operation"] == "StartRunBatch" and lines[0]["problems"] == []
    assert lines[0]["request"]["batchRunSettings"]["s3UriSettings"].startswith(f"s3://{endpoints['_bucket']}/staging/")
    assert endpoints["_emulator"].requests() == []
    assert not os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))


def test_stubber_pins_the_exact_start_run_batch_request(tmp_path):
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), defaults=DEFAULTS)
    manifest = planner.read_plan(plan_dir).to_json()
    ctx = open_plan(plan_dir, endpoints={"omics": "http://127.0.0.1:9", "s3": "http://127.0.0.1:9"})
    client = boto3.client(
        "omics",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(inject_host_prefix=False),
    )
    ctx.clients._cache["omics"] = client
    expected = {
        "batchName": "cohort",
        "requestId": f"planner-{manifest['plan_id']}-00000",
        "defaultRunSetting": DEFAULTS["run"],
        "batchRunSettings": {
            "inlineSettings": [
                {
                    "runSettingId": "S000000",
                    "outputUri": "s3://results/special/",
                    "parameters": {"sample": "S000000", "fastq_1": "s3://in/S000000_R1.fq.gz"},
                },
                {"runSettingId": "S000001", "parameters": {"sample": "S000001", "fastq_1": "s3://in/S000001_R1.fq.gz"}},
                {"runSettingId": "S000002", "parameters": {"sample": "S000002", "fastq_1": "s3://in/S000002_R1.fq.gz"}},
            ]
        },
    }
    with Stubber(client) as stub:
        stub.add_response("start_run_batch", {"id": "1234", "status": "PENDING"}, expected)
        report = run_submission(ctx)
        stub.assert_no_pending_responses()
    assert report.tally("StartRunBatch").created == 1
    assert ctx.ledger.submission("StartRunBatch:00000").remote_id == "1234"


def test_documented_rates_are_on_by_default_and_a_throttled_submit_waits_in_the_tests_time(
    tmp_path, moto_server, make_emulator, clock
):
    """make_omics_emulator answers ThrottlingException above StartRun's documented 1 a second (sources.md:
    throttling); the planner's 8 workers are throttled and wait (botocore's backoff, then its own), every run
    starts once, and the waits pass in the test's time (the emulator's rate clock), not in real seconds, while
    the runs, which follow the FakeClock, do not move."""
    emulator = make_emulator()
    plan_dir = make_plan(tmp_path, sheet_frame(12, **SHEET), "omics-run", defaults=RUN_DEFAULTS)
    options = {"sandbox": True, "endpoints": {"s3": moto_server, "omics": emulator.endpoint_url}, "concurrency": 8}
    before = clock.now
    report = submit(plan_dir, **options)
    assert report.tally("StartRun").created == 12 and emulator.run_count() == 12
    sent = [op for op, _ in emulator.requests(throttled=True) if op == "StartRun"]
    answered = [op for op, _ in emulator.requests() if op == "StartRun"]
    assert len(answered) == 12 < len(sent)  # throttled, resent, each run started once
    assert clock.now == before and emulator.rate_clock() - clock.now >= 11  # a second a run, in test time
    table = status(plan_dir, **access_of(options))
    assert set(table.get_column("state")) == {"PENDING"}
