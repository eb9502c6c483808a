"""Where `planner plan`'s memory goes: peak RSS per stage, and the whole plan measured from outside.

stages    runs `planner plan ARGS...` in this process with the plan's stages wrapped (nothing in
          the package changes): each time a stage starts or ends, the process's high-water RSS
          (``ru_maxrss``) and current RSS (/proc/self/statm) are read, and a thread samples the
          current RSS every few milliseconds.  Per stage: calls, seconds, RSS when it first
          started and when it last ended, the highest RSS sampled while it ran, and by how many MB
          the process's high-water mark rose while it was the innermost running stage (these add up
          to the peak, less the RSS at start-up).  Work on other threads (the read-ahead of the
          sheet, the shard writer's hashing lanes) counts in the stage the main thread is in.
outside   runs `/usr/bin/time -v planner plan ARGS...` N times, each in a fresh process: peak RSS
          (``Maximum resident set size``), wall, user and system seconds, as a user would see them.
hash      sha256 of every file of a plan directory, sorted by path: to compare the bytes of two plans.

    python benchmarks/gen_sheet.py --rows 1M --formats parquet,csv --out /tmp/sheets
    python benchmarks/memory_profile.py stages -- /tmp/sheets/sheet_1M.parquet -b omics-batch \\
        -d /tmp/sheets/defaults_omics_batch.toml -o /tmp/plan --force -q
    python benchmarks/memory_profile.py outside --repeat 3 -- /tmp/sheets/sheet_1M.parquet ...
    python benchmarks/memory_profile.py hash /tmp/plan

Run ``stages`` as its own process (this script and nothing else): ``ru_maxrss`` is the process's.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def rss_mb() -> float:
    """The process's resident set now (/proc/self/statm's second field)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE / MB


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


@dataclass
class StageStats:
    calls: int = 0
    seconds: float = 0.0
    first_rss: float | None = None
    last_rss: float = 0.0
    peak_sampled: float = 0.0
    raised: float = 0.0  # MB the high-water mark rose while this was the innermost stage


