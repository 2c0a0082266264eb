"""Sending webhook bodies to a running API, signed as each provider signs them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

from funnel_ingest.ingest.auth import sign
from funnel_ingest.simulate.webhooks import ROUTES, Sample


@dataclass
class SendReport:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    messages: int = 0          # items the API appended (from its 2xx answers)
    duplicates: int = 0        # items the API recognised as redeliveries
    raw_keys: set[str] = field(default_factory=set)

    @property
    def accepted(self) -> int:
        return sum(n for code, n in self.statuses.items() if 200 <= code < 300)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def headers_for(sample: Sample, env: dict[str, str]) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if sample.source == "whatsapp":
        h["X-Hub-Signature-256"] = sign(sample.body, env["WHATSAPP_APP_SECRET"])
    elif env.get("WEBHOOK_HMAC_SECRET"):
        h["X-Webhook-Signature"] = sign(sample.body, env["WEBHOOK_HMAC_SECRET"])
    else:
        h["X-Webhook-Token"] = env["WEBHOOK_TOKEN"]
    return h


async def send_all(base_url: str, samples: Iterable[Sample], env: dict[str, str],
                   concurrency: int = 32, *, rate: float = 0.0,
                   on_result: Callable[[int], None] | None = None) -> SendReport:
    """Post `samples` with `concurrency` requests in flight, starting at most `rate` per second
    (0 = as fast as the API answers); `on_result(status)` after each answer (0 = no answer)."""
    report = SendReport()
    queue: asyncio.Queue[Sample | None] = asyncio.Queue(maxsize=concurrency * 4)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while (sample := await queue.get()) is not None:
                t0 = time.perf_counter()
                try:
                    r = await client.post(ROUTES[sample.source], content=sample.body,
                                          headers=headers_for(sample, env))
                    code = r.status_code
                    if code == 200:
                        out = r.json()
                        report.messages += out["messages"] + out["statuses"] - out["duplicates"]
                        report.duplicates += out["duplicates"]
                        report.raw_keys.add(out["raw_key"])
                except httpx.HTTPError:
                    code = 0
                report.latencies.append(time.perf_counter() - t0)
                report.statuses[code] += 1
                report.sent += 1
                if on_result:
                    on_result(code)

        start = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        for i, sample in enumerate(samples):
            if rate > 0 and (delay := start + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            await queue.put(sample)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        report.seconds = time.perf_counter() - start
    return report
