"""Cohorts that grow: never pay twice for a sample (issue 27), walked through the CLI as a user does.

A lab plans and submits a sheet, adds rows, and plans and submits again.  ``--skip-done``
plans only what earlier plans have not run with the same settings; ``submit`` refuses a
plan whose samples another plan already ran, unless asked.  Everything runs against the
HealthOmics emulator and moto's S3 on loopback; the CLI is called in-process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import sheet_frame, write_sheet

import planner
from planner.cli import main
from planner.core.plandir import SETTINGS

ROLE = "arn:aws:iam::123456789012:role/omics"
BAM = pl.format("s3://in/{}.bam", pl.col("sample"))  # every sheet's bam column: sheet_frame(ids, bam=BAM)


def _defaults(
    tmp_path: Path, workflow: str = "1234567", name: str = "defaults.json", batch: str = "cohort", **run: Any
) -> str:
    document = {
        "run": {
            "workflowId": workflow,
            "roleArn": ROLE,
            "outputUri": "s3://results/cohort/",
            "parameters": {"reference": "s3://refs/hg38.fa"},
            **run,
        },
        "submission": {"batchName": batch},
        "sheet": {"id_column": "sample"},
    }
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


@pytest.fixture()
def cohort(tmp_path: Path, moto_server: str, make_emulator: Any, bucket: str, clock: Any, monkeypatch: Any) -> Any:
    """The CLI pointed at the emulator and moto's S3, and the steps a user takes."""

    class Cohort:
        emulator: Any = None
        defaults = _defaults(tmp_path)

        def start(self, **options: Any) -> Cohort:
            self.emulator = make_emulator(**options)
            monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", self.emulator.endpoint_url)
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
            return self

        def plan(self, sheet: str | Path, out: str, *extra: str, defaults: str | None = None) -> int:
            return main(
                [
                    "plan",
                    str(sheet),
                    "-b",
                    "omics-batch",
                    "-d",
                    defaults or self.defaults,
                    "-o",
                    str(tmp_path / out),
                    *extra,
                ]
            )

        def submit(self, plan: str, *extra: str) -> int:
            return main(["submit", str(tmp_path / plan), "--staging", f"s3://{bucket}/staging/", *extra])

        def finish(self, plan: str) -> None:
            for _ in range(12):
                clock.advance(1.0)
            assert main(["status", str(tmp_path / plan)]) == 0

        def starts(self) -> int:
            return self.emulator.run_count()

    return Cohort()


FOUR = ["S1", "S2", "S3", "S4"]
SIX = [*FOUR, "S5", "S6"]


def test_a_grown_sheet_planned_against_the_first_plan_runs_only_the_new_samples(
    tmp_path: Path, cohort: Any, capsys: Any
) -> None:
    cohort.start()
    assert cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1") == 0
    assert cohort.submit("week1") == 0
    cohort.finish("week1")
    assert cohort.starts() == 4
    capsys.readouterr()

    grown = write_sheet(tmp_path / "week2.csv", sheet_frame(SIX, bam=BAM))
    assert cohort.plan(grown, "week2", "--skip-done", str(tmp_path / "week1")) == 0
    out = capsys.readouterr().out
    assert "planned 2 runs of 6 rows" in out
    assert "2 new, 0 changed, 4 done (skipped), 0 failed before" in out
    assert pl.read_parquet(tmp_path / "week2" / "samples.parquet").get_column("id").to_list() == ["S5", "S6"]
    skipped = pl.read_csv(tmp_path / "week2" / "skipped.csv")
    assert skipped.get_column("id").to_list() == FOUR
    assert set(skipped.get_column("earlier_plan")) == {str(tmp_path / "week1")}

    assert cohort.submit("week2") == 0
    cohort.finish("week2")
    assert cohort.starts() == 6  # two new runs, not six