@dataclass
class Profile:
    stats: dict[str, StageStats] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=lambda: ["outside the plan command (start-up, imports, exit)"])
    last_max: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stage(self, name: str) -> StageStats:
        if name not in self.stats:
            self.stats[name] = StageStats()
            self.order.append(name)
        return self.stats[name]

    def _tick(self) -> None:
        """The high-water mark's rise since the last tick belongs to the innermost running stage."""
        now = maxrss_mb()
        self.stage(self.stack[-1]).raised += max(0.0, now - self.last_max)
        self.last_max = max(self.last_max, now)

    @contextlib.contextmanager
    def running(self, name: str) -> Iterator[None]:
        with self.lock:
            self._tick()
            stats = self.stage(name)
            stats.calls += 1
            if stats.first_rss is None:
                stats.first_rss = rss_mb()
            self.stack.append(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            with self.lock:
                self._tick()
                self.stack.pop()
                stats.seconds += time.perf_counter() - started
                stats.last_rss = rss_mb()

    def sample(self, stop: threading.Event, every: float = 0.003) -> None:
        while not stop.wait(every):
            now = rss_mb()
            with self.lock:
                stats = self.stage(self.stack[-1])
                stats.peak_sampled = max(stats.peak_sampled, now)


def _wrap(profile: Profile, owner: Any, attribute: str, name: str) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with profile.running(name):
            return original(*args, **kwargs)

    setattr(owner, attribute, wrapper)


def _wrap_generator(profile: Profile, owner: Any, attribute: str, name: str) -> None:
    """A generator's stage is the time spent producing each item, not the consumer's time between them."""
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        items = original(*args, **kwargs)
        while True:
            with profile.running(name):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item

    setattr(owner, attribute, wrapper)


def instrument(profile: Profile) -> None:
    """The stages of `planner plan`, innermost wins; names say what each does."""
    import importlib

    # By module path: ``planner.plan`` is also the name of the function the package exports.
    cli, earlier, outputs, plan, plandir, shard, spill = (
        importlib.import_module(f"planner.{name}")
        for name in ("cli", "earlier", "outputs", "plan", "plandir", "shard", "spill")
    )

    _wrap(profile, cli, "_plan", "plan command (outside the stages below)")
    _wrap(profile, plan, "load_defaults", "defaults: load and check")
    _wrap(profile, plan, "open_sheet", "sheet: open, sniff, schema, hash")
    _wrap(profile, plan, "resolve_workflow", "workflow template")
    _wrap(profile, earlier.EarlierRuns, "load", "earlier plans: load (--skip-done)")
    _wrap(profile, plan.Plan, "_query", "query: build (merge, validate, encode exprs)")
    _wrap_generator(profile, plan.Plan, "_collect", "stream: read + merge + validate + encode a batch")
    _wrap(profile, spill.IdHashes, "add", "spill: id hashes")
    _wrap(profile, outputs.LocationSpill, "add", "spill: output locations")
    _wrap(profile, spill.Spill, "add", "spill: samples (row, id, settings)")
    _wrap(profile, earlier.EarlierRuns, "sort", "earlier plans: compare a batch")
    _wrap(profile, shard.ShardWriter, "add", "shards: encode, hash, write")
    _wrap(profile, shard.ShardWriter, "close", "shards: close")
    _wrap(profile, plan.Plan, "_row_problems", "after the stream: bad rows' problems")
    _wrap(profile, spill.IdHashes, "suspects", "after the stream: repeated ids")
    _wrap(profile, outputs.LocationSpill, "shared", "after the stream: shared output locations")
    _wrap(profile, plan, "write_plan", "plan.json + samples.parquet")
    _wrap(profile, plandir, "_write_samples", "samples.parquet (from the spill)")
    _wrap(profile, plan, "_record", "plan.json: records added")
    _wrap(profile, earlier.EarlierRuns, "record", "earlier plans: summary")


def stages(planner_args: list[str]) -> int:
    profile = Profile()
    profile.last_max = maxrss_mb()
    profile.stage(profile.stack[0]).first_rss = 0.0
    import planner.cli

    instrument(profile)
    stop = threading.Event()
    sampler = threading.Thread(target=profile.sample, args=(stop,), daemon=True)
    sampler.start()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        code = planner.cli.main(["plan", *planner_args])
    finally:
        with profile.lock:
            profile._tick()
        stop.set()
        sampler.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"planner plan {' '.join(planner_args)}: exit {code}, {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)
    print(
        "| stage | calls | seconds | RSS MB at first start | RSS MB at last end "
        "| peak MB sampled in it | raised the peak by MB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in profile.order:
        s = profile.stats[name]
        first = "" if s.first_rss is None else f"{s.first_rss:.0f}"
        cells = [name, str(s.calls), f"{s.seconds:.2f}", first, f"{s.last_rss:.0f}"]
        print("| " + " | ".join([*cells, f"{s.peak_sampled:.0f}", f"{s.raised:.0f}"]) + " |")
    print(f"\npeak RSS (ru_maxrss of this process): {maxrss_mb():.0f} MB")
    return int(code or 0)


def _time_v(field_name: str, text: str) -> str:
    found = re.search(rf"{re.escape(field_name)}: (.*)", text)
    return found.group(1).strip() if found else "?"


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def outside(planner_args: list[str], repeat: int) -> int:
    exe = str(Path(sys.executable).with_name("planner"))
    print("| try | peak RSS MB | wall s | user s | sys s | CPU s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for attempt in range(1, repeat + 1):
        done = subprocess.run(
            ["/usr/bin/time", "-v", exe, "plan", *planner_args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        peak = int(_time_v("Maximum resident set size (kbytes)", done.stderr)) / 1024
        user = float(_time_v("User time (seconds)", done.stderr))
        system = float(_time_v("System time (seconds)", done.stderr))
        wall = _seconds(_time_v("Elapsed (wall clock) time (h:mm:ss or m:ss)", done.stderr))
        print(f"| {attempt} | {peak:.0f} | {wall:.2f} | {user:.2f} | {system:.2f} | {user + system:.2f} |", flush=True)
    return 0


def plan_hash(directory: str) -> int:
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        print(f"{digest.hexdigest()}  {path.relative_to(root)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["stages", "outside", "hash"])
    parser.add_argument("plan", nargs="?", help="hash: the plan directory")
    parser.add_argument("--repeat", type=int, default=1, help="outside: fresh processes to measure")
    given = sys.argv[1:] if argv is None else argv
    # planner plan's own arguments follow "--", untouched by this parser.
    split = given.index("--") if "--" in given else len(given)
    args = parser.parse_args(given[:split])
    rest = given[split + 1 :]
    if args.mode == "hash":
        if args.plan is None:
            parser.error("hash needs a plan directory")
        return plan_hash(args.plan)
    if not rest:
        parser.error(f"{args.mode} needs planner plan's arguments after --")
    return stages(rest) if args.mode == "stages" else outside(rest, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
