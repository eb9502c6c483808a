"""What `planner check` costs for the inputs of a large plan: S3 calls per second, and how they scale.

moto's server runs in a child process (so its request handling does not share the
check's interpreter), with the objects written straight into its store at start.  Each
measurement plans a sheet of N samples for the batch backend (one ``bam`` per sample; 1%
of them missing) and times ``preflight.check_inputs`` on it:

* ``heads``: every object in a folder of its own, so each is one HeadObject; swept over
  concurrencies;
* ``folders``: objects 1,000 to a folder, so the check lists folders (ListObjectsV2)
  instead of asking for each object;
* ``extract``: finding the distinct s3:// values of the plan's runs (columnar), no S3 call.

    python benchmarks/s3_check.py                       # the figures in README.md
    python benchmarks/s3_check.py --uris 20000 --concurrency 8,32 --modes heads
    python benchmarks/s3_check.py --uris 1000000 --modes extract     # no S3 call: finding the URIs

Results are printed and merged into ``results/s3_check.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BUCKET = "bench-inputs"


def serve(port: int, objects: int, per_folder: int) -> None:
    """The child: moto's server with ``objects`` objects in each layout, until killed."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    backend = s3_backends["123456789012"]["aws"]
    backend.create_bucket(BUCKET, "us-east-1")
    backend.put_object(BUCKET, "refs/hg38.fa", b"x")
    for i in range(objects):
        if i % 100 == 99:
            continue  # 1% missing
        backend.put_object(BUCKET, f"heads/{i:07d}/s.bam", b"x")
        backend.put_object(BUCKET, f"folders/{i // per_folder:04d}/s{i:07d}.bam", b"x")
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plan(directory: Path, uris: int, layout: str) -> Path:
    out = directory / f"plan-{layout}-{uris}"
    if out.exists():
        return out
    import polars as pl

    import planner

    key = (
        pl.format("heads/{}/s.bam", pl.int_range(uris).cast(pl.String).str.zfill(7))
        if layout == "heads"
        else pl.format(
            "folders/{}/s{}.bam",
            (pl.int_range(uris) // 1000).cast(pl.String).str.zfill(4),
            pl.int_range(uris).cast(pl.String).str.zfill(7),
        )
    )
    sheet = pl.select(pl.format("s{}", pl.int_range(uris)).alias("sample"), (f"s3://{BUCKET}/" + key).alias("bam"))
    path = directory / f"{layout}-{uris}.parquet"
    sheet.write_parquet(path)
    defaults = {
        "run": {
            "jobQueue": "queue",
            "jobDefinition": "jobdef:1",
            "parameters": {"reference": f"s3://{BUCKET}/refs/hg38.fa"},
        }
    }
    planner.plan(path, backend="batch", defaults=defaults).write(out)
    return out


def _cpu(pid: int | None = None) -> float:
    """CPU seconds of this process, or of process ``pid`` (Linux /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(endpoint: str, plan: Path, concurrency: int, server: int) -> dict[str, Any]:
    from planner.commands.check import check_inputs
    from planner.core.plandir import PlanDirectory
    from planner.services.workflow import Lookup

    started, client, served = time.perf_counter(), _cpu(), _cpu(server)
    report = check_inputs(PlanDirectory(plan), access=Lookup(endpoints={"s3": endpoint}), concurrency=concurrency)
    seconds = time.perf_counter() - started
    client, served = _cpu() - client, _cpu(server) - served
    calls = sum(report.calls.values())
    return {
        "uris": report.uris,
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "calls": report.calls,
        "calls_per_s": round(calls / seconds),
        "uris_per_s": round(report.uris / seconds),
        "missing": report.missing,
        "client_cpu": round(client / seconds, 2),  # CPU seconds per second: 1.0 is one core busy
        "server_cpu": round(served / seconds, 2),
    }


def extraction(plan: Path) -> dict[str, Any]:
    from planner.commands.check import distinct_uris
    from planner.core.plandir import PlanDirectory

    started = time.perf_counter()
    table = distinct_uris(PlanDirectory(plan))
    return {
        "runs": PlanDirectory(plan).manifest.runs,
        "uris": table.height,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uris", type=int, default=100_000, help="distinct URIs for the full-size runs")
    parser.add_argument("--sweep-uris", type=int, default=10_000, help="distinct URIs for the concurrency sweep")
    parser.add_argument("--concurrency", default="1,4,8,16,32,64", help="the sweep's concurrencies")
    parser.add_argument("--full-concurrency", type=int, default=32, help="concurrency of the full-size runs")
    parser.add_argument("--modes", default="extract,heads,folders")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "OBJECTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], args.serve[1], 1000)
        return {}
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    modes = args.modes.split(",")
    port = _free_port()
    objects = max(args.uris, args.sweep_uris) if {"heads", "folders"} & set(modes) else 0
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(objects)], stdout=subprocess.PIPE, text=True
    )
    out = HERE / "results" / "s3_check.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        endpoint = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as scratch:
            directory = Path(scratch)
            if "extract" in modes:
                results.setdefault("extract", {})[str(args.uris)] = extraction(_plan(directory, args.uris, "heads"))
                print("extract", results["extract"][str(args.uris)], flush=True)
            if "heads" in modes:
                sweep_plan = _plan(directory, args.sweep_uris, "heads")
                results["heads_sweep"] = []
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    row = measure(endpoint, sweep_plan, concurrency, child.pid)
                    results["heads_sweep"].append(row)
                    print("heads", row, flush=True)
                results["heads_full"] = measure(
                    endpoint, _plan(directory, args.uris, "heads"), args.full_concurrency, child.pid
                )
                print("heads full", results["heads_full"], flush=True)
            if "folders" in modes:
                results["folders_full"] = measure(
                    endpoint, _plan(directory, args.uris, "folders"), args.full_concurrency, child.pid
                )
                print("folders full", results["folders_full"], flush=True)
    finally:
        child.kill()
        child.wait()
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
