"""Value types shared by the engine's modules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

Stage = Literal["opening", "booking", "transaction"]
STAGES: tuple[Stage, ...] = ("opening", "booking", "transaction")

# Funnel channels (docs/funnel.md); a keyword's channel may also name a campaign.
CHANNELS = ("ads", "campaign_blast", "website", "direct")


@dataclass(frozen=True, slots=True)
class Keyword:
    """One keyword of the sheet: `channel` is set for opening keywords (whose channel or
    campaign the prefilled text belongs to)."""

    stage: Stage
    keyword: str
    channel: str | None = None
    active: bool = True


@dataclass(frozen=True, slots=True)
class Hit:
    """A keyword found in a message (offsets are in the normalized text)."""

    stage: Stage
    keyword: str
    channel: str | None
    start: int
    end: int
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Classification:
    """What one message says for the funnel."""

    stages: tuple[Stage, ...] = ()          # stages matched (not negated), in STAGES order
    keywords: tuple[str, ...] = ()          # keywords hit (not negated)
    opening_keyword: str | None = None      # first opening keyword hit
    opening_channel: str | None = None      # its channel
    amount: Decimal | None = None           # integer Rupiah of a payment statement
    payment: bool = False                   # a transaction keyword in a payment statement
    requested_date: date | None = None      # a date the customer asks for (booking messages)
    keyword_version: str = ""
