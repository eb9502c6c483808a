"""Polly submission end to end: planner -> the Polly emulator over loopback HTTP (JSON:API with urllib3).

Most tests run as a user would outside the sandbox (``POLLY_BASE_URL`` and
``POLLY_API_KEY`` in the environment); some run with ``--sandbox`` semantics (the
sandbox's endpoint and its fixed key).  Time is a fake clock the tests move.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import every, ledger_of, make_plan, open_plan, sheet_frame

import planner
import planner.cli
from planner.backends import polly as polly_backend
from planner.commands import status as submission
from planner.commands.cancel import cancel
from planner.commands.retry import retry
from planner.commands.status import status
from planner.commands.submit import run_submission, submit
from planner.errors import SubmissionError
from planner.sandbox.polly_emulator import PollyEmulator
from planner.services import polly_api

KEY = "pk-live-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"  # distinctive, so a leak is found by grep
DEFAULTS = {
    "run": {
        "parameters": {"genome": "GRCh38", "aligner": "star_salmon", "strandedness": "reverse"},
        "config": {"infra": {"cpu": 2, "memory": 8, "storage": 50}},
    },
    "submission": {
        "pipeline_id": "pl-rnaseq-3-14",
        "run_name": "cohort-2026-11",
        "priority": "medium",
        "tags": {"project": "dex-response"},
        "domain_context": {"source": "planner"},
    },
}


@pytest.fixture(autouse=True)
def polly_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLLY_API_KEY", raising=False)
    monkeypatch.delenv("POLLY_BASE_URL", raising=False)


@pytest.fixture()
def make_polly(make_polly: Callable[..., PollyEmulator]) -> Callable[..., PollyEmulator]:
    """The shared factory, with this module's API key unless a test names another."""

    def make(**options: Any) -> PollyEmulator:
        options.setdefault("api_key", KEY)
        return make_polly(**options)

    return make


@pytest.fixture()
def polly(make_polly: Callable[..., PollyEmulator], monkeypatch: pytest.MonkeyPatch) -> PollyEmulator:
    """An emulator that POLLY_BASE_URL and POLLY_API_KEY point at."""
    emulator = make_polly()
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    return emulator


# sheet_frame(n, **SHEET): a read per sample; some rows override a default parameter or the infra
SHEET: dict[str, Any] = {
    "fastq_1": "s3://seq/{sample}_R1.fq.gz",
    "strandedness": every(5, "forward"),  # a default parameter, overridden
    "cpu": every(7, 16).cast(pl.Int64),  # infra, overridden
    "memory": every(11, 64).cast(pl.Int64),
}


def _expected(samples: int) -> dict[str, dict[str, Any]]:
    """Each sample's merged job, computed here with plain dicts (the row wins, key by key)."""
    expected = {}
    for i in range(samples):
        name = f"S{i:04d}"
        # The id column is a parameter too (routing), as a per-sample pipeline expects.
        parameters = dict(DEFAULTS["run"]["parameters"], sample=name, fastq_1=f"s3://seq/{name}_R1.fq.gz")
        infra = dict(DEFAULTS["run"]["config"]["infra"])
        if i % 5 == 0:
            parameters["strandedness"] = "forward"
        if i % 7 == 0:
            infra["cpu"] = 16
        if i % 11 == 0:
            infra["memory"] = 64
        expected[name] = {"parameters": parameters, "config": {"infra": infra}}
    return expected


def _context(plan_dir: str, sleeps: list[float] | None = None, **options: Any) -> Any:
    ctx = open_plan(plan_dir, **options)
    if sleeps is not None:
        ctx.sleep = sleeps.append
    return ctx


