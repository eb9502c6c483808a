"""Reading sheets: formats, encodings, quoting, declared types and the id column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import defaults_for, run_cli, write_csv

import planner

DEFAULTS = {
    "run": {"workflowId": "1234567", "roleArn": "arn:aws:iam::123456789012:role/r", "outputUri": "s3://bucket/out/"}
}


def own_runs(sheet: Any, **kw: Any) -> list[dict[str, Any]]:
    """The shard entries omics-batch would send (the row's own settings), parsed."""
    kw.setdefault("defaults", DEFAULTS)
    runs = planner.plan(sheet, backend="omics-batch", **kw).runs(merged=False)
    return [orjson.loads(text) for text in runs.get_column("run")]


def test_csv_with_bom_crlf_quoted_commas_and_newlines(tmp_path: Path) -> None:
    sheet = tmp_path / "s.csv"
    sheet.write_bytes(
        b"\xef\xbb\xbfsample,fastq_1,note\r\n"
        b'S1,"s3://r/a,b.fq","line one\r\nline two"\r\n'
        b'S2,s3://r/c.fq,"say ""hi"", then go"\r\n'
        b"S3,,\r\n"
    )
    assert own_runs(sheet) == [
        {
            "runSettingId": "S1",
            "parameters": {"sample": "S1", "fastq_1": "s3://r/a,b.fq", "note": "line one\r\nline two"},
        },
        {"runSettingId": "S2", "parameters": {"sample": "S2", "fastq_1": "s3://r/c.fq", "note": 'say "hi", then go'}},
        {"runSettingId": "S3", "parameters": {"sample": "S3"}},  # empty cells are "not set"
    ]


def test_bom_does_not_hide_the_id_column(tmp_path: Path) -> None:
    """With a BOM the first header cell must still be 'sample', found by the id rule."""
    sheet = tmp_path / "s.csv"
    sheet.write_bytes(b"\xef\xbb\xbfsample,x\nA,1\n")
    plan = planner.plan(sheet, backend="omics-batch", defaults=DEFAULTS)
    assert plan.sheet.id_column == "sample"
    assert plan.sheet.columns == ["sample", "x"]


@pytest.mark.parametrize("suffix", [".tsv", ".tab"])
def test_tab_separated(tmp_path: Path, suffix: str) -> None:
    sheet = tmp_path / f"s{suffix}"
    sheet.write_text('sample\tfastq_1\tnote\nS1\ts3://r/a.fq\ta,b;c\nS2\t\t"quoted\tcell"\n', encoding="utf-8")
    assert own_runs(sheet) == [
        {"runSettingId": "S1", "parameters": {"sample": "S1", "fastq_1": "s3://r/a.fq", "note": "a,b;c"}},
        {"runSettingId": "S2", "parameters": {"sample": "S2", "note": "quoted\tcell"}},
    ]


def test_parquet_lists_and_structs_become_json(tmp_path: Path) -> None:
    sheet = tmp_path / "s.parquet"
    pl.DataFrame(
        {
            "sample": ["S1", "S2"],
            "fastq": [["s3://r/1.fq", "s3://r/2.fq"], None],
            "opts": [{"depth": 30, "mode": "fast"}, {"depth": None, "mode": "slow"}],
            "threads": [8, None],
            "ratio": [0.25, 1.0],
            "flag": [True, False],
            "priority": [5, None],
        }
    ).write_parquet(sheet)
    assert own_runs(sheet) == [
        {
            "runSettingId": "S1",
            "priority": 5,
            "parameters": {
                "sample": "S1",
                "fastq": ["s3://r/1.fq", "s3://r/2.fq"],
                "opts": {"depth": 30, "mode": "fast"},
                "threads": 8,
                "ratio": 0.25,
                "flag": True,
            },
        },
        {
            "runSettingId": "S2",
            "parameters": {"sample": "S2", "opts": {"depth": None, "mode": "slow"}, "ratio": 1.0, "flag": False},
        },
    ]


@pytest.mark.parametrize("suffix", [".ndjson", ".jsonl"])
def test_ndjson_keeps_its_types(tmp_path: Path, suffix: str) -> None:
    sheet = tmp_path / f"s{suffix}"
    lines = [
        {
            "sample": "S1",
            "fastq": ["a.fq", "b.fq"],
            "depth": 30,
            "priority": 500,
            "tag.cohort": "x",
            "meta": {"k": "v"},
        },
        {"sample": "S2", "fastq": ["c.fq"], "depth": None, "priority": None, "tag.cohort": "y", "meta": None},
    ]
    sheet.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    assert own_runs(sheet) == [
        {
            "runSettingId": "S1",
            "priority": 500,
            "parameters": {"sample": "S1", "fastq": ["a.fq", "b.fq"], "depth": 30, "meta": {"k": "v"}},
            "runTags": {"cohort": "x"},
        },
        {"runSettingId": "S2", "parameters": {"sample": "S2", "fastq": ["c.fq"]}, "runTags": {"cohort": "y"}},
    ]


def test_example_ndjson_sheet_plans(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    runs = own_runs(
        repo / "sample_sheets" / "omics_batch_samples.ndjson",
        defaults=repo / "sample_sheets" / "omics_batch_defaults.toml",
    )
    assert [r["runSettingId"] for r in runs] == [
        "CTRL_REP1",
        "DEX_6H_REP3",
        "DEX_24H_REP1",
        "VAL_CTRL_REP1",
        "VAL_DEX_REP2",
    ]
    assert runs[1]["priority"] == 500 and "priority" not in runs[0]
    assert runs[4]["priority"] == 0  # zero is a value, not "unset"
    assert isinstance(runs[0]["parameters"]["fastq"], list)


def test_glob_of_two_csvs_reads_both_in_name_order(tmp_path: Path) -> None:
    write_csv(tmp_path / "part-b.csv", ["sample", "x"], [["B1", "3"], ["B2", "4"]])
    write_csv(tmp_path / "part-a.csv", ["sample", "x"], [["A1", "1"], ["A2", "2"]])
    plan = planner.plan(str(tmp_path / "part-*.csv"), backend="omics-batch", defaults=DEFAULTS)
    runs = plan.runs(merged=False)
    assert runs.get_column("id").to_list() == ["A1", "A2", "B1", "B2"]
    assert runs.get_column("row").to_list() == [1, 2, 3, 4]
    assert [orjson.loads(r)["parameters"]["x"] for r in runs.get_column("run")] == ["1", "2", "3", "4"]


def test_glob_names_the_file_whose_row_is_short(tmp_path: Path) -> None:
    write_csv(tmp_path / "part-a.csv", ["sample", "x"], [["A1", "1"], ["A2", "2"]])
    (tmp_path / "part-b.csv").write_bytes(b"sample,x\nB1,3\nB2\n")
    with pytest.raises(planner.SheetError, match=r"part-b\.csv\): row 2 \(1 cell, the header has 2\) has fewer cells"):
        planner.plan(str(tmp_path / "part-*.csv"), backend="omics-batch", defaults=DEFAULTS)


def test_glob_matching_nothing_is_a_sheet_error(tmp_path: Path) -> None:
    with pytest.raises(planner.SheetError, match="no file matches"):
        planner.plan(str(tmp_path / "none-*.csv"), backend="omics-batch", defaults=DEFAULTS)


def test_leading_zeros_stay(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "lane", "barcode", "ratio"], [["007", "001", "0012", "1.50"]])
    assert own_runs(sheet) == [
        {"runSettingId": "007", "parameters": {"sample": "007", "lane": "001", "barcode": "0012", "ratio": "1.50"}}
    ]


def test_declared_types_convert_cells(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "threads", "ratio", "paired", "extra", "label"],
        [
            ["S1", "007", "0.5", "yes", '{"k": [1, 2]}', "007"],
            ["S2", " 16 ", "2", "FALSE", '"text"', "x"],
            ["S3", "", "", "", "", ""],
            ["S4", "-3", "1e3", "1", "[]", "y"],
        ],
    )
    types = {"threads": "int", "ratio": "float", "paired": "bool", "extra": "json", "label": "string"}
    runs = own_runs(sheet, defaults={**DEFAULTS, "sheet": {"types": types}})
    assert [r.get("parameters") for r in runs] == [
        {"sample": "S1", "threads": 7, "ratio": 0.5, "paired": True, "extra": {"k": [1, 2]}, "label": "007"},
        {"sample": "S2", "threads": 16, "ratio": 2.0, "paired": False, "extra": "text", "label": "x"},
        {"sample": "S3"},  # every declared cell empty: none set
        {"sample": "S4", "threads": -3, "ratio": 1000.0, "paired": True, "extra": [], "label": "y"},
    ]


