"""The HTML report without a browser: aggregates, page structure, escaping, the CSV fallback,
and the error when plotly is missing. tests/integration/test_report_browser.py loads the page
in Chromium."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.commands.report import (
    NOT_SUBMITTED,
    TABLE_SCHEMA,
    ConsoleLink,
    FailureGroup,
    console_link,
    defaults_digest,
    failure_groups,
    render_report,
    state_counts,
    unexplained,
)
from planner.errors import PlannerError

HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_REASON = "</script><img src=x onerror=alert(2)> & more"
FORMULA_ID = '=HYPERLINK("http://evil")'


def sample_table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A status table in the contract's schema; unspecified cells are null."""
    filled = [{"row": i + 2, "id": f"S{i}", "shard": 0, "position": i, **row} for i, row in enumerate(rows)]
    return pl.DataFrame(filled, schema=TABLE_SCHEMA)


def manifest(**overrides: Any) -> dict[str, Any]:
    base = {
        "format": 1,
        "backend": "omics-batch",
        "plan_id": "7d478ddf462e92c527e7c46c",
        "runs": 4,
        "defaults": {"workflowId": "1234567", "parameters": {"note": "</pre><script>alert(3)</script>"}},
        "submission": {"batchName": "cohort-2026"},
        "staging": {"uri": "s3://bucket/staging/"},
        "sheet": {"path": "/data/<sheet>.csv", "sha256": "ab" * 32, "rows": 4},
        "options": {"max_entries": 100000},
        "shards": [
            {"index": 0, "mode": "inline", "entries": 4, "bytes": 900, "sha256": "cd" * 32, "etag": '"e1"'},
        ],
    }
    return {**base, **overrides}


@pytest.fixture
def table() -> pl.DataFrame:
    return sample_table(
        [
            {"id": HOSTILE_ID, "remote_id": "1001", "state": "COMPLETED", "submission_status": "SUCCESS"},
            {"remote_id": "1002", "state": "FAILED", "reason": HOSTILE_REASON, "submission_status": "SUCCESS"},
            {"remote_id": "1003", "state": "FAILED", "reason": HOSTILE_REASON},
            {"state": None, "submission_status": "FAILED", "reason": None},
            {"id": FORMULA_ID, "state": None},
        ]
    )


HISTORY = [
    ("2026-12-03T07:00:00Z", {NOT_SUBMITTED: 5}),
    ("2026-12-03T07:05:00+00:00", {"RUNNING": 3, NOT_SUBMITTED: 2}),
    ("2026-12-03T08:10:00+01:00", {"COMPLETED": 1, "FAILED": 2, NOT_SUBMITTED: 2}),
]


