"""The traffic simulator: deterministic, realistic, and its ground truth consistent.

No services needed: everything here is pure Python.
"""

from __future__ import annotations

import csv
import itertools
import re
import time
import unicodedata
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import phonenumbers
import pytest
from num2words import num2words

from funnel_ingest.ingest import providers
from funnel_ingest.messages import NormalizedMessage
from funnel_ingest.simulate import conversations as simulator
from funnel_ingest.simulate.conversations import (
    FUZZY_OPENINGS,
    TRAPS,
    TYPOS,
    SimMessage,
    Simulation,
    TruthLabel,
    customers_for_messages,
    messages_per_customer,
    simulate,
    truth_leads,
)
from funnel_ingest.simulate.webhooks import to_webhooks

START = datetime(2025, 10, 1, tzinfo=UTC)
KEYWORDS_CSV = Path(simulator.__file__).resolve().parents[1] / "data" / "keywords.csv"


@pytest.fixture(scope="module")
def sim300() -> Simulation:
    return simulate(300, seed=11)


@pytest.fixture(scope="module")
def sim_big() -> Simulation:
    return simulate(3000, seed=5)


def _key(m: NormalizedMessage) -> tuple:
    return (m.source, m.message_id, m.room_key)


def _snapshot(sim: Simulation) -> tuple:
    return ([(tuple(sorted(sm.message.to_fields().items())), sm.truth) for sm in sim.messages],
            list(sim.leads))


# --- determinism, ids, time ---------------------------------------------------------------------

def test_same_seed_same_traffic_and_truth() -> None:
    a, b = simulate(200, seed=7), simulate(200, seed=7)
    assert _snapshot(a) == _snapshot(b)
    assert _snapshot(a) != _snapshot(simulate(200, seed=8))
    assert a.deliveries(seed=3) == b.deliveries(seed=3)
    messages = [sm.message for sm in a.messages]
    assert [s.body for s in to_webhooks(messages)] == [s.body for s in to_webhooks(messages)]


def test_ids_unique_and_messages_in_true_time_order(sim_big: Simulation) -> None:
    keys = [_key(sm.message) for sm in sim_big.messages]
    assert len(keys) == len(set(keys))
    order = [(sm.message.sent_at, sm.message.source, sm.message.message_id)
             for sm in sim_big.messages]
    assert order == sorted(order)
    # generic ids are only unique within a room (the room is part of the key)
    generic_ids = Counter(sm.message.message_id for sm in sim_big.messages
                          if sm.message.source == "generic")
    assert generic_ids.most_common(1)[0][1] > 1


def test_timestamps_utc_within_the_window() -> None:
    sim = simulate(500, seed=2, start=START, days=10)
    end = START + timedelta(days=10)
    for sm in sim.messages:
        assert sm.message.sent_at.tzinfo is not None
        assert sm.message.sent_at.utcoffset() == timedelta(0)
        assert START <= sm.message.sent_at < end
        assert sm.message.sent_at.microsecond == 0  # providers send whole seconds


def test_phones_valid_e164_mostly_indonesian(sim_big: Simulation) -> None:
    phones = {sm.message.phone for sm in sim_big.messages if sm.message.phone}
    for p in phones:
        parsed = phonenumbers.parse(p, None)
        assert phonenumbers.is_valid_number(parsed), p
        assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == p
    indonesian = [p for p in phones if p.startswith("+628")]
    assert len(indonesian) > 0.9 * len(phones)
    assert any(p.startswith("+65") for p in phones) and any(p.startswith("+60") for p in phones)


# --- deliveries ---------------------------------------------------------------------------------

