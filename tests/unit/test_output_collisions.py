"""Two runs that would write to the same output location are refused when the plan is made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers import defaults_for, run_cli, write_csv, write_defaults

import planner
from planner.errors import ValidationError


def _refused(tmp_path: Path, sheet: Path, backend: str, document: dict[str, Any], **options: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        planner.plan(sheet, backend=backend, defaults=document, **options).write(tmp_path / "plan")
    assert not (tmp_path / "plan").exists()
    return [p.describe() for p in caught.value.problems]


def _overwrite_run(**run: Any) -> dict[str, Any]:
    document = defaults_for("omics-run")
    document["run"].update(outputUriPrefixMode="NONE_WITH_OVERWRITE", **run)
    return document


def test_omics_runs_sharing_an_output_uri_without_a_run_prefix_are_refused(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "outputUri"],
        [["A", "s3://b/out/a/"], ["B", "s3://b/out/shared"], ["C", "s3://b/out/shared/"], ["D", "s3://b/out/d/"]],
    )
    lines = _refused(tmp_path, sheet, "omics-run", _overwrite_run())
    assert lines == [
        "row 2 (id 'B'), column 'outputUri' = 's3://b/out/shared': the same output location as row 3 ('C'): the "
        "runs would overwrite each other; with outputUriPrefixMode NONE_WITH_OVERWRITE a run writes straight into "
        "outputUri: give each run its own outputUri (a sheet column), or leave outputUriPrefixMode unset "
        "(SERVICE_DEFINED adds the run id below it) [output-collision]",
        "row 3 (id 'C'), column 'outputUri' = 's3://b/out/shared': the same output location as row 2 ('B'): the "
        "runs would overwrite each other; with outputUriPrefixMode NONE_WITH_OVERWRITE a run writes straight into "
        "outputUri: give each run its own outputUri (a sheet column), or leave outputUriPrefixMode unset "
        "(SERVICE_DEFINED adds the run id below it) [output-collision]",
    ]


def test_the_service_defined_prefix_separates_runs(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [["A", "1"], ["B", "2"]])
    manifest = planner.plan(sheet, backend="omics-run", defaults=defaults_for("omics-run")).write(tmp_path / "plan")
    assert manifest.runs == 2  # one outputUri for all, but the service adds each run's id below it


def test_one_default_output_uri_for_every_overwriting_run_is_said_once(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "x"], [[f"s{i}", str(i)] for i in range(500)])
    lines = _refused(tmp_path, sheet, "omics-run", _overwrite_run(), skip_invalid=True)
    assert lines == [
        "defaults, field '[run] outputUri' = 's3://bucket/results/': all 500 runs would write to this one location "
        "and overwrite each other; with outputUriPrefixMode NONE_WITH_OVERWRITE a run writes straight into "
        "outputUri: give each run its own outputUri (a sheet column), or leave outputUriPrefixMode unset "
        "(SERVICE_DEFINED adds the run id below it) [output-collision]"
    ]


def test_a_per_row_prefix_mode_only_the_overwriting_rows_collide(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv",
        ["sample", "outputUriPrefixMode"],
        [["A", "SERVICE_DEFINED"], ["B", None], ["C", "NONE_WITH_OVERWRITE"]],
    )
    document = defaults_for("omics-run")
    manifest = planner.plan(sheet, backend="omics-run", defaults=document).write(tmp_path / "ok")
    assert manifest.runs == 3  # C alone overwrites: with no one else
    more = write_csv(
        tmp_path / "t.csv",
        ["sample", "outputUriPrefixMode"],
        [["A", "SERVICE_DEFINED"], ["B", "NONE_WITH_OVERWRITE"], ["C", "NONE_WITH_OVERWRITE"]],
    )
    lines = _refused(tmp_path, more, "omics-run", document)
    assert [line.split(":")[0] for line in lines] == [
        "row 2 (id 'B'), column 'outputUri' = 's3",
        "row 3 (id 'C'), column 'outputUri' = 's3",
    ]


@pytest.mark.parametrize(
    ("backend", "column", "declared"),
    [("batch", "outdir", "outdir"), ("glue", "output_path", "output_path"), ("glue", "output_path", "--output_path")],
)
def test_output_parameters_named_in_the_defaults_are_compared(
    tmp_path: Path, backend: str, column: str, declared: str
) -> None:
    sheet = write_csv(
        tmp_path / "s.csv", ["sample", column], [["A", "s3://b/o/a/"], ["B", "s3://b/o/b/"], ["C", "s3://b/o/a"]]
    )
    document = defaults_for(backend, workflow={"output_parameters": [declared]})
    lines = _refused(tmp_path, sheet, backend, document)
    assert [line.split(": the same")[0] for line in lines] == [
        f"row 1 (id 'A'), column {column!r} = 's3://b/o/a'",
        f"row 3 (id 'C'), column {column!r} = 's3://b/o/a'",
    ]
    assert all(line.endswith("[output-collision]") and "row" in line.split(": the same")[1] for line in lines)


def test_an_empty_cell_takes_the_default_location_and_may_collide_there(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "outdir"], [["A", None], ["B", "s3://b/o/b/"], ["C", None]])
    document = defaults_for("batch", workflow={"output_parameters": ["outdir"]})
    document["run"]["parameters"]["outdir"] = "s3://b/o/shared/"
    lines = _refused(tmp_path, sheet, "batch", document)
    assert [line.split(":")[0] for line in lines] == [
        "row 1 (id 'A'), column 'outdir' = 's3",
        "row 3 (id 'C'), column 'outdir' = 's3",
    ]


def test_skip_invalid_rejects_every_row_of_a_shared_location(tmp_path: Path) -> None:
    rows = [[f"s{i}", f"s3://b/o/{i}/"] for i in range(6)] + [["x", "s3://b/o/2/"]]
    sheet = write_csv(tmp_path / "s.csv", ["sample", "outdir"], rows)
    document = defaults_for("batch", workflow={"output_parameters": ["outdir"]})
    manifest = planner.plan(sheet, backend="batch", defaults=document, skip_invalid=True).write(tmp_path / "plan")
    assert manifest.runs == 5 and manifest.rejected == 2
    rejected = pl.read_csv(tmp_path / "plan" / "rejected.csv")
    assert rejected.select("row", "id", "rule").rows() == [(3, "s2", "output-collision"), (7, "x", "output-collision")]
    samples = pl.read_parquet(tmp_path / "plan" / "samples.parquet")
    assert samples.get_column("id").to_list() == ["s0", "s1", "s3", "s4", "s5"]


def test_an_output_parameter_nothing_sets_is_named(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "outdir"], [["A", "s3://b/a/"]])
    lines = _refused(tmp_path, sheet, "batch", defaults_for("batch", workflow={"output_parameters": ["outdr"]}))
    assert lines == [
        "defaults, field '[workflow] output_parameters' = 'outdr': names a parameter that neither [run.parameters] "
        "nor a sheet column sets (did you mean 'outdir'?) [output-parameter]"
    ]


def test_the_cli_refuses_a_collision_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "output_path"], [["A", "s3://b/o/"], ["B", "s3://b/o/"]])
    defaults = write_defaults(
        tmp_path / "d.toml", defaults_for("glue", workflow={"output_parameters": ["output_path"]})
    )
    done = run_cli(["plan", sheet, "-b", "glue", "-d", defaults, "-o", tmp_path / "plan"], capsys)
    assert done.code == 2 and done.out == ""
    assert done.err.splitlines()[-1] == "planner: 2 problems found; nothing was written"
    assert "[output-collision]" in done.err
