"""Normalization and keyword matching on Indonesian chat text (docs/funnel.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funnel_ingest
from funnel_ingest.engine.matcher import (
    FUZZY_THRESHOLD,
    Matcher,
    fuzzy_opening_score,
    word_forms,
)
from funnel_ingest.engine.model import Hit, Keyword
from funnel_ingest.engine.text import (
    CLAUSE_BREAK,
    clause_tokens,
    normalize,
    normalize_light,
    skeleton,
    skeleton_with_map,
)

KEYWORDS_CSV = Path(funnel_ingest.__file__).parent / "data" / "keywords.csv"


def _default_keywords() -> list[Keyword]:
    with KEYWORDS_CSV.open(newline="", encoding="utf-8") as f:
        return [Keyword(r["stage"], r["keyword"], r["channel"] or None,
                        r["active"].strip().upper() == "TRUE") for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(_default_keywords())


def live(hits: list[Hit]) -> set[tuple[str, str]]:
    """(stage, keyword) of the hits that are not negated."""
    return {(h.stage, h.keyword) for h in hits if not h.negated}


def stages(matcher: Matcher, text: str) -> set[str]:
    return {h.stage for h in matcher.find(text) if not h.negated}


def surfaces(matcher: Matcher, text: str) -> list[str]:
    """The matched words, read back from the normalized text by the hit offsets."""
    n = normalize(text)
    return [n[h.start:h.end] for h in matcher.find(text)]


# --- text ---------------------------------------------------------------------------------------

def test_normalize_folds_case_width_accents_and_punctuation():
    assert normalize("Halo, saya mau BOOKING  ya kak!!") == "halo saya mau booking ya kak"
    assert normalize("ＢＯＯＫＩＮＧ ｓｅｋａｒａｎｇ") == "booking sekarang"
    assert normalize("Café ﬁt\tnaïve\n") == "cafe fit naive"
    assert normalize("jum'at / jum’at") == "jumat jumat"
    assert normalize("🙏🙏 ok_sip") == "ok sip"


def test_normalize_separates_digits_from_letters():
    assert normalize("dp500k tf1,5jt") == "dp 500 k tf 1 5 jt"


def test_normalize_light_keeps_punctuation_for_money_and_dates():
    assert normalize_light("  Rp１.５００.０００,-\n tgl 12/12 ") == "rp1.500.000,- tgl 12/12"


def test_skeleton_collapses_letter_runs_but_never_digits():
    assert skeleton("booking") == skeleton("bookinggg") == skeleton("boooking") == "boking"
    assert skeleton("okeee bayaaar 2000 1100") == "oke bayar 2000 1100"


def test_skeleton_offsets_map_back_to_the_normalized_text():
    normalized = "mau bookinggg dong"
    form, to_normalized = skeleton_with_map(normalized)
    start = form.index("boking")
    assert normalized[to_normalized(start):to_normalized(start + len("boking"))] == "bookinggg"
    assert normalized[to_normalized(form.index("dong")):] == "dong"


def test_clause_tokens_mark_punctuation_but_not_number_separators():
    tokens = clause_tokens("belum, eh sudah transfer Rp 1.500.000")
    assert tokens == ["belum", CLAUSE_BREAK, "eh", "sudah", "transfer", "rp", "1", "500", "000"]


# --- whole words -------------------------------------------------------------------------------

def test_book_does_not_match_facebook_or_notebook(matcher):
    assert stages(matcher, "lihat di facebook kak, notebook saya rusak") == set()


def test_short_keywords_match_only_whole_words(matcher):
    assert stages(matcher, "chair nya dpt dari gift tft") == set()
    assert live(matcher.find("hai kak")) == {("opening", "hai")}
    assert live(matcher.find("sudah tf ya")) == {("transaction", "tf")}


def test_short_keyword_accepts_a_following_nya(matcher):
    assert surfaces(matcher, "dpnya berapa kak") == ["dpnya"]


def test_short_keyword_next_to_a_number_still_matches(matcher):
    assert live(matcher.find("dp500k ya")) == {("transaction", "dp")}


def test_elongated_words_match(matcher):
    assert live(matcher.find("Bookinggg dong kak")) == {("booking", "book")}  # book-ing
    assert surfaces(matcher, "haiii kakk, bayaaar sekarang") == ["haiii", "bayaaar"]


def test_multi_word_phrases_match_across_spacing_and_case(matcher):
    assert live(matcher.find("Pembayaran  SUDAH   kami terima")) >= {
        ("transaction", "sudah kami terima")}
    assert live(matcher.find("uang\nMUKA dulu")) == {("transaction", "uang muka")}


def test_hit_offsets_point_into_the_normalized_text(matcher):
    text = "Halo kak, sudah ditransfer ya"
    hits = matcher.find(text)
    assert [normalize(text)[h.start:h.end] for h in hits] == ["halo", "ditransfer"]
    assert hits == sorted(hits, key=lambda h: h.start)


def test_inactive_keywords_are_ignored():
    m = Matcher([Keyword("booking", "booking", active=False), Keyword("booking", "pesan")])
    assert [h.keyword for h in m.find("booking atau pesan")] == ["pesan"]


# --- Indonesian affixes -------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "sudah dibayar", "bayarnya via tf", "pembayaran lunas", "sudah saya bayarkan",
    "tolong dibayarin", "terbayar kak", "membayar"])
def test_affixed_forms_of_bayar_are_transactions(matcher, text):
    assert "transaction" in stages(matcher, text)


@pytest.mark.parametrize("text", [
    "sudah ditransfer", "transferan sudah masuk", "saya mentransfer kemarin", "transferin ya"])
def test_affixed_forms_of_transfer_are_transactions(matcher, text):
    assert "transaction" in stages(matcher, text)


@pytest.mark.parametrize("text", [
    "sudah dipesan", "mau memesan", "pemesanan untuk 2 orang", "pesanannya atas nama"])
def test_nasal_assimilation_of_pesan_is_a_booking(matcher, text):
    assert "booking" in stages(matcher, text)


@pytest.mark.parametrize(("root", "derived"), [
    ("pesan", "memesan"), ("pesan", "pemesanan"), ("tunggu", "menunggu"),
    ("transfer", "mentransfer"), ("kirim", "mengirim"), ("kirim", "pengiriman"),
    ("sewa", "menyewa"), ("sewa", "penyewaan"), ("bayar", "membayar"), ("daftar", "mendaftar"),
    ("ambil", "mengambil"), ("ambil", "pengambilan"), ("lunas", "melunasi"),
    ("konfirmasi", "mengkonfirmasi"), ("konfirmasi", "dikonfirmasi"), ("order", "ngorder"),
    ("setor", "nyetor"), ("jadwalkan", "dijadwalkan"), ("bayar", "dibayarkannya")])
def test_affix_variants_are_generated_from_any_root(root, derived):
    assert derived in word_forms(root)
    m = Matcher([Keyword("booking", root)])
    assert [h.keyword for h in m.find(f"kak {derived} ya")] == [root]


def test_short_roots_get_no_affixes():
    assert word_forms("va") == {"va", "vanya"}
    assert word_forms("hai") == {"hai", "hainya"}
    assert Matcher([Keyword("transaction", "va")]).find("diva") == []
    assert Matcher([Keyword("opening", "hai")]).find("sahabat") == []


@pytest.mark.parametrize("text", ["sudah ditf ya kak", "udah ditrf kak", "sdh dibyr kak",
                                  "tfnya sudah kak", "udah ditfin kak", "dpnya sudah ya"])
def test_consonant_abbreviations_take_verb_affixes(text):
    m = Matcher([Keyword("transaction", k) for k in ("tf", "trf", "byr", "dp")])
    assert [h.stage for h in m.find(text)] == ["transaction"]


@pytest.mark.parametrize("text, keyword", [
    ("sudah trasnfer kak", "transfer"),        # two neighbours swapped
    ("sudah transfr kak", "transfer"),         # a letter dropped
    ("sudah tranxfer kak", "transfer"),        # a letter changed
    ("sudah ditrasnfer ya", "transfer"),       # in an affixed form
    ("trasnfernya sudah kak", "transfer"),     # with a particle
    ("saya mau reservsi", "reservasi"),
    ("bookign 2 pax", "booking"),
])
def test_a_one_edit_typo_of_a_long_keyword_matches(text, keyword):
    m = Matcher([Keyword("transaction", "transfer"), Keyword("booking", "reservasi"),
                 Keyword("booking", "booking")])
    assert [h.keyword for h in m.find(text)] == [keyword]


@pytest.mark.parametrize("text", [
    "hanya minggu ini kak",       # one edit from hai+nya, but "hai" is short
    "kuota terbatas",             # ter+atas of the short "atas"
    "lagi looking paket",         # booking with another first letter
    "cooking class ada?",
])
def test_typos_never_make_short_words_or_other_first_letters_keywords(text):
    m = Matcher([Keyword("opening", "hai"), Keyword("booking", "atas nama"),
                 Keyword("booking", "booking")])
    assert m.find(text) == []


def test_typos_of_the_forms_of_five_letter_words_match_but_not_short_forms():
    m = Matcher([Keyword("transaction", "bayar"), Keyword("opening", "harga")])
    assert [h.keyword for h in m.find("pembyaran sudah kak")] == ["bayar"]   # pembayaran
    assert [h.keyword for h in m.find("sudah dibayr kak")] == ["bayar"]      # dibayar
    assert m.find("sudah bayr kak") == []                 # "bayr": a form of five letters
    # opening keywords take no typos: "harian" is one edit from "harga-an"
    assert m.find("limit harian kak") == []


def test_typo_hits_carry_offsets_of_the_original_text():
    m = Matcher([Keyword("transaction", "transfer")])
    text = "kak udah trasnfer 1jt"
    [hit] = m.find(text)
    assert normalize(text)[hit.start:hit.end] == "trasnfer"


def test_phrase_takes_prefixes_on_its_first_word_and_particles_on_its_last(matcher):
    assert live(matcher.find("sudah mengirimkan dananya")) == {("transaction", "kirim dana")}
    assert "transaction" in stages(matcher, "bukti transfernya terlampir")


# --- negation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "belum bayar kak", "belum transfer", "blm tf", "gak jadi booking", "ga jadi pesan",
    "batal pesan", "tidak bisa bayar sekarang", "nggak jadi order", "jangan transfer dulu",
    "cancel booking ya"])
def test_negated_keywords_are_marked_negated(matcher, text):
    hits = matcher.find(text)
    assert hits and all(h.negated for h in hits if h.stage != "opening")


def test_belum_bayar_is_not_a_transaction(matcher):
    assert "transaction" not in stages(matcher, "Belum bayar kak, nanti sore ya")


def test_belum_transfer_is_not_a_transaction(matcher):
    assert "transaction" not in stages(matcher, "maaf belum transfer")


def test_negation_scope_is_three_words(matcher):
    assert "transaction" not in stages(matcher, "belum sempat saya transfer")
    assert "transaction" in stages(matcher, "belum makan siang tadi terus transfer")


def test_clause_break_ends_negation(matcher):
    assert "transaction" in stages(matcher, "belum, eh sudah transfer")
    assert "transaction" in stages(matcher, "Belum sempat makan. Transfer sudah ya")


def test_contrast_and_sudah_end_negation(matcher):
    assert "transaction" in stages(matcher, "tidak tapi transfer")
    assert "transaction" in stages(matcher, "belum sudah bayar kok")


@pytest.mark.parametrize("text", ["bookingnya dibatalkan ya", "transfernya gagal kak",
                                  "pesanan saya cancel aja"])
def test_cancel_word_right_after_a_keyword_negates_it(matcher, text):
    hits = [h for h in matcher.find(text) if h.stage != "opening"]
    assert hits and all(h.negated for h in hits)


def test_cancel_word_in_another_clause_does_not_negate(matcher):
    assert "booking" in stages(matcher, "booking dong, gagal terus yang kemarin")


def test_negator_after_the_keyword_does_not_negate(matcher):
    assert "transaction" in stages(matcher, "sudah transfer belum dicek ya")


# --- noun compounds -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "minta daftar harga dong", "boleh lihat daftar menu", "daftar paketnya apa saja",
    "kirim pricelist sama order list ya"])
def test_daftar_harga_is_not_a_booking(matcher, text):
    assert "booking" not in stages(matcher, text)


@pytest.mark.parametrize("text", [
    "booking paket honeymoon untuk tgl 5", "pesan menu A 2 porsi", "order produk yang merah"])
def test_booking_verb_before_a_catalogue_noun_is_a_booking(matcher, text):
    assert "booking" in stages(matcher, text)


def test_affixed_booking_keyword_before_a_price_noun_is_not_a_booking(matcher):
    assert "booking" not in stages(matcher, "bookingnya harga berapa")


def test_booking_keyword_before_a_list_noun_after_a_modal_is_a_booking(matcher):
    assert "booking" in stages(matcher, "mau daftar paket umroh")


def test_affixed_booking_keyword_before_a_list_noun_is_a_booking(matcher):
    assert "booking" in stages(matcher, "saya mendaftar paket B")


# --- prefilled openings -------------------------------------------------------------------------

def test_prefilled_opening_matches_exactly_with_its_channel(matcher):
    hits = matcher.find("Halo, saya tertarik dengan promo ini")
    assert [(h.keyword, h.channel) for h in hits] == [
        ("Halo, saya tertarik dengan promo ini", "ads")]


@pytest.mark.parametrize("text", [
    "Halo kak, saya tertarik dengan promo ini. Harganya berapa?",
    "Halo saya tertarik promo ini",
    "halo saya tertarik dgn promo ini kak",
    "Saya tertarik dengan promo ini",
    "Haloo, saya tertarik dengan promo inii 🙏"])
def test_edited_prefilled_opening_still_matches(matcher, text):
    openings = [h for h in matcher.find(text) if h.stage == "opening"]
    # (a question after the prefilled text is an inquiry of its own: "harga")
    assert [(h.keyword, h.channel) for h in openings if h.keyword != "harga"] == [
        ("Halo, saya tertarik dengan promo ini", "ads")]


@pytest.mark.parametrize("text", [
    "Halo, saya mau tanya harga paket ini",
    "promo ini masih ada?",
    "saya tertarik",
    "Saya lihat promonya di Instagram kemarin, tertarik sekali"])
def test_unrelated_sentence_sharing_words_is_not_the_prefilled_opening(matcher, text):
    assert all(h.channel is None for h in matcher.find(text) if h.stage == "opening")


def test_fuzzy_opening_score_rewards_edits_and_punishes_fragments():
    key = skeleton(normalize("Halo, saya tertarik dengan promo ini"))
    assert fuzzy_opening_score(key, skeleton(normalize(
        "halo kak saya tertarik dengan promo ini berapa harganya"))) >= FUZZY_THRESHOLD
    assert fuzzy_opening_score(key, "promo ini") < FUZZY_THRESHOLD
    assert fuzzy_opening_score(key, "halo saya mau tanya harga paket ini") < FUZZY_THRESHOLD


def test_a_hit_inside_a_longer_hit_of_the_same_stage_is_dropped(matcher):
    assert [h.keyword for h in matcher.find("mau klaim promo kak")] == ["klaim promo"]
    assert [h.keyword for h in matcher.find("Halo kak, saya mau info promo dari iklan")] == [
        "Halo kak, saya mau info promo dari iklan"]


# --- misc ---------------------------------------------------------------------------------------

def test_version_fingerprint_is_stable_and_order_independent():
    a = [Keyword("booking", "pesan"), Keyword("transaction", "bayar")]
    assert Matcher(a).version_fingerprint() == Matcher(reversed(a)).version_fingerprint()
    assert Matcher(a).version_fingerprint() != Matcher(a[:1]).version_fingerprint()


def test_empty_keyword_set_and_empty_text_find_nothing(matcher):
    assert Matcher([]).find("booking") == []
    assert matcher.find("") == []
    assert matcher.find("  🙏 !! ") == []


# --- properties ---------------------------------------------------------------------------------

CHAT_TEXT = st.text(
    alphabet=st.sampled_from(list("aabbooklnprstuy  ,.!?'0123456789") + ["é", "🙏", "Ｒ", "\n"]),
    max_size=80) | st.sampled_from([
        "Belum, eh sudah bayarrr 1.500.000", "Halo kak saya tertarik dengan promo ini!!",
        "gak jadi bookinggg", "dp500k dong"])


@settings(max_examples=300, deadline=None)
@given(CHAT_TEXT)
def test_normalize_and_skeleton_are_idempotent(text):
    n = normalize(text)
    assert normalize(n) == n
    assert skeleton(skeleton(n)) == skeleton(n)


@settings(max_examples=300, deadline=None)
@given(CHAT_TEXT)
def test_skeleton_map_sends_every_token_back_to_its_source(text):
    n = normalize(text)
    form, to_normalized = skeleton_with_map(n)
    offset = 0
    for token in form.split(" ") if form else []:
        source = n[to_normalized(offset):to_normalized(offset + len(token))]
        assert skeleton(source) == token
        offset += len(token) + 1


@settings(max_examples=300, deadline=None)
@given(CHAT_TEXT)
def test_matcher_hits_are_whole_words_of_the_normalized_text(matcher, text):
    n = normalize(text)
    for hit in matcher.find(text):
        assert 0 <= hit.start < hit.end <= len(n)
        assert hit.start == 0 or n[hit.start - 1] == " "
        assert hit.end == len(n) or n[hit.end] == " "
