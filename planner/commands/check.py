"""Preflight: ``planner check PLAN`` (and ``submit --check``, ``plan --check-inputs``) before anything is sent.

What a written plan is checked for, each where it applies:

* the workflow (HealthOmics): read again (GetWorkflow/GetWorkflowVersion, ``workflow.py``);
  it and the version the runs name must be ACTIVE; a template that is not the one
  recorded in plan.json at plan time (or a plan made without one) is applied to every
  run of the shards: parameters it does not define, required ones missing;
* the inputs: every distinct ``s3://`` value in the runs' parameters (lists and nested
  values included; the defaults' too), deduplicated, must exist in S3;
* the output locations: no two runs write to the same place (``outputs.py``: the
  ``outputUri`` of StartRun runs with ``outputUriPrefixMode`` NONE_WITH_OVERWRITE, and the
  ``[workflow] output_parameters`` plan.json records), as at plan time;
* the retained-run quota (HealthOmics, ``retentionMode`` RETAIN): a warning when the runs
  already kept plus this plan's would pass it.

The S3 check, for 100,000 distinct URIs and more:

1. the URIs are found columnar (polars), not by parsing runs one by one: each shard's lines
   read as text, ``$.parameters`` taken out with ``json_path_match``, every JSON string
   literal starting ``s3://`` extracted with one regex, exploded and made unique;
2. one HeadBucket per bucket (404: every URI in it is missing);
3. a URI ending in ``/`` is a prefix: ListObjectsV2 with MaxKeys=1 must find something;
4. objects are grouped by their folder: a folder with ``LIST_MIN`` or more wanted keys is
   listed (ListObjectsV2, ``Delimiter=/``, starting just before the first wanted key, page
   by page until the last wanted key is passed) when that costs fewer calls than a
   HeadObject each; the listing stops after ``ceil(wanted / LIST_YIELD)`` pages, and the
   keys it did not reach are asked with HeadObject, so it never costs much more than heads;
5. the calls run on ``Context.map`` (bounded concurrency, the rate limit, a progress bar)
   and each through ``Context.call`` (throttling such as SlowDown waited out).

A missing object is an error with the row, id, parameter and URI of every run naming it
(those few runs are found with one ``contains_any`` over the shard lines, and only they are
parsed); a missing default is said once.  S3 answers 403 to HeadObject for an object the
credentials may not read, and for a missing one when they may not list the bucket: that is
a warning, "cannot verify", never "missing".
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
from botocore.exceptions import ClientError

from planner.backends import get_backend
from planner.core.ledger import Ledger
from planner.core.output_locations import COLLISION, OVERWRITE, output_key
from planner.core.plandir import PlanDirectory
from planner.core.progress import ProgressCallback, log
from planner.core.shard import ShardInfo
from planner.engine.context import Context, Options
from planner.errors import AccessError, PreflightError, Problem, SubmissionError
from planner.sandbox.local import ensure_running
from planner.services.aws import Clients
from planner.services.quotas import retained_runs
from planner.services.workflow import (
    OMICS_BACKENDS,
    REQUIRED,
    UNKNOWN,
    Lookup,
    WorkflowCheck,
    WorkflowTemplate,
    load_template_file,
    names_offer,
    read_workflow,
    status_problems,
)

LIST_MIN = 8  # wanted keys in one folder from which a listing is tried instead of a HeadObject each
LIST_YIELD = 50  # a listing gives up once it confirms fewer than this many wanted keys per page on average
FOUND, MISSING, NO_PREFIX, NO_BUCKET, FORBIDDEN, FAILED = "found", "missing", "no-prefix", "no-bucket", "403", "error"
_LITERAL = r'[:\[,]"s3://(?:[^"\\]|\\.)*"'
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET = frozenset({"NoSuchBucket"})
_FORBIDDEN = frozenset({"403", "AccessDenied", "Forbidden", "AllAccessDisabled"})


# ---------------------------------------------------------------- reading the runs of a plan, columnar


def _parameters(spec_path: Sequence[str]) -> pl.Expr:
    return pl.col("line").str.json_path_match("$." + ".".join(spec_path)).alias("parameters")


def _parameters_path(backend: str) -> tuple[str, ...]:
    return get_backend(backend).parameters_path


def walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, scalar) for every value inside parameters: ``fastq``, ``fastq[1]``, ``opts.ref``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")
    else:
        yield path, value


def default_parameters(plan: PlanDirectory) -> Any:
    node: Any = plan.manifest.defaults
    for name in _parameters_path(plan.manifest.backend):
        node = node.get(name) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


# ---------------------------------------------------------------- S3 inputs


@dataclass
class InputsReport:
    """What the S3 check found: counts, the calls it made, errors (missing) and warnings (cannot verify)."""

    uris: int = 0
    buckets: int = 0
    found: int = 0
    missing: int = 0
    unverified: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "uris": self.uris,
            "buckets": self.buckets,
            "found": self.found,
            "missing": self.missing,
            "unverified": self.unverified,
            "calls": dict(sorted(self.calls.items())),
            "seconds": round(self.seconds, 3),
        }

    def line(self) -> str:
        calls = ", ".join(f"{count:,} {name}" for name, count in sorted(self.calls.items())) or "no calls"
        rate = sum(self.calls.values()) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"inputs: {self.uris:,} distinct s3:// URIs in {self.buckets:,} bucket{'s' if self.buckets != 1 else ''}: "
            f"{self.found:,} found, {self.missing:,} missing, {self.unverified:,} could not be verified "
            f"({calls}; {self.seconds:.1f} s, {rate:,.0f} calls/s)"
        )


def distinct_uris(plan: PlanDirectory) -> pl.DataFrame:
    """Every distinct s3:// string in the runs' parameters: ``literal`` (its JSON text) and ``uri``.

    The ``[workflow] output_parameters`` are left out: a run writes there, so nothing need
    exist there before it runs."""
    path = _parameters_path(plan.manifest.backend)
    outputs = output_keys(plan)
    # A top-level "name":"value" pair of the compact JSON the shards hold (orjson writes no spaces).
    pairs = "|".join(re.escape(orjson.dumps(k).decode()) + r':"(?:[^"\\]|\\.)*"' for k in sorted(outputs))
    parameters = _parameters(path).str.replace_all(pairs, "") if pairs else _parameters(path)
    found = []
    for shard in plan.manifest.shards:
        found.append(
            plan.shard_lines(shard)
            .select(parameters.str.extract_all(_LITERAL).alias("literal"))
            .explode("literal")
            .drop_nulls()
            .select(pl.col("literal").str.slice(1))
            .unique()
            .collect()
        )
    defaults = [
        orjson.dumps(value).decode()
        for _, value in walk({k: v for k, v in default_parameters(plan).items() if k not in outputs}, "")
        if isinstance(value, str) and value.startswith("s3://")
    ]
    found.append(pl.DataFrame({"literal": defaults}, schema={"literal": pl.String}))
    literals = pl.concat(found).unique(maintain_order=False).sort("literal")
    return literals.with_columns(pl.col("literal").str.json_decode(pl.String).alias("uri"))


class _Probe:
    """The S3 calls of one check, counted, each through ``Context.call``."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.s3 = ctx.clients.get("s3")
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def call(self, name: str, what: str, **params: Any) -> tuple[str, Any]:
        """(outcome, answer): FOUND with S3's answer, or the refusal's kind and message."""

        def attempt() -> tuple[str, Any]:
            self._count(name)
            try:
                return FOUND, getattr(self.s3, _METHODS[name])(**params)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in _NO_BUCKET:
                    return NO_BUCKET, code
                if code in _NOT_FOUND or status == 404:
                    return MISSING, code
                if code in _FORBIDDEN or status == 403:
                    return FORBIDDEN, code
                raise

        try:
            return self.ctx.call(f"{name} {what}", attempt)
        except AccessError:
            raise  # every further call would fail alike
        except SubmissionError as exc:
            return FAILED, str(exc)

    def bucket(self, bucket: str) -> tuple[str, Any]:
        outcome, answer = self.call("HeadBucket", f"s3://{bucket}", Bucket=bucket)
        return (NO_BUCKET if outcome == MISSING else outcome), answer  # HEAD has no body: a 404 is the bucket's

    def head(self, bucket: str, key: str) -> tuple[str, Any]:
        outcome, answer = self.call("HeadObject", f"s3://{bucket}/{key}", Bucket=bucket, Key=key)
        return (NO_BUCKET if outcome == NO_BUCKET else outcome), answer

    def prefix(self, bucket: str, key: str) -> tuple[str, Any]:
        outcome, answer = self.call("ListObjectsV2", f"s3://{bucket}/{key}", Bucket=bucket, Prefix=key, MaxKeys=1)
        if outcome == FOUND and not answer.get("KeyCount"):
            return NO_PREFIX, "no object under this prefix"
        return outcome, answer

    def listing(self, bucket: str, folder: str, wanted: list[str]) -> tuple[dict[str, tuple[str, Any]], list[str]]:
        """Wanted keys of one folder resolved by listing it, and those left for HeadObject."""
        wanted = sorted(wanted)
        resolved: dict[str, tuple[str, Any]] = {}
        budget = max(1, math.ceil(len(wanted) / LIST_YIELD))
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": folder, "Delimiter": "/"}
        first = wanted[0]
        if len(first) > len(folder) + 1:
            params["StartAfter"] = first[:-1]  # sorts before the first wanted key, and after most of the folder
        pending = 0  # index of the first wanted key not yet resolved
        for _ in range(budget):
            outcome, answer = self.call("ListObjectsV2", f"s3://{bucket}/{folder}", **params)
            if outcome != FOUND:
                if outcome == NO_BUCKET:
                    return dict.fromkeys(wanted, (NO_BUCKET, answer)), []
                return resolved, wanted[pending:]  # cannot list (403 without s3:ListBucket): ask each
            listed = {item["Key"] for item in answer.get("Contents", [])}
            truncated = bool(answer.get("IsTruncated"))
            last = max([*listed, *(p["Prefix"] for p in answer.get("CommonPrefixes", []))], default=None)
            while pending < len(wanted) and (not truncated or (last is not None and wanted[pending] <= last)):
                key = wanted[pending]
                resolved[key] = (FOUND, None) if key in listed else (MISSING, "not listed in its folder")
                pending += 1
            if pending == len(wanted) or not truncated:
                return resolved, wanted[pending:]
            params["ContinuationToken"] = answer["NextContinuationToken"]
            params.pop("StartAfter", None)
        return resolved, wanted[pending:]


