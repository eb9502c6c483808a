"""Packing to each service's limits, and what plan.json and samples.parquet record."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import (
    SAMPLE_SHEETS,
    defaults_for,
    load_manifest,
    md5_etag,
    run_cli,
    shard_entries,
    write_csv,
    write_defaults,
)

import planner

SHARD_KEYS = {"index", "path", "mode", "entries", "bytes", "sha256", "md5", "part_size", "etag", "first", "last"}


def frame(n: int, **columns: pl.Expr) -> pl.DataFrame:
    """n samples S0000000.. built by polars, not Python loops."""
    return pl.select(sample=pl.format("S{}", pl.int_range(0, n).cast(pl.String).str.zfill(7)), **columns)


def write_plan(sheet: Any, backend: str, out: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("defaults", defaults_for(backend))
    return planner.plan(sheet, backend=backend, **kw).write(out).to_json()


def layout(manifest: dict[str, Any]) -> list[tuple[int, str]]:
    return [(s["entries"], s["mode"]) for s in manifest["shards"]]


def check_shard_files(out: Path, manifest: dict[str, Any]) -> None:
    """Every shard's recorded facts are those of its file."""
    for index, shard in enumerate(manifest["shards"]):
        assert set(shard) >= SHARD_KEYS
        data = (out / shard["path"]).read_bytes()
        entries = orjson.loads(data)
        assert shard["index"] == index and shard["path"] == f"shards/{index:05d}.json"
        assert shard["entries"] == len(entries)
        assert shard["bytes"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
        assert shard["md5"] == hashlib.md5(data).hexdigest()
        assert shard["etag"] == md5_etag(data, shard["part_size"])
    assert manifest["runs"] == sum(s["entries"] for s in manifest["shards"])


# ---------------------------------------------------------------- omics-batch


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        (1, [(1, "inline")]),
        (100, [(100, "inline")]),
        (101, [(101, "s3")]),
        (250, [(250, "s3")]),
    ],
)
def test_omics_batch_inline_up_to_100_runs_else_one_s3_file(
    tmp_path: Path, runs: int, expected: list[tuple[int, str]]
) -> None:
    manifest = write_plan(frame(runs), "omics-batch", tmp_path / "plan")
    assert layout(manifest) == expected
    check_shard_files(tmp_path / "plan", manifest)


def test_omics_batch_inline_flag_splits_into_batches_of_100(tmp_path: Path) -> None:
    manifest = write_plan(frame(250), "omics-batch", tmp_path / "plan", inline=True)
    assert layout(manifest) == [(100, "inline"), (100, "inline"), (50, "inline")]
    check_shard_files(tmp_path / "plan", manifest)


def test_omics_batch_inline_flag_cannot_raise_the_limit(tmp_path: Path) -> None:
    manifest = write_plan(frame(250), "omics-batch", tmp_path / "plan", inline=True, max_entries=1000)
    assert max(s["entries"] for s in manifest["shards"]) == 100


def test_max_entries_below_the_service_limit(tmp_path: Path) -> None:
    manifest = write_plan(frame(250), "omics-batch", tmp_path / "plan", max_entries=60)
    assert layout(manifest) == [(60, "s3")] * 4 + [(10, "s3")]
    check_shard_files(tmp_path / "plan", manifest)


def test_max_entries_above_the_service_limit_is_capped(tmp_path: Path) -> None:
    manifest = write_plan(frame(150), "batch", tmp_path / "plan", max_entries=50_000)
    assert manifest["options"]["max_entries"] == 10_000
    assert layout(manifest) == [(150, "s3")]


def test_omics_batch_250k_runs_three_s3_files(tmp_path: Path) -> None:
    manifest = write_plan(frame(250_000, x=pl.lit("v")), "omics-batch", tmp_path / "plan")
    assert layout(manifest) == [(100_000, "s3"), (100_000, "s3"), (50_000, "s3")]
    shards = manifest["shards"]
    assert [(s["first"], s["last"]) for s in shards] == [
        ("S0000000", "S0099999"),
        ("S0100000", "S0199999"),
        ("S0200000", "S0249999"),
    ]
    check_shard_files(tmp_path / "plan", manifest)
    samples = pl.read_parquet(tmp_path / "plan" / "samples.parquet")
    assert samples.height == 250_000
    assert samples.filter(pl.col("id") == "S0150000").select("shard", "position").row(0) == (1, 50_000)


