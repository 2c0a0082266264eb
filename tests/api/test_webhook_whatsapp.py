"""WhatsApp Cloud API route, with Meta's documented payloads, over real HTTP, S3 and Redis."""

from __future__ import annotations

import json

import orjson
import pytest

from funnel_ingest.ingest import archive, auth
from funnel_ingest.messages import NormalizedMessage
from tests.support import payload

STREAM = "funnel:messages"


def stream_messages(r, key: str = STREAM) -> list[NormalizedMessage]:
    return [NormalizedMessage.from_fields(fields) for _id, fields in r.xrange(key)]


def test_handshake_echoes_the_challenge(api):
    token = api.settings.whatsapp_verify_token.get_secret_value()
    res = api.client.get("/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": token})
    assert res.status_code == 200
    assert res.text == "1158201444"


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "meatyhamhock"},
    {"hub.mode": "unsubscribe", "hub.challenge": "1158201444", "hub.verify_token": "{token}"},
    {"hub.challenge": "1158201444"},
])
def test_handshake_with_a_bad_token_or_mode_is_forbidden(api, params):
    token = api.settings.whatsapp_verify_token.get_secret_value()
    params = {k: v.replace("{token}", token) for k, v in params.items()}
    res = api.client.get("/webhooks/whatsapp", params=params)
    assert res.status_code == 403
    assert res.json()["error"] == "bad_verify_token"


def test_text_message_is_archived_byte_for_byte_then_streamed(api, r, s3_client):
    body = payload("whatsapp_text.json")
    res = api.whatsapp(body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["messages"] == 1 and out["duplicates"] == 0
    [m] = stream_messages(r)
    assert m.source == "whatsapp"
    assert m.message_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert m.customer_key == m.phone == "+16505551234"
    assert m.direction == "inbound" and m.text == "Does it come in another color?"
    assert m.sent_at.timestamp() == 1749416383
    assert m.raw_key == out["raw_key"]
    assert m.raw_key.startswith("raw/source=whatsapp/date=")
    obj = s3_client.get_object(Bucket=api.settings.raw_bucket, Key=m.raw_key)
    assert obj["Metadata"]["signature"] == "valid"
    assert "received-at" in obj["Metadata"]
    record = archive.read_lines(obj["Body"].read())[m.raw_line - 1]
    assert record["body"].encode() == body
    assert record["signature"] == "valid"


def test_click_to_whatsapp_referral_marks_an_ad_lead_and_is_kept(api, r):
    assert api.whatsapp(payload("whatsapp_referral.json")).status_code == 200
    [m] = stream_messages(r)
    assert m.channel_hint == "ads"
    assert m.medium == "whatsapp"
    assert m.ad_id == "120226305854810726"
    assert m.referral["ctwa_clid"].startswith("ARAkLkA8")
    assert m.referral["headline"] == "Chat with us"
    assert m.customer_key == "+6281234567890"


def test_template_button_reply_is_a_campaign_reply(api, r):
    assert api.whatsapp(payload("whatsapp_button.json")).status_code == 200
    [m] = stream_messages(r)
    assert m.text == "Mau info promo"
    assert m.channel_hint == "campaign_blast"
    assert m.context_id == "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


def test_interactive_replies_use_their_titles(api, r):
    assert api.whatsapp(payload("whatsapp_interactive.json")).status_code == 200
    texts = [m.text for m in stream_messages(r)]
    assert texts == ["Ya, booking sekarang", "Paket Bali 3D2N"]


def test_image_caption_is_the_text(api, r):
    assert api.whatsapp(payload("whatsapp_image.json")).status_code == 200
    [m] = stream_messages(r)
    assert m.text == "Bukti transfer Rp 1.500.000 ya kak" and m.message_type == "image"


def test_statuses_go_to_their_own_stream_never_to_messages(api, r):
    res = api.whatsapp(payload("whatsapp_statuses.json"))
    assert res.status_code == 200
    assert res.json()["statuses"] == 2 and res.json()["messages"] == 0
    assert r.xlen(STREAM) == 0
    statuses = [{k.decode(): v.decode() for k, v in f.items()}
                for _, f in r.xrange("funnel:statuses")]
    assert [s["status"] for s in statuses] == ["sent", "failed"]
    assert statuses[0]["recipient"] == "+5516992318222"
    assert json.loads(statuses[1]["errors"])[0]["code"] == 131026


def test_several_entries_share_one_archive_object_and_one_append(api, r):
    res = api.whatsapp(payload("whatsapp_multi_entry.json"))
    assert res.status_code == 200 and res.json()["messages"] == 3
    msgs = stream_messages(r)
    assert [m.message_id for m in msgs] == ["wamid.multi-1", "wamid.multi-2", "wamid.multi-3"]
    assert {m.raw_key for m in msgs} == {res.json()["raw_key"]}
    assert [m.customer_key for m in msgs] == ["+6281234500001", "+6281234500002", "+6281234500003"]


def test_withheld_phone_is_keyed_by_business_scoped_user_id(api, r):
    assert api.whatsapp(payload("whatsapp_bsuid.json")).status_code == 200
    [m] = stream_messages(r)
    assert m.phone is None
    assert m.customer_key == "bsuid:ID.1502576394655843"


def test_business_app_echo_is_an_outbound_message_of_the_customer(api, r):
    assert api.whatsapp(payload("whatsapp_echo.json")).status_code == 200
    [m] = stream_messages(r)
    assert m.direction == "outbound" and m.sender_type == "business"
    assert m.customer_key == "+6281234567890"


def test_message_without_any_customer_key_is_dead_lettered_with_its_reason(api, r):
    body = orjson.loads(payload("whatsapp_text.json"))
    msg = body["entry"][0]["changes"][0]["value"]["messages"][0]
    msg["from"] = "12"
    body["entry"][0]["changes"][0]["value"]["contacts"] = []
    res = api.whatsapp(orjson.dumps(body))
    assert res.status_code == 200 and res.json()["dead_letters"] == 1
    assert r.xlen(STREAM) == 0
    [(_, dead)] = r.xrange("funnel:deadletter")
    assert dead[b"reason"] == b"no_customer_key"
    assert dead[b"raw_key"].startswith(b"raw/source=whatsapp/")


@pytest.mark.parametrize("signature, status, error", [
    (None, 401, "missing_signature"),
    ("sha1=" + "0" * 40, 401, "malformed_signature"),
    ("0" * 64, 401, "malformed_signature"),
    ("sha256=" + "0" * 64, 403, "invalid_signature"),
])
def test_bad_signatures_are_refused_and_nothing_is_written(api, r, s3_client, signature, status,
                                                           error):
    before = len([k for k in _keys(s3_client, api)])
    res = api.whatsapp(payload("whatsapp_text.json"), signature=signature)
    assert res.status_code == status
    assert res.json()["error"] == error
    assert r.xlen(STREAM) == 0
    assert len(_keys(s3_client, api)) == before


def test_signature_of_another_body_is_invalid(api, r):
    other = auth.sign(b'{"object":"whatsapp_business_account"}',
                      api.settings.whatsapp_app_secret.get_secret_value())
    res = api.whatsapp(payload("whatsapp_text.json"), signature=other)
    assert res.status_code == 403


def test_uppercase_hex_signature_is_accepted(api, r):
    body = payload("whatsapp_text.json")
    sig = auth.sign(body, api.settings.whatsapp_app_secret.get_secret_value())
    assert api.whatsapp(body, signature="sha256=" + sig[7:].upper()).status_code == 200


def _keys(s3_client, api) -> list[str]:
    from tests.support import raw_objects
    return raw_objects(s3_client, api.settings.raw_bucket)