@pytest.mark.parametrize(
    ("kind", "bad"),
    [("int", "1.5"), ("int", "twelve"), ("float", "abc"), ("float", "inf"), ("bool", "maybe"), ("json", "{not json")],
)
def test_declared_type_bad_cell_names_row_and_column(tmp_path: Path, kind: str, bad: str) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "value"], [["S1", _good(kind)], ["S2", _good(kind)], ["S3", bad]])
    plan = planner.plan(sheet, backend="omics-batch", defaults={**DEFAULTS, "sheet": {"types": {"value": kind}}})
    with pytest.raises(planner.ValidationError) as caught:
        plan.runs()
    (problem,) = caught.value.problems
    assert (problem.row, problem.id, problem.column, problem.value, problem.rule) == (3, "S3", "value", bad, "type")
    assert kind in problem.message


def _good(kind: str) -> str:
    return {"int": "1", "float": "1.5", "bool": "true", "json": "[1]"}[kind]


def test_declared_type_bad_cell_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "threads"], [["S1", "8"], ["S2", "eight"]])
    defaults = tmp_path / "d.json"
    defaults.write_bytes(orjson.dumps({**DEFAULTS, "sheet": {"types": {"threads": "int"}}}))
    code, _out, err = run_cli(
        ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults, "--out", tmp_path / "plan"], capsys
    )
    assert code == 2
    assert "row 2" in err and "'threads'" in err and "'eight'" in err
    assert not (tmp_path / "plan").exists()


