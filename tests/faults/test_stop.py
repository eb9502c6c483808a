"""Stop means stop: Ctrl-C during `planner submit`, a `planner cancel` (or a failure threshold) while a
submit of the same plan runs, and a retry's hand-over to the plan it retried.

Each test walks it as a user would: `planner` command lines in child processes (endpoints from the
environment, as the standard chain reads them), a real SIGINT where the user presses Ctrl-C, and the
servers of the reliability suite (moto's for S3 and Glue, the HealthOmics emulator) counting what
they received.  "After the signal" is read from the ledger: a creating call is journaled (intent)
before it is sent, so every call the server received must have an intent journaled before the
signal was sent, and every run the server holds must be in the ledger.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import start_cli_process

from .rigs import KILL_TIMEOUT, Rig, World, check_invariants, ledger_tables, make_rig

POLL = 0.02


def _endpoints(rig: Rig) -> dict[str, str]:
    """The servers of ``rig`` as the standard chain finds them: ``AWS_ENDPOINT_URL_<SERVICE>``."""
    return {f"AWS_ENDPOINT_URL_{service.upper()}": endpoint for service, endpoint in rig.options["endpoints"].items()}


def _journal(plan_dir: str) -> dict[str, int]:
    """The creating calls journaled so far, by state (read-only, as another process would)."""
    path = os.path.join(plan_dir, "ledger.sqlite")
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM submissions GROUP BY state").fetchall())
    except sqlite3.OperationalError:  # the tables are not made yet
        return {}
    finally:
        db.close()


def _wait_for(what: str, condition: Callable[[], bool], child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + KILL_TIMEOUT
    while not condition():
        if child.poll() is not None:
            _out, err = child.communicate()
            raise AssertionError(f"the child ended (exit {child.returncode}) before {what}:\n{err.decode()[-3000:]}")
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(POLL)


def _finish(child: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = child.communicate(timeout=KILL_TIMEOUT)
    return child.returncode, out.decode(), err.decode()


# ---------------------------------------------------------------- 1. Ctrl-C during submit


@pytest.mark.parametrize("column", ["glue", "omics-run"])
def test_ctrl_c_during_submit_sends_nothing_more_and_the_next_submit_resumes(
    column: str, world: World, tmp_path: Any
) -> None:
    """Was a bug (issue 25, item 1): with --rate 0.5, SIGINT at the second run was followed by StartJobRun
    (StartRun) calls every two seconds: the calls queued on the thread pool went on through the rate limit,
    and the pool's shutdown waited for every one of them before "interrupted" was printed."""
    rig = make_rig(column, world, tmp_path)
    child = start_cli_process(["submit", rig.plan_dir, "--rate", "0.5", "--concurrency", "4"], _endpoints(rig))
    _wait_for("the second call journaled", lambda: _journal(rig.plan_dir).get("done", 0) >= 2, child)
    journaled = sum(_journal(rig.plan_dir).values())  # intents (and results) written before the signal
    child.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    code, _out, err = _finish(child)
    if os.environ.get("PLANNER_SHOW_TIMES"):  # measured, not asserted (no timed assertions in tests)
        print(f"\n{column}: exit {code} {time.monotonic() - signalled:.2f} s after SIGINT")

    assert code == 130, err
    assert "planner: interrupted" in err and "Traceback" not in err, err
    rig.settle()
    received = sum(rig.server_counts().values())
    assert received <= journaled, f"{received - journaled} creating call(s) sent after SIGINT:\n{err}"
    tables = ledger_tables(rig.plan_dir)
    recorded = {s["remote_id"] for s in tables["submissions"] if s["state"] == "done"}
    assert len(recorded) == received, "a call in flight at the signal was not journaled"
    assert 0 < received < len(rig.samples)

    again = start_cli_process(["submit", rig.plan_dir, "--json"], _endpoints(rig))
    code, _out, err = _finish(again)
    assert code == 0, err
    check_invariants(rig)  # every sample exactly once on the server


# ---------------------------------------------------------------- 2. cancel while a submit of the plan runs


def _unended_omics_runs(world: World) -> list[str]:
    """Runs the HealthOmics emulator holds that were neither cancelled nor ended (ListRuns, as a user would)."""
    runs = world.omics.list_runs().get("items", [])
    return [r["id"] for r in runs if r["status"] not in ("CANCELLED", "STOPPING", "COMPLETED", "FAILED", "DELETED")]


