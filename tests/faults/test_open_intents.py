"""Commands that read the ledger after a submit was SIGKILLed between the service's answer and the
ledger's record of it (issue 25, item 4): the journal holds only the intent, the service holds a
batch, run or job.  ``status``, ``cancel``, ``clean`` and ``retry`` must settle such an intent
first, as ``submit`` does (AWS Batch by job name, Glue by run key, Polly by run name), or, where the
service can be asked only by sending the call again (HealthOmics' requestId), refuse and say to run
``planner submit PLAN`` first; never show the samples NOT SUBMITTED, cancel nothing and exit 0, or
delete a staged shard a batch still reads.

The submit is a real child process killed by the fault kit; each command after it is the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import polars as pl
import pytest

import planner.cli
from planner.commands.submit import submit
from planner.errors import SubmissionError

from . import faultkit
from .rigs import (
    COLUMNS,
    KILL_TIMEOUT,
    STAGING_PREFIX,
    Rig,
    World,
    bucket_versions,
    make_rig,
    run_killed,
    submission_states,
)

SETTLED_BY_LOOKUP = ("batch", "glue", "polly")


def _killed_after_the_answer(column: str, world: World, tmp_path: Any) -> Rig:
    rig = make_rig(column, world, tmp_path / "rig")
    run_killed(rig, rig.kill_at_creating_call("after", nth=2))
    assert submission_states(rig.plan_dir)["intent"] >= 1
    return rig


def _cli(rig: Rig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> Any:
    for service, url in rig.options["endpoints"].items():
        if service == "polly":
            monkeypatch.setenv("POLLY_BASE_URL", url)
            monkeypatch.setenv("POLLY_API_KEY", "sandbox")  # what --sandbox uses; the emulator takes any key
        else:
            monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service.upper()}", url)
    capsys.readouterr()
    code = planner.cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "planner: internal error" not in err, err  # (the emulators log the killed child's broken connections)
    return code, out, err


def _not_submitted_yet_on_the_server(rig: Rig, table: str) -> list[str]:
    """Samples the service received that the status table shows as NOT SUBMITTED."""
    rows = pl.read_csv(table, infer_schema=False)
    shown = pl.coalesce(pl.col("state"), pl.col("submission_status"))
    missing = set(rows.filter(shown.is_null()).get_column("id").to_list())
    return sorted(missing & set(rig.server_counts()))


@pytest.mark.parametrize("column", COLUMNS)
def test_status_after_a_submit_killed_before_it_recorded_an_answer(
    column: str, world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _killed_after_the_answer(column, world, tmp_path)
    table = str(tmp_path / "status.csv")
    code, out, err = _cli(rig, capsys, monkeypatch, "status", rig.plan_dir, "--json", "--out", table)
    if column in SETTLED_BY_LOOKUP:
        # Found on the service and journaled: the killed call's samples no longer read NOT SUBMITTED.
        assert code == 0, err
        assert _not_submitted_yet_on_the_server(rig, table) == [], out
        assert "call(s) of an interrupted submit found at the service and recorded in the ledger" in err, err
    else:
        assert code == 2, (out, err)
        assert f"planner submit {rig.plan_dir}" in err and "reconcile" in err, err
        assert "NOT SUBMITTED" not in out


@pytest.mark.parametrize("column", ["omics-batch", "omics-run", "batch", "glue"])
def test_cancel_after_a_submit_killed_before_it_recorded_an_answer(
    column: str, world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _killed_after_the_answer(column, world, tmp_path)
    code, out, err = _cli(rig, capsys, monkeypatch, "cancel", rig.plan_dir)
    if column in SETTLED_BY_LOOKUP:
        # Found and journaled before the cancel, and so cancelled with the rest.
        table = str(tmp_path / "status.csv")
        assert _cli(rig, capsys, monkeypatch, "status", rig.plan_dir, "--no-refresh", "--out", table)[0] == 0
        assert _not_submitted_yet_on_the_server(rig, table) == []
    else:
        # Nothing is known of the interrupted call's batch or run: not "cancelled 0", exit 0.
        assert code == 1, (out, err)
        assert f"planner submit {rig.plan_dir}" in out + err, (out, err)


def test_clean_keeps_a_staged_shard_an_unrecorded_batch_may_read(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _killed_after_the_answer("omics-batch", world, tmp_path)
    before = bucket_versions(rig.world.s3, rig.world.bucket)
    rig.settle()
    code, out, err = _cli(rig, capsys, monkeypatch, "clean", rig.plan_dir)
    assert code == 2, (out, err)
    assert f"planner submit {rig.plan_dir}" in err
    assert bucket_versions(rig.world.s3, rig.world.bucket) == before, "clean removed a staged object"
    assert os.path.exists(os.path.join(rig.plan_dir, "ledger.sqlite"))


def test_submit_after_clean_stages_a_refused_shard_again(
    world: World, tmp_path: Any, hooks: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25, item 5: the first shard's StartRunBatch is refused, the other batches run and end;
    `planner clean` removes the staged shards; `planner submit` again must stage the refused shard
    anew and submit it, not fail forever with "the staged object has disappeared"."""
    rig = make_rig("omics-batch", world, tmp_path / "rig")
    refuse = faultkit.SendFault("refuse", times=1, status=400, code="ValidationException")
    hooks([(f"before-send.{faultkit.event_name('omics')}.StartRunBatch", refuse)])
    with pytest.raises(SubmissionError, match="could not be submitted"):
        submit(rig.plan_dir, **rig.options)
    world.clock.advance(60)  # the two batches made run to their end
    code, out, err = _cli(rig, capsys, monkeypatch, "clean", rig.plan_dir)
    assert code == 0, (out, err)
    assert "removed 3 staged object(s)" in out, out
    staging = ["--staging", f"s3://{world.bucket}/{STAGING_PREFIX}"]
    code, out, err = _cli(rig, capsys, monkeypatch, "submit", rig.plan_dir, *staging)
    assert code == 0, (out, err)
    assert "1 created" in out and "2 already submitted" in out, out
    rig.settle()
    assert rig.server_counts() == dict.fromkeys(rig.samples, 1)
    assert submission_states(rig.plan_dir) == {"done": 3}


