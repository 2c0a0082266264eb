"""CRM labels: a marketing channel (kept, aliases folded) or a medium (its own column)."""

from __future__ import annotations

import pytest

from funnel_ingest.engine import channels
from funnel_ingest.engine.channels import Label


@pytest.mark.parametrize(("raw", "want"), [
    ("ads", Label("ads")), ("Iklan", Label("ads")), ("CTWA", Label("ads")),
    ("Meta Ads", Label("ads")), ("broadcast", Label("campaign_blast")),
    ("Landing Page", Label("website")), ("organic", Label("direct")),
    ("tiktok", Label("tiktok")), ("TikTok", Label("tiktok")), ("Referral", Label("referral")),
    ("event jakarta", Label("event_jakarta")), ("Event-Jakarta 2026", Label("event_jakarta_2026")),
    ("WhatsApp", Label(None, "whatsapp")), ("wa", Label(None, "whatsapp")),
    ("IG", Label(None, "instagram")), ("Instagram DM", Label(None, "instagram")),
    ("fb messenger", Label(None, "messenger")), ("Telegram", Label(None, "telegram")),
    ("LINE", Label(None, "line")), ("e-mail", Label(None, "email")), ("SMS", Label(None, "sms")),
    ("livechat", Label("website", "webchat")), ("Web Chat", Label("website", "webchat")),
    (None, Label()), ("", Label()), ("  ", Label()), ("!!!", Label()),
])
def test_a_label_names_a_channel_or_a_medium(raw, want):
    assert channels.label(raw) == want


def test_labels_are_bounded_and_safe_for_columns():
    name = channels.label("x" * 500 + " ads").channel
    assert name == "x" * channels.MAX_LABEL
    assert channels.label("=HYPERLINK(1)").channel == "hyperlink_1"


def test_labelling_a_channel_again_keeps_it():
    for raw in ("iklan", "tiktok", "broadcast", "web", "event jakarta"):
        once = channels.label(raw).channel
        assert channels.label(once).channel == once


@pytest.mark.parametrize(("room", "medium"), [
    ("wa", "whatsapp"), ("WhatsApp", "whatsapp"), ("ig", "instagram"), ("web", "webchat"),
    ("website", "webchat"), ("livechat", "webchat"), ("telegram", "telegram"),
    ("tiktok", "tiktok"), (None, None),
])
def test_a_room_channel_is_a_medium(room, medium):
    assert channels.medium(room) == medium


def test_stream_entries_of_before_media_were_told_apart_are_settled():
    # a generic "instagram" label used to travel as the channel hint
    assert channels.settled("generic", "instagram", None, None) == Label(None, "instagram")
    assert channels.settled("generic", "tiktok", None, None) == Label("tiktok", None)
    assert channels.settled("whatsapp", "ads", None, None) == Label("ads", "whatsapp")
    assert channels.settled("qontak", "website", None, "website") == Label("website", "webchat")
    assert channels.settled("qontak", None, None, "ig") == Label(None, "instagram")
    # what this version writes is kept as it is
    assert channels.settled("generic", "tiktok", "line", None) == Label("tiktok", "line")