class Elements(HTMLParser):
    """Every start tag with its attributes, and the raw text of each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def json_block(self, element_id: str) -> Any:
        texts = [text for attrs, text in self.scripts if attrs.get("id") == element_id]
        assert len(texts) == 1, element_id
        return json.loads(texts[0])


def parse(path: Path) -> tuple[str, Elements]:
    text = path.read_text(encoding="utf-8")
    elements = Elements()
    elements.feed(text)
    return text, elements


def decode_column(column: Any) -> list[Any]:
    if isinstance(column, dict):
        return [None if code is None else column["values"][code] for code in column["codes"]]
    return column


# --- aggregates ----------------------------------------------------------------------------


def test_state_counts_treat_no_state_as_not_submitted(table: pl.DataFrame) -> None:
    assert state_counts(table) == {NOT_SUBMITTED: 2, "FAILED": 2, "COMPLETED": 1}
    assert list(state_counts(table)) == ["FAILED", NOT_SUBMITTED, "COMPLETED"]  # largest first, ties by name


def test_failure_groups_group_by_reason_largest_first(table: pl.DataFrame) -> None:
    groups = failure_groups(table)
    assert groups == [
        FailureGroup(HOSTILE_REASON, 2, ("S1", "S2")),
        FailureGroup(unexplained(None), 1, ("S3",)),  # a failed submission counts, its missing reason is named
    ]


def test_failure_groups_blank_reason_is_no_reason_and_examples_follow_the_sheet() -> None:
    rows = [{"state": "FAILED", "reason": reason} for reason in ("  ", None, "", "oom", "oom", "oom")]
    shuffled = sample_table(rows).sample(fraction=1.0, shuffle=True, seed=7)
    groups = failure_groups(shuffled, examples=2)
    assert groups == [FailureGroup("FAILED: no reason given", 3, ("S0", "S1")), FailureGroup("oom", 3, ("S3", "S4"))]


def test_failure_groups_without_a_reason_are_told_apart_by_state() -> None:
    rows = [{"state": "CANCELLED", "reason": None}] * 2 + [{"state": "FAILED", "reason": ""}]
    assert failure_groups(sample_table(rows)) == [
        FailureGroup("CANCELLED: no reason given", 2, ("S0", "S1")),
        FailureGroup("FAILED: no reason given", 1, ("S2",)),
    ]


def test_failure_groups_take_the_states_asked_for() -> None:
    table = sample_table([{"state": "CANCELLED", "reason": "user"}, {"state": "FAILED", "reason": "oom"}])
    assert [g.reason for g in failure_groups(table)] == ["oom", "user"]
    assert [g.reason for g in failure_groups(table, states=("FAILED",))] == ["oom"]
    assert failure_groups(sample_table([])) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["FAILED", "COMPLETED", "CANCELLED", "TIMEOUT", None]),
            st.sampled_from(["SUCCESS", "FAILED", None]),
            st.sampled_from(["oom", "disk full", "", " ", None, "<b>x</b>"]),
        ),
        max_size=40,
    )
)
def test_failure_groups_equal_a_plain_python_grouping(cells: list[tuple[str | None, str | None, str | None]]) -> None:
    table = sample_table([{"state": s, "submission_status": sub, "reason": r} for s, sub, r in cells])
    expected: dict[str, list[str]] = {}
    for i, (state, submission, reason) in enumerate(cells):
        if state in ("FAILED", "CANCELLED", "TIMEOUT") or submission == "FAILED":
            key = reason.strip() if reason and reason.strip() else unexplained(state)
            expected.setdefault(key, []).append(f"S{i}")
    ordered = sorted(expected.items(), key=lambda item: (-len(item[1]), item[0]))
    assert failure_groups(table) == [FailureGroup(k, len(v), tuple(v[:5])) for k, v in ordered]


def test_defaults_digest_is_sha256_of_canonical_json() -> None:
    defaults = {"b": 1, "a": {"z": "é", "y": [1, 2]}}
    canonical = '{"a":{"y":[1,2],"z":"é"},"b":1}'
    assert defaults_digest(defaults) == hashlib.sha256(canonical.encode()).hexdigest()
    assert defaults_digest({"a": {"y": [1, 2], "z": "é"}, "b": 1}) == defaults_digest(defaults)


@pytest.mark.parametrize(
    ("backend", "defaults", "run_id", "url"),
    [
        (
            "omics-batch",
            {},
            "1234567",
            "https://eu-west-1.console.aws.amazon.com/omics/home?region=eu-west-1#/runs/1234567",
        ),
        ("omics-run", {}, "42", "https://eu-west-1.console.aws.amazon.com/omics/home?region=eu-west-1#/runs/42"),
        (
            "batch",
            {},
            "6f0c-ab:7",  # an array child keeps its ":index"
            "https://eu-west-1.console.aws.amazon.com/batch/home?region=eu-west-1#jobs/detail/6f0c-ab:7",
        ),
        (
            "glue",
            {"JobName": "etl job/1"},
            "jr_abc",
            "https://eu-west-1.console.aws.amazon.com/gluestudio/home?region=eu-west-1#/job/etl%20job%2F1/run/jr_abc",
        ),
    ],
)
def test_console_links(backend: str, defaults: dict[str, Any], run_id: str, url: str) -> None:
    link = console_link(backend, "eu-west-1", defaults)
    assert link is not None and link.url(run_id) == url


@pytest.mark.parametrize(
    ("backend", "region", "defaults"),
    [
        ("polly", "eu-west-1", {}),  # Polly runs have no AWS console page
        ("omics-batch", None, {}),  # no region, no host
        ("batch", "", {}),
        ("omics-run", "eu-west-1/../x", {}),  # not a region name
        ("glue", "eu-west-1", {}),  # no job name to address the run
    ],
)
def test_no_console_link(backend: str, region: str | None, defaults: dict[str, Any]) -> None:
    assert console_link(backend, region, defaults) is None


# --- the page --------------------------------------------------------------------------------


def test_page_is_self_contained_and_complete(table: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    summary = render_report(
        manifest(), table, HISTORY, str(out), region="us-east-1", submitted_at="2026-12-03T07:00:00Z"
    )
    text, elements = parse(out)
    assert summary.path == str(out) and summary.bytes == out.stat().st_size
    assert summary.samples == 5 and summary.table_csv is None
    assert dict(summary.counts) == state_counts(table)
    assert list(summary.failure_groups) == failure_groups(table)

    # Nothing is fetched: no external script, style, image or font, and a policy that forbids any fetch.
    assert not [
        attrs for tag, attrs in elements.tags if tag in ("script", "img", "link", "iframe") and attrs.get("src")
    ]
    assert not [attrs for tag, attrs in elements.tags if tag == "link"]
    policy = [
        a["content"] for t, a in elements.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert policy and "default-src 'none'" in policy[0]
    assert not re.search(r"@import|url\(\s*['\"]?https?:", text)
    assert "plotly.js v" in text  # inlined, not linked

    ids = {attrs.get("id") for _, attrs in elements.tags}
    for section in ("plan", "states", "progress", "failures", "samples", "chart-states", "chart-progress"):
        assert section in ids
    assert ">7d478ddf462e92c527e7c46c<" in text
    digest = defaults_digest(manifest()["defaults"])
    assert f'<code title="{digest}">{digest[:12]}</code>' in text
    assert '<details id="defaults">' in text
    assert "2026-12-03T07:00:00Z" in text  # when submitted


def test_everything_from_the_sheet_or_service_is_escaped(table: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    render_report(manifest(), table, HISTORY, str(out), region="us-east-1")
    text, elements = parse(out)
    for raw in (HOSTILE_ID, "<img src=x", "</pre><script>alert(3)", "/data/<sheet>.csv"):
        assert raw not in text
    assert "&lt;img src=x onerror=alert(2)&gt; &amp; more" in text  # the failure group's reason, as text
    assert "/data/&lt;sheet&gt;.csv" in text
    # Every <script> in the file is one of the page's own: none was opened or closed by data.
    assert text.count("<script") == text.count("</script>") == len(elements.scripts) == 6
    payload = elements.json_block("sample-data")
    assert decode_column(payload["data"]["id"])[0] == HOSTILE_ID
    assert decode_column(payload["data"]["reason"])[1] == HOSTILE_REASON


def test_sample_data_round_trips_the_table(tmp_path: Path) -> None:
    table = sample_table(
        [{"state": ["COMPLETED", "FAILED", None][i % 3], "remote_id": str(9000 + i), "log": None} for i in range(300)]
    )
    out = tmp_path / "report.html"
    render_report(manifest(backend="batch"), table, [], str(out), region="us-east-1")
    _, elements = parse(out)
    payload = elements.json_block("sample-data")
    assert payload["rows"] == 300 and payload["page_size"] == 100
    assert isinstance(payload["data"]["state"], dict)  # few distinct values: sent once, as codes
    assert decode_column(payload["data"]["state"]) == table["state"].fill_null(NOT_SUBMITTED).to_list()
    for column in ("row", "id", "remote_id", "shard", "position", "log"):
        assert decode_column(payload["data"][column]) == table[column].to_list()
    assert (
        payload["console"]["prefix"]
        == "https://us-east-1.console.aws.amazon.com/batch/home?region=us-east-1#jobs/detail/"
    )


def test_no_region_no_links_and_no_history_no_progress_chart(table: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    render_report(manifest(), table, [], str(out))
    text, elements = parse(out)
    assert elements.json_block("sample-data")["console"] is None
    assert set(elements.json_block("report-figures")) == {"chart-states"}
    assert 'id="no-progress"' in text and "not given: no console links" in text


def test_progress_figure_has_one_trace_per_state_seen(table: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    render_report(manifest(), table, HISTORY, str(out))
    _, elements = parse(out)
    progress = elements.json_block("report-figures")["chart-progress"]
    traces = {trace["name"]: trace for trace in progress["data"]}
    assert set(traces) == {NOT_SUBMITTED, "RUNNING", "COMPLETED", "FAILED"}
    assert traces["RUNNING"]["y"] == [0, 3, 0]
    assert traces[NOT_SUBMITTED]["x"] == ["2026-12-03 07:00:00", "2026-12-03 07:05:00", "2026-12-03 07:10:00"]  # UTC


def test_same_inputs_give_the_same_bytes(table: pl.DataFrame, tmp_path: Path) -> None:
    pages = []
    for name in ("a.html", "b.html"):
        render_report(manifest(), table, HISTORY, str(tmp_path / name), generated_at="2026-12-03T09:00:00Z")
        pages.append((tmp_path / name).read_bytes())
    assert pages[0] == pages[1]


def test_empty_table_and_missing_optional_columns(tmp_path: Path) -> None:
    render_report(manifest(runs=0, shards=[]), sample_table([]), [], str(tmp_path / "empty.html"))
    assert "No sample has failed." in (tmp_path / "empty.html").read_text()
    bare = pl.DataFrame({"row": [2], "id": ["S0"], "state": ["FAILED"], "reason": ["oom"]})
    summary = render_report(manifest(), bare, [], str(tmp_path / "bare.html"))
    assert summary.failure_groups == (FailureGroup("oom", 1, ("S0",)),)


def test_a_table_too_large_for_the_page_goes_beside_it_as_csv(table: pl.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    summary = render_report(manifest(), table, HISTORY, str(out), region="us-east-1", inline_bytes=10)
    assert summary.table_csv == str(tmp_path / "report.samples.csv")
    text, elements = parse(out)
    assert 'id="samples-elsewhere"' in text and 'href="report.samples.csv"' in text
    assert "sample-table" not in {attrs.get("id") for _, attrs in elements.tags}
    assert elements.json_block("sample-data") is None
    assert 'id="state-counts"' in text and 'id="failure-groups"' in text  # the aggregates stay

    csv = pl.read_csv(summary.table_csv, infer_schema=False)
    assert csv.height == table.height
    assert csv["id"].to_list()[4] == "'" + FORMULA_ID  # a formula is neutralised
    assert csv["id"].to_list()[0] == HOSTILE_ID
    assert csv["console_url"].to_list()[:2] == [
        ConsoleLink("https://us-east-1.console.aws.amazon.com/omics/home?region=us-east-1#/runs/").url(r)
        for r in ("1001", "1002")
    ]


def test_missing_plotly_says_how_to_install_it(
    table: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes `import plotly...` raise ImportError, as if it were not installed.
    for name in [m for m in sys.modules if m == "plotly" or m.startswith("plotly.")] + ["plotly"]:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "report.html"
    with pytest.raises(PlannerError, match=re.escape("install it with: pip install 'planner[report]'")) as caught:
        render_report(manifest(), table, [], str(out))
    assert isinstance(caught.value.__cause__, ImportError)
    assert not out.exists()


def test_state_counts_match_the_counts_table(tmp_path: Path) -> None:
    states = ["COMPLETED"] * 7 + ["FAILED"] * 2 + [None]
    table = sample_table([{"state": s} for s in states])
    out = tmp_path / "report.html"
    render_report(manifest(), table, [], str(out))
    text = out.read_text()
    shown = dict(re.findall(r'<tr data-state="([^"]+)">.*?data-count="(\d+)"', text))
    assert {k: int(v) for k, v in shown.items()} == dict(Counter(s or NOT_SUBMITTED for s in states))
    assert 'id="total-samples" data-count="10"' in text