def test_deliveries_at_least_once_with_duplicates_and_reordering(sim_big: Simulation) -> None:
    delivered = sim_big.deliveries(duplicate_rate=0.05, seed=1)
    counts = Counter(_key(m) for m in delivered)
    assert set(counts) == {_key(sm.message) for sm in sim_big.messages}
    extra = len(delivered) - len(sim_big.messages)
    assert 0.03 * len(sim_big.messages) < extra < 0.10 * len(sim_big.messages)
    assert max(counts.values()) >= 3
    # out of order: a message arrives after a later-sent one, also within one customer
    sent = [m.sent_at for m in delivered]
    assert any(b < a for a, b in itertools.pairwise(sent))
    last: dict[str, datetime] = {}
    overtaken = 0
    for m in delivered:
        if m.customer_key in last and m.sent_at < last[m.customer_key]:
            overtaken += 1
        last[m.customer_key] = max(m.sent_at, last.get(m.customer_key, m.sent_at))
    assert overtaken > 0
    # arrival order, never before sending, within the window
    arrivals = [m.received_at for m in delivered]
    assert arrivals == sorted(arrivals)
    assert all(timedelta(0) <= m.received_at - m.sent_at <= timedelta(minutes=10, seconds=2)
               for m in delivered)
    # copies: the originals are untouched
    assert all(sm.message.received_at is None for sm in sim_big.messages)
    assert len(sim_big.deliveries(duplicate_rate=0.0, seed=1)) == len(sim_big.messages)


# --- truth ----------------------------------------------------------------------------------------

def test_the_simulation_has_what_the_funnel_rules_are_about(sim_big: Simulation) -> None:
    """Paid leads without a booking message, bookings said after paying, CRM labels kept as
    channels, media apart from channels, and thanks after buying that open no lead."""
    paid = [ld for ld in sim_big.leads if ld.transaction_at is not None]
    assert any(ld.booking_at is None for ld in paid)
    assert any(ld.booking_at is not None and ld.booking_at > ld.transaction_at for ld in paid)
    assert {"tiktok", "referral", "event_jakarta"} <= {ld.channel for ld in sim_big.leads}
    assert {"whatsapp", "instagram", "webchat"} <= {ld.medium for ld in sim_big.leads}
    courtesy = [s for s in sim_big.messages if s.message.text.lower().startswith("halo kak, thanks")]
    assert courtesy and all("opening" not in s.truth.stages for s in courtesy)


def test_truth_leads_ordered_and_non_negative(sim_big: Simulation) -> None:
    assert sim_big.leads
    for lead in sim_big.leads:
        assert lead.channel in ("ads", "campaign_blast", "website", "direct", "tiktok",
                                "referral", "event_jakarta")
        if lead.booking_at is not None:
            assert lead.lead_at <= lead.booking_at
        if lead.transaction_at is not None:
            assert lead.lead_at <= lead.transaction_at
        else:
            assert lead.transaction_value is None and lead.transaction_total is None
        assert (lead.transaction_value is None) == (lead.transaction_total is None)
        if lead.transaction_value is not None:
            assert 0 <= lead.transaction_value <= lead.transaction_total
            assert lead.transaction_value == lead.transaction_value.to_integral_value()


def test_labels_are_consistent(sim_big: Simulation) -> None:
    for sm in sim_big.messages:
        t = sm.truth
        assert isinstance(t, TruthLabel)
        assert t.payment == ("transaction" in t.stages)
        assert t.amount is None or (t.payment and t.amount > 0)
        assert t.opening_channel is None or "opening" in t.stages
        if t.opening_channel:
            assert sm.message.direction == "inbound"


def test_each_channel_and_source_appears(sim300: Simulation) -> None:
    assert {lead.channel for lead in sim300.leads} >= {"ads", "campaign_blast", "website",
                                                       "direct", "tiktok"}
    msgs = [sm.message for sm in sim300.messages]
    assert {m.source for m in msgs} == {"whatsapp", "qontak", "generic"}
    by_source = Counter(m.source for m in msgs)
    assert by_source["whatsapp"] > by_source["qontak"] > by_source["generic"]
    assert {(m.source, m.direction) for m in msgs} >= {
        (s, d) for s in ("whatsapp", "qontak", "generic") for d in ("inbound", "outbound")}
    assert {m.sender_type for m in msgs} == {"customer", "agent", "bot", "business"}
    assert any(m.referral and m.channel_hint == "ads" and m.ad_id for m in msgs)
    assert any(m.message_type == "button" and m.channel_hint == "campaign_blast" for m in msgs)
    assert any(m.source == "qontak" and m.sender_type == "bot" and m.channel_hint == "campaign_blast"
               for m in msgs)
    assert any(m.customer_key.startswith("bsuid:ID.") and m.phone is None for m in msgs)


