"""A seeded simulator of realistic chat traffic, with the funnel it must produce (ground truth).

Used by the engine's tests, the demo and the benchmarks. `simulate(customers, seed=...)` builds
Indonesian sales conversations over WhatsApp (Cloud API, keyed by phone or BSUID), Qontak rooms
and generic CRM rooms, labels every message with what it really says (`TruthLabel`), and
computes the expected funnel rows (`TruthLead`) from that scenario, with the engine's semantics
(docs/funnel.md), never by re-classifying the text:

- a customer's messages are ordered by (sent_at, source, message_id); a lead cycle opens at the
  first inbound message; a later inbound message labelled "opening" opens a new cycle when the
  current one started more than `lead_window_days` before it, or, after a payment, when it
  carries a marketing signal (a channel's prefilled text, an ad referral, a campaign reply, a
  blast received since the payment) or comes `quiet_hours_after_payment` after the last one,
  and is not itself a payment (a greeted settlement continues the purchase);
- channel, from the cycle's opening message: the channel of the opening keyword it contains
  (`TruthLabel.opening_channel`); else its hint (ads, campaign_blast, website, a CRM's own
  label such as tiktok); else campaign_blast when an outbound campaign message reached the
  customer within the 7 days before (inclusive); else direct. The medium (whatsapp,
  instagram, webchat, ...) is the opening message's, else the cycle's first one's;
- booking_at: first message of the cycle (either direction) labelled "booking", before or after
  the payment, else none; transaction_at: first payment statement; transaction_value: amount
  of the first payment statement that has one; transaction_total: sum of all amounts.

Labels: `stages` holds "transaction" exactly when `payment` is true (a customer saying they paid
or an agent confirming receipt); `amount` is set only on payment statements. Deliberate traps
(negations, "daftar harga", price quotes, payment instructions, "facebook"/"notebook") contain
keywords of a stage their label excludes: see `TRAPS`.

`Simulation.deliveries()` replays the messages the way providers deliver them (at least once,
duplicated and out of order); `to_webhooks()` turns messages back into provider bodies that
`funnel_ingest.ingest.providers.parse` reads into the same messages.
"""

from __future__ import annotations

import base64
import gc
import itertools
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter

from num2words import num2words

from funnel_ingest.engine import channels
from funnel_ingest.engine.cycles import NO_CHANNEL
from funnel_ingest.messages import NormalizedMessage

__all__ = [
    "FUZZY_OPENINGS",
    "MESSAGES_PER_CUSTOMER",
    "TRAPS",
    "TYPOS",
    "SimMessage",
    "Simulation",
    "TruthLabel",
    "TruthLead",
    "customers_for_messages",
    "messages_per_customer",
    "simulate",
]

DEFAULT_START = datetime(2025, 10, 1, tzinfo=UTC)
_QONTAK_ROOM_CHANNEL = {"wa": "wa", "website": "web", "ig": "ig"}  # as Qontak names the rooms
CAMPAIGN_REPLY_WINDOW = timedelta(days=7)

# Average messages per customer (measured over 5,000 customers) by `days`, with the default
# lead window: longer spans leave room for more returns. Conversations are cut at the end.
_PER_CUSTOMER_BY_DAYS = ((1, 5.9), (7, 6.4), (30, 7.6), (60, 8.8), (90, 10.0), (120, 10.6))
MESSAGES_PER_CUSTOMER = 7.6  # with the default days=30


def messages_per_customer(days: int = 30) -> float:
    """About how many messages `simulate` makes per customer over `days` days."""
    table = _PER_CUSTOMER_BY_DAYS
    if days <= table[0][0]:
        return table[0][1]
    for (d0, v0), (d1, v1) in itertools.pairwise(table):
        if days <= d1:
            return v0 + (v1 - v0) * (days - d0) / (d1 - d0)
    return table[-1][1]


def customers_for_messages(messages: int, days: int = 30) -> int:
    """How many customers to simulate for about `messages` messages over `days` days."""
    return max(1, round(messages / messages_per_customer(days)))


# ---------------------------------------------------------------------------------------------
# Public types


@dataclass(frozen=True, slots=True)
class TruthLabel:
    """What a message really says. `stages` has "transaction" exactly when `payment` is true;
    `amount` is the paid amount of a payment statement (None when it names none);
    `opening_channel` is the channel of the prefilled opening text it contains (ads / website /
    campaign_blast), None for plain greetings and everything else."""

    stages: frozenset[str]
    payment: bool = False
    amount: Decimal | None = None
    opening_channel: str | None = None


@dataclass(slots=True)
class SimMessage:
    message: NormalizedMessage
    truth: TruthLabel


@dataclass(frozen=True, slots=True)
class TruthLead:
    customer_key: str
    phone: str | None
    channel: str
    lead_at: datetime
    booking_at: datetime | None
    transaction_at: datetime | None
    transaction_value: Decimal | None
    transaction_total: Decimal | None
    medium: str | None = None


@dataclass
class Simulation:
    messages: list[SimMessage]  # each distinct message once, in true time order
    leads: list[TruthLead]      # ordered by (customer_key, lead_at)

    def deliveries(self, duplicate_rate: float = 0.05,
                   reorder_window: timedelta = timedelta(minutes=10),
                   seed: int = 0) -> list[NormalizedMessage]:
        """The messages as a provider delivers them: at least once, in arrival order.

        Every copy arrives within `reorder_window` after its sent_at (most within seconds), so
        messages of one conversation overtake each other; a share `duplicate_rate` of messages
        is delivered again (a few of them twice more) at a later arrival. Copies are new objects
        with `received_at` set to their arrival time.
        """
        with _no_gc():
            return self._deliveries(duplicate_rate, reorder_window, seed)

    def _deliveries(self, duplicate_rate: float, reorder_window: timedelta,
                    seed: int) -> list[NormalizedMessage]:
        rng = random.Random(seed)
        window = max(reorder_window.total_seconds(), 0.0)
        rand = rng.random
        arrivals: list[tuple[float, int, NormalizedMessage]] = []
        n = 0
        for sm in self.messages:
            m = sm.message
            sent = m.sent_at.timestamp()
            u = rand()
            first = sent + (u * u * u) * window + rand()  # mostly fast, a tail up to the window
            arrivals.append((first, n, m))
            n += 1
            if rand() < duplicate_rate:
                copies = 3 if rand() < 0.1 else 1
                for _ in range(copies):
                    later = first + rand() * max(window - (first - sent), 1.0)
                    arrivals.append((later, n, m))
                    n += 1
        arrivals.sort()
        out: list[NormalizedMessage] = []
        fromts = datetime.fromtimestamp
        values, cls, i = _message_values, NormalizedMessage, _RECEIVED_AT
        for at, _, m in arrivals:
            v = list(values(m))
            v[i] = fromts(at, UTC)
            out.append(cls(*v))
        return out


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cycle collector while building millions of acyclic objects (2x faster)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_FIELD_NAMES = tuple(f.name for f in fields(NormalizedMessage))
_message_values = attrgetter(*_FIELD_NAMES)  # a message's field values, in __init__ order
_RECEIVED_AT = _FIELD_NAMES.index("received_at")


# ---------------------------------------------------------------------------------------------
# Labels