def test_large_runs_are_cut_by_bytes_before_entries(tmp_path: Path) -> None:
    max_bytes = 1_000_000
    sheet = frame(300, blob=pl.lit("x" * 20_000), serial=pl.int_range(0, 300))
    manifest = write_plan(sheet, "omics-batch", tmp_path / "plan", max_bytes=max_bytes)
    shards = manifest["shards"]
    assert len(shards) > 1 and all(s["mode"] == "s3" for s in shards)
    assert all(s["bytes"] <= max_bytes for s in shards)
    assert all(s["entries"] < 100 for s in shards)
    check_shard_files(tmp_path / "plan", manifest)
    # Greedy: each shard but the last had no room for the next run.
    entries = shard_entries(tmp_path / "plan", manifest)
    for shard, following in zip(shards, entries[1:], strict=False):
        assert shard["bytes"] + len(orjson.dumps(following[0])) + 2 > max_bytes
    assert [e["runSettingId"] for shard in entries for e in shard] == [f"S{i:07d}" for i in range(300)]


def test_part_size_sets_the_predicted_etag(tmp_path: Path) -> None:
    small = write_plan(frame(300, x=pl.lit("y" * 50)), "omics-batch", tmp_path / "small", part_size=5 * 1024 * 1024)
    (shard,) = small["shards"]
    assert shard["part_size"] == 5 * 1024 * 1024
    assert shard["etag"] == '"' + shard["md5"] + '"'  # one PUT
    big = write_plan(frame(300, blob=pl.lit("z" * 20_000)), "omics-batch", tmp_path / "big", part_size=5 * 1024 * 1024)
    (shard,) = big["shards"]
    assert 5 * 1024 * 1024 < shard["bytes"] <= 10 * 1024 * 1024
    assert shard["etag"].endswith('-2"')  # two parts
    check_shard_files(tmp_path / "big", big)


@pytest.mark.parametrize(
    ("part_size", "max_bytes"),
    [
        (1024, 1_000_000),  # max_bytes small enough that the 10,000-part rule is not what refuses it
        (5 * 1024 * 1024 - 1, 1_000_000),
        (5 * 1024**3 + 1, None),  # a 6 GB omics-batch file would be "one PUT" of more than 5 GiB
    ],
)
def test_part_size_outside_s3_limits_is_refused(part_size: int, max_bytes: int | None) -> None:
    # S3 parts are 5 MiB..5 GiB (DESIGN.md).
    with pytest.raises(planner.InputError, match="part size"):
        planner.plan(
            frame(3),
            backend="omics-batch",
            defaults=defaults_for("omics-batch"),
            part_size=part_size,
            max_bytes=max_bytes,
        )


@pytest.mark.parametrize(
    ("part_size", "ok"),
    [(5 * 1024 * 1024 - 1, False), (5 * 1024 * 1024, True), (5 * 1024**3, True), (5 * 1024**3 + 1, False)],
)
def test_part_size_bounds_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], part_size: int, ok: bool) -> None:
    from helpers import assert_clean_stderr, assert_nothing_written, write_defaults

    sheet = write_csv(tmp_path / "s.csv", ["sample"], [["a"], ["b"]])
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("omics-batch"))
    out = tmp_path / "plan"
    code, stdout, err = run_cli(
        ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults, "--out", out, "--part-size", part_size],
        capsys,
    )
    if ok:
        assert code == 0, err
        assert load_manifest(out)["shards"][0]["part_size"] == part_size
    else:
        assert code == 2 and stdout == ""
        assert_clean_stderr(err)
        assert "part size" in err and "5 MiB" in err and "5 GiB" in err
        assert_nothing_written(out)


def test_part_size_that_needs_more_than_10000_parts_is_refused() -> None:
    # 6,000,000,000 bytes in parts of 100,000 would be 60,000 parts.
    with pytest.raises(planner.InputError, match="part"):
        planner.plan(frame(3), backend="omics-batch", defaults=defaults_for("omics-batch"), part_size=100_000)


# ---------------------------------------------------------------- AWS Batch arrays


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        (25_001, [10_000, 10_000, 5_001]),
        (10_001, [9_999, 2]),
        (20_001, [10_000, 9_999, 2]),
        (10_000, [10_000]),
        (2, [2]),
        (1, [1]),
    ],
)
def test_batch_arrays_of_2_to_10000_children(tmp_path: Path, runs: int, expected: list[int]) -> None:
    manifest = write_plan(frame(runs), "batch", tmp_path / "plan")
    assert [s["entries"] for s in manifest["shards"]] == expected
    check_shard_files(tmp_path / "plan", manifest)
    entries = shard_entries(tmp_path / "plan", manifest)
    assert [e["id"] for shard in entries for e in shard] == frame(runs).get_column("sample").to_list()


