"""Webhook load for the fault tests, run as its own process: a provider that redelivers.

Reads deliveries (one JSON line each: index, path, headers, base64 body), starts them at a
fixed `--rate` (open loop) with at most `--concurrency` in flight, and redelivers any that got
no 2xx (503, a reset connection, a timeout) with backoff, for up to `--retry-for` seconds after
its first attempt, as WhatsApp and the CRMs do. A 4xx is final (the body is refused). Writes the
indexes acknowledged, the answers by code and the number of requests to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections import Counter
from pathlib import Path

import httpx


async def run(args: argparse.Namespace) -> dict:
    deliveries = [json.loads(line) for line in Path(args.deliveries).read_text().splitlines()]
    acked: set[int] = set()
    codes: Counter[str] = Counter()
    requests = 0
    slots = asyncio.Semaphore(args.concurrency)
    limits = httpx.Limits(max_connections=args.concurrency,
                          max_keepalive_connections=args.concurrency)

    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=10) as client:
        async def deliver(d: dict) -> None:
            nonlocal requests
            body = base64.b64decode(d["body"])
            first, backoff = time.monotonic(), 0.1
            while True:
                async with slots:
                    requests += 1
                    try:
                        r = await client.post(d["path"], content=body, headers=d["headers"])
                        code = str(r.status_code)
                    except httpx.HTTPError as exc:
                        code = type(exc).__name__
                codes[code] += 1
                if code.startswith("2"):
                    acked.add(d["i"])
                    return
                if code.startswith("4") or time.monotonic() - first > args.retry_for:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

        started = time.monotonic()
        tasks = []
        for n, d in enumerate(deliveries):
            if (delay := started + n / args.rate - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(deliver(d)))
        await asyncio.gather(*tasks)
    return {"acked": sorted(acked), "codes": dict(codes), "deliveries": requests,
            "seconds": time.monotonic() - started}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--deliveries", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--retry-for", type=float, default=90)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result))
    print(json.dumps({k: v for k, v in result.items() if k != "acked"}))


if __name__ == "__main__":
    main()