def _check_nothing_started_after(rig: Rig, known: set[str], submitting: subprocess.Popen[bytes]) -> None:
    """The submit had ended when the cancel returned, the server holds nothing more than it did then, and
    every run it holds is in the ledger (so the cancel saw it)."""
    assert submitting.poll() is not None, "the cancel returned while the submit of the plan was still running"
    code, _out, err = _finish(submitting)
    assert code == 1 and "planner: stopped: asked to stop" in err and "Traceback" not in err, (code, err)
    rig.settle()
    assert rig.server_ids() == known, f"started after the cancel returned: {sorted(rig.server_ids() - known)}"
    journaled = {s["remote_id"] for s in ledger_tables(rig.plan_dir)["submissions"] if s["state"] == "done"}
    assert known == journaled, f"the server holds runs the ledger does not: {sorted(known - journaled)}"
    assert 0 < len(known) < len(rig.samples)


@pytest.mark.parametrize("column", ["omics-run", "glue"])
def test_cancel_stops_a_running_submit_of_the_plan_first(column: str, world: World, tmp_path: Any) -> None:
    """Was a bug (issue 25, item 2): `planner cancel` while `planner submit` of the same plan ran cancelled what
    the ledger held at that moment, exit 0, and the submit went on starting runs afterwards."""
    rig = make_rig(column, world, tmp_path)
    submitting = start_cli_process(["submit", rig.plan_dir, "--rate", "0.5", "--concurrency", "4"], _endpoints(rig))
    _wait_for("the second call journaled", lambda: _journal(rig.plan_dir).get("done", 0) >= 2, submitting)
    code, out, err = _finish(start_cli_process(["cancel", rig.plan_dir], _endpoints(rig)))
    known = rig.server_ids()
    _check_nothing_started_after(rig, known, submitting)
    assert code == 0, err
    assert "asked it to stop" in err, err  # what cancel waited for was said
    if column == "omics-run":
        assert _unended_omics_runs(world) == [], "a run the submit made was left running"
        assert f"cancelled {len(known)}" in out, out

    again = start_cli_process(
        ["submit", rig.plan_dir], _endpoints(rig)
    )  # the user's later submit sends the rest: a cancel is no lock-out
    code, _out, err = _finish(again)
    assert code == 0, err


def test_a_failure_threshold_firing_mid_submit_stops_it_too(
    world: World, tmp_path: Any, make_omics_emulator: Callable[..., Any]
) -> None:
    """Was a bug (issue 25, item 2): `planner status --watch --cancel-if-failed 0` that fired while the submit
    of the plan ran cancelled what existed then; the submit went on starting runs afterwards."""
    world.omics_options["fail_when"] = lambda settings: (
        ("FAILED", "injected: the first sample fails")
        if (settings.get("parameters") or {}).get("sample") == "S0000"
        else None
    )
    rig = make_rig("omics-run", world, tmp_path)
    submitting = start_cli_process(["submit", rig.plan_dir, "--rate", "0.5", "--concurrency", "4"], _endpoints(rig))
    _wait_for("the second call journaled", lambda: _journal(rig.plan_dir).get("done", 0) >= 2, submitting)
    for _ in range(4):
        world.clock.advance(1.0)  # the runs made so far move on; S0000 fails
    watching = start_cli_process(
        ["status", rig.plan_dir, "--watch", "--interval", "0.2", "--cancel-if-failed", "0"], _endpoints(rig)
    )
    code, _out, err = _finish(watching)
    known = rig.server_ids()
    _check_nothing_started_after(rig, known, submitting)
    assert code == 1 and "more than 0 samples" in err, err
    assert _unended_omics_runs(world) == []


# ---------------------------------------------------------------- 3. the failure threshold during submit


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--watch", "--cancel-if-failed", "banana"], "--cancel-if-failed 'banana'"),
        (["--cancel-if-failed", "5"], "--cancel-if-failed goes with --watch"),
    ],
    ids=["not a threshold", "without --watch"],
)
def test_submit_refuses_a_bad_threshold_before_sending_anything(
    argv: list[str], said: str, world: World, tmp_path: Any
) -> None:
    """Was a bug (issue 25, item 3): `--cancel-if-failed banana` was refused only once the submit had ended."""
    rig = make_rig("omics-run", world, tmp_path)
    code, _out, err = _finish(start_cli_process(["submit", rig.plan_dir, *argv], _endpoints(rig)))
    assert code == 2 and said in err and "Traceback" not in err, err
    assert rig.server_ids() == set(), "runs were started on a command line that was refused"
    assert not os.path.exists(os.path.join(rig.plan_dir, "ledger.sqlite"))


