"""The funnel engine on Postgres: set-based, incremental, idempotent.

`process_messages` takes a batch of normalized messages (any order, duplicates welcome):
1. classify them in Python and COPY them into a staging table;
2. insert the new ones into `classified_messages` (the unique idempotency key drops
   redeliveries), learn rooms' customers and resolve agent messages that were waiting for
   their room;
3. register what the batch says about campaigns (`store.campaigns.learn`);
4. recompute the lead cycles of exactly the customers the batch touched and merge the result
   into `funnel` and `transactions` (rows that did not change keep their `updated_at`), each
   row with its resolved campaign (`funnel.campaign`). A
   customer is recomputed from the last of their stored cycles that opened before the batch's
   earliest message for them (`engine.cycles.Resume`), reading only the messages from that
   cycle's opening on; the cycles before it cannot change. A customer with no such cycle is
   recomputed from all their messages.
A handful of statements per batch, never one round-trip per message. The result equals a full
rebuild (`rebuild`) whatever the batches and their order: late and out-of-order messages reach
back to the cycle they fall in.
All of it runs in the caller's transaction.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import orjson
import psycopg
from psycopg.adapt import PyFormat, Transformer
from psycopg.copy import Copy, FileWriter

from funnel_ingest.engine import channels
from funnel_ingest.engine.campaigns import CampaignEntry
from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.cycles import (
    CAMPAIGN_REPLY_WINDOW,
    DEFAULT_RULES,
    CustomerFunnel,
    CycleMessage,
    CycleRules,
    Resume,
    customer_funnel,
    lead_id,
)
from funnel_ingest.engine.model import STAGES
from funnel_ingest.messages import DeadLetter, NormalizedMessage, StatusEvent
from funnel_ingest.store import campaigns

log = logging.getLogger(__name__)

MESSAGE_COLUMNS = (
    "source", "message_id", "room_key", "room_id", "customer_key", "phone", "user_id",
    "direction", "sender_type", "sent_at", "message_date", "received_at", "text", "message_type",
    "channel_hint", "room_channel", "medium", "campaign_id", "ad_id", "referral", "context_id",
    "raw_key",
    "raw_line", "stages", "keywords", "opening_keyword", "opening_channel", "payment", "amount",
    "requested_date", "keyword_version", "template_name", "campaign_name", "broadcast_id",
)
FUNNEL_COLUMNS = (
    "lead_id", "leads_date", "channel", "phone", "booking_date", "transaction_date",
    "transaction_value", "customer_key", "cycle", "lead_at", "booking_at", "transaction_at",
    "transaction_total", "transactions", "requested_date", "campaign_id", "ad_id",
    "opening_keyword", "opening_source", "opening_message_id", "medium",
)
"""What the lead cycles compute; `_merge_funnel` adds `campaign`, resolved in Postgres from the
campaign registry (`store.campaigns.resolved`)."""
TX_COLUMNS = ("message_pk", "lead_id", "customer_key", "paid_at", "paid_date", "amount",
              "direction")
_CYCLE_SELECT = """
    SELECT m.customer_key, m.id, m.source, m.message_id, m.room_key, m.sent_at, m.direction,
           m.stages, m.payment, m.amount, m.phone, m.channel_hint, m.opening_channel,
           m.opening_keyword, m.campaign_id, m.ad_id, m.requested_date, m.medium
      FROM classified_messages m
"""
_CYCLE_TYPES = ("text", "bigint", "text", "text", "text", "timestamptz", "text", "text[]", "bool",
                "numeric", "text", "text", "text", "text", "text", "text", "date", "text")
"""The types of `_CYCLE_SELECT`'s columns, as its binary COPY needs them."""


