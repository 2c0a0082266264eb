"""The campaign registry filled by the drain: provider payloads posted to the real API, drained
into Postgres, each lead's `funnel.campaign` resolved through what the payloads named."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import psycopg
import pytest

from funnel_ingest.engine.campaigns import CampaignEntry
from funnel_ingest.messages import NormalizedMessage
from funnel_ingest.store import funnel as store
from tests.support import (
    drain_all,
    funnel_rows,
    payload,
    post_campaign_payloads,
    post_samples,
)

BUTTON_CUSTOMER = "+6285712345678"      # whatsapp_button.json: replies to the template echo
AD_CUSTOMER = "+6281234567890"          # whatsapp_referral.json
QONTAK_CUSTOMER = "+628117661000"       # qontak_broadcast.json, then qontak_customer.json
GENERIC_CUSTOMER = "+6281298765432"     # generic_campaign.json
BROADCAST = "b7e2c0d4-5a61-4f0e-8d3b-1c9a2f6e4d85"


def lead_campaigns(conn: psycopg.Connection) -> dict[str, tuple[str | None, str | None]]:
    """customer -> (campaign_id, campaign) of their (only) lead."""
    return {k: (cid, c) for k, cid, c in conn.execute(
        "SELECT customer_key, campaign_id, campaign FROM funnel")}


def registry_rows(conn: psycopg.Connection) -> dict[str, tuple]:
    return {c: tuple(rest) for c, *rest in conn.execute(
        "SELECT campaign, name, name_source, kind, source, first_seen_at IS NOT NULL "
        "FROM campaigns")}


def test_the_drain_learns_templates_broadcasts_ads_and_labels_and_resolves_each_lead(
        api, r, settings, funnel_db, classifier):
    post_campaign_payloads(api)
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    leads = lead_campaigns(funnel_db)
    qontak_campaign_message = "0c5f4a9e-7d21-4b8e-9f3a-2e6d1c8b7a90"
    assert leads == {
        # the button reply's campaign_id is the template message's wamid: named by the echo
        BUTTON_CUSTOMER: ("wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
                          "template:promo_desember"),
        AD_CUSTOMER: (None, "ad:120226305854810726"),
        # the reply to the broadcast message: its campaign_id is that message's Qontak id
        QONTAK_CUSTOMER: (qontak_campaign_message, f"broadcast:{BROADCAST}"),
        GENERIC_CUSTOMER: ("promo-oktober", "promo-oktober"),
    }
    assert registry_rows(funnel_db) == {
        "template:promo_desember": ("promo_desember", "whatsapp", "template", "whatsapp", True),
        "ad:120226305854810726": ("Chat with us", "whatsapp", "ad", "whatsapp", True),
        f"broadcast:{BROADCAST}": ("Promo 12.12 Bali", "qontak", "broadcast", "qontak", True),
        "promo-oktober": ("Promo Oktober Lombok", "generic", "broadcast", "generic", True),
    }
    refs = set(funnel_db.execute("SELECT kind, ref, campaign, via_kind FROM campaign_refs"))
    assert ("message", qontak_campaign_message, f"broadcast:{BROADCAST}", "broadcast") in refs
    assert ("broadcast", BROADCAST, f"broadcast:{BROADCAST}", None) in refs
    # the broadcast's template is not a campaign of its own: its messages are the broadcast's
    assert not any(kind == "template" and ref == "promo_1212" for kind, ref, _, _ in refs)


def test_a_template_message_drained_after_the_reply_still_names_the_lead(
        api, r, settings, funnel_db, classifier):
    assert api.whatsapp(payload("whatsapp_button.json")).status_code == 200
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    wamid = "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    assert lead_campaigns(funnel_db) == {BUTTON_CUSTOMER: (wamid, wamid)}   # unknown: the id
    assert api.whatsapp(payload("whatsapp_template_echo.json")).status_code == 200
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    assert lead_campaigns(funnel_db) == {BUTTON_CUSTOMER: (wamid, "template:promo_desember")}


def test_redelivered_payloads_change_nothing_and_a_rebuild_resolves_the_same(
        api, r, settings, funnel_db, classifier):
    post_campaign_payloads(api)
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    before = (funnel_rows(funnel_db), registry_rows(funnel_db),
              funnel_db.execute("SELECT lead_id, updated_at FROM funnel ORDER BY 1").fetchall())
    r.flushdb()   # the API's dedupe marks gone: the same bodies are appended again
    post_campaign_payloads(api)
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    assert (funnel_rows(funnel_db), registry_rows(funnel_db), funnel_db.execute(
        "SELECT lead_id, updated_at FROM funnel ORDER BY 1").fetchall()) == before
    with funnel_db.transaction():
        store.rebuild(funnel_db, settings.tz)
    assert funnel_rows(funnel_db) == before[0]


def qontak_blast(n: int, broadcast: dict | None, at: datetime) -> list[NormalizedMessage]:
    """A Qontak campaign message to customer n and their reply a minute later."""
    doc = json.loads(payload("qontak_broadcast.json"))
    doc.update(id=f"blast-{n}", created_at=at.isoformat(),
               room={**doc["room"], "id": f"room-{n}", "account_uniq_id": f"62811766{n:04d}"})
    doc.pop("message_template")
    if broadcast is None:
        doc.pop("broadcast")
    else:
        doc["broadcast"] = broadcast
    reply = json.loads(payload("qontak_customer.json"))
    reply.update(id=f"reply-{n}", created_at=(at + timedelta(minutes=1)).isoformat(),
                 room={**reply["room"], "id": f"room-{n}", "account_uniq_id": f"62811766{n:04d}"})
    from funnel_ingest.ingest import providers
    return [*providers.parse("qontak", json.dumps(doc).encode()).messages,
            *providers.parse("qontak", json.dumps(reply).encode()).messages]


def test_a_new_payload_name_replaces_an_older_payload_name_but_never_an_imported_one(
        funnel_db, classifier):
    at = datetime.fromisoformat("2025-10-01T03:00:00+00:00")
    with funnel_db.transaction():
        store.process_messages(funnel_db, qontak_blast(1, {"id": "b1", "name": "Promo v1"}, at),
                               classifier)
    with funnel_db.transaction():
        store.process_messages(funnel_db, qontak_blast(2, {"id": "b1", "name": "Promo v2"},
                                                       at + timedelta(hours=2)), classifier)
    assert registry_rows(funnel_db)["broadcast:b1"][:2] == ("Promo v2", "qontak")
    first, last = funnel_db.execute("SELECT first_seen_at, last_seen_at FROM campaigns").fetchone()
    assert (first, last) == (at, at + timedelta(hours=2))
    store.import_campaigns(funnel_db, [CampaignEntry("broadcast", "b1", "Promo Bali 12.12")])
    with funnel_db.transaction():
        store.process_messages(funnel_db, qontak_blast(3, {"id": "b1", "name": "Promo v3"},
                                                       at + timedelta(hours=4)), classifier)
    rows = registry_rows(funnel_db)
    assert list(rows) == ["Promo Bali 12.12"]          # the broadcast's campaign, renamed
    assert rows["Promo Bali 12.12"][:2] == ("Promo Bali 12.12", "import")
    assert {c for _, c in lead_campaigns(funnel_db).values()} == {"Promo Bali 12.12"}


def test_an_unnamed_qontak_campaign_message_stays_an_unknown_id(funnel_db, classifier):
    at = datetime.fromisoformat("2025-10-01T03:00:00+00:00")
    with funnel_db.transaction():
        store.process_messages(funnel_db, qontak_blast(1, None, at), classifier)
    assert lead_campaigns(funnel_db) == {"+628117660001": ("blast-1", "blast-1")}
    assert registry_rows(funnel_db) == {}


@pytest.mark.parametrize("late", [False, True])
def test_a_batch_with_many_customers_of_one_broadcast_names_all_their_leads(
        funnel_db, classifier, late):
    at = datetime.fromisoformat("2025-10-01T03:00:00+00:00")
    msgs = [m for n in range(30) for m in qontak_blast(n, {"id": "b9", "name": "Flash"},
                                                       at + timedelta(seconds=n))]
    batches = [msgs] if not late else [msgs[1::2], msgs[0::2]]   # replies before the blasts
    for batch in batches:
        with funnel_db.transaction():
            store.process_messages(funnel_db, batch, classifier)
    assert {c for _, c in lead_campaigns(funnel_db).values()} == {"broadcast:b9"}
    assert len(lead_campaigns(funnel_db)) == 30


def test_the_simulators_traffic_names_its_campaigns(api, r, settings, funnel_db, classifier):
    """The demo's traffic as webhooks: Qontak broadcasts and generic campaigns carry their
    names, WhatsApp template messages are echoed for most customers, ads have headlines; only
    replies to a template nobody echoed stay unknown, shown as the message id they answer."""
    from datetime import UTC

    from funnel_ingest.simulate.conversations import simulate
    from funnel_ingest.simulate.webhooks import to_webhooks

    sim = simulate(60, seed=7, start=datetime(2025, 9, 1, tzinfo=UTC), days=20)
    post_samples(api, settings, to_webhooks(sim.deliveries(seed=7), seed=7))
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    rows = funnel_db.execute(
        "SELECT f.opening_source, f.campaign, c.name FROM funnel f "
        "LEFT JOIN campaigns c ON c.campaign = f.campaign WHERE f.campaign IS NOT NULL"
    ).fetchall()
    named = {(source, key.split(":")[0] if ":" in key else key.split("-")[0])
             for source, key, name in rows if name}
    assert named >= {("whatsapp", "template"), ("whatsapp", "ad"), ("qontak", "broadcast")}
    unknown = [(source, key) for source, key, name in rows if not name]
    assert all(source == "whatsapp" and key.startswith("wamid.") for source, key in unknown)
    assert len(unknown) < len(rows) / 2


def test_empty_campaign_and_ad_ids_name_nothing_and_fail_nothing(funnel_db, classifier):
    # the generic format accepts "" (a backfill re-parses archived bodies as they were sent)
    from funnel_ingest.ingest import providers

    doc = json.loads(payload("generic_campaign.json"))
    doc.update(campaign_id="", ad_id="", campaign_name="Nameless")
    msgs = providers.parse("generic", json.dumps(doc).encode()).messages
    assert (msgs[0].campaign_id, msgs[0].ad_id) == ("", "")
    with funnel_db.transaction():
        store.process_messages(funnel_db, msgs, classifier)
    assert funnel_db.execute("SELECT campaign FROM funnel").fetchall() == [(None,)]
    assert registry_rows(funnel_db) == {}
