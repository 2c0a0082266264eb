"""Meta WhatsApp Cloud API webhooks: `entry[].changes[].value.{messages,statuses,message_echoes}`.

Every entry, change and message is read (a body may batch many). Text comes from `text.body`,
else `button.text`, `interactive.*_reply.title`, or a media caption. A Click-to-WhatsApp
`referral` marks the lead as coming from an ad (its `headline` names the ad); a `button` reply to
a template (with `context`) marks a campaign-blast reply. An echo of a template message (`type`
`template`, `template.name`) tells which template that message id was sent as, so the replies
that point at it by `context.id` can be named. Customers are keyed by phone (`from`,
international digits), else by their business-scoped user id (BSUID, when the phone is
withheld).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from funnel_ingest.ingest.providers import phones
from funnel_ingest.ingest.providers._common import (
    Label,
    Lenient,
    display_name,
    parse_timestamp,
    validate_json,
)
from funnel_ingest.messages import DeadLetter, NormalizedMessage, ParseResult, StatusEvent

SOURCE = "whatsapp"
MEDIUM = "whatsapp"


class WaText(Lenient):
    body: str = ""


class WaButton(Lenient):
    text: str | None = None
    payload: str | None = None


class WaReply(Lenient):
    id: Label | None = None
    title: str | None = None
    description: str | None = None


class WaInteractive(Lenient):
    type: Label | None = None
    button_reply: WaReply | None = None
    list_reply: WaReply | None = None
    nfm_reply: dict | None = None


class WaMedia(Lenient):
    caption: str | None = None


class WaReferral(Lenient):
    source_url: str | None = None
    source_id: Label | None = None
    source_type: Label | None = None
    body: str | None = None
    headline: str | None = None
    media_type: str | None = None
    ctwa_clid: Label | None = None


class WaContext(Lenient):
    id: Label | None = None
    from_: Label | None = Field(default=None, alias="from")


class WaMessage(Lenient):
    id: Label = Field(min_length=1, max_length=512)
    timestamp: Label = Field(min_length=1, max_length=32)
    from_: Label | None = Field(default=None, alias="from", max_length=64)
    to: Label | None = Field(default=None, max_length=64)
    user_id: Label | None = Field(default=None, max_length=200)
    type: Label = "text"
    text: WaText | None = None
    button: WaButton | None = None
    interactive: WaInteractive | None = None
    image: WaMedia | None = None
    video: WaMedia | None = None
    document: WaMedia | None = None
    referral: WaReferral | None = None
    context: WaContext | None = None
    template: Any = None   # a template message: {"name", "language", "components"}


class WaStatus(Lenient):
    id: Label = Field(min_length=1, max_length=512)
    status: Label = Field(min_length=1, max_length=32)
    timestamp: Label = Field(min_length=1, max_length=32)
    recipient_id: Label | None = None
    recipient_user_id: Label | None = None
    errors: list[dict] | None = None


class WaContact(Lenient):
    wa_id: Label | None = None
    user_id: Label | None = None


class WaValue(Lenient):
    messaging_product: str | None = None
    metadata: dict | None = None
    contacts: list[WaContact] = []
    messages: list[WaMessage] = []
    statuses: list[WaStatus] = []
    message_echoes: list[WaMessage] = []


class WaChange(Lenient):
    field: str
    value: WaValue


class WaEntry(Lenient):
    id: Label
    changes: list[WaChange]


class WhatsAppPayload(Lenient):
    """A WhatsApp Business Account webhook notification (Meta Cloud API)."""

    object: Literal["whatsapp_business_account"]
    entry: list[WaEntry] = Field(min_length=1)


def _text_of(m: WaMessage) -> str:
    if m.text and m.text.body:
        return m.text.body
    if m.button and m.button.text:
        return m.button.text
    if m.interactive:
        for reply in (m.interactive.button_reply, m.interactive.list_reply):
            if reply and reply.title:
                return reply.title
    for media in (m.image, m.video, m.document):
        if media and media.caption:
            return media.caption
    return ""


def _template_name(m: WaMessage) -> str | None:
    """The template an (echoed) template message was sent as."""
    return display_name(m.template.get("name")) if isinstance(m.template, dict) else None


def _customer(phone_digits: str | None, user_id: str | None) -> tuple[str | None, str | None, str | None]:
    phone = phones.from_provider_id(phone_digits)
    if phone:
        return phone, phone, user_id
    if user_id:
        return f"bsuid:{user_id}", None, user_id
    return None, None, None


def parse(body: bytes) -> ParseResult:
    payload = validate_json(WhatsAppPayload, body)
    result = ParseResult()
    for e, entry in enumerate(payload.entry):
        for c, change in enumerate(entry.changes):
            value = change.value
            where = f"entry.{e}.changes.{c}.value"
            user_ids = {ct.wa_id: ct.user_id for ct in value.contacts if ct.wa_id}
            fallback_uid = next((ct.user_id for ct in value.contacts if ct.user_id), None)
            for i, m in enumerate(value.messages):
                sent_at = parse_timestamp(m.timestamp, f"{where}.messages.{i}.timestamp")
                key, phone, uid = _customer(m.from_, m.user_id or user_ids.get(m.from_ or "") or (
                    fallback_uid if len(value.messages) == 1 else None))
                if key is None:
                    result.dead_letters.append(DeadLetter(
                        SOURCE, "no_customer_key",
                        f"{where}.messages.{i}: `from` is not a valid international number "
                        "and no user_id is given", m.id))
                    continue
                if m.type in ("system", "unknown", "unsupported", "reaction") and not _text_of(m):
                    result.dead_letters.append(DeadLetter(
                        SOURCE, "unsupported_type",
                        f"{where}.messages.{i}: message type {m.type!r} carries no text", m.id))
                    continue
                hint, ad_id, campaign_id = None, None, None
                if m.referral is not None:
                    hint = "ads" if (m.referral.source_type or "ad") == "ad" else "social_post"
                    ad_id = m.referral.source_id
                elif m.type == "button" and m.context is not None:
                    hint = "campaign_blast"  # quick-reply button of a template we broadcast
                    campaign_id = m.context.id
                result.messages.append(NormalizedMessage(
                    source=SOURCE, message_id=m.id, sent_at=sent_at, direction="inbound",
                    sender_type="customer", text=_text_of(m), customer_key=key, phone=phone,
                    user_id=uid, message_type=m.type, channel_hint=hint, ad_id=ad_id,
                    campaign_id=campaign_id, medium=MEDIUM,
                    referral=m.referral.model_dump(exclude_none=True) if m.referral else None,
                    context_id=m.context.id if m.context else None,
                    campaign_name=display_name(m.referral.headline) if m.referral else None,
                ))
            for i, m in enumerate(value.message_echoes):
                sent_at = parse_timestamp(m.timestamp, f"{where}.message_echoes.{i}.timestamp")
                key, phone, uid = _customer(m.to, m.user_id)
                if key is None:
                    result.dead_letters.append(DeadLetter(
                        SOURCE, "no_customer_key",
                        f"{where}.message_echoes.{i}: `to` is not a valid international number",
                        m.id))
                    continue
                result.messages.append(NormalizedMessage(
                    source=SOURCE, message_id=m.id, sent_at=sent_at, direction="outbound",
                    sender_type="business", text=_text_of(m), customer_key=key, phone=phone,
                    user_id=uid, message_type=m.type, medium=MEDIUM,
                    context_id=m.context.id if m.context else None,
                    template_name=_template_name(m),
                ))
            for i, s in enumerate(value.statuses):
                status_at = parse_timestamp(s.timestamp, f"{where}.statuses.{i}.timestamp")
                recipient = phones.from_provider_id(s.recipient_id) or s.recipient_user_id \
                    or s.recipient_id
                result.statuses.append(StatusEvent(
                    SOURCE, s.id, s.status, status_at, recipient=recipient, errors=s.errors))
    return result
