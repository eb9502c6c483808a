"""Benchmark ``planner plan --backend omics-batch`` against plain-Python baselines.

One command (from the repository root, with the project's venv)::

    .venv/bin/python benchmarks/run.py [--sizes 10k,100k,1M] [--formats csv,parquet]
                                       [--with-10m] [--big-shard] [--repeat N]

For every size and format it generates the sheet if missing (``gen_sheet.py``,
into ``benchmarks/data/``), then runs each measurement in a fresh child process
(``planner`` CLI or ``baselines.py``) under ``/usr/bin/time -f %M``: wall clock from the
parent, CPU time from ``os.wait4`` on that child, peak RSS from ``/usr/bin/time`` (see
``measure`` for why not ``ru_maxrss``).  Before the sweep it checks, at 10k rows, that the
orjson baseline writes the same entries as the planner.  Outputs go to ``benchmarks/out/``.

Methods:

``planner``       ``planner plan SHEET --backend omics-batch --defaults D --out OUT --quiet --force``
                  (OUT deleted first; process wall time, startup and imports included)
``stdlib``        csv.DictReader / pyarrow to_pylist, dict merge + validation per row,
                  ``json.dump`` per 100k chunk, md5 + sha256 of each file
``stdlib_dumps``  the same with ``json.dumps`` (the C encoder) instead of ``json.dump``
``orjson``        the same with ``orjson.dumps``
``floor``         rows already built in memory (untimed); times only orjson encode +
                  md5 + sha256 + write, measured inside the child

Results are merged into ``benchmarks/results/results.json`` (keyed by rows, format
and method; ``--fresh`` starts over) and plotted to ``benchmarks/results/throughput.png``
when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import contextlib  # noqa: E402 - after the sys.path line above

import gen_sheet  # noqa: E402 - after the sys.path line above

DATA = HERE / "data"
OUT = HERE / "out"
RESULTS = HERE / "results"
METHODS = ("planner", "stdlib", "stdlib_dumps", "orjson", "floor")
BIG_SHARD_MIN_FREE = 20e9  # bytes free on the disk before the full-size big shard is tried


def planner_exe() -> str:
    cand = Path(sys.executable).parent / "planner"
    if cand.exists():
        return str(cand)
    found = shutil.which("planner")
    if not found:
        raise SystemExit("cannot find the planner CLI next to this python or on PATH")
    return found


# -- measuring one child ----------------------------------------------------------------

TIME_BIN = "/usr/bin/time"


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_capped(pid: int, cap_mb: float) -> tuple[int, Any, float | None]:
    """wait4 that polls, and sends SIGTERM to the measured process (the child, or the
    grandchild under /usr/bin/time) if its RSS passes ``cap_mb``."""
    killed_at = None
    while True:
        wpid, status, ru = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            return status, ru, killed_at
        if killed_at is None:
            targets = _children(pid) or [pid]
            rss = sum(_rss_mb(t) for t in targets)
            if rss > cap_mb:
                killed_at = rss
                for t in targets:
                    with contextlib.suppress(OSError):
                        os.kill(t, signal.SIGTERM)
        time.sleep(0.1)


def measure(cmd: list[str], out: Path, log_name: str, rss_cap_mb: float | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh child; wall time from the parent, CPU time and peak RSS of that child.

    Peak RSS comes from ``/usr/bin/time -f %M``, not from the rusage ``os.wait4`` returns
    for our own child: Linux carries the parent's high-water RSS into a child across
    fork/vfork + exec (``signal->maxrss``), so wait4 would report at least this harness's
    own peak (a bare ``python -c pass`` shows 500 MB under a 500 MB parent).  The process
    that ``/usr/bin/time`` forks starts from a 2 MB parent.  Without /usr/bin/time the
    wait4 value is used and ``rss_source`` says so.

    With ``rss_cap_mb`` the child is polled (0.1 s) and stopped if its RSS passes the cap,
    so a runaway measurement cannot take the machine's memory from everything else.
    """
    if out.exists():
        shutil.rmtree(out)
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = logs / f"{log_name}.out", logs / f"{log_name}.err"
    load_before = os.getloadavg()[0]
    rss_file = logs / f"{log_name}.rss"
    use_time = os.access(TIME_BIN, os.X_OK)
    if use_time:
        rss_file.unlink(missing_ok=True)
        cmd = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *cmd]
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, cwd=ROOT)
        killed_at = None
        if rss_cap_mb is None:
            _, status, ru = os.wait4(proc.pid, 0)
        else:
            status, ru, killed_at = _wait_capped(proc.pid, rss_cap_mb)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rec: dict[str, Any] = {
        "cmd": " ".join(cmd),
        "rc": proc.returncode,
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024,  # KiB on Linux
        "rss_source": "wait4 (includes the harness's own peak)",
        "loadavg_1m_before": load_before,
    }
    if use_time:
        rec["cmd"] = " ".join(cmd[5:])
        try:
            rec["peak_rss_mb"] = int(rss_file.read_text().strip().splitlines()[-1]) / 1024
            rec["rss_source"] = "/usr/bin/time %M"
        except (OSError, ValueError, IndexError):
            pass
        if rss_file.exists() and "terminated by signal" in rss_file.read_text():
            rec["signal"] = int(rss_file.read_text().split("signal", 1)[1].split()[0])
    if killed_at is not None:
        rec["killed_at_rss_cap_mb"] = round(killed_at)
        rec["rss_cap_mb"] = rss_cap_mb
    rec["stdout"] = stdout_path.read_text(errors="replace")
    if proc.returncode != 0:
        rec["stderr"] = stderr_path.read_text(errors="replace")[-4000:]
    return rec