@pytest.mark.parametrize(
    ("header", "id_column", "expected"),
    [
        (["id", "sample", "sample_id", "x"], None, "sample_id"),
        (["id", "sample", "x"], None, "sample"),
        (["x", "id"], None, "id"),
        (["sample", "name_col", "x"], "name_col", "name_col"),
    ],
)
def test_id_column_rule(tmp_path: Path, header: list[str], id_column: str | None, expected: str) -> None:
    rows = [[f"{h}-{i}" for h in header] for i in range(2)]
    sheet = write_csv(tmp_path / "s.csv", header, rows)
    plan = planner.plan(sheet, backend="omics-batch", defaults=DEFAULTS, id_column=id_column)
    assert plan.sheet.id_column == expected
    runs = plan.runs(merged=False)
    assert runs.get_column("id").to_list() == [f"{expected}-0", f"{expected}-1"]
    for i, text in enumerate(runs.get_column("run")):
        run = orjson.loads(text)
        # The id column names the run and, like every column, is also a parameter under its
        # own name; the other candidates are plain parameters, all in sheet order.
        assert run["runSettingId"] == run["parameters"][expected] == f"{expected}-{i}"
        assert list(run["parameters"]) == header
        assert run["parameters"] == {h: f"{h}-{i}" for h in header}


def test_id_column_from_defaults_file_and_cli_overrides_it(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "lims_id"], [["a", "L1"], ["b", "L2"]])
    document = {**DEFAULTS, "sheet": {"id_column": "lims_id"}}
    assert planner.plan(sheet, backend="omics-batch", defaults=document).runs().get_column("id").to_list() == [
        "L1",
        "L2",
    ]
    assert planner.plan(sheet, backend="omics-batch", defaults=document, id_column="sample").runs().get_column(
        "id"
    ).to_list() == ["a", "b"]


def test_named_id_column_must_exist(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["a", "1"]])
    with pytest.raises(planner.SheetError, match="'nope'"):
        planner.plan(sheet, backend="omics-batch", defaults=DEFAULTS, id_column="nope")


