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

import psycopg
import pytest

from funnel_ingest import db
from funnel_ingest.simulate.sender import send_all
from tests.faults.harness import build_plan
from tests.private_stack import Deployment, private_stack

REDIS_DB = 12




@pytest.fixture(scope="package")
def deployment(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    state_dir = tmp_path_factory.mktemp("deployment")
    ref_db = f"funnel_dep_ref_{uuid.uuid4().hex[:10]}"
    ref_url = stack_env["DATABASE_URL"].rsplit("/", 1)[0] + f"/{ref_db}"
    found: dict = {}

    def send_traffic(env: dict[str, str], api_url: str) -> None:
        db.ensure_database(ref_url)
        db.migrate(ref_url)
        found["plan"] = plan = build_plan(customers=150, seed=20261201, database_url=ref_url)
        for _attempt in range(3):  # a 503 is redelivered, as providers do (deduplicated)
            report = asyncio.run(send_all(api_url, plan.samples, env, concurrency=16))
            if report.statuses == {200: len(plan.samples)}:
                break
            print(f"deployment: redelivering after {dict(report.statuses)}")
        assert report.statuses == {200: len(plan.samples)}, report.statuses
        with psycopg.connect(ref_url) as conn:
            found["days"] = [d for (d,) in conn.execute(
                "SELECT DISTINCT message_date FROM classified_messages ORDER BY 1")]

    with private_stack(stack_env, state_dir, tag="dep", redis_db=REDIS_DB,
                       extra_env={"FUNNEL_START_DATE": ""}, extra_databases=(ref_db,),
                       before_dagster=send_traffic) as st:
        dep = Deployment(st.env, st.settings, st.api_url, st.dagster, state_dir,
                         found["plan"], found["days"])
        dep.wait_drained()
        yield dep
