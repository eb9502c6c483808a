"""Polly's REST API (JSON:API over HTTPS), spoken with urllib3: what boto3 is for AWS.

Not the ``polly-python`` SDK, whose constructor calls home, whose calls send
telemetry, and which cannot be pointed at a local server.  The calls are the SDK's
(polly-python ``polly/pipelines.py``; seeds/003 is its rendered reference), relative
to the base URL, which for the real service is the SDK's ``orchestration_url``,
``https://apis.<env>.elucidata.io/pravaah/orchestration``::

    GET  <base>/runs?filter[priority]=P&page[size]=20   find a run by name and plan tag (reconciliation): get_runs
    POST <base>/runs   {"data": {"type": "runs", "attributes": {name, priority, domain_context, tags, pipeline_id}}}
    POST <base>/jobs   {"data": [{"type": "jobs", "attributes": {run_id, name, config, parameters}}, ...]}
    GET  <base>/runs/{id}
    GET  <base>/jobs?filter[run_id]=R&page[size]=20     then each response's links.next: get_jobs

From the SDK: the run's name travels as attribute ``name`` (``create_run``'s keyword
is ``run_name``); listings filter only by ``run_id``, ``org_id``, ``status``,
``priority`` and ``user_id`` (no name filter: runs are matched by name here, page by
page, in whatever order Polly lists them); ``page[size]`` is 20; ``links.next`` is a
path joined to the host, followed until it is null.  This project's reading (the SDK
does not show it): several jobs in one POST /jobs (the SDK sends a list of one); the
``x-api-key`` header; 409 for a job name the run already has; JSON:API error
documents; which statuses are worth a retry.

Where to, and with what key: the base URL is the sandbox's Polly endpoint, else
``POLLY_BASE_URL``, else ``[submission] base_url``; the key (header ``x-api-key``) is
``POLLY_API_KEY``, or the fixed key ``sandbox`` under ``--sandbox``.  The key never
comes from, nor goes into, the plan, the ledger or a message; it is never sent over
plain HTTP except to a loopback address, and redirects are not followed.

Retries: 429 waits ``Retry-After`` (else backs off), 500/502/503/504, broken
connections and answers slower than ``READ_TIMEOUT`` back off (1 s doubling to 60 s)
for up to ``max_wait`` seconds; a POST that may have been carried out before it
failed is reconciled, not repeated blindly.  401/403 stop everything with "Polly
rejected the API key".
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import urllib3

from planner.core.jsontext import dumps
from planner.errors import PollyAuthError, PollyHTTPError, SubmissionError
from planner.services.aws import MAX_BACKOFF

READ_TIMEOUT = 120.0  # seconds an answer may take; a later one counts as lost (the call may have been carried out)
LIST_PAGE_SIZE = 20  # the SDK's default_page_size: the one page size known to be accepted
SANDBOX_KEY = "sandbox"
TRANSPORT_ATTEMPTS = 4  # a server that cannot be reached at all is not waited for as long as a busy one
_MEDIA_TYPE = "application/vnd.api+json"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class PollyAPI:
    """Polly's runs and jobs endpoints: JSON:API over urllib3, with retries and no secrets in messages."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        key_source: str,
        sleep: Callable[[float], None],
        max_wait: float,
        pool_size: int = 8,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SubmissionError(f"the Polly base URL must be an http(s) URL, not {base_url!r}")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise SubmissionError(
                f"refusing to send the Polly API key over plain HTTP to {parts.hostname}: use an https:// base URL"
            )
        self.base_url = base_url.rstrip("/") + "/"
        self.origin = (parts.scheme, parts.hostname, parts.port)
        self._key = api_key
        self.key_source = key_source
        self.sleep = sleep
        self.max_wait = max_wait
        self.http = urllib3.PoolManager(
            num_pools=2,
            maxsize=max(pool_size, 1),
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=10.0, read=READ_TIMEOUT),
        )

    def close(self) -> None:
        self.http.clear()

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        body: dict[str, Any] | None = None,
        reconcile: Callable[[], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """One call, retried while Polly says "later"; ``reconcile`` is asked, before a POST
        is sent again, whether its first attempt was carried out after all."""
        headers = {"x-api-key": self._key, "Accept": _MEDIA_TYPE}
        payload = None
        if body is not None:
            payload = dumps(body)
            headers["Content-Type"] = _MEDIA_TYPE
        delay, waited, broken = 1.0, 0.0, 0
        while True:
            try:
                response = self.http.request(
                    method, url, body=payload, headers=headers, redirect=False, preload_content=True
                )
            except urllib3.exceptions.HTTPError as exc:
                broken += 1
                if broken >= TRANSPORT_ATTEMPTS or waited >= self.max_wait:
                    raise SubmissionError(
                        self.redact(f"{what}: cannot reach Polly at {self.base_url}: {exc}")
                    ) from None
                wait: float | None = delay
                # A connection never made sent nothing; a broken one may have been carried out.
                maybe_done = not isinstance(exc, urllib3.exceptions.ConnectTimeoutError)
            else:
                status = response.status
                if 200 <= status < 300:
                    return _json(response.data, self.redact) if response.data else {}
                if status in (401, 403):
                    said = self.redact(_error_text(response))
                    raise PollyAuthError(
                        f"{what}: Polly rejected the API key {self.key_source} (HTTP {status}: {said}): "
                        "set POLLY_API_KEY",
                        status,
                    )
                if status not in _RETRY_STATUSES or waited >= self.max_wait:
                    raise PollyHTTPError(self.redact(f"{what}: HTTP {status}: {_error_text(response)}"), status)
                wait = _retry_after(response.headers.get("Retry-After")) if status == 429 else None
                if wait is None:
                    wait = delay
                maybe_done = status != 429  # "too many requests" was refused, not carried out
            assert wait is not None
            wait = max(0.0, min(wait, self.max_wait - waited))
            self.sleep(wait)
            waited += wait
            delay = min(delay * 2, MAX_BACKOFF)
            if reconcile is not None and maybe_done:
                done = reconcile()
                if done is not None:
                    return done

    def pages(self, path: str, params: dict[str, str], *, what: str) -> Iterator[list[dict[str, Any]]]:
        """Every page of a listing, following links.next (same origin only)."""
        url: str | None = (
            self.url(path) + "?" + "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in params.items())
        )
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise SubmissionError(f"{what}: Polly's paging went round in a circle at {url}")
            seen.add(url)
            document = self.request("GET", url, what=what)
            data = document.get("data") or []
            if not isinstance(data, list):
                raise SubmissionError(f"{what}: expected a list of resources from Polly, got {type(data).__name__}")
            yield data
            following = (document.get("links") or {}).get("next")
            if not following or not data:
                return
            url = urljoin(url, following)
            parts = urlsplit(url)
            if (parts.scheme, parts.hostname, parts.port) != self.origin:
                raise SubmissionError(
                    f"{what}: Polly's next-page link leads to another host ({parts.hostname}); "
                    "not sending the API key there"
                )

    # The calls.

    def find_run(self, name: str, priority: str, tag: str, value: str) -> dict[str, Any] | None:
        """The run named ``name`` whose tag ``tag`` is ``value``, or None.  Polly's listing has no name
        filter (the SDK's are run_id, org_id, status, priority, user_id): narrowed by priority, every page is read."""
        query = {"filter[priority]": priority, "page[size]": str(LIST_PAGE_SIZE)}
        for page in self.pages("runs", query, what="get_runs"):
            for run in page:
                attributes = run.get("attributes") or {}
                if attributes.get("name") == name and (attributes.get("tags") or {}).get(tag) == value:
                    return run
        return None

    def create_run(self, body: dict[str, Any], reconcile: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        """POST /runs; ``reconcile`` finds the run when an answer was lost (never a second run)."""

        def found() -> dict[str, Any] | None:
            run = reconcile()
            return {"data": run} if run is not None else None

        document = self.request("POST", self.url("runs"), what="create_run", body=body, reconcile=found)
        return _resource(document, "create_run")

    def get_run(self, run_id: str) -> dict[str, Any]:
        try:
            return _resource(
                self.request("GET", self.url(f"runs/{quote(run_id, safe='')}"), what=f"get_run {run_id}"), "get_run"
            )
        except PollyHTTPError as exc:
            if exc.status == 404:
                raise PollyHTTPError(
                    f"Polly has no run {run_id} (the run this plan created): was it deleted?", 404
                ) from None
            raise

    def jobs(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's jobs by name."""
        found: dict[str, dict[str, Any]] = {}
        for page in self.pages(
            "jobs", {"filter[run_id]": run_id, "page[size]": str(LIST_PAGE_SIZE)}, what=f"get_jobs for run {run_id}"
        ):
            for job in page:
                found[str((job.get("attributes") or {}).get("name"))] = job
        return found

    def post_jobs(self, body: dict[str, Any], what: str) -> JobsAnswer:
        """POST /jobs: the created jobs by name, and Polly's reasons for any refused inside the answer.
        No reconcile before a repeat: job names are unique in a run, so a request carried out after
        all comes back 409 (``PollyHTTPError``)."""
        return _jobs_answer(self.request("POST", self.url("jobs"), what=what, body=body), what)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(data: bytes, redact: Callable[[str], str]) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        # The answer may echo the request (a proxy's or a debug page): never let the key through.
        raise SubmissionError(redact(f"Polly answered with something that is not JSON: {data[:120]!r}")) from None
    if not isinstance(document, dict):
        raise SubmissionError("Polly answered with JSON that is not a JSON:API document")
    return document


def _resource(document: dict[str, Any], what: str) -> dict[str, Any]:
    data = document.get("data")
    if not isinstance(data, dict) or not data.get("id"):
        raise SubmissionError(f"{what}: Polly's answer holds no resource with an id")
    return data


@dataclass(frozen=True)
class JobsAnswer:
    """A POST /jobs answer: the jobs made, by name, and the reasons Polly gave for jobs it refused."""

    created: dict[str, dict[str, Any]]
    refused: list[str]


def _jobs_answer(document: dict[str, Any], what: str) -> JobsAnswer:
    """The SDK's submit_job fails when an item of a 2xx answer holds "error" or "errors": that job was
    not made (polly-python pipelines.py); the items that are jobs were."""
    data = document.get("data")
    data = data if isinstance(data, list) else [data]
    created: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for job in data:
        if isinstance(job, dict) and ("error" in job or "errors" in job):
            errors = job.get("errors") or [job.get("error")]
            refused.append("; ".join(_error_line(e) for e in errors if e) or "refused")
        elif not isinstance(job, dict) or not job.get("id"):
            raise SubmissionError(f"{what}: Polly's answer holds a job without an id")
        else:
            created[str((job.get("attributes") or {}).get("name"))] = job
    return JobsAnswer(created, refused)


def _error_line(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('title', '')}: {error.get('detail', '')}".strip(": ")
    return str(error)


def _error_text(response: Any) -> str:
    """The JSON:API errors of a response, shortly."""
    try:
        errors = json.loads(response.data).get("errors") or []
        texts = [
            f"{e.get('title', '')}: {e.get('detail', '')}".strip(": ")
            + (f" at {e['source']['pointer']}" if (e.get("source") or {}).get("pointer") else "")
            for e in errors
        ]
    except (ValueError, AttributeError, TypeError):
        texts = []
    if not texts:
        return (response.data or b"").decode("utf-8", "replace")[:200] or (response.reason or "")
    shown = "; ".join(texts[:3])
    return shown + (f"; and {len(texts) - 3} more" if len(texts) > 3 else "")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())
