"""The packaged default keyword list (funnel_ingest/data/keywords.csv) and why each entry is in it.

It is what an Indonesian growth team starts with before its own sheet: ads prefills and
mentions, website prefills and mentions, campaign-blast replies and promo / voucher claims,
social media and word of mouth, greetings, inquiries, booking words and payment words with
their chat abbreviations and payment methods.

Every entry earns its place: each has an example message here that the list classifies as the
entry's stage (and, for a channel entry, channel), and that the list *without* the entry does
not. An entry another one already covers (through affixes, letter runs or a shorter phrase)
fails this test and is left out of the list.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv
from funnel_ingest.engine.model import Keyword

IN, OUT = "inbound", "outbound"
TZ = ZoneInfo("Asia/Jakarta")
AT = datetime(2026, 11, 3, 3, tzinfo=timezone.utc)
DEFAULT = load_csv(default_csv_path())

EXAMPLES: dict[tuple[str, str], tuple[str, str]] = {
    # (stage, keyword) -> (direction, a message only this entry makes that stage / channel)
    # ads: prefilled texts of click-to-WhatsApp ads and mentions of an ad
    ("opening", "Halo, saya tertarik dengan promo ini"): (IN, "Halo, saya tertarik dengan promo ini"),
    ("opening", "Halo kak, saya mau info promo dari iklan"): (IN, "Halo kak, saya mau info promo dari iklan 🙏"),
    ("opening", "Halo! Bisakah saya mendapatkan info selengkapnya tentang ini?"): (IN, "Halo! Bisakah saya mendapatkan info selengkapnya tentang ini?"),
    ("opening", "iklan"): (IN, "kak, td liat iklannya, paket bali msh ada?"),
    # website: wa.me prefills of the site and mentions of it
    ("opening", "Saya mau tanya paket yang ada di website"): (IN, "Saya mau tanya paket yang ada di website"),
    ("opening", "dari website"): (IN, "sore kak, sy dapat nomor ini dari website"),
    ("opening", "dari web"): (IN, "kak sy liat paketnya dari web"),
    ("opening", "lewat website"): (IN, "sudah isi form lewat website kak"),
    ("opening", "via website"): (IN, "kak saya isi formulir via website"),
    # campaign blasts: replies, promo and voucher claims
    ("opening", "Mau info promo"): (IN, "Mau info promo"),
    ("opening", "Ya, saya mau ikut promonya"): (IN, "Ya, saya mau ikut promonya"),
    ("opening", "Saya tertarik dengan penawaran broadcast"): (IN, "Saya tertarik dengan penawaran broadcast"),
    ("opening", "klaim promo"): (IN, "kak mau klaim promo yg kemarin"),
    ("opening", "klaim voucher"): (IN, "mau klaim voucher diskon 20% kak"),
    ("opening", "voucher"): (IN, "kak vouchernya bisa dipakai bulan depan?"),
    # social media and word of mouth
    ("opening", "dari instagram"): (IN, "kak tau tempat ini dari instagram"),
    ("opening", "dari ig"): (IN, "sy follow dari ig kak"),
    ("opening", "dari tiktok"): (IN, "liat videonya dari tiktok kak"),
    ("opening", "dari facebook"): (IN, "sy lihat postingan dari facebook"),
    ("opening", "dari fb"): (IN, "lihat postingan dari fb kak"),
    ("opening", "dari youtube"): (IN, "nonton vlognya dari youtube kak"),
    ("opening", "dari teman"): (IN, "sy dapat nomornya dari teman kak"),
    ("opening", "rekomendasi teman"): (IN, "rekomendasi teman kak, katanya pelayanannya bagus"),
    # greetings
    ("opening", "halo"): (IN, "halo kak"),
    ("opening", "hai"): (IN, "hai kak"),
    ("opening", "hi"): (IN, "hi min"),
    ("opening", "hello"): (IN, "hello kak"),
    ("opening", "permisi"): (IN, "permisi kak"),
    ("opening", "punten"): (IN, "punten kak"),
    ("opening", "selamat pagi"): (IN, "selamat pagi kak"),
    ("opening", "selamat siang"): (IN, "Selamat siang"),
    ("opening", "selamat sore"): (IN, "selamat sore min"),
    ("opening", "selamat malam"): (IN, "selamat malam kak"),
    ("opening", "assalamualaikum"): (IN, "Assalamualaikum kak"),
    # inquiries
    ("opening", "tanya"): (IN, "kak boleh tanya?"),
    ("opening", "tny"): (IN, "kak mau tny dong"),
    ("opening", "info"): (IN, "info paket honeymoon kak"),
    ("opening", "promo"): (IN, "promonya sampai kapan kak"),
    ("opening", "harga"): (IN, "harganya berapa kak?"),
    ("opening", "pricelist"): (IN, "kak minta pricelist nya"),
    ("opening", "masih ada"): (IN, "slot sabtu masih ada kak"),
    # booking
    ("booking", "book"): (IN, "book 2 orang kak"),
    ("booking", "pesan"): (IN, "saya pesan 2 tiket ya kak"),
    ("booking", "pesen"): (IN, "aku pesen yg paket b kak"),
    ("booking", "reservasi"): (IN, "mau reservasi sabtu depan"),
    ("booking", "reserve"): (IN, "reserve buat 4 orang ya"),
    ("booking", "daftar"): (IN, "saya daftar untuk batch 3"),
    ("booking", "order"): (IN, "saya order paket A ya"),
    ("booking", "jadwalkan"): (IN, "tolong dijadwalkan hari kamis"),
    ("booking", "ambil paket"): (IN, "saya ambil paket yang 3 hari"),
    ("booking", "jadi ambil"): (IN, "oke kak jadi ambil yang itu"),
    ("booking", "checkout"): (IN, "sudah checkout di keranjang kak"),
    ("booking", "amankan slot"): (IN, "tolong amankan slot jumat ya"),
    ("booking", "keep slot"): (IN, "keep slot tgl 5 ya kak"),
    ("booking", "konfirmasi jadwal"): (IN, "konfirmasi jadwal tgl 12 jam 10"),
    ("booking", "atas nama"): (IN, "atas nama Budi Santoso, 2 orang"),
    # transaction: payment words, their abbreviations, payment methods, receipts
    ("transaction", "transfer"): (IN, "sudah transfer 500rb kak"),
    ("transaction", "tf"): (IN, "udah tf ya kak"),
    ("transaction", "trf"): (IN, "sdh trf barusan"),
    ("transaction", "bayar"): (IN, "sudah bayar ya kak"),
    ("transaction", "byr"): (IN, "udh byr kak"),
    ("transaction", "lunas"): (IN, "lunas ya kak"),
    ("transaction", "dp"): (IN, "sudah dp 300rb"),
    ("transaction", "uang muka"): (IN, "uang muka 500rb sudah saya kirim"),
    ("transaction", "payment"): (IN, "payment done kak"),
    ("transaction", "paid"): (IN, "paid ya kak"),
    ("transaction", "qris"): (IN, "sudah scan qris 250rb"),
    ("transaction", "virtual account"): (IN, "sudah masuk ke virtual account 1jt"),
    ("transaction", "gopay"): (IN, "sudah kirim via gopay 150rb"),
    ("transaction", "ovo"): (IN, "sudah lewat ovo 200rb"),
    ("transaction", "shopeepay"): (IN, "sudah pakai shopeepay 99rb"),
    ("transaction", "setor"): (IN, "sudah setor 1jt kak"),
    ("transaction", "kirim dana"): (IN, "sudah kirim dana 2jt"),
    ("transaction", "sudah kami terima"): (OUT, "Sudah kami terima ya kak, terima kasih"),
}


def _classifier(keywords: list[Keyword]) -> Classifier:
    return Classifier(keywords, "test", TZ, cache_size=0)


@pytest.fixture(scope="module")
def full() -> Classifier:
    return _classifier(DEFAULT)


def test_every_default_entry_has_an_example() -> None:
    listed = [(k.stage, k.keyword) for k in DEFAULT]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(EXAMPLES)
    assert all(k.active for k in DEFAULT)


def test_the_list_covers_what_a_growth_team_starts_with() -> None:
    channels = {k.channel for k in DEFAULT if k.channel}
    assert channels == {"ads", "website", "campaign_blast", "social", "referral"}
    generic = {k.keyword for k in DEFAULT if k.stage == "opening" and not k.channel}
    assert {"halo", "hai", "permisi", "selamat pagi", "assalamualaikum"} <= generic  # greetings
    assert {"info", "tanya", "harga", "promo", "voucher"} <= generic  # inquiries, claims
    abbreviations = {k.keyword for k in DEFAULT if k.keyword.isalpha() and k.keyword.isascii()
                     and not set(k.keyword) & set("aiueo")}
    assert {"tf", "trf", "byr", "tny", "dp"} <= abbreviations


@pytest.mark.parametrize("entry", DEFAULT, ids=lambda k: f"{k.stage}:{k.keyword}")
def test_each_entry_earns_its_place(full: Classifier, entry: Keyword) -> None:
    direction, text = EXAMPLES[(entry.stage, entry.keyword)]
    got = full.classify(text, direction, AT)
    assert entry.stage in got.stages, (text, got)
    if entry.channel:
        assert got.opening_channel == entry.channel, (text, got)
    without = _classifier([k for k in DEFAULT if k != entry]).classify(text, direction, AT)
    assert entry.stage not in without.stages or (
        entry.channel is not None and without.opening_channel != entry.channel), (
        f"{entry.keyword!r} is covered by other entries: {without}")


@pytest.mark.parametrize(("text", "direction", "stage"), [
    # short entries stay whole words
    ("chair nya rusak", IN, "opening"),
    ("hitung dulu ya", IN, "opening"),
    ("informasinya sudah saya kirim lewat email", OUT, "opening"),
    ("ovolo hotel dekat sini ya", IN, "transaction"),
    # payment methods and abbreviations asked about or offered are not payments
    ("bisa bayar pakai ovo kak?", IN, "transaction"),
    ("gopay bisa kak?", IN, "transaction"),
    ("Silakan bayar via QRIS atau virtual account ya kak", OUT, "transaction"),
    ("nanti sy tf ya kak", IN, "transaction"),
    ("blm byr kak", IN, "transaction"),
    ("dp nya berapa kak?", IN, "transaction"),
    # thanks after a purchase opens nothing, even with a greeting
    ("halo kak, makasih ya", IN, "opening"),
])
def test_default_entries_stay_in_their_lane(full: Classifier, text: str, direction: str,
                                            stage: str) -> None:
    assert stage not in full.classify(text, direction, AT).stages


def test_opening_keywords_name_the_first_channel_mentioned(full: Classifier) -> None:
    assert full.classify("Halo kak, saya mau info promo dari iklan", IN, AT).opening_channel == "ads"
    assert full.classify("lihat iklannya dari ig kak", IN, AT).opening_channel == "ads"
    assert full.classify("tau dari ig, ada iklannya juga", IN, AT).opening_channel == "social"
    assert full.classify("halo kak, info dong", IN, AT).opening_channel is None
