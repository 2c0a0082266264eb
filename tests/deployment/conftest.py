"""Dagster as a deployment runs it: dagster-webserver and dagster-daemon as processes against a
Postgres-backed instance (the repo's dagster.yaml), the API in front of the stack's Postgres,
Redis and S3 server. Every run in this suite is launched the way the UI or the daemon launches
it (GraphQL, schedules, the sensor), in a new run-worker process with the job's own executor;
nothing here calls `execute_in_process`.

Private state on the shared servers: a funnel database and a Dagster storage database of their
own (dropped afterwards), Redis db 12, buckets of their own, DAGSTER_HOME under pytest's tmp
dir. FUNNEL_START_DATE is left empty, as in a deployment: the partitions start at the first day
with data.

Before Dagster starts, two simulated days of provider webhooks (tests/faults' plan: WhatsApp,
Qontak and generic, with the providers' redeliveries) are sent to the API, so the archive holds
them and the stream waits; Dagster then starts and its sensor drains the stream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest
import redis

from funnel_ingest import db, s3
from funnel_ingest.cli import start_api
from funnel_ingest.local_dagster import LocalDagster, dagster_env, free_port, tail, wait_for
from funnel_ingest.sender import send_all
from funnel_ingest.settings import Settings
from tests.e2e.test_dagster_e2e import _delete_bucket, _drop_database, _stop_process_group
from tests.faults.harness import Plan, build_plan

REDIS_DB = 12
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
            raise AssertionError(f"{exc}; daemon log:\n{tail(self.dagster.daemon_log, 80)}"
                                 ) from None


@pytest.fixture(scope="package")
def deployment(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    uid = uuid.uuid4().hex[:10]
    state_dir = tmp_path_factory.mktemp("deployment")
    base = stack_env["DATABASE_URL"].rsplit("/", 1)[0]
    funnel_db, dagster_db, ref_db = (f"funnel_dep_{uid}", f"funnel_dep_{uid}_dagster",
                                     f"funnel_dep_{uid}_ref")
    env = {**stack_env,
           "DATABASE_URL": f"{base}/{funnel_db}",
           "REDIS_URL": stack_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}",
           "RAW_BUCKET": f"funnel-dep-{uid}-raw",
           "REPORTS_BUCKET": f"funnel-dep-{uid}-reports",
           "STREAM_SHARDS": "1",
           "FUNNEL_START_DATE": ""}
    settings = Settings().replace(database_url=env["DATABASE_URL"], redis_url=env["REDIS_URL"],
                                  raw_bucket=env["RAW_BUCKET"],
                                  reports_bucket=env["REPORTS_BUCKET"], stream_shards=1,
                                  funnel_start_date="")
    r = redis.Redis.from_url(settings.redis_url)
    s3_client = s3.client(settings)
    api = None
    try:
        db.ensure_database(settings.database_url)
        db.migrate(settings.database_url)
        s3.ensure_buckets(settings)
        r.flushdb()
        ref_url = f"{base}/{ref_db}"
        db.ensure_database(ref_url)
        db.migrate(ref_url)
        plan = build_plan(customers=150, seed=20261201, database_url=ref_url)
        env = dagster_env(env, state_dir, pg_db=dagster_db)
        port = free_port()
        api = start_api(env, port, state_dir / "logs" / "api.log")
        api_url = f"http://127.0.0.1:{port}"
        report = asyncio.run(send_all(api_url, plan.samples, env, concurrency=16))
        assert report.statuses == {200: len(plan.samples)}, report.statuses
        with psycopg.connect(ref_url) as conn:
            days = [d for (d,) in conn.execute(
                "SELECT DISTINCT message_date FROM classified_messages ORDER BY 1")]
        with LocalDagster(env, state_dir) as dagster:
            dep = Deployment(env, settings, api_url, dagster, state_dir, plan, days)
            print(f"\ndeployment: API {api_url}, Dagster {dagster.base_url}, "
                  f"logs {state_dir / 'logs'}")
            dep.wait_drained()
            yield dep
    finally:
        if api is not None:
            _stop_process_group(api)
        r.flushdb()
        r.close()
        for bucket in (settings.raw_bucket, settings.reports_bucket):
            _delete_bucket(s3_client, bucket)
        for name in (funnel_db, dagster_db, ref_db):
            _drop_database(settings.database_url, name)
