"""The HealthOmics retained-run quota, read before a plan is submitted.

HealthOmics keeps a fixed number of runs, active and inactive (StartRun's
``retentionMode`` doc, seeds/000): with RETAIN, the default, "you cannot create
additional runs until you remove the excess runs"; in a batch each run past the maximum
fails its submission with ServiceQuotaExceededException while the batch goes on (the API
reference; the User Guide's "Run retention mode" says the batch fails).
REMOVE runs make room by removing the oldest REMOVE runs.

What can be read is read: the runs the account keeps (ListRuns, every page) and the
quota's value from Service Quotas: GetServiceQuota by its code, L-C9679DBC, which the User
Guide's "HealthOmics service quotas" table links to "Workflows - Maximum runs (active or
inactive)"; when that answer fails (a partition or endpoint without it), ListServiceQuotas
for ``omics`` and the quota of that code or that name, else one whose name says it counts
retained runs.  When both are known and the kept runs plus this plan's RETAIN runs pass the
quota, a warning names the fix.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from planner.core.plandir import PlanDirectory
from planner.errors import AccessError, Problem, SubmissionError, setting
from planner.services.workflow import Lookup, quick_client

RETAINED_RUNS_QUOTA_CODE = "L-C9679DBC"
RETAINED_RUNS_QUOTA_NAME = "Workflows - Maximum runs (active or inactive)"
# The last resort, for a listing that has neither the code nor the documented name.
_QUOTA_NAME = re.compile(r"retain|^(workflows - )?(maximum )?(number of )?(workflow )?runs\b", re.IGNORECASE)
_NOT_THIS = re.compile(r"concurrent|group|task|per second|rate|storage|size|cpu|gpu", re.IGNORECASE)


def plan_retained_runs(plan: PlanDirectory) -> int:
    """How many of the plan's runs keep retentionMode RETAIN (the default), counted columnar from the shards."""
    manifest = plan.manifest
    default = str(manifest.defaults.get("retentionMode") or "RETAIN")
    if manifest.backend == "omics-batch":
        return manifest.runs if default == "RETAIN" else 0  # a batch's runs share defaultRunSetting's mode
    count = 0
    for shard in manifest.shards:
        modes = plan.shard_lines(shard).select(
            pl.col("line").str.json_path_match("$.retentionMode").fill_null(default).alias("mode")
        )
        count += int(modes.filter(pl.col("mode") == "RETAIN").select(pl.len()).collect().item())
    return count


def account_runs(ctx: Any) -> int:
    """The runs HealthOmics keeps for this account (ListRuns, every page)."""
    omics = ctx.clients.get("omics")
    count, token = 0, None
    while True:
        params: dict[str, Any] = {"maxResults": 100}
        if token:
            params["startingToken"] = token
        page = ctx.call("ListRuns", omics.list_runs, **params)
        count += len(page.get("items", []))
        token = page.get("nextToken")
        if not token:
            return count


def quota_value(client: Any) -> tuple[float | None, str | None]:
    """(value, name) of the retained-run quota from Service Quotas, or (None, why not)."""
    if client is None:
        return None, "Service Quotas cannot be reached from here"
    try:
        quota = client.get_service_quota(ServiceCode="omics", QuotaCode=RETAINED_RUNS_QUOTA_CODE).get("Quota") or {}
        if quota.get("Value") is not None:
            return float(quota["Value"]), str(quota.get("QuotaName") or RETAINED_RUNS_QUOTA_NAME)
    except Exception:  # not answered by code here: look for it in the listing
        pass
    try:
        loose: tuple[float, str] | None = None
        token = None
        while True:
            params: dict[str, Any] = {"ServiceCode": "omics"}
            if token:
                params["NextToken"] = token
            page = client.list_service_quotas(**params)
            for quota in page.get("Quotas", []):
                name = str(quota.get("QuotaName", ""))
                if quota.get("Value") is None:
                    continue
                if quota.get("QuotaCode") == RETAINED_RUNS_QUOTA_CODE or name == RETAINED_RUNS_QUOTA_NAME:
                    return float(quota["Value"]), name
                if loose is None and _QUOTA_NAME.search(name) and not _NOT_THIS.search(name):
                    loose = float(quota["Value"]), name
            token = page.get("NextToken")
            if not token:
                return loose or (None, "Service Quotas names no retained-run quota for HealthOmics")
    except Exception as exc:  # any failure to read a quota only means it is not known
        return None, f"Service Quotas could not be read ({type(exc).__name__}: {str(exc)[:120]})"


def retained_runs(ctx: Any, plan: PlanDirectory, quota: float | None = None) -> tuple[dict[str, Any], list[Problem]]:
    """What is known of the retained-run quota for this plan, and a warning when it would be passed."""
    planned = plan_retained_runs(plan)
    found: dict[str, Any] = {"retain_runs": planned, "account_runs": None, "quota": quota, "quota_name": None}
    if planned == 0:
        found["note"] = "every run of this plan has retentionMode REMOVE: the retained-run quota cannot stop it"
        return found, []
    try:
        found["account_runs"] = account_runs(ctx)
    except (AccessError, SubmissionError) as exc:
        found["note"] = f"the runs this account keeps could not be counted ({exc})"
        return found, []
    if quota is None:
        clients = ctx.clients
        lookup = Lookup(
            sandbox=clients.sandbox,
            endpoint_url=clients.endpoint_url,
            profile=clients.profile,
            region=clients.region,
            endpoints=clients.endpoints or None,
        )
        try:
            client = quick_client("service-quotas", lookup)
        except Exception:  # no client, no quota: said below
            client = None
        quota, name = quota_value(client)
        found["quota"], found["quota_name"] = quota, name if quota is not None else None
        if quota is None:
            kept = found["account_runs"]
            found["note"] = f"{kept:,} runs kept, {planned:,} more to keep (RETAIN); the quota is not known: {name}"
            return found, []
    total = found["account_runs"] + planned
    found["note"] = f"{found['account_runs']:,} runs kept + {planned:,} (RETAIN) of a quota of {quota:,.0f}"
    if total <= quota:
        return found, []
    warning = Problem(
        None,
        None,
        "[run] retentionMode",
        str(plan.manifest.defaults.get("retentionMode") or "RETAIN (the default)"),
        "retained-runs",
        f"the account keeps {found['account_runs']:,} runs and this plan adds {planned:,} with retentionMode RETAIN: "
        f"{total:,} passes the quota of {quota:,.0f} retained runs, and the service refuses every run past it; "
        'set retentionMode = "REMOVE" in [run] (the oldest REMOVE runs then make room), delete finished runs '
        f"(clean an older plan with {setting('runs=True')}), or ask for more in Service Quotas",
    )
    return found, [warning]
