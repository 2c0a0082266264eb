"""Mekari Qontak omnichannel webhooks (message interactions).

One message per body. `participant_type` says who wrote it (customer, agent, bot); every message
of a room belongs to the room's customer, `room.account_uniq_id` (the customer's phone for
WhatsApp rooms, a channel user id otherwise). `is_campaign` marks a broadcast.

Qontak's published webhook sample names no broadcast: a campaign message's own id is then its
campaign id, as before. When a delivery does carry the broadcast (`broadcast: {id, name}`, or
flat `campaign_id` / `campaign_name`) or its WhatsApp template (`message_template: {name}` or
`template_name`), the registry learns the name from it (docs/funnel.md, Campaigns). These
fields are read leniently: one of an unexpected shape is ignored, never a reason to refuse the
message.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from funnel_ingest.engine import channels
from funnel_ingest.ingest.providers import phones
from funnel_ingest.ingest.providers._common import (
    Label,
    Lenient,
    display_name,
    parse_timestamp,
    plain_id,
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
    # a broadcast's campaign, when the delivery names it (read by `_campaign`)
    broadcast: Any = None
    campaign_id: Any = None
    campaign_name: Any = None
    message_template: Any = None
    template_name: Any = None


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else None


def _campaign(m: QontakMessage) -> tuple[str | None, str | None, str | None]:
    """(broadcast id, its name, template name) of a campaign message, each None when absent
    or not a usable label."""
    broadcast_id = plain_id(_field(m.broadcast, "id")) or plain_id(m.campaign_id)
    name = display_name(_field(m.broadcast, "name")) or display_name(m.campaign_name)
    template = display_name(_field(m.message_template, "name")) or display_name(m.template_name)
    return broadcast_id, name, template


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
    broadcast_id = campaign_name = template_name = None
    if m.is_campaign:
        hint = "campaign_blast"
        broadcast_id, campaign_name, template_name = _campaign(m)
    elif medium == "webchat":
        hint = "website"
    result.messages.append(NormalizedMessage(
        source=SOURCE, message_id=m.id, sent_at=sent_at, direction=direction,  # type: ignore[arg-type]
        sender_type=sender_type, text=m.text or "", customer_key=key, phone=phone,
        user_id=None if phone else account, room_id=m.room.id, message_type=m.type,
        channel_hint=hint, room_channel=room_channel, medium=medium,
        campaign_id=m.id if m.is_campaign else None, broadcast_id=broadcast_id,
        campaign_name=campaign_name, template_name=template_name,
    ))
    return result
