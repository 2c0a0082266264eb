"""The one S3 client factory (MinIO in production, SeaweedFS or MinIO locally).

`async_client()` for the API (aiobotocore: PUTs never block the event loop); `client()` for the
CLI, Dagster and tests (boto3). Both use path-style addressing, as MinIO and SeaweedFS expect.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import boto3
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from funnel_ingest.settings import Settings


def _config(max_pool: int = 64, timeout: float | None = None, attempts: int = 3) -> Config:
    return Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=timeout or 3,
        read_timeout=timeout or 10,
        max_pool_connections=max_pool,
        signature_version="s3v4",
    )


def _kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "endpoint_url": settings.s3_endpoint_url,
        "aws_access_key_id": settings.s3_access_key_id,
        "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
        "region_name": settings.s3_region,
    }


def client(settings: Settings) -> Any:
    """A boto3 S3 client for synchronous callers."""
    return boto3.client("s3", config=_config(), **_kwargs(settings))


def client_for(endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1",
               timeout: float = 2.0, attempts: int = 1) -> Any:
    """A boto3 client from explicit values, for probing a server (short timeouts, no retries)."""
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=region,
        config=_config(timeout=timeout, attempts=attempts))


def presigned_get(settings: Settings, bucket: str, key: str, expires_in: int | None = None) -> str:
    """A link a person can open in a browser for `expires_in` seconds (default
    REPORT_LINK_TTL_SECONDS). Signed for S3_PUBLIC_URL when set: a presigned URL is bound to the
    host it was signed for, and the endpoint the services use (e.g. http://minio:9000 under
    Compose) is not one a browser reaches. No request is made."""
    endpoint = settings.s3_public_url or settings.s3_endpoint_url
    signer = boto3.client("s3", config=_config(), **{**_kwargs(settings), "endpoint_url": endpoint})
    return signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key},
        ExpiresIn=expires_in or settings.report_link_ttl_seconds)


def async_client(settings: Settings, max_pool: int = 64) -> AbstractAsyncContextManager[Any]:
    """An aiobotocore S3 client (use as `async with async_client(s) as s3:`)."""
    return get_session().create_client("s3", config=_config(max_pool), **_kwargs(settings))


def ensure_buckets(settings: Settings, log: Callable[[str], None] | None = None) -> None:
    """Create the raw and reports buckets when missing (in S3_REGION: outside us-east-1 S3
    wants the region as the bucket's location constraint). `log` hears of each one created."""
    s3 = client(settings)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (settings.raw_bucket, settings.reports_bucket):
        if bucket in existing:
            continue
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if settings.s3_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.s3_region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",
                                                     "BucketAlreadyExists"):
                raise
            continue
        if log:
            log(f"s3: created bucket {bucket}")


def delete_bucket(client: Any, bucket: str) -> None:
    """Empty and delete `bucket` if it exists (throwaway buckets of tests and benchmarks)."""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)
    except client.exceptions.NoSuchBucket:
        pass