_METHODS = {"HeadBucket": "head_bucket", "HeadObject": "head_object", "ListObjectsV2": "list_objects_v2"}


def probe_uris(ctx: Any, uris: Sequence[str]) -> tuple[dict[str, tuple[str, Any]], dict[str, int]]:
    """Each URI's outcome (FOUND, MISSING, NO_PREFIX, NO_BUCKET, FORBIDDEN or FAILED, and a detail),
    and the calls made."""
    probe = _Probe(ctx)
    parts = pl.DataFrame({"uri": list(uris)}, schema={"uri": pl.String}).with_columns(
        pl.col("uri").str.strip_prefix("s3://").str.splitn("/", 2).alias("__split")
    )
    parts = parts.select(
        "uri",
        pl.col("__split").struct.field("field_0").alias("bucket"),
        pl.col("__split").struct.field("field_1").fill_null("").alias("key"),
    ).with_columns(pl.col("key").str.replace(r"[^/]*$", "").alias("folder"))
    outcome: dict[str, tuple[str, Any]] = {}
    for uri in parts.filter(pl.col("bucket") == "").get_column("uri"):
        outcome[uri] = (MISSING, "names no bucket")
    parts = parts.filter(pl.col("bucket") != "")
    buckets = parts.get_column("bucket").unique().sort().to_list()
    bucket_state = dict(zip(buckets, ctx.map(probe.bucket, buckets, task="HeadBucket", unit="bucket"), strict=True))
    tasks: list[tuple[str, str, str, list[str]]] = []  # (kind, bucket, key or folder, wanted keys)
    for bucket, uri in parts.filter(pl.col("key") == "").select("bucket", "uri").iter_rows():
        state = bucket_state[bucket]
        outcome[uri] = (FOUND, None) if state[0] == FOUND else state
    objects = parts.filter((pl.col("key") != "") & ~pl.col("key").str.ends_with("/"))
    for bucket, key in parts.filter(pl.col("key").str.ends_with("/")).select("bucket", "key").iter_rows():
        if bucket_state[bucket][0] != NO_BUCKET:
            tasks.append(("prefix", bucket, key, []))
    groups = objects.group_by("bucket", "folder").agg(pl.col("key")).sort("bucket", "folder")
    for bucket, folder, keys in groups.iter_rows():
        if bucket_state[bucket][0] == NO_BUCKET:
            continue
        if len(keys) >= LIST_MIN:
            tasks.append(("list", bucket, folder, keys))
        else:
            tasks += [("head", bucket, key, []) for key in keys]
    listing_denied: set[str] = set()

    def run(task: tuple[str, str, str, list[str]]) -> list[tuple[str, str, tuple[str, Any]]]:
        kind, bucket, key, wanted = task
        if kind == "head":
            return [(bucket, key, probe.head(bucket, key))]
        if kind == "prefix":
            return [(bucket, key, probe.prefix(bucket, key))]
        if bucket in listing_denied:
            return [(bucket, k, probe.head(bucket, k)) for k in wanted]
        resolved, left = probe.listing(bucket, key, wanted)
        if left and len(resolved) == 0:
            listing_denied.add(bucket)
        return [(bucket, k, state) for k, state in resolved.items()] + [
            (bucket, k, probe.head(bucket, k)) for k in left
        ]

    results = ctx.map(run, tasks, task="check inputs", unit="request") if tasks else []
    states = {(bucket, key): state for found in results for bucket, key, state in found}
    for uri, bucket, key in parts.select("uri", "bucket", "key").iter_rows():
        if uri in outcome:
            continue
        if bucket_state[bucket][0] == NO_BUCKET:
            outcome[uri] = (NO_BUCKET, "NoSuchBucket")
        else:
            outcome[uri] = states.get((bucket, key), (FAILED, "not checked"))
    return outcome, dict(probe.calls)


