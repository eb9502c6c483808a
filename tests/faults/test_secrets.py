"""Secrets: credentials and the Polly API key never reach a plan, the ledger, the output or a message;
nor does a presigned URL (the planner makes none); ``planner status --out x.csv`` neutralises
spreadsheet formulas.

The AWS credentials are recognisable strings in the environment, picked up by the
standard boto3 chain (no --sandbox, whose fixed credentials would prove nothing);
endpoints come from ``AWS_ENDPOINT_URL_<SERVICE>``.  Every command runs through
``planner.cli.main`` and everything it prints is kept; errors are provoked on
purpose (a refused creating call, an unreachable service, nothing to retry, a
cancel); ``submit --dry-run``, ``planner policy`` and SSE-KMS staging (``--staging-kms-key``)
are run too.  Then every byte of every file in the plan directories (the SQLite
ledger with its WAL, the status export), every cell of every ledger table, and
every line printed is searched for each secret.
"""

from __future__ import annotations

import csv
import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest

import planner
import planner.cli

from . import faultkit
from .rigs import COLUMNS, STAGING_PREFIX, Rig, World, make_rig

ACCESS_KEY = "AKIAFAULTSUITE7Q3XZ9"
SECRET_KEY = "faultsuite-SECRET-wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
SESSION_TOKEN = "faultsuite-TOKEN-IQoJb3JpZ2luX2VjEJr-session-9d1c"
POLLY_KEY = "faultsuite-POLLYKEY-pk-live-4f60a8e1c3b5d7f9"
SECRETS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, POLLY_KEY)
# What a presigned URL (or a signed request copied into a message) carries: never printed or kept.
PRESIGNED = ("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId=", "Signature=")


class Transcript:
    """Runs ``planner ARGV`` in-process and keeps everything it printed."""

    def __init__(self, capsys: Any):
        self.capsys = capsys
        self.texts: list[str] = []

    def __call__(self, *argv: Any) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = planner.cli.main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = self.capsys.readouterr()
        self.texts += [out, err]
        assert "Traceback" not in err and "internal error" not in err, err
        return code, out, err


def assert_no_secret(texts: list[str], directories: list[Path]) -> int:
    """No secret in any text, any file under ``directories`` (raw bytes), or any ledger cell; returns files checked."""
    for text in texts:
        for secret in (*SECRETS, *PRESIGNED):
            assert secret not in text, (
                f"a secret was printed: ...{text[max(0, text.find(secret) - 80) : text.find(secret) + 80]}..."
            )
    checked = 0
    for directory in directories:
        for path in directory.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            for secret in (*SECRETS, *PRESIGNED):
                assert secret.encode() not in data, f"{secret[:12]}... found in {path}"
                assert secret.encode("utf-16-le") not in data, f"{secret[:12]}... found (UTF-16) in {path}"
            checked += 1
            if path.name == "ledger.sqlite":
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                        for row in db.execute(f'SELECT * FROM "{table}"'):
                            for cell in row:
                                assert not any(secret in str(cell) for secret in SECRETS), (
                                    f"a secret in ledger table {table}: {row}"
                                )
                finally:
                    db.close()
    return checked


