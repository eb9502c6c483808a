"""AWS Glue submission end to end: planner -> moto's Glue and S3 over HTTP, plus Stubber pins.

moto keeps job runs where the state manager says: ``manual`` progression with a
huge ``times`` holds them in STARTING (which moto counts against MaxConcurrentRuns
like RUNNING), and the fake sleep the tests put in the context moves them on by
hand, one state per call, so every wait of the planner is a step of the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import polars as pl
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.stub import Stubber
from helpers import access_of, ledger_of, make_plan, open_plan, sheet_frame

import planner
from planner.backends import glue as glue_backend
from planner.backends.glue import Glue
from planner.commands import sandbox_prepare as prepare
from planner.commands import status as submission
from planner.commands.child_settings import glue_arguments, read_child_settings
from planner.commands.retry import retry
from planner.commands.status import status
from planner.commands.submit import run_submission, submit
from planner.core.line_index import entry_count, line_index

HOLD = {"progression": "manual", "times": 10**9}
STEP = {"progression": "manual", "times": 1}
ACTIVE = ("STARTING", "RUNNING")


def _transition(moto_server: str, transition: dict[str, Any] | None) -> None:
    """Set (or, with None, unset) moto's transition for Glue job runs."""
    path, body = (
        ("set-transition", {"model_name": "glue::job_run", "transition": transition})
        if transition
        else ("unset-transition", {"model_name": "glue::job_run"})
    )
    request = urllib.request.Request(
        f"{moto_server}/moto-api/state-manager/{path}", data=json.dumps(body).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture()
def glue(moto_server: str, aws_environment: None) -> Any:
    return boto3.client(
        "glue",
        endpoint_url=moto_server,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )


@pytest.fixture()
def make_job(glue: Any) -> Callable[..., str]:
    """A fresh Glue job in moto (no default arguments, so a run's Arguments are exactly what was sent)."""

    def make(max_concurrent_runs: int = 2) -> str:
        name = f"etl-{uuid.uuid4().hex[:10]}"
        glue.create_job(
            Name=name,
            Role="arn:aws:iam::123456789012:role/glue",
            GlueVersion="4.0",
            Command={"Name": "glueetl", "ScriptLocation": "s3://scripts/etl.py", "PythonVersion": "3"},
            ExecutionProperty={"MaxConcurrentRuns": max_concurrent_runs},
        )
        return name

    return make


@pytest.fixture()
def held_runs(moto_server: str) -> Iterator[None]:
    """Job runs stay where they are until a test moves them (the server is shared: always unset)."""
    _transition(moto_server, HOLD)
    try:
        yield
    finally:
        _transition(moto_server, None)


class RunMover:
    """The fake sleep: each call moves every held run one state on (STARTING -> RUNNING -> SUCCEEDED)."""

    def __init__(self, moto_server: str, glue: Any, job: str, limit: int = 200):
        self.moto_server, self.glue, self.job, self.limit = moto_server, glue, job, limit
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            assert len(self.sleeps) < self.limit, "the planner keeps waiting: runs never seem to end"
            _transition(self.moto_server, STEP)
            try:
                self.glue.get_job_runs(JobName=self.job)  # each listed run takes one step
            finally:
                _transition(self.moto_server, HOLD)


def _runs(glue: Any, job: str) -> list[dict[str, Any]]:
    return [run for page in glue.get_paginator("get_job_runs").paginate(JobName=job) for run in page["JobRuns"]]


SHEET: dict[str, Any] = {"width": 3, "input_path": "s3://lake/raw/{sample}/"}  # sheet_frame(n, **SHEET)


def _defaults(job: str, **run: Any) -> dict[str, Any]:
    return {
        "run": {
            "JobName": job,
            "WorkerType": "G.1X",
            "NumberOfWorkers": 2,
            "Timeout": 60,
            "Arguments": {"--input_format": "parquet"},
            **run,
        },
        "sheet": {"id_column": "sample"},
    }


def _options(moto_server: str, bucket: str | None = None, **more: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"sandbox": True, "endpoints": {"s3": moto_server, "glue": moto_server}, **more}
    if bucket:
        options["staging"] = f"s3://{bucket}/staging/"
    return options


def _submit(
    plan_dir: str,
    options: dict[str, Any],
    sleep: Callable[[float], None] | None = None,
    hooks: dict[str, Callable[..., Any]] | None = None,
) -> Any:
    """planner.commands.submit.submit with a fake sleep and client event hooks put into the context."""
    ctx = open_plan(plan_dir, **options)
    try:
        if sleep is not None:
            ctx.sleep = sleep
        for event, hook in (hooks or {}).items():
            ctx.clients.get("glue").meta.events.register(event, hook)
        return run_submission(ctx)
    finally:
        ctx.ledger.close()


def _key(plan_dir: str, sample: str) -> str:
    plan_id = planner.read_plan(plan_dir).to_json()["plan_id"]
    return f"{plan_id}:{hashlib.sha256(sample.encode()).hexdigest()[:32]}"


# ------------------------------------------------------------------ concurrency


def test_ten_samples_through_two_slots_none_lost_none_duplicated(tmp_path, moto_server, glue, make_job, held_runs):
    job = make_job(max_concurrent_runs=2)
    plan_dir = make_plan(tmp_path, sheet_frame(10, **SHEET), "glue", defaults=_defaults(job))
    mover = RunMover(moto_server, glue, job)
    seen_active: list[int] = []
    refusals: list[str] = []

    def after_start(parsed: dict[str, Any], **_: Any) -> None:
        if "Error" in parsed:
            refusals.append(parsed["Error"]["Code"])
        else:
            seen_active.append(sum(run["JobRunState"] in ACTIVE for run in _runs(glue, job)))

    report = _submit(
        plan_dir, _options(moto_server, concurrency=8), sleep=mover, hooks={"after-call.glue.StartJobRun": after_start}
    )

    assert report.tally("StartJobRun").created == 10
    runs = _runs(glue, job)
    keys = [run["Arguments"]["--planner-run-key"] for run in runs]
    assert len(runs) == 10 and sorted(keys) == sorted(_key(plan_dir, f"S{i:03d}") for i in range(10))
    assert len(seen_active) == 10 and max(seen_active) <= 2  # never more than MaxConcurrentRuns at once
    assert refusals == []  # the planner counted slots instead of running into ConcurrentRunsExceededException
    assert (
        len(mover.sleeps) >= 4
    )  # 8 runs had to end before the last 2 could start: each end is a step of the fake sleep

    for _ in range(2):
        mover(0)
    table = status(plan_dir, **access_of(_options(moto_server)))
    assert table.height == 10 and table.get_column("remote_id").n_unique() == 10
    assert set(table.get_column("state")) == {"SUCCEEDED"}
    by_id = {run["Id"]: run["Arguments"]["--planner-run-key"] for run in _runs(glue, job)}
    assert all(
        by_id[run_id] == _key(plan_dir, sample) for sample, run_id in table.select("id", "remote_id").iter_rows()
    )


def test_concurrent_runs_exceeded_is_waited_out_not_failed(tmp_path, moto_server, glue, make_job, held_runs):
    job = make_job(max_concurrent_runs=1)
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "glue", defaults=_defaults(job))
    mover = RunMover(moto_server, glue, job)
    outside: list[str] = []
    refusals: list[str] = []

    def someone_else_starts_first(**_: Any) -> None:
        if not outside:  # between the planner's count and its first StartJobRun, another client takes the slot
            outside.append(glue.start_job_run(JobName=job, Arguments={"--by": "someone-else"})["JobRunId"])

    def after_start(parsed: dict[str, Any], **_: Any) -> None:
        if "Error" in parsed:
            refusals.append(parsed["Error"]["Code"])

    report = _submit(
        plan_dir,
        _options(moto_server, concurrency=2),
        sleep=mover,
        hooks={"before-call.glue.StartJobRun": someone_else_starts_first, "after-call.glue.StartJobRun": after_start},
    )
    assert report.tally("StartJobRun").created == 3
    assert refusals[:1] == ["ConcurrentRunsExceededException"]
    assert mover.sleeps and mover.sleeps[0] == 1.0
    ours = [run for run in _runs(glue, job) if run["Id"] not in outside]
    assert sorted(run["Arguments"]["--planner-run-key"] for run in ours) == sorted(
        _key(plan_dir, f"S{i:03d}") for i in range(3)
    )