_MESSAGES = {
    MISSING: "no such object in S3",
    NO_PREFIX: "no object under this prefix in S3",
    NO_BUCKET: "the bucket does not exist",
    FORBIDDEN: "cannot verify: S3 answered 403 Forbidden (these credentials may not read it, or, without "
    "s3:ListBucket, S3 says 403 for a missing object too)",
    FAILED: "cannot verify",
}
_RULES = {
    MISSING: "s3-missing",
    NO_PREFIX: "s3-missing",
    NO_BUCKET: "s3-no-bucket",
    FORBIDDEN: "s3-403",
    FAILED: "s3-error",
}


def _problem(row: int | None, sample: str | None, column: str, uri: str, state: tuple[str, Any]) -> Problem:
    kind, detail = state
    message = _MESSAGES[kind]
    if kind == MISSING and detail == "names no bucket":
        message = "is not an S3 URI with a bucket"
    elif kind == FAILED:
        message = f"{message}: {detail}"
    return Problem(row, sample, column, uri, _RULES[kind], message)


def check_inputs(
    plan: PlanDirectory,
    *,
    access: Lookup | None = None,
    concurrency: int = 32,
    rate: float | None = None,
    max_wait: float = 900.0,
    progress: ProgressCallback | None = None,
    ctx: Any = None,
) -> InputsReport:
    """Whether every s3:// input of the plan exists (see the module docstring)."""
    started = time.monotonic()
    report = InputsReport()
    table = distinct_uris(plan)
    report.uris = table.height
    if table.height == 0:
        return report
    ctx = ctx or open_check_context(plan, access or Lookup(), concurrency, rate, max_wait, progress)
    outcome, report.calls = probe_uris(ctx, table.get_column("uri").to_list())
    buckets = table.select(pl.col("uri").str.strip_prefix("s3://").str.splitn("/", 2).struct.field("field_0"))
    report.buckets = buckets.n_unique()
    report.found = sum(1 for state in outcome.values() if state[0] == FOUND)
    report.unverified = sum(1 for state in outcome.values() if state[0] in (FORBIDDEN, FAILED))
    report.missing = len(outcome) - report.found - report.unverified
    bad = {
        literal: (uri, outcome[uri])
        for literal, uri in table.select("literal", "uri").iter_rows()
        if outcome[uri][0] != FOUND
    }
    if bad:
        found = _locate(plan, bad)
        report.problems = [p for p in found if p.rule not in (_RULES[FORBIDDEN], _RULES[FAILED])]
        report.warnings = [p for p in found if p.rule in (_RULES[FORBIDDEN], _RULES[FAILED])]
    report.seconds = time.monotonic() - started
    return report


