"""One contract, every backend: the ordinary lifecycle through the same interface.

The five real backends (on the HealthOmics and Polly emulators and moto's server)
and the in-memory stub the API tests use pass the same tests: the stub cannot drift
from the base class unnoticed (dsub's fake providers did).  Crashes and faults are
the fault matrix's business (``tests/faults``); this is the path a user walks:
submit, status, submit again, a dry run, status once everything has ended, cancel,
retry what failed.  Where a backend's service cannot do something here, the test
says so and checks what it can.
"""

from __future__ import annotations

import importlib
import inspect
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import stub_backend
from faults.rigs import World

import planner
from planner.backends import MODULES, backend_class, get_backend
from planner.backends.base import ALREADY_FINAL, CANCELLED, STOPPING, Backend, CancelReport
from planner.backends.polly import RUN_PLACEHOLDER
from planner.core.progress import ProgressEvent
from planner.engine.context import DRY_RUN_OWNER
from planner.errors import Incomplete, SubmissionError

from .subjects import EVERY, Subject, ledger_exists, make_subject, remote_ids

pytestmark = pytest.mark.parametrize("name", EVERY)
ACCOUNT = "123456789012"  # moto's STS answers GetCallerIdentity with its default account


@pytest.fixture()
def subject_of(name: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``subject_of(failing=...)``: the test's backend's plan (servers and the stub started as needed)."""

    def make(failing: frozenset[str] = frozenset()) -> Subject:
        if name == stub_backend.NAME:
            return make_subject(
                name, None, tmp_path, monkeypatch, stub=request.getfixturevalue("stub"), failing=failing
            )
        world: World = request.getfixturevalue("world")
        return make_subject(name, world, tmp_path, monkeypatch, failing=failing)

    return make


def _canonical(request: Any) -> bytes:
    return orjson.dumps(request, option=orjson.OPT_SORT_KEYS)


def _states(table: pl.DataFrame) -> dict[str, str | None]:
    return dict(table.select("id", "state").iter_rows())


# ---------------------------------------------------------------- the interface


def test_the_registry_serves_the_modules_spec_and_class(name: str, stub: stub_backend.StubService) -> None:
    module = stub_backend if name == stub_backend.NAME else importlib.import_module(f"planner.backends.{MODULES[name]}")
    spec, cls = get_backend(name), backend_class(name)
    assert spec is module.SPEC and cls is module.BACKEND
    assert cls.spec is module.SPEC and spec.name == name
    assert issubclass(cls, Backend) and not inspect.isabstract(cls)


def test_every_method_of_the_interface_keeps_its_signature(name: str, stub: stub_backend.StubService) -> None:
    """Each abstract method is implemented, and every method a backend overrides takes what the base takes."""
    cls = backend_class(name)
    for method in Backend.__abstractmethods__:
        assert getattr(cls, method) is not getattr(Backend, method), f"{cls.__name__}.{method} is not implemented"
    checked = [
        n
        for n, member in vars(Backend).items()
        if inspect.isfunction(member) and (not n.startswith("_") or n == "__init__")
    ]
    assert set(Backend.__abstractmethods__) <= set(checked)
    for method in checked:
        mine = getattr(cls, method)
        if mine is getattr(Backend, method):
            continue  # inherited
        expected = inspect.signature(getattr(Backend, method), eval_str=True)
        found = inspect.signature(mine, eval_str=True)
        assert found == expected, f"{cls.__name__}.{method}{found}: the interface has {method}{expected}"


# ---------------------------------------------------------------- submit and status


def test_submit_then_status_maps_every_sample_to_a_run_and_a_state(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    report = subject.submit()
    assert (report.backend, report.plan_id, report.runs) == (name, subject.manifest.plan_id, len(subject.samples))
    assert report.failed == 0 and all(t.created == t.total for t in report.phases), report.to_json()
    subject.settle()
    table = planner.status(subject.plan_dir, **subject.access)
    assert sorted(table.get_column("id").to_list()) == sorted(subject.samples)
    assert table.filter(pl.col("remote_id").is_null() | pl.col("state").is_null()).height == 0, table
    assert remote_ids(table, name) <= subject.server_ids()
    subject.check_invariants()


def test_submit_reports_progress_to_the_end_of_every_phase(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    events: list[ProgressEvent] = []
    report = subject.submit(progress=events.append)
    assert report.phases
    for tally in report.phases:
        mine = [e for e in events if e.task == tally.operation]
        assert mine and mine[0].done == 0 and mine[0].total == tally.total, mine[:1]
        assert all(e.done <= tally.total for e in mine)  # (their order across workers: test_progress_order.py)
        assert mine[-1].finished and mine[-1].done == tally.total and mine[-1].unit == tally.unit, mine[-1]


def test_a_second_submit_creates_nothing(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    subject.submit()
    held = subject.server_ids()
    mark = subject.mark()
    again = subject.submit()
    assert [t.already for t in again.phases] == [t.total for t in again.phases] and again.phases
    assert sum(t.created + t.found + t.existed + t.failed for t in again.phases) == 0
    assert subject.creating_since(mark) == [] and subject.server_ids() == held


def test_a_dry_run_sends_nothing_and_shows_each_call_the_submit_then_makes(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    lines: list[dict[str, Any]] = []
    report = subject.submit(dry_run=True, emit=lines.append)
    assert report.dry_run and subject.calls_since() == [], "a dry run asked a service"
    assert not ledger_exists(subject.plan_dir)
    assert lines and all(line["problems"] == [] for line in lines), [line["problems"] for line in lines]
    orjson.dumps(lines)  # each line is JSON, as `submit --dry-run` prints it

    subject.submit()
    made = subject.creating_since()
    assert len(lines) == len(made), f"{len(lines)} dry-run lines, {len(made)} creating calls: {Counter(made)}"
    operations = Counter(line["operation"] for line in lines)
    assert sum(operations.values()) == len(made) and set(operations) == {t.operation for t in report.phases}

    # What the dry run showed is what was sent, but for what only the service or the caller's
    # identity can tell: the account that owns the staging bucket, and the id of Polly's new run.
    shown = orjson.dumps([line["request"] for line in lines]).decode()
    shown = shown.replace(DRY_RUN_OWNER, ACCOUNT)
    if name == "polly":
        (run,) = subject.rig.world.polly_emulator.runs()  # type: ignore[union-attr]
        shown = shown.replace(RUN_PLACEHOLDER, run["id"])
    assert sorted(map(_canonical, orjson.loads(shown))) == sorted(map(_canonical, subject.sent()))


def test_a_dry_run_of_a_submitted_plan_would_send_nothing(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    subject.submit()
    lines: list[dict[str, Any]] = []
    mark = subject.mark()
    report = subject.submit(dry_run=True, emit=lines.append)
    assert lines == [] and subject.calls_since(mark) == []
    assert [t.already for t in report.phases] == [t.total for t in report.phases] and report.phases
    assert any("nothing would be sent" in note for note in report.notes)


def test_status_before_any_submit_says_to_submit_first_and_asks_nothing(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    with pytest.raises(planner.PlanDirError, match="nothing submitted yet") as caught:
        planner.status(subject.plan_dir, **subject.access)
    assert caught.value.exit_code == 2
    assert subject.calls_since() == [] and not ledger_exists(subject.plan_dir)


def test_watch_ends_once_every_run_has_ended(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    subject.submit()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the time a watch waits: the service moves on
        sleeps.append(seconds)
        subject.settle()

    last = planner.watch(subject.plan_dir, interval=7, sleep=sleep, **subject.access)
    assert last.settled and last.table.height == len(subject.samples)
    assert set(last.counts) <= get_backend(name).final_states, last.counts
    assert sleeps in ([], [7]), sleeps  # one settle ends every run


# ---------------------------------------------------------------- status once everything has ended

# What a refresh may ask once the ledger holds every run as ended, and why.
FINISHED_STATUS = {
    # GetBatch per batch, whose unchanged status and counts say nothing moved (one batch per shard).
    "omics-batch": ("omics.GetBatch", lambda manifest: len(manifest.shards)),
    # Runs the ledger holds as final are never asked about again.
    "omics-run": (None, lambda manifest: 0),
    # One DescribeJobs per 100 array jobs (one per shard); an unchanged statusSummary lists no children.
    "batch": ("batch.DescribeJobs", lambda manifest: -(-len(manifest.shards) // 100)),
    # A plan whose runs have all ended asks nothing.
    "glue": (None, lambda manifest: 0),
    # Every job has ended: nothing can change.
    "polly": (None, lambda manifest: 0),
    stub_backend.NAME: (None, lambda manifest: 0),
}


def test_status_of_a_plan_whose_runs_have_all_ended_asks_for_little(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    subject.submit()
    subject.settle()
    first = planner.status(subject.plan_dir, **subject.access)
    spec = get_backend(name)
    assert set(first.get_column("state")) <= spec.final_states, _states(first)
    mark = subject.mark()
    again = planner.status(subject.plan_dir, **subject.access)
    asked = subject.calls_since(mark)
    operation, bound = FINISHED_STATUS[name]
    assert len(asked) <= bound(subject.manifest), f"{len(asked)} calls: {Counter(asked)}"
    assert set(asked) <= {operation}, Counter(asked)
    assert _states(again) == _states(first)
    mark = subject.mark()
    assert _states(planner.status(subject.plan_dir, refresh=False, **subject.access)) == _states(first)
    assert subject.calls_since(mark) == [], "status without a refresh asked a service"


# ---------------------------------------------------------------- cancel

# Where the service ends every run at once, cancel can only find them ended.
ENDS_AT_ONCE = {
    "batch": "moto's Batch without Docker ends every job at SubmitJob: nothing is left to terminate",
    "glue": "moto's Glue runs end at once (and moto has no BatchStopJobRun): nothing is left to stop",
}


def test_cancel_returns_a_report_that_accounts_for_every_sample(name: str, subject_of: Any) -> None:
    subject: Subject = subject_of()
    subject.submit()
    if name == "polly":
        mark = subject.mark()
        with pytest.raises(SubmissionError, match="Polly's API has no cancel") as caught:
            planner.cancel(subject.plan_dir, **subject.access)
        assert not isinstance(caught.value, planner.InputError)  # exit status 1: nothing was cancelled
        # It looks first (every job ended: nothing to cancel, exit 0), and sends nothing.
        assert [call for call in subject.calls_since(mark) if not call.startswith("polly GET ")] == []
        return
    subject.wait(0.5)  # past a HealthOmics batch's CREATING, which cannot be cancelled
    mark = subject.mark()
    report = planner.cancel(subject.plan_dir, **subject.access)
    assert isinstance(report, CancelReport) and report.complete
    assert (report.backend, report.plan_id) == (name, subject.manifest.plan_id)
    assert sum(o.samples for o in report.outcomes) == len(subject.samples), report.to_json()
    assert {o.outcome for o in report.outcomes} <= {CANCELLED, STOPPING, ALREADY_FINAL}
    summary = report.to_json()
    assert summary["cancelled"] + summary["stopping"] + summary["already_final"] == len(report.outcomes)
    if name in ENDS_AT_ONCE:
        assert report.count(CANCELLED) == 0, ENDS_AT_ONCE[name]
        stops = {"batch.TerminateJob", "batch.CancelJob", "glue.BatchStopJobRun"}
        assert not stops & set(subject.calls_since(mark)), "cancel tried to stop what had ended"
    else:  # the runs were still pending: every one is cancelled (asynchronously: a batch is STOPPING first)
        assert report.count(CANCELLED) + report.count(STOPPING) >= 1
        subject.settle()
        assert set(_states(planner.status(subject.plan_dir, **subject.access)).values()) == {"CANCELLED"}

    again = planner.cancel(subject.plan_dir, **subject.access)
    assert again.count(CANCELLED) + again.count(STOPPING) == 0 and again.complete
    assert sum(o.samples for o in again.outcomes) == len(subject.samples)


# ---------------------------------------------------------------- retry


def test_what_a_cancel_stopped_is_retried_as_new_runs(name: str, subject_of: Any) -> None:
    if name in ENDS_AT_ONCE or name == "polly":
        reason = ENDS_AT_ONCE.get(name, "Polly's API has no cancel")
        pytest.skip(f"nothing can be cancelled here: {reason}")
    subject: Subject = subject_of()
    subject.submit()
    subject.wait(0.5)  # past a HealthOmics batch's CREATING
    planner.cancel(subject.plan_dir, **subject.access)
    subject.settle()  # an asynchronous cancel (a STOPPING batch) ends
    table = planner.status(subject.plan_dir, **subject.access)
    assert set(_states(table).values()) == {"CANCELLED"}
    before = remote_ids(table, name)

    out = str(Path(subject.plan_dir).parent / "retry")
    manifest = planner.retry(subject.plan_dir, out, **subject.access)
    assert manifest.runs == len(subject.samples) and manifest.retry_of == subject.manifest.plan_id
    retried = subject.for_plan(out, subject.samples)
    report = retried.submit()
    assert sum(t.created for t in report.phases) >= 1 and sum(t.existed for t in report.phases) == 0
    retried.settle()
    after = planner.status(out, **retried.access)
    assert set(_states(after).values()) <= get_backend(name).final_states - {"CANCELLED"}, _states(after)
    assert remote_ids(after, name).isdisjoint(before)


def test_retry_is_a_new_plan_whose_submit_starts_new_runs_once(name: str, subject_of: Any) -> None:
    chosen = frozenset({"S0003", "S0004", "S0005"} if name == "batch" else {"S0001", "S0005"})  # Batch: one array
    subject: Subject = subject_of(failing=chosen)
    try:
        subject.submit()
    except Incomplete as refused:  # Glue: the refused starts
        assert name == "glue" and refused.report.failed == len(chosen), refused.report.to_json()
    subject.settle()
    spec = get_backend(name)
    table = planner.status(subject.plan_dir, **subject.access)
    bad = pl.col("state").is_in(list(spec.retry_states)).fill_null(False) | (pl.col("submission_status") == "FAILED")
    failed = sorted(table.filter(bad).get_column("id").to_list())
    if subject.expected_failures is not None:
        assert failed == sorted(subject.expected_failures), _states(table)
    assert 0 < len(failed) < len(subject.samples), _states(table)
    before = remote_ids(table, name)
    original = subject.manifest

    manifest = planner.retry(subject.plan_dir, str(Path(subject.plan_dir).parent / "retry"), **subject.access)
    assert manifest.plan_id != original.plan_id and manifest.retry_of == original.plan_id
    assert (manifest.backend, manifest.runs) == (name, len(failed))
    retried = subject.for_plan(str(Path(subject.plan_dir).parent / "retry"), failed)
    mark = retried.mark()
    report = retried.submit()
    assert report.failed == 0 and sum(t.existed for t in report.phases) == 0, report.to_json()
    assert sum(t.created for t in report.phases) >= 1 and retried.creating_since(mark)
    retried.settle()
    after = planner.status(retried.plan_dir, **retried.access)
    assert sorted(after.get_column("id").to_list()) == failed
    assert after.get_column("remote_id").null_count() == 0
    new = remote_ids(after, name)
    assert new.isdisjoint(before), "a retried sample was handed an earlier attempt's run"
    assert new <= retried.server_ids()
    if name != "batch":  # (a Batch retry is one array job of the retried samples)
        assert len(new) == len(failed), "each retried sample has a new run of its own"

    held = retried.server_ids()
    mark = retried.mark()
    again = retried.submit()
    assert [t.already for t in again.phases] == [t.total for t in again.phases]
    assert retried.creating_since(mark) == [] and retried.server_ids() == held