def test_polars_dataframe_and_lazyframe(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"sample": ["a", "b"], "threads": [4, None], "fastq": [["x.fq"], ["y.fq", "z.fq"]], "priority": [None, 9]}
    )
    expected = [
        {"runSettingId": "a", "parameters": {"sample": "a", "threads": 4, "fastq": ["x.fq"]}},
        {"runSettingId": "b", "priority": 9, "parameters": {"sample": "b", "fastq": ["y.fq", "z.fq"]}},
    ]
    assert own_runs(frame) == expected
    assert own_runs(frame.lazy()) == expected
    # A frame is planned to a directory like a file is.
    manifest = planner.plan(frame.lazy(), backend="omics-batch", defaults=DEFAULTS).write(tmp_path / "plan").to_json()
    assert manifest["sheet"]["path"] == "<frame>" and manifest["sheet"]["rows"] == 2 and manifest["runs"] == 2


def test_frame_content_hash_tracks_content() -> None:
    one = planner.plan(pl.DataFrame({"sample": ["a", "b"], "x": ["1", "2"]}), backend="omics-batch", defaults=DEFAULTS)
    same = planner.plan(pl.DataFrame({"sample": ["a", "b"], "x": ["1", "2"]}), backend="omics-batch", defaults=DEFAULTS)
    other = planner.plan(
        pl.DataFrame({"sample": ["a", "b"], "x": ["1", "3"]}), backend="omics-batch", defaults=DEFAULTS
    )
    assert one.sheet.sha256 == same.sheet.sha256 != other.sheet.sha256


def test_duplicate_header_is_a_sheet_error(tmp_path: Path) -> None:
    sheet = tmp_path / "s.csv"
    sheet.write_text("sample,x,x\na,1,2\n", encoding="utf-8")
    with pytest.raises(planner.SheetError, match="'x' appears twice"):
        planner.plan(sheet, backend="omics-batch", defaults=DEFAULTS)


def test_non_utf8_sheet_is_a_sheet_error(tmp_path: Path) -> None:
    sheet = tmp_path / "s.csv"
    sheet.write_bytes("sample,x\nMüller,1\n".encode("latin-1"))
    with pytest.raises(planner.SheetError, match="UTF-8"):
        planner.plan(sheet, backend="omics-batch", defaults=DEFAULTS)


def test_header_with_escaped_quote(tmp_path: Path) -> None:
    # The header is read by the csv module: the quoted cell `"say ""hi"""` names the column 'say "hi"'.
    sheet = tmp_path / "s.csv"
    sheet.write_text('sample,"say ""hi""","a,b"\nS1,1,2\n', encoding="utf-8")
    plan = planner.plan(sheet, backend="omics-batch", defaults=DEFAULTS)
    assert plan.sheet.columns == ["sample", 'say "hi"', "a,b"]
    assert own_runs(sheet) == [{"runSettingId": "S1", "parameters": {"sample": "S1", 'say "hi"': "1", "a,b": "2"}}]


def test_sheet_columns_are_renamed_internally(tmp_path: Path) -> None:
    """The frame holds c0, c1, ... (plus __row); ``source`` maps the sheet's names to them."""
    sheet = write_csv(tmp_path / "s.csv", ["sample", "^x$", "*", "__row"], [["S1", "a", "b", "c"]])
    opened = planner.plan(sheet, backend="omics-batch", defaults=DEFAULTS).sheet
    assert opened.columns == ["sample", "^x$", "*", "__row"]
    assert opened.source == {"sample": "c0", "^x$": "c1", "*": "c2", "__row": "c3"}
    assert opened.frame.collect_schema().names() == ["__row", "c0", "c1", "c2", "c3"]
    assert [opened.name_of(c) for c in ("c0", "c1", "c2", "c3")] == opened.columns


def test_sheet_column_named_like_an_internal_one_keeps_its_values(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "__id"], [["S1", "lims-1"], ["S2", "lims-2"]])
    assert own_runs(sheet) == [
        {"runSettingId": "S1", "parameters": {"sample": "S1", "__id": "lims-1"}},
        {"runSettingId": "S2", "parameters": {"sample": "S2", "__id": "lims-2"}},
    ]


