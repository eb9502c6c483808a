"""The documentation's shell blocks run as shown.

Every ```` ```bash ```` block of README.md and docs/*.md runs with ``bash``, in a fresh
directory holding a copy of ``sample_sheets/``, with this install's ``planner`` first on
``PATH`` and the test's own sandbox (``PLANNER_SANDBOX_DIR``, set by ``aws_environment``,
as are the dummy credentials that reach no account). A command followed by ``# exit N``
must exit with N; every other command must succeed. A block that cannot run offline says
why, as its first line (``# not run: REASON``) or in an HTML comment just above its fence
(``<!-- not run: REASON -->``, where the block must stay exactly as a user copies it): only
those are skipped, each listed by ``test_blocks_not_run``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

NOT_RUN = re.compile(r"^\s*(?:#|<!--)\s*not run:\s*(?P<reason>.*?)\s*(?:-->)?\s*$")
EXPECTED_EXIT = re.compile(r"^(?P<command>.*?)\s+#\s*exit (?P<code>\d+)\b")


@dataclass(frozen=True)
class ShellBlock:
    page: Path
    line: int  # of the opening fence, counting from 1
    text: str
    not_run: str | None  # the reason it is not run, or None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def shell_blocks(page: Path) -> list[ShellBlock]:
    blocks: list[ShellBlock] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```bash":
            index += 1
            continue
        start = index
        end = lines.index("```", start + 1)
        body = lines[start + 1 : end]
        above = lines[start - 1] if start else ""
        marker = NOT_RUN.match(body[0]) if body and body[0].lstrip().startswith("#") else None
        marker = marker or (NOT_RUN.match(above) if above.lstrip().startswith("<!--") else None)
        blocks.append(ShellBlock(page, start + 1, "\n".join(body), marker["reason"] if marker else None))
        index = end + 1
    return blocks


def script_of(block: ShellBlock) -> str:
    """The block as a bash script that stops at the first command whose exit status is not the documented one."""
    script = ["set -e -o pipefail"]
    for offset, line in enumerate(block.text.splitlines(), start=1):
        expected = EXPECTED_EXIT.match(line)
        if expected is None:
            script.append(line)
            continue
        code = int(expected["code"])
        where = f"{block.where} +{offset}"
        script.append(
            f"set +e; {expected['command']}; status=$?; set -e; "
            f'if [ "$status" -ne {code} ]; then echo "{where}: exit $status, the docs say {code}" >&2; exit 99; fi'
        )
    return "\n".join(script) + "\n"


ALL_BLOCKS = [block for page in PAGES for block in shell_blocks(page)]
PAGES_WITH_RUN_BLOCKS = sorted({block.page for block in ALL_BLOCKS if block.not_run is None})


def _environment() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "planner").exists(), f"no planner command beside {sys.executable}: install the project"
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_the_pages_have_blocks_to_run():
    assert ROOT / "README.md" in PAGES_WITH_RUN_BLOCKS
    assert len(PAGES_WITH_RUN_BLOCKS) >= 10, [str(page) for page in PAGES_WITH_RUN_BLOCKS]


@pytest.mark.parametrize("page", PAGES_WITH_RUN_BLOCKS, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_commands_a_page_shows_run(page: Path, tmp_path: Path):
    env = _environment()
    try:
        for number, block in enumerate(shell_blocks(page)):
            if block.not_run is not None:
                continue
            work = tmp_path / f"block-{number}"
            shutil.copytree(ROOT / "sample_sheets", work / "sample_sheets")
            ran = subprocess.run(
                ["bash", "-c", script_of(block)], cwd=work, env=env, capture_output=True, text=True, timeout=600
            )
            shown = f"{block.where}:\n{block.text}\n--- stdout\n{ran.stdout}\n--- stderr\n{ran.stderr}"
            assert ran.returncode == 0, shown
    finally:
        subprocess.run(["planner", "sandbox", "stop"], env=env, capture_output=True, timeout=120)


@pytest.mark.parametrize(
    "block", [block for block in ALL_BLOCKS if block.not_run is not None], ids=lambda block: block.where
)
def test_blocks_not_run(block: ShellBlock):
    assert block.not_run, f"{block.where}: a block not run says why"
    pytest.skip(f"{block.where} not run: {block.not_run}")


def test_an_unmarked_block_runs_and_a_marked_one_does_not(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\nplanner --version\n```\n\n"
        "```bash\n# not run: needs AWS\nplanner submit plan\n```\n\n"
        "<!-- not run: installs from PyPI -->\n```bash\npip install planner\n```\n",
        encoding="utf-8",
    )
    blocks = shell_blocks(page)
    found = [(block.line, block.not_run) for block in blocks]
    assert found == [(1, None), (5, "needs AWS"), (11, "installs from PyPI")]


def test_a_command_that_exits_otherwise_than_documented_fails_its_block(tmp_path: Path):
    block = ShellBlock(ROOT / "README.md", 1, "false   # exit 2: documented\ntrue", None)
    ran = subprocess.run(["bash", "-c", script_of(block)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 99 and "exit 1, the docs say 2" in ran.stderr
    unchecked = ShellBlock(ROOT / "README.md", 1, "false\ntrue", None)
    ran = subprocess.run(["bash", "-c", script_of(unchecked)], cwd=tmp_path, capture_output=True, timeout=60)
    assert ran.returncode == 1