def run_planner(
    sheet: Path, defaults: Path, out: Path, log_name: str, rss_cap_mb: float | None = None
) -> dict[str, Any]:
    cmd = [
        planner_exe(),
        "plan",
        str(sheet),
        "--backend",
        "omics-batch",
        "--defaults",
        str(defaults),
        "--out",
        str(out),
        "--quiet",
        "--force",
    ]
    rec = measure(cmd, out, log_name, rss_cap_mb)
    rec.pop("stdout", None)
    if rec["rc"] == 0:
        plan = json.loads((out / "plan.json").read_text())
        rec["rows"] = plan["runs"]
        rec["out_bytes"] = sum(s["bytes"] for s in plan["shards"])
        rec["files"] = len(plan["shards"])
        rec["timed_s"] = rec["wall_s"]
    return rec


def run_baseline(method: str, sheet: Path, defaults: Path, out: Path, log_name: str) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "baselines.py"), method, str(sheet), str(defaults), str(out)]
    rec = measure(cmd, out, log_name)
    stdout = rec.pop("stdout", "")
    if rec["rc"] == 0:
        res = json.loads(stdout.strip().splitlines()[-1])
        rec["rows"] = res["rows"]
        rec["out_bytes"] = res["bytes"]
        rec["files"] = len(res["files"])
        rec["timed_s"] = res["timed_s"]  # inside the child, after imports (floor: encode+hash+write only)
        if "build_s" in res:
            rec["build_s"] = res["build_s"]
    return rec


