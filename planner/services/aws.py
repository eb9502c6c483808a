"""Client construction in one place: the standard boto3 chain plus the planner's retry policy.

boto3 already honours profiles, regions, ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>`` from the environment; ``endpoint_url`` is the CLI's
``--endpoint-url`` and ``endpoints`` the sandbox's per-service addresses.
HealthOmics prefixes hosts (``workflows-``) unless ``inject_host_prefix`` is off,
which breaks any custom endpoint, so it is turned off whenever one is in use.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import InvalidRegionError, ProfileNotFound
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

from planner.errors import InputError, setting

# The longest wait between two tries of a call (throttled, or a concurrency limit): backoff doubles up to it.
MAX_BACKOFF = 60.0
SANDBOX_CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox", "aws_session_token": None}


@dataclass
class Clients:
    """Makes and caches one boto3 client per service, all with the same settings."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    endpoints: dict[str, str] = field(default_factory=dict)  # per service, e.g. the sandbox's
    retry_mode: str = "standard"
    max_attempts: int = 8
    sandbox: bool = False
    on_client: Callable[[Any], None] | None = None  # sees each client once made (registers its event hooks)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        # Checked here, before any client is made: botocore raises its own errors for these
        # only when the first client is created, deep inside a submit.
        check_options(region=self.region, endpoint_url=self.endpoint_url, max_attempts=self.max_attempts)

    def endpoint_for(self, service: str) -> str | None:
        return (
            self.endpoints.get(service)
            or self.endpoint_url
            or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
            or os.environ.get("AWS_ENDPOINT_URL")
        )

    def get(self, service: str) -> Any:
        with self._lock:
            if service not in self._cache:
                made = self._make(service)
                if self.on_client is not None:
                    self.on_client(made)
                self._cache[service] = made
            return self._cache[service]

    def _make(self, service: str) -> Any:
        try:
            return self._session_client(service)
        except (ProfileNotFound, InvalidRegionError) as exc:  # --profile, or the region of a profile or AWS_REGION
            raise InputError(f"cannot set up the AWS {service} client: {exc}") from exc
        except ValueError as exc:
            if not str(exc).startswith("Invalid endpoint"):
                raise
            # e.g. from AWS_ENDPOINT_URL_<SERVICE> or the profile's endpoint_url
            raise InputError(f"cannot set up the AWS {service} client: {exc}") from exc

    def _session_client(self, service: str) -> Any:
        if self.sandbox:
            # The sandbox never sees real credentials, whatever the environment holds.
            session = boto3.session.Session(region_name=self.region or "us-east-1", **SANDBOX_CREDENTIALS)
        else:
            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        endpoint = self.endpoint_for(service) or self._sandbox_fallback()
        config = Config(
            retries={"mode": self.retry_mode, "max_attempts": self.max_attempts},
            inject_host_prefix=not (service == "omics" and endpoint),
            max_pool_connections=64,
        )
        return session.client(
            service,
            endpoint_url=self.endpoints.get(service) or self.endpoint_url or self._sandbox_fallback(),
            region_name=session.region_name or "us-east-1",
            config=config,
        )

    def _sandbox_fallback(self) -> str | None:
        # In the sandbox a service it does not list (KMS for a staging key's alias, Service Quotas)
        # goes to moto's server, which serves most of AWS on one port: never to AWS itself.
        return self.endpoints.get("s3") if self.sandbox else None


def check_options(*, region: str | None, endpoint_url: str | None, max_attempts: int) -> None:
    """Refuse, as input errors, the AWS options botocore would reject when it makes a client."""
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        # botocore counts the first attempt: 1 is "no retries", 0 would be "never send the call".
        raise InputError(
            f"{setting('max_attempts', repr(max_attempts))}: must be a whole number, 1 or more "
            "(botocore's attempts per call, the first included)"
        )
    if region is not None and not _REGION.fullmatch(region):
        raise InputError(f"{setting('region', repr(region))}: not an AWS region name (like us-east-1)")
    if endpoint_url is not None and not (
        endpoint_url.lower().startswith(("http://", "https://"))
        and (is_valid_endpoint_url(endpoint_url) or is_valid_ipv6_endpoint_url(endpoint_url))
    ):
        raise InputError(
            f"{setting('endpoint_url', repr(endpoint_url))}: not a URL of an endpoint "
            "(like https://s3.us-east-1.amazonaws.com or http://127.0.0.1:5000)"
        )


# botocore's own rule (botocore.utils.validate_region_name), minus the empty name.
_REGION = re.compile(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)")


def client(service: str, **options: Any) -> Any:
    """One client with the planner's settings (see ``Clients``)."""
    return Clients(**options).get(service)
