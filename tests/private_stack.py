"""The API and a Postgres-backed Dagster (webserver + daemon) on private state, on the shared
stack's servers: a funnel database and a Dagster storage database of their own, one Redis db
(flushed before and after), buckets of their own, DAGSTER_HOME and logs under `state_dir`.
Everything is removed afterwards. Used by tests/e2e and tests/deployment."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import redis

from funnel_ingest import db, s3
from funnel_ingest.local.dagster import LocalDagster, dagster_env
from funnel_ingest.local.processes import (
    free_port,
    log_tail,
    start_api,
    stop_process_group,
    wait_for,
)
from funnel_ingest.settings import Settings
from tests.faults.harness import Plan


@dataclass
class PrivateStack:
    env: dict[str, str]
    settings: Settings
    api_url: str
    dagster: LocalDagster
    state_dir: Path



@contextmanager
def private_stack(stack_env: dict[str, str], state_dir: Path, *, tag: str, redis_db: int,
                  extra_env: dict[str, str] | None = None, extra_databases: tuple[str, ...] = (),
                  before_dagster: Callable[[dict[str, str], str], None] | None = None
                  ) -> Iterator[PrivateStack]:
    """Start the API, call `before_dagster(env, api_url)` (e.g. to send traffic that waits on
    the stream), then start Dagster. `extra_databases` (names) are dropped afterwards too."""
    uid = uuid.uuid4().hex[:10]
    base = stack_env["DATABASE_URL"].rsplit("/", 1)[0]
    funnel_db, dagster_db = f"funnel_{tag}_{uid}", f"funnel_{tag}_{uid}_dagster"
    env = {**stack_env,
           "DATABASE_URL": f"{base}/{funnel_db}",
           "REDIS_URL": stack_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{redis_db}",
           "RAW_BUCKET": f"funnel-{tag}-{uid}-raw",
           "REPORTS_BUCKET": f"funnel-{tag}-{uid}-reports",
           "STREAM_SHARDS": "1", **(extra_env or {})}
    settings = Settings().replace(database_url=env["DATABASE_URL"], redis_url=env["REDIS_URL"],
                                  raw_bucket=env["RAW_BUCKET"],
                                  reports_bucket=env["REPORTS_BUCKET"], stream_shards=1,
                                  **{k.lower(): v for k, v in (extra_env or {}).items()})
    r = redis.Redis.from_url(settings.redis_url)
    s3_client = s3.client(settings)
    api = None
    try:
        db.ensure_database(settings.database_url)
        db.migrate(settings.database_url)
        s3.ensure_buckets(settings)
        r.flushdb()
        env = dagster_env(env, state_dir, pg_db=dagster_db)
        port = free_port()
        api = start_api(env, port, state_dir / "logs" / "api.log")
        api_url = f"http://127.0.0.1:{port}"
        if before_dagster is not None:
            before_dagster(env, api_url)
        with LocalDagster(env, state_dir) as dagster:
            print(f"\n{tag}: API {api_url}, Dagster {dagster.base_url}, "
                  f"logs {state_dir / 'logs'}")
            yield PrivateStack(env, settings, api_url, dagster, state_dir)
    finally:
        if api is not None:
            stop_process_group(api)
        r.flushdb()
        r.close()
        for bucket in (settings.raw_bucket, settings.reports_bucket):
            s3.delete_bucket(s3_client, bucket)
        for name in (funnel_db, dagster_db, *extra_databases):
            db.drop_database(f"{base}/{name}")


DRAIN_TIMEOUT = 120.0


@dataclass
class Deployment:
    env: dict[str, str]
    settings: Settings
    api_url: str
    dagster: LocalDagster
    state_dir: Path
    plan: Plan
    days: list[date]  # the business days the plan's messages were sent on

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.settings.database_url, **kwargs)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url)

    def backlog(self) -> int:
        r = self.redis()
        try:
            return sum(r.xlen(s) for s in self.settings.stream_keys())
        finally:
            r.close()

    def wait_drained(self, timeout: float = DRAIN_TIMEOUT) -> None:
        try:
            wait_for(lambda: self.backlog() == 0, timeout, 0.5, "the stream drained")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; daemon log:\n{log_tail(self.dagster.daemon_log, 80)}"
                                 ) from None
