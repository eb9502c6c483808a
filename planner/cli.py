"""The ``planner`` command: a thin argparse front over the Python API.

Exit status: 0 success; 2 invalid input (nothing written, nothing submitted);
1 any other failure.  stdout carries only results (``--json`` for scripts); errors,
one clear line each, and progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Sequence

import orjson

from . import __version__
from .backends import MODULES
from .errors import InputError, PlannerError, Problem, ValidationError
from .plan import MAX_SHOWN_PROBLEMS, plan, safe_csv, write_problems

_EPILOG = """\
Column routing: a column named like a per-run API field sets that field
(omics-batch: name, outputUri, priority, outputBucketOwnerId); tag.KEY sets a run tag;
param.KEY sets a workflow parameter; any other column is a parameter under its own name.
Precedence, lowest first: the defaults file, then --set, then the sheet row; an empty
cell never overrides.  Row numbers in messages count data rows from 1 (the header is
not counted).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planner",
        description="Plan, stage, submit and track per-sample workflow runs on AWS HealthOmics, AWS Batch, AWS Glue and Polly.",
    )
    parser.add_argument("--version", action="version", version=f"planner {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "plan",
        help="validate, merge and shard a sample sheet into a plan directory (no AWS needed)",
        description="Turn a sample sheet and a defaults file into a plan directory: every run validated "
        "against the target API, merged with the defaults, packed into shards within the API's limits, "
        "and hashed (sha256, md5, predicted S3 ETag). Nothing is written unless every row is valid "
        "(or --skip-invalid is given).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sheet",
        metavar="SHEET",
        help="the sample sheet: .csv, .tsv/.tab, .parquet or .ndjson/.jsonl; a path, a glob or an s3:// URI",
    )
    p.add_argument("--backend", "-b", required=True, choices=sorted(MODULES), help="the target service")
    p.add_argument(
        "--defaults", "-d", metavar="FILE", help="the default per-run request, TOML or JSON, in the API's own shape"
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="PLAN",
        help="the plan directory to write (must not exist, unless --force)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a default for every run, e.g. --set outputUri=s3://b/out/ --set parameters.threads=8 (repeatable)",
    )
    p.add_argument(
        "--id-column",
        metavar="COLUMN",
        help="the sample id column (default: [sheet] id_column, else the first of sample_id, sample, id)",
    )
    p.add_argument(
        "--group",
        action="store_true",
        help="allow several rows per sample (e.g. one per lane): --list-columns become lists, other columns must agree",
    )
    p.add_argument(
        "--list-columns",
        metavar="A,B",
        default="",
        help="with --group: columns gathered into lists in sheet order, e.g. fastq_1,fastq_2",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="plan the valid rows and list the others in PLAN/rejected.csv instead of failing",
    )
    p.add_argument(
        "--inline",
        action="store_true",
        help="omics-batch: send every shard inline (at most 100 runs per batch), so nothing is staged on S3",
    )
    p.add_argument(
        "--max-entries", type=int, metavar="N", help="at most N runs per shard (never more than the service allows)"
    )
    p.add_argument(
        "--max-bytes", type=int, metavar="N", help="at most N bytes per shard file (never more than the service allows)"
    )
    p.add_argument(
        "--part-size",
        type=int,
        metavar="BYTES",
        help="multipart part size the ETag is predicted for (default: 64 MiB, or more to stay within 10,000 parts; S3 allows 5 MiB to 5 GiB)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing plan directory that has not been submitted"
    )
    p.add_argument("--json", action="store_true", help="print plan.json on stdout instead of a summary")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(handler=_plan)

    s = commands.add_parser(
        "submit",
        help="stage a plan's shards on S3 and submit its runs (safe to run again after a crash)",
        description="Stage the shards that need S3 (content-addressed, never overwritten, ETag checked) and submit "
        "every run. Every creating call is journaled in PLAN/ledger.sqlite before and after it is made, and "
        "idempotency tokens are derived from the plan, so running submit again resumes without duplicates.",
    )
    s.add_argument("plan_dir", metavar="PLAN", help="a plan directory written by `planner plan`")
    s.add_argument(
        "--staging", metavar="S3_URI", help="where to stage shards (default: [staging] uri of the defaults file)"
    )
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="build and validate every request and print it as JSON lines; send nothing",
    )
    s.add_argument("--concurrency", type=int, default=8, metavar="N", help="requests in flight at once (default 8)")
    s.add_argument("--rate", type=float, metavar="PER_SECOND", help="at most this many creating requests per second")
    _aws_options(s)
    s.set_defaults(handler=_submit)

    t = commands.add_parser(
        "status",
        help="ask the service and show where every sample is",
        description="Refresh the per-sample state from the service, print a summary, and optionally write the per-sample table.",
    )
    t.add_argument("plan_dir", metavar="PLAN")
    t.add_argument("--out", metavar="FILE", help="write the per-sample table to FILE.csv or FILE.parquet")
    t.add_argument("--json", action="store_true", help="print the per-sample table as JSON lines instead of a summary")
    t.add_argument("--watch", action="store_true", help="refresh until every sample has reached a final state")
    t.add_argument(
        "--interval",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="with --watch: seconds between refreshes (default 30)",
    )
    t.add_argument("--no-refresh", action="store_true", help="show what the ledger knows without asking the service")
    _aws_options(t)
    t.set_defaults(handler=_status)

    r = commands.add_parser(
        "retry",
        help="plan again only the samples whose runs failed or were cancelled",
        description="Refresh the status of PLAN, then write a new plan of only the samples in the given states "
        "(or that failed to submit), each with exactly its original settings. Submit the new plan as usual.",
    )
    r.add_argument("plan_dir", metavar="PLAN")
    r.add_argument("--out", "-o", required=True, metavar="NEW_PLAN", help="the new plan directory")
    r.add_argument(
        "--states",
        metavar="A,B",
        help="run states to retry (default: the backend's failed states: FAILED,CANCELLED; Batch FAILED; Glue FAILED,ERROR,TIMEOUT,STOPPED,EXPIRED)",
    )
    r.add_argument("--force", action="store_true", help="replace NEW_PLAN if it exists and was never submitted")
    r.add_argument(
        "--no-refresh", action="store_true", help="use the states the ledger knows, without asking the service"
    )
    _aws_options(r)
    r.set_defaults(handler=_retry)

    c = commands.add_parser(
        "cancel", help="cancel what a plan submitted", description="Cancel the batches, jobs or runs a plan submitted."
    )
    c.add_argument("plan_dir", metavar="PLAN")
    _aws_options(c)
    c.set_defaults(handler=_cancel)

    k = commands.add_parser(
        "child-settings",
        help="inside an AWS Batch array child (or a Glue manifest run): print this child's own settings",
        description="Read this child's entry of the staged shard with ranged GETs checked against the recorded ETags, "
        "and print it as JSON (or as export lines). Inside an AWS Batch child every location comes from the "
        "environment the planner set on the job; --index overrides AWS_BATCH_JOB_ARRAY_INDEX.",
    )
    from .child_settings import add_arguments as _child_arguments

    _child_arguments(k)
    k.set_defaults(handler=_child_settings)

    x = commands.add_parser(
        "sandbox",
        help="start or stop the local AWS sandbox used by --sandbox",
        description="The sandbox is moto's server (S3, Batch, Glue) and the HealthOmics emulator on loopback, in a background process shared by the commands run with --sandbox.",
    )
    x.add_argument("action", choices=["start", "stop", "status"])
    x.set_defaults(handler=_sandbox)
    return parser