_S = {code: frozenset(name for c, name in (("o", "opening"), ("b", "booking"), ("t", "transaction"))
                      if c in code) for code in ("", "o", "b", "t", "ob", "bt", "ot", "obt")}
_LABELS: dict[tuple, TruthLabel] = {}


def _label(stages: str, payment: bool = False, amount: Decimal | None = None,
           channel: str | None = None) -> TruthLabel:
    key = (stages, payment, amount, channel)
    lab = _LABELS.get(key)
    if lab is None:
        lab = _LABELS[key] = TruthLabel(_S[stages], payment, amount, channel)
    return lab


L_NONE = _label("")
L_OPEN = _label("o")
L_BOOK = _label("b")
L_OPEN_BOOK = _label("ob")
L_PAID = _label("t", True)

# Deliberate traps: base texts containing a keyword of a stage their label excludes.
# (stage excluded, text as generated before casing/emoji noise; {placeholders} are filled in)
TRAPS: tuple[tuple[str, str], ...] = (
    ("booking", "daftar harga dong kak"),
    ("booking", "liat di facebook kak, promonya beneran?"),
    ("booking", "kalau bawa notebook boleh ga kak?"),
    ("booking", "gak jadi booking deh kak, maaf"),
    ("booking", "nggak jadi pesan dulu kak, mahal"),
    ("transaction", "bisa bayar pakai apa kak?"),
    ("transaction", "bisa tf ke BRI ga kak?"),
    ("transaction", "belum transfer kak, nanti sore ya"),
    ("transaction", "nanti bayar pas datang boleh kak?"),
    ("transaction", "belum bisa bayar sekarang kak, nunggu gajian 😅"),
    ("transaction", "nanti saya transfer ya kak"),
    ("transaction", "Silakan transfer ke BCA {acct} a.n. PT Wisata Nusantara ya kak"),
    ("transaction", "Total {T} ya kak, silakan transfer ke Mandiri {acct} a.n. PT Wisata Nusantara"),
    ("transaction", "Pembayaran bisa via QRIS atau virtual account ya kak"),
    ("transaction", "DP minimal 50% ya kak, sisanya paling lambat H-3"),
    ("transaction", "Silakan bayar ke virtual account {va} ya kak"),
    ("transaction", "Mohon kirim bukti transfer setelah bayar ya kak"),
    ("transaction", "Sisa pelunasan {R} paling lambat H-3 ya kak"),
    # a payment that failed, a transfer the agent has not received
    ("transaction", "transfernya gagal kak, saya coba lagi nanti ya"),
    ("transaction", "tadi tf nya gagal kak, limit harian"),
    ("transaction", "Maaf kak, transfernya belum masuk ya, mohon dicek lagi"),
    ("transaction", "Pembayarannya belum kami terima kak, sudah kirim bukti?"),
    # thanks with a greeting: a courtesy, not an opening (COURTESY)
    ("opening", "halo kak, thanks yaa"), ("opening", "Halo kak, makasih banyak ya 🙏"),
    ("opening", "hai kak, terima kasih ya"), ("opening", "Selamat malam kak, makasih ya sudah dibantu"),
    ("opening", "halo min, makasih, sampai jumpa"), ("opening", "ok makasih infonya kak"),
)
_TRAP = {text: L_NONE for _, text in TRAPS}


# ---------------------------------------------------------------------------------------------
# Text banks (Indonesian). Every text's label follows the keyword list in data/keywords.csv:
# a text carries a stage exactly when it contains a keyword of that stage (whole words, with
# Indonesian affixes such as di-/pem-/-nya/-an), except the TRAPS above.