def test_batch_respects_max_bytes_when_runs_do_not_pair(tmp_path: Path) -> None:
    sheet = frame(3, blob=pl.lit("x" * 400))
    run_size = len(
        planner.plan(sheet.head(1), backend="batch", defaults=defaults_for("batch"))
        .runs()
        .get_column("run")[0]
        .encode()
    )
    max_bytes = 3 + run_size + 2 + 10  # room for one run, not two
    manifest = write_plan(sheet, "batch", tmp_path / "plan", max_bytes=max_bytes)
    assert all(s["entries"] >= 1 and s["bytes"] <= max_bytes for s in manifest["shards"])
    # The limits are hard: three lone runs rather than a shard over max_bytes or an empty one.
    assert [s["entries"] for s in manifest["shards"]] == [1, 1, 1]
    check_shard_files(tmp_path / "plan", manifest)


def test_batch_shards_carry_merged_settings_in_child_order(tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "s.csv", ["sample", "bam"], [["A", "s3://b/a.bam"], ["B", None], ["C", "s3://b/c.bam"]]
    )
    manifest = write_plan(sheet, "batch", tmp_path / "plan")
    (entries,) = shard_entries(tmp_path / "plan", manifest)
    base = defaults_for("batch")["run"]
    assert entries == [
        {**base, "parameters": {**base["parameters"], "sample": "A", "bam": "s3://b/a.bam"}, "id": "A"},
        {**base, "parameters": {**base["parameters"], "sample": "B"}, "id": "B"},
        {**base, "parameters": {**base["parameters"], "sample": "C", "bam": "s3://b/c.bam"}, "id": "C"},
    ]


# ---------------------------------------------------------------- plan.json and samples.parquet


def test_plan_json_for_the_omics_batch_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = SAMPLE_SHEETS / "omics_batch_samples.csv"
    defaults_file = SAMPLE_SHEETS / "omics_batch_defaults.toml"
    out = tmp_path / "plan"
    code, stdout, err = run_cli(
        ["plan", sheet, "--backend", "omics-batch", "--defaults", defaults_file, "--out", out, "--json"], capsys
    )
    assert code == 0, err
    manifest = load_manifest(out)
    assert orjson.loads(stdout) == manifest  # --json prints plan.json
    document = tomllib.loads(defaults_file.read_text(encoding="utf-8"))
    rows = pl.read_csv(sheet, infer_schema=False)

    assert manifest["format"] == 1
    assert manifest["backend"] == "omics-batch"
    assert isinstance(manifest["plan_id"], str) and len(manifest["plan_id"]) >= 16
    assert manifest["runs"] == rows.height == 12
    assert manifest["defaults"] == document["run"]  # defaultRunSetting exactly as in the file
    assert list(manifest["defaults"]) == list(document["run"])
    assert manifest["submission"] == document["submission"]
    assert manifest["sheet"]["path"] == str(sheet)
    assert manifest["sheet"]["sha256"] == hashlib.sha256(sheet.read_bytes()).hexdigest()
    assert manifest["sheet"]["rows"] == 12
    (shard,) = manifest["shards"]
    assert set(shard) >= SHARD_KEYS
    assert (
        shard["mode"] == "inline" and shard["first"] == "CTRL_REP1" and shard["last"] == rows.get_column("sample")[-1]
    )
    check_shard_files(out, manifest)

    # Shards carry only each row's own settings: the service merges defaultRunSetting.
    (entries,) = shard_entries(out, manifest)
    assert [e["runSettingId"] for e in entries] == rows.get_column("sample").to_list()
    for entry in entries:
        assert "workflowId" not in entry and "roleArn" not in entry
        assert set(entry["parameters"]) <= {"sample", "fastq_1", "fastq_2", "strandedness"}
        assert entry["parameters"]["sample"] == entry["runSettingId"]  # the id column is a parameter too
        assert entry["runTags"] == {
            "cohort": rows.filter(pl.col("sample") == entry["runSettingId"]).get_column("tag.cohort")[0]
        }


def test_plan_id_changes_with_the_content(tmp_path: Path) -> None:
    one = write_plan(frame(5), "omics-batch", tmp_path / "a")
    two = write_plan(frame(5), "omics-batch", tmp_path / "b")
    other_rows = write_plan(frame(6), "omics-batch", tmp_path / "c")
    other_defaults = write_plan(frame(5), "omics-batch", tmp_path / "d", sets=["parameters.threads=9"])
    assert one["plan_id"] == two["plan_id"]
    assert len({one["plan_id"], other_rows["plan_id"], other_defaults["plan_id"]}) == 3


