"""Dates a customer asks for, relative to the message's local date (docs/funnel.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel_ingest.engine.dates import local_date, requested_date

JAKARTA = ZoneInfo("Asia/Jakarta")
# Wednesday 26 November 2025, 10:00 in Jakarta.
WEDNESDAY = datetime(2025, 11, 26, 3, 0, tzinfo=UTC)


def asked(text: str, sent_at: datetime = WEDNESDAY) -> date | None:
    return requested_date(text, sent_at, JAKARTA)


def test_dates_are_relative_to_the_local_business_date():
    late_utc_evening = datetime(2025, 11, 26, 18, 30, tzinfo=UTC)   # 01:30 WIB on 27th
    assert local_date(late_utc_evening, JAKARTA) == date(2025, 11, 27)
    assert asked("besok ya", late_utc_evening) == date(2025, 11, 28)


def test_naive_sent_at_is_utc():
    assert asked("hari ini", datetime(2025, 11, 26, 20, 0)) == date(2025, 11, 27)


@pytest.mark.parametrize(("text", "expected"), [
    ("hari ini bisa?", date(2025, 11, 26)),
    ("nanti malam ya", date(2025, 11, 26)),
    ("besok ya kak", date(2025, 11, 27)),
    ("bsk jam 7", date(2025, 11, 27)),
    ("lusa", date(2025, 11, 28)),
    ("besok lusa", date(2025, 11, 28)),
    ("3 hari lagi", date(2025, 11, 29)),
])
def test_relative_words(text, expected):
    assert asked(text) == expected


def test_hari_ini_gives_way_to_another_relative_word():
    assert asked("hari ini saya mau booking untuk besok") == date(2025, 11, 27)


@pytest.mark.parametrize(("text", "expected"), [
    ("sabtu ini", date(2025, 11, 29)),
    ("hari sabtu", date(2025, 11, 29)),
    ("jum'at", date(2025, 11, 28)),
    ("jumat", date(2025, 11, 28)),
    ("kamis besok", date(2025, 11, 27)),
    ("minggu", date(2025, 11, 30)),
    ("hari ahad", date(2025, 11, 30)),
    ("rabu", date(2025, 11, 26)),
])
def test_weekday_is_the_next_such_day_on_or_after_today(text, expected):
    assert asked(text) == expected


def test_sabtu_ini_on_a_saturday_is_today():
    saturday = datetime(2025, 11, 29, 3, 0, tzinfo=UTC)
    assert asked("sabtu ini", saturday) == date(2025, 11, 29)


@pytest.mark.parametrize(("text", "expected"), [
    ("senin depan", date(2025, 12, 1)),
    ("rabu depan", date(2025, 12, 3)),
    ("jumat depan", date(2025, 12, 5)),
    ("hari minggu depan", date(2025, 12, 7)),
])
def test_weekday_depan_is_that_day_of_next_week(text, expected):
    assert asked(text) == expected


def test_minggu_depan_is_next_week_not_a_date():
    assert asked("minggu depan ya kak") is None


def test_weeks_counted_are_not_sundays():
    assert asked("2 minggu lagi") is None


def test_past_weekdays_are_ignored():
    assert asked("senin kemarin sudah datang") is None


@pytest.mark.parametrize(("text", "expected"), [
    ("tgl 28", date(2025, 11, 28)),
    ("tanggal 26", date(2025, 11, 26)),
    ("tgl 5", date(2025, 12, 5)),
    ("tgl. 5 bisa?", date(2025, 12, 5)),
    ("tgl 31", date(2025, 12, 31)),
    ("tgl 3 bulan depan", date(2025, 12, 3)),
    ("tgl 5-7", date(2025, 12, 5)),
])
def test_tanggal_day_is_this_month_or_the_next(text, expected):
    assert asked(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("01/10/2025", date(2025, 10, 1)),
    ("1-10-2025", date(2025, 10, 1)),
    ("1.10.2025", date(2025, 10, 1)),
    ("1/10/25", date(2025, 10, 1)),
    ("2025-10-01", date(2025, 10, 1)),
])
def test_numeric_dates_are_day_first(text, expected):
    assert asked(text) == expected


def test_day_month_without_year_is_the_next_such_date():
    assert asked("01/10") == date(2026, 10, 1)
    assert asked("tgl 12/12") == date(2025, 12, 12)
    assert asked("tgl 12.12") == date(2025, 12, 12)


@pytest.mark.parametrize(("text", "expected"), [
    ("12 Des", date(2025, 12, 12)),
    ("12 Desember", date(2025, 12, 12)),
    ("12 Desember 2025", date(2025, 12, 12)),
    ("12des", date(2025, 12, 12)),
    ("tanggal 1 desember", date(2025, 12, 1)),
    ("20 jan 2026", date(2026, 1, 20)),
    ("5 mei", date(2026, 5, 5)),
    ("17 agustus", date(2026, 8, 17)),
    ("3 agt", date(2026, 8, 3)),
    ("1 okt", date(2026, 10, 1)),
    ("Dec 12", date(2025, 12, 12)),
    ("12-dec-2025", date(2025, 12, 12)),
    ("5-7 desember", date(2025, 12, 5)),
])
def test_day_and_month_name(text, expected):
    assert asked(text) == expected


def test_explicit_date_beats_a_weekday_and_a_relative_word():
    assert asked("besok atau sabtu tgl 6 desember?") == date(2025, 12, 6)
    assert asked("besok hari sabtu") == date(2025, 11, 29)


def test_impossible_dates_are_rejected():
    assert asked("31/02") is None
    assert asked("31/02/2026") is None
    assert asked("30 februari") is None


def test_money_is_not_a_date():
    assert asked("sudah transfer 1.500.000") is None
    assert asked("Rp 1.500.000,00") is None


def test_times_are_not_dates():
    assert asked("jam 19.00") is None
    assert asked("jam 10.10 ya") is None


def test_month_and_year_alone_is_not_a_date():
    assert asked("mei 2026") is None


def test_idioms_and_fractions_are_not_dates():
    assert asked("buka 24/7?") is None
    assert asked("1/2 porsi") is None


def test_no_date():
    assert asked("halo kak mau tanya") is None
    assert asked("") is None


def test_malam_weekday_is_the_eve_of_that_day():
    assert asked("bisa malam minggu?") == date(2025, 11, 29)
    sunday = datetime(2025, 11, 30, 3, 0, tzinfo=UTC)
    assert asked("malam minggu", sunday) == date(2025, 12, 6)


def test_weekend_is_the_coming_saturday():
    assert asked("weekend ini masih ada slot?") == date(2025, 11, 29)
    assert asked("akhir pekan depan") == date(2025, 12, 6)


def test_bulan_depan_before_tanggal_means_next_month():
    assert asked("bulan depan tgl 3 ya") == date(2025, 12, 3)
    assert asked("tgl 28 bulan depan") == date(2025, 12, 28)


def test_nanti_sore_is_today():
    assert asked("nanti sore bisa datang") == date(2025, 11, 26)


def test_recurring_weekdays_are_a_schedule_not_a_date():
    assert asked("jadwal terapi tiap hari senin dan kamis") is None


def test_range_of_days_asks_for_the_first():
    assert asked("Tgl 24-26 Des masih ada kamar?") == date(2025, 12, 24)
    assert asked("check in 24/12 check out 26/12") == date(2025, 12, 24)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789./- ") + [
    "tgl ", "besok ", "lusa ", "sabtu ", "minggu ", "depan ", "des ", "februari ", "hari ",
    "malam ", "bulan ", "jam "]), max_size=24).map("".join))
def test_any_text_gives_a_real_date_or_nothing(text):
    got = asked(text)
    assert got is None or isinstance(got, date)
