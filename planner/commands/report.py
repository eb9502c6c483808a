"""``planner report``: one self-contained HTML file about a plan and how its submission went.

The page (``report_template.html`` beside this module) has five parts: what was planned
(backend, plan id, sheet, defaults digest, shards, when submitted), the state counts as a
chart, progress over time (one point per status refresh), failures grouped by reason, and a
per-sample table with search, a state filter and paging.

Self-contained means opened offline, nothing fetched: plotly.js is inlined, there are no web
fonts or remote images, and the page's Content-Security-Policy forbids every fetch, so a
regression shows up as a blocked request (recorded in the page) rather than as a silent call
to the network.  Console links are plain ``<a href>``: following one is the reader's choice.

Escaping has two paths and no third:

- text in the HTML (sheet path, reasons, sample ids in failure groups) goes through
  ``html.escape``;
- data for the scripts (the per-sample table, the chart figures) is JSON inside
  ``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc.,
  so no value can close the block, and the page's script writes cells with ``textContent``.

The per-sample table lives in the page while its JSON stays within ``INLINE_BYTES`` (24 MB,
so the page stays under 30 MB with plotly.js; about 200,000 samples of short ids, and in
Chromium 100,000 samples show their first page in well under a second); beyond it the page
keeps the aggregates and the full table is written beside it as CSV, with spreadsheet
formulas neutralised as ``planner status --out`` does.

Plotly is an optional extra (``pip install 'planner[report]'``): the rest of the planner
never imports it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

import orjson
import polars as pl

from planner.commands.access import Access
from planner.commands.status import _status
from planner.core.plandir import check_output_file, replace_privately
from planner.core.progress import ProgressCallback
from planner.engine.context import Options
from planner.errors import PlannerError

INSTALL_HINT = "install it with: pip install 'planner[report]'"
NOT_SUBMITTED = "NOT SUBMITTED"
NO_REASON = "no reason given"  # after the state: "CANCELLED: no reason given", "FAILED: no reason given"


def unexplained(state: str | None) -> str:
    """The group of samples in ``state`` whose service gave no reason (a cancelled run seldom has one)."""
    return f"{state or 'submission failed'}: {NO_REASON}"


# States that end a run without its result, across the services (HealthOmics runs, Batch jobs,
# Glue job runs, Polly jobs as the ledger records them). A sample whose submission itself
# failed (submission_status FAILED, no state) is a failure too.
FAILURE_STATES = frozenset({"FAILED", "CANCELLED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED"})
SUCCESS_STATES = frozenset({"COMPLETED", "SUCCEEDED"})

INLINE_BYTES = 24_000_000  # per-sample JSON kept in the page; above it, aggregates + a CSV beside the page
PAGE_SIZE = 100  # rows per page of the per-sample table
EXAMPLES = 5  # sample ids shown per failure group

# The input contract: one row per sample, as the ledger's status table gives it.
TABLE_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "id": pl.String(),
    "shard": pl.Int32(),
    "position": pl.Int32(),
    "submission_id": pl.String(),
    "remote_id": pl.String(),
    "remote_uuid": pl.String(),
    "submission_status": pl.String(),
    "state": pl.String(),
    "reason": pl.String(),
    "log": pl.String(),
    "updated_at": pl.String(),
}

# Columns of the page's table, in order: (column, heading).
_SHOWN = (
    ("row", "row"),
    ("id", "sample"),
    ("state", "state"),
    ("submission_status", "submission"),
    ("reason", "reason"),
    ("remote_id", "run"),
    ("remote_uuid", "run uuid"),
    ("submission_id", "submission id"),
    ("shard", "shard"),
    ("position", "position"),
    ("updated_at", "updated"),
    ("log", "log"),
)
_SEARCHED = ("id", "remote_id", "remote_uuid", "submission_id", "reason", "log")
_SHARDS_SHOWN = 200  # shard rows in the page; plan.json has them all

# Colours by what a state means, so the same state looks the same in both charts.
# A hue per meaning (green ended well, red failed, orange stopped, blue running, light blues and
# purples waiting, grey not submitted) and a shade of it per state: no two states share a colour,
# so PENDING, STARTING and SUBMITTED are told apart in the progress chart.
_COLOURS = {
    "COMPLETED": "#2e7d32",
    "SUCCEEDED": "#43a047",
    "FAILED": "#c62828",
    "ERROR": "#8e0000",
    "TIMEOUT": "#e57373",
    "EXPIRED": "#880e4f",
    "CANCELLED": "#ef6c00",
    "STOPPED": "#ffa726",
    "STOPPING": "#ffcc80",
    "DELETED": "#795548",
    "RUNNING": "#1565c0",
    "STARTING": "#42a5f5",
    "PENDING": "#90caf9",
    "SUBMITTED": "#b39ddb",
    "RUNNABLE": "#4dd0e1",
    "WAITING": "#80cbc4",
    "QUEUED": "#7986cb",
    NOT_SUBMITTED: "#9e9e9e",
}
_OTHER_COLOURS = ("#6a1b9a", "#00838f", "#5d4037", "#ad1457", "#827717", "#283593")

# A run id that can go into a console URL as it is (HealthOmics, Batch and Glue ids all do).
_URL_SAFE_ID = r"^[A-Za-z0-9._~:-]+$"
_SLOT = re.compile(r"@@([A-Z_]+)@@")


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed samples that share one reason: how many, and the first few ids in sheet order."""

    reason: str
    count: int
    samples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """What ``render_report`` wrote."""

    path: str
    bytes: int
    samples: int
    counts: Mapping[str, int]
    failure_groups: tuple[FailureGroup, ...]
    table_csv: str | None = None  # the full per-sample table, when it was too large for the page


