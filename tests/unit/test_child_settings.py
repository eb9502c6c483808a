"""``planner.commands.child_settings`` against an in-memory S3 that honours Range and If-Match."""

from __future__ import annotations

import io
import os
from typing import Any

import orjson
import polars as pl
import pytest
from botocore.exceptions import ClientError

import planner
import planner.cli
from planner.commands.child_settings import export_lines, glue_arguments, read_child_settings
from planner.core.line_index import entry_count, line_index
from planner.errors import InputError, PlannerError

DEFAULTS = {"run": {"jobQueue": "q", "jobDefinition": "d:1", "parameters": {"reference": "s3://refs/hg38.fa"}}}


class FakeS3:
    """get_object with Range and IfMatch, and a record of the ranges asked for."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects
        self.ranges: list[tuple[str, str]] = []

    def etag(self, key: str) -> str:
        import hashlib

        return '"' + hashlib.md5(self.objects[key]).hexdigest() + '"'

    def get_object(self, *, Bucket: str, Key: str, Range: str, IfMatch: str | None = None) -> dict[str, Any]:
        data = self.objects[f"{Bucket}/{Key}"]
        self.ranges.append((Key, Range))
        if IfMatch is not None and IfMatch != self.etag(f"{Bucket}/{Key}"):
            raise ClientError(
                {
                    "Error": {"Code": "PreconditionFailed", "Message": "If-Match"},
                    "ResponseMetadata": {"HTTPStatusCode": 412},
                },
                "GetObject",
            )
        first, last = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        if first >= len(data):
            raise ClientError(
                {"Error": {"Code": "InvalidRange", "Message": "range"}, "ResponseMetadata": {"HTTPStatusCode": 416}},
                "GetObject",
            )
        return {"Body": io.BytesIO(data[first : last + 1])}


@pytest.fixture()
def staged(tmp_path) -> dict[str, Any]:
    sheet = pl.DataFrame(
        {
            "sample": [f"S{i}" for i in range(5)],
            "bam": [f"s3://in/{i}.bam" for i in range(5)],
            "note": ["a,b", "", 'é"q', "x", "y"],
        }
    )
    plan_dir = tmp_path / "plan"
    manifest = planner.plan(sheet, backend="batch", defaults=DEFAULTS).write(str(plan_dir)).to_json()
    path = plan_dir / manifest["shards"][0]["path"]
    shard = path.read_bytes()
    index = line_index(path)
    s3 = FakeS3({"b/m.json": shard, "b/m.index": index})
    env = {
        "PLANNER_MANIFEST": "s3://b/m.json",
        "PLANNER_MANIFEST_ETAG": s3.etag("b/m.json"),
        "PLANNER_INDEX_URI": "s3://b/m.index",
        "PLANNER_INDEX_ETAG": s3.etag("b/m.index"),
        "PLANNER_FIRST_INDEX": "0",
    }
    return {"entries": orjson.loads(shard), "index": index, "s3": s3, "env": env}


def test_the_index_has_one_offset_per_entry_and_an_end_sentinel(staged):
    assert entry_count(staged["index"]) == 5 and len(staged["index"]) == 8 * 6


def test_every_child_reads_exactly_its_own_entry_with_two_small_ranged_gets(staged):
    s3 = staged["s3"]
    for i, entry in enumerate(staged["entries"]):
        s3.ranges.clear()
        assert read_child_settings(environ=dict(staged["env"], AWS_BATCH_JOB_ARRAY_INDEX=str(i)), s3=s3) == entry
        (index_key, index_range), (manifest_key, manifest_range) = s3.ranges
        assert index_key == "m.index" and index_range == f"bytes={8 * i}-{8 * i + 15}"
        first, last = (int(x) for x in manifest_range.removeprefix("bytes=").split("-"))
        assert manifest_key == "m.json" and last - first + 1 < len(s3.objects["b/m.json"]) // 2


def test_first_index_and_explicit_index_add_up(staged):
    env = dict(staged["env"], PLANNER_FIRST_INDEX="2")
    assert read_child_settings(environ=env, s3=staged["s3"]) == staged["entries"][2]  # a plain job: index 0
    assert read_child_settings(environ=env, index=1, s3=staged["s3"]) == staged["entries"][3]
    assert (
        read_child_settings(environ={}, s3=staged["s3"], index=4, first_index=0, **_locations(staged["env"]))
        == staged["entries"][4]
    )


def _locations(env: dict[str, str]) -> dict[str, str]:
    return {
        "manifest_uri": env["PLANNER_MANIFEST"],
        "etag": env["PLANNER_MANIFEST_ETAG"],
        "index_uri": env["PLANNER_INDEX_URI"],
    }


def test_a_changed_manifest_or_index_is_refused(staged):
    with pytest.raises(PlannerError, match="changed"):
        read_child_settings(environ=dict(staged["env"], PLANNER_MANIFEST_ETAG='"0"'), s3=staged["s3"])
    with pytest.raises(PlannerError, match="changed"):
        read_child_settings(environ=dict(staged["env"], PLANNER_INDEX_ETAG='"0"'), s3=staged["s3"])


@pytest.mark.parametrize("index", [5, 6, 1000])
def test_an_index_past_the_end_is_an_input_error(staged, index):
    with pytest.raises(InputError, match="beyond"):
        read_child_settings(environ=dict(staged["env"], AWS_BATCH_JOB_ARRAY_INDEX=str(index)), s3=staged["s3"])


def test_outside_a_job_the_missing_variables_are_named():
    with pytest.raises(InputError, match="PLANNER_MANIFEST, PLANNER_MANIFEST_ETAG, PLANNER_INDEX_URI not set"):
        read_child_settings(environ={}, s3=object())
    with pytest.raises(InputError, match="AWS_BATCH_JOB_ARRAY_INDEX"):
        read_child_settings(
            environ={
                "PLANNER_MANIFEST": "s3://b/k",
                "PLANNER_MANIFEST_ETAG": "e",
                "PLANNER_INDEX_URI": "s3://b/i",
                "AWS_BATCH_JOB_ARRAY_INDEX": "x",
            },
            s3=object(),
        )


def test_the_command_exits_2_with_one_line_outside_a_job(monkeypatch, capsys):
    for name in ("PLANNER_MANIFEST", "PLANNER_MANIFEST_ETAG", "PLANNER_INDEX_URI"):
        monkeypatch.delenv(name, raising=False)
    assert planner.cli.main(["child-settings"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("planner: error: ") and err.count("\n") == 1


def test_export_lines_flatten_parameters_and_keep_the_whole_entry():
    settings = {"id": "S1", "jobQueue": "q", "parameters": {"fastq_1": "s3://a b", "threads": 8, "list": [1, 2]}}
    lines = export_lines(settings)
    assert lines[:4] == [
        "export PLANNER_SAMPLE_ID=S1",
        "export PARAM_FASTQ_1='s3://a b'",
        "export PARAM_THREADS=8",
        "export PARAM_LIST='[1,2]'",
    ]
    assert lines[4].startswith("export PLANNER_SETTINGS='{") and "jobQueue" in lines[4]


def test_export_lines_for_a_glue_entry_use_its_arguments():
    lines = export_lines({"JobName": "etl", "Arguments": {"--input": "s3://x", "--day-of": "mon"}})
    assert lines[:2] == ["export PARAM_INPUT=s3://x", "export PARAM_DAY_OF=mon"]


def test_export_refuses_two_parameters_with_one_variable_name():
    with pytest.raises(InputError, match="both become the variable PARAM_A_B"):
        export_lines({"parameters": {"a-b": "1", "a.b": "2"}})


def test_glue_arguments_are_picked_from_glues_argument_list():
    argv = [
        "script.py",
        "--JOB_ID",
        "j_1",
        "--planner-manifest",
        "s3://b/m.json",
        '--planner-manifest-etag="abc"',
        "--planner-index-uri",
        "s3://b/m.index",
        "--planner-first-index",
        "3",
        "--job-bookmark-option",
        "job-bookmark-disable",
    ]
    assert glue_arguments(argv) == {
        "manifest_uri": "s3://b/m.json",
        "etag": '"abc"',
        "index_uri": "s3://b/m.index",
        "first_index": 3,
    }
    with pytest.raises(InputError):
        glue_arguments(["--planner-first-index", "-1"])


def test_line_index_refuses_a_file_that_is_not_a_shard(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b'{"a": 1}\n')
    with pytest.raises(PlannerError, match="not a shard file"):
        line_index(path)
    path.write_bytes(b"[\n")
    with pytest.raises(PlannerError, match="not a shard file"):
        line_index(path)
    assert os.path.exists(path)


def test_an_entry_holding_a_value_as_deep_as_a_plan_allows_is_printed_whole():
    """A parameter 254 levels deep (the most a plan holds) sits 256 deep in the entry,
    past what orjson writes; the settings still come out whole, as compact JSON."""
    deep = [1]
    for _ in range(253):
        deep = [deep]
    settings = {"id": "S1", "jobQueue": "q", "parameters": {"deep": deep, "plain": "é"}}
    lines = export_lines(settings)
    assert lines[1] == "export PARAM_DEEP='" + "[" * 254 + "1" + "]" * 254 + "'"
    whole = lines[3].removeprefix("export PLANNER_SETTINGS=").strip("'")
    assert orjson.loads(whole) == settings and '"plain":"é"' in whole
