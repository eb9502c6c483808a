"""The ``planner`` command: a thin argparse front over the Python API.

Exit status: 0 success; 2 invalid input (nothing written, nothing submitted);
1 any other failure.  stdout carries only results (``--json`` for scripts); errors,
one clear line each, what is being waited for, and progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson
import polars as pl

from planner import __version__
from planner.backends import MODULES, get_backend
from planner.backends.base import ALREADY_FINAL, CANCELLED, NOT_CANCELLED, STOPPING
from planner.commands import child_settings
from planner.commands.cancel import cancel
from planner.commands.check import check
from planner.commands.child_settings import run
from planner.commands.clean import clean
from planner.commands.outputs import outputs_report, table_format, write_outputs
from planner.commands.plan import MAX_SHOWN_PROBLEMS, plan
from planner.commands.policy import policies
from planner.commands.report import (
    NOT_SUBMITTED,
    failure_groups,  # plotly is imported only to draw a report
    report,
    state_counts,
)
from planner.commands.retry import retry
from planner.commands.status import (
    check_table_path,
    named_samples,
    status,
    unknown_states,
    unknown_warning,
    where_expr,
    write_table,
)
from planner.commands.submit import submit
from planner.commands.watch import Threshold, watch
from planner.core.defaults import check_account, check_kms_key_id
from planner.core.earlier import CHANGED, CHANGED_FILE, FAILED_BEFORE, NEW, SKIPPED, SKIPPED_FILE
from planner.core.plandir import REJECTED_FILE, PlanDirectory, write_problems
from planner.core.progress import stderr_progress
from planner.core.suggest import did_you_mean
from planner.engine.context import staging_options
from planner.errors import (
    Incomplete,
    InputError,
    NothingToRetry,
    PlannerError,
    PreflightError,
    Problem,
    Setting,
    Stopped,
    ValidationError,
    flags,
)
from planner.sandbox import local
from planner.sandbox.local import ensure_running, read_state, state_dir, stop_running
from planner.services.aws import check_options

_ROUTING = """\
Column routing, field names spelled as the API spells them:
  a column named like a per-run field sets that field:
    omics-batch  name, outputUri, priority, outputBucketOwnerId (runSettingId is the sample id)
    omics-run    any scalar StartRun field (workflowVersionName, storageCapacity, ...)
    batch        none: every column is a parameter of the array child
    glue         any scalar StartJobRun field (NumberOfWorkers, WorkerType, ...), not in manifest mode
    polly        cpu, memory, storage (into config.infra)
  tag.KEY sets a run tag; param.KEY sets a workflow parameter; any other column is a parameter
  under its own name (glue: the argument --KEY, always a string).
Precedence, lowest first: the defaults file, then --set, then the sheet row; an empty cell never
overrides.  Row numbers count data rows from 1 (the header is not counted).

Example:
  planner plan samples.csv --backend omics-batch --defaults defaults.toml --out PLAN