def _submit(plan_dir: str, sleeps: list[float] | None = None, **options: Any) -> dict[str, Any]:
    """submit() with an injected sleep (retries wait on nothing), as the counts this file checks:
    run_created, run_id, run_name, jobs_submitted, jobs_found, jobs_already_submitted."""
    ctx = _context(plan_dir, sleeps, **options)
    try:
        report = run_submission(ctx)
        run = ctx.ledger.submission(polly_backend.RUN_KEY)
        jobs = report.tally("submit_job")
        return {
            "run_created": report.tally("create_run").created == 1,
            "run_id": run.remote_id if run is not None else None,
            "run_name": polly_backend.run_name(ctx.manifest),
            "jobs_submitted": jobs.created,
            "jobs_found": jobs.found,
            "jobs_already_submitted": jobs.already,
            "runs": report.runs,
        }
    finally:
        ctx.ledger.close()


def _posts(emulator: PollyEmulator, path: str) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["method"] == "POST" and r["path"] == path]


def _names(emulator: PollyEmulator) -> list[str]:
    return [job["name"] for job in emulator.jobs()]


def _ledger(plan_dir: str) -> list[Any]:
    ledger = ledger_of(plan_dir)
    try:
        return ledger.submissions()
    finally:
        ledger.close()


def test_250_samples_make_one_run_of_250_jobs_with_the_merged_settings(tmp_path, polly):
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), "polly", defaults=DEFAULTS)
    manifest = planner.read_plan(plan_dir).to_json()
    report = _submit(plan_dir)
    assert report == dict(
        report, run_created=True, jobs_submitted=250, jobs_already_submitted=0, runs=250, run_name="cohort-2026-11"
    )

    (run,) = polly.runs()
    assert run["id"] == report["run_id"]
    assert {k: run[k] for k in ("name", "pipeline_id", "priority", "tags", "domain_context", "num_jobs")} == {
        "name": "cohort-2026-11",
        "pipeline_id": "pl-rnaseq-3-14",
        "priority": "medium",
        "tags": {"project": "dex-response", "planner_plan_id": manifest["plan_id"]},
        "domain_context": {"source": "planner"},
        "num_jobs": 250,
    }
    jobs = polly.jobs()
    expected = _expected(250)
    assert sorted(job["name"] for job in jobs) == list(expected)  # each sample once (requests run concurrently)
    for job in jobs:
        assert job["run_id"] == run["id"]
        assert {"parameters": job["parameters"], "config": job["config"]} == expected[job["name"]]
    posts = _posts(polly, "/jobs")
    assert [len(p["body"]["data"]) for p in posts] == [50] * 5  # many jobs per request
    assert {tuple(sorted(j["attributes"])) for p in posts for j in p["body"]["data"]} == {
        ("config", "name", "parameters", "run_id")
    }
    assert len(_posts(polly, "/runs")) == 1


def test_the_calls_have_the_sdks_shapes(tmp_path, polly):
    """polly-python's polly/pipelines.py: create_run sends attributes name, priority, domain_context, tags,
    pipeline_id; listings filter only by run_id, org_id, status, priority, user_id, with page[size]=20."""
    plan_dir = make_plan(tmp_path, sheet_frame(30, **SHEET), "polly", defaults=DEFAULTS)
    _submit(plan_dir)
    status(plan_dir)
    (created,) = _posts(polly, "/runs")
    assert created["body"]["data"]["type"] == "runs"
    attributes = sorted(created["body"]["data"]["attributes"])
    assert attributes == ["domain_context", "name", "pipeline_id", "priority", "tags"]
    assert created["body"]["data"]["attributes"]["name"] == "cohort-2026-11"
    listings = [r for r in polly.requests() if r["method"] == "GET" and r["path"] in ("/runs", "/jobs")]
    assert {r["path"] for r in listings} == {"/runs", "/jobs"}
    sdk_filters = {f"filter[{name}]" for name in ("run_id", "org_id", "status", "priority", "user_id")}
    for listing in listings:
        first_page = {k: v for k, v in listing["query"].items() if k != "page[after]"}  # the cursor is Polly's
        assert set(first_page) - {"page[size]"} <= sdk_filters and first_page["page[size]"] == "20", listing