@dataclass
class BatchResult:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    customers: int = 0
    resumed: int = 0   # customers recomputed from a later cycle, not from their first message
    changed: int = 0   # re-classified messages whose classification changed (`reclassify`)
    leads: int = 0
    days: set[date] = field(default_factory=set)  # business dates of the batch's messages
    inserted_by_day: dict[date, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# Two locks keep concurrent writers from losing each other's updates:
# - per customer (`lock_customers`): every writer locks the rows of `customer_locks` of the
#   customers it recomputes, in key order, after its own writes to their messages and before
#   reading them back. Two writers of one customer (two drains of a shard, a drain and a
#   backfill day, a replay) so recompute it one after the other, the second from everything
#   the first committed; writers of other customers never wait. Lock order is the key order
#   and a writer holding customer locks only writes that customer's funnel rows, so no two
#   writers can wait for each other. Before that, writers insert messages in key order and
#   lock the stored messages they update in id order, for the same reason.
# - WRITER_LOCK_ID, an advisory lock every writer takes shared, and a full rebuild, which
#   recomputes every customer at once, exclusive.
WRITER_LOCK_ID = 0x66756E6E656C01  # "funnel" + 1


def lock_writers(conn: psycopg.Connection, *, exclusive: bool) -> None:
    """Take the funnel writers' lock for the current transaction (see WRITER_LOCK_ID)."""
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    conn.execute(f"SELECT {fn}(%s)", (WRITER_LOCK_ID,))


def lock_customers(conn: psycopg.Connection, table: str = "touched_customers") -> None:
    """Lock the customers of `table` (a temp table of customer keys) for the current
    transaction, in key order (see WRITER_LOCK_ID)."""
    conn.execute(f"INSERT INTO customer_locks (customer_key) SELECT customer_key FROM {table} "
                 "ORDER BY customer_key ON CONFLICT DO NOTHING")
    conn.execute(f"SELECT 1 FROM customer_locks WHERE customer_key IN "
                 f"(SELECT customer_key FROM {table}) ORDER BY customer_key FOR UPDATE")


def _empty_temp_table(conn: psycopg.Connection, name: str, definition: str) -> None:
    """A session temp table, created on first use (`definition`: columns or `AS SELECT …`)
    and emptied for this batch."""
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} {definition}")
    conn.execute(f"TRUNCATE {name}")


def _staging_like(conn: psycopg.Connection, name: str, table: str,
                  columns: Sequence[str]) -> None:
    _empty_temp_table(conn, name, f"AS SELECT {', '.join(columns)} FROM {table} WITH NO DATA")


def _empty_touched(conn: psycopg.Connection) -> None:
    """The batch's customers (`since`: the earliest sent_at of their new or changed messages)
    and where their recompute starts (`from_cycle`, `_plan_restarts`)."""
    _empty_temp_table(conn, "touched_customers",
                      "(customer_key text PRIMARY KEY, since timestamptz NOT NULL, "
                      "from_cycle int NOT NULL DEFAULT 1, restart_at timestamptz, "
                      "restart_lead text, prev_phone text)")


BATCH_WORK_MEM = "64MB"
"""Postgres' work_mem for a batch's transaction (the server default, 4 MB, sorts a batch of
50,000 rows on disk)."""

_TOUCH = """INSERT INTO touched_customers (customer_key, since)
            SELECT customer_key, min(sent_at) FROM {rows} WHERE customer_key IS NOT NULL
             GROUP BY customer_key
            ON CONFLICT (customer_key) DO UPDATE
               SET since = least(touched_customers.since, EXCLUDED.since)"""
"""Mark the customers of a CTE `rows` (customer_key, sent_at) touched."""


def _copy(conn: psycopg.Connection, table: str, columns: Sequence[str],
          rows: Iterable[Sequence[object]]) -> None:
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _without_nul(value: object) -> object:
    """`value` with NUL removed from its strings, nested ones included: Postgres `text` cannot
    hold NUL and `jsonb` refuses `\u0000`, and one such value would fail a drain's whole batch,
    again on every retry. The raw archive keeps the exact bytes."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(v) for v in value]
    return value


def _row(values: tuple) -> tuple:
    """A COPY row without NUL in its strings (the check is all most rows cost)."""
    if any(v.__class__ is str and "\x00" in v for v in values):
        return tuple(_without_nul(v) if v.__class__ is str else v for v in values)
    return values


def _json(value: object) -> str | None:
    return orjson.dumps(_without_nul(value)).decode() if value else None


def message_rows(messages: Iterable[NormalizedMessage], classifier: Classifier
                 ) -> list[tuple]:
    """The COPY rows of `messages` (classified): what `process_messages` stores."""
    return list(_message_rows(messages, classifier, classifier.tz))


_MESSAGE_DATE = MESSAGE_COLUMNS.index("message_date")


def _message_values(messages: Iterable[NormalizedMessage], classifier: Classifier,
                    tz: ZoneInfo) -> Iterator[tuple]:
    """The values of each message's row, classified (NUL not removed yet: `_row`)."""
    for m in messages:
        c = classifier.classify_message(m)
        labels = channels.settled(m.source, m.channel_hint, m.medium, m.room_channel)
        yield (
            m.source, m.message_id, m.room_key, m.room_id, m.customer_key, m.phone, m.user_id,
            m.direction, m.sender_type, m.sent_at, m.sent_at.astimezone(tz).date(),
            m.received_at, m.text, m.message_type, labels.channel,
            m.room_channel, labels.medium, m.campaign_id, m.ad_id, _json(m.referral),
            m.context_id,
            m.raw_key, m.raw_line, _text_array(c.stages), _text_array(c.keywords),
            c.opening_keyword, c.opening_channel, c.payment, c.amount, c.requested_date,
            c.keyword_version, m.template_name, m.campaign_name, m.broadcast_id,
        )


