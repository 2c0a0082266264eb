"""Test fixtures on real services: the `funnel up` stack (Postgres, Redis, S3 server), an API
served by uvicorn on a loopback port, and throwaway servers for tests that break a service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from funnel_ingest import db, s3
from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv
from funnel_ingest.local.processes import free_port
from funnel_ingest.settings import Settings, get_settings
from tests.support import (
    TEST_DB,
    TEST_REDIS_DB,
    TEST_START_DATE,
    ApiServer,
    empty_engine_tables,
    start_redis_server,
)

os.environ["FUNNEL_START_DATE"] = TEST_START_DATE


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    from funnel_ingest.local import stack

    # `stack.up` persists explicitly set settings as the stack's own: not the tests' start date
    os.environ.pop("FUNNEL_START_DATE", None)
    try:
        env = dict(stack.up(log=lambda _msg: None))
    finally:
        os.environ["FUNNEL_START_DATE"] = TEST_START_DATE
    base = env["DATABASE_URL"].rsplit("/", 1)[0]
    env.update({
        "FUNNEL_START_DATE": TEST_START_DATE,
        "DATABASE_URL": f"{base}/{TEST_DB}",
        "REDIS_URL": env["REDIS_URL"].rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}",
        "RAW_BUCKET": "funnel-test-raw",
        "REPORTS_BUCKET": "funnel-test-reports",
        "STREAM_SHARDS": "1",
    })
    os.environ.update(env)
    get_settings.cache_clear()
    settings = Settings()
    db.ensure_database(settings.database_url)
    db.migrate(settings.database_url)
    s3.ensure_buckets(settings)
    return env


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture
def r(settings: Settings) -> Iterator[redis.Redis]:
    """The test Redis database, emptied before each test."""
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_client(settings: Settings):
    return s3.client(settings)


@pytest.fixture
def api(settings: Settings, r: redis.Redis) -> Iterator[ApiServer]:
    with ApiServer(settings) as server:
        yield server


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free port (tests may stop it)."""
    port = free_port()
    proc = start_redis_server(port, tmp_path)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


@pytest.fixture
def throwaway_s3(tmp_path: Path, settings: Settings) -> Iterator[dict]:
    """A private S3 server (the same kind `funnel up` runs) on a free port; tests may stop it."""
    from funnel_ingest.local import s3_server

    port = s3_server.free_s3_port()
    key, secret = "throwaway", "throwaway-secret"
    proc = s3_server.start_s3_server(tmp_path / "s3", port, key, secret, tmp_path / "s3.log")
    endpoint = f"http://127.0.0.1:{port}"
    s3_server.wait_s3_ready(endpoint, key, secret, timeout=30)
    info = {"proc": proc, "endpoint": endpoint, "key": key, "secret": secret}
    yield info
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def funnel_db(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the test database with the engine's tables emptied."""
    with psycopg.connect(settings.database_url) as conn:
        empty_engine_tables(conn)
        conn.commit()
        yield conn


@pytest.fixture(scope="session")
def classifier(settings) -> Classifier:
    keywords = load_csv(default_csv_path())
    return Classifier(list(keywords), "test-default", settings.tz)


@pytest.fixture
def key(settings) -> dict[str, str]:
    return {"X-API-Key": settings.api_key.get_secret_value()}


@pytest.fixture
def kw_db(settings):
    """The test database with no keyword version, before and after the test (a version left
    current would classify the next tests' messages)."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        def empty() -> None:
            conn.execute("DELETE FROM keyword_entries")
            conn.execute("DELETE FROM keyword_versions")
        empty()
        yield conn
        empty()