def test_a_lost_ledger_finds_its_run_among_same_named_runs_on_later_pages(tmp_path, polly):
    plan_dir = make_plan(tmp_path, sheet_frame(12, **SHEET), "polly", defaults=DEFAULTS)
    api = polly_api.PollyAPI(polly.endpoint_url, KEY, key_source="test", sleep=lambda _: None, max_wait=0)
    for n in range(45):  # other plans' runs of the same name (Polly does not make names unique), made earlier
        api.create_run(
            {
                "data": {
                    "type": "runs",
                    "attributes": {
                        "pipeline_id": "pl-rnaseq-3-14",
                        "name": "cohort-2026-11",
                        "priority": "medium",
                        "tags": {polly_backend.PLAN_TAG: f"another-plan-{n}"},
                        "domain_context": {},
                    },
                }
            },
            lambda: None,
        )
    api.close()
    first = _submit(plan_dir)
    assert first["run_created"] is True  # none of the others is this plan's
    os.unlink(os.path.join(plan_dir, "ledger.sqlite"))
    again = _submit(plan_dir)
    assert again["run_id"] == first["run_id"] and again["run_created"] is False and again["jobs_found"] == 12
    assert len(polly.runs()) == 46 and len(_posts(polly, "/runs")) == 46


def test_sandbox_submit_uses_the_sandbox_endpoint_and_key(tmp_path, make_polly, moto_server, monkeypatch):
    emulator = make_polly(api_key="sandbox")
    monkeypatch.setenv("POLLY_API_KEY", KEY)  # never sent to the sandbox
    monkeypatch.setenv("POLLY_BASE_URL", "https://polly.invalid")  # nor is the real service used
    plan_dir = make_plan(tmp_path, sheet_frame(8, **SHEET), "polly", defaults=DEFAULTS)
    report = submit(plan_dir, sandbox=True, endpoints={"s3": moto_server, "polly": emulator.endpoint_url})
    assert report.tally("submit_job").created == 8 and len(emulator.jobs()) == 8


def test_a_second_submit_sends_nothing_new(tmp_path, polly):
    plan_dir = make_plan(tmp_path, sheet_frame(120, **SHEET), "polly", defaults=DEFAULTS)
    _submit(plan_dir)
    before = len(polly.requests())
    again = _submit(plan_dir)
    assert again == dict(again, run_created=False, jobs_submitted=0, jobs_already_submitted=120)
    assert [r["method"] for r in polly.requests()[before:]] == []  # a clean ledger is trusted: not even a listing
    assert len(polly.runs()) == 1 and len(polly.jobs()) == 120


def test_a_lost_ledger_finds_the_run_and_its_jobs_instead_of_duplicating(tmp_path, polly):
    plan_dir = make_plan(tmp_path, sheet_frame(120, **SHEET), "polly", defaults=DEFAULTS)
    first = _submit(plan_dir)
    os.unlink(os.path.join(plan_dir, "ledger.sqlite"))
    again = _submit(plan_dir)
    assert again["run_id"] == first["run_id"] and again["run_created"] is False
    assert again["jobs_submitted"] == 0 and again["jobs_found"] == 120  # found in the run, recorded, not sent
    assert len(polly.runs()) == 1 and len(_posts(polly, "/runs")) == 1 and len(_posts(polly, "/jobs")) == 3


def test_a_wrong_key_fails_clearly_and_submits_nothing(tmp_path, polly, monkeypatch, capsys):
    plan_dir = make_plan(tmp_path, sheet_frame(30, **SHEET), "polly", defaults=DEFAULTS)
    wrong = "pk-wrong-0123456789abcdef"
    monkeypatch.setenv("POLLY_API_KEY", wrong)
    with pytest.raises(
        SubmissionError,
        match=r"Polly rejected the API key from POLLY_API_KEY \(HTTP 401: Unauthorized: invalid API key\): "
        r"set POLLY_API_KEY$",
    ) as caught:
        submit(plan_dir)
    assert wrong not in str(caught.value)
    assert polly.runs() == [] and polly.jobs() == []
    assert [r["method"] for r in polly.requests()] == ["GET"]  # the lookup was refused; nothing was POSTed
    # From the command line: exit status 1 and one line on stderr.
    assert planner.cli.main(["submit", plan_dir]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Polly rejected the API key" in err and wrong not in err
    assert polly.runs() == []


def test_the_sandbox_key_can_be_refused_too(tmp_path, make_polly, moto_server):
    emulator = make_polly(api_key="not-the-sandbox-key")
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), "polly", defaults=DEFAULTS)
    with pytest.raises(SubmissionError, match=r"Polly rejected the API key \(the sandbox key\)"):
        submit(plan_dir, sandbox=True, endpoints={"s3": moto_server, "polly": emulator.endpoint_url})
    assert emulator.runs() == []


