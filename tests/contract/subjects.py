"""What the contract suite submits: one small plan per backend, and a count of every call it makes.

A ``Subject`` is a plan directory with the options that reach its service, and a
way to see that service from outside: every call the planner made to it (botocore
calls counted on the planner's own clients as they are sent; Polly's requests as
its emulator received them; the stub's as its dict service recorded them), the ids
it holds, and a clock to move.  The five real backends reuse the fault suite's
rigs (``tests/faults/rigs.py``: HealthOmics and Polly emulators, moto's S3, Batch and
Glue on loopback); the sixth subject is the in-memory stub (``tests/stub_backend.py``).

``make_subject(name, ..., failing=...)`` makes some samples fail, each backend the
way its service lets a test do it:

* HealthOmics (both): the emulator's ``fail_when`` fails those samples' runs;
* AWS Batch: moto fails a job submitted while ``MOTO_SIMPLE_BATCH_FAIL_AFTER`` is set,
  so the variable is set around the SubmitJob of the array holding those samples
  (one SubmitJob at a time: the variable is process-wide);
* Glue: moto's job runs only ever succeed (its ``FakeJobRun`` goes STARTING, RUNNING,
  SUCCEEDED) and it has no BatchStopJobRun, so those samples fail to submit instead:
  their StartJobRun is answered ``ResourceNumberLimitExceededException`` (a quota
  that waiting does not free) during the first submit only;
* Polly: the emulator fails a deterministic subset (``failure_rate`` and ``seed``),
  not samples of the test's choosing;
* the stub: ``fail_when`` fails those samples' runs.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl
import pytest
import stub_backend
from faults import faultkit
from faults.rigs import Rig, World, check_invariants, make_rig

import planner
from planner.backends import glue as glue_backend

REAL = ("omics-batch", "omics-run", "batch", "glue", "polly")
EVERY = (*REAL, stub_backend.NAME)

# The calls that create something, by backend: what a dry run shows one line for.
CREATING = {
    "omics-batch": {"omics.StartRunBatch"},
    "omics-run": {"omics.StartRun"},
    "batch": {"batch.SubmitJob"},
    "glue": {"glue.StartJobRun"},
    "polly": {"polly POST /runs", "polly POST /jobs"},
    stub_backend.NAME: {"stub.StartRun"},
}
FAIL_AFTER = "MOTO_SIMPLE_BATCH_FAIL_AFTER"
POLLY_FAILURES = {"failure_rate": 0.05, "seed": 3}


class Recorder:
    """Every botocore call the planner's clients send (``service.Operation``), counted as sent,
    and the parameters of each API call (``provide-client-params``: once per call, whatever its retries)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.params: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".")[:3]
        with self._lock:
            self.calls.append(f"{service}.{operation}")

    def parameters(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        _, service, operation = event_name.split(".")[:3]
        with self._lock:
            self.params.append((f"{service}.{operation}", json.loads(json.dumps(params, default=str))))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        faultkit.patch_clients([("before-send", self), ("provide-client-params", self.parameters)], monkeypatch.setattr)


@dataclass
class Subject:
    """A plan of one backend and what its service saw."""

    backend: str
    plan_dir: str
    options: dict[str, Any]  # what submit takes
    samples: list[str]
    recorder: Recorder
    rig: Rig | None = None
    stub: stub_backend.StubService | None = None
    expected_failures: frozenset[str] | None = None  # None: the service picks them (Polly)
    on_submit: list[Callable[[], None]] = field(default_factory=list)  # undone after the first submit

    @property
    def access(self) -> dict[str, Any]:
        """What status, retry and cancel take."""
        return {k: v for k, v in self.options.items() if k not in ("staging", "concurrency", "rate", "max_wait")}

    @property
    def manifest(self) -> planner.Manifest:
        return planner.read_plan(self.plan_dir)

    def for_plan(self, plan_dir: str, samples: list[str]) -> Subject:
        """The same service and options, for another plan (a retry)."""
        rig = replace(self.rig, plan_dir=plan_dir, samples=samples) if self.rig is not None else None
        return replace(self, plan_dir=plan_dir, samples=samples, rig=rig, on_submit=[])

    # What the service saw.

    def mark(self) -> tuple[int, int]:
        return len(self.recorder.calls), len(self._service_side())

    def calls_since(self, mark: tuple[int, int] = (0, 0)) -> list[str]:
        """Every call made to the services since ``mark``."""
        return self.recorder.calls[mark[0] :] + self._service_side()[mark[1] :]

    def creating_since(self, mark: tuple[int, int] = (0, 0)) -> list[str]:
        return [c for c in self.calls_since(mark) if c in CREATING[self.backend]]

    def sent(self) -> list[dict[str, Any]]:
        """The request of every creating call the service received."""
        if self.stub is not None:
            return [run.request for run in self.stub.runs.values()]
        if self.backend == "polly":
            assert self.rig is not None
            requests = self.rig.world.polly_emulator.requests()
            return [r["body"] for r in requests if f"polly {r['method']} {r['path']}" in CREATING["polly"]]
        return [params for call, params in self.recorder.params if call in CREATING[self.backend]]

    def _service_side(self) -> list[str]:
        if self.stub is not None:
            return [f"stub.{call}" for call in self.stub.calls]
        if self.backend == "polly":
            assert self.rig is not None
            return [f"polly {r['method']} {r['path']}" for r in self.rig.world.polly_emulator.requests()]
        return []

    def server_ids(self) -> set[str]:
        """Every id the service holds (runs, batches, jobs, job runs)."""
        if self.stub is not None:
            return set(self.stub.runs)
        assert self.rig is not None
        return self.rig.server_ids()

    def settle(self) -> None:
        """Let every run end: the emulators' clocks move; moto ends Batch jobs and Glue runs at once."""
        if self.stub is not None:
            self.stub.advance(2)
        elif self.rig is not None:
            for _ in range(12):
                self.rig.world.clock.advance(1.0)

    def wait(self, seconds: float) -> None:
        """Let a moment pass on the emulators' clocks (a HealthOmics batch is CREATING at first: not cancellable)."""
        if self.stub is None and self.rig is not None:
            self.rig.world.clock.advance(seconds)

    def submit(self, **options: Any) -> planner.SubmitReport:
        """``planner.submit`` with the subject's options; the first one undoes the injected failures after it."""
        try:
            return planner.submit(self.plan_dir, **{**self.options, **options})
        finally:
            if not options.get("dry_run"):
                for undo in self.on_submit:
                    undo()
                self.on_submit.clear()

    def check_invariants(self) -> None:
        """Each sample submitted exactly once, as the service counts; the ledger and the bucket agree."""
        if self.rig is not None:
            check_invariants(self.rig)
        else:
            assert self.stub is not None
            assert sorted(self.stub.states()) == sorted(self.samples), "not exactly one run per sample"


def remote_ids(table: pl.DataFrame, backend: str) -> set[str]:
    """The service ids of a status table (for Batch, a child ``<array job id>:<index>`` counts as its array job)."""
    ids = {str(r) for r in table.get_column("remote_id").drop_nulls().to_list()}
    return {r.rsplit(":", 1)[0] for r in ids} if backend == "batch" else ids


def _sample_of(settings: dict[str, Any]) -> str:
    """A HealthOmics run's sample: its runSettingId in a batch, its ``sample`` parameter for StartRun."""
    return str(settings.get("runSettingId") or settings["parameters"]["sample"])


def make_subject(
    name: str,
    world: World | None,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    *,
    stub: stub_backend.StubService | None = None,
    failing: frozenset[str] = frozenset(),
) -> Subject:
    recorder = Recorder()
    recorder.install(monkeypatch)
    if name == stub_backend.NAME:
        assert stub is not None
        if failing:
            stub.fail_when = lambda request: "injected failure" if request["name"] in failing else None
        samples = [f"S{i:04d}" for i in range(7)]
        sheet = pl.DataFrame({"sample": samples, "fastq": [f"s3://in/{s}.fq" for s in samples]})
        plan_dir = str(tmp_path / "plan")
        defaults = {"run": {"workflow": "wf-1", "parameters": {"reference": "s3://refs/hg38.fa"}}}
        planner.plan(sheet, backend=name, defaults=defaults, max_entries=3).write(plan_dir)
        return Subject(name, plan_dir, {"concurrency": 4}, samples, recorder, stub=stub, expected_failures=failing)

    assert world is not None
    if failing and name in ("omics-batch", "omics-run"):
        world.omics_options["fail_when"] = lambda s: (
            ("INJECTED", "injected failure") if _sample_of(s) in failing else None
        )
    if failing and name == "polly":
        world.polly_options.update(POLLY_FAILURES)
    rig = make_rig(name, world, tmp_path)
    subject = Subject(
        name,
        rig.plan_dir,
        dict(rig.options),
        list(rig.samples),
        recorder,
        rig=rig,
        expected_failures=None if name == "polly" else failing,
    )
    if failing and name == "batch":
        _fail_batch_arrays(subject, failing, monkeypatch)
    if failing and name == "glue":
        _refuse_glue_starts(subject, failing, monkeypatch)
    return subject


def _fail_batch_arrays(subject: Subject, failing: frozenset[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """moto fails the jobs SubmitJob makes while FAIL_AFTER is set: set it for the arrays holding ``failing``."""
    assert subject.rig is not None
    shard_of = subject.rig.shard_of()
    shards = {shard_of[s] for s in failing}
    assert {s for s, shard in shard_of.items() if shard in shards} == failing, "fail whole arrays only"
    manifest = subject.manifest
    names = {f"faults-{manifest.plan_id}-{index:05d}" for index in shards}

    def around_submit_job(params: dict[str, Any], **_: Any) -> None:
        if params.get("jobName") in names:
            monkeypatch.setenv(FAIL_AFTER, "0")
        else:
            monkeypatch.delenv(FAIL_AFTER, raising=False)

    faultkit.patch_clients([("provide-client-params.batch.SubmitJob", around_submit_job)], monkeypatch.setattr)
    subject.options["concurrency"] = 1  # the variable is process-wide: one SubmitJob at a time
    subject.on_submit.append(lambda: monkeypatch.delenv(FAIL_AFTER, raising=False))
    subject.on_submit.append(lambda: names.clear())


def _refuse_glue_starts(subject: Subject, failing: frozenset[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer the StartJobRun of ``failing`` with a quota error, during the first submit only."""
    keys = {glue_backend.run_key(subject.manifest.plan_id, sample) for sample in failing}

    def refuse(request: Any, **_: Any) -> Any:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        arguments = json.loads(body or "{}").get("Arguments") or {}
        if arguments.get(glue_backend.RUN_KEY) in keys:
            message = "the account's limit of concurrent job runs is reached"
            return faultkit.aws_error(request.url, 400, "ResourceNumberLimitExceededException", message)
        return None

    faultkit.patch_clients([("before-send.glue.StartJobRun", refuse)], monkeypatch.setattr)
    subject.on_submit.append(lambda: keys.clear())


def ledger_exists(plan_dir: str) -> bool:
    return os.path.exists(os.path.join(plan_dir, "ledger.sqlite"))