@pytest.fixture()
def credentials(monkeypatch: pytest.MonkeyPatch, world: World) -> World:
    """Recognisable credentials in the environment; every service endpoint from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    for service in ("S3", "BATCH", "GLUE", "IAM"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", world.moto)
    world.polly_options["api_key"] = POLLY_KEY
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", world.omics_emulator.endpoint_url)
    monkeypatch.setenv("POLLY_BASE_URL", world.polly_emulator.endpoint_url)
    monkeypatch.setenv("POLLY_API_KEY", POLLY_KEY)
    return world


def _prepare(rig: Rig) -> None:
    """What --sandbox would create for the plan (a Batch queue and job definition), made beforehand."""
    if rig.backend == "batch":
        from helpers import open_plan

        from planner.commands.sandbox_prepare import prepare_batch

        ctx = open_plan(rig.plan_dir, **rig.options)
        try:
            prepare_batch(ctx)
        finally:
            ctx.ledger.close()


def _staging(rig: Rig) -> list[str]:
    return ["--staging", f"s3://{rig.world.bucket}/{STAGING_PREFIX}"] if rig.stages else []


@pytest.mark.parametrize("column", COLUMNS)
def test_credentials_and_the_polly_key_appear_nowhere(
    column: str,
    credentials: World,
    tmp_path: Path,
    capsys: Any,
    hooks: Any,
    waits: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = credentials
    run = Transcript(capsys)
    signed: list[tuple[str, str]] = []  # (access key in the signature, session token) of each request the planner sends

    def witness(request: Any, **_: Any) -> None:
        headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
        signed.append((headers.get("authorization", ""), headers.get("x-amz-security-token", "")))

    rig = make_rig(column, world, tmp_path / "ok")
    _prepare(rig)
    failing = make_rig(column, world, tmp_path / "failing")
    _prepare(failing)
    if column == "polly":  # the same plan would find the first one's run and jobs: make it another plan
        failing.plan_dir = str(tmp_path / "failing" / "other")
        planner.plan(
            pl.DataFrame({"sample": ["F1", "F2"]}),
            backend="polly",
            defaults={"run": {"parameters": {}}, "submission": {"pipeline_id": "pl"}},
        ).write(failing.plan_dir)
    hooks([("before-send", witness)])  # from here on, every AWS call is the planner's own, from the command line

    code, dry, _ = run("submit", rig.plan_dir, *_staging(rig), "--dry-run")
    assert code == 0 and dry.strip()  # every request printed, nothing sent
    if rig.stages:
        code, printed, _ = run("policy", rig.plan_dir, *_staging(rig))
        assert code == 0 and json.loads(printed)["submitter"]["Statement"]
        key = world.client("kms").create_key(Description="secrets sweep")["KeyMetadata"]["Arn"]
        kms_staging = f"s3://{world.bucket}/kms-{STAGING_PREFIX}"  # the failing plan (same id) stages without
        assert run("submit", rig.plan_dir, "--staging", kms_staging, "--staging-kms-key", key)[0] == 0
    else:
        assert run("submit", rig.plan_dir, *_staging(rig))[0] == 0
    world.clock.advance(5)
    assert run("status", rig.plan_dir)[0] == 0
    assert run("status", rig.plan_dir, "--json")[0] == 0
    assert run("status", rig.plan_dir, "--out", tmp_path / "ok" / "status.csv")[0] == 0
    run("retry", rig.plan_dir, "--out", tmp_path / "ok" / "retry", "--states", "COMPLETED,SUCCEEDED,PENDING,RUNNING")
    run("cancel", rig.plan_dir)  # Polly has no cancel: an error message

    # A creating call the service refuses: the error goes to stderr and into the ledger.
    refusal = faultkit.SendFault("refuse", times=1000, status=400, code="ValidationException")
    if column == "polly":
        world.polly_emulator.inject([422] * 3, method="POST", path="/jobs")
    else:
        hooks([(f"before-send.{faultkit.event_name(failing.service)}.{failing.operation}", refusal)])
    code, _, err = run("submit", failing.plan_dir, *_staging(failing))
    assert code == 1 and err.startswith("planner: error: ")
    # The service unreachable.
    monkeypatch.setenv("AWS_ENDPOINT_URL_OMICS", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", "http://127.0.0.1:9")
    monkeypatch.setenv("POLLY_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setattr("planner.services.polly_api.TRANSPORT_ATTEMPTS", 1)
    # The failing plan still has every run to send, so this submit must reach for the service
    # (a status could rightly ask nothing: omics-run skips runs already in a final state).
    refusal.times = 0
    code, _, err = run("submit", failing.plan_dir, *_staging(failing), "--max-attempts", "1")
    assert code == 1 and err.startswith("planner: error: ") and "127.0.0.1:9" in err, err

    if column != "polly":  # the environment's credentials signed the planner's calls: they were there to leak
        assert signed and all(ACCESS_KEY in auth and token == SESSION_TOKEN for auth, token in signed), signed[:2]
    assert_no_secret(run.texts, [tmp_path / "ok", tmp_path / "failing"])
    tables = set(_tables(Path(failing.plan_dir) / "ledger.sqlite"))
    assert {"meta", "submissions", "samples", "staged", "uploads"} <= tables


def _tables(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    finally:
        db.close()


def test_a_key_passed_as_a_setting_is_refused_without_being_echoed(tmp_path: Path, capsys: Any) -> None:
    run = Transcript(capsys)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,x\nS1,1\n")
    defaults = tmp_path / "defaults.json"
    defaults.write_text(json.dumps({"run": {"parameters": {}}, "submission": {"pipeline_id": "pl"}}))
    for setting in (
        f"--set=submission.api_key={POLLY_KEY}",
        f"--set=submission.token={POLLY_KEY}",
        f"--set=submission.x_api_key={POLLY_KEY}",
    ):
        code, _, err = run(
            "plan", sheet, "--backend", "polly", "--defaults", defaults, "--out", tmp_path / "plan", setting
        )
        assert code == 2 and "POLLY_API_KEY" in err
    assert not (tmp_path / "plan").exists()
    assert_no_secret(run.texts, [tmp_path])


# ---------------------------------------------------------------- a Polly that echoes the key


class _Echo(http.server.BaseHTTPRequestHandler):
    """A Polly stand-in that echoes the x-api-key header back in its answers (a debugging proxy, say)."""

    answers: ClassVar[dict[tuple[str, str], tuple[int, str, bytes]]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?")[0]
        status, content_type, body = self.answers.get(
            (self.command, path), (404, "application/json", b'{"errors": []}')
        )
        body = body.replace(b"KEY", (self.headers.get("x-api-key") or "").encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def echo_polly(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Echo]]:
    handler = type("Echo", (_Echo,), {"answers": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("POLLY_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("POLLY_API_KEY", POLLY_KEY)
    handler.answers[("GET", "/runs")] = (200, "application/vnd.api+json", b'{"data": [], "links": {"next": null}}')
    handler.answers[("POST", "/runs")] = (
        201,
        "application/vnd.api+json",
        b'{"data": {"type": "runs", "id": "r1", "attributes": {"name": "faults"}}}',
    )
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def _polly_plan(tmp_path: Path) -> str:
    out = str(tmp_path / "plan")
    planner.plan(
        pl.DataFrame({"sample": ["S1", "S2"]}),
        backend="polly",
        defaults={"run": {"parameters": {}}, "submission": {"pipeline_id": "pl"}},
    ).write(out)
    return out


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_a_polly_error_echoing_the_key_is_redacted(status: int, echo_polly: Any, tmp_path: Path, capsys: Any) -> None:
    echo_polly.answers[("POST", "/jobs")] = (
        status,
        "application/vnd.api+json",
        b'{"errors": [{"title": "Bad", "detail": "you sent KEY"}]}',
    )
    plan_dir = _polly_plan(tmp_path)
    run = Transcript(capsys)
    code, _, err = run("submit", plan_dir)
    assert code == 1 and "***" in err
    assert_no_secret(run.texts, [tmp_path])


def test_a_non_json_answer_echoing_the_key_is_redacted(echo_polly: Any, tmp_path: Path, capsys: Any) -> None:
    """Was a bug (fixed in b6fdf7c): planner/backends/polly.py _json() built 'Polly answered with something that is
    not JSON:
    {data[:120]!r}' without PollyAPI.redact(): a 2xx answer that is not JSON and echoes the x-api-key (a
    proxy's or a debug page) put POLLY_API_KEY on stderr and, through Ledger.failure() and upsert_samples(),
    into ledger.sqlite (submissions.error, samples.reason) and so into `status` output; the module promises
    the key never goes into a message or the ledger.
    """
    echo_polly.answers[("POST", "/jobs")] = (200, "text/html", b"<html>debug: x-api-key=KEY</html>")
    plan_dir = _polly_plan(tmp_path)
    run = Transcript(capsys)
    code, _, _ = run("submit", plan_dir)
    assert code == 1
    assert_no_secret(run.texts, [tmp_path])


# ---------------------------------------------------------------- status exports and spreadsheets

# Ids beginning with a tab, a CR or a space are refused when planning (whitespace around an id), so
# they never reach a CSV: the cells the export neutralises come from ids like these.
RISKY = ["=1+1", "+1", "-1", "@SUM(A1)", "=\t1+1", "=cmd|' /C calc'!A0", '=HYPERLINK("http://x","y")']
SAFE = ["S1", "a=b", "1-2", "x =x"]


def test_status_csv_neutralises_formulas(world: World, tmp_path: Path, capsys: Any) -> None:
    ids = RISKY + SAFE
    plan_dir = str(tmp_path / "plan")
    planner.plan(
        pl.DataFrame({"sample": ids}),
        backend="polly",
        defaults={"run": {"parameters": {}}, "submission": {"pipeline_id": "pl"}},
    ).write(plan_dir)
    emulator = world.polly_emulator
    options = {"sandbox": True, "endpoints": {"s3": world.moto, "polly": emulator.endpoint_url}}
    planner.commands.submit.submit(plan_dir, **options)
    table = planner.commands.status.status(plan_dir, **options)
    assert sorted(table.get_column("id").to_list()) == sorted(ids)

    run = Transcript(capsys)
    out_csv = tmp_path / "status.csv"
    assert run("status", plan_dir, "--no-refresh", "--out", out_csv)[0] == 0
    with open(out_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    exported = {row["id"] for row in rows}
    assert exported == {f"'{i}" for i in RISKY} | set(SAFE), exported
    for row in rows:  # no cell of any column starts a formula
        for column, cell in row.items():
            assert not cell or cell[0] not in "=+-@\t\r", (column, cell)

    out_parquet = tmp_path / "status.parquet"
    assert run("status", plan_dir, "--no-refresh", "--out", out_parquet)[0] == 0
    assert sorted(pl.read_parquet(out_parquet).get_column("id").to_list()) == sorted(
        ids
    )  # parquet keeps the data as it is
    out_lines = tmp_path / "status.jsonl"
    assert run("status", plan_dir, "--no-refresh", "--out", out_lines)[0] == 0
    assert sorted(json.loads(line)["id"] for line in out_lines.read_text().splitlines()) == sorted(ids)
    _, out, _ = run("status", plan_dir, "--no-refresh", "--json")
    assert json.loads(out)["samples"] == len(ids)