def test_no_key_or_no_address_fails_before_any_call(tmp_path, polly, monkeypatch):
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), "polly", defaults=DEFAULTS)
    monkeypatch.delenv("POLLY_API_KEY")
    with pytest.raises(SubmissionError, match="no Polly API key: set POLLY_API_KEY"):
        submit(plan_dir)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    monkeypatch.delenv("POLLY_BASE_URL")
    with pytest.raises(SubmissionError, match="no Polly API address: set POLLY_BASE_URL"):
        submit(plan_dir)
    assert polly.requests() == []


def test_base_url_from_the_plan(tmp_path, polly, monkeypatch):
    monkeypatch.delenv("POLLY_BASE_URL")
    plan_dir = make_plan(
        tmp_path,
        sheet_frame(5, **SHEET),
        "polly",
        defaults={**DEFAULTS, "submission": {**DEFAULTS["submission"], "base_url": polly.endpoint_url}},
    )
    assert _submit(plan_dir)["jobs_submitted"] == 5


def test_the_key_is_never_sent_over_plain_http_to_another_host(tmp_path, monkeypatch):
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    monkeypatch.setenv("POLLY_BASE_URL", "http://polly.example.com/api")
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), "polly", defaults=DEFAULTS)
    with pytest.raises(
        SubmissionError, match=r"refusing to send the Polly API key over plain HTTP to polly\.example\.com"
    ):
        submit(plan_dir)


def test_429_and_5xx_are_retried_without_duplicates(tmp_path, make_polly, monkeypatch):
    emulator = make_polly(fail_next=[429, 503], retry_after=7)  # the run lookup meets both
    emulator.inject([500, 429, 502, 504], method="POST", path="/jobs")
    emulator.inject([503], method="POST", path="/runs")
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), "polly", defaults=DEFAULTS)
    sleeps: list[float] = []
    report = _submit(plan_dir, sleeps, concurrency=1)
    assert report["jobs_submitted"] == 250
    assert len(emulator.runs()) == 1
    assert Counter(_names(emulator)) == Counter(dict.fromkeys(_expected(250), 1))
    statuses = [r["status"] for r in emulator.requests()]
    assert statuses.count(429) == 2 and statuses.count(409) == 0
    assert sorted(s for s in statuses if s >= 500) == [500, 502, 503, 503, 504]
    # Retry-After is honoured for 429; 5xx back off 1 s, 2 s, ... per call.
    assert sleeps.count(7.0) == 2
    assert len(_posts(emulator, "/jobs")) == 5 + 4 and len(_posts(emulator, "/runs")) == 2


def test_answers_lost_after_the_work_was_done_are_reconciled_not_repeated(tmp_path, make_polly, monkeypatch):
    emulator = make_polly()
    emulator.inject([502], after=True, method="POST", path="/runs")  # the run is made, the answer lost
    emulator.inject([503], after=True, method="POST", path="/jobs")  # the first 50 jobs are made, the answer lost
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), "polly", defaults=DEFAULTS)
    report = _submit(plan_dir, [], concurrency=1)
    assert report["jobs_submitted"] == 250
    assert (
        len(emulator.runs()) == 1 and len(_posts(emulator, "/runs")) == 1
    )  # found by name and plan tag, not re-created
    assert Counter(_names(emulator)) == Counter(dict.fromkeys(_expected(250), 1))
    assert [r["status"] for r in emulator.requests()].count(409) == 1  # the repeat was refused, then reconciled
    assert {s.state for s in _ledger(plan_dir)} == {"done"}


