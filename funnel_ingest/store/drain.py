"""Draining the Redis Streams into the funnel: exact id ranges, committed before trimming.

For each stream the last processed id is kept in `stream_offsets`, updated in the same
transaction as the batch it covers. A range is read with XRANGE, processed by the engine,
committed, and only then trimmed from the stream, so a crash at any point either leaves the
range to be processed again (idempotent: the unique message key drops what was stored) or has
it stored already. `funnel drain` and the Dagster job both call `drain_range`.

A range of more than one batch is pipelined: while Postgres stores batch N (COPY, insert,
funnel recompute), a worker process reads batch N+1's entries from Redis, classifies them and
formats them as COPY data, so this process only hands bytes to Postgres and recomputes the
funnel, and reading and classifying run on the second core. A range of one batch (the
sensor's usual micro-batch) is read in-process: starting a worker costs more than it saves
there.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import psycopg
import redis

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.cycles import DEFAULT_RULES, CycleRules
from funnel_ingest.ingest.stream import next_id, stream_id_key
from funnel_ingest.messages import DeadLetter, NormalizedMessage, StatusEvent, text
from funnel_ingest.store import workers
from funnel_ingest.store.funnel import (
    BatchResult,
    compact_summary,
    lock_writers,
    message_copy,
    process_copy,
    store_dead_letters,
    store_statuses,
)

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
    resumed: int = 0      # of them, recomputed from a later cycle (store.funnel)
    pipelined: int = 0    # batches read in the worker while the one before was stored
    last_id: str | None = None
    days: set = field(default_factory=set)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)




def offset(conn: psycopg.Connection, stream: str) -> str:
    row = conn.execute("SELECT last_id FROM stream_offsets WHERE stream = %s", (stream,)).fetchone()
    return row[0] if row else "0-0"


def _save_offset(conn: psycopg.Connection, stream: str, last_id: str) -> None:
    conn.execute(
        """INSERT INTO stream_offsets (stream, last_id) VALUES (%s, %s)
           ON CONFLICT (stream) DO UPDATE SET last_id = EXCLUDED.last_id, updated_at = now()""",
        (stream, last_id))


@dataclass
class Batch:
    """A range of a message stream read and classified, ready for `process_copy`."""

    entries: int                   # stream entries read
    last_id: str | None
    data: bytes                    # the message rows as COPY data
    rows: int
    days: set[date]                # the rows' business dates
    bad: list[tuple[str, DeadLetter]]   # entries that are no message (with their stream ids)
    seconds: dict[str, float]      # read, classify (with formatting)


def read_batch(r: redis.Redis, stream: str, after_id: str, until_id: str, count: int,
               classifier: Classifier, cursor: psycopg.Cursor) -> Batch:
    """Up to `count` entries of `stream` after `after_id` (up to `until_id`), classified into
    COPY data (`cursor` lends psycopg's adapters; nothing is sent to its server)."""
    t0 = time.perf_counter()
    entries = r.xrange(stream, min=f"({after_id}", max=until_id, count=count)
    t1 = time.perf_counter()
    bad: list[tuple[str, DeadLetter]] = []

    def messages() -> Iterator[NormalizedMessage]:
        for entry_id, fields in entries:
            try:
                yield NormalizedMessage.from_fields(fields)
            except (KeyError, ValueError, TypeError) as exc:
                bad.append((text(entry_id), DeadLetter(
                    text(fields.get(b"source", b"?")), "bad_stream_entry", str(exc),
                    text(fields.get(b"message_id", b"")) or None,
                    text(fields.get(b"raw_key", b"")))))

    data, rows, days = message_copy(cursor, messages(), classifier)
    return Batch(len(entries), text(entries[-1][0]) if entries else None, data, rows, days, bad,
                 {"read": t1 - t0, "classify": time.perf_counter() - t1})


@workers.task
def _read_in_worker(state: type[workers.State], stream: str, after_id: str, until_id: str,
                    count: int) -> Batch:
    assert state.redis is not None
    return read_batch(state.redis, stream, after_id, until_id, count, state.classifier,
                      state.conn.cursor())


def drain_range(conn: psycopg.Connection, r: redis.Redis, stream: str, *, kind: str,
                classifier: Classifier | None, after_id: str, until_id: str = "+",
                batch_size: int = 10_000, rules: CycleRules = DEFAULT_RULES, trim: bool = True,
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
    worker: ProcessPoolExecutor | None = None
    upcoming: Future[Batch] | None = None
    try:
        while True:
            if kind == "messages":
                assert classifier is not None
                if upcoming is not None:
                    batch, upcoming = upcoming.result(), None
                    report.pipelined += 1
                else:
                    batch = read_batch(r, stream, cursor, until_id, batch_size, classifier,
                                       conn.cursor())
                if not batch.entries:
                    break
                entries, last_id = batch.entries, batch.last_id
                if entries == batch_size:
                    # more may follow: the worker reads and classifies them meanwhile
                    worker = worker or workers.pool(conn, classifier, redis_client=r)
                    upcoming = worker.submit(_read_in_worker, stream, last_id, until_id,
                                             batch_size)
            else:
                t = time.perf_counter()
                items = r.xrange(stream, min=f"({cursor}", max=until_id, count=batch_size)
                _add(report.stages, {"read": time.perf_counter() - t})
                if not items:
                    break
                entries, last_id = len(items), text(items[-1][0])
            with conn.transaction(), _collector_paused():
                if kind == "messages":
                    lock_writers(conn, exclusive=False)  # a full rebuild waits, or is waited for
                    res = process_copy(conn, batch.data, batch.rows, batch.days, classifier.tz,
                                       rules=rules, seconds=batch.seconds)
                    store_dead_letters(conn, batch.bad)
                    report.inserted += res.inserted
                    report.duplicates += res.duplicates
                    report.customers += res.customers
                    report.resumed += res.resumed
                    report.days |= res.days
                    report.bad_entries += len(batch.bad)
                    _add(report.stages, res.seconds)
                    if on_batch:
                        on_batch(res)
                elif kind == "statuses":
                    report.inserted += store_statuses(
                        conn, [StatusEvent.from_fields(f) for _, f in items])
                else:
                    report.inserted += store_dead_letters(
                        conn, [(text(i), DeadLetter.from_fields(f)) for i, f in items])
                _save_offset(conn, stream, last_id)
            # committed: the range may leave the stream now
            t = time.perf_counter()
            if trim:
                r.xtrim(stream, minid=next_id(last_id), approximate=False)
            _add(report.stages, {"trim": time.perf_counter() - t})
            report.batches += 1
            report.entries += entries
            report.last_id = cursor = last_id
            if entries < batch_size:
                break
    finally:
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
    if kind == "messages" and report.batches:
        t = time.perf_counter()
        compact_summary(conn)
        _add(report.stages, {"summary": time.perf_counter() - t})
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a batch is stored: the funnel's recompute makes
    hundreds of thousands of short-lived objects, which the collector would otherwise scan
    over and over along with everything the process holds."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _add(totals: dict[str, float], seconds: dict[str, float]) -> None:
    for k, v in seconds.items():
        totals[k] = totals.get(k, 0.0) + v
