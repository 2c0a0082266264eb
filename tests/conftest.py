"""Test fixtures on real services: the `funnel up` stack (Postgres, Redis, S3 server), an API
served by uvicorn on a loopback port, and throwaway servers for tests that break a service."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
import uvicorn

from funnel_ingest import auth, db, s3
from funnel_ingest.local_dagster import free_port
from funnel_ingest.settings import Settings, get_settings

PAYLOADS = Path(__file__).parent / "payloads"

# The simulated histories of the tests start in 2025; without this the partitions would start
# at the first day with data in whatever database the code location sees when it is imported.
# (tests/deployment runs the code location without it, as deployments do.)
TEST_START_DATE = "2025-01-01"
os.environ["FUNNEL_START_DATE"] = TEST_START_DATE

# Tests use their own database, Redis db and buckets on the stack's servers.
TEST_DB = os.environ.get("FUNNEL_TEST_DB", "funnel_test")
TEST_REDIS_DB = int(os.environ.get("FUNNEL_TEST_REDIS_DB", "15"))


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    from funnel_ingest import stack

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


def raw_objects(s3_client, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


class ApiServer:
    """The real app under uvicorn in a thread, reached over loopback HTTP."""

    def __init__(self, settings: Settings) -> None:
        from funnel_ingest.main import create_app

        self.settings = settings
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
            access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.base_url, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(15)

    # signed senders, as each provider sends
    def whatsapp(self, body: bytes, signature: str | None = "sign", **headers: str) -> httpx.Response:
        h = {"Content-Type": "application/json", **headers}
        if signature == "sign":
            signature = auth.sign(body, self.settings.whatsapp_app_secret.get_secret_value())
        if signature is not None:
            h["X-Hub-Signature-256"] = signature
        return self.client.post("/webhooks/whatsapp", content=body, headers=h)

    def crm(self, path: str, body: bytes, *, token: str | None = "default",
            signature: str | None = None) -> httpx.Response:
        h = {"Content-Type": "application/json"}
        if token == "default":
            token = self.settings.webhook_token.get_secret_value()
        if token is not None:
            h["X-Webhook-Token"] = token
        if signature is not None:
            h["X-Webhook-Signature"] = signature
        return self.client.post(path, content=body, headers=h)


@pytest.fixture
def api(settings: Settings, r: redis.Redis) -> Iterator[ApiServer]:
    with ApiServer(settings) as server:
        yield server


def start_redis_server(port: int, workdir: Path, output=subprocess.DEVNULL) -> subprocess.Popen:
    """A redis-server on 127.0.0.1:`port` keeping nothing on disk (a restart comes back
    empty), once it answers PING."""
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=output, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server on port {port} did not answer within 10 s")


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
    from funnel_ingest import stack

    port = stack.free_s3_port()
    key, secret = "throwaway", "throwaway-secret"
    proc = stack.start_s3_server(tmp_path / "s3", port, key, secret, tmp_path / "s3.log")
    endpoint = f"http://127.0.0.1:{port}"
    stack.wait_s3_ready(endpoint, key, secret, timeout=30)
    info = {"proc": proc, "endpoint": endpoint, "key": key, "secret": secret}
    yield info
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# Tables the engine writes (keyword versions are kept: they are published, not derived).
ENGINE_TABLES = ("classified_messages", "funnel", "transactions", "rooms", "stream_offsets",
                 "message_statuses", "dead_letters")


def empty_engine_tables(conn: psycopg.Connection, keep: tuple[str, ...] = ()) -> None:
    tables = ", ".join(t for t in ENGINE_TABLES if t not in keep)
    conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture
def funnel_db(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the test database with the engine's tables emptied."""
    with psycopg.connect(settings.database_url) as conn:
        empty_engine_tables(conn)
        conn.commit()
        yield conn


def pg_count(settings: Settings, sql: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql).fetchone()[0]


def metric(api: ApiServer, name: str, **labels: str) -> float:
    """The current value of one Prometheus sample served by the API (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(api.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