def _seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _aws_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS access (the standard boto3 chain applies: profile, region, environment)")
    group.add_argument(
        "--sandbox", action="store_true", help="use the local sandbox on loopback instead of AWS (started if needed)"
    )
    group.add_argument("--endpoint-url", metavar="URL", help="send every call to this endpoint")
    group.add_argument("--profile", metavar="NAME", help="the AWS profile to use")
    group.add_argument("--region", metavar="REGION", help="the AWS region")
    group.add_argument(
        "--retry-mode",
        choices=["standard", "adaptive"],
        default="standard",
        help="botocore retry mode (default standard)",
    )
    group.add_argument(
        "--max-attempts", type=int, default=8, metavar="N", help="botocore attempts per call (default 8)"
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _aws(args: argparse.Namespace) -> dict[str, object]:
    return {
        "sandbox": args.sandbox,
        "endpoint_url": args.endpoint_url,
        "profile": args.profile,
        "region": args.region,
        "retry_mode": args.retry_mode,
        "max_attempts": args.max_attempts,
    }


def _submit(args: argparse.Namespace) -> int:
    from .submit import submit

    report = submit(
        args.plan_dir,
        staging_uri=args.staging,
        dry_run=args.dry_run,
        concurrency=args.concurrency,
        rate=args.rate,
        progress=not args.quiet and sys.stderr.isatty(),
        **_aws(args),
    )
    if not args.dry_run:
        sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    import time

    import polars as pl

    from .backends import get_backend
    from .plan import read_plan
    from .submit import status

    final = get_backend(read_plan(args.plan_dir)["backend"]).final_states
    while True:
        table = status(args.plan_dir, refresh=not args.no_refresh, **_aws(args))
        settled = (
            table.filter(pl.col("state").is_in(list(final)) | (pl.col("submission_status") == "FAILED")).height
            == table.height
        )
        if not args.watch or settled:
            break
        _print_summary(table, sys.stderr)
        time.sleep(args.interval)
    if args.out:
        _write_table(table, args.out)
    if args.json:
        for record in table.iter_rows(named=True):
            sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
    else:
        _print_summary(table, sys.stdout)
    return 0


def _print_summary(table: object, stream: object) -> None:
    import polars as pl

    assert isinstance(table, pl.DataFrame)
    counts = (
        table.with_columns(
            pl.coalesce(pl.col("state"), pl.col("submission_status"), pl.lit("NOT SUBMITTED")).alias("where")
        )
        .group_by("where")
        .len()
        .sort("where")
    )
    print(f"{table.height} samples", file=stream)  # type: ignore[call-overload]
    for where, count in counts.iter_rows():
        print(f"  {where:<16} {count}", file=stream)  # type: ignore[call-overload]


def _write_table(table: object, path: str) -> None:
    import polars as pl

    assert isinstance(table, pl.DataFrame)
    if path.endswith(".parquet"):
        table.write_parquet(path)
    elif path.endswith(".csv"):
        safe_csv(table, path)
    else:
        raise InputError(f"--out {path}: use a .csv or .parquet file name")


def _retry(args: argparse.Namespace) -> int:
    from .retry import retry

    states = tuple(s.strip().upper() for s in args.states.split(",") if s.strip()) if args.states else None
    manifest = retry(
        args.plan_dir, args.out, states=states, force=args.force, refresh=not args.no_refresh, **_aws(args)
    )
    print(f"planned {manifest['runs']} runs to retry in {args.out} (plan id {manifest['plan_id']})")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from .submit import cancel

    count = cancel(args.plan_dir, **_aws(args))
    print(f"cancelled {count}")
    return 0


def _child_settings(args: argparse.Namespace) -> int:
    from .child_settings import run

    return run(args)


def _sandbox(args: argparse.Namespace) -> int:
    from .sandbox.local import ensure_running, read_state, stop_running

    if args.action == "start":
        endpoints = ensure_running()
        sys.stdout.buffer.write(orjson.dumps(endpoints) + b"\n")
    elif args.action == "stop":
        print("stopped" if stop_running() else "no sandbox was running")
    else:
        state = read_state()
        print(orjson.dumps(state).decode() if state else "no sandbox is running")
    return 0


def _plan(args: argparse.Namespace) -> int:
    for name in ("max_entries", "max_bytes", "part_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive number")
    list_columns = tuple(c.strip() for c in args.list_columns.split(",") if c.strip())
    try:
        planned = plan(
            args.sheet,
            backend=args.backend,
            defaults=args.defaults,
            sets=args.sets,
            id_column=args.id_column,
            group=args.group,
            list_columns=list_columns,
            skip_invalid=args.skip_invalid,
            inline=args.inline,
            part_size=args.part_size,
            max_entries=args.max_entries,
            max_bytes=args.max_bytes,
        )
        manifest = planned.write(args.out, force=args.force, progress=not args.quiet and sys.stderr.isatty())
    except ValidationError as exc:
        _report_problems(exc.problems, args.out)
        raise
    if planned.problems:
        _report_problems(planned.problems, args.out, skipped=True)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    shards = manifest["shards"]
    modes = sorted({s["mode"] for s in shards})
    total = sum(s["bytes"] for s in shards)
    print(
        f"planned {manifest['runs']} runs of {manifest['sheet']['rows']} rows for {manifest['backend']} in {args.out}"
    )
    print(
        f"  plan id {manifest['plan_id']}; {len(shards)} shard{'s' if len(shards) != 1 else ''} ({', '.join(modes)}), {total:,} bytes"
    )
    if manifest["rejected"]:
        print(f"  {manifest['rejected']} rows rejected: see {os.path.join(args.out, 'rejected.csv')}")
    return 0


def _report_problems(problems: Sequence[Problem], out: str, skipped: bool = False) -> None:
    verb = "skipped" if skipped else "error"
    for problem in problems[:MAX_SHOWN_PROBLEMS]:
        print(f"planner: {verb}: {problem.describe()}", file=sys.stderr)
    if len(problems) > MAX_SHOWN_PROBLEMS:
        if skipped:
            print(
                f"planner: ... and {len(problems) - MAX_SHOWN_PROBLEMS} more, all in {os.path.join(out, 'rejected.csv')}",
                file=sys.stderr,
            )
        else:
            listing = os.path.abspath(os.fspath(out)).rstrip(os.sep) + ".problems.csv"
            write_problems(listing, problems)
            print(
                f"planner: ... and {len(problems) - MAX_SHOWN_PROBLEMS} more; the full list is in {listing}",
                file=sys.stderr,
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ValidationError as exc:
        print(f"planner: {exc}", file=sys.stderr)
        return exc.exit_code
    except PlannerError as exc:
        print(f"planner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("planner: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout was closed early (e.g. piped into head): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # an unexpected failure: one line, the traceback only on request
        if os.environ.get("PLANNER_DEBUG"):
            traceback.print_exc()
        print(
            f"planner: internal error: {type(exc).__name__}: {exc} (set PLANNER_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
