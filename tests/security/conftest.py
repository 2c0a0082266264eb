"""Fixtures of the hostile-input tests: an API on the real stack with its own raw bucket and
distinctive secrets (so other test sessions' object counts are not disturbed and a leaked secret
is unmistakable in a log), plus helpers to look at what landed in S3 and Redis.

Hypothesis runs derandomized with bounded examples (`SEC`), so every run sends the
same inputs and the directory stays fast on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import redis

from funnel_ingest import s3
from funnel_ingest.settings import Settings
from tests.support import BUCKET_SAFE, SECRETS, TEST_DB, ApiServer, empty_engine_tables


@pytest.fixture(scope="session")
def sec_settings(settings: Settings) -> Settings:
    """The test stack's settings with this directory's own buckets and known secrets."""
    prefix = BUCKET_SAFE.sub("-", TEST_DB.lower()).strip("-")[:40]
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


@pytest.fixture
def db(sec_settings: Settings) -> Iterator[psycopg.Connection]:
    """The security test database with the engine's tables empty."""
    with psycopg.connect(sec_settings.database_url) as conn:
        empty_engine_tables(conn)
        conn.commit()
        yield conn
