"""What the commands that read a plan's ledger say when it does not hold a clean success (issue 25,
items 8 to 12): a damaged ledger, a watch where nothing succeeded, states the code does not know,
deleted samples left out of retry, the threshold's reason, a killed retry or cancel.

Each walks the command line as a user does, against the HealthOmics emulator and moto's server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import make_plan, open_plan

import planner
import planner.cli
from planner.commands.submit import run_submission, submit

from .conftest import omics_client

ROLE = "arn:aws:iam::123456789012:role/omics"
RUN = {"workflowId": "1234567", "roleArn": ROLE, "outputUri": "s3://results/x/", "parameters": {"ref": "hg38"}}
RUN_DEFAULTS: dict[str, Any] = {"run": RUN}


@pytest.fixture()
def world(moto_server: str, make_emulator: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Emulators on loopback; the CLI reaches them through AWS_ENDPOINT_URL_<SERVICE>, as a user's would."""

    class World:
        emulator: Any = None

        def start(self, **emulator_options: Any) -> dict[str, Any]:
            self.emulator = make_emulator(**emulator_options)
            endpoints = {"s3": moto_server, "omics": self.emulator.endpoint_url}
            monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", endpoints["omics"])
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
            return {"sandbox": True, "endpoints": endpoints, "staging": f"s3://{bucket}/staging/"}

    return World()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = planner.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- item 12: a damaged ledger


def _truncate(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def _garbage(path: str) -> None:
    with open(path, "wb") as handle:
        handle.write(b"this is not a ledger\n" * 500)


def _empty(path: str) -> None:
    open(path, "wb").close()


@pytest.mark.parametrize("damage", [_truncate, _garbage, _empty], ids=["truncated", "garbage", "0 bytes"])
@pytest.mark.parametrize("command", ["status", "cancel", "retry", "clean", "report"])
def test_a_damaged_ledger_is_refused_never_read_as_empty(
    damage: Any, command: str, tmp_path: Path, world: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    options = world.start()
    plan_dir = make_plan(tmp_path, 40, "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    ledger = os.path.join(plan_dir, "ledger.sqlite")
    for leftover in ("-wal", "-shm"):  # as after a copy of the plan that left them behind
        if os.path.exists(ledger + leftover):
            os.remove(ledger + leftover)
    damage(ledger)
    extra = {"retry": ["--out", str(tmp_path / "retry")], "report": ["--out", str(tmp_path / "r.html")]}
    code, out, err = _cli(capsys, command, plan_dir, *extra.get(command, []))
    assert code == 2, (code, out, err)
    assert "internal error" not in err and "Traceback" not in err
    assert "ledger.sqlite" in err and "damaged" in err, err
    assert "cancelled 0" not in out and "nothing submitted" not in err
    assert not os.path.exists(tmp_path / "retry") and not os.path.exists(tmp_path / "r.html")


# ---------------------------------------------------------------- item 8: a watch where nothing succeeded


def test_watch_after_every_run_was_deleted_unseen_exits_1_and_says_how_to_retry(
    tmp_path: Path, world: Any, clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runs end and are deleted (retention mode REMOVE, another tool) before any status refresh
    saw them end: nothing is known to have succeeded, so the watch may not exit 0."""
    options = world.start()
    plan_dir = make_plan(tmp_path, 3, "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    clock.advance(600)
    omics = omics_client(world.emulator)
    for run in omics.list_runs()["items"]:
        omics.delete_run(id=run["id"])
    code, out, err = _cli(capsys, "status", plan_dir, "--watch", "--interval", "1")
    assert code == 1, (out, err)
    assert "DELETED" in out
    assert "3 of 3 samples' runs were deleted before a refresh saw them end" in err, err
    assert "--states DELETED" in err
    code, out, err = _cli(capsys, "retry", plan_dir, "--out", str(tmp_path / "again"), "--states", "DELETED")
    assert code == 0 and "planned 3 runs to retry" in out, (out, err)


# ---------------------------------------------------------------- item 10: deleted samples and retry


def test_retry_says_how_many_deleted_samples_it_left_out_and_how_to_include_them(
    tmp_path: Path, world: Any, clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    options = world.start(
        fail_when=lambda s: ("RUN_FAILED", "bad input") if s["parameters"]["sample"] == "S0000" else None
    )
    plan_dir = make_plan(tmp_path, 4, "omics-run", defaults=RUN_DEFAULTS)
    submit(plan_dir, **options)
    clock.advance(600)
    omics = omics_client(world.emulator)
    for run in omics.list_runs()["items"]:
        if omics.get_run(id=run["id"])["parameters"]["sample"] in ("S0001", "S0002"):
            omics.delete_run(id=run["id"])  # ended and deleted before planner saw how
    code, out, err = _cli(capsys, "retry", plan_dir, "--out", str(tmp_path / "r1"))
    assert code == 0 and "planned 1 run to retry" in out, (out, err)
    assert "2 samples whose runs were deleted before planner saw them end were left out" in err, err
    assert "--states FAILED,CANCELLED,DELETED" in err
    code, out, err = _cli(
        capsys, "retry", plan_dir, "--out", str(tmp_path / "r2"), "--states", "FAILED,CANCELLED,DELETED"
    )
    assert code == 0 and "planned 3 runs to retry" in out and "left out" not in err, (out, err)


# ---------------------------------------------------------------- item 11: the threshold's reason


def test_status_and_report_show_why_the_threshold_cancelled_the_rest(
    tmp_path: Path, world: Any, clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a bug: status and the report grouped the runs the failure threshold cancelled under
    'CANCELLED: no reason given', though the ledger recorded why."""
    options = world.start(fail_when=lambda settings: ("WORKFLOW_RUN_FAILED", "reference not found"))
    plan_dir = make_plan(tmp_path, 10, "omics-run", defaults=RUN_DEFAULTS)
    ctx = open_plan(plan_dir, concurrency=1, **options)
    ctx.clients.get("omics").meta.events.register("after-call.omics.StartRun", lambda **_: clock.advance(1.0))
    run_submission(ctx)  # runs started a step apart: the first fail while the last are still pending
    ctx.ledger.close()
    code, out, err = _cli(capsys, "status", plan_dir, "--watch", "--interval", "1", "--cancel-if-failed", "2")
    assert code == 1, (out, err)
    clock.advance(600)
    code, out, err = _cli(capsys, "status", plan_dir, "--json")
    groups = {g["reason"]: g["count"] for g in orjson.loads(out)["failures"]}
    cancelled = [reason for reason in groups if "more than 2 samples failed" in reason]
    assert cancelled and not any("no reason given" in reason for reason in groups), groups
    report_file = str(tmp_path / "report.html")
    code, out, err = _cli(capsys, "report", plan_dir, "--out", report_file)
    assert code == 0, err
    with open(report_file, encoding="utf-8") as handle:
        html = handle.read()
    assert "more than 2 samples failed" in html and "CANCELLED: no reason given" not in html
