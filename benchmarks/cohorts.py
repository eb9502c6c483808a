"""Cohorts that grow and pipelines that chain (issue 27): what --skip-done and `planner outputs` cost.

skip-done   plans N samples (gen_sheet.py's sheet, Parquet) as the earlier plan, records every
            one COMPLETED in its ledger (as a submit and a status would leave it), then plans a
            grown sheet of N samples against it: the earlier plan's first 1% gone, 1% new ids,
            0.1% with a changed parameter.  Each `planner plan` runs as its own process (the
            CLI, as a user runs it): wall seconds and peak RSS, with and without --skip-done.
outputs     plans R runs for omics-batch, submits them to the HealthOmics emulator (moto's S3
            for the staged settings), lets them end (1% fail), refreshes status once, then
            times `planner.outputs` (one GetRun per completed run) and counts the calls the
            emulator saw; then `outputs --check` on C of the runs' locations against moto
            (one ListObjectsV2 each).  The servers run in this process: its CPU is an upper bound.

    python benchmarks/cohorts.py --samples 1000000 --runs 250000 --check-runs 20000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gen_sheet  # noqa: E402 - beside this file


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _planner(args: list[str], env: dict[str, str], source: str | None = None) -> dict[str, Any]:
    """One CLI run in its own process: wall seconds, CPU seconds and peak RSS of that process alone."""
    if source is not None:  # another checkout of the planner (--baseline-src): its package first on the path
        env = dict(env, PYTHONPATH=source)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "planner.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=source or os.getcwd(),
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"planner {' '.join(args)} failed:\n{out}\n{err}")
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "stdout": out.strip().splitlines(),
    }


def _complete_in_ledger(plan_dir: str) -> None:
    """The earlier plan as a submit and a status leave it: every sample COMPLETED in its ledger."""
    from planner.core.ledger import Ledger, SampleState
    from planner.core.plandir import PlanDirectory

    plan = PlanDirectory(plan_dir)
    ledger = Ledger.open(plan_dir, plan.plan_id, plan.manifest.backend)
    try:
        samples = plan.samples()
        for start in range(0, samples.height, 100_000):
            part = samples.slice(start, 100_000)
            ledger.upsert_samples(
                SampleState(sample, shard, position, f"r{row}", None, "SUCCESS", "COMPLETED")
                for row, sample, shard, position in part.select("row", "id", "shard", "position").iter_rows()
            )
    finally:
        ledger.close()


def skip_done(samples: int, scratch: str, baseline: str | None) -> dict[str, Any]:
    data = Path(scratch) / "sheets"
    sheet = gen_sheet.write_sheet(samples, ["parquet"], data)["parquet"]
    defaults = gen_sheet.write_defaults(data)
    earlier = pl.read_parquet(sheet)
    gone, new, changed = samples // 100, samples // 100, samples // 1000
    grown = pl.concat(
        [
            earlier.slice(gone).with_columns(
                pl.when(pl.int_range(pl.len()) < changed)
                .then(pl.lit("s3://bench/changed/input.bam"))
                .otherwise(pl.col("p01"))
                .alias("p01")
            ),
            earlier.head(new).with_columns(pl.lit("NEW-").add(pl.col("sample")).alias("sample")),
        ]
    )
    grown_sheet = data / "grown.parquet"
    grown.write_parquet(grown_sheet, row_group_size=gen_sheet.CHUNK_ROWS)
    del earlier, grown
    env = dict(os.environ, PLANNER_NO_WORKFLOW_LOOKUP="1", PLANNER_HOME=os.path.join(scratch, "home"))
    plans = Path(scratch) / "plans"
    common = ["-b", "omics-batch", "-d", str(defaults), "-q"]
    out: dict[str, Any] = {"samples": samples, "earlier_samples": samples}
    out["earlier plan"] = _planner(["plan", str(sheet), *common, "-o", str(plans / "earlier")], env)
    _complete_in_ledger(str(plans / "earlier"))
    out["grown sheet, plain"] = _planner(["plan", str(grown_sheet), *common, "-o", str(plans / "plain")], env)
    if baseline:  # the same plan by the planner before settings were recorded: what recording them costs
        base = ["plan", str(grown_sheet), *common, "-o", str(plans / "baseline")]
        out["grown sheet, plain, before settings hashes"] = _planner(base, env, baseline)
    skip = ["--skip-done", str(plans / "earlier")]
    out["grown sheet, --skip-done"] = _planner(
        ["plan", str(grown_sheet), *common, "-o", str(plans / "skip"), *skip], env
    )
    out["expected"] = {"new": new, "changed": changed, "done": samples - gone - changed, "failed before": 0}
    out["submit guard"] = _guard(str(plans / "earlier"), str(plans / "plain"), os.path.join(scratch, "runs.sqlite"))
    return out


def _guard(earlier: str, grown: str, index_file: str) -> dict[str, Any]:
    """The submit guard's check at this size: the earlier plan claimed, then the grown plan (planned
    without --skip-done) checked against it and refused."""
    from planner.commands.run_index import RunIndex, _Refused
    from planner.core.plandir import PlanDirectory

    index = RunIndex.open(index_file)
    try:
        wall = time.perf_counter()
        index.claim(PlanDirectory(earlier), allow_rerun=False)
        first = time.perf_counter() - wall
        wall = time.perf_counter()
        try:
            index.claim(PlanDirectory(grown), allow_rerun=False)
            refused = 0
        except _Refused as exc:
            refused = exc.duplicates[0].total
        second = time.perf_counter() - wall
    finally:
        index.close()
    return {
        "claim of the earlier plan (empty index), seconds": round(first, 2),
        "check of the grown plan, refused, seconds": round(second, 2),
        "duplicates found": refused,
        "index MB": round(os.path.getsize(index_file) / 1e6),
    }


def guard(samples: int, scratch: str) -> dict[str, Any]:
    """The submit guard alone: an index holding one earlier plan of N runs, and a new plan of the same
    N samples (1% new) checked against it (refused)."""
    from planner.commands.run_index import RunIndex

    index = RunIndex.open(os.path.join(scratch, "guard.sqlite"))
    try:
        ids = pl.Series("id", [f"S{i:09d}" for i in range(samples)])
        earlier = pl.DataFrame({"id": ids, "settings": pl.int_range(samples, eager=True)})
        index.db.execute("INSERT INTO plans VALUES ('earlier', '/earlier', 'omics-batch', NULL, 'scheme', 'now')")
        wall = time.perf_counter()
        with index._transaction():
            index.db.executemany(
                "INSERT INTO runs VALUES ('earlier', ?, ?, 'COMPLETED', 1, 'now')", earlier.iter_rows()
            )
        filled = time.perf_counter() - wall
        grown = earlier.with_columns(
            pl.when(pl.int_range(pl.len()) < samples // 100)
            .then(pl.lit("NEW-") + pl.col("id"))
            .otherwise(pl.col("id"))
            .alias("id")
        )
        wall = time.perf_counter()
        with index._transaction():
            found = index._duplicates("grown", None, "scheme", grown)
        checked = time.perf_counter() - wall
    finally:
        index.close()
    return {
        "samples": samples,
        "earlier plan recorded, seconds": round(filled, 2),
        "grown plan checked, seconds": round(checked, 2),
        "duplicates found": found[0].total if found else 0,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ended_plan(emulator: Any, clock: Clock, options: dict[str, Any], runs: int, plan_dir: str, bucket: str) -> None:
    import planner

    sheet = pl.DataFrame({"sample": [f"S{i:07d}" for i in range(runs)]})
    defaults = {"run": {"workflowId": "1", "roleArn": "arn:aws:iam::123456789012:role/r", "outputUri": bucket}}
    planner.plan(sheet, backend="omics-batch", defaults=defaults).write(plan_dir)
    planner.submit(plan_dir, staging="s3://bench-outputs/staging/", **options)
    clock.now += 20  # every run has ended
    planner.status(plan_dir, **options)


def outputs(runs: int, check_runs: int, scratch: str) -> dict[str, Any]:
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    os.environ["PLANNER_HOME"] = os.path.join(scratch, "home")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    import boto3
    from moto.server import ThreadedMotoServer

    from planner.commands.outputs import outputs_report
    from planner.sandbox.omics_emulator import OmicsEmulator

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    clock = Clock()
    emulator = OmicsEmulator(s3_endpoint_url=moto_url, clock=clock, failure_rate=0.01, seed=1).start()
    options = {"sandbox": True, "endpoints": {"s3": moto_url, "omics": emulator.endpoint_url}}
    out: dict[str, Any] = {"runs": runs}
    try:
        plan_dir = os.path.join(scratch, "outputs-plan")
        _ended_plan(emulator, clock, options, runs, plan_dir, "s3://bench-results/out/")
        before = len(emulator.requests())
        wall, cpu = time.perf_counter(), _cpu()
        found = outputs_report(plan_dir, **options)
        calls = Counter(op for op, _ in emulator.requests()[before:])
        print(f"outputs of {runs} runs: measuring", file=sys.stderr, flush=True)
        out["outputs"] = {
            "seconds": round(time.perf_counter() - wall, 2),
            "cpu_seconds": round(_cpu() - cpu, 2),
            "samples": found.table.height,
            "calls": sum(calls.values()),
            "by_operation": dict(calls),
        }
        # --check on a smaller plan: half its locations hold an object in moto.
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        s3.create_bucket(Bucket="bench-checked")
        small = os.path.join(scratch, "check-plan")
        _ended_plan(emulator, clock, options, check_runs, small, "s3://bench-checked/out/")
        located = outputs_report(small, **options).table
        for uri in located.get_column("runOutputUri").gather_every(2).to_list():
            s3.put_object(Bucket="bench-checked", Key=uri.split("/", 3)[3] + "/result.txt", Body=b"x")
        wall, cpu = time.perf_counter(), _cpu()
        checked = outputs_report(small, check=True, **options)
        out["outputs --check"] = {
            "runs": check_runs,
            "seconds": round(time.perf_counter() - wall, 2),
            "cpu_seconds": round(_cpu() - cpu, 2),
            "calls": checked.calls,
            "locations found empty": checked.missing,
        }
    finally:
        emulator.stop()
        moto.stop()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000, help="skip-done: samples in each plan")
    parser.add_argument("--runs", type=int, default=250_000, help="outputs: completed runs")
    parser.add_argument("--check-runs", type=int, default=20_000, help="outputs --check: runs whose outputs are listed")
    parser.add_argument("--only", choices=["skip-done", "outputs", "guard"])
    parser.add_argument("--baseline-src", help="a checkout of the planner before issue 27, to time the plain plan with")
    parser.add_argument("--save", help="a JSON file each section's result is written into as soon as it is measured")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}

    def save(section: str, value: dict[str, Any]) -> None:
        result[section] = value
        print(f"{section}: {json.dumps(value)}", file=sys.stderr, flush=True)
        if args.save:
            saved = json.loads(Path(args.save).read_text()) if Path(args.save).exists() else {}
            saved[section] = dict(value, loadavg_1m_after=os.getloadavg()[0])
            Path(args.save).write_text(json.dumps(saved, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="planner-cohorts-") as scratch:
        if args.only in (None, "skip-done"):
            save("skip-done", skip_done(args.samples, scratch, args.baseline_src))
        if args.only == "guard":  # also inside skip-done, on the plans it made
            save("submit guard", guard(args.samples, scratch))
        if args.only in (None, "outputs"):
            save("outputs", outputs(args.runs, args.check_runs, scratch))
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
