"""Backfilling business days from the raw archive: how history is repaired after the keywords
change or after Redis lost messages.

For a range of business days [start, end], in one pass:
1. **Restore.** Every archive object that may hold a message of the range is read once (the
   UTC dates the range spans plus the archive's lookahead, `archive.range_keys`), and its
   messages of the range are stored when missing: their keys are compared with the stored ones
   first, so only messages that never reached Postgres (a Redis loss) are classified and added
   (the unique message key still guards the insert), and their customers' funnel is
   recomputed. Groups of objects are read, compared and classified by worker processes
   (`store.workers`) while this process stores the groups before, in chunks of about
   `chunk_size` messages, each in its own transaction: memory holds a few groups, not the
   range.
2. **Re-classify.** Each day's stored messages are classified again with the given keywords,
   one transaction per day, so a long range shows progress (and a failure part-way keeps the
   days done; running it again is safe). Messages restored by step 1 are left out (classified
   moments ago with the same keywords); only messages whose classification changes are
   written, and only their customers' funnel is recomputed (`store.reclassify`).
Drains run meanwhile: both steps recompute a customer under that customer's lock
(`store.lock_customers`), so a drain touching the same customer waits for the transaction at
hand (or it for the drain) instead of racing it, and drains of other customers do not wait.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.cycles import DEFAULT_RULES, CycleRules
from funnel_ingest.ingest.archive import range_keys, read_objects
from funnel_ingest.messages import NormalizedMessage
from funnel_ingest.store import workers
from funnel_ingest.store.funnel import (
    compact_summary,
    day_counts,
    lock_writers,
    message_copy,
    message_key,
    not_stored,
    process_copy,
    reclassify,
)

CHUNK = 20_000
OBJECTS_PER_TASK = 32
"""Archive objects a worker reads per task (a busy hour's objects hold about 200 bodies)."""


@dataclass
class DayResult:
    day: date
    counts: dict[str, int]       # the day's stored messages and per-stage counts (day_counts)
    restored: int = 0            # messages added from the archive by this backfill
    reclassified: int = 0        # stored messages classified again
    changed: int = 0             # of them, those whose classification changed
    customers: int = 0           # customers whose funnel was recomputed
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        return self.counts.get("messages", 0)


@dataclass
class BackfillResult:
    start: date
    end: date
    objects: int = 0             # archive objects read
    archived: int = 0            # messages of the range found in them
    restored: int = 0
    customers: int = 0           # customers recomputed for the restored messages
    days: list[DayResult] = field(default_factory=list)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)   # seconds per step


@dataclass
class Restored:
    """The messages of a group of archive objects that are not stored yet, ready for
    `process_copy`."""

    objects: int
    archived: int                # messages of the range in the objects
    data: bytes                  # the missing ones' rows as COPY data
    rows: int
    days: set[date]


def restore_objects(s3: Any, bucket: str, keys: list[str], start: date, end: date,
                    classifier: Classifier, conn: psycopg.Connection) -> Restored:
    """Read `keys` (GETs in parallel), keep their messages of the business days [start, end]
    that `conn`'s database does not hold yet (one redelivered message once) and classify them
    into COPY data. Safe to run beside the writer of an earlier group: a message that writer
    stores meanwhile is dropped again by the insert's unique key."""
    found: dict[tuple[str, str, str], NormalizedMessage] = {}
    objects = archived = 0
    for _key, part in read_objects(s3, bucket, keys, threads=8):
        objects += 1
        for m in part.messages:
            if start <= m.sent_at.astimezone(classifier.tz).date() <= end:
                archived += 1
                found.setdefault(message_key(m), m)
    missing = not_stored(conn, list(found.values()))
    data, rows, days = message_copy(conn.cursor(), missing, classifier)
    return Restored(objects, archived, data, rows, days)