def _message_rows(messages: Iterable[NormalizedMessage], classifier: Classifier,
                  tz: ZoneInfo) -> Iterator[tuple]:
    for values in _message_values(messages, classifier, tz):
        yield _row(values)


@lru_cache(maxsize=8192)
def _text_array(values: tuple[str, ...]) -> str:
    """`values` as a `text[]` literal, made by psycopg's own list dumper once per distinct
    tuple: a row's arrays (its stages, its keywords from a short list) are the same few tuples
    over and over, and dumping a list per row was the costliest part of formatting it."""
    items = list(values)
    return Transformer().get_dumper(items, PyFormat.TEXT).dump(items).decode()


def message_copy(cursor: psycopg.Cursor, messages: Iterable[NormalizedMessage],
                 classifier: Classifier) -> tuple[bytes, int, set[date]]:
    """The COPY data (text format) of `messages`' rows for `MESSAGE_COLUMNS`, their count and
    business dates: a batch ready for `process_copy`, made by whichever process classified it.
    `cursor` only lends psycopg's adapters: nothing is sent to its server."""
    messages = list(messages)
    try:
        return _format_rows(cursor, _message_values(messages, classifier, classifier.tz))
    except psycopg.DataError:
        # a string holding NUL (psycopg refuses them): the batch again, NUL removed
        return _format_rows(cursor, _message_rows(messages, classifier, classifier.tz))


def _format_rows(cursor: psycopg.Cursor, rows: Iterable[tuple]) -> tuple[bytes, int, set[date]]:
    buffer = io.BytesIO()
    count, days = 0, set()
    with Copy(cursor, binary=False, writer=FileWriter(buffer)) as copy:
        for row in rows:
            copy.write_row(row)
            days.add(row[_MESSAGE_DATE])
            count += 1
    return buffer.getvalue(), count, days


def message_key(m: NormalizedMessage) -> tuple[str, str, str]:
    """A message's idempotency key as stored: (source, message id, room key)."""
    return (m.source, m.message_id, m.room_key)


STORED_KEYS_SQL = {
    "message": ("stored_message_keys", "source text, message_id text, room_key text",
                """SELECT k.source, k.message_id, k.room_key FROM stored_message_keys k
                   JOIN classified_messages c USING (source, message_id, room_key)"""),
    "status": ("stored_status_keys", "source text, message_id text, status text",
               """SELECT k.source, k.message_id, k.status FROM stored_status_keys k
                  JOIN message_statuses s USING (source, message_id, status)"""),
    "deadletter": ("stored_dead_keys", "raw_key text, raw_line text, message_id text",
                   """SELECT DISTINCT k.raw_key, k.raw_line, k.message_id FROM stored_dead_keys k
                      JOIN dead_letters d ON d.raw_key = k.raw_key
                       AND d.raw_line = k.raw_line::int
                       AND coalesce(d.message_id, '') = k.message_id"""),
}


