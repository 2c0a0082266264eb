"""Load generator for the ingest API, run as its own process (see bench/load.py, bench/ingest.py).

Pre-builds signed bodies, then either keeps `--concurrency` requests in flight (closed loop) or
fires at a fixed `--rate` (open loop: latency is measured from the scheduled send time, so a
slow server — or a late generator — cannot hide queueing). Prints one JSON line with the
figures: throughput, latency percentiles, errors by kind (`http 503 stream_unavailable`,
`timeout`, `connect`, ...), how late the generator itself sent (and its longest garbage
collection), and its own CPU time.
`--acked-out FILE` writes one line per acknowledged request (`raw_key<TAB>id,id,...`) so the
caller can check that every acknowledged message is durable.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import httptools
import orjson

from funnel_ingest.ingest.auth import sign
from funnel_ingest.simulate.webhooks import generic_body, indonesian_phone, whatsapp_body


@dataclass(frozen=True, slots=True)
class Body:
    path: str
    data: bytes
    headers: dict[str, str]
    ids: tuple[str, ...]  # the provider message ids it carries


def build_bodies(kind: str, count: int, per_request: int, seed: int) -> list[Body]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    token = os.environ["WEBHOOK_TOKEN"]
    secret = os.environ["WHATSAPP_APP_SECRET"]
    out = []
    for _ in range(count):
        if kind == "generic":
            msgs = [orjson.loads(generic_body(rng, indonesian_phone(rng), uuid.uuid4().hex,
                                              "Halo kak mau booking besok", now))
                    for _ in range(per_request)]
            body = orjson.dumps(msgs[0] if per_request == 1 else msgs)
            out.append(Body("/webhook", body, {"X-Webhook-Token": token,
                                               "Content-Type": "application/json"},
                            tuple(m["message"]["id"] for m in msgs)))
        else:
            texts = ["Halo kak, saya mau info promo"] * per_request
            body = whatsapp_body(rng, indonesian_phone(rng), texts, now)
            ids = tuple(m["id"] for e in orjson.loads(body)["entry"] for c in e["changes"]
                        for m in c["value"].get("messages", []))
            out.append(Body("/webhooks/whatsapp", body, {
                "X-Hub-Signature-256": sign(body, secret), "Content-Type": "application/json"},
                ids))
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; responses parsed by httptools
    (the parser uvicorn uses). Cheap on purpose: the generator shares the machine's cores with
    the service it measures."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if not self.parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def request(self, raw: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter


class Client:
    """At most `limit` connections to host:port, reused most-recently-idle first. A connection
    idle for more than `MAX_IDLE` s is closed rather than reused: the server may be closing it
    (granian closes a connection idle for HTTP_HEADER_TIMEOUT_SECONDS), and that race is the client's, not the service's."""

    MAX_IDLE = 2.0

    def __init__(self, url: str, limit: int, timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.slots = asyncio.Semaphore(limit)
        self.timeout = timeout
        self.idle: list[_Connection] = []
        self.opened = 0

    def encode(self, b: Body) -> bytes:
        head = "".join(f"{k}: {v}\r\n" for k, v in b.headers.items())
        return (f"POST {b.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Length: {len(b.data)}\r\n{head}\r\n").encode() + b.data

    async def post(self, raw: bytes) -> tuple[int, bytes]:
        async with self.slots:
            conn = None
            now = time.monotonic()
            while self.idle and conn is None:
                c = self.idle.pop()
                if c.closed or now - c.idle_since > self.MAX_IDLE:
                    c.close()
                else:
                    conn = c
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        _, conn = await asyncio.get_running_loop().create_connection(
                            _Connection, self.host, self.port)
                        self.opened += 1
                    result = await conn.request(raw)
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if not conn.closed:
                conn.idle_since = time.monotonic()
                self.idle.append(conn)
            return result

    def close(self) -> None:
        for c in self.idle:
            c.close()


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect"
    if isinstance(exc, ConnectionError):
        return "disconnected"
    return type(exc).__name__


async def run(args: argparse.Namespace) -> dict:
    n_bodies = args.requests if args.requests else int(args.rate * args.duration) + 10
    bodies = build_bodies(args.kind, n_bodies, args.per_request, args.seed)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    acked: list[tuple[str, tuple[str, ...]]] = []
    acked_messages = 0
    max_lag = 0.0
    client = Client(args.url, args.concurrency, args.timeout)
    raws = [client.encode(b) for b in bodies]
    # No garbage collection while measuring (a full one stops the generator for tens of ms, which
    # would show as the service's latency): the pre-built bodies are frozen, finished requests
    # are freed by reference counting, the collector runs again afterwards.
    gc.collect()
    gc.freeze()
    gc.disable()
    gc_pauses: list[float] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)
    cpu0 = time.process_time()

    async def one(i: int, scheduled: float) -> None:
        nonlocal acked_messages
        try:
            status, payload = await client.post(raws[i % len(raws)])
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            status, payload, kind = 0, b"", _error_kind(exc)
        latencies.append(time.perf_counter() - scheduled)
        if 200 <= status < 300:
            doc = orjson.loads(payload)
            acked.append((doc["raw_key"], bodies[i % len(bodies)].ids))
            acked_messages += doc["messages"]
            return
        if status:
            try:
                kind = f"http {status} {orjson.loads(payload)['error']}"
            except Exception:
                kind = f"http {status}"
        errors[kind] = errors.get(kind, 0) + 1

    start = time.perf_counter()
    if args.rate:
        pending: set[asyncio.Task] = set()
        interval = 1.0 / args.rate
        total = int(args.rate * args.duration)
        for i in range(total):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            task = asyncio.create_task(one(i, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        sent_s = time.perf_counter() - start
        await asyncio.gather(*pending)
    else:
        counter = iter(range(args.requests))

        async def worker() -> None:
            for i in counter:
                await one(i, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        sent_s = time.perf_counter() - start
    elapsed = time.perf_counter() - start
    gc.enable()
    gc.callbacks.remove(on_gc)
    client.close()
    cpu = time.process_time() - cpu0
    if args.acked_out:
        with open(args.acked_out, "w") as f:
            for key, ids in acked:
                f.write(f"{key}\t{','.join(ids)}\n")
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    ok = len(acked)
    return {"kind": args.kind, "per_request": args.per_request, "requests": len(latencies),
            "ok": ok, "errors": len(latencies) - ok, "error_kinds": errors,
            "acked_messages": acked_messages, "seconds": round(elapsed, 3),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "ok_per_s": round(ok / elapsed, 1),
            "sent_per_s": round(len(latencies) / sent_s, 1),
            "messages_per_s": round(acked_messages / elapsed, 1),
            "p50_ms": round(pct(50), 2), "p90_ms": round(pct(90), 2),
            "p99_ms": round(pct(99), 2), "max_ms": round(pct(100), 2),
            "max_send_lag_ms": round(max_lag * 1000, 2), "loadgen_cpu_s": round(cpu, 2),
            "loadgen_gc_max_ms": round(max(gc_pauses, default=0) * 1000, 2),
            "connections": client.opened}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--kind", choices=["generic", "whatsapp"], default="generic")
    p.add_argument("--per-request", type=int, default=1)
    p.add_argument("--requests", type=int, default=0, help="closed loop: total requests")
    p.add_argument("--concurrency", type=int, default=64,
                   help="connections (closed loop: requests in flight; open loop: the cap)")
    p.add_argument("--rate", type=float, default=0, help="open loop: requests per second")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--timeout", type=float, default=30, help="seconds before a request counts "
                   "as a timeout")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--acked-out", default="", help="file for the acknowledged requests")
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