def _locate(plan: PlanDirectory, bad: dict[str, tuple[str, tuple[str, Any]]]) -> list[Problem]:
    """The runs naming each bad URI (found with ``contains_any``; only those are parsed), and the defaults that do."""
    path = _parameters_path(plan.manifest.backend)
    by_uri = dict(bad.values())
    defaults = {
        (where, value)
        for where, value in walk(default_parameters(plan), "")
        if isinstance(value, str) and value in by_uri
    }
    table = ".".join(path)
    problems = [_problem(None, None, f"[run] {table}.{where}", uri, by_uri[uri]) for where, uri in sorted(defaults)]
    literals = list(bad)
    for shard in plan.manifest.shards:
        lines = (
            plan.shard_lines(shard)
            .select("position", _parameters(path))
            .filter(pl.col("parameters").str.contains_any(literals))
            .collect()
        )
        if lines.height == 0:
            continue
        who = lines.join(plan.samples_of(shard.index).select("position", "row", "id"), on="position", how="left")
        for _, text, row, sample in who.sort("position").iter_rows():
            for where, value in walk(orjson.loads(text), ""):
                if isinstance(value, str) and value in by_uri and (where, value) not in defaults:
                    problems.append(_problem(row, sample, where, value, by_uri[value]))
    return problems