# ---------------------------------------------------------------- item 12: a killed cancel, a killed retry


def test_a_cancel_run_again_after_it_was_killed_counts_what_it_had_cancelled(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`planner cancel` SIGKILLed right after its first CancelRunBatch, then run again: the batch it
    had cancelled is counted as cancelled, not as 'already finished'; the others, asked now, are stopping
    (a batch cancel is asynchronous, issue 26)."""
    rig = make_rig("omics-batch", world, tmp_path / "rig")
    submit(rig.plan_dir, **rig.options)
    world.clock.advance(0.5)  # past CREATING, which cannot be cancelled yet (issue 26)
    for service, url in rig.options["endpoints"].items():
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service.upper()}", url)
    kill = {"at": "aws", "service": "omics", "operation": "CancelRunBatch", "when": "after", "nth": 1}
    done = faultkit.run_cli_child(["cancel", rig.plan_dir], kill, KILL_TIMEOUT)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-3000:]
    world.clock.advance(0.5)  # the first batch's cancel has ended: CANCELLED
    code, out, err = _cli(rig, capsys, monkeypatch, "cancel", rig.plan_dir)
    assert code == 0, (out, err)
    assert "cancelled 1; 2 stopping" in out and "samples had already finished" in out, out
    assert "0 samples had already finished" in out, out


def test_a_retry_killed_while_writing_leaves_nothing_in_the_way(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`planner retry` SIGKILLed while it writes the new plan leaves its temporary folder; the next
    retry (or plan) into the same place removes it and succeeds."""
    rig = make_rig("omics-run", world, tmp_path / "rig")
    submit(rig.plan_dir, **rig.options)
    omics = rig.world.omics
    for item in omics.list_runs()["items"][:2]:
        omics.cancel_run(id=item["id"])
    world.clock.advance(600)
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", rig.options["endpoints"]["omics"])
    out_dir = tmp_path / "retry"
    killer = (
        "import os, signal, sys; import planner.core.shard as shard; "
        "shard.ShardWriter.close = lambda self: os.kill(os.getpid(), signal.SIGKILL); "
        "from planner.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", killer, "retry", rig.plan_dir, "--out", str(out_dir)],
        capture_output=True,
        timeout=KILL_TIMEOUT,
        env=dict(os.environ),
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-3000:]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".retry.tmp-")], "the kill left nothing behind"
    code, out, err = _cli(rig, capsys, monkeypatch, "retry", rig.plan_dir, "--out", str(out_dir))
    assert code == 0 and "planned 2 runs to retry" in out, (out, err)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".retry")] == []


def test_a_submit_stopped_while_its_call_was_under_way_leaves_the_intent_open(
    world: World, tmp_path: Any, hooks: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found merging issue 25's two halves: StartRunBatch is carried out but its answer is lost (500),
    and a `planner cancel` asks the submit to stop before botocore sends it again.  The stop held the
    resend back, and the engine journaled the call FAILED, as if refused: `cancel` then cancelled
    nothing of the batch that runs, exit 0.  The intent must stay open, for the readers to report."""
    from planner.engine.context import request_stop
    from planner.errors import Stopped

    rig = make_rig("omics-batch", world, tmp_path / "rig")
    lose = faultkit.SendFault("lose", times=1)

    def lose_then_stop(request: Any, **kwargs: Any) -> Any:
        answer = lose(request, **kwargs)
        if lose.faults == 1 and lose.sends.count == 1:
            request_stop(rig.plan_dir, "asked to stop: a test's cancel")
        return answer

    hooks([(f"before-send.{faultkit.event_name('omics')}.StartRunBatch", lose_then_stop)])
    with pytest.raises(Stopped):
        submit(rig.plan_dir, **rig.options)
    assert lose.carried_out, "the injected fault did not reach the server"
    os.remove(os.path.join(rig.plan_dir, ".stop-request"))
    states = submission_states(rig.plan_dir)
    assert states["intent"] >= 1 and "failed" not in states, states
    rig.settle()
    code, out, err = _cli(rig, capsys, monkeypatch, "cancel", rig.plan_dir)
    assert code == 1, (out, err)
    assert f"planner submit {rig.plan_dir}" in out + err, (out, err)
