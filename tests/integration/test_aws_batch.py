"""AWS Batch submission end to end: planner -> moto's S3 and Batch (no Docker), over HTTP.

moto's Batch without Docker finishes every job at SubmitJob: SUCCEEDED, or FAILED
while ``MOTO_SIMPLE_BATCH_FAIL_AFTER`` is set in the server's process (this one).
Each test plans into its own job queue, which ``--sandbox`` creates (``planner/sandbox/prepare.py``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import textwrap
import urllib.request
import uuid
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
from planner.commands.cancel import cancel
from planner.commands.child_settings import read_child_settings
from planner.commands.retry import retry
from planner.commands.status import status
from planner.commands.submit import run_submission, submit
from planner.errors import InputError

FAIL_AFTER = "MOTO_SIMPLE_BATCH_FAIL_AFTER"


@pytest.fixture(scope="module")
def batch_server(moto_server: str) -> str:
    """moto's server with Batch jobs run without Docker."""
    request = urllib.request.Request(
        f"{moto_server}/moto-api/config", data=json.dumps({"batch": {"use_docker": False}}).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).read()
    return moto_server


@pytest.fixture()
def queue(batch_server: str) -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture()
def batch(batch_server: str, aws_environment: None) -> Any:
    return boto3.client("batch", endpoint_url=batch_server, region_name="us-east-1")


@pytest.fixture()
def options(batch_server: str, bucket: str) -> dict[str, Any]:
    return {
        "sandbox": True,
        "endpoints": {"s3": batch_server, "batch": batch_server, "iam": batch_server},
        "staging": f"s3://{bucket}/staging/",
    }


# sheet_frame(n, **SHEET): S000000..., a BAM per sample, and min_mapq on every third row (empty elsewhere: the
# default stands)
SHEET: dict[str, Any] = {"width": 6, "bam": "s3://in/S{i}.bam", "min_mapq": every(3, "30")}


def _defaults(queue: str, **submission: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "run": {
            "jobQueue": queue,
            "jobDefinition": "planner-test-jobdef:2",
            "jobName": "cohort",
            "parameters": {"reference": "s3://refs/hg38.fa", "min_mapq": "20"},
            "containerOverrides": {"environment": [{"name": "STAGE", "value": "test"}]},
            "retryStrategy": {"attempts": 2},
            "timeout": {"attemptDurationSeconds": 3600},
            "tags": {"project": "p1"},
        },
    }
    if submission:
        document["submission"] = submission
    return document


def _merged(queue: str, runs: int) -> dict[str, dict[str, Any]]:
    """Every sample's merged settings, as the planner's Python API shows them (``Plan.runs()``)."""
    table = planner.plan(sheet_frame(runs, **SHEET), backend="batch", defaults=_defaults(queue)).runs()
    return {sample: orjson.loads(run) for sample, run in table.select("id", "run").iter_rows()}


def _check_by_hand(settings: dict[str, Any], queue: str, n: int) -> None:
    """The fields the services' merge rule fixes for sample n, worked out here."""
    run = _defaults(queue)["run"]
    assert settings["id"] == f"S{n:06d}"
    assert {k: v for k, v in settings.items() if k not in ("id", "parameters")} == {
        k: v for k, v in run.items() if k != "parameters"
    }
    assert settings["parameters"]["bam"] == f"s3://in/S{n}.bam"
    assert settings["parameters"]["reference"] == run["parameters"]["reference"]
    assert settings["parameters"]["min_mapq"] == ("30" if n % 3 == 0 else "20")  # an empty cell keeps the default


def _jobs(plan_dir: str, options: dict[str, Any]) -> list[str]:
    ledger = ledger_of(plan_dir)
    try:
        return [str(s.remote_id) for s in ledger.submissions("done") if s.kind == "SubmitJob"]
    finally:
        ledger.close()


def _child_environment(job: dict[str, Any]) -> dict[str, str]:
    """What a child's container sees of the job's environment (moto appends AWS_BATCH_JOB_ID itself)."""
    return {v["name"]: v["value"] for v in job["container"]["environment"] if not v["name"].startswith("AWS_BATCH")}


def _count_named(batch: Any, queue: str, name: str) -> int:
    listed = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}])["jobSummaryList"]
    return len([j for j in listed if j["jobName"] == name and ":" not in j["jobId"]])