AD_TEXTS = (  # ads prefilled texts and mentions of an ad (all name the ads channel)
    "Halo, saya tertarik dengan promo ini",
    "Halo kak, saya mau info promo dari iklan",
    "Halo! Bisakah saya mendapatkan info selengkapnya tentang ini?",  # Meta's default prefill
    "Saya lihat iklannya di Instagram",
    "Halo, saya lihat iklan di Facebook",
)
AD_EDITED = (  # edited ad texts, sent with the ad's referral (so the lead is ads either way):
    # (text, stages, opening channel). The first is a light edit of an ads prefilled text (one
    # word abbreviated) and still counts as that text (a similarity match); the next mention
    # the ad ("iklan"); the last are rewritten beyond recognition and name no channel.
    ("Halo, saya tertarik dgn promo ini kak", "o", "ads"),
    ("Saya liat iklannya di IG kak", "o", "ads"),
    ("liat iklan di fb, promonya msh berlaku?", "o", "ads"),
    ("Halo kak, saya lihat iklannya tadi", "o", "ads"),
    ("halo, sy tertarik sama promonya", "o", None),
    ("kak, yg diskon 30% itu masih bisa?", "", None),
)
FUZZY_OPENINGS = {AD_EDITED[0][0]: AD_EDITED[0][2]}
"""Texts that name their channel only by similarity to a prefilled text (no exact keyword)."""
WEB_TEXTS = (
    "Halo, saya dari website, mau tanya",
    "Halo admin, saya mau konsultasi dari website",
    "Saya mau tanya paket yang ada di website",
)
CAMPAIGN_TEXTS = (
    "Mau info promo",
    "Ya, saya mau ikut promonya",
    "Saya tertarik dengan penawaran broadcast",
    "Mau klaim voucher diskonnya kak",
    "kak mau klaim promo yg di broadcast",
)
BUTTONS = (  # template quick-reply buttons: (text, stages, opening channel)
    ("Mau info promo", "o", "campaign_blast"),
    ("Ya, saya mau ikut promonya", "o", "campaign_blast"),
    ("Info lebih lanjut", "o", None),
    ("Tertarik", "", None),
    ("Lihat paket", "", None),
)
PREFILL_SUFFIX = ("", "", "", " 🙏", " 😊", "!", " kak", "\n\nNama: {nama}", " (2 orang)")
GREETINGS = (  # generic opening keywords, no channel
    "Halo kak", "halooo kak", "Hai min", "hai kak, mau tanya", "Permisi kak", "Selamat pagi",
    "selamat siang kak", "Selamat malam, masih ada slot buat minggu depan?",
    "Assalamualaikum kak", "Mau tanya kak", "minta info paket dong", "info dong kak", "hallo",
    "Hi kak", "kak, mau tanya paket ke Bali", "Selamat sore kak, minta info open trip",
    "punten kak, mau tanya", "hello kak", "kak mau tny paket ke lombok", "minta pricelist nya kak",
    "berapa harga paket ke Bromo kak?",
)
NO_KEYWORD_FIRST = (  # first messages without any keyword (they still open the cycle)
    "kak paket ke Bromo berapaan?", "paket honeymoon ada kak?", "open trip bulan depan brp kak",
    "kak, jadwal bulan depan gmn?",
)
CAMPAIGN_REPLIES = (  # replies to a blast that are not campaign texts: (text, stages)
    ("halo kak, promonya masih ada?", "o"),
    ("Halo min, boleh minta info promonya", "o"),
    ("berapa harganya kak?", "o"),
    ("promonya sampai kapan kak?", "o"),
    ("sampai kapan berlakunya kak?", ""),
    ("kak vouchernya bisa dipakai bulan depan?", "o"),
)
RECONTACT = (  # coming back within the window without a transaction (same cycle)
    ("halo kak, promonya masih ada?", "o"),
    ("Halo kak, jadi gimana ya paketnya?", "o"),
    ("permisi kak, mau tanya lagi soal paket kemarin", "o"),
    ("kak, yg kemarin masih ada slot?", "o"),
)
AGENT_GREETINGS = (
    ("Halo kak, ada yang bisa dibantu? 😊", "o"),
    ("Baik kak, dengan senang hati kami bantu", ""),
    ("Selamat siang kak, terima kasih sudah menghubungi kami", "o"),
    ("Hai kak! Mau liburan ke mana nih?", "o"),
    ("Terima kasih sudah menghubungi Wisata Nusantara, ada yang bisa kami bantu kak?", ""),
)
QUESTIONS = (
    ("berapa harganya kak?", "o"), ("brp harganya kak", "o"), ("masih ada slot?", "o"),
    ("masih ada slot untuk tgl 12.12 kak?", "o"), ("lokasinya di mana ya kak?", ""),
    ("bisa bawa anak kecil?", ""), ("daftar harga dong kak", "o"),  # (trap: not a booking)
    ("liat di facebook kak, promonya beneran?", "o"), ("kalau bawa notebook boleh ga kak?", "T"),
    ("bisa bayar pakai apa kak?", "T"), ("bisa tf ke BRI ga kak?", "T"),
    ("dpt diskon ga kak kalau rombongan?", ""), ("berangkatnya jam 19.00 ya kak?", ""),
    ("termasuk makan ga kak", ""), ("gmn cara ke lokasinya kak", ""),
    ("kak, kalau tgl 01/11 bisa?", ""),
)
QUOTES = (  # agent price quotes: never a payment, never a booking: (text, stages)
    ("Harga paket {P}/pax kak", "o"), ("Untuk {n} pax totalnya {T} ya kak", ""),
    ("Promo 12.12 harganya jadi {P} kak, berlaku sampai tgl 15", "o"),
    ("Slot tgl {d} masih tersedia kak, harga {P}/orang", "o"),
    ("Harganya {P} per orang kak, sudah termasuk makan", "o"),
)
AGENT_BOOK_PROMPTS = (
    "Silakan booking di link ini ya kak: https://bit.ly/wisata-{d}",
    "Mau booking untuk tanggal berapa kak?",
    "Kalau mau reservasi bisa langsung di sini ya kak",
)
CUSTOMER_BOOKINGS = (
    ("saya mau booking untuk tgl {d} ya", "b"), ("Oke kak, saya booking {n} pax", "b"),
    ("pesan {n} pax ya kak", "b"), ("bookinggg kak, buat sabtu ini", "b"),
    ("jadi ambil paket yang {P} ya kak", "b"),
    ("reservasi atas nama {nama} ya kak, no hp {hp}", "b"),
    ("ok kak, keep slot tgl 12.12 jam 19.00 ya", "b"), ("mau amankan slot buat {n} orang", "b"),
    ("sy mau reservasi utk tgl {d}", "b"), ("halo kak, saya mau booking {n} orang", "ob"),
)
AGENT_BOOK_CONFIRMS = (
    "Booking kakak untuk tgl {d} sudah kami catat ya, order #{o}",
    "Siap kak, reservasi {n} pax sudah tercatat atas nama {nama}",
    "Baik kak, kami keep slot sampai jam 19.00 ya",
)
INSTRUCTIONS = (
    "Silakan transfer ke BCA {acct} a.n. PT Wisata Nusantara ya kak",
    "Total {T} ya kak, silakan transfer ke Mandiri {acct} a.n. PT Wisata Nusantara",
    "Pembayaran bisa via QRIS atau virtual account ya kak",
    "DP minimal 50% ya kak, sisanya paling lambat H-3",
    "Silakan bayar ke virtual account {va} ya kak",
    "Mohon kirim bukti transfer setelah bayar ya kak",
)
DELAYS = (  # negated / future payments: no transaction
    "belum transfer kak, nanti sore ya", "nanti bayar pas datang boleh kak?",
    "belum bisa bayar sekarang kak, nunggu gajian 😅", "nanti saya transfer ya kak",
    "transfernya gagal kak, saya coba lagi nanti ya", "tadi tf nya gagal kak, limit harian",
)
NOT_RECEIVED = ("Maaf kak, transfernya belum masuk ya, mohon dicek lagi",  # agent: not a payment
                "Pembayarannya belum kami terima kak, sudah kirim bukti?")
NEGATED_BOOKINGS = ("gak jadi booking deh kak, maaf", "nggak jadi pesan dulu kak, mahal")
DROPS = ("oke kak nanti saya kabari lagi", "mahal juga ya kak 😅", "saya pikir-pikir dulu ya",
         "ok makasih infonya kak")
PAY_WITH_AMOUNT = (
    "sudah transfer {A} ya kak", "udah tf {A} kak", "sdh trf {A} ya", "Sudah saya bayar {A} ya kak",
    "barusan kirim dana {A} kak", "udah setor {A} ya kak", "sudah bayar via QRIS {A} ya kak",
    "sudah transfer {A} untuk {n} pax ya kak", "sudah tf {A} tadi jam 19.00 kak",
    "sudah transfer {A} utk tgl 12.12 ya", "udah ditransfer {A} ya kak, INV/20231212/0042",
    "sudah transfer {A} dari rek BCA {acct} kak", "udah paid {A} ya kak",
    # a payment stated with a question, abbreviations with affixes, e-wallets, typos (TYPOS)
    "barusan sudah bayar {A}, mohon dicek ya?", "udah ditf {A} ya kak", "sdh byr {A} kak",
    "sudah kirim via gopay {A} ya kak", "sudah transfer lewat ovo {A}",
    "sudah trasnfer {A} ya kak", "pembyaran {A} sudah saya kirim ya", "sudah tranfer {A} kak",
)
TYPOS = {"trasnfer": "transfer", "pembyaran": "pembayaran", "tranfer": "transfer"}
"""Misspelt keyword forms in the texts (one edit each) and what they stand for."""
PAY_NO_AMOUNT = (
    "sudah transfer ya kak, ini buktinya", "udah paid kak 🙏", "sudah lunas ya kak",
    "sudah dibayar ya kak, cek aja", "Sudah tf ya kak, no hp sy {hp}",
)
PROOF_CAPTIONS = ("bukti transfer ya kak", "ini bukti transfernya kak 🙏")
DP_TEXTS = ("dp {A} dulu ya kak", "uang muka {A} sudah saya transfer ya", "sudah tf dp {A} ya kak")
DP_NO_AMOUNT = ("sudah dp ya kak", "dp sudah saya transfer ya kak")
CONFIRM_DP_BALANCE = ("DP {A} sudah kami terima ya kak, sisa {R} dilunasi H-3",)
SETTLE_WITH_AMOUNT = ("pelunasan {A} sudah ya kak", "sudah transfer pelunasan {A} ya kak")
SETTLE_REMINDER = "Sisa pelunasan {R} paling lambat H-3 ya kak"  # a trap: not a payment
SETTLE_NO_AMOUNT = ("pelunasan sudah ya kak, buktinya di atas",)
SETTLE_GREETED = "halo kak, pelunasan {A} sudah saya transfer ya"  # greeting + payment: same lead
CONFIRM_NO_AMOUNT = ("Pembayaran sudah kami terima, terima kasih kak 🙏",
                     "Terima kasih kak, pembayaran diterima ya")
