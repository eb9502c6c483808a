"""Column routing per backend, and --group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import SAMPLE_SHEETS, defaults_for, run_cli, write_csv, write_defaults

import planner


def runs_of(sheet: Any, backend: str, merged: bool = True, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("defaults", defaults_for(backend))
    return [orjson.loads(t) for t in planner.plan(sheet, backend=backend, **kw).runs(merged=merged).get_column("run")]


def test_omics_batch_routes_fields_tags_and_parameters(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["strandedness", "sample", "tag.cohort", "priority", "param.name", "name", "outputUri", "param.logLevel"],
        [["reverse", "S1", "disc", "5", "pname", "run-S1", "s3://o/S1/", "ALL"]],
    )
    (run,) = runs_of(sheet, "omics-batch", merged=False)
    # Key order: id, fields in sheet order, then parameters, then runTags, each in sheet order.
    assert list(run) == ["runSettingId", "priority", "name", "outputUri", "parameters", "runTags"]
    # The id column is routed like any other: a parameter under its own name, in sheet order.
    assert list(run["parameters"]) == ["strandedness", "sample", "name", "logLevel"]
    assert run == {
        "runSettingId": "S1",
        "priority": 5,
        "name": "run-S1",
        "outputUri": "s3://o/S1/",
        # param. makes a parameter of a name that is also a request field (logLevel) or a per-run one (name).
        "parameters": {"strandedness": "reverse", "sample": "S1", "name": "pname", "logLevel": "ALL"},
        "runTags": {"cohort": "disc"},
    }


@pytest.mark.parametrize(
    ("backend", "column"),
    [
        ("omics-batch", "logLevel"),  # a defaultRunSetting field: the same for every run of a batch
        ("omics-batch", "workflowVersionName"),
        ("omics-batch", "engineSettings"),  # an inlineSettings member, but a map, not one cell's value
        ("omics-run", "engineSettings"),
        ("batch", "jobQueue"),  # the array job's request, shared by its children
        ("batch", "timeout"),
        ("glue", "NotificationProperty"),
        ("polly", "priority"),  # the Polly run's, not a job's
    ],
)
def test_a_column_naming_a_field_no_run_can_set_is_refused_with_the_fix(
    tmp_path: Path, backend: str, column: str
) -> None:
    """Was a bug: such a column silently became a workflow parameter of that name, and the field kept its default."""
    sheet = write_csv(tmp_path / "s.csv", ["sample", column], [["S1", "x"]])
    with pytest.raises(planner.SheetError) as caught:
        planner.plan(sheet, backend=backend, defaults=defaults_for(backend)).runs()
    message = str(caught.value)
    assert f"column {column!r}" in message and "set it in [run]" in message and f"param.{column}" in message


def test_omics_run_every_scalar_startrun_field_is_a_column(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample_id", "logLevel", "storageCapacity", "cacheId", "tag.k", "x"],
        [["a", "ERROR", "1200", "42", "v", "1"]],
    )
    (run,) = runs_of(sheet, "omics-run")
    base = defaults_for("omics-run")["run"]
    # StartRun has no id field: the sample id reaches the run as the parameter sample_id.
    assert run == {
        **base,
        "parameters": {**base["parameters"], "sample_id": "a", "x": "1"},
        "tags": {**base["tags"], "k": "v"},
        "logLevel": "ERROR",
        "storageCapacity": 1200,
        "cacheId": "42",
    }


def test_glue_parameters_are_dash_dash_string_arguments(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "input_path", "param.threads", "NumberOfWorkers", "input_format"],
        [["a", "s3://in/a/", "8", "4", "csv"]],
    )
    document = defaults_for("glue", sheet={"types": {"param.threads": "int"}})
    (run,) = runs_of(sheet, "glue", defaults=document)
    assert run["NumberOfWorkers"] == 4
    # The row's --input_format replaces the default's; numbers become text.
    assert run["Arguments"] == {
        "--input_format": "csv",
        "--sample": "a",
        "--input_path": "s3://in/a/",
        "--threads": "8",
    }
    assert list(run["Arguments"]) == ["--input_format", "--sample", "--input_path", "--threads"]


def test_glue_run_carries_the_sample_id_as_an_argument(tmp_path: Path) -> None:
    # sample_sheets/README.md: input_path, output_path (and sample) become Arguments --input_path, ...
    runs = runs_of(SAMPLE_SHEETS / "glue_samples.csv", "glue", defaults=SAMPLE_SHEETS / "glue_defaults.toml")
    ids = pl.read_csv(SAMPLE_SHEETS / "glue_samples.csv", infer_schema=False).get_column("sample").to_list()
    assert runs[0]["Arguments"]["--sample"] == "CTRL_REP1"
    assert [r["Arguments"]["--sample"] for r in runs] == ids


def test_polly_infra_columns_merge_into_config(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "memory", "storage", "fastq_1"],
        [["a", "32", None, "r1"], ["b", None, "200", "r2"]],
    )
    runs = runs_of(sheet, "polly")
    assert runs == [
        {
            "parameters": {"genome": "GRCh38", "sample": "a", "fastq_1": "r1"},
            "config": {"infra": {"cpu": 2, "memory": 32}},
            "name": "a",
        },
        {
            "parameters": {"genome": "GRCh38", "sample": "b", "fastq_1": "r2"},
            "config": {"infra": {"cpu": 2, "memory": 8, "storage": 200}},
            "name": "b",
        },
    ]


def test_polly_infra_bad_values(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "cpu"], [["a", "0"], ["b", "two"], ["c", "4"]])
    with pytest.raises(planner.ValidationError) as caught:
        runs_of(sheet, "polly")
    assert sorted((p.row, p.column, p.rule) for p in caught.value.problems) == [(1, "cpu", "min"), (2, "cpu", "type")]


def test_batch_parameters_are_merged_per_child(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv", ["sample", "reference", "bam"], [["a", "s3://r/other.fa", "x.bam"], ["b", None, "y.bam"]]
    )
    runs = runs_of(sheet, "batch")
    assert [r["parameters"] for r in runs] == [
        {"reference": "s3://r/other.fa", "sample": "a", "bam": "x.bam"},
        {"reference": "s3://refs/hg38.fa", "sample": "b", "bam": "y.bam"},
    ]
    assert [r["id"] for r in runs] == ["a", "b"]


def test_group_lanes_example(tmp_path: Path) -> None:
    sheet = SAMPLE_SHEETS / "omics_batch_lanes.csv"
    rows = pl.read_csv(sheet, infer_schema=False)
    runs = runs_of(
        sheet,
        "omics-batch",
        merged=False,
        defaults=SAMPLE_SHEETS / "omics_batch_defaults.toml",
        group=True,
        list_columns=["fastq_1", "fastq_2"],
    )
    expected = rows.group_by("sample", maintain_order=True).agg("fastq_1", "fastq_2", pl.col("strandedness").first())
    assert [r["runSettingId"] for r in runs] == expected.get_column("sample").to_list()
    for run, record in zip(runs, expected.iter_rows(named=True), strict=False):
        assert run["parameters"] == {
            "sample": record["sample"],
            "fastq_1": record["fastq_1"],
            "fastq_2": record["fastq_2"],
            "strandedness": record["strandedness"],
        }


def test_group_single_row_sample_still_gets_lists(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv", ["sample", "fastq_1", "lane"], [["a", "a1", "L1"], ["b", "b1", "L1"], ["a", "a2", "L1"]]
    )
    runs = runs_of(sheet, "omics-batch", merged=False, group=True, list_columns=["fastq_1"])
    assert runs == [
        {"runSettingId": "a", "parameters": {"sample": "a", "fastq_1": ["a1", "a2"], "lane": "L1"}},
        {"runSettingId": "b", "parameters": {"sample": "b", "fastq_1": ["b1"], "lane": "L1"}},
    ]


def test_group_without_repeats_is_harmless(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["a", "1"], ["b", "2"]])
    assert runs_of(sheet, "omics-batch", merged=False, group=True) == [
        {"runSettingId": "a", "parameters": {"sample": "a", "x": "1"}},
        {"runSettingId": "b", "parameters": {"sample": "b", "x": "2"}},
    ]


def test_group_field_columns_must_agree(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv", ["sample", "fastq_1", "priority"], [["a", "a1", "1"], ["a", "a2", "2"], ["b", "b1", "3"]]
    )
    with pytest.raises(planner.ValidationError) as caught:
        runs_of(sheet, "omics-batch", group=True, list_columns=["fastq_1"])
    (problem,) = caught.value.problems
    assert (problem.row, problem.id, problem.column, problem.rule) == (1, "a", "priority", "group-agree")
    assert "rows 1, 2" in problem.message


def test_group_skip_invalid_drops_only_the_disagreeing_sample(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "fastq_1", "strandedness"],
        [["a", "a1", "reverse"], ["a", "a2", "forward"], ["b", "b1", "reverse"]],
    )
    manifest = (
        planner.plan(
            sheet,
            backend="omics-batch",
            defaults=defaults_for("omics-batch"),
            group=True,
            list_columns=["fastq_1"],
            skip_invalid=True,
        )
        .write(tmp_path / "plan")
        .to_json()
    )
    assert manifest["runs"] == 1
    entries = orjson.loads((tmp_path / "plan" / manifest["shards"][0]["path"]).read_bytes())
    assert [e["runSettingId"] for e in entries] == ["b"]
    rejected = pl.read_csv(tmp_path / "plan" / "rejected.csv", infer_schema=False)
    assert set(rejected.get_column("id").to_list()) == {"a"}


# ---------------------------------------------------------------- the id column is routed like any other


def test_route_columns_routes_every_column_with_its_frame_name() -> None:
    from planner.backends import get_backend
    from planner.core.routing import Route, route_columns

    spec = get_backend("omics-batch")
    routes = route_columns(
        ["sample", "priority", "tag.t", "param.p", "*"],
        spec,
        {"sample": "c0", "priority": "c1", "tag.t": "c2", "param.p": "c3", "*": "c4"},
    )
    assert [r.column for r in routes] == ["sample", "priority", "tag.t", "param.p", "*"]
    assert [r.source for r in routes] == ["c0", "c1", "c2", "c3", "c4"]
    assert [(r.kind, r.path) for r in routes] == [
        ("parameter", ("parameters", "sample")),
        ("field", ("priority",)),
        ("tag", ("runTags", "t")),
        ("parameter", ("parameters", "p")),
        ("parameter", ("parameters", "*")),
    ]
    assert [f.name for f in Route.__dataclass_fields__.values()][:2] == ["column", "source"]
    # Without ``source`` a column's frame name is its own name.
    assert [r.source for r in route_columns(["sample", "x"], spec)] == ["sample", "x"]


@pytest.mark.parametrize(
    ("backend", "where"),
    [
        ("omics-batch", ("parameters", "sample")),
        ("omics-run", ("parameters", "sample")),
        ("batch", ("parameters", "sample")),
        ("glue", ("Arguments", "--sample")),
        ("polly", ("parameters", "sample")),
    ],
)
def test_every_backend_gets_the_sample_id_as_a_parameter(tmp_path: Path, backend: str, where: tuple[str, str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["S1", "1"], ["S2", "2"]])
    runs = runs_of(sheet, backend)
    assert [r[where[0]][where[1]] for r in runs] == ["S1", "S2"]
    id_field = {"omics-batch": "runSettingId", "batch": "id", "polly": "name"}.get(backend)
    if id_field:
        assert [r[id_field] for r in runs] == ["S1", "S2"]


def test_id_column_named_like_a_per_run_field_sets_that_field(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["name", "x"], [["run-1", "a"], ["run-2", None]])
    runs = runs_of(sheet, "omics-batch", merged=False, id_column="name")
    assert runs == [
        {"runSettingId": "run-1", "name": "run-1", "parameters": {"x": "a"}},
        {"runSettingId": "run-2", "name": "run-2"},
    ]
    # Its field rules apply to it, as to any field column.
    bad = write_csv(tmp_path / "bad.csv", ["name"], [["ok"], ["n" * 129]])
    with pytest.raises(planner.ValidationError) as caught:
        runs_of(bad, "omics-batch", id_column="name")
    assert {(p.row, p.column, p.rule) for p in caught.value.problems} == {(2, "name", "max")}


def test_id_column_named_like_an_omics_run_field(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["name", "x"], [["HG001", "1"]])
    (run,) = runs_of(sheet, "omics-run", id_column="name")
    base = defaults_for("omics-run")["run"]
    assert run == {**base, "name": "HG001", "parameters": {**base["parameters"], "x": "1"}}


# ---------------------------------------------------------------- --group: lists stay aligned lane by lane


def test_group_mixed_paired_and_single_end_lanes_stay_aligned(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "fastq_1", "fastq_2", "strandedness"],
        [
            ["a", "a_L1_R1", "x", "reverse"],
            ["b", "b_L1_R1", None, "reverse"],
            ["a", "a_L2_R1", None, "reverse"],
            ["b", "b_L2_R1", None, "reverse"],
            ["c", "c_L1_R1", None, "reverse"],
            ["c", "c_L2_R1", "c_L2_R2", "reverse"],
        ],
    )
    runs = runs_of(sheet, "omics-batch", merged=False, group=True, list_columns=["fastq_1", "fastq_2"])
    assert runs == [
        # fastq_1[i] and fastq_2[i] describe the same lane: the single-end lane keeps its null.
        {
            "runSettingId": "a",
            "parameters": {
                "sample": "a",
                "fastq_1": ["a_L1_R1", "a_L2_R1"],
                "fastq_2": ["x", None],
                "strandedness": "reverse",
            },
        },
        # No lane of b has a fastq_2: the list column is unset, not [null, null].
        {
            "runSettingId": "b",
            "parameters": {"sample": "b", "fastq_1": ["b_L1_R1", "b_L2_R1"], "strandedness": "reverse"},
        },
        {
            "runSettingId": "c",
            "parameters": {
                "sample": "c",
                "fastq_1": ["c_L1_R1", "c_L2_R1"],
                "fastq_2": [None, "c_L2_R2"],
                "strandedness": "reverse",
            },
        },
    ]


def test_group_mixed_lanes_in_the_merged_view_and_the_plan(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv", ["sample", "fastq_1", "fastq_2"], [["a", "r1", "x"], ["a", "r1b", None], ["b", "s1", None]]
    )
    document = defaults_for("omics-batch")
    document["run"]["parameters"]["fastq_2"] = ["default"]
    merged = runs_of(sheet, "omics-batch", defaults=document, group=True, list_columns=["fastq_1", "fastq_2"])
    assert merged[0]["parameters"]["fastq_2"] == ["x", None]
    assert merged[1]["parameters"]["fastq_2"] == ["default"]  # unset for b: the default stands
    manifest = (
        planner.plan(sheet, backend="omics-batch", defaults=document, group=True, list_columns=["fastq_1", "fastq_2"])
        .write(tmp_path / "plan")
        .to_json()
    )
    assert manifest["runs"] == 2 and manifest["sheet"]["rows"] == 3
    entries = orjson.loads((tmp_path / "plan" / manifest["shards"][0]["path"]).read_bytes())
    assert entries[0]["parameters"] == {"sample": "a", "fastq_1": ["r1", "r1b"], "fastq_2": ["x", None]}
    assert entries[1]["parameters"] == {"sample": "b", "fastq_1": ["s1"]}


def test_group_list_of_one_row_with_a_null_cell_is_unset(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "fastq_1", "fastq_2"], [["a", "r1", None], ["b", "s1", "s2"]])
    runs = runs_of(sheet, "polly", group=True, list_columns=["fastq_1", "fastq_2"])
    base = defaults_for("polly")["run"]
    assert [r["parameters"] for r in runs] == [
        {**base["parameters"], "sample": "a", "fastq_1": ["r1"]},
        {**base["parameters"], "sample": "b", "fastq_1": ["s1"], "fastq_2": ["s2"]},
    ]
    assert [r["name"] for r in runs] == ["a", "b"]


def test_id_column_and_a_param_column_of_the_same_key_collide(tmp_path: Path) -> None:
    """The id column now sets parameters.<its name>, so param.<its name> would set it twice."""
    sheet = write_csv(tmp_path / "s.csv", ["sample", "param.sample"], [["a", "other"]])
    with pytest.raises(planner.SheetError, match=r"columns 'sample' and 'param.sample' both set parameters\.sample"):
        runs_of(sheet, "omics-batch")


def test_glue_sheet_column_with_the_reserved_prefix_is_refused_at_plan_time(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "planner-run-key"], [["a", "x"]])
    try:
        runs_of(sheet, "glue")
    except planner.ValidationError as caught:
        assert [(p.column, p.rule) for p in caught.problems] == [("header 'planner-run-key'", "reserved")]
    else:
        raise AssertionError("a sheet column routed to --planner-run-key was planned")


def test_glue_sheet_column_with_a_hyphen_is_refused_at_plan_time(tmp_path: Path, capsys: Any) -> None:
    """AWS Glue, "Accessing parameters using getResolvedOptions": "The arguments use only underscores, not
    hyphens. Your arguments need to follow this convention to be resolved." A column read-group would become
    --read-group, which the job's script cannot read: exit 2, naming the column and the fix."""
    sheet = write_csv(tmp_path / "s.csv", ["sample", "read-group", "param.lane-id", "lane_id"], [["a", "rg", "1", "1"]])
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("glue"))
    code, out, err = run_cli(
        ["plan", sheet, "--backend", "glue", "--defaults", defaults, "--out", tmp_path / "plan"], capsys
    )
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert any("'read-group'" in line and "--read_group" in line and "getResolvedOptions" in line for line in lines)
    assert any("'param.lane-id'" in line and "--lane_id" in line for line in lines)
    assert not any("'lane_id'" in line for line in lines)
    assert "Traceback" not in err and not (tmp_path / "plan").exists()