def one(method: str, rows: int, fmt: str, sheet: Path, defaults: Path, repeat: int, keep_out: bool) -> dict[str, Any]:
    out = OUT / f"{method}_{gen_sheet.label(rows)}_{fmt}"
    tries = []
    for k in range(repeat):
        log_name = f"{method}_{gen_sheet.label(rows)}_{fmt}_{k}"
        if method == "planner":
            rec = run_planner(sheet, defaults, out, log_name)
        else:
            rec = run_baseline(method, sheet, defaults, out, log_name)
        tries.append(rec)
        if rec["rc"] != 0:
            break
    if not keep_out and out.exists():
        shutil.rmtree(out)
    ok = [t for t in tries if t["rc"] == 0]
    if not ok:
        rec = dict(tries[-1])
    else:
        # the median try by the time that counts (floor: timed_s; others: process wall)
        key = "timed_s" if method == "floor" else "wall_s"
        ok.sort(key=lambda t: t[key])
        rec = dict(ok[(len(ok) - 1) // 2])
        rec["tries_s"] = [round(t[key], 4) for t in tries]
        rec["peak_rss_mb_max"] = max(t["peak_rss_mb"] for t in ok)
        secs = rec["timed_s"] if method == "floor" else rec["wall_s"]
        rec["seconds"] = secs
        rec["rows_per_s"] = rec["rows"] / secs
        rec["out_mb_per_s"] = rec["out_bytes"] / 1e6 / secs
        if rec["rows"] != rows:
            rec["warning"] = f"wrote {rec['rows']} runs for {rows} rows"
    rec.update(
        {"method": method, "format": fmt, "n": rows, "size": gen_sheet.label(rows), "sheet_bytes": sheet.stat().st_size}
    )
    return rec


def check_equivalence(fmt: str, defaults: Path, rows: int = 10_000) -> dict[str, Any]:
    """Plan a small sheet with the planner and the orjson baseline; compare the entries."""
    import orjson

    sheet = gen_sheet.write_sheet(rows, [fmt], DATA)[fmt]
    p_out, b_out = OUT / f"check_planner_{fmt}", OUT / f"check_orjson_{fmt}"
    res: dict[str, Any] = {"format": fmt, "n": rows}
    p = run_planner(sheet, defaults, p_out, f"check_planner_{fmt}")
    b = run_baseline("orjson", sheet, defaults, b_out, f"check_orjson_{fmt}")
    if p["rc"] != 0 or b["rc"] != 0:
        res.update(
            ok=False,
            error=f"planner rc={p['rc']}, baseline rc={b['rc']}: "
            + (p.get("stderr") or b.get("stderr") or "").strip()[-500:],
        )
    else:
        plan = json.loads((p_out / "plan.json").read_text())
        mine = [e for s in plan["shards"] for e in orjson.loads((p_out / s["path"]).read_bytes())]
        theirs = [e for f in sorted(b_out.glob("*.json")) for e in orjson.loads(f.read_bytes())]
        diff = [i for i, (x, y) in enumerate(zip(mine, theirs, strict=False)) if x != y or list(x) != list(y)]
        res.update(
            ok=len(mine) == len(theirs) and not diff,
            planner_entries=len(mine),
            baseline_entries=len(theirs),
            differing=len(diff),
        )
        if diff:
            res["first_difference"] = {"planner": mine[diff[0]], "baseline": theirs[diff[0]]}
    for d in (p_out, b_out):
        shutil.rmtree(d, ignore_errors=True)
    return res


# -- machine and code identity ----------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }
    with contextlib.suppress(AttributeError):
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gb"] = round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    for mod in ("polars", "pyarrow", "orjson"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            info[mod] = None
    return info


def code_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        info["git_head"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "planner"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout
        info["planner_uncommitted_files"] = len(dirty.splitlines())
    except OSError:
        pass
    digest = hashlib.sha256()
    for p in sorted((ROOT / "planner").rglob("*.py")):
        digest.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes())
    info["planner_source_sha256"] = digest.hexdigest()[:16]
    return info


# -- results ------------------------------------------------------------------------------


def load_results(fresh: bool) -> dict[str, Any]:
    path = RESULTS / "results.json"
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    return {"runs": []}


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["n"], r["format"], r["method"]): r for r in runs if r.get("rc") == 0}
    out = []
    for (n, fmt, method), r in sorted(by.items()):
        if method != "planner":
            continue
        row: dict[str, Any] = {"n": n, "size": gen_sheet.label(n), "format": fmt, "planner_s": r["wall_s"]}
        for base in ("stdlib", "stdlib_dumps", "orjson"):
            b = by.get((n, fmt, base))
            if b:
                row[f"{base}_s"] = b["wall_s"]
                row[f"speedup_vs_{base}"] = b["wall_s"] / r["wall_s"]
        f = by.get((n, fmt, "floor"))
        if f:
            row["floor_s"] = f["timed_s"]
            row["planner_over_floor"] = r["wall_s"] / f["timed_s"]
        out.append(row)
    return out


