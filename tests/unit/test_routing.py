"""Column routing per backend, and --group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

import planner
from helpers import SAMPLE_SHEETS, defaults_for, write_csv


def runs_of(sheet: Any, backend: str, merged: bool = True, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("defaults", defaults_for(backend))
    return [orjson.loads(t) for t in planner.plan(sheet, backend=backend, **kw).runs(merged=merged).get_column("run")]


def test_omics_batch_routes_fields_tags_and_parameters(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["strandedness", "sample", "tag.cohort", "priority", "param.name", "name", "outputUri", "logLevel"],
        [["reverse", "S1", "disc", "5", "pname", "run-S1", "s3://o/S1/", "ALL"]],
    )
    (run,) = runs_of(sheet, "omics-batch", merged=False)
    # Key order: id, fields in sheet order, then parameters, then runTags, each in sheet order.
    assert list(run) == ["runSettingId", "priority", "name", "outputUri", "parameters", "runTags"]
    assert run == {
        "runSettingId": "S1",
        "priority": 5,
        "name": "run-S1",
        "outputUri": "s3://o/S1/",
        # logLevel is a defaultRunSetting field, not a per-run one: a parameter here.
        "parameters": {"strandedness": "reverse", "name": "pname", "logLevel": "ALL"},
        "runTags": {"cohort": "disc"},
    }


def test_omics_run_every_scalar_startrun_field_is_a_column(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample_id", "logLevel", "storageCapacity", "cacheId", "tag.k", "x"], [["a", "ERROR", "1200", "42", "v", "1"]])
    (run,) = runs_of(sheet, "omics-run")
    base = defaults_for("omics-run")["run"]
    assert run == {**base, "parameters": {**base["parameters"], "x": "1"}, "tags": {**base["tags"], "k": "v"}, "logLevel": "ERROR", "storageCapacity": 1200, "cacheId": "42"}


def test_glue_parameters_are_dash_dash_string_arguments(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "input_path", "param.threads", "NumberOfWorkers", "input_format"], [["a", "s3://in/a/", "8", "4", "csv"]])
    document = defaults_for("glue", sheet={"types": {"param.threads": "int"}})
    (run,) = runs_of(sheet, "glue", defaults=document)
    assert run["NumberOfWorkers"] == 4
    # The row's --input_format replaces the default's; numbers become text.
    assert run["Arguments"] == {"--input_format": "csv", "--input_path": "s3://in/a/", "--threads": "8"}


@pytest.mark.xfail(
    strict=True,
    reason="DOC/CODE MISMATCH: sample_sheets/README.md says for glue_samples.csv that 'input_path, output_path "
    "(and sample) become Arguments --input_path, ...', but planner/routing.py route_columns skips the id column "
    "for every backend, so a Glue run (and an omics-run StartRun) carries no sample id at all",
)
def test_glue_run_carries_the_sample_id_as_an_argument(tmp_path: Path) -> None:
    (run,) = runs_of(SAMPLE_SHEETS / "glue_samples.csv", "glue", defaults=SAMPLE_SHEETS / "glue_defaults.toml")[:1]
    assert run["Arguments"]["--sample"] == "CTRL_REP1"


def test_polly_infra_columns_merge_into_config(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "memory", "storage", "fastq_1"], [["a", "32", None, "r1"], ["b", None, "200", "r2"]])
    runs = runs_of(sheet, "polly")
    assert runs == [
        {"parameters": {"genome": "GRCh38", "fastq_1": "r1"}, "config": {"infra": {"cpu": 2, "memory": 32}}, "name": "a"},
        {"parameters": {"genome": "GRCh38", "fastq_1": "r2"}, "config": {"infra": {"cpu": 2, "memory": 8, "storage": 200}}, "name": "b"},
    ]


def test_polly_infra_bad_values(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "cpu"], [["a", "0"], ["b", "two"], ["c", "4"]])
    with pytest.raises(planner.ValidationError) as caught:
        runs_of(sheet, "polly")
    assert sorted((p.row, p.column, p.rule) for p in caught.value.problems) == [(1, "cpu", "min"), (2, "cpu", "type")]


def test_batch_parameters_are_merged_per_child(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "reference", "bam"], [["a", "s3://r/other.fa", "x.bam"], ["b", None, "y.bam"]])
    runs = runs_of(sheet, "batch")
    assert [r["parameters"] for r in runs] == [{"reference": "s3://r/other.fa", "bam": "x.bam"}, {"reference": "s3://refs/hg38.fa", "bam": "y.bam"}]
    assert [r["id"] for r in runs] == ["a", "b"]


def test_group_lanes_example(tmp_path: Path) -> None:
    sheet = SAMPLE_SHEETS / "omics_batch_lanes.csv"
    rows = pl.read_csv(sheet, infer_schema=False)
    runs = runs_of(sheet, "omics-batch", merged=False, defaults=SAMPLE_SHEETS / "omics_batch_defaults.toml", group=True, list_columns=["fastq_1", "fastq_2"])
    expected = rows.group_by("sample", maintain_order=True).agg("fastq_1", "fastq_2", pl.col("strandedness").first())
    assert [r["runSettingId"] for r in runs] == expected.get_column("sample").to_list()
    for run, record in zip(runs, expected.iter_rows(named=True)):
        assert run["parameters"] == {"fastq_1": record["fastq_1"], "fastq_2": record["fastq_2"], "strandedness": record["strandedness"]}


def test_group_single_row_sample_still_gets_lists(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "fastq_1", "lane"], [["a", "a1", "L1"], ["b", "b1", "L1"], ["a", "a2", "L1"]])
    runs = runs_of(sheet, "omics-batch", merged=False, group=True, list_columns=["fastq_1"])
    assert runs == [
        {"runSettingId": "a", "parameters": {"fastq_1": ["a1", "a2"], "lane": "L1"}},
        {"runSettingId": "b", "parameters": {"fastq_1": ["b1"], "lane": "L1"}},
    ]


def test_group_without_repeats_is_harmless(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["a", "1"], ["b", "2"]])
    assert runs_of(sheet, "omics-batch", merged=False, group=True) == [
        {"runSettingId": "a", "parameters": {"x": "1"}},
        {"runSettingId": "b", "parameters": {"x": "2"}},
    ]


def test_group_field_columns_must_agree(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "fastq_1", "priority"], [["a", "a1", "1"], ["a", "a2", "2"], ["b", "b1", "3"]])
    with pytest.raises(planner.ValidationError) as caught:
        runs_of(sheet, "omics-batch", group=True, list_columns=["fastq_1"])
    (problem,) = caught.value.problems
    assert (problem.row, problem.id, problem.column, problem.rule) == (1, "a", "priority", "group-agree")
    assert "rows 1, 2" in problem.message


def test_group_skip_invalid_drops_only_the_disagreeing_sample(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "fastq_1", "strandedness"], [["a", "a1", "reverse"], ["a", "a2", "forward"], ["b", "b1", "reverse"]])
    manifest = planner.plan(sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), group=True, list_columns=["fastq_1"], skip_invalid=True).write(tmp_path / "plan")
    assert manifest["runs"] == 1
    entries = orjson.loads((tmp_path / "plan" / manifest["shards"][0]["path"]).read_bytes())
    assert [e["runSettingId"] for e in entries] == ["b"]
    rejected = pl.read_csv(tmp_path / "plan" / "rejected.csv", infer_schema=False)
    assert set(rejected.get_column("id").to_list()) == {"a"}