def test_sheet_columns_named_like_the_internal_names_keep_their_values(tmp_path: Path) -> None:
    """Sheet columns called c1, c0 (swapped with the internal names) and __raw__c0 stay themselves."""
    sheet = write_csv(
        tmp_path / "s.csv", ["c1", "sample", "c0", "__raw__c0", "priority"], [["one", "S1", "zero", "raw", "7"]]
    )
    assert own_runs(sheet) == [
        {
            "runSettingId": "S1",
            "priority": 7,
            "parameters": {"c1": "one", "sample": "S1", "c0": "zero", "__raw__c0": "raw"},
        }
    ]


@pytest.mark.parametrize("odd", ["__row", "*"])
def test_column_named_row_or_star_plans_like_any_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], odd: str
) -> None:
    """A column called __row (the internal row number) or * (polars' wildcard) is an ordinary parameter."""
    rows = [["S1", "10", "x1"], ["S2", None, "x2"], ["S3", "30", "x3"]]
    sheet = write_csv(tmp_path / "s.csv", ["sample", odd, "x"], rows)
    defaults = tmp_path / "d.json"
    defaults.write_bytes(orjson.dumps(defaults_for("omics-batch")))
    out = tmp_path / "plan"
    code, stdout, err = run_cli(
        ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults, "--out", out], capsys
    )
    assert code == 0, err
    assert err == ""
    assert stdout.startswith("planned 3 runs of 3 rows")
    manifest = orjson.loads((out / "plan.json").read_bytes())
    (shard,) = manifest["shards"]
    entries = orjson.loads((out / shard["path"]).read_bytes())
    assert entries == [
        {"runSettingId": "S1", "parameters": {"sample": "S1", odd: "10", "x": "x1"}},
        {"runSettingId": "S2", "parameters": {"sample": "S2", "x": "x2"}},
        {"runSettingId": "S3", "parameters": {"sample": "S3", odd: "30", "x": "x3"}},
    ]
    # The sheet's own row numbers are untouched by a column of that name.
    samples = pl.read_parquet(out / "samples.parquet")
    assert samples.select("row", "id").rows() == [(1, "S1"), (2, "S2"), (3, "S3")]


def test_column_named_like_a_regex_keeps_its_own_values(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "^x$", "x"], [["S1", "mine", "other"]])
    assert own_runs(sheet) == [{"runSettingId": "S1", "parameters": {"sample": "S1", "^x$": "mine", "x": "other"}}]


def test_column_named_star_is_a_plain_parameter(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "*", "x"], [["S1", "1", "2"]])
    assert own_runs(sheet) == [{"runSettingId": "S1", "parameters": {"sample": "S1", "*": "1", "x": "2"}}]


def test_regex_and_star_columns_as_fields_and_tags(tmp_path: Path) -> None:
    """Pattern-like names also work behind tag. and param., and beside a routed field."""
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "tag.*", "param.^p$", "priority", "p"],
        [["S1", "t", "mine", "3", "other"], ["S2", None, None, "4", "o2"]],
    )
    assert own_runs(sheet) == [
        {
            "runSettingId": "S1",
            "priority": 3,
            "parameters": {"sample": "S1", "^p$": "mine", "p": "other"},
            "runTags": {"*": "t"},
        },
        {"runSettingId": "S2", "priority": 4, "parameters": {"sample": "S2", "p": "o2"}},
    ]


# ---------------------------------------------------------------- empty strings in typed formats


def test_empty_string_in_a_dataframe_cell_lets_the_default_stand() -> None:
    frame = pl.DataFrame(
        {"sample": ["a", "b"], "reference": ["", "s3://r/mine.fa"], "name": ["", "run-b"], "tag.project": ["", "p-b"]}
    )
    defaults = defaults_for("omics-batch")
    defaults["run"]["name"] = "default-name"
    plan = planner.plan(frame, backend="omics-batch", defaults=defaults)
    merged = [orjson.loads(t) for t in plan.runs(merged=True).get_column("run")]
    base = defaults["run"]
    assert merged[0]["parameters"] == {**base["parameters"], "sample": "a"}  # reference: the default stands
    assert merged[0]["name"] == "default-name"
    assert merged[0]["runTags"] == base["runTags"]
    assert merged[1]["parameters"] == {**base["parameters"], "sample": "b", "reference": "s3://r/mine.fa"}
    assert merged[1]["name"] == "run-b" and merged[1]["runTags"] == {"project": "p-b"}
    # The row's own settings (the shard entries) leave the empty cells out entirely.
    own = [orjson.loads(t) for t in plan.runs(merged=False).get_column("run")]
    assert own[0] == {"runSettingId": "a", "parameters": {"sample": "a"}}