def open_check_context(
    plan: PlanDirectory,
    access: Lookup,
    concurrency: int = 32,
    rate: float | None = None,
    max_wait: float = 900.0,
    progress: ProgressCallback | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
) -> Any:
    """A ``Context`` for the check's calls: the plan, an in-memory ledger (a check journals nothing), the clients."""
    clients = Clients(
        profile=access.profile,
        region=access.region,
        endpoint_url=access.endpoint_url,
        endpoints=dict(access.endpoints or {}),
        retry_mode=retry_mode,
        max_attempts=max_attempts,
        sandbox=access.sandbox,
    )
    if access.sandbox and not access.endpoints:
        clients.endpoints = dict(ensure_running())
    manifest = plan.manifest
    return Context(
        plan=plan,
        ledger=Ledger.in_memory(manifest.plan_id, manifest.backend),
        clients=clients,
        options=Options(concurrency=concurrency, rate=rate, max_wait=max_wait),
        progress=progress,
    )


# ---------------------------------------------------------------- the workflow, against the written runs


def output_keys(plan: PlanDirectory) -> set[str]:
    """The output parameters' keys as the runs spell them (Glue's ``--`` before the name)."""
    spec = get_backend(plan.manifest.backend)
    return {output_key(name, spec) for name in plan.manifest.output_parameters}


