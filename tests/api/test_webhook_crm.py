"""Qontak and the original generic format: rooms, agents, campaigns, authentication."""

from __future__ import annotations

import orjson
import pytest

from funnel_ingest.ingest import auth
from funnel_ingest.messages import NormalizedMessage
from tests.support import payload

STREAM = "funnel:messages"


def messages(r) -> list[NormalizedMessage]:
    return [NormalizedMessage.from_fields(f) for _, f in r.xrange(STREAM)]


def test_qontak_customer_message_is_keyed_by_the_room_phone(api, r):
    res = api.crm("/webhooks/qontak", payload("qontak_customer.json"))
    assert res.status_code == 200, res.text
    [m] = messages(r)
    assert m.source == "qontak" and m.message_id == "4198c4b2-d39d-45b5-ac9c-89bccb9513ec"
    assert m.customer_key == "+628117661000" and m.direction == "inbound"
    assert m.room_id == "e658411a-99aa-417d-8c6f-40e1594554a7" and m.room_channel == "wa"
    assert m.sent_at.isoformat() == "2021-03-03T22:53:29+00:00"


def test_qontak_agent_message_belongs_to_the_rooms_customer(api, r):
    assert api.crm("/webhooks/qontak", payload("qontak_agent.json")).status_code == 200
    [m] = messages(r)
    assert m.direction == "outbound" and m.sender_type == "agent"
    assert m.customer_key == "+628117661000"
    assert m.room_id == "e658411a-99aa-417d-8c6f-40e1594554a7"


def test_qontak_broadcast_is_a_campaign_message(api, r):
    assert api.crm("/webhooks/qontak", payload("qontak_campaign.json")).status_code == 200
    [m] = messages(r)
    assert m.sender_type == "bot" and m.channel_hint == "campaign_blast"


def test_generic_customer_message_keeps_room_and_channel(api, r):
    assert api.crm("/webhook", payload("generic_customer.json")).status_code == 200
    [m] = messages(r)
    assert m.source == "generic" and m.room_id == "room-001"
    assert m.customer_key == "+6281234567890" and m.channel_hint == "ads"
    assert m.sent_at.isoformat() == "2025-10-01T02:15:00+00:00"


@pytest.mark.parametrize(("fields", "channel", "medium"), [
    ({"channel": "TikTok"}, "tiktok", None),
    ({"channel": "Event Jakarta"}, "event_jakarta", None),
    ({"source": "referral"}, "referral", None),
    ({"channel": "Instagram"}, None, "instagram"),
    ({"channel": "wa"}, None, "whatsapp"),
    ({"channel": "livechat"}, "website", "webchat"),
    ({"channel": "iklan", "medium": "IG"}, "ads", "instagram"),
])
def test_generic_labels_keep_the_crms_channel_and_tell_the_medium_apart(api, r, fields,
                                                                         channel, medium):
    body = orjson.loads(payload("generic_customer.json"))
    body.pop("channel", None)
    assert api.crm("/webhook", orjson.dumps({**body, **fields})).status_code == 200
    [m] = messages(r)
    assert (m.channel_hint, m.medium) == (channel, medium)


@pytest.mark.parametrize(("room_channel", "medium", "hint"), [
    ("wa", "whatsapp", None), ("ig", "instagram", None), ("web", "webchat", "website"),
    ("telegram", "telegram", None),
])
def test_a_qontak_rooms_channel_is_its_medium(api, r, room_channel, medium, hint):
    body = orjson.loads(payload("qontak_customer.json"))
    body["room"]["channel"] = room_channel
    assert api.crm("/webhooks/qontak", orjson.dumps(body)).status_code == 200
    [m] = messages(r)
    assert (m.medium, m.channel_hint) == (medium, hint)


def test_generic_agent_message_links_to_the_room_customer_not_the_agents_phone(api, r):
    api.crm("/webhook", payload("generic_customer.json"))
    api.crm("/webhook", payload("generic_agent.json"))
    customer, agent = messages(r)
    assert agent.sender_type == "agent"
    assert agent.customer_key == customer.customer_key == "+6281234567890"
    assert agent.phone is None


def test_generic_agent_message_arriving_first_waits_for_its_room(api, r):
    api.crm("/webhook", payload("generic_agent.json"))
    [agent] = messages(r)
    assert agent.customer_key is None and agent.room_id == "room-001"
    api.crm("/webhook", payload("generic_customer.json"))
    assert r.get("funnel:room:generic:room-001") == b"+6281234567890"
    assert 0 < r.ttl("funnel:room:generic:room-001") <= api.settings.room_ttl_seconds


def test_generic_batch_array_is_one_request(api, r):
    one = orjson.loads(payload("generic_customer.json"))
    batch = [dict(one, message={"id": f"m-{i}", "text": "halo"}) for i in range(5)]
    res = api.crm("/webhook", orjson.dumps(batch))
    assert res.status_code == 200 and res.json()["messages"] == 5
    assert r.xlen(STREAM) == 5


def test_generic_ids_are_unique_only_within_a_room(api, r):
    one = orjson.loads(payload("generic_customer.json"))
    other_room = dict(one, room_id="room-002")
    assert api.crm("/webhook", orjson.dumps(one)).json()["duplicates"] == 0
    assert api.crm("/webhook", orjson.dumps(other_room)).json()["duplicates"] == 0
    assert r.xlen(STREAM) == 2


def test_crm_routes_accept_an_hmac_signature_instead_of_the_token(api, r):
    body = payload("qontak_customer.json")
    sig = auth.sign(body, api.settings.webhook_hmac_secret.get_secret_value())
    assert api.crm("/webhooks/qontak", body, token=None, signature=sig).status_code == 200
    res = api.crm("/webhooks/qontak", body, token=None, signature="sha256=" + "a" * 64)
    assert res.status_code == 403 and res.json()["error"] == "invalid_signature"


@pytest.mark.parametrize("path", ["/webhook", "/webhooks/qontak"])
@pytest.mark.parametrize("token, status, error", [
    (None, 401, "missing_token"), ("wrong-token", 403, "invalid_token")])
def test_crm_routes_refuse_a_missing_or_wrong_token(api, r, path, token, status, error):
    res = api.crm(path, payload("generic_customer.json" if path == "/webhook"
                                else "qontak_customer.json"), token=token)
    assert res.status_code == status and res.json()["error"] == error
    assert r.xlen(STREAM) == 0