@pytest.mark.slow
def test_25001_runs_become_three_arrays_and_every_child_reads_its_own_settings(tmp_path, options, queue, batch, s3):
    plan_dir = make_plan(tmp_path, sheet_frame(25_001, **SHEET), "batch", defaults=_defaults(queue))
    merged = _merged(queue, 25_001)
    manifest = planner.read_plan(plan_dir).to_json()
    assert [s["entries"] for s in manifest["shards"]] == [10_000, 10_000, 5_001]

    report = submit(plan_dir, **options)
    jobs = report.tally("SubmitJob")
    assert (jobs.created, jobs.found, jobs.already, report.runs) == (3, 0, 0, 25_001)
    job_ids = _jobs(plan_dir, options)
    jobs = {j["jobId"]: j for j in batch.describe_jobs(jobs=job_ids)["jobs"]}
    first_position = 0
    for shard, job_id in zip(manifest["shards"], job_ids, strict=False):
        job = jobs[job_id]
        assert job["jobName"] == f"cohort-{manifest['plan_id']}-{shard['index']:05d}"
        assert job["arrayProperties"]["size"] == shard["entries"]
        assert job["parameters"] == _defaults(queue)["run"]["parameters"]
        environment = _child_environment(job)
        assert environment["STAGE"] == "test"
        assert environment["PLANNER_MANIFEST"].endswith(f"/staging/{manifest['plan_id']}/{shard['sha256']}.json")
        assert environment["PLANNER_MANIFEST_ETAG"] == shard["etag"]
        assert environment["PLANNER_FIRST_INDEX"] == "0"
        last = shard["entries"] - 1
        for index in sorted({0, 1, 2, last // 3, last // 2, last - 1, last}):
            child = dict(environment, AWS_BATCH_JOB_ARRAY_INDEX=str(index))
            settings = read_child_settings(environ=child, s3=s3)
            n = first_position + index
            assert settings == merged[f"S{n:06d}"]
            _check_by_hand(settings, queue, n)
        first_position += shard["entries"]

    table = status(plan_dir, **access_of(options))
    assert table.height == 25_001
    assert set(table.get_column("state")) == {"SUCCEEDED"}
    assert set(table.get_column("submission_status")) == {"SUBMITTED"}
    # Every sample maps to its own child: <array job id>:<position in the shard>.
    expected_ids = table.select(pl.format("{}:{}", "submission_id", "position").alias("child"))
    assert table.get_column("remote_id").to_list() == expected_ids.get_column("child").to_list()


def test_one_run_is_a_plain_job_with_its_own_parameters(tmp_path, options, queue, batch, s3):
    plan_dir = make_plan(tmp_path, sheet_frame(1, **SHEET), "batch", defaults=_defaults(queue))
    report = submit(plan_dir, **options)
    assert report.tally("SubmitJob").created == 1
    (job_id,) = _jobs(plan_dir, options)
    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert "arrayProperties" not in job or "size" not in job["arrayProperties"]
    expected = _merged(queue, 1)["S000000"]
    assert job["parameters"] == expected["parameters"]  # a plain job carries its run's own settings
    environment = _child_environment(job)  # no AWS_BATCH_JOB_ARRAY_INDEX in a plain job
    assert read_child_settings(environ=environment, s3=s3) == expected
    _check_by_hand(expected, queue, 0)
    table = status(plan_dir, **access_of(options))
    assert table.select("remote_id", "submission_id", "state").row(0) == (job_id, job_id, "SUCCEEDED")


def test_child_settings_command_needs_no_arguments_inside_a_child(tmp_path, options, queue, batch, batch_server):
    plan_dir = make_plan(tmp_path, sheet_frame(7, **SHEET), "batch", defaults=_defaults(queue))
    submit(plan_dir, **options)
    (job_id,) = _jobs(plan_dir, options)
    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    env = dict(os.environ, **_child_environment(job), AWS_BATCH_JOB_ARRAY_INDEX="3", AWS_ENDPOINT_URL_S3=batch_server)
    command = [sys.executable, "-m", "planner.cli", "child-settings"]  # what `planner child-settings` runs
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == _merged(queue, 7)["S000003"]

    script = 'eval "$("$@" --export)" && printf "%s|%s|%s" "$PLANNER_SAMPLE_ID" "$PARAM_BAM" "$PARAM_MIN_MAPQ"'
    done = subprocess.run(["bash", "-c", script, "bash", *command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "S000003|s3://in/S3.bam|30"

    # An index past the shard's end is a clear one-line error, not a traceback.
    done = subprocess.run([*command, "--index", "7"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("planner: error: ") and "Traceback" not in done.stderr


def test_a_changed_manifest_is_refused_by_the_child(tmp_path, options, queue, batch, s3):
    plan_dir = make_plan(tmp_path, sheet_frame(4, **SHEET), "batch", defaults=_defaults(queue))
    submit(plan_dir, **options)
    (job_id,) = _jobs(plan_dir, options)
    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    environment = _child_environment(job)
    bucket, key = environment["PLANNER_MANIFEST"][len("s3://") :].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=b"[\n{}\n]\n")
    with pytest.raises(planner.PlannerError, match="changed"):
        read_child_settings(environ=dict(environment, AWS_BATCH_JOB_ARRAY_INDEX="1"), s3=s3)


def test_a_second_submit_creates_nothing_new(tmp_path, options, queue, batch):
    plan_dir = make_plan(tmp_path, sheet_frame(9, **SHEET), "batch", defaults=_defaults(queue), max_entries=4)
    first = submit(plan_dir, **options)
    again = submit(plan_dir, **options)
    assert first.tally("SubmitJob").created == 3
    jobs = again.tally("SubmitJob")
    assert (jobs.created, jobs.found, jobs.already) == (0, 0, 3)
    manifest = planner.read_plan(plan_dir).to_json()
    for shard in manifest["shards"]:
        assert _count_named(batch, queue, f"cohort-{manifest['plan_id']}-{shard['index']:05d}") == 1


def test_sigkill_between_submit_job_and_the_ledger_write_resumes_without_a_second_job(tmp_path, options, queue, batch):
    plan_dir = make_plan(tmp_path, sheet_frame(6, **SHEET), "batch", defaults=_defaults(queue), max_entries=3)
    manifest = planner.read_plan(plan_dir).to_json()
    names = [f"cohort-{manifest['plan_id']}-{s['index']:05d}" for s in manifest["shards"]]
    script = textwrap.dedent(
        f"""
        import os, signal
        from planner.engine.context import Options, open_context
        from planner.commands.submit import run_submission
        options = Options(staging_uri={options["staging"]!r}, concurrency=1)
        ctx = open_context({plan_dir!r}, options=options, sandbox=True, endpoints={options["endpoints"]!r})
        ctx.clients.get("batch").meta.events.register(
            "after-call.batch.SubmitJob", lambda **_: os.kill(os.getpid(), signal.SIGKILL))
        run_submission(ctx)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert [_count_named(batch, queue, name) for name in names] == [1, 0]  # the first job exists...
    ledger = ledger_of(plan_dir)
    (intent,) = ledger.submissions()
    assert intent.state == "intent" and intent.remote_id is None  # ...but the ledger never heard back
    ledger.close()

    report = submit(plan_dir, **options)
    jobs = report.tally("SubmitJob")
    assert (jobs.created, jobs.found, jobs.already) == (1, 1, 0)
    assert [_count_named(batch, queue, name) for name in names] == [1, 1]
    ledger = ledger_of(plan_dir)
    first, second = ledger.submissions()
    assert first.state == second.state == "done" and first.response["reconciled"] is True
    ledger.close()
    listed = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [names[0]]}])["jobSummaryList"]
    assert first.remote_id in {j["jobId"] for j in listed}
    assert status(plan_dir, **access_of(options)).get_column("state").to_list() == ["SUCCEEDED"] * 6


def test_failed_children_show_in_status_and_are_the_only_ones_retried(tmp_path, options, queue, monkeypatch):
    plan_dir = make_plan(tmp_path, sheet_frame(7, **SHEET), "batch", defaults=_defaults(queue), max_entries=4)
    manifest = planner.read_plan(plan_dir).to_json()
    assert [s["entries"] for s in manifest["shards"]] == [4, 3]
    failing = f"cohort-{manifest['plan_id']}-00001"

    def fail_the_second_array(params: dict[str, Any], **_: Any) -> None:
        # moto's server runs in this process and reads the variable at SubmitJob.
        if params.get("jobName") == failing:
            monkeypatch.setenv(FAIL_AFTER, "0")
        else:
            monkeypatch.delenv(FAIL_AFTER, raising=False)

    ctx = open_plan(plan_dir, concurrency=1, **options)  # one SubmitJob at a time: the variable is process-wide
    ctx.clients.get("batch").meta.events.register("provide-client-params.batch.SubmitJob", fail_the_second_array)
    run_submission(ctx)
    ctx.ledger.close()
    monkeypatch.delenv(FAIL_AFTER, raising=False)

    table = status(plan_dir, **access_of(options))
    states = dict(zip(table.get_column("id"), table.get_column("state"), strict=False))
    assert states == {f"S{n:06d}": "FAILED" if n >= 4 else "SUCCEEDED" for n in range(7)}

    new_plan = str(tmp_path / "retry")
    retried = retry(plan_dir, new_plan, **access_of(options)).to_json()
    assert retried["runs"] == 3 and [s["entries"] for s in retried["shards"]] == [3]
    entries = orjson.loads(Path(os.path.join(new_plan, retried["shards"][0]["path"])).read_bytes())
    merged = _merged(queue, 7)
    assert entries == [merged[f"S{n:06d}"] for n in (4, 5, 6)]
    # Batch has no CANCELLED state (a cancelled job is FAILED): asking for it is refused, naming the states there are.
    with pytest.raises(InputError, match="not a final state of batch; choose from FAILED, SUCCEEDED"):
        retry(plan_dir, str(tmp_path / "none"), states=("CANCELLED",), **access_of(options))


@pytest.mark.parametrize(
    ("order", "runs", "expected"),
    [
        # Equal arrays pair children by index; the shorter last one waits for the whole array before it.
        ("N_TO_N", 7, lambda ids: [[], [{"jobId": ids[0]}], [{"jobId": ids[1], "type": "N_TO_N"}]]),
        (
            "SEQUENTIAL",
            7,
            lambda ids: [
                [{"type": "SEQUENTIAL"}],
                [{"type": "SEQUENTIAL"}, {"jobId": ids[0]}],
                [{"type": "SEQUENTIAL"}, {"jobId": ids[1]}],
            ],
        ),
    ],
)
def test_depends_on_orders_the_arrays(tmp_path, options, queue, batch, order, runs, expected):
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(runs, **SHEET),
        "batch",
        defaults=_defaults(queue, **{"dependsOnType": order}),
        max_entries=3,
    )
    assert [s["entries"] for s in planner.read_plan(plan_dir).to_json()["shards"]] == [3, 2, 2]
    submit(plan_dir, **options)
    ids = _jobs(plan_dir, options)
    described = {j["jobId"]: j for j in batch.describe_jobs(jobs=ids)["jobs"]}
    assert [described[i]["dependsOn"] for i in ids] == expected(ids)


def test_cancel_terminates_unfinished_arrays(tmp_path, options, queue, batch):
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), "batch", defaults=_defaults(queue))
    submit(plan_dir, **options)
    (job_id,) = _jobs(plan_dir, options)
    report = cancel(plan_dir, **access_of(options))  # moto finished it at once: nothing left to cancel
    assert report.count("cancelled") == 0 and report.count("already final") == 1 and report.complete

    ctx = open_plan(plan_dir, **options)
    client = boto3.client("batch", endpoint_url="http://127.0.0.1:9", region_name="us-east-1")
    ctx.clients._cache["batch"] = client
    with Stubber(client) as stub:
        stub.add_response(
            "describe_jobs",
            {
                "jobs": [
                    {
                        "jobId": job_id,
                        "jobName": "x",
                        "jobQueue": queue,
                        "status": "RUNNABLE",
                        "startedAt": 0,
                        "jobDefinition": "d",
                    }
                ]
            },
            {"jobs": [job_id]},
        )
        stub.add_response("terminate_job", {}, {"jobId": job_id, "reason": "cancelled by planner"})
        from planner.backends.aws_batch import AwsBatch

        assert AwsBatch(ctx).cancel().count("cancelled") == 1
        stub.assert_no_pending_responses()
    ctx.ledger.close()


def test_dry_run_sends_nothing_and_writes_no_ledger(tmp_path, options, queue, capsys):
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), "batch", defaults=_defaults(queue))
    submit(plan_dir, dry_run=True, **options)
    (line,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert line["operation"] == "SubmitJob" and line["problems"] == []
    assert line["request"]["arrayProperties"] == {"size": 5}
    assert not os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))


@pytest.mark.parametrize(
    ("change", "column"),
    [
        # 19 of the defaults' own plus the 2 SEQUENTIAL adds would make 21.
        (lambda d: d["run"].update(dependsOn=[{"jobId": f"job-{i}"} for i in range(19)]), "dependsOn"),
        # The manifest location could not reach an EKS container.
        (
            lambda d: d["run"].update(eksPropertiesOverride={"podProperties": {"containers": []}}),
            "eksPropertiesOverride",
        ),
    ],
)
def test_requests_batch_cannot_honour_are_refused_at_plan_time(tmp_path, queue, change, column):
    document = _defaults(queue, dependsOnType="SEQUENTIAL")
    change(document)
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet_frame(4, **SHEET), backend="batch", defaults=document).write(str(tmp_path / "p"))
    assert [p.column.removeprefix("[run] ") for p in caught.value.problems] == [column]
    assert not (tmp_path / "p").exists()


def _offsets(shard_file: bytes) -> bytes:
    """The line index, computed here from scratch: where each entry line and the ']' line start."""
    lines = shard_file.splitlines(keepends=True)
    starts, position = [], len(lines[0])
    for line in lines[1:]:
        starts.append(position)
        position += len(line)
    return b"".join(struct.pack(">Q", start) for start in starts)


def test_stubber_pins_the_exact_submit_job_request(tmp_path, options, queue, bucket):
    import hashlib

    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), "batch", defaults=_defaults(queue))
    manifest = planner.read_plan(plan_dir).to_json()
    shard = manifest["shards"][0]
    ctx = open_plan(plan_dir, **options)
    client = boto3.client(
        "batch",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )
    ctx.clients._cache["batch"] = client
    ctx.clients.sandbox = False  # the Batch calls are stubbed: nothing to create in the sandbox first
    index = _offsets(Path(os.path.join(plan_dir, shard["path"])).read_bytes())
    staged = f"s3://{bucket}/staging/{manifest['plan_id']}"
    expected = {
        "jobName": f"cohort-{manifest['plan_id']}-00000",
        "jobQueue": queue,
        "jobDefinition": "planner-test-jobdef:2",
        "parameters": {"reference": "s3://refs/hg38.fa", "min_mapq": "20"},
        "containerOverrides": {
            "environment": [
                {"name": "STAGE", "value": "test"},
                {"name": "PLANNER_MANIFEST", "value": f"{staged}/{shard['sha256']}.json"},
                {"name": "PLANNER_MANIFEST_ETAG", "value": shard["etag"]},
                {"name": "PLANNER_INDEX_URI", "value": f"{staged}/{hashlib.sha256(index).hexdigest()}.index"},
                {"name": "PLANNER_INDEX_ETAG", "value": f'"{hashlib.md5(index).hexdigest()}"'},
                {"name": "PLANNER_FIRST_INDEX", "value": "0"},
                {"name": "PLANNER_EXPECTED_BUCKET_OWNER", "value": "123456789012"},  # moto's STS: the caller
            ]
        },
        "retryStrategy": {"attempts": 2},
        "timeout": {"attemptDurationSeconds": 3600},
        "tags": {"project": "p1"},
        "arrayProperties": {"size": 3},
    }
    with Stubber(client) as stub:
        # Before a first SubmitJob the deterministic name is looked up: a lost ledger must not mean a second job.
        stub.add_response(
            "list_jobs",
            {"jobSummaryList": []},
            {"jobQueue": queue, "filters": [{"name": "JOB_NAME", "values": [expected["jobName"]]}]},
        )
        stub.add_response(
            "submit_job",
            {
                "jobId": "job-1",
                "jobName": expected["jobName"],
                "jobArn": "arn:aws:batch:us-east-1:123456789012:job/job-1",
            },
            expected,
        )
        report = run_submission(ctx)
        stub.assert_no_pending_responses()
    assert report.tally("SubmitJob").created == 1
    assert ctx.ledger.submission("SubmitJob:00000").remote_id == "job-1"
    assert ctx.ledger.staged(0, "index").etag == f'"{hashlib.md5(index).hexdigest()}"'  # the line index
    assert [row.submission_status for row in ctx.ledger.samples()] == ["SUBMITTED"] * 3
    ctx.ledger.close()


def test_export_lines_are_safe_for_eval(tmp_path):
    from planner.commands.child_settings import export_lines

    lines = export_lines({"id": "a b", "parameters": {"x-y": "it's $HOME", "n": 3}})
    script = "\n".join(lines) + '\nprintf "%s|%s|%s" "$PLANNER_SAMPLE_ID" "$PARAM_X_Y" "$PARAM_N"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.stdout == "a b|it's $HOME|3", shlex.join(lines)


def test_a_lone_run_past_the_job_size_limit_is_refused_before_submitting(tmp_path, options, queue, batch, capsys):
    """A plan of one run sends that run's own parameters in SubmitJob: a row past 30 KiB (AWS Batch service quotas,
    "Maximum job payload size") is refused with exit 2 before the call, so no job fails on it."""
    sheet = pl.DataFrame({"sample": ["S000000"], "notes": ["n" * 40_000]})
    out = str(tmp_path / "plan")
    planner.plan(sheet, backend="batch", defaults=_defaults(queue)).write(out)
    submit(out, dry_run=True, **options)  # --dry-run shows it too
    (line,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any("30 KiB" in problem for problem in line["problems"])
    with pytest.raises(InputError, match=r"SubmitJob for shard 0: .*30 KiB.*nothing was submitted") as caught:
        submit(out, **options)
    assert caught.value.exit_code == 2
    assert _jobs(out, options) == []