@pytest.mark.parametrize("suffix", [".parquet", ".ndjson"])
def test_empty_string_in_a_parquet_or_ndjson_cell_lets_the_default_stand(tmp_path: Path, suffix: str) -> None:
    frame = pl.DataFrame({"sample": ["a", "b"], "reference": ["", "s3://r/mine.fa"], "outputUri": ["", "s3://o/b/"]})
    sheet = tmp_path / f"s{suffix}"
    if suffix == ".parquet":
        frame.write_parquet(sheet)
    else:
        frame.write_ndjson(sheet)
    defaults = defaults_for("omics-batch")
    runs = [
        orjson.loads(t)
        for t in planner.plan(sheet, backend="omics-batch", defaults=defaults).runs(merged=True).get_column("run")
    ]
    base = defaults["run"]
    assert runs[0]["parameters"] == {**base["parameters"], "sample": "a"}
    assert runs[0]["outputUri"] == base["outputUri"]
    assert runs[1]["parameters"] == {**base["parameters"], "sample": "b", "reference": "s3://r/mine.fa"}
    assert runs[1]["outputUri"] == "s3://o/b/"


def test_empty_string_in_a_required_field_is_unset(tmp_path: Path) -> None:
    """With no default, an empty string in a typed sheet is a missing value, not a value."""
    frame = pl.DataFrame({"sample": ["a", "b"], "outputUri": ["s3://o/a/", ""]})
    defaults = defaults_for("omics-batch")
    defaults["run"].pop("outputUri")
    with pytest.raises(planner.ValidationError) as caught:
        planner.plan(frame, backend="omics-batch", defaults=defaults).runs()
    assert [(p.row, p.id, p.column, p.rule) for p in caught.value.problems] == [(2, "b", "outputUri", "required")]


@pytest.mark.parametrize("source", ["csv", "frame"])
def test_column_name_containing_duplicated_is_an_ordinary_column(tmp_path: Path, source: str) -> None:
    sheet: Any = write_csv(tmp_path / "s.csv", ["sample", "reads_duplicated_0"], [["S1", "1"]])
    if source == "frame":
        sheet = pl.DataFrame({"sample": ["S1"], "reads_duplicated_0": ["1"]})
    assert own_runs(sheet) == [{"runSettingId": "S1", "parameters": {"sample": "S1", "reads_duplicated_0": "1"}}]


# Nesting depth: orjson writes at most 254 levels, and polars 2.1 crashes reading NDJSON nested a few hundred deep.


def _deep_object(levels: int) -> bytes:
    return b'{"a":' * (levels - 1) + b"[1]" + b"}" * (levels - 1)  # ``levels`` levels of containers


def test_ndjson_value_nested_254_levels_plans_255_is_refused_naming_the_line(tmp_path: Path) -> None:
    fine, deep = tmp_path / "fine.ndjson", tmp_path / "deep.ndjson"
    fine.write_bytes(b'{"sample":"S1","x":' + _deep_object(254) + b"}\n")
    (run,) = own_runs(fine)
    assert orjson.dumps(run["parameters"]["x"]).count(b"{") == 253  # the value arrived whole
    deep.write_bytes(b'{"sample":"S0","x":{"a":[1]}}\n' * 2 + b'{"sample":"S1","x":' + _deep_object(255) + b"}\n")
    with pytest.raises(planner.SheetError, match=r"deep\.ndjson: line 3: JSON nested deeper than 254 levels"):
        planner.plan(deep, backend="omics-batch", defaults=DEFAULTS)