@workers.task
def _restore_in_worker(state: type[workers.State], bucket: str, keys: list[str], start: date,
                       end: date) -> Restored:
    return restore_objects(state.s3, bucket, keys, start, end, state.classifier, state.conn)


def backfill(conn: psycopg.Connection, s3_client: Callable[[], Any], bucket: str,
             classifier: Classifier, start: date, end: date, *,
             rules: CycleRules = DEFAULT_RULES, chunk_size: int = CHUNK,
             processes: int | None = None,
             log: Callable[[str], None] = lambda _msg: None) -> BackfillResult:
    """Restore and re-classify the business days [start, end] (see the module docstring).
    `conn` must not be in a transaction; each step commits its own. `s3_client` makes an S3
    client (a picklable factory: worker processes make their own). An archive of more than
    `OBJECTS_PER_TASK` objects is read by `processes` worker processes (default: one per
    core), groups of objects at a time, while this process stores what they found."""
    if end < start:
        raise ValueError(f"empty range: {start} .. {end}")
    t0 = time.perf_counter()
    result = BackfillResult(start, end)
    # the database's clock: what this run restores is classified after it
    began = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    restored: dict[date, int] = {}
    s3 = s3_client()
    keys = list(range_keys(s3, bucket, start, end, classifier.tz))
    groups = [keys[n:n + OBJECTS_PER_TASK] for n in range(0, len(keys), OBJECTS_PER_TASK)]
    pending: list[Restored] = []

    def store_pending() -> None:
        data = b"".join(p.data for p in pending)  # COPY text data: rows, one per line
        with conn.transaction():
            lock_writers(conn, exclusive=False)
            batch = process_copy(conn, data, sum(p.rows for p in pending),
                                 set().union(*(p.days for p in pending)), classifier.tz,
                                 rules=rules)
        for day, n in batch.inserted_by_day.items():
            restored[day] = restored.get(day, 0) + n
        result.restored += batch.inserted
        result.customers += batch.customers
        pending.clear()

    def take(found: Restored) -> None:
        result.objects += found.objects
        result.archived += found.archived
        pending.append(found)
        if sum(p.rows for p in pending) >= chunk_size:
            store_pending()

    if len(groups) <= 1:
        for group in groups:
            take(restore_objects(s3, bucket, group, start, end, classifier, conn))
    else:
        n = processes or len(os.sched_getaffinity(0))
        with workers.pool(conn, classifier, processes=n, s3_client=s3_client) as pool:
            # in order, with at most 2 groups per worker read ahead (bounded memory)
            queue: deque[Future[Restored]] = deque()
            for group in groups:
                queue.append(pool.submit(_restore_in_worker, bucket, group, start, end))
                if len(queue) > 2 * n:
                    take(queue.popleft().result())
            while queue:
                take(queue.popleft().result())
    if any(p.rows for p in pending):
        store_pending()
    result.stages["restore"] = time.perf_counter() - t0
    log(f"archive {start} .. {end}: {result.objects} objects, {result.archived} messages, "
        f"{result.restored} restored, {result.customers} customers updated")

    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    for n, day in enumerate(days, start=1):
        t1 = time.perf_counter()
        with conn.transaction():
            lock_writers(conn, exclusive=False)
            redone = reclassify(conn, classifier, day, day, rules=rules,
                                classified_before=began)
            counts = day_counts(conn, [day]).get(day, {})
        out = DayResult(day, counts, restored=restored.get(day, 0),
                        reclassified=redone.received, changed=redone.changed,
                        customers=redone.customers, seconds=time.perf_counter() - t1)
        result.days.append(out)
        log(f"{day} ({n}/{len(days)}): {out.reclassified} messages re-classified "
            f"({out.changed} changed), {out.restored} restored from the archive, "
            f"{out.customers} customers updated in {out.seconds:.1f} s")
    compact_summary(conn)  # the report summary's rows these days added, folded
    result.seconds = time.perf_counter() - t0
    result.stages["reclassify"] = result.seconds - result.stages["restore"]
    return result
