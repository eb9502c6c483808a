"""Talking to AWS, without a server: client options, S3's 409 on conditional writes, the sandbox's IAM role."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

import planner.services.staging
from planner.commands import sandbox_prepare as prepare
from planner.errors import InputError, SubmissionError
from planner.services.aws import Clients
from planner.services.staging import CONFLICT_ATTEMPTS, Stager


def _client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


# ---------------------------------------------------------------- client options


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_attempts", -1),
        ("max_attempts", 0),  # botocore counts the first attempt: 0 would never send the call
        ("region", "bad region!"),
        ("region", "-us-east-1"),
        ("region", ""),
        ("endpoint_url", "not a url"),
        ("endpoint_url", "ftp://example.com"),
        ("endpoint_url", "http://"),
    ],
)
def test_bad_client_options_are_input_errors_before_any_client(option: str, value: Any) -> None:
    # The Python API names the setting by its keyword (the CLI shows the flag: tests/unit/test_messages.py).
    with pytest.raises(InputError, match=f"^{option}="):
        Clients(**{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_attempts", 1),
        ("region", "us-gov-west-1"),
        ("endpoint_url", "http://127.0.0.1:5000"),
        ("endpoint_url", "https://s3.eu-west-1.amazonaws.com"),
        ("endpoint_url", "http://[::1]:5000"),
    ],
)
def test_good_client_options_make_a_client(option: str, value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    assert Clients(**{option: value}).get("s3") is not None


def test_a_missing_profile_or_a_bad_endpoint_in_the_environment_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(InputError, match="could not be found"):
        Clients(profile="no-such-profile").get("s3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not a url")
    with pytest.raises(InputError, match="Invalid endpoint: not a url"):
        Clients(region="us-east-1").get("s3")


# ---------------------------------------------------------------- S3 409 ConditionalRequestConflict


class _Put:
    """A put_object that answers ``errors`` in turn, then succeeds; it reads the body each time, as sending does."""

    def __init__(self, *errors: ClientError):
        self.errors = list(errors)
        self.bodies: list[bytes] = []

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        self.bodies.append(kwargs["Body"].read())
        if self.errors:
            raise self.errors.pop(0)
        return {"ETag": '"e"'}


_ITEM = planner.services.staging._Object(0, "shard", "bucket", "k", 1, "00", "00", '"00"', "application/json", 1)


@pytest.fixture()
def stager(monkeypatch: pytest.MonkeyPatch) -> tuple[Stager, list[float]]:
    waits: list[float] = []
    plan = SimpleNamespace(plan_id="p" * 24)
    return Stager(None, None, plan, "s3://bucket/prefix/", sleep=waits.append), waits  # type: ignore[arg-type]


def test_409_is_tried_again_with_the_whole_body(stager: tuple[Stager, list[float]]) -> None:
    client, waits = stager
    put = _Put(_client_error("ConditionalRequestConflict", 409), _client_error("ConditionalRequestConflict", 409))
    assert client._call(put, _ITEM, Body=io.BytesIO(b"shard bytes")) == {"ETag": '"e"'}
    assert put.bodies == [b"shard bytes"] * 3
    assert len(waits) == 2 and 0 < waits[0] < waits[1] <= 5


def test_409_every_time_ends_in_an_accurate_error(stager: tuple[Stager, list[float]]) -> None:
    client, waits = stager
    put = _Put(*[_client_error("ConditionalRequestConflict", 409)] * CONFLICT_ATTEMPTS)
    with pytest.raises(SubmissionError) as caught:
        client._call(put, _ITEM, Body=io.BytesIO(b"x"))
    message = str(caught.value)
    assert (
        message.startswith("s3://bucket/k: S3 answered 409 ConditionalRequestConflict")
        and "nothing was overwritten" in message
    )
    assert "\n" not in message and len(put.bodies) == CONFLICT_ATTEMPTS and len(waits) == CONFLICT_ATTEMPTS - 1


def test_412_is_not_tried_again(stager: tuple[Stager, list[float]]) -> None:
    client, waits = stager
    put = _Put(_client_error("PreconditionFailed", 412))
    with pytest.raises(planner.services.staging._AlreadyThere):
        client._call(put, _ITEM, Body=io.BytesIO(b"x"))
    assert len(put.bodies) == 1 and waits == []


# ---------------------------------------------------------------- the sandbox's Batch setup


class _Iam:
    def __init__(self, create_error: str):
        self.create_error, self.roles = create_error, 0

    def get_role(self, RoleName: str) -> dict[str, Any]:
        if not self.roles:
            raise _client_error("NoSuchEntity", 404, "GetRole")
        return {"Role": {"Arn": f"arn:aws:iam::123456789012:role/{RoleName}"}}

    def create_role(self, **_: Any) -> dict[str, Any]:
        self.roles = 1  # made, but the answer is lost: botocore sends it again
        raise _client_error(self.create_error, 409, "CreateRole")


class _Batch:
    def __init__(self) -> None:
        self.environments: list[str] = []

    def describe_compute_environments(self, **_: Any) -> dict[str, Any]:
        return {"computeEnvironments": []}

    def create_compute_environment(self, **kwargs: Any) -> dict[str, Any]:
        self.environments.append(kwargs["serviceRole"])
        return {"computeEnvironmentArn": "arn:ce"}

    def describe_job_queues(self, **_: Any) -> dict[str, Any]:
        return {"jobQueues": [{}]}

    def describe_job_definitions(self, **_: Any) -> dict[str, Any]:
        return {"jobDefinitions": [{"revision": 1}]}


def _sandbox_context(iam: _Iam, batch: _Batch) -> Any:
    clients = {"iam": iam, "batch": batch}
    return SimpleNamespace(
        clients=SimpleNamespace(get=clients.__getitem__),
        manifest=SimpleNamespace(defaults={"jobQueue": "queue", "jobDefinition": "jobdef:1"}),
    )


def test_a_lost_create_role_answer_is_success() -> None:
    batch = _Batch()
    prepare.prepare_batch(_sandbox_context(_Iam("EntityAlreadyExists"), batch))
    assert batch.environments == [f"arn:aws:iam::123456789012:role/{prepare.BATCH_ROLE}"]


def test_other_create_role_errors_still_raise() -> None:
    with pytest.raises(ClientError, match="AccessDenied"):
        prepare.prepare_batch(_sandbox_context(_Iam("AccessDenied"), _Batch()))