def run_template_problems(plan: PlanDirectory, template: WorkflowTemplate) -> list[Problem]:
    """``workflow.template_problems`` over every run of the shards, columnar: parameters are decoded to a
    struct per shard (its fields: every key any run sets), so a key's presence is a column's non-null rows."""
    path = _parameters_path(plan.manifest.backend)
    # The defaults' parameters: StartRunBatch merges them server-side; StartRun shards carry them merged
    # into every run. Either way a default key is every run's: said once, not per run.
    defaults = default_parameters(plan)
    defined, subject = template.defined, template.subject
    problems = [
        Problem(
            None,
            None,
            f"[run] parameters.{key}",
            None,
            UNKNOWN,
            f"is not a parameter of {subject}{names_offer(key, template)}",
        )
        for key in sorted(defaults)
        if key not in defined
    ]
    required = [name for name in template.required if name not in defaults]
    per_shard: list[tuple[ShardInfo, pl.DataFrame, set[str]]] = []
    everywhere_missing = set(required)
    for shard in plan.manifest.shards:
        frame = plan.shard_lines(shard).select("position", _parameters(path)).collect()
        decoded = frame.get_column("parameters").str.json_decode(infer_schema_length=None)
        keys = set(decoded.dtype.to_schema()) if isinstance(decoded.dtype, pl.Struct) else set()
        flags = frame.select("position").with_columns(
            *[
                decoded.struct.field(key).is_not_null().alias(f"set:{key}")
                for key in sorted(keys)
                if key not in defined or key in required
            ]
        )
        everywhere_missing -= {k for k in keys & set(required) if flags.get_column(f"set:{k}").any()}
        per_shard.append((shard, flags, keys))
    for name in sorted(everywhere_missing):
        problems.append(
            Problem(
                None,
                None,
                f"[run] parameters.{name}",
                None,
                REQUIRED,
                f"is required by {subject}, and no run of this plan sets it: plan again with it in [run.parameters] "
                "or a sheet column",
            )
        )
    for shard, flags, keys in per_shard:
        rules = [(f"set:{k}", False, k, UNKNOWN) for k in sorted(keys) if k not in defined and k not in defaults]
        rules += [
            (f"set:{name}" if name in keys else "", True, name, REQUIRED)
            for name in required
            if name not in everywhere_missing
        ]
        if not rules:
            continue
        samples = plan.samples_of(shard.index).select("position", "row", "id")
        for column, missing, name, rule in rules:
            hit = ~pl.col(column) if column and missing else (pl.col(column) if column else pl.lit(True))
            rows = flags.filter(hit).join(samples, on="position", how="left").sort("position")
            for row, sample in rows.select("row", "id").iter_rows():
                message = (
                    f"the run lacks parameter {name!r}, which {subject} requires"
                    if missing
                    else f"is not a parameter of {subject}{names_offer(name, template)}"
                )
                problems.append(Problem(row, sample, f"parameters.{name}", None, rule, message))
    return problems


@dataclass
class WorkflowReport:
    checked: bool = False
    source: str | None = None
    status: str | None = None
    changed: bool | None = None  # the template differs from the one recorded at plan time
    note: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "source": self.source,
            "status": self.status,
            "changed_since_planning": self.changed,
            "note": self.note,
        }

    def line(self) -> str:
        if not self.checked:
            return f"workflow: not checked: {self.note}"
        return f"workflow: {self.note}"