def _killing_script(plan_dir: str, *, after_posts_to: str, count: int) -> str:
    return textwrap.dedent(
        f"""
        import os, signal
        from planner.services import polly_api as polly
        from planner.engine.context import Options, open_context
        from planner.commands.submit import run_submission

        original = polly.PollyAPI.request
        seen = []

        def request(self, method, url, **kwargs):
            answer = original(self, method, url, **kwargs)
            if method == "POST" and url.endswith({after_posts_to!r}):
                seen.append(url)
                if len(seen) == {count}:
                    os.kill(os.getpid(), signal.SIGKILL)  # after Polly did it, before the ledger knows
            return answer

        polly.PollyAPI.request = request
        ctx = open_context({plan_dir!r}, options=Options(concurrency=1))
        run_submission(ctx)
        """
    )


def test_a_submit_killed_after_the_second_jobs_request_resumes_with_each_sample_once(tmp_path, polly):
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), "polly", defaults=DEFAULTS)
    done = subprocess.run(
        [sys.executable, "-c", _killing_script(plan_dir, after_posts_to="/jobs", count=2)],
        env=dict(os.environ),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert len(polly.jobs()) == 100
    states = Counter((s.kind, s.state) for s in _ledger(plan_dir))
    assert states == Counter({("create_run", "done"): 1, ("submit_job", "done"): 1, ("submit_job", "intent"): 1})

    report = _submit(plan_dir)
    assert report == dict(report, run_created=False, jobs_submitted=150)
    # One request was journaled as done; the one the kill cut short is found in the run, not sent again.
    assert (report["jobs_already_submitted"], report["jobs_found"]) == (50, 50)
    assert len(polly.runs()) == 1
    assert Counter(_names(polly)) == Counter(dict.fromkeys(_expected(250), 1))
    assert [r["status"] for r in polly.requests()].count(409) == 0  # only the missing names were sent
    assert {s.state for s in _ledger(plan_dir)} == {"done"}  # the dangling intent was reconciled
    table = status(plan_dir)
    assert table.get_column("remote_id").null_count() == 0 and table.get_column("remote_id").n_unique() == 250


def test_a_submit_killed_after_create_run_does_not_make_a_second_run(tmp_path, polly):
    plan_dir = make_plan(tmp_path, sheet_frame(60, **SHEET), "polly", defaults=DEFAULTS)
    done = subprocess.run(
        [sys.executable, "-c", _killing_script(plan_dir, after_posts_to="/runs", count=1)],
        env=dict(os.environ),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    (intent,) = _ledger(plan_dir)
    assert (intent.kind, intent.state, intent.remote_id) == ("create_run", "intent", None)
    report = _submit(plan_dir)
    assert report["run_created"] is False and report["run_id"] == polly.runs()[0]["id"]
    assert len(polly.runs()) == 1 and len(polly.jobs()) == 60


def test_status_maps_samples_to_job_ids_and_states(tmp_path, make_polly, clock, monkeypatch):
    emulator = make_polly(failure_rate=0.3, seed=11)
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), "polly", defaults=DEFAULTS)
    _submit(plan_dir)
    jobs = {job["name"]: job for job in emulator.jobs()}

    def table() -> dict[str, tuple[Any, ...]]:
        frame = status(plan_dir)
        assert frame.height == 250
        return {
            row["id"]: (row["remote_id"], row["submission_status"], row["state"], row["reason"])
            for row in frame.iter_rows(named=True)
        }

    first = table()
    assert {sample: remote for sample, (remote, *_) in first.items()} == {name: job["id"] for name, job in jobs.items()}
    assert {state for _, _, state, _ in first.values()} == {"PENDING"}
    clock.advance()
    assert {state for _, _, state, _ in table().values()} == {"RUNNING"}
    clock.advance()
    final = table()
    by_emulator = {
        job["name"]: {"SUCCEEDED": "COMPLETED", "ERRORED": "FAILED"}[job["status"]] for job in emulator.jobs()
    }
    assert {sample: state for sample, (_, _, state, _) in final.items()} == by_emulator
    assert {"COMPLETED", "FAILED"} == set(by_emulator.values())
    failed = [row for row in final.values() if row[2] == "FAILED"]
    assert all(row[1] == "SUBMITTED" and row[3] == "errored at stage Processing (1/2)" for row in failed)