def test_referral_only_on_the_first_message_after_the_click(sim_big: Simulation) -> None:
    by_customer: dict[str, list[NormalizedMessage]] = defaultdict(list)
    for sm in sim_big.messages:
        by_customer[sm.message.customer_key].append(sm.message)
    for msgs in by_customer.values():
        for prev, m in itertools.pairwise(msgs):
            if m.referral:
                assert m.direction == "inbound"
                assert not prev.referral


def test_scenarios_the_engine_must_handle() -> None:
    """The mix holds every case of the lead-cycle rules (so engine tests on it cover them)."""
    sim = simulate(3000, seed=3, days=75)
    by_customer: dict[str, list[SimMessage]] = defaultdict(list)
    for sm in sim.messages:
        by_customer[sm.message.customer_key].append(sm)
    leads_of: dict[str, list] = defaultdict(list)
    for lead in sim.leads:
        leads_of[lead.customer_key].append(lead)
    seen = Counter()
    window = timedelta(days=30)
    for key, leads in leads_of.items():
        msgs = by_customer[key]
        for prev, nxt in itertools.pairwise(leads):
            if prev.transaction_at is not None and nxt.lead_at - prev.lead_at <= window:
                seen["new cycle after a transaction"] += 1
            if prev.transaction_at is None and nxt.lead_at - prev.lead_at > window:
                seen["new cycle after the window"] += 1
        for n, lead in enumerate(leads):
            next_at = leads[n + 1].lead_at if n + 1 < len(leads) else datetime.max.replace(
                tzinfo=UTC)
            if any(sm.message.direction == "inbound" and "opening" in sm.truth.stages
                   and lead.lead_at + timedelta(hours=1) < sm.message.sent_at < next_at
                   for sm in msgs):
                seen["opening message kept in the cycle"] += 1
            opening = next(sm for sm in msgs if sm.message.sent_at == lead.lead_at)
            if (lead.channel == "campaign_blast" and not opening.truth.opening_channel
                    and opening.message.channel_hint != "campaign_blast"):
                seen["campaign by the 7-day rule"] += 1
            blasts = [sm.message.sent_at for sm in msgs if sm.message.channel_hint == "campaign_blast"
                      and sm.message.direction == "outbound" and sm.message.sent_at < lead.lead_at]
            if lead.channel == "direct" and blasts and lead.lead_at - blasts[-1] > timedelta(days=7):
                seen["late campaign reply is direct"] += 1
            if lead.transaction_at is not None and lead.booking_at is None:
                seen["paid without a booking message"] += 1
            if lead.transaction_at is not None and lead.booking_at is not None \
                    and lead.booking_at > lead.transaction_at:
                seen["booking said after paying"] += 1
            if lead.channel not in ("ads", "campaign_blast", "website", "direct"):
                seen["a CRM's own label"] += 1
            if lead.transaction_at is not None and any(
                    sm.message.direction == "inbound" and "opening" in sm.truth.stages
                    and lead.transaction_at < sm.message.sent_at < next_at for sm in msgs):
                seen["opening after paying kept in the lead"] += 1
            if lead.transaction_total is not None and lead.transaction_total > lead.transaction_value:
                seen["down payment + settlement"] += 1
            if lead.channel == "ads" and opening.truth.opening_channel is None:
                seen["ads by hint (referral, ads room)"] += 1
            if lead.channel == "ads" and opening.message.referral and n > 0:
                seen["back through a new ad click"] += 1
            if lead.booking_at is not None and any(
                    sm.message.sent_at == lead.booking_at and sm.message.direction == "outbound"
                    for sm in msgs):
                seen["booking by the agent"] += 1
            if lead.channel == "website" and opening.message.channel_hint == "website":
                seen["website by hint"] += 1
            if lead.phone is None:
                seen["no phone"] += 1
    print(dict(seen))
    for case in ("new cycle after a transaction", "new cycle after the window",
                 "opening message kept in the cycle", "campaign by the 7-day rule",
                 "late campaign reply is direct", "paid without a booking message",
                 "booking said after paying", "a CRM's own label",
                 "opening after paying kept in the lead",
                 "down payment + settlement", "ads by hint (referral, ads room)",
                 "back through a new ad click", "booking by the agent", "website by hint",
                 "no phone"):
        assert seen[case] > 0, case
    # customers who only got a blast have no lead
    assert any(all(sm.message.direction == "outbound" for sm in msgs) and key not in leads_of
               for key, msgs in by_customer.items())


