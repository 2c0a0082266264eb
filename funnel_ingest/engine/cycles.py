"""Lead cycles: one customer's classified messages -> funnel rows (docs/funnel.md).

A pure, deterministic function of the set of messages: they are sorted by
(sent_at, source, message_id, room_key) first, so delivery order never matters.

- A cycle opens at the customer's first inbound message. A later inbound message with an
  opening keyword opens a new cycle when the current one started more than
  `CycleRules.lead_window_days` before it, or, once the current one has a transaction, when it
  is a new inquiry: it carries a marketing signal (an opening keyword with a channel, an ad
  referral, a campaign reply, a campaign message received since the last payment), or it comes
  `CycleRules.quiet_hours_after_payment` or more after the cycle's last payment, and it is not
  itself a payment (a settlement after the down payment continues the purchase). A "halo kak,
  makasih ya" two hours after paying stays in the paid cycle. Otherwise the lead keeps its
  first-touch channel.
- Channel, from the cycle's opening message: the channel of its opening keyword; else its hint
  (an ad referral, a campaign reply, the website, any other marketing label a CRM gave);
  else `campaign_blast` when a campaign message reached the customer within
  `CAMPAIGN_REPLY_WINDOW` before; else `direct`. Its campaign id: the opening message's own
  (a template reply's context), else, on the campaign_blast channel, that campaign message's. A medium (whatsapp, instagram, ...) is never a
  channel: it is the lead's `medium`, from the opening message (else the cycle's first message
  that names one).
- Booking: the first message of the cycle (either direction) with a booking keyword, before or
  after the payment; none when no message says it. Nothing is copied from the transaction:
  summaries count a paid lead as booked (report.query), the columns hold what was said.
- Transaction: the first payment statement of the cycle; its value is the amount of the first
  payment statement that has one; every payment statement is also kept as an event, so down
  payment + settlement can be summed.
- Messages before the customer's first inbound message (a campaign blast) open no cycle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

CAMPAIGN_REPLY_WINDOW = timedelta(days=7)
NO_CHANNEL = frozenset({None, "", "direct"})
"""Hints that name no marketing channel (an explicit "direct" says nothing a campaign reply
would not override)."""


@dataclass(frozen=True, slots=True)
class CycleRules:
    """The settings the cycle rules read (LEAD_WINDOW_DAYS, QUIET_HOURS_AFTER_PAYMENT)."""

    lead_window_days: int = 30
    quiet_hours_after_payment: float = 24.0


DEFAULT_RULES = CycleRules()


@dataclass(frozen=True, slots=True)
class CycleMessage:
    """The columns of a classified message the funnel needs."""

    pk: int
    source: str
    message_id: str
    room_key: str
    sent_at: datetime
    direction: str
    stages: tuple[str, ...]
    payment: bool
    amount: Decimal | None
    phone: str | None = None
    channel_hint: str | None = None
    opening_channel: str | None = None
    opening_keyword: str | None = None
    campaign_id: str | None = None
    ad_id: str | None = None
    requested_date: date | None = None
    medium: str | None = None

    @property
    def order(self) -> tuple:
        return (self.sent_at, self.source, self.message_id, self.room_key)

    @property
    def is_campaign(self) -> bool:
        """An outbound campaign message (a blast a later opening may answer)."""
        return self.direction != "inbound" and self.channel_hint == "campaign_blast"


@dataclass(slots=True)
class Lead:
    lead_id: str
    customer_key: str
    cycle: int
    channel: str
    lead_at: datetime
    opening_source: str
    opening_message_id: str
    phone: str | None = None
    opening_keyword: str | None = None
    campaign_id: str | None = None
    ad_id: str | None = None
    booking_at: datetime | None = None
    transaction_at: datetime | None = None
    transaction_value: Decimal | None = None
    transaction_total: Decimal | None = None
    transactions: int = 0
    requested_date: date | None = None
    medium: str | None = None
    last_paid_at: datetime | None = None   # not a column: the new-inquiry rule reads it

    def dates(self, tz: ZoneInfo) -> tuple[date, date | None, date | None]:
        def local(ts: datetime | None) -> date | None:
            return ts.astimezone(tz).date() if ts else None
        return local(self.lead_at), local(self.booking_at), local(self.transaction_at)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Payment:
    message_pk: int
    lead_id: str
    customer_key: str
    paid_at: datetime
    amount: Decimal | None
    direction: str


@dataclass(slots=True)
class CustomerFunnel:
    leads: list[Lead] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)


def lead_id(customer_key: str, opening: CycleMessage) -> str:
    raw = f"{customer_key}\x1f{opening.source}\x1f{opening.room_key}\x1f{opening.message_id}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _channel(opening: CycleMessage, last_campaign: CycleMessage | None) -> tuple[str, str | None]:
    """Channel of a cycle and the campaign it came from (if any): the opening message's own
    campaign id (a template reply's context), else, for a campaign_blast lead, the id of the
    campaign message that reached the customer in the CAMPAIGN_REPLY_WINDOW before."""
    recent = last_campaign if last_campaign is not None and (
        opening.sent_at - last_campaign.sent_at <= CAMPAIGN_REPLY_WINDOW) else None
    if opening.opening_channel:
        channel = opening.opening_channel
    elif opening.channel_hint not in NO_CHANNEL:
        channel = opening.channel_hint  # type: ignore[assignment]
    elif recent is not None:
        return "campaign_blast", recent.campaign_id or opening.campaign_id
    else:
        return "direct", opening.campaign_id
    if opening.campaign_id is None and channel == "campaign_blast" and recent is not None:
        return channel, recent.campaign_id
    return channel, opening.campaign_id


def _opens(m: CycleMessage, current: Lead, last_campaign: CycleMessage | None,
           window: timedelta, quiet: timedelta) -> bool:
    """Does the inbound opening message `m` open a new cycle after `current`?"""
    if m.sent_at - current.lead_at > window:
        return True
    if current.last_paid_at is None:
        return False
    # a payment after a payment (the settlement of a down payment, greeted or not) is the same
    # purchase
    if m.payment:
        return False
    # after a purchase only a new inquiry opens a lead, not the thanks that follow it
    signal = bool(m.opening_channel or m.ad_id or m.campaign_id) or (
        last_campaign is not None and last_campaign.sent_at > current.last_paid_at
        and m.sent_at - last_campaign.sent_at <= CAMPAIGN_REPLY_WINDOW)
    return signal or m.sent_at - current.last_paid_at >= quiet


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a recompute starts when the cycles before it cannot have changed: the messages
    given begin with the opening message of cycle `cycle`; `phone` and `last_campaign` are what
    the messages before it left (the customer's phone so far, their latest campaign message).

    Sound because a cycle's rows depend only on the messages from its opening message to the
    next opening, and whether a message opens a cycle only on the messages before it: a batch
    whose messages all come after the opening of cycle k changes cycles k.. only."""

    cycle: int
    phone: str | None = None
    last_campaign: CycleMessage | None = None


def customer_funnel(customer_key: str, messages: Iterable[CycleMessage],
                    rules: CycleRules = DEFAULT_RULES, resume: Resume | None = None
                    ) -> CustomerFunnel:
    """All lead cycles of one customer (from `resume.cycle` on, when given: see `Resume`)."""
    window = timedelta(days=rules.lead_window_days)
    quiet = timedelta(hours=rules.quiet_hours_after_payment)
    out = CustomerFunnel()
    current: Lead | None = None
    last_campaign = resume.last_campaign if resume else None
    phone = resume.phone if resume else None
    first_cycle = resume.cycle if resume else 1
    ordered: Sequence[CycleMessage] = sorted(messages, key=lambda m: m.order)
    if resume is not None and ordered and ordered[0].direction != "inbound":
        raise ValueError("a resumed recompute starts at an opening (inbound) message")
    for m in ordered:
        inbound = m.direction == "inbound"
        if inbound and m.phone:
            phone = phone or m.phone
        if m.is_campaign:
            last_campaign = m
        opens = inbound and (current is None or (
            "opening" in m.stages and _opens(m, current, last_campaign, window, quiet)))
        if opens:
            channel, campaign = _channel(m, last_campaign)
            current = Lead(
                lead_id=lead_id(customer_key, m), customer_key=customer_key,
                cycle=first_cycle + len(out.leads), channel=channel, lead_at=m.sent_at,
                opening_source=m.source, opening_message_id=m.message_id, phone=phone,
                opening_keyword=m.opening_keyword, campaign_id=campaign, ad_id=m.ad_id,
                medium=m.medium)
            out.leads.append(current)
        if current is None:
            continue  # before the customer's first inbound message
        if current.phone is None and phone:
            current.phone = phone
        if current.medium is None and m.medium:
            current.medium = m.medium
        if "booking" in m.stages:
            if current.booking_at is None:
                current.booking_at = m.sent_at
            if current.requested_date is None and m.requested_date is not None:
                current.requested_date = m.requested_date
        if m.payment:
            out.payments.append(Payment(m.pk, current.lead_id, customer_key, m.sent_at,
                                        m.amount, m.direction))
            current.transactions += 1
            current.last_paid_at = m.sent_at
            if current.transaction_at is None:
                current.transaction_at = m.sent_at
            if m.amount is not None:
                if current.transaction_value is None:
                    current.transaction_value = m.amount
                current.transaction_total = (current.transaction_total or Decimal(0)) + m.amount
    return out
