"""Hostile and broken input through ``planner plan``: fuzzed with hypothesis, and pinned cases.

Every input must end in exit 0 (it was valid) or exit 2 with one ``planner: `` line
per problem on stderr; never a traceback, never ``internal error``, never a file
outside the plan directory, never a partial plan (on exit 2 the --out directory
does not exist, and no ``.NAME.tmp-*`` directory is left anywhere).  The one file
the planner writes beside the plan directory is ``PLAN.problems.csv``, the full
list of problems when there are more than it prints (DESIGN: "with the full list
in a file when long").

Each example runs in a fresh directory of its own (the working directory too), and
the whole directory is compared before and after.  Most run ``planner.cli.main``
in-process; a few run ``python -m planner.cli`` to prove nothing reaches the user
as a traceback.  Known planner bugs are strict xfails at the end of the file; the
fuzzers steer around exactly those inputs (``KNOWN_BUG_*``), so they keep
guarding everything else.  Bugs fixed since keep their tests, as regression tests.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import DEFAULTS, run_cli, run_cli_process, write_defaults
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import planner
import planner.commands.submit

BACKENDS = tuple(DEFAULTS)
# 30 examples per fuzzer; ten times more with HYPOTHESIS_PROFILE=thorough; PLANNER_FUZZ_EXAMPLES=N sets N.
FUZZ = settings(
    max_examples=int(
        os.environ.get("PLANNER_FUZZ_EXAMPLES")
        or 30 * (10 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 1)
    ),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Inputs that hit a known bug (pinned by the strict xfails at the end) are named here as KNOWN_BUG_*, and the
# fuzzers avoid them.  None at present (json cells nested 255..1024 levels deep were one, until fixed).


# ---------------------------------------------------------------- running and checking


def _snapshot(directory: Path) -> dict[str, str]:
    found = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        found[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


@contextlib.contextmanager
def _workdir(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory per example, also the working directory while the planner runs."""
    here = Path(tempfile.mkdtemp(dir=tmp_path))
    previous = os.getcwd()
    os.chdir(here)
    try:
        yield here
    finally:
        os.chdir(previous)


def plan_and_check(
    workdir: Path, argv: list[Any], capsys: Any, *, codes: tuple[int, ...] = (0, 2)
) -> tuple[int, str, str]:
    """``planner plan ARGV --out PLAN`` in ``workdir``, then every rule of this file."""
    out_dir = workdir / "plan"
    before = _snapshot(workdir)
    code, out, err = run_cli([*argv, "--out", out_dir], capsys)
    check_outcome(workdir, out_dir, before, code, out, err, codes=codes)
    return code, out, err


def check_outcome(
    workdir: Path,
    out_dir: Path,
    before: dict[str, str],
    code: int,
    out: str,
    err: str,
    *,
    codes: tuple[int, ...] = (0, 2),
) -> None:
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    assert code in codes, f"exit {code}: {err[-2000:]}"
    lines = [line for line in err.split("\n") if line.strip()]  # a line is what ends in a newline
    for line in lines:
        assert line.startswith("planner: "), f"a stderr line that is not one 'planner: ' message: {line[:300]!r}"
    if code == 2:
        assert lines, "exit 2 without a message"
        assert out == "", "stdout carries only results"
        assert not out_dir.exists(), "a plan directory was left after exit 2"
    else:
        manifest = planner.read_plan(out_dir).to_json()  # a complete plan, readable
        assert sum(s["entries"] for s in manifest["shards"]) == manifest["runs"]
        assert all((out_dir / s["path"]).is_file() for s in manifest["shards"])
    leftovers = [str(p) for p in workdir.rglob(".*.tmp-*")]
    assert leftovers == [], f"temporary plan directories left behind: {leftovers}"
    after = _snapshot(workdir)
    changed = [k for k in before if after.get(k) != before[k]]
    assert changed == [], f"input files changed or removed: {changed}"
    new = [k for k in after if k not in before]
    allowed = lambda k: k == "plan" or k.startswith("plan" + os.sep) or (code == 2 and k == "plan.problems.csv")  # noqa: E731
    assert [k for k in new if not allowed(k)] == [], (
        f"files written outside the plan directory: {[k for k in new if not allowed(k)]}"
    )


