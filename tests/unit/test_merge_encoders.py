"""The two run encoders of merge.py agree on the cases that tell them apart.

StartRunBatch shards (the row's own settings) go through one struct.json_encode whose
null keys are cut out afterwards; everything else goes through per-key fragments.  These
cases are where a text cut could go wrong: values that look like a null key, raw JSON
with nulls of its own, keys that need escaping, maps left empty, lists holding nulls.
"""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
import pytest

import planner
from planner.backends import get_backend
from planner.core.merge import OWN, _Leaf, _Node, _struct_json, reference_row, run_json
from planner.core.routing import route_columns

DEFAULTS = {"run": {"workflowId": "1234567", "roleArn": "arn:aws:iam::123456789012:role/R", "outputUri": "s3://b/out/"}}


def own_runs(frame: pl.DataFrame, **kw: Any) -> list[dict[str, Any]]:
    runs = planner.plan(frame, backend="omics-batch", defaults=DEFAULTS, **kw).runs(merged=False)
    return [orjson.loads(r) for r in runs.get_column("run")]


def test_values_that_look_like_null_keys_survive() -> None:
    tricky = [',"p":null', '{"p":null,', '","x":null', "a\\", '\\",\\"q\\":null', "null", ""]
    frame = pl.DataFrame({"sample": [f"S{i}" for i in range(len(tricky))], "p": tricky, "q": [None] * len(tricky)})
    got = own_runs(frame)
    for value, run in zip(tricky, got, strict=True):
        expected = {"runSettingId": run["runSettingId"], "parameters": {"sample": run["runSettingId"]}}
        if value != "":  # an empty cell is unset
            expected["parameters"]["p"] = value
        assert run == expected


def test_null_first_key_and_all_null_map_are_omitted() -> None:
    frame = pl.DataFrame(
        {
            "sample": ["S1", "S2", "S3"],
            "tag.a": [None, "x", None],
            "tag.b": [None, None, "y"],
        }
    )
    # sample is routed as a parameter (always set); the tags map is the one that can empty out
    got = own_runs(frame)
    assert [r.get("runTags") for r in got] == [None, {"a": "x"}, {"b": "y"}]
    assert "runTags" not in got[0]


def test_raw_json_nulls_are_kept() -> None:
    frame = pl.DataFrame({"sample": ["S1"], "opts": ['{"a": null, "b": [null, 1]}']})
    got = planner.plan(frame, backend="omics-batch", defaults={**DEFAULTS, "sheet": {"types": {"opts": "json"}}}).runs(
        merged=False
    )
    assert orjson.loads(got.get_column("run")[0])["parameters"]["opts"] == {"a": None, "b": [None, 1]}


def test_list_columns_keep_their_nulls() -> None:
    frame = pl.DataFrame({"sample": ["S1", "S1"], "fastq_1": ["a.fq", "c.fq"], "fastq_2": ["b.fq", None]})
    got = own_runs(frame, group=True, list_columns=["fastq_1", "fastq_2"])
    assert got[0]["parameters"]["fastq_2"] == ["b.fq", None]


@pytest.mark.parametrize("key", ['we"ird', "back\\slash", "tab\there", "é-accent", "ctl\u0001"])
def test_keys_needing_escape_take_the_fragment_path_and_match_the_reference(key: str) -> None:
    spec = get_backend("omics-batch")
    frame = pl.DataFrame({"sample": ["S1", "S2"], f"param.{key}": ["v", None], "plain": [None, "w"]})
    routes = route_columns(list(frame.columns), spec, {c: c for c in frame.columns})
    root_fields = run_json(routes, spec, {}, "sample", frame.schema, set(), OWN)
    got = [orjson.loads(t) for t in frame.select(root_fields.alias("r")).get_column("r")]
    for values, run in zip(frame.iter_rows(named=True), got, strict=True):
        assert run == reference_row(values, routes, spec, values["sample"])


def test_struct_path_is_used_for_plain_cells_and_not_for_escaped_keys() -> None:
    # Guard that the fast path is really exercised above (and declines keys it cannot cut safely).
    root = _Node(from_defaults=True)
    root.children["plain"] = _Leaf(cell=pl.col("x"), plain=pl.col("x"))
    assert _struct_json(root) is not None
    root.children['we"ird'] = _Leaf(cell=pl.col("y"), plain=pl.col("y"))
    assert _struct_json(root) is None


def test_an_empty_map_from_the_defaults_is_kept_when_the_row_sets_nothing_in_it() -> None:
    # Polly: config.infra is the per-key map; [run] config = {} must still reach the run.
    frame = pl.DataFrame({"sample_id": ["S1", "S2"], "cpu": [None, "2"]})
    runs = planner.plan(
        frame, backend="polly", defaults={"run": {"config": {}}, "submission": {"pipeline_id": "pl-1"}}
    ).runs()
    got = [orjson.loads(r) for r in runs.get_column("run")]
    assert got[0]["config"] == {}
    assert got[1]["config"] == {"infra": {"cpu": 2}}  # cpu is an integer field of Polly's infra
