"""Provider webhook bodies, one writer per provider in its documented shape (as the parsers of
`ingest/providers/` read them):

- from simulated messages: `to_webhooks` (the conversations of `conversations.py`, with the
  providers' batching, agent echoes, buttons, images and withheld phones);
- from a few plain values: `whatsapp_body`, `qontak_body`, `generic_body` (tests and load
  generators that need a body of a given shape without a simulation), which describe their
  message and hand it to the same writers.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import orjson

from funnel_ingest.messages import NormalizedMessage
from funnel_ingest.simulate.conversations import AGENT_PHONE, BUSINESS_NUMBER, NAMES, _national

ROUTES = {"whatsapp": "/webhooks/whatsapp", "qontak": "/webhooks/qontak", "generic": "/webhook"}

QONTAK_SENDER_TYPES = {"customer": "Models::Contact", "agent": "Models::User",
                       "bot": "Models::SystemAccount"}


def whatsapp_envelope(field: str, value: dict) -> bytes:
    """A Cloud API notification of one change (`messages` or `smb_message_echoes`) of our
    business number."""
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398", "changes": [{"field": field, "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": BUSINESS_NUMBER,
                         "phone_number_id": "106540352242922"},
            **value}}]}]})


@dataclass(frozen=True)
class Sample:
    source: str
    body: bytes
    messages: int


def indonesian_phone(rng: random.Random) -> str:
    return "628" + rng.choice("1235789") + "".join(rng.choice("0123456789") for _ in range(9))


def _id(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128)).hex


def whatsapp_body(rng: random.Random, phone: str, texts: list[str], at: datetime,
                  referral: bool = False) -> bytes:
    """One Cloud API notification of `texts` from `phone` (digits, as WhatsApp writes them), a
    second apart from `at`; the first carries a Click-to-WhatsApp referral when `referral`."""
    ad = {"source_url": "https://fb.me/ad", "source_id": "120226305854810726",
          "source_type": "ad", "headline": "Promo liburan", "ctwa_clid": _id(rng)}
    return _whatsapp(rng, [
        NormalizedMessage(source="whatsapp", message_id=f"wamid.{_id(rng)}",
                          sent_at=at + timedelta(seconds=n), direction="inbound",
                          sender_type="customer", text=text, phone=f"+{phone}",
                          referral=ad if referral and n == 0 else None)
        for n, text in enumerate(texts)])


def qontak_body(rng: random.Random, phone: str, room: str, text: str, at: datetime,
                participant: str = "customer", campaign: bool = False) -> bytes:
    """One Qontak message event in `room` (a WhatsApp room of `phone`, digits)."""
    return _qontak(rng, NormalizedMessage(
        source="qontak", message_id=str(uuid.UUID(int=rng.getrandbits(128))), sent_at=at,
        direction="inbound" if participant == "customer" else "outbound",
        sender_type=participant, text=text, phone=f"+{phone}", room_id=room,
        room_channel="wa", channel_hint="campaign_blast" if campaign else None))


def generic_body(rng: random.Random, phone: str, room: str, text: str, at: datetime,
                 sender: str = "customer", channel: str = "direct") -> bytes:
    """One generic-format message in `room`, labelled `channel`; the phone (digits) is written
    in one of the forms CRMs use, the timestamp in one of the accepted forms."""
    return orjson.dumps(_generic_item(rng, NormalizedMessage(
        source="generic", message_id=_id(rng), sent_at=at,
        direction="inbound" if sender == "customer" else "outbound", sender_type=sender,
        text=text, phone=f"+{phone}", room_id=room, channel_hint=channel)))


# --------------------------------------------------------------------------- from simulated messages


def _digits(phone: str | None) -> str | None:
    return phone[1:] if phone else None


def _generic_phone(rng: random.Random, phone: str) -> str:
    r = rng.random()
    if phone.startswith("+62"):
        if r < 0.3:
            return _national(phone)
        if r < 0.45:
            return "0" + phone[3:]
    return phone if r < 0.75 else phone[1:]


_GENERIC_LABELS = {"campaign_blast": ("campaign_blast", "broadcast", "campaign"),
                   "ads": ("ads", "ads", "iklan", "ctwa"), "website": ("website", "web", "widget")}
_MEDIUM_LABELS = {"whatsapp": ("whatsapp", "wa", "WhatsApp"), "instagram": ("instagram", "ig", "IG")}
_QONTAK_ROOM = {"wa": "wa", "website": "web", "ig": "ig"}


def to_webhooks(messages: Iterable[NormalizedMessage], *, seed: int = 0,
                group_rate: float = 0.5, max_group: int = 5,
                group_seconds: int = 120, lookahead: int = 64) -> Iterator[Sample]:
    """Provider webhook bodies for `messages` (by `message.source`), about in the given order.

    WhatsApp: a customer's messages in the same direction sent within `group_seconds` of each
    other are sometimes (`group_rate` per message) batched into one body, up to `max_group`
    (agent messages become `smb_message_echoes`); a batch is emitted at most `lookahead` input
    messages after it opened, so other traffic may come in between, as with a real provider.
    Generic: a room's messages are batched the same way into one JSON array. Qontak: one
    message per body. Every input message (duplicates included) is in exactly one body.
    Deterministic for a given `seed`.
    """
    rng = random.Random(seed)
    rand = rng.random
    open_batches: dict[tuple, tuple[int, list[NormalizedMessage]]] = {}
    for i, m in enumerate(messages):
        while open_batches:  # emit batches opened too long ago (oldest first)
            key = next(iter(open_batches))
            opened, batch = open_batches[key]
            if opened > i - lookahead:
                break
            del open_batches[key]
            yield _body(rng, batch)
        if m.source == "qontak":
            yield Sample("qontak", _qontak(rng, m), 1)
            continue
        key = (m.source, m.customer_key if m.source == "whatsapp" else m.room_id, m.direction)
        current = open_batches.get(key)
        if current is not None:
            batch = current[1]
            gap = abs((m.sent_at - batch[-1].sent_at).total_seconds())
            if len(batch) < max_group and gap <= group_seconds and rand() < group_rate:
                batch.append(m)
                continue
            del open_batches[key]
            yield _body(rng, batch)
        open_batches[key] = (i, [m])
    for _, batch in open_batches.values():
        yield _body(rng, batch)


def _body(rng: random.Random, batch: list[NormalizedMessage]) -> Sample:
    if batch[0].source == "whatsapp":
        return Sample("whatsapp", _whatsapp(rng, batch), len(batch))
    items = [_generic_item(rng, m) for m in batch]
    if len(items) == 1 and rng.random() < 0.8:
        return Sample("generic", orjson.dumps(items[0]), 1)
    return Sample("generic", orjson.dumps(items), len(items))


def _whatsapp(rng: random.Random, batch: list[NormalizedMessage]) -> bytes:
    first = batch[0]
    items = []
    for m in batch:
        d: dict = {"id": m.message_id, "timestamp": str(int(m.sent_at.timestamp()))}
        if m.direction == "outbound":
            d["from"] = BUSINESS_NUMBER
            if m.phone:
                d["to"] = _digits(m.phone)
            else:
                d["user_id"] = m.user_id
        elif m.phone:
            d["from"] = _digits(m.phone)
        else:
            d["user_id"] = m.user_id
        kind = m.message_type or "text"
        d["type"] = kind
        if kind == "button":
            d["context"] = {"from": BUSINESS_NUMBER, "id": m.context_id}
            d["button"] = {"text": m.text, "payload": m.text.upper().replace(" ", "_")[:32]}
        elif kind == "template":  # a template message sent by the business, echoed
            d["template"] = {"name": m.template_name, "language": {"code": "id"}}
        elif kind == "image":
            d["image"] = {"caption": m.text, "mime_type": "image/jpeg",
                          "sha256": base64.b64encode(rng.getrandbits(256).to_bytes(32, "big")).decode(),
                          "id": str(rng.randrange(10**15, 10**16))}
        else:
            d["text"] = {"body": m.text}
        if m.referral:
            d["referral"] = m.referral
        items.append(d)
    value: dict = {}
    if first.direction == "outbound":
        field = "smb_message_echoes"
        value["message_echoes"] = items
    else:
        field = "messages"
        contact: dict = {"profile": {"name": rng.choice(NAMES)}}
        if first.phone:
            contact["wa_id"] = _digits(first.phone)
        else:
            contact["user_id"] = first.user_id
        value["contacts"] = [contact]
        value["messages"] = items
    return whatsapp_envelope(field, value)


def _qontak(rng: random.Random, m: NormalizedMessage) -> bytes:
    participant = m.sender_type if m.sender_type in ("agent", "bot") else "customer"
    sender_type = QONTAK_SENDER_TYPES[participant]
    name = {"customer": rng.choice(NAMES), "agent": "Admin", "bot": "Bot"}[participant]
    at = m.sent_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    account = _digits(m.phone) if m.phone else m.user_id
    campaign: dict = {}
    if m.broadcast_id or m.campaign_name:
        campaign["broadcast"] = {"id": m.broadcast_id, "name": m.campaign_name}
    if m.template_name:
        campaign["message_template"] = {"name": m.template_name}
    return orjson.dumps({
        "id": m.message_id, "type": m.message_type or "text", "room_id": m.room_id,
        "is_campaign": m.channel_hint == "campaign_blast", "sender_type": sender_type,
        "sender": {"name": name, "avatar": None}, "participant_type": participant,
        "text": m.text, "status": "created" if participant == "customer" else "sent",
        "external_id": None, "local_id": None, "created_at": at, "reply": None,
        "room": {"id": m.room_id, "name": "Pelanggan", "description": "", "status": "assigned",
                 "type": "Models::CustomerServiceRoom", "tags": [],
                 "channel": _QONTAK_ROOM.get(m.room_channel or "wa", m.room_channel or "wa"),
                 "channel_account": "Qontak", "account_uniq_id": account,
                 "channel_integration_id": "b3a2ee0b-7dac-47b8-a115-7bc63abf8f15",
                 "session": "open"}, **campaign})


_JAKARTA = timezone(timedelta(hours=7))


def _generic_item(rng: random.Random, m: NormalizedMessage) -> dict:
    inbound = m.direction == "inbound"
    sender: dict = {"type": m.sender_type if not inbound else "customer"}
    if inbound:
        if m.phone:
            sender["phone"] = _generic_phone(rng, m.phone)
        else:
            sender["user_id"] = m.user_id
    else:
        sender["phone"] = AGENT_PHONE  # the agent's own phone: never the customer's
    r = rng.random()
    ts: str | int
    if r < 0.5:
        ts = m.sent_at.astimezone(_JAKARTA).isoformat()
    elif r < 0.8:
        ts = m.sent_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    else:
        ts = int(m.sent_at.timestamp())
    d: dict = {"room_id": m.room_id}
    if m.channel_hint:
        d["channel"] = rng.choice(_GENERIC_LABELS.get(m.channel_hint, (m.channel_hint,)))
    elif m.medium:  # a medium as the CRM's label, or in its own field
        d["channel" if rng.random() < 0.7 else "medium"] = rng.choice(
            _MEDIUM_LABELS.get(m.medium, (m.medium,)))
    d["sender"] = sender
    d["message"] = {"id": m.message_id, "text": m.text}
    d["timestamp"] = ts
    if m.campaign_id:
        d["campaign_id"] = m.campaign_id
    if m.ad_id:
        d["ad_id"] = m.ad_id
    if m.campaign_name:
        d["campaign_name"] = m.campaign_name
    return d