def _defaults_file(
    workdir: Path, backend: str, document: dict[str, Any] | None = None, *, types: dict[str, str] | None = None
) -> Path:
    document = copy.deepcopy(document if document is not None else DEFAULTS[backend])
    if types:
        document.setdefault("sheet", {})["types"] = types
    return write_defaults(workdir / "defaults.toml", document)


def _csv_bytes(
    header: list[str],
    rows: list[list[str]],
    *,
    separator: str = ",",
    quoting: int = csv.QUOTE_MINIMAL,
    newline: str = "\n",
) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=separator, quoting=quoting, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


# ---------------------------------------------------------------- strategies

HOSTILE_IDS = [
    "/",
    "..",
    "../..",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "a\\b",
    ".",
    "~",
    "$HOME",
    "`id`",
    "$(id)",
    "A\x00B",
    "\x00",
    "line\nbreak",
    "cr\rhere",
    "tab\there",
    "\u202eevil",
    "\ufeffbom",
    "é",
    "💥",
    "  padded  ",
    "x" * 10_000,
    "=cmd|' /C calc'!A0",
    "=1+1",
    "+1",
    "-1",
    "@SUM(A1)",
    "%s%n",
    "{}",
    "[]",
    "null",
    "NaN",
    "-",
    "",
]
hostile_ids = st.one_of(
    st.sampled_from(HOSTILE_IDS), st.text(max_size=40), st.text(alphabet="/.\\\x00\n\r\t=+-@ ab", max_size=12)
)
hostile_cells = st.one_of(
    st.sampled_from(HOSTILE_IDS),
    st.text(max_size=60),
    st.integers().map(str),
    st.sampled_from(["true", "false", "1e309", "-0", "0x10", " 7 ", "007", '{"a": 1}', "[1, 2]"]),
)
column_names = st.one_of(
    st.sampled_from(
        [
            "x",
            "threads",
            "param.x",
            "tag.k",
            "name",
            "priority",
            "outputUri",
            "cpu",
            "memory",
            "Timeout",
            "--x",
            "__row",
            "c0",
            "*",
            "^x$",
            "=cmd",
        ]
    ),
    st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != ""),
)
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "shift_jis"]


@st.composite
def text_sheets(draw: Any) -> tuple[bytes, str]:
    """A CSV/TSV sheet with hostile ids and cells, ragged rows, any encoding and quoting; its suffix."""
    id_column = draw(st.sampled_from(["sample", "id", "sample_id"]))
    others = draw(st.lists(column_names, max_size=3, unique=True).filter(lambda c: id_column not in c))
    header = [id_column, *others]
    rows = []
    for _ in range(draw(st.integers(1, 5))):
        row = [draw(hostile_ids), *(draw(hostile_cells) for _ in others)]
        shape = draw(st.sampled_from(["even", "even", "even", "short", "long"]))
        if shape == "short":
            row = row[: draw(st.integers(0, max(0, len(row) - 1)))]
        elif shape == "long":
            row += [draw(hostile_cells) for _ in range(draw(st.integers(1, 3)))]
        rows.append(row)
    suffix = draw(st.sampled_from([".csv", ".tsv"]))
    separator = draw(st.sampled_from([",", "\t", ";"])) if draw(st.booleans()) else ("," if suffix == ".csv" else "\t")
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    text = _csv_bytes(
        header, rows, separator=separator, quoting=quoting, newline=draw(st.sampled_from(["\n", "\r\n"]))
    ).decode()
    if draw(st.booleans()):  # hand-joined, quoting broken
        text = "\n".join(separator.join(r) for r in [header, *rows]) + "\n"
    encoding = draw(st.sampled_from(ENCODINGS))
    return text.encode(encoding, errors="replace"), suffix