def memory_scaling(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Planner peak RSS at each size over its peak at 1M rows (same format)."""
    by = {(r["n"], r["format"]): r for r in runs if r.get("rc") == 0 and r["method"] == "planner"}
    out = []
    for (n, fmt), r in sorted(by.items()):
        base = by.get((1_000_000, fmt))
        if base and n > 1_000_000:
            out.append(
                {
                    "n": n,
                    "format": fmt,
                    "peak_rss_mb": r["peak_rss_mb"],
                    "peak_rss_mb_1m": base["peak_rss_mb"],
                    "ratio_to_1m": r["peak_rss_mb"] / base["peak_rss_mb"],
                }
            )
    return out


def markdown_table(doc: dict[str, Any]) -> str:
    lines = [
        "| rows | format | method | seconds | rows/s | output MB/s | peak RSS MB | output MB |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(doc["runs"], key=lambda r: (r["n"], r["format"], METHODS.index(r["method"]))):
        if r.get("rc") != 0:
            lines.append(f"| {r['size']} | {r['format']} | {r['method']} | failed (exit {r.get('rc')}) | | | | |")
            continue
        secs = f"{r['seconds']:.2f}" + (" (timed part)" if r["method"] == "floor" else "")
        lines.append(
            f"| {r['size']} | {r['format']} | {r['method']} | {secs} | {r['rows_per_s']:,.0f} | "
            f"{r['out_mb_per_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['out_bytes'] / 1e6:,.0f} |"
        )
    lines += [
        "",
        "| rows | format | planner s | vs stdlib (json.dump) | vs stdlib (json.dumps) | vs orjson | planner / floor |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc.get("ratios", []):

        def x(k: str, r: dict[str, Any] = r) -> str:
            return f"{r[k]:.2f}x" if k in r else ""

        lines.append(
            f"| {r['size']} | {r['format']} | {r['planner_s']:.2f} | {x('speedup_vs_stdlib')} | "
            f"{x('speedup_vs_stdlib_dumps')} | {x('speedup_vs_orjson')} | {x('planner_over_floor')} |"
        )
    return "\n".join(lines)


def write_results(doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc["ratios"] = ratios(doc["runs"])
    doc["memory_scaling"] = memory_scaling(doc["runs"])
    path = RESULTS / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def plot(doc: dict[str, Any]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: skipping the plot (pip install matplotlib into the venv to draw it)",
            file=sys.stderr,
        )
        return None
    runs = [r for r in doc["runs"] if r.get("rc") == 0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = {
        "planner": "tab:blue",
        "stdlib": "tab:red",
        "stdlib_dumps": "tab:orange",
        "orjson": "tab:green",
        "floor": "tab:gray",
    }
    styles = {"csv": "--", "parquet": "-"}
    markers = {"csv": "s", "parquet": "o"}
    for method in METHODS:
        for fmt in ("csv", "parquet"):
            pts = sorted(
                (r["n"], r["rows_per_s"], r["peak_rss_mb"])
                for r in runs
                if r["method"] == method and r["format"] == fmt
            )
            if not pts:
                continue
            xs = [p[0] for p in pts]
            name = "floor (rows prebuilt)" if method == "floor" else method
            kw = {
                "color": colours[method],
                "linestyle": styles[fmt],
                "marker": markers[fmt],
                "label": f"{name} ({fmt})",
            }
            ax1.plot(xs, [p[1] for p in pts], **kw)
            ax2.plot(xs, [p[2] for p in pts], **kw)
    big = doc.get("big_shard")
    if big and big.get("rc") == 0:
        note = (
            f"big shard: {big['n']:,} runs, one {big['out_bytes'] / 1e9:.2f} GB shard\n"
            f"planner {big['wall_s']:.0f} s, peak RSS {big['peak_rss_mb']:,.0f} MB"
        )
        ax2.text(
            0.98,
            0.02,
            note,
            transform=ax2.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "lavender", "alpha": 0.8},
        )
    ax1.set(
        xscale="log", yscale="log", xlabel="rows", ylabel="rows / s (floor: encode+hash+write only)", title="throughput"
    )
    ax2.set(xscale="log", xlabel="rows", ylabel="peak RSS (MB)", title="peak memory (one process per measurement)")
    ax2.axhline(1000, color="black", linewidth=0.6, linestyle=":")
    ax2.text(ax2.get_xlim()[0], 1000, " 1 GB", va="bottom", fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left")
    m = doc.get("machine", {})
    fig.suptitle(
        f"planner plan --backend omics-batch vs plain Python - {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('ram_gb', '?')} GB RAM, polars {m.get('polars', '?')}",
        fontsize=9,
    )
    fig.tight_layout()
    path = RESULTS / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- main ---------------------------------------------------------------------------------


def fmt_row(r: dict[str, Any]) -> str:
    if r.get("rc") != 0:
        last = (r.get("stderr") or "").strip().splitlines()[-1:]
        return f"{r['size']:>5} {r['format']:<8} {r['method']:<13} FAILED rc={r.get('rc')}: {last}"
    return (
        f"{r['size']:>5} {r['format']:<8} {r['method']:<13} {r['seconds']:9.3f} s {r['rows_per_s']:>12,.0f} rows/s "
        f"{r['out_mb_per_s']:8.1f} MB/s {r['peak_rss_mb']:8.0f} MB RSS"
    )


def big_shard(doc: dict[str, Any], defaults: Path, keep_out: bool, rows_text: str | None, rss_cap_mb: float) -> None:
    free = shutil.disk_usage(HERE).free
    rows = gen_sheet.parse_rows(rows_text) if rows_text else 100_000
    scaled = None
    if rows_text is None and free < BIG_SHARD_MIN_FREE:
        rows = max(1_000, int(100_000 * free / BIG_SHARD_MIN_FREE / 1_000) * 1_000)
        scaled = f"only {free / 1e9:.1f} GB free (< {BIG_SHARD_MIN_FREE / 1e9:.0f} GB): scaled to {rows} runs"
        print(f"big shard: {scaled}", file=sys.stderr)
    print(
        f"big shard: generating {rows} runs x ~57.5 KB of parameters (disk free {free / 1e9:.0f} GB)", file=sys.stderr
    )
    t = time.perf_counter()
    sheet = gen_sheet.write_big_sheet(rows, DATA)
    print(f"  {sheet} ({sheet.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    out = OUT / f"planner_big_shard_{gen_sheet.label(rows)}"
    rec = run_planner(sheet, defaults, out, f"planner_big_shard_{gen_sheet.label(rows)}", rss_cap_mb)
    rec["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    rec["planner_source_sha256"] = code_info()["planner_source_sha256"]
    rec.update(
        {
            "method": "planner",
            "format": "parquet",
            "n": rows,
            "sheet_bytes": sheet.stat().st_size,
            "free_disk_gb": round(free / 1e9, 1),
        }
    )
    if scaled:
        rec["scaled"] = scaled
    if rec["rc"] == 0:
        plan = json.loads((out / "plan.json").read_text())
        rec["shards"] = [{k: s[k] for k in ("entries", "bytes", "part_size", "etag")} for s in plan["shards"]]
        rec["rows_per_s"] = rec["rows"] / rec["wall_s"]
        rec["out_mb_per_s"] = rec["out_bytes"] / 1e6 / rec["wall_s"]
        print(
            f"  planner: {rec['wall_s']:.1f} s, {rec['out_bytes'] / 1e9:.2f} GB in {len(plan['shards'])} shard(s), "
            f"peak RSS {rec['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
        )
    else:
        why = (
            f" (stopped by the harness at {rec['killed_at_rss_cap_mb']} MB RSS, cap {rss_cap_mb:.0f} MB)"
            if "killed_at_rss_cap_mb" in rec
            else ""
        )
        print(f"  planner FAILED rc={rec['rc']}{why}: {rec.get('stderr', '')[-2000:]}", file=sys.stderr)
    if not keep_out:
        if out.exists():
            shutil.rmtree(out)
        for tmp in OUT.glob(f".{out.name}.tmp-*"):  # left behind by a plan that was stopped
            shutil.rmtree(tmp, ignore_errors=True)
    doc["big_shard"] = rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("--sizes", default="10k,100k,1M", help="comma-separated row counts (default 10k,100k,1M)")
    ap.add_argument("--formats", default="csv,parquet")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    ap.add_argument(
        "--with-10m", action="store_true", help="also 10M rows (formats per --formats-10m, methods per --methods-10m)"
    )
    ap.add_argument("--formats-10m", default="parquet", help="formats at 10M rows (default parquet)")
    ap.add_argument(
        "--methods-10m",
        default="planner,orjson",
        help="methods run at 10M rows (default planner,orjson; the floor holds all rows in memory)",
    )
    ap.add_argument(
        "--big-shard",
        action="store_true",
        help="also plan one ~5.8 GB shard (100,000 runs x ~57.5 KB); needs ~20 GB of disk",
    )
    ap.add_argument(
        "--big-rss-cap-mb",
        type=float,
        default=None,
        help="stop the big-shard plan if its RSS passes this (default: half the RAM, at most 12 GB)",
    )
    ap.add_argument(
        "--big-rows", default=None, help="runs in the big shard (default 100k, scaled down when disk is short)"
    )
    ap.add_argument("--only-big-shard", action="store_true", help="skip the size sweep")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is kept")
    ap.add_argument("--repeat-10m", type=int, default=1, help="runs per measurement at 10M rows (default 1)")
    ap.add_argument("--fresh", action="store_true", help="start results.json over instead of merging into it")
    ap.add_argument("--keep-out", action="store_true", help="keep the plan/baseline outputs in benchmarks/out/")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--no-check",
        action="store_true",
        help="skip checking, at 10k rows, that the baselines write the same entries as the planner",
    )
    ap.add_argument("--table", action="store_true", help="print results.json as Markdown tables and exit")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from results.json and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table(load_results(False)))
        return 0
    if args.plot_only:
        plot(load_results(False))
        return 0

    methods = [m for m in args.methods.split(",") if m]
    bad = set(methods) - set(METHODS)
    if bad:
        ap.error(f"unknown methods: {', '.join(sorted(bad))}")
    formats = [f for f in args.formats.split(",") if f]
    sizes = [gen_sheet.parse_rows(s) for s in args.sizes.split(",") if s]
    plan_list = [(n, methods, formats) for n in sizes]
    if args.with_10m:
        plan_list.append(
            (10_000_000, [m for m in args.methods_10m.split(",") if m], [f for f in args.formats_10m.split(",") if f])
        )
    if args.only_big_shard:
        plan_list = []

    doc = load_results(args.fresh)
    doc["machine"] = machine_info()
    doc["code"] = code_info()
    doc["sheets"] = {
        "seed": gen_sheet.SEED,
        "columns": gen_sheet.COLUMNS,
        "empty_cells": "about 1 in 3 of every non-id column (null in Parquet, empty in CSV)",
        "parquet_row_group_rows": gen_sheet.CHUNK_ROWS,
        "big_shard": {
            "parameters": gen_sheet.BIG_PARAMS,
            "uris_per_parameter": gen_sheet.BIG_PIECES,
            "row_group_rows": gen_sheet.BIG_ROW_GROUP,
        },
    }
    doc.setdefault("notes", {})["method_defs"] = {
        "planner": "planner plan SHEET --backend omics-batch --defaults D --out OUT --quiet --force; process wall time",
        "stdlib": "csv.DictReader / pyarrow iter_batches+to_pylist; per-row dict merge + validation; "
        "json.dump per 100k chunk; md5+sha256 (file read back); process wall time",
        "stdlib_dumps": "as stdlib, json.dumps(...).encode() hashed in memory then written",
        "orjson": "as stdlib, orjson.dumps hashed in memory then written",
        "floor": "entries prebuilt in memory (untimed); timed_s = orjson.dumps + md5 + sha256 + write per 100k chunk",
    }
    defaults = gen_sheet.write_defaults(DATA)
    print(f"machine: {doc['machine']}", file=sys.stderr)

    if not args.no_check and plan_list:
        doc["equivalence"] = []
        for fmt in sorted({f for _, _, fs in plan_list for f in fs}):
            res = check_equivalence(fmt, defaults)
            doc["equivalence"].append(res)
            state = "same entries" if res["ok"] else f"DIFFERENT: {res.get('error') or res.get('first_difference')}"
            print(f"check {fmt}: planner vs orjson baseline at 10k rows: {state}", file=sys.stderr)

    for n, meths, fmts in plan_list:
        t = time.perf_counter()
        sheets = gen_sheet.write_sheet(n, fmts, DATA)
        print(
            f"sheet {gen_sheet.label(n)}: "
            f"{', '.join(f'{p.name} {p.stat().st_size / 1e6:.0f} MB' for p in sheets.values())} "
            f"({time.perf_counter() - t:.1f} s)",
            file=sys.stderr,
        )
        for fmt in fmts:
            for method in meths:
                rec = one(
                    method,
                    n,
                    fmt,
                    sheets[fmt],
                    defaults,
                    args.repeat_10m if n >= 10_000_000 else args.repeat,
                    args.keep_out,
                )
                rec["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                rec["planner_source_sha256"] = code_info()["planner_source_sha256"]
                print(fmt_row(rec), file=sys.stderr)
                doc["runs"] = [r for r in doc["runs"] if (r["n"], r["format"], r["method"]) != (n, fmt, method)] + [rec]
                write_results(doc)

    if args.big_shard:
        cap = args.big_rss_cap_mb
        if cap is None:
            cap = min(12_000.0, doc["machine"].get("ram_gb", 16) * 1e9 / 2 / 2**20)
        big_shard(doc, defaults, args.keep_out, args.big_rows, cap)
        write_results(doc)

    doc["runs"].sort(key=lambda r: (r["n"], r["format"], METHODS.index(r["method"])))
    path = write_results(doc)
    print(f"results: {path}", file=sys.stderr)
    for r in doc["ratios"]:
        parts = [f"{r['size']:>5} {r['format']:<8}"]
        for base in ("stdlib", "stdlib_dumps", "orjson"):
            if f"speedup_vs_{base}" in r:
                parts.append(f"{r[f'speedup_vs_{base}']:.2f}x faster than {base}")
        if "planner_over_floor" in r:
            parts.append(f"{r['planner_over_floor']:.2f}x the floor")
        print("  ".join(parts), file=sys.stderr)
    if not args.no_plot:
        p = plot(doc)
        if p:
            print(f"plot: {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
