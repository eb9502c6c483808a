"""Re-planning the same inputs gives byte-identical files, whatever the batch size.

plan.json (and its plan_id), every shard and samples.parquet must not depend on
when, where or in how many batches the plan was made; nor on the hash seed of the
process (checked with two child processes).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from helpers import defaults_for, examples, run_cli_process, tree_bytes, write_csv, write_defaults
from hypothesis import given
from hypothesis import strategies as st

import planner

BACKENDS = ["omics-batch", "omics-run", "batch", "glue", "polly"]
cell = st.one_of(
    st.none(),
    st.text(st.characters(categories=("L", "N", "P", "Zs"), max_codepoint=0x2FFF), max_size=8),
    st.sampled_from(['a"b', "x,y", "l1\nl2", "é😀"]),
)


@st.composite
def sheets(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 40))
    extra = draw(
        st.lists(st.sampled_from(["fastq_1", "fastq_2", "strandedness", "param.k", "note"]), unique=True, max_size=4)
    )
    backend = draw(st.sampled_from(BACKENDS))
    if backend in ("omics-batch", "omics-run") and draw(st.booleans()):
        extra.append("tag.cohort")
    rows = [[f"S{i:03d}"] + [draw(cell) for _ in extra] for i in range(n)]
    return {
        "backend": backend,
        "header": ["sample", *extra],
        "rows": rows,
        "max_entries": draw(st.integers(2, 15)),
        "batch_rows": draw(st.integers(1, 12)),
    }


def plan_into(case: dict[str, Any], base: Path, name: str, batch_rows: int | None = None) -> dict[str, bytes]:
    sheet = write_csv(base / "sheet.csv", case["header"], case["rows"])
    plan = planner.plan(
        sheet, backend=case["backend"], defaults=defaults_for(case["backend"]), max_entries=case["max_entries"]
    )
    if batch_rows is not None:
        plan.options = dataclasses.replace(plan.options, batch_rows=batch_rows)
    plan.write(base / name)
    return tree_bytes(base / name)


@examples(30)
@given(sheets())
def test_same_inputs_give_identical_files(case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        first = plan_into(case, base, "one")
        second = plan_into(case, base, "two")
    assert set(first) >= {"plan.json", "samples.parquet", "shards/00000.json"}
    assert first == second


@examples(30)
@given(sheets())
def test_batch_size_does_not_change_the_plan(case: dict[str, Any]) -> None:
    """Streaming in batches of 1..12 rows gives the files one big batch gives."""
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        whole = plan_into(case, base, "whole")
        batched = plan_into(case, base, "batched", batch_rows=case["batch_rows"])
    shards = sorted(k for k in whole if k.startswith("shards/"))
    assert len(shards) >= -(-len(case["rows"]) // case["max_entries"])
    assert whole == batched


def test_batch_rows_smaller_than_shards_and_rejections(tmp_path: Path) -> None:
    """With --skip-invalid, rejected rows in the middle of batches change nothing either."""
    rows = [[f"S{i:04d}", str(i % 7 if i % 13 else "high"), f"v{i}"] for i in range(300)]
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "priority", "x"], rows)
    trees = []
    for batch_rows in (1, 7, 50_000):
        plan = planner.plan(
            sheet, backend="omics-batch", defaults=defaults_for("omics-batch"), skip_invalid=True, max_entries=40
        )
        plan.options = dataclasses.replace(plan.options, batch_rows=batch_rows)
        manifest = plan.write(tmp_path / f"b{batch_rows}").to_json()
        assert manifest["rejected"] == len([r for r in rows if r[1] == "high"])
        trees.append(tree_bytes(tmp_path / f"b{batch_rows}"))
    assert "rejected.csv" in trees[0]
    assert trees[0] == trees[1] == trees[2]


def test_frame_input_is_deterministic(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"sample": [f"s{i}" for i in range(50)], "n": list(range(50)), "l": [[str(i)] * (i % 3) for i in range(50)]}
    )
    trees = []
    for name in ("a", "b"):
        planner.plan(frame, backend="omics-batch", defaults=defaults_for("omics-batch"), max_entries=20).write(
            tmp_path / name
        )
        trees.append(tree_bytes(tmp_path / name))
    assert trees[0] == trees[1]
    assert len([k for k in trees[0] if k.startswith("shards/")]) == 3


def test_separate_processes_with_different_hash_seeds_agree(tmp_path: Path) -> None:
    """No set or dict ordering that varies with PYTHONHASHSEED leaks into the files."""
    rows = [[f"S{i:03d}", f"s3://reads/{i}_1.fq.gz", "reverse" if i % 2 else "", "cohort-a"] for i in range(120)]
    sheet = write_csv(tmp_path / "sheet.csv", ["sample", "fastq_1", "strandedness", "tag.cohort"], rows)
    defaults = write_defaults(tmp_path / "defaults.toml", defaults_for("omics-batch"))
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / f"plan{seed}"
        result = run_cli_process(
            [
                "plan",
                sheet.name,
                "--backend",
                "omics-batch",
                "--defaults",
                defaults.name,
                "--out",
                out.name,
                "--max-entries",
                "50",
            ],
            cwd=tmp_path,
            env={"PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr
        trees.append(tree_bytes(out))
    assert trees[0] == trees[1]
    assert sorted(trees[0]) == [
        "plan.json",
        "samples.parquet",
        "shards/00000.json",
        "shards/00001.json",
        "shards/00002.json",
    ]