def test_a_sample_whose_settings_changed_is_planned_and_listed_never_skipped(
    tmp_path: Path, cohort: Any, capsys: Any
) -> None:
    cohort.start()
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    cohort.submit("week1")
    cohort.finish("week1")
    capsys.readouterr()

    resequenced = pl.when(pl.col("sample") == "S2").then(pl.lit("s3://in/S2.resequenced.bam"))
    edited = write_sheet(tmp_path / "week2.csv", sheet_frame(SIX, bam=resequenced.otherwise(BAM)))
    assert cohort.plan(edited, "week2", "--skip-done", str(tmp_path / "week1")) == 0
    out = capsys.readouterr().out
    assert "2 new, 1 changed, 3 done (skipped), 0 failed before" in out
    assert "changed settings since an earlier run, planned again: S2 " in out
    assert pl.read_csv(tmp_path / "week2" / "changed.csv").get_column("id").to_list() == ["S2"]
    planned = pl.read_parquet(tmp_path / "week2" / "samples.parquet").get_column("id").to_list()
    assert planned == ["S2", "S5", "S6"]

    # A default that changes every run's settings changes every sample: nothing is skipped.
    other = _defaults(tmp_path, name="threads.json", parameters={"reference": "s3://refs/hg38.fa", "threads": 16})
    assert cohort.plan(edited, "week2b", "--skip-done", str(tmp_path / "week1"), defaults=other) == 0
    assert "2 new, 4 changed, 0 done (skipped), 0 failed before" in capsys.readouterr().out


def test_samples_that_failed_before_are_planned_again_and_running_ones_are_skipped(
    tmp_path: Path, cohort: Any, capsys: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(planner.core.earlier, "LEDGER_CHUNK", 3)  # a ledger of four samples is read in two chunks
    cohort.start(fail_when=lambda s: ("WORKFLOW_RUN_FAILED", "bad input") if s["runSettingId"] == "S3" else None)
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    cohort.submit("week1")
    cohort.finish("week1")
    cohort.plan(write_sheet(tmp_path / "late.csv", sheet_frame(["S7"], bam=BAM)), "late")
    cohort.submit("late")  # submitted, still pending: not finished
    capsys.readouterr()

    assert (
        cohort.plan(
            write_sheet(tmp_path / "all.csv", sheet_frame([*SIX, "S7"], bam=BAM)),
            "all",
            "--skip-done",
            str(tmp_path / "w*"),
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "against 1 earlier plan: 3 new, 0 changed, 3 done (skipped), 1 failed before" in out
    both = ["--skip-done", str(tmp_path / "week1"), "--skip-done", str(tmp_path / "late")]
    assert cohort.plan(write_sheet(tmp_path / "all.csv", sheet_frame([*SIX, "S7"], bam=BAM)), "all2", *both) == 0
    assert "against 2 earlier plans: 2 new, 0 changed, 4 done (skipped), 1 failed before" in capsys.readouterr().out
    planned = pl.read_parquet(tmp_path / "all2" / "samples.parquet").get_column("id").to_list()
    assert planned == ["S3", "S5", "S6"]
    skipped = pl.read_csv(tmp_path / "all2" / "skipped.csv")
    week1, late = str(tmp_path / "week1"), str(tmp_path / "late")
    assert dict(skipped.select("id", "earlier_plan").iter_rows()) == {"S1": week1, "S2": week1, "S4": week1, "S7": late}


def test_the_python_api_takes_skip_done_and_a_fully_done_sheet_plans_nothing(
    tmp_path: Path, cohort: Any, capsys: Any
) -> None:
    cohort.start()
    sheet = write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM))
    cohort.plan(sheet, "week1")
    cohort.submit("week1")
    cohort.finish("week1")
    planned = planner.plan(
        write_sheet(tmp_path / "week2.csv", sheet_frame(SIX, bam=BAM)),
        backend="omics-batch",
        defaults=cohort.defaults,
        skip_done=[tmp_path / "week1"],
    )
    manifest = planned.write(tmp_path / "api")
    assert manifest.runs == 2 and planned.earlier is not None and planned.earlier.counts["done"] == 4
    capsys.readouterr()
    assert cohort.plan(sheet, "again", "--skip-done", str(tmp_path / "week1")) == 2
    err = capsys.readouterr().err
    assert "nothing to plan: all 4 valid samples already ran with these settings" in err
    assert not (tmp_path / "again").exists()


def test_skip_done_refuses_what_cannot_be_compared(tmp_path: Path, cohort: Any, capsys: Any) -> None:
    cohort.start()
    sheet = write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM))
    cohort.plan(sheet, "week1")
    (tmp_path / "a-file").write_text("x")
    run_defaults = tmp_path / "run.json"
    run_defaults.write_text(json.dumps({"run": {"workflowId": "1234567", "roleArn": ROLE, "outputUri": "s3://r/"}}))
    assert main(["plan", str(sheet), "-b", "omics-run", "-d", str(run_defaults), "-o", str(tmp_path / "run")]) == 0
    cohort.plan(sheet, "other-workflow", defaults=_defaults(tmp_path, workflow="7777777", name="other.json"))
    capsys.readouterr()
    cases = {
        str(tmp_path / "missing"): "no such plan directory",
        str(tmp_path / "a-file"): "is a file, not a plan directory",
        str(tmp_path / "nothing-*"): "no plan directory matches",
        str(tmp_path / "run"): "a plan for omics-run, not omics-batch: its settings are not comparable",
        str(tmp_path / "other-workflow"): "a plan of workflow '7777777', not '1234567'",
    }
    for earlier, message in cases.items():
        assert cohort.plan(sheet, "new", "--skip-done", earlier) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"planner: error: --skip-done {earlier}") and message in err[0]
        assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- the guard at submit


