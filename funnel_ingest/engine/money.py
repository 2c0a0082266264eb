"""Rupiah amounts in Indonesian chat text (docs/funnel.md, Transaction date and value).

`parse_amounts(text)` finds every amount of money; `payment_amount(text)` picks the one a
payment statement is about. Values are integer Rupiah as `Decimal` (never floats); offsets are
into `text.normalize_light(text)`.

What is money:

- a number with a currency, before or after: `Rp 1.500.000`, `Rp. 1.500.000,-`, `Rp1.500.000`,
  `Rp 99.900,00`, `IDR 250,000`, `150.000 rupiah`;
- a number with a multiplier: `150rb`, `150 ribu`, `150 rbu`, `250k`, `1,5jt`, `1.5 juta`,
  `2 juta`, `Rp 2,5 M`, `2,5 miliar`/`milyar`; compounds `1 jt 250 rb`, `1jt250`. `M` means
  miliar (billion, the Indonesian abbreviation) and only counts with a currency or a payment
  word ("2 M" alone may be metres);
- a bare number only right after a money word (`CUE_WORDS`: transfer/tf/trf/bayar/dibayar/lunas/
  dp/total/sebesar/senilai/nominal/harga/sisa/... with fillers such as "nya", "kak", "sudah" or
  a payment channel such as "via qris" in between), and then only grouped in thousands
  (`1.500.000`, `250,000`) or, ungrouped, a round amount of 4 to 9 digits (a multiple of
  Rp 100: `tf 150000`; `bayar 2025` is a year).

Number grammar: `.` or `,` followed by exactly three digits groups thousands (`1.500` with Rp
is Rp 1 500, `IDR 250,000` is 250 000); followed by one or two digits it is a decimal separator
(`99.900,00` is 99 900, `1,5jt` and `1.5jt` are 1 500 000) and decimals never multiply. With
juta or miliar a single separator is always decimal (`1,250 jt` is 1 250 000: nobody writes
thousands of millions in a chat); with ribu/k three digits group (`1.250rb` is 1 250 000).
Values are rounded half up to whole Rupiah; values under Rp 100 are dropped (no payment is that
small: `Rp 1.5` is a typo), and so are values over `MAX_AMOUNT` (Rp 10^15: no chat payment is
that large, and the amount columns are numeric(20, 0), so a typo such as "tf 999.999.999.999 M"
must not reach them: it would fail the drain's whole batch).

What is never money: dates (`12.12`, `12/12`, `05-01-2025`, `2025-10-01`), times (`19.00`,
`jam 7`, `pukul 19.30`), percentages (`30%`, `30 persen`), quantities followed by a unit word
(`UNIT_WORDS`: `2 pax`, `3 malam`, `2x`), order/invoice/account ids (`#20231212`,
`INV/2025/001`, `no rek 1234567890`, `order 123456`, any digit run over 12 digits, ungrouped
runs of 10 or more), phone numbers (`08…`, `62 8…`, `+62…`).

Per-unit prices (`75rb/pax`, `Rp 50.000 per orang`, `@75rb`, `Rp 1.000.000 x 2`) are amounts
with `unit_price=True` (and `count` when a count is written).

`payment_amount` policy, over the amounts of one message:
1. unit prices are set aside when any other amount exists (`75rb/pax, total 150rb` -> 150 000);
   a unit price with an explicit count stands for its line total (`bayar 2x500rb` -> 1 000 000);
2. the first amount right after a payment word or verb (`sudah transfer 250rb`, `dp 500k`);
3. else the last amount after a total word or `=` (`Rp 1.000.000 x 2 = Rp 2.000.000`,
   `dp 30% dari total 5jt berarti 1,5jt` -> 1 500 000);
4. else the largest amount not marked as a remainder, discount or refund (`sisa`, `kurang`,
   `diskon`, `cashback`, ...); `None` when only such amounts remain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal

from funnel_ingest.engine.text import normalize_light

__all__ = ["CUE_WORDS", "MAX_AMOUNT", "UNIT_WORDS", "Amount", "parse_amounts", "payment_amount"]

Cue = Literal["payment", "total", "price", "other"]

_MULTIPLIERS: dict[str, Decimal] = {
    "ribu": Decimal(1_000), "rebu": Decimal(1_000), "rbu": Decimal(1_000),
    "rb": Decimal(1_000), "k": Decimal(1_000),
    "juta": Decimal(1_000_000), "jt": Decimal(1_000_000), "jta": Decimal(1_000_000),
    "million": Decimal(1_000_000),
    "miliar": Decimal(10**9), "milyar": Decimal(10**9), "milliar": Decimal(10**9),
    "m": Decimal(10**9),
}
_MILLION = Decimal(1_000_000)
MAX_AMOUNT = Decimal(10**15)
"""The largest amount read as money (Rp 1 000 triliun); see the module docstring."""

UNIT_WORDS = frozenset((
    "pax", "orang", "org", "pcs", "pc", "x", "kali", "malam", "mlm", "hari", "hr", "porsi",
    "tiket", "kamar", "kg", "gram", "gr", "ons", "unit", "jam", "menit", "mnt", "detik", "bulan",
    "bln", "tahun", "thn", "minggu", "box", "botol", "btl", "pack", "pak", "lusin", "buah", "bh",
    "lembar", "lbr", "kursi", "meja", "seat", "sesi", "kelas", "paket", "item", "night", "nights",
    "person", "people", "room", "rooms", "day", "days", "km", "cm", "meter", "liter", "ltr",
    "lt", "ml", "kali", "tamu", "anak", "dewasa", "peserta", "set", "pasang", "ekor", "slot",
    "lantai", "bintang", "star",
))
"""Words that make the number before them a quantity (or the amount before them a unit price)."""

_PAYMENT_STEMS = ("transfer", "trf", "bayar", "lunas", "setor")
_PAYMENT_WORDS = frozenset((
    "tf", "tfnya", "ditf", "trf", "trfnya", "ditrf", "dp", "dpnya", "sebesar", "senilai",
    "sejumlah", "nominal", "nominalnya", "paid", "payment", "nyetor", "kirim", "kirimin",
    "dikirim", "ngirim", "mengirim", "kirimkan", "dikirimkan",
))
_TOTAL_WORDS = frozenset((
    "total", "totalnya", "ttl", "jumlah", "jumlahnya", "jadi", "jadinya", "jd", "semua",
    "semuanya", "subtotal", "tagihan", "tagihannya", "grand", "berarti", "brarti", "yaitu",
))
_CHANNEL_PREPOSITIONS = frozenset(("via", "lewat", "pakai", "pake", "melalui", "dgn", "dengan"))
"""A payment channel between a money word and a bare number is skipped: "bayar via qris 89.000"."""
_PRICE_WORDS = frozenset((
    "harga", "harganya", "hrg", "biaya", "biayanya", "tarif", "tarifnya", "price", "cuma",
    "cuman", "hanya", "mulai", "htm", "seharga",
))
_BALANCE_WORDS = frozenset((
    "sisa", "sisanya", "kurang", "kurangnya", "kekurangan", "kekurangannya", "tinggal",
    "tinggalnya", "sisaan",
))
"""A remainder still to pay: "sisa 1jt", "kurang 500rb", "tinggal 250rb lagi"."""
_LATER_WORDS = frozenset(("nanti", "ntar", "nnti", "besok", "besoknya", "lusa", "menyusul"))
"""After a payment word they make the amount a later payment: "pelunasan nanti 2jt"."""
_OTHER_WORDS = _BALANCE_WORDS | frozenset((
    "diskon", "disc", "discount",
    "potongan", "cashback", "hemat", "kembalian", "ongkir", "denda", "saldo", "refund",
    "deposit", "deposito",
))
_ID_WORDS = frozenset((
    "no", "nomor", "nomer", "nmr", "norek", "rek", "rekening", "order", "orderan", "pesanan",
    "inv", "invoice", "kode", "id", "resi", "ref", "va", "akun", "hp", "wa", "telp", "tlp",
    "telepon", "nik", "ktp", "npwp", "pin", "otp", "kamar", "room", "meja", "lantai", "blok",
    "kursi", "seat", "voucher", "ke", "booking", "trx", "transaksi", "ticket", "tiket",
))
_TIME_WORDS = frozenset((
    "jam", "pukul", "pkl", "jm", "tgl", "tanggal", "tahun", "thn", "th", "hari", "bulan", "bln",
    "umur", "usia", "minggu", "menit", "detik", "promo", "lantai",
))
_FILLERS = frozenset((
    "nya", "ya", "yah", "kak", "ka", "kk", "gan", "sis", "bro", "min", "pak", "bu", "mas", "mba",
    "mbak", "sudah", "sdh", "udah", "udh", "dah", "telah", "aja", "saja", "dong", "yg", "yang",
    "sekitar", "kurleb", "baru", "lagi", "dulu", "sebanyak", "rp", "idr", "of", "is", "sih",
))
CUE_WORDS = _PAYMENT_WORDS | _TOTAL_WORDS | _PRICE_WORDS | _OTHER_WORDS
"""Words that make a bare number right after them money (with `_PAYMENT_STEMS` forms)."""

_AMOUNT = re.compile(r"""
    (?P<cur>(?<![a-z])(?:rp|idr)\s*[.:]?\s*)?
    (?<!\d)(?<!\d[.,])
    (?P<num>\d+(?:[.,]\d+)*)
    (?P<dash>\s?,\s?-+|\.-+)?
    (?:\s*(?P<mult>ribu|rebu|rbu|rb|k|juta|jta|jt|million|miliar|milyar|milliar|m)(?:an)?(?![a-z])
       (?:(?<=[a-z])(?P<tail>\d{1,3})(?:rb|ribu|k)?(?![\d.,]\d|\d))?)?
    (?P<cur2>\s*(?:rupiah|rp|idr)(?![a-z]))?
    """, re.VERBOSE)
_TOKEN = re.compile(r"[a-z]+|\d+|[=@#/+×*]|[.,;!?\n]")
_LETTERS_BEFORE = re.compile(r"[a-z]+$")
_LONGEST_WORD = 40  # letters looked at before a number ("pembayarannya" is 13)
_PERCENT_AFTER = re.compile(r"\s*(?:%|persen\b|percent\b|pct\b)")
_DATE_AFTER = re.compile(r"[/\-:.]\d")
_PER_UNIT_AFTER = re.compile(r"\s*(?:/\s*|per\s?|@\s*)(?=[a-z])")
_TIMES_AFTER = re.compile(r"\s*[x×*]\s*(\d{1,3})(?![\d.,]\d|\s*(?:rb|ribu|k|jt|juta)\b)")
_WORD_AFTER = re.compile(r"\s*([a-z]+)")
_SPACE_ONLY = re.compile(r"\s*")


@dataclass(frozen=True, slots=True)
class Amount:
    """An amount of money found in a message (offsets into `normalize_light(text)`)."""

    value: Decimal           # integer Rupiah
    start: int
    end: int
    text: str
    currency: bool = False   # written with Rp / IDR / rupiah
    multiplier: bool = False  # written with rb / k / jt / juta / M / miliar
    unit_price: bool = False  # per pax / per orang / @ / "x 2"
    cue: Cue | None = None   # the money word right before it
    count: int | None = None  # for a unit price, the explicit count: "2 x 150rb", "Rp 75rb x 2"

    @property
    def line_total(self) -> Decimal:
        """The value times the explicit count, if any ("2 x 150rb" -> 300 000)."""
        return self.value * self.count if self.count else self.value


def parse_amounts(text: str) -> list[Amount]:
    """Every amount of money in `text`, in order (see the module docstring)."""
    s = normalize_light(text)
    found: list[Amount] = []
    if any(ch.isdigit() for ch in s):
        found = _merge_compounds(s, [a for m in _AMOUNT.finditer(s)
                                     if (a := _amount(s, m)) is not None])
    if _SCALE_WORD.search(s):
        taken = [(a.start, a.end) for a in found]
        found += [a for a in _word_amounts(s)
                  if not any(a.start < e and b < a.end for b, e in taken)]
        found.sort(key=lambda a: a.start)
    return found


def payment_amount(text: str) -> Decimal | None:
    """The amount a payment statement is about, by the policy in the module docstring."""
    amounts = parse_amounts(text)
    if not amounts:
        return None
    amounts = [a for a in amounts if a.line_total <= MAX_AMOUNT]   # "2 x Rp 999 triliun"
    if not amounts:
        return None
    # a unit price with an explicit count stands for its line total ("bayar 2x500rb")
    pool = [a for a in amounts if not a.unit_price or a.count] or amounts
    for a in pool:
        if a.cue == "payment":
            return a.line_total
    totals = [a for a in pool if a.cue == "total"]
    if totals:
        return totals[-1].line_total
    rest = [a for a in pool if a.cue != "other"]
    return max(a.line_total for a in rest) if rest else None


# --- one candidate -----------------------------------------------------------------------------

def _amount(s: str, m: re.Match[str]) -> Amount | None:
    """The candidate `m` as an `Amount`, or None when it is not money."""
    num = m["num"]
    currency = bool(m["cur"] or m["cur2"])
    mult_word = m["mult"]
    start, end = m.start(), m.end()
    if _rejected_around(s, start, end, num, currency, mult_word is not None):
        return None
    cue, unit_before, count_before = _cue_before(s, start)
    if cue == "id" or cue == "time":
        if not (currency or mult_word):
            return None
        cue = None
    if mult_word == "m" and not currency and cue not in ("payment", "total"):
        mult_word = None                   # "2 m" alone: metres or an English million
        end = m.end("num")
    mult = _MULTIPLIERS[mult_word] if mult_word else None
    value = _number(num, mult)
    if value is None:
        return None
    bare = not (currency or mult)
    if bare and (cue is None or not _bare_ok(num, value)):
        return None
    unit_after, count_after, quantity = _after(s, end, currency)
    if quantity:
        return None
    if mult is not None:
        value *= mult
        if m["tail"] and mult_word == m["mult"]:
            tail = m["tail"]
            value += Decimal(tail) / (10 ** len(tail)) * mult
    value = value.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if value < 100 or value > MAX_AMOUNT:
        return None
    return Amount(value, start, end, s[start:end].strip(), currency, mult is not None,
                  unit_after or unit_before,
                  cue if cue in ("payment", "total", "price", "other") else None,
                  count_after or count_before)


def _rejected_around(s: str, start: int, end: int, num: str, currency: bool,
                     multiplied: bool) -> bool:
    """Ids, phone numbers, dates, times and percentages, from the characters around."""
    before = s[start - 1] if start else " "
    if before in "#+_":
        return True                                       # #20231212, +62 812...
    if before in "/-" or (before == ":" and start > 1 and s[start - 2].isdigit()):
        return True                                       # INV/2025/001, 05-01-2025, 19:00
    if before.isalpha() and not currency:
        # the letters right before (searched from `start` back: a search from the text's start
        # for every candidate is quadratic on long texts)
        word = _LETTERS_BEFORE.search(s, max(0, start - _LONGEST_WORD), start)
        counted = word is not None and word.group() == "x" and s[word.start() - 1:word.start()] \
            .isdigit()                                    # 2x500rb
        if word is None or not (counted or _is_payment_word(word.group())):
            return True                                   # inv2025 (but dp500k is money)
    digits = num.replace(".", "").replace(",", "")
    if len(digits) > 12:
        return True                                       # long ids and accounts
    integer = re.split(r"[.,]", num, maxsplit=1)[0]
    if len(integer) >= 2 and integer[0] == "0":
        return True                                       # 0812..., 08...
    if len(integer) >= 10:
        return True                                       # ungrouped account or phone
    if num.startswith("62") and len(integer) <= 4 and s[start + len(num):start + len(num) + 2] \
            in (" 8", "-8"):
        return True                                       # 62 812 3456 7890
    if not multiplied and _DATE_AFTER.match(s, end):
        return True                                       # 12/12/2025, 05-01, 19:30
    return _PERCENT_AFTER.match(s, end) is not None


def _after(s: str, end: int, currency: bool) -> tuple[bool, int | None, bool]:
    """(is a unit price, explicit count, is a quantity) from what follows an amount.

    "/pax", "per orang", "x 2" make a unit price ("x 2" with a count of 2); a unit word right
    after makes a unit price when a currency was written ("Rp 150.000 orang") and a quantity
    otherwise ("2 juta orang", "total 1.500 pcs").
    """
    times = _TIMES_AFTER.match(s, end)
    if times:
        return True, int(times.group(1)), False
    if _PER_UNIT_AFTER.match(s, end):
        return True, None, False
    word = _WORD_AFTER.match(s, end)
    if word and word.group(1) in UNIT_WORDS:
        return (True, None, False) if currency else (False, None, True)
    return False, None, False


def _cue_before(s: str, start: int) -> tuple[str | None, bool, int | None]:
    """(cue kind, unit-price marker, count) from the words right before position `start`.

    The cue kind is "payment", "total", "price", "other" (remainder, discount), "id", "time"
    or None; fillers ("nya", "kak", "sudah") are skipped, clause punctuation stops the search.
    A count written before the amount ("2 x 150rb", "2x Rp 75.000") marks a unit price with
    that count and the search goes on before it ("bayar 2x500rb" is a payment).
    """
    tokens = _TOKEN.findall(s, max(0, start - 48), start)
    unit, count, skipped = False, None, 0
    i = len(tokens) - 1
    while i >= 0:
        tok = tokens[i]
        prev = tokens[i - 1] if i else ""
        if tok in ("x", "\u00d7", "*") and prev.isdigit() and count is None and not unit:
            unit, count = True, int(prev)
            i -= 2
            continue
        if tok == "@":
            unit = True
            i -= 1
            continue
        if tok in UNIT_WORDS and prev in ("per", "/"):
            return None, True, count                      # "per orang 75rb"
        if tok == "=":
            return "total", unit, count
        if tok in ".,;!?\n#/+" or tok.isdigit():
            return None, unit, count
        if tok in _FILLERS and skipped < 2:
            skipped += 1
            i -= 1
            continue
        if prev in _CHANNEL_PREPOSITIONS and skipped < 2:
            skipped += 1
            i -= 2                                        # "bayar via qris 89.000"
            continue
        return _cue_of(tok, prev), unit, count
    return None, unit, count


def _cue_of(word: str, prev: str) -> str | None:
    """The cue kind of the money word `word` (preceded by `prev`)."""
    if (word == "muka" and prev == "uang") or (word == "payment" and prev == "down"):
        return "payment"
    if _is_payment_word(word):
        # "sisa pelunasan 2jt", "kurang bayar 500rb": a balance, not what was paid
        return "other" if prev in _BALANCE_WORDS else "payment"
    if word in _TOTAL_WORDS:
        return "total"
    if word in _PRICE_WORDS:
        return "price"
    if word in _OTHER_WORDS:
        # "pelunasan sisa 1jt", "transfer sisanya 500rb": the remainder is being paid
        return "payment" if prev and _is_payment_word(prev) else "other"
    if word in _LATER_WORDS and prev and _is_payment_word(prev):
        return "other"                                    # "pelunasan nanti 2jt"
    if word in _ID_WORDS:
        return "id"
    if word in _TIME_WORDS:
        return "time"
    return None


def _is_payment_word(word: str) -> bool:
    """transfer/tf/bayar/lunas/setor and their affixed forms (ditransfer, pembayaran, ...)."""
    return word in _PAYMENT_WORDS or any(stem in word for stem in _PAYMENT_STEMS)


def _bare_ok(num: str, value: Decimal) -> bool:
    """A bare number after a money word: grouped in thousands, or a round 4-9 digit amount."""
    if "." in num or "," in num:
        return _grouping(num) is not None
    return 4 <= len(num) <= 9 and value % 100 == 0


# --- amounts in words ----------------------------------------------------------------------------

_UNITS = {"nol": 0, "satu": 1, "dua": 2, "tiga": 3, "empat": 4, "lima": 5, "enam": 6,
          "tujuh": 7, "delapan": 8, "sembilan": 9}
_WORD_SCALES = {"ribu": 1_000, "rb": 1_000, "juta": 1_000_000, "jt": 1_000_000,
                "miliar": 10**9, "milyar": 10**9}
_NUMBER_WORDS = (*_UNITS, "sepuluh", "sebelas", "belas", "puluh", "seratus", "ratus", "seribu",
                 "sejuta", "semiliar", "semilyar", "setengah", "ribu", "juta", "miliar",
                 "milyar")
_WORD_RUN = re.compile(r"(?<![a-z0-9])(?:(?:" + "|".join(sorted(_NUMBER_WORDS, key=len,
                                                                 reverse=True))
                       + r")(?:an)?(?:\s+|(?![a-z0-9])))+")
_SCALE_WORD = re.compile(r"(?<![a-z])(?:ribu|juta|miliar|milyar|seribu|sejuta|semiliar)")


def _word_amounts(s: str) -> list[Amount]:
    """Amounts written in words: "satu juta", "lima ratus ribu", "dua setengah juta",
    "seratus lima puluh ribu", "sejuta". Only runs that reach ribu or more are money (below
    that a number word counts people or days: "dua orang")."""
    out = []
    for m in _WORD_RUN.finditer(s):
        words = [w.removesuffix("an") if w not in _UNITS and w.endswith("an") and
                 w.removesuffix("an") in _NUMBER_WORDS else w for w in m.group().split()]
        value = _words_value(words)
        if value is None or value < 1_000 or value > MAX_AMOUNT:
            continue
        start, end = m.start(), m.start() + len(m.group().rstrip())
        cue, unit, count = _cue_before(s, start)
        if cue in ("id", "time"):
            cue = None
        unit_after, count_after, quantity = _after(s, end, False)
        if quantity:
            continue
        out.append(Amount(value, start, end, s[start:end], _CURRENCY_AFTER.match(s, end) is not None,
                          True, unit or unit_after,
                          cue if cue in ("payment", "total", "price", "other") else None,
                          count or count_after))
    return out


_CURRENCY_AFTER = re.compile(r"\s*(?:rupiah|rp|idr)(?![a-z])")


def _words_value(words: list[str]) -> Decimal | None:
    """The value of a run of Indonesian number words, or None when it is not a number.

    Below a thousand: units (satu .. sembilan), sepuluh / sebelas, "X belas", "X puluh",
    seratus / "X ratus"; "setengah" adds a half ("dua setengah juta" is 2 500 000). Then the
    scales ribu / juta / miliar (seribu, sejuta: one of them). What follows a scale without its
    own scale is read in the unit below, as people write it ("satu juta lima ratus" is
    1 500 000, like "1jt500")."""
    total = Decimal(0)
    group = Decimal(0)   # the part below a thousand being read
    unit: int | None = None
    half = False
    last_scale: int | None = None
    for w in words:
        if w in _UNITS:
            if unit is not None:
                return None                  # "dua tiga": a list of digits, not a number
            unit = _UNITS[w]
        elif w == "sepuluh" or w == "sebelas":
            group += 10 if w == "sepuluh" else 11
        elif w in ("belas", "puluh", "ratus"):
            if unit is None:
                return None
            group += unit + 10 if w == "belas" else unit * (10 if w == "puluh" else 100)
            unit = None
        elif w == "seratus":
            group += 100
        elif w == "setengah":
            half = True
        elif w in ("seribu", "sejuta", "semiliar", "semilyar"):
            scale = {"seribu": 1_000, "sejuta": 1_000_000}.get(w, 10**9)
            total += scale
            last_scale = scale
        elif w in _WORD_SCALES:
            part = group + (unit or 0) + (Decimal("0.5") if half else 0)
            if part == 0:
                return None
            total += part * _WORD_SCALES[w]
            last_scale = _WORD_SCALES[w]
            group, unit, half = Decimal(0), None, False
        else:
            return None
    rest = group + (unit or 0) + (Decimal("0.5") if half else 0)
    if rest and last_scale and last_scale >= 1_000_000:
        total += rest * (last_scale // 1000)   # "satu juta lima ratus": 1 500 000
    elif rest:
        total += rest
    return total.quantize(Decimal(1), rounding=ROUND_HALF_UP) if last_scale else None


# --- number grammar ----------------------------------------------------------------------------

def _grouping(num: str) -> tuple[str, str] | None:
    """(integer digits, decimal digits) when `num` is grouped in thousands, else None.

    `1.500.000` -> ("1500000", ""); `99.900,00` -> ("99900", "00"); `1,500,000.50` ->
    ("1500000", "50"); `12.12` and `1.50.000` -> None.
    """
    parts = re.split(r"([.,])", num)
    groups, seps = parts[0::2], parts[1::2]
    decimals = ""
    if len(seps) >= 2 and len(groups[-1]) in (1, 2) and seps[-1] != seps[-2]:
        decimals = groups.pop()
        seps.pop()
    if not seps or len(set(seps)) != 1:
        return None
    if not 1 <= len(groups[0]) <= 3 or any(len(g) != 3 for g in groups[1:]):
        return None
    return "".join(groups), decimals


def _number(num: str, mult: Decimal | None) -> Decimal | None:
    """The value of the digits `num` before any multiplier (see the module docstring)."""
    try:
        if "." not in num and "," not in num:
            return Decimal(num)
        seps = [c for c in num if c in ".,"]
        head, _, last = num.replace(",", ".").rpartition(".")
        if len(seps) == 1:
            if len(last) == 3 and (mult is None or mult < _MILLION):
                return Decimal(head + last)               # 1.500, 250,000, 1.250rb
            if len(last) <= 3:
                return Decimal(f"{head}.{last}")          # 1,5jt, 1.5jt, 12.12, 1,250jt
            return None
        grouped = _grouping(num)
        if grouped is None:
            return None
        integer, decimals = grouped
        return Decimal(f"{integer}.{decimals}") if decimals else Decimal(integer)
    except InvalidOperation:
        return None


def _merge_compounds(s: str, amounts: list[Amount]) -> list[Amount]:
    """`1 jt 250 rb` is one amount: a smaller multiplied amount right after a larger one."""
    merged: list[Amount] = []
    for a in amounts:
        if merged:
            prev = merged[-1]
            gap = s[prev.end:a.start]
            if prev.multiplier and a.multiplier and not a.currency and \
                    _SPACE_ONLY.fullmatch(gap) and _unit_of(prev) > a.value and \
                    not prev.unit_price and prev.value + a.value <= MAX_AMOUNT:
                merged[-1] = Amount(prev.value + a.value, prev.start, a.end,
                                    s[prev.start:a.end], prev.currency, True, a.unit_price,
                                    prev.cue, a.count)
                continue
        merged.append(a)
    return merged


def _unit_of(a: Amount) -> Decimal:
    """The multiplier an amount was written with (by its text), for compounds."""
    word = re.search(r"([a-z]+)\s*(?:rupiah|rp|idr)?$", a.text)
    return _MULTIPLIERS.get(word.group(1), Decimal(0)) if word else Decimal(0)
