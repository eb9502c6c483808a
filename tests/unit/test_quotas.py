"""The retained-run quota is found by its code, with its documented name as the fallback.

The HealthOmics User Guide's "HealthOmics service quotas" table names it "Workflows - Maximum runs
(active or inactive)" and links it to quota code L-C9679DBC.  Service Quotas is not in moto for
omics, so botocore's Stubber pins the exact requests.
"""

from __future__ import annotations

import boto3
from botocore.stub import Stubber

from planner.services.quotas import RETAINED_RUNS_QUOTA_CODE, RETAINED_RUNS_QUOTA_NAME, quota_value

NAME = "Workflows - Maximum runs (active or inactive)"


def _client() -> object:
    return boto3.client("service-quotas", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_the_quota_is_read_by_its_code() -> None:
    assert (RETAINED_RUNS_QUOTA_CODE, RETAINED_RUNS_QUOTA_NAME) == ("L-C9679DBC", NAME)
    client = _client()
    with Stubber(client) as stub:
        stub.add_response(
            "get_service_quota",
            {"Quota": {"QuotaName": NAME, "QuotaCode": "L-C9679DBC", "Value": 5000.0}},
            {"ServiceCode": "omics", "QuotaCode": "L-C9679DBC"},
        )
        assert quota_value(client) == (5000.0, NAME)


def test_the_documented_name_is_the_fallback_and_the_concurrent_run_quotas_are_not_taken() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_client_error("get_service_quota", "NoSuchResourceException", expected_params=None)
        stub.add_response(
            "list_service_quotas",
            {
                "Quotas": [
                    {"QuotaName": "Workflows - Maximum concurrent active runs using static run storage", "Value": 10.0},
                    {"QuotaName": NAME, "Value": 7000.0},
                ]
            },
            {"ServiceCode": "omics"},
        )
        assert quota_value(client) == (7000.0, NAME)
