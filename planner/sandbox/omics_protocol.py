"""The HTTP side of the HealthOmics emulator: the rest-json protocol of botocore's ``omics`` model.

Everything protocol-shaped comes from the model, not from code written per call: requests are
routed by each operation's ``http.method`` and ``requestUri``; members are read from the URI,
the query string, headers or the JSON body as the model places them; every request is validated
against the input shape (required, types, ``min``/``max`` lengths and values, ``enum``,
``pattern``; Java patterns are run by polars' regex engine through ``planner.core.model.to_rust_regex``,
vectorised per pattern); responses are serialised from the output shape (ISO-8601 timestamps as
the model asks); errors carry ``x-amzn-ErrorType`` and the status code of the model's error shape.
The state machine behind it is ``omics_state.OmicsService``; the server is ``omics_emulator``.
(sources.md: protocol)
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import botocore.session
import polars as pl

from planner.core.model import to_rust_regex

SERVICE = "omics"

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
# throttling


# The default maximum transactions per second of each workflow API (User Guide, "HealthOmics API quotas",
# "Workflow API quotas"; sources.md: throttling).  The run-batch APIs are not in that table: UNDOCUMENTED, and
# left out here rather than guessed.
DOCUMENTED_TPS: dict[str, float] = {
    "StartRun": 1.0,
    "CreateWorkflow": 5.0,
    **dict.fromkeys(("CancelRun", "DeleteRun", "GetRun", "GetRunTask", "ListRunTasks", "ListRuns"), 10.0),
    **dict.fromkeys(("CreateRunGroup", "DeleteRunGroup", "GetRunGroup", "ListRunGroups", "UpdateRunGroup"), 10.0),
    **dict.fromkeys(("CreateRunCache", "UpdateRunCache", "DeleteRunCache", "GetRunCache", "ListRunCaches"), 10.0),
    **dict.fromkeys(("DeleteWorkflow", "GetWorkflow", "ListWorkflows", "UpdateWorkflow"), 10.0),
}


class _TokenBucket:  # sources.md: throttling
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
