"""The defaults file (TOML or JSON, in the target API's own shape) and ``--set``.

Precedence, lowest first: the defaults file, then ``--set KEY=VALUE``, then the
sheet row.  ``--set`` changes the default request for every run; KEY is a dotted
path into ``[run]`` (``outputUri``, ``parameters.threads``, ``runTags.project``) or,
with a ``submission.`` prefix, into ``[submission]``.  VALUE is read as JSON when it
parses as JSON and the field is not a string field, else taken as text, so
``--set parameters.threads=16`` sets a number and ``--set workflowId=1234567`` the
string the model asks for.

``[workflow]`` says what the runs are checked against and how the sheet feeds them
(docs/check.md): ``parameter_template`` (a file, relative to the defaults file),
``id_parameter`` (the parameter the id column is sent as; false: none) and
``output_parameters`` (parameters that are a run's own output location).
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from planner.core.plandir import StagingSettings
from planner.core.spec import BackendSpec
from planner.core.suggest import did_you_mean
from planner.errors import DefaultsError, setting

_SECTIONS = ("run", "submission", "sheet", "staging", "workflow")
_SHEET_KEYS = ("id_column", "types")
_STAGING_KEYS = ("uri", "kms_key_id", "expected_bucket_owner")
_WORKFLOW_KEYS = ("parameter_template", "id_parameter", "output_parameters")
# What S3 takes as SSEKMSKeyId: a key id (or multi-Region key id), a key ARN, an alias name or an alias ARN.
_KEY_ID = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})"
_ALIAS = r"alias/[A-Za-z0-9/_-]{1,250}"
_KMS_KEY = re.compile(rf"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{{12}}:(?:key/{_KEY_ID}|{_ALIAS})|{_KEY_ID}|{_ALIAS}")
_ACCOUNT = re.compile(r"\d{12}")
# plan.json holds [run] and [submission] one level down, and orjson writes JSON at most 254
# levels deep: counting the table itself as one level, a table may nest 253 levels.
MAX_TABLE_DEPTH = 253


@dataclass
class Defaults:
    run: dict[str, Any] = field(default_factory=dict)  # the default per-run request, as it will be sent
    submission: dict[str, Any] = field(default_factory=dict)  # request-level fields
    id_column: str | None = None
    types: dict[str, str] = field(default_factory=dict)
    staging_uri: str | None = None
    source: str = "<none>"
    staging_kms_key_id: str | None = None  # [staging] kms_key_id
    staging_expected_bucket_owner: str | None = None  # [staging] expected_bucket_owner
    # Where a --set put something: "run.KEY.SUBKEY" or "submission.KEY" (also the tables it
    # created on the way) -> the KEY=VALUE as typed, so a problem there can name the --set.
    set_by: dict[str, str] = field(default_factory=dict)
    # [workflow]: the parameter template file (a path, relative to the defaults file's folder
    # resolved), what the id column is sent as (None: a parameter under its own name; False:
    # no parameter; a name), and the parameters that are a run's output location.
    parameter_template: str | None = None
    id_parameter: str | bool | None = None
    output_parameters: tuple[str, ...] = ()

    @property
    def staging(self) -> StagingSettings:
        """The [staging] table as plan.json records it."""
        return StagingSettings(self.staging_uri, self.staging_kms_key_id, self.staging_expected_bucket_owner)


def load_defaults(
    source: str | os.PathLike[str] | dict[str, Any] | None, sets: Iterable[str] = (), spec: BackendSpec | None = None
) -> Defaults:
    """Read a defaults file or dict and apply ``--set`` assignments on top."""
    if source is None:
        document: dict[str, Any] = {}
        label = "<none>"
    elif isinstance(source, dict):
        document = copy.deepcopy(source)
        label = "<dict>"
    else:
        document = _read_file(str(source))
        label = str(source)
    unknown = set(document) - set(_SECTIONS)
    if unknown:
        raise DefaultsError(
            f"{label}: unknown section(s) {_named(unknown, _SECTIONS)}; "
            "a defaults file has [run], [submission], [sheet], [staging] and [workflow]"
        )
    sheet = _table(document, "sheet", label)
    sheet_unknown = set(sheet) - set(_SHEET_KEYS)
    if sheet_unknown:
        raise DefaultsError(f"{label}: [sheet] takes id_column and types, not {_named(sheet_unknown, _SHEET_KEYS)}")
    types = sheet.get("types", {})
    if not isinstance(types, dict) or not all(isinstance(v, str) for v in types.values()):
        raise DefaultsError(f'{label}: [sheet.types] maps column names to type names, e.g. threads = "int"')
    staging = _table(document, "staging", label)
    staging_unknown = set(staging) - set(_STAGING_KEYS)
    if staging_unknown:
        raise DefaultsError(
            f"{label}: [staging] takes uri, kms_key_id and expected_bucket_owner, "
            f"not {_named(staging_unknown, _STAGING_KEYS)}"
        )
    uri = staging.get("uri")
    if uri is not None and not (isinstance(uri, str) and uri.startswith("s3://") and len(uri) > len("s3://")):
        raise DefaultsError(
            f'{label}: [staging] uri must be an s3:// URI, e.g. "s3://my-bucket/planner-staging/", not {uri!r}'
        )
    kms_key_id = staging.get("kms_key_id")
    if kms_key_id is not None:
        check_kms_key_id(kms_key_id, f"{label}: [staging] kms_key_id")
    owner = staging.get("expected_bucket_owner")
    if owner is not None:
        check_account(owner, f"{label}: [staging] expected_bucket_owner")
    workflow = _workflow_table(document, label, None if isinstance(source, dict) or source is None else str(source))
    defaults = Defaults(
        run=_table(document, "run", label),
        submission=_table(document, "submission", label),
        id_column=sheet.get("id_column"),
        types=dict(types),
        staging_uri=staging.get("uri"),
        source=label,
        staging_kms_key_id=kms_key_id,
        staging_expected_bucket_owner=owner,
        **workflow,
    )
    _check_depth(defaults, label)
    for assignment in sets:
        _apply_set(defaults, assignment, spec)
    if sets:
        _check_depth(defaults, setting("sets"))
    _check_integers(defaults, spec)
    return defaults


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_integers(defaults: Defaults, spec: BackendSpec | None) -> None:
    """Refuse an integer beyond 64 bits, which no JSON request can carry, where no field rule will:
    an integer field's own range check names its limits ("must be at most 100000")."""
    for table, document in (("run", defaults.run), ("submission", defaults.submission)):
        for path, value in _integers(document, ()):
            if INT64_MIN <= value <= INT64_MAX or (
                table == "run" and spec is not None and _is_integer_field(path, spec)
            ):
                continue
            key = ".".join((table, *path))
            set_by = defaults.set_by.get(key)
            where = setting("sets", repr(set_by)) if set_by is not None else f"{defaults.source}: [{table}]"
            bound = f"at most {INT64_MAX}" if value > 0 else f"at least {INT64_MIN}"
            raise DefaultsError(
                f"{where}: {'.'.join(path)} = {value}: must be {bound} (a 64-bit integer); quote it to send it as text"
            )


