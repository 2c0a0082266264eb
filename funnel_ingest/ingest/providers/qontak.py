"""Mekari Qontak omnichannel webhooks (message interactions).

One message per body. `participant_type` says who wrote it (customer, agent, bot); every message
of a room belongs to the room's customer, `room.account_uniq_id` (the customer's phone for
WhatsApp rooms, a channel user id otherwise). `is_campaign` marks a broadcast.
"""

from __future__ import annotations

from pydantic import Field

from funnel_ingest.engine import channels
from funnel_ingest.ingest.providers import phones
from funnel_ingest.ingest.providers._common import (
    Label,
    Lenient,
    parse_timestamp,
    validate_json,
)
from funnel_ingest.messages import DeadLetter, NormalizedMessage, ParseResult, StatusEvent

SOURCE = "qontak"


class QontakRoom(Lenient):
    id: Label = Field(min_length=1, max_length=200)
    channel: Label | None = None
    account_uniq_id: Label | None = Field(default=None, max_length=200)
    channel_integration_id: Label | None = None


class QontakMessage(Lenient):
    """A Qontak message-interaction webhook (customer, agent or bot message, or a status)."""

    id: Label = Field(min_length=1, max_length=200)
    created_at: Label = Field(min_length=1, max_length=64)
    participant_type: Label | None = None
    sender_type: Label | None = None
    text: str | None = None
    type: Label | None = None
    status: Label | None = None
    is_campaign: bool = False
    room_id: Label | None = None
    data_event: str | None = None
    webhook_event: str | None = None
    room: QontakRoom


def _direction(m: QontakMessage) -> tuple[str, str]:
    kind = (m.participant_type or "").casefold()
    if not kind:
        kind = {"models::contact": "customer", "models::user": "agent",
                "models::systemaccount": "bot"}.get((m.sender_type or "").casefold(), "")
    if kind == "customer":
        return "inbound", "customer"
    if kind in ("agent", "bot"):
        return "outbound", kind
    return "", kind


def parse(body: bytes) -> ParseResult:
    m = validate_json(QontakMessage, body)
    result = ParseResult()
    sent_at = parse_timestamp(m.created_at, "created_at")
    account = m.room.account_uniq_id
    phone = phones.from_provider_id(account) if account and account.lstrip("+").isdigit() else None
    key = phone or (f"qontak-user:{account}" if account else None)
    if (m.data_event or "").casefold() == "status_message":
        result.statuses.append(StatusEvent(SOURCE, m.id, m.status or "unknown", sent_at,
                                           recipient=key))
        return result
    direction, sender_type = _direction(m)
    if not direction:
        result.dead_letters.append(DeadLetter(
            SOURCE, "unknown_participant",
            f"participant_type {m.participant_type!r} is not customer, agent or bot", m.id))
        return result
    if key is None:
        result.dead_letters.append(DeadLetter(
            SOURCE, "no_customer_key", "room.account_uniq_id is missing", m.id))
        return result
    # the room's channel is the app it runs on: a medium, never the marketing channel (a web
    # chat room is on the website channel, as a website widget is)
    room_channel = channels.normalized(m.room.channel)
    medium = channels.medium(room_channel)
    hint = None
    if m.is_campaign:
        hint = "campaign_blast"
    elif medium == "webchat":
        hint = "website"
    result.messages.append(NormalizedMessage(
        source=SOURCE, message_id=m.id, sent_at=sent_at, direction=direction,  # type: ignore[arg-type]
        sender_type=sender_type, text=m.text or "", customer_key=key, phone=phone,
        user_id=None if phone else account, room_id=m.room.id, message_type=m.type,
        channel_hint=hint, room_channel=room_channel, medium=medium,
        campaign_id=m.id if m.is_campaign else None,
    ))
    return result
