"""The outbox is written by the funnel's own transaction (triggers on `funnel`): the events of
Click-to-WhatsApp leads, once each, whatever writes the funnel and however often."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv
from funnel_ingest.ingest.providers import whatsapp
from funnel_ingest.store import funnel as store
from tests.conversions.conftest import ctwa, outbox_rows, recent, wa_body


def lead_of(conn, phone: str) -> tuple:
    return conn.execute("SELECT lead_id, lead_at, booking_at, transaction_at, transaction_value "
                        "FROM funnel WHERE customer_key = %s ORDER BY cycle", ("+" + phone,)
                        ).fetchall()


def test_a_click_to_whatsapp_lead_queues_lead_booking_and_purchase_once(conv_db, ingest):
    c = ctwa(recent(), book=timedelta(minutes=10), pay=timedelta(minutes=40))
    ingest(c.bodies[0])  # the ad's first message: the lead
    [(lead_id, lead_at, *_)] = lead_of(conv_db, c.phone)
    assert outbox_rows(conv_db) == [
        (lead_id, "LeadSubmitted", f"{lead_id}:LeadSubmitted", lead_at, c.clid, None, "pending")]

    ingest(*c.bodies[1:])  # later drains: the booking, then the transfer of 1,5jt
    [(_, _, booking_at, transaction_at, value)] = lead_of(conv_db, c.phone)
    assert value == Decimal(1_500_000)
    assert outbox_rows(conv_db) == [
        (lead_id, "LeadSubmitted", f"{lead_id}:LeadSubmitted", lead_at, c.clid, None, "pending"),
        (lead_id, "Purchase", f"{lead_id}:Purchase", transaction_at, c.clid, value, "pending"),
        (lead_id, "Schedule", f"{lead_id}:Schedule", booking_at, c.clid, None, "pending")]


def test_redelivery_and_recomputes_never_queue_an_event_twice(conv_db, ingest, settings,
                                                              classifier):
    c = ctwa(recent(), book=timedelta(minutes=5), pay=timedelta(minutes=30))
    ingest(*c.bodies)
    before = conv_db.execute("SELECT id, event_id, queued_at, updated_at FROM conversion_events "
                             "ORDER BY id").fetchall()
    assert len(before) == 3
    ingest(*c.bodies)  # the provider delivers everything again
    with conv_db.transaction():
        store.rebuild(conv_db, settings.tz)
    day = recent().astimezone(settings.tz).date()
    with conv_db.transaction():
        store.reclassify(conv_db, classifier, day - timedelta(days=1), day + timedelta(days=1))
    assert conv_db.execute("SELECT id, event_id, queued_at, updated_at FROM conversion_events "
                           "ORDER BY id").fetchall() == before


def test_only_leads_with_a_click_id_queue_events(conv_db, ingest):
    organic = ctwa(recent(), book=timedelta(minutes=5), referral=False)
    status_ad = ctwa(recent(), book=timedelta(minutes=5), clid=False)  # a WhatsApp Status ad
    ingest(*organic.bodies, *status_ad.bodies)
    assert [row[0] for row in conv_db.execute(
        "SELECT channel FROM funnel ORDER BY customer_key")] == ["direct", "ads"]
    assert outbox_rows(conv_db) == []


def test_a_payment_without_an_amount_queues_its_purchase_once_the_value_is_known(conv_db,
                                                                                 ingest):
    c = ctwa(recent(), pay=timedelta(minutes=20), amount="")  # "Sudah transfer ya kak"
    ingest(*c.bodies)
    assert [row[1] for row in outbox_rows(conv_db)] == ["LeadSubmitted"]
    later = wa_body(c.phone, "wamid.amount", recent() + timedelta(minutes=25),
                    "Sudah transfer 750rb ya kak, ini buktinya")
    ingest(later)
    [(lead_id, _, _, transaction_at, value)] = lead_of(conv_db, c.phone)
    purchase = [row for row in outbox_rows(conv_db) if row[1] == "Purchase"]
    assert purchase == [(lead_id, "Purchase", f"{lead_id}:Purchase", transaction_at, c.clid,
                         Decimal(750_000), "pending")]


def test_a_rolled_back_funnel_write_queues_nothing(conv_db, classifier):
    c = ctwa(recent(), book=timedelta(minutes=5))
    messages = [m for body in c.bodies for m in whatsapp.parse(body).messages]
    with pytest.raises(RuntimeError), conv_db.transaction():
        store.process_messages(conv_db, messages, classifier)
        assert len(outbox_rows(conv_db)) == 2  # visible inside the funnel's transaction
        raise RuntimeError("the batch fails after the funnel was written")
    assert outbox_rows(conv_db) == []
    with conv_db.transaction():
        store.process_messages(conv_db, messages, classifier)
    assert [row[1] for row in outbox_rows(conv_db)] == ["LeadSubmitted", "Schedule"]


def test_a_vanished_lead_cancels_its_unsent_events_and_keeps_what_meta_has(conv_db, ingest):
    start = recent()
    c = ctwa(start, book=timedelta(minutes=10))
    ingest(*c.bodies)
    [(lead_id, *_)] = lead_of(conv_db, c.phone)
    conv_db.execute("UPDATE conversion_events SET status = 'sent' WHERE event_name = "
                    "'LeadSubmitted'")  # as a delivery would have recorded it
    # a message of the same customer from an hour before the ad arrives late: the cycle opens
    # there, so the ad's message is no longer an opening and its lead is gone
    ingest(wa_body(c.phone, "wamid.earlier", start - timedelta(hours=1),
                   "Permisi kak, mau tanya harga"))
    [(new_lead, *_)] = lead_of(conv_db, c.phone)
    assert new_lead != lead_id
    assert [(row[0], row[1], row[6]) for row in outbox_rows(conv_db)] == [
        (lead_id, "LeadSubmitted", "sent"), (lead_id, "Schedule", "cancelled")]


def test_a_stage_taken_away_cancels_its_event_and_its_return_queues_it_again(conv_db, ingest,
                                                                            settings):
    c = ctwa(recent(), book=timedelta(minutes=10))
    ingest(*c.bodies)
    full = list(load_csv(default_csv_path()))
    no_booking = Classifier([k for k in full if k.stage != "booking"], "no-booking", settings.tz)
    day = recent().astimezone(settings.tz).date()
    with conv_db.transaction():
        store.reclassify(conv_db, no_booking, day - timedelta(days=1), day + timedelta(days=1))
    assert [(row[1], row[6]) for row in outbox_rows(conv_db)] == [
        ("LeadSubmitted", "pending"), ("Schedule", "cancelled")]
    with conv_db.transaction():
        store.reclassify(conv_db, Classifier(full, "full", settings.tz),
                         day - timedelta(days=1), day + timedelta(days=1))
    [(_, _, booking_at, _, _)] = lead_of(conv_db, c.phone)
    assert [(row[1], row[3], row[6]) for row in outbox_rows(conv_db)
            if row[1] == "Schedule"] == [("Schedule", booking_at, "pending")]
