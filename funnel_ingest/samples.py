"""Sample webhook bodies in each provider's documented shape (demo traffic, tests, benchmarks).

Conversations are short Indonesian chats; the funnel engine's simulator builds richer ones.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson

ROUTES = {"whatsapp": "/webhooks/whatsapp", "qontak": "/webhooks/qontak", "generic": "/webhook"}

_OPENERS = ["Halo kak, saya mau info promo", "Hai, mau tanya paket liburan",
            "Permisi, saya lihat iklannya di IG", "Halo admin, masih ada slot?"]
_BOOKINGS = ["Oke kak saya mau booking untuk besok", "Saya pesan 2 pax ya kak",
             "Jadi booking tgl 5 ya", "mau reservasi untuk sabtu"]
_PAYMENTS = ["Sudah transfer Rp 1.500.000 ya kak", "sudah saya bayar 750rb",
             "dp 500k sudah masuk ya", "Sudah tf 1,5jt kak"]
_AGENT = ["Baik kak, ada yang bisa dibantu?", "Harga paket Rp 750.000/pax kak",
          "Pembayaran sudah kami terima, terima kasih"]


@dataclass(frozen=True)
class Sample:
    source: str
    body: bytes
    messages: int


def indonesian_phone(rng: random.Random) -> str:
    return "628" + rng.choice("1235789") + "".join(rng.choice("0123456789") for _ in range(9))


def whatsapp_body(rng: random.Random, phone: str, texts: list[str], at: datetime,
                  referral: bool = False) -> bytes:
    messages = []
    for n, text in enumerate(texts):
        m = {"from": phone, "id": f"wamid.{uuid.UUID(int=rng.getrandbits(128)).hex}",
             "timestamp": str(int((at + timedelta(seconds=n)).timestamp())), "type": "text",
             "text": {"body": text}}
        if referral and n == 0:
            m["referral"] = {"source_url": "https://fb.me/ad", "source_id": "120226305854810726",
                             "source_type": "ad", "headline": "Promo liburan",
                             "ctwa_clid": uuid.UUID(int=rng.getrandbits(128)).hex}
        messages.append(m)
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Pelanggan"}, "wa_id": phone}],
            "messages": messages}}]}]})


def qontak_body(rng: random.Random, phone: str, room: str, text: str, at: datetime,
                participant: str = "customer", campaign: bool = False) -> bytes:
    sender_type = {"customer": "Models::Contact", "agent": "Models::User",
                   "bot": "Models::SystemAccount"}[participant]
    return orjson.dumps({
        "id": str(uuid.UUID(int=rng.getrandbits(128))), "type": "text", "room_id": room,
        "is_campaign": campaign, "sender_type": sender_type, "participant_type": participant,
        "text": text, "status": "created", "created_at": at.isoformat().replace("+00:00", "Z"),
        "room": {"id": room, "name": "Pelanggan", "channel": "wa", "account_uniq_id": phone,
                 "session": "open"}})


def generic_body(rng: random.Random, phone: str, room: str, text: str, at: datetime,
                 sender: str = "customer", channel: str = "direct") -> bytes:
    return orjson.dumps({
        "room_id": room, "channel": channel,
        "sender": {"type": sender, "phone": phone if sender == "customer" else "6281100000001"},
        "message": {"id": uuid.UUID(int=rng.getrandbits(128)).hex, "text": text},
        "timestamp": at.isoformat()})


def burst(count: int, seed: int | None = None, now: datetime | None = None) -> Iterator[Sample]:
    """`count` webhook bodies, round-robin over the three sources, each a plausible chat step."""
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    for i in range(count):
        phone = indonesian_phone(rng)
        at = now - timedelta(minutes=rng.randint(1, 600))
        stage = rng.choice([_OPENERS, _OPENERS, _BOOKINGS, _PAYMENTS])
        text = rng.choice(stage)
        kind = ("whatsapp", "qontak", "generic")[i % 3]
        room = uuid.UUID(int=rng.getrandbits(128)).hex
        if kind == "whatsapp":
            yield Sample(kind, whatsapp_body(rng, phone, [text], at, referral=rng.random() < .3), 1)
        elif kind == "qontak":
            agent = rng.random() < .2
            yield Sample(kind, qontak_body(rng, phone, room, rng.choice(_AGENT) if agent else text,
                                           at, "agent" if agent else "customer"), 1)
        else:
            yield Sample(kind, generic_body(rng, phone, room, text, at,
                                            channel=rng.choice(["ads", "website", "direct"])), 1)
