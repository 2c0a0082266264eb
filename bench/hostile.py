"""Hostile senders against a real `funnel api` worker: what each attack costs the worker in
memory and whether the server lets go of the connections.

    .venv/bin/python bench/hostile.py                # every attack, one API worker
    .venv/bin/python bench/hostile.py --only slow_header,big_header

Starts the local stack (`funnel up`) and one API process (`funnel api`, one worker, the bench
Redis db and bucket), then runs each attack from this process over raw loopback sockets, one
after the other, and prints one line per attack: the worker's RSS before, at the attack's peak
and after, how many of the attack's connections the server had closed when the attack gave
up, and how long a legitimate request took while the attack was holding its connections.

The attacks (none sends a valid credential unless it says so):
  big_header       10 requests whose one header line grows to 50 MB and never ends
  partial_bodies   100 POSTs declaring a 3 MB body, sending all of it but the last byte
  slow_header      one request trickling its header at 1 byte per 2 s (for 40 s)
  slow_body        a request with a valid token trickling its body at 1 byte per 2 s (40 s)
  many_slow        4,000 connections each holding a half-sent request line (for 30 s)
  idle             500 connections that send nothing at all (for 30 s)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import api_server, ingest_env, process_tree  # noqa: E402

from funnel_ingest.local import processes  # noqa: E402
from funnel_ingest.simulate.raw_http import post_head, send  # noqa: E402

MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    """RSS of the API process and its workers, MiB."""
    return processes.rss_mb(process_tree(pid))


class Attack:
    """Opens connections, sends what the attack sends, and records which ones the server
    closed (EOF or a reset), and what status line it answered, if any."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.closed = 0
        self.statuses: dict[str, int] = {}

    async def connect(self):
        return await asyncio.open_connection("127.0.0.1", self.port, limit=MB)

    async def watch(self, reader: asyncio.StreamReader) -> None:
        """Wait for the server's answer or close; counts it."""
        try:
            line = await reader.readline()
        except (ConnectionError, OSError):
            line = b""
        if line.startswith(b"HTTP/"):
            status = line.split()[1].decode()
            self.statuses[status] = self.statuses.get(status, 0) + 1
            try:
                while await reader.read(65536):
                    pass
            except (ConnectionError, OSError):
                pass
        self.closed += 1


async def big_header(att: Attack, n: int = 10, size: int = 50 * MB) -> list:
    conns = [await att.connect() for _ in range(n)]
    watchers = [asyncio.create_task(att.watch(r)) for r, _ in conns]
    chunk = b"a" * MB

    async def one(writer):
        if not await send(writer, b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Pad: "):
            return
        for _ in range(size // MB):
            if not await send(writer, chunk):
                return
    await asyncio.gather(*(one(w) for _, w in conns))
    return conns, watchers


async def partial_bodies(att: Attack, n: int = 100, size: int = 3 * MB) -> list:
    conns = [await att.connect() for _ in range(n)]
    watchers = [asyncio.create_task(att.watch(r)) for r, _ in conns]
    head = post_head("/webhook", {"Content-Type": "application/json", "Content-Length": str(size)})
    body = b"x" * (size - 1)
    await asyncio.gather(*(send(w, head + body) for _, w in conns))
    return conns, watchers


async def _trickle(att: Attack, first: bytes, rest: bytes, seconds: float) -> list:
    reader, writer = await att.connect()
    watcher = asyncio.create_task(att.watch(reader))
    await send(writer, first)
    end = time.monotonic() + seconds
    for byte in rest:
        if watcher.done() or time.monotonic() > end:
            break
        if not await send(writer, bytes([byte])):
            break
        await asyncio.sleep(2)
    return [(reader, writer)], [watcher]


async def slow_header(att: Attack, seconds: float = 40) -> list:
    return await _trickle(att, b"P", b"OST /webhook HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100,
                          seconds)


async def slow_body(att: Attack, token: str, seconds: float = 40) -> list:
    head = post_head("/webhook", {"Content-Type": "application/json", "Content-Length": "1000",
                              "X-Webhook-Token": token})
    return await _trickle(att, head, b"{" + b" " * 998 + b"}", seconds)


async def many_slow(att: Attack, n: int = 4000) -> list:
    conns = []
    for _ in range(n):
        try:
            reader, writer = await att.connect()
        except OSError:
            break
        await send(writer, b"GET /healthz HT")
        conns.append((reader, writer))
    watchers = [asyncio.create_task(att.watch(r)) for r, _ in conns]
    return conns, watchers


async def idle(att: Attack, n: int = 500) -> list:
    conns = [await att.connect() for _ in range(n)]
    watchers = [asyncio.create_task(att.watch(r)) for r, _ in conns]
    return conns, watchers


async def run(name: str, port: int, pid: int, token: str, hold: float) -> dict:
    att = Attack(port)
    before = rss_mb(pid)
    peak = before
    stop = asyncio.Event()

    async def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.1)
    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    if name == "slow_body":
        conns, watchers = await slow_body(att, token)
    else:
        conns, watchers = await globals()[name](att)
    # the attack holds what it opened for `hold` seconds; a legitimate request meanwhile
    remaining = hold - (time.monotonic() - started)
    if remaining > 0:
        await asyncio.wait(watchers, timeout=remaining / 2)
    legit = await asyncio.to_thread(_legit, port)
    if remaining > 0:
        await asyncio.wait(watchers, timeout=remaining / 2)
    closed = att.closed
    elapsed = time.monotonic() - started
    for _, w in conns:
        w.close()
    for t in watchers:
        t.cancel()
    await asyncio.sleep(2)
    stop.set()
    await sampler
    return dict(attack=name, connections=len(conns), closed_by_server=closed,
                answers=",".join(f"{k}x{v}" for k, v in sorted(att.statuses.items())) or "-",
                rss_before=before, rss_peak=peak, rss_after=rss_mb(pid), seconds=elapsed,
                legit=legit)


def _legit(port: int) -> str:
    t = time.monotonic()
    try:
        status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code
    except httpx.HTTPError as e:
        return f"{type(e).__name__} after {time.monotonic() - t:.1f}s"
    return f"{status} in {time.monotonic() - t:.2f}s"


ATTACKS = {"big_header": 15, "partial_bodies": 15, "slow_header": 40, "slow_body": 40,
           "many_slow": 30, "idle": 30}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated attacks (default: all)")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(ATTACKS)
    env = ingest_env()
    with api_server(env, 1, "bench-hostile.log") as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        print(f"{'attack':15} {'conns':>5} {'closed':>6} {'answers':>12} {'RSS before':>10} "
              f"{'peak':>7} {'after':>7} {'held s':>6}  legit request")
        for name in names:
            r = asyncio.run(run(name, port, proc.pid, env["WEBHOOK_TOKEN"], ATTACKS[name]))
            print(f"{r['attack']:15} {r['connections']:>5} {r['closed_by_server']:>6} "
                  f"{r['answers']:>12} {r['rss_before']:>8.0f}MB {r['rss_peak']:>5.0f}MB "
                  f"{r['rss_after']:>5.0f}MB {r['seconds']:>6.1f}  {r['legit']}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