def test_submit_keeps_the_threshold_while_submitting(world: World, tmp_path: Any) -> None:
    """Was a bug (issue 25, item 3): the threshold was looked at only after every call had been sent: with the
    account's run quota full, all nine remaining StartRun calls were refused one after another."""
    world.omics_options["max_retained_runs"] = 3  # from the fourth run on, StartRun is refused (a quota)
    rig = make_rig("omics-run", world, tmp_path)
    argv = ["--concurrency", "1", "--watch", "--interval", "60", "--cancel-if-failed", "2"]
    code, _out, err = _finish(start_cli_process(["submit", rig.plan_dir, *argv], _endpoints(rig)))
    assert code == 1 and "more than 2 samples failed (3 of 12 samples)" in err, err
    assert "Traceback" not in err
    submissions = ledger_tables(rig.plan_dir)["submissions"]
    assert sorted(s["state"] for s in submissions) == ["done"] * 3 + ["failed"] * 3, "calls went on past the threshold"
    assert _unended_omics_runs(world) == [], "what was submitted was not cancelled"
    events = [e for e in ledger_tables(rig.plan_dir)["events"] if e["kind"] == "cancel"]
    assert len(events) == 1 and "more than 2 samples failed" in events[0]["detail"]


def test_submit_watch_still_guards_what_was_submitted_when_calls_are_refused(world: World, tmp_path: Any) -> None:
    """Was a bug (issue 25, item 3): one refused call made `submit --watch --cancel-if-failed` exit at once,
    leaving every run it had started unwatched and unguarded."""
    world.omics_options["max_retained_runs"] = 10  # the last 2 of the 12 StartRun calls are refused (a quota)
    world.omics_options["fail_when"] = lambda settings: (
        ("FAILED", "injected") if (settings.get("parameters") or {}).get("sample") < "S0005" else None
    )
    rig = make_rig("omics-run", world, tmp_path)
    argv = ["--concurrency", "1", "--rate", "1", "--watch", "--interval", "0.2", "--cancel-if-failed", "50%"]
    child = start_cli_process(["submit", rig.plan_dir, *argv], _endpoints(rig))
    started = 0
    while sum(_journal(rig.plan_dir).values()) < 12:  # one step of the service's clock per run started:
        assert child.poll() is None, _finish(child)[2]  # S0000 ends first, S0009 last
        now = _journal(rig.plan_dir).get("done", 0)
        world.clock.advance(now - started)
        started = now
        time.sleep(POLL)
    code, _out, err = _finish(child)  # 5 runs failed and 2 calls were refused: 7 of 12, more than 50%
    assert code == 1, err
    assert "more than 50% of the plan" in err, err
    events = [e for e in ledger_tables(rig.plan_dir)["events"] if e["kind"] == "cancel"]
    assert len(events) == 1, "the threshold did not cancel what was submitted"
    assert _unended_omics_runs(world) == [], "the runs still going were not cancelled"


# ---------------------------------------------------------------- 6. a retry takes its samples over


def test_submitting_the_original_after_its_retry_sends_nothing_the_retry_runs(world: World, tmp_path: Any) -> None:
    """Was a bug (issue 25, item 6): after `planner retry` and `planner submit` of the retry plan, a
    `planner submit` of the original sent the original's refused calls again: two samples ran twice."""
    world.omics_options["max_retained_runs"] = 10  # 2 of the 12 StartRun calls are refused (a quota)
    rig = make_rig("omics-run", world, tmp_path)
    code, _out, err = _finish(start_cli_process(["submit", rig.plan_dir], _endpoints(rig)))
    assert code == 1 and "2 of 12 runs could not be submitted" in err, err
    world.omics_emulator.service.max_retained_runs = None  # the quota raised (the state is OmicsService's)

    retried = str(tmp_path / "retry")
    code, _out, err = _finish(start_cli_process(["retry", rig.plan_dir, "--out", retried], _endpoints(rig)))
    assert code == 0, err
    code, _out, err = _finish(start_cli_process(["submit", retried], _endpoints(rig)))
    assert code == 0, err
    assert sorted(rig.server_counts().values()) == [1] * 12

    code, out, err = _finish(
        start_cli_process(["submit", rig.plan_dir], _endpoints(rig))
    )  # the original again: a cron, a habit
    assert code == 0, err
    rig.settle()
    twice = {sample: n for sample, n in rig.server_counts().items() if n != 1}
    assert twice == {}, f"run twice: {twice}"
    assert "2 handed over to a retry plan (not sent)" in out and retried in out, out