@pytest.mark.parametrize("backend", ["omics-batch", "omics-run", "batch", "glue", "polly"])
def test_example_sheets_plan_and_map_every_sample(tmp_path: Path, backend: str) -> None:
    stem = backend.replace("-", "_")
    sheet = SAMPLE_SHEETS / f"{stem}_samples.csv"
    out = tmp_path / "plan"
    manifest = write_plan(sheet, backend, out, defaults=SAMPLE_SHEETS / f"{stem}_defaults.toml", max_entries=3)
    check_shard_files(out, manifest)
    ids = pl.read_csv(sheet, infer_schema=False).get_column(manifest["sheet"]["id_column"]).to_list()
    samples = pl.read_parquet(out / "samples.parquet")
    assert samples.columns[:4] == ["row", "id", "shard", "position"]
    assert samples.get_column("id").to_list() == ids
    assert samples.get_column("row").to_list() == list(range(1, len(ids) + 1))
    entries = shard_entries(out, manifest)
    for record in samples.iter_rows(named=True):
        shard = manifest["shards"][record["shard"]]
        assert 0 <= record["position"] < shard["entries"]
        entry = entries[record["shard"]][record["position"]]
        id_field = {"omics-batch": "runSettingId", "batch": "id", "polly": "name"}.get(backend)
        if id_field:
            assert entry[id_field] == record["id"]
    # first/last of each shard agree with samples.parquet.
    for index, shard in enumerate(manifest["shards"]):
        mine = samples.filter(pl.col("shard") == index).sort("position").get_column("id").to_list()
        assert (shard["first"], shard["last"], shard["entries"]) == (mine[0], mine[-1], len(mine))


def test_merged_backends_include_the_defaults_in_every_entry(tmp_path: Path) -> None:
    out = tmp_path / "plan"
    manifest = write_plan(
        SAMPLE_SHEETS / "omics_run_samples.csv", "omics-run", out, defaults=SAMPLE_SHEETS / "omics_run_defaults.toml"
    )
    document = tomllib.loads((SAMPLE_SHEETS / "omics_run_defaults.toml").read_text(encoding="utf-8"))
    (entries,) = shard_entries(out, manifest)
    for entry in entries:
        assert entry["workflowId"] == document["run"]["workflowId"]
        assert set(document["run"]["parameters"]) <= set(entry["parameters"])
        assert entry["parameters"]["status"] == 0  # declared int in [sheet.types]
    # HG001 has an empty tag.project: the default tag stands.
    assert entries[0]["tags"]["project"] == document["run"]["tags"]["project"]
    assert entries[1]["tags"]["project"] == "giab-ashkenazi-trio"


# ---------------------------------------------------------------- AWS Batch request sizes


def _batch_plan_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], run: dict[str, Any]) -> tuple[int, str]:
    sheet = write_csv(tmp_path / "s.csv", ["sample", "reads"], [["a", "r1"], ["b", "r2"]])
    defaults = write_defaults(tmp_path / "d.toml", defaults_for("batch", run={**defaults_for("batch")["run"], **run}))
    code, out, err = run_cli(
        ["plan", sheet, "--backend", "batch", "--defaults", defaults, "--out", tmp_path / "p"], capsys
    )
    assert out == "" or code == 0
    return code, err


def test_batch_job_payload_above_30_kib_is_refused_at_plan_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """AWS Batch User Guide, service quotas: "Maximum job payload size (for SubmitJob API operations) 30 KiB";
    the service answers ClientException "Job size must be less than 30 KiB"."""
    parameters = {f"p{i:03d}": "v" * 100 for i in range(320)}  # ~35 KB of parameters, no overrides
    code, err = _batch_plan_cli(tmp_path, capsys, {"parameters": parameters})
    assert code == 2 and "30 KiB" in err and "SubmitJob" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()


def test_batch_container_overrides_above_8192_characters_are_refused_at_plan_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ECS RunTask overrides, which AWS Batch jobs on ECS are started with: "A total of 8192 characters are allowed
    for overrides"; a job past it is accepted by SubmitJob and fails with "Container Overrides length must be at
    most 8192": refused before anything is submitted."""
    environment = [{"name": f"V{i:03d}", "value": "x" * 90} for i in range(90)]  # ~9 KB, the payload well within 30 KiB
    code, err = _batch_plan_cli(tmp_path, capsys, {"containerOverrides": {"environment": environment}})
    assert code == 2 and "containerOverrides" in err and "8192" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()


def test_batch_requests_within_both_limits_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environment = [{"name": f"V{i:03d}", "value": "x" * 60} for i in range(60)]  # ~5 KB, room for the planner's own
    code, err = _batch_plan_cli(tmp_path, capsys, {"containerOverrides": {"environment": environment}})
    assert code == 0, err
