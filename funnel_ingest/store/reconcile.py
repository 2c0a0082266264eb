"""Reconciling the raw archive with Postgres and the streams (`funnel replay`).

Every acknowledged body is in the archive before it is on a stream, so after Redis loses data
(a restart without persistence, a failover to a stale replica, an entry trimmed before it was
processed) the archive still holds what the funnel lacks. A reconcile pass over a window of
archive objects (by the time they were received):

1. lists the items in the window (messages, statuses, dead letters);
2. drops those still waiting on a stream (read first: an item a drain moves from the stream to
   Postgres meanwhile is then found in Postgres, or at worst appended twice, which the engine's
   unique key absorbs);
3. drops those stored in Postgres;
4. restores the room -> customer map in Redis from Postgres, so agent replies in old rooms are
   routed to their customer again;
5. re-enqueues what is left with the same atomic append as the API, in archive order, marking
   the dedupe keys so the provider's redeliveries are recognised.

It is idempotent (a second pass finds the re-enqueued items on the stream) and safe while the
API and the drains run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
import redis

from funnel_ingest.ingest.archive import archive_keys_between, read_objects
from funnel_ingest.ingest.stream import ROOM_PREFIX, append_sync
from funnel_ingest.messages import DeadLetter, NormalizedMessage, ParseResult, StatusEvent, text
from funnel_ingest.settings import Settings
from funnel_ingest.store.funnel import message_key, stored_keys

log = logging.getLogger(__name__)

@dataclass
class ReconcileReport:
    objects: int = 0
    archived: dict[str, int] = field(default_factory=dict)    # items in the window, by kind
    on_stream: dict[str, int] = field(default_factory=dict)   # of those, waiting on a stream
    stored: dict[str, int] = field(default_factory=dict)      # of those, in Postgres
    missing: dict[str, int] = field(default_factory=dict)     # neither: re-enqueued
    rooms_restored: int = 0
    dry_run: bool = False

    @property
    def total_missing(self) -> int:
        return sum(self.missing.values())


def _status_key(st: StatusEvent) -> tuple[str, str, str]:
    return (st.source, st.message_id, st.status)


def _dead_key(d: DeadLetter) -> tuple[str, str, str]:
    return (d.raw_key, str(d.raw_line), d.message_id or "")




def _stream_keys(r: redis.Redis, settings: Settings) -> dict[str, set[tuple[str, str, str]]]:
    """Keys of the items waiting on the streams, by kind."""
    found: dict[str, set[tuple[str, str, str]]] = {"message": set(), "status": set(),
                                                    "deadletter": set()}
    streams = [(s, "message") for s in settings.stream_keys()] + [
        (settings.status_stream, "status"), (settings.deadletter_stream, "deadletter")]
    for stream, kind in streams:
        start = "-"
        while entries := r.xrange(stream, min=start, count=10_000):
            for _, fields in entries:
                try:
                    if kind == "message":
                        found[kind].add(message_key(NormalizedMessage.from_fields(fields)))
                    elif kind == "status":
                        found[kind].add(_status_key(StatusEvent.from_fields(fields)))
                    else:
                        found[kind].add(_dead_key(DeadLetter.from_fields(fields)))
                except (KeyError, ValueError, TypeError):
                    continue  # a garbled entry: the drain dead-letters it
            start = "(" + text(entries[-1][0])
    return found


def restore_rooms(conn: psycopg.Connection, r: redis.Redis, settings: Settings) -> int:
    """Put Postgres' room -> customer map back into Redis (SET NX: never overrides), each room
    with ROOM_TTL_SECONDS, as the API writes them."""
    restored = 0
    with conn.cursor(name="reconcile_rooms") as cur:
        cur.itersize = 10_000
        cur.execute("SELECT source || ':' || room_id, customer_key FROM rooms")
        while rows := cur.fetchmany(10_000):
            pipe = r.pipeline(transaction=False)
            for room, customer in rows:
                pipe.set(ROOM_PREFIX + room, customer, nx=True,
                         ex=settings.room_ttl_seconds or None)
            restored += sum(1 for done in pipe.execute() if done)
    return restored


def reconcile(conn: psycopg.Connection, r: redis.Redis, s3: Any, settings: Settings, *,
              since: datetime, until: datetime | None = None, dry_run: bool = False,
              chunk: int = 500) -> ReconcileReport:
    """Re-enqueue the archived items received in [since, until] that are neither waiting on a
    stream nor stored in Postgres (see the module docstring)."""
    until = until or datetime.now(timezone.utc)
    report = ReconcileReport(dry_run=dry_run)
    keys = archive_keys_between(s3, settings.raw_bucket, since, until)
    report.objects = len(keys)
    # pass 1: the keys of every archived item (objects are not kept: a window may be days)
    wanted: dict[str, set[tuple[str, str, str]]] = {"message": set(), "status": set(),
                                                     "deadletter": set()}
    for _, part in read_objects(s3, settings.raw_bucket, keys):
        wanted["message"].update(message_key(m) for m in part.messages)
        wanted["status"].update(_status_key(s) for s in part.statuses)
        wanted["deadletter"].update(_dead_key(d) for d in part.dead_letters)
    waiting = _stream_keys(r, settings)   # streams first, then Postgres (see step 2)
    missing: dict[str, set[tuple[str, str, str]]] = {}
    with conn.transaction():
        for kind, items in wanted.items():
            report.archived[kind] = len(items)
            report.on_stream[kind] = len(items & waiting[kind])
            stored = stored_keys(conn, kind, items - waiting[kind])
            report.stored[kind] = len(stored)
            missing[kind] = items - waiting[kind] - stored
            report.missing[kind] = len(missing[kind])
    if dry_run or not report.total_missing:
        return report
    report.rooms_restored = restore_rooms(conn, r, settings)
    # pass 2: re-read the objects holding a missing item, in archive order
    batch = ParseResult()

    def take(kind: str, key: tuple[str, str, str]) -> bool:
        if key in missing[kind]:
            missing[kind].discard(key)  # an item archived twice (a redelivery) goes once
            return True
        return False

    for _, part in read_objects(s3, settings.raw_bucket, keys):
        if not any(missing.values()):
            break
        batch.messages += [m for m in part.messages if take("message", message_key(m))]
        batch.statuses += [s for s in part.statuses if take("status", _status_key(s))]
        batch.dead_letters += [d for d in part.dead_letters if take("deadletter", _dead_key(d))]
        if len(batch) >= chunk:
            append_sync(r, settings, batch, force=True)
            batch = ParseResult()
    if len(batch):
        append_sync(r, settings, batch, force=True)
    log.info("reconcile: re-enqueued %s", report.missing)
    return report