"""

_PLAN_HELP = "a plan directory written by `planner plan` (or `planner retry`)"

# The library's messages name a setting by the Python API's keyword (``errors.setting``); while the
# CLI runs they name the flag that gives it here instead.
FLAGS: dict[Setting, str] = {
    "account": "--account",
    "api_rates": "--api-rates",
    "allow_rerun=True": "--allow-rerun",
    "backend": "--backend",
    "cancel_if_failed": "--cancel-if-failed",
    "concurrency": "--concurrency",
    "defaults": "--defaults",
    "endpoint_url": "--endpoint-url",
    "force=True": "--force",
    "group=True": "--group",
    "id_column": "--id-column",
    "index": "--index",
    "inline=True": "--inline",
    "keep": "--keep",
    "list_columns": "--list-columns",
    "max_attempts": "--max-attempts",
    "out": "--out",
    "parameter_template": "--parameter-template",
    "profile": "--profile",
    "refresh=False": "--no-refresh",
    "refresh=True": "--refresh",
    "region": "--region",
    "rename": "--rename",
    "runs=True": "--runs",
    "sandbox=True": "--sandbox",
    "sets": "--set",
    "skip_done": "--skip-done",
    "staging": "--staging",
    "staging_kms_key": "--staging-kms-key",
    "states": "--states",
    "why": "--why",
    "workflow_lookup=False": "--no-workflow-lookup",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, with "did you mean" for a mistyped command, choice or option."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{_hint(self, message)}; see `{self.prog} --help`\n")


_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<given>[^']*)' \(choose from (?P<choices>.*)\)")


def _hint(parser: argparse.ArgumentParser, message: str) -> str:
    found = _INVALID_CHOICE.search(message)
    if found:
        choices = re.findall(r"'([^']*)'", found["choices"])
        return did_you_mean(found["given"], choices)
    if message.startswith("unrecognized arguments: "):
        options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
        for given in message.removeprefix("unrecognized arguments: ").split():
            if given.startswith("--"):
                hint = did_you_mean(given.split("=", 1)[0], options)
                if hint:
                    return hint
    return ""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; one a command does not know is refused by that command, naming its closest option."""
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="planner",
        description="Plan, stage, submit and track per-sample workflow runs on AWS HealthOmics, "
        "AWS Batch, AWS Glue and Polly.",
        epilog="Run `planner COMMAND --help` for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"planner {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    p = commands.add_parser(
        "plan",
        help="validate, merge and shard a sample sheet into a plan directory (no AWS needed)",
        description="Turn a sample sheet and a defaults file into a plan directory: every run validated\n"
        "against the target API, merged with the defaults, packed into shards within the API's limits,\n"
        "and hashed (sha256, md5, predicted S3 ETag).  Reads SHEET and --defaults; writes PLAN/.\n"
        "Nothing is written unless every row is valid (or --skip-invalid is given).",
        epilog=_ROUTING,
        formatter_class=raw,
    )
    p.add_argument(
        "sheet", metavar="SHEET", help=".csv, .tsv/.tab, .parquet or .ndjson/.jsonl; a path, a glob or s3://"
    )
    p.add_argument("--backend", "-b", required=True, metavar="B", help=f"the target: {', '.join(MODULES)}")
    p.add_argument(
        "--defaults", "-d", metavar="FILE", help="the default per-run request, TOML or JSON, in the API's shape"
    )
    p.add_argument("--out", "-o", required=True, metavar="PLAN", help="the plan directory to write (must not exist)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a default for every run, e.g. --set outputUri=s3://b/out/ --set parameters.threads=8",
    )
    p.add_argument("--id-column", metavar="COLUMN", help="the sample id column (default: sample_id, sample or id)")
    p.add_argument("--group", action="store_true", help="allow several rows per sample (one per lane)")
    p.add_argument("--list-columns", metavar="A,B", default="", help="with --group: columns gathered into lists")
    p.add_argument(
        "--skip-invalid", action="store_true", help="plan the valid rows; list the rest in PLAN/rejected.csv"
    )
    p.add_argument("--inline", action="store_true", help="omics-batch: every shard inline (≤ 100 runs), nothing staged")
    p.add_argument("--max-entries", type=int, metavar="N", help="at most N runs per shard (within the service's limit)")
    p.add_argument("--max-bytes", type=int, metavar="N", help="at most N bytes per shard file")
    p.add_argument("--part-size", type=int, metavar="BYTES", help="multipart part size the ETag is predicted for")
    p.add_argument("--force", action="store_true", help="replace an existing plan directory never submitted")
    p.add_argument(
        "--skip-done",
        action="append",
        default=[],
        metavar="EARLIER_PLAN",
        help="leave out the samples this earlier plan (a directory or a glob; repeatable) ran with the same "
        "settings and that completed or are still running; changed ones are planned and listed",
    )
    p.add_argument("--json", action="store_true", help="print plan.json on stdout instead of a summary")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _preflight_plan_options(p)
    p.set_defaults(handler=_plan)

    s = commands.add_parser(
        "submit",
        help="stage a plan's shards on S3 and submit its runs (safe to run again after a crash)",
        description="Stage the shards the service reads from S3 (content-addressed, never overwritten, ETag\n"
        "checked) and submit every run.  Every creating call is journaled in PLAN/ledger.sqlite before\n"
        "and after it is made, and idempotency tokens and names derive from the plan, so running submit\n"
        "again resumes without duplicates.  Reads PLAN/; writes PLAN/ledger.sqlite.",
        epilog="Examples:\n  planner submit PLAN --sandbox\n  planner submit PLAN --dry-run | head\n"
        "  planner submit PLAN --profile lab --region eu-west-1 --rate 5",
        formatter_class=raw,
    )
    s.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    s.add_argument("--staging", metavar="S3_URI", help="where to stage shards (default: [staging] uri of the defaults)")
    s.add_argument(
        "--staging-kms-key",
        metavar="KEY",
        help="stage with SSE-KMS under this KMS key (id, ARN or alias; default: [staging] kms_key_id)",
    )
    s.add_argument(
        "--dry-run", action="store_true", help="build and check every request, print it as JSON; send nothing"
    )
    s.add_argument("--concurrency", type=int, default=8, metavar="N", help="requests in flight at once (default 8)")
    s.add_argument("--rate", type=float, metavar="PER_SECOND", help="at most this many creating requests per second")
    s.add_argument("--json", action="store_true", help="print what was done as one JSON object")
    s.add_argument(
        "--watch", action="store_true", help="then watch the runs until nothing can change (as status --watch)"
    )
    s.add_argument("--interval", type=_seconds, default=30.0, metavar="SECONDS", help="with --watch (default 30)")
    s.add_argument("--cancel-if-failed", metavar="N|P%", help="with --watch: as status --watch --cancel-if-failed")
    s.add_argument(
        "--check", action="store_true", help="first `planner check` (workflow, inputs, quota); stop at a problem"
    )
    s.add_argument(
        "--allow-rerun",
        action="store_true",
        help="submit even samples another plan already ran with identical settings (refused otherwise)",
    )
    _aws_options(s)
    s.set_defaults(handler=_with_staging_key(_submit))

    t = commands.add_parser(
        "status",
        help="ask the service where every sample is",
        description="Refresh the per-sample state from the service (only what can still change), print a\n"
        "summary with failures grouped by reason, and optionally write the per-sample table: sample id,\n"
        "sheet row, shard, submission id, run id, submission status, run state, reason, log location.\n"
        "Reads PLAN/; updates PLAN/ledger.sqlite.",
        epilog="Examples:\n  planner status PLAN --sandbox\n"
        "  planner status PLAN --watch --interval 60 --out status.csv",
        formatter_class=raw,
    )
    t.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    t.add_argument("--out", metavar="FILE", help="write the per-sample table to FILE.csv, .parquet or .jsonl")
    t.add_argument("--json", action="store_true", help="print the summary and failure groups as one JSON object")
    t.add_argument(
        "--watch",
        action="store_true",
        help="refresh until nothing can change any more; exit 1 if any sample failed or was cancelled",
    )
    t.add_argument("--interval", type=_seconds, default=30.0, metavar="SECONDS", help="with --watch (default 30)")
    t.add_argument("--no-refresh", action="store_true", help="show what the ledger knows without asking the service")
    t.add_argument(
        "--why",
        action="append",
        metavar="SAMPLE[,SAMPLE...]|all",
        help="ask the service now about these samples' runs, failure reason included, and print them (HealthOmics "
        "asks only a few failure reasons per batch at a refresh); `all`: every failed sample not asked yet",
    )
    t.add_argument(
        "--cancel-if-failed",
        metavar="N|P%",
        help="with --watch: once more than N samples (or P%% of the plan) have failed, cancel everything still "
        "pending or running, say so, and exit 1 (e.g. 50, or 5%%)",
    )
    _aws_options(t)
    t.set_defaults(handler=_status)

    r = commands.add_parser(
        "retry",
        help="plan again the samples whose runs failed or were cancelled, or failed to submit",
        description="Refresh the status of PLAN, then write NEW_PLAN of only the samples in the given states\n"
        "(or that failed to submit), each with exactly its original settings (plus --set).  A retry is a\n"
        "new submission: its runs always start anew.  Submit NEW_PLAN as usual.  Reads PLAN/ (and asks\n"
        "the service, recording what it says in PLAN/ledger.sqlite); writes NEW_PLAN/ only.",
        epilog="Examples:\n  planner retry PLAN --out PLAN-retry1 --sandbox\n"
        "  planner retry PLAN --out R2 --set workflowVersionName=v2 --set cacheBehavior=CACHE_ALWAYS",
        formatter_class=raw,
    )
    r.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    r.add_argument("--out", "-o", required=True, metavar="NEW_PLAN", help="the new plan directory")
    r.add_argument(
        "--states",
        metavar="A,B",
        help="run states to retry (default: the backend's failed states: FAILED,CANCELLED; "
        "batch FAILED; glue FAILED,ERROR,TIMEOUT,STOPPED,EXPIRED)",
    )
    r.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a setting for every retried run",
    )
    r.add_argument("--force", action="store_true", help="replace NEW_PLAN if it exists and was never submitted")
    r.add_argument("--no-refresh", action="store_true", help="use the states the ledger knows")
    _aws_options(r)
    r.set_defaults(handler=_retry)

    c = commands.add_parser(
        "cancel",
        help="cancel what a plan submitted that is still pending or running",
        description="Cancel the batches, array jobs or runs a plan submitted that have not finished; what has\n"
        "finished is left alone.  Reports per batch, job or run what was cancelled, what had already\n"
        "finished, and what could not be cancelled (exit 1 then).  Polly's API has no cancel: for a\n"
        "Polly plan this says so and exits 1.  Reads PLAN/ and asks the service; records each outcome\n"
        "in PLAN/ledger.sqlite.",
        epilog="Example:\n  planner cancel PLAN --sandbox",
        formatter_class=raw,
    )
    c.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    c.add_argument("--json", action="store_true", help="print the outcome of every batch, job or run as JSON")
    _aws_options(c)
    c.set_defaults(handler=_cancel)

    w = commands.add_parser(
        "report",
        help="write one self-contained HTML report of a plan: progress, failures by reason, every sample",
        description="Write one HTML file that opens offline (charts and data inlined) and can be mailed or\n"
        "attached to a ticket: what was planned, the state counts, progress over time (from each status\n"
        "refresh), failures grouped by reason with their samples, and a searchable per-sample table with\n"
        "links to the service's console.  Reads PLAN/ and its ledger; needs the report extra\n"
        "(pip install 'planner[report]').",
        epilog="Examples:\n  planner report PLAN --out report.html\n"
        "  planner report PLAN --out r.html --refresh --sandbox",
        formatter_class=raw,
    )
    w.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    w.add_argument("--out", "-o", required=True, metavar="FILE.html", help="the report to write")
    w.add_argument("--refresh", action="store_true", help="ask the service first (default: the ledger's last look)")
    _aws_options(w)
    w.set_defaults(handler=_report)

    n = commands.add_parser(
        "clean",
        help="remove what a plan staged on S3 (and, with --runs, its HealthOmics runs) once every run has ended",
        description="Remove the objects this plan staged on S3 (only those its ledger recorded, each checked by\n"
        "its ETag first), once every sample has ended.  With --runs, also delete the plan's HealthOmics\n"
        "runs or batches that have ended (DeleteRunBatch, DeleteRun), which frees the retained-run\n"
        "quota.  Nothing another plan staged, and nothing still running, is ever touched.  Reads PLAN/\n"
        "and asks the service; records what it removed in PLAN/ledger.sqlite (the plan itself is kept).",
        epilog="Examples:\n  planner clean PLAN --dry-run\n  planner clean PLAN --runs --sandbox",
        formatter_class=raw,
    )
    n.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    n.add_argument("--runs", action="store_true", help="also delete the plan's HealthOmics runs or batches")
    n.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    n.add_argument("--json", action="store_true", help="print what was (or would be) removed as JSON")
    _aws_options(n)
    n.set_defaults(handler=_clean)

    _policy_parser(commands)
    _check_parser(commands)
    _outputs_parser(commands)

    k = commands.add_parser(
        "child-settings",
        help="inside an AWS Batch array child (or a Glue manifest run): print this child's own settings",
        description="Read this child's entry of the staged shard with ranged GETs checked against the recorded\n"
        "ETags, and print it as JSON (or as export lines).  Inside an AWS Batch child every location comes\n"
        "from the environment the planner set on the job; --index overrides AWS_BATCH_JOB_ARRAY_INDEX.",
        epilog='Example (in a job script):\n  eval "$(planner child-settings --export)"',
        formatter_class=raw,
    )
    child_settings.add_arguments(k)
    k.set_defaults(handler=_child_settings)

    x = commands.add_parser(
        "sandbox",
        help="start, stop or show the local AWS sandbox used by --sandbox",
        description=getattr(local, "HELP", "The local sandbox used by --sandbox."),
        epilog="Examples:\n  planner sandbox start --failure-rate 0.3   # then plan, submit --sandbox --watch, retry\n"
        "  planner sandbox start --failure-rate 0.3 --run-seconds 20   # then submit --watch --cancel-if-failed 2\n"
        "  planner sandbox status\n  planner sandbox stop",
        formatter_class=raw,
    )
    x.add_argument("action", choices=["start", "stop", "status"])
    x.add_argument(
        "--failure-rate",
        type=_fraction,
        metavar="F",
        help="start: fail this share (0..1) of the HealthOmics and Polly runs, to try retry and cancel",
    )
    x.add_argument(
        "--run-seconds",
        type=_run_seconds,
        metavar="S",
        help="start: HealthOmics runs run for about S seconds each (from S/2 to 3S/2, so the runs of a batch "
        "end one after another and --cancel-if-failed can fire while some still run)",
    )
    x.add_argument(
        "--api-rates",
        metavar="documented|off|FACTOR",
        help="start: HealthOmics answers ThrottlingException above its documented default API rates (documented, "
        "the default), a factor of them (e.g. 10), or never (off)",
    )
    x.add_argument("--json", action="store_true", help="start, status: the endpoints (or the state) as JSON")
    x.set_defaults(handler=_sandbox)
    return parser


