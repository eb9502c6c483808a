"""What `planner submit` of a large HealthOmics plan costs: service calls, seconds, and time at documented rates.

Plans N runs and submits them to the HealthOmics emulator (with moto's S3 for the staged
settings), as ``omics-batch`` (StartRunBatch with S3 settings files, 100,000 runs a batch) and as
``omics-run`` (one StartRun a run), counting every call the planner's clients make (by service
and operation), the wall and CPU seconds of the submit (the servers run in this process: an upper
bound for the planner's own), and what the calls would take at the documented rates.

``at_documented_rates_seconds`` is the sum over HealthOmics operations of calls / TPS (the User
Guide's "HealthOmics API quotas", ``omics_protocol.DOCUMENTED_TPS``; StartRun 1 TPS).  StartRunBatch
is not in that table (``unrated_calls``).  The API reference of StartRunBatch says the batch's runs
"are submitted gradually and asynchronously at a rate governed by your StartRun throughput quota":
``service_creates_runs_seconds`` is runs / StartRun's TPS, the time until the service has created
the last run of the batch, whichever way it was submitted.

``--run-runs`` measures omics-run at a size the machine handles (one StartRun per run, each a
request to the in-process emulator) and ``extrapolated_to`` scales calls and seconds linearly to
``--runs`` (every sample is one StartRun, so the calls are exact; the seconds are an estimate).

    python benchmarks/submit_cost.py --runs 100000 --run-runs 5000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

import polars as pl
from status_cost import Clock, _cpu  # the sibling benchmark's clock and CPU meter (run from benchmarks/)


class CallCounter:
    """Every API call a botocore client in this process makes, by ``service.Operation`` (retries not counted)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def install(self) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counter = self

        def counted(client: Any, operation_name: str, api_params: Any) -> Any:
            with counter.lock:
                counter.calls[f"{client.meta.service_model.service_name}.{operation_name}"] += 1
            return original(client, operation_name, api_params)

        BaseClient._make_api_call = counted  # type: ignore[method-assign]

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.calls)


def _submit(backend: str, runs: int, scratch: str, options: dict[str, Any], counter: CallCounter) -> dict[str, Any]:
    import planner
    from planner.sandbox.omics_protocol import DOCUMENTED_TPS

    plan_dir = os.path.join(scratch, backend)
    sheet = pl.DataFrame({"sample": [f"S{i:07d}" for i in range(runs)]})
    defaults = {"run": {"workflowId": "1", "roleArn": "arn:aws:iam::123456789012:role/r", "outputUri": "s3://o/x/"}}
    wall, cpu = time.perf_counter(), _cpu()
    planner.plan(sheet, backend=backend, defaults=defaults).write(plan_dir)
    planned = {"seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(_cpu() - cpu, 2)}
    before = counter.snapshot()
    wall, cpu = time.perf_counter(), _cpu()
    report = planner.submit(plan_dir, staging=f"s3://bench-submit/{backend}/", **options)
    seconds, cpu_seconds = time.perf_counter() - wall, _cpu() - cpu
    calls = counter.snapshot() - before
    omics = {op.split(".", 1)[1]: n for op, n in calls.items() if op.startswith("omics.")}
    rated = sum(n / DOCUMENTED_TPS[op] for op, n in omics.items() if op in DOCUMENTED_TPS)
    return {
        "runs": runs,
        "failed": report.failed,
        "plan": planned,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "calls": sum(calls.values()),
        "by_operation": dict(sorted(calls.items())),
        "at_documented_rates_seconds": round(rated, 1),
        "unrated_calls": {op: n for op, n in omics.items() if op not in DOCUMENTED_TPS},
        "service_creates_runs_seconds": round(runs / DOCUMENTED_TPS["StartRun"], 1),
    }


def _scaled(measured: dict[str, Any], runs: int) -> dict[str, Any]:
    """omics-run measured at fewer runs, scaled linearly to ``runs`` (one StartRun per run)."""
    factor = runs / measured["runs"]
    return {
        "runs": runs,
        "from_runs": measured["runs"],
        "seconds_estimate": round(measured["seconds"] * factor, 1),
        "cpu_seconds_estimate": round(measured["cpu_seconds"] * factor, 1),
        "by_operation": {op: round(n * factor) for op, n in measured["by_operation"].items()},
        "at_documented_rates_seconds": round(measured["at_documented_rates_seconds"] * factor, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="omics-batch runs (and omics-run's extrapolation)")
    parser.add_argument("--run-runs", type=int, default=5_000, help="omics-run runs actually submitted")
    parser.add_argument("--concurrency", type=int, default=8, help="submit's --concurrency (omics-run)")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    os.environ["PLANNER_NO_WORKFLOW_LOOKUP"] = "1"  # planning reads no workflow from a real account
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.server import ThreadedMotoServer

    from planner.sandbox.omics_emulator import OmicsEmulator

    counter = CallCounter()
    counter.install()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    # The emulator's own rate quotas are off: the time at documented rates is computed from the calls.
    emulator = OmicsEmulator(s3_endpoint_url=moto_url, clock=Clock(), api_rates=None).start()
    options = {
        "sandbox": True,
        "endpoints": {"s3": moto_url, "omics": emulator.endpoint_url},
        "concurrency": args.concurrency,
    }
    out: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            os.environ["PLANNER_HOME"] = scratch  # an index of submitted samples of its own, not the user's
            out["omics-batch"] = _submit("omics-batch", args.runs, scratch, options, counter)
            out["omics-run"] = _submit("omics-run", args.run_runs, scratch, options, counter)
            if args.run_runs != args.runs:
                out["omics-run extrapolated"] = _scaled(out["omics-run"], args.runs)
    finally:
        emulator.stop()
        moto.stop()
    json.dump(out, sys.stdout, indent=2)
    print()
    return out


if __name__ == "__main__":
    main()