CONFIRM_WITH_AMOUNT = ("Pembayaran {A} sudah kami terima ya kak",
                       "Transfer {A} sudah kami terima, terima kasih kak")
CONFIRM_DP = ("DP sudah kami terima ya kak 🙏",)
CONFIRM_SETTLE = ("Pelunasan sudah kami terima, sampai jumpa kak!",)
AFTER_CUSTOMER = ("makasih kak", "makasihhh kak 🙏", "oke siap kak", "kak meeting pointnya di mana ya?",
                  "sip, ditunggu kabarnya")
# thanks with a greeting, soon after paying: not an opening, no new lead (the opening TRAPS)
COURTESY = tuple(text for stage, text in TRAPS if stage == "opening")
POST_PAY_QUESTIONS = (  # a greeting and a question about the order, soon after paying: same lead
    "halo kak, mau tanya meeting pointnya di mana ya?", "Permisi kak, itinerary-nya bisa dikirim?",
    "hai kak, nanti berangkat jam berapa ya?", "Halo kak, mau tanya kalau bawa koper besar boleh?",
)
BOOK_AFTER_PAY = (  # the booking said after paying: still the booking
    "booking utk tgl {d} ya kak", "sekalian reservasi atas nama {nama} ya kak",
    "kak, tolong booking buat {n} orang ya",
)
AFTER_AGENT = ("Sama-sama kak, sampai jumpa 😊", "Ditunggu kedatangannya kak",
               "Meeting point di lobby hotel jam 07.00 ya kak")
BLASTS = (  # outbound campaign messages (bot): no keyword
    "Promo 12.12! Diskon 30% semua paket liburan. Balas YA untuk info 🎉",
    "Halo kak, ada promo akhir tahun nih! Paket Bali mulai {P}. Tertarik?",
    "Flash sale tiket open trip hanya minggu ini, kuota terbatas!",
)
_BLAST_LABELS = (L_OPEN, L_OPEN, L_NONE)  # promo / info / halo: outbound openings
# what the CRM calls each blast, and the WhatsApp template it is sent as (the payloads carry
# them: Qontak broadcasts, WhatsApp template echoes; generic campaigns get a dated name)
BLAST_NAMES = ("Promo 12.12", "Promo Akhir Tahun Bali", "Flash Sale Open Trip")
BLAST_TEMPLATES = ("promo_1212", "promo_akhir_tahun", "flash_sale_open_trip")
_BROADCASTS = uuid.UUID("6f1c2a3e-9d4b-4e8f-a7c5-0b1d2e3f4a5b")  # namespace of broadcast ids

NAMES = ("Budi", "Siti", "Andi", "Dewi", "Rina", "Agus", "Putri", "Rizky", "Ayu", "Fajar", "Wulan",
         "Yusuf")
EMOJI = (" 🙏", " 😊", " 👍", " 🙏🏻", " 😁", " ✨")
UNIT_PRICES = (150_000, 199_000, 250_000, 350_000, 450_000, 499_000, 750_000, 899_000, 1_250_000,
               1_500_000, 2_000_000, 2_750_000, 3_500_000)
ID_PREFIXES = ("811", "812", "813", "821", "822", "823", "851", "852", "853", "814", "815", "816",
               "855", "856", "857", "858", "817", "818", "819", "859", "877", "878", "831", "832",
               "833", "838", "895", "896", "897", "898", "899", "881", "882", "883", "887", "888")
AD_IDS = ("120226305854810726", "120226305854810799", "120210000000000123", "120230477112233445")
AD_HEADLINES = dict(zip(AD_IDS, ("Chat with us", "Promo liburan", "Tanya admin",
                                 "Paket Bali 3D2N")))  # an ad keeps its headline
BUSINESS_NUMBER = "15550783881"
AGENT_PHONE = "6281100000001"
# Hour-of-day weights in Jakarta time (people chat from morning to late evening).
_HOUR_WEIGHTS = (1, 1, 1, 1, 2, 4, 7, 9, 10, 11, 11, 11, 12, 11, 10, 10, 10, 11, 12, 13, 13, 11, 7, 3)
_HOUR_MAX = max(_HOUR_WEIGHTS)
_FW = {c: chr(c + 0xFEE0) for c in range(0x21, 0x7F)}  # ASCII -> full-width forms


# ---------------------------------------------------------------------------------------------
# Money in Indonesian chat styles


def _dots(n: int) -> str:
    return f"{n:,}".replace(",", ".")