def _run_seconds(text: str) -> float:
    """An argparse type: a positive number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds above 0, at most 86400")
    return value


def _fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1 (e.g. 0.2)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not from 0 to 1 (e.g. 0.2 fails one run in five)")
    return value


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
    group.add_argument("--sandbox", action="store_true", help="use the local sandbox on loopback (started if needed)")
    group.add_argument("--endpoint-url", metavar="URL", help="send every call to this endpoint")
    group.add_argument("--profile", metavar="NAME", help="the AWS profile to use")
    group.add_argument("--region", metavar="REGION", help="the AWS region")
    group.add_argument("--retry-mode", choices=["standard", "adaptive"], default="standard", help="botocore retry mode")
    group.add_argument(
        "--max-attempts", type=int, default=8, metavar="N", help="botocore attempts per call (default 8)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _aws(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "sandbox": args.sandbox,
        "endpoint_url": args.endpoint_url,
        "profile": args.profile,
        "region": args.region,
        "retry_mode": args.retry_mode,
        "max_attempts": args.max_attempts,
        "progress": stderr_progress(args.quiet),
    }


def _write_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS) + b"\n")


# ---------------------------------------------------------------- plan


def _plan(args: argparse.Namespace) -> int:
    for name in ("max_entries", "max_bytes", "part_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive number")
    if args.backend not in MODULES:
        raise InputError(
            f"--backend {args.backend!r}{did_you_mean(args.backend, list(MODULES))}: choose one of {', '.join(MODULES)}"
        )
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
            skip_done=args.skip_done,
            **_preflight_plan_arguments(args),
        )
        manifest = planned.write(args.out, force=args.force, progress=stderr_progress(args.quiet))
    except ValidationError as exc:
        _report_problems(exc.problems, args.out)
        exc.reported = True  # type: ignore[attr-defined]
        raise
    if planned.problems:
        _report_problems(planned.problems, args.out, skipped=True)
    if args.json:
        with open(os.path.join(args.out, "plan.json"), "rb") as handle:  # as written, with its workflow record
            sys.stdout.buffer.write(handle.read())
        return 0
    shards = manifest.shards
    modes = sorted({s.mode for s in shards})
    total = sum(s.bytes for s in shards)
    rows = manifest.sheet.rows
    print(f"planned {_n(manifest.runs, 'run')} of {_n(rows, 'row')} for {manifest.backend} in {args.out}")
    print(f"  plan id {manifest.plan_id}; {_n(len(shards), 'shard')} ({', '.join(modes)}), {_size(total)}")
    if manifest.rejected:
        print(f"  {_n(manifest.rejected, 'row')} rejected: see {os.path.join(args.out, REJECTED_FILE)}")
    if planned.earlier is not None:
        _print_earlier(planned.earlier, args.out)
    return 0


def _print_earlier(earlier: Any, out: str) -> None:
    """What --skip-done found: how many samples were new, changed, done (skipped) and failed before."""
    counts = earlier.counts
    print(
        f"  against {len(earlier.plans)} earlier plan{'s' if len(earlier.plans) != 1 else ''}: "
        f"{counts[NEW]:,} new, {counts[CHANGED]:,} changed, {counts[SKIPPED]:,} done (skipped), "
        f"{counts[FAILED_BEFORE]:,} failed before"
    )
    if counts[SKIPPED]:
        print(f"  skipped as done: see {os.path.join(out, SKIPPED_FILE)}")
    if counts[CHANGED]:
        shown = earlier.changed_ids(10)
        more = f" and {counts[CHANGED] - len(shown):,} more" if counts[CHANGED] > len(shown) else ""
        print(
            f"  changed settings since an earlier run, planned again: {', '.join(shown)}{more} "
            f"(all in {os.path.join(out, CHANGED_FILE)})"
        )


def _size(count: int) -> str:
    """Bytes for people: 87.8 MB (decimal units, as S3 and the AWS consoles show them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _report_problems(problems: Sequence[Problem], out: str, skipped: bool = False) -> None:
    verb = "skipped" if skipped else "error"
    for problem in problems[:MAX_SHOWN_PROBLEMS]:
        print(f"planner: {verb}: {problem.describe()}", file=sys.stderr)
    if len(problems) > MAX_SHOWN_PROBLEMS:
        more = len(problems) - MAX_SHOWN_PROBLEMS
        if skipped:
            print(f"planner: ... and {more} more, all in {os.path.join(out, REJECTED_FILE)}", file=sys.stderr)
        else:
            listing = os.path.abspath(os.fspath(out)).rstrip(os.sep) + ".problems.csv"
            write_problems(listing, problems)
            print(f"planner: ... and {more} more; the full list is in {listing}", file=sys.stderr)


# ---------------------------------------------------------------- submit, status, retry, cancel


def _submit(args: argparse.Namespace) -> int:
    # Every option is checked before the first call: nothing is sent on a command line that is wrong.
    if args.cancel_if_failed and not args.watch:
        raise InputError("--cancel-if-failed goes with --watch")
    threshold = Threshold.parse(args.cancel_if_failed) if args.cancel_if_failed and not args.dry_run else None
    access = _aws(args)
    if args.sandbox and args.watch and not args.dry_run:
        access["endpoints"] = ensure_running()  # once, for the submit and the watch after it
    try:
        report = submit(
            args.plan_dir,
            staging=args.staging,
            dry_run=args.dry_run,
            concurrency=args.concurrency,
            rate=args.rate,
            check=args.check,
            cancel_if_failed=threshold,
            interval=args.interval,
            allow_rerun=args.allow_rerun,
            **access,
        )
    except PreflightError as exc:
        _report_problems(exc.problems, args.plan_dir)
        exc.reported = True  # type: ignore[attr-defined]
        raise
    except Incomplete as exc:
        _print_submit(exc.report, args, sys.stderr if args.dry_run else sys.stdout)
        if not args.watch or args.dry_run:
            raise
        # What was submitted still runs: watch it (and keep its failure threshold) all the same.
        print(f"planner: error: {exc}; watching what was submitted", file=sys.stderr)
        return max(1, _watch(args, access))
    except KeyboardInterrupt:
        print(
            "planner: interrupted: nothing more was sent, and the calls in flight were journaled; "
            f"`planner submit {args.plan_dir}{_access_flags(args)}` resumes",
            file=sys.stderr,
        )
        return 130
    _print_submit(report, args, sys.stderr if args.dry_run else sys.stdout)
    if args.watch and not args.dry_run:
        return _watch(args, access)
    return 0


def _print_submit(report: Any, args: argparse.Namespace, stream: Any) -> None:
    if args.json and not args.dry_run:
        _write_json(report.to_json())
        return
    for line in report.lines():
        print(line, file=stream)
    if not args.dry_run and not report.failed and not args.watch:
        print(f"  next: planner status {args.plan_dir}{_access_flags(args)} --watch", file=stream)


def _access_flags(args: argparse.Namespace) -> str:
    """The access options a suggested next command needs to reach the same service."""
    flags = " --sandbox" if args.sandbox else ""
    for option in ("endpoint_url", "profile", "region"):
        value = getattr(args, option, None)
        if value:
            flags += f" --{option.replace('_', '-')} {value}"
    return flags


def _status(args: argparse.Namespace) -> int:
    access = _aws(args)
    if args.cancel_if_failed and not args.watch:
        raise InputError("--cancel-if-failed goes with --watch")
    why = args.why or None
    if why and args.watch:
        raise InputError("--why goes without --watch")
    if args.out:
        check_table_path(args.out)  # before the refresh (or a whole watch) is spent
    if args.watch:
        return _watch(args, access)
    table = status(args.plan_dir, refresh=not args.no_refresh, why=why, **access)
    if args.out:
        write_table(table, args.out)
        print(f"planner: wrote the table of {_n(table.height, 'sample')} to {args.out}", file=sys.stderr)
    _warn_unknown(args.plan_dir, table)
    summary = _summary(table, args.plan_dir)
    named = [sample for sample in named_samples(why) if sample != "all"]
    if named:
        # each sample asked about, as the service answered
        rows = table.filter(pl.col("id").is_in(named)).select("id", "state", "submission_status", "reason", "log")
        summary["why"] = rows.to_dicts()
    if args.json:
        _write_json(summary)
    else:
        for row in summary.get("why", []):
            where = row["state"] or row["submission_status"] or "NOT SUBMITTED"
            print(f"{row['id']}: {where}: {row['reason'] or 'no reason given'}", file=sys.stdout)
        _print_summary(summary, sys.stdout)
    return 0


def _summary(table: Any, plan_dir: str) -> dict[str, Any]:
    groups = [{"reason": g.reason, "count": g.count, "samples": list(g.samples)} for g in failure_groups(table)]
    summary = {"samples": table.height, "counts": state_counts(table), "failures": groups}
    skipped = PlanDirectory(plan_dir).manifest.skip_done
    if skipped is not None:  # left out when planned (--skip-done): counted apart, not among the samples
        summary["skipped_as_done"] = {"samples": skipped.done, "plans": list(skipped.plans)}
    return summary


def _n(count: int, noun: str) -> str:
    """``1 run``, ``2 runs``, ``12,000 runs``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _print_summary(summary: dict[str, Any], stream: Any) -> None:
    print(_n(summary["samples"], "sample"), file=stream)
    for where, count in summary["counts"].items():
        print(f"  {where:<16} {count:,}", file=stream)
    skipped = summary.get("skipped_as_done")
    if skipped and skipped["samples"]:
        plans = ", ".join(str(p.get("path")) for p in skipped["plans"])
        print(f"not in this plan: {skipped['samples']:,} samples skipped as done (already run in {plans})", file=stream)
    if summary["failures"]:
        print("failed or cancelled, by reason, largest first:", file=stream)
        for group in summary["failures"]:
            shown = ", ".join(group["samples"])
            more = group["count"] - len(group["samples"])
            tail = f" and {more:,} more" if more > 0 else ""
            print(f"  {group['count']:>7,}  {group['reason']}  ({shown}{tail})", file=stream)


def _watch(args: argparse.Namespace, access: dict[str, Any]) -> int:
    """status --watch (and submit --watch): refresh until settled, or until the failure threshold."""
    threshold = Threshold.parse(args.cancel_if_failed) if args.cancel_if_failed else None
    refresh = not getattr(args, "no_refresh", False)
    snapshot = watch(
        args.plan_dir,
        interval=args.interval,
        cancel_if_failed=threshold,
        refresh=refresh,
        on_refresh=_print_refresh,
        **access,
    )
    table = snapshot.table
    if getattr(args, "out", None):
        write_table(table, args.out)
        print(f"planner: wrote the table of {table.height:,} samples to {args.out}", file=sys.stderr)
    summary = _summary(table, args.plan_dir)
    if snapshot.cancelled is not None:
        cancelled = snapshot.cancelled
        summary["cancelled"] = cancelled.to_json()
        print(
            f"planner: {snapshot.failed:,} samples failed, more than {threshold}: {cancelled.brief()}; "
            "the reason is recorded in the ledger",
            file=sys.stderr,
        )
    if getattr(args, "json", False):
        _write_json(summary)
    else:
        _print_summary(summary, sys.stdout)
    if snapshot.cancelled is not None:
        return 1
    # Exit 0 only when every sample reached its success state: a script's
    # `planner submit --watch && next-step` stops at anything else, told what happened.
    unsuccessful = _unsuccessful(args, table, sum(group["count"] for group in summary["failures"]))
    for line in unsuccessful:
        print(f"planner: {line}", file=sys.stderr)
    return 1 if unsuccessful else 0


def _unsuccessful(args: argparse.Namespace, table: Any, failed: int) -> list[str]:
    """What kept samples of a settled watch from their success state, one line per kind, with what to do."""
    spec = get_backend(PlanDirectory(args.plan_dir).manifest.backend)
    total, flags = table.height, _access_flags(args)
    if table.filter(pl.col("state").is_in(sorted(spec.success_states))).height == total:
        return []
    lines = []
    if failed:
        lines.append(
            f"{failed:,} of {total:,} samples failed or were cancelled; "
            f"`planner retry {args.plan_dir} --out NEW_PLAN{flags}` plans them again"
        )
    where = table.select(where_expr().alias("where")).get_column("where")
    never = int((where == NOT_SUBMITTED).sum())
    if never:
        lines.append(
            f"{never:,} of {total:,} samples were never submitted (NOT SUBMITTED): "
            f"`planner submit {args.plan_dir}{flags}` submits them"
        )
    deleted = int((where == "DELETED").sum())
    if deleted:
        lines.append(
            f"{deleted:,} of {total:,} samples' runs were deleted before a refresh saw them end: their outcome is "
            f"not known; `planner retry {args.plan_dir} --out NEW_PLAN --states DELETED{flags}` plans them again"
        )
    unknown = unknown_states(table, spec)
    if unknown:
        shown = ", ".join(f"{state} {count:,}" for state, count in unknown.items())
        lines.append(f"{sum(unknown.values()):,} of {total:,} samples are in states planner does not know ({shown})")
    if not lines:
        lines.append(f"{total:,} samples, not all in {', '.join(sorted(spec.success_states))}")
    return lines


def _warn_unknown(plan_dir: str, table: Any) -> None:
    spec = get_backend(PlanDirectory(plan_dir).manifest.backend)
    for state, count in unknown_states(table, spec).items():
        print(f"planner: warning: {unknown_warning(state, count, spec)}", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    access = _aws(args)
    summary = report(args.plan_dir, args.out, refresh=args.refresh, **access)
    extra = f"; the full table is in {summary.table_csv}" if getattr(summary, "table_csv", None) else ""
    print(f"wrote {args.out} ({_size(summary.bytes)}, {_n(summary.samples, 'sample')}){extra}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    done = clean(args.plan_dir, runs=args.runs, dry_run=args.dry_run, **_aws(args))
    if args.json:
        _write_json(done.to_json())
    else:
        for line in done.lines():
            print(line)
    return 0 if not done.kept and all(o.outcome != "kept" for o in done.runs) else 1


def _print_refresh(snapshot: Any) -> None:
    moment = dt.datetime.fromtimestamp(snapshot.at).strftime("%H:%M:%S")
    counts = ", ".join(f"{where} {count:,}" for where, count in snapshot.counts.items())
    changes = ", ".join(f"{where} {delta:+,}" for where, delta in snapshot.changes.items())
    tail = f"  (changed: {changes})" if changes else ("" if snapshot.settled or snapshot.first else "  (no change)")
    print(f"[{moment}] {counts}{tail}", file=sys.stderr)


def _retry(args: argparse.Namespace) -> int:
    states = tuple(s for s in args.states.split(",") if s.strip()) if args.states else None
    access = _aws(args)
    access.pop("progress")
    try:
        manifest = retry(
            args.plan_dir,
            args.out,
            states=states,
            sets=args.sets,
            force=args.force,
            refresh=not args.no_refresh,
            **access,
        )
    except NothingToRetry as exc:
        print(f"planner: {exc}; nothing was written", file=sys.stderr)
        return exc.exit_code
    print(f"planned {_n(manifest.runs, 'run')} to retry in {args.out} (plan id {manifest.plan_id})")
    print(f"  next: planner submit {args.out}{_access_flags(args)}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    report = cancel(args.plan_dir, **_aws(args))
    if args.json:
        _write_json(report.to_json())
    else:
        for outcome in report.outcomes:
            if outcome.outcome != ALREADY_FINAL:
                detail = f": {outcome.detail}" if outcome.detail else ""
                print(f"  {outcome.target}: {outcome.outcome}{detail}")
        final = sum(o.samples for o in report.outcomes if o.outcome == ALREADY_FINAL)
        # A HealthOmics batch cancel is asynchronous: asked, STOPPING until GetBatch shows it CANCELLED.
        stopping = f"{report.count(STOPPING)} stopping (asked, not yet ended); " if report.count(STOPPING) else ""
        print(
            f"cancelled {report.count(CANCELLED)}; {stopping}{report.count(NOT_CANCELLED)} could not be cancelled; "
            f"{_n(final, 'sample')} had already finished"
        )
    return 0 if report.complete else 1


def _child_settings(args: argparse.Namespace) -> int:
    return run(args)


# ---------------------------------------------------------------- security: --staging-kms-key, policy


def _with_staging_key(handler: Any) -> Any:
    """``handler`` with ``--staging-kms-key`` in force for the contexts it opens."""

    def run(args: argparse.Namespace) -> int:
        with staging_options(kms_key_id=args.staging_kms_key):
            return int(handler(args))

    return run


def _policy_parser(commands: Any) -> None:
    y = commands.add_parser(
        "policy",
        help="print the least-privilege IAM policies this plan needs (submitter, service role, check, clean), as JSON",
        description="Print, as JSON, the IAM policy documents this plan needs: `submitter`, the exact actions\n"
        "planner submit/status/retry/cancel call for this backend, scoped to this plan's staged objects, the\n"
        "job queue and definition, the Glue job or the workflow, with iam:PassRole on the role it passes;\n"
        "`service_role`, read access to exactly the staged shards and indexes (kms:Decrypt on the\n"
        "staging key when there is one) for the role that reads them; `check`, what planner check reads\n"
        "(the workflow, the retained-run quota, the input buckets and folders); and `clean`, what planner\n"
        "clean calls (the status refresh, the staged objects' deletion, and with --runs DeleteRunBatch or\n"
        "DeleteRun).  A document the plan does not need is null.  Reads PLAN/ only; no AWS call.",
        epilog="Examples:\n  planner policy PLAN > policies.json\n"
        "  planner policy PLAN --only submitter --region eu-west-1 --account 123456789012",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    y.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    y.add_argument("--staging", metavar="S3_URI", help="where the shards are staged (default: [staging] uri)")
    y.add_argument("--staging-kms-key", metavar="KEY", help="the staging KMS key (default: [staging] kms_key_id)")
    y.add_argument("--region", metavar="REGION", help="the region in the ARNs (default: the plan's, else *)")
    y.add_argument("--account", metavar="ID", help="the account in the ARNs (default: the plan's, else *)")
    y.add_argument(
        "--expected-bucket-owner",
        metavar="ID",
        help="the staging bucket's account, required of every S3 access (default: [staging] expected_bucket_owner)",
    )
    y.add_argument(
        "--only",
        choices=["submitter", "service-role", "check", "clean"],
        help="print only this policy document (for aws iam put-role-policy --policy-document file://...)",
    )
    y.set_defaults(handler=_policy)


def _policy(args: argparse.Namespace) -> int:
    check_options(region=args.region, endpoint_url=None, max_attempts=8)
    if args.region is not None and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", args.region):
        # No endpoint is involved, so botocore's looser rule would let an ARN no IAM matches through.
        raise InputError(f"--region {args.region!r}: not an AWS region name (like us-east-1 or eu-central-2)")
    if args.staging_kms_key is not None:
        check_kms_key_id(args.staging_kms_key, "--staging-kms-key")
    for option in ("account", "expected_bucket_owner"):
        if getattr(args, option) is not None:
            check_account(getattr(args, option), f"--{option.replace('_', '-')}")
    found = policies(
        args.plan_dir,
        staging=args.staging,
        kms_key_id=args.staging_kms_key,
        expected_bucket_owner=args.expected_bucket_owner,
        region=args.region,
        account=args.account,
    )
    if args.only is None:
        sys.stdout.buffer.write(orjson.dumps(found.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    document = found.document(args.only)
    if document is None:
        raise InputError(f"this plan needs no {args.only} policy: {'; '.join(found.notes)}")
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    for note in found.notes:
        print(f"planner: note: {note}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- outputs: the next stage's sheet


def _outputs_parser(commands: Any) -> None:
    o = commands.add_parser(
        "outputs",
        help="where each sample's run wrote, as a sample sheet the next stage plans from",
        description="Write one row per sample whose run is in --states (default: the runs that succeeded): the\n"
        "sample id (under the sheet's id column name), the sheet columns named by --keep, run_id, run_uuid,\n"
        "state, and where the run wrote: HealthOmics, runOutputUri from GetRun (one call per run); Batch,\n"
        "Glue and Polly, the values of [workflow] output_parameters.  --check asks S3 whether each location\n"
        "holds at least one object (one ListObjectsV2 per location).  The file is a sample sheet: plan the\n"
        "next stage from it.  Reads PLAN/ (its ledger as the last status left it, or --refresh) and asks the\n"
        "service; writes FILE only.",
        epilog="Examples:\n  planner outputs PLAN --out stage1.csv --keep strandedness --sandbox\n"
        "  planner plan stage1.csv --backend omics-batch --defaults stage2.toml --out STAGE2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    o.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    o.add_argument(
        "--out", "-o", required=True, metavar="FILE", help="the table to write: .csv, .tsv, .parquet or .jsonl"
    )
    o.add_argument("--keep", metavar="A,B", default="", help="columns of the plan's sheet to carry over")
    o.add_argument(
        "--states", metavar="A,B", help="run states to include (default: COMPLETED; SUCCEEDED for batch and glue)"
    )
    o.add_argument("--check", action="store_true", help="confirm each location holds at least one object on S3")
    o.add_argument(
        "--no-run-columns",
        action="store_true",
        help="leave out run_id, run_uuid and state (they would reach the next stage as parameters)",
    )
    o.add_argument(
        "--rename",
        metavar="OLD=NEW,...",
        default="",
        help="name columns for the next stage, e.g. runOutputUri=rnaseq_results (a parameter of stage 2)",
    )
    o.add_argument("--refresh", action="store_true", help="ask the service for the states first (as status)")
    o.add_argument("--concurrency", type=int, default=16, metavar="N", help="calls in flight at once (default 16)")
    _aws_options(o)
    o.set_defaults(handler=_outputs)


def _outputs(args: argparse.Namespace) -> int:
    table_format(args.out)  # a name the command cannot write is refused before any call
    states = [s for s in args.states.split(",") if s.strip()] if args.states else None
    rename = {}
    for pair in (p for p in args.rename.split(",") if p.strip()):
        old, equals, new = pair.partition("=")
        if not equals:
            raise InputError(f"--rename {pair!r}: give OLD=NEW, e.g. runOutputUri=rnaseq_results")
        rename[old.strip()] = new.strip()
    found = outputs_report(
        args.plan_dir,
        keep=[c for c in args.keep.split(",") if c.strip()],
        states=states,
        check=args.check,
        run_columns=not args.no_run_columns,
        rename=rename,
        refresh=args.refresh,
        concurrency=args.concurrency,
        **_aws(args),
    )
    write_outputs(found.table, args.out)
    calls = ", ".join(f"{count:,} {operation}" for operation, count in found.calls.items()) or "no calls"
    print(f"wrote {found.table.height:,} samples to {args.out} ({calls})")
    if found.missing:
        print(f"planner: {found.missing:,} output locations hold nothing (column outputs_found)", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- preflight: check, and its plan options


def _preflight_plan_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "preflight (HealthOmics: the workflow's parameter template; any backend: the inputs on S3)"
    )
    group.add_argument(
        "--parameter-template",
        metavar="FILE",
        help="the workflow's parameter template, offline: GetWorkflow's JSON, or the template itself "
        "(default: [workflow] parameter_template, else read from HealthOmics when credentials are at hand)",
    )
    group.add_argument(
        "--no-workflow-lookup",
        action="store_true",
        help="never ask HealthOmics for the workflow (also PLANNER_NO_WORKFLOW_LOOKUP=1)",
    )
    group.add_argument(
        "--check-inputs", action="store_true", help="ask S3 whether every s3:// input exists (as planner check)"
    )
    group.add_argument("--concurrency", type=int, default=32, metavar="N", help="with --check-inputs (default 32)")
    group.add_argument("--sandbox", action="store_true", help="read the workflow (and inputs) from the sandbox")
    group.add_argument("--endpoint-url", metavar="URL", help="send the preflight's calls to this endpoint")
    group.add_argument("--profile", metavar="NAME", help="the AWS profile to use")
    group.add_argument("--region", metavar="REGION", help="the AWS region")


def _preflight_plan_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "parameter_template": args.parameter_template,
        "workflow_lookup": not args.no_workflow_lookup,
        "check_inputs": args.check_inputs,
        "concurrency": args.concurrency,
        "sandbox": args.sandbox,
        "endpoint_url": args.endpoint_url,
        "profile": args.profile,
        "region": args.region,
    }


def _check_parser(commands: Any) -> None:
    k = commands.add_parser(
        "check",
        help="preflight a plan: the workflow's template and status, every s3:// input, the run quota",
        description="Check a plan before submitting it; nothing is created, only read.  HealthOmics: the\n"
        "workflow (and version) must be ACTIVE, and unless its parameter template is the one recorded at\n"
        "plan time, every run is checked against it (parameters it does not define, required ones\n"
        "missing).  Every backend: every distinct s3:// value in the runs' parameters must exist (HeadObject,\n"
        "or one ListObjectsV2 per folder when cheaper; a URI ending in / is a prefix); 403 is a warning\n"
        "(cannot verify), not a missing input.  No two runs may share an output location (StartRun's\n"
        "outputUri with NONE_WITH_OVERWRITE, [workflow] output_parameters).  HealthOmics RETAIN runs: a\n"
        "warning when the account's retained runs would pass the quota.  Exit 2 when a problem is found\n"
        "(more than 20: the full list in PLAN.problems.csv).",
        epilog="Examples:\n  planner check PLAN\n  planner check PLAN --json | jq .inputs\n"
        "  planner check PLAN --parameter-template workflow.json --no-inputs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k.add_argument("plan_dir", metavar="PLAN", help=_PLAN_HELP)
    k.add_argument("--json", action="store_true", help="print the report as one JSON object")
    k.add_argument("--parameter-template", metavar="FILE", help="check against this template, not the service's")
    k.add_argument("--no-inputs", action="store_true", help="do not ask S3 about the inputs")
    k.add_argument("--no-workflow", action="store_true", help="do not read the workflow")
    k.add_argument("--no-quotas", action="store_true", help="do not read the run count and quota")
    k.add_argument("--concurrency", type=int, default=32, metavar="N", help="S3 requests in flight (default 32)")
    k.add_argument("--rate", type=float, metavar="PER_SECOND", help="at most this many S3 requests per second")
    _aws_options(k)
    k.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    report = check(
        args.plan_dir,
        inputs=not args.no_inputs,
        workflow=not args.no_workflow,
        quotas=not args.no_quotas,
        parameter_template=args.parameter_template,
        concurrency=args.concurrency,
        rate=args.rate,
        **_aws(args),
    )
    for warning in report.warnings[:MAX_SHOWN_PROBLEMS]:
        print(f"planner: warning: {warning.describe()}", file=sys.stderr)
    if len(report.warnings) > MAX_SHOWN_PROBLEMS:
        print(f"planner: ... and {len(report.warnings) - MAX_SHOWN_PROBLEMS} more warnings", file=sys.stderr)
    if report.problems:
        _report_problems(report.problems, args.plan_dir)
    if args.json:
        _write_json(report.to_json())
    else:
        for line in report.lines():
            print(line)
    if report.problems:
        noun = "problem" if len(report.problems) == 1 else "problems"
        print(f"planner: {len(report.problems)} {noun} found by the preflight check", file=sys.stderr)
        return 2
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    for name in ("failure_rate", "run_seconds", "api_rates"):
        if getattr(args, name) is not None and args.action != "start":
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} is for `planner sandbox start`, not `planner sandbox {args.action}`")
    if args.action == "start":
        endpoints = ensure_running(
            failure_rate=args.failure_rate, run_seconds=args.run_seconds, api_rates=args.api_rates
        )
        if args.json:
            _write_json(endpoints)
        else:
            _print_endpoints(endpoints)
    elif args.action == "stop":
        print("stopped" if stop_running() else "no sandbox was running")
    else:
        state = read_state()
        if args.json:
            _write_json(state)  # null when none is running
        elif state is None:
            print(f"no sandbox is running (state in {state_dir()})")
        else:
            started = float(state.get("started") or 0)
            ends = started + float(state.get("lifetime") or 0)
            failing = float(state.get("failure_rate") or 0)
            print(
                f"running since {_clock(started)}, stops by itself at {_clock(ends)} (pid {state.get('pid')}; "
                f"state in {state_dir()})"
                + (f"; {failing:.0%} of its HealthOmics and Polly runs fail" if failing else "")
                + f"; HealthOmics API rates: {state.get('api_rates') or 'off'}"
            )
            _print_endpoints(state.get("endpoints") or {})
        if state is None:
            return 1  # so that `planner sandbox status && ...` goes on only when one runs
    return 0


def _clock(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def _print_endpoints(endpoints: dict[str, str]) -> None:
    for service, url in endpoints.items():
        print(f"  {service:<16} {url}")


class _Messages(logging.Handler):
    """The ``planner`` logger's messages, one ``planner: ...`` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"planner: {record.getMessage()}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    with flags(FLAGS):
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parse(argv)
    logger = logging.getLogger("planner")
    handler = _Messages(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        return int(args.handler(args))
    except ValidationError as exc:
        if not getattr(exc, "reported", False):  # `plan` lists them itself (and the rest in a CSV)
            for problem in exc.problems[:MAX_SHOWN_PROBLEMS]:
                print(f"planner: error: {problem.describe()}", file=sys.stderr)
        print(f"planner: {exc.summary}", file=sys.stderr)
        return exc.exit_code
    except Stopped as exc:  # not an error: what the user (a cancel, a threshold) asked for
        print(f"planner: stopped: {exc}", file=sys.stderr)
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
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