def check_workflow(plan: PlanDirectory, access: Lookup, template_file: str | None = None) -> WorkflowReport | None:
    """The workflow read again and, unless its template is the one recorded at plan time, applied to every run."""
    manifest = plan.manifest
    if manifest.backend not in OMICS_BACKENDS:
        return None
    report = WorkflowReport()
    recorded = plan.manifest.workflow
    earlier = WorkflowTemplate.from_json(recorded) if recorded and recorded.get("check") == "template" else None
    if template_file is not None:
        template = load_template_file(template_file)
        found = WorkflowCheck(template, problems=tuple(status_problems(template)))
    else:
        found = read_workflow(manifest.defaults, access)
    report.problems += found.problems
    if found.template is None:
        if found.problems:
            report.checked, report.note = True, "cannot be started"
        elif earlier is not None:
            report.note = f"{found.skipped}; the template recorded at plan time ({earlier.source}) stands"
        else:
            report.note = found.skipped
        return report
    template = found.template
    report.checked, report.source, report.status = True, template.source, template.status
    report.changed = earlier is not None and earlier.sha256 != template.sha256
    if earlier is not None and not report.changed:
        report.note = (
            f"{template.subject} is {template.status or 'of unknown status'}; "
            "its template is the one the plan was checked against"
        )
        return report
    report.problems += run_template_problems(plan, template)
    state = f"{template.subject} is {template.status or 'of unknown status'}"
    if report.changed and earlier is not None:
        before, now = set(earlier.defined), set(template.defined)
        diff = [
            f"added {', '.join(sorted(now - before))}" if now - before else "",
            f"removed {', '.join(sorted(before - now))}" if before - now else "",
            f"required now {', '.join(sorted(set(template.required) - set(earlier.required)))}"
            if set(template.required) - set(earlier.required)
            else "",
        ]
        said = "; ".join(d for d in diff if d) or "descriptions changed"
        report.warnings.append(
            Problem(
                None,
                None,
                "[run] workflowId",
                template.workflow_id,
                "template-changed",
                f"the parameter template changed since the plan was made ({said}); every run was checked again",
            )
        )
        report.note = f"{state}; its template changed since planning, and every run was checked against it"
    else:
        report.note = f"{state}; every run was checked against its template ({len(template.defined)} parameters)"
    return report


# ---------------------------------------------------------------- output locations, against the written runs


def output_problems(plan: PlanDirectory) -> list[Problem]:
    """Runs of the written plan that share an output location (the plan-time rule of ``outputs.py``), columnar."""
    manifest = plan.manifest
    declared = list(plan.manifest.output_parameters)
    path = _parameters_path(manifest.backend)
    defaults = default_parameters(plan)
    prefix = "--" if manifest.backend == "glue" else ""
    kinds: list[tuple[str, pl.Expr]] = []
    if manifest.backend == "omics-run":
        mode = pl.col("line").str.json_path_match("$.outputUriPrefixMode").fill_null("SERVICE_DEFINED")
        uri = pl.col("line").str.json_path_match("$.outputUri")
        kinds.append(("outputUri", pl.when(mode == OVERWRITE).then(uri)))
    for name in declared:
        key = name if name.startswith(prefix) else prefix + name
        where = "$" + "".join(f"[{orjson.dumps(part).decode()}]" for part in (*path, key))
        value = pl.col("line").str.json_path_match(where)
        default = defaults.get(key)
        if default is not None:  # shards of StartRunBatch carry a row's own settings only
            value = value.fill_null(default if isinstance(default, str) else orjson.dumps(default).decode())
        kinds.append((key, value))
    if not kinds:
        return []
    found = []
    for shard in manifest.shards:
        lines = plan.shard_lines(shard)
        for index, (_, expr) in enumerate(kinds):
            found.append(
                lines.select(
                    pl.lit(shard.index, dtype=pl.Int32).alias("shard"),
                    pl.col("position").cast(pl.Int32),
                    pl.lit(index).alias("kind"),
                    expr.str.strip_chars_end("/").alias("location"),
                )
                .drop_nulls("location")
                .collect()
            )
    if not found:
        return []
    every = pl.concat(found).unique(["shard", "position", "location"], maintain_order=True)
    shared = every.filter(pl.col("location").is_duplicated())
    if shared.height == 0:
        return []
    who = shared.join(plan.samples(), on=["shard", "position"], how="left").sort("row")
    groups = who.group_by("location", maintain_order=True).agg("row", "id", "kind")
    problems = []
    for location, rows, ids, kind_of in groups.iter_rows():
        for row, sample, kind in zip(rows, ids, kind_of, strict=True):
            others = ", ".join(f"{r} ({i!r})" for r, i in zip(rows, ids, strict=True) if r != row)
            problems.append(
                Problem(row, sample, kinds[kind][0], location, COLLISION, f"the same output location as rows {others}")
            )
    return sorted(problems, key=lambda p: p.row or 0)