def _integers(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], int]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _integers(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _integers(value, (*path, str(index)))
    elif isinstance(node, int) and not isinstance(node, bool):
        yield path, node


def _is_integer_field(path: tuple[str, ...], spec: BackendSpec) -> bool:
    shape = spec.run_shape
    for part in path:
        if shape is None or shape.type_name != "structure" or shape.metadata.get("document"):
            return False
        shape = shape.members.get(part)
    return shape is not None and shape.type_name in ("integer", "long")


def _workflow_table(document: dict[str, Any], label: str, path: str | None) -> dict[str, Any]:
    """[workflow]: parameter_template (resolved against the defaults file's folder), id_parameter, output_parameters."""
    table = _table(document, "workflow", label)
    unknown = set(table) - set(_WORKFLOW_KEYS)
    if unknown:
        raise DefaultsError(
            f"{label}: [workflow] takes parameter_template, id_parameter and output_parameters, "
            f"not {_named(unknown, _WORKFLOW_KEYS)}"
        )
    found: dict[str, Any] = {}
    template = table.get("parameter_template")
    if template is not None:
        if not isinstance(template, str) or not template:
            raise DefaultsError(
                f'{label}: [workflow] parameter_template names a file, e.g. "workflow-template.json", not {template!r}'
            )
        folder = os.path.dirname(path) if path else ""
        found["parameter_template"] = template if os.path.isabs(template) else os.path.join(folder, template)
    if "id_parameter" in table:
        value = table["id_parameter"]
        if value is True:
            value = None
        if not (value is False or value is None or (isinstance(value, str) and value)):
            raise DefaultsError(
                f"{label}: [workflow] id_parameter is the parameter the sample id is sent as "
                f'(e.g. "sample_id"), or false to send it as none; not {value!r}'
            )
        found["id_parameter"] = value
    outputs = table.get("output_parameters", [])
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, list) or not all(isinstance(o, str) and o for o in outputs):
        raise DefaultsError(
            f'{label}: [workflow] output_parameters lists parameter names, e.g. ["outdir"], not {outputs!r}'
        )
    found["output_parameters"] = tuple(dict.fromkeys(outputs))
    return found


def check_kms_key_id(value: Any, what: str) -> str:
    """A KMS key as S3 takes it for SSE-KMS, or a DefaultsError naming ``what``."""
    if not (isinstance(value, str) and _KMS_KEY.fullmatch(value)):
        raise DefaultsError(
            f"{what} {value!r}: not a KMS key; give a key id, a key ARN, an alias name (alias/NAME) or an alias ARN"
        )
    return value