def test_queuing_enabled_submits_without_waiting_for_slots(tmp_path):
    plan_dir = make_plan(
        tmp_path, sheet_frame(3, **SHEET), "glue", defaults=_defaults("etl", JobRunQueuingEnabled=True)
    )
    ctx, client = _stubbed_context(plan_dir)
    ctx.sleep = lambda seconds: pytest.fail("waited for a slot although Glue queues the runs")
    with Stubber(client) as stub:
        stub.add_response(
            "get_job", {"Job": {"Name": "etl", "ExecutionProperty": {"MaxConcurrentRuns": 1}}}, {"JobName": "etl"}
        )
        stub.add_response(
            "get_job_runs",
            {"JobRuns": [{"Id": "jr_other", "JobName": "etl", "JobRunState": "RUNNING"}]},
            {"JobName": "etl", "MaxResults": 200},
        )
        for i in range(3):
            stub.add_response(
                "start_job_run", {"JobRunId": f"jr_{i}"}, {**_request(plan_dir, f"S{i:03d}", JobRunQueuingEnabled=True)}
            )
        report = run_submission(ctx)
        stub.assert_no_pending_responses()
    assert report.tally("StartJobRun").created == 3


# ------------------------------------------------------------------ idempotency


def test_a_submit_killed_after_start_job_run_resumes_without_a_second_run(tmp_path, moto_server, glue, make_job):
    job = make_job(max_concurrent_runs=20)
    plan_dir = make_plan(tmp_path, sheet_frame(10, **SHEET), "glue", defaults=_defaults(job))
    options = _options(moto_server)
    script = textwrap.dedent(
        f"""
        import os, signal
        from planner.engine.context import Options, open_context
        from planner.commands.submit import run_submission
        ctx = open_context(
            {plan_dir!r}, options=Options(concurrency=1), sandbox=True, endpoints={options["endpoints"]!r}
        )
        ctx.clients.get("glue").meta.events.register(
            "after-call.glue.StartJobRun", lambda **_: os.kill(os.getpid(), signal.SIGKILL))
        run_submission(ctx)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert len(_runs(glue, job)) == 1
    ledger = ledger_of(plan_dir)
    (intent,) = ledger.submissions()
    assert intent.state == "intent" and intent.remote_id is None  # died before the result was journaled
    ledger.close()

    report = submit(plan_dir, **options)
    runs_started = report.tally("StartJobRun")
    assert runs_started.found == 1 and runs_started.created == 9
    runs = _runs(glue, job)
    assert len(runs) == 10 and len({run["Arguments"]["--planner-run-key"] for run in runs}) == 10
    ledger = ledger_of(plan_dir)
    assert intent.key in ledger.done_keys() and len(ledger.done_keys()) == 10
    first = next(run for run in runs if run["Arguments"]["--planner-run-key"] == intent.token)
    assert ledger.submission(intent.key).remote_id == first["Id"]
    ledger.close()

    again = submit(plan_dir, **options).tally("StartJobRun")
    assert again.created == 0 and again.already == 10 and len(_runs(glue, job)) == 10


def test_a_lost_ledger_starts_nothing_twice(tmp_path, moto_server, glue, make_job):
    job = make_job(max_concurrent_runs=20)
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), "glue", defaults=_defaults(job))
    submit(plan_dir, **_options(moto_server))
    os.unlink(os.path.join(plan_dir, "ledger.sqlite"))
    report = submit(plan_dir, **_options(moto_server)).tally("StartJobRun")
    assert report.found == 5 and report.created == 0
    assert len(_runs(glue, job)) == 5


def _newest_first(parsed: dict[str, Any], **_: Any) -> None:
    """GetJobRuns as AWS lists (API reference: "in chronological order, with the newest jobs returned first");
    moto lists oldest first."""
    parsed.get("JobRuns", []).reverse()


@pytest.mark.parametrize("aws_order", [False, True], ids=["oldest-first-as-moto", "newest-first-as-aws"])
def test_a_retried_run_is_found_whatever_order_get_job_runs_lists_it(
    tmp_path, moto_server, glue, make_job, aws_order, monkeypatch
):
    """Glue's own retry of a run (StartJobRun JobRunId: "the ID of a previous JobRun to retry") carries the same
    Arguments, so the same run key: the sample's run is the newest attempt, in whatever order runs are listed,
    on whichever page."""
    monkeypatch.setattr(glue_backend, "PAGE_SIZE", 2)  # four runs: two pages
    job = make_job(max_concurrent_runs=20)
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "glue", defaults=_defaults(job))
    submit(plan_dir, **_options(moto_server))
    first = {run["Arguments"]["--planner-run-key"]: run for run in _runs(glue, job)}
    original = first[_key(plan_dir, "S001")]
    retried = glue.start_job_run(JobName=job, JobRunId=original["Id"], Arguments=original["Arguments"])["JobRunId"]
    hooks: dict[str, Any] = {"after-call.glue.GetJobRuns": _newest_first} if aws_order else {}
    pages: list[int] = []
    hooks["before-call.glue.GetJobRuns"] = lambda **_: pages.append(1)

    ctx = open_plan(plan_dir, **_options(moto_server))
    try:
        for event, hook in hooks.items():
            ctx.clients.get("glue").meta.events.register(event, hook)
        table = submission._status(ctx, refresh=True)
    finally:
        ctx.ledger.close()
    remote = dict(zip(table.get_column("id"), table.get_column("remote_id"), strict=True))
    assert remote["S001"] == retried and remote["S000"] == first[_key(plan_dir, "S000")]["Id"]
    assert len(pages) == 2  # every page was read

    os.unlink(os.path.join(plan_dir, "ledger.sqlite"))  # a lost ledger: the runs are found again, not started
    report = _submit(plan_dir, _options(moto_server), hooks=hooks).tally("StartJobRun")
    assert (report.found, report.created) == (3, 0)
    ledger = ledger_of(plan_dir)
    try:
        found = {s.sample: s.remote_id for s in ledger.submissions() if s.sample}
    finally:
        ledger.close()
    assert found["S001"] == retried


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def test_a_5xx_after_the_run_started_is_looked_up_not_resent(tmp_path, moto_server, glue, make_job):
    """botocore would retry a 500 and start a second run; the planner finds the first by its key."""
    job = make_job(max_concurrent_runs=20)
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "glue", defaults=_defaults(job))
    sent: list[bytes] = []

    def lose_the_first_answer(request: Any, **_: Any) -> AWSResponse | None:
        sent.append(request.body)
        if len(sent) > 1:
            return None
        forwarded = urllib.request.Request(request.url, data=request.body, headers=dict(request.headers), method="POST")
        urllib.request.urlopen(forwarded, timeout=10).read()  # the run starts...
        body = b'{"__type": "InternalServiceException", "message": "lost"}'
        return AWSResponse(
            request.url, 500, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body)
        )  # ...the answer is lost

    report = _submit(
        plan_dir,
        _options(moto_server, concurrency=1),
        sleep=lambda seconds: None,
        hooks={"before-send.glue.StartJobRun": lose_the_first_answer},
    )
    assert len(sent) == 3  # no second StartJobRun for the first sample
    assert report.tally("StartJobRun").created == 3
    runs = _runs(glue, job)
    assert sorted(run["Arguments"]["--planner-run-key"] for run in runs) == sorted(
        _key(plan_dir, f"S{i:03d}") for i in range(3)
    )


# ------------------------------------------------------------------ requests


def test_arguments_are_exactly_the_merged_parameters_as_strings(tmp_path, moto_server, glue, make_job):
    job = make_job(max_concurrent_runs=20)
    sheet = pl.DataFrame(
        {
            "sample": ["A", "B"],
            "threads": [4, None],
            "paired": [True, False],
            "lanes": [[1, 2], [3]],
            "param.input_format": ["csv", None],
            "NumberOfWorkers": [None, 5],
        }
    )
    plan_dir = make_plan(
        tmp_path, sheet, "glue", defaults=_defaults(job, Arguments={"--input_format": "parquet", "--threads": "8"})
    )
    submit(plan_dir, **_options(moto_server))
    runs = {run["Arguments"]["--planner-run-key"]: run for run in _runs(glue, job)}
    a, b = runs[_key(plan_dir, "A")], runs[_key(plan_dir, "B")]
    assert a["Arguments"] == {
        "--input_format": "csv",
        "--threads": "4",
        "--sample": "A",
        "--paired": "true",
        "--lanes": "[1,2]",
        "--planner-run-key": _key(plan_dir, "A"),
    }
    assert b["Arguments"] == {
        "--input_format": "parquet",
        "--threads": "8",
        "--sample": "B",
        "--paired": "false",
        "--lanes": "[3]",
        "--planner-run-key": _key(plan_dir, "B"),
    }
    assert (a["NumberOfWorkers"], b["NumberOfWorkers"]) == (2, 5)
    assert all(isinstance(value, str) for run in (a, b) for value in run["Arguments"].values())


def _stubbed_context(plan_dir: str) -> tuple[Any, Any]:
    ctx = open_plan(plan_dir, endpoints={"glue": "http://127.0.0.1:9", "s3": "http://127.0.0.1:9"}, concurrency=1)
    client = boto3.client("glue", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    ctx.clients._cache["glue"] = client
    return ctx, client


def _request(plan_dir: str, sample: str, **fields: Any) -> dict[str, Any]:
    return {
        "JobName": "etl",
        "WorkerType": "G.1X",
        "NumberOfWorkers": 2,
        "Timeout": 60,
        **fields,
        "Arguments": {
            "--input_format": "parquet",
            "--sample": sample,
            "--input_path": f"s3://lake/raw/{sample}/",
            "--planner-run-key": _key(plan_dir, sample),
        },
    }


def test_stubber_pins_the_exact_start_job_run_requests(tmp_path):
    plan_dir = make_plan(tmp_path, sheet_frame(2, **SHEET), "glue", defaults=_defaults("etl"))
    ctx, client = _stubbed_context(plan_dir)
    with Stubber(client) as stub:
        stub.add_response(
            "get_job", {"Job": {"Name": "etl", "ExecutionProperty": {"MaxConcurrentRuns": 5}}}, {"JobName": "etl"}
        )
        stub.add_response("get_job_runs", {"JobRuns": [], "NextToken": "page-2"}, {"JobName": "etl", "MaxResults": 200})
        stub.add_response("get_job_runs", {"JobRuns": []}, {"JobName": "etl", "MaxResults": 200, "NextToken": "page-2"})
        stub.add_response(
            "start_job_run",
            {"JobRunId": "jr_a"},
            {
                "JobName": "etl",
                "WorkerType": "G.1X",
                "NumberOfWorkers": 2,
                "Timeout": 60,
                "Arguments": {
                    "--input_format": "parquet",
                    "--sample": "S000",
                    "--input_path": "s3://lake/raw/S000/",
                    "--planner-run-key": _key(plan_dir, "S000"),
                },
            },
        )
        stub.add_response("start_job_run", {"JobRunId": "jr_b"}, _request(plan_dir, "S001"))
        report = run_submission(ctx)
        stub.assert_no_pending_responses()
    assert report.tally("StartJobRun").created == 2
    assert ctx.ledger.submission("StartJobRun:S000").remote_id == "jr_a"
    assert ctx.ledger.submission("StartJobRun:S001").token == _key(plan_dir, "S001")
    ctx.ledger.close()


def test_status_maps_states_and_reasons_and_retry_takes_the_glue_failure_states(tmp_path):
    plan_dir = make_plan(tmp_path, sheet_frame(4, **SHEET), "glue", defaults=_defaults("etl"))
    ctx, client = _stubbed_context(plan_dir)
    with Stubber(client) as stub:
        stub.add_response(
            "get_job", {"Job": {"Name": "etl", "ExecutionProperty": {"MaxConcurrentRuns": 10}}}, {"JobName": "etl"}
        )
        stub.add_response("get_job_runs", {"JobRuns": []}, {"JobName": "etl", "MaxResults": 200})
        for i in range(4):
            stub.add_response("start_job_run", {"JobRunId": f"jr_{i}"}, _request(plan_dir, f"S{i:03d}"))
        run_submission(ctx)

        def run(i: int, state: str, **more: Any) -> dict[str, Any]:
            return {
                "Id": f"jr_{i}",
                "JobName": "etl",
                "JobRunState": state,
                "Arguments": {"--planner-run-key": _key(plan_dir, f"S{i:03d}")},
                **more,
            }

        stub.add_response(
            "get_job_runs",
            {"JobRuns": [run(3, "RUNNING"), run(2, "TIMEOUT", ErrorMessage="ran 60 minutes")], "NextToken": "t"},
            {"JobName": "etl", "MaxResults": 200},
        )
        stub.add_response(
            "get_job_runs",
            {"JobRuns": [run(1, "FAILED", ErrorMessage="AnalysisException: path not found"), run(0, "SUCCEEDED")]},
            {"JobName": "etl", "MaxResults": 200, "NextToken": "t"},
        )
        Glue(ctx).refresh()
        stub.assert_no_pending_responses()
    ctx.ledger.close()
    table = status(plan_dir, refresh=False, endpoints={"glue": "http://127.0.0.1:9", "s3": "http://127.0.0.1:9"})
    assert table.select("id", "remote_id", "state", "reason").rows() == [
        ("S000", "jr_0", "SUCCEEDED", None),
        ("S001", "jr_1", "FAILED", "AnalysisException: path not found"),
        ("S002", "jr_2", "TIMEOUT", "ran 60 minutes"),
        ("S003", "jr_3", "RUNNING", None),
    ]
    new_plan = str(tmp_path / "retry")
    manifest = retry(
        plan_dir,
        new_plan,
        states=glue_backend.RETRY_STATES,
        refresh=False,
        endpoints={"glue": "http://127.0.0.1:9", "s3": "http://127.0.0.1:9"},
    ).to_json()
    assert manifest["runs"] == 2
    original = Path(os.path.join(plan_dir, "shards", "00000.json")).read_bytes().splitlines()
    retried = Path(os.path.join(new_plan, "shards", "00000.json")).read_bytes().splitlines()
    assert [line.rstrip(b",") for line in retried[1:-1]] == [line.rstrip(b",") for line in original[2:4]]


def test_cancel_stops_the_unfinished_runs_25_at_a_time(tmp_path, moto_server, glue, make_job):
    job = make_job(max_concurrent_runs=100)
    plan_dir = make_plan(tmp_path, sheet_frame(30, **SHEET), "glue", defaults=_defaults(job))
    submit(plan_dir, **_options(moto_server))
    ctx = open_plan(plan_dir, **_options(moto_server))
    done = ctx.ledger.submissions("done")
    run_ids = [s.remote_id for s in done]
    client = boto3.client("glue", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    ctx.clients._cache["glue"] = client  # moto has no BatchStopJobRun
    with Stubber(client) as stub:
        running = [
            {"Id": s.remote_id, "JobName": job, "JobRunState": "RUNNING", "Arguments": {"--planner-run-key": s.token}}
            for s in done
        ]
        running[0]["JobRunState"] = "SUCCEEDED"  # ended meanwhile: not stopped
        stub.add_response("get_job_runs", {"JobRuns": running}, {"JobName": job, "MaxResults": 200})
        stub.add_response(
            "batch_stop_job_run",
            {"SuccessfulSubmissions": [{"JobName": job, "JobRunId": r} for r in run_ids[1:26]]},
            {"JobName": job, "JobRunIds": run_ids[1:26]},
        )
        stub.add_response(
            "batch_stop_job_run",
            {
                "SuccessfulSubmissions": [{"JobName": job, "JobRunId": r} for r in run_ids[26:29]],
                "Errors": [
                    {
                        "JobName": job,
                        "JobRunId": run_ids[29],
                        "ErrorDetail": {"ErrorCode": "InvalidInputException", "ErrorMessage": "already ended"},
                    }
                ],
            },
            {"JobName": job, "JobRunIds": run_ids[26:]},
        )
        report = Glue(ctx).cancel()
        stub.assert_no_pending_responses()
    assert (report.count("cancelled"), report.count("not cancelled")) == (28, 1) and not report.complete
    (refused,) = [o for o in report.outcomes if o.outcome == "not cancelled"]
    assert refused.target == f"run {run_ids[29]} of {job}" and "already ended" in str(refused.detail)
    ctx.ledger.close()
    # moto ends its runs at once: cancel sees them all SUCCEEDED and stops nothing.
    assert planner.cancel(plan_dir, **access_of(_options(moto_server))).count("cancelled") == 0


def test_secret_looking_argument_names_warn_once_and_dry_run_sends_nothing(
    tmp_path, moto_server, glue, make_job, capsys, caplog
):
    job = make_job()
    sheet = sheet_frame(3, **SHEET).with_columns(pl.lit("hunter2").alias("db_password"), pl.lit("t").alias("api_token"))
    plan_dir = make_plan(tmp_path, sheet, "glue", defaults=_defaults(job))
    submit(plan_dir, dry_run=True, **_options(moto_server))
    captured = capsys.readouterr()
    lines = [orjson.loads(line) for line in captured.out.splitlines()]
    assert [line["sample"] for line in lines] == ["S000", "S001", "S002"]
    assert all(line["problems"] == [] and line["operation"] == "StartJobRun" for line in lines)
    assert lines[0]["request"]["Arguments"]["--planner-run-key"] == _key(plan_dir, "S000")
    warnings = [record.getMessage() for record in caplog.records if "secret" in record.getMessage()]
    assert len(warnings) == 1 and "--api_token" in warnings[0] and "--db_password" in warnings[0]
    assert _runs(glue, job) == []
    assert not os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))


def test_reserved_argument_names_are_refused_in_the_defaults(tmp_path):
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(
            sheet_frame(1, **SHEET), backend="glue", defaults=_defaults("etl", Arguments={"--planner-run-key": "mine"})
        )
    assert [p.rule for p in caught.value.problems] == ["reserved"]


# ------------------------------------------------------------------ manifest mode


def test_manifest_mode_runs_one_job_run_per_shard(tmp_path, moto_server, glue, make_job, s3, bucket):
    job = make_job(max_concurrent_runs=2)
    defaults = {**_defaults(job), "submission": {"mode": "manifest"}}
    plan_dir = make_plan(tmp_path, sheet_frame(10, **SHEET), "glue", defaults=defaults, max_entries=4)
    manifest = planner.read_plan(plan_dir).to_json()
    assert [s["entries"] for s in manifest["shards"]] == [4, 4, 2] and {s["mode"] for s in manifest["shards"]} == {"s3"}
    options = _options(moto_server, bucket)

    report = submit(plan_dir, **options)
    assert report.tally("StartJobRun").created == 3 and report.runs == 10
    runs = {run["Arguments"]["--planner-run-key"]: run for run in _runs(glue, job)}
    assert sorted(runs) == [f"{manifest['plan_id']}:shard-{i:05d}" for i in range(3)]
    for shard in manifest["shards"]:
        arguments = runs[f"{manifest['plan_id']}:shard-{shard['index']:05d}"]["Arguments"]
        local = Path(os.path.join(plan_dir, shard["path"])).read_bytes()
        index = line_index(os.path.join(plan_dir, shard["path"]))
        assert arguments["--planner-manifest"] == f"s3://{bucket}/staging/{manifest['plan_id']}/{shard['sha256']}.json"
        assert arguments["--planner-manifest-etag"] == shard["etag"]
        assert arguments["--planner-first-index"] == "0"
        assert (
            arguments["--planner-index-uri"]
            == f"s3://{bucket}/staging/{manifest['plan_id']}/{hashlib.sha256(index).hexdigest()}.index"
        )
        assert arguments["--planner-index-etag"] == f'"{hashlib.md5(index).hexdigest()}"'
        assert arguments["--input_format"] == "parquet"
        staged_index = s3.get_object(Bucket=bucket, Key=arguments["--planner-index-uri"].split("/", 3)[3])[
            "Body"
        ].read()
        assert staged_index == index and entry_count(index) == shard["entries"]
        # What a Glue script does with its own argument list: one ranged read per sample, through child_settings.
        argv = ["script.py", "--JOB_ID", "j_1"] + [part for name, value in arguments.items() for part in (name, value)]
        located = glue_arguments(argv)
        entries = [read_child_settings(environ={}, s3=s3, index=i, **located) for i in range(shard["entries"])]
        assert entries == orjson.loads(local)

    table = status(plan_dir, **access_of(options))
    assert table.height == 10 and set(table.get_column("state")) == {"SUCCEEDED"}
    by_shard = dict(table.group_by("shard").agg(pl.col("remote_id").unique()).iter_rows())
    assert all(len(ids) == 1 for ids in by_shard.values()) and len({ids[0] for ids in by_shard.values()}) == 3
    again = submit(plan_dir, **options)
    assert again.tally("StartJobRun").created == 0 and len(_runs(glue, job)) == 3


def test_manifest_mode_dry_run_shows_one_request_per_shard_and_stages_nothing(
    tmp_path, moto_server, glue, make_job, s3, bucket, capsys
):
    job = make_job()
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(5, **SHEET),
        "glue",
        defaults={**_defaults(job), "submission": {"mode": "manifest"}},
        max_entries=3,
    )
    manifest = planner.read_plan(plan_dir).to_json()
    submit(plan_dir, dry_run=True, **_options(moto_server, bucket))
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["shard"] for line in lines] == [0, 1] and all(line["problems"] == [] for line in lines)
    arguments = lines[1]["request"]["Arguments"]
    assert (
        arguments["--planner-manifest"]
        == f"s3://{bucket}/staging/{manifest['plan_id']}/{manifest['shards'][1]['sha256']}.json"
    )
    assert arguments["--planner-run-key"] == f"{manifest['plan_id']}:shard-00001"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0 and _runs(glue, job) == []


def test_manifest_mode_refuses_per_sample_job_run_fields(tmp_path):
    """One job run per shard cannot honour a per-sample WorkerType; a param. column can still carry it."""
    sheet = sheet_frame(3, **SHEET).with_columns(pl.lit("G.2X").alias("WorkerType"), pl.lit(4).alias("NumberOfWorkers"))
    defaults = {**_defaults("etl"), "submission": {"mode": "manifest"}}
    with pytest.raises(planner.ValidationError) as caught:
        make_plan(tmp_path, sheet, "glue", defaults=defaults)
    (problem,) = caught.value.problems
    assert (problem.column, problem.rule) == ("[submission] mode", "manifest-fields")
    assert "NumberOfWorkers, WorkerType" in problem.message and "param.NumberOfWorkers" in problem.message
    assert not (tmp_path / "plan").exists()
    renamed = sheet.rename({"WorkerType": "param.WorkerType", "NumberOfWorkers": "param.NumberOfWorkers"})
    plan_dir = make_plan(tmp_path, renamed, "glue", defaults=defaults)
    manifest = planner.read_plan(plan_dir).to_json()
    with open(os.path.join(plan_dir, manifest["shards"][0]["path"]), encoding="utf-8") as handle:
        first = json.loads(handle.read())[0]
    assert (
        first["WorkerType"] == "G.1X"
        and first["Arguments"]["--WorkerType"] == "G.2X"
        and first["Arguments"]["--NumberOfWorkers"] == "4"
    )
    # The same sheet in per-run mode sets the fields per sample, as before.
    per_run = planner.plan(sheet, backend="glue", defaults=_defaults("etl")).runs()
    assert {orjson.loads(run)["WorkerType"] for run in per_run.get_column("run")} == {"G.2X"}


def test_an_index_object_with_other_bytes_is_refused(tmp_path, moto_server, glue, make_job, s3, bucket):
    job = make_job()
    plan_dir = make_plan(
        tmp_path, sheet_frame(3, **SHEET), "glue", defaults={**_defaults(job), "submission": {"mode": "manifest"}}
    )
    manifest = planner.read_plan(plan_dir).to_json()
    index = line_index(os.path.join(plan_dir, manifest["shards"][0]["path"]))
    s3.put_object(
        Bucket=bucket,
        Key=f"staging/{manifest['plan_id']}/{hashlib.sha256(index).hexdigest()}.index",
        Body=b"not an index",
    )
    with pytest.raises(planner.SubmissionError, match="refusing to overwrite"):
        submit(plan_dir, **_options(moto_server, bucket))
    assert _runs(glue, job) == []


def test_the_sandbox_creates_the_job_the_plan_names(tmp_path, moto_server, glue):
    job = f"sandbox-{uuid.uuid4().hex[:8]}"
    plan_dir = make_plan(tmp_path, sheet_frame(2, **SHEET), "glue", defaults=_defaults(job))
    report = submit(plan_dir, **_options(moto_server))
    assert report.tally("StartJobRun").created == 2
    assert glue.get_job(JobName=job)["Job"]["ExecutionProperty"] == {
        "MaxConcurrentRuns": prepare.GLUE_MAX_CONCURRENT_RUNS
    }
