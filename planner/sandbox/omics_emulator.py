"""A local AWS HealthOmics for tests and the sandbox: the workflow, run and run-batch API on loopback.

``OmicsEmulator`` is an HTTP server (``LoopbackServer``: stdlib ``ThreadingHTTPServer`` in a
background thread) that speaks the rest-json protocol of botocore's ``omics`` service model,
so a plain ``boto3.client("omics", endpoint_url=emu.endpoint_url)`` talks to it::

    with OmicsEmulator(s3_endpoint_url=moto_url) as emu:
        omics = boto3.client("omics", endpoint_url=emu.endpoint_url,
                             config=Config(inject_host_prefix=False))
        omics.start_run_batch(...)

Everything protocol-shaped comes from the model, not from code written per call:
requests are routed by each operation's ``http.method`` and ``requestUri``; members
are read from the URI, the query string, headers or the JSON body as the model
places them; every request is validated against the input shape (required, types,
``min``/``max`` lengths and values, ``enum``, ``pattern``; Java patterns are run by
polars' regex engine through ``planner.model.to_rust_regex``, vectorised per
pattern); responses are serialised from the output shape (ISO-8601 timestamps as
the model asks); errors carry ``x-amzn-ErrorType`` and the status code of the
model's error shape, so botocore raises ``client.exceptions.ValidationException``,
``ResourceNotFoundException``, ``ConflictException``, ``ServiceQuotaExceededException``
(HTTP 402) and ``ThrottlingException``.

Implemented operations: StartRun, GetRun, ListRuns, CancelRun, DeleteRun, StartRunBatch,
GetBatch, ListBatch, ListRunsInBatch, CancelRunBatch, DeleteBatch, DeleteRunBatch,
CreateWorkflow, GetWorkflow, CreateWorkflowVersion, GetWorkflowVersion.  Other operations
of the model are routed and answered with HTTP 501.

Sources, cited as: "model" (the botocore ``omics`` service model and its documentation
strings), "seeds/000" (StartRun), "seeds/001" (StartRunBatch), "guide" (the AWS HealthOmics
User Guide, pages named).  What none of them says is marked UNDOCUMENTED, with the reading
chosen.

Time.  Everything moves on the injected ``clock`` in steps of ``step_seconds``, computed
lazily on each request (no background work).

* A batch is PENDING for one step, SUBMITTING for the next, then submits its runs
  (INPROGRESS) and is PROCESSED when they have finished (seeds/001: StartRunBatch
  "returns immediately with a batch ID and status PENDING", runs are submitted
  asynchronously; the statuses are the model's BatchStatus).  ``s3UriSettings`` is read
  from S3 synchronously and its ETag recorded; when the batch submits, the object is
  checked again (HeadObject) and a changed or missing object makes the batch FAILED with a
  reason naming the ETags (seeds/001).  The file's content (a JSON array of
  inlineSettings-shaped objects, at most 100,000, runSettingId unique) is checked at
  submission too: a malformed file fails the batch, an invalid entry fails that run's
  submission (ListRunsInBatch: ``submissionStatus`` FAILED with a reason and message).
* Each batch run takes its settings from ``defaultRunSetting`` overridden by its entry;
  ``parameters`` and ``runTags`` (and ``engineSettings``) merge per key, the run's value
  winning (seeds/001).  StartRun's defaults apply: PRIVATE workflow, STATIC storage of
  1200 GiB, ``retentionMode`` RETAIN (seeds/000).
* A run is PENDING, STARTING, RUNNING for one step each (the model's RunStatus; guide,
  "Run lifecycle"), then COMPLETED or FAILED.  With ``run_seconds``, a run is RUNNING for
  between half and one and a half times that (fixed by a hash of the seed and the run id), so
  the runs of one batch end one after another, as real runs do, and a failure threshold
  (``--cancel-if-failed``) can fire while others still run (``planner sandbox start
  --run-seconds``).
* ``requestId`` deduplicates StartRun, StartRunBatch, CreateWorkflow and
  CreateWorkflowVersion (model: ``idempotencyToken``; seeds/000, seeds/001): a repeat
  answers with the first call's resource and creates nothing, even once that run or batch
  has been deleted (UNDOCUMENTED: the token's lifetime; a repeat for a deleted run answers
  status DELETED).

Failures.  How a run ends is decided when it starts:

* ``fail_when(settings)``, when given, alone decides: it is called with the run's merged
  settings (as GetRun shows them: ``tags``, not ``runTags``; plus ``runSettingId`` for a
  batch run) and returns ``(failureReason, statusMessage)`` to fail the run, or None to
  let it complete.
* Otherwise ``failure_rate`` fails a deterministic subset: a hash of ``seed``, the batch's
  ``requestId`` and the ``runSettingId`` (for StartRun: ``seed`` and the run's
  ``requestId``) below ``failure_rate``; its reason is picked by another hash of the same
  key from ``FAILURE_REASONS``, values of the guide's "Run failure reasons" table.
* A FAILED run's GetRun carries ``failureReason`` and ``statusMessage`` (model:
  GetRunResponse); ListRuns items carry neither (model: RunListItem has no such members).
  Every GetRun carries ``uuid`` and ``logLocation`` (``runLogStream``, ``engineLogStream``:
  model RunLogLocation; stream names ``run/<id>`` and ``run/<id>/engine`` in the
  ``/aws/omics/WorkflowLog`` group, guide "Monitoring HealthOmics with CloudWatch Logs");
  StartRun answers with ``uuid`` and ListRunsInBatch items with ``runInternalUuid`` (model).
  GetRun and StartRun carry ``runOutputUri``, where the run writes (seeds/000, StartRun's
  response: "runOutputUri (string)"; model GetRunResponse): the run's ``outputUri`` with
  its run id appended, or ``outputUri`` itself with ``outputUriPrefixMode``
  NONE_WITH_OVERWRITE; `planner outputs` reads it from GetRun.

Cancel.

* CancelRun cancels an unfinished run; a finished one answers ConflictException (model:
  the error for a resource "in its current state"; guide "Run operations": "cancel a run
  that hasn't completed yet").
* CancelRunBatch is allowed only in PENDING, SUBMITTING or INPROGRESS (model doc; otherwise
  ConflictException).  It prevents unsubmitted runs from starting and cancels the started,
  unfinished ones, each submission becoming CANCEL_SUCCESS or CANCEL_FAILED (model doc;
  GetBatch ``submissionSummary`` counts them).  A run already finished is left alone, its
  submission keeping its status (UNDOCUMENTED).  The batch is CANCELLED at once (no
  STOPPING step).
* ``uncancellable(settings)`` (same argument as ``fail_when``) makes cancels of the runs it
  is true for fail: in a batch, their submission is CANCEL_FAILED and they keep running to
  their end; CancelRun of such a run answers ConflictException (UNDOCUMENTED: which error a
  failed cancel gives).

Deletion and retention.

* DeleteRun deletes a COMPLETED, FAILED or CANCELLED run (model doc; ConflictException
  otherwise).  A deleted run answers ResourceNotFoundException to GetRun, CancelRun and
  DeleteRun and is not listed by ListRuns (model doc of DeleteRun: "Use ListRuns to
  confirm the workflow no longer appears in the list. Use GetRun to verify the workflow
  cannot be found").  Its batch still counts it: ``runSummary.deletedRunCount``, and
  ListRunsInBatch still shows what was started.
* DeleteRunBatch is allowed on a PROCESSED or CANCELLED batch only (model doc;
  ConflictException otherwise) and deletes its finished runs, as DeleteRun would: each
  submission becomes DELETE_SUCCESS, or DELETE_FAILED for a run still running (after a
  failed cancel); the batch becomes RUNS_DELETED, or RUNS_DELETE_FAILED when any delete
  failed (UNDOCUMENTED: when the service uses RUNS_DELETE_FAILED; this is our reading).
* DeleteBatch needs a final batch (PROCESSED, FAILED, CANCELLED, RUNS_DELETE_FAILED,
  RUNS_DELETED: model doc); after it GetBatch, ListRunsInBatch, CancelRunBatch and
  DeleteRunBatch answer ResourceNotFoundException, and its runs stay ("does not delete the
  individual workflow runs": model doc).
* ``max_retained_runs`` (default None: no limit) is the quota of runs the API keeps
  (guide "Run retention mode": "maximum number of runs (active and inactive)").  At the
  maximum, a new run with ``retentionMode`` REMOVE removes the oldest retained REMOVE run,
  whatever its status (a removed run is as if deleted); a new RETAIN run, or a REMOVE run
  when no REMOVE run is left to remove, finds no room: StartRun answers
  ServiceQuotaExceededException, and a batch fails at that run (status FAILED, its
  ``failureReason`` naming the quota; that run and the ones after it get FAILED
  submissions; the runs already started go on), as the guide says "the batch fails when
  HealthOmics tries to start the next run after the maximum" (seeds/000 describes the
  modes).  UNDOCUMENTED: whether a new RETAIN run may remove REMOVE runs (here it may not),
  and whether unfinished runs are removed (here they are).

Listing.  ListRuns filters by ``name``, ``runGroupId``, ``status`` and ``batchId``, in any
combination, and pages with ``maxResults`` and ``startingToken`` (model: ListRunsRequest);
items come in creation order, the token naming the next run, so deletions between pages
neither skip nor repeat one.  ListRunsInBatch filters by ``submissionStatus``,
``runSettingId`` and ``runId`` and pages with ``maxItems``.  GetBatch's ``runSummary`` counts
every run the batch started by status (cancelled, failed, deleted included) from counters the
lifecycle keeps, not by visiting the runs.

Workflows.  CreateWorkflow and CreateWorkflowVersion need a definition (``definitionZip``,
``definitionUri`` or ``definitionRepository``: model doc of CreateWorkflow, "required
resources"); the emulator keeps the request's ``parameterTemplate`` (name -> {description,
optional}: model WorkflowParameter) and echoes it with GetWorkflow and GetWorkflowVersion.
A workflow or version is CREATING for one step, then ACTIVE (model WorkflowStatus; guide
"Verify the workflow status"); ``set_workflow_status`` pins another status (FAILED,
INACTIVE, DELETED, ...).  Version names are unique per workflow (model doc;
ConflictException).  Workflows here are this account's PRIVATE ones: GetWorkflow with
``type`` READY2RUN or another ``workflowOwnerId`` answers ResourceNotFoundException.

Runs of a known workflow are checked: a run starts only when the workflow (and the version
named by ``workflowVersionName``) is ACTIVE (guide: "You can start a run using this
workflow after the status transitions to ACTIVE"), and its merged ``parameters`` must fit
the template of the version named, else of the workflow: a parameter the template does not
define, or a required one (``optional`` not true) missing, refuses the run (seeds/000: "The
run needs all required parameters ... cannot include any parameters that are not defined
in the parameter template").  StartRun answers ValidationException naming the parameters
(ResourceNotFoundException for an unknown version); a batch run's submission is FAILED with
that reason and message.  UNDOCUMENTED: the error codes of these refusals, and whether the
batch checks at submission (here) or at StartRunBatch.  Leniency: a ``workflowId`` the
emulator does not know (never created here, a READY2RUN workflow, or another owner's) is
accepted unchecked, so tests and the sandbox can name any workflow; a workflow created
without a ``parameterTemplate``, and a run with ``parametersUri``, skip the parameter check.

Throttling.  With ``throttle_per_second``, a token bucket (capacity one second's worth,
refilled in real time, not by ``clock``) answers requests over the rate with HTTP 429
ThrottlingException, which botocore's retry modes retry.

Test hooks: ``run_count()`` (runs not deleted), ``batch_count()``, ``requests()`` (every
routed request as ``(operation, params)``, throttled ones included), ``recorded_etag(batch_id)``,
``set_workflow_status(workflow_id, status, version_name=None, message=None)`` and
``put_workflow(workflow_id, ...)``, which makes (or replaces) an ACTIVE workflow under an id
of the caller's choosing, with its parameter template: the id a plan names, where
CreateWorkflow would choose one.  The sandbox reaches it over HTTP, as moto's ``/moto-api/``:
``PUT /_emulator/workflows/{id}`` with a JSON body ``{"name", "parameterTemplate",
"versions": {name: {"parameterTemplate"}}}`` (not an AWS API; no SigV4 is checked).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import threading
import time
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import botocore.session
import polars as pl

from planner.model import to_rust_regex

from .loopback import LoopbackServer, fraction

__all__ = ["OmicsEmulator"]

SERVICE = "omics"
MAX_INLINE_SETTINGS = 100
MAX_S3_SETTINGS = 100_000
DEFAULT_PAGE_SIZE = 100
_UUID_NAMESPACE = uuid.UUID("5f0c6a53-8d0e-4c1e-9a56-0a2b1f0e7a11")

RUN_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "DELETED"})
BATCH_TERMINAL = frozenset({"PROCESSED", "FAILED", "CANCELLED", "RUNS_DELETED", "RUNS_DELETE_FAILED"})
# The members of a per-run entry merged key by key with defaultRunSetting's.
_MERGED_PER_KEY = ("parameters", "runTags", "engineSettings")

_model_lock = threading.Lock()
_model_cache: Any = None


def _service_model() -> Any:
    global _model_cache
    with _model_lock:
        if _model_cache is None:
            _model_cache = botocore.session.get_session().get_service_model(SERVICE)
        return _model_cache


# ---------------------------------------------------------------------------
# errors


class ServiceError(Exception):
    """An error answer: ``code`` is the model's error shape name."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else _error_status(code)