def test_submit_refuses_samples_another_plan_already_ran_before_any_call(
    tmp_path: Path, cohort: Any, capsys: Any
) -> None:
    cohort.start()
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    assert cohort.submit("week1") == 0
    cohort.finish("week1")
    cohort.plan(
        write_sheet(tmp_path / "week2.csv", sheet_frame(SIX, bam=BAM)), "week2"
    )  # the grown sheet, planned without --skip-done
    calls = len(cohort.emulator.requests())
    capsys.readouterr()

    assert cohort.submit("week2") == 2
    err = capsys.readouterr().err
    week1, week2 = tmp_path / "week1", tmp_path / "week2"
    assert "4 of its 6 samples already ran with identical settings in plan" in err and f"({week1})" in err
    assert f"--skip-done {week1}" in err and f"submit {week2} with --allow-rerun" in err
    assert len(cohort.emulator.requests()) == calls  # refused before the first call
    assert (
        not (week2 / "ledger.sqlite").exists()
        or not sqlite3.connect(week2 / "ledger.sqlite").execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
    )

    assert cohort.submit("week2", "--allow-rerun") == 0
    assert "run again that plan" in capsys.readouterr().err
    cohort.finish("week2")
    assert cohort.starts() == 10  # on purpose: six more


def _fails_once(sample: str) -> Any:
    """A fail_when that fails ``sample``'s first run only (its retry succeeds)."""
    seen: set[str] = set()

    def decide(settings: dict[str, Any]) -> tuple[str, str] | None:
        if settings["runSettingId"] != sample or sample in seen:
            return None
        seen.add(sample)
        return ("WORKFLOW_RUN_FAILED", "bad input")

    return decide


def test_resubmitting_a_plan_and_submitting_its_retry_are_not_duplicates(tmp_path: Path, cohort: Any) -> None:
    cohort.start(fail_when=_fails_once("S2"))
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    assert cohort.submit("week1") == 0
    assert cohort.submit("week1") == 0  # a resumed submit is never its own duplicate
    cohort.finish("week1")
    assert main(["retry", str(tmp_path / "week1"), "--out", str(tmp_path / "retry1")]) == 0
    assert cohort.submit("retry1") == 0
    cohort.finish("retry1")
    assert cohort.starts() == 5
    # The failed sample ran again under the retry: a later plan of it is refused, naming the retry.
    cohort.plan(write_sheet(tmp_path / "s2.csv", sheet_frame(["S2"], bam=BAM)), "s2")
    assert cohort.submit("s2") == 2


def test_a_failed_run_does_not_block_its_rerun_in_another_plan(tmp_path: Path, cohort: Any) -> None:
    cohort.start(fail_when=lambda s: ("WORKFLOW_RUN_FAILED", "bad input") if s["runSettingId"] == "S4" else None)
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    cohort.submit("week1")
    cohort.finish("week1")  # status records S4 FAILED in the index
    cohort.plan(write_sheet(tmp_path / "fix.csv", sheet_frame(["S4", "S5"], bam=BAM)), "fix")
    assert cohort.submit("fix") == 0


