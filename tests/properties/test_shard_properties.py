"""ShardWriter: shards partition the runs exactly and stay within both limits.

Runs of random sizes (multi-byte characters included, so bytes != characters) are fed
in random batches; every shard file is then read back and checked against its
ShardInfo: the bytes, both hashes, the ETag S3 would report (computed here from
scratch for small part sizes), the first and last ids and the entry count.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from helpers import examples, md5_etag
from hypothesis import example, given
from hypothesis import strategies as st

from planner.core.shard import ShardInfo, ShardWriter, default_part_size, s3_etag

SEP = 2  # ",\n" between runs; a shard is "[\n" + runs joined by ",\n" + "\n]\n"


def make_runs(sizes: list[int], wide: list[bool]) -> list[str]:
    """Valid JSON objects whose UTF-8 size follows ``sizes`` (some padded with 2-byte characters)."""
    return [
        orjson.dumps({"i": i, "pad": ("é" * (s // 2)) if w else ("x" * s)}).decode()
        for i, (s, w) in enumerate(zip(sizes, wide, strict=False))
    ]


def cost(run: str) -> int:
    return len(run.encode()) + SEP


@st.composite
def shard_cases(draw: Any, min_entries: int, roomy: bool = False) -> dict[str, Any]:
    n = draw(st.integers(1, 40))
    sizes = draw(st.lists(st.integers(0, 120), min_size=n, max_size=n))
    wide = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    runs = make_runs(sizes, wide)
    ids = [f"sample-{i}" for i in range(n)]
    biggest = sorted((cost(r) for r in runs), reverse=True)
    if roomy:
        # Any three runs fit in one shard, and a shard takes at least three: a lone
        # run at the end can always borrow one from the shard before it.
        max_entries = draw(st.integers(3, 12))
        max_bytes = draw(st.integers(3 + sum(biggest[:3]), 3 + sum(biggest[:3]) + 600))
    else:
        max_entries = draw(st.integers(1, 12))
        max_bytes = draw(st.integers(3 + biggest[0], 3 + 6 * biggest[0]))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    batches = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    return {
        "runs": runs,
        "ids": ids,
        "max_entries": max_entries,
        "max_bytes": max_bytes,
        "part_size": draw(st.integers(64, 4096)),
        "batches": batches,
        "min_entries": min_entries,
    }


def write_shards(case: dict[str, Any], directory: str) -> list[ShardInfo]:
    writer = ShardWriter(
        directory,
        max_entries=case["max_entries"],
        max_bytes=case["max_bytes"],
        part_size=case["part_size"],
        min_entries=case["min_entries"],
    )
    for start, stop in case["batches"]:
        writer.add(
            pl.Series(case["ids"][start:stop], dtype=pl.String), pl.Series(case["runs"][start:stop], dtype=pl.String)
        )
    return writer.close()


def check_shards(case: dict[str, Any], shards: list[ShardInfo], directory: str) -> list[list[str]]:
    """Every invariant but the lone-run rule; returns the ids per shard."""
    runs, ids = case["runs"], case["ids"]
    on_disk = sorted(os.listdir(os.path.join(directory, "shards")))
    assert on_disk == [f"{i:05d}.json" for i in range(len(shards))], (
        "shard files on disk differ from the shards described"
    )
    position = 0
    per_shard = []
    for index, info in enumerate(shards):
        data = Path(directory, info.path).read_bytes()
        assert info.index == index
        assert info.path == f"shards/{index:05d}.json"
        assert 1 <= info.entries <= case["max_entries"], f"shard {index}: {info.entries} entries"
        assert info.bytes == len(data) <= case["max_bytes"], f"shard {index}: {len(data)} bytes > {case['max_bytes']}"
        mine = runs[position : position + info.entries]
        # Exactly the next runs, in order, in the documented layout.
        assert data == b"[\n" + ",\n".join(mine).encode() + b"\n]\n"
        assert orjson.loads(data) == [orjson.loads(r) for r in mine]
        assert info.bytes == 3 + sum(cost(r) for r in mine)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert info.md5 == hashlib.md5(data).hexdigest()
        assert info.part_size == case["part_size"]
        assert info.etag == md5_etag(data, case["part_size"])
        assert info.first == ids[position]
        assert info.last == ids[position + info.entries - 1]
        assert info.mode == "s3"
        per_shard.append(ids[position : position + info.entries])
        position += info.entries
    assert position == len(runs), "some runs were not written"
    return per_shard


@examples(150)
@given(shard_cases(min_entries=1))
def test_shards_partition_runs_within_limits(case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        shards = write_shards(case, directory)
        check_shards(case, shards, directory)
    # Greedy packing (shard.py: "cuts a shard when the next run would break the entry
    # or byte limit"): every shard but the last was full for the run that followed it.
    start = 0
    for info in shards[:-1]:
        following = case["runs"][start + info.entries]
        assert info.entries == case["max_entries"] or info.bytes + cost(following) > case["max_bytes"]
        start += info.entries


@examples(150)
@given(shard_cases(min_entries=2, roomy=True))
def test_min_entries_two_leaves_no_lone_run(case: dict[str, Any]) -> None:
    """AWS Batch arrays need 2..10,000 children: no shard of one run unless there is one run."""
    with tempfile.TemporaryDirectory() as directory:
        shards = write_shards(case, directory)
        per_shard = check_shards(case, shards, directory)
    if len(case["runs"]) >= 2:
        assert all(len(s) >= 2 for s in per_shard), [len(s) for s in per_shard]
    else:
        assert [len(s) for s in per_shard] == [1]


def _one_run_per_shard_case() -> dict[str, Any]:
    runs = make_runs([10, 10, 10], [False] * 3)
    return {
        "runs": runs,
        "ids": ["a", "b", "c"],
        "max_entries": 10,
        "max_bytes": 3 + cost(runs[0]),
        "part_size": 64,
        "batches": [(0, 3)],
        "min_entries": 2,
    }


def _borrow_overflows_case() -> dict[str, Any]:
    runs = make_runs([10, 10, 20], [False] * 3)
    max_bytes = 3 + cost(runs[0]) * 2 + 5
    # Two small runs fit together; neither fits with the big one, which fits alone.
    assert 3 + cost(runs[0]) + cost(runs[2]) > max_bytes >= 3 + cost(runs[2])
    return {
        "runs": runs,
        "ids": ["a", "b", "c"],
        "max_entries": 10,
        "max_bytes": max_bytes,
        "part_size": 64,
        "batches": [(0, 3)],
        "min_entries": 2,
    }


@examples(100)
@given(shard_cases(min_entries=2))
@example(_one_run_per_shard_case())
@example(_borrow_overflows_case())
def test_min_entries_two_keeps_limits_for_any_sizes(case: dict[str, Any]) -> None:
    """The byte and entry limits are hard; avoiding a lone run is not worth breaking them."""
    with tempfile.TemporaryDirectory() as directory:
        shards = write_shards(case, directory)
        check_shards(case, shards, directory)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_one_run_per_shard_case, [["a"], ["b"], ["c"]]),  # nothing to borrow without breaking max_bytes
        (_borrow_overflows_case, [["a", "b"], ["c"]]),  # borrowing b would put c's shard over max_bytes
    ],
)
def test_lone_run_stays_when_borrowing_would_break_a_limit(
    tmp_path: Path, make: Any, expected: list[list[str]]
) -> None:
    case = make()
    shards = write_shards(case, str(tmp_path))
    assert check_shards(case, shards, str(tmp_path)) == expected


def test_lone_last_run_borrows_from_previous_shard(tmp_path: Path) -> None:
    """10,001 runs with 10,000 per array: 9,999 + 2, not 10,000 + 1."""
    runs = make_runs([1] * 7, [False] * 7)
    case = {
        "runs": runs,
        "ids": list("abcdefg"),
        "max_entries": 3,
        "max_bytes": 10_000,
        "part_size": 64,
        "batches": [(0, 7)],
        "min_entries": 2,
    }
    shards = write_shards(case, str(tmp_path))
    per_shard = check_shards(case, shards, str(tmp_path))
    assert [len(s) for s in per_shard] == [3, 2, 2]


def test_single_run_with_min_entries_two_is_one_shard(tmp_path: Path) -> None:
    runs = make_runs([5], [False])
    case = {
        "runs": runs,
        "ids": ["only"],
        "max_entries": 10,
        "max_bytes": 10_000,
        "part_size": 64,
        "batches": [(0, 1)],
        "min_entries": 2,
    }
    shards = write_shards(case, str(tmp_path))
    assert [(s.entries, s.first, s.last) for s in shards] == [(1, "only", "only")]


def test_run_larger_than_a_shard_is_refused(tmp_path: Path) -> None:
    runs = make_runs([5, 500], [False, False])
    writer = ShardWriter(str(tmp_path), max_entries=10, max_bytes=100, part_size=64)
    with pytest.raises(ValueError, match="'big'"):
        writer.add(pl.Series(["small", "big"]), pl.Series(runs))


def test_min_entries_must_be_one_or_two(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ShardWriter(str(tmp_path), max_entries=10, max_bytes=100, part_size=64, min_entries=3)


# ---------------------------------------------------------------- ETags


@pytest.mark.parametrize("size_offset", [-1, 0, 1])
def test_etag_switches_to_multipart_just_above_part_size(tmp_path: Path, size_offset: int) -> None:
    """At exactly part_size bytes the file is one PUT (plain md5); one byte more is 2 parts."""
    part_size = 256
    # One run sized so that the shard has part_size + size_offset bytes: 3 + len + 2.
    run = orjson.dumps({"p": ""}).decode()
    pad = part_size + size_offset - 5 - len(run)
    run = orjson.dumps({"p": "x" * pad}).decode()
    writer = ShardWriter(str(tmp_path), max_entries=10, max_bytes=10_000, part_size=part_size)
    writer.add(pl.Series(["a"]), pl.Series([run]))
    (info,) = writer.close()
    data = (tmp_path / info.path).read_bytes()
    assert len(data) == part_size + size_offset
    md5 = hashlib.md5(data).hexdigest()
    if size_offset <= 0:
        assert info.etag == f'"{md5}"'
    else:
        parts = hashlib.md5(hashlib.md5(data[:part_size]).digest() + hashlib.md5(data[part_size:]).digest()).hexdigest()
        assert info.etag == f'"{parts}-2"'


def test_s3_etag_of_many_parts() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes
    part = 1000
    digests = [hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part)]
    assert s3_etag(hashlib.md5(data).hexdigest(), digests, len(data), part) == md5_etag(data, part)
    assert md5_etag(data, part).endswith('-11"')


@pytest.mark.parametrize(
    ("max_bytes", "expected"),
    [
        (1, 64 * 1024 * 1024),
        (5 * 1024**3, 64 * 1024 * 1024),  # 5 GiB / 10,000 parts = 0.5 MiB: 64 MiB stands
        (6_000_000_000, 64 * 1024 * 1024),
        (1000 * 1024**3, 103 * 1024 * 1024),  # needs 102.4 MiB: rounded up to whole MiB
    ],
)
def test_default_part_size(max_bytes: int, expected: int) -> None:
    size = default_part_size(max_bytes)
    assert size == expected
    assert -(-max_bytes // size) <= 10_000
