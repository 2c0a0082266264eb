"""The ingest pipeline of one request: parse -> archive raw bytes -> append to the stream.

Free of HTTP: the routes authenticate and read the body, then call `Ingestor.ingest`. A request
is acknowledged only when both stores hold it; the order (S3 first, then the atomic stream
append) means an acknowledged message is always in the archive, and a failure leaves at most an
archived body whose redelivery is appended exactly once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from redis.exceptions import RedisError

from funnel_ingest import metrics
from funnel_ingest.ingest.archive import RawArchive, RawBody
from funnel_ingest.ingest.providers import parse
from funnel_ingest.ingest.stream import AppendOutcome, StreamWriter
from funnel_ingest.messages import ParseResult


class StreamUnavailable(RuntimeError):
    """The Redis append failed; the request must not be acknowledged."""


@dataclass(frozen=True)
class IngestOutcome:
    result: ParseResult
    raw_key: str
    appended: AppendOutcome


class Ingestor:
    def __init__(self, archive: RawArchive, stream: StreamWriter) -> None:
        self.archive = archive
        self.stream = stream

    async def ingest(self, source: str, body: bytes, signature: str) -> IngestOutcome:
        """Raises PayloadError (4xx), ArchiveUnavailable or StreamUnavailable (503)."""
        result = parse(source, body)  # before any write: a bad body leaves nothing behind
        received_at = datetime.now(timezone.utc)
        where = await self.archive.store(RawBody(source, body, received_at, signature))
        for item in (*result.messages, *result.statuses, *result.dead_letters):
            item.raw_key = where.key
            item.raw_line = where.line
        for m in result.messages:
            m.received_at = received_at
        started = time.perf_counter()
        try:
            appended = await self.stream.append(result)
        except (RedisError, OSError) as exc:
            raise StreamUnavailable(str(exc)) from exc
        finally:
            metrics.STORE_LATENCY.labels("redis").observe(time.perf_counter() - started)
        return IngestOutcome(result, where.key, appended)
