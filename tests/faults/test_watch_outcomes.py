"""How `planner status --watch` ends when not every sample succeeded (issue 25, items 8 and 9):
nothing submitted at all, and a run state the planner does not know.  Exit 0 only when every sample
reached its success state; a state the service does not document is shown, warned of once, and not
waited on forever."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import planner
import planner.cli
from planner.backends.polly import job_state
from planner.commands.submit import submit

from . import faultkit
from .rigs import World, make_rig, run_killed


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = planner.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_watch_of_a_plan_nothing_of_which_was_submitted_exits_1(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a bug: a submit killed before its first upload leaves a ledger and no sample submitted;
    `status --watch` found nothing moving and exited 0, as if everything had succeeded."""
    rig = make_rig("omics-batch", world, tmp_path / "rig")
    run_killed(rig, {"at": "aws", "service": "s3", "operation": "PutObject", "when": "before", "nth": 1})
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", rig.options["endpoints"]["omics"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", world.moto)
    code, out, err = _cli(capsys, "status", rig.plan_dir, "--watch", "--interval", "1")
    assert code == 1, (out, err)
    assert f"30 of 30 samples were never submitted (NOT SUBMITTED): `planner submit {rig.plan_dir}`" in err, err


def test_a_run_state_planner_does_not_know_is_shown_warned_once_and_not_waited_on(
    world: World,
    tmp_path: Any,
    hooks: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HealthOmics answers GetRun of one run with a status its model does not have (a status added
    after this planner was released): the watch must end, naming it, instead of looping forever."""
    rig = make_rig("omics-run", world, tmp_path / "rig")
    submit(rig.plan_dir, **rig.options)
    strange = "S0003"

    def new_status(parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("parameters", {}).get("sample") == strange:
            parsed["status"] = "ARCHIVED"

    hooks([(f"after-call.{faultkit.event_name('omics')}.GetRun", new_status)])
    world.clock.advance(600)  # every other run has ended
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        assert len(sleeps) < 5, "the watch keeps waiting on a state that will never change"

    with caplog.at_level(logging.WARNING, logger="planner"):
        last = planner.watch(rig.plan_dir, interval=1, sleep=sleep, **rig.access)
    assert last.settled and last.counts == {"ARCHIVED": 1, "COMPLETED": 11}, last
    warnings = [r.getMessage() for r in caplog.records if "ARCHIVED" in r.getMessage()]
    assert len(warnings) == 1 and "not waited for" in warnings[0], warnings
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", rig.options["endpoints"]["omics"])
    code, out, err = _cli(capsys, "status", rig.plan_dir, "--watch", "--interval", "1")
    assert code == 1, (out, err)
    assert "ARCHIVED" in out and "states planner does not know (ARCHIVED 1)" in err, (out, err)


@pytest.mark.parametrize("status", ["TERMINATED", "KILLED", "Paused"])
def test_a_polly_job_status_the_sdk_does_not_document_is_kept_as_unknown(status: str) -> None:
    """Polly's SDK (seeds/003) documents PENDING, RUNNING, COMPLETED, ERRORED...; anything else was
    taken for RUNNING, so a watch waited on it forever."""
    state, reason = job_state({"status": status, "stage": "align", "progress": "3/5"})
    assert state == status.upper() and reason is not None and status in reason
    spec = planner.backends.get_backend("polly")
    assert state not in spec.known_states