def check_account(value: Any, what: str) -> str:
    """An AWS account id (12 digits, as text), or a DefaultsError naming ``what``."""
    if not (isinstance(value, str) and _ACCOUNT.fullmatch(value)):
        raise DefaultsError(f'{what} {value!r}: must be an AWS account id, 12 digits in quotes, e.g. "123456789012"')
    return value


def _named(names: Iterable[str], known: Iterable[str]) -> str:
    """``'rnu' (did you mean 'run'?), 'x'``: unknown names, quoted, each with the closest known one."""
    known = tuple(known)
    return ", ".join(f"{name!r}{did_you_mean(str(name), known)}" for name in sorted(names, key=str))


def _check_depth(defaults: Defaults, label: str) -> None:
    """DefaultsError naming the first key of [run] or [submission] nested deeper than MAX_TABLE_DEPTH."""
    for name, table in (("run", defaults.run), ("submission", defaults.submission)):
        stack: list[tuple[Any, tuple[str, ...]]] = [(table, ())]
        while stack:
            node, path = stack.pop()
            if len(path) >= MAX_TABLE_DEPTH:
                key = ".".join(path)
                shown = key if len(key) <= 60 else key[:59] + "…"
                raise DefaultsError(
                    f"{label}: [{name}] {shown}: nested deeper than {MAX_TABLE_DEPTH} levels (counting [{name}] as "
                    f"one); the planner handles at most {MAX_TABLE_DEPTH}"
                )
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack += [(value, (*path, str(key))) for key, value in items if isinstance(value, (dict, list))]


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DefaultsError(f"{path}: cannot read the defaults file: {exc.strerror}") from exc
    try:
        if path.lower().endswith(".json"):
            document = orjson.loads(data)
        else:
            document = tomllib.loads(data.decode("utf-8-sig"))
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DefaultsError(
            f"{path}: is not valid {'JSON' if path.lower().endswith('.json') else 'TOML'}: {exc}"
        ) from exc
    except RecursionError:  # tomllib recurses per level of nested arrays and inline tables
        raise DefaultsError(
            f"{path}: is nested too deeply to read (the planner handles at most {MAX_TABLE_DEPTH} levels)"
        ) from None
    if not isinstance(document, dict):
        raise DefaultsError(f"{path}: must hold a table (a JSON object)")
    return document


def _table(document: dict[str, Any], name: str, label: str) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise DefaultsError(f"{label}: [{name}] must be a table")
    return value


def _apply_set(defaults: Defaults, assignment: str, spec: BackendSpec | None) -> None:
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise DefaultsError(
            f"{setting('sets', repr(assignment))}: write KEY=VALUE, e.g. "
            f"{setting('sets', 'outputUri=s3://bucket/out/')} or {setting('sets', 'parameters.threads=8')}"
        )
    path = key.split(".")
    target, table = defaults.run, "run"
    if path[0] == "submission":
        target, table, path = defaults.submission, "submission", path[1:]
    elif path[0] == "run":
        path = path[1:]
    if not path or any(not part for part in path):
        raise DefaultsError(f"{setting('sets', repr(assignment))}: the key has an empty part")
    value = _parse_value(text, path, spec)
    for depth, part in enumerate(path[:-1]):
        if part not in target:
            defaults.set_by[".".join((table, *path[: depth + 1]))] = assignment
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise DefaultsError(f"{setting('sets', repr(assignment))}: {part} is not a table in the defaults")
        target = node
    target[path[-1]] = value
    defaults.set_by[".".join((table, *path))] = assignment


def _parse_value(text: str, path: list[str], spec: BackendSpec | None) -> Any:
    if spec is not None and _is_string_field(path, spec):
        return text
    if _INTEGER.fullmatch(text):
        # Exactly as typed: orjson reads an integer beyond 64 bits as a float (1e+26), which the
        # field's rule would then call "not an integer" instead of "at most 100000".
        return int(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


_INTEGER = re.compile(r"-?[0-9]+")


def _is_string_field(path: list[str], spec: BackendSpec) -> bool:
    """Whether the [run] field at ``path`` is text in the service model (or a tag value)."""
    if spec.tags_path is not None and tuple(path[:-1]) == spec.tags_path:
        return True  # tag values are strings
    if tuple(path[:-1]) == spec.parameters_path and spec.parameters_as_strings:
        return True
    shape = spec.run_shape
    for part in path:
        if shape is None:
            return False
        if shape.type_name == "structure" and not shape.metadata.get("document"):
            shape = shape.members.get(part)
        elif shape.type_name == "map":
            shape = shape.value
        else:
            return False
    return shape is not None and shape.type_name == "string"
