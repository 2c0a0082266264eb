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
CONFIRM = {"terima", "diterima", "kami terima", "masuk", "lunas", "berhasil", "sukses",
           "terkonfirmasi", "dikonfirmasi", "confirmed", "received", "terverifikasi", "valid"}
COMPLETED_FORMS = {"lunas", "paid", "dibayar", "dibayarkan", "ditransfer", "terbayar", "pelunasan",
                   "transferan", "sudah kami terima", "pembayaran diterima", "bukti transfer"}


def _words(normalized: str) -> list[str]:
    return _WORD.findall(normalized)


def is_payment_statement(text: str, direction: str, hits: list[Hit],
                         amount_present: bool) -> bool:
    """Does a message with transaction keywords report a payment (not plan, ask or instruct)?"""
    tx = [h for h in hits if h.stage == "transaction" and not h.negated]
    if not tx:
        return False
    norm = normalize(text)
    words = set(_words(norm))
    question = text.rstrip().endswith("?") or bool(words & {"apakah", "bisakah", "bolehkah"})
    if direction == "inbound":
        if question or words & INTENT:
            # "sudah" overrides an intent word only when it comes first ("sudah mau transfer" is
            # rare; "mau transfer" is a plan)
            if not (words & COMPLETED and not question):
                return False
        if words & COMPLETED or words & PROOF:
            return True
        if any(h.keyword in COMPLETED_FORMS for h in tx) or any(
                w in COMPLETED_FORMS for w in words):
            return True
        return amount_present
    # agent / bot / business: only confirmations of receipt
    if question:
        return False
    confirmed = bool(words & CONFIRM) or "kami terima" in norm or any(
        h.keyword in {"sudah kami terima", "pembayaran diterima", "lunas"} for h in tx)
    if not confirmed:
        return False
    instructs = words & {"silakan", "silahkan", "mohon", "harap", "segera"}
    return not instructs


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
        self.matcher = Matcher(keywords)
        # Chat text repeats a lot (greetings, prefilled ad/website texts, "ok kak"): what a text
        # says does not depend on when it was sent, so it is computed once per text.
        self._read = lru_cache(maxsize=cache_size)(self._read_text) if cache_size else \
            self._read_text

    def classify(self, text: str, direction: str, sent_at: datetime) -> Classification:
        if not text:
            return Classification(keyword_version=self.version)
        text = text[:CLASSIFY_MAX_CHARS]
        c = self._read(text, direction)
        if "booking" in c.stages:
            requested = dates.requested_date(text, sent_at, self.tz)
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
