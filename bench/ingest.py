"""Webhook ingest throughput: single-message and batched webhooks against a real API process.

    .venv/bin/python bench/ingest.py                 # the standard runs (closed loop)
    .venv/bin/python bench/ingest.py --workers 1     # with one API worker

Brings the local stack up (`funnel up`), starts the API (`funnel api`, `--workers` granian
workers) as a separate process on a bench Redis db and bucket, and drives it from a separate
load-generator process (bench/loadgen.py) keeping 64 requests in flight. After each run it
checks durability: every acknowledged message must be on the stream. Prints one table line per
run. Sustained open-loop rates and the highest rate under the latency bar: bench/load.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import api_server, default_workers, ingest_env, loadgen  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=default_workers(), help="API workers")
    args = p.parse_args()

    env = ingest_env()
    r = redis.Redis.from_url(env["REDIS_URL"])
    r.flushdb()
    with api_server(env, args.workers) as (url, _):
        loadgen(url, env, requests=1000, concurrency=32, kind="generic", seed=99)  # warm up
        r.flushdb()
        runs = [
            dict(kind="generic", requests=20000, concurrency=64),
            dict(kind="whatsapp", requests=20000, concurrency=64),
            dict(kind="whatsapp", requests=2000, concurrency=64, per_request=50),
            dict(kind="generic", requests=2000, concurrency=64, per_request=50),
        ]
        print(f"API workers={args.workers}, loadavg before {os.getloadavg()}")
        print(f"{'run':58} {'req/s':>8} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'errors':>6} {'durable':>8}")
        for i, run in enumerate(runs):
            before = r.xlen("funnel:messages")
            res = loadgen(url, env, seed=i + 1, **run)
            appended = r.xlen("funnel:messages") - before
            expected = res["acked_messages"]
            label = " ".join(f"{k}={v}" for k, v in run.items())
            print(f"{label:58} {res['requests_per_s']:8.0f} {res['messages_per_s']:9.0f} "
                  f"{res['p50_ms']:8.1f} {res['p99_ms']:8.1f} {res['errors']:6d} "
                  f"{'ok' if appended == expected else f'{appended}/{expected}':>8}")
        print(f"loadavg after {os.getloadavg()}")


if __name__ == "__main__":
    main()
