"""The workflow a HealthOmics plan starts: its parameter template and status, checked before anything is sent.

HealthOmics documents (seeds/000, StartRun ``parameters``) that "the run needs all
required parameters" and "cannot include any parameters that are not defined in the
parameter template".  GetWorkflow and GetWorkflowVersion return that template
(``parameterTemplate``: name -> ``{description, optional}``; a parameter without
``optional: true`` is required; Nextflow workflows may add ``profileParameterTemplates``)
and the ``status`` (a run starts only on an ACTIVE workflow and version).  A batch that
breaks them fails run by run, minutes after StartRunBatch answered; this module finds it
when the plan is made.

Where the template comes from, the first that applies (``resolve_workflow``):

1. a file: ``--parameter-template FILE`` or ``[workflow] parameter_template`` of the
   defaults, holding the JSON GetWorkflow or GetWorkflowVersion returns, or the template
   itself as CreateWorkflow takes it;
2. the service: GetWorkflow (and GetWorkflowVersion when ``workflowVersionName`` is set),
   named as the run names it (``workflowType``, ``workflowOwnerId``), when credentials are
   at hand or with ``--sandbox`` (never with ``--no-workflow-lookup`` or
   ``PLANNER_NO_WORKFLOW_LOOKUP=1``).  Missing credentials, an unreachable endpoint or a
   refusal skip the check; a workflow the service does not know is a problem;
3. none: the check is skipped, and the plan says so (stderr and plan.json's ``workflow``).

The checks (``template_checks``), columnar: a parameter the template does not define is
refused, for a default once and for a sheet column by its header, with the template's
closest names; a required parameter is refused where a run lacks it after the merge:
once when neither a default nor a column sets it, per row where its column is empty.
Parameters of the Nextflow profiles' templates are accepted, never required (the run's
request model names no profile).  ``template_problems`` states the rule in plain Python
for one run's parameters, and the property tests hold the columnar check to it.
``shard_problems`` applies it to the runs of a written plan (``planner check``).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import orjson
import polars as pl
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from planner.core.routing import PARAM_PREFIX, Route
from planner.core.spec import BackendSpec
from planner.core.suggest import _one_edit, closest
from planner.errors import InputError, Problem, setting
from planner.sandbox.local import ensure_running
from planner.services.aws import SANDBOX_CREDENTIALS, check_options

OMICS_BACKENDS = frozenset({"omics-batch", "omics-run"})
ACTIVE = "ACTIVE"
NO_LOOKUP_ENV = "PLANNER_NO_WORKFLOW_LOOKUP"
UNKNOWN = "template-unknown"
REQUIRED = "template-required"
STATUS = "workflow-status"
NOT_FOUND = "workflow-not-found"
NEAR_FIELD = "near-field"
# Per-run fields that choose the workflow: a sheet column of one of these names lets rows start other workflows.
WORKFLOW_FIELDS = ("workflowId", "workflowVersionName", "workflowType", "workflowOwnerId")
# Names a per-sample workflow gives its sample id parameter, for "id_parameter = ..." advice.
_ID_NAMES = ("sample", "sample_id", "sampleId", "sample_name", "id", "name")
_SHOWN_NAMES = 20


@dataclass(frozen=True)
class WorkflowTemplate:
    """A workflow's parameter template, where it was read, and the status it had then."""

    parameters: Mapping[str, Mapping[str, Any]]  # name -> {"description": ..., "optional": ...}
    profiles: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    source: str = ""  # "file PATH", "GetWorkflow 1234567", "GetWorkflowVersion 1234567 v2"
    workflow_id: str | None = None
    version_name: str | None = None
    status: str | None = None  # the workflow's (None: a template file that does not say)
    status_message: str | None = None
    version_status: str | None = None
    version_status_message: str | None = None

    @property
    def required(self) -> list[str]:
        return sorted(name for name, spec in self.parameters.items() if not _optional(spec))

    @property
    def defined(self) -> frozenset[str]:
        """Every parameter a run may set: the template's and those of its profiles."""
        names = set(self.parameters)
        for template in self.profiles.values():
            names |= set(template)
        return frozenset(names)

    @property
    def subject(self) -> str:
        """What the template is of, for messages: "workflow 1234567 version v2", or the file."""
        if self.workflow_id is None:
            return f"the parameter template in {self.source.removeprefix('file ')}"
        version = f" version {self.version_name}" if self.version_name else ""
        return f"workflow {self.workflow_id}{version}"

    @property
    def sha256(self) -> str:
        """A digest of what the check uses (the templates), not of when or where it was read."""
        return hashlib.sha256(orjson.dumps(self._templates(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def _templates(self) -> dict[str, Any]:
        found: dict[str, Any] = {"parameterTemplate": _plain(self.parameters)}
        if self.profiles:
            found["profileParameterTemplates"] = {k: _plain(v) for k, v in self.profiles.items()}
        return found

    def to_json(self) -> dict[str, Any]:
        """What plan.json records (sorted, so equal templates give equal bytes)."""
        record: dict[str, Any] = {
            "check": "template",
            "source": self.source,
            "workflowId": self.workflow_id,
            "versionName": self.version_name,
            "status": self.status,
        }
        if self.version_name is not None:
            record["versionStatus"] = self.version_status
        record["template_sha256"] = self.sha256
        record.update(orjson.loads(orjson.dumps(self._templates(), option=orjson.OPT_SORT_KEYS)))
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> WorkflowTemplate:
        return cls(
            parameters=dict(record.get("parameterTemplate") or {}),
            profiles=dict(record.get("profileParameterTemplates") or {}),
            source=str(record.get("source") or ""),
            workflow_id=record.get("workflowId"),
            version_name=record.get("versionName"),
            status=record.get("status"),
            version_status=record.get("versionStatus"),
        )


def _optional(spec: Any) -> bool:
    return isinstance(spec, Mapping) and spec.get("optional") is True


def _plain(template: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {k: v for k, v in dict(spec).items() if k in ("description", "optional")}
        for name, spec in template.items()
    }


# ---------------------------------------------------------------- reading a template


def load_template_file(path: str, what: str | None = None) -> WorkflowTemplate:
    """A template file: the JSON GetWorkflow or GetWorkflowVersion returns, or the template itself."""
    what = what or setting("parameter_template")
    try:
        with open(path, "rb") as handle:
            document = orjson.loads(handle.read())
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read it: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{what} {path}: is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError(f"{what} {path}: must hold a JSON object (GetWorkflow's answer, or the template)")
    if isinstance(document.get("parameterTemplate"), dict):  # GetWorkflow / GetWorkflowVersion, as the CLI prints it
        template = document["parameterTemplate"]
        profiles = document.get("profileParameterTemplates") or {}
        version = document.get("versionName")
        workflow_id = document.get("workflowId") if version else document.get("id")
        status = None if version else document.get("status")
        version_status = document.get("status") if version else None
    else:
        template, profiles, workflow_id, version, status, version_status = document, {}, None, None, None, None
    _check_template(template, f"{what} {path}")
    if not isinstance(profiles, dict):
        raise InputError(f"{what} {path}: profileParameterTemplates must map profile names to templates")
    for name, profile in profiles.items():
        _check_template(profile, f"{what} {path}: profile {name!r}")
    return WorkflowTemplate(
        parameters=template,
        profiles=profiles,
        source=f"file {path}",
        workflow_id=str(workflow_id) if workflow_id is not None else None,
        version_name=version,
        status=status,
        version_status=version_status,
    )


def _check_template(template: Any, where: str) -> None:
    if not isinstance(template, dict):
        raise InputError(f"{where}: a parameter template maps names to {{description, optional}}")
    for name, spec in template.items():
        if not isinstance(spec, dict) or set(spec) - {"description", "optional"}:
            raise InputError(
                f'{where}: parameter {name!r} must be an object of "description" and "optional", '
                f"as in GetWorkflow's parameterTemplate, not {orjson.dumps(spec).decode()[:80]}"
            )
        if "optional" in spec and not isinstance(spec["optional"], bool):
            raise InputError(f"{where}: parameter {name!r}: optional must be true or false")


@dataclass(frozen=True)
class Lookup:
    """How the plan may read the workflow from the service."""

    enabled: bool = True
    sandbox: bool = False
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    endpoints: Mapping[str, str] | None = None  # per service (tests)

    @classmethod
    def from_environment(cls, **options: Any) -> Lookup:
        disabled = os.environ.get(NO_LOOKUP_ENV, "").strip().lower() not in ("", "0", "false", "no")
        enabled = bool(options.pop("enabled", True)) and not disabled
        return cls(enabled=enabled, **options)


@dataclass(frozen=True)
class WorkflowCheck:
    """The outcome of looking for the template: one, or why there is none, and problems found on the way."""

    template: WorkflowTemplate | None = None
    skipped: str | None = None
    problems: tuple[Problem, ...] = ()
    asked: bool = False  # skipped because the lookup was turned off: recorded, not said again on stderr

    def to_json(self) -> dict[str, Any]:
        if self.template is not None:
            return self.template.to_json()
        return {"check": "skipped", "reason": self.skipped}


def resolve_workflow(
    spec: BackendSpec, run: Mapping[str, Any], columns: Sequence[str], template_file: str | None, lookup: Lookup
) -> WorkflowCheck | None:
    """The template a plan is checked against (None: a backend with no workflow template)."""
    if spec.name not in OMICS_BACKENDS:
        return None
    if template_file is not None:
        template = load_template_file(template_file)
        return WorkflowCheck(template, problems=tuple(status_problems(template)))
    if run.get("parametersUri") is not None:
        return WorkflowCheck(skipped="the runs' parameters are read from parametersUri, not sent in the request")
    chosen = [c for c in columns if c in WORKFLOW_FIELDS and c in spec.fields]
    if chosen:
        return WorkflowCheck(
            skipped=f"rows choose their own workflow (column {chosen[0]!r}); "
            f"give {setting('parameter_template')} to check them all against one template"
        )
    workflow_id = run.get("workflowId")
    if not workflow_id:
        return WorkflowCheck(skipped="no workflowId to read")
    if not lookup.enabled:
        off = f"workflow lookup is off ({setting('workflow_lookup=False')} or {NO_LOOKUP_ENV})"
        return WorkflowCheck(skipped=off, asked=True)
    return read_workflow(run, lookup)


def read_workflow(run: Mapping[str, Any], lookup: Lookup) -> WorkflowCheck:
    """GetWorkflow (and GetWorkflowVersion) as the run names the workflow; what cannot be read is skipped."""
    workflow_id = str(run["workflowId"])
    version = run.get("workflowVersionName")
    naming: dict[str, Any] = {}
    if run.get("workflowType"):
        naming["type"] = run["workflowType"]
    if run.get("workflowOwnerId"):
        naming["workflowOwnerId"] = run["workflowOwnerId"]
    asking = ("workflowId", workflow_id)  # the field of the call being made, for a "not found"
    try:
        omics = _omics_client(lookup)
        if omics is None:
            return WorkflowCheck(skipped=f"no AWS credentials to read workflow {workflow_id}")
        found = omics.get_workflow(id=workflow_id, **naming)
        answer = None
        if version:
            asking = ("workflowVersionName", str(version))
            answer = omics.get_workflow_version(workflowId=workflow_id, versionName=str(version), **naming)
    except NoCredentialsError:
        return WorkflowCheck(skipped=f"no AWS credentials to read workflow {workflow_id}")
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
        if code not in ("ResourceNotFoundException", "ValidationException"):
            return WorkflowCheck(skipped=f"cannot read workflow {workflow_id}: {code}: {message}")
        if lookup.sandbox:
            return WorkflowCheck(
                skipped=f"the sandbox does not know workflow {workflow_id} (it starts runs of it unchecked)"
            )
        field, value = asking
        return WorkflowCheck(
            problems=(
                Problem(
                    None,
                    None,
                    f"[run] {field}",
                    value,
                    NOT_FOUND,
                    f"HealthOmics does not know it ({code}: {message}); check the id, the region, and for a "
                    "shared or READY2RUN workflow workflowOwnerId or workflowType",
                ),
            )
        )
    except BotoCoreError as exc:
        return WorkflowCheck(skipped=f"cannot read workflow {workflow_id}: {exc}")
    template = from_service(found, answer)
    return WorkflowCheck(template, problems=tuple(status_problems(template)))


def from_service(workflow: Mapping[str, Any], version: Mapping[str, Any] | None = None) -> WorkflowTemplate:
    """A template from GetWorkflow's answer (and GetWorkflowVersion's: a version's template is the run's)."""
    source = version if version is not None else workflow
    what = (
        f"GetWorkflowVersion {workflow.get('id')} {version.get('versionName')}"
        if version is not None
        else f"GetWorkflow {workflow.get('id')}"
    )
    return WorkflowTemplate(
        parameters=dict(source.get("parameterTemplate") or {}),
        profiles=dict(source.get("profileParameterTemplates") or {}),
        source=what,
        workflow_id=str(workflow.get("id")),
        version_name=str(version.get("versionName")) if version is not None else None,
        status=workflow.get("status"),
        status_message=workflow.get("statusMessage"),
        version_status=version.get("status") if version is not None else None,
        version_status_message=version.get("statusMessage") if version is not None else None,
    )


def _omics_client(lookup: Lookup) -> Any:
    return quick_client("omics", lookup)


def quick_client(service: str, lookup: Lookup) -> Any:
    """A client for a few quick reads (short timeouts, two attempts), or None without credentials.

    The sandbox's endpoints when ``lookup.sandbox`` (None for a service the sandbox lacks)."""
    check_options(region=lookup.region, endpoint_url=lookup.endpoint_url, max_attempts=2)
    endpoints = dict(lookup.endpoints or {})
    if lookup.sandbox and not endpoints:
        endpoints = dict(ensure_running())
    if lookup.sandbox:
        if service not in endpoints:
            return None
        session = boto3.session.Session(region_name=lookup.region or "us-east-1", **SANDBOX_CREDENTIALS)
    else:
        session = boto3.session.Session(profile_name=lookup.profile, region_name=lookup.region)
        if session.get_credentials() is None:
            return None
    variable = "AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")
    endpoint = (
        endpoints.get(service) or lookup.endpoint_url or os.environ.get(variable) or os.environ.get("AWS_ENDPOINT_URL")
    )
    config = Config(
        connect_timeout=5,
        read_timeout=15,
        retries={"mode": "standard", "max_attempts": 2},
        inject_host_prefix=not (service == "omics" and endpoint),
    )
    return session.client(
        service,
        endpoint_url=endpoints.get(service) or lookup.endpoint_url,
        region_name=session.region_name or "us-east-1",
        config=config,
    )


# ---------------------------------------------------------------- the checks


def status_problems(template: WorkflowTemplate) -> list[Problem]:
    """The workflow, and the version the runs name, must be ACTIVE (when the source says)."""
    found = []
    for where, status, message, what in (
        ("[run] workflowId", template.status, template.status_message, f"workflow {template.workflow_id}"),
        (
            "[run] workflowVersionName",
            template.version_status,
            template.version_status_message,
            f"version {template.version_name} of workflow {template.workflow_id}",
        ),
    ):
        if status is not None and status != ACTIVE:
            said = f" ({message})" if message else ""
            value = template.workflow_id if where.endswith("Id") else template.version_name
            found.append(
                Problem(
                    None,
                    None,
                    where,
                    value,
                    STATUS,
                    f"{what} is {status}{said} in {template.source}; a run starts only on an ACTIVE workflow",
                )
            )
    return found


def template_problems(parameters: Mapping[str, Any], template: WorkflowTemplate) -> tuple[list[str], list[str]]:
    """The rule for one run's merged parameters: (names the template does not define, required names missing)."""
    defined = template.defined
    unknown = sorted(name for name in parameters if name not in defined)
    missing = [name for name in template.required if name not in parameters]
    return unknown, missing


def names_offer(name: str, template: WorkflowTemplate) -> str:
    """ "(did you mean 'fastq_1'?); its template defines a, b, c": the closest names, then all of them."""
    names = sorted(template.defined)
    match = closest(name, names)
    near = [match] if match else []
    near += [n for n in difflib.get_close_matches(name, names, n=3, cutoff=0.6) if n not in near]
    offer = f" (did you mean {' or '.join(map(repr, near[:3]))}?)" if near else ""
    if not names:
        return f"{offer}; its template defines no parameters"
    shown = ", ".join(names[:_SHOWN_NAMES])
    more = f" and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else ""
    return f"{offer}; its template defines {shown}{more}"


@dataclass(frozen=True)
class TemplateCheck:
    """A row rule: true where the row's run lacks a required parameter."""

    flag: pl.Expr
    column: str
    rule: str
    message: str


def template_checks(
    template: WorkflowTemplate,
    spec: BackendSpec,
    run: Mapping[str, Any],
    routes: Sequence[Route],
    id_column: str,
    located: Any,
) -> tuple[list[Problem], list[TemplateCheck]]:
    """Problems found from the defaults and the header, and the per-row checks, for one template.

    ``located(table, where, problem)`` places a default's problem ("[run] ..." or the --set that put it there)."""
    subject = template.subject
    defined = template.defined
    prefix = spec.parameter_key_prefix
    defaults = _at(run, spec.parameters_path)
    default_keys = set(defaults) if isinstance(defaults, Mapping) else set()
    problems: list[Problem] = []
    for key in sorted(default_keys):
        name = key.removeprefix(prefix)
        if name not in defined:
            problem = Problem(
                None,
                None,
                f"[run] parameters.{key}",
                _show(defaults[key]),
                UNKNOWN,
                f"is not a parameter of {subject}{names_offer(name, template)}",
            )
            problems.append(located("run", f"{'.'.join(spec.parameters_path)}.{key}", problem))
    parameter_routes = [r for r in routes if r.kind == "parameter" and r.container == spec.parameters_path]
    by_key = {r.key.removeprefix(prefix): r for r in parameter_routes}
    id_routed = any(r.column == id_column for r in parameter_routes)
    for route in parameter_routes:
        name = route.key.removeprefix(prefix)
        if name in defined:
            continue
        if route.column == id_column:
            meant = closest(name, defined) or next((n for n in _ID_NAMES if n in defined), None)
            fix = (
                f"set [workflow] id_parameter = {meant!r} (its name in the template) or id_parameter = false"
                if meant
                else "set [workflow] id_parameter = false, so that the sample id is sent as no parameter"
            )
            message = f"is the id column, sent as parameter {name!r}, which {subject} does not define: {fix}"
        else:
            message = (
                f"becomes parameter {name!r}, which {subject} does not define{names_offer(name, template)}; "
                "rename the column, or remove it"
            )
        problems.append(Problem(None, None, f"header {route.column!r}", None, UNKNOWN, message))
    checks: list[TemplateCheck] = []
    for name in template.required:
        if name in default_keys or prefix + name in default_keys:
            continue
        required = by_key.get(name)
        if required is not None:
            checks.append(
                TemplateCheck(
                    pl.col(required.source).is_null(),
                    required.column,
                    REQUIRED,
                    f"is empty, and {subject} requires parameter {name!r}, which has no default: fill the cell, "
                    f"or set it in [run.parameters]",
                )
            )
            continue
        hint = ""
        strays = [r.column for r in parameter_routes if r.key.removeprefix(prefix) not in defined]
        near = closest(name, strays)
        if near is not None:
            hint = f" (the column {near!r} looks meant for it)"
        elif not id_routed and name in _ID_NAMES:
            hint = f"; [workflow] id_parameter = {name!r} sends the sample id as it"
        problem = Problem(
            None,
            None,
            f"[run] parameters.{prefix}{name}",
            None,
            REQUIRED,
            f"is required by {subject}, and no run sets it: set it in [run.parameters], with "
            f"{setting('sets', f'parameters.{name}=...')}, or as a sheet column{hint}",
        )
        problems.append(problem)
    return problems, checks


def near_field_problems(
    routes: Sequence[Route], spec: BackendSpec, id_column: str | None, defined: Iterable[str] = ()
) -> list[Problem]:
    """Sheet columns one edit from a per-run field (``priorty``, ``workflowID``): refused with "did you mean",
    not sent as a new parameter while the field keeps its default.  ``param.NAME`` says a parameter is meant."""
    fields = set(spec.fields) | set(spec.request_only)
    defined = set(defined)
    found = []
    for route in routes:
        if route.kind != "parameter" or route.column.startswith(PARAM_PREFIX) or route.column == id_column:
            continue
        if route.key.removeprefix(spec.parameter_key_prefix) in defined:
            continue
        match = near_miss(route.column, fields)
        if match is None:
            continue
        where = (
            f"{match} is a field of the whole request: set it in [run]"
            if match in spec.request_only
            else f"a column named {match} sets it per run"
        )
        found.append(
            Problem(
                None,
                None,
                f"header {route.column!r}",
                None,
                NEAR_FIELD,
                f"is one edit from the {spec.title} field {match!r} (did you mean {match!r}?): as spelt it would "
                f"be sent as a parameter {route.key!r} while {match} keeps its default; {where}, or name the "
                f"column {PARAM_PREFIX}{route.column} to send a parameter of that name",
            )
        )
    return found


def near_miss(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` is a misspelling of: the same in another case or without separators,
    or (names of five letters or more) one letter added, dropped, changed or swapped.  Shorter
    names are left alone: ``lane`` is a sequencing lane, not a misspelt ``name``."""
    bare = re.sub(r"[\s_.\-]+", "", name.lower())
    for candidate in sorted(candidates):
        if candidate == name:
            return None
    for candidate in sorted(candidates):
        lowered = candidate.lower()
        if lowered == name.lower() or re.sub(r"[\s_.\-]+", "", lowered) == bare:
            return candidate
        if min(len(name), len(candidate)) >= 5 and _one_edit(name.lower(), lowered):
            return candidate
    return None


def _at(values: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = values
    for name in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(name)
    return node


def _show(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