def test_ndjson_brackets_inside_strings_are_not_nesting(tmp_path: Path) -> None:
    """The cheap scan counts every '{' and '['; a line it suspects is measured exactly, strings skipped."""
    sheet = tmp_path / "s.ndjson"
    text = "{[" * 400 + '\\"' + "[" * 100
    sheet.write_bytes(orjson.dumps({"sample": "S1", "note": text}) + b"\n")
    assert own_runs(sheet) == [{"runSettingId": "S1", "parameters": {"sample": "S1", "note": text}}]


def test_ndjson_depth_scan_follows_a_line_across_chunks() -> None:
    from planner.core.sheet import _DepthScan

    scan = _DepthScan()
    scan.feed(b'{"a":1}\n' * 1000 + b"[" * 200)  # a line still open at the end of a chunk
    assert not scan.suspect
    scan.feed(b"[" * 56 + b"]" * 256 + b"\n")  # 256 openers in one line, over two chunks
    assert scan.suspect
    fresh = _DepthScan()
    fresh.feed(b"[" * 200 + b"\n")
    fresh.feed(b"[" * 200 + b"\n")  # two lines of 200: each within the limit
    assert not fresh.suspect


@pytest.mark.parametrize("depth", [254, 255, 1025])
def test_json_cell_depth_limit(depth: int, tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "payload"], [["S1", "[" * depth + "]" * depth]])
    kw: dict[str, Any] = {"defaults": {**DEFAULTS, "sheet": {"types": {"payload": "json"}}}}
    if depth <= 254:
        assert own_runs(sheet, **kw)[0]["parameters"]["payload"] == orjson.loads("[" * depth + "]" * depth)
        return
    with pytest.raises(planner.ValidationError) as caught:
        own_runs(sheet, **kw)
    (problem,) = caught.value.problems
    assert (problem.row, problem.id, problem.column, problem.rule) == (1, "S1", "payload", "max-depth")
    assert "nested deeper than 254 levels" in problem.message


def test_invalid_json_cell_is_still_reported_as_invalid(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "payload"], [["S1", "[[1]"]])
    with pytest.raises(planner.ValidationError) as caught:
        own_runs(sheet, defaults={**DEFAULTS, "sheet": {"types": {"payload": "json"}}})
    (problem,) = caught.value.problems
    assert problem.rule == "type" and "is not valid JSON" in problem.message


def test_a_named_pipe_is_refused_without_being_opened(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "s.csv"
    os.mkfifo(fifo)  # opening it would block: nobody writes to it
    with pytest.raises(planner.SheetError, match=r"s\.csv: is a named pipe, not a regular file"):
        planner.plan(fifo, backend="omics-batch", defaults=DEFAULTS)
    (tmp_path / "sheets").mkdir()
    write_csv(tmp_path / "sheets" / "a.csv", ["sample"], [["S1"]])
    os.mkfifo(tmp_path / "sheets" / "b.csv")
    with pytest.raises(planner.SheetError, match=r"b\.csv\): is a named pipe"):
        planner.plan(str(tmp_path / "sheets" / "*.csv"), backend="omics-batch", defaults=DEFAULTS)


def test_a_header_that_starts_like_a_zlib_stream_is_refused_not_a_crash(tmp_path: Path, capsys: Any) -> None:
    """polars decompresses a CSV starting with a zlib header ("x^" is one) and crashes on plain text
    that only starts like one (found by the merge properties under hypothesis 6.100)."""
    sheet = tmp_path / "s.csv"
    sheet.write_bytes(b"x^0,sample\n1,A\n")
    out_dir = tmp_path / "plan"
    defaults = tmp_path / "defaults.json"
    defaults.write_bytes(orjson.dumps(DEFAULTS))
    code, out, err = run_cli(
        ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults, "--out", out_dir], capsys
    )
    assert code == 2, err
    assert "starts with 'x^'" in err and "rename its first column" in err
    assert out == "" and "Traceback" not in err and not out_dir.exists()
    # the way out it names works: the same sheet with a UTF-8 BOM plans
    sheet.write_bytes(b"\xef\xbb\xbfx^0,sample\n1,A\n")
    assert [run["runSettingId"] for run in own_runs(sheet)] == ["A"]
