"""The Python API end to end, with no network: ``planner.submit/status/watch/retry/cancel`` on the stub backend.

The stub (``tests/stub_backend.py``) keeps its "service" in a dict, so these tests pin
what the API itself does (its options, the report, progress, Incomplete, watch's end,
retry's new identity, cancel's report) in milliseconds.  The same stub passes the
contract suite the five real backends pass (``tests/contract``).
"""

from __future__ import annotations
import __future__

import importlib
import os
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import polars as pl
import pytest
from helpers import make_plan, sheet_frame
from stub_backend import NAME, StubService, installed

import planner
from planner.backends import backend_class, get_backend, register, unregister
from planner.core.progress import ProgressEvent
from planner.errors import Incomplete, InputError, SubmissionError

DEFAULTS: dict[str, Any] = {"run": {"workflow": "wf-7", "parameters": {"reference": "s3://refs/hg38.fa"}}}
SHEET: dict[str, Any] = {"width": 0, "fastq": "s3://in/{sample}.fq"}  # sheet_frame(n, **SHEET): S0, S1, ...


@pytest.fixture()
def service() -> Iterator[StubService]:
    with installed() as stub:
        yield stub


def _states(table: pl.DataFrame) -> dict[str, str | None]:
    return dict(table.select("id", "state").iter_rows())


# ---------------------------------------------------------------- the package's names


def test_all_is_exactly_the_public_names_of_the_package() -> None:
    """Every name in ``__all__`` is importable from ``planner``, and no public name is left out of it."""
    assert len(set(planner.__all__)) == len(planner.__all__), "a name is listed twice"
    for name in planner.__all__:
        assert getattr(importlib.import_module("planner"), name, None) is not None, f"planner.{name} is listed, absent"
    public = {
        name
        for name, value in vars(planner).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules appear once imported
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    }
    assert public - set(planner.__all__) == set(), "public names missing from __all__"
    assert set(planner.__all__) - public == set()


# ---------------------------------------------------------------- the stub's registration


def test_register_serves_a_backend_until_unregistered(service: StubService, tmp_path: Path) -> None:
    import stub_backend

    assert get_backend(NAME) is stub_backend.SPEC and backend_class(NAME) is stub_backend.BACKEND
    unregister(NAME)
    with pytest.raises(InputError, match="unknown backend 'stub'"):
        make_plan(tmp_path, sheet_frame(5, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    register(NAME, stub_backend)  # (installed() unregisters it again at the end)
    assert backend_class(NAME) is stub_backend.StubBackend


def test_register_refuses_a_built_in_name_and_a_module_that_is_no_backend() -> None:
    import stub_backend

    with pytest.raises(ValueError, match="built-in"):
        register("glue", stub_backend)
    with pytest.raises(ValueError, match="SPEC must be a BackendSpec named 'other'"):
        register("other", stub_backend)  # its SPEC is named "stub"
    with pytest.raises(ValueError, match="SPEC"):
        register("empty", types.ModuleType("empty"))
    with pytest.raises(InputError, match="unknown backend 'other'"):
        get_backend("other")


# ---------------------------------------------------------------- submit


def test_submit_reports_what_it_created_and_its_progress(service: StubService, tmp_path: Path) -> None:
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    events: list[ProgressEvent] = []
    report = planner.submit(plan_dir, progress=events.append)

    assert (report.backend, report.plan_id, report.runs, report.dry_run) == (
        NAME,
        planner.read_plan(plan_dir).plan_id,
        5,
        False,
    )
    tally = report.tally("StartRun")
    assert (tally.total, tally.created, tally.already, tally.failed) == (5, 5, 0, 0)
    assert report.to_json()["submissions"] == [tally.to_json()]
    assert report.lines()[1] == "  StartRun: 5 runs: 5 created"
    assert service.calls == ["StartRun"] * 5
    assert sorted(service.states()) == [f"S{i}" for i in range(5)]

    assert all(isinstance(e, ProgressEvent) for e in events)
    mine = [e for e in events if e.task == "StartRun"]
    assert all(0 <= e.done <= 5 for e in mine)  # (their order across workers: test_progress_order.py)
    assert mine[0].done == 0 and mine[-1].finished and mine[-1].done == mine[-1].total == 5
    assert {e.unit for e in mine} == {"run"}


def test_a_second_submit_sends_nothing(service: StubService, tmp_path: Path) -> None:
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    planner.submit(plan_dir)
    again = planner.submit(plan_dir)
    assert [(t.already, t.created) for t in again.phases] == [(5, 0)]
    assert service.calls == ["StartRun"] * 5


def test_a_refused_call_raises_incomplete_carrying_the_report(service: StubService, tmp_path: Path) -> None:
    service.refuse = lambda request: "workflow wf-7 has no parameter fastq" if request["name"] == "S3" else None
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    with pytest.raises(Incomplete) as caught:
        planner.submit(plan_dir)

    assert isinstance(caught.value, SubmissionError) and caught.value.exit_code == 1
    tally = caught.value.report.tally("StartRun")
    assert (tally.created, tally.failed) == (4, 1)
    assert tally.failures == [
        "sample S3: StartRun for sample S3: ValidationException: workflow wf-7 has no parameter fastq"
    ]
    assert "1 of 5 runs could not be submitted" in str(caught.value)
    table = planner.status(plan_dir, refresh=False)
    refused = table.filter(pl.col("id") == "S3").row(0, named=True)
    assert refused["submission_status"] == "FAILED" and refused["remote_id"] is None
    assert "no parameter fastq" in refused["reason"]
    assert table.filter(pl.col("id") != "S3").get_column("submission_status").to_list() == ["SUBMITTED"] * 4


def test_a_dry_run_emits_each_request_and_sends_and_writes_nothing(service: StubService, tmp_path: Path) -> None:
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    lines: list[dict[str, Any]] = []
    report = planner.submit(plan_dir, dry_run=True, emit=lines.append)

    assert report.dry_run and report.tally("StartRun").created == 3 and "dry run" in report.lines()[0]
    assert [(line["operation"], line["sample"], line["problems"]) for line in lines] == [
        ("StartRun", f"S{i}", []) for i in range(3)
    ]
    assert lines[0]["request"]["workflow"] == "wf-7" and lines[0]["request"]["requestId"].startswith("stub-")
    assert service.calls == [] and not os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))

    no_workflow = make_plan(
        tmp_path,
        sheet_frame(1, **SHEET),
        NAME,
        defaults={"run": {"parameters": {"x": "1"}}},
        name="bare",
        max_entries=2,
    )
    lines.clear()
    planner.submit(no_workflow, dry_run=True, emit=lines.append)
    assert lines[0]["problems"] == ["workflow: is required"]  # a dry run is where a bad request shows


