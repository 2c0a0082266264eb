"""The raw archive: the exact request bodies in S3, group-committed.

Bodies of one source that arrive within one batch window (`linger_ms`, from the first body of
the batch) share one object: one newline-delimited JSON object per line (`received_at`,
`signature`, `request_id`, `body` = the raw body text), so a burst costs a few PUTs instead of
one per request. One writer at a time collects a batch; up to `writers_per_source` PUTs are in
flight, so a slow PUT does not hold up the next batch, and the PUT rate stays near one per
window under any load (a PUT costs about as much CPU as a whole webhook request, in the API and
again in the S3 server). Each request waits for the PUT holding its line; only then does it go
on to the stream. Keys are built from the route's source name, the UTC date and hour, a
timestamp and a random id — never from caller text:

    raw/source=<source>/date=YYYY-MM-DD/hour=HH/<YYYYmmddTHHMMSSffffffZ>-<uuid>.ndjson
"""

from __future__ import annotations

import asyncio
import time
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from . import metrics
from .messages import SOURCES

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RawBody:
    source: str
    body: bytes
    received_at: datetime
    signature: str  # valid | token (authenticated by shared token)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def line(self) -> bytes:
        return orjson.dumps({
            "request_id": self.request_id,
            "source": self.source,
            "received_at": self.received_at.isoformat(),
            "signature": self.signature,
            "body": self.body.decode("utf-8"),
        })


@dataclass(frozen=True, slots=True)
class ArchivedAt:
    key: str
    line: int  # 1-based line of the body in the object


class ArchiveUnavailable(RuntimeError):
    """The S3 write failed; the request must not be acknowledged."""


def object_key(source: str, now: datetime) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    now = now.astimezone(timezone.utc)
    return (
        f"raw/source={source}/date={now:%Y-%m-%d}/hour={now:%H}/"
        f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex}.ndjson"
    )


def read_lines(data: bytes) -> list[dict[str, Any]]:
    """The records of an archive object (for replay and backfill)."""
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


class RawArchive:
    """Group-committing writer of raw bodies to `bucket` through an aiobotocore client."""

    def __init__(self, s3: Any, bucket: str, *, linger_ms: float = 4.0, max_batch: int = 256,
                 writers_per_source: int = 4, timeout: float = 8.0) -> None:
        self._s3 = s3
        self._timeout = timeout
        self._bucket = bucket
        self._linger = linger_ms / 1000.0
        self._max_batch = max_batch
        self._queues: dict[str, asyncio.Queue[tuple[RawBody, asyncio.Future[ArchivedAt]]]] = {}
        self._collecting: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._writers = writers_per_source

    async def start(self) -> None:
        for source in SOURCES:
            q: asyncio.Queue = asyncio.Queue()
            self._queues[source] = q
            self._collecting[source] = asyncio.Lock()
            for _ in range(self._writers):
                self._tasks.append(asyncio.create_task(self._writer(source, q)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def store(self, raw: RawBody) -> ArchivedAt:
        """Archive one body; returns once the object holding it is durable in S3."""
        fut: asyncio.Future[ArchivedAt] = asyncio.get_running_loop().create_future()
        await self._queues[raw.source].put((raw, fut))
        try:
            # bounded: an S3 server that hangs (a partition) must give a 503 the provider
            # retries, not a request held for botocore's timeouts and retries (~30 s)
            return await asyncio.wait_for(fut, self._timeout)
        except TimeoutError:
            # the batch's PUT may still succeed: an archived body that was not acknowledged,
            # which the provider's redelivery (dedupe) or `funnel replay` settles
            raise ArchiveUnavailable(
                f"the archive write took longer than {self._timeout:g} s") from None

    async def _writer(self, source: str, q: asyncio.Queue) -> None:
        collecting = self._collecting[source]
        while True:
            async with collecting:  # one batch window at a time; the PUT happens outside
                batch = [await q.get()]
                if self._linger > 0:  # the window opens when the batch's first body arrived
                    age = (datetime.now(timezone.utc) - batch[0][0].received_at).total_seconds()
                    if age < self._linger and q.qsize() < self._max_batch:
                        await asyncio.sleep(min(self._linger, self._linger - age))
                while len(batch) < self._max_batch and not q.empty():
                    batch.append(q.get_nowait())
            await self._flush(source, batch)

    async def _flush(self, source: str, batch: list[tuple[RawBody, asyncio.Future]]) -> None:
        first = batch[0][0].received_at
        key = object_key(source, first)
        data = b"\n".join(raw.line() for raw, _ in batch) + b"\n"
        signatures = {raw.signature for raw, _ in batch}
        metrics.ARCHIVE_BATCH.observe(len(batch))
        started = time.perf_counter()
        try:
            await self._s3.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType="application/x-ndjson",
                Metadata={
                    "received-at": first.isoformat(),
                    "received-at-last": batch[-1][0].received_at.isoformat(),
                    "signature": signatures.pop() if len(signatures) == 1 else "mixed",
                    "bodies": str(len(batch)),
                    "source": source,
                },
            )
        except Exception as exc:  # any S3 failure: no request in this batch is acknowledged
            log.warning("raw archive PUT failed (%d bodies): %s", len(batch), exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(ArchiveUnavailable(str(exc)))
            return
        finally:
            metrics.STORE_LATENCY.labels("s3").observe(time.perf_counter() - started)
        for line, (_, fut) in enumerate(batch, start=1):
            if not fut.done():
                fut.set_result(ArchivedAt(key, line))
