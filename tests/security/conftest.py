"""Fixtures of the hostile-input tests: an API on the real stack with its own raw bucket and
distinctive secrets (so other test sessions' object counts are not disturbed and a leaked secret
is unmistakable in a log), plus helpers to look at what landed in S3 and Redis.

Hypothesis runs derandomized with bounded examples (`SEC`), so every run sends the
same inputs and the directory stays fast on two cores.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, settings as hsettings

from funnel_ingest import s3
from funnel_ingest.settings import Settings

from ..conftest import TEST_DB, ApiServer, raw_objects

SEC = hsettings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
"""Hypothesis settings of this directory: derandomized (the same inputs every run), bounded,
no example database, no wall-clock deadline. Used per test, never loaded as a global profile."""

# Distinctive values: a leak of any of them in a log cannot be a coincidence.
SECRETS = {
    "webhook_token": "sec-webhook-token-Q7v2Lr9Kp",
    "webhook_hmac_secret": "sec-crm-hmac-secret-Zt4Wm8Hy",
    "whatsapp_app_secret": "sec-wa-app-secret-Jd6Nf3Xs",
    "whatsapp_verify_token": "sec-wa-verify-token-Bk5Rc1Pe",
    "api_key": "sec-api-key-Gh2Tq7Vw",
}
_BUCKET_SAFE = re.compile(r"[^a-z0-9-]+")

# raw/source=<route>/date=YYYY-MM-DD/hour=HH/<YYYYmmddTHHMMSSffffff>Z-<uuid hex>.ndjson
RAW_KEY = re.compile(
    r"raw/source=(whatsapp|qontak|generic)/date=\d{4}-\d{2}-\d{2}/hour=\d{2}/"
    r"\d{8}T\d{12}Z-[0-9a-f]{32}\.ndjson")


@pytest.fixture(scope="session")
def sec_settings(settings: Settings) -> Settings:
    """The test stack's settings with this directory's own buckets and known secrets."""
    prefix = _BUCKET_SAFE.sub("-", TEST_DB.lower()).strip("-")[:40]
    cfg = settings.replace(raw_bucket=f"{prefix}-sec-raw", reports_bucket=f"{prefix}-sec-reports",
                           **SECRETS)
    s3.ensure_buckets(cfg)
    return cfg


@pytest.fixture(scope="module")
def sec_api(sec_settings: Settings) -> Iterator[ApiServer]:
    """One API server for a module (tests that need empty streams use `clean_redis`)."""
    with ApiServer(sec_settings) as server:
        yield server


@pytest.fixture
def clean_redis(sec_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(sec_settings.redis_url)
    client.flushdb()
    yield client
    client.close()


def stream_lengths(r: redis.Redis, cfg: Settings) -> dict[str, int]:
    return {k: r.xlen(k) for k in (*cfg.stream_keys(), cfg.status_stream, cfg.deadletter_stream)}


def bucket_keys(s3_client, cfg: Settings) -> set[str]:
    return set(raw_objects(s3_client, cfg.raw_bucket))