def test_truth_follows_the_cycle_rules_on_a_handmade_story() -> None:
    t0 = datetime(2025, 10, 1, 3, tzinfo=UTC)

    def msg(minutes: float, direction: str, text: str, label: TruthLabel, **kw) -> SimMessage:
        return SimMessage(NormalizedMessage(
            source="qontak", message_id=f"id{minutes}", sent_at=t0 + timedelta(minutes=minutes),
            direction=direction, sender_type="customer" if direction == "inbound" else "agent",
            text=text, customer_key="+6281234567890", **kw), label)

    o, none = TruthLabel(frozenset({"opening"})), TruthLabel(frozenset())
    paid = lambda amount=None: TruthLabel(frozenset({"transaction"}), True,
                                          None if amount is None else Decimal(amount))
    story = [
        msg(0, "outbound", "Promo!", none, channel_hint="campaign_blast"),   # before any inbound
        msg(60, "inbound", "halo kak", o),                                   # cycle 1, campaign
        msg(61, "outbound", "Silakan booking", TruthLabel(frozenset({"booking"}))),
        msg(90, "inbound", "masih ada?", o),                                 # same cycle
        msg(120, "inbound", "dp 500rb", paid(500_000)),
        msg(121, "outbound", "DP sudah kami terima", paid()),
        msg(3000, "inbound", "pelunasan 1jt", paid(1_000_000)),
        msg(20000, "inbound", "Halo, saya dari website, mau tanya",          # cycle 2 (after tx)
            TruthLabel(frozenset({"opening"}), opening_channel="website")),
        msg(20001, "inbound", "sudah tf 250k", paid(250_000)),               # no booking word
        msg(20100, "inbound", "halo kak, mau tanya lagi", o),                # within the quiet
        msg(20002 + 60 * 24 * 31, "inbound", "hai", o),                      # cycle 3 (window)
    ]
    leads = truth_leads("+6281234567890", "+6281234567890", list(reversed(story)), 30 * 86400)
    assert [lead.channel for lead in leads] == ["campaign_blast", "website", "direct"]
    first, second, third = leads
    assert first.lead_at == story[1].message.sent_at
    assert first.booking_at == story[2].message.sent_at
    assert first.transaction_at == story[4].message.sent_at
    assert (first.transaction_value, first.transaction_total) == (500_000, 1_500_000)
    assert second.booking_at is None and second.transaction_at == story[8].message.sent_at
    assert (second.transaction_value, second.transaction_total) == (250_000, 250_000)
    assert third.booking_at is None and third.transaction_value is None


# --- labels agree with the keyword list -----------------------------------------------------------

_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
_NON_ALNUM = re.compile(r"[\W_]+")
_RUNS = re.compile(r"([^\W\d_])\1+")
_PREFIX = "(?:di|ter|pem|pe|ber|me)?"
_SUFFIXES = ("", "nya", "kan", "an", "in", "ing", "ingnya", "ingkan", "ingin")


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _NON_ALNUM.sub(" ", _LETTER_DIGIT.sub(" ", text))
    text = " " + _RUNS.sub(r"\1", text).strip() + " "
    for typo, meant in TYPOS.items():  # the simulator's deliberate misspellings
        text = text.replace(f" {typo} ", f" {meant} ")
    return text


