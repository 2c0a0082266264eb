"""Drain throughput: a backlog of N queued messages through the Dagster drain job.

    .venv/bin/python bench/drain.py                     # 1,000,000 messages, chunks of 50,000
    .venv/bin/python bench/drain.py --messages 200000 --chunk 10000

Fills a bench Redis db with simulated deliveries (with redeliveries), then runs `drain_job`
in-process (the code path of the sensor's runs and `funnel drain`) in a process of its own
against an empty bench database, and prints:
- messages/s beside Postgres' COPY + INSERT … ON CONFLICT speed for the same rows into a table
  with the same unique key, measured in the same run, and their ratio;
- the seconds of each stage (read and classify run in the drain's worker process, overlapped
  with the copy, insert and funnel stages of the batch before);
- the CPU seconds of the drain process, its worker, the Postgres server and Redis, and how busy
  the machine's cores were;
- the peak resident memory of the drain (its process and its worker together), sampled;
- the time of `funnel rebuild` (the whole funnel recomputed) over the drained messages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import (  # noqa: E402
    RssSampler,
    cpu_seconds,
    fresh_database,
    machine_busy_seconds,
    redis_db,
    stack_env,
)

from funnel_ingest.engine.classify import Classifier  # noqa: E402
from funnel_ingest.engine.keywords import default_csv_path, load_csv  # noqa: E402
from funnel_ingest.simulate.conversations import customers_for_messages, simulate  # noqa: E402
from funnel_ingest.store import funnel as store  # noqa: E402

STREAM = "funnel:messages"


def drain(chunk: int) -> None:
    """The drain itself (run as a child process): `drain_job` over the whole stream; prints its
    totals as one JSON line."""
    import dagster as dg

    from funnel_dagster.defs.jobs import drain_job, drain_totals
    from funnel_dagster.defs.resources import resources
    t = time.perf_counter()
    result = drain_job.execute_in_process(
        run_config={"ops": {"drain_stream_range": {"config": {
            "ranges": [{"stream": STREAM, "kind": "messages", "until_id": "+"}],
            "chunk_size": chunk}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        resources=resources(), instance=dg.DagsterInstance.ephemeral())
    seconds = time.perf_counter() - t
    own, workers = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))
    print(json.dumps({"seconds": seconds, **drain_totals(result)[STREAM],
                      "cpu": own.ru_utime + own.ru_stime,
                      "worker_cpu": workers.ru_utime + workers.ru_stime}))


def server_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every Postgres and Redis server process (backends included)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("postgres", "redis-server"):
                out[int(entry.name)] = (name, cpu_seconds([int(entry.name)]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000,
                   help="about how many distinct messages to simulate (default 1,000,000)")
    p.add_argument("--chunk", type=int, default=50_000, help="batch size of the drain")
    p.add_argument("--drain-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.drain_child:
        drain(args.chunk)
        return

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
    distinct = len(sim.messages)
    del sim
    t = time.perf_counter()
    with r.pipeline(transaction=False) as pipe:
        for i, m in enumerate(deliveries):
            pipe.xadd(STREAM, m.to_fields())
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
    print(f"queued {len(deliveries):,} deliveries ({distinct:,} distinct messages) "
          f"in {time.perf_counter() - t:.1f} s")

    before = server_cpu()
    busy0, total0 = machine_busy_seconds()
    child = subprocess.Popen([sys.executable, __file__, "--drain-child", "--chunk",
                              str(args.chunk)], stdout=subprocess.PIPE, text=True, env=os.environ)
    sampler = RssSampler(child.pid)
    servers: dict[int, tuple[str, float]] = {}
    while child.poll() is None:  # CPU seconds of the servers' processes, read while they live
        servers.update(server_cpu())
        time.sleep(0.2)
    peak_mb = sampler.stop()
    busy1, total1 = machine_busy_seconds()
    servers.update(server_cpu())
    if child.returncode:
        sys.exit(f"the drain failed (exit {child.returncode})")
    out = json.loads(child.stdout.read().strip().splitlines()[-1])
    dt = out["seconds"]
    drain_rate = out["entries"] / dt
    print(f"drain job:              {drain_rate:10,.0f} msgs/s  ({out['entries']:,} entries, "
          f"{out['inserted']:,} new, {dt:.1f} s, chunks of {args.chunk:,}); "
          f"backlog left: {r.xlen(STREAM)}")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in out["stages"].items())
    print(f"  per stage: {stages}; customer recomputes {out['customers']:,}, "
          f"{out['resumed']:,} of them from a later cycle")
    used = {}
    for pid, (name, seconds) in servers.items():
        used[name] = used.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    print(f"  CPU: drain process {out['cpu']:.1f} s, its worker {out['worker_cpu']:.1f} s, "
          + ", ".join(f"{name} {v:.1f} s" for name, v in sorted(used.items()))
          + f"; machine busy {100 * (busy1 - busy0) / (total1 - total0):.0f} % of "
          f"{os.cpu_count()} cores over the drain process' life")
    print(f"  peak RSS of the drain (process + worker): {peak_mb:,.0f} MiB")

    # the whole funnel recomputed from the drained messages, as `funnel rebuild` does it
    t = time.perf_counter()
    rebuild = subprocess.Popen([str(Path(sys.executable).parent / "funnel"), "rebuild"],
                               stdout=subprocess.PIPE, text=True, env=os.environ)
    sampler = RssSampler(rebuild.pid)
    said = rebuild.communicate()[0].strip()
    peak_mb = sampler.stop()
    if rebuild.returncode:
        sys.exit(f"funnel rebuild failed (exit {rebuild.returncode})")
    print(f"funnel rebuild:         {out['inserted'] / (time.perf_counter() - t):10,.0f} msgs/s "
          f"({said}; peak RSS {peak_mb:,.0f} MiB)")

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
