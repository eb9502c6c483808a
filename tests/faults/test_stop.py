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
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from .rigs import KILL_TIMEOUT, Rig, World, check_invariants, ledger_tables, make_rig

POLL = 0.02


def _environment(rig: Rig) -> dict[str, str]:
    """The servers of ``rig`` as the standard chain finds them: ``AWS_ENDPOINT_URL_<SERVICE>``."""
    env = dict(os.environ)
    env.pop("PLANNER_DEBUG", None)
    for service, endpoint in rig.options["endpoints"].items():
        env[f"AWS_ENDPOINT_URL_{service.upper()}"] = endpoint
    return env


def _planner(rig: Rig, *argv: str) -> subprocess.Popen[bytes]:
    """``planner ARGV`` in a child process, as typed in a terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "planner.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(rig),
    )


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
    child = _planner(rig, "submit", rig.plan_dir, "--rate", "0.5", "--concurrency", "4")
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

    again = _planner(rig, "submit", rig.plan_dir, "--json")
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
    submitting = _planner(rig, "submit", rig.plan_dir, "--rate", "0.5", "--concurrency", "4")
    _wait_for("the second call journaled", lambda: _journal(rig.plan_dir).get("done", 0) >= 2, submitting)
    code, out, err = _finish(_planner(rig, "cancel", rig.plan_dir))
    known = rig.server_ids()
    _check_nothing_started_after(rig, known, submitting)
    assert code == 0, err
    assert "asked it to stop" in err, err  # what cancel waited for was said
    if column == "omics-run":
        assert _unended_omics_runs(world) == [], "a run the submit made was left running"
        assert f"cancelled {len(known)}" in out, out

    again = _planner(rig, "submit", rig.plan_dir)  # the user's later submit sends the rest: a cancel is no lock-out
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
    submitting = _planner(rig, "submit", rig.plan_dir, "--rate", "0.5", "--concurrency", "4")
    _wait_for("the second call journaled", lambda: _journal(rig.plan_dir).get("done", 0) >= 2, submitting)
    for _ in range(4):
        world.clock.advance(1.0)  # the runs made so far move on; S0000 fails
    watching = _planner(rig, "status", rig.plan_dir, "--watch", "--interval", "0.2", "--cancel-if-failed", "0")
    code, _out, err = _finish(watching)
    known = rig.server_ids()
    _check_nothing_started_after(rig, known, submitting)
    assert code == 1 and "more than 0 samples" in err, err
    assert _unended_omics_runs(world) == []
