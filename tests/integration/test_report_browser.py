"""The HTML report in a real browser: Debian's headless Chromium loads the file with the network
off, and the numbers it renders must equal those of the input table.

How the browser is cut off from the network: an empty network namespace (``unshare -n``, when
this process may create one, as root in CI) and, always, ``--host-resolver-rules`` mapping every
host to NOTFOUND, plus the flags that stop Chromium's own background fetches.  The page's own
Content-Security-Policy forbids every fetch as well.

How errors are seen, two ways: the page records uncaught errors, rejected promises,
``console.error`` calls and every request its policy blocked into the DOM (``data-errors`` on
<body>, the text of ``#page-errors``), read back with ``--dump-dom``; and Chromium's own log
(``--enable-logging=stderr``) prints each console message of the page as an ``INFO:CONSOLE``
line, all of which must be absent.  ``data-resources`` on <body> counts what the page fetched
(``performance.getEntriesByType("resource")``): it must be 0.

Without Chromium the tests fail when CI is set (``.ci/run`` installs it) and skip, saying why,
elsewhere.  Timings are printed, never asserted.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import polars as pl
import pytest

from planner.commands.report import NOT_SUBMITTED, TABLE_SCHEMA, render_report, unexplained

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
INSTALL = "apt-get install -y chromium (Debian's package; .ci/run installs it as root when it is missing)"
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox will not start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
    "--dump-dom",
)
CONSOLE_LINE = re.compile(r':CONSOLE[^\]]*\] "(?P<message>.*)", source: (?P<source>\S*)')

HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_IMG = '"><img src=x onerror="document.title=1">'
REGION = "eu-west-1"


# --- the browser ---------------------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, test: Callable[[Node], bool]) -> list[Node]:
        return [node for node in self.walk() if test(node)]

    def by_id(self, element_id: str) -> Node:
        found = self.find_all(lambda n: n.attrs.get("id") == element_id)
        assert len(found) == 1, f"expected one #{element_id} in the rendered page, found {len(found)}"
        return found[0]

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()


class _TreeBuilder(HTMLParser):
    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.open: list[Node] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(node)
        if tag not in self.VOID:
            self.open.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


@dataclass
class Loaded:
    """A page as Chromium rendered it: its DOM after load, and the console lines it logged."""

    dom: Node
    console: list[str]
    seconds: float

    @property
    def body(self) -> Node:
        return self.dom.find_all(lambda n: n.tag == "body")[0]


@dataclass
class Browser:
    executable: str
    isolated: bool  # in an empty network namespace

    def load(self, page: Path, fragment: str = "") -> Loaded:
        url = page.resolve().as_uri()
        prefix = ["unshare", "--net"] if self.isolated else []
        with tempfile.TemporaryDirectory(prefix="planner-chromium-") as profile:
            command = [*prefix, self.executable, *FLAGS, f"--user-data-dir={profile}", url + fragment]
            started = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
            except subprocess.TimeoutExpired:
                pytest.fail(f"Chromium did not finish loading {url} within 240 s")
            seconds = time.perf_counter() - started
        if done.returncode != 0 or "<body" not in done.stdout:
            pytest.fail(f"Chromium failed on {url} (exit {done.returncode}):\n{done.stderr[-3000:]}")
        builder = _TreeBuilder()
        builder.feed(done.stdout)
        # Only the page's own messages: Chromium's internal pages log too (e.g. chrome://omnibox).
        console = [
            f"{m['message']} ({m['source']})" for m in CONSOLE_LINE.finditer(done.stderr) if m["source"].startswith(url)
        ]
        return Loaded(builder.root, console, seconds)


@functools.cache
def _network_namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def require_chromium() -> Browser:
    """Debian's Chromium; without it a test fails under CI and skips elsewhere, saying why.
    Called in each test's body, not as a fixture, so that under CI it shows as a failure."""
    # PLANNER_CHROMIUM names another Chromium build to use (and, set to a missing path, shows what CI does without one).
    candidates = [os.environ["PLANNER_CHROMIUM"]] if os.environ.get("PLANNER_CHROMIUM") else CHROMIUM
    executable = next((found for name in candidates if (found := shutil.which(name))), None)
    if executable is None:
        message = (
            f"headless Chromium is needed to test the HTML report and was not found (looked for "
            f"{', '.join(candidates)}); install it with: {INSTALL}"
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run this test: never pass or skip it there
        pytest.skip(message)
    return Browser(executable, isolated=_network_namespace_works())


# --- reports to load -------------------------------------------------------------------------

STATES = ["COMPLETED", "COMPLETED", "COMPLETED", "RUNNING", "FAILED", None, "CANCELLED", "FAILED", "PENDING"]
REASONS = ["Essential container in task exited", None, "OutOfMemoryError: killed <oom> & gone", "  "]


def make_table(samples: int) -> pl.DataFrame:
    """``samples`` rows in the contract's schema; the first rows carry hostile ids."""
    i = pl.int_range(0, samples, dtype=pl.Int64, eager=True)
    hostile = {0: HOSTILE_ID, 3: HOSTILE_IMG}
    base = pl.DataFrame(
        {
            "i": i,
            "id": pl.Series([hostile.get(k, f"SAMPLE_{k:06d}") for k in range(samples)], dtype=pl.String),
            "state": pl.Series(STATES, dtype=pl.String).gather(i % len(STATES)),
            "reason": pl.Series(REASONS, dtype=pl.String).gather((i // len(STATES)) % len(REASONS)),
        }
    )
    shard = pl.col("i") // 5000
    return base.select(
        row=pl.col("i") + 2,
        id="id",
        shard=shard,
        position=pl.col("i") % 5000,
        submission_id="batch-" + shard.cast(pl.String),
        remote_id=(pl.col("i") + 7_000_000).cast(pl.String),
        remote_uuid=pl.lit(None),
        submission_status=pl.lit("SUCCESS"),
        state="state",
        reason=pl.when(pl.col("state").is_in(["FAILED", "CANCELLED"])).then("reason"),
        log=pl.lit(None),
        updated_at=pl.lit("2026-12-03T07:10:00+00:00"),
    ).cast(TABLE_SCHEMA)


MANIFEST = {
    "format": 1,
    "backend": "omics-batch",
    "plan_id": "5e1f0c0ffee0ddba11c0ffee",
    "runs": 0,
    "defaults": {"workflowId": "1234567", "parameters": {"reference": "s3://refs/<hg38>.fa"}},
    "submission": {"batchName": "cohort-2026-12"},
    "sheet": {"path": "/data/cohort.csv", "sha256": "ab" * 32, "rows": 0},
    "options": {"max_entries": 100000},
    "shards": [{"index": 0, "mode": "s3", "entries": 0, "bytes": 1234, "sha256": "cd" * 32, "etag": '"e-1"'}],
}
HISTORY = [
    ("2026-12-03T07:00:00Z", {NOT_SUBMITTED: 2000}),
    ("2026-12-03T07:05:00Z", {"PENDING": 1500, NOT_SUBMITTED: 500}),
    ("2026-12-03T07:10:00Z", {"RUNNING": 1200, "PENDING": 400, "COMPLETED": 400}),
]


def write_report(table: pl.DataFrame, out: Path, **options: object) -> Path:
    manifest = {**MANIFEST, "runs": table.height, "sheet": {**MANIFEST["sheet"], "rows": table.height}}
    render_report(manifest, table, HISTORY, str(out), region=REGION, submitted_at="2026-12-03T07:00:00Z", **options)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path]:
    table = make_table(2000)
    return table, write_report(table, tmp_path_factory.mktemp("report") / "report.html")


# --- what the page must show -------------------------------------------------------------------


def expected_counts(table: pl.DataFrame) -> dict[str, int]:
    counts = table.group_by(pl.col("state").fill_null(NOT_SUBMITTED)).len()
    return dict(counts.iter_rows())


def expected_failures(table: pl.DataFrame) -> dict[str, int]:
    failed = table.filter(pl.col("state").is_in(["FAILED", "CANCELLED"]) | (pl.col("submission_status") == "FAILED"))
    keys = [
        r.strip() if r and r.strip() else unexplained(state)
        for state, r in failed.select("state", "reason").iter_rows()
    ]
    return dict(pl.Series(keys, dtype=pl.String).value_counts().iter_rows())


def assert_clean(page: Loaded) -> None:
    body = page.body
    errors = page.dom.by_id("page-errors")
    assert body.attrs.get("data-ready") == "1", "the page's load handler did not run"
    assert body.attrs.get("data-errors") == "0", f"the page recorded errors:\n{errors.text()}"
    assert "hidden" in errors.attrs
    assert page.console == [], "the page logged to the console:\n" + "\n".join(page.console)
    assert body.attrs.get("data-resources") == "0", "the page fetched something: it must be self-contained"


def number(node: Node) -> int:
    return int(node.text().strip().replace(",", ""))


def cells(row: Node) -> list[Node]:
    return [c for c in row.children if isinstance(c, Node) and c.tag == "td"]


def data_rows(table: Node) -> list[Node]:
    return table.find_all(lambda n: n.tag == "tr" and bool(cells(n)))


def test_report_renders_offline_with_the_table_numbers(report: tuple[pl.DataFrame, Path]) -> None:
    browser = require_chromium()
    table, path = report
    page = browser.load(path)
    assert_clean(page)
    dom = page.dom

    # State counts: the attribute and the text a reader sees, both equal to the table's.
    rows = dom.by_id("state-counts").find_all(lambda n: n.tag == "tr" and "data-state" in n.attrs)
    shown = {}
    for row in rows:
        count = row.find_all(lambda n: n.has_class("count"))[0]
        assert int(count.attrs["data-count"]) == number(count)
        shown[row.attrs["data-state"]] = number(count)
    assert shown == expected_counts(table)
    assert number(dom.by_id("total-samples")) == table.height == 2000

    # Failures by reason.
    failures = {}
    for row in data_rows(dom.by_id("failure-groups")):
        reason, count, _ = cells(row)
        failures[reason.text()] = number(count)
    assert failures == expected_failures(table)
    assert int(dom.by_id("failures-total").attrs["data-count"]) == sum(failures.values())

    # The per-sample table: the first page of 100, the hostile ids shown as text, console links built.
    status = dom.by_id("sample-status")
    assert (status.attrs["data-matching"], status.attrs["data-rendered"]) == ("2000", "100")
    assert "samples 1–100 of 2,000" in status.text()
    body_rows = data_rows(dom.by_id("sample-table"))
    assert len(body_rows) == 100
    assert [c.text() for c in cells(body_rows[0])][:3] == ["2", HOSTILE_ID, "COMPLETED"]
    assert cells(body_rows[3])[1].text() == HOSTILE_IMG
    assert not dom.find_all(lambda n: n.tag == "img"), "an id was parsed as HTML"
    links = [a.attrs["href"] for a in body_rows[0].find_all(lambda n: n.tag == "a")]
    assert links == [f"https://{REGION}.console.aws.amazon.com/omics/home?region={REGION}#/runs/7000000"]
    assert dom.find_all(lambda n: n.tag == "title")[0].text().startswith("planner report")

    # Both charts drawn by plotly.js: an SVG with one bar per state, and the progress chart.
    bars = dom.by_id("chart-states").find_all(lambda n: n.tag == "g" and n.has_class("point"))
    assert len(bars) == len(shown)
    assert dom.by_id("chart-progress").find_all(lambda n: n.tag == "svg" and n.has_class("main-svg"))
    print(
        f"\n2,000 samples: {path.stat().st_size:,} bytes, table at {page.body.attrs['data-table-ms']} ms, "
        f"loaded at {page.body.attrs['data-load-ms']} ms, network namespace: {browser.isolated}"
    )


def test_state_filter_and_search_from_the_address(report: tuple[pl.DataFrame, Path]) -> None:
    browser = require_chromium()
    table, path = report
    failed = table.filter(pl.col("state") == "FAILED").height
    page = browser.load(path, "#state=FAILED&page=2")
    assert_clean(page)
    status = page.dom.by_id("sample-status")
    assert status.attrs["data-matching"] == str(failed)
    assert status.attrs["data-page"] == "2"
    shown = data_rows(page.dom.by_id("sample-table"))
    assert len(shown) == min(100, failed - 100)
    assert {cells(row)[2].text() for row in shown} == {"FAILED"}

    text = "<oom>"
    searched = table.filter(
        pl.any_horizontal(pl.col(c).str.to_lowercase().str.contains(text, literal=True) for c in ("id", "reason"))
    ).height
    page = browser.load(path, "#q=" + quote(text, safe=""))
    assert_clean(page)
    assert page.dom.by_id("sample-status").attrs["data-matching"] == str(searched) != "0"


def test_the_checks_see_errors_and_fetches(report: tuple[pl.DataFrame, Path], tmp_path: Path) -> None:
    """The harness is not blind: a page that fetches and throws is caught by every check."""
    browser = require_chromium()
    _, path = report
    broken = tmp_path / "broken.html"
    bad = '<img src="http://cdn.example.com/x.png"><script>fetch("https://cdn.example.com/a.js"); missing();</script>'
    broken.write_text(path.read_text(encoding="utf-8").replace("</main>", "</main>" + bad, 1), encoding="utf-8")
    page = browser.load(broken)
    assert int(page.body.attrs["data-errors"]) >= 3
    assert "missing is not defined" in page.dom.by_id("page-errors").text()
    assert any("cdn.example.com" in line for line in page.console)
    assert page.body.attrs["data-resources"] != "0"


def test_a_page_of_aggregates_with_the_table_beside_it(tmp_path: Path) -> None:
    browser = require_chromium()
    table = make_table(3000)
    path = write_report(table, tmp_path / "big.html", inline_bytes=1000)
    page = browser.load(path)
    assert_clean(page)
    assert int(page.dom.by_id("samples-elsewhere").attrs["data-count"]) == 3000
    assert number(page.dom.by_id("total-samples")) == 3000
    assert pl.read_csv(tmp_path / "big.samples.csv", infer_schema=False).height == 3000


@pytest.mark.slow
def test_100000_samples_in_the_page(tmp_path: Path) -> None:
    browser = require_chromium()
    table = make_table(100_000)
    path = write_report(table, tmp_path / "report.html")
    page = browser.load(path)
    assert_clean(page)
    rows = page.dom.by_id("state-counts").find_all(lambda n: n.tag == "tr" and "data-state" in n.attrs)
    assert {
        r.attrs["data-state"]: int(r.find_all(lambda n: n.has_class("count"))[0].attrs["data-count"]) for r in rows
    } == (expected_counts(table))
    status = page.dom.by_id("sample-status")
    assert (status.attrs["data-matching"], status.attrs["data-rendered"]) == ("100000", "100")
    print(
        f"\n100,000 samples: {path.stat().st_size:,} bytes, table at {page.body.attrs['data-table-ms']} ms, "
        f"loaded at {page.body.attrs['data-load-ms']} ms, Chromium ran {page.seconds:.1f} s"
    )
