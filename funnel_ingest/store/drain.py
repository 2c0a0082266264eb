"""Draining the Redis Streams into the funnel: exact id ranges, committed before trimming.

For each stream the last processed id is kept in `stream_offsets`, updated in the same
transaction as the batch it covers. A range is read with XRANGE, processed by the engine,
committed, and only then trimmed from the stream, so a crash at any point either leaves the
range to be processed again (idempotent: the unique message key drops what was stored) or has
it stored already. `funnel drain` and the Dagster job both call `drain_range`.

A range of more than one batch is pipelined: while Postgres stores batch N (COPY, insert,
funnel recompute), a worker process reads batch N+1's entries and classifies them into COPY
rows, so classification runs on the second core. A range of one batch (the sensor's usual
micro-batch) is classified in-process: starting a worker costs more than it saves there.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg
import redis

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.cycles import DEFAULT_RULES, CycleRules
from funnel_ingest.ingest.stream import next_id, stream_id_key
from funnel_ingest.messages import DeadLetter, NormalizedMessage, StatusEvent, text
from funnel_ingest.store.funnel import (
    BatchResult,
    lock_writers,
    message_rows,
    process_rows,
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
    pipelined: int = 0    # batches classified in the worker while the one before was stored
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


Parsed = tuple[list[tuple], list[tuple[str, DeadLetter]], float]
"""A batch of message entries as COPY rows, its bad entries (dead letters) and the seconds it
took to classify."""


def classify_entries(entries: list, classifier: Classifier) -> Parsed:
    """Message stream entries -> COPY rows (classified) and dead letters for bad entries."""
    t = time.perf_counter()
    messages, bad = [], []
    for entry_id, fields in entries:
        try:
            messages.append(NormalizedMessage.from_fields(fields))
        except (KeyError, ValueError, TypeError) as exc:
            bad.append((text(entry_id), DeadLetter(
                text(fields.get(b"source", b"?")), "bad_stream_entry", str(exc),
                text(fields.get(b"message_id", b"")) or None,
                text(fields.get(b"raw_key", b"")))))
    return message_rows(messages, classifier), bad, time.perf_counter() - t


_worker_classifier: Classifier | None = None


def _start_worker(keywords: tuple, version: str, tz: str, cache_size: int) -> None:
    global _worker_classifier
    _worker_classifier = Classifier(list(keywords), version, ZoneInfo(tz), cache_size)


def _classify_in_worker(entries: list) -> Parsed:
    assert _worker_classifier is not None
    return classify_entries(entries, _worker_classifier)


def _classifier_worker(classifier: Classifier) -> ProcessPoolExecutor:
    """One worker process holding the same classifier (spawned: the caller may have threads)."""
    return ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
        initargs=(classifier.keywords, classifier.version, classifier.tz.key,
                  classifier.cache_size))


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
    upcoming: Future[Parsed] | None = None
    try:
        entries = r.xrange(stream, min=f"({cursor}", max=until_id, count=batch_size)
        while entries:
            last_id = text(entries[-1][0])
            parsed: Parsed | None = None
            following: list = []
            if kind == "messages":
                assert classifier is not None
                if upcoming is not None:
                    parsed, upcoming = upcoming.result(), None
                    report.pipelined += 1
                else:
                    parsed = classify_entries(entries, classifier)
                if len(entries) == batch_size:
                    # the next batch is classified in the worker while this one is stored
                    following = r.xrange(stream, min=f"({last_id}", max=until_id,
                                         count=batch_size)
                    if following:
                        worker = worker or _classifier_worker(classifier)
                        upcoming = worker.submit(_classify_in_worker, following)
            with conn.transaction():
                if parsed is not None:
                    rows, bad, classify_seconds = parsed
                    lock_writers(conn, exclusive=False)  # a full rebuild waits, or is waited for
                    res = process_rows(conn, rows, classifier.tz, rules=rules,
                                       classified_seconds=classify_seconds)
                    store_dead_letters(conn, bad)
                    report.inserted += res.inserted
                    report.duplicates += res.duplicates
                    report.customers += res.customers
                    report.resumed += res.resumed
                    report.days |= res.days
                    report.bad_entries += len(bad)
                    for k, v in res.seconds.items():
                        report.stages[k] = report.stages.get(k, 0.0) + v
                    if on_batch:
                        on_batch(res)
                elif kind == "statuses":
                    report.inserted += store_statuses(
                        conn, [StatusEvent.from_fields(f) for _, f in entries])
                else:
                    report.inserted += store_dead_letters(
                        conn, [(text(i), DeadLetter.from_fields(f)) for i, f in entries])
                _save_offset(conn, stream, last_id)
            # committed: the range may leave the stream now
            if trim:
                r.xtrim(stream, minid=next_id(last_id), approximate=False)
            report.batches += 1
            report.entries += len(entries)
            report.last_id = last_id
            cursor = last_id
            if len(entries) < batch_size:
                break
            entries = following if kind == "messages" else r.xrange(
                stream, min=f"({cursor}", max=until_id, count=batch_size)
    finally:
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
    report.seconds = time.perf_counter() - started
    return report