def test_retry_plans_only_the_errored_jobs_into_a_new_run(tmp_path, make_polly, clock, monkeypatch):
    emulator = make_polly(failure_rate=0.3, seed=5)
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    plan_dir = make_plan(tmp_path, sheet_frame(250, **SHEET), "polly", defaults=DEFAULTS)
    first = _submit(plan_dir)
    clock.advance(5)
    errored = sorted(job["name"] for job in emulator.jobs() if job["status"] == "ERRORED")  # sheet order
    assert 0 < len(errored) < 250

    new_plan = str(tmp_path / "retry")
    manifest = retry(plan_dir, new_plan).to_json()
    assert manifest["runs"] == len(errored)
    retried = [
        entry for shard in manifest["shards"] for entry in orjson.loads(Path(new_plan, shard["path"]).read_bytes())
    ]
    expected = _expected(250)
    assert [entry["name"] for entry in retried] == errored
    assert all({"parameters": e["parameters"], "config": e["config"]} == expected[e["name"]] for e in retried)

    second = _submit(new_plan)
    assert second["run_created"] is True and second["run_id"] != first["run_id"]
    assert second["run_name"] == f"cohort-2026-11-retry-{manifest['plan_id'][:12]}"
    assert sorted(job["name"] for job in emulator.jobs(second["run_id"])) == errored
    assert len(emulator.jobs(first["run_id"])) == 250  # the first run is left as it was


def test_the_api_key_appears_nowhere_in_the_plan_directory(tmp_path, polly, clock):
    plan_dir = make_plan(tmp_path, sheet_frame(120, **SHEET), "polly", defaults=DEFAULTS)
    # One request fails (the chunks of 50, 50 and 20 jobs go out at once: any of them): its error is journaled.
    polly.inject([400], method="POST", path="/jobs")
    with pytest.raises(SubmissionError, match=r"(50|20) of 120 jobs could not be submitted") as caught:
        _submit(plan_dir)
    messages = [str(caught.value)]
    _submit(plan_dir)  # the failed samples are sent again
    clock.advance(5)
    status(plan_dir)
    retry(plan_dir, str(tmp_path / "again"), states=("COMPLETED",))
    try:
        cancel(plan_dir)
    except SubmissionError as exc:
        messages.append(str(exc))
    checked = 0
    for directory in (plan_dir, str(tmp_path / "again")):
        for path in Path(directory).rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path
                checked += 1
    assert checked >= 6 and os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))
    assert all(KEY not in message for message in messages)
    assert len(polly.jobs()) == 120


def test_a_key_in_the_defaults_file_is_refused_without_echoing_it(tmp_path):
    defaults = {**DEFAULTS, "submission": {**DEFAULTS["submission"], "api_key": KEY}}
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(sheet_frame(3, **SHEET), backend="polly", defaults=defaults).write(str(tmp_path / "plan"))
    problems = caught.value.problems
    assert any("api_key" in p.column and "set POLLY_API_KEY" in p.message for p in problems)
    assert all(KEY not in p.describe() for p in problems)
    assert not (tmp_path / "plan").exists()


def test_cancel_says_polly_has_no_cancel(tmp_path, polly):
    plan_dir = make_plan(tmp_path, sheet_frame(5, **SHEET), "polly", defaults=DEFAULTS)
    _submit(plan_dir)
    before = len(polly.requests())
    with pytest.raises(SubmissionError, match="Polly's API has no cancel"):
        cancel(plan_dir)
    # It looks first (a plan whose jobs have all ended has nothing to cancel: exit 0), and sends nothing.
    assert {request["method"] for request in polly.requests()[before:]} <= {"GET"}