def _reference_keywords() -> list[tuple[str, str, str | None, re.Pattern]]:
    out = []
    with KEYWORDS_CSV.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["active"].strip().upper() != "TRUE":
                continue
            kw = _norm(row["keyword"]).strip()
            # letter runs squeezed after the suffix too ("iklan" + "nya" is "iklanya")
            forms = "|".join(re.escape(_RUNS.sub(r"\1", kw + suffix)) for suffix in _SUFFIXES)
            pattern = re.compile(f" {_PREFIX}(?:{forms}) ")
            out.append((row["stage"], kw, row["channel"] or None, pattern))
    return out


def _trap_patterns() -> dict[str, list[re.Pattern]]:
    out: dict[str, list[re.Pattern]] = defaultdict(list)
    for stage, text in TRAPS:
        pieces = [_norm(p).strip() for p in re.split(r"\{\w+\}", text)]
        out[stage].append(re.compile(".*".join(re.escape(p) for p in pieces if p)))
    return out


def test_labels_follow_the_keyword_list(sim_big: Simulation) -> None:
    """A message carries a stage exactly when it contains a keyword of it (whole words, common
    Indonesian affixes, elongations squeezed), except the documented traps; its opening channel
    is that of the channel keyword it mentions first (the longest at one place)."""
    keywords = _reference_keywords()
    traps = _trap_patterns()
    trap_hits = Counter()
    for sm in sim_big.messages:
        norm = _norm(sm.message.text)
        present = {stage for stage, _, _, pat in keywords if pat.search(norm)}
        for stage in present - sm.truth.stages:
            assert any(p.search(norm) for p in traps[stage]), (sm.message.text, stage, sm.truth)
            trap_hits[stage] += 1
        assert sm.truth.stages <= present, (sm.message.text, sm.truth)
        channel_hits = [(m.start(), -len(kw), ch) for stage, kw, ch, pat in keywords
                        if ch and stage == "opening" and (m := pat.search(norm))]
        expected = min(channel_hits)[2] if channel_hits else None
        if sm.message.text in FUZZY_OPENINGS:  # a lightly edited prefilled text
            assert expected is None and sm.message.referral
            expected = FUZZY_OPENINGS[sm.message.text]
        assert sm.truth.opening_channel == expected, (sm.message.text, sm.truth)
    assert trap_hits["booking"] > 0 and trap_hits["transaction"] > 0


def test_texts_are_noisy_indonesian_chat(sim_big: Simulation) -> None:
    texts = [sm.message.text for sm in sim_big.messages]
    joined = "\n".join(texts)
    for needle in ("bookinggg", "sdh trf", "jt", "juta", "rb", "IDR ", "Rp ", "a.n.", "jam 19.00",
                   "tgl 12.12", "order #", "no hp 08", "daftar harga", "facebook", "notebook",
                   "belum transfer", "gak jadi booking", "🙏", "Rp. "):
        assert needle.casefold() in joined.casefold(), needle
    assert any(any("\uff01" <= ch <= "\uff5e" for ch in t) for t in texts)  # full-width
    assert any(t.isupper() for t in texts) and any(t.islower() for t in texts)


def test_amounts_appear_in_the_text(sim_big: Simulation) -> None:
    """A payment amount is written in one of the Indonesian money styles in the message."""
    def spellings(amount: int) -> set[str]:
        dots = f"{amount:,}".replace(",", ".")
        out = {f"rp {dots}", f"rp{dots}", f"rp. {dots},-", f"rp {dots},00", f"idr {amount:,}"}
        if amount % 1000 == 0 and amount < 1_000_000:
            out |= {f"{amount // 1000}rb", f"{amount // 1000} ribu", f"{amount // 1000}k"}
        whole, rest = divmod(amount, 1_000_000)
        frac = f"{rest:06d}".rstrip("0")
        out |= {f"{whole},{frac}jt", f"{whole}.{frac} juta"} if frac else {f"{whole}jt", f"{whole} juta"}
        out.add(num2words(amount, lang="id"))                     # in words
        if rest == 500_000:
            out.add(f"{num2words(whole, lang='id')} setengah juta")  # "dua setengah juta"
        return out

    for sm in sim_big.messages:
        if sm.truth.amount is not None:
            text = unicodedata.normalize("NFKC", sm.message.text).casefold()
            assert any(s in text for s in spellings(int(sm.truth.amount))), (text, sm.truth.amount)