@dataclass(frozen=True, slots=True)
class ConsoleLink:
    """A service console's page of one run: ``prefix + run id + suffix``."""

    prefix: str
    suffix: str = ""

    def url(self, run_id: str) -> str:
        return self.prefix + quote(run_id, safe=":") + self.suffix


# --- aggregates, shared with `planner status` -------------------------------------------------


def state_counts(table: pl.DataFrame) -> dict[str, int]:
    """Samples per state (a sample with no state yet counts as NOT SUBMITTED), largest first."""
    counts = (
        table.lazy()
        .select(pl.col("state").fill_null(NOT_SUBMITTED))
        .group_by("state")
        .len()
        .sort(["len", "state"], descending=[True, False])
        .collect()
    )
    return dict(zip(counts["state"].to_list(), counts["len"].to_list(), strict=True))


def failure_groups(
    table: pl.DataFrame, *, states: Iterable[str] = FAILURE_STATES, examples: int = EXAMPLES
) -> list[FailureGroup]:
    """Failed samples (a state in ``states``, or a failed submission) grouped by reason,
    largest group first; a missing or blank reason is grouped by state, as ``unexplained(state)``."""
    reason = pl.col("reason").str.strip_chars()
    groups = (
        table.lazy()
        .filter(pl.col("state").is_in(sorted(states)) | (pl.col("submission_status") == "FAILED"))
        .sort("row", nulls_last=True)  # so each group's examples are its first samples in the sheet
        .group_by(
            pl.when(reason.fill_null("") == "")
            .then(pl.format("{}: " + NO_REASON, pl.col("state").fill_null("submission failed")))
            .otherwise(reason)
            .alias("reason")
        )
        .agg(pl.len().alias("count"), pl.col("id").head(examples).alias("samples"))
        .sort(["count", "reason"], descending=[True, False])
        .collect()
    )
    return [FailureGroup(reason, count, tuple(ids)) for reason, count, ids in groups.iter_rows()]