def test_dry_run_needs_no_key_and_sends_nothing(tmp_path, capsys):
    plan_dir = make_plan(tmp_path, sheet_frame(120, **SHEET), "polly", defaults=DEFAULTS)
    submit(plan_dir, dry_run=True)
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["operation"] for line in lines] == ["create_run"] + ["submit_job"] * 3
    assert lines[0]["problems"] == [] and lines[0]["request"]["data"]["attributes"]["name"] == "cohort-2026-11"
    assert [line["jobs"] for line in lines[1:]] == [50, 50, 20]
    assert not os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))


def test_jobs_requests_stay_within_the_byte_bound(tmp_path, polly, monkeypatch):
    monkeypatch.setattr(polly_backend, "MAX_REQUEST_BYTES", 2_000)
    plan_dir = make_plan(tmp_path, sheet_frame(40, **SHEET), "polly", defaults=DEFAULTS)
    _submit(plan_dir)
    posts = _posts(polly, "/jobs")
    assert len(posts) > 1 and all(len(orjson.dumps(p["body"])) <= 2_000 for p in posts)
    assert sum(len(p["body"]["data"]) for p in posts) == 40


def test_listings_follow_the_cursor_across_pages(tmp_path, polly, monkeypatch):
    monkeypatch.setattr(polly_api, "LIST_PAGE_SIZE", 7)
    plan_dir = make_plan(tmp_path, sheet_frame(30, **SHEET), "polly", defaults=DEFAULTS)
    _submit(plan_dir)
    table = status(plan_dir)
    assert table.get_column("remote_id").null_count() == 0
    listings = [r for r in polly.requests() if r["method"] == "GET" and r["path"] == "/jobs"]
    assert len(listings) == 5 and [r["query"].get("page[after]") is None for r in listings] == [True] + [False] * 4


def test_a_parameter_nested_as_deep_as_a_sheet_may_hold_is_submitted(tmp_path, polly):
    """A json cell 254 levels deep is accepted by the plan; the request that carries it wraps it
    in data/attributes/parameters, deeper than orjson writes: it must still reach Polly whole."""
    deep = "[" * 254 + "1" + "]" * 254
    sheet = pl.DataFrame({"sample": ["S0000", "S0001"], "deep": [deep, None]})
    out = str(tmp_path / "plan")
    planner.plan(sheet, backend="polly", defaults={**DEFAULTS, "sheet": {"types": {"deep": "json"}}}).write(out)
    report = _submit(out)
    assert report["jobs_submitted"] == 2
    jobs = {job["name"]: job for job in polly.jobs()}
    value = jobs["S0000"]["parameters"]["deep"]
    depth = 0
    while isinstance(value, list):
        (value,) = value
        depth += 1
    assert (depth, value) == (254, 1)
    assert "deep" not in jobs["S0001"]["parameters"]


def test_slow_answers_after_the_work_was_done_make_no_duplicates(tmp_path, make_polly, monkeypatch):
    """A Polly that carries a POST out but answers after the client gave up waiting: the run is found by
    name and tag, the jobs by name (the repeat is refused 409 and settled), each exactly once."""
    monkeypatch.setattr(polly_api, "READ_TIMEOUT", 0.3)
    emulator = make_polly()
    emulator.inject_slow(30, method="POST", path="/runs")  # released when the emulator stops
    emulator.inject_slow(30, method="POST", path="/jobs")
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    plan_dir = make_plan(tmp_path, sheet_frame(120, **SHEET), "polly", defaults=DEFAULTS)
    report = _submit(plan_dir, [], concurrency=1)
    assert report["jobs_submitted"] + report["jobs_found"] == 120
    assert len(emulator.runs()) == 1 and len(_posts(emulator, "/runs")) == 1
    assert Counter(_names(emulator)) == Counter(dict.fromkeys(_expected(120), 1))
    assert {s.state for s in _ledger(plan_dir)} == {"done"}
    again = _submit(plan_dir)  # a resume sends nothing
    assert again == dict(again, run_created=False, jobs_submitted=0, jobs_already_submitted=120)