def stored_keys(conn: psycopg.Connection, kind: str,
                keys: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """Which of `keys` of one kind (`message`, `status`, `deadletter`) are stored already: one
    COPY of the keys and one join."""
    if not keys:
        return set()
    table, definition, query = STORED_KEYS_SQL[kind]
    _empty_temp_table(conn, table, f"({definition})")
    columns = [c.split()[0] for c in definition.split(", ")]
    _copy(conn, table, columns, keys)
    return {tuple(row) for row in conn.execute(query)}


def not_stored(conn: psycopg.Connection, messages: Sequence[NormalizedMessage]
               ) -> list[NormalizedMessage]:
    """The messages whose idempotency key is not in `classified_messages` (`stored_keys`): what a
    restore from the archive needs to classify, instead of all."""
    stored = stored_keys(conn, "message", {message_key(m) for m in messages})
    return [m for m in messages if message_key(m) not in stored]


def process_messages(conn: psycopg.Connection, messages: Sequence[NormalizedMessage],
                     classifier: Classifier, *, rules: CycleRules = DEFAULT_RULES) -> BatchResult:
    """Store and classify a batch, then bring the funnel of the customers it touched up to date.
    The messages are classified while COPY streams them (no second copy of the batch in
    memory)."""
    result = BatchResult()
    if not messages:
        return result

    def counted() -> Iterator[tuple]:
        for row in _message_rows(messages, classifier, classifier.tz):
            result.received += 1
            result.days.add(row[_MESSAGE_DATE])
            yield row

    t0 = time.perf_counter()
    _staging_like(conn, "stage_messages", "classified_messages", MESSAGE_COLUMNS)
    _copy(conn, "stage_messages", MESSAGE_COLUMNS, counted())
    return _apply_stage(conn, classifier.tz, rules, result,
                        {"classify+copy": time.perf_counter() - t0})


def process_copy(conn: psycopg.Connection, data: bytes, count: int, days: set[date],
                 tz: ZoneInfo, *, rules: CycleRules = DEFAULT_RULES,
                 seconds: dict[str, float] | None = None) -> BatchResult:
    """`process_messages` for a batch `message_copy` made ready (maybe in another process):
    `count` rows of COPY data whose business dates are `days`. `seconds`: the stages it took to
    make, reported with the batch's."""
    result = BatchResult(received=count, days=set(days))
    t0 = time.perf_counter()
    _staging_like(conn, "stage_messages", "classified_messages", MESSAGE_COLUMNS)
    with conn.cursor() as cur, cur.copy(
            f"COPY stage_messages ({', '.join(MESSAGE_COLUMNS)}) FROM STDIN") as copy:
        copy.write(data)
    return _apply_stage(conn, tz, rules, result,
                        {**(seconds or {}), "copy": time.perf_counter() - t0})


def _apply_stage(conn: psycopg.Connection, tz: ZoneInfo, rules: CycleRules,
                 result: BatchResult, seconds: dict[str, float]) -> BatchResult:
    """Store the new messages of `stage_messages` and recompute their customers' funnel."""
    if not result.received:
        return result
    t1 = time.perf_counter()
    # a batch's sorts (its rows in key order, its customers' messages in customer order) fit
    # in memory instead of spilling to disk
    conn.execute(f"SET LOCAL work_mem = '{BATCH_WORK_MEM}'")
    cols = ", ".join(MESSAGE_COLUMNS)
    _empty_touched(conn)
    result.inserted_by_day = dict(conn.execute(
        f"""WITH ins AS (
                INSERT INTO classified_messages ({cols}) SELECT {cols} FROM stage_messages
                 ORDER BY source, message_id, room_key
                ON CONFLICT (source, message_id, room_key) DO NOTHING
                RETURNING customer_key, message_date, sent_at),
            t AS ({_TOUCH.format(rows="ins")})
            SELECT message_date, count(*) FROM ins GROUP BY 1""").fetchall())
    result.inserted = sum(result.inserted_by_day.values())
    result.duplicates = result.received - result.inserted
    _resolve_rooms(conn)
    learned = campaigns.learn(conn)
    _refresh_statistics(conn, result.inserted)
    t2 = time.perf_counter()
    _recompute_touched(conn, tz, rules, result)
    if learned:
        # the rows the merge left alone whose campaign a new ref names (the touched
        # customers' only: payload refs concern the customers of the messages carrying them)
        resolve_campaigns(conn, "new_campaign_refs", customers="touched_customers")
    t3 = time.perf_counter()
    result.seconds = {**seconds, "insert": t2 - t1, "funnel": t3 - t2}
    return result


def _refresh_statistics(conn: psycopg.Connection, inserted: int) -> None:
    """Keep the planner's row estimates current during bulk drains, so the recompute reads the
    touched customers through the (customer_key, sent_at) index instead of sorting the table
    (autovacuum's ANALYZE lags far behind a backlog being drained)."""
    conn.execute("SET LOCAL jit = off")  # short statements: compiling costs more than it saves
    conn.execute("ANALYZE touched_customers")
    estimate = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'classified_messages'"
                            "::regclass").fetchone()[0]
    if inserted > max(estimate, 0) + 1000:
        # the table (at least) doubled: a backlog into a new table is analyzed a few times,
        # not on every batch (the planner scales the row estimate by the table's size itself)
        conn.execute("ANALYZE classified_messages")


def _resolve_rooms(conn: psycopg.Connection) -> None:
    """Learn each room's customer from its first inbound message; give agent messages that were
    waiting for their room the room's customer (and mark those customers touched)."""
    conn.execute(
        """INSERT INTO rooms (source, room_id, customer_key)
           SELECT DISTINCT ON (source, room_id) source, room_id, customer_key
             FROM stage_messages
            WHERE room_id IS NOT NULL AND customer_key IS NOT NULL AND direction = 'inbound'
            ORDER BY source, room_id, sent_at, message_id
           ON CONFLICT DO NOTHING""")
    conn.execute(
        """WITH waiting AS (
               SELECT m.id, r.customer_key FROM classified_messages m
                 JOIN rooms r ON m.source = r.source AND m.room_id = r.room_id
                WHERE m.customer_key IS NULL ORDER BY m.id FOR UPDATE OF m),
           fixed AS (
               UPDATE classified_messages m SET customer_key = w.customer_key
                 FROM waiting w WHERE m.id = w.id
            RETURNING m.customer_key, m.sent_at)
           """ + _TOUCH.format(rows="fixed"))


