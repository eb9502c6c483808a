"""Client construction in one place: the standard boto3 chain plus the planner's retry policy.

boto3 already honours profiles, regions, ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>`` from the environment; ``endpoint_url`` here is the
CLI's ``--endpoint-url``.  HealthOmics prefixes hosts (``workflows-``,
``analytics-``) unless ``inject_host_prefix`` is off, which breaks any custom
endpoint, so it is turned off whenever an endpoint is given.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config


def client(
    service: str,
    *,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 8,
) -> Any:
    session = boto3.session.Session(profile_name=profile, region_name=region)
    custom_endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
    config = Config(
        retries={"mode": retry_mode, "max_attempts": max_attempts},
        inject_host_prefix=not (service == "omics" and custom_endpoint),
    )
    region_name = session.region_name or "us-east-1"
    return session.client(service, endpoint_url=endpoint_url, region_name=region_name, config=config)