def _money(rand, amount: int) -> str:
    """One way people write `amount` Rupiah (all mean exactly `amount`)."""
    styles = ["rp", "rp", "rp_tight", "rp_dash", "rp_dec", "idr"]
    if amount < 1_000_000 and amount % 1000 == 0:
        styles += ["rb", "rb", "ribu", "k", "k"]
    if amount >= 1_000_000 and amount % 100_000 == 0:
        styles += ["jt", "jt", "juta", "juta"]
    if amount % 1000 == 0:
        styles.append("words")           # "dua juta tujuh ratus lima puluh ribu"
    if amount >= 1_500_000 and amount % 1_000_000 == 500_000:
        styles.append("half")            # "dua setengah juta"
    style = styles[int(rand() * len(styles))]
    if style == "words":
        return num2words(amount, lang="id")
    if style == "half":
        return num2words(amount // 1_000_000, lang="id") + " setengah juta"
    if style == "rp":
        return f"Rp {_dots(amount)}"
    if style == "rp_tight":
        return f"Rp{_dots(amount)}"
    if style == "rp_dash":
        return f"Rp. {_dots(amount)},-"
    if style == "rp_dec":
        return f"Rp {_dots(amount)},00"
    if style == "idr":
        return f"IDR {amount:,}"
    if style in ("rb", "ribu", "k"):
        k = amount // 1000
        return {"rb": f"{k}rb", "ribu": f"{k} ribu", "k": f"{k}k"}[style]
    whole, rest = divmod(amount, 1_000_000)
    frac = f"{rest:06d}".rstrip("0")
    if style == "jt":
        return f"{whole},{frac}jt" if frac else f"{whole}jt"
    return f"{whole}.{frac} juta" if frac else f"{whole} juta"


def _national(phone: str) -> str:
    """`+6281234567890` -> `0812-3456-7890` (as people type it)."""
    d = "0" + phone[3:]
    return f"{d[:4]}-{d[4:8]}-{d[8:]}"


# ---------------------------------------------------------------------------------------------
# Customers and conversations


@dataclass(slots=True)
class _Customer:
    source: str
    key: str
    phone: str | None
    user_id: str | None
    room_id: str | None = None
    room_channel: str | None = None   # qontak: wa | website | ig ; generic: the room's label
    echoes: bool = True               # WhatsApp: agent messages visible (coexistence echoes)
    seq: int = 0                      # generic: room-local message ids


# One event before it becomes a NormalizedMessage.
#   (ts, direction, sender_type, text, label, extra)  extra: dict | None
_Event = tuple


class _Builder:
    def __init__(self, seed: int, start: datetime, days: int, lead_window_days: int,
                 quiet_hours_after_payment: float = 24.0) -> None:
        self.rng = random.Random(seed)
        self.rand = self.rng.random
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start = int(start.timestamp())
        self.end = self.start + int(days * 86400)
        self.window = int(lead_window_days * 86400)
        self.quiet = timedelta(hours=quiet_hours_after_payment)
        self.phones: set[str] = set()
        self.opened = self.start  # opening time of the cycle being written
        self.messages: list[SimMessage] = []
        self.leads: list[TruthLead] = []
        # campaign blasts: every ~4 days at 10:00 Jakarta (03:00 UTC), plus the first day
        day0 = self.start - self.start % 86400
        self.blasts = [t for t in range(day0 + 3 * 3600, self.end, 4 * 86400) if t >= self.start]
        if not self.blasts:
            self.blasts = [self.start]

    # -- ids, phones, times ------------------------------------------------------------------

    def pick(self, seq):  # rng.choice, 5x faster
        return seq[int(self.rand() * len(seq))]

    def between(self, lo: int, hi: int) -> int:  # lo <= n < hi
        return lo + int(self.rand() * (hi - lo))

    def wamid(self) -> str:
        return "wamid." + base64.b64encode(self.rng.getrandbits(192).to_bytes(24, "big")).decode()

    def uuid(self) -> str:  # a random (version 4) UUID
        x = self.rng.getrandbits(128)
        h = f"{x:032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[x & 3]}{h[17:20]}-{h[20:]}"

    def phone(self) -> str:
        rng = self.rng
        while True:
            r = rng.random()
            if r < 0.97:
                p = "+62" + self.pick(ID_PREFIXES) + str(self.between(10**7, 10**9 - 1)
                                                          if rng.random() < 0.3 else
                                                          self.between(10**7, 10**8))
            elif r < 0.985:
                p = "+658" + str(self.between(1_000_000, 10_000_000))  # Singapore mobile
            else:
                p = "+601" + self.pick("2379") + str(self.between(1_000_000, 10_000_000))  # MY
            if p not in self.phones:
                self.phones.add(p)
                return p

    def first_time(self) -> int:
        """A first-contact time in the window, weighted by the hour of day in Jakarta."""
        rng = self.rng
        span = self.end - self.start
        while True:
            t = self.start + int(rng.random() * span * 0.97)
            if rng.random() * _HOUR_MAX < _HOUR_WEIGHTS[((t % 86400) // 3600 + 7) % 24]:
                return t

    def reply_gap(self) -> int:  # an agent answering
        return 20 + int(self.rng.expovariate(1 / 420))

    def chat_gap(self) -> int:  # the same person typing on
        return 5 + int(self.rng.expovariate(1 / 60))

    def later_gap(self) -> int:  # coming back later the same or next day
        return 1800 + int(self.rng.random() * 30 * 3600)

    # -- text helpers ------------------------------------------------------------------------

    def fill(self, template: str, ctx: dict) -> str:
        return template.format_map(ctx) if "{" in template else template

    def noisy(self, text: str) -> str:
        """Customer typing noise: casing, emoji, rarely full-width characters."""
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            text = text.lower()
        elif r < 0.38:
            text = text.upper()
        if rng.random() < 0.12:
            text += self.pick(EMOJI)
        if rng.random() < 0.01:
            text = text.translate(_FW)
        return text

    def prefilled(self, texts: tuple[str, ...], ctx: dict) -> str:
        text = self.pick(texts) + self.fill(self.pick(PREFILL_SUFFIX), ctx)
        return text.lower() if self.rng.random() < 0.2 else text

    # -- customers ---------------------------------------------------------------------------

    def customer(self) -> _Customer:
        rng = self.rng
        r = rng.random()
        if r < 0.60:
            if rng.random() < 0.04:  # username user: phone withheld, business-scoped user id
                uid = f"ID.{self.between(10**15, 10**16)}"
                c = _Customer("whatsapp", f"bsuid:{uid}", None, uid)
            else:
                p = self.phone()
                c = _Customer("whatsapp", p, p, None)
            c.echoes = rng.random() < 0.6
            return c
        if r < 0.85:
            q = rng.random()
            room = self.uuid()
            if q < 0.88:
                p = self.phone()
                return _Customer("qontak", p, p, None, room, "wa")
            if q < 0.95:  # website live chat: a visitor id, no phone
                uid = f"visitor-{rng.getrandbits(40):010x}"
                return _Customer("qontak", f"qontak-user:{uid}", None, uid, room, "website")
            uid = f"ig-{rng.getrandbits(40):010x}"
            return _Customer("qontak", f"qontak-user:{uid}", None, uid, room, "ig")
        room = f"room-{rng.getrandbits(48):012x}"
        if rng.random() < 0.92:
            p = self.phone()
            return _Customer("generic", p, p, None, room)
        uid = f"u{rng.getrandbits(32):08x}"
        return _Customer("generic", f"generic-user:{uid}", None, uid, room)

    # -- one customer's story ----------------------------------------------------------------

    def story(self, c: _Customer) -> list[_Event]:
        rng = self.rng
        ev: list[_Event] = []
        # entry channel of the first cycle (the source constrains what is possible)
        r = rng.random()
        entry = "ads" if r < 0.33 else "website" if r < 0.53 else "campaign" if r < 0.75 else "direct"
        if c.source == "qontak" and c.room_channel == "website":
            entry = "website"
        elif c.source == "qontak" and c.room_channel == "ig" and entry in ("website", "campaign"):
            entry = "direct"
        if c.source == "generic":
            c.room_channel = {
                "ads": "ads", "website": self.pick(("website", "whatsapp")),
                "campaign": "whatsapp",
                # a CRM's own labels are channels; whatsapp / instagram name the medium
                "direct": self.pick(("direct", "whatsapp", "instagram", "tiktok", "referral",
                                     "event_jakarta")),
            }[entry]
        t = self.first_time()
        if entry == "campaign" and c.source != "whatsapp" and rng.random() < 0.08:
            # blast only: the customer never answers (no lead)
            self.blast(c, ev, t)
            return ev
        t, paid = self.cycle(c, ev, t, entry, first=True)
        # later chapters
        cycles = 1
        while t < self.end and cycles < 4:
            r = rng.random()
            if paid and r < 0.30:  # back soon after buying: a new cycle
                t += 86400 + int(rng.random() * 13 * 86400)
                entry = self.pick(("ads", "website", "direct", "direct"))
                if c.source != "whatsapp" and rng.random() < 0.25:
                    entry = "reengage"  # a new blast, answered with a greeting
            elif r < 0.38:  # back after the lead window: a new cycle
                t = max(t + 3600, self.opened + self.window + 86400 + int(rng.random() * 9 * 86400))
                entry = self.pick(("ads", "website", "direct"))
            elif not paid and r < 0.62:  # more messages within the window, same cycle
                back = self.recontact(c, ev, t)
                if back is None:
                    break
                t = back
                if rng.random() < 0.5:
                    t, paid = self.deal(c, ev, t, {})
                continue
            else:
                break
            if c.source == "qontak" and c.room_channel in ("website", "ig") and entry != "direct":
                entry = "direct"
            t, paid = self.cycle(c, ev, t, entry, first=False)
            cycles += 1
        return ev

    def add(self, ev: list[_Event], ts: int, out: bool, sender: str, text: str,
            label: TruthLabel, extra: dict | None = None) -> int:
        if ev and ts <= ev[-1][0]:
            ts = ev[-1][0] + 1
        ev.append((ts, "outbound" if out else "inbound", sender, text, label, extra))
        return ts

    def agent(self, c: _Customer, ev: list[_Event], ts: int, text: str, label: TruthLabel) -> int:
        sender = "business" if c.source == "whatsapp" else "agent"
        return self.add(ev, ts, True, sender, text, label)

    def blast(self, c: _Customer, ev: list[_Event], t: int) -> int:
        """An outbound campaign message shortly before `t` (after the customer's earlier
        messages): the latest scheduled blast of the last days, else one of its own. Returns
        its time; the caller places the reply after it."""
        rng = self.rng
        earliest = max(self.start, ev[-1][0] + 60 if ev else self.start)
        scheduled = [b for b in self.blasts if earliest <= b < t - 600 and t - b < 4 * 86400]
        if scheduled:
            bt = scheduled[-1]
        else:
            bt = max(earliest, t - 600 - int(rng.random() * 2 * 86400))
        bt += int(rng.random() * 900)  # sending thousands takes minutes
        i = self.between(0, len(BLASTS))
        text = self.fill(BLASTS[i], {"P": _money(self.rand, self.pick(UNIT_PRICES))})
        return self.add(ev, bt, True, "bot", text, _BLAST_LABELS[i], {"campaign": True,
                                                                       "blast": i})

    def cycle(self, c: _Customer, ev: list[_Event], t: int, entry: str,
              first: bool) -> tuple[int, bool]:
        """The opening message of a cycle (after a blast for campaign entries), then a deal."""
        rng = self.rng
        ctx = self.context(c)
        extra: dict | None = None
        if entry == "ads":
            if c.source == "whatsapp":
                extra = {"referral": self.referral()}
                if rng.random() < 0.25 and first:  # edited prefilled text (first visit)
                    text, st, channel = self.pick(AD_EDITED)
                    label = _label(st, channel=channel)
                else:
                    text, label = self.prefilled(AD_TEXTS, ctx), _label("o", channel="ads")
            elif c.source == "generic" and c.room_channel == "ads" and rng.random() < 0.4:
                text, label = self.noisy(self.pick(GREETINGS)), L_OPEN
            else:
                text, label = self.prefilled(AD_TEXTS, ctx), _label("o", channel="ads")
            if c.source == "generic" and first and rng.random() < 0.5:
                extra = {"ad_id": self.pick(AD_IDS)}
        elif entry == "website":
            if c.source == "qontak" and c.room_channel == "website":
                text, label = self.noisy(self.pick(GREETINGS)), L_OPEN
            else:
                text, label = self.prefilled(WEB_TEXTS, ctx), _label("o", channel="website")
        elif entry == "campaign":
            if c.source == "whatsapp":
                text, st, channel = self.pick(BUTTONS)
                extra = {"button": text, "context": self.wamid()}
                label = _label(st, channel=channel)
                if c.echoes:  # the template message the button answers, echoed (named)
                    sent = max(t - 600, self.start, ev[-1][0] + 1 if ev else self.start)
                    template = BLAST_TEMPLATES[(t // (4 * 86400)) % len(BLAST_TEMPLATES)]
                    t = max(t, self.add(ev, sent, True, "business", "", L_NONE, {
                        "template": template, "id": extra["context"]}) + 1)
            else:
                bt = self.blast(c, ev, t)
                late = rng.random() < 0.07  # answers after the 7-day window: direct
                t = bt + (8 * 86400 + int(rng.random() * 4 * 86400) if late else
                          60 + int(rng.expovariate(1 / 1800)) if rng.random() < 0.8 else
                          3600 + int(rng.random() * 3 * 86400))
                r = rng.random()
                if late:
                    text, label = self.noisy(self.pick(GREETINGS)), L_OPEN
                elif r < 0.45:
                    text, label = self.prefilled(CAMPAIGN_TEXTS, ctx), _label("o", channel="campaign_blast")
                else:
                    text, st = self.pick(CAMPAIGN_REPLIES)
                    text, label = self.noisy(text), _label(st)
        elif entry == "reengage":
            bt = self.blast(c, ev, t)
            t = bt + 300 + int(rng.random() * 2 * 86400)
            text, label = self.noisy(self.pick(GREETINGS)), L_OPEN
        else:  # direct
            if first and rng.random() < 0.15:
                text, label = self.noisy(self.pick(NO_KEYWORD_FIRST)), L_NONE
            else:
                text, label = self.noisy(self.pick(GREETINGS)), L_OPEN
        t = self.opened = self.add(ev, t, False, "customer", text, label, extra)
        if rng.random() < 0.85:
            text, st = self.pick(AGENT_GREETINGS)
            t = self.agent(c, ev, t + self.reply_gap(), text, _label(st))
        return self.deal(c, ev, t, ctx)

    def context(self, c: _Customer) -> dict:
        unit = self.pick(UNIT_PRICES)
        n = self.pick((1, 1, 2, 2, 2, 3, 4))
        hp = _national(c.phone) if c.phone and c.phone.startswith("+62") else _national(
            "+62" + self.pick(ID_PREFIXES) + str(self.between(10**7, 10**8)))
        return {"unit": unit, "n": n, "total": unit * n, "d": self.between(1, 29),
                "nama": self.pick(NAMES), "hp": hp, "o": f"2023{self.between(10**4, 10**5)}",
                "acct": str(self.between(10**9, 10**10)),
                "va": f"8808 {self.between(1000, 9999)} {self.between(1000, 9999)} {self.between(1000, 9999)}"}

    def recontact(self, c: _Customer, ev: list[_Event], t: int) -> int | None:
        """Back within the lead window (no transaction yet): an opening text, same cycle.
        None when the window has no room left for it."""
        rng = self.rng
        latest = self.opened + self.window - 86400
        if t + 3600 > latest:
            return None
        t2 = min(t + 3600 + int(rng.random() * 10 * 86400), latest)
        if rng.random() < 0.3 and not (c.source == "qontak" and c.room_channel != "wa"):
            text, label = self.prefilled(WEB_TEXTS, self.context(c)), _label("o", channel="website")
        else:
            text, st = self.pick(RECONTACT)
            text, label = self.noisy(text), _label(st)
        t2 = self.add(ev, t2, False, "customer", text, label)
        if rng.random() < 0.8:
            text, st = self.pick(AGENT_GREETINGS)
            t2 = self.agent(c, ev, t2 + self.reply_gap(), text, _label(st))
        return t2

    def deal(self, c: _Customer, ev: list[_Event], t: int, ctx: dict) -> tuple[int, bool]:
        """Questions, quotes, booking, payment instructions, payments. Returns (time, paid)."""
        rng = self.rng
        if not ctx:
            ctx = self.context(c)
        unit, total = ctx["unit"], ctx["total"]
        ctx["P"] = _money(self.rand, unit)
        ctx["T"] = _money(self.rand, total)
        for _ in range(self.pick((0, 1, 1, 2, 2, 3))):
            text, st = self.pick(QUESTIONS)
            label = L_NONE if st == "T" else _label(st)
            t = self.add(ev, t + self.chat_gap(), False, "customer", self.noisy(text), label)
            if rng.random() < 0.7:
                quote, st = self.pick(QUOTES)
                t = self.agent(c, ev, t + self.reply_gap(), self.fill(quote, ctx), _label(st))
        r = rng.random()
        if r < 0.36:  # drops out
            if rng.random() < 0.5:
                t = self.add(ev, t + self.chat_gap(), False, "customer", self.noisy(self.pick(DROPS)), L_NONE)
            return t, False
        if r < 0.41:  # says no to booking
            t = self.add(ev, t + self.later_gap(), False, "customer",
                         self.noisy(self.pick(NEGATED_BOOKINGS)), L_NONE)
            return t, False
        book = r < 0.92  # else pays without a booking word (the payment implies the booking)
        if book:
            if rng.random() < 0.2:
                t = self.agent(c, ev, t + self.reply_gap(), self.fill(self.pick(AGENT_BOOK_PROMPTS), ctx), L_BOOK)
            text, st = self.pick(CUSTOMER_BOOKINGS)
            t = self.add(ev, t + self.chat_gap(), False, "customer", self.noisy(self.fill(text, ctx)), _label(st))
            if rng.random() < 0.5:
                t = self.agent(c, ev, t + self.reply_gap(), self.fill(self.pick(AGENT_BOOK_CONFIRMS), ctx), L_BOOK)
            if r < 0.62:  # booked, never pays (within this story)
                return t, False
        if rng.random() < 0.7:
            t = self.agent(c, ev, t + self.reply_gap(), self.fill(self.pick(INSTRUCTIONS), ctx), L_NONE)
        if rng.random() < 0.2:
            t = self.add(ev, t + self.chat_gap(), False, "customer", self.noisy(self.pick(DELAYS)), L_NONE)
            t += self.later_gap()
        t += self.chat_gap() + int(rng.random() * 6 * 3600)
        if rng.random() < 0.35 and total >= 300_000:  # down payment, settlement later
            dp = max(100_000, (total * self.pick((3, 4, 5)) // 10) // 50_000 * 50_000)
            rest = total - dp
            if rng.random() < 0.25:  # no amount: the agent names what came in and the balance
                t = self.add(ev, t, False, "customer", self.noisy(self.pick(DP_NO_AMOUNT)), L_PAID)
                text = self.fill(self.pick(CONFIRM_DP_BALANCE),
                                 {"A": _money(self.rand, dp), "R": _money(self.rand, rest)})
                t = self.agent(c, ev, t + self.reply_gap(), text, _label("t", True, Decimal(dp)))
            else:
                text = self.fill(self.pick(DP_TEXTS), {**ctx, "A": _money(self.rand, dp)})
                t = self.add(ev, t, False, "customer", self.noisy(text), _label("t", True, Decimal(dp)))
                if rng.random() < 0.7:
                    t = self.agent(c, ev, t + self.reply_gap(), self.pick(CONFIRM_DP), L_PAID)
            if rng.random() < 0.8:
                t += 86400 + int(rng.random() * 10 * 86400)
                if rng.random() < 0.4:
                    ctx["R"] = _money(self.rand, rest)
                    t = self.agent(c, ev, t, self.fill(SETTLE_REMINDER, ctx), L_NONE)
                    t += self.later_gap()
                if rng.random() < 0.15:  # greeted days later: still this purchase
                    text = self.fill(SETTLE_GREETED, {"A": _money(self.rand, rest)})
                    label = _label("ot", True, Decimal(rest))
                elif rng.random() < 0.85:
                    text = self.fill(self.pick(SETTLE_WITH_AMOUNT), {**ctx, "A": _money(self.rand, rest)})
                    label = _label("t", True, Decimal(rest))
                else:
                    text, label = self.pick(SETTLE_NO_AMOUNT), L_PAID
                t = self.add(ev, t, False, "customer", self.noisy(text), label)
                if rng.random() < 0.7:
                    t = self.agent(c, ev, t + self.reply_gap(), self.pick(CONFIRM_SETTLE), L_PAID)
        else:
            if rng.random() < 0.75:
                text = self.fill(self.pick(PAY_WITH_AMOUNT), {**ctx, "A": _money(self.rand, total)})
                t = self.add(ev, t, False, "customer", self.noisy(text), _label("t", True, Decimal(total)))
                if rng.random() < 0.1:  # not seen yet on the agent's side: not a payment
                    t = self.agent(c, ev, t + self.reply_gap(), self.pick(NOT_RECEIVED), L_NONE)
                if rng.random() < 0.7:
                    t = self.agent(c, ev, t + self.reply_gap(), self.pick(CONFIRM_NO_AMOUNT), L_PAID)
            else:
                if c.source == "whatsapp" and rng.random() < 0.5:
                    text = self.pick(PROOF_CAPTIONS)
                    t = self.add(ev, t, False, "customer", self.noisy(text), L_PAID, {"image": True})
                else:
                    text = self.fill(self.pick(PAY_NO_AMOUNT), ctx)
                    t = self.add(ev, t, False, "customer", self.noisy(text), L_PAID)
                if rng.random() < 0.8:  # the agent names the amount
                    text = self.fill(self.pick(CONFIRM_WITH_AMOUNT), {"A": _money(self.rand, total)})
                    t = self.agent(c, ev, t + self.reply_gap(), text, _label("t", True, Decimal(total)))
                else:
                    t = self.agent(c, ev, t + self.reply_gap(), self.pick(CONFIRM_NO_AMOUNT), L_PAID)
        if not book and rng.random() < 0.3:  # says "booking" only after paying
            t = self.add(ev, t + self.chat_gap(), False, "customer",
                         self.noisy(self.fill(self.pick(BOOK_AFTER_PAY), ctx)), L_BOOK)
        for _ in range(self.pick((0, 1, 1, 2))):
            if rng.random() < 0.5:
                t = self.add(ev, t + self.chat_gap(), False, "customer", self.noisy(self.pick(AFTER_CUSTOMER)), L_NONE)
            else:
                t = self.agent(c, ev, t + self.reply_gap(), self.pick(AFTER_AGENT), L_NONE)
        r = rng.random()
        if r < 0.15:  # thanks hours later, opened with a greeting
            t = self.add(ev, t + 3600 + int(rng.random() * 5 * 3600), False, "customer",
                         self.noisy(self.pick(COURTESY)), L_NONE)
        elif r < 0.25:  # a question about the order before the quiet hours are over
            t = self.add(ev, t + 1800 + int(rng.random() * 8 * 3600), False, "customer",
                         self.noisy(self.pick(POST_PAY_QUESTIONS)), L_OPEN)
        return t, True

    def referral(self) -> dict:
        rng = self.rng
        ad = self.pick(AD_IDS)
        url = f"https://fb.me/{rng.getrandbits(40):010x}"
        self.rand()  # the draw that once picked a headline at random: seeds give what they gave
        ref = {"source_url": url, "source_id": ad, "source_type": "ad",
               "body": "Liburan akhir tahun hemat 30%",
               "headline": AD_HEADLINES[ad],  # the ad's own: it names the ad's campaign
               "media_type": "image", "image_url": "https://scontent.xx.fbcdn.net/ad.jpg",
               "ctwa_clid": base64.urlsafe_b64encode(rng.getrandbits(480).to_bytes(60, "big")).decode()}
        if rng.random() < 0.1:
            del ref["ctwa_clid"]  # ads shown in WhatsApp Status carry no click id
        return ref

    # -- events -> messages, truth -----------------------------------------------------------

    def emit(self, c: _Customer, ev: list[_Event]) -> None:
        fromts = datetime.fromtimestamp
        out: list[SimMessage] = []
        src = c.source
        for ts, direction, sender, text, label, extra in ev:
            if ts >= self.end:
                break
            if src == "whatsapp" and direction == "outbound" and not c.echoes:
                continue
            at = fromts(ts, UTC)
            if src == "whatsapp":
                echo = extra["id"] if extra and "template" in extra else None
                m = NormalizedMessage(
                    source=src, message_id=echo or self.wamid(), sent_at=at, direction=direction,
                    sender_type=sender, text=text, customer_key=c.key, phone=c.phone,
                    user_id=c.user_id, message_type="text", medium="whatsapp", raw_key="sim")
                if extra:
                    if "referral" in extra:
                        m.referral = extra["referral"]
                        m.channel_hint = "ads"
                        m.ad_id = m.referral["source_id"]
                        m.campaign_name = m.referral["headline"]
                    elif "template" in extra:
                        m.message_type = "template"
                        m.template_name = extra["template"]
                    elif "button" in extra:
                        m.message_type = "button"
                        m.channel_hint = "campaign_blast"
                        m.campaign_id = m.context_id = extra["context"]
                    elif "image" in extra:
                        m.message_type = "image"
            elif src == "qontak":
                mid = self.uuid()
                campaign = bool(extra and extra.get("campaign"))
                hint = "campaign_blast" if campaign else "website" if c.room_channel == "website" else None
                m = NormalizedMessage(
                    source=src, message_id=mid, sent_at=at, direction=direction,
                    sender_type=sender, text=text, customer_key=c.key, phone=c.phone,
                    user_id=c.user_id, room_id=c.room_id, message_type="text",
                    channel_hint=hint, room_channel=_QONTAK_ROOM_CHANNEL[c.room_channel],
                    medium=channels.medium(c.room_channel),
                    campaign_id=mid if campaign else None, raw_key="sim")
                if campaign:  # the broadcast it belongs to: one per blast and day
                    i = extra["blast"]
                    m.broadcast_id = str(uuid.uuid5(_BROADCASTS, f"{ts // 86400}-{i}"))
                    m.campaign_name = f"{BLAST_NAMES[i]} {at:%d/%m}"
                    m.template_name = BLAST_TEMPLATES[i]
            else:
                c.seq += 1
                inbound = direction == "inbound"
                campaign = bool(extra and extra.get("campaign"))
                named = channels.label(c.room_channel)
                m = NormalizedMessage(
                    source=src, message_id=f"m-{c.seq}", sent_at=at, direction=direction,
                    sender_type=sender, text=text, customer_key=c.key,
                    phone=c.phone if inbound else None, user_id=c.user_id if inbound else None,
                    room_id=c.room_id,
                    channel_hint="campaign_blast" if campaign else named.channel,
                    medium=named.medium,
                    campaign_id=f"promo-{fromts(ts, UTC):%Y%m%d}" if campaign else None,
                    ad_id=extra.get("ad_id") if extra else None, raw_key="sim")
                if m.campaign_id:
                    m.campaign_name = f"Promo {at:%d %b %Y}"
                elif m.ad_id:
                    m.campaign_name = AD_HEADLINES[m.ad_id]
            out.append(SimMessage(m, label))
        self.messages.extend(out)
        self.leads.extend(truth_leads(c.key, c.phone, out, self.window, self.quiet))

    def run(self, customers: int) -> Simulation:
        for _ in range(customers):
            c = self.customer()
            self.emit(c, self.story(c))
        self.messages.sort(key=_order)
        self.leads.sort(key=lambda lead: (lead.customer_key, lead.lead_at))
        return Simulation(self.messages, self.leads)


def _order(sm: SimMessage) -> tuple:
    m = sm.message
    return (m.sent_at, m.source, m.message_id, m.room_key)


def truth_leads(customer_key: str, phone: str | None, messages: list[SimMessage],
                lead_window_seconds: int, quiet: timedelta = timedelta(hours=24)
                ) -> list[TruthLead]:
    """The funnel rows of one customer, from the messages' truth labels (module docstring)."""
    window = timedelta(seconds=lead_window_seconds)
    leads: list[dict] = []
    cur: dict | None = None
    last_paid: datetime | None = None
    last_campaign: datetime | None = None
    for sm in sorted(messages, key=_order):
        m, lab = sm.message, sm.truth
        if m.direction == "outbound":
            if m.channel_hint == "campaign_blast":
                last_campaign = m.sent_at
            if cur is None:
                continue
        elif cur is None or ("opening" in lab.stages and (
                m.sent_at - cur["lead_at"] > window or (
                    last_paid is not None and not lab.payment and (
                        lab.opening_channel is not None or m.ad_id or m.campaign_id
                        or (last_campaign is not None and last_campaign > last_paid
                            and m.sent_at - last_campaign <= CAMPAIGN_REPLY_WINDOW)
                        or m.sent_at - last_paid >= quiet)))):
            if lab.opening_channel:
                channel = lab.opening_channel
            elif m.channel_hint not in NO_CHANNEL:
                channel = m.channel_hint
            elif last_campaign is not None and m.sent_at - last_campaign <= CAMPAIGN_REPLY_WINDOW:
                channel = "campaign_blast"
            else:
                channel = "direct"
            cur = {"channel": channel, "lead_at": m.sent_at, "booking_at": None,
                   "transaction_at": None, "transaction_value": None, "transaction_total": None,
                   "medium": m.medium}
            leads.append(cur)
            last_paid = None
        if cur["medium"] is None and m.medium:
            cur["medium"] = m.medium
        if "booking" in lab.stages and cur["booking_at"] is None:
            cur["booking_at"] = m.sent_at
        if lab.payment:
            last_paid = m.sent_at
            if cur["transaction_at"] is None:
                cur["transaction_at"] = m.sent_at
            if lab.amount is not None:
                if cur["transaction_value"] is None:
                    cur["transaction_value"] = lab.amount
                cur["transaction_total"] = (cur["transaction_total"] or Decimal(0)) + lab.amount
    return [TruthLead(customer_key, phone, **d) for d in leads]


def simulate(customers: int, *, seed: int = 0, start: datetime | None = None, days: int = 30,
             lead_window_days: int = 30, quiet_hours_after_payment: float = 24.0) -> Simulation:
    """A deterministic simulation of `customers` customers' chats over `days` days from `start`
    (default 2025-10-01 UTC; pass e.g. `now - timedelta(days=days)` for fresh traffic: providers'
    timestamps may not lie more than a day in the future). Returns every message once, in true
    time order, with its truth label, and the funnel rows the engine must produce.

    Returns after more than `lead_window_days` (a new cycle) happen only when `days` leaves room
    for them (e.g. `days=75` with the default window)."""
    with _no_gc():
        return _Builder(seed, start or DEFAULT_START, days, lead_window_days,
                        quiet_hours_after_payment).run(customers)