def _nested(depth: int, kind: str) -> str:
    """JSON text nested ``depth`` levels deep (built as text: json.dumps itself stops at ~1000)."""
    return ("[" * depth + "1" + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
json_cells = st.one_of(
    json_values.map(json.dumps),
    st.builds(_nested, st.integers(0, 3000), st.sampled_from(["list", "dict"])),
    st.text(max_size=40),  # not JSON at all
    st.sampled_from(["[", "{", '{"a":', "[1,]", "NaN", "Infinity", "\x00", "1e999", '"unterminated']),
)


def _mutations(document: dict[str, Any], draw: Any) -> dict[str, Any]:
    """Unknown keys and values of the wrong type, anywhere in a valid defaults document."""
    document = copy.deepcopy(document)
    odd_values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    )
    keys = st.text(min_size=1, max_size=10)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["run", "submission", "sheet", "staging", "bogus"]))
        table = document.setdefault(section, {})
        action = draw(st.sampled_from(["unknown key", "wrong type", "delete"]))
        if action == "unknown key" or not table:
            table[draw(keys)] = draw(odd_values)
        elif action == "wrong type":
            table[draw(st.sampled_from(sorted(table)))] = draw(odd_values)
        else:
            del table[draw(st.sampled_from(sorted(table)))]
    return document


# ---------------------------------------------------------------- fuzzing


@FUZZ
@given(
    data=st.binary(max_size=4096),
    suffix=st.sampled_from([".csv", ".tsv", ".tab", ".parquet", ".ndjson", ".jsonl", ".txt", ""]),
    backend=st.sampled_from(BACKENDS),
)
def test_random_bytes_as_a_sheet(data: bytes, suffix: str, backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        sheet = here / f"sheet{suffix}"
        sheet.write_bytes(data)
        plan_and_check(here, ["plan", sheet, "--backend", backend, "--defaults", _defaults_file(here, backend)], capsys)


@FUZZ
@given(sheet=text_sheets(), backend=st.sampled_from(BACKENDS), skip_invalid=st.booleans())
def test_hostile_text_sheets(
    sheet: tuple[bytes, str], backend: str, skip_invalid: bool, tmp_path: Path, capsys: Any
) -> None:
    data, suffix = sheet
    with _workdir(tmp_path) as here:
        path = here / f"sheet{suffix}"
        path.write_bytes(data)
        argv = ["plan", path, "--backend", backend, "--defaults", _defaults_file(here, backend)] + (
            ["--skip-invalid"] if skip_invalid else []
        )
        plan_and_check(here, argv, capsys)


@FUZZ
@given(cells=st.lists(json_cells, min_size=1, max_size=4), backend=st.sampled_from(BACKENDS))
def test_json_typed_cells(cells: list[str], backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(_csv_bytes(["sample", "payload"], [[f"S{i}", cell] for i, cell in enumerate(cells)]))
        defaults = _defaults_file(here, backend, types={"payload": "json"})
        plan_and_check(here, ["plan", path, "--backend", backend, "--defaults", defaults], capsys)


@FUZZ
@given(data=st.data(), backend=st.sampled_from(BACKENDS), as_json=st.booleans())
def test_defaults_with_unknown_keys_and_wrong_types(
    data: Any, backend: str, as_json: bool, tmp_path: Path, capsys: Any
) -> None:
    document = _mutations(DEFAULTS[backend], data.draw)
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\nS2,2\n")
        text = json.dumps(document).encode()
        if not as_json:
            try:
                defaults = write_defaults(here / "defaults.toml", document)
            except TypeError:  # TOML has no null
                as_json = True
        if as_json:
            defaults = here / "defaults.json"
            defaults.write_bytes(text)
        plan_and_check(here, ["plan", sheet, "--backend", backend, "--defaults", defaults], capsys)


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".toml", ".json"]), backend=st.sampled_from(BACKENDS))
def test_random_bytes_as_a_defaults_file(data: bytes, suffix: str, backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\n")
        defaults = here / f"defaults{suffix}"
        defaults.write_bytes(data)
        plan_and_check(here, ["plan", sheet, "--backend", backend, "--defaults", defaults], capsys)


set_keys = st.one_of(
    st.sampled_from(
        [
            "parameters.x",
            "runTags.k",
            "tags.k",
            "outputUri",
            "priority",
            "name",
            "submission.batchName",
            "submission.priority",
            "submission.pipeline_id",
            "run.x",
            "submission.",
            "run.",
            ".",
            "a..b",
            "parameters",
            "Arguments.--x",
            "config.infra.cpu",
            "jobQueue",
        ]
    ),
    st.text(max_size=15).filter(lambda k: k.count(".") < 50),
)
set_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["5", "-1", "1e400", "null", "true", "[1]", '{"a":1}', "{", "", "s3://b/o/", "=1+1"]),
)