def _cycle_rows(conn: psycopg.Connection, where: str,
                params: Sequence[object] = ()) -> Iterator[tuple[str, list[CycleMessage]]]:
    """Each customer's messages in customer order, streamed by a binary COPY (the cheapest way
    out of Postgres: no cursor round trips, rows parsed in C). The connection is busy until
    the last customer is consumed."""
    key: str | None = None
    batch: list[CycleMessage] = []
    with conn.cursor() as cur, cur.copy(
            f"COPY ({_CYCLE_SELECT} {where} ORDER BY m.customer_key) TO STDOUT (FORMAT BINARY)",
            params or None) as copy:
        copy.set_types(_CYCLE_TYPES)
        for row in copy.rows():
            if row[0] != key:
                if key is not None:
                    yield key, batch
                key, batch = row[0], []
            batch.append(CycleMessage(row[1], row[2], row[3], row[4], row[5], row[6],
                                      tuple(row[7]), row[8], row[9], row[10], row[11], row[12],
                                      row[13], row[14], row[15], row[16], row[17]))
    if key is not None:
        yield key, batch


def customer_messages(conn: psycopg.Connection, keys: Sequence[str]
                      ) -> Iterator[tuple[str, list[CycleMessage]]]:
    """All stored messages of each of `keys`, as the funnel reads them (a read only: the keyword
    impact preview recomputes these customers in memory)."""
    return _cycle_rows(conn, "WHERE m.customer_key = ANY(%s)", (list(keys),))


def _funnel_rows(funnels: Iterable[tuple[str, CustomerFunnel]], tz: ZoneInfo
                 ) -> tuple[list[tuple], list[tuple], int]:
    """Funnel and transaction rows of the customers' funnels, and how many customers."""
    leads: list[tuple] = []
    payments: list[tuple] = []
    customers = 0
    for _key, f in funnels:
        customers += 1
        for ld in f.leads:
            lead_date, booking_date, tx_date = ld.dates(tz)
            leads.append((
                ld.lead_id, lead_date, ld.channel, ld.phone, booking_date, tx_date,
                ld.transaction_value, ld.customer_key, ld.cycle, ld.lead_at, ld.booking_at,
                ld.transaction_at, ld.transaction_total, ld.transactions, ld.requested_date,
                ld.campaign_id, ld.ad_id, ld.opening_keyword, ld.opening_source,
                ld.opening_message_id, ld.medium))
        for p in f.payments:
            payments.append((p.message_pk, p.lead_id, p.customer_key, p.paid_at,
                             p.paid_at.astimezone(tz).date(), p.amount, p.direction))
    return leads, payments, customers


def _plan_restarts(conn: psycopg.Connection) -> None:
    """Per touched customer, the cycle its recompute starts from: the last stored cycle (after
    the first) that opened strictly before the earliest new message (an equal time could sort
    either way), with the phone the cycle before it holds (the customer's phone so far)."""
    conn.execute(
        """UPDATE touched_customers t
              SET from_cycle = r.cycle, restart_at = r.lead_at, restart_lead = r.lead_id,
                  prev_phone = p.phone
             FROM (SELECT DISTINCT ON (f.customer_key) f.customer_key, f.cycle, f.lead_at,
                          f.lead_id
                     FROM funnel f JOIN touched_customers x ON x.customer_key = f.customer_key
                    WHERE f.cycle > 1 AND f.lead_at < x.since
                    ORDER BY f.customer_key, f.cycle DESC) r
             LEFT JOIN funnel p ON p.customer_key = r.customer_key AND p.cycle = r.cycle - 1
            WHERE t.customer_key = r.customer_key""")


def _recompute_touched(conn: psycopg.Connection, tz: ZoneInfo, rules: CycleRules,
                       result: BatchResult) -> None:
    lock_customers(conn)
    _plan_restarts(conn)
    funnels = _resumed_funnels(conn, rules)
    leads, payments, result.customers = _funnel_rows(funnels, tz)
    result.leads = len(leads)
    result.resumed = conn.execute(
        "SELECT count(*) FROM touched_customers WHERE from_cycle > 1").fetchone()[0]
    _merge_funnel(conn, leads, payments, scope="touched_customers")


