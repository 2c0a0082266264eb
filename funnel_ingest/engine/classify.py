"""Classify one message: the stages it matches, the keywords hit, a payment statement's amount.

Stages come from the keyword matcher (whole words, Indonesian affixes, negations). A
transaction keyword only makes a *payment statement* when the sentence reports a payment
(docs/funnel.md):
- from the customer: not a question, not an intention or plan ("mau/nanti/akan transfer"), and
  either a completed-action marker ("sudah/udah/sdh/telah/barusan"), a proof ("bukti"), a
  completed form of the keyword ("lunas", "paid", "dibayar", "ditransfer"), or an amount;
- from an agent or bot: only a confirmation of receipt ("sudah kami terima", "diterima",
  "sudah masuk", "lunas", "berhasil"), never instructions ("silakan transfer ke …") or prices.
The amount is read only from payment statements.

A customer's thanks is not an opening: a greeting in a message that thanks or says goodbye
("halo kak, thanks yaa", "makasih kak, sampai jumpa") and asks nothing (no question mark, no
intent or inquiry word) loses its opening stage, so the courtesy that follows a purchase
never opens a new lead.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from funnel_ingest.engine import dates, money
from funnel_ingest.engine.matcher import Matcher
from funnel_ingest.engine.model import STAGES, Classification, Hit, Keyword
from funnel_ingest.engine.text import normalize
from funnel_ingest.messages import NormalizedMessage

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

COMPLETED = {"sudah", "sdh", "udah", "udh", "dah", "telah", "tlh", "barusan", "done", "sukses",
             "berhasil", "beres", "selesai", "masuk", "terkirim", "kelar"}
PROOF = {"bukti", "buktinya", "struk", "resi", "screenshot", "ss", "terlampir"}
INTENT = {"mau", "mo", "akan", "nanti", "ntar", "nnti", "besok", "ingin", "pengen", "pingin",
          "rencana", "rencananya", "harus", "hrs", "perlu", "bisa", "bisakah", "boleh", "bolehkah",
          "gimana", "bagaimana", "gmn", "kemana", "mana", "berapa", "brp", "kapan", "apakah",
          "apa", "caranya", "cara", "kalau", "kalo", "klo", "jika", "coba", "tolong", "minta"}
CONFIRM = {"terima", "diterima", "masuk", "lunas", "berhasil", "sukses", "terkonfirmasi",
           "dikonfirmasi", "confirmed", "received", "terverifikasi", "diverifikasi", "valid"}
NEGATORS_PLAIN = {"belum", "blm", "blom", "belom", "blum", "tidak", "tdk", "gak", "ga", "gk",
                  "ngga", "nggak", "ngak", "enggak", "engga", "kagak", "ndak", "nda", "tak",
                  "bukan", "bkn", "not"}
"""Negators as `normalize` writes them (the matcher's are skeletons)."""
ASPECT = {"sudah", "sdh", "udah", "udh", "dah", "telah", "tlh"}
YET = {"belum", "blm", "blom", "belom", "blum"}
FAILURE = {"gagal", "ggl", "error", "eror", "err", "ditolak", "tertolak", "pending", "gangguan",
           "trouble", "failed", "fail", "declined", "kendala", "nyangkut", "tertahan",
           "gabisa", "gbs", "gbisa", "gabs", "gakbisa"}
"""Words that say a payment did not go through."""
SUCCEEDED = {"bisa", "bs", "masuk", "berhasil", "sukses", "terkirim", "diterima", "terima"}
"""Words that, negated ("ga bisa", "belum masuk"), say a payment did not go through."""
THANKS = {"makasih", "makasi", "maksih", "mksh", "mks", "makaci", "terimakasih", "trimakasih",
          "trims", "thanks", "thank", "thx", "tq", "tks", "tengkyu", "thankyou", "nuhun",
          "suwun", "nuwun", "hatur", "tararengkyu"}
THANKS_PHRASES = ("terima kasih", "trima kasih", "see you", "sampai jumpa", "sampai ketemu")
GOODBYE = {"bye", "dadah", "daah", "pamit"}
INQUIRY = INTENT | {"tanya", "nanya", "tny", "info", "informasi", "promo", "promonya", "harga",
                    "harganya", "paket", "paketnya", "slot", "jadwal", "tersedia", "ready",
                    "ada", "order", "pesan", "booking", "daftar"}
COMPLETED_FORMS = {"lunas", "paid", "dibayar", "dibayarkan", "ditransfer", "terbayar", "pelunasan",
                   "transferan", "sudah kami terima", "pembayaran diterima", "bukti transfer"}


def _words(normalized: str) -> list[str]:
    return _WORD.findall(normalized)


def _negated_at(tokens: list[str], i: int) -> bool:
    """Is the word `tokens[i]` negated by one of the three words before it ("belum masuk")?"""
    return not NEGATORS_PLAIN.isdisjoint(tokens[max(0, i - 3):i])


def _failure_in(tokens: list[str]) -> bool:
    """A failure word ("gagal", "error", "pending"), or a negated success ("ga bisa",
    "belum masuk"), among `tokens`."""
    return any(w in FAILURE or (w in SUCCEEDED and _negated_at(tokens, i))
               for i, w in enumerate(tokens))


def _completed_marker(tokens: list[str]) -> int | None:
    """Where the statement says the act is done ("sudah", "barusan", "berhasil"): the first
    such word that is not negated ("belum masuk") and not the "sudah ... belum?" question."""
    for i, w in enumerate(tokens):
        if w in COMPLETED and not _negated_at(tokens, i):
            if w in ASPECT and not YET.isdisjoint(tokens[i + 1:]):
                return None  # "sudah masuk belum?": asks whether it is done
            return i
    return None


def is_payment_statement(text: str, direction: str, hits: list[Hit],
                         amount_present: bool) -> bool:
    """Does a message with transaction keywords report a payment (not plan, ask or instruct)?"""
    tx = [h for h in hits if h.stage == "transaction" and not h.negated]
    if not tx:
        return False
    norm = normalize(text)
    tokens = _words(norm)
    words = set(tokens)
    question = text.rstrip().endswith("?") or bool(words & {"apakah", "bisakah", "bolehkah"})
    if direction == "inbound":
        keyword_at = min(len(_WORD.findall(norm, 0, h.start)) for h in tx)
        marker = _completed_marker(tokens)
        if marker is not None:
            # A completed statement stands even when it ends with a question ("sudah bayar
            # 320rb, mohon dicek ya?"); an intent between the marker and the payment word
            # ("sudah mau bayar") or a failure after it ("sudah tf tapi gagal") is a plan.
            if not INTENT.isdisjoint(tokens[marker + 1:keyword_at]):
                return False
            return not _failure_in(tokens[marker + 1:])
        if question or words & INTENT or _failure_in(tokens):
            return False
        if words & PROOF:
            return True
        if any(h.keyword in COMPLETED_FORMS for h in tx) or any(
                w in COMPLETED_FORMS for w in words):
            return True
        return amount_present
    # agent / bot / business: only confirmations of receipt, never a negated one ("belum kami
    # terima", "belum masuk di sistem kami", "belum terverifikasi")
    if question:
        return False
    # (a confirmation word, not a keyword name: "lunas" confirms, "sisa pelunasan" asks to pay)
    confirmed = any(w in CONFIRM and not _negated_at(tokens, i) and not _thanks_at(tokens, i)
                    for i, w in enumerate(tokens))
    if not confirmed or _failure_in(tokens):
        return False
    instructs = words & {"silakan", "silahkan", "mohon", "harap", "segera"}
    return not instructs


def _thanks_at(tokens: list[str], i: int) -> bool:
    """Is tokens[i] the "terima" of "terima kasih" (thanks, not a receipt)?"""
    return tokens[i] == "terima" and tokens[i + 1:i + 2] in (["kasih"], ["ksh"], ["kasi"])


def is_courtesy(text: str) -> bool:
    """Thanks or a goodbye that asks for nothing (module docstring)."""
    if "?" in text:
        return False
    norm = normalize(text)
    words = set(_words(norm))
    thanks = bool(words & THANKS or words & GOODBYE) or any(p in norm for p in THANKS_PHRASES)
    return thanks and not words & INQUIRY


# What a message says is read from its first characters only: chat messages are short
# (WhatsApp caps a text at 4,096 characters) and reading costs ~2 µs per character, so a
# multi-megabyte text sent with a valid token must not stall the drain. The text is stored whole.
CLASSIFY_MAX_CHARS = 16_384


class Classifier:
    """Classifies messages with one keyword version."""

    def __init__(self, keywords: list[Keyword], version: str, tz: ZoneInfo,
                 cache_size: int = 65_536) -> None:
        self.version = version
        self.tz = tz
        self.keywords = tuple(keywords)   # to build the same classifier in another process
        self.cache_size = cache_size
        self.matcher = Matcher(self.keywords)
        # Chat text repeats a lot (greetings, prefilled ad/website texts, "ok kak"): what a text
        # says does not depend on when it was sent, so it is computed once per text.
        self._read = lru_cache(maxsize=cache_size)(self._read_text) if cache_size else \
            self._read_text
        # the date a booking asks for depends on the text and the day it was sent only
        self._requested = lru_cache(maxsize=cache_size)(dates.requested_on) if cache_size \
            else dates.requested_on

    def classify(self, text: str, direction: str, sent_at: datetime) -> Classification:
        if not text:
            return Classification(keyword_version=self.version)
        text = text[:CLASSIFY_MAX_CHARS]
        c = self._read(text, direction)
        if "booking" in c.stages:
            requested = self._requested(text, dates.local_date(sent_at, self.tz))
            if requested is not None:
                return replace(c, requested_date=requested)
        return c

    def _read_text(self, text: str, direction: str) -> Classification:
        hits = [h for h in self.matcher.find(text)]
        live = [h for h in hits if not h.negated]
        stages = {h.stage for h in live}
        amount = None
        payment = False
        if "transaction" in stages:
            amount = money.payment_amount(text)
            payment = is_payment_statement(text, direction, hits, amount is not None)
            if not payment:
                stages.discard("transaction")
                amount = None
        if "opening" in stages and direction == "inbound" and not stages & {"booking", "transaction"} \
                and is_courtesy(text):
            stages.discard("opening")
            live = [h for h in live if h.stage != "opening"]
        opening = next((h for h in live if h.stage == "opening" and h.channel), None) or next(
            (h for h in live if h.stage == "opening"), None)
        keywords = tuple(dict.fromkeys(h.keyword for h in live
                                       if h.stage != "transaction" or payment))
        return Classification(
            stages=tuple(s for s in STAGES if s in stages),
            keywords=keywords,
            opening_keyword=opening.keyword if opening else None,
            opening_channel=opening.channel if opening else None,
            amount=amount,
            payment=payment,
            keyword_version=self.version,
        )

    def classify_message(self, m: NormalizedMessage) -> Classification:
        return self.classify(m.text, m.direction, m.sent_at)
