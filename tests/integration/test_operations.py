"""Operations after submit: a failure threshold that stops the rest, the HTML report, and cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import access_of, ledger_of, make_plan, open_plan, run_cli

import planner
from planner.commands.clean import clean
from planner.commands.report import report
from planner.commands.status import status
from planner.commands.submit import run_submission, submit
from planner.commands.watch import Threshold

ROLE = "arn:aws:iam::123456789012:role/omics"
DEFAULTS: dict[str, Any] = {
    "run": {"workflowId": "1234567", "roleArn": ROLE, "outputUri": "s3://results/x/", "parameters": {"ref": "hg38"}},
    "submission": {"batchName": "ops"},
}
RUN_DEFAULTS: dict[str, Any] = {"run": DEFAULTS["run"]}
DEFAULTS_OF = {"omics-batch": DEFAULTS, "omics-run": RUN_DEFAULTS}


@pytest.fixture()
def world(moto_server: str, make_emulator: Any, bucket: str) -> Any:
    class World:
        emulator: Any = None

        def start(self, **emulator_options: Any) -> dict[str, Any]:
            self.emulator = make_emulator(**emulator_options)
            endpoints = {"s3": moto_server, "omics": self.emulator.endpoint_url}
            return {"sandbox": True, "endpoints": endpoints, "staging": f"s3://{bucket}/staging/"}

    return World()


def _settle(clock: Any, steps: int = 12) -> None:
    for _ in range(steps):
        clock.advance(1.0)


# ---------------------------------------------------------------- the failure threshold


@pytest.mark.parametrize(("text", "expected"), [("50", Threshold(count=50)), ("5%", Threshold(percent=5.0))])
def test_a_threshold_is_a_count_or_a_share(text: str, expected: Threshold) -> None:
    assert Threshold.parse(text) == expected
    assert Threshold(count=2).crossed(3, 100) and not Threshold(count=2).crossed(2, 100)
    assert Threshold(percent=5).crossed(6, 100) and not Threshold(percent=5).crossed(5, 100)


@pytest.mark.parametrize("text", ["", "-1", "x", "100%", "150%", "5 %%"])
def test_a_bad_threshold_is_an_input_error(text: str) -> None:
    with pytest.raises(planner.InputError, match=r"^cancel_if_failed=") as caught:  # the API's keyword
        Threshold.parse(text)
    assert "--cancel-if-failed" not in str(caught.value)


def test_crossing_the_threshold_cancels_what_is_still_running(
    tmp_path: Path, world: Any, clock: Any, capsys: Any
) -> None:
    """A wrong reference makes every run fail: after the third failure the rest are cancelled."""
    options = world.start(fail_when=lambda settings: ("WORKFLOW_RUN_FAILED", "reference not found"))
    plan_dir = make_plan(tmp_path, 10, "omics-run", defaults=RUN_DEFAULTS)
    ctx = open_plan(plan_dir, concurrency=1, **options)
    ctx.clients.get("omics").meta.events.register("after-call.omics.StartRun", lambda **_: clock.advance(1.0))
    run_submission(ctx)  # runs started a step apart: the first fail while the last are still pending
    ctx.ledger.close()
    seen: list[Any] = []
    last = planner.watch(
        plan_dir,
        interval=1,
        cancel_if_failed="2",
        sleep=lambda s: clock.advance(1.0),
        on_refresh=seen.append,
        **access_of(options),
    )
    assert last.cancelled is not None and last.failed > 2 and not last.settled
    states = dict(status(plan_dir, **access_of(options)).select("id", "state").iter_rows())
    cancelled = list(states.values()).count("CANCELLED")
    assert set(states.values()) == {"FAILED", "CANCELLED"} and cancelled == 10 - last.failed >= 1
    ledger = ledger_of(plan_dir)
    ((_, kind, detail),) = ledger.events("cancel")  # (and a cancel-asked mark per run)
    ledger.close()
    assert kind == "cancel" and detail["reason"].startswith("more than 2 samples failed")


def test_the_cli_exits_1_when_the_threshold_cancelled(
    tmp_path: Path, world: Any, clock: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    options = world.start(
        fail_when=lambda settings: ("WORKFLOW_RUN_FAILED", "bad") if settings["runSettingId"] < "S0003" else None
    )
    plan_dir = make_plan(tmp_path, 6, defaults=DEFAULTS, max_entries=3)  # two batches
    submit(plan_dir, **options)
    _settle(clock)  # the first batch's runs: 3 failed; everything has ended
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", options["endpoints"]["omics"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", options["endpoints"]["s3"])
    done = run_cli(["status", plan_dir, "--watch", "--interval", "1", "--cancel-if-failed", "1"], capsys)
    # Everything had ended already: nothing is left to cancel, the watch ends settled; 3 samples failed: exit 1.
    assert done.code == 1, done.err
    assert "FAILED" in done.out and "more than 1: cancelled" not in done.err
    assert "3 of 6 samples failed or were cancelled" in done.err
    done = run_cli(["status", plan_dir, "--cancel-if-failed", "1"], capsys)
    assert done.code == 2 and "goes with --watch" in done.err


# ---------------------------------------------------------------- the report


def test_the_report_shows_what_the_ledger_knows(tmp_path: Path, world: Any, clock: Any) -> None:
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    options = world.start(failure_rate=0.3, seed=1)
    plan_dir = make_plan(tmp_path, 40, defaults=DEFAULTS)
    submit(plan_dir, **options)
    status(plan_dir, **access_of(options))
    _settle(clock)
    table = status(plan_dir, **access_of(options))
    out = tmp_path / "report.html"
    summary = report(plan_dir, out, **access_of(options))
    page = out.read_text(encoding="utf-8")
    assert summary.samples == 40 and out.stat().st_size == summary.bytes
    expected = dict(table.group_by("state").len().iter_rows())
    assert dict(summary.counts) == expected
    failed = table.filter(pl.col("state") == "FAILED").height
    assert sum(group.count for group in summary.failure_groups) == failed
    assert planner.read_plan(plan_dir).plan_id in page and "us-east-1.console.aws.amazon.com/omics" in page
    ledger = ledger_of(plan_dir)
    assert len(ledger.refreshes()) == 2  # each status refresh is a point of the progress chart
    ledger.close()


# ---------------------------------------------------------------- cleanup


def test_clean_removes_only_what_this_plan_staged_once_everything_ended(
    tmp_path: Path, world: Any, clock: Any, s3: Any, bucket: str
) -> None:
    options = world.start()
    mine = make_plan(tmp_path, 250, defaults=DEFAULTS, name="mine")  # staged on S3
    other = make_plan(tmp_path, 260, defaults=DEFAULTS, name="other")
    submit(mine, **options)
    submit(other, allow_rerun=True, **options)  # 250 of its samples are mine's, on purpose
    with pytest.raises(planner.InputError, match="may still be running"):
        clean(mine, **access_of(options))
    _settle(clock)
    keys = lambda: sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))  # noqa: E731
    before = keys()
    assert len(before) == 2
    dry = clean(mine, dry_run=True, **access_of(options))
    assert len(dry.removed) == 1 and keys() == before
    done = clean(mine, runs=True, **access_of(options))
    other_id = planner.read_plan(other).plan_id
    assert keys() == [k for k in before if other_id in k]  # the other plan's shard is left alone
    assert [o.outcome for o in done.runs] == ["deleting"]  # DeleteRunBatch is asynchronous: RUNS_DELETING
    _settle(clock)
    # The runs are gone from HealthOmics; their outcome stays in the ledger.
    assert set(dict(status(mine, **access_of(options)).select("id", "state").iter_rows()).values()) == {"COMPLETED"}
    again = clean(mine, **access_of(options))
    assert again.removed == [] and len(again.gone) == 1


@pytest.mark.parametrize("backend", ["omics-batch", "omics-run"])
def test_clean_runs_keeps_each_samples_outcome_so_retry_still_finds_the_failed(
    tmp_path: Path, world: Any, clock: Any, backend: str
) -> None:
    """Was a bug (omics-batch): DeleteRunBatch made every run DELETED in the ledger, FAILED ones too,
    so `retry` after `clean --runs` found nothing to retry.  A run's outcome is kept once known."""

    def sample(settings: dict[str, Any]) -> str:  # a batch's run setting, or StartRun's request
        return str(settings.get("runSettingId") or settings["parameters"]["sample"])

    options = world.start(
        fail_when=lambda settings: ("WORKFLOW_RUN_FAILED", "bad") if sample(settings) < "S0002" else None
    )
    plan_dir = make_plan(tmp_path, 5, backend, defaults=DEFAULTS_OF[backend])
    submit(plan_dir, **options)
    _settle(clock)
    done = clean(plan_dir, runs=True, **access_of(options))
    assert {o.outcome for o in done.runs} == {"deleting" if backend == "omics-batch" else "deleted"}
    _settle(clock)
    table = status(plan_dir, **access_of(options))
    assert dict(table.select("id", "state").iter_rows()) == {
        "S0000": "FAILED",
        "S0001": "FAILED",
        "S0002": "COMPLETED",
        "S0003": "COMPLETED",
        "S0004": "COMPLETED",
    }
    assert table.filter(pl.col("state") == "FAILED").get_column("reason").to_list() == ["WORKFLOW_RUN_FAILED: bad"] * 2
    retried = planner.retry(plan_dir, str(tmp_path / "retry"), **access_of(options))
    assert retried.runs == 2