# ---------------------------------------------------------------- status, watch


def test_status_maps_every_sample_to_its_run_and_state(service: StubService, tmp_path: Path) -> None:
    service.fail_when = lambda request: "out of memory" if request["name"] == "S1" else None
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    planner.submit(plan_dir)
    assert set(_states(planner.status(plan_dir)).values()) == {"PENDING"}
    service.advance(2)
    table = planner.status(plan_dir)
    assert table.columns == planner.commands.status.STATUS_COLUMNS
    assert _states(table) == {f"S{i}": "FAILED" if i == 1 else "COMPLETED" for i in range(5)}
    assert table.filter(pl.col("id") == "S1").get_column("reason").to_list() == ["out of memory"]
    assert table.get_column("remote_id").n_unique() == 5 and table.get_column("remote_id").null_count() == 0
    before = len(service.calls)
    planner.status(plan_dir)
    assert service.calls[before:] == []  # every run has ended: nothing to ask


def test_watch_refreshes_until_every_run_has_ended(service: StubService, tmp_path: Path) -> None:
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    planner.submit(plan_dir)
    sleeps: list[float] = []
    seen: list[planner.Snapshot] = []

    def sleep(seconds: float) -> None:  # time passes: the service moves on
        sleeps.append(seconds)
        service.advance()

    last = planner.watch(plan_dir, interval=5, sleep=sleep, clock=lambda: 100.0 + len(sleeps), on_refresh=seen.append)
    assert last.settled and last is seen[-1] and last.counts == {"COMPLETED": 3}
    assert [s.counts for s in seen] == [{"PENDING": 3}, {"RUNNING": 3}, {"COMPLETED": 3}]
    assert [s.first for s in seen] == [True, False, False] and seen[2].changes == {"RUNNING": -3, "COMPLETED": 3}
    assert sleeps == [5, 5] and [s.at for s in seen] == [100.0, 101.0, 102.0]