# ---------------------------------------------------------------- the whole check


@dataclass
class CheckReport:
    plan_id: str
    backend: str
    runs: int
    workflow: WorkflowReport | None = None
    outputs: int | None = None  # the runs found sharing an output location (None: not checked)
    inputs: InputsReport | None = None
    quotas: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"checked plan {self.plan_id} ({self.backend}, {self.runs:,} runs)"]
        if self.workflow is not None:
            out.append("  " + self.workflow.line())
        if self.outputs is not None:
            shared = f"{self.outputs:,} runs share an output location" if self.outputs else "no two runs share one"
            out.append(f"  outputs: {shared}")
        if self.inputs is not None:
            out.append("  " + self.inputs.line())
        if self.quotas is not None and self.quotas.get("note"):
            out.append("  quotas: " + str(self.quotas["note"]))
        noun = "problem" if len(self.problems) == 1 else "problems"
        warned = f", {len(self.warnings):,} warning{'s' if len(self.warnings) != 1 else ''}" if self.warnings else ""
        out.append(f"{len(self.problems):,} {noun}{warned}" if self.problems or self.warnings else "no problems found")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "backend": self.backend,
            "runs": self.runs,
            "ok": self.ok,
            "workflow": self.workflow.to_json() if self.workflow is not None else None,
            "outputs": None if self.outputs is None else {"sharing": self.outputs},
            "inputs": self.inputs.to_json() if self.inputs is not None else None,
            "quotas": self.quotas,
            "problems": [_problem_json(p) for p in self.problems],
            "warnings": [_problem_json(p) for p in self.warnings],
        }


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "row": problem.row,
        "id": problem.id,
        "column": problem.column,
        "value": problem.value,
        "rule": problem.rule,
        "message": problem.message,
    }


def check(
    plan_dir: Any,
    *,
    inputs: bool = True,
    workflow: bool = True,
    quotas: bool = True,
    parameter_template: str | None = None,
    concurrency: int = 32,
    rate: float | None = None,
    max_wait: float = 900.0,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> CheckReport:
    """Check a written plan before it is submitted (see the module docstring); nothing is sent but reads.

    Returns the report; its ``problems`` (errors) and ``warnings`` say what was found."""
    Options(concurrency=concurrency, rate=rate, max_wait=max_wait)  # the same checks of the options as submit's
    plan = PlanDirectory(plan_dir)
    manifest = plan.manifest
    access = Lookup(sandbox=sandbox, endpoint_url=endpoint_url, profile=profile, region=region, endpoints=endpoints)
    report = CheckReport(manifest.plan_id, manifest.backend, manifest.runs)
    ctx = None
    if workflow:
        report.workflow = check_workflow(plan, access, parameter_template)
        if report.workflow is not None:
            report.problems += report.workflow.problems
            report.warnings += report.workflow.warnings
    if manifest.backend == "omics-run" or manifest.output_parameters:
        collisions = output_problems(plan)
        report.outputs = len(collisions)
        report.problems += collisions
    if inputs or quotas:
        ctx = open_check_context(plan, access, concurrency, rate, max_wait, progress, retry_mode, max_attempts)
    if inputs:
        report.inputs = check_inputs(plan, ctx=ctx)
        report.problems += report.inputs.problems
        report.warnings += report.inputs.warnings
    if quotas and manifest.backend in OMICS_BACKENDS:
        report.quotas, warnings = retained_runs(ctx, plan)
        report.warnings += warnings
    return report


def preflight_submit(plan_dir: Any, **options: Any) -> CheckReport:
    """``submit --check``: the whole check; problems stop the submit before anything is staged."""
    report = check(plan_dir, **options)
    for warning in report.warnings[:20]:
        log.warning("warning: %s", warning.describe())
    if report.problems:
        raise PreflightError(report.problems)
    return report