def test_a_damaged_index_warns_and_never_blocks_a_submit(tmp_path: Path, cohort: Any, capsys: Any) -> None:
    cohort.start()
    home = Path(os.environ["PLANNER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "runs.sqlite").write_bytes(b"this is not a database, it was overwritten" * 100)
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    capsys.readouterr()
    assert cohort.submit("week1") == 0
    err = capsys.readouterr().err
    assert "warning: the run index" in err and "is damaged (moved to" in err and "going on without it" in err
    assert [p.name.startswith("runs.sqlite.damaged-") for p in home.iterdir()].count(True) == 1
    cohort.finish("week1")
    # The next submit starts a new index, and guards again.
    cohort.plan(write_sheet(tmp_path / "again.csv", sheet_frame(FOUR, bam=BAM)), "again")
    assert cohort.submit("again") == 0  # the damaged index had lost week1: it cannot know
    # (another batch name: the same runs in another plan, not the same plan again)
    cohort.plan(
        write_sheet(tmp_path / "third.csv", sheet_frame(FOUR, bam=BAM)),
        "third",
        defaults=_defaults(tmp_path, name="3.json", batch="3"),
    )
    assert cohort.submit("third") == 2  # but "again" is in the new one


def test_an_index_that_cannot_be_opened_warns_and_never_blocks(tmp_path: Path, cohort: Any, monkeypatch: Any) -> None:
    cohort.start()
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where PLANNER_HOME's directory should be")
    monkeypatch.setenv("PLANNER_HOME", str(blocked))
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    assert cohort.submit("week1") == 0


def test_concurrent_claims_of_the_same_samples_let_exactly_one_through(tmp_path: Path) -> None:
    """Two submits at once (threads with their own connections) cannot both pass the check."""
    from planner.commands.run_index import Guard
    from planner.errors import InputError

    sheet = pl.DataFrame({"sample": [f"S{i:05d}" for i in range(5000)]})
    defaults = json.loads(Path(_defaults(tmp_path)).read_text())
    plans = []
    for name, batch in (("a", "one"), ("b", "two"), ("c", "three"), ("d", "four")):
        document = dict(defaults, submission={"batchName": batch})  # four plans of the same runs
        planner.plan(sheet, backend="omics-batch", defaults=document).write(tmp_path / name)
        plans.append(planner.read_plan(tmp_path / name).plan_id)
    assert len(set(plans)) == 4
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def claim(name: str) -> None:
        from planner.core.plandir import PlanDirectory

        barrier.wait()
        try:
            Guard.claim(PlanDirectory(tmp_path / name), allow_rerun=False).close()
            outcomes.append("claimed")
        except InputError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(n,)) for n in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed", "refused", "refused", "refused"]


def test_every_plan_records_a_settings_hash_per_sample_that_follows_the_merged_run(tmp_path: Path) -> None:
    """omics-batch shards carry the row's own settings; the hash is of the merged run with its keys in
    one order: a value moved between the sheet and the defaults, or reordered columns, are the same
    settings; another value is not."""
    defaults = json.loads(Path(_defaults(tmp_path)).read_text())
    defaults["run"]["parameters"]["threads"] = "8"
    sheet = pl.DataFrame({"sample": ["A", "B"], "threads": ["8", "8"], "bam": ["s3://a.bam", "s3://b.bam"]})
    moved = json.loads(json.dumps(defaults))
    del moved["run"]["parameters"]["threads"]
    moved["run"]["parameters"] = {"threads": "8", **moved["run"]["parameters"]}
    variants = {
        "column": (sheet, defaults),
        "default": (sheet.drop("threads"), defaults),
        "reordered": (sheet.select("bam", "threads", "sample"), moved),
        "other": (sheet.with_columns(pl.lit("16").alias("threads")), defaults),
    }
    hashes = {}
    for name, (frame, document) in variants.items():
        planner.plan(frame, backend="omics-batch", defaults=document, id_column="sample").write(tmp_path / name)
        hashes[name] = pl.read_parquet(tmp_path / name / "samples.parquet").get_column(SETTINGS).to_list()
    shards = [(tmp_path / p / "shards" / "00000.json").read_text() for p in ("column", "default")]
    assert shards[0] != shards[1]  # what is sent differs; what runs does not
    assert hashes["column"] == hashes["default"] == hashes["reordered"]
    assert len(set(hashes["column"])) == 2  # the id is part of the run
    assert not set(hashes["other"]) & set(hashes["column"])


def test_the_settings_text_is_the_reference_merge_with_sorted_keys(tmp_path: Path) -> None:
    """The columnar canonical encoder against the plain-Python statement of the merge rule."""
    from planner.backends import get_backend
    from planner.core.defaults import load_defaults
    from planner.core.merge import reference_row, reference_run, settings_json
    from planner.core.routing import route_columns

    spec = get_backend("omics-run")
    document = {"run": {"workflowId": "1", "roleArn": ROLE, "outputUri": "s3://o/", "parameters": {"z": 1, "a": "x"}}}
    loaded = load_defaults(document, [], spec)
    rows = {"sample": ["S1", "S2"], "a": ["y", None], "m": ["1", "2"], "name": [None, "run-2"], "tag.t": ["v", None]}
    frame = pl.DataFrame(rows)
    routes = route_columns(frame.columns, spec)
    text = frame.select(settings_json(routes, spec, loaded.run, "sample", frame.schema, set())).to_series()
    for i, encoded in enumerate(text.to_list()):
        values = {c: rows[c][i] for c in rows}
        expected = reference_run(loaded.run, reference_row(values, routes, spec, values["sample"]), spec)
        assert encoded == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS).decode()


