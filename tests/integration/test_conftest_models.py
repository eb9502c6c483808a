"""The session's botocore model cache (conftest.shared_service_models) hands out copies, never a shared dict.

botocore edits a model it loaded (S3's requestUri loses ``/{Bucket}``), and moto's server
in the same process reads the same files: a shared dict broke every S3 route of moto 5.2.6.
"""

from __future__ import annotations

import os

import boto3
import botocore.loaders


def _s3_model_path() -> str:
    """The S3 service model's path without its extension, as botocore's Loader asks the JSONFileLoader for it."""
    loader = botocore.loaders.Loader()
    version = loader.determine_latest_version("s3", "service-2")
    for search_path in loader.search_paths:
        candidate = os.path.join(search_path, "s3", version, "service-2")
        if botocore.loaders.JSONFileLoader().exists(candidate):
            return candidate
    raise AssertionError("botocore ships no S3 model")


def test_each_load_is_a_fresh_copy_of_the_same_model() -> None:
    path = _s3_model_path()
    loader = botocore.loaders.JSONFileLoader()
    first = loader.load_file(path)
    second = loader.load_file(path)
    assert first == second
    assert first is not second
    first["operations"]["CreateBucket"]["http"]["requestUri"] = "edited"
    assert loader.load_file(path)["operations"]["CreateBucket"]["http"]["requestUri"] == "/{Bucket}"


def test_an_s3_call_leaves_the_model_moto_reads_untouched(moto_server: str) -> None:
    # The first call of an operation runs botocore's handler that strips /{Bucket} from the model it was given.
    s3 = boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url=moto_server)
    s3.create_bucket(Bucket="conftest-models")
    model = botocore.loaders.JSONFileLoader().load_file(_s3_model_path())
    assert model["operations"]["CreateBucket"]["http"]["requestUri"] == "/{Bucket}"
    # and moto, which reads the same files in this process, still routes a second session's call
    again = boto3.session.Session().client("s3", region_name="us-east-1", endpoint_url=moto_server)
    assert again.head_bucket(Bucket="conftest-models")["ResponseMetadata"]["HTTPStatusCode"] == 200
