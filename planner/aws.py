"""Client construction in one place: the standard boto3 chain plus the planner's retry policy.

boto3 already honours profiles, regions, ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>`` from the environment; ``endpoint_url`` is the CLI's
``--endpoint-url`` and ``endpoints`` the sandbox's per-service addresses.
HealthOmics prefixes hosts (``workflows-``) unless ``inject_host_prefix`` is off,
which breaks any custom endpoint, so it is turned off whenever one is in use.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

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
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
                self._cache[service] = self._make(service)
            return self._cache[service]

    def _make(self, service: str) -> Any:
        if self.sandbox:
            # The sandbox never sees real credentials, whatever the environment holds.
            session = boto3.session.Session(region_name=self.region or "us-east-1", **SANDBOX_CREDENTIALS)
        else:
            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        endpoint = self.endpoint_for(service)
        config = Config(
            retries={"mode": self.retry_mode, "max_attempts": self.max_attempts},
            inject_host_prefix=not (service == "omics" and endpoint),
            max_pool_connections=64,
        )
        return session.client(service, endpoint_url=self.endpoints.get(service) or self.endpoint_url, region_name=session.region_name or "us-east-1", config=config)


def client(service: str, **options: Any) -> Any:
    """One client with the planner's settings (see ``Clients``)."""
    return Clients(**options).get(service)
