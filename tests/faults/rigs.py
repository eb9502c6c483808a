"""One small plan per backend on loopback servers, and the invariants every fault must leave intact.

A ``Rig`` holds a plan directory, the options ``planner.commands.submit.submit`` takes for
it, what its creating call is, and how to count on the *server* how many times
each sample was submitted.  ``check_invariants`` is the same for every scenario:

* every sample submitted exactly once, counted on the server side;
* the ledger agrees with the servers: every submission ``done``, every remote id
  it journaled exists on the server, no multipart upload left open, and the
  status table maps every sample to a remote id;
* no staged object was ever overwritten: the staging bucket is versioned, and
  every key holds exactly one version, whose ETag is the one the plan predicted
  and the ledger recorded.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import polars as pl
from botocore.config import Config
from helpers import sheet_frame

import planner
from planner.backends import glue as glue_backend
from planner.commands.submit import submit

from . import faultkit

if TYPE_CHECKING:
    from conftest import FakeClock  # tests/conftest.py

ROLE = "arn:aws:iam::123456789012:role/omics"
STAGING_PREFIX = "staging/"


@dataclass
class World:
    """The loopback servers of one test: moto (shared), a versioned bucket, emulators made on demand."""

    moto: str
    bucket: str
    clock: FakeClock
    make_omics: Callable[..., Any]
    make_polly: Callable[..., Any]
    # No HealthOmics rate quotas here (make_omics_emulator turns the documented ones on), and rate buckets in
    # real time: these rigs run the planner in child processes too, whose botocore waits cannot pass in this
    # test's time (ClientWaits), so a throttled child would wait for a rate clock that never moves.  The
    # `throttled` scenario sets throttle_per_second, a real-time bucket as before.
    omics_options: dict[str, Any] = field(default_factory=lambda: {"api_rates": None, "rate_clock": time.monotonic})
    polly_options: dict[str, Any] = field(default_factory=dict)
    _omics: Any = None
    _polly: Any = None
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, endpoint: str | None = None) -> Any:
        endpoint = endpoint or self.moto
        if (service, endpoint) not in self._clients:
            self._clients[(service, endpoint)] = self._client(service, endpoint)
        return self._clients[(service, endpoint)]

    def _client(self, service: str, endpoint: str) -> Any:
        config = Config(
            retries={"mode": "standard", "max_attempts": 3},
            inject_host_prefix=service != "omics",
            s3={"addressing_style": "path"},
        )
        return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", config=config)

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def omics_emulator(self) -> Any:
        if self._omics is None:
            self._omics = self.make_omics(**self.omics_options)
        return self._omics

    @property
    def polly_emulator(self) -> Any:
        if self._polly is None:
            self._polly = self.make_polly(**self.polly_options)
        return self._polly

    @property
    def omics(self) -> Any:
        return self.client("omics", self.omics_emulator.endpoint_url)


def new_versioned_bucket(s3: Any) -> str:
    name = f"faults-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


# ---------------------------------------------------------------- the rigs


@dataclass
class Rig:
    column: str  # the matrix column
    backend: str  # planner's backend name
    world: World
    plan_dir: str
    options: dict[str, Any]
    samples: list[str]
    # The creating call: a botocore (service, operation), or Polly's POST paths.
    service: str | None
    operation: str | None
    polly_paths: tuple[str, ...] = ()
    stages: bool = False
    manifest_mode: bool = False  # glue in manifest mode
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def access(self) -> dict[str, Any]:
        """The options without the submit-only ones: what status, retry and cancel take."""
        return {k: v for k, v in self.options.items() if k not in ("staging", "concurrency", "rate", "max_wait")}

    @property
    def manifest(self) -> dict[str, Any]:
        return planner.read_plan(self.plan_dir).to_json()

    def kill_at_creating_call(self, when: str, nth: int) -> dict[str, Any]:
        if self.backend == "polly":
            return {"at": "polly", "paths": list(self.polly_paths), "when": when, "nth": nth}
        return {"at": "aws", "service": self.service, "operation": self.operation, "when": when, "nth": nth}

    def shard_of(self) -> dict[str, int]:
        table = pl.read_parquet(os.path.join(self.plan_dir, "samples.parquet"))
        return dict(zip(table.get_column("id").to_list(), table.get_column("shard").to_list(), strict=True))

    # What the server holds.

    def server_counts(self) -> Counter[str]:
        """How many times the service received each sample (from the server's own listings)."""
        return COUNTERS[self.backend](self)

    def server_ids(self) -> set[str]:
        """Every remote id the service knows for this rig (batches, runs, jobs, job runs)."""
        return IDS[self.backend](self)

    def settle(self) -> None:
        """Let the service do what it does asynchronously (omics batches submit their runs)."""
        if self.backend in ("omics-batch", "omics-run"):
            for _ in range(4):
                self.world.clock.advance(1.0)


BIG_SHARD_SAMPLES = 10  # two shards of five samples
BLOB = 1_100_000  # bytes of one sample's "blob" parameter: a shard of five is over one 5 MiB part
PART_SIZE = 5 * 1024 * 1024


def _blob(big: bool) -> dict[str, str]:
    """The ``blob`` column that makes a shard of five samples over one part (``sheet_frame(..., **_blob(big))``)."""
    return {"blob": "b" * BLOB} if big else {}


def _sizes(big: bool, **normal: Any) -> dict[str, Any]:
    """planner.commands.plan's shard options: as given, or two multipart-sized shards."""
    return {"max_entries": BIG_SHARD_SAMPLES // 2, "part_size": PART_SIZE} if big else normal


def _omics_batch(world: World, tmp_path: Any, staging: bool, big: bool = False) -> Rig:
    samples = [f"S{i:04d}" for i in range(BIG_SHARD_SAMPLES if big else 30)]
    sheet = sheet_frame(samples, fastq_1="s3://in/{sample}_R1.fq.gz", **_blob(big))
    defaults = {
        "run": {
            "workflowId": "1234567",
            "roleArn": ROLE,
            "outputUri": "s3://results/out/",
            "storageType": "DYNAMIC",
            "parameters": {"reference": "s3://refs/hg38.fa"},
            "runTags": {"project": "faults"},
        },
        "submission": {"batchName": "faults"},
    }
    plan_dir = str(tmp_path / "plan")
    planner.plan(sheet, backend="omics-batch", defaults=defaults, **_sizes(big, max_entries=10)).write(
        plan_dir
    )  # 3 shards on S3
    emulator = world.omics_emulator
    options = {
        "sandbox": True,
        "endpoints": {"s3": world.moto, "omics": emulator.endpoint_url},
        "staging": f"s3://{world.bucket}/{STAGING_PREFIX}",
        "concurrency": 4,
    }
    return Rig("omics-batch", "omics-batch", world, plan_dir, options, samples, "omics", "StartRunBatch", stages=True)


def _omics_run(world: World, tmp_path: Any, staging: bool, big: bool = False) -> Rig:
    samples = [f"S{i:04d}" for i in range(12)]
    sheet = pl.DataFrame({"sample": samples, "fastq_1": [f"s3://in/{s}_R1.fq.gz" for s in samples]})
    defaults = {
        "run": {
            "workflowId": "7654321",
            "roleArn": ROLE,
            "outputUri": "s3://results/out/",
            "parameters": {"genome": "GRCh38"},
            "tags": {"project": "faults"},
        }
    }
    plan_dir = str(tmp_path / "plan")
    planner.plan(sheet, backend="omics-run", defaults=defaults).write(plan_dir)
    emulator = world.omics_emulator
    options = {"sandbox": True, "endpoints": {"s3": world.moto, "omics": emulator.endpoint_url}, "concurrency": 4}
    return Rig("omics-run", "omics-run", world, plan_dir, options, samples, "omics", "StartRun")


def _batch(world: World, tmp_path: Any, staging: bool, big: bool = False) -> Rig:
    samples = [f"S{i:04d}" for i in range(BIG_SHARD_SAMPLES if big else 9)]
    queue = f"q-{uuid.uuid4().hex[:12]}"
    sheet = sheet_frame(samples, bam="s3://in/{sample}.bam", **_blob(big))
    defaults = {
        "run": {
            "jobQueue": queue,
            "jobDefinition": "faults-jobdef:1",
            "jobName": "faults",
            "parameters": {"reference": "s3://refs/hg38.fa"},
            "retryStrategy": {"attempts": 2},
        }
    }
    plan_dir = str(tmp_path / "plan")
    planner.plan(sheet, backend="batch", defaults=defaults, **_sizes(big, max_entries=3)).write(
        plan_dir
    )  # 3 arrays of 3
    options = {
        "sandbox": True,
        "endpoints": {"s3": world.moto, "batch": world.moto, "iam": world.moto},
        "staging": f"s3://{world.bucket}/{STAGING_PREFIX}",
        "concurrency": 4,
    }
    return Rig(
        "batch", "batch", world, plan_dir, options, samples, "batch", "SubmitJob", stages=True, extra={"queue": queue}
    )


def _glue(world: World, tmp_path: Any, staging: bool, big: bool = False) -> Rig:
    """Per-run mode (one StartJobRun per sample); with ``staging``, manifest mode (one per staged shard)."""
    samples = [f"S{i:04d}" for i in range(BIG_SHARD_SAMPLES if big else 9 if staging else 10)]
    job = f"etl-{uuid.uuid4().hex[:10]}"
    world.client("glue").create_job(
        Name=job,
        Role="arn:aws:iam::123456789012:role/glue",
        GlueVersion="4.0",
        Command={"Name": "glueetl", "ScriptLocation": "s3://scripts/etl.py", "PythonVersion": "3"},
        ExecutionProperty={"MaxConcurrentRuns": 100},
    )
    sheet = sheet_frame(samples, input_path="s3://lake/raw/{sample}/", **_blob(big))
    defaults: dict[str, Any] = {
        "run": {"JobName": job, "WorkerType": "G.1X", "NumberOfWorkers": 2, "Arguments": {"--input_format": "parquet"}}
    }
    if staging:
        defaults["submission"] = {"mode": "manifest"}
    plan_dir = str(tmp_path / "plan")
    planner.plan(
        sheet, backend="glue", defaults=defaults, **_sizes(big, **({"max_entries": 3} if staging else {}))
    ).write(plan_dir)
    options: dict[str, Any] = {"sandbox": True, "endpoints": {"s3": world.moto, "glue": world.moto}, "concurrency": 4}
    if staging:
        options["staging"] = f"s3://{world.bucket}/{STAGING_PREFIX}"
    return Rig(
        "glue",
        "glue",
        world,
        plan_dir,
        options,
        samples,
        "glue",
        "StartJobRun",
        stages=staging,
        manifest_mode=staging,
        extra={"job": job},
    )


def _polly(world: World, tmp_path: Any, staging: bool, big: bool = False) -> Rig:
    samples = [f"S{i:04d}" for i in range(120)]  # create_run, then 3 submit_job requests of 50, 50, 20
    sheet = pl.DataFrame({"sample": samples, "fastq_1": [f"s3://seq/{s}_R1.fq.gz" for s in samples]})
    defaults = {
        "run": {"parameters": {"genome": "GRCh38"}, "config": {"infra": {"cpu": 2, "memory": 8}}},
        "submission": {"pipeline_id": "pl-rnaseq", "run_name": "faults", "priority": "medium"},
    }
    plan_dir = str(tmp_path / "plan")
    planner.plan(sheet, backend="polly", defaults=defaults).write(plan_dir)
    emulator = world.polly_emulator
    options = {"sandbox": True, "endpoints": {"s3": world.moto, "polly": emulator.endpoint_url}, "concurrency": 4}
    return Rig("polly", "polly", world, plan_dir, options, samples, None, None, polly_paths=("/runs", "/jobs"))


MAKERS: dict[str, Callable[..., Rig]] = {
    "omics-batch": _omics_batch,
    "omics-run": _omics_run,
    "batch": _batch,
    "glue": _glue,
    "polly": _polly,
}
COLUMNS = tuple(MAKERS)
STAGING_COLUMNS = ("omics-batch", "batch", "glue")  # the backends that stage shards on S3 (glue in manifest mode)


def make_rig(column: str, world: World, tmp_path: Any, *, staging: bool = False, big: bool = False) -> Rig:
    """``big``: two shards of over one 5 MiB part each, staged by multipart upload."""
    return MAKERS[column](world, tmp_path, staging, big)


# ---------------------------------------------------------------- counting on the server


def _pages(
    call: Callable[..., dict[str, Any]], items: str, token_in: str, token_out: str = "nextToken", **params: Any
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = call(**params, **({token_in: token} if token else {}))
        out += page.get(items, [])
        token = page.get(token_out)
        if not token:
            return out


def _count_omics_batch(rig: Rig) -> Counter[str]:
    omics = rig.world.omics
    counts: Counter[str] = Counter()
    for batch in _pages(omics.list_batch, "items", "startingToken"):
        for run in _pages(omics.list_runs_in_batch, "runs", "startingToken", batchId=batch["id"]):
            counts[run["runSettingId"]] += 1
    return counts


def _ids_omics_batch(rig: Rig) -> set[str]:
    omics = rig.world.omics
    ids = {b["id"] for b in _pages(omics.list_batch, "items", "startingToken")}
    return ids | {r["id"] for r in _pages(omics.list_runs, "items", "startingToken")}


def _count_omics_run(rig: Rig) -> Counter[str]:
    omics = rig.world.omics
    counts: Counter[str] = Counter()
    for item in _pages(omics.list_runs, "items", "startingToken"):
        counts[omics.get_run(id=item["id"])["parameters"]["sample"]] += 1
    return counts


def _ids_omics_run(rig: Rig) -> set[str]:
    return {r["id"] for r in _pages(rig.world.omics.list_runs, "items", "startingToken")}


_BATCH_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


def _batch_parents(rig: Rig) -> list[dict[str, Any]]:
    batch = rig.world.client("batch")
    parents: dict[str, dict[str, Any]] = {}
    for status in _BATCH_STATUSES:
        for job in _pages(
            batch.list_jobs, "jobSummaryList", "nextToken", jobQueue=rig.extra["queue"], jobStatus=status
        ):
            if ":" not in job["jobId"] and "index" not in (job.get("arrayProperties") or {}):
                parents[job["jobId"]] = job
    return list(parents.values())


def _count_batch(rig: Rig) -> Counter[str]:
    manifest = rig.manifest
    names = {f"faults-{manifest['plan_id']}-{s['index']:05d}": s["index"] for s in manifest["shards"]}
    shard_of = rig.shard_of()
    counts: Counter[str] = Counter()
    for job in _batch_parents(rig):
        index = names.get(job["jobName"])
        assert index is not None, f"a job the plan does not name is in the queue: {job['jobName']}"
        counts.update(sample for sample, shard in shard_of.items() if shard == index)
    return counts


def _ids_batch(rig: Rig) -> set[str]:
    return {job["jobId"] for job in _batch_parents(rig)}


def _glue_runs(rig: Rig) -> list[dict[str, Any]]:
    return _pages(rig.world.client("glue").get_job_runs, "JobRuns", "NextToken", "NextToken", JobName=rig.extra["job"])


def _count_glue(rig: Rig) -> Counter[str]:
    plan_id = rig.manifest["plan_id"]
    if rig.manifest_mode:
        shard_of = rig.shard_of()
        owners = {
            glue_backend.shard_run_key(plan_id, index): [s for s, shard in shard_of.items() if shard == index]
            for index in set(shard_of.values())
        }
    else:
        owners = {glue_backend.run_key(plan_id, sample): [sample] for sample in rig.samples}
    counts: Counter[str] = Counter()
    for run in _glue_runs(rig):
        key = (run.get("Arguments") or {}).get(glue_backend.RUN_KEY)
        assert key in owners, f"a job run without this plan's run key: {run.get('Arguments')}"
        counts.update(owners[key])
    return counts


def _ids_glue(rig: Rig) -> set[str]:
    return {run["Id"] for run in _glue_runs(rig)}


def _count_polly(rig: Rig) -> Counter[str]:
    emulator = rig.world.polly_emulator
    assert len(emulator.runs()) == 1, f"Polly holds {len(emulator.runs())} runs for one plan"
    return Counter(job["name"] for job in emulator.jobs())


def _ids_polly(rig: Rig) -> set[str]:
    emulator = rig.world.polly_emulator
    return {run["id"] for run in emulator.runs()} | {job["id"] for job in emulator.jobs()}


COUNTERS = {
    "omics-batch": _count_omics_batch,
    "omics-run": _count_omics_run,
    "batch": _count_batch,
    "glue": _count_glue,
    "polly": _count_polly,
}
IDS = {
    "omics-batch": _ids_omics_batch,
    "omics-run": _ids_omics_run,
    "batch": _ids_batch,
    "glue": _ids_glue,
    "polly": _ids_polly,
}


# ---------------------------------------------------------------- the ledger and the bucket


def ledger_tables(plan_dir: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of PLAN/ledger.sqlite (read-only, as another process would)."""
    path = os.path.join(plan_dir, "ledger.sqlite")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [dict(r) for r in db.execute(f'SELECT * FROM "{t}"')] for t in tables}
    finally:
        db.close()


def bucket_versions(s3: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Every version (and delete marker) of every object in ``bucket``, by key."""
    found: dict[str, list[dict[str, Any]]] = {}
    kwargs: dict[str, Any] = {"Bucket": bucket}
    while True:
        page = s3.list_object_versions(**kwargs)
        for version in page.get("Versions", []):
            found.setdefault(version["Key"], []).append({"VersionId": version["VersionId"], "ETag": version["ETag"]})
        for marker in page.get("DeleteMarkers", []):
            found.setdefault(marker["Key"], []).append(
                {"VersionId": marker["VersionId"], "ETag": None, "delete_marker": True}
            )
        if not page.get("IsTruncated"):
            return found
        kwargs.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page.get("NextVersionIdMarker"))


def check_no_overwrite(rig: Rig, before: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Every staged key holds one version; what was there before the resume is still there, unchanged."""
    if not rig.stages:
        return
    versions = bucket_versions(rig.world.s3, rig.world.bucket)
    left = rig.world.s3.list_multipart_uploads(Bucket=rig.world.bucket).get("Uploads", [])
    assert left == [], f"multipart uploads left open on S3: {[(u['Key'], u['UploadId']) for u in left]}"
    for key, found in versions.items():
        assert len(found) == 1, f"s3://{rig.world.bucket}/{key} was written {len(found)} times: {found}"
    for key, found in (before or {}).items():
        assert versions.get(key) == found, (
            f"s3://{rig.world.bucket}/{key} changed during the resume: {found} -> {versions.get(key)}"
        )
    manifest = rig.manifest
    predicted = {f"{STAGING_PREFIX}{manifest['plan_id']}/{s['sha256']}.json": s["etag"] for s in manifest["shards"]}
    for key, etag in predicted.items():
        assert key in versions, f"shard object {key} is not staged"
        assert versions[key][0]["ETag"] == etag, f"{key}: ETag {versions[key][0]['ETag']}, the plan predicted {etag}"
    for row in ledger_tables(rig.plan_dir)["staged"]:
        assert row["bucket"] == rig.world.bucket and row["key"] in versions, row
        (only,) = versions[row["key"]]
        assert row["etag"] == only["ETag"], (
            f"the ledger recorded {row['etag']} for {row['key']}, S3 holds {only['ETag']}"
        )
        if row["version_id"] is not None:
            assert row["version_id"] == only["VersionId"], row
        if row["kind"] == "shard":  # (a line index is the other kind)
            assert row["etag"] == manifest["shards"][row["shard"]]["etag"]


def check_invariants(rig: Rig, *, staged_before: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Exactly once on the server, a ledger consistent with it, no staged object overwritten."""
    rig.settle()
    counts = rig.server_counts()
    twice = {sample: n for sample, n in counts.items() if n != 1}
    missing = [sample for sample in rig.samples if sample not in counts]
    assert not twice and not missing, (
        f"not exactly once: submitted more than once {twice}; never submitted {missing[:10]}"
    )
    assert set(counts) == set(rig.samples)

    tables = ledger_tables(rig.plan_dir)
    assert tables["uploads"] == [], f"multipart uploads left open: {tables['uploads']}"
    not_done = [(s["key"], s["state"], s["error"]) for s in tables["submissions"] if s["state"] != "done"]
    assert not not_done, f"journal entries not done: {not_done}"
    known = rig.server_ids()
    journaled = {s["remote_id"] for s in tables["submissions"]}
    assert None not in journaled
    assert journaled <= known, f"the ledger names remote ids the service does not know: {sorted(journaled - known)}"

    table = planner.commands.status.status(rig.plan_dir, **rig.access)
    assert sorted(table.get_column("id").to_list()) == sorted(rig.samples)
    unmapped = table.filter(pl.col("remote_id").is_null()).get_column("id").to_list()
    assert unmapped == [], f"samples without a remote id after status: {unmapped[:10]}"
    if rig.backend == "batch":  # a child is <array job id>:<index>
        remote = {r.rsplit(":", 1)[0] for r in table.get_column("remote_id").to_list()}
    else:
        remote = set(table.get_column("remote_id").to_list())
    assert remote <= known, f"status maps samples to remote ids the service does not know: {sorted(remote - known)[:5]}"
    if rig.backend != "batch" and not rig.manifest_mode:  # elsewhere every sample has a run (or job) of its own
        assert table.get_column("remote_id").n_unique() == len(rig.samples)
    check_no_overwrite(rig, staged_before)


def submission_states(plan_dir: str) -> Counter[str]:
    if not os.path.exists(os.path.join(plan_dir, "ledger.sqlite")):
        return Counter()
    return Counter(s["state"] for s in ledger_tables(plan_dir)["submissions"])


def shard_bytes(rig: Rig) -> dict[str, bytes]:
    """The bytes of every object the plan stages, by S3 key: shards and (Batch, Glue manifest) line indexes."""
    from planner.core.line_index import line_index

    manifest = rig.manifest
    out: dict[str, bytes] = {}
    for shard in manifest["shards"]:
        path = os.path.join(rig.plan_dir, shard["path"])
        with open(path, "rb") as handle:
            out[f"{STAGING_PREFIX}{manifest['plan_id']}/{shard['sha256']}.json"] = handle.read()
        index = line_index(path)
        out[f"{STAGING_PREFIX}{manifest['plan_id']}/{hashlib.sha256(index).hexdigest()}.index"] = index
    return out


# ---------------------------------------------------------------- crash and resume

KILL_TIMEOUT = 120


def run_killed(rig: Rig, kill: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
    """``submit`` in a child process that SIGKILLs itself at ``kill``; it must have died there."""
    done = faultkit.run_child(rig.plan_dir, rig.options, kill, KILL_TIMEOUT)
    assert done.returncode == -signal.SIGKILL, (
        f"the child was not killed at {kill} (exit {done.returncode}):\n{done.stderr.decode()[-3000:]}"
    )
    return done


def resume_and_check(rig: Rig) -> None:
    """Submit again in this process; then the invariants, and a further submit that creates nothing."""
    before = bucket_versions(rig.world.s3, rig.world.bucket) if rig.stages else None
    submit(rig.plan_dir, **rig.options)
    check_invariants(rig, staged_before=before)
    known = rig.server_ids()
    submit(rig.plan_dir, **rig.options)
    assert rig.server_ids() == known, "a submit after a complete one created something"
