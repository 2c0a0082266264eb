"""Rupiah amounts in Indonesian chat text (docs/funnel.md, Transaction date and value)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel_ingest.engine.money import parse_amounts, payment_amount


def amounts(text: str) -> list[Decimal]:
    return [a.value for a in parse_amounts(text)]


# --- what is money ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("Rp 1.500.000", 1_500_000),
    ("Rp. 1.500.000,-", 1_500_000),
    ("Rp1.500.000", 1_500_000),
    ("RP 1.500.000,00", 1_500_000),
    ("IDR 250,000", 250_000),
    ("Rp 1,500,000.00", 1_500_000),
    ("1.500.000 rupiah", 1_500_000),
    ("Ｒｐ１.５００.０００", 1_500_000),
])
def test_currency_amounts_with_thousands_grouping(text, value):
    assert payment_amount(text) == Decimal(value)


def test_comma_decimals_do_not_multiply():
    assert payment_amount("Rp 99.900,00") == Decimal(99_900)
    assert payment_amount("Rp 99.900,50") == Decimal(99_901)   # rounded half up to whole Rp


@pytest.mark.parametrize(("text", "value"), [
    ("Rp1,5 jt", 1_500_000),
    ("1.5jt", 1_500_000),
    ("1,5 juta", 1_500_000),
    ("2 juta", 2_000_000),
    ("150rb", 150_000),
    ("150 ribu", 150_000),
    ("150 rbu", 150_000),
    ("250k", 250_000),
    ("250K", 250_000),
    ("0,5jt", 500_000),
    ("1.250rb", 1_250_000),
    ("1,250 jt", 1_250_000),
])
def test_multipliers(text, value):
    assert payment_amount(text) == Decimal(value)


@pytest.mark.parametrize(("text", "value"), [
    ("Rp 2,5 M", 2_500_000_000),
    ("2,5 miliar", 2_500_000_000),
    ("2 milyar", 2_000_000_000),
])
def test_m_and_miliar_mean_billion(text, value):
    assert payment_amount(text) == Decimal(value)


def test_m_without_currency_or_payment_word_is_not_money():
    assert amounts("jaraknya 2 m dari pintu") == []


@pytest.mark.parametrize("text", ["1 jt 250 rb", "Rp 1jt 250rb", "1jt250"])
def test_compound_amounts_add_up(text):
    assert payment_amount(text) == Decimal(1_250_000)


def test_amounts_are_integer_decimals_never_floats():
    value = payment_amount("sudah transfer 1,5jt")
    assert isinstance(value, Decimal)
    assert value == value.to_integral_value()


@pytest.mark.parametrize(("text", "value"), [
    ("sudah transfer 250rb", 250_000),
    ("dp 500k", 500_000),
    ("dp500k ya kak", 500_000),
    ("sudah transfer 1.500.000", 1_500_000),
    ("transfer sebesar 1.500.000 ya", 1_500_000),
    ("total: 1.500.000", 1_500_000),
    ("tf 150000", 150_000),
    ("pembayaran Rp 1.500.000 sudah kami terima", 1_500_000),
])
def test_payment_words_before_amounts(text, value):
    assert payment_amount(text) == Decimal(value)


def test_ambiguous_thousands_with_rupiah_context_is_rupiah():
    assert payment_amount("Rp 1.500") == Decimal(1_500)
    assert payment_amount("total 1.500") == Decimal(1_500)


def test_bare_grouped_number_without_a_payment_word_is_not_money():
    assert amounts("kode 1.500.000 kak") == []
    assert amounts("1.500.000") == []


def test_bare_ungrouped_number_must_look_like_a_round_amount():
    assert amounts("bayar 2025") == []
    assert amounts("bayar 12") == []


# --- what is never money ------------------------------------------------------------------------

def test_date_with_dots_is_not_money():
    assert amounts("promo 12.12 kak") == []


def test_date_with_slash_is_not_money():
    assert amounts("tgl 12/12 bisa?") == []


def test_day_month_year_date_is_not_money():
    assert amounts("jadwal 05-01-2025") == []


def test_iso_date_is_not_money():
    assert amounts("booking 2025-10-01") == []


def test_time_with_dot_is_not_money():
    assert amounts("jam 19.00 ya") == []
    assert amounts("bayar 19.00") == []


def test_jam_7_is_not_money():
    assert amounts("datang jam 7") == []


def test_pukul_is_not_money():
    assert amounts("pukul 19.30") == []


def test_percentage_is_not_money():
    assert amounts("dp 30%") == []


def test_persen_is_not_money():
    assert amounts("diskon 30 persen") == []


@pytest.mark.parametrize("text", [
    "2 pax", "3 malam", "4 orang", "10 pcs", "2x", "2 porsi", "2 tiket", "1 kamar", "5 kg",
    "3 unit", "2 org", "2 jam", "30 menit", "7 hari", "2 juta orang"])
def test_quantity_before_a_unit_word_is_not_money(text):
    assert amounts(text) == []


def test_hash_order_id_is_not_money():
    assert amounts("order #20231212") == []


def test_invoice_number_is_not_money():
    assert amounts("INV/2025/001") == []


def test_bank_account_number_is_not_money():
    assert amounts("no rek 1234567890") == []
    assert amounts("transfer ke rek 123456789") == []


def test_order_number_is_not_money():
    assert amounts("order 123456") == []


def test_long_digit_run_is_not_money():
    assert amounts("Rp 12345678901234") == []


def test_mobile_number_is_not_money():
    assert amounts("wa 081234567890") == []
    assert amounts("hp 0812-3456-7890") == []


def test_spaced_international_phone_is_not_money():
    assert amounts("62 812 3456 7890") == []


def test_plus_62_phone_is_not_money():
    assert amounts("+6281234567890") == []
    assert amounts("+62 812-3456-7890") == []


def test_phone_next_to_a_payment_word_is_not_money():
    assert amounts("tf ke 0812 3456 7890") == []


# --- unit prices and several amounts ------------------------------------------------------------

def test_per_unit_price_is_marked():
    [amount] = parse_amounts("75rb/pax")
    assert amount.value == Decimal(75_000)
    assert amount.unit_price


def test_per_unit_price_alone_is_the_payment_amount():
    assert payment_amount("75rb/pax, pesan 2 pax") == Decimal(75_000)


def test_per_unit_price_gives_way_to_a_total():
    assert payment_amount("harga 75rb/pax, total 150rb") == Decimal(150_000)
    assert payment_amount("Rp 50.000 per orang, jadi Rp 200.000") == Decimal(200_000)


def test_multiplication_picks_the_total_after_the_equals_sign():
    assert payment_amount("Rp 1.000.000 x 2 = Rp 2.000.000") == Decimal(2_000_000)
    assert payment_amount("@75rb x 2 = 150rb") == Decimal(150_000)


def test_amount_after_a_payment_word_beats_a_total():
    assert payment_amount("dp 500rb dulu ya, total 2jt") == Decimal(500_000)


def test_remainder_is_not_the_payment():
    assert payment_amount("dp 500rb, sisa 1jt") == Decimal(500_000)
    assert payment_amount("sudah transfer dp, sisa 1jt nanti") is None


def test_paying_the_remainder_is_the_payment():
    assert payment_amount("pelunasan sisa 1jt sudah ya") == Decimal(1_000_000)


def test_without_cues_the_largest_amount_wins():
    assert payment_amount("Rp 500.000 atau Rp 750.000 kak?") == Decimal(750_000)


def test_account_number_and_amount_in_one_message():
    text = "Sudah saya transfer ke BCA 1234567890 a.n. Budi sebesar Rp 1.500.000 ya kak"
    assert amounts(text) == [Decimal(1_500_000)]
    assert payment_amount(text) == Decimal(1_500_000)


def test_amounts_with_dates_times_and_quantities_around():
    text = "Sudah tf 1,5jt untuk 2 pax tgl 12/12 jam 19.00, order #20231212"
    assert amounts(text) == [Decimal(1_500_000)]


def test_no_digits_no_amount():
    assert payment_amount("sudah transfer ya kak") is None
    assert parse_amounts("") == []


def test_count_times_unit_price_is_the_line_total():
    assert payment_amount("sudah bayar 2x500rb") == Decimal(1_000_000)
    assert payment_amount("2 x Rp 75.000") == Decimal(150_000)
    assert payment_amount("harga 150rb x 3 malam") == Decimal(450_000)


def test_explicit_total_beats_a_line_total():
    assert payment_amount("2 x Rp 75.000 = Rp 140.000") == Decimal(140_000)


def test_payment_channel_between_payment_word_and_bare_number_is_skipped():
    assert payment_amount("Sudah bayar via QRIS 89.000") == Decimal(89_000)
    assert amounts("transfer ke bca 123456789") == []


def test_berarti_states_the_resulting_total():
    assert payment_amount("dp 30% dari total 5jt berarti 1,5jt ya") == Decimal(1_500_000)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789.,-/:%#+@x ") + [
    "rp ", "idr ", "rb", "ribu", "jt", "juta", "k", "m", "transfer ", "dp ", "total ", "= ",
    "pax", "jam ", "tgl ", "no rek "]), max_size=24).map("".join))
def test_any_text_gives_whole_rupiah_or_nothing(text):
    value = payment_amount(text)
    assert value is None or (value == value.to_integral_value() and value >= 100)
    for a in parse_amounts(text):
        assert a.value == a.value.to_integral_value() and a.value >= 100
