"""The engine on Postgres: idempotent, incremental, order-independent (property-based)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from funnel_ingest.simulate.conversations import simulate
from funnel_ingest.store import funnel as store
from tests.support import empty_engine_tables, funnel_rows, transaction_rows

SIM = simulate(40, seed=11, start=datetime(2025, 9, 1, tzinfo=timezone.utc), days=60)
MESSAGES = [s.message for s in SIM.messages]


def run_batches(conn, classifier, batches) -> int:
    """Process each batch in its own transaction; how many customer recomputes resumed from a
    later cycle."""
    resumed = 0
    for batch in batches:
        with conn.transaction():
            resumed += store.process_messages(conn, batch, classifier).resumed
    return resumed


def assert_funnel_is(conn, expected) -> None:
    """The funnel and transaction rows are `expected` (those of `in_order_funnel`)."""
    assert funnel_rows(conn) == expected[0]
    assert transaction_rows(conn) == expected[1]


@pytest.fixture(scope="module")
def in_order_funnel(settings, classifier):
    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        empty_engine_tables(conn)
        run_batches(conn, classifier, [MESSAGES])
        rows, txs = funnel_rows(conn), transaction_rows(conn)
        conn.rollback()
        return rows, txs


def test_one_in_order_batch_gives_a_funnel_with_every_channel(funnel_db, classifier, in_order_funnel):
    rows, _ = in_order_funnel
    assert len(rows) >= 40
    assert {r[2] for r in rows} >= {"ads", "website", "campaign_blast", "direct"}


def test_processing_the_same_batch_twice_changes_nothing(funnel_db, classifier, in_order_funnel):
    run_batches(funnel_db, classifier, [MESSAGES])
    before = funnel_db.execute("SELECT lead_id, updated_at FROM funnel ORDER BY 1").fetchall()
    with funnel_db.transaction():
        res = store.process_messages(funnel_db, MESSAGES, classifier)
    assert res.inserted == 0 and res.duplicates == len(MESSAGES)
    assert funnel_db.execute("SELECT lead_id, updated_at FROM funnel ORDER BY 1").fetchall() == before
    assert funnel_rows(funnel_db) == in_order_funnel[0]


def test_incremental_batches_equal_a_full_rebuild(funnel_db, classifier, in_order_funnel):
    shuffled = MESSAGES[:]
    random.Random(3).shuffle(shuffled)
    run_batches(funnel_db, classifier, [shuffled[i:i + 37] for i in range(0, len(shuffled), 37)])
    incremental = funnel_rows(funnel_db)
    with funnel_db.transaction():
        store.rebuild(funnel_db, classifier.tz)
    assert funnel_rows(funnel_db) == incremental == in_order_funnel[0]


@hsettings(max_examples=20, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_permutation_with_duplicates_in_any_batches_gives_the_same_funnel(
        funnel_db, classifier, in_order_funnel, data):
    empty_engine_tables(funnel_db)
    rng = random.Random(data.draw(st.integers(0, 2**32), label="shuffle seed"))
    deliveries = MESSAGES + [m for m in MESSAGES if rng.random() < 0.2]  # redeliveries
    rng.shuffle(deliveries)
    cuts = sorted(data.draw(st.lists(st.integers(1, len(deliveries) - 1), max_size=8,
                                     unique=True)))
    bounds = [0, *cuts, len(deliveries)]
    run_batches(funnel_db, classifier, [deliveries[a:b] for a, b in zip(bounds, bounds[1:]) if b > a])
    assert_funnel_is(funnel_db, in_order_funnel)


def test_batches_in_time_order_resume_from_the_current_cycle(funnel_db, classifier,
                                                              in_order_funnel):
    # a drain keeping up: each batch holds the next minutes of traffic, so repeat customers'
    # recomputes start at their latest cycle, reading only that cycle's messages
    resumed = run_batches(funnel_db, classifier,
                          [MESSAGES[i:i + 25] for i in range(0, len(MESSAGES), 25)])
    assert resumed > 0
    assert_funnel_is(funnel_db, in_order_funnel)


@hsettings(max_examples=15, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_late_messages_reaching_back_into_closed_cycles_give_the_same_funnel(
        funnel_db, classifier, in_order_funnel, data):
    # on-time traffic in time order, then messages held back (a provider's late retries, a
    # backfill of past days) that fall into cycles long closed, some before a cycle's opening
    empty_engine_tables(funnel_db)
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    share = data.draw(st.floats(0.01, 0.4), label="late share")
    late = [m for m in MESSAGES if rng.random() < share]
    held = {id(m) for m in late}
    on_time = [m for m in MESSAGES if id(m) not in held]
    size = data.draw(st.integers(5, 200), label="batch size")
    rng.shuffle(late)
    batches = [on_time[i:i + size] for i in range(0, len(on_time), size)]
    batches += [late[i:i + size] for i in range(0, len(late), size)]
    run_batches(funnel_db, classifier, batches)
    assert_funnel_is(funnel_db, in_order_funnel)


def test_agent_message_before_its_room_is_known_joins_the_customer_later(funnel_db, classifier):
    from dataclasses import replace
    room_msgs = [m for m in MESSAGES if m.room_id and m.source == "generic"]
    agent = next(m for m in room_msgs if m.direction == "outbound")
    customer_msgs = [m for m in room_msgs if m.room_id == agent.room_id and m.direction == "inbound"]
    waiting = replace(agent, customer_key=None)
    run_batches(funnel_db, classifier, [[waiting]])
    assert funnel_db.execute("SELECT customer_key FROM classified_messages").fetchone()[0] is None
    run_batches(funnel_db, classifier, [customer_msgs])
    keys = {k for (k,) in funnel_db.execute("SELECT DISTINCT customer_key FROM classified_messages")}
    assert keys == {customer_msgs[0].customer_key}


def test_a_late_message_at_the_same_time_as_an_opening_but_before_it_reaches_back(
        funnel_db, classifier):
    # messages are ordered by (sent_at, source, message_id, room key): "m4" at the very time
    # of cycle 2's opening "m5" belongs to cycle 1, so the recompute must start before cycle 2
    from datetime import timedelta

    from funnel_ingest.messages import NormalizedMessage

    t0 = datetime(2025, 9, 1, 3, tzinfo=timezone.utc)
    phone = "+6281234500001"

    def m(mid: str, at, text: str) -> NormalizedMessage:
        return NormalizedMessage(source="whatsapp", message_id=mid, sent_at=at,
                                 direction="inbound", sender_type="customer", text=text,
                                 customer_key=phone, phone=phone, medium="whatsapp")

    second = t0 + timedelta(days=31)
    run_batches(funnel_db, classifier, [[m("m1", t0, "halo kak, mau tanya paket")],
                                        [m("m5", second, "halo kak, mau tanya lagi")]])
    assert [r[0] for r in funnel_db.execute("SELECT cycle FROM funnel ORDER BY 1")] == [1, 2]
    with funnel_db.transaction():
        store.process_messages(funnel_db, [m("m4", second, "sudah transfer 500rb ya kak")],
                               classifier)
    incremental = funnel_rows(funnel_db)
    with funnel_db.transaction():
        store.rebuild(funnel_db, classifier.tz)
    assert funnel_rows(funnel_db) == incremental
    paid = funnel_db.execute("SELECT cycle, transaction_at FROM funnel ORDER BY 1").fetchall()
    assert paid == [(1, second), (2, None)]


def test_a_drain_of_many_batches_classifies_ahead_in_a_worker_and_gives_the_same_funnel(
        funnel_db, classifier, in_order_funnel, settings, r):
    from funnel_ingest.store.drain import drain_range

    for m in MESSAGES:
        r.xadd("funnel:messages", m.to_fields())
    r.xadd("funnel:messages", {"source": "whatsapp", "message_id": "broken"})  # a bad entry
    rep = drain_range(funnel_db, r, "funnel:messages", kind="messages", classifier=classifier,
                      after_id="0-0", batch_size=40, rules=settings.cycle_rules)
    assert rep.entries == len(MESSAGES) + 1 and rep.batches > 3
    assert rep.pipelined == rep.batches - 1          # every batch after the first, ahead
    assert rep.bad_entries == 1 and rep.stages["classify"] > 0
    assert r.xlen("funnel:messages") == 0
    assert_funnel_is(funnel_db, in_order_funnel)
    assert funnel_db.execute("SELECT count(*) FROM dead_letters WHERE reason = "
                             "'bad_stream_entry'").fetchone()[0] == 1


def test_a_batch_made_ready_elsewhere_stores_what_the_streamed_path_stores_nul_removed(
        funnel_db, classifier, in_order_funnel):
    """`message_copy` (the drain's worker formats a batch as COPY data) and `process_copy` give
    the rows and funnel of `process_messages`; a text holding NUL (psycopg refuses it in COPY
    data) costs the batch a second formatting, not the batch."""
    from dataclasses import replace

    nul = replace(MESSAGES[0], message_id="nul-in-text", text="sudah tf\x00 500rb ya kak")
    data, count, days = store.message_copy(funnel_db.cursor(), [*MESSAGES, nul], classifier)
    assert count == len(MESSAGES) + 1 and b"\x00" not in data
    assert days == {m.sent_at.astimezone(classifier.tz).date() for m in [*MESSAGES, nul]}
    with funnel_db.transaction():
        res = store.process_copy(funnel_db, data, count, days, classifier.tz)
    assert res.inserted == count and res.received == count
    assert funnel_db.execute("SELECT text FROM classified_messages WHERE message_id = "
                             "'nul-in-text'").fetchone()[0] == "sudah tf 500rb ya kak"
    columns = ", ".join(c for c in store.MESSAGE_COLUMNS if c != "text")
    ready = funnel_db.execute(f"SELECT {columns} FROM classified_messages "
                              "WHERE message_id <> 'nul-in-text' ORDER BY 1, 2, 3").fetchall()
    empty_engine_tables(funnel_db)
    run_batches(funnel_db, classifier, [MESSAGES])
    streamed = funnel_db.execute(f"SELECT {columns} FROM classified_messages "
                                 "ORDER BY 1, 2, 3").fetchall()
    assert ready == streamed


def test_reclassify_writes_and_recomputes_only_the_messages_whose_classification_changed(
        funnel_db, classifier, in_order_funnel):
    from funnel_ingest.engine.classify import Classifier

    run_batches(funnel_db, classifier, [MESSAGES])
    days = sorted({m.sent_at.astimezone(classifier.tz).date() for m in MESSAGES})
    stamps = funnel_db.execute("SELECT id, classified_at FROM classified_messages").fetchall()
    with funnel_db.transaction():
        same = store.reclassify(funnel_db, classifier, days[0], days[-1])
    assert same.received == len(MESSAGES) and same.changed == 0 and same.customers == 0
    assert funnel_db.execute("SELECT id, classified_at FROM classified_messages"
                             ).fetchall() == stamps                 # nothing written
    # without the booking keywords: the booking stages go, and only those customers change
    fewer = Classifier([k for k in classifier.keywords if k.stage != "booking"], "no-booking",
                       classifier.tz)
    booked = {r[0] for r in funnel_db.execute(
        "SELECT DISTINCT customer_key FROM classified_messages WHERE 'booking' = ANY(stages)")}
    with funnel_db.transaction():
        res = store.reclassify(funnel_db, fewer, days[0], days[-1])
    assert 0 < res.changed < len(MESSAGES) and res.customers == len(booked)
    assert funnel_db.execute("SELECT count(*) FROM classified_messages WHERE keyword_version "
                             "<> 'no-booking'").fetchone()[0] == 0  # every version recorded
    incremental = funnel_rows(funnel_db), transaction_rows(funnel_db)
    with funnel_db.transaction():
        store.rebuild(funnel_db, classifier.tz)
    assert (funnel_rows(funnel_db), transaction_rows(funnel_db)) == incremental
    assert all(r[4] is None for r in incremental[0])  # no booking date is left


def test_keyword_arrays_are_written_as_literals_postgres_reads_back_exactly(funnel_db):
    """The drain writes a message's keywords as a ready-made `text[]` literal (one per distinct
    tuple): whatever a keyword holds (spaces, quotes, backslashes, commas, braces, the word
    NULL), Postgres reads back the same strings."""
    for keywords in [(), ("promo",), ("harga paket", 'kata "kutip"', "back\\slash", "a,b",
                                      "{kurung}", "NULL", "", "emoji 😊")]:
        literal = store._text_array(keywords)
        assert funnel_db.execute("SELECT %s::text[]", (literal,)).fetchone()[0] == list(keywords)