@FUZZ
@given(
    assignments=st.lists(st.tuples(set_keys, st.sampled_from(["=", ""]), set_values), min_size=1, max_size=3),
    backend=st.sampled_from(BACKENDS),
)
def test_set_assignments(assignments: list[tuple[str, str, str]], backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\n")
        argv: list[Any] = ["plan", sheet, "--backend", backend, "--defaults", _defaults_file(here, backend)]
        for key, sep, value in assignments:
            argv.append(f"--set={key}{sep}{value}")
        plan_and_check(here, argv, capsys)


# ---------------------------------------------------------------- pinned hostile inputs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sample", [s for s in HOSTILE_IDS if s], ids=lambda s: repr(s[:20]))
def test_hostile_ids(sample: str, backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(_csv_bytes(["sample", "x"], [[sample, "1"], ["ok", "2"]]))
        code, _, err = plan_and_check(
            here, ["plan", path, "--backend", backend, "--defaults", _defaults_file(here, backend)], capsys
        )
        if code == 0:  # the id is kept exactly, and only in the plan's own files
            table = __import__("polars").read_parquet(here / "plan" / "samples.parquet")
            assert table.get_column("id").to_list() == [sample, "ok"]
        else:
            assert "row 1" in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_id_is_refused(backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(b'sample,x\n"",1\nok,2\n')
        _code, _, err = plan_and_check(
            here, ["plan", path, "--backend", backend, "--defaults", _defaults_file(here, backend)], capsys, codes=(2,)
        )
        assert "row 1" in err and "empty" in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_one_megabyte_cell(backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(b"sample,x\nA," + b"y" * 1_000_000 + b"\nB,1\n")
        code, _, err = plan_and_check(
            here, ["plan", path, "--backend", backend, "--defaults", _defaults_file(here, backend)], capsys
        )
        assert len(err) < 10_000, "a message echoed the whole cell"
        if code == 2:
            assert "row 1" in err


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32", "shift_jis"])
def test_sheets_not_in_utf8_are_refused(encoding: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes("sample,name\nS1,café\nS2,naïve\n".encode(encoding, errors="replace").replace(b"?", b"\xff"))
        _, _, err = plan_and_check(
            here,
            ["plan", path, "--backend", "omics-run", "--defaults", _defaults_file(here, "omics-run")],
            capsys,
            codes=(2,),
        )
        assert "UTF-8" in err


def test_a_non_utf8_byte_far_into_the_sheet_is_refused(tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(
            b"sample,x\n" + b"".join(b"S%d,1\n" % i for i in range(20_000)) + b"S\xe9,2\n"
        )  # past the 64 KiB header block
        plan_and_check(
            here,
            ["plan", path, "--backend", "omics-run", "--defaults", _defaults_file(here, "omics-run")],
            capsys,
            codes=(2,),
        )


@pytest.mark.parametrize(
    ("rows", "codes"),
    [
        (b"S1,1,2\n", (2,)),  # more cells than the header
        (b"S1\n", (2,)),  # fewer cells than the header: refused, not filled with nulls
        (b'S1,"unterminated\n', (2,)),
    ],
)
def test_ragged_rows(rows: bytes, codes: tuple[int, ...], tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(b"sample,x\nS0,0\n" + rows)
        plan_and_check(
            here,
            ["plan", path, "--backend", "omics-batch", "--defaults", _defaults_file(here, "omics-batch")],
            capsys,
            codes=codes,
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_formula_like_values_are_data(backend: str, tmp_path: Path, capsys: Any) -> None:
    """A spreadsheet formula in a cell is just text: planned as it is, never evaluated or altered."""
    formula = "=cmd|' /C calc'!A0"
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(_csv_bytes(["sample", "note"], [["S1", formula], ["S2", '=HYPERLINK("http://x")']]))
        _code, _, _ = plan_and_check(
            here, ["plan", path, "--backend", backend, "--defaults", _defaults_file(here, backend)], capsys, codes=(0,)
        )
        shards = b"".join(
            (here / "plan" / "shards").joinpath(p).read_bytes() for p in os.listdir(here / "plan" / "shards")
        )
        assert json.dumps(formula).encode() in shards


@pytest.mark.parametrize(
    "document",
    [
        {"bogus": {}},
        {"run": [1, 2]},
        {"run": "x"},
        {"sheet": {"types": "x"}},
        {"sheet": {"types": {"x": 5}}},
        {"sheet": {"types": {"x": "integer"}}},
        {"sheet": {"id_column": "nope"}},
        {"sheet": {"bogus": 1}},
        {"submission": 5},
    ],
    ids=str,
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_defaults_of_the_wrong_shape(document: dict[str, Any], backend: str, tmp_path: Path, capsys: Any) -> None:
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\n")
        merged = {**copy.deepcopy(DEFAULTS[backend]), **document}
        defaults = here / "defaults.json"
        defaults.write_bytes(json.dumps(merged).encode())
        plan_and_check(here, ["plan", sheet, "--backend", backend, "--defaults", defaults], capsys, codes=(2,))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("random bytes", bytes(range(256)) * 8),
        ("utf-16", "sample,x\nS1,1\n".encode("utf-16")),
        ("nul in an id", b"sample,x\nA\x00B,1\n"),
        ("json nested 2000 deep", b'sample,x\nS1,"' + b"[" * 2000 + b"]" * 2000 + b'"\n'),
    ],
)
def test_in_a_real_process_no_traceback_reaches_the_user(name: str, data: bytes, tmp_path: Path) -> None:
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(data)
        defaults = _defaults_file(here, "omics-batch", types={"x": "json"})
        before = _snapshot(here)
        done = run_cli_process(
            ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults, "--out", here / "plan"], cwd=here
        )
        check_outcome(here, here / "plan", before, done.returncode, done.stdout, done.stderr)


# ---------------------------------------------------------------- bugs this suite found, fixed since


@pytest.mark.parametrize(("backend", "field"), [("omics-batch", "runTags"), ("glue", "Arguments"), ("polly", "config")])
@pytest.mark.parametrize("value", [5, 1.5, True], ids=["int", "float", "bool"])
def test_a_map_field_given_a_scalar_is_refused(
    backend: str, field: str, value: Any, tmp_path: Path, capsys: Any
) -> None:
    """Was a bug (fixed in b6fdf7c): a map field of [run] given a scalar crashes the backend's _check_defaults:
    omics_batch.py
    len(run.get('runTags')) -> TypeError; glue.py `for key in run.get('Arguments')` -> TypeError; polly.py
    config.items() -> AttributeError: 'planner: internal error', exit 1; expected exit 2 ('must be a table')
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\n")
        document = copy.deepcopy(DEFAULTS[backend])
        document["run"][field] = value
        defaults = here / "defaults.json"
        defaults.write_bytes(json.dumps(document).encode())
        plan_and_check(here, ["plan", sheet, "--backend", backend, "--defaults", defaults], capsys, codes=(2,))


@pytest.mark.parametrize("backend", ["omics-batch", "omics-run", "polly"])
@pytest.mark.parametrize("value", ["x", 5, [1, 2]], ids=["str", "int", "list"])
def test_parameters_of_the_wrong_type_are_refused(backend: str, value: Any, tmp_path: Path, capsys: Any) -> None:
    """Was a bug (fixed in b6fdf7c): [run] parameters of the wrong type (a string, number, list, boolean) is accepted
    with exit 0 for
    omics-batch, omics-run and polly (the model's document type lets anything through and no check asks for a
    table); omics-run and polly then silently drop the default parameters from every merged run, omics-batch
    sends parameters="x" as defaultRunSetting; expected exit 2 ('parameters must be a table')
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\n")
        document = copy.deepcopy(DEFAULTS[backend])
        document["run"]["parameters"] = value
        defaults = here / "defaults.json"
        defaults.write_bytes(json.dumps(document).encode())
        plan_and_check(here, ["plan", sheet, "--backend", backend, "--defaults", defaults], capsys, codes=(2,))


@pytest.mark.parametrize("uri", [5, ["s3://b/"], {"b": 1}])
def test_a_staging_uri_of_the_wrong_type_is_refused(uri: Any, tmp_path: Path, capsys: Any) -> None:
    """Was a bug (fixed in b6fdf7c): planner/defaults.py load_defaults() keeps [staging] uri unchecked (a number,
    list, table or bad text
    is planned with exit 0); submit then fails in staging.py StagingPrefix.parse (uri.startswith) with
    'planner: internal error: AttributeError', exit 1, even with --dry-run; expected exit 2 at plan time
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(_csv_bytes(["sample"], [[f"S{i}"] for i in range(101)]))  # over 100 runs: staged on S3
        document = {**copy.deepcopy(DEFAULTS["omics-batch"]), "staging": {"uri": uri}}
        defaults = here / "defaults.json"
        defaults.write_bytes(json.dumps(document).encode())
        _, _, err = plan_and_check(
            here, ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults], capsys, codes=(2,)
        )
        assert "[staging] uri" in err


@pytest.mark.parametrize(
    ("sheet_bytes", "document"),
    [
        (b'"x\ny",z\n1,2\n', None),
        (b'"x\x00y",z\n1,2\n', None),
        (b"sample,x\nS1,1\n", {"sheet": {"a\nb": 1}}),
        (b"sample,x\nS1,1\n", {"bogus\rsection": {}}),
    ],
    ids=["header newline", "header nul", "defaults key newline", "defaults section cr"],
)
def test_names_in_messages_are_quoted(
    sheet_bytes: bytes, document: dict[str, Any] | None, tmp_path: Path, capsys: Any
) -> None:
    """Was a bug (fixed in b6fdf7c): messages echo user-controlled names raw, control characters included:
    planner/sheet.py
    _choose_id_column() (and the [sheet.types] and --list-columns messages) join the sheet's column names,
    planner/defaults.py load_defaults() the unknown section and [sheet] key names; a name holding a newline or
    CR splits (or overwrites) one error over several stderr lines, NUL bytes reach the terminal; expected one
    line with the names quoted (repr), as _check_header and Problem.describe do
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(sheet_bytes)
        defaults = here / "defaults.json"
        defaults.write_bytes(json.dumps({**DEFAULTS["omics-batch"], **(document or {})}).encode())
        _, _, err = plan_and_check(
            here, ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults], capsys, codes=(2,)
        )
        assert not any(ch in err.rstrip("\n") for ch in "\x00\r\n"), repr(err)


@pytest.mark.parametrize(
    "data", [b"sample,x\rS1,1\rS2,2\r", b"sam\rple,x\nS1,1\n"], ids=["CR line endings", "CR in the header"]
)
def test_carriage_returns_in_the_header_are_refused_clearly(data: bytes, tmp_path: Path, capsys: Any) -> None:
    """Was a bug (fixed in b6fdf7c): planner/sheet.py _sniff() reads the header with csv.reader over
    io.StringIO(text) and does not catch
    csv.Error: a sheet with classic Mac line endings (CR only, as Excel's 'CSV (Macintosh)' writes), or a CR
    in a header name, gives 'planner: internal error: Error: new-line character seen in unquoted field', exit
    1; expected exit 2 with a clear message (only LF and CRLF are supported)
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(data)
        plan_and_check(
            here,
            ["plan", sheet, "--backend", "omics-batch", "--defaults", _defaults_file(here, "omics-batch")],
            capsys,
            codes=(2,),
        )


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_utf16_without_a_bom_is_refused_clearly(encoding: str, newline: str, tmp_path: Path, capsys: Any) -> None:
    """Was a bug (fixed in b6fdf7c): a UTF-16 sheet without a byte-order mark decodes as UTF-8 (a NUL beside every
    letter), so
    planner/sheet.py _sniff() lets it through: with LF line ends the user reads 'no id column ... the columns
    are s\\x00a\\x00m...' with raw NULs, with CRLF line ends csv.reader raises and the user gets 'internal
    error', exit 1; expected 'is not UTF-8 text' (NUL bytes in a text sheet are a sure sign of UTF-16 or
    UTF-32)
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(f"sample,x{newline}S1,1{newline}".encode(encoding))
        _, _, err = plan_and_check(
            here,
            ["plan", sheet, "--backend", "omics-run", "--defaults", _defaults_file(here, "omics-run")],
            capsys,
            codes=(2,),
        )
        assert "UTF-8" in err and "\x00" not in err


def test_rejected_csv_neutralises_formulas(tmp_path: Path, capsys: Any) -> None:
    """Was a bug (CSV injection; fixed in b6fdf7c): planner/plan.py write_problems() writes rejected.csv (and
    PLAN.problems.csv) with the
    offending values raw, so a value like '=HYPERLINK(...)' or "=cmd|' /C calc'!A0" is a live formula when the
    file is opened in a spreadsheet; cli._write_table neutralises exactly this for `status --out x.csv`
    """
    formula = "=cmd|' /C calc'!A0"
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(_csv_bytes(["sample", "priority"], [["S1", formula], ["S2", "5"]]))
        plan_and_check(
            here,
            [
                "plan",
                sheet,
                "--backend",
                "omics-batch",
                "--defaults",
                _defaults_file(here, "omics-batch"),
                "--skip-invalid",
            ],
            capsys,
            codes=(0,),
        )
        with open(here / "plan" / "rejected.csv", newline="", encoding="utf-8") as handle:
            cells = [cell for row in csv.reader(handle) for cell in row]
        assert formula not in cells and f"'{formula}" in cells


@pytest.mark.parametrize("depth", [255, 300, 1024, 1025])
def test_json_cell_nested_beyond_254_levels(depth: int, tmp_path: Path, capsys: Any) -> None:
    """Was a bug: planner/sheet.py _canonical_json.one() catches only orjson.JSONDecodeError; a json-typed cell nested
    255..1024 levels deep parses (orjson.loads allows 1024) but orjson.dumps raises TypeError('Recursion limit
    reached') -> 'planner: internal error: TypeError', exit 1; expected exit 2 naming the row and column
    """
    with _workdir(tmp_path) as here:
        path = here / "sheet.csv"
        path.write_bytes(_csv_bytes(["sample", "payload"], [["S1", _nested(depth, "list")]]))
        defaults = _defaults_file(here, "omics-batch", types={"payload": "json"})
        _, _, err = plan_and_check(
            here, ["plan", path, "--backend", "omics-batch", "--defaults", defaults], capsys, codes=(2,)
        )
        assert (
            "row 1 (id 'S1'), column 'payload'" in err
            and "nested deeper than 254 levels" in err
            and "[max-depth]" in err
        ), err


@pytest.mark.parametrize("how", ["defaults file", "--set"])
@pytest.mark.parametrize("backend", ["omics-run", "omics-batch"])  # merged here, or by the service (plan.json only)
def test_defaults_nested_beyond_254_levels(how: str, backend: str, tmp_path: Path, capsys: Any) -> None:
    """Was a bug: planner/merge.py _add_defaults() orjson.dumps()es the default request; a defaults value (JSON file,
    or a --set with a long dotted key) nested deeper than 254 levels raises TypeError('Recursion limit
    reached') -> 'planner: internal error', exit 1; expected exit 2 from the defaults check
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\n")
        document = copy.deepcopy(DEFAULTS[backend])
        argv: list[Any] = ["plan", sheet, "--backend", backend]
        if how == "defaults file":
            document["run"]["parameters"]["deep"] = "DEEP"
        else:
            argv.append("--set=parameters." + "a." * 300 + "b=1")
        defaults = here / "defaults.json"
        defaults.write_bytes(json.dumps(document).encode().replace(b'"DEEP"', _nested(300, "dict").encode()))
        _, _, err = plan_and_check(here, [*argv, "--defaults", defaults], capsys, codes=(2,))
        culprit = "defaults.json: [run] parameters.deep" if how == "defaults file" else "--set: [run] parameters.a.a"
        assert culprit in err and "nested deeper than 253 levels" in err, err


def test_ndjson_nested_objects_crash_the_process(tmp_path: Path) -> None:
    """Was a bug: an NDJSON sheet with objects nested ~600 levels deep crashes `planner plan` with SIGSEGV inside
    polars (scan_ndjson(...).collect() overflows a stack; polars 2.1), leaving a .PLAN.tmp-* directory behind;
    the planner hands any NDJSON to polars unchecked; expected exit 2 ('nested too deeply') and nothing left
    behind
    """
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.ndjson"
        sheet.write_bytes(b'{"sample":"S1","x":' + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}\n")
        defaults = _defaults_file(here, "omics-run")
        before = _snapshot(here)
        done = run_cli_process(
            ["plan", sheet, "--backend", "omics-run", "--defaults", defaults, "--out", here / "plan"], cwd=here
        )
        for core in here.glob("core*"):  # a core dump of the crash is not the planner's file
            core.unlink()
        check_outcome(here, here / "plan", before, done.returncode, done.stdout, done.stderr, codes=(2,))
        assert "line 1: JSON nested deeper than 254 levels" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "option",
    [["--max-attempts", "-3"], ["--endpoint-url", "not a url"], ["--region", "bad region!"]],
    ids=lambda o: o[0],
)
def test_malformed_aws_options(option: list[str], tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was a bug: the AWS options of submit/status/retry/cancel reach botocore unchecked, at client creation
    (planner/aws.py Clients._make), outside any error mapping: ``--max-attempts -3`` raises
    InvalidMaxRetryAttemptsError, ``--endpoint-url 'not a url'`` ValueError('Invalid endpoint'), ``--region
    'bad region!'`` InvalidRegionError, each shown as 'planner: internal error', exit 1; expected exit 2 naming
    the option.  (No server is needed: the client is never made.)"""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.write_bytes(b"sample,x\nS1,1\n")
        plan_and_check(
            here,
            ["plan", sheet, "--backend", "omics-run", "--defaults", _defaults_file(here, "omics-run")],
            capsys,
            codes=(0,),
        )
        code, _out, err = run_cli(["submit", here / "plan", *option], capsys)
        assert "internal error" not in err and code == 2, err
        assert f"planner: error: {option[0]} " in err and "Traceback" not in err, err
        assert not (here / "plan" / "ledger.sqlite").exists()  # refused before the ledger is made


@pytest.mark.parametrize("interval", ["-1", "nan"])
def test_status_watch_with_a_bad_interval(interval: str, world: Any, tmp_path: Path, capsys: Any) -> None:
    """Was a bug: planner/cli.py _status() passes --interval to time.sleep() unchecked: with a plan not yet settled,
    ``planner status PLAN --watch --interval -1`` ends in 'planner: internal error: ValueError: sleep length must
    be non-negative' (``nan``: 'Invalid value NaN'), exit 1, after printing one summary; expected exit 2 before
    anything is asked of the service ('--interval must be a positive number of seconds')."""
    import polars as pl

    plan_dir = str(tmp_path / "plan")
    planner.plan(
        pl.DataFrame({"sample": ["S1"]}),
        backend="polly",
        defaults={"run": {"parameters": {}}, "submission": {"pipeline_id": "pl"}},
    ).write(plan_dir)
    options = {"sandbox": True, "endpoints": {"s3": world.moto, "polly": world.polly_emulator.endpoint_url}}
    planner.commands.submit.submit(plan_dir, **options)  # the emulator's clock stands still: the job stays PENDING
    code, out, err = run_cli(["status", plan_dir, "--watch", "--interval", interval, "--no-refresh"], capsys)
    assert "internal error" not in err and code == 2, err
    assert "--interval" in err and "samples" not in out + err, err  # refused before any summary


def test_an_endless_sheet_hangs_the_planner(tmp_path: Path) -> None:
    """Was a bug: planner/sheet.py _from_path() reads every sheet file to its end for the sha256 before anything
    else, and opens whatever exists and is not a directory: ``planner plan sheet.csv`` where sheet.csv is a
    symlink to /dev/zero (or ``planner plan /dev/zero``, or a named pipe nobody writes to) never ends and says
    nothing.  Expected: exit 2 at once ('not a regular file')."""
    import subprocess
    import sys

    with _workdir(tmp_path) as here:
        sheet = here / "sheet.csv"
        sheet.symlink_to("/dev/zero")
        defaults = _defaults_file(here, "omics-run")
        command = [
            sys.executable,
            "-m",
            "planner.cli",
            "plan",
            str(sheet),
            "--backend",
            "omics-run",
            "--defaults",
            str(defaults),
            "--out",
            str(here / "plan"),
        ]
        try:
            # A hang reads /dev/zero for ever: any bound catches it; 10 s failed on a loaded 2-core machine.
            done = subprocess.run(command, cwd=here, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("planner plan was still reading the sheet after 120 seconds")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "not a regular file" in done.stderr, done.stderr


# ---------------------------------------------------------------- known bugs (strict xfails): none at present
