"""What a `planner status` refresh of a large HealthOmics plan costs: service calls and seconds.

Plans N runs for omics-batch (100,000 a batch), submits them to the HealthOmics
emulator (with moto's S3 for the staged settings), lets every run finish (``--failure-rate``
fail, 1% by default), then times the first refresh (samples mapped to runs once, failures
asked why) and the refreshes after it (nothing moved: one GetBatch a batch).  CPU time is the
planner's process, which also hosts the servers: treat it as an upper bound.

``at_documented_rates`` is what each refresh would take against the service's default API
quotas, calls made one after another: the sum over operations of calls / TPS, from the User
Guide's "HealthOmics API quotas" (``DOCUMENTED_TPS``); operations that table does not list (the
run-batch APIs) are counted in ``unrated_calls`` instead of guessed, and
``if_unrated_at_10_tps_seconds`` adds them at ListRuns' 10 TPS: an assumption, not a documented rate.

A refresh asks the reasons of a few newly failed runs per batch; the rest are asked on demand:
``why one sample`` is ``status(why=[id])`` without a refresh, and ``why all`` (``--why-all``, off by
default: one GetRun per failed run) asks every one left.  The emulator's own rate quotas are off
here (``api_rates=None``): the benchmark's clock does not move, and the time at documented rates is
computed from the calls instead.

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
from collections.abc import Callable
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


def _measure(emulator: Any, step: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``step()``'s result, and its calls by operation, seconds and CPU seconds, and its time at documented rates."""
    from planner.sandbox.omics_protocol import DOCUMENTED_TPS

    before = len(emulator.requests())
    wall, cpu = time.perf_counter(), _cpu()
    result = step()
    calls = Counter(op for op, _ in emulator.requests()[before:])
    rated = sum(n / DOCUMENTED_TPS[op] for op, n in calls.items() if op in DOCUMENTED_TPS)
    unrated = {op: n for op, n in calls.items() if op not in DOCUMENTED_TPS}
    return result, {
        "seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(_cpu() - cpu, 2),
        "calls": sum(calls.values()),
        "by_operation": dict(calls),
        "at_documented_rates_seconds": round(rated, 1),
        "unrated_calls": unrated,
        "if_unrated_at_10_tps_seconds": round(rated + sum(unrated.values()) / 10.0, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=250_000)
    parser.add_argument("--failure-rate", type=float, default=0.01)
    parser.add_argument("--why-all", action="store_true", help="also time `status --why all` (a GetRun per failure)")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    os.environ["PLANNER_NO_WORKFLOW_LOOKUP"] = "1"  # planning reads no workflow from a real account
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    from moto.server import ThreadedMotoServer

    import planner
    from planner.commands.status import REASON_NOT_ASKED
    from planner.sandbox.omics_emulator import OmicsEmulator

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    clock = Clock()
    emulator = OmicsEmulator(
        s3_endpoint_url=moto_url, clock=clock, failure_rate=args.failure_rate, seed=1, api_rates=None
    ).start()
    options = {"sandbox": True, "endpoints": {"s3": moto_url, "omics": emulator.endpoint_url}}
    out: dict[str, Any] = {"runs": args.runs, "failure_rate": args.failure_rate}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            os.environ["PLANNER_HOME"] = scratch  # an index of submitted samples of its own, not the user's
            plan_dir = os.path.join(scratch, "plan")
            sheet = pl.DataFrame({"sample": [f"S{i:07d}" for i in range(args.runs)]})
            defaults = {
                "run": {"workflowId": "1", "roleArn": "arn:aws:iam::123456789012:role/r", "outputUri": "s3://o/x/"}
            }
            planner.plan(sheet, backend="omics-batch", defaults=defaults).write(plan_dir)
            planner.submit(plan_dir, staging="s3://bench-status/staging/", **options)
            clock.now += 20  # every run has ended
            for name in ("first refresh", "second refresh", "third refresh"):
                table, out[name] = _measure(emulator, lambda: planner.status(plan_dir, **options))
            failed = table.filter(pl.col("state") == "FAILED")
            out["failed"] = failed.height
            out["failed_with_reason_asked"] = failed.filter(pl.col("reason") != REASON_NOT_ASKED).height
            one = [failed.filter(pl.col("reason") == REASON_NOT_ASKED).get_column("id")[0]] if failed.height else []
            _, out["why one sample"] = _measure(
                emulator, lambda: planner.status(plan_dir, refresh=False, why=one, **options)
            )
            if args.why_all:
                _, out["why all"] = _measure(
                    emulator, lambda: planner.status(plan_dir, refresh=False, why="all", **options)
                )
    finally:
        emulator.stop()
        moto.stop()
    json.dump(out, sys.stdout, indent=2)
    print()
    return out


if __name__ == "__main__":
    main()
