"""Load generator for the ingest API, run as its own process (see bench/ingest.py).

Pre-builds signed bodies, then either keeps `--concurrency` requests in flight (closed loop) or
fires at a fixed `--rate` (open loop, latency measured from the scheduled send time, so a slow
server cannot hide queueing). Prints one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import orjson

from funnel_ingest.auth import sign
from funnel_ingest.samples import generic_body, indonesian_phone, whatsapp_body


def build_bodies(kind: str, count: int, per_request: int, seed: int) -> list[tuple[str, bytes, dict]]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    token = os.environ["WEBHOOK_TOKEN"]
    secret = os.environ["WHATSAPP_APP_SECRET"]
    out = []
    for i in range(count):
        if kind == "generic":
            msgs = [orjson.loads(generic_body(rng, indonesian_phone(rng), uuid.uuid4().hex,
                                              "Halo kak mau booking besok", now))
                    for _ in range(per_request)]
            body = orjson.dumps(msgs[0] if per_request == 1 else msgs)
            out.append(("/webhook", body, {"X-Webhook-Token": token,
                                           "Content-Type": "application/json"}))
        else:
            texts = ["Halo kak, saya mau info promo"] * per_request
            body = whatsapp_body(rng, indonesian_phone(rng), texts, now)
            out.append(("/webhooks/whatsapp", body, {
                "X-Hub-Signature-256": sign(body, secret), "Content-Type": "application/json"}))
    return out


async def run(args: argparse.Namespace) -> dict:
    n_bodies = args.requests if args.requests else int(args.rate * args.duration) + 10
    bodies = build_bodies(args.kind, n_bodies, args.per_request, args.seed)
    latencies: list[float] = []
    codes: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(args.url, connector=connector, timeout=timeout) as session:
        async def one(i: int, scheduled: float) -> None:
            path, body, headers = bodies[i % len(bodies)]
            try:
                async with session.post(path, data=body, headers=headers) as res:
                    await res.read()
                    code = res.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                code = 0
            latencies.append(time.perf_counter() - scheduled)
            codes[code] = codes.get(code, 0) + 1

        start = time.perf_counter()
        if args.rate:
            tasks = []
            interval = 1.0 / args.rate
            total = int(args.rate * args.duration)
            for i in range(total):
                scheduled = start + i * interval
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, scheduled)))
            await asyncio.gather(*tasks)
        else:
            counter = iter(range(args.requests))

            async def worker() -> None:
                for i in counter:
                    await one(i, time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    return {"kind": args.kind, "per_request": args.per_request, "requests": len(latencies),
            "ok": ok, "errors": len(latencies) - ok, "codes": codes, "seconds": round(elapsed, 3),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "messages_per_s": round(ok * args.per_request / elapsed, 1),
            "p50_ms": round(pct(50), 2), "p99_ms": round(pct(99), 2), "max_ms": round(pct(100), 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--kind", choices=["generic", "whatsapp"], default="generic")
    p.add_argument("--per-request", type=int, default=1)
    p.add_argument("--requests", type=int, default=0, help="closed loop: total requests")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rate", type=float, default=0, help="open loop: requests per second")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
