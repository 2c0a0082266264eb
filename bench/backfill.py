"""Backfill from the raw archive: N days of traffic re-read and re-classified as ONE Dagster run.

    .venv/bin/python bench/backfill.py                         # a day of about 500,000 messages
    .venv/bin/python bench/backfill.py --days 30 --customers 2250  # 30 days at the demo's density

Writes simulated provider webhooks into a fresh archive bucket as the API would have archived
them live (group-committed objects per source and received hour, received a few seconds to two
minutes after they were sent), then materializes `classified_messages` over the whole range
with the code location's own asset job (single-run backfill policy, the path of a UI backfill
and of `funnel backfill`) twice against a fresh bench database: first with empty tables (every
message restored from the archive, as after a Redis loss), then again (everything stored:
re-classification only, as after a keyword change). Prints the time, archive objects read,
messages/s, the seconds of the restore and re-classify steps and the peak RSS of the backfill's
processes (the run's and its archive readers').
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import time
import uuid
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import RssSampler, fresh_database, stack_env  # noqa: E402


def write_archive(env: dict[str, str], bucket: str, days: int, customers: int, seed: int
                  ) -> tuple[int, int, str, str]:
    os.environ.update(env)
    from funnel_ingest import s3
    from funnel_ingest.ingest.archive import RawBody, object_key
    from funnel_ingest.ingest.providers import parse
    from funnel_ingest.settings import get_settings
    from funnel_ingest.simulate.conversations import simulate
    from funnel_ingest.simulate.webhooks import to_webhooks

    settings = get_settings()
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    sim = simulate(customers, seed=seed, start=start, days=days)
    rng = random.Random(seed)
    objects: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    messages = 0
    first = last = None
    for sample in to_webhooks(sim.deliveries(seed=seed), seed=seed):
        part = parse(sample.source, sample.body)
        sent = [m.sent_at for m in part.messages] + [s.status_at for s in part.statuses]
        if not sent:
            continue
        received = max(sent) + timedelta(seconds=rng.uniform(2, 120))
        messages += len(part.messages)
        local = [m.sent_at.astimezone(settings.tz).date() for m in part.messages]
        if local:
            first = min(first or min(local), min(local))
            last = max(last or max(local), max(local))
        hour_key = object_key(sample.source, received).rsplit("/", 1)[0]
        objects[(sample.source, hour_key)].append(
            RawBody(sample.source, sample.body, received, "valid").line())
    client = s3.client(settings)
    client.create_bucket(Bucket=bucket)

    def put(item: tuple[tuple[str, str], list[bytes]]) -> None:
        (_source, prefix), lines = item
        for n in range(0, len(lines), 200):  # about what a busy hour's group commits hold
            key = f"{prefix}/{uuid.uuid4().hex}.ndjson"
            client.put_object(Bucket=bucket, Key=key, Body=b"\n".join(lines[n:n + 200]) + b"\n")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objects.items()))
    return messages, len(objects), str(first), str(last)


def run_backfill(first: str, last: str) -> tuple[float, dict]:
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from funnel_dagster.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    t0 = time.perf_counter()
    result = job.execute_in_process(
        asset_selection=[dg.AssetKey("classified_messages")],
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    seconds = time.perf_counter() - t0
    assert result.success
    [summary] = [e.materialization.metadata for e in result.get_asset_materialization_events()
                 if e.materialization.asset_key == dg.AssetKey("classified_messages")][:1]
    return seconds, {k: v.value for k, v in summary.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--customers", type=int, default=78_000,
                   help="simulated customers over the whole range (default: about 500,000 "
                        "messages in one day; the demo has 150 per two days)")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()

    env = stack_env()
    bucket = f"funnel-bench-backfill-{uuid.uuid4().hex[:8]}"
    url = fresh_database(env, "funnel_bench_backfill")
    env.update(DATABASE_URL=url, RAW_BUCKET=bucket)
    os.environ.update(env)
    from funnel_ingest.settings import get_settings
    get_settings.cache_clear()

    t = time.perf_counter()
    # the traffic is simulated in a child process, so the peak RSS below is the backfill's
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        messages, hours, first, last = pool.submit(
            write_archive, env, bucket, args.days, args.customers, args.seed).result()
    print(f"archive: {messages:,} messages in {hours:,} source-hours, business days {first} .. "
          f"{last}, written in {time.perf_counter() - t:.1f} s")
    os.environ["FUNNEL_START_DATE"] = first
    get_settings.cache_clear()
    try:
        for label in ("restore + re-classify (empty tables)", "re-classify (all stored)"):
            sampler = RssSampler(os.getpid())  # this process and the backfill's workers
            seconds, meta = run_backfill(first, last)
            rss = sampler.stop()
            print(f"{label}: one run over {first} .. {last} in {seconds:.1f} s "
                  f"({meta['archive_objects_read']:,} objects, {meta['archived_messages']:,} "
                  f"messages, {meta['archived_messages'] / seconds:,.0f} msgs/s), "
                  f"peak RSS {rss:,.0f} MiB; restore {meta['restore_seconds']:.1f} s, "
                  f"re-classify {meta['reclassify_seconds']:.1f} s")
    finally:
        from funnel_ingest import s3
        s3.delete_bucket(s3.client(get_settings()), bucket)


if __name__ == "__main__":
    main()
