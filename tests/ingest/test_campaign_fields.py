"""What each provider's payload says about campaigns (template names, broadcast names, ad
headlines, generic campaign names), parsed leniently, and carried on the stream by old and new
entries alike."""

from __future__ import annotations

import json

import pytest

from funnel_ingest.ingest import providers
from funnel_ingest.messages import NormalizedMessage
from tests.support import payload


def parse_one(source: str, body: bytes) -> NormalizedMessage:
    result = providers.parse(source, body)
    assert not result.dead_letters
    [m] = result.messages
    return m


def test_a_whatsapp_template_echo_names_the_template_its_message_id_was_sent_as():
    echo = parse_one("whatsapp", payload("whatsapp_template_echo.json"))
    assert (echo.direction, echo.message_type, echo.template_name) == (
        "outbound", "template", "promo_desember")
    # the button reply points at that very message: its campaign_id is the echo's id
    reply = parse_one("whatsapp", payload("whatsapp_button.json"))
    assert reply.campaign_id == echo.message_id and reply.template_name is None


def test_a_click_to_whatsapp_referral_names_its_ad_by_the_headline():
    m = parse_one("whatsapp", payload("whatsapp_referral.json"))
    assert (m.ad_id, m.campaign_name, m.campaign_id) == ("120226305854810726", "Chat with us",
                                                         None)


def test_a_qontak_broadcast_names_its_campaign_and_template():
    m = parse_one("qontak", payload("qontak_broadcast.json"))
    assert m.campaign_id == m.message_id == "0c5f4a9e-7d21-4b8e-9f3a-2e6d1c8b7a90"
    assert (m.broadcast_id, m.campaign_name, m.template_name) == (
        "b7e2c0d4-5a61-4f0e-8d3b-1c9a2f6e4d85", "Promo 12.12 Bali", "promo_1212")


def test_qontaks_documented_campaign_message_names_nothing_and_stays_as_before():
    m = parse_one("qontak", payload("qontak_campaign.json"))
    assert m.channel_hint == "campaign_blast" and m.campaign_id == m.message_id
    assert (m.broadcast_id, m.campaign_name, m.template_name) == (None, None, None)


def test_flat_qontak_campaign_fields_are_read_too_and_only_on_campaign_messages():
    doc = json.loads(payload("qontak_broadcast.json"))
    for key in ("broadcast", "message_template"):
        del doc[key]
    doc.update(campaign_id=4711, campaign_name="  Promo\n Natal ", template_name="natal_2025")
    m = parse_one("qontak", json.dumps(doc).encode())
    assert (m.broadcast_id, m.campaign_name, m.template_name) == (
        "4711", "Promo Natal", "natal_2025")
    doc["is_campaign"] = False
    m = parse_one("qontak", json.dumps(doc).encode())
    assert (m.broadcast_id, m.campaign_name, m.template_name) == (None, None, None)


@pytest.mark.parametrize("fields", [
    {"broadcast": "not-an-object", "message_template": ["x"]},
    {"broadcast": {"id": "a\x01b", "name": {"nested": True}}, "campaign_name": 12.5},
    {"broadcast": {"id": "x" * 201, "name": "   "}, "template_name": None},
])
def test_unusable_campaign_fields_are_ignored_never_a_refused_webhook(fields):
    doc = json.loads(payload("qontak_broadcast.json"))
    doc.update(fields)
    m = parse_one("qontak", json.dumps(doc).encode())
    assert m.broadcast_id is None
    assert m.campaign_name in (None, "12.5")


def test_a_template_of_an_unexpected_shape_is_ignored():
    doc = json.loads(payload("whatsapp_template_echo.json"))
    doc["entry"][0]["changes"][0]["value"]["message_echoes"][0]["template"] = "promo"
    assert parse_one("whatsapp", json.dumps(doc).encode()).template_name is None


def test_the_generic_format_names_its_campaign_label():
    m = parse_one("generic", payload("generic_campaign.json"))
    assert (m.campaign_id, m.campaign_name) == ("promo-oktober", "Promo Oktober Lombok")
    doc = json.loads(payload("generic_campaign.json"))
    del doc["campaign_id"]
    assert parse_one("generic", json.dumps(doc).encode()).campaign_name is None  # names nothing


def test_campaign_fields_travel_on_the_stream_and_old_entries_still_decode():
    m = parse_one("qontak", payload("qontak_broadcast.json"))
    fields = m.to_fields()
    assert fields["broadcast_id"] == m.broadcast_id and fields["template_name"] == "promo_1212"
    assert NormalizedMessage.from_fields(fields) == m
    # an entry written before the campaign fields existed (bytes, as redis-py returns them)
    old = {k.encode(): v.encode() for k, v in fields.items()
           if k not in ("broadcast_id", "campaign_name", "template_name")}
    decoded = NormalizedMessage.from_fields(old)
    assert (decoded.broadcast_id, decoded.campaign_name, decoded.template_name) == (
        None, None, None)
    assert decoded.campaign_id == m.campaign_id
