"""The Polly emulator, spoken to over loopback HTTP as any client would."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import urllib3

from planner.sandbox.polly_emulator import PollyEmulator

KEY = "sandbox"
MEDIA = "application/vnd.api+json"


@pytest.fixture()
def polly(make_polly: Callable[..., PollyEmulator]) -> PollyEmulator:
    return make_polly()


HTTP = urllib3.PoolManager(retries=False)


def call(
    emulator: PollyEmulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    content_type: str = MEDIA,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any], Any]:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["x-api-key"] = key
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if path.startswith("http"):
        url = path
    elif path.startswith(emulator.base_path + "/"):  # a links.next: a path from the host's root, as the SDK joins it
        url = emulator.origin + path
    else:
        url = emulator.endpoint_url + path
    response = HTTP.request(method, url, body=payload, headers=headers)
    document = json.loads(response.data) if response.data else None
    return response.status, dict(response.headers), document


def run_body(**attributes: Any) -> dict[str, Any]:
    attributes = {
        "pipeline_id": "pl-1",
        "name": "cohort",
        "priority": "medium",
        "tags": {"a": "b"},
        "domain_context": {},
        **attributes,
    }
    return {"data": {"type": "runs", "attributes": attributes}}


def job(run_id: str, name: str, **attributes: Any) -> dict[str, Any]:
    attributes = {
        "run_id": run_id,
        "name": name,
        "parameters": {"x": 1},
        "config": {"infra": {"cpu": 1, "memory": 2, "storage": 120}},
        **attributes,
    }
    return {"type": "jobs", "attributes": attributes}


def new_run(emulator: PollyEmulator, **attributes: Any) -> str:
    status, _, document = call(emulator, "POST", "/runs", run_body(**attributes))
    assert status == 201, document
    return str(document["data"]["id"])


def add_jobs(emulator: PollyEmulator, run_id: str, names: list[str]) -> list[dict[str, Any]]:
    status, _, document = call(emulator, "POST", "/jobs", {"data": [job(run_id, n) for n in names]})
    assert status == 201, document
    return list(document["data"])


def pointers(document: dict[str, Any]) -> list[str]:
    return [e.get("source", {}).get("pointer") for e in document["errors"]]


def test_create_and_get_a_run_in_the_sdk_shape(polly):
    status, _, document = call(polly, "POST", "/runs", run_body())
    assert status == 201
    run = document["data"]
    assert run["type"] == "runs" and run["id"]
    attributes = run["attributes"]
    assert {
        k: attributes[k] for k in ("name", "pipeline_id", "priority", "tags", "domain_context", "num_jobs", "status")
    } == {
        "name": "cohort",
        "pipeline_id": "pl-1",
        "priority": "medium",
        "tags": {"a": "b"},
        "domain_context": {},
        "num_jobs": 0,
        "status": "PENDING",
    }
    status, _, again = call(polly, "GET", f"/runs/{run['id']}")
    assert status == 200 and again["data"]["attributes"]["name"] == "cohort"


def test_the_api_key_is_checked(make_polly):
    polly = make_polly(api_key="right")
    for key in (None, "wrong"):
        status, _, document = call(polly, "POST", "/runs", run_body(), key=key)
        assert (
            status == 401
            and document["errors"][0]["status"] == "401"
            and document["errors"][0]["title"] == "Unauthorized"
        )
    assert polly.runs() == []
    assert call(polly, "POST", "/runs", run_body(), key="right")[0] == 201
    anyone = make_polly(api_key=None)
    assert call(anyone, "GET", "/runs", key="whatever")[0] == 200
    assert call(anyone, "GET", "/runs", key=None)[0] == 401


def test_a_run_is_validated_and_every_problem_reported(polly):
    status, _, document = call(
        polly,
        "POST",
        "/runs",
        {"data": {"type": "run", "attributes": {"priority": "urgent", "tags": [], "colour": "red"}}},
    )
    assert status == 422
    assert set(pointers(document)) == {
        "/data/type",
        "/data/attributes/pipeline_id",
        "/data/attributes/priority",
        "/data/attributes/tags",
        "/data/attributes/colour",
    }
    assert all(e["status"] == "422" and e["detail"] for e in document["errors"])
    assert polly.runs() == []


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"config": {"infra": {"cpu": "2"}}}, "/data/0/attributes/config/infra/cpu"),
        ({"config": {"infra": {"cpu": True}}}, "/data/0/attributes/config/infra/cpu"),
        ({"config": {"infra": {"memory": 0}}}, "/data/0/attributes/config/infra/memory"),
        ({"config": {"infra": {"gpu": 1}}}, "/data/0/attributes/config/infra/gpu"),
        ({"config": {"infra": {}, "image": "x"}}, "/data/0/attributes/config/image"),
        ({"config": None}, "/data/0/attributes/config"),
        ({"parameters": None}, "/data/0/attributes/parameters"),
        ({"name": ""}, "/data/0/attributes/name"),
        ({"name": "x" * 256}, "/data/0/attributes/name"),
        ({"extra": 1}, "/data/0/attributes/extra"),
    ],
)
def test_a_job_is_validated(polly, attributes, pointer):
    run_id = new_run(polly)
    status, _, document = call(
        polly,
        "POST",
        "/jobs",
        {
            "data": [
                job(run_id, "ok"),
                {"type": "jobs", "attributes": {**job(run_id, "bad")["attributes"], **attributes}},
            ]
        },
    )
    assert status == 422
    assert pointers(document) == [pointer.replace("/data/0/", "/data/1/")]
    assert polly.jobs() == []  # the valid job of the request was not created either


def test_jobs_need_a_known_run_and_a_bounded_request(make_polly):
    polly = make_polly(max_jobs_per_request=3)
    assert call(polly, "POST", "/jobs", {"data": [job("no-such-run", "a")]})[0] == 404
    run_id = new_run(polly)
    status, _, document = call(polly, "POST", "/jobs", {"data": [job(run_id, f"s{i}") for i in range(4)]})
    assert status == 422 and "at most 3" in document["errors"][0]["detail"]
    assert call(polly, "POST", "/jobs", {"data": []})[0] == 422
    status, _, document = call(polly, "POST", "/jobs", {"data": job(run_id, "single")})  # one object is one job
    assert status == 201 and document["data"][0]["attributes"]["name"] == "single"


def test_duplicate_job_names_in_a_run_are_refused_whole(polly):
    run_id = new_run(polly)
    add_jobs(polly, run_id, ["a", "b"])
    status, _, document = call(polly, "POST", "/jobs", {"data": [job(run_id, "c"), job(run_id, "a")]})
    assert status == 409 and pointers(document) == ["/data/1/attributes/name"]
    status, _, document = call(polly, "POST", "/jobs", {"data": [job(run_id, "d"), job(run_id, "d")]})
    assert status == 409
    assert [j["name"] for j in polly.jobs()] == ["a", "b"]
    other = new_run(polly)
    add_jobs(polly, other, ["a"])  # names are unique per run, not across runs


def test_create_run_takes_the_sdks_name_attribute_and_refuses_run_name(polly):
    # polly-python's create_run(run_name=...) sends it as attributes.name (polly/pipelines.py).
    status, _, document = call(polly, "POST", "/runs", run_body(name="cohort-7"))
    assert status == 201 and document["data"]["attributes"]["name"] == "cohort-7"
    attributes = dict(run_body()["data"]["attributes"])
    del attributes["name"]
    attributes["run_name"] = "cohort-7"
    status, _, document = call(polly, "POST", "/runs", {"data": {"type": "runs", "attributes": attributes}})
    assert status == 422 and pointers(document) == ["/data/attributes/run_name"]
    assert [run["name"] for run in polly.runs()] == ["cohort-7"]


def test_runs_take_only_the_sdks_filters(polly):
    first, second = new_run(polly), new_run(polly)
    low = new_run(polly, name="other", priority="low")
    status, _, document = call(polly, "GET", "/runs?filter%5Bpriority%5D=medium&page%5Bsize%5D=20")
    assert status == 200 and [r["id"] for r in document["data"]] == [first, second]  # run names need not be unique
    assert document["links"]["next"] is None
    query = "filter%5Bstatus%5D=PENDING&filter%5Buser_id%5D=1&filter%5Borg_id%5D=1"
    status, _, document = call(polly, "GET", "/runs?" + query)
    assert status == 200 and [r["id"] for r in document["data"]] == [first, second, low]
    # The SDK never filters runs by name: this emulator refuses what the SDK does not show.
    assert call(polly, "GET", "/runs?filter%5Bname%5D=cohort")[0] == 400
    assert call(polly, "GET", "/runs?filter%5Bcolour%5D=red")[0] == 400


def test_a_listing_pages_by_20_unless_asked_and_links_next_is_a_path(polly):
    for _ in range(21):
        new_run(polly)
    status, _, document = call(polly, "GET", "/runs")
    assert status == 200 and len(document["data"]) == 20  # the SDK's default_page_size
    following = document["links"]["next"]
    assert following.startswith(polly.base_path + "/runs?")  # joined to the host, as the SDK does
    status, _, document = call(polly, "GET", following)
    assert status == 200 and len(document["data"]) == 1 and document["links"]["next"] is None


def test_requests_outside_the_orchestration_path_are_not_found(polly):
    response = HTTP.request("GET", polly.origin + "/runs", headers={"x-api-key": KEY})
    assert response.status == 404
    assert polly.endpoint_url == polly.origin + "/pravaah/orchestration"


def test_jobs_are_listed_page_by_page_with_a_cursor(polly):
    run_id = new_run(polly)
    names = [f"s{i:02d}" for i in range(25)]
    for start in range(0, 25, 10):
        add_jobs(polly, run_id, names[start : start + 10])
    seen: list[str] = []
    url: str | None = f"/jobs?filter%5Brun_id%5D={run_id}&page%5Bsize%5D=10"
    sizes = []
    while url:
        status, _, document = call(polly, "GET", url)
        assert status == 200
        sizes.append(len(document["data"]))
        seen += [j["attributes"]["name"] for j in document["data"]]
        url = document["links"]["next"]
        assert url is None or url.startswith(polly.base_path + "/jobs?")
    assert seen == names and sizes == [10, 10, 5]
    # The SDK's default page size (default_page_size in polly/pipelines.py) is 20.
    assert len(call(polly, "GET", f"/jobs?filter%5Brun_id%5D={run_id}")[2]["data"]) == 20


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("filter%5Brun_id%5D=RUN&page%5Bsize%5D=0", 400),
        ("filter%5Brun_id%5D=RUN&page%5Bsize%5D=101", 400),
        ("filter%5Brun_id%5D=RUN&page%5Bafter%5D=nope", 400),
        ("filter%5Brun_id%5D=unknown", 404),
    ],
)
def test_bad_listings_are_refused(polly, query, status):
    run_id = new_run(polly)
    assert call(polly, "GET", "/jobs?" + query.replace("RUN", run_id))[0] == status


def test_unknown_resources_and_methods(polly):
    assert call(polly, "GET", "/runs/nope")[0] == 404
    assert call(polly, "GET", "/jobs/nope")[0] == 404
    assert call(polly, "GET", "/pipelines")[0] == 404
    assert call(polly, "DELETE", "/runs")[0] == 405
    run_id = new_run(polly)
    assert call(polly, "DELETE", f"/runs/{run_id}")[0] == 405
    (created,) = add_jobs(polly, run_id, ["a"])
    status, _, document = call(polly, "GET", f"/jobs/{created['id']}")
    assert status == 200 and document["data"]["attributes"]["run_id"] == run_id


def test_malformed_bodies(make_polly):
    polly = make_polly(max_body_bytes=1000)
    assert call(polly, "POST", "/runs", raw=b"{not json")[0] == 400
    assert call(polly, "POST", "/runs", {"attributes": {}})[0] == 400
    assert call(polly, "POST", "/runs", run_body(), content_type="text/plain")[0] == 415
    assert call(polly, "POST", "/runs", run_body(tags={"t": "x" * 2000}))[0] == 413
    assert call(polly, "POST", "/runs", run_body(), content_type="application/json")[0] == 201


def test_jobs_progress_over_the_clock_and_the_run_follows(make_polly, clock):
    polly = make_polly(failure_rate=0.5, seed=3, step_seconds=10.0)
    run_id = new_run(polly)
    add_jobs(polly, run_id, [f"s{i}" for i in range(40)])

    def jobs() -> list[dict[str, Any]]:
        return call(polly, "GET", f"/jobs?filter%5Brun_id%5D={run_id}&page%5Bsize%5D=100")[2]["data"]

    def run() -> dict[str, Any]:
        return call(polly, "GET", f"/runs/{run_id}")[2]["data"]["attributes"]

    assert {
        (j["attributes"]["stage"], j["attributes"]["progress"], j["attributes"]["errored"], j["attributes"]["finished"])
        for j in jobs()
    } == {("Queued", "0/2", False, False)}
    assert run()["status"] == "PENDING"
    clock.now += 10
    assert {(j["attributes"]["stage"], j["attributes"]["progress"]) for j in jobs()} == {("Processing", "1/2")}
    assert run()["status"] == "RUNNING"
    clock.now += 10
    ended = {
        (j["attributes"]["stage"], j["attributes"]["progress"], j["attributes"]["errored"], j["attributes"]["finished"])
        for j in jobs()
    }
    assert ended == {("Completed", "2/2", False, True), ("Processing", "1/2", True, False)}
    attributes = run()
    failed = sum(j["attributes"]["errored"] for j in jobs())
    assert attributes["status"] == "PARTIALLY_COMPLETED"
    assert (attributes["num_jobs"], attributes["num_failed_jobs"], attributes["num_successful_jobs"]) == (
        40,
        failed,
        40 - failed,
    )
    assert 5 < failed < 35
    assert {j["name"] for j in polly.jobs() if j["status"] == "ERRORED"} == {
        j["attributes"]["name"] for j in jobs() if j["attributes"]["errored"]
    }


def test_failures_are_deterministic_per_seed(make_polly, clock):
    def errored(seed: int) -> set[str]:
        polly = make_polly(failure_rate=0.3, seed=seed)
        run_id = new_run(polly)
        add_jobs(polly, run_id, [f"s{i}" for i in range(60)])
        clock.now += 5
        return {j["name"] for j in polly.jobs() if j["status"] == "ERRORED"}

    assert errored(1) == errored(1)
    assert errored(1) != errored(2)


@pytest.mark.parametrize(("rate", "status"), [(0.0, "COMPLETED"), (1.0, "ERRORED")])
def test_a_run_ends_completed_or_errored(make_polly, clock, rate, status):
    polly = make_polly(failure_rate=rate)
    run_id = new_run(polly)
    add_jobs(polly, run_id, ["a", "b", "c"])
    clock.now += 5
    assert polly.runs()[0]["status"] == status


def test_fail_next_answers_statuses_in_order_before_anything_happens(make_polly):
    polly = make_polly(fail_next=[429, 503], retry_after=7)
    status, headers, document = call(polly, "POST", "/runs", run_body())
    assert status == 429 and headers["Retry-After"] == "7" and document["errors"][0]["status"] == "429"
    assert call(polly, "POST", "/runs", run_body())[0] == 503
    assert polly.runs() == []
    assert call(polly, "POST", "/runs", run_body())[0] == 201
    assert [r["status"] for r in polly.requests()] == [429, 503, 201]


def test_fail_after_carries_the_post_out_and_loses_the_answer(make_polly):
    polly = make_polly(fail_after=[502])
    assert call(polly, "GET", "/runs")[0] == 200  # only creating POSTs are affected
    assert call(polly, "POST", "/runs", run_body())[0] == 502
    assert len(polly.runs()) == 1
    run_id = polly.runs()[0]["id"]
    polly.inject([500], after=True, method="POST", path="/jobs")
    assert call(polly, "POST", "/jobs", {"data": [job(run_id, "a")]})[0] == 500
    assert [j["name"] for j in polly.jobs()] == ["a"]
    assert call(polly, "POST", "/jobs", {"data": [job(run_id, "a")]})[0] == 409


def test_requests_are_recorded(polly):
    run_id = new_run(polly)
    add_jobs(polly, run_id, ["a"])
    recorded = polly.requests()
    assert [(r["method"], r["path"], r["status"]) for r in recorded] == [("POST", "/runs", 201), ("POST", "/jobs", 201)]
    assert recorded[1]["body"]["data"][0]["attributes"]["name"] == "a"


def test_the_sandbox_runs_a_polly_emulator():
    from planner.sandbox.local import Sandbox

    with Sandbox(polly_options={"api_key": "sandbox"}) as sandbox:
        url = sandbox.endpoints["polly"]
        assert url.startswith("http://127.0.0.1:")
        response = HTTP.request("GET", url + "/runs", headers={"x-api-key": "sandbox"})
        assert response.status == 200 and json.loads(response.data) == {
            "data": [],
            "links": {"self": "/pravaah/orchestration/runs", "next": None},
        }
