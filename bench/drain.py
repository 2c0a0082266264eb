"""Drain throughput: a backlog of N queued messages through the Dagster drain job.

    .venv/bin/python bench/drain.py                     # 1,000,000 messages, chunks of 50,000
    .venv/bin/python bench/drain.py --messages 200000 --chunk 10000

Fills a bench Redis db with simulated deliveries (with redeliveries), then runs `drain_job`
in-process (the code path of the sensor's runs and `funnel drain`) against an empty bench
database, and prints messages/s beside Postgres' COPY + INSERT … ON CONFLICT speed for the
same rows measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import fresh_database, redis_db, stack_env  # noqa: E402

from funnel_ingest.engine.classify import Classifier  # noqa: E402
from funnel_ingest.engine.keywords import default_csv_path, load_csv  # noqa: E402
from funnel_ingest.simulate.conversations import customers_for_messages, simulate  # noqa: E402
from funnel_ingest.store import funnel as store  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=50_000)
    args = p.parse_args()

    env = stack_env()
    url = fresh_database(env, "funnel_bench_drain")
    env.update(DATABASE_URL=url, REDIS_URL=redis_db(env, 11), STREAM_SHARDS="1")
    os.environ.update(env)
    from funnel_ingest.settings import get_settings
    get_settings.cache_clear()

    r = redis.Redis.from_url(env["REDIS_URL"])
    r.flushdb()
    sim = simulate(customers_for_messages(args.messages, days=120), seed=3,
                   start=datetime(2025, 6, 1, tzinfo=timezone.utc), days=120)
    deliveries = sim.deliveries(seed=3)
    t = time.perf_counter()
    with r.pipeline(transaction=False) as pipe:
        for i, m in enumerate(deliveries):
            pipe.xadd("funnel:messages", m.to_fields())
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
    print(f"queued {len(deliveries):,} deliveries ({len(sim.messages):,} distinct messages) "
          f"in {time.perf_counter() - t:.1f} s")

    import dagster as dg

    from funnel_dagster.defs.jobs import drain_job, drain_totals
    from funnel_dagster.defs.resources import resources
    t = time.perf_counter()
    result = drain_job.execute_in_process(
        run_config={"ops": {"drain_stream_range": {"config": {
            "ranges": [{"stream": "funnel:messages", "kind": "messages", "until_id": "+"}],
            "chunk_size": args.chunk}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        resources=resources(), instance=dg.DagsterInstance.ephemeral())
    dt = time.perf_counter() - t
    out = drain_totals(result)["funnel:messages"]
    drain_rate = out["entries"] / dt
    print(f"drain job:              {drain_rate:10,.0f} msgs/s  ({out['entries']:,} entries, "
          f"{out['inserted']:,} new, {dt:.1f} s, chunks of {args.chunk:,}); "
          f"backlog left: {r.xlen('funnel:messages')}")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in out["stages"].items())
    print(f"  per stage: {stages}; customer recomputes {out['customers']:,}, "
          f"{out['resumed']:,} of them from a later cycle")

    classifier = Classifier(list(load_csv(default_csv_path())), "bench", get_settings().tz)
    rows = store.message_rows(deliveries, classifier)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bench_upsert AS SELECT "
                     f"{', '.join(store.MESSAGE_COLUMNS)} FROM classified_messages WITH NO DATA")
        conn.execute("CREATE UNIQUE INDEX ON bench_upsert (source, message_id, room_key)")
        conn.execute("CREATE TEMP TABLE bench_stage AS SELECT * FROM bench_upsert WITH NO DATA")
        conn.commit()
        t = time.perf_counter()
        store._copy(conn, "bench_stage", store.MESSAGE_COLUMNS, rows)
        conn.execute("INSERT INTO bench_upsert SELECT * FROM bench_stage ON CONFLICT DO NOTHING")
        conn.commit()
        upsert_rate = len(rows) / (time.perf_counter() - t)
    print(f"postgres COPY + upsert: {upsert_rate:10,.0f} rows/s (same rows)")
    print(f"drain / bulk upsert:    {drain_rate / upsert_rate:10.2f}")


if __name__ == "__main__":
    main()
