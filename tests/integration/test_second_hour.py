"""A newcomer's second hour (issue 29), through the CLI against the loopback servers: output paths,
file modes, exit codes and messages after the first submit."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import make_plan, run_cli

import planner
import planner.cli
from planner.commands.submit import submit

ROLE = "arn:aws:iam::123456789012:role/omics"
DEFAULTS: dict[str, Any] = {
    "run": {"workflowId": "1234567", "roleArn": ROLE, "outputUri": "s3://results/x/"},
    "submission": {"batchName": "second-hour"},
}
RUN_DEFAULTS: dict[str, Any] = {"run": DEFAULTS["run"]}
DEFAULTS_OF = {"omics-batch": DEFAULTS, "omics-run": RUN_DEFAULTS}


@pytest.fixture()
def submitted(
    tmp_path: Path, moto_server: str, make_emulator: Any, bucket: str, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A 4-sample omics-batch plan submitted to the HealthOmics emulator, every run ended; the CLI finds the
    servers through AWS_ENDPOINT_URL_*, as a user's shell would."""
    emulator = make_emulator()
    endpoints = {"s3": moto_server, "omics": emulator.endpoint_url}
    plan_dir = make_plan(tmp_path, 4, defaults=DEFAULTS)
    submit(plan_dir, sandbox=True, endpoints=endpoints, staging=f"s3://{bucket}/staging/")
    for _ in range(12):
        clock.advance(1.0)
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", emulator.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    return plan_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- 1. output paths that are directories


@pytest.mark.parametrize("trailing", ["", "/"])
def test_report_out_a_directory_is_refused_and_nothing_is_written(
    submitted: str, tmp_path: Path, capsys: Any, trailing: str
) -> None:
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    folder = tmp_path / "reports"
    folder.mkdir()
    code, _, err = run_cli(["report", submitted, "--out", f"{folder}{trailing}"], capsys)
    assert code == 2 and "internal error" not in err and "is a directory" in err, err
    assert len(err.strip().splitlines()) == 1
    assert list(folder.iterdir()) == [] and not Path(f"{folder}.partial").exists()


def test_report_out_ending_in_a_separator_is_refused(submitted: str, tmp_path: Path, capsys: Any) -> None:
    code, _, err = run_cli(["report", submitted, "--out", str(tmp_path / "new") + "/"], capsys)
    assert code == 2 and "a file name" in err, err
    assert not (tmp_path / "new").exists() and list(tmp_path.glob("*.partial")) == []


def test_status_out_a_directory_is_refused(submitted: str, tmp_path: Path, capsys: Any) -> None:
    folder = tmp_path / "d.csv"
    folder.mkdir()
    code, _, err = run_cli(["status", submitted, "--out", str(folder)], capsys)
    assert code == 2 and "internal error" not in err and "is a directory" in err, err
    assert list(folder.iterdir()) == []


# ---------------------------------------------------------------- 2. the report is private


def test_the_report_and_its_samples_csv_are_private(submitted: str, tmp_path: Path, capsys: Any) -> None:
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    previous = os.umask(0o022)
    try:
        out = tmp_path / "report.html"
        assert run_cli(["report", submitted, "--out", str(out)], capsys)[0] == 0
        assert _mode(out) == 0o600
        from planner.commands.report import render_report

        table = planner.status(submitted)
        summary = render_report(planner.read_plan(submitted).to_json(), table, [], str(out), inline_bytes=10)
        assert summary.table_csv is not None and _mode(Path(summary.table_csv)) == 0o600
        os.chmod(out, 0o644)  # the owner shares it on purpose: a new report keeps that
        assert run_cli(["report", submitted, "--out", str(out)], capsys)[0] == 0
        assert _mode(out) == 0o644
        assert list(tmp_path.glob("*.partial")) == []
    finally:
        os.umask(previous)


# ---------------------------------------------------------------- 3. an S3 sheet honours the AWS options


SHEET = "sample,fastq_1\nS1,s3://reads/S1.fq.gz\nS2,s3://reads/S2.fq.gz\n"


