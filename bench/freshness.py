"""Webhook-to-funnel latency through the Dagster sensor, under steady load.

    .venv/bin/python bench/freshness.py                       # 20 webhooks/s for 60 s
    .venv/bin/python bench/freshness.py --rate 50 --duration 120

Starts the API and a local Dagster (webserver + daemon, Postgres-backed instance) on the
`funnel up` stack with a fresh bench database, posts simulated WhatsApp messages at a steady
rate, and polls Postgres for each acknowledged message's row (written in the same transaction
as its funnel update). Prints p50/p95/max of ack -> row latency and the drain runs it took.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import fresh_database, redis_db, stack_env  # noqa: E402

from funnel_ingest import s3
from funnel_ingest.ingest import auth
from funnel_ingest.local import stack  # noqa: E402
from funnel_ingest.local.dagster import LocalDagster, dagster_env  # noqa: E402
from funnel_ingest.local.processes import (  # noqa: E402
    free_port,  # noqa: E402
    start_api,
    stop_process_group,
)
from funnel_ingest.settings import Settings  # noqa: E402
from funnel_ingest.simulate.webhooks import indonesian_phone, whatsapp_body  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=60.0)
    args = p.parse_args()

    import random
    from datetime import datetime, timezone

    env = stack_env()
    env.update(DATABASE_URL=fresh_database(env, "funnel_bench_fresh",
                                           "funnel_bench_fresh_dagster"),
               REDIS_URL=redis_db(env, 9), RAW_BUCKET="funnel-bench-fresh", LOG_LEVEL="WARNING")
    s3.ensure_buckets(Settings(**{k.lower(): v for k, v in env.items()}))
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    state = stack.state_dir() / "bench-fresh"
    port = free_port()
    api = start_api(env, port, state / "logs" / "api.log")
    dagster = LocalDagster(dagster_env(env, state), state)
    try:
        dagster.start()
        acked: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop = threading.Event()

        def poll() -> None:
            with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
                while not stop.is_set() or len(seen) < len(acked):
                    pending = [k for k in list(acked) if k not in seen]
                    if pending:
                        now = time.time()
                        for (mid,) in conn.execute("SELECT message_id FROM classified_messages "
                                                   "WHERE message_id = ANY(%s)", (pending,)):
                            seen.setdefault(mid, now)
                    time.sleep(0.2)
                    if stop.is_set() and time.time() - stop_at[0] > 120:
                        return

        stop_at = [0.0]
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        rng = random.Random(1)
        secret = env["WHATSAPP_APP_SECRET"]

        async def send() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                start = time.perf_counter()
                total = int(args.rate * args.duration)
                tasks = []

                async def one(i: int) -> None:
                    body = whatsapp_body(rng, indonesian_phone(rng), ["Halo kak mau booking"],
                                         datetime.now(timezone.utc))
                    mid = orjson.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
                    res = await c.post("/webhooks/whatsapp", content=body, headers={
                        "X-Hub-Signature-256": auth.sign(body, secret),
                        "Content-Type": "application/json"})
                    if res.status_code == 200:
                        acked[mid] = time.time()

                for i in range(total):
                    delay = start + i / args.rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(i)))
                await asyncio.gather(*tasks)

        asyncio.run(send())
        stop_at[0] = time.time()
        stop.set()
        poller.join(150)
        lat = sorted(seen[k] - acked[k] for k in acked if k in seen)
        missing = len(acked) - len(lat)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

        runs = httpx.post(f"{dagster.base_url}/graphql", json={"query": "{ runsOrError(filter: "
                          "{pipelineName: \"drain_job\"}) { ... on Runs { count } } }"}).json()
        print(f"webhooks acknowledged: {len(acked)} at {args.rate}/s for {args.duration:.0f} s")
        print(f"ack -> funnel row: p50 {pct(.5):.1f} s, p95 {pct(.95):.1f} s, max {lat[-1]:.1f} s; "
              f"not processed: {missing}")
        print(f"drain runs: {runs.get('data', {}).get('runsOrError', {}).get('count')}")
    finally:
        dagster.stop()
        stop_process_group(api)


if __name__ == "__main__":
    main()
