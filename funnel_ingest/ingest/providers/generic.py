"""The original generic CRM format (kept compatible), one object or an array of them:

    {"room_id": "...", "channel": "ads" | "source": "...", "medium": "instagram",
     "campaign_id": "...", "campaign_name": "...", "ad_id": "...",
     "sender": {"type": "customer" | "agent", "phone": "..."},
     "message": {"id": "...", "text": "..."}, "timestamp": "ISO-8601 or unix time"}

`channel` (or `source`) is the CRM's label: a marketing channel (ads, tiktok, event_jakarta)
or a medium (whatsapp, instagram, ...), told apart by `engine.channels.label`; `medium` names
the medium explicitly. `campaign_name` names the campaign (`campaign_id`), else the ad
(`ad_id`): the campaign registry shows it (docs/funnel.md, Campaigns).

Message ids are only unique within a room, so the room is part of the idempotency key. An agent's
message belongs to the room's customer, never to the agent's own phone: the parser leaves its
customer key empty and the stream append resolves it from the room.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, RootModel

from funnel_ingest.engine import channels
from funnel_ingest.ingest.providers import phones
from funnel_ingest.ingest.providers._common import (
    Label,
    Lenient,
    PayloadError,
    display_name,
    parse_timestamp,
    validate_json,
)
from funnel_ingest.messages import DeadLetter, NormalizedMessage, ParseResult

SOURCE = "generic"
MAX_BATCH = 1000


class GenericSender(Lenient):
    type: Literal["customer", "agent", "bot", "system"] = "customer"
    phone: Label | None = Field(default=None, max_length=64)
    user_id: Label | None = Field(default=None, max_length=200)


class GenericBody(Lenient):
    id: Label = Field(min_length=1, max_length=200)
    text: str | None = ""


class GenericMessage(Lenient):
    """One message in the original generic format."""

    room_id: Label | None = Field(default=None, max_length=200)
    channel: Label | None = Field(default=None, max_length=100)
    source: Label | None = Field(default=None, max_length=100)
    medium: Label | None = Field(default=None, max_length=100)
    campaign_id: Label | None = Field(default=None, max_length=200)
    campaign_name: str | None = Field(default=None, max_length=1000)
    ad_id: Label | None = Field(default=None, max_length=200)
    sender: GenericSender
    message: GenericBody
    timestamp: Union[str, float, int]


class GenericPayload(RootModel[Union[GenericMessage, list[GenericMessage]]]):
    """One generic message, or an array of up to 1000 of them."""


def parse(body: bytes) -> ParseResult:
    items = validate_json(GenericPayload, body).root
    batch = items if isinstance(items, list) else [items]
    if not batch:
        raise PayloadError("wrong_shape", "body: the array holds no messages")
    if len(batch) > MAX_BATCH:
        raise PayloadError("wrong_shape", f"body: at most {MAX_BATCH} messages per request")
    result = ParseResult()
    for i, g in enumerate(batch):
        where = f"{i}." if isinstance(items, list) else ""
        sent_at = parse_timestamp(g.timestamp, f"{where}timestamp")
        inbound = g.sender.type == "customer"
        phone = phones.from_crm_field(g.sender.phone) if inbound else None
        key = phone or (f"generic-user:{g.sender.user_id}" if inbound and g.sender.user_id else None)
        if inbound and key is None:
            result.dead_letters.append(DeadLetter(
                SOURCE, "no_customer_key",
                f"{where}sender.phone is not a valid phone number and no sender.user_id is given",
                g.message.id))
            continue
        if not inbound and not g.room_id:
            result.dead_letters.append(DeadLetter(
                SOURCE, "no_customer_key",
                f"{where}an {g.sender.type} message without room_id cannot be tied to a customer",
                g.message.id))
            continue
        named = channels.label(g.channel or g.source)
        result.messages.append(NormalizedMessage(
            source=SOURCE, message_id=g.message.id, sent_at=sent_at,
            direction="inbound" if inbound else "outbound", sender_type=g.sender.type,
            text=g.message.text or "", customer_key=key, phone=phone,
            user_id=g.sender.user_id if inbound else None, room_id=g.room_id,
            channel_hint=named.channel, medium=channels.medium(g.medium) or named.medium,
            campaign_id=g.campaign_id,
            ad_id=g.ad_id,
            campaign_name=display_name(g.campaign_name)
            if g.campaign_id or g.ad_id else None,
        ))
    return result