@pytest.fixture()
def defaults_file(tmp_path: Path) -> Path:
    path = tmp_path / "defaults.toml"
    path.write_text(
        f'[run]\nworkflowId = "1234567"\nroleArn = "{ROLE}"\noutputUri = "s3://results/x/"\n', encoding="utf-8"
    )
    return path


def test_plan_of_an_s3_sheet_goes_to_endpoint_url(
    tmp_path: Path, moto_server: str, s3: Any, bucket: str, defaults_file: Path, capsys: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="sheets/samples.csv", Body=SHEET.encode())
    argv = ["plan", f"s3://{bucket}/sheets/samples.csv", "--backend", "omics-batch", "--defaults", defaults_file]
    code, out, err = run_cli([*argv, "--out", tmp_path / "plan", "--endpoint-url", moto_server], capsys)
    assert code == 0, err
    assert "planned 2 runs" in out


def test_plan_of_an_s3_sheet_uses_the_profile(
    tmp_path: Path,
    moto_server: str,
    s3: Any,
    bucket: str,
    defaults_file: Path,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The profile names the endpoint (botocore's endpoint_url setting): only a client made with
    --profile finds the sheet."""
    s3.put_object(Bucket=bucket, Key="samples.csv", Body=SHEET.encode())
    config = tmp_path / "aws-config"
    config.write_text(
        f"[profile lab]\nregion = us-east-1\nendpoint_url = {moto_server}\n"
        "aws_access_key_id = lab\naws_secret_access_key = lab\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    argv = ["plan", f"s3://{bucket}/samples.csv", "--backend", "omics-batch", "--defaults", defaults_file]
    code, out, err = run_cli([*argv, "--out", tmp_path / "plan", "--profile", "lab"], capsys)
    assert code == 0 and "planned 2 runs" in out, err
    code, _, err = run_cli([*argv, "--out", tmp_path / "other", "--profile", "nobody"], capsys)
    assert code == 2 and "nobody" in err and "Traceback" not in err


def test_plan_of_an_s3_sheet_in_the_sandbox_reads_the_sandbox(
    tmp_path: Path, moto_server: str, s3: Any, bucket: str, defaults_file: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="samples.csv", Body=SHEET.encode())
    planned = planner.plan(
        f"s3://{bucket}/samples.csv",
        backend="omics-batch",
        defaults=str(defaults_file),
        sandbox=True,
        endpoints={"s3": moto_server},
    )
    assert planned.write(tmp_path / "plan").runs == 2


def test_in_the_sandbox_no_client_goes_to_aws(moto_server: str) -> None:
    """The KMS alias lookup (staging with --staging-kms-key alias/...) went to kms.us-east-1.amazonaws.com."""
    from planner.services.aws import Clients

    clients = Clients(sandbox=True, endpoints={"s3": moto_server, "omics": "http://127.0.0.1:1"})
    assert clients.get("kms").meta.endpoint_url == moto_server
    assert clients.get("service-quotas").meta.endpoint_url == moto_server


def test_policy_names_the_bucket_the_ledger_staged_to(
    tmp_path: Path, moto_server: str, make_emulator: Any, bucket: str, capsys: Any
) -> None:
    import json

    emulator = make_emulator()
    plan_dir = make_plan(tmp_path, 150, defaults=DEFAULTS)
    manifest = planner.read_plan(plan_dir)
    assert any(shard.mode == "s3" for shard in manifest.shards)
    endpoints = {"s3": moto_server, "omics": emulator.endpoint_url}
    submit(plan_dir, sandbox=True, endpoints=endpoints, staging=f"s3://{bucket}/elsewhere/")
    code, out, err = run_cli(["policy", plan_dir, "--only", "submitter", "--region", "us-east-1"], capsys)
    assert code == 0, err
    resources = [r for s in json.loads(out)["Statement"] for r in s["Resource"]]
    assert f"arn:aws:s3:::{bucket}/elsewhere/{manifest.plan_id}/*" in resources, resources


# ---------------------------------------------------------------- 9. exit codes


def test_retry_with_nothing_to_retry_exits_0_and_writes_nothing(submitted: str, tmp_path: Path, capsys: Any) -> None:
    code, out, err = run_cli(["retry", submitted, "--out", tmp_path / "retry"], capsys)
    assert code == 0 and "nothing to retry" in err and out == "", err
    assert not (tmp_path / "retry").exists()


def test_retry_takes_states_as_one_string_in_python(submitted: str, tmp_path: Path) -> None:
    with pytest.raises(planner.NothingToRetry, match=r"no sample is in FAILED or failed to submit"):
        planner.retry(submitted, str(tmp_path / "retry"), states="FAILED")
    with pytest.raises(planner.NothingToRetry, match=r"no sample is in FAILED, CANCELLED or"):
        planner.retry(submitted, str(tmp_path / "retry"), states="FAILED,CANCELLED")


POLLY_KEY = "pk-test-second-hour"


@pytest.fixture()
def polly_submitted(tmp_path: Path, make_polly_emulator: Any, clock: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Polly example (8 samples) submitted to an emulator failing half its jobs, every job ended."""
    emulator = make_polly_emulator(failure_rate=0.5, seed=5, api_key=POLLY_KEY)
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", POLLY_KEY)
    examples = Path(__file__).resolve().parents[2] / "sample_sheets"
    plan_dir = str(tmp_path / "polly-plan")
    planned = planner.plan(
        str(examples / "polly_samples.csv"), backend="polly", defaults=str(examples / "polly_defaults.toml")
    )
    planned.write(plan_dir)
    submit(plan_dir)
    clock.advance(10)
    states = set(planner.status(plan_dir).get_column("state"))
    assert states <= {"COMPLETED", "FAILED"} and "FAILED" in states, states
    return plan_dir


def test_polly_cancel_when_every_job_has_ended_exits_0(polly_submitted: str, capsys: Any) -> None:
    code, out, err = run_cli(["cancel", polly_submitted], capsys)
    assert code == 0, err
    assert "8 samples had already finished" in out


def test_polly_retry_set_memory_says_config_infra_memory(polly_submitted: str, tmp_path: Path, capsys: Any) -> None:
    code, _, err = run_cli(["retry", polly_submitted, "--out", tmp_path / "retry", "--set", "memory=16"], capsys)
    assert code == 2 and "did you mean 'config.infra.memory'?" in err, err
    assert not (tmp_path / "retry").exists()
    code, out, err = run_cli(
        ["retry", polly_submitted, "--out", tmp_path / "retry", "--set", "config.infra.memory=16"], capsys
    )
    assert code == 0 and "to retry in" in out, err


# ---------------------------------------------------------------- 10. the sandbox speaks through the logger


def test_the_sandbox_says_what_it_does_through_the_planner_logger(capfd: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from planner.sandbox.local import ensure_running, stop_running

    try:
        with caplog.at_level(logging.INFO, logger="planner"):
            ensure_running()
            ensure_running()
        assert capfd.readouterr().err == ""  # a script that does not want it does not get it
        said = [record.getMessage() for record in caplog.records if record.name == "planner"]
        assert said[0].startswith("started a sandbox (state in ") and said[1].startswith("using the sandbox"), said
        assert planner.cli.main(["sandbox", "start"]) == 0  # the CLI shows it
        assert capfd.readouterr().err.startswith("planner: using the sandbox started at ")
    finally:
        stop_running()


# ---------------------------------------------------------------- 12. the report: colours and header


def test_every_state_has_its_own_colour_in_the_charts() -> None:
    from planner.commands.report import _COLOURS, _OTHER_COLOURS, NOT_SUBMITTED, SUCCESS_STATES

    waiting = ("PENDING", "STARTING", "SUBMITTED", "RUNNABLE", "WAITING", "QUEUED")
    assert len({_COLOURS[state] for state in waiting}) == len(waiting)
    assert len(set(_COLOURS.values())) == len(_COLOURS), "two states share a colour"
    assert not set(_OTHER_COLOURS) & set(_COLOURS.values()) and NOT_SUBMITTED in _COLOURS
    assert set(_COLOURS) >= SUCCESS_STATES


def _facts(page: str) -> dict[str, str]:
    """The report's header table: name -> its cell as text."""
    import html
    import re

    table = page[page.index('<table class="facts">') :]
    table = table[: table.index("</table>")]
    cells = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table)
    return {html.unescape(name): html.unescape(re.sub(r"<[^>]+>", "", value)) for name, value in cells}


def test_the_report_header_says_what_plan_json_and_the_ledger_say(
    tmp_path: Path, moto_server: str, make_emulator: Any, bucket: str, clock: Any, capsys: Any, monkeypatch: Any
) -> None:
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    emulator = make_emulator()
    plan_dir = make_plan(
        tmp_path, 150, defaults=DEFAULTS, max_entries=100
    )  # above 100 runs: staged on S3, in two files
    submit(
        plan_dir,
        sandbox=True,
        endpoints={"s3": moto_server, "omics": emulator.endpoint_url},
        staging=f"s3://{bucket}/staged-here/",
    )
    clock.advance(12)
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", emulator.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    out = tmp_path / "report.html"
    code, _, err = run_cli(["report", plan_dir, "--out", out], capsys)
    assert code == 0, err
    facts = _facts(out.read_text(encoding="utf-8"))
    manifest = planner.read_plan(plan_dir).to_json()
    assert facts["backend"] == manifest["backend"] and facts["plan id"] == manifest["plan_id"]
    assert facts["runs planned"] == f"{manifest['runs']:,}" and facts["sheet rows"] == f"{manifest['sheet']['rows']:,}"
    assert facts["sheet"] == manifest["sheet"]["path"] and manifest["sheet"]["sha256"].startswith(facts["sheet sha256"])
    assert facts["staging"] == (manifest["staging"]["uri"] or "none in plan.json")
    shards = [shard for shard in manifest["shards"] if shard["mode"] == "s3"]
    assert len(shards) == 2
    assert facts["staged"] == f"{len(shards)} objects under s3://{bucket}/staged-here/{manifest['plan_id']}/", facts


# ---------------------------------------------------------------- 13. runs that take a while in the sandbox


@pytest.mark.parametrize("run_seconds", [None, 20.0])
def test_with_run_seconds_a_failure_threshold_fires_while_runs_still_run(
    tmp_path: Path, moto_server: str, make_emulator: Any, bucket: str, clock: Any, run_seconds: float | None
) -> None:
    """One batch of 12 runs, half failing.  Runs of one step each all end in one tick: by the time a
    watch sees a failure nothing is left to cancel.  With run_seconds they end one after another."""
    emulator = make_emulator(failure_rate=0.5, seed=3, run_seconds=run_seconds)
    endpoints = {"s3": moto_server, "omics": emulator.endpoint_url}
    plan_dir = make_plan(tmp_path, 12, defaults=DEFAULTS)
    submit(plan_dir, sandbox=True, endpoints=endpoints, staging=f"s3://{bucket}/staging/")
    last = planner.watch(
        plan_dir,
        interval=1,
        cancel_if_failed="1",
        sleep=lambda seconds: clock.advance(1.0),
        sandbox=True,
        endpoints=endpoints,
    )
    clock.advance(1.0)  # a batch asked to cancel has ended STOPPING by the next step
    states = list(
        dict(planner.status(plan_dir, sandbox=True, endpoints=endpoints).select("id", "state").iter_rows()).values()
    )
    if run_seconds is None:
        assert last.cancelled is None and "CANCELLED" not in states  # everything had ended at once
    else:
        # asked to cancel: the batch is STOPPING (docs/sources.md: batch-cancel-async) until the next step
        assert last.cancelled is not None and last.cancelled.count("cancelled") + last.cancelled.count("stopping") >= 1
        assert {"FAILED", "CANCELLED"} <= set(states) and states.count("FAILED") >= 2


def test_run_seconds_is_for_sandbox_start_and_positive(capsys: Any) -> None:
    code, _, err = run_cli(["sandbox", "status", "--run-seconds", "5"], capsys)
    assert code == 2 and "--run-seconds is for `planner sandbox start`" in err
    code, _, err = run_cli(["sandbox", "start", "--run-seconds", "0"], capsys)
    assert code == 2 and "above 0" in err


# ---------------------------------------------------------------- 9. every row of docs/exit-status.md


EXIT_STATUS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "exit-status.md"
EXAMPLE_SHEETS = Path(__file__).resolve().parents[2] / "sample_sheets"
OMICS_EXAMPLE = [
    str(EXAMPLE_SHEETS / "omics_batch_samples.csv"),
    "--backend",
    "omics-batch",
    "--defaults",
    str(EXAMPLE_SHEETS / "omics_batch_defaults.toml"),
]


def _documented_exit_statuses() -> dict[str, int]:
    import re

    rows = re.findall(r"^\| `([a-z-]+)` \| .*? \| (\d+) \|$", EXIT_STATUS_PAGE.read_text(encoding="utf-8"), re.M)
    return {case: int(code) for case, code in rows}


def _planned(tmp_path: Path, capsys: Any) -> str:
    out = tmp_path / "example"
    code, _, err = run_cli(["plan", *OMICS_EXAMPLE, "--out", out], capsys)
    assert code == 0, err
    return str(out)


def _case_planned(request: Any, tmp_path: Path, capsys: Any) -> int:
    code, _, _ = run_cli(["plan", *OMICS_EXAMPLE, "--out", tmp_path / "plan"], capsys)
    assert (tmp_path / "plan" / "plan.json").exists()
    return code


def _case_bad_input(request: Any, tmp_path: Path, capsys: Any) -> int:
    code, _, err = run_cli(
        ["plan", *OMICS_EXAMPLE[:2], "omics-bacth", *OMICS_EXAMPLE[3:], "--out", tmp_path / "p"], capsys
    )
    assert "did you mean 'omics-batch'" in err and not (tmp_path / "p").exists()
    return code


def _case_not_a_plan(request: Any, tmp_path: Path, capsys: Any) -> int:
    return run_cli(["status", tmp_path], capsys)[0]


def _case_changed_plan(request: Any, tmp_path: Path, capsys: Any) -> int:
    plan_dir = Path(_planned(tmp_path, capsys))
    shard = plan_dir / "shards" / "00000.json"
    shard.write_bytes(shard.read_bytes().replace(b"CTRL_REP1", b"CTRL_REPX"))
    code, _, err = run_cli(["submit", plan_dir, "--dry-run"], capsys)
    assert "the shard was changed" in err
    return code


def _case_out_is_a_directory(request: Any, tmp_path: Path, capsys: Any) -> int:
    plan_dir = request.getfixturevalue("submitted")
    return run_cli(["status", plan_dir, "--out", tmp_path], capsys)[0]


def _case_check_problem(request: Any, tmp_path: Path, capsys: Any) -> int:
    request.getfixturevalue("moto_server")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", request.getfixturevalue("moto_server"))
    code, _, err = run_cli(["check", _planned(tmp_path, capsys), "--no-workflow", "--no-quotas"], capsys)
    assert "[s3-no-bucket]" in err, err
    return code


def _case_unreachable(request: Any, tmp_path: Path, capsys: Any) -> int:
    plan_dir = _planned(tmp_path, capsys)
    argv = ["submit", plan_dir, "--endpoint-url", "http://127.0.0.1:9", "--max-attempts", "1"]
    code, _, err = run_cli(argv, capsys)
    assert ("internal error" not in err and not (Path(plan_dir) / "ledger.sqlite").exists()) or code == 1, err
    return code


def _ended_plan(request: Any, tmp_path: Path, **emulator_options: Any) -> str:
    """A 6-sample plan submitted to an emulator (on the test's clock), every run ended; the CLI finds it."""
    emulator = request.getfixturevalue("make_emulator")(**emulator_options)
    moto_server = request.getfixturevalue("moto_server")
    endpoints = {"s3": moto_server, "omics": emulator.endpoint_url}
    plan_dir = make_plan(tmp_path, 6, defaults=DEFAULTS, name="ended")
    submit(plan_dir, sandbox=True, endpoints=endpoints, staging=f"s3://{request.getfixturevalue('bucket')}/s/")
    request.getfixturevalue("clock").advance(12)
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", emulator.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    return plan_dir


def _case_watch_settled(request: Any, tmp_path: Path, capsys: Any) -> int:
    return run_cli(["status", _ended_plan(request, tmp_path), "--watch", "--interval", "1"], capsys)[0]


def _case_watch_failed(request: Any, tmp_path: Path, capsys: Any) -> int:
    plan_dir = _ended_plan(request, tmp_path, failure_rate=0.5, seed=3)
    code, _, err = run_cli(["status", plan_dir, "--watch", "--interval", "1"], capsys)
    assert "failed or were cancelled" in err, err
    return code


def _case_threshold(request: Any, tmp_path: Path, capsys: Any) -> int:
    import time

    # Real time here: the CLI's watch sleeps for real.  Runs of 2..6 s end over seconds, a refresh every
    # 0.2 s: a loaded machine still looks many times between the second failure and the last run's end.
    emulator = request.getfixturevalue("make_emulator")(
        failure_rate=0.5, seed=3, clock=time.monotonic, step_seconds=0.2, run_seconds=4.0
    )
    moto_server = request.getfixturevalue("moto_server")
    plan_dir = make_plan(tmp_path, 12, defaults=DEFAULTS, name="threshold")
    submit(plan_dir, sandbox=True, endpoints={"s3": moto_server, "omics": emulator.endpoint_url})
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", emulator.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    code, _, err = run_cli(["status", plan_dir, "--watch", "--interval", "0.2", "--cancel-if-failed", "1"], capsys)
    assert "more than 1 sample: cancelled" in err, err
    return code


def _case_nothing_to_retry(request: Any, tmp_path: Path, capsys: Any) -> int:
    code, _, err = run_cli(["retry", request.getfixturevalue("submitted"), "--out", tmp_path / "retry"], capsys)
    assert "nothing to retry" in err and not (tmp_path / "retry").exists()
    return code


def _case_cancelled_or_ended(request: Any, tmp_path: Path, capsys: Any) -> int:
    code = run_cli(["cancel", request.getfixturevalue("submitted")], capsys)[0]
    assert run_cli(["cancel", request.getfixturevalue("polly_submitted")], capsys)[0] == code
    return code


def _case_not_cancelled(request: Any, tmp_path: Path, capsys: Any) -> int:
    emulator = request.getfixturevalue("make_emulator")(uncancellable=lambda settings: True)
    moto_server = request.getfixturevalue("moto_server")
    plan_dir = make_plan(tmp_path, 3, defaults=DEFAULTS, name="stuck")
    submit(plan_dir, sandbox=True, endpoints={"s3": moto_server, "omics": emulator.endpoint_url})
    request.getfixturevalue("clock").advance(2.5)  # the batch has started its runs: they are RUNNING
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", emulator.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    code, out, err = run_cli(["cancel", plan_dir], capsys)
    # CancelRunBatch is asynchronous (docs/sources.md: batch-cancel-async): the batch is STOPPING first,
    # and what could not be cancelled shows once it has ended; the user runs cancel again.
    assert code == 0 and "stopping" in out, out + err
    request.getfixturevalue("clock").advance(1.0)
    code, out, err = run_cli(["cancel", plan_dir], capsys)
    assert "could not be cancelled" in out, out + err
    return code


def _case_polly_running(request: Any, tmp_path: Path, capsys: Any) -> int:
    emulator = request.getfixturevalue("make_polly_emulator")(api_key=POLLY_KEY)
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", POLLY_KEY)
    plan_dir = str(tmp_path / "polly-running")
    planner.plan(
        str(EXAMPLE_SHEETS / "polly_samples.csv"), backend="polly", defaults=str(EXAMPLE_SHEETS / "polly_defaults.toml")
    ).write(plan_dir)
    submit(plan_dir)  # the emulator's clock does not move: every job is still running
    code, _, err = run_cli(["cancel", plan_dir], capsys)
    assert "Polly's API has no cancel" in err
    return code


def _case_sandbox_none(request: Any, tmp_path: Path, capsys: Any) -> int:
    return run_cli(["sandbox", "status"], capsys)[0]


EXIT_CASES = {
    name[len("_case_") :].replace("_", "-"): case for name, case in list(globals().items()) if name.startswith("_case_")
}


def test_every_documented_exit_status_has_a_case() -> None:
    assert set(_documented_exit_statuses()) == set(EXIT_CASES)


@pytest.mark.parametrize("case", sorted(_documented_exit_statuses()))
def test_the_documented_exit_status(case: str, request: Any, tmp_path: Path, capsys: Any) -> None:
    assert EXIT_CASES[case](request, tmp_path, capsys) == _documented_exit_statuses()[case]