def test_watch_cancels_what_still_runs_once_too_many_have_failed(service: StubService, tmp_path: Path) -> None:
    service.hold = lambda request: request["name"] == "S0"  # a long run
    service.fail_when = lambda request: "bad reference" if request["name"] == "S1" else None
    plan_dir = make_plan(tmp_path, sheet_frame(3, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    planner.submit(plan_dir)
    service.advance(2)
    last = planner.watch(plan_dir, interval=1, sleep=lambda s: pytest.fail("watch waited"), cancel_if_failed="0")
    assert last.first and not last.settled and last.failed == 1
    assert last.cancelled is not None and last.cancelled.count("cancelled") == 1
    assert service.states() == {"S0": "CANCELLED", "S1": "FAILED", "S2": "COMPLETED"}
    ledger = helpers.ledger_of(plan_dir)
    try:
        ((kind, detail),) = [(kind, detail) for _, kind, detail in ledger.events()]
    finally:
        ledger.close()
    assert kind == "cancel" and detail["reason"] == "more than 0 samples failed (1 of 3 samples)"


# ---------------------------------------------------------------- retry, cancel


def test_retry_is_a_new_plan_whose_submit_starts_new_runs_once(service: StubService, tmp_path: Path) -> None:
    service.fail_when = lambda request: "disk full" if request["name"] in ("S1", "S4") else None
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    planner.submit(plan_dir)
    service.advance(2)
    original = planner.read_plan(plan_dir)

    manifest = planner.retry(plan_dir, str(tmp_path / "retry"))
    assert manifest.plan_id != original.plan_id and manifest.retry_of == original.plan_id
    assert (manifest.backend, manifest.runs) == (NAME, 2)
    service.fail_when = None
    report = planner.submit(str(tmp_path / "retry"))
    assert report.tally("StartRun").created == 2 and report.tally("StartRun").existed == 0
    assert len(service.runs) == 7
    again = planner.submit(str(tmp_path / "retry"))
    assert again.tally("StartRun").already == 2 and len(service.runs) == 7
    service.advance(2)
    assert _states(planner.status(str(tmp_path / "retry"))) == {"S1": "COMPLETED", "S4": "COMPLETED"}


def test_cancel_reports_each_run_and_leaves_finished_ones_alone(service: StubService, tmp_path: Path) -> None:
    service.hold = lambda request: request["name"] in ("S0", "S2")
    plan_dir = make_plan(tmp_path, sheet_frame(4, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    planner.submit(plan_dir)
    service.advance(2)  # S1 and S3 complete, S0 and S2 still run
    report = planner.cancel(plan_dir)
    assert isinstance(report, planner.CancelReport) and report.complete
    assert (report.backend, report.plan_id) == (NAME, planner.read_plan(plan_dir).plan_id)
    assert [(o.outcome, o.samples) for o in report.outcomes] == [
        ("already final", 2),
        ("cancelled", 1),
        ("cancelled", 1),
    ]
    assert _states(planner.status(plan_dir)) == {
        "S0": "CANCELLED",
        "S1": "COMPLETED",
        "S2": "CANCELLED",
        "S3": "COMPLETED",
    }
    assert service.calls.count("CancelRun") == 2  # none sent for the runs that had ended

    again = planner.cancel(plan_dir)
    assert again.count("cancelled") == 0 and [(o.outcome, o.samples) for o in again.outcomes] == [("already final", 4)]
    assert service.calls.count("CancelRun") == 2


# ---------------------------------------------------------------- option checks


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda plan: planner.submit(plan, concurrency=0), "concurrency 0"),
        (lambda plan: planner.submit(plan, concurrency=2.5), "concurrency 2.5"),
        (lambda plan: planner.submit(plan, rate=-1), "rate -1"),
        (lambda plan: planner.submit(plan, rate=0), "rate 0"),
        (lambda plan: planner.submit(plan, max_wait=-1), "max_wait -1"),
        (lambda plan: planner.status(plan, concurrency=0), "concurrency 0"),
        (lambda plan: planner.cancel(plan, rate=-2.0), "rate -2.0"),
        (lambda plan: planner.watch(plan, interval=0), "interval 0"),
        (lambda plan: planner.watch(plan, interval=-5), "interval -5"),
        (lambda plan: planner.watch(plan, interval=float("inf")), "interval inf"),
    ],
)
def test_bad_options_are_input_errors_before_anything_happens(
    service: StubService, tmp_path: Path, call: Any, message: str
) -> None:
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), NAME, defaults=DEFAULTS, max_entries=2)
    with pytest.raises(InputError, match=message) as caught:
        call(plan_dir)
    assert caught.value.exit_code == 2
    assert service.calls == [] and not os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))


# ---------------------------------------------------------------- check and policies, as the CLI's


def test_check_and_policies_are_the_cli_commands(tmp_path: Path) -> None:
    """`planner check` and `planner policy` from Python: a template file finds the undefined parameter
    with no AWS access, and the policy documents come back as dicts."""
    out = str(tmp_path / "plan")
    role = "arn:aws:iam::123456789012:role/omics"
    defaults = {"run": {"workflowId": "1234567", "roleArn": role, "outputUri": "s3://out/"}}
    sheet = pl.DataFrame({"sample": ["S1", "S2"], "fastq": ["s3://in/1.fq", "s3://in/2.fq"]})
    planner.plan(sheet, backend="omics-batch", defaults=defaults, workflow_lookup=False).write(out)
    template = tmp_path / "template.json"
    template.write_text('{"sample": {"optional": false}, "fastq_1": {"optional": false}}', encoding="utf-8")
    report = planner.check(out, parameter_template=str(template), inputs=False, quotas=False)
    assert isinstance(report, planner.CheckReport)
    assert {(p.column, p.rule) for p in report.problems} >= {("parameters.fastq", "template-unknown")}
    found = planner.policies(out, region="us-east-1")
    assert isinstance(found, planner.Policies) and found.service_role is None  # inline: nothing staged
    assert "omics:StartRunBatch" in {a for s in found.submitter["Statement"] for a in s["Action"]}


def test_a_snapshot_says_what_it_holds_in_one_line() -> None:
    """Its repr used to print the whole per-sample table and an epoch float."""
    table = pl.DataFrame({"id": [f"S{i}" for i in range(1000)]})
    shown = repr(planner.Snapshot(0.0, table, {"COMPLETED": 990, "FAILED": 10}, settled=True))
    assert shown.startswith("<Snapshot at 19") and shown.endswith(": 1,000 samples: COMPLETED 990, FAILED 10; settled>")