# --- webhooks -------------------------------------------------------------------------------------

_COMPARED = ("source", "message_id", "sent_at", "direction", "sender_type", "text", "phone",
             "user_id", "room_id", "message_type", "channel_hint", "room_channel", "campaign_id",
             "ad_id", "referral", "context_id", "template_name", "campaign_name", "broadcast_id")


def _parse_all(samples) -> list[NormalizedMessage]:
    parsed: list[NormalizedMessage] = []
    for sample in samples:
        result = providers.parse(sample.source, sample.body)
        assert not result.dead_letters and not result.statuses
        assert len(result.messages) == sample.messages
        parsed.extend(result.messages)
    return parsed


def test_webhooks_parse_back_into_the_same_messages(sim300: Simulation) -> None:
    messages = [sm.message for sm in sim300.messages]
    samples = list(to_webhooks(messages, seed=4))
    parsed = _parse_all(samples)
    assert len(parsed) == len(messages)
    by_key = {_key(m): m for m in parsed}
    assert len(by_key) == len(messages)
    for want in messages:
        got = by_key[_key(want)]
        for name in _COMPARED:
            assert getattr(got, name) == getattr(want, name), (name, want, got)
        if want.source == "generic" and want.direction == "outbound":
            assert got.customer_key is None  # resolved from the room at the stream append
        else:
            assert got.customer_key == want.customer_key
    sizes = Counter((s.source, s.messages > 1) for s in samples)
    assert sizes[("whatsapp", True)] > 0 and sizes[("generic", True)] > 0
    assert {s.source for s in samples} == {"whatsapp", "qontak", "generic"}
    assert all(s.messages == 1 for s in samples if s.source == "qontak")
    # a batch holds one customer's messages in one direction
    for sample in samples:
        if sample.messages > 1:
            batch = providers.parse(sample.source, sample.body).messages
            assert len({(m.customer_key, m.room_id, m.direction) for m in batch}) == 1


def test_webhooks_batch_even_in_dense_traffic() -> None:
    sim = simulate(20_000, seed=3, days=2)
    samples = list(to_webhooks(sm.message for sm in sim.messages))
    batched = sum(s.messages for s in samples if s.source == "whatsapp" and s.messages > 1)
    whatsapp = sum(1 for sm in sim.messages if sm.message.source == "whatsapp")
    assert batched > 0.03 * whatsapp


def test_webhooks_of_deliveries_keep_duplicates(sim300: Simulation) -> None:
    delivered = sim300.deliveries(seed=2)
    parsed = _parse_all(to_webhooks(delivered))
    assert Counter(_key(m) for m in parsed) == Counter(_key(m) for m in delivered)


# --- size and speed -------------------------------------------------------------------------------

@pytest.mark.parametrize("days", [7, 30, 90])
def test_customers_for_messages_is_close(days: int) -> None:
    customers = customers_for_messages(30_000, days=days)
    sim = simulate(customers, seed=1, days=days)
    print(f"\ndays={days}: {len(sim.messages) / customers:.2f} messages and "
          f"{len(sim.leads) / customers:.2f} leads per customer")
    assert abs(len(sim.messages) - 30_000) < 0.08 * 30_000
    assert messages_per_customer(30) == simulator.MESSAGES_PER_CUSTOMER


def test_generation_speed() -> None:
    began = time.perf_counter()
    sim = simulate(1000, seed=9)
    took = time.perf_counter() - began
    print(f"\nsimulate(1000): {len(sim.messages)} messages, {len(sim.leads)} leads in {took:.3f}s "
          f"= {len(sim.messages) / took:,.0f} messages/s")
    began = time.perf_counter()
    samples = list(to_webhooks(sm.message for sm in sim.messages))
    took = time.perf_counter() - began
    print(f"to_webhooks: {len(samples)} bodies in {took:.3f}s")