def defaults_digest(defaults: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the defaults: keys sorted, no spaces, UTF-8."""
    canonical = json.dumps(defaults, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def console_link(backend: str, region: str | None, defaults: Mapping[str, Any]) -> ConsoleLink | None:
    """Where a run of ``backend`` is shown in the AWS console, when that can be built; else None.

    Polly runs have no AWS console page, and without a region there is no console host."""
    if not region or not re.fullmatch(r"[a-z0-9-]+", region):
        return None
    host = f"https://{region}.console.aws.amazon.com"
    if backend in ("omics-batch", "omics-run"):
        return ConsoleLink(f"{host}/omics/home?region={region}#/runs/")
    if backend == "batch":
        return ConsoleLink(f"{host}/batch/home?region={region}#jobs/detail/")
    if backend == "glue":
        # Glue Studio's job-run page is addressed by job name and run id. The name is the
        # defaults' JobName: a sheet column that overrides it per sample is not in the table.
        job = defaults.get("JobName")
        if isinstance(job, str) and job:
            return ConsoleLink(f"{host}/gluestudio/home?region={region}#/job/{quote(job, safe='')}/run/")
    return None


# --- the page ---------------------------------------------------------------------------------


def render_report(
    manifest: dict[str, Any],
    table: pl.DataFrame,
    history: Sequence[tuple[str, Mapping[str, int]]],
    out: str,
    *,
    region: str | None = None,
    submitted_at: str | None = None,
    generated_at: str | None = None,
    inline_bytes: int = INLINE_BYTES,
    staged: Sequence[str] = (),
) -> ReportSummary:
    """Write the HTML report of one plan to ``out``; see the module docstring for what it holds."""
    go, plotly_js = _plotly()
    table = _conform(table)
    counts = state_counts(table)
    groups = failure_groups(table)
    link = console_link(str(manifest.get("backend")), region, manifest.get("defaults") or {})
    generated_at = generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    # Every cell takes at least 2 bytes of JSON (a value and a comma): a table that cannot fit
    # is not serialised at all, which spares a huge string for millions of samples.
    fits = table.height * 2 * len(_SHOWN) <= inline_bytes
    samples_json = _script_json(_samples_payload(table, link)) if fits else ""
    table_csv = None
    if not fits or len(samples_json.encode()) > inline_bytes:
        table_csv = os.path.splitext(out)[0] + ".samples.csv"
        _write_csv(table, link, table_csv)
        samples_json = "null"

    figures = {"chart-states": _states_figure(go, counts)}
    if history:
        figures["chart-progress"] = _progress_figure(go, history, counts)
    slots = {
        "TITLE": _e(f"planner report · {manifest.get('backend')} · {manifest.get('plan_id')}"),
        "SUBTITLE": _subtitle(manifest, table.height, generated_at),
        "PLAN": _plan_section(manifest, region, submitted_at, generated_at, staged),
        "STATE_COUNTS": _counts_table(counts, table.height) + _skipped_note(manifest.get("skip_done")),
        "PROGRESS": _progress_section(history),
        "FAILURES": _failures_section(groups, linked=table_csv is None),
        "SAMPLES": _samples_section(counts, table.height, inline_bytes, table_csv),
        "FIGURES_JSON": _script_json(figures),
        "SAMPLES_JSON": samples_json,
        "PLOTLY_JS": plotly_js,
    }
    page = _fill(_template(), slots).encode()
    _write_atomically(out, page)
    return ReportSummary(
        path=out,
        bytes=len(page),
        samples=table.height,
        counts=counts,
        failure_groups=tuple(groups),
        table_csv=table_csv,
    )


def _plotly() -> tuple[Any, str]:
    """plotly's figure classes and its JavaScript, or an error that says how to install them."""
    try:  # plotly is an optional extra: `pip install 'planner[report]'`
        import plotly.graph_objects as go
        from plotly.offline import get_plotlyjs
    except ImportError as exc:
        raise PlannerError(f"the HTML report needs plotly, which is not installed; {INSTALL_HINT}") from exc
    return go, get_plotlyjs()


def _conform(table: pl.DataFrame) -> pl.DataFrame:
    """The table in the contract's column types; a contract column it lacks is all null."""
    return table.select(
        (pl.col(name) if name in table.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in TABLE_SCHEMA.items()
    )


def _template() -> str:
    return resources.files("planner.commands").joinpath("report_template.html").read_text(encoding="utf-8")


def _fill(template: str, slots: Mapping[str, str]) -> str:
    # One pass over the template: text put into a slot is never searched for slots itself.
    return _SLOT.sub(lambda match: slots[match.group(1)], template)


def _write_atomically(path: str, data: bytes) -> None:
    def write(partial: str) -> None:
        with open(partial, "wb") as handle:
            handle.write(data)

    replace_privately(path, write)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _script_json(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: no value can end the block."""
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text


def _utc(moment: str) -> str:
    """An ISO-8601 time as plotly reads dates (UTC, no offset); a naive time is taken as UTC."""
    parsed = dt.datetime.fromisoformat(moment)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _colour(state: str, others: dict[str, str]) -> str:
    if state in _COLOURS:
        return _COLOURS[state]
    return others.setdefault(state, _OTHER_COLOURS[len(others) % len(_OTHER_COLOURS)])


# --- charts: figures built with plotly.graph_objects, drawn by plotly.js in the page -------------


def _states_figure(go: Any, counts: Mapping[str, int]) -> dict[str, Any]:
    others: dict[str, str] = {}
    states = list(counts)
    figure = go.Figure(
        go.Bar(
            x=[counts[s] for s in states],
            y=states,
            orientation="h",
            marker_color=[_colour(s, others) for s in states],
            text=[f"{counts[s]:,}" for s in states],
            textposition="auto",
            hovertemplate="%{y}: %{x:,} samples<extra></extra>",
        )
    )
    figure.update_layout(
        template="plotly_white",
        height=90 + 30 * max(len(states), 1),
        margin={"l": 10, "r": 20, "t": 30, "b": 40},  # room for plotly's toolbar above the plot
        xaxis={"title": {"text": "samples"}, "rangemode": "tozero"},
        yaxis={"autorange": "reversed", "automargin": True},
    )
    return figure.to_plotly_json()


def _progress_figure(
    go: Any, history: Sequence[tuple[str, Mapping[str, int]]], counts: Mapping[str, int]
) -> dict[str, Any]:
    times = [_utc(moment) for moment, _ in history]
    # The states the refreshes saw: in the order of today's counts, then those seen only earlier.
    seen_states = {state for _, seen in history for state, n in seen.items() if n}
    states = [s for s in counts if s in seen_states] + sorted(seen_states - set(counts))
    others: dict[str, str] = {}
    figure = go.Figure()
    for state in states:
        colour = _colour(state, others)
        figure.add_trace(
            go.Scatter(
                x=times,
                y=[seen.get(state, 0) for _, seen in history],
                name=state,
                mode="lines+markers",
                stackgroup="states",
                line={"color": colour, "width": 1},
                fillcolor=colour,
                hovertemplate=f"{state}: %{{y:,}}<extra></extra>",
            )
        )
    figure.update_layout(
        template="plotly_white",
        height=360,
        margin={"l": 10, "r": 20, "t": 30, "b": 40},  # room for plotly's toolbar above the plot
        hovermode="x unified",
        xaxis={"title": {"text": "status refresh (UTC)"}},
        yaxis={"title": {"text": "samples"}, "rangemode": "tozero", "automargin": True},
        legend={"traceorder": "normal"},
    )
    return figure.to_plotly_json()


# --- sections rendered in Python (all text escaped) ---------------------------------------------


def _short(digest: str | None, width: int = 12) -> str:
    if not digest:
        return '<span class="note">not recorded</span>'
    return f'<code title="{_e(digest)}">{_e(digest[:width])}</code>'


def _subtitle(manifest: Mapping[str, Any], samples: int, generated_at: str) -> str:
    return (
        f"plan <code>{_e(manifest.get('plan_id'))}</code> · {_e(manifest.get('backend'))} · "
        f"{samples:,} samples · generated {_e(generated_at)}"
    )


def _staged(staged: Sequence[str], submitted_at: str | None) -> str:
    """Where the ledger says the shards went: ``submit --staging`` (or the sandbox) may have put them
    elsewhere than plan.json's staging names, and a plan with no staging of its own still stages."""
    if not staged:
        what = "nothing: every shard went inline" if submitted_at else "nothing yet"
        return f'<span class="note">{what}</span>'
    prefix = staged[0].rpartition("/")[0] + "/"  # <prefix>/<plan_id>/: one folder per plan
    objects = "object" if len(staged) == 1 else "objects"
    return f"{len(staged):,} {objects} under <code>{_e(prefix)}</code>"


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(name)}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="facts">{body}</table>'


def _json_details(summary: str, value: Any, *, element_id: str) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return f'<details id="{element_id}"><summary>{_e(summary)}</summary><pre>{_e(text)}</pre></details>'


def _plan_section(
    manifest: Mapping[str, Any],
    region: str | None,
    submitted_at: str | None,
    generated_at: str,
    staged: Sequence[str] = (),
) -> str:
    sheet = manifest.get("sheet") or {}
    defaults = manifest.get("defaults") or {}
    digest = defaults_digest(defaults)
    staging = (manifest.get("staging") or {}).get("uri")
    not_recorded = '<span class="note">not recorded</span>'
    facts = [
        ("backend", f"<code>{_e(manifest.get('backend'))}</code>"),
        ("plan id", f'<code id="plan-id">{_e(manifest.get("plan_id"))}</code>'),
        ("runs planned", f'<span id="runs-planned">{int(manifest.get("runs") or 0):,}</span>'),
        ("sheet", f"<code>{_e(sheet.get('path', ''))}</code>"),
        ("sheet rows", f"{int(sheet.get('rows') or 0):,}"),
        ("sheet sha256", _short(sheet.get("sha256"))),
        ("defaults digest", f'<span id="defaults-digest">sha256:{_short(digest)}</span>'),
        ("submitted", _e(submitted_at) if submitted_at else not_recorded),
        ("staging", f"<code>{_e(staging)}</code>" if staging else '<span class="note">none in plan.json</span>'),
        ("staged", _staged(staged, submitted_at)),
        ("region", _e(region) if region else '<span class="note">not given: no console links</span>'),
        ("generated", _e(generated_at)),
    ]
    parts = [
        _facts(facts),
        _json_details("defaults (the default request as sent)", defaults, element_id="defaults"),
    ]
    if manifest.get("submission"):
        parts.append(_json_details("submission fields", manifest["submission"], element_id="submission"))
    if manifest.get("options"):
        parts.append(_json_details("plan options", manifest["options"], element_id="options"))
    parts.append(_shards_table(manifest.get("shards") or []))
    return "\n".join(parts)


def _skipped_note(record: Any) -> str:
    """Samples planned with --skip-done and left out as done: counted apart, never among the plan's."""
    if not isinstance(record, Mapping):
        return ""
    done = int(record.get("done") or 0)
    plans = ", ".join(str(p.get("path")) for p in record.get("plans") or [] if isinstance(p, Mapping))
    return (
        f'<p class="note" id="skip-done">Not in this plan: <span id="skipped-as-done" data-count="{done}">{done:,}'
        f"</span> samples skipped as done (already run with the same settings in {_e(plans)}; listed in "
        f"skipped.csv). Planned against them: {int(record.get('new') or 0):,} new, "
        f"{int(record.get('changed') or 0):,} changed, {int(record.get('failed_before') or 0):,} failed before.</p>"
    )


def _shards_table(shards: Sequence[Mapping[str, Any]]) -> str:
    if not shards:
        return '<p class="note">No shards.</p>'
    modes = Counter(str(s.get("mode")) for s in shards)
    total = sum(int(s.get("bytes") or 0) for s in shards)
    noun = "shard" if len(shards) == 1 else "shards"
    summary = f"{len(shards):,} {noun} ({', '.join(f'{n:,} {m}' for m, n in sorted(modes.items()))}), {total:,} bytes"
    head = "".join(
        f'<th class="{"num" if n in ("index", "entries", "bytes") else ""}">{n}</th>'
        for n in ("index", "mode", "entries", "bytes", "sha256", "etag", "first", "last")
    )
    rows = "".join(
        "<tr>"
        f'<td class="num">{int(s.get("index") or 0)}</td><td>{_e(s.get("mode", ""))}</td>'
        f'<td class="num">{int(s.get("entries") or 0):,}</td><td class="num">{int(s.get("bytes") or 0):,}</td>'
        f"<td>{_short(s.get('sha256'))}</td><td><code>{_e(s.get('etag') or '')}</code></td>"
        f"<td>{_e(s.get('first') or '')}</td><td>{_e(s.get('last') or '')}</td>"
        "</tr>"
        for s in shards[:_SHARDS_SHOWN]
    )
    more = (
        f'<p class="note">The first {_SHARDS_SHOWN:,} shards are shown; plan.json lists all {len(shards):,}.</p>'
        if len(shards) > _SHARDS_SHOWN
        else ""
    )
    opened = " open" if len(shards) <= 10 else ""
    return (
        f'<details id="shards"{opened}><summary>{_e(summary)}</summary>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{more}</details>"
    )


def _counts_table(counts: Mapping[str, int], total: int) -> str:
    others: dict[str, str] = {}
    rows = "".join(
        f'<tr data-state="{_e(state)}"><td><span class="swatch" style="background:{_colour(state, others)}"></span>'
        f'{_e(state)}</td><td class="num count" data-count="{n}">{n:,}</td>'
        f'<td class="num">{100 * n / total:.1f}%</td></tr>'
        for state, n in counts.items()
    )
    return (
        '<table id="state-counts"><thead><tr><th>state</th><th class="num">samples</th><th class="num">share</th>'
        f'</tr></thead><tbody>{rows}</tbody><tfoot><tr><th>total</th><th class="num" id="total-samples" '
        f'data-count="{total}">{total:,}</th><th></th></tr></tfoot></table>'
    )


def _progress_section(history: Sequence[tuple[str, Mapping[str, int]]]) -> str:
    if not history:
        return '<p class="note" id="no-progress">No status refresh has been recorded yet.</p>'
    first, last = history[0][0], history[-1][0]
    return (
        f'<p class="note" id="progress-note" data-refreshes="{len(history)}">{len(history):,} status refreshes, '
        f"from {_e(first)} to {_e(last)}.</p>"
        '<div id="chart-progress" class="chart"></div>'
    )


def _failures_section(groups: Sequence[FailureGroup], *, linked: bool) -> str:
    failed = sum(g.count for g in groups)
    if not groups:
        return '<p id="failures-total" data-count="0">No sample has failed.</p>'
    rows = []
    for group in groups:
        examples = ", ".join(_e(s) for s in group.samples)
        if group.count > len(group.samples):
            examples += f' <span class="note">and {group.count - len(group.samples):,} more</span>'
        show = (
            f' <a href="#q={_e(quote(group.reason, safe=""))}">show in the table</a>'
            if linked and not group.reason.endswith(NO_REASON)
            else ""
        )
        rows.append(
            f'<tr><td class="reason">{_e(group.reason)}</td><td class="num count" data-count="{group.count}">'
            f'{group.count:,}</td><td class="samples">{examples}{show}</td></tr>'
        )
    noun = "sample has" if failed == 1 else "samples have"
    return (
        f'<p id="failures-total" data-count="{failed}">{failed:,} {noun} failed, for {len(groups):,} '
        f"distinct reasons.</p>"
        '<table id="failure-groups"><thead><tr><th>reason</th><th class="num">samples</th><th>first samples</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _samples_section(counts: Mapping[str, int], total: int, limit: int, table_csv: str | None) -> str:
    if table_csv is not None:
        name = os.path.basename(table_csv)
        return (
            f'<p id="samples-elsewhere" data-count="{total}">This plan has {total:,} samples, more than this page '
            f"holds (its per-sample data would pass {limit / 1e6:,.0f} MB): the page keeps the counts and failures "
            "above, and the full per-sample table is "
            f'in <a href="{_e(quote(name))}">{_e(name)}</a> beside this file (a text cell starting with = + - @ '
            "is prefixed with a quote, so a spreadsheet runs nothing).</p>"
        )
    options = "".join(f'<option value="{_e(s)}">{_e(s)} ({n:,})</option>' for s, n in counts.items())
    head = "".join(
        f'<th class="{"num" if column in ("row", "shard", "position") else ""}">{_e(title)}</th>'
        for column, title in _SHOWN
    )
    return (
        '<div class="controls">'
        '<input type="search" id="sample-search" placeholder="search sample, run id, reason…" '
        'aria-label="search the samples">'
        f'<label>state <select id="sample-state"><option value="">all states</option>{options}</select></label>'
        '<button type="button" id="page-first">« first</button><button type="button" id="page-prev">‹ prev</button>'
        '<button type="button" id="page-next">next ›</button><button type="button" id="page-last">last »</button>'
        '<span id="sample-status" class="note"></span>'
        "</div>"
        f'<div class="table-wrap"><table id="sample-table"><thead><tr>{head}</tr></thead><tbody></tbody></table></div>'
        '<noscript><p class="note">The per-sample table needs JavaScript; '
        "<code>planner status</code> writes it to a CSV file.</p></noscript>"
    )


# --- the per-sample data ----------------------------------------------------------------------


def _samples_payload(table: pl.DataFrame, link: ConsoleLink | None) -> dict[str, Any]:
    """The table as columns for the page's script: a column of few distinct strings is sent
    as its distinct values plus one small integer per sample, which keeps 100,000 samples small."""
    shown = table.with_columns(pl.col("state").fill_null(NOT_SUBMITTED))
    return {
        "rows": shown.height,
        "page_size": PAGE_SIZE,
        "columns": [{"name": column, "numeric": column in ("row", "shard", "position")} for column, _ in _SHOWN],
        "searched": list(_SEARCHED),
        "console": {"prefix": link.prefix, "suffix": link.suffix} if link else None,
        "data": {column: _column_payload(shown.get_column(column)) for column, _ in _SHOWN},
    }


def _column_payload(column: pl.Series) -> list[Any] | dict[str, list[Any]]:
    if column.dtype == pl.String and column.len() >= 64:
        values = column.drop_nulls().unique(maintain_order=True)
        if values.len() * 4 <= column.len():
            codes = column.cast(pl.Enum(values.to_list())).to_physical()
            return {"values": values.to_list(), "codes": codes.to_list()}
    return column.to_list()


def _write_csv(table: pl.DataFrame, link: ConsoleLink | None, path: str) -> None:
    """The full table as CSV, by the rule of the planner's other CSVs (``safe_csv``): a text cell
    starting with = + - @, a tab or a CR gets a leading quote, so a spreadsheet runs nothing."""
    if link is not None:
        table = table.with_columns(
            pl.when(pl.col("remote_id").str.contains(_URL_SAFE_ID))
            .then(pl.lit(link.prefix) + pl.col("remote_id") + pl.lit(link.suffix))
            .alias("console_url")
        )
    texts = [name for name, dtype in table.schema.items() if dtype == pl.String]
    neutralised = table.with_columns(
        pl.when(pl.col(name).str.contains(r"^[=+\-@\t\r]")).then("'" + pl.col(name)).otherwise(pl.col(name)).alias(name)
        for name in texts
    )

    replace_privately(path, neutralised.write_csv)


def report(
    plan_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    refresh: bool = False,
    region: str | None = None,
    sandbox: bool = False,
    endpoint_url: str | None = None,
    profile: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
    endpoints: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> Any:
    """Write the plan's self-contained HTML report to ``out`` (``htmlreport.render_report``): what was
    planned, the state counts, progress over time, failures by reason, and every sample.

    ``refresh`` asks the service first (else the ledger's last look is shown); ``region`` builds the
    links to the service's console (default: the client's region)."""
    check_output_file(os.fspath(out), example="report.html")

    access = Access(sandbox, endpoint_url, profile, region, retry_mode, max_attempts, endpoints)
    ctx = access.read(plan_dir, Options(), ask=refresh, progress=progress)
    try:
        table = _status(ctx, refresh)
        where = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if where is None and ctx.clients.sandbox:
            where = "us-east-1"

        return render_report(
            ctx.manifest.to_json(),  # with skip_done: samples left out as done, which the report counts apart
            table,
            ctx.ledger.refreshes(),
            os.fspath(out),
            region=where,
            submitted_at=ctx.ledger.first_intent_at(),
            staged=[staged.uri for staged in ctx.ledger.all_staged()],
        )
    finally:
        ctx.ledger.close()