def test_clean_keeps_an_object_someone_replaced(tmp_path: Path, world: Any, clock: Any, s3: Any, bucket: str) -> None:
    options = world.start()
    plan_dir = make_plan(tmp_path, 250, defaults=DEFAULTS)
    submit(plan_dir, **options)
    _settle(clock)
    ledger = ledger_of(plan_dir)
    (staged,) = ledger.all_staged()
    ledger.close()
    s3.put_object(Bucket=bucket, Key=staged.key, Body=b"someone else's bytes")
    done = clean(plan_dir, **access_of(options))
    assert done.removed == [] and done.kept[0][0] == staged.uri and "not this plan's" in done.kept[0][1]
    assert s3.get_object(Bucket=bucket, Key=staged.key)["Body"].read() == b"someone else's bytes"


def test_clean_runs_is_for_healthomics_only(tmp_path: Path, make_polly_emulator: Any, moto_server: str) -> None:
    emulator = make_polly_emulator()
    out = str(tmp_path / "plan")
    planner.plan(
        pl.DataFrame({"sample": ["a", "b"]}),
        backend="polly",
        defaults={"run": {"parameters": {}}, "submission": {"pipeline_id": "p"}},
    ).write(out)
    options = {"sandbox": True, "endpoints": {"s3": moto_server, "polly": emulator.endpoint_url}}
    submit(out, **options)
    emulator.clock.advance(10)
    with pytest.raises(planner.InputError, match="deletes HealthOmics runs"):
        clean(out, runs=True, **options)
    assert orjson.loads(orjson.dumps(clean(out, **options).to_json()))["removed"] == []
