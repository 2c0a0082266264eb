"""The outbox `conversion_events` (sql/008): the triggers on `funnel` write it; this module is
the delivery's side of it: expire, claim, record each answer, count.

Exactly once, as far as this side can make it:
- a batch is claimed in its own short transaction (`FOR UPDATE SKIP LOCKED`, then a claim token
  and a lease), so two deliveries never take the same rows and no lock is held while Meta is
  asked; a drain that updates a claimed row's values does not wait for Meta either;
- each answer is recorded right after it arrives, for exactly the rows of that request, and
  the record never waits for a row lock (so it can never deadlock with a drain);
- a delivery killed between Meta's answer and that record leaves its rows claimed until the
  lease runs out; the next delivery sends them again with the same `event_id`, which Meta
  deduplicates: a duplicate request, never a second event;
- `sent` is final: a late answer of a lapsed claim cannot make a sent event pending again.
Every function runs its statements on an autocommit connection (each its own transaction).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from funnel_ingest.conversions.meta import Answer, OutboxEvent

log = logging.getLogger(__name__)

STATUSES = ("pending", "sent", "failed", "expired", "cancelled")

_EXPIRE = """
    UPDATE conversion_events e
       SET status = 'expired', error = 'older than Meta accepts; never sent',
           claim_token = NULL, claimed_until = NULL, updated_at = now()
     WHERE e.id IN (SELECT id FROM conversion_events
                     WHERE status = 'pending'
                       AND event_time < now() - make_interval(secs => %(max_age)s)
                       AND (claimed_until IS NULL OR claimed_until < now())
                       FOR UPDATE SKIP LOCKED)"""

_CLAIM = """
    WITH due AS (
        SELECT id FROM conversion_events
         WHERE status = 'pending' AND next_attempt_at <= %(due_by)s
           AND (claimed_until IS NULL OR claimed_until < now())
           AND event_time >= now() - make_interval(secs => %(max_age)s)
           AND event_name = ANY(%(names)s)
         ORDER BY next_attempt_at, id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED)
    UPDATE conversion_events e
       SET claim_token = %(token)s, claimed_until = now() + make_interval(secs => %(lease)s)
      FROM due WHERE e.id = due.id
    RETURNING e.id, e.event_id, e.event_name, e.event_time, e.ctwa_clid, e.value"""

# The records lock their rows with SKIP LOCKED and report which they locked: a row a drain's
# transaction holds (its trigger is updating the event's values) is recorded on the next try
# (`_record`). Waiting for it instead could deadlock with that transaction, which locks the
# outbox rows of its leads in its own order, statement after statement.
_LOCKED = """
    WITH locked AS (SELECT id FROM conversion_events WHERE id = ANY(%(ids)s)
                       FOR UPDATE SKIP LOCKED),
         done AS ({update})
    SELECT l.id, d.status FROM locked l LEFT JOIN done d USING (id)"""

# Sent is a fact, whoever's claim it was: recorded even when the claim lapsed meanwhile.
_SENT = _LOCKED.format(update="""
        UPDATE conversion_events e
           SET status = 'sent', attempts = e.attempts + 1, sent_at = now(),
               sent_event = s.event, response_status = %(status)s, response_body = %(body)s,
               error = NULL, claim_token = NULL, claimed_until = NULL, updated_at = now()
          FROM locked l
          JOIN (SELECT unnest(%(event_ids)s::bigint[]) AS id,
                       unnest(%(events)s::jsonb[]) AS event) s ON s.id = l.id
         WHERE e.id = l.id AND e.status <> 'sent'
        RETURNING e.id, e.status""")

# A failed attempt, only on this claim's rows: the next attempt after base * 2^(attempts
# before), capped; failed at the last attempt; an event cancelled meanwhile stays cancelled.
_FAILED = _LOCKED.format(update="""
        UPDATE conversion_events e
           SET attempts = e.attempts + 1,
               status = CASE WHEN e.status <> 'pending' THEN e.status
                             WHEN e.attempts + 1 >= %(max_attempts)s THEN 'failed'
                             ELSE 'pending' END,
               next_attempt_at = now() + make_interval(
                   secs => least(%(cap)s, %(base)s * power(2, e.attempts))),
               response_status = %(status)s, response_body = %(body)s, error = %(error)s,
               claim_token = NULL, claimed_until = NULL, updated_at = now()
          FROM locked l
         WHERE e.id = l.id AND e.claim_token = %(token)s AND e.status <> 'sent'
        RETURNING e.id, e.status""")

_RELEASE = _LOCKED.format(update="""
        UPDATE conversion_events e SET claim_token = NULL, claimed_until = NULL
          FROM locked l WHERE e.id = l.id AND e.claim_token = %(token)s
        RETURNING e.id, e.status""")

RETRY_LOCKED_SECONDS = 0.1


def _record(conn: psycopg.Connection, sql: str, params: dict[str, Any], ids: Sequence[int],
            patience: float) -> list[str]:
    """Run a record statement on `ids` until every row was locked once (rows a writer holds
    are tried again every RETRY_LOCKED_SECONDS); the statuses of the rows it changed. After
    `patience` seconds the rest is left as it is: still claimed, it is sent again once the
    claim lapses (same event ids)."""
    remaining, statuses = list(ids), []
    deadline = time.monotonic() + patience
    while remaining:
        rows = conn.execute(sql, {**params, "ids": remaining}).fetchall()
        statuses += [status for _, status in rows if status is not None]
        locked = {pk for pk, _ in rows}
        remaining = [pk for pk in remaining if pk not in locked]
        if remaining:
            if time.monotonic() >= deadline:
                log.warning("conversion events %s stayed locked by another writer for %.0f s; "
                            "left to their claim's lapse", remaining, patience)
                break
            time.sleep(RETRY_LOCKED_SECONDS)
    return statuses


def now(conn: psycopg.Connection) -> datetime:
    """The database's clock (every time in the outbox is the database's)."""
    return conn.execute("SELECT now()").fetchone()[0]


def expire(conn: psycopg.Connection, max_age_seconds: float) -> int:
    """Mark pending events older than `max_age_seconds` expired (Meta refuses a whole request
    when one of its events is older than 7 days); how many."""
    return conn.execute(_EXPIRE, {"max_age": max_age_seconds}).rowcount


def claim(conn: psycopg.Connection, token: uuid.UUID, *, names: Sequence[str], limit: int,
          lease_seconds: float, max_age_seconds: float, due_by: datetime) -> list[OutboxEvent]:
    """Claim up to `limit` events named `names` that were due at `due_by` (a delivery pass's
    start: an event that fails in a pass is not tried again by the same pass), for
    `lease_seconds`, the longest due first."""
    rows = conn.execute(_CLAIM, {"token": token, "names": list(names), "limit": limit,
                                 "lease": lease_seconds, "max_age": max_age_seconds,
                                 "due_by": due_by}).fetchall()
    return sorted((OutboxEvent(*row) for row in rows), key=lambda e: e.id)


def record_sent(conn: psycopg.Connection, rows: Sequence[OutboxEvent],
                events: Sequence[dict[str, Any]], answer: Answer, patience: float) -> int:
    """Meta accepted `rows` (sent as `events`): sent, with the event and its answer kept."""
    ids = [r.id for r in rows]
    return len(_record(conn, _SENT, {"event_ids": ids, "events": [Jsonb(e) for e in events],
                                     "status": answer.status, "body": answer.body},
                       ids, patience))


@dataclass(frozen=True, slots=True)
class Backoff:
    max_attempts: int
    base_seconds: float
    max_seconds: float


def record_failed(conn: psycopg.Connection, token: uuid.UUID, rows: Sequence[OutboxEvent],
                  answer: Answer, backoff: Backoff, patience: float) -> tuple[int, int]:
    """An attempt of `rows` failed with `answer` (kept per event): each is retried later, or
    failed at its last attempt. Returns (retried, failed)."""
    statuses = _record(conn, _FAILED, {
        "token": token, "max_attempts": backoff.max_attempts, "base": backoff.base_seconds,
        "cap": backoff.max_seconds, "status": answer.status, "body": answer.body,
        "error": answer.error}, [r.id for r in rows], patience)
    return statuses.count("pending"), statuses.count("failed")


def release(conn: psycopg.Connection, token: uuid.UUID, patience: float) -> int:
    """Give back what a claim still holds (rows of a batch a stopped delivery did not send)."""
    ids = [pk for (pk,) in conn.execute("SELECT id FROM conversion_events WHERE claim_token = %s",
                                        (token,))]
    return len(_record(conn, _RELEASE, {"token": token}, ids, patience)) if ids else 0


def requeue_failed(conn: psycopg.Connection) -> int:
    """Failed events pending again with a fresh count of attempts (after the cause was fixed:
    a token, a dataset); those older than Meta accepts will expire instead of being sent."""
    return conn.execute("UPDATE conversion_events SET status = 'pending', attempts = 0, "
                        "next_attempt_at = now(), updated_at = now() "
                        "WHERE status = 'failed'").rowcount


@dataclass(frozen=True, slots=True)
class Counts:
    by_status: dict[str, int]              # every status, 0 included
    by_event: dict[str, dict[str, int]]    # event name -> status -> count
    due: int                               # pending, due now and not claimed
    in_flight: int                         # pending and claimed by a running delivery
    next_attempt_at: datetime | None       # the earliest pending event not due yet


def counts(conn: psycopg.Connection, names: Sequence[str] | None = None) -> Counts:
    """The outbox's counts; `due` only of events named `names` (those a delivery sends), when
    given."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_event: dict[str, dict[str, int]] = {}
    for name, status, n in conn.execute("SELECT event_name, status, count(*) FROM "
                                        "conversion_events GROUP BY 1, 2 ORDER BY 1, 2"):
        by_status[status] += n
        by_event.setdefault(name, dict.fromkeys(STATUSES, 0))[status] = n
    due, in_flight, upcoming = conn.execute(
        """SELECT count(*) FILTER (WHERE next_attempt_at <= now()
                                   AND (claimed_until IS NULL OR claimed_until < now())
                                   AND (%(names)s::text[] IS NULL
                                        OR event_name = ANY(%(names)s::text[]))),
                  count(*) FILTER (WHERE claimed_until >= now()),
                  min(next_attempt_at) FILTER (WHERE next_attempt_at > now())
             FROM conversion_events WHERE status = 'pending'""",
        {"names": list(names) if names is not None else None}).fetchone()
    return Counts(by_status, by_event, due, in_flight, upcoming)


def recent_errors(conn: psycopg.Connection, limit: int = 10) -> list[dict[str, Any]]:
    """The last answers that were not an acceptance, newest first."""
    cur = conn.execute(
        """SELECT event_id, event_name, status, attempts, response_status, error,
                  next_attempt_at, updated_at
             FROM conversion_events WHERE error IS NOT NULL AND status <> 'expired'
            ORDER BY updated_at DESC LIMIT %s""", (limit,))
    names = [c.name for c in cur.description]
    return [dict(zip(names, row)) for row in cur]

