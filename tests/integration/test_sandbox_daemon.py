"""The sandbox daemon as users meet it: one per install (or PLANNER_SANDBOX_DIR), never another code's.

Each test starts real daemons through ``python -m planner.cli sandbox ...`` in child
processes, and the ``daemons`` fixture stops every one of them (by the pid its state
file recorded) whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import planner

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(
    r"^planner: started a sandbox \(state in (?P<dir>.+); stops by itself after 4 h or with `planner sandbox stop`\)"
    r"(; (?P<failing>\d+)% of its HealthOmics and Polly runs fail)?$"
)
USING = re.compile(r"^planner: using the sandbox started at \d\d:\d\d \(state in (?P<dir>.+)\)$")


class Daemons:
    """Runs the sandbox commands and remembers every daemon they started, to stop them all."""

    def __init__(self) -> None:
        self.state_dirs: list[Path] = []
        self.pids: set[int] = set()

    def cli(self, env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "planner.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
        )
        for line in result.stderr.splitlines():
            found = STARTED.match(line)
            if found:
                self.watch(Path(found["dir"]))
        return result

    def watch(self, state_dir: Path) -> None:
        if state_dir not in self.state_dirs:
            self.state_dirs.append(state_dir)
        state = read(state_dir)
        if state is not None:
            self.pids.add(state["pid"])

    def stop_all(self) -> None:
        for state_dir in self.state_dirs:
            state = read(state_dir)
            if state is not None:
                self.pids.add(state["pid"])
        for pid in self.pids:
            if running(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in self.pids) and time.monotonic() < deadline:
            time.sleep(0.1)


def read(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / "sandbox.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def running(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its new parent to reap it has stopped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).read()
    except OSError:
        return False
    return True


def wait_stopped(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not running(pid)


@pytest.fixture()
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    try:
        yield started
    finally:
        started.stop_all()


def environment(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PLANNER_SANDBOX_DIR"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.mark.slow
def test_two_sandbox_dirs_do_not_see_each_others_daemon(tmp_path: Path, daemons: Daemons) -> None:
    first = environment(PLANNER_SANDBOX_DIR=str(tmp_path / "first"))
    second = environment(PLANNER_SANDBOX_DIR=str(tmp_path / "second"))

    started = daemons.cli(first, "sandbox", "start", "--json")
    assert started.returncode == 0, started.stderr
    assert started.stderr.splitlines() == [
        f"planner: started a sandbox (state in {tmp_path / 'first'}; stops by itself after 4 h or with "
        "`planner sandbox stop`)"
    ]
    endpoints = json.loads(started.stdout)
    assert {"s3", "batch", "glue", "omics", "polly"} <= set(endpoints)

    assert daemons.cli(second, "sandbox", "status").stdout.startswith("no sandbox is running")
    assert daemons.cli(second, "sandbox", "stop").stdout.startswith("no sandbox was running")
    assert answers(endpoints["s3"])  # the other one was left alone

    again = daemons.cli(first, "sandbox", "start", "--json")
    assert json.loads(again.stdout) == endpoints
    (line,) = again.stderr.splitlines()
    assert USING.match(line) and USING.match(line)["dir"] == str(tmp_path / "first")

    pid = read(tmp_path / "first")["pid"]  # type: ignore[index]
    assert daemons.cli(first, "sandbox", "stop").stdout.strip() == "stopped"
    assert wait_stopped(pid), "planner sandbox stop left the daemon running"
    assert not answers(endpoints["s3"])
    assert daemons.cli(first, "sandbox", "status").stdout.startswith("no sandbox is running")


@pytest.mark.slow
def test_two_installs_get_a_sandbox_each(tmp_path: Path, daemons: Daemons) -> None:
    """A second clone's quick start does not pick up the first clone's sandbox, nor stop it."""
    home = tmp_path / "home"
    clones = [tmp_path / "clone-a", tmp_path / "clone-b"]
    for clone in clones:
        shutil.copytree(Path(planner.__file__).parent, clone / "planner", ignore=shutil.ignore_patterns("__pycache__"))
    env_a, env_b = (environment(HOME=str(home), PYTHONPATH=str(clone)) for clone in clones)

    started = daemons.cli(env_a, "sandbox", "start", cwd=clones[0])
    assert started.returncode == 0, started.stderr
    found = STARTED.match(started.stderr.strip())
    assert found and Path(found["dir"]).parent == home / ".cache" / "planner" / "sandbox"
    state_a = read(Path(found["dir"]))
    assert state_a is not None and state_a["package"] == str(clones[0] / "planner")

    assert daemons.cli(env_b, "sandbox", "status", cwd=clones[1]).stdout.startswith("no sandbox is running")
    assert daemons.cli(env_b, "sandbox", "stop", cwd=clones[1]).stdout.startswith("no sandbox was running")
    other = daemons.cli(env_b, "sandbox", "start", "--json", cwd=clones[1])
    found_b = STARTED.match(other.stderr.strip())
    assert found_b and found_b["dir"] != found["dir"]
    assert json.loads(other.stdout)["s3"] != state_a["endpoints"]["s3"]
    assert answers(state_a["endpoints"]["s3"])


@pytest.mark.slow
def test_a_sandbox_of_other_code_is_replaced_not_reused(tmp_path: Path, daemons: Daemons) -> None:
    env = environment(PLANNER_SANDBOX_DIR=str(tmp_path / "sandbox"))
    first = daemons.cli(env, "sandbox", "start")
    assert first.returncode == 0, first.stderr
    old = read(tmp_path / "sandbox")
    assert old is not None and old["code"].startswith(f"{planner.__version__}+")

    # As if the daemon had been started by other code (an older checkout, an edited install).
    (tmp_path / "sandbox" / "sandbox.json").write_text(json.dumps({**old, "code": "0.0.1+0123456789abcdef"}))
    second = daemons.cli(env, "sandbox", "start", "--json")
    assert second.returncode == 0, second.stderr
    lines = second.stderr.splitlines()
    assert len(lines) == 2
    assert re.match(
        r"^planner: the sandbox started at \d\d:\d\d runs other planner code \(0\.0\.1\+0123456789abcdef, "
        r"this is .+\): stopping it \(what it held is forgotten\) to start a new one$",
        lines[0],
    )
    assert STARTED.match(lines[1])
    new = read(tmp_path / "sandbox")
    assert new is not None and new["pid"] != old["pid"] and new["code"] == old["code"]
    assert wait_stopped(old["pid"]) and not answers(old["endpoints"]["s3"])
    assert json.loads(second.stdout) == new["endpoints"]


@pytest.mark.slow
def test_a_sandbox_whose_runs_fail_lets_a_user_try_retry(tmp_path: Path, daemons: Daemons) -> None:
    """`sandbox start --failure-rate`: some runs fail with a documented reason, `submit --watch` exits 1
    saying so, and the retry of the failed ones is planned; another rate replaces the sandbox."""
    env = environment(PLANNER_SANDBOX_DIR=str(tmp_path / "sandbox"))
    started = daemons.cli(env, "sandbox", "start", "--failure-rate", "0.5")
    assert started.returncode == 0, started.stderr
    (line,) = started.stderr.splitlines()
    assert STARTED.match(line) and STARTED.match(line)["failing"] == "50"
    plan_dir = tmp_path / "plan"
    sheet, defaults = ROOT / "sample_sheets/omics_batch_samples.csv", ROOT / "sample_sheets/omics_batch_defaults.toml"
    planned = daemons.cli(env, "plan", str(sheet), "-b", "omics-batch", "-d", str(defaults), "-o", str(plan_dir))
    assert planned.returncode == 0, planned.stderr
    watched = daemons.cli(env, "submit", str(plan_dir), "--sandbox", "--watch", "--interval", "0.5", "--json")
    assert watched.returncode == 1, watched.stderr
    summary = json.loads(watched.stdout.splitlines()[-1])
    failed = summary["counts"].get("FAILED", 0)
    assert 0 < failed < 12 and summary["counts"]["COMPLETED"] == 12 - failed
    assert sum(group["count"] for group in summary["failures"]) == failed
    assert all(re.match(r"[A-Z_]+: ", group["reason"]) for group in summary["failures"])  # code: message
    assert f"{failed} of 12 samples failed or were cancelled" in watched.stderr

    retried = daemons.cli(env, "retry", str(plan_dir), "--sandbox", "--out", str(tmp_path / "retry"))
    assert retried.returncode == 0, retried.stderr
    assert f"planned {failed} run{'s' if failed != 1 else ''} to retry" in retried.stdout

    same = daemons.cli(env, "sandbox", "start")  # no rate asked: the running one is used
    assert USING.match(same.stderr.splitlines()[0])
    other = daemons.cli(env, "sandbox", "start", "--failure-rate", "0")
    assert "fails 50% of its runs, not 0%: stopping it" in other.stderr
    assert read(tmp_path / "sandbox")["failure_rate"] == 0.0  # type: ignore[index]
    refused = daemons.cli(env, "sandbox", "status", "--failure-rate", "0.1")
    assert refused.returncode == 2 and "--failure-rate is for `planner sandbox start`" in refused.stderr