def _resumed_funnels(conn: psycopg.Connection, rules: CycleRules
                     ) -> Iterator[tuple[str, CustomerFunnel]]:
    """The touched customers' funnels from their `from_cycle` on. A resumed customer's read
    holds their messages from the restart cycle's opening time on, and their campaign messages
    of the `CAMPAIGN_REPLY_WINDOW` before it (the only ones the cycles after can still use)."""
    starts = {key: (cycle, lead, phone) for key, cycle, lead, phone in conn.execute(
        "SELECT customer_key, from_cycle, restart_lead, prev_phone FROM touched_customers "
        "WHERE from_cycle > 1")}
    window = int(CAMPAIGN_REPLY_WINDOW.total_seconds())
    where = f"""JOIN touched_customers t ON t.customer_key = m.customer_key
                WHERE t.restart_at IS NULL OR m.sent_at >= t.restart_at
                   OR (m.sent_at >= t.restart_at - interval '{window} seconds'
                       AND m.direction = 'outbound' AND m.channel_hint = 'campaign_blast')"""
    lost: list[str] = []
    # per touched customer, one range of the (customer_key, sent_at) index, in customer order
    # (no sort); on a large backlog the planner would rather hash-join a scan of the whole
    # table, which costs more with every batch as the table grows
    conn.execute("SET LOCAL enable_hashjoin = off")
    conn.execute("SET LOCAL enable_mergejoin = off")
    for key, msgs in _cycle_rows(conn, where):
        start = starts.get(key)
        if start is None:
            yield key, customer_funnel(key, msgs, rules)
            continue
        cycle, opening_lead, phone = start
        msgs.sort(key=lambda m: m.order)
        at = next((i for i, m in enumerate(msgs) if m.direction == "inbound"
                   and lead_id(key, m) == opening_lead), None)
        if at is None:  # the stored cycle's opening is gone: recompute this one from the start
            lost.append(key)
            continue
        campaigns = [m for m in msgs[:at] if m.is_campaign]
        resume = Resume(cycle, phone, campaigns[-1] if campaigns else None)
        yield key, customer_funnel(key, msgs[at:], rules, resume)
    conn.execute("SET LOCAL enable_hashjoin TO DEFAULT")
    conn.execute("SET LOCAL enable_mergejoin TO DEFAULT")
    if lost:
        log.warning("funnel: %d customers' stored cycles lack their opening message; "
                    "recomputed from all their messages", len(lost))
        conn.execute("UPDATE touched_customers SET from_cycle = 1, restart_at = NULL "
                     "WHERE customer_key = ANY(%s)", (lost,))
        for key, msgs in _cycle_rows(conn, "WHERE m.customer_key = ANY(%s)", (lost,)):
            yield key, customer_funnel(key, msgs, rules)


def _merge_funnel(conn: psycopg.Connection, leads: list[tuple], payments: list[tuple],
                  scope: str) -> None:
    """Replace the funnel rows of the customers in `scope` (a table of customer keys, or
    'all') with `leads`, touching only the rows whose values changed."""
    _staging_like(conn, "stage_funnel", "funnel", FUNNEL_COLUMNS)
    _staging_like(conn, "stage_tx", "transactions", TX_COLUMNS)
    _copy(conn, "stage_funnel", FUNNEL_COLUMNS, leads)
    _copy(conn, "stage_tx", TX_COLUMNS, payments)
    in_scope = ("TRUE" if scope == "all" else
                f"EXISTS (SELECT 1 FROM {scope} x WHERE x.customer_key = f.customer_key "
                "AND f.cycle >= x.from_cycle)")
    # the transactions of the leads recomputed (before their rows may go)
    if scope == "all":
        conn.execute("DELETE FROM transactions")
    else:
        conn.execute(f"DELETE FROM transactions t USING funnel f "
                     f"WHERE t.lead_id = f.lead_id AND {in_scope}")
    conn.execute(f"""DELETE FROM funnel f WHERE {in_scope}
                       AND NOT EXISTS (SELECT 1 FROM stage_funnel s WHERE s.lead_id = f.lead_id)""")
    merged = (*FUNNEL_COLUMNS, "campaign")
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in merged if c != "lead_id")
    changed = " OR ".join(f"funnel.{c} IS DISTINCT FROM EXCLUDED.{c}"
                          for c in merged if c != "lead_id")
    cols = ", ".join(FUNNEL_COLUMNS)
    conn.execute(f"""INSERT INTO funnel ({cols}, campaign)
                     SELECT {cols}, CASE WHEN s.campaign_id IS NOT NULL OR s.ad_id IS NOT NULL
                                         THEN {campaigns.resolved("s")} END
                       FROM stage_funnel s
                     ON CONFLICT (lead_id) DO UPDATE SET {updates}, updated_at = now()
                     WHERE {changed}""")
    tx_cols = ", ".join(TX_COLUMNS)
    conn.execute(f"INSERT INTO transactions ({tx_cols}) SELECT {tx_cols} FROM stage_tx")