def test_status_rides_out_5xx_and_slow_answers(tmp_path, make_polly, clock, monkeypatch):
    monkeypatch.setattr(polly_api, "READ_TIMEOUT", 0.3)
    emulator = make_polly(failure_rate=0.3, seed=2)
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    plan_dir = make_plan(tmp_path, sheet_frame(60, **SHEET), "polly", defaults=DEFAULTS)
    _submit(plan_dir)
    clock.advance(5)
    emulator.inject([500, 503], method="GET")
    emulator.inject_slow(30, method="GET", path="/jobs")
    emulator.inject([502], method="GET", path="/jobs")
    sleeps: list[float] = []
    ctx = _context(plan_dir, sleeps)
    try:
        table = submission._status(ctx, refresh=True)
    finally:
        ctx.ledger.close()
    assert sleeps == [1.0, 2.0, 1.0, 2.0]  # each listing backed off and carried on
    by_emulator = {
        job["name"]: {"SUCCEEDED": "COMPLETED", "ERRORED": "FAILED"}[job["status"]] for job in emulator.jobs()
    }
    assert dict(zip(table.get_column("id"), table.get_column("state"), strict=True)) == by_emulator
    assert len(emulator.runs()) == 1 and len(emulator.jobs()) == 60


def test_jobs_refused_inside_a_2xx_answer_are_not_lost(tmp_path, polly):
    """polly-python's submit_job reads data[0] of a 2xx answer and fails when it holds "error" or "errors": a job
    can be refused inside a successful answer.  The others of the request are recorded; the refused one is
    reported with Polly's reason and sent again by the next submit, each job made once."""
    polly.inject_job_errors(["S0003"], detail="parameter fastq_1 is not readable")
    plan_dir = make_plan(tmp_path, sheet_frame(10, **SHEET), "polly", defaults=DEFAULTS)
    with pytest.raises(SubmissionError, match=r"S0003.*parameter fastq_1 is not readable"):
        _submit(plan_dir, [])
    assert "S0003" not in _names(polly) and len(_names(polly)) == 9
    _submit(plan_dir, [])
    resent = _posts(polly, "/jobs")[-1]["body"]["data"]
    assert [job["attributes"]["name"] for job in resent] == ["S0003"]  # only the refused one goes again
    assert Counter(_names(polly)) == Counter(dict.fromkeys(_expected(10), 1))
    assert len(polly.runs()) == 1


def test_a_submit_that_gave_up_on_slow_answers_is_resumed_without_duplicates(tmp_path, make_polly, monkeypatch):
    """Polly made the run and the first jobs but answered too late, and this submit gave up waiting (max_wait 0):
    the next submit finds the run by name and plan tag, and the jobs by name, and makes only what is missing."""
    import dataclasses

    monkeypatch.setattr(polly_api, "READ_TIMEOUT", 0.3)
    emulator = make_polly()
    emulator.inject_slow(30, method="POST", path="/runs")
    monkeypatch.setenv("POLLY_BASE_URL", emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", KEY)
    plan_dir = make_plan(tmp_path, sheet_frame(120, **SHEET), "polly", defaults=DEFAULTS)
    ctx = _context(plan_dir, [], concurrency=1)
    ctx.options = dataclasses.replace(ctx.options, max_wait=0.0)
    try:
        with pytest.raises(SubmissionError, match="cannot reach Polly"):
            run_submission(ctx)
    finally:
        ctx.ledger.close()
    assert len(emulator.runs()) == 1 and emulator.jobs() == []  # made, though the answer never came

    emulator.inject_slow(30, method="POST", path="/jobs")  # the first jobs request is made, its answer late
    report = _submit(plan_dir, [], concurrency=1)
    assert report["run_created"] is False and report["run_id"] == emulator.runs()[0]["id"]
    assert len(emulator.runs()) == 1 and len(_posts(emulator, "/runs")) == 1
    assert Counter(_names(emulator)) == Counter(dict.fromkeys(_expected(120), 1))
    assert {s.state for s in _ledger(plan_dir)} == {"done"}
