"""Webhook ingest throughput: single-message and batched webhooks against a real API process.

    .venv/bin/python bench/ingest.py                 # the standard runs
    .venv/bin/python bench/ingest.py --rate 1000 --duration 60   # hold a fixed rate

Brings the local stack up (`funnel up`), starts the API (uvicorn, one worker) as a separate
process on a bench Redis db and bucket, and drives it from a separate load-generator process
(bench/loadgen.py). After each run it checks durability: every acknowledged message must be
on the stream. Prints one table line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funnel_ingest import s3, stack  # noqa: E402
from funnel_ingest.cli import start_api  # noqa: E402
from funnel_ingest.local_dagster import free_port  # noqa: E402
from funnel_ingest.settings import Settings  # noqa: E402


def loadgen(url: str, env: dict[str, str], **opts: object) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", url]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=0, help="open-loop rate instead of the standard runs")
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--kind", default="generic", choices=["generic", "whatsapp"])
    p.add_argument("--concurrency", type=int, default=256)
    args = p.parse_args()

    env = dict(stack.up(log=lambda m: print(m, file=sys.stderr)))
    env["REDIS_URL"] = env["REDIS_URL"].rsplit("/", 1)[0] + "/12"
    env["RAW_BUCKET"] = "funnel-bench-raw"
    env["LOG_LEVEL"] = "WARNING"
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    s3.ensure_buckets(settings)
    r = redis.Redis.from_url(env["REDIS_URL"])
    r.flushdb()
    port = free_port()
    api = start_api(env, port, stack.state_dir() / "logs" / "bench-api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        loadgen(url, env, requests=500, concurrency=16, kind="generic", seed=99)  # warm up
        r.flushdb()
        if args.rate:
            runs = [dict(kind=args.kind, rate=args.rate, duration=args.duration,
                         concurrency=args.concurrency)]
        else:
            runs = [
                dict(kind="generic", requests=20000, concurrency=64),
                dict(kind="whatsapp", requests=20000, concurrency=64),
                dict(kind="whatsapp", requests=2000, concurrency=64, per_request=50),
                dict(kind="generic", requests=2000, concurrency=64, per_request=50),
            ]
        print(f"{'run':44} {'req/s':>8} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'errors':>6} {'durable':>8}")
        for i, run in enumerate(runs):
            before = r.xlen("funnel:messages")
            res = loadgen(url, env, seed=i + 1, **run)
            appended = r.xlen("funnel:messages") - before
            expected = res["ok"] * res["per_request"]
            label = " ".join(f"{k}={v}" for k, v in run.items())
            print(f"{label:44} {res['requests_per_s']:8.0f} {res['messages_per_s']:9.0f} "
                  f"{res['p50_ms']:8.1f} {res['p99_ms']:8.1f} {res['errors']:6d} "
                  f"{'ok' if appended == expected else f'{appended}/{expected}':>8}")
    finally:
        api.terminate()
        api.wait(10)


if __name__ == "__main__":
    main()
