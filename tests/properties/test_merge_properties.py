"""The columnar merge equals the plain-Python statement of the rule, byte for byte.

For random sheets (random column names, API-field columns, ``tag.X`` and ``param.X``
columns, awkward text, empty cells) and random defaults (maps with overlapping keys),
the run text ``Plan.runs()`` produces must be exactly
``orjson.dumps(reference_run(defaults, reference_row(...)))`` (``reference_row`` alone
for omics-batch's own mode).  An independent oracle written here from DESIGN.md's
rules checks the reference itself: same values, same key order.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from helpers import ROLE, examples, write_csv
from hypothesis import example, given
from hypothesis import strategies as st

import planner
from planner.backends import get_backend
from planner.core.merge import reference_row, reference_run

# ---------------------------------------------------------------- text

# Characters that stress CSV quoting and JSON escaping.
SPECIALS = [
    '"',
    "\\",
    "\n",
    "\r",
    "\r\n",
    ",",
    "\t",
    ";",
    "'",
    "é",
    "ß",
    "漢",
    "😀",
    "\u2028",
    "\x7f",
    "\x01",
    " ",
    "{",
    "}",
    "[",
    "]",
    "null",
]
ANY_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
# Header names may hold anything a cell may (the header is read by the csv module, so a
# doubled quote is one quote), plus names that mean something to polars or to the planner:
# wildcards and regexes in pl.col(), and the frame's own internal column names.
NAME_SPECIALS = [*SPECIALS, "*", "^", "$", "|", "(", ")", ".", "?", "+"]
NAME_CHAR = ANY_CHAR
AWKWARD_NAMES = [
    "*",
    "^x$",
    "^.*$",
    "^",
    "$",
    'a"b',
    '"',
    '""',
    "__row",
    "__id",
    "__run",
    "__why",
    "__v0",
    "__raw__c1",
    "c0",
    "c1",
    "c2",
    "x|y",
    "(a)",
    "[x]",
]


def joined(pieces: st.SearchStrategy[str], min_size: int = 0, max_size: int = 10) -> st.SearchStrategy[str]:
    """Text made of pieces (some of them longer than one character, like CRLF)."""
    return st.lists(pieces, min_size=min_size, max_size=max_size).map("".join)


free_text = joined(st.one_of(st.sampled_from(SPECIALS), ANY_CHAR))
# What the omics "name"-like patterns accept: [\p{L}\p{M}\p{Z}\p{S}\p{N}\p{P}]+ (BMP, to keep
# Python's and the regex engine's Unicode tables in step).
PRINTABLE = st.characters(categories=("L", "M", "Zs", "S", "N", "P"), max_codepoint=0x2FFF)
# Sample ids: non-blank, no control characters (runSettingId's pattern), awkward for CSV.
id_text = st.text(
    st.one_of(
        st.sampled_from(['"', ",", "'", "é", "-", "_", "0", "7"]),
        st.characters(categories=("L", "N", "P", "S"), max_codepoint=0x2FFF),
    ),
    min_size=1,
    max_size=10,
)
ID_COLUMNS = ("sample_id", "sample", "id")
RESERVED = {"sample_id", "sample", "id"}
# With --id-column the id column may have any name, "name" included: for omics-batch and
# omics-run that is a per-run field, which the id column then sets (like any column would).
EXPLICIT_ID_COLUMNS = (*ID_COLUMNS, "name", "lims id", "*", "^x$", "__id")


def column_name(fields: set[str]) -> st.SearchStrategy[str]:
    """A plain column name: routed as a parameter under its own name."""
    plain = st.text(
        st.one_of(
            st.sampled_from(["_", "-", ".", " ", ",", "é", "x", "1", '"', "*", "^", "$"]),
            st.characters(categories=("L", "N", "P", "Zs", "S"), max_codepoint=0x2FFF),
        ),
        min_size=1,
        max_size=10,
    )
    return st.one_of(
        st.sampled_from(AWKWARD_NAMES), plain, plain.map(lambda s: "^" + s + "$"), plain.map(lambda s: "__" + s)
    ).filter(
        lambda s: (
            s.strip() != ""
            and not s.startswith(("tag.", "param."))
            and s not in RESERVED
            and s not in fields
            and "_duplicated_" not in s
        )
    )


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        free_text,
    )
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(free_text, inner, max_size=3), max_leaves=6
    )


# ---------------------------------------------------------------- per-backend fields


def _int_text(low: int, high: int) -> st.SearchStrategy[tuple[str, int]]:
    """An integer written as a sheet cell: plain, zero-padded, or with blanks around it."""
    return st.integers(low, high).flatmap(
        lambda v: st.sampled_from([str(v), f"{v:06d}", f" {v} ", f"{v}\t"]).map(lambda text: (text, v))
    )


def _same(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str]]:
    return strategy.map(lambda s: (s, s))


DIGITS = "0123456789"
FIELD_VALUES: dict[str, dict[str, st.SearchStrategy[tuple[str, Any]]]] = {
    "omics-batch": {
        "name": _same(st.text(PRINTABLE, min_size=1, max_size=40)),
        "outputUri": _same(st.text(PRINTABLE, max_size=30).map(lambda s: "s3://" + s)),
        "priority": _int_text(0, 100_000),
        "outputBucketOwnerId": _same(st.text(DIGITS, min_size=12, max_size=12)),
    },
    "omics-run": {
        "name": _same(st.text(PRINTABLE, min_size=1, max_size=40)),
        "outputUri": _same(st.text(PRINTABLE, max_size=30).map(lambda s: "s3://" + s)),
        "priority": _int_text(0, 100_000),
        "storageCapacity": _int_text(0, 100_000),
        "workflowId": _same(st.text(DIGITS, min_size=1, max_size=18)),
        "logLevel": _same(st.sampled_from(["OFF", "FATAL", "ERROR", "ALL"])),
        "roleArn": _same(st.text(PRINTABLE, min_size=1, max_size=40).map(lambda s: "arn:" + s)),
    },
    "glue": {
        "NumberOfWorkers": _int_text(0, 1000),
        "Timeout": _int_text(1, 10_079),
        "WorkerType": _same(st.sampled_from(["Standard", "G.1X", "G.2X", "Z.2X"])),
        "MaxCapacity": st.floats(0, 1e6, allow_nan=False).map(lambda v: (repr(v), v)),
        "JobRunQueuingEnabled": st.sampled_from(
            [("true", True), ("FALSE", False), (" yes ", True), ("n", False), ("1", True), ("0", False)]
        ),
    },
    "polly": {
        "cpu": _int_text(1, 1_000_000),
        "memory": _int_text(1, 1_000_000),
        "storage": _int_text(1, 1_000_000),
    },
}

# Where things go in an entry, written out here from DESIGN.md (not read from the specs).
LAYOUT: dict[str, dict[str, Any]] = {
    "omics-batch": {
        "id": "runSettingId",
        "params": ("parameters",),
        "tags": ("runTags",),
        "prefix": "",
        "strings": False,
    },
    "omics-run": {"id": None, "params": ("parameters",), "tags": ("tags",), "prefix": "", "strings": False},
    "glue": {"id": None, "params": ("Arguments",), "tags": None, "prefix": "--", "strings": True},
    "polly": {"id": "name", "params": ("parameters",), "tags": None, "prefix": "", "strings": False},
}
FIELD_PATHS = {"polly": {name: ("config", "infra", name) for name in ("cpu", "memory", "storage")}}


def field_path(backend: str, name: str) -> tuple[str, ...]:
    return FIELD_PATHS.get(backend, {}).get(name, (name,))


# ---------------------------------------------------------------- sheets and defaults


@st.composite
def sheet_and_defaults(draw: Any, backend: str) -> dict[str, Any]:
    layout = LAYOUT[backend]
    fields = FIELD_VALUES[backend]
    n = draw(st.integers(1, 5))
    explicit_id = draw(st.booleans())
    id_column = draw(st.sampled_from(EXPLICIT_ID_COLUMNS if explicit_id else ID_COLUMNS))
    ids = draw(st.lists(id_text, min_size=n, max_size=n, unique=True))
    # The id column is routed like any other column: a field if named like one, else a parameter.
    id_kind = "field" if id_column in get_backend(backend).fields else "param"

    # Columns: (name, kind, key); kind is "field", "param" (plain or param.KEY) or "tag".
    chosen_fields = draw(
        st.lists(st.sampled_from(sorted(set(fields) - {id_column})), unique=True, max_size=len(fields))
    )
    keys = draw(
        st.lists(
            st.one_of(
                st.sampled_from(AWKWARD_NAMES), joined(st.one_of(st.sampled_from(NAME_SPECIALS), NAME_CHAR), 1, 6)
            ),
            unique=True,
            max_size=5,
        )
    )
    columns: list[tuple[str, str, str]] = [(f, "field", f) for f in chosen_fields]
    used_names = {id_column, *chosen_fields}
    # Parameter keys already taken (two columns may not set one key; the id column takes its own).
    param_keys = {id_column} if id_kind == "param" else set()
    # Glue refuses a parameter with a hyphen (getResolvedOptions cannot read `--a-b`: tests/unit/test_routing.py).
    hyphen_refused = backend == "glue"
    for key in keys:
        kinds = ["param.", "plain"] + (["tag."] if layout["tags"] else [])
        kind = draw(st.sampled_from(kinds))
        if kind != "tag." and hyphen_refused and "-" in key:
            continue
        if kind == "plain":
            name = draw(column_name(set(get_backend(backend).fields)))
            if name in used_names or name in param_keys or (hyphen_refused and "-" in name):
                continue
            columns.append((name, "param", name))
            param_keys.add(name)
        elif kind == "param.":
            if key in param_keys:
                continue
            columns.append(("param." + key, "param", key))
            param_keys.add(key)
        else:
            columns.append(("tag." + key, "tag", key))
        used_names.add(columns[-1][0])
    columns = draw(st.permutations(columns))
    id_at = draw(st.integers(0, len(columns)))
    header = [c[0] for c in columns]
    header.insert(id_at, id_column)

    # Cells: the text written to the sheet and the value it stands for (None: unset).
    rows: list[list[tuple[str | None, Any]]] = []
    for _ in range(n):
        row = []
        for _name, kind, key in columns:
            if draw(st.booleans()) and draw(st.booleans()):
                row.append((None, None))
            elif kind == "field":
                row.append(draw(fields[key]))
            else:
                text = draw(free_text)
                row.append((text, text if text != "" else None))  # an empty cell means "not set"
        rows.append(row)

    # Defaults: the maps share keys with the sheet's, plus keys of their own.
    pool = (
        [c[2] for c in columns if c[1] == "param"]
        + sorted(param_keys - {c[2] for c in columns})
        + draw(st.lists(free_text.filter(bool), max_size=3))
    )
    tag_pool = [c[2] for c in columns if c[1] == "tag"] + draw(st.lists(st.text(min_size=1, max_size=5), max_size=3))
    run: dict[str, Any] = {}
    if backend == "omics-batch":
        run = {
            "workflowId": draw(st.text(DIGITS, min_size=1, max_size=18)),
            "roleArn": ROLE,
            "outputUri": "s3://bucket/out/",
        }
        for name in ("priority", "name", "storageType", "logLevel"):
            if draw(st.booleans()):
                run[name] = {"priority": 7, "name": "default-name", "storageType": "STATIC", "logLevel": "ERROR"}[name]
    elif backend == "omics-run":
        run = {"workflowId": "1234", "roleArn": ROLE, "outputUri": "s3://bucket/out/"}
        for name in ("priority", "name", "storageCapacity", "logLevel"):
            if draw(st.booleans()):
                run[name] = {"priority": 7, "name": "default-name", "storageCapacity": 1200, "logLevel": "ALL"}[name]
    elif backend == "glue":
        run = {"JobName": "etl-job"}
        for name in ("NumberOfWorkers", "WorkerType", "Timeout"):
            if draw(st.booleans()):
                run[name] = {"NumberOfWorkers": 3, "WorkerType": "G.2X", "Timeout": 60}[name]
    elif backend == "polly":
        config = draw(st.sampled_from(["absent", "empty", "empty-infra", "some"]))
        if config == "empty":
            run["config"] = {}
        elif config == "empty-infra":
            run["config"] = {"infra": {}}
        elif config == "some":
            chosen = draw(st.lists(st.sampled_from(["cpu", "memory", "storage"]), unique=True, min_size=1))
            run["config"] = {"infra": {k: draw(st.integers(1, 64)) for k in chosen}}
    if draw(st.booleans()):
        params = draw(st.dictionaries(st.sampled_from(pool) if pool else free_text, json_values(), max_size=5))
        if layout["strings"]:
            params = {
                layout["prefix"] + k: (v if isinstance(v, str) else orjson.dumps(v).decode()) for k, v in params.items()
            }
        run[layout["params"][0]] = params
    if layout["tags"] and draw(st.booleans()):
        run[layout["tags"][0]] = draw(
            st.dictionaries(
                st.sampled_from(tag_pool) if tag_pool else st.text(min_size=1, max_size=5), free_text, max_size=5
            )
        )
    run = dict(draw(st.permutations(list(run.items()))))  # defaults in any key order

    document: dict[str, Any] = {"run": run}
    if backend == "polly":
        document["submission"] = {"pipeline_id": "pl-1"}
        if draw(st.booleans()):
            declared = [c[0] for c in columns if c[0] in ("cpu", "memory", "storage")]
            if declared:
                document["sheet"] = {"types": dict.fromkeys(declared, "int")}
    return {
        "backend": backend,
        "id_column": id_column,
        "id_kind": id_kind,
        "explicit_id": explicit_id,
        "ids": ids,
        "header": header,
        "id_at": id_at,
        "columns": columns,
        "rows": rows,
        "defaults": document,
        # A text sheet whose first bytes read as a zlib header ("x^", "x\x01") is refused before any merge
        # (tests/unit/test_sheet_reading.py); a BOM in front keeps such a header a merge case.
        "bom": draw(st.booleans()) or header[0].startswith(("x^", "x\x01")),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "quote_all": draw(st.booleans()),
    }


# ---------------------------------------------------------------- the oracle


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        target = target.setdefault(name, {})
    target[path[-1]] = value


def with_id_column(
    case: dict[str, Any], sample_id: str, cells: list[tuple[str | None, Any]]
) -> list[tuple[tuple[str, str, str], tuple[str | None, Any]]]:
    """Every column of the row in sheet order, the id column (routed like any other) included."""
    columns = list(zip(case["columns"], cells, strict=False))
    columns.insert(case["id_at"], ((case["id_column"], case["id_kind"], case["id_column"]), (sample_id, sample_id)))
    return columns


def oracle_row(case: dict[str, Any], sample_id: str, cells: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """The row's own settings: id field, fields in column order, then each map's keys in column order."""
    backend = case["backend"]
    layout = LAYOUT[backend]
    row: dict[str, Any] = {}
    if layout["id"]:
        row[layout["id"]] = sample_id
    columns = with_id_column(case, sample_id, cells)
    for (_name, kind, key), (_, value) in columns:
        if kind == "field" and value is not None:
            _put(row, field_path(backend, key), value)
    maps = [("param", layout["params"])] + ([("tag", layout["tags"])] if layout["tags"] else [])
    for wanted, path in maps:
        for (_name, kind, key), (_, value) in columns:
            if kind == wanted and value is not None:
                _put(row, (*path, (layout["prefix"] if kind == "param" else "") + key), value)
    return row


def oracle_merge(defaults: dict[str, Any], row: dict[str, Any], backend: str) -> dict[str, Any]:
    """``{**defaults, **row}`` where the key-value maps merge per key (row wins)."""
    layout = LAYOUT[backend]
    maps = {layout["params"], *([layout["tags"]] if layout["tags"] else [])}
    if backend == "polly":
        maps.add(("config", "infra"))

    def merge(base: Any, over: Any, path: tuple[str, ...]) -> Any:
        result = dict(base)
        for key, value in over.items():
            here = (*path, key)
            is_map = here in maps
            leads_to_map = any(m[: len(here)] == here and len(m) > len(here) for m in maps)
            if (is_map or leads_to_map) and isinstance(result.get(key), dict) and isinstance(value, dict):
                result[key] = {**result[key], **value} if is_map else merge(result[key], value, here)
            else:
                result[key] = value
        return result

    return merge(copy.deepcopy(defaults), row, ())


# ---------------------------------------------------------------- the check


def plan_case(case: dict[str, Any], directory: Path) -> planner.Plan:
    sheet = directory / "sheet.csv"
    rows = []
    for sample_id, cells in zip(case["ids"], case["rows"], strict=False):
        texts = [text for text, _ in cells]
        texts.insert(case["id_at"], sample_id)
        rows.append(texts)
    write_csv(sheet, case["header"], rows, bom=case["bom"], newline=case["newline"], quote_all=case["quote_all"])
    return planner.plan(
        sheet,
        backend=case["backend"],
        defaults=case["defaults"],
        id_column=case["id_column"] if case["explicit_id"] else None,
    )


def check_merge(case: dict[str, Any], merged: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        plan = plan_case(case, Path(directory))
        runs = plan.runs(merged=merged)
    assert runs.get_column("id").to_list() == case["ids"]
    assert runs.get_column("row").to_list() == list(range(1, len(case["ids"]) + 1))
    default_run = case["defaults"]["run"]
    for sample_id, cells, text in zip(case["ids"], case["rows"], runs.get_column("run"), strict=False):
        values = {name: value for (name, _, _), (_, value) in with_id_column(case, sample_id, cells)}
        own = reference_row(values, plan.routes, plan.spec, sample_id)
        expected = reference_run(default_run, own, plan.spec) if merged else own
        # The columnar text is the reference, byte for byte (key order included).
        assert text == orjson.dumps(expected).decode()
        # And the reference is what DESIGN.md says.
        oracle = oracle_row(case, sample_id, cells)
        if merged:
            oracle = oracle_merge(default_run, oracle, case["backend"])
        assert orjson.dumps(expected) == orjson.dumps(oracle)


MERGE_SETTINGS = examples(60)


@MERGE_SETTINGS
@given(sheet_and_defaults("omics-batch"))
def test_omics_batch_own_settings_match_reference(case: dict[str, Any]) -> None:
    check_merge(case, merged=False)


@MERGE_SETTINGS
@given(sheet_and_defaults("omics-batch"))
def test_omics_batch_merged_view_matches_reference(case: dict[str, Any]) -> None:
    check_merge(case, merged=True)


@MERGE_SETTINGS
@given(sheet_and_defaults("omics-run"))
def test_omics_run_matches_reference(case: dict[str, Any]) -> None:
    check_merge(case, merged=True)


@MERGE_SETTINGS
@given(sheet_and_defaults("glue"))
def test_glue_arguments_match_reference(case: dict[str, Any]) -> None:
    check_merge(case, merged=True)


@MERGE_SETTINGS
@given(sheet_and_defaults("polly"))
def test_polly_infra_matches_reference(case: dict[str, Any]) -> None:
    check_merge(case, merged=True)


# ---------------------------------------------------------------- typed cells (Parquet/NDJSON-like frames)

TYPED = {
    "int": (pl.Int64, st.integers(-(2**62), 2**62)),
    "float": (pl.Float64, st.floats(allow_infinity=False)),
    "bool": (pl.Boolean, st.booleans()),
    "str": (pl.String, free_text),
    "list": (pl.List(pl.String), st.lists(free_text, max_size=3)),
    "struct": (
        pl.Struct({"a": pl.Int64, "b": pl.String}),
        st.fixed_dictionaries({"a": st.none() | st.integers(-5, 5), "b": st.none() | free_text}),
    ),
}


@st.composite
def typed_frames(draw: Any) -> tuple[pl.DataFrame, list[str], list[str]]:
    n = draw(st.integers(1, 5))
    ids = draw(st.lists(id_text, min_size=n, max_size=n, unique=True))
    kinds = draw(st.lists(st.sampled_from(sorted(TYPED)), min_size=1, max_size=6))
    data: dict[str, pl.Series] = {"sample": pl.Series("sample", ids, dtype=pl.String)}
    for index, kind in enumerate(kinds):
        dtype, values = TYPED[kind]
        name = draw(st.sampled_from([f"{kind}{index}", f"param.{kind}{index}", f"tag.{kind}{index}"]))
        cells = [draw(st.none() | values) for _ in range(n)]
        data[name] = pl.Series(name, cells, dtype=dtype)
    return pl.DataFrame(data), ids, list(data)[1:]


@examples(60)
@given(typed_frames(), st.sampled_from(["omics-batch", "glue"]), st.booleans())
@example(
    (pl.DataFrame({"sample": ["a"], "f": [1e20], "g": [[]]}), ["a"], ["f", "g"]),
    "omics-batch",
    True,
)
def test_typed_frame_cells_match_reference(
    frame_case: tuple[pl.DataFrame, list[str], list[str]], backend: str, merged: bool
) -> None:
    """Typed cells (ints, floats, bools, lists, structs) go through polars' JSON encoder
    and must come out as orjson writes the same Python values; Glue Arguments hold
    them as JSON text."""
    frame, ids, names = frame_case
    if backend == "glue":
        frame = frame.rename({n: n.replace("tag.", "param.t_") for n in names if n.startswith("tag.")})
        names = [n.replace("tag.", "param.t_") for n in names]
        document: dict[str, Any] = {"run": {"JobName": "etl", "Arguments": {"--x": "1"}}}
    else:
        document = {
            "run": {
                "workflowId": "1",
                "roleArn": ROLE,
                "outputUri": "s3://b/o/",
                "parameters": {"x": [1, {"y": None}]},
                "runTags": {"t": "v"},
            }
        }
    plan = planner.plan(frame, backend=backend, defaults=document)
    runs = plan.runs(merged=merged)
    assert runs.get_column("id").to_list() == ids
    for record, text in zip(frame.iter_rows(named=True), runs.get_column("run"), strict=False):
        # An empty string means "not set" in every format; the id column is a parameter too.
        values = {name: None if record[name] == "" else record[name] for name in ["sample", *names]}
        own = reference_row(values, plan.routes, plan.spec, record["sample"])
        expected = reference_run(document["run"], own, plan.spec) if merged or backend == "glue" else own
        assert text == orjson.dumps(expected).decode()
        if backend == "glue":
            assert all(isinstance(v, str) for v in orjson.loads(text)["Arguments"].values())
        else:
            assert all(isinstance(v, str) for v in orjson.loads(text).get("runTags", {}).values())


# ---------------------------------------------------------------- only the maps merge per key

_OBJECTS = st.dictionaries(st.text(min_size=1, max_size=4), st.integers() | st.text(max_size=4), max_size=4)


@given(st.sampled_from(["omics-batch", "omics-run"]), _OBJECTS, _OBJECTS, _OBJECTS, _OBJECTS)
def test_engine_settings_are_replaced_whole_while_parameters_merge_per_key(
    backend: str,
    default_engine: dict[str, Any],
    row_engine: dict[str, Any],
    default_params: dict[str, Any],
    row_params: dict[str, Any],
) -> None:
    """The model: a run's engineSettings "Overrides defaultRunSetting.engineSettings for this run"; only
    parameters and runTags are "Merged with defaultRunSetting" (docs/sources.md: batch-merge)."""
    spec = get_backend(backend)
    defaults = {"engineSettings": default_engine, "parameters": default_params}
    merged = reference_run(defaults, {"engineSettings": row_engine, "parameters": row_params}, spec)
    assert merged["engineSettings"] == row_engine
    assert merged["parameters"] == {**default_params, **row_params}
    assert ("engineSettings",) not in spec.map_paths
