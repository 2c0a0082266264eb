"""Channel and medium labels (docs/funnel.md, Lead).

A CRM labels a conversation with one word, and that word names one of two things:

- the **medium**, the app the chat runs on: whatsapp, instagram, messenger, telegram, line,
  email, sms, webchat. It says nothing about why the customer wrote, so it never decides the
  lead's channel; it is kept in its own column;
- the **marketing channel**, where the customer came from: ads, campaign_blast, website, and
  any label of the CRM's own (tiktok, referral, event_jakarta, ...), kept as given.

`label(value)` normalizes a label (case, spaces and punctuation folded to `_`, bounded, safe
for a column and a metric) and tells which of the two it is, folding aliases ("wa" is
whatsapp, "iklan" is ads). A website chat widget (webchat, livechat, widget) is both: the
medium webchat, on the website channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_LABEL = 40
"""Characters kept of a label."""

CHANNEL_ALIASES = {
    "ads": "ads", "ad": "ads", "iklan": "ads", "meta_ads": "ads", "facebook_ads": "ads",
    "fb_ads": "ads", "ctwa": "ads", "instagram_ads": "ads", "ig_ads": "ads", "google_ads": "ads",
    "tiktok_ads": "ads", "paid_ads": "ads",
    "campaign_blast": "campaign_blast", "campaign": "campaign_blast", "blast": "campaign_blast",
    "broadcast": "campaign_blast", "broadcast_campaign": "campaign_blast",
    "wa_blast": "campaign_blast", "wa_broadcast": "campaign_blast",
    "website": "website", "web": "website", "site": "website", "landing_page": "website",
    "landing": "website", "lp": "website",
    "direct": "direct", "organic": "direct",
}
"""Names CRMs use for the funnel's own channels. Other labels are channels of their own."""

MEDIUM_ALIASES = {
    "whatsapp": "whatsapp", "wa": "whatsapp", "whatsapp_business": "whatsapp",
    "wa_business": "whatsapp", "waba": "whatsapp", "whatsapp_cloud": "whatsapp",
    "whatsapp_api": "whatsapp", "wa_api": "whatsapp",
    "instagram": "instagram", "ig": "instagram", "insta": "instagram", "instagram_dm": "instagram",
    "ig_dm": "instagram",
    "messenger": "messenger", "facebook": "messenger", "fb": "messenger",
    "facebook_messenger": "messenger", "fb_messenger": "messenger", "fbm": "messenger",
    "telegram": "telegram", "tele": "telegram", "tg": "telegram",
    "line": "line", "line_oa": "line",
    "email": "email", "e_mail": "email", "mail": "email", "gmail": "email",
    "sms": "sms",
    "webchat": "webchat", "web_chat": "webchat", "livechat": "webchat", "live_chat": "webchat",
    "widget": "webchat", "web_widget": "webchat", "chat_widget": "webchat",
}
"""Names of messaging media."""

_ON_THE_WEBSITE = frozenset({"webchat"})
"""Media that are themselves on the website channel."""

_UNSAFE = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Label:
    """What one label says: a marketing channel, a medium, or (a web chat) both."""

    channel: str | None = None
    medium: str | None = None


def normalized(value: object) -> str | None:
    """A label folded to lower-case words joined by `_`, at most `MAX_LABEL` characters."""
    if value is None:
        return None
    name = _UNSAFE.sub("_", str(value).strip().casefold()).strip("_")[:MAX_LABEL].strip("_")
    return name or None


def label(value: object) -> Label:
    """The channel and / or medium a CRM's label names (module docstring)."""
    name = normalized(value)
    if name is None:
        return Label()
    if name in CHANNEL_ALIASES:
        return Label(channel=CHANNEL_ALIASES[name])
    medium = MEDIUM_ALIASES.get(name)
    if medium is not None:
        return Label(channel="website" if medium in _ON_THE_WEBSITE else None, medium=medium)
    return Label(channel=name)


def medium(value: object) -> str | None:
    """A label that is known to name a medium (a CRM's room type): the medium, aliases folded;
    an unknown one is kept as given ("tiktok" rooms are the tiktok medium)."""
    name = normalized(value)
    if name is None:
        return None
    if name == "website" or name == "web":
        return "webchat"
    return MEDIUM_ALIASES.get(name, name)


_SOURCE_MEDIUM = {"whatsapp": "whatsapp"}
"""Sources that are one medium (the WhatsApp Cloud API)."""


@lru_cache(maxsize=4096)
def settled(source: str, channel_hint: str | None, medium_name: str | None,
            room_channel: str | None) -> Label:
    """A normalized message's channel hint and medium as stored. For messages normalized by
    this version this changes nothing (`label` of a channel is that channel); stream entries
    written before media were told apart carry a medium in `channel_hint` (a generic
    "instagram" label) or none at all, and are settled the same way here. Cached: a drain
    meets the same few combinations of labels over and over."""
    hint = label(channel_hint)
    found = medium_name or hint.medium or _SOURCE_MEDIUM.get(source) or (
        medium(room_channel) if source == "qontak" else None)
    return Label(channel=hint.channel, medium=found)