def compact_summary(conn: psycopg.Connection) -> int:
    """Fold the report summary's loose rows (sql/009) into one row per group and day, sums
    unchanged, in a transaction of its own; returns the days folded (-1 when another compaction
    was running). Writers never wait on it; readers are right before and after."""
    with conn.transaction():
        return conn.execute("SELECT funnel_summary_compact()").fetchone()[0]


def resolve_campaigns(conn: psycopg.Connection, refs: str, customers: str | None = None) -> int:
    """Re-resolve `funnel.campaign` of the rows whose campaign_id or ad_id is one of the refs
    in the table `refs` (kind, ref) — the refs a batch added or an import changed — writing
    only the rows whose campaign changes (with `updated_at`); `customers`: only the rows of
    the customers in that table (whose locks the caller holds). Plain UPDATEs of `funnel`, as
    its other writes. Returns the rows updated."""
    scope = (f"AND f.customer_key IN (SELECT customer_key FROM {customers})"
             if customers else "")
    return conn.execute(f"""
        UPDATE funnel f SET campaign = x.campaign, updated_at = now()
          FROM (SELECT a.lead_id, {campaigns.resolved("a")} AS campaign
                  FROM (SELECT f2.lead_id, f2.campaign_id, f2.ad_id FROM funnel f2
                          JOIN {refs} r ON r.kind = 'message' AND f2.campaign_id = r.ref
                        UNION
                        SELECT f2.lead_id, f2.campaign_id, f2.ad_id FROM funnel f2
                          JOIN {refs} r ON r.kind = 'ad' AND f2.ad_id = r.ref) a) x
         WHERE f.lead_id = x.lead_id AND f.campaign IS DISTINCT FROM x.campaign {scope}
        """).rowcount


def import_campaigns(conn: psycopg.Connection, entries: Sequence[CampaignEntry]
                     ) -> campaigns.ImportResult:
    """An import of campaign entries (engine.campaigns) in a transaction of its own: the
    registry updated (`store.campaigns.apply_entries`) and the funnel rows whose campaign
    changed re-resolved. It holds the writers' lock exclusively, as `rebuild` does: drains
    wait for it (an import is a rare operator action that may re-point refs the leads of any
    customer use, and it takes a second or two). Idempotent."""
    with conn.transaction():
        lock_writers(conn, exclusive=True)
        named, added, moved, removed = campaigns.apply_entries(conn, entries)
        leads = resolve_campaigns(conn, "changed_campaign_refs")
    return campaigns.ImportResult(len(entries), named, added, moved, removed, leads)


def rebuild(conn: psycopg.Connection, tz: ZoneInfo, rules: CycleRules = DEFAULT_RULES) -> int:
    """Recompute the whole funnel from all classified messages; returns the number of leads."""
    funnels = ((key, customer_funnel(key, msgs, rules))
               for key, msgs in _cycle_rows(conn, "WHERE m.customer_key IS NOT NULL"))
    leads, payments, _ = _funnel_rows(funnels, tz)
    _merge_funnel(conn, leads, payments, scope="all")
    return len(leads)


_CLASS_COLUMNS = ("stages", "keywords", "opening_keyword", "opening_channel", "payment",
                  "amount", "requested_date")
"""What classification writes on a message (with `keyword_version`)."""


