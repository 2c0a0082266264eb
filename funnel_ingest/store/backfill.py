"""Backfilling business days from the raw archive: how history is repaired after the keywords
change or after Redis lost messages.

For a range of business days [start, end], in one pass:
1. **Restore.** Every archive object that may hold a message of the range is read once (the
   UTC dates the range spans plus the archive's lookahead, `archive.range_keys`), and its
   messages of the range are stored when missing: their keys are compared with the stored ones
   first, so only messages that never reached Postgres (a Redis loss) are classified and added
   (the unique message key still guards the insert), and their customers' funnel is
   recomputed. Messages are handed to the store in chunks of
   `chunk_size`, each in its own transaction: memory holds one chunk, not the range.
2. **Re-classify.** Each day's stored messages are classified again with the given keywords and
   their customers' funnel recomputed, one transaction per day, so a long range shows progress
   (and a failure part-way keeps the days done; running it again is safe).
Drains run meanwhile: both steps recompute a customer under that customer's lock
(`store.lock_customers`), so a drain touching the same customer waits for the transaction at
hand (or it for the drain) instead of racing it, and drains of other customers do not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.cycles import DEFAULT_RULES, CycleRules
from funnel_ingest.ingest.archive import archived_messages
from funnel_ingest.messages import NormalizedMessage
from funnel_ingest.store.funnel import (
    day_counts,
    lock_writers,
    not_stored,
    process_messages,
    reclassify,
)

CHUNK = 20_000


@dataclass
class DayResult:
    day: date
    counts: dict[str, int]       # the day's stored messages and per-stage counts (day_counts)
    restored: int = 0            # messages added from the archive by this backfill
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
    days: list[DayResult] = field(default_factory=list)
    seconds: float = 0.0


def backfill(conn: psycopg.Connection, s3: Any, bucket: str, classifier: Classifier,
             start: date, end: date, *, rules: CycleRules = DEFAULT_RULES, chunk_size: int = CHUNK,
             log: Callable[[str], None] = lambda _msg: None) -> BackfillResult:
    """Restore and re-classify the business days [start, end] (see the module docstring).
    `conn` must not be in a transaction; each step commits its own."""
    if end < start:
        raise ValueError(f"empty range: {start} .. {end}")
    t0 = time.perf_counter()
    result = BackfillResult(start, end)
    restored: dict[date, int] = {}
    pending: list[NormalizedMessage] = []

    def store_pending() -> None:
        with conn.transaction():
            lock_writers(conn, exclusive=False)
            missing = not_stored(conn, pending)  # only those are classified here
            batch = process_messages(conn, missing, classifier, rules=rules)
        for day, n in batch.inserted_by_day.items():
            restored[day] = restored.get(day, 0) + n
        result.restored += batch.inserted
        pending.clear()

    for _key, messages in archived_messages(s3, bucket, start, end, classifier.tz):
        result.objects += 1
        result.archived += len(messages)
        pending += messages
        if len(pending) >= chunk_size:
            store_pending()
    if pending:
        store_pending()
    log(f"archive {start} .. {end}: {result.objects} objects, {result.archived} messages, "
        f"{result.restored} restored")

    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    for n, day in enumerate(days, start=1):
        t1 = time.perf_counter()
        with conn.transaction():
            lock_writers(conn, exclusive=False)
            redone = reclassify(conn, classifier, day, day, rules=rules)
            counts = day_counts(conn, [day]).get(day, {})
        out = DayResult(day, counts, restored=restored.get(day, 0), customers=redone.customers,
                        seconds=time.perf_counter() - t1)
        result.days.append(out)
        log(f"{day} ({n}/{len(days)}): {out.messages} messages re-classified, "
            f"{out.restored} restored from the archive, {out.customers} customers updated "
            f"in {out.seconds:.1f} s")
    result.seconds = time.perf_counter() - t0
    return result
