"""Real nf-core sample sheets (../shared/real_sheets/ beside the repo; skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from helpers import REAL_SHEETS, assert_clean_stderr, assert_nothing_written, defaults_for, run_cli, write_defaults

import planner

RNASEQ = REAL_SHEETS / "rnaseq_samplesheet_test.csv"
SAREK = REAL_SHEETS / "sarek_germline_small.csv"

pytestmark = pytest.mark.skipif(not REAL_SHEETS.is_dir(), reason=f"real sheets not found at {REAL_SHEETS}")


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path.name} not found")
    return path


@pytest.fixture
def defaults_file(tmp_path: Path) -> Path:
    return write_defaults(tmp_path / "defaults.toml", defaults_for("omics-batch"))


def test_rnaseq_sheet_with_group_gathers_lanes_into_lists(
    tmp_path: Path, defaults_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = need(RNASEQ)
    rows = pl.read_csv(sheet, infer_schema=False)
    out = tmp_path / "plan"
    code, stdout, err = run_cli(
        [
            "plan",
            sheet,
            "--backend",
            "omics-batch",
            "--defaults",
            defaults_file,
            "--out",
            out,
            "--group",
            "--list-columns",
            "fastq_1,fastq_2",
        ],
        capsys,
    )
    assert code == 0, err
    manifest = planner.read_plan(out).to_json()
    samples = rows.get_column("sample").unique(maintain_order=True).to_list()
    assert manifest["runs"] == len(samples) < rows.height
    # The summary counts the sheet's rows, not the grouped samples.
    assert stdout.splitlines()[0] == f"planned {len(samples)} runs of {rows.height} rows for omics-batch in {out}"
    assert manifest["sheet"]["rows"] == rows.height
    entries = [e for s in manifest["shards"] for e in orjson.loads((out / s["path"]).read_bytes())]
    assert [e["runSettingId"] for e in entries] == samples
    for entry in entries:
        mine = rows.filter(pl.col("sample") == entry["runSettingId"])
        params = entry["parameters"]
        # fastq_1: a list with one entry per row of the sample, in sheet order (a list even for one row).
        assert params["fastq_1"] == mine.get_column("fastq_1").to_list()
        # fastq_2: every cell in order, empty ones as null, so fastq_1[i] and fastq_2[i] are one lane;
        # a sample with none (single-end) has no fastq_2 at all.
        if mine.get_column("fastq_2").null_count() < mine.height:
            assert params["fastq_2"] == mine.get_column("fastq_2").to_list()
            assert len(params["fastq_2"]) == len(params["fastq_1"])
        else:
            assert "fastq_2" not in params
        assert params["sample"] == entry["runSettingId"]  # the id column is a parameter too
        assert params["strandedness"] == mine.get_column("strandedness")[0]
    single_end = [e for e in entries if "fastq_2" not in e["parameters"]]
    assert single_end, "the test sheet has single-end samples"
    samples_pq = pl.read_parquet(out / "samples.parquet")
    # Each sample is mapped once, at its first row.
    firsts = rows.with_row_index("row", offset=1).group_by("sample", maintain_order=True).agg(pl.col("row").first())
    assert samples_pq.select("id", "row").rows() == firsts.select("sample", pl.col("row").cast(pl.Int64)).rows()


def test_group_keeps_the_sheet_row_count(tmp_path: Path) -> None:
    sheet = need(RNASEQ)
    rows = pl.read_csv(sheet, infer_schema=False)
    plan = planner.plan(
        sheet,
        backend="omics-batch",
        defaults=defaults_for("omics-batch"),
        group=True,
        list_columns=["fastq_1", "fastq_2"],
    )
    manifest = plan.write(tmp_path / "plan").to_json()
    assert manifest["sheet"]["rows"] == rows.height
    assert manifest["runs"] == rows.get_column("sample").n_unique() < rows.height


def test_rnaseq_sheet_without_group_names_repeated_samples_and_rows(
    tmp_path: Path, defaults_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = need(RNASEQ)
    rows = pl.read_csv(sheet, infer_schema=False).with_row_index("row", offset=1)
    repeated = rows.filter(pl.col("sample").is_duplicated()).group_by("sample", maintain_order=True).agg(pl.col("row"))
    assert repeated.height >= 1
    out = tmp_path / "plan"
    code, _, err = run_cli(
        ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults_file, "--out", out], capsys
    )
    assert code == 2
    assert_clean_stderr(err)
    for sample, where in repeated.iter_rows():
        line = next(line for line in err.splitlines() if f"'{sample}'" in line)
        assert "rows " + ", ".join(map(str, where)) in line
        assert "--group" in line
    assert f"{repeated.height} problem" in err
    assert_nothing_written(out)


def test_rnaseq_sheet_with_group_rejects_disagreeing_columns(tmp_path: Path) -> None:
    sheet = need(RNASEQ)
    rows = pl.read_csv(sheet, infer_schema=False)
    first = rows.get_column("sample")[0]
    # Make one lane of the first sample disagree on strandedness.
    changed = (
        rows.with_row_index()
        .with_columns(
            pl.when((pl.col("sample") == first) & (pl.col("index") == 0))
            .then(pl.lit("forward"))
            .otherwise(pl.col("strandedness"))
            .alias("strandedness")
        )
        .drop("index")
    )
    path = tmp_path / "changed.csv"
    changed.write_csv(path)
    plan = planner.plan(
        path,
        backend="omics-batch",
        defaults=defaults_for("omics-batch"),
        group=True,
        list_columns=["fastq_1", "fastq_2"],
    )
    with pytest.raises(planner.ValidationError) as caught:
        plan.runs()
    (problem,) = caught.value.problems
    assert (problem.id, problem.column, problem.rule) == (first, "strandedness", "group-agree")
    assert "forward" in problem.value


def test_sarek_sheet_plans_with_its_id_column(
    tmp_path: Path, defaults_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = need(SAREK)
    rows = pl.read_csv(sheet, infer_schema=False)
    assert "id" in rows.columns and "sample" not in rows.columns and "sample_id" not in rows.columns
    for extra in ([], ["--id-column", "id"]):
        out = tmp_path / f"plan{len(extra)}"
        code, _, err = run_cli(
            ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults_file, "--out", out, *extra], capsys
        )
        assert code == 0, err
        manifest = planner.read_plan(out).to_json()
        assert manifest["sheet"]["id_column"] == "id"
        assert manifest["runs"] == rows.height
        (shard,) = manifest["shards"]
        assert shard["mode"] == "inline"
        entries = orjson.loads((out / shard["path"]).read_bytes())
        assert [e["runSettingId"] for e in entries] == rows.get_column("id").to_list()
        # Every column is a parameter under its own name, the id column "id" included.
        for entry, record in zip(entries, rows.iter_rows(named=True), strict=False):
            assert entry["parameters"] == {c: record[c] for c in rows.columns}
            assert list(entry["parameters"]) == rows.columns


@pytest.mark.parametrize("backend", ["omics-run", "batch", "glue", "polly"])
def test_sarek_sheet_plans_for_every_backend(tmp_path: Path, backend: str) -> None:
    sheet = need(SAREK)
    rows = pl.read_csv(sheet, infer_schema=False)
    manifest = planner.plan(sheet, backend=backend, defaults=defaults_for(backend)).write(tmp_path / "plan").to_json()
    assert manifest["runs"] == rows.height
    samples = pl.read_parquet(tmp_path / "plan" / "samples.parquet")
    assert samples.get_column("id").to_list() == rows.get_column("id").to_list()
