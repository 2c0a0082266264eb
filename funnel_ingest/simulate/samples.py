"""Webhook bodies in each provider's documented shape, for the simulator, tests and benchmarks."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

ROUTES = {"whatsapp": "/webhooks/whatsapp", "qontak": "/webhooks/qontak", "generic": "/webhook"}

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
