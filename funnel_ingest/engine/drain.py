"""Draining the Redis Streams into the funnel: exact id ranges, committed before trimming.

For each stream the last processed id is kept in `stream_offsets`, updated in the same
transaction as the batch it covers. A range is read with XRANGE, processed by the engine,
committed, and only then trimmed from the stream, so a crash at any point either leaves the
range to be processed again (idempotent: the unique message key drops what was stored) or has
it stored already. `funnel drain` and the Dagster job both call `drain_range`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import psycopg
import redis

from ..messages import DeadLetter, NormalizedMessage, StatusEvent
from ..settings import Settings
from .classify import Classifier
from .store import (BatchResult, lock_writers, process_messages, store_dead_letters,
                    store_statuses)

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    stream: str
    batches: int = 0
    entries: int = 0
    inserted: int = 0
    duplicates: int = 0
    bad_entries: int = 0
    customers: int = 0
    last_id: str | None = None
    days: set = field(default_factory=set)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def offset(conn: psycopg.Connection, stream: str) -> str:
    row = conn.execute("SELECT last_id FROM stream_offsets WHERE stream = %s", (stream,)).fetchone()
    return row[0] if row else "0-0"


def _save_offset(conn: psycopg.Connection, stream: str, last_id: str) -> None:
    conn.execute(
        """INSERT INTO stream_offsets (stream, last_id) VALUES (%s, %s)
           ON CONFLICT (stream) DO UPDATE SET last_id = EXCLUDED.last_id, updated_at = now()""",
        (stream, last_id))


def _status_from(fields: dict) -> StatusEvent:
    d = {_text(k): _text(v) for k, v in fields.items()}
    return StatusEvent(d["source"], d["message_id"], d["status"],
                       datetime.fromisoformat(d["status_at"]), d.get("recipient"),
                       orjson.loads(d["errors"]) if d.get("errors") else None,
                       d.get("raw_key", ""), int(d.get("raw_line", 0)))


def _dead_from(fields: dict) -> DeadLetter:
    d = {_text(k): _text(v) for k, v in fields.items()}
    return DeadLetter(d.get("source", "?"), d.get("reason", "unknown"), d.get("detail", ""),
                      d.get("message_id"), d.get("raw_key", ""), int(d.get("raw_line", 0)))


def drain_range(conn: psycopg.Connection, r: redis.Redis, stream: str, *, kind: str,
                classifier: Classifier | None, after_id: str, until_id: str = "+",
                batch_size: int = 10_000, lead_window_days: int = 30, trim: bool = True,
                on_batch: Callable[[BatchResult], None] | None = None) -> DrainReport:
    """Process the entries of `stream` up to `until_id`, in batches, from the stored offset.

    `kind` is `messages`, `statuses` or `deadletters`. The run for the range (after_id,
    until_id] starts at the stream's committed offset, not at `after_id`: when an earlier range
    failed and was not re-run yet, this run covers it too (ranges are processed in order and
    never skipped), and a re-run of a committed range finds nothing left to do. `after_id` is
    kept for the report: entries at or below it that are processed here belong to an earlier,
    failed range.
    """
    report = DrainReport(stream)
    started = time.perf_counter()
    cursor = offset(conn, stream)
    if stream_id_key(cursor) < stream_id_key(after_id):
        log.warning("%s: offset %s is behind this range's start %s: an earlier range did not "
                    "commit; processing it first", stream, cursor, after_id)
    while True:
        entries = r.xrange(stream, min=f"({cursor}", max=until_id, count=batch_size)
        if not entries:
            break
        last_id = _text(entries[-1][0])
        with conn.transaction():
            if kind == "messages":
                lock_writers(conn, exclusive=False)  # a backfill day waits, or is waited for
                messages, bad = [], []
                for entry_id, fields in entries:
                    try:
                        messages.append(NormalizedMessage.from_fields(fields))
                    except (KeyError, ValueError, TypeError) as exc:
                        bad.append((_text(entry_id), DeadLetter(
                            _text(fields.get(b"source", b"?")), "bad_stream_entry", str(exc),
                            _text(fields.get(b"message_id", b"")) or None,
                            _text(fields.get(b"raw_key", b"")))))
                assert classifier is not None
                res = process_messages(conn, messages, classifier,
                                       lead_window_days=lead_window_days)
                store_dead_letters(conn, bad)
                report.inserted += res.inserted
                report.duplicates += res.duplicates
                report.customers += res.customers
                report.days |= res.days
                report.bad_entries += len(bad)
                for k, v in res.seconds.items():
                    report.stages[k] = report.stages.get(k, 0.0) + v
                if on_batch:
                    on_batch(res)
            elif kind == "statuses":
                report.inserted += store_statuses(conn, [_status_from(f) for _, f in entries])
            else:
                report.inserted += store_dead_letters(
                    conn, [(_text(i), _dead_from(f)) for i, f in entries])
            _save_offset(conn, stream, last_id)
        # committed: the range may leave the stream now
        if trim:
            r.xtrim(stream, minid=_next_id(last_id), approximate=False)
        report.batches += 1
        report.entries += len(entries)
        report.last_id = last_id
        cursor = last_id
        if len(entries) < batch_size:
            break
    report.seconds = time.perf_counter() - started
    return report


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as (milliseconds, sequence), for comparisons."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(stream_id: str) -> str:
    ms, seq = stream_id_key(stream_id)
    return f"{ms}-{seq + 1}"


def newest_id(r: redis.Redis, stream: str) -> str | None:
    last = r.xrevrange(stream, count=1)
    return _text(last[0][0]) if last else None


def oldest_id(r: redis.Redis, stream: str) -> str | None:
    first = r.xrange(stream, count=1)
    return _text(first[0][0]) if first else None


def oldest_age_seconds(r: redis.Redis, stream: str) -> float:
    """Age of the stream's oldest entry (entries leave only once processed), 0 when empty."""
    first = oldest_id(r, stream)
    return max(0.0, time.time() - stream_id_key(first)[0] / 1000) if first else 0.0


def drain_all(conn: psycopg.Connection, r: redis.Redis, settings: Settings,
              classifier: Classifier, batch_size: int = 10_000) -> list[DrainReport]:
    """Everything on every stream now (`funnel drain`)."""
    reports = [
        drain_range(conn, r, key, kind="messages", classifier=classifier, after_id="0-0",
                    batch_size=batch_size, lead_window_days=settings.lead_window_days)
        for key in settings.stream_keys()
    ]
    reports.append(drain_range(conn, r, settings.status_stream, kind="statuses", classifier=None,
                               after_id="0-0", batch_size=batch_size))
    reports.append(drain_range(conn, r, settings.deadletter_stream, kind="deadletters",
                               classifier=None, after_id="0-0", batch_size=batch_size))
    return reports


def current_classifier(conn: psycopg.Connection, r: redis.Redis | None,
                       settings: Settings) -> Classifier:
    """A classifier on the current keyword version (seeded from the configured source when no
    version is stored yet)."""
    from .keyword_store import load_current

    kset = load_current(conn, r, settings=settings)
    return Classifier(list(kset.keywords), kset.version, settings.tz)