def _error_status(code: str) -> int:
    try:
        shape = _service_model().shape_for(code)
        return int(shape.metadata["error"]["httpStatusCode"])
    except Exception:  # not an error shape of the model
        return 400


def _validation(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


def _not_found(message: str) -> ServiceError:
    return ServiceError("ResourceNotFoundException", message)


def _conflict(message: str) -> ServiceError:
    return ServiceError("ConflictException", message)


# ---------------------------------------------------------------------------
# validation against the model's input shapes


def _show(value: Any, limit: int = 80) -> str:
    if value is None:
        return "null"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"'{text}'"


class _Validator:
    """Collects constraint violations; patterns are checked in one polars call each.

    Messages follow the service's wording: ``Value 'x' at 'path' failed to satisfy
    constraint: Member must ...``.  ``group`` tags each problem (the entry index of
    an s3UriSettings file) so a caller can split them per entry.
    """

    def __init__(self) -> None:
        self._seq = 0
        self.errors: list[tuple[int, Any, str]] = []
        self._patterns: dict[str, list[tuple[int, Any, str, str, str]]] = {}

    def _add(self, group: Any, message: str) -> None:
        self._seq += 1
        self.errors.append((self._seq, group, message))

    def _fail(self, group: Any, value: Any, path: str, constraint: str) -> None:
        self._add(group, f"Value {_show(value)} at '{path}' failed to satisfy constraint: {constraint}")

    def check(self, shape: Any, value: Any, path: str, group: Any = None) -> None:
        kind = shape.type_name
        meta = shape.metadata
        if kind == "structure":
            if getattr(shape, "is_document_type", False):
                return
            if not isinstance(value, dict):
                self._fail(group, value, path, "Member must be a structure")
                return
            for name in shape.required_members:
                if value.get(name) is None:
                    self._add(
                        group,
                        f"Value null at '{_join(path, name)}' failed to satisfy constraint: Member must not be null",
                    )
            present = [name for name in shape.members if value.get(name) is not None]
            if getattr(shape, "is_tagged_union", False) and len(present) != 1:
                self._add(
                    group,
                    f"Value at '{path or 'input'}' failed to satisfy constraint: "
                    f"Union must have exactly one member set (one of {', '.join(shape.members)}; got {len(present)})",
                )
            for name in present:
                self.check(shape.members[name], value[name], _join(path, name), group)
            return
        if kind == "list":
            if not isinstance(value, list):
                self._fail(group, value, path, "Member must be a list")
                return
            self._length(group, value, path, meta, len(value))
            member = shape.member
            for index, item in enumerate(value, start=1):
                if item is None:
                    self._add(
                        group,
                        f"Value null at '{path}.{index}.member' failed to satisfy constraint: Member must not be null",
                    )
                else:
                    self.check(member, item, f"{path}.{index}.member", group)
            return
        if kind == "map":
            if not isinstance(value, dict):
                self._fail(group, value, path, "Member must be a map")
                return
            self._length(group, value, path, meta, len(value))
            for key, item in value.items():
                self.check(shape.key, key, f"{path}.key", group)
                if item is None:
                    self._add(
                        group, f"Value null at '{path}.{key}' failed to satisfy constraint: Member must not be null"
                    )
                else:
                    self.check(shape.value, item, f"{path}.{key}", group)
            return
        if kind == "string":
            if not isinstance(value, str):
                self._fail(group, value, path, "Member must be of type string")
                return
            self._length(group, value, path, meta, len(value))
            enum = meta.get("enum")
            if enum and value not in enum:
                self._fail(group, value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
            pattern = meta.get("pattern")
            if pattern:
                self._seq += 1
                self._patterns.setdefault(pattern, []).append((self._seq, group, value, path, pattern))
            return
        if kind in ("integer", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                self._fail(group, value, path, f"Member must be of type {kind}")
                return
            self._range(group, value, path, meta)
            return
        if kind in ("double", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self._fail(group, value, path, f"Member must be of type {kind}")
                return
            self._range(group, value, path, meta)
            return
        if kind == "boolean":
            if not isinstance(value, bool):
                self._fail(group, value, path, "Member must be of type boolean")
            return
        if kind == "timestamp":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                self._fail(group, value, path, "Member must be a timestamp")
            return
        if kind == "blob":
            if not isinstance(value, (str, bytes)):
                self._fail(group, value, path, "Member must be a blob")
            return

    def _length(self, group: Any, value: Any, path: str, meta: dict, length: int) -> None:
        low, high = meta.get("min"), meta.get("max")
        if low is not None and length < low:
            self._fail(group, value, path, f"Member must have length greater than or equal to {low}")
        if high is not None and length > high:
            self._fail(group, value, path, f"Member must have length less than or equal to {high}")

    def _range(self, group: Any, value: Any, path: str, meta: dict) -> None:
        low, high = meta.get("min"), meta.get("max")
        if low is not None and value < low:
            self._fail(group, value, path, f"Member must have value greater than or equal to {low}")
        if high is not None and value > high:
            self._fail(group, value, path, f"Member must have value less than or equal to {high}")

    def finish(self) -> list[tuple[Any, str]]:
        """Run the deferred pattern checks; all problems in the order met."""
        errors = list(self.errors)
        for pattern, checks in self._patterns.items():
            for ok, (seq, group, value, path, java) in zip(
                _match_all(pattern, [c[2] for c in checks]), checks, strict=True
            ):
                if not ok:
                    errors.append(
                        (
                            seq,
                            group,
                            f"Value {_show(value)} at '{path}' failed to satisfy constraint: "
                            f"Member must satisfy regular expression pattern: {java}",
                        )
                    )
        self._patterns = {}
        errors.sort(key=lambda item: item[0])
        return [(group, message) for _, group, message in errors]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_rust_cache: dict[str, str] = {}


def _match_all(java_pattern: str, values: list[str]) -> list[bool]:
    """Whole-value matches of a model (Java) pattern, in one polars call."""
    rust = _rust_cache.get(java_pattern)
    if rust is None:
        rust = _rust_cache[java_pattern] = to_rust_regex(java_pattern)
    try:
        return [bool(v) for v in pl.Series(values, dtype=pl.String).str.contains(rust).to_list()]
    except Exception:  # e.g. a lone surrogate from JSON: check one by one
        out = []
        for value in values:
            try:
                out.append(bool(pl.Series([value], dtype=pl.String).str.contains(rust).item()))
            except Exception:
                out.append(False)
        return out


def _validation_message(problems: list[tuple[Any, str]], limit: int = 10) -> str:
    messages = [message for _, message in problems]
    count = len(messages)
    head = f"{count} validation error{'s' if count != 1 else ''} detected: "
    shown = "; ".join(messages[:limit])
    if count > limit:
        shown += f"; and {count - limit} more"
    return head + shown


def validate_input(shape: Any, params: dict[str, Any]) -> None:
    """Raise ValidationException when ``params`` break ``shape``'s constraints."""
    validator = _Validator()
    validator.check(shape, params, "")
    problems = validator.finish()
    if problems:
        raise _validation(_validation_message(problems))


# ---------------------------------------------------------------------------
# routing and (de)serialisation from the model


@dataclass
class _Route:
    operation: Any
    method: str
    regex: re.Pattern[str]
    labels: dict[str, str]  # regex group -> label name
    static_query: dict[str, str]
    literal_length: int


def _compile_route(operation: Any) -> _Route:
    http = operation.http
    path, _, query = http["requestUri"].partition("?")
    static_query = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        static_query[key] = value
    labels: dict[str, str] = {}
    pieces = []
    literal = 0
    for token in re.split(r"(\{[^}]+\})", path):
        if token.startswith("{") and token.endswith("}"):
            name = token[1:-1]
            greedy = name.endswith("+")
            name = name.rstrip("+")
            group = f"g{len(labels)}"
            labels[group] = name
            pieces.append(f"(?P<{group}>.+)" if greedy else f"(?P<{group}>[^/]+)")
        elif token:
            literal += len(token)
            pieces.append(re.escape(token))
    pattern = "".join(pieces).rstrip("/") or ""
    regex = re.compile(f"^{pattern}/?$")
    return _Route(operation, http["method"].upper(), regex, labels, static_query, literal)


class _Router:
    def __init__(self, model: Any):
        routes = [_compile_route(model.operation_model(name)) for name in model.operation_names]
        # Literal paths win over labels (POST /runBatch/cancel before a {batchId}).
        routes.sort(key=lambda route: (-route.literal_length, -len(route.static_query)))
        self.routes = routes

    def match(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[Any, dict[str, str]] | None:
        for route in self.routes:
            if route.method != method:
                continue
            found = route.regex.match(path)
            if not found:
                continue
            if any(key not in query or (value and query[key][0] != value) for key, value in route.static_query.items()):
                continue
            labels = {name: unquote(found.group(group)) for group, name in route.labels.items()}
            return route.operation, labels
        return None


def _coerce(shape: Any, text: str) -> Any:
    """A URI, query or header string as the member's type (kept raw if it does not parse)."""
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("double", "float"):
            return float(text)
    except ValueError:
        return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), text)
    if kind == "structure" or kind == "list" or kind == "map":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def parse_request(
    operation: Any, labels: dict[str, str], query: dict[str, list[str]], headers: Any, body: bytes
) -> dict[str, Any]:
    """The operation's input parameters, read from where the model puts each member."""
    shape = operation.input_shape
    params: dict[str, Any] = {}
    if shape is None:
        return params
    document: Any = None
    if body.strip():
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise ServiceError("SerializationException", f"Request body is not valid JSON: {exc}", 400) from exc
    payload = shape.serialization.get("payload")
    bound_query: set[str] = set()
    for name, member in shape.members.items():
        wire = member.serialization.get("name", name)
        if member.serialization.get("location") == "querystring" and member.type_name != "map":
            bound_query.add(wire)
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            if wire in labels:
                params[name] = _coerce(member, labels[wire])
        elif location == "querystring":
            if member.type_name == "map":
                extra = {k: v[0] for k, v in query.items() if k not in bound_query}
                if extra:
                    params[name] = extra
            elif wire in query:
                if member.type_name == "list":
                    params[name] = [_coerce(member.member, v) for v in query[wire]]
                else:
                    params[name] = _coerce(member, query[wire][0])
        elif location == "header":
            value = headers.get(wire)
            if value is not None:
                params[name] = _coerce(member, value)
        elif location == "headers":
            prefix = wire.lower()
            found = {k[len(prefix) :]: v for k, v in headers.items() if k.lower().startswith(prefix)}
            if found:
                params[name] = found
        elif payload == name:
            if document is not None:
                params[name] = document
        elif payload is None and isinstance(document, dict) and document.get(wire) is not None:
            params[name] = document[wire]
    if payload is None and document is not None and not isinstance(document, dict):
        raise ServiceError("SerializationException", "Request body must be a JSON object", 400)
    return params


def _timestamp(value: float, fmt: str) -> Any:
    moment = _dt.datetime.fromtimestamp(value, tz=_dt.UTC)
    if fmt == "unixTimestamp":
        return value
    if fmt == "rfc822":
        return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def serialize(shape: Any, value: Any, default_timestamp: str = "unixTimestamp") -> Any:
    """A Python value as the JSON body of ``shape`` (rest-json)."""
    if value is None:
        return None
    kind = shape.type_name
    if kind == "structure":
        if getattr(shape, "is_document_type", False):
            return value
        out = {}
        for name, member in shape.members.items():
            if member.serialization.get("location"):
                continue
            item = value.get(name)
            if item is None:
                continue
            out[member.serialization.get("name", name)] = serialize(member, item, default_timestamp)
        return out
    if kind == "list":
        return [serialize(shape.member, item, default_timestamp) for item in value]
    if kind == "map":
        return {key: serialize(shape.value, item, default_timestamp) for key, item in value.items()}
    if kind == "timestamp":
        return _timestamp(float(value), shape.serialization.get("timestampFormat", default_timestamp))
    if kind == "blob":
        raw = value.encode() if isinstance(value, str) else value
        return base64.b64encode(raw).decode()
    return value


# ---------------------------------------------------------------------------
# state

# The reasons the failure_rate hash gives its failed runs: values of the "Run failure reasons" table of the AWS
# HealthOmics User Guide (workflows-run-errors.html), with our paraphrase of each description as statusMessage.
FAILURE_REASONS: tuple[tuple[str, str], ...] = (
    ("OUT_OF_MEMORY_ERROR", "A workflow task ran out of memory; increase its memory in the workflow definition"),
    ("FILE_SYSTEM_OUT_OF_SPACE", "The run storage ran out of space; increase the storage capacity and run again"),
    ("INPUT_URI_NOT_FOUND", "An input URI does not exist or the run role cannot read it"),
    ("RUN_TASK_FAILED", "The run failed because a task failed; see the task log stream"),
    ("INSTANCE_RESERVATION_FAILED", "Not enough instance capacity to complete the run; try the run again later"),
    ("SERVICE_ERROR", "A transient error occurred in the service; try the run again"),
)
# The model's SubmissionStatus values, each counted in GetBatch's submissionSummary.
_SUBMISSION_STATUSES = ("SUCCESS", "FAILED", "CANCEL_SUCCESS", "CANCEL_FAILED", "DELETE_SUCCESS", "DELETE_FAILED")
# DeleteRun: "You can only delete a run that has reached a COMPLETED, FAILED, or CANCELLED stage" (model doc).
_RUN_DELETABLE = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# CancelRunBatch: "Cancel is only allowed on batches in PENDING, SUBMITTING, or INPROGRESS state" (model doc).
_BATCH_CANCELLABLE = frozenset({"PENDING", "SUBMITTING", "INPROGRESS"})
# DeleteRunBatch: "Delete is only allowed on batches in PROCESSED or CANCELLED state" (model doc).
_BATCH_RUNS_DELETABLE = frozenset({"PROCESSED", "CANCELLED"})
_WORKFLOW_STATUSES = ("CREATING", "ACTIVE", "UPDATING", "DELETED", "FAILED", "INACTIVE")  # the model's WorkflowStatus
_DEFINITION_MEMBERS = ("definitionZip", "definitionUri", "definitionRepository")
# The workflow (and version) request members GetWorkflow and GetWorkflowVersion echo back.
_WORKFLOW_ECHOED = (
    "name",
    "description",
    "engine",
    "main",
    "parameterTemplate",
    "storageType",
    "storageCapacity",
    "accelerators",
    "tags",
    "readmePath",
    "workflowBucketOwnerId",
)
_LOG_GROUP = "/aws/omics/WorkflowLog"  # the log group the HealthOmics User Guide names for run logs


@dataclass(slots=True, eq=False)
class _Run:
    id: str
    uuid: str
    arn: str
    settings: dict[str, Any]
    created_at: float
    failure: tuple[str, str] | None  # (failureReason, statusMessage) when it ends FAILED
    request_id: str | None = None
    batch: _Batch | None = None
    run_setting_id: str | None = None
    source_run_id: str | None = None
    cancelled_at: float | None = None
    deleted_at: float | None = None  # by DeleteRun, DeleteRunBatch or retention: gone from the API


def _run_number(run: _Run) -> int:
    return int(run.id)


@dataclass(slots=True, eq=False)
class _Submission:
    run_setting_id: str
    status: str  # the model's SubmissionStatus
    run: _Run | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(eq=False)
class _Batch:
    id: str
    uuid: str
    arn: str
    request_id: str
    name: str | None
    tags: dict[str, str] | None
    default: dict[str, Any]
    created_at: float
    entries: list[dict[str, Any]] | None  # None when the S3 file could not be used
    entry_errors: dict[int, str] = field(default_factory=dict)
    content_error: str | None = None
    s3: tuple[str, str, str] | None = None  # bucket, key, ETag at submission
    status: str = "PENDING"
    submitted_at: float | None = None
    processed_at: float | None = None
    failed_at: float | None = None
    failure_reason: str | None = None
    submissions: list[_Submission] = field(default_factory=list)
    # GetBatch answers from counters, not by visiting the runs: every run of a batch starts at submitted_at, so the
    # runs neither cancelled nor deleted share one place on the timeline and differ only in how they end.
    operations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SUBMISSION_STATUSES, 0))
    started: int = 0
    live_completing: int = 0
    live_failing: int = 0
    cancelled: int = 0
    deleted: int = 0


@dataclass(eq=False)
class _WorkflowVersion:
    name: str
    arn: str
    uuid: str
    request: dict[str, Any]
    created_at: float
    request_id: str
    status_override: tuple[str, str | None] | None = None


@dataclass(eq=False)
class _Workflow:
    id: str
    arn: str
    uuid: str
    request: dict[str, Any]
    created_at: float
    request_id: str
    status_override: tuple[str, str | None] | None = None
    versions: dict[str, _WorkflowVersion] = field(default_factory=dict)


class _RunIndex:
    """Listed runs (none deleted) in creation order, which is id order; a page resumes from a run id.

    The token is the id of the next run to list, so deletions between pages neither skip nor repeat a run.
    """

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[_Run] = []

    def append(self, run: _Run) -> None:
        self.runs.append(run)

    def discard(self, gone: list[_Run]) -> None:
        """Drop runs already marked deleted: a few by bisection, many in one pass."""
        if len(gone) <= 16:
            for run in gone:
                index = bisect_left(self.runs, _run_number(run), key=_run_number)
                if index < len(self.runs) and self.runs[index] is run:
                    del self.runs[index]
        else:
            self.runs = [run for run in self.runs if run.deleted_at is None]

    def page(
        self, token: str | None, size: int | None, keep: Callable[[_Run], bool] | None
    ) -> tuple[list[_Run], str | None]:
        runs = self.runs
        start = 0
        if token is not None:
            if not token.isdigit():
                raise _validation(
                    f"Value '{token}' at 'startingToken' failed to satisfy constraint: Invalid pagination token"
                )
            start = bisect_left(runs, int(token), key=_run_number)
        size = size or DEFAULT_PAGE_SIZE
        if keep is None:
            end = start + size
            return runs[start:end], (runs[end].id if end < len(runs) else None)
        page: list[_Run] = []
        index = start
        while index < len(runs) and len(page) < size:
            if keep(runs[index]):
                page.append(runs[index])
            index += 1
        while index < len(runs) and not keep(runs[index]):  # no token for an empty last page
            index += 1
        return page, (runs[index].id if index < len(runs) else None)


class _TokenBucket:
    def __init__(self, rate: float):
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


def _merge_settings(default: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    merged = dict(default)
    for key, value in entry.items():
        if key == "runSettingId" or value is None:
            continue
        if key in _MERGED_PER_KEY and isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _parse_s3_uri(uri: str) -> tuple[str, str]:
    found = re.fullmatch(r"s3://([^/]+)/(.+)", uri)
    if not found:
        raise _validation(
            f"Value '{uri}' at 'batchRunSettings.s3UriSettings' failed to satisfy constraint: "
            "Member must be an S3 URI of an object (s3://bucket/key)"
        )
    return found.group(1), found.group(2)


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


# ---------------------------------------------------------------------------
# the emulator


class OmicsEmulator(LoopbackServer):
    """The HealthOmics workflow, run and run-batch API on a loopback HTTP server."""

    server_version = "OmicsEmulator/1.0"
    thread_name = "omics-emulator"

    def __init__(
        self,
        *,
        s3_endpoint_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        failure_rate: float = 0.0,
        seed: int = 0,
        fail_when: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None,
        uncancellable: Callable[[dict[str, Any]], bool] | None = None,
        max_retained_runs: int | None = None,
        throttle_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        step_seconds: float = 1.0,
        region: str = "us-east-1",
        account: str = "123456789012",
        run_seconds: float | None = None,
    ):
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be within [0, 1]")
        if run_seconds is not None and run_seconds <= 0:
            raise ValueError("run_seconds must be positive (None: one step)")
        if throttle_per_second is not None and throttle_per_second <= 0:
            raise ValueError("throttle_per_second must be positive")
        if max_retained_runs is not None and max_retained_runs < 1:
            raise ValueError("max_retained_runs must be at least 1 (None: no limit)")
        self.s3_endpoint_url = s3_endpoint_url
        self._init_server(host, port)
        self.failure_rate = failure_rate
        self.seed = seed
        self.fail_when = fail_when
        self.uncancellable = uncancellable
        self.max_retained_runs = max_retained_runs
        self.clock = clock
        self.step_seconds = float(step_seconds)
        self.run_seconds = run_seconds
        self.region = region
        self.account = account
        self._bucket = _TokenBucket(throttle_per_second) if throttle_per_second else None
        self._model = _service_model()
        self._router = _Router(self._model)
        self._lock = threading.RLock()
        self._s3_lock = threading.Lock()
        self._s3_client: Any = None
        self._clock0 = clock()
        self._wall0 = time.time()
        self._runs: dict[str, _Run] = {}  # the retained runs: neither deleted nor removed
        self._listed = _RunIndex()
        self._listed_by_batch: dict[str, _RunIndex] = {}
        self._removable: deque[_Run] = deque()  # runs started with retentionMode REMOVE, oldest first
        self._batches: dict[str, _Batch] = {}  # not deleted by DeleteBatch
        self._unfinished: dict[str, _Batch] = {}  # PENDING, SUBMITTING or INPROGRESS: the clock moves them
        self._run_requests: dict[str, _Run] = {}
        self._batch_requests: dict[str, _Batch] = {}
        self._workflows: dict[str, _Workflow] = {}
        self._workflow_requests: dict[str, _Workflow] = {}
        self._version_requests: dict[tuple[str, str], _WorkflowVersion] = {}
        self._requests: list[tuple[str, dict[str, Any]]] = []
        self._next_run = 1_000_000
        self._next_batch = 9_000_000
        self._next_workflow = 5_000_000
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
            "StartRun": self._start_run,
            "GetRun": self._get_run,
            "ListRuns": self._list_runs,
            "CancelRun": self._cancel_run,
            "DeleteRun": self._delete_run,
            "StartRunBatch": self._start_run_batch,
            "GetBatch": self._get_batch,
            "ListBatch": self._list_batch,
            "ListRunsInBatch": self._list_runs_in_batch,
            "CancelRunBatch": self._cancel_run_batch,
            "DeleteBatch": self._delete_batch,
            "DeleteRunBatch": self._delete_run_batch,
            "CreateWorkflow": self._create_workflow,
            "GetWorkflow": self._get_workflow,
            "CreateWorkflowVersion": self._create_workflow_version,
            "GetWorkflowVersion": self._get_workflow_version,
        }

    # -- test hooks ----------------------------------------------------------

    def run_count(self) -> int:
        """The runs the API still answers for (deleted and removed ones are not counted)."""
        with self._lock:
            self._advance(self.clock())
            return len(self._runs)

    def batch_count(self) -> int:
        with self._lock:
            self._advance(self.clock())
            return len(self._batches)

    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._requests)

    def recorded_etag(self, batch_id: str) -> str | None:
        """The ETag of the s3UriSettings object recorded when the batch was created."""
        with self._lock:
            batch = self._batches.get(batch_id)
            return batch.s3[2] if batch is not None and batch.s3 is not None else None

    def set_workflow_status(
        self, workflow_id: str, status: str, *, version_name: str | None = None, message: str | None = None
    ) -> None:
        """Pin a workflow's (or one of its versions') status, e.g. FAILED, INACTIVE or DELETED, from now on."""
        if status not in _WORKFLOW_STATUSES:
            raise ValueError(f"status must be one of {', '.join(_WORKFLOW_STATUSES)}")
        with self._lock:
            workflow = self._workflows.get(workflow_id)
            if workflow is None:
                raise ValueError(f"no workflow {workflow_id}")
            target: _Workflow | _WorkflowVersion = workflow
            if version_name is not None:
                if version_name not in workflow.versions:
                    raise ValueError(f"workflow {workflow_id} has no version {version_name}")
                target = workflow.versions[version_name]
            target.status_override = (status, message)

    def put_workflow(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        parameter_template: dict[str, Any] | None = None,
        versions: dict[str, dict[str, Any] | None] | None = None,
    ) -> None:
        """Make (or replace) an ACTIVE PRIVATE workflow ``workflow_id`` with this template, and its versions
        (name -> parameter template), as CreateWorkflow and CreateWorkflowVersion would once ACTIVE."""
        if not re.fullmatch(r"[0-9]{1,18}", workflow_id):
            raise ValueError("a workflow id is 1 to 18 digits (model: WorkflowId)")
        with self._lock:
            born = self.clock() - self.step_seconds  # past CREATING already
            request: dict[str, Any] = {"name": name or f"workflow-{workflow_id}", "engine": "NEXTFLOW"}
            if parameter_template is not None:
                request["parameterTemplate"] = parameter_template
            workflow = _Workflow(
                id=workflow_id,
                arn=f"arn:aws:omics:{self.region}:{self.account}:workflow/{workflow_id}",
                uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow_id}")),
                request=request,
                created_at=born,
                request_id=f"put-workflow-{workflow_id}",
            )
            for version, template in (versions or {}).items():
                workflow.versions[version] = _WorkflowVersion(
                    name=version,
                    arn=f"{workflow.arn}/version/{version}",
                    uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow_id}/version/{version}")),
                    request={"parameterTemplate": template} if template is not None else {},
                    created_at=born,
                    request_id=f"put-workflow-{workflow_id}-{version}",
                )
            self._workflows[workflow_id] = workflow

    def _emulator_api(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The hooks over HTTP (``PUT /_emulator/workflows/{id}``), for the sandbox's other processes."""
        match = re.fullmatch(r"/_emulator/workflows/([^/]+)", path)
        if method.upper() != "PUT" or match is None:
            return self._error(ServiceError("UnknownOperationException", f"No hook matches {method} {path}", 404))
        try:
            document = json.loads(body or b"{}")
            self.put_workflow(
                unquote(match.group(1)),
                name=document.get("name"),
                parameter_template=document.get("parameterTemplate"),
                versions=document.get("versions"),
            )
        except (ValueError, AttributeError, TypeError) as exc:
            return self._error(ServiceError("ValidationException", str(exc), 400))
        return 200, {"Content-Type": "application/json"}, json.dumps({"id": unquote(match.group(1))}).encode()

    # -- HTTP ----------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request in, (status, headers, body) out."""
        status, answer_headers, payload = self._handle(method, target, headers, body)
        answer_headers["x-amzn-RequestId"] = str(uuid.uuid4())  # as every AWS answer carries one
        return status, answer_headers, payload

    def _handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        if parts.path.startswith("/_emulator/"):
            return self._emulator_api(method, parts.path, body)
        query = parse_qs(parts.query, keep_blank_values=True)
        route = self._router.match(method.upper(), parts.path, query)
        if route is None:
            with self._lock:
                self._requests.append(("UnknownOperation", {"method": method, "path": target}))
            return self._error(
                ServiceError("UnknownOperationException", f"No operation matches {method} {parts.path}", 404)
            )
        operation, labels = route
        try:
            params = parse_request(operation, labels, query, headers, body)
        except ServiceError as exc:
            with self._lock:
                self._requests.append((operation.name, {}))
            return self._error(exc)
        with self._lock:
            self._requests.append((operation.name, params))
        if self._bucket is not None and not self._bucket.take():
            return self._error(ServiceError("ThrottlingException", "Rate exceeded"))
        handler = self._handlers.get(operation.name)
        if handler is None:
            return self._error(
                ServiceError("NotImplemented", f"{operation.name} is not implemented by the emulator", 501)
            )
        try:
            if operation.input_shape is not None:
                validate_input(operation.input_shape, params)
            result = handler(params)
        except ServiceError as exc:
            return self._error(exc)
        except Exception as exc:  # a bug in the emulator: answer as the service would
            return self._error(ServiceError("InternalServerException", f"{type(exc).__name__}: {exc}", 500))
        return self._response(operation, result or {})

    def _response(self, operation: Any, result: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        status = int(operation.http.get("responseCode", 200))
        headers = {"Content-Type": "application/json"}
        shape = operation.output_shape
        if shape is None:
            return status, headers, b""
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            if location == "header" and result.get(name) is not None:
                headers[member.serialization.get("name", name)] = str(result[name])
            elif location == "statusCode" and result.get(name) is not None:
                status = int(result[name])
        body = serialize(shape, result)
        return status, headers, json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def _error(exc: ServiceError) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": exc.code}
        body = json.dumps({"message": exc.message}).encode()
        return exc.status, headers, body

    # -- time ----------------------------------------------------------------

    def _wall(self, moment: float | None) -> float | None:
        return None if moment is None else self._wall0 + (moment - self._clock0)

    def _phase(self, since: float, now: float, running: float | None = None) -> str:
        """Where a run started at ``since`` is: PENDING, STARTING one step each, RUNNING one step
        (or ``running`` seconds), then ENDED."""
        steps = (now - since) / self.step_seconds
        if steps < 1:
            return "PENDING"
        if steps < 2:
            return "STARTING"
        if now - since < 2 * self.step_seconds + (self.step_seconds if running is None else running):
            return "RUNNING"
        return "ENDED"

    def _running(self, run: _Run) -> float:
        """How long ``run`` is RUNNING: one step, or with ``run_seconds`` a length of its own around it."""
        if self.run_seconds is None:
            return self.step_seconds
        return self.run_seconds * (0.5 + fraction(f"{self.seed}\x1frunning\x1f{run.id}"))

    def _run_status(self, run: _Run, now: float) -> str:
        if run.deleted_at is not None:
            return "DELETED"
        if run.cancelled_at is not None:
            return "CANCELLED"
        phase = self._phase(run.created_at, now, self._running(run))
        if phase != "ENDED":
            return phase
        return "FAILED" if run.failure is not None else "COMPLETED"

    def _run_times(self, run: _Run, now: float) -> tuple[float | None, float | None]:
        step = self.step_seconds
        started = run.created_at + 2 * step
        stopped = started + self._running(run)
        end = run.cancelled_at
        start_time = started if started <= now and (end is None or started <= end) else None
        stop_time = end if end is not None else (stopped if stopped <= now else None)
        return start_time, stop_time

    def _advance(self, now: float) -> None:
        """Move every unfinished batch along its timeline up to ``now``."""
        step = self.step_seconds
        for batch in list(self._unfinished.values()):
            if batch.status == "PENDING" and now >= batch.created_at + step:
                batch.status = "SUBMITTING"
            if batch.status == "SUBMITTING" and now >= batch.created_at + 2 * step:
                self._submit(batch, batch.created_at + 2 * step)
            if batch.status == "INPROGRESS" and batch.processed_at is not None and now >= batch.processed_at:
                batch.status = "PROCESSED"
            if batch.status not in _BATCH_CANCELLABLE:
                del self._unfinished[batch.id]

    def _fail_batch(self, batch: _Batch, moment: float, reason: str) -> None:
        batch.status = "FAILED"
        batch.failed_at = moment
        batch.failure_reason = reason

    def _submit(self, batch: _Batch, moment: float) -> None:
        if batch.s3 is not None:
            bucket, key, etag = batch.s3
            try:
                head = self._s3().head_object(Bucket=bucket, Key=key)
                current = head.get("ETag")
            except Exception as exc:  # gone, or S3 unreachable
                self._fail_batch(
                    batch,
                    moment,
                    f"The s3UriSettings object s3://{bucket}/{key} could not be read at submission "
                    f"({_client_error_code(exc)}); its ETag was {etag} when the batch was created",
                )
                return
            if current != etag:
                self._fail_batch(
                    batch,
                    moment,
                    f"The s3UriSettings object s3://{bucket}/{key} was modified after the batch was "
                    f"created: ETag {etag} recorded at creation, ETag {current} at submission",
                )
                return
        if batch.content_error is not None or batch.entries is None:
            self._fail_batch(batch, moment, batch.content_error or "The run settings could not be read")
            return
        removed: list[_Run] = []
        quota: str | None = None  # once a run finds no room, the batch fails and starts nothing more
        for index, entry in enumerate(batch.entries):
            setting_id = entry["runSettingId"]
            if quota is not None:
                self._add_submission(
                    batch,
                    _Submission(
                        setting_id,
                        "FAILED",
                        reason="ServiceQuotaExceededException",
                        message=f"Not started: the batch failed at the maximum number of runs ({quota})",
                    ),
                )
                continue
            code, problem = "ValidationException", batch.entry_errors.get(index)
            merged = _merge_settings(batch.default, entry)
            if problem is None and not merged.get("outputUri"):
                problem = (
                    "Value null at 'outputUri' failed to satisfy constraint: "
                    f"Member must not be null (runSettingId {setting_id})"
                )
            tags = merged.pop("runTags", None)
            merged.pop("outputBucketOwnerId", None)
            if tags:
                merged["tags"] = tags
            _apply_run_defaults(merged)
            if problem is None:
                refusal = self._workflow_refusal(merged, moment)
                if refusal is not None:
                    code, problem = refusal
            if problem is None:
                quota = self._make_room(merged, moment, removed)
                if quota is not None:
                    code, problem = "ServiceQuotaExceededException", quota
            if problem is not None:
                self._add_submission(batch, _Submission(setting_id, "FAILED", reason=code, message=problem))
                continue
            failure = self._decide_failure(
                merged, f"{self.seed}\x1f{batch.request_id}\x1f{setting_id}", run_setting_id=setting_id
            )
            run = self._new_run(merged, moment, failure, batch=batch, run_setting_id=setting_id)
            self._add_submission(batch, _Submission(setting_id, "SUCCESS", run=run))
        self._unlist(removed)
        batch.submitted_at = moment
        if quota is not None:
            # "the batch fails when HealthOmics tries to start the next run after the maximum" (run retention guide)
            self._fail_batch(batch, moment, f"ServiceQuotaExceededException: {quota}")
            return
        batch.status = "INPROGRESS"
        runs = [s.run for s in batch.submissions if s.run is not None]
        longest = max((self._running(run) for run in runs), default=self.step_seconds)
        batch.processed_at = moment + 2 * self.step_seconds + longest if batch.started else moment

    def _add_submission(self, batch: _Batch, submission: _Submission) -> None:
        batch.submissions.append(submission)
        batch.operations[submission.status] += 1
        if submission.run is not None:
            batch.started += 1

    def _set_submission(self, batch: _Batch, submission: _Submission, status: str) -> None:
        # submissionSummary counts operations: a later delete does not undo the count of an earlier cancel.
        submission.status = status
        batch.operations[status] += 1

    # -- S3 --------------------------------------------------------------------

    def _s3(self) -> Any:
        with self._s3_lock:
            if self._s3_client is None:
                import boto3
                from botocore.config import Config

                session = boto3.session.Session()
                kwargs: dict[str, Any] = {}
                if session.get_credentials() is None:  # a sandbox without credentials
                    kwargs = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
                self._s3_client = session.client(
                    "s3",
                    endpoint_url=self.s3_endpoint_url,
                    region_name=self.region,
                    config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}),
                    **kwargs,
                )
            return self._s3_client

    # -- runs ----------------------------------------------------------------

    def _new_run(self, settings: dict[str, Any], moment: float, failure: tuple[str, str] | None, **extra: Any) -> _Run:
        self._next_run += 1
        run_id = str(self._next_run)
        run = _Run(
            id=run_id,
            uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"run/{run_id}")),
            arn=f"arn:aws:omics:{self.region}:{self.account}:run/{run_id}",
            settings=settings,
            created_at=moment,
            failure=failure,
            **extra,
        )
        self._runs[run_id] = run
        self._listed.append(run)
        if settings.get("retentionMode") == "REMOVE":
            self._removable.append(run)
        batch = run.batch
        if batch is not None:
            self._listed_by_batch.setdefault(batch.id, _RunIndex()).append(run)
            if failure is None:
                batch.live_completing += 1
            else:
                batch.live_failing += 1
        return run

    def _settings_view(self, settings: dict[str, Any], run_setting_id: str | None) -> dict[str, Any]:
        """What ``fail_when`` and ``uncancellable`` see: the merged settings, plus a batch run's runSettingId."""
        view = dict(settings)
        if run_setting_id is not None:
            view["runSettingId"] = run_setting_id
        return view

    def _decide_failure(
        self, settings: dict[str, Any], key: str, run_setting_id: str | None = None
    ) -> tuple[str, str] | None:
        """How the run will end: None (COMPLETED) or its (failureReason, statusMessage)."""
        if self.fail_when is not None:  # when given, it alone decides
            found = self.fail_when(self._settings_view(settings, run_setting_id))
            if found is None:
                return None
            reason, message = str(found[0]), str(found[1])
            if not 1 <= len(reason) <= 64 or not message:
                raise ValueError("fail_when must return (failureReason of 1..64 characters, statusMessage) or None")
            return reason, message
        if fraction(key) < self.failure_rate:
            return FAILURE_REASONS[int(fraction(key + "\x1freason") * len(FAILURE_REASONS))]
        return None

    def _make_room(self, settings: dict[str, Any], moment: float, removed: list[_Run]) -> str | None:
        """Room for one more retained run, or why there is none (ServiceQuotaExceededException).

        A new REMOVE run at the maximum removes the oldest retained REMOVE run (whatever its status, whichever
        batch it belongs to); a new RETAIN run at the maximum finds no room (run retention guide).
        """
        limit = self.max_retained_runs
        if limit is None or len(self._runs) < limit:
            return None
        if settings.get("retentionMode") != "REMOVE":
            return (
                f"The account holds the maximum number of runs ({limit}); a run with retentionMode RETAIN "
                "cannot start until runs are deleted"
            )
        while len(self._runs) >= limit:
            while self._removable and self._removable[0].deleted_at is not None:
                self._removable.popleft()
            if not self._removable:
                return (
                    f"The account holds the maximum number of runs ({limit}), none of them with retentionMode "
                    "REMOVE; delete runs to start more"
                )
            victim = self._removable.popleft()
            self._mark_deleted(victim, moment)
            removed.append(victim)
        return None

    def _cancel(self, run: _Run, moment: float) -> None:
        run.cancelled_at = moment
        batch = run.batch
        if batch is not None:
            if run.failure is None:
                batch.live_completing -= 1
            else:
                batch.live_failing -= 1
            batch.cancelled += 1

    def _mark_deleted(self, run: _Run, moment: float) -> None:
        """The run leaves the API (GetRun, CancelRun, DeleteRun: not found); ``_unlist`` drops it from ListRuns."""
        batch = run.batch
        if batch is not None:
            if run.cancelled_at is not None:
                batch.cancelled -= 1
            elif run.failure is None:
                batch.live_completing -= 1
            else:
                batch.live_failing -= 1
            batch.deleted += 1
        run.deleted_at = moment
        del self._runs[run.id]

    def _unlist(self, gone: list[_Run]) -> None:
        if not gone:
            return
        self._listed.discard(gone)
        by_batch: dict[str, list[_Run]] = {}
        for run in gone:
            if run.batch is not None:
                by_batch.setdefault(run.batch.id, []).append(run)
        for batch_id, runs in by_batch.items():
            self._listed_by_batch[batch_id].discard(runs)

    def _cannot_cancel(self, run: _Run) -> bool:
        return self.uncancellable is not None and bool(
            self.uncancellable(self._settings_view(run.settings, run.run_setting_id))
        )

    def _run_output_uri(self, run: _Run) -> str | None:
        base = run.settings.get("outputUri")
        if not base:
            return None
        if run.settings.get("outputUriPrefixMode") == "NONE_WITH_OVERWRITE":
            return base
        return f"{base.rstrip('/')}/{run.id}"

    def _log_location(self, run: _Run) -> dict[str, str]:
        # Stream names run/<id> and run/<id>/engine in /aws/omics/WorkflowLog, as the User Guide's CloudWatch
        # Logs page describes them; the ARN form is CloudWatch's.
        stream = f"arn:aws:logs:{self.region}:{self.account}:log-group:{_LOG_GROUP}:log-stream:run/{run.id}"
        return {"engineLogStream": f"{stream}/engine", "runLogStream": stream}

    def _find_run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise _not_found(f"Run {run_id} not found")
        return run

    def _start_run(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            request_id = params["requestId"]
            run = self._run_requests.get(request_id)
            if run is None:
                settings = {k: v for k, v in params.items() if k not in ("requestId", "runId")}
                source = None
                if params.get("runId") is not None:
                    source = self._find_run(params["runId"])
                    settings = {**source.settings, **settings}
                elif params.get("workflowId") is None:
                    raise _validation(
                        "Value null at 'workflowId' failed to satisfy constraint: workflowId or runId must be provided"
                    )
                _apply_run_defaults(settings)
                refusal = self._workflow_refusal(settings, now)
                if refusal is not None:
                    raise ServiceError(*refusal)
                removed: list[_Run] = []
                quota = self._make_room(settings, now, removed)
                if quota is not None:
                    raise ServiceError("ServiceQuotaExceededException", quota)
                self._unlist(removed)
                failure = self._decide_failure(settings, f"{self.seed}\x1f{request_id}")
                run = self._new_run(
                    settings, now, failure, request_id=request_id, source_run_id=source.id if source else None
                )
                self._run_requests[request_id] = run
            return {
                "arn": run.arn,
                "id": run.id,
                "status": self._run_status(run, now),
                "tags": run.settings.get("tags"),
                "uuid": run.uuid,
                "runOutputUri": self._run_output_uri(run),
            }

    def _get_run(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            run = self._find_run(params["id"])
            status = self._run_status(run, now)
            start, stop = self._run_times(run, now)
            out = dict(run.settings)
            out.update(
                {
                    "arn": run.arn,
                    "id": run.id,
                    "uuid": run.uuid,
                    "status": status,
                    "batchId": run.batch.id if run.batch is not None else None,
                    "runId": run.source_run_id,
                    "creationTime": self._wall(run.created_at),
                    "startTime": self._wall(start),
                    "stopTime": self._wall(stop),
                    "runOutputUri": self._run_output_uri(run),
                    "startedBy": f"arn:aws:iam::{self.account}:user/omics-emulator",
                    "logLocation": self._log_location(run),
                }
            )
            workflow = self._workflows.get(run.settings.get("workflowId", ""))
            if workflow is not None:
                out["workflowUuid"] = workflow.uuid
            if status == "FAILED" and run.failure is not None:
                out["failureReason"], out["statusMessage"] = run.failure
            elif status == "CANCELLED":
                out["statusMessage"] = "Run cancelled"
            return out

    def _run_summary(self, run: _Run, now: float) -> dict[str, Any]:
        # The model's RunListItem: no failureReason, statusMessage or uuid.
        start, stop = self._run_times(run, now)
        out = {
            key: run.settings.get(key)
            for key in ("workflowId", "name", "priority", "storageCapacity", "storageType", "workflowVersionName")
        }
        workflow = self._workflows.get(run.settings.get("workflowId", ""))
        out.update(
            {
                "arn": run.arn,
                "id": run.id,
                "status": self._run_status(run, now),
                "batchId": run.batch.id if run.batch is not None else None,
                "workflowName": workflow.request.get("name") if workflow is not None else None,
                "creationTime": self._wall(run.created_at),
                "startTime": self._wall(start),
                "stopTime": self._wall(stop),
            }
        )
        return out

    def _list_runs(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch_id = params.get("batchId")
            listed = self._listed if batch_id is None else self._listed_by_batch.get(batch_id, _RunIndex())
            name, group, status = params.get("name"), params.get("runGroupId"), params.get("status")

            def keep(run: _Run) -> bool:
                return (
                    (name is None or run.settings.get("name") == name)
                    and (group is None or run.settings.get("runGroupId") == group)
                    and (status is None or self._run_status(run, now) == status)
                )

            plain = name is None and group is None and status is None
            page, token = listed.page(params.get("startingToken"), params.get("maxResults"), None if plain else keep)
            return {"items": [self._run_summary(r, now) for r in page], "nextToken": token}

    def _cancel_run(self, params: dict[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            self._advance(now)
            run = self._find_run(params["id"])
            status = self._run_status(run, now)
            if status in RUN_TERMINAL:
                raise _conflict(f"Run {run.id} is {status} and cannot be cancelled")
            if self._cannot_cancel(run):
                raise _conflict(f"Run {run.id} could not be cancelled; it is still {status}")
            self._cancel(run, now)

    def _delete_run(self, params: dict[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            self._advance(now)
            run = self._find_run(params["id"])
            status = self._run_status(run, now)
            if status not in _RUN_DELETABLE:
                raise _conflict(f"Run {run.id} is {status}; only a COMPLETED, FAILED or CANCELLED run can be deleted")
            self._mark_deleted(run, now)
            self._unlist([run])

    # -- workflows -------------------------------------------------------------

    def _workflow_status(self, item: _Workflow | _WorkflowVersion, now: float) -> tuple[str, str | None]:
        if item.status_override is not None:
            return item.status_override
        return ("CREATING" if now < item.created_at + self.step_seconds else "ACTIVE"), None

    def _find_workflow(self, params: dict[str, Any], key: str = "id") -> _Workflow:
        workflow_id = params[key]
        workflow = self._workflows.get(workflow_id)
        # Only this account's PRIVATE workflows live here: a shared or READY2RUN one is not found.
        owner, kind = params.get("workflowOwnerId"), params.get("type")
        if workflow is None or (owner is not None and owner != self.account) or kind not in (None, "PRIVATE"):
            raise _not_found(f"Workflow {workflow_id} not found")
        return workflow

    def _create_workflow(self, params: dict[str, Any]) -> dict[str, Any]:
        if all(params.get(name) is None for name in _DEFINITION_MEMBERS):
            raise _validation(f"A workflow definition is required: one of {', '.join(_DEFINITION_MEMBERS)}")
        now = self.clock()
        with self._lock:
            workflow = self._workflow_requests.get(params["requestId"])
            if workflow is None:
                self._next_workflow += 1
                while str(self._next_workflow) in self._workflows:  # an id put_workflow chose
                    self._next_workflow += 1
                workflow_id = str(self._next_workflow)
                workflow = _Workflow(
                    id=workflow_id,
                    arn=f"arn:aws:omics:{self.region}:{self.account}:workflow/{workflow_id}",
                    uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow_id}")),
                    request={k: params[k] for k in _WORKFLOW_ECHOED if params.get(k) is not None},
                    created_at=now,
                    request_id=params["requestId"],
                )
                self._workflows[workflow_id] = workflow
                self._workflow_requests[workflow.request_id] = workflow
            status, _ = self._workflow_status(workflow, now)
            return {
                "arn": workflow.arn,
                "id": workflow.id,
                "status": status,
                "tags": workflow.request.get("tags"),
                "uuid": workflow.uuid,
            }

    def _get_workflow(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            workflow = self._find_workflow(params)
            status, message = self._workflow_status(workflow, now)
            return {
                **workflow.request,
                "arn": workflow.arn,
                "id": workflow.id,
                "uuid": workflow.uuid,
                "type": "PRIVATE",
                "status": status,
                "statusMessage": message,
                "creationTime": self._wall(workflow.created_at),
            }

    def _create_workflow_version(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            workflow = self._find_workflow(params, "workflowId")
            version = self._version_requests.get((workflow.id, params["requestId"]))
            if version is None:
                name = params["versionName"]
                if name in workflow.versions:
                    raise _conflict(f"Workflow {workflow.id} already has a version named {name}")
                if all(params.get(member) is None for member in _DEFINITION_MEMBERS):
                    raise _validation(f"A workflow definition is required: one of {', '.join(_DEFINITION_MEMBERS)}")
                version = _WorkflowVersion(
                    name=name,
                    arn=f"{workflow.arn}/version/{name}",
                    uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"workflow/{workflow.id}/version/{name}")),
                    request={k: params[k] for k in _WORKFLOW_ECHOED if params.get(k) is not None},
                    created_at=now,
                    request_id=params["requestId"],
                )
                workflow.versions[name] = version
                self._version_requests[(workflow.id, version.request_id)] = version
            status, _ = self._workflow_status(version, now)
            return {
                "arn": version.arn,
                "workflowId": workflow.id,
                "versionName": version.name,
                "status": status,
                "tags": version.request.get("tags"),
                "uuid": version.uuid,
            }

    def _get_workflow_version(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            workflow = self._find_workflow(params, "workflowId")
            version = workflow.versions.get(params["versionName"])
            if version is None:
                raise _not_found(f"Workflow {workflow.id} has no version {params['versionName']}")
            status, message = self._workflow_status(version, now)
            return {
                **version.request,
                "arn": version.arn,
                "workflowId": workflow.id,
                "versionName": version.name,
                "uuid": version.uuid,
                "type": "PRIVATE",
                "status": status,
                "statusMessage": message,
                "creationTime": self._wall(version.created_at),
            }

    def _workflow_refusal(self, settings: dict[str, Any], now: float) -> tuple[str, str] | None:
        """Why a run of a workflow this emulator knows cannot start: (error code, message), or None.

        A workflowId the emulator does not know (and any READY2RUN or shared workflow) is accepted unchecked.
        """
        workflow_id = settings.get("workflowId")
        owner = settings.get("workflowOwnerId")
        if workflow_id is None or settings.get("workflowType", "PRIVATE") != "PRIVATE":
            return None
        if owner is not None and owner != self.account:
            return None
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            return None
        status, _ = self._workflow_status(workflow, now)
        if status != "ACTIVE":
            return "ValidationException", f"Workflow {workflow_id} is {status}; a run can start only once it is ACTIVE"
        template = workflow.request.get("parameterTemplate")
        subject = f"workflow {workflow_id}"
        version_name = settings.get("workflowVersionName")
        if version_name is not None:
            version = workflow.versions.get(version_name)
            if version is None:
                return "ResourceNotFoundException", f"Workflow {workflow_id} has no version {version_name}"
            status, _ = self._workflow_status(version, now)
            if status != "ACTIVE":
                return (
                    "ValidationException",
                    f"Version {version_name} of workflow {workflow_id} is {status}; "
                    "a run can start only once it is ACTIVE",
                )
            template = version.request.get("parameterTemplate")
            subject = f"workflow {workflow_id} version {version_name}"
        if template is None or settings.get("parametersUri") is not None:
            return None  # no template to check against (the service would generate one), or parameters on S3
        parameters = settings.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            return "ValidationException", f"parameters must be a JSON object of the parameters {subject} defines"
        unknown = [name for name in parameters if name not in template]
        missing = [
            name
            for name, spec in template.items()
            if name not in parameters and (spec or {}).get("optional") is not True
        ]
        problems = []
        if unknown:
            problems.append(
                f"parameter{'s' if len(unknown) > 1 else ''} {_quoted(unknown)} "
                f"not defined in the parameter template of {subject}"
            )
        if missing:
            problems.append(
                f"required parameter{'s' if len(missing) > 1 else ''} {_quoted(missing)} of {subject} missing"
            )
        if problems:
            return "ValidationException", "Run refused: " + "; ".join(problems)
        return None

    # -- batches ---------------------------------------------------------------

    def _find_batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise _not_found(f"Run batch {batch_id} not found")
        return batch

    def _start_run_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        request_id = params["requestId"]
        default = params["defaultRunSetting"]
        settings = params["batchRunSettings"]
        if default.get("workflowType") == "READY2RUN":
            raise _validation(
                "Value 'READY2RUN' at 'defaultRunSetting.workflowType' failed to satisfy constraint: "
                "Batch runs are not supported with READY2RUN workflows"
            )
        if default.get("cacheBehavior") is not None and default.get("cacheId") is None:
            raise _validation(
                "Value null at 'defaultRunSetting.cacheId' failed to satisfy constraint: cacheBehavior requires cacheId"
            )
        with self._lock:
            existing = self._batch_requests.get(request_id)
            if existing is not None:
                return self._batch_created(existing)
        entries: list[dict[str, Any]] | None = None
        entry_errors: dict[int, str] = {}
        content_error: str | None = None
        s3_ref: tuple[str, str, str] | None = None
        if settings.get("inlineSettings") is not None:
            entries = settings["inlineSettings"]
            seen: set[str] = set()
            for index, entry in enumerate(entries, start=1):
                if entry["runSettingId"] in seen:
                    raise _validation(
                        f"Value '{entry['runSettingId']}' at 'batchRunSettings.inlineSettings.{index}.member."
                        "runSettingId' failed to satisfy constraint: runSettingId must be unique within the batch"
                    )
                seen.add(entry["runSettingId"])
        else:
            bucket, key = _parse_s3_uri(settings["s3UriSettings"])
            try:
                obj = self._s3().get_object(Bucket=bucket, Key=key)
                data = obj["Body"].read()
                etag = obj["ETag"]
            except Exception as exc:
                raise _validation(
                    f"Unable to read s3UriSettings s3://{bucket}/{key}: {_client_error_code(exc)}"
                ) from exc
            s3_ref = (bucket, key, etag)
            entries, entry_errors, content_error = self._read_settings_file(data)
        now = self.clock()
        with self._lock:
            self._advance(now)
            existing = self._batch_requests.get(request_id)  # a concurrent twin won the race
            if existing is not None:
                return self._batch_created(existing)
            self._next_batch += 1
            batch_id = str(self._next_batch)
            batch = _Batch(
                id=batch_id,
                uuid=str(uuid.uuid5(_UUID_NAMESPACE, f"runBatch/{batch_id}")),
                arn=f"arn:aws:omics:{self.region}:{self.account}:runBatch/{batch_id}",
                request_id=request_id,
                name=params.get("batchName"),
                tags=params.get("tags"),
                default=dict(default),
                created_at=now,
                entries=entries,
                entry_errors=entry_errors,
                content_error=content_error,
                s3=s3_ref,
            )
            self._batches[batch_id] = batch
            self._batch_requests[request_id] = batch
            self._unfinished[batch_id] = batch
            return self._batch_created(batch)

    def _read_settings_file(self, data: bytes) -> tuple[list[dict[str, Any]] | None, dict[int, str], str | None]:
        """Entries, per-entry problems and a whole-file problem of an s3UriSettings file."""
        try:
            entries = json.loads(data)
        except ValueError as exc:
            return None, {}, f"The s3UriSettings file is not valid JSON: {exc}"
        if not isinstance(entries, list):
            return None, {}, "The s3UriSettings file must be a JSON array of run settings"
        if not entries:
            return None, {}, "The s3UriSettings file has no run settings"
        if len(entries) > MAX_S3_SETTINGS:
            return (
                None,
                {},
                f"The s3UriSettings file has {len(entries)} run settings; at most {MAX_S3_SETTINGS} are allowed",
            )
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            setting_id = entry.get("runSettingId") if isinstance(entry, dict) else None
            if not isinstance(setting_id, str) or not setting_id:
                return None, {}, f"Run setting {index} of the s3UriSettings file has no runSettingId"
            if setting_id in seen:
                return None, {}, f"Duplicate runSettingId '{setting_id}' in the s3UriSettings file"
            seen.add(setting_id)
        member = (
            self._model.operation_model("StartRunBatch")
            .input_shape.members["batchRunSettings"]
            .members["inlineSettings"]
            .member
        )
        validator = _Validator()
        for index, entry in enumerate(entries):
            validator.check(member, entry, f"[{index}]", group=index)
        problems: dict[int, list[str]] = {}
        for group, message in validator.finish():
            problems.setdefault(group, []).append(message)
        return entries, {i: _validation_message([(i, m) for m in ms]) for i, ms in problems.items()}, None

    def _batch_created(self, batch: _Batch) -> dict[str, Any]:
        return {"id": batch.id, "arn": batch.arn, "status": batch.status, "uuid": batch.uuid, "tags": batch.tags}

    def _get_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            counts = dict.fromkeys(("PENDING", "STARTING", "RUNNING", "COMPLETED"), 0)
            live = batch.live_completing + batch.live_failing
            phase = self._phase(batch.submitted_at, now) if batch.submitted_at is not None else "PENDING"
            if self.run_seconds is not None and batch.submitted_at is not None:
                # Runs of one batch end at times of their own: count them one by one (a sandbox's few).
                phase, failed = "", 0
                for submission in batch.submissions:
                    run = submission.run
                    if run is None or run.cancelled_at is not None or run.deleted_at is not None:
                        continue
                    status = self._run_status(run, now)
                    if status == "FAILED":
                        failed += 1
                    elif status in counts:
                        counts[status] += 1
            elif phase == "ENDED":
                counts["COMPLETED"] = batch.live_completing
                failed = batch.live_failing
            else:
                counts[phase] = live
                failed = 0
            ops = batch.operations
            total = len(batch.entries) if batch.entries is not None else 0
            pending = total - len(batch.submissions) if batch.status in ("PENDING", "SUBMITTING") else 0
            return {
                "id": batch.id,
                "arn": batch.arn,
                "uuid": batch.uuid,
                "name": batch.name,
                "status": batch.status,
                "tags": batch.tags,
                "totalRuns": total,
                "defaultRunSetting": batch.default,
                "submissionSummary": {
                    "successfulStartSubmissionCount": batch.started,
                    "failedStartSubmissionCount": ops["FAILED"],
                    "pendingStartSubmissionCount": pending,
                    "successfulCancelSubmissionCount": ops["CANCEL_SUCCESS"],
                    "failedCancelSubmissionCount": ops["CANCEL_FAILED"],
                    "successfulDeleteSubmissionCount": ops["DELETE_SUCCESS"],
                    "failedDeleteSubmissionCount": ops["DELETE_FAILED"],
                },
                "runSummary": {
                    "pendingRunCount": counts["PENDING"],
                    "startingRunCount": counts["STARTING"],
                    "runningRunCount": counts["RUNNING"],
                    "stoppingRunCount": 0,  # cancels take effect at once here: no run is ever STOPPING
                    "completedRunCount": counts["COMPLETED"],
                    "deletedRunCount": batch.deleted,
                    "failedRunCount": failed,
                    "cancelledRunCount": batch.cancelled,
                },
                "creationTime": self._wall(batch.created_at),
                "submittedTime": self._wall(batch.submitted_at),
                "processedTime": self._wall(batch.processed_at if batch.status == "PROCESSED" else None),
                "failedTime": self._wall(batch.failed_at),
                "failureReason": batch.failure_reason,
            }

    def _list_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batches = list(self._batches.values())
            status, name, group = params.get("status"), params.get("name"), params.get("runGroupId")
            batches = [
                b
                for b in batches
                if (status is None or b.status == status)
                and (name is None or b.name == name)
                and (group is None or b.default.get("runGroupId") == group)
            ]
            page, token = _page(batches, params.get("startingToken"), params.get("maxItems"))
            items = [
                {
                    "id": b.id,
                    "name": b.name,
                    "status": b.status,
                    "createdAt": self._wall(b.created_at),
                    "totalRuns": len(b.entries) if b.entries is not None else 0,
                    "workflowId": b.default.get("workflowId"),
                }
                for b in page
            ]
            return {"items": items, "nextToken": token}

    def _list_runs_in_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            status, setting_id, run_id = params.get("submissionStatus"), params.get("runSettingId"), params.get("runId")

            def keep(sub: _Submission) -> bool:
                return (
                    (status is None or sub.status == status)
                    and (setting_id is None or sub.run_setting_id == setting_id)
                    and (run_id is None or (sub.run is not None and sub.run.id == run_id))
                )

            plain = status is None and setting_id is None and run_id is None
            page, token = _page(
                batch.submissions, params.get("startingToken"), params.get("maxItems"), None if plain else keep
            )
            runs = []
            for sub in page:
                run = sub.run  # kept after the run is deleted: the batch remembers what it started
                runs.append(
                    {
                        "runSettingId": sub.run_setting_id,
                        "runId": run.id if run else None,
                        "runInternalUuid": run.uuid if run else None,
                        "runArn": run.arn if run else None,
                        "submissionStatus": sub.status,
                        "submissionFailureReason": sub.reason,
                        "submissionFailureMessage": sub.message,
                    }
                )
            return {"runs": runs, "nextToken": token}

    def _cancel_run_batch(self, params: dict[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            if batch.status not in _BATCH_CANCELLABLE:
                raise _conflict(f"Run batch {batch.id} is {batch.status} and cannot be cancelled")
            for sub in batch.submissions:
                run = sub.run
                if run is None or self._run_status(run, now) in RUN_TERMINAL:
                    continue  # nothing to cancel: its submission keeps its status
                if self._cannot_cancel(run):
                    self._set_submission(batch, sub, "CANCEL_FAILED")
                else:
                    self._cancel(run, now)
                    self._set_submission(batch, sub, "CANCEL_SUCCESS")
            batch.status = "CANCELLED"
            batch.processed_at = None
            self._unfinished.pop(batch.id, None)

    def _delete_batch(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._advance(self.clock())
            batch = self._find_batch(params["batchId"])
            if batch.status not in BATCH_TERMINAL:
                raise _conflict(f"Run batch {batch.id} is {batch.status}; only a finished batch can be deleted")
            # Its runs stay (DeleteBatch "does not delete the individual workflow runs"); a repeat of its
            # StartRunBatch requestId still answers with it (_batch_requests keeps it).
            del self._batches[batch.id]

    def _delete_run_batch(self, params: dict[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            self._advance(now)
            batch = self._find_batch(params["batchId"])
            if batch.status not in _BATCH_RUNS_DELETABLE:
                raise _conflict(
                    f"Run batch {batch.id} is {batch.status}; its runs can be deleted when it is PROCESSED or CANCELLED"
                )
            gone: list[_Run] = []
            for sub in batch.submissions:
                run = sub.run
                if run is None:
                    continue
                if run.deleted_at is None:
                    if self._run_status(run, now) not in _RUN_DELETABLE:
                        self._set_submission(batch, sub, "DELETE_FAILED")  # still running (a cancel that failed)
                        continue
                    self._mark_deleted(run, now)
                    gone.append(run)
                self._set_submission(batch, sub, "DELETE_SUCCESS")
            self._unlist(gone)
            batch.status = "RUNS_DELETE_FAILED" if batch.operations["DELETE_FAILED"] else "RUNS_DELETED"


def _apply_run_defaults(settings: dict[str, Any]) -> None:
    # StartRun's defaults (seeds/000): a PRIVATE workflow, STATIC storage of 1200 GiB, retentionMode RETAIN.
    settings.setdefault("workflowType", "PRIVATE")
    settings.setdefault("storageType", "STATIC")
    settings.setdefault("retentionMode", "RETAIN")
    if settings["storageType"] == "STATIC":
        settings.setdefault("storageCapacity", 1200)


def _page(
    items: list[Any], token: str | None, size: int | None, keep: Callable[[Any], bool] | None = None
) -> tuple[list[Any], str | None]:
    """One page of ``items`` (those ``keep`` accepts) and the next token.

    The token is a position in ``items``, which only ever grows at the end, so a
    filtered listing costs one pass over the items across all its pages.
    """
    start = 0
    if token is not None:
        if not token.isdigit() or int(token) > len(items):
            raise _validation(
                f"Value '{token}' at 'startingToken' failed to satisfy constraint: Invalid pagination token"
            )
        start = int(token)
    size = size or DEFAULT_PAGE_SIZE
    if keep is None:
        end = start + size
        return items[start:end], (str(end) if end < len(items) else None)
    page: list[Any] = []
    index = start
    while index < len(items) and len(page) < size:
        if keep(items[index]):
            page.append(items[index])
        index += 1
    while index < len(items) and not keep(items[index]):  # no token for an empty last page
        index += 1
    return page, (str(index) if index < len(items) else None)


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return str(error.get("Code") or error.get("Message") or exc)
    return f"{type(exc).__name__}: {exc}"
