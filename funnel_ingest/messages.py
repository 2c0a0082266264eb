"""The normalized message: what every provider payload becomes, and what goes on the stream.

Stream entries are flat string fields (Redis stream fields), so they can be read by any
consumer and inspected with `XRANGE`; `referral` is JSON text. Empty values are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Literal

import orjson

Direction = Literal["inbound", "outbound"]
SOURCES = ("whatsapp", "qontak", "generic")


@dataclass(slots=True)
class NormalizedMessage:
    source: str                       # whatsapp | qontak | generic (the route, never caller text)
    message_id: str                   # the provider's id
    sent_at: datetime                 # UTC, from the provider's timestamp (not arrival)
    direction: Direction              # inbound = from the customer
    sender_type: str                  # customer | agent | bot | business
    text: str = ""
    customer_key: str | None = None   # E.164 phone, else `bsuid:<id>` / `<source>-user:<id>`
    phone: str | None = None          # the customer's E.164 phone when known
    user_id: str | None = None        # provider user id when the phone is withheld (BSUID)
    room_id: str | None = None        # conversation id for formats that have one
    message_type: str | None = None   # text | button | interactive | image | …
    channel_hint: str | None = None   # ads | campaign_blast | website | direct | <room channel>
    room_channel: str | None = None   # the CRM's channel name for the room (wa, ig, web…)
    medium: str | None = None         # the messaging app: whatsapp | instagram | webchat | …
    campaign_id: str | None = None
    ad_id: str | None = None
    referral: dict | None = None      # WhatsApp Click-to-WhatsApp referral, kept whole
    raw_key: str = ""                 # S3 object holding the raw body …
    raw_line: int = 0                 # … and its line in that object
    received_at: datetime | None = None
    context_id: str | None = None     # id of the message this one replies to (templates)
    # what the payload says about the message's campaign (docs/funnel.md, Campaigns); entries
    # written before these fields existed simply lack them
    template_name: str | None = None  # the WhatsApp template an outbound message was sent as
    campaign_name: str | None = None  # the name of its broadcast, campaign label or ad
    broadcast_id: str | None = None   # the CRM's broadcast (campaign) id, when it gives one

    @property
    def room_key(self) -> str:
        """Part of the idempotency key: the room, for formats whose ids are only room-unique."""
        return (self.room_id or "") if self.source == "generic" else ""

    def idempotency_key(self) -> str:
        """Short stable key of (source, room, message id) for the API's dedupe cache."""
        raw = f"{self.source}\x1f{self.room_key}\x1f{self.message_id}".encode()
        return hashlib.blake2b(raw, digest_size=16).hexdigest()

    def to_fields(self) -> dict[str, str]:
        return _flat_fields(self, _MESSAGE_FIELDS)

    @classmethod
    def from_fields(cls, data: dict[str | bytes, str | bytes]) -> NormalizedMessage:
        """The inverse of `to_fields` (a stream entry's fields, bytes or str); fields this
        version does not know are ignored."""
        kwargs: dict = {}
        for k, v in data.items():
            name = k.decode() if k.__class__ is bytes else k
            if name not in _MESSAGE_FIELD_SET:
                continue
            value: object = v.decode() if v.__class__ is bytes else v
            if name in _PARSED_FIELDS:
                value = _PARSED_FIELDS[name](value)
            kwargs[name] = value
        return cls(**kwargs)


@dataclass(slots=True)
class StatusEvent:
    """A delivery receipt of one of our outbound messages (never a customer message)."""

    source: str
    message_id: str
    status: str                      # sent | delivered | read | failed | …
    status_at: datetime
    recipient: str | None = None     # E.164 or provider user id
    errors: list | None = None
    raw_key: str = ""
    raw_line: int = 0

    def idempotency_key(self) -> str:
        raw = f"{self.source}\x1fstatus\x1f{self.message_id}\x1f{self.status}".encode()
        return hashlib.blake2b(raw, digest_size=16).hexdigest()

    def to_fields(self) -> dict[str, str]:
        return _flat_fields(self, _STATUS_FIELDS)

    @classmethod
    def from_fields(cls, fields: dict) -> StatusEvent:
        """The inverse of `to_fields` (a stream entry's fields, bytes or str)."""
        d = {text(k): text(v) for k, v in fields.items()}
        return cls(d["source"], d["message_id"], d["status"],
                   datetime.fromisoformat(d["status_at"]), d.get("recipient"),
                   orjson.loads(d["errors"]) if d.get("errors") else None,
                   d.get("raw_key", ""), int(d.get("raw_line", 0)))


@dataclass(slots=True)
class DeadLetter:
    """A well-formed item we cannot use (no customer key, unsupported type), kept with a reason."""

    source: str
    reason: str
    detail: str
    message_id: str | None = None
    raw_key: str = ""
    raw_line: int = 0

    def to_fields(self) -> dict[str, str]:
        return _flat_fields(self, _DEAD_FIELDS)

    @classmethod
    def from_fields(cls, fields: dict) -> DeadLetter:
        """The inverse of `to_fields` (lenient: a dead letter is kept whatever it lacks)."""
        d = {text(k): text(v) for k, v in fields.items()}
        return cls(d.get("source", "?"), d.get("reason", "unknown"), d.get("detail", ""),
                   d.get("message_id"), d.get("raw_key", ""), int(d.get("raw_line", 0)))


@dataclass(slots=True)
class ParseResult:
    messages: list[NormalizedMessage] = field(default_factory=list)
    statuses: list[StatusEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def extend(self, other: ParseResult) -> None:
        self.messages.extend(other.messages)
        self.statuses.extend(other.statuses)
        self.dead_letters.extend(other.dead_letters)

    def __len__(self) -> int:
        return len(self.messages) + len(self.statuses) + len(self.dead_letters)


def shard_for(customer_key: str, shards: int) -> int:
    """Stable shard of a customer key. Mirrored in `append.lua` (first 8 hex digits of SHA-1)."""
    if shards <= 1:
        return 0
    return int(hashlib.sha1(customer_key.encode()).hexdigest()[:8], 16) % shards


def text(value: str | bytes) -> str:
    """A stream field or id as text (redis-py returns bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else value


def _flat_fields(item: object, names: tuple[str, ...]) -> dict[str, str]:
    """Stream fields of an item: strings only, empty values left out, UTC ISO timestamps."""
    out: dict[str, str] = {}
    for name in names:
        value = getattr(item, name)
        if value is None or value == "":
            continue
        if isinstance(value, datetime):
            out[name] = value.astimezone(timezone.utc).isoformat()
        elif isinstance(value, (dict, list)):
            out[name] = orjson.dumps(value).decode()
        else:
            out[name] = str(value)
    return out


_MESSAGE_FIELDS = tuple(f.name for f in fields(NormalizedMessage))
_MESSAGE_FIELD_SET = frozenset(_MESSAGE_FIELDS)
_PARSED_FIELDS = {"sent_at": datetime.fromisoformat, "received_at": datetime.fromisoformat,
                  "referral": orjson.loads, "raw_line": int}
_STATUS_FIELDS = tuple(f.name for f in fields(StatusEvent))
_DEAD_FIELDS = tuple(f.name for f in fields(DeadLetter))