def test_status_and_the_report_count_samples_skipped_as_done_apart(tmp_path: Path, cohort: Any, capsys: Any) -> None:
    pytest.importorskip("plotly")
    cohort.start()
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    cohort.submit("week1")
    cohort.finish("week1")
    cohort.plan(
        write_sheet(tmp_path / "week2.csv", sheet_frame(SIX, bam=BAM)), "week2", "--skip-done", str(tmp_path / "week1")
    )
    cohort.submit("week2")
    cohort.finish("week2")
    capsys.readouterr()

    assert main(["status", str(tmp_path / "week2")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 samples\n  COMPLETED        2\n")  # the plan's own samples only
    assert f"not in this plan: 4 samples skipped as done (already run in {tmp_path / 'week1'})" in out
    assert main(["status", str(tmp_path / "week2"), "--json", "--no-refresh"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 2 and summary["skipped_as_done"]["samples"] == 4
    assert main(["status", str(tmp_path / "week1"), "--json", "--no-refresh"]) == 0
    assert "skipped_as_done" not in json.loads(capsys.readouterr().out)

    report = tmp_path / "week2.html"
    assert main(["report", str(tmp_path / "week2"), "--out", str(report)]) == 0
    page = report.read_text()
    assert 'id="total-samples" data-count="2"' in page
    assert 'id="skipped-as-done" data-count="4"' in page and "2 new, 0 changed" in page


def test_a_submit_killed_mid_call_leaves_its_claim_and_its_resume_is_no_duplicate(
    tmp_path: Path, cohort: Any, bucket: str
) -> None:
    """SIGKILL right after StartRunBatch answered, before anything else was recorded: the index still
    holds the claim (the runs may be running), so another plan of the same samples is refused, and the
    killed plan's own resume goes through."""
    cohort.start()
    cohort.plan(write_sheet(tmp_path / "week1.csv", sheet_frame(FOUR, bam=BAM)), "week1")
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import planner.services.aws as aws
        made = aws.Clients._make
        def make(self, service):
            client = made(self, service)
            if service == "omics":
                client.meta.events.register(
                    "after-call.omics.StartRunBatch", lambda **_: os.kill(os.getpid(), signal.SIGKILL))
            return client
        aws.Clients._make = make
        from planner.cli import main
        sys.exit(main(["submit", {str(tmp_path / "week1")!r}, "--staging", "s3://{bucket}/staging/"]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert cohort.emulator.batch_count() == 1

    cohort.plan(
        write_sheet(tmp_path / "copy.csv", sheet_frame(FOUR, bam=BAM)),
        "copy",
        defaults=_defaults(tmp_path, name="c.json", batch="c"),
    )
    assert cohort.submit("copy") == 2
    assert cohort.submit("week1") == 0  # the resume: the service answers with the batch it made
    cohort.finish("week1")
    assert cohort.emulator.batch_count() == 1 and cohort.starts() == 4
    assert cohort.submit("copy") == 2
