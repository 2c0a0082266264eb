"""Lead cycles (docs/funnel.md), on hand-built message sequences."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from funnel_ingest.engine.cycles import CycleMessage, CycleRules, Resume, customer_funnel, lead_id

T0 = datetime(2025, 10, 1, 2, 0, tzinfo=timezone.utc)
JKT = ZoneInfo("Asia/Jakarta")
_n = iter(range(1, 10**6))


def msg(minutes: float, direction: str = "inbound", *stages: str, payment: bool = False,
        amount: int | None = None, hint: str | None = None, opening_channel: str | None = None,
        campaign_id: str | None = None, phone: str | None = "+6281234567890",
        ad_id: str | None = None, medium: str | None = None) -> CycleMessage:
    pk = next(_n)
    return CycleMessage(
        pk=pk, source="whatsapp", message_id=f"m{pk:06d}", room_key="",
        sent_at=T0 + timedelta(minutes=minutes), direction=direction,
        stages=tuple(stages) + (("transaction",) if payment else ()), payment=payment,
        amount=Decimal(amount) if amount is not None else None,
        phone=phone if direction == "inbound" else None, channel_hint=hint,
        opening_channel=opening_channel, campaign_id=campaign_id, ad_id=ad_id, medium=medium)


def test_first_inbound_message_opens_a_direct_lead():
    f = customer_funnel("+6281234567890", [msg(0, "inbound", "opening")])
    [lead] = f.leads
    assert lead.channel == "direct" and lead.lead_at == T0 and lead.cycle == 1
    assert lead.phone == "+6281234567890"


def test_opening_keyword_channel_wins_over_the_payload_hint():
    f = customer_funnel("c", [msg(0, "inbound", "opening", opening_channel="website", hint="ads")])
    assert f.leads[0].channel == "website"


def test_ad_referral_hint_gives_ads_and_later_messages_keep_first_touch():
    f = customer_funnel("c", [msg(0, hint="ads"), msg(60, "inbound", "opening",
                                                      opening_channel="website")])
    assert [ld.channel for ld in f.leads] == ["ads"]


def test_reply_within_a_week_of_a_campaign_blast_is_a_campaign_lead():
    blast = msg(0, "outbound", hint="campaign_blast", campaign_id="promo-1212")
    f = customer_funnel("c", [blast, msg(60 * 24 * 2, "inbound", "opening")])
    assert f.leads[0].channel == "campaign_blast"
    assert f.leads[0].campaign_id == "promo-1212"


def test_reply_long_after_a_campaign_blast_is_direct():
    blast = msg(0, "outbound", hint="campaign_blast")
    f = customer_funnel("c", [blast, msg(60 * 24 * 8, "inbound", "opening")])
    assert f.leads[0].channel == "direct"


def test_outbound_messages_before_the_first_inbound_open_no_lead():
    f = customer_funnel("c", [msg(0, "outbound", "booking")])
    assert f.leads == []


def test_booking_is_the_first_booking_message_in_either_direction():
    f = customer_funnel("c", [msg(0), msg(5, "outbound", "booking"), msg(9, "inbound", "booking")])
    assert f.leads[0].booking_at == T0 + timedelta(minutes=5)


def test_transaction_value_is_the_first_payment_and_all_payments_are_kept():
    f = customer_funnel("c", [
        msg(0), msg(10, "inbound", "booking"), msg(20, payment=True, amount=500_000),
        msg(60 * 24, payment=True, amount=1_000_000)])
    [lead] = f.leads
    assert lead.transaction_at == T0 + timedelta(minutes=20)
    assert lead.transaction_value == 500_000 and lead.transaction_total == 1_500_000
    assert lead.transactions == 2 and len(f.payments) == 2


def test_payment_without_amount_takes_the_value_of_the_next_payment_with_one():
    f = customer_funnel("c", [msg(0), msg(10, payment=True), msg(20, payment=True, amount=750_000)])
    lead = f.leads[0]
    assert lead.transaction_at == T0 + timedelta(minutes=10)
    assert lead.transaction_value == 750_000


def test_a_payment_without_a_booking_message_leaves_the_booking_empty():
    f = customer_funnel("c", [msg(0), msg(30, payment=True, amount=100_000)])
    assert f.leads[0].transaction_at is not None
    assert f.leads[0].booking_at is None


def test_a_booking_said_after_the_payment_is_the_booking():
    f = customer_funnel("c", [msg(0), msg(30, payment=True, amount=100_000),
                              msg(35, "inbound", "booking")])
    [lead] = f.leads
    assert lead.booking_at == T0 + timedelta(minutes=35) > lead.transaction_at


HOUR = 60


def test_a_greeting_soon_after_paying_stays_in_the_paid_lead():
    f = customer_funnel("c", [msg(0), msg(10, payment=True, amount=1),
                              msg(10 + 2 * HOUR, "inbound", "opening")])
    assert len(f.leads) == 1


def test_a_greeting_after_the_quiet_hours_opens_a_new_lead():
    f = customer_funnel("c", [msg(0), msg(10, payment=True, amount=1),
                              msg(10 + 25 * HOUR, "inbound", "opening")])
    assert [ld.cycle for ld in f.leads] == [1, 2]
    assert f.leads[1].transaction_at is None


def test_the_quiet_hours_count_from_the_last_payment_and_are_a_setting():
    msgs = [msg(0), msg(10, payment=True, amount=1), msg(10 + 20 * HOUR, payment=True, amount=2),
            msg(10 + 30 * HOUR, "inbound", "opening")]
    assert len(customer_funnel("c", msgs).leads) == 1       # 10 h after the settlement
    assert len(customer_funnel("c", msgs, CycleRules(quiet_hours_after_payment=6)).leads) == 2


def test_a_settlement_after_the_down_payment_continues_the_paid_lead():
    # "halo kak, pelunasan sudah tf ya" three days after the down payment: a greeting (and even
    # a channel keyword) in a payment statement is the same purchase, not a new inquiry
    for signal in ({}, dict(opening_channel="campaign_blast")):
        f = customer_funnel("c", [msg(0), msg(10, payment=True, amount=500),
                                  msg(10 + 72 * HOUR, "inbound", "opening", payment=True,
                                      amount=1500, **signal)])
        assert len(f.leads) == 1, signal
        assert f.leads[0].transactions == 2 and f.leads[0].transaction_total == Decimal(2000)
    # past the lead window it is a new lead like any other opening
    f = customer_funnel("c", [msg(0), msg(10, payment=True, amount=500),
                              msg(31 * 24 * HOUR, "inbound", "opening", payment=True, amount=9)])
    assert len(f.leads) == 2


def test_a_marketing_signal_opens_a_new_lead_soon_after_paying():
    paid = [msg(0), msg(10, payment=True, amount=1)]
    for signal in (dict(opening_channel="website"), dict(hint="ads", ad_id="1202"),
                   dict(hint="campaign_blast", campaign_id="wamid.tpl")):
        f = customer_funnel("c", [*paid, msg(10 + HOUR, "inbound", "opening", **signal)])
        assert len(f.leads) == 2, signal


def test_a_blast_received_since_the_payment_makes_a_greeting_a_new_lead():
    paid = [msg(0), msg(10, payment=True, amount=1)]
    blast = msg(10 + HOUR, "outbound", hint="campaign_blast", campaign_id="promo-2")
    f = customer_funnel("c", [*paid, blast, msg(10 + 2 * HOUR, "inbound", "opening")])
    assert [ld.channel for ld in f.leads] == ["direct", "campaign_blast"]
    assert f.leads[1].campaign_id == "promo-2"
    before = msg(5, "outbound", hint="campaign_blast")       # a blast before the payment
    f = customer_funnel("c", [msg(0), before, msg(10, payment=True, amount=1),
                              msg(10 + 2 * HOUR, "inbound", "opening")])
    assert len(f.leads) == 1


def test_a_crm_label_is_the_channel_and_a_medium_never_is():
    assert customer_funnel("c", [msg(0, hint="tiktok")]).leads[0].channel == "tiktok"
    [lead] = customer_funnel("c", [msg(0, medium="instagram")]).leads
    assert (lead.channel, lead.medium) == ("direct", "instagram")


def test_an_explicit_direct_label_does_not_hide_a_campaign_reply():
    blast = msg(0, "outbound", hint="campaign_blast")
    f = customer_funnel("c", [blast, msg(60, "inbound", "opening", hint="direct")])
    assert f.leads[0].channel == "campaign_blast"


def test_the_medium_is_the_opening_messages_else_the_first_named_in_the_cycle():
    f = customer_funnel("c", [msg(0), msg(5, "outbound", medium="webchat"),
                              msg(9, medium="whatsapp")])
    assert f.leads[0].medium == "webchat"
    f = customer_funnel("c", [msg(0, medium="line"), msg(5, medium="whatsapp")])
    assert f.leads[0].medium == "line"


def test_opening_within_the_window_without_transaction_keeps_the_lead():
    f = customer_funnel("c", [msg(0), msg(60 * 24 * 29, "inbound", "opening")])
    assert len(f.leads) == 1


def test_opening_after_the_window_starts_a_new_cycle():
    f = customer_funnel("c", [msg(0), msg(60 * 24 * 31, "inbound", "opening")])
    assert len(f.leads) == 2
    assert f.leads[1].dates(JKT)[0].isoformat() == "2025-11-01"


def test_inbound_without_opening_keyword_after_the_window_stays_in_the_cycle():
    f = customer_funnel("c", [msg(0), msg(60 * 24 * 45, "inbound")])
    assert len(f.leads) == 1


def test_window_is_configurable():
    f = customer_funnel("c", [msg(0), msg(60 * 24 * 8, "inbound", "opening")], CycleRules(lead_window_days=7))
    assert len(f.leads) == 2


def test_result_does_not_depend_on_delivery_order():
    msgs = [msg(0, hint="ads"), msg(3, "outbound", "booking"), msg(5, payment=True, amount=10),
            msg(60 * 24 * 40, "inbound", "opening"), msg(60 * 24 * 41, "inbound", "booking")]
    expected = customer_funnel("c", msgs)
    for seed in range(20):
        shuffled = msgs[:]
        random.Random(seed).shuffle(shuffled)
        got = customer_funnel("c", shuffled)
        assert [(ld.lead_id, ld.channel, ld.booking_at, ld.transaction_at) for ld in got.leads] == \
               [(ld.lead_id, ld.channel, ld.booking_at, ld.transaction_at) for ld in expected.leads]


def test_business_dates_are_in_the_funnel_timezone():
    late = msg(60 * 20)  # 22:00 UTC = 05:00 next day in Jakarta
    lead = customer_funnel("c", [late]).leads[0]
    assert lead.dates(JKT)[0].isoformat() == "2025-10-02"


def test_withheld_phone_leaves_the_phone_empty():
    lead = customer_funnel("bsuid:ID.1", [msg(0, phone=None)]).leads[0]
    assert lead.phone is None


# --- resuming from a later cycle (the store's incremental recompute) -----------------------------

def _simulated_customers(customers: int, seed: int) -> dict[str, list[CycleMessage]]:
    """The simulator's customers as cycle messages, from their truth labels."""
    from collections import defaultdict

    from funnel_ingest.simulate.conversations import simulate

    sim = simulate(customers, seed=seed, start=datetime(2025, 6, 1, tzinfo=timezone.utc), days=120)
    out: dict[str, list[CycleMessage]] = defaultdict(list)
    for pk, s in enumerate(sim.messages, 1):
        m, lab = s.message, s.truth
        if m.customer_key is None:
            continue
        out[m.customer_key].append(CycleMessage(
            pk, m.source, m.message_id, m.room_key, m.sent_at, m.direction,
            tuple(sorted(lab.stages)), lab.payment, lab.amount, m.phone, m.channel_hint,
            lab.opening_channel, None, m.campaign_id, m.ad_id, None, m.medium))
    return out


def test_resuming_at_any_cycle_opening_gives_the_same_later_cycles():
    resumed_cycles = 0
    for key, messages in _simulated_customers(600, seed=21).items():
        full = customer_funnel(key, messages)
        ordered = sorted(messages, key=lambda m: m.order)
        for k in range(2, len(full.leads) + 1):
            lead = full.leads[k - 1]
            at = next(i for i, m in enumerate(ordered) if lead_id(key, m) == lead.lead_id)
            campaigns = [m for m in ordered[:at] if m.is_campaign]
            resume = Resume(k, full.leads[k - 2].phone, campaigns[-1] if campaigns else None)
            tail = customer_funnel(key, ordered[at:], resume=resume)
            assert tail.leads == full.leads[k - 1:], (key, k)
            later = {ld.lead_id for ld in full.leads[k - 1:]}
            assert tail.payments == [p for p in full.payments if p.lead_id in later]
            resumed_cycles += 1
    assert resumed_cycles > 100  # customers with several cycles, campaigns, repeat buyers


def test_a_resumed_recompute_must_start_at_an_opening():
    import pytest

    with pytest.raises(ValueError):
        customer_funnel("c", [msg(0, "outbound")], resume=Resume(2))
