"""What a `planner status` refresh of a large HealthOmics plan costs: service calls and seconds.

Plans N runs for omics-batch (100,000 a batch), submits them to the HealthOmics
emulator (with moto's S3 for the staged settings), lets every run finish (``--failure-rate``
fail, 1% by default), then times the first refresh (samples mapped to runs once, failures
asked why) and the refreshes after it (nothing moved: one GetBatch a batch).  CPU time is the
planner's process, which also hosts the servers: treat it as an upper bound.

``at_documented_rates`` is what each refresh would take against the service's default API
quotas, calls made one after another: the sum over operations of calls / TPS, from the User
Guide's "HealthOmics API quotas" (``DOCUMENTED_TPS``); operations that table does not list (the
run-batch APIs) are counted in ``unrated_calls`` instead of guessed.

    python benchmarks/status_cost.py --runs 250000 --failure-rate 0.3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import polars as pl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=250_000)
    parser.add_argument("--failure-rate", type=float, default=0.01)
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    from moto.server import ThreadedMotoServer

    import planner
    from planner.sandbox.omics_emulator import OmicsEmulator
    from planner.sandbox.omics_protocol import DOCUMENTED_TPS

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    clock = Clock()
    emulator = OmicsEmulator(s3_endpoint_url=moto_url, clock=clock, failure_rate=args.failure_rate, seed=1).start()
    options = {"sandbox": True, "endpoints": {"s3": moto_url, "omics": emulator.endpoint_url}}
    out: dict[str, Any] = {"runs": args.runs, "failure_rate": args.failure_rate}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            plan_dir = os.path.join(scratch, "plan")
            sheet = pl.DataFrame({"sample": [f"S{i:07d}" for i in range(args.runs)]})
            defaults = {
                "run": {"workflowId": "1", "roleArn": "arn:aws:iam::123456789012:role/r", "outputUri": "s3://o/x/"}
            }
            planner.plan(sheet, backend="omics-batch", defaults=defaults).write(plan_dir)
            planner.submit(plan_dir, staging="s3://bench-status/staging/", **options)
            clock.now += 20  # every run has ended
            for name in ("first refresh", "second refresh", "third refresh"):
                before = len(emulator.requests())
                wall, cpu = time.perf_counter(), _cpu()
                table = planner.status(plan_dir, **options)
                calls = Counter(op for op, _ in emulator.requests()[before:])
                out[name] = {
                    "seconds": round(time.perf_counter() - wall, 2),
                    "cpu_seconds": round(_cpu() - cpu, 2),
                    "calls": sum(calls.values()),
                    "by_operation": dict(calls),
                    "at_documented_rates_seconds": round(
                        sum(n / DOCUMENTED_TPS[op] for op, n in calls.items() if op in DOCUMENTED_TPS), 1
                    ),
                    "unrated_calls": {op: n for op, n in calls.items() if op not in DOCUMENTED_TPS},
                }
            out["failed"] = table.filter(pl.col("state") == "FAILED").height
    finally:
        emulator.stop()
        moto.stop()
    json.dump(out, sys.stdout, indent=2)
    print()
    return out


if __name__ == "__main__":
    main()