def reclassify(conn: psycopg.Connection, classifier: Classifier, start: date, end: date,
               *, rules: CycleRules = DEFAULT_RULES, recompute: bool = True,
               classified_before: datetime | None = None) -> BatchResult:
    """Re-classify the stored messages of [start, end] (business dates) with `classifier`'s
    keywords and rules and bring the funnel of their customers up to date (unless
    `recompute` is False: a caller that rebuilds the whole funnel afterwards).

    Only messages whose classification changes are written (and those whose keyword version
    changes, which is all of them after a keyword change), and only the customers of messages
    whose classification changed are recomputed: the funnel is a function of the messages and
    their classification, so the others' rows could not change. `classified_before` leaves
    out messages classified at or after that time (a backfill's own restored messages,
    classified moments ago with the same keywords). `received`: the messages classified;
    `changed`: those whose classification changed."""
    t0 = time.perf_counter()
    since = "" if classified_before is None else "AND classified_at < %s"
    params = (start, end) if classified_before is None else (start, end, classified_before)
    with conn.cursor(binary=True) as cur:
        rows = cur.execute("SELECT id, text, direction, sent_at FROM classified_messages "
                           f"WHERE message_date BETWEEN %s AND %s {since}", params).fetchall()
    columns = ("id", *_CLASS_COLUMNS, "keyword_version")
    _staging_like(conn, "stage_class", "classified_messages", columns)

    def gen() -> Iterator[tuple]:
        for pk, text, direction, sent_at in rows:
            c = classifier.classify(text, direction, sent_at)
            yield (pk, _text_array(c.stages), _text_array(c.keywords), c.opening_keyword,
                   c.opening_channel, c.payment, c.amount, c.requested_date, c.keyword_version)

    _copy(conn, "stage_class", columns, gen())
    result = BatchResult(received=len(rows))
    rows.clear()  # the texts are not needed any more
    t1 = time.perf_counter()
    _empty_touched(conn)
    stored = ", ".join(f"m.{c}" for c in _CLASS_COLUMNS)
    fresh = ", ".join(f"s.{c}" for c in _CLASS_COLUMNS)
    _empty_temp_table(conn, "class_changes", "(id bigint PRIMARY KEY, changed boolean NOT NULL)")
    conn.execute(f"""INSERT INTO class_changes (id, changed)
                     SELECT m.id, ({stored}) IS DISTINCT FROM ({fresh})
                       FROM stage_class s JOIN classified_messages m ON m.id = s.id
                      WHERE ({stored}, m.keyword_version) IS DISTINCT FROM
                            ({fresh}, s.keyword_version)""")
    # rows locked in id order, as every writer that updates stored messages locks them
    conn.execute("SELECT 1 FROM classified_messages WHERE id IN (SELECT id FROM class_changes) "
                 "ORDER BY id FOR UPDATE")
    updates = ", ".join(f"{c} = s.{c}" for c in (*_CLASS_COLUMNS, "keyword_version"))
    result.changed = conn.execute(
        f"""WITH upd AS (
               UPDATE classified_messages m SET {updates}, classified_at = now()
                 FROM stage_class s JOIN class_changes d ON d.id = s.id
                WHERE m.id = s.id
            RETURNING m.customer_key, m.sent_at, d.changed),
           touched AS ({_TOUCH.format(rows="(SELECT * FROM upd WHERE changed) AS c")})
           SELECT count(*) FILTER (WHERE changed) FROM upd""").fetchone()[0]
    t2 = time.perf_counter()
    if recompute:
        _recompute_touched(conn, classifier.tz, rules, result)
    result.seconds = {"classify": t1 - t0, "update": t2 - t1,
                      "funnel": time.perf_counter() - t2}
    return result


def day_counts(conn: psycopg.Connection, days: Iterable[date]) -> dict[date, dict[str, int]]:
    """Per business day: its stored messages (`messages`) and how many of them carry each stage
    (`opening`, `booking`, `transaction`); days without messages are left out. One index scan
    of those days."""
    stage_counts = ", ".join(f"count(*) FILTER (WHERE '{stage}' = ANY(stages))"
                             for stage in STAGES)
    rows = conn.execute(f"SELECT message_date, count(*), {stage_counts} FROM classified_messages "
                        "WHERE message_date = ANY(%s) GROUP BY 1", (sorted(set(days)),))
    return {day: {"messages": n, **dict(zip(STAGES, stages))} for day, n, *stages in rows}


def store_statuses(conn: psycopg.Connection, statuses: Sequence[StatusEvent]) -> int:
    if not statuses:
        return 0
    columns = ("source", "message_id", "status", "recipient", "status_at", "errors", "raw_key")
    _staging_like(conn, "stage_status", "message_statuses", columns)
    _copy(conn, "stage_status", columns,
          (_row((s.source, s.message_id, s.status, s.recipient, s.status_at, _json(s.errors),
                 s.raw_key)) for s in statuses))
    return conn.execute("INSERT INTO message_statuses SELECT * FROM stage_status "
                        "ON CONFLICT DO NOTHING").rowcount


def store_dead_letters(conn: psycopg.Connection,
                       items: Sequence[tuple[str, DeadLetter]]) -> int:
    """Dead letters with their stream ids (idempotent on the stream id)."""
    if not items:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (stream_id, source, reason, detail, message_id, raw_key,"
            " raw_line) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [_row((sid, d.source, d.reason, d.detail, d.message_id, d.raw_key, d.raw_line))
             for sid, d in items])
    return len(items)
