"""Property-based fuzzing of the pure parsers: whatever bytes or text arrive, they answer
(a result or the one exception they are allowed), their results are well-formed and the same
every time.

- `providers.parse(source, body)`: only `PayloadError` (a 4xx with a reason) may escape, and
  what it returns survives the trip through the stream (`to_fields`/`from_fields`);
- phones: None or a valid E.164 number, a fixed point of the normalizers;
- money: integer Rupiah within bounds, offsets inside the text;
- dates: None or a date, never an exception;
- keyword matcher and classifier: no exception on any unicode, hits inside the normalized text,
  the same answer with and without the classifier's cache.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from funnel_ingest.engine import dates, money
from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv
from funnel_ingest.engine.matcher import Matcher
from funnel_ingest.engine.model import STAGES, Keyword
from funnel_ingest.engine.text import normalize, normalize_light
from funnel_ingest.ingest.providers import PayloadError, parse, phones
from funnel_ingest.messages import SOURCES, NormalizedMessage, ParseResult
from tests.security.fuzzing import (
    NASTY_STRINGS,
    SAMPLES,
    any_text,
    get_at,
    mutated_bodies,
    paths,
    set_at,
)
from tests.support import SEC

E164 = re.compile(r"\+[1-9]\d{5,14}")
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _parse(source: str, body: bytes) -> ParseResult | None:
    """`parse`, allowing only PayloadError out; checks what it returns."""
    try:
        result = parse(source, body)
    except PayloadError as exc:
        assert exc.status_code in (400, 413, 422), exc
        assert re.fullmatch(r"[a-z0-9_]+", exc.reason) and exc.detail, exc
        return None
    _check_result(source, result)
    return result


def _stream_view(m: NormalizedMessage) -> dict:
    """A message as the drain sees it: empty strings are not written to the stream."""
    return {k: (None if v == "" else v) for k, v in
            ((f, getattr(m, f)) for f in m.__dataclass_fields__)}


def _check_result(source: str, result: ParseResult) -> None:
    latest = datetime.now(timezone.utc) + timedelta(days=1, minutes=5)
    for m in result.messages:
        assert m.source == source and m.direction in ("inbound", "outbound")
        assert isinstance(m.message_id, str) and m.message_id
        assert m.sent_at.tzinfo is not None and EARLIEST <= m.sent_at <= latest
        assert isinstance(m.text, str)
        assert m.phone is None or E164.fullmatch(m.phone), m.phone
        if m.direction == "inbound":
            assert m.customer_key, "an inbound message without a customer goes to dead letters"
        fields = m.to_fields()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
        orjson.dumps(fields)                                  # what append.lua receives
        back = NormalizedMessage.from_fields(
            {k.encode(): v.encode() for k, v in fields.items()})  # what the drain reads
        assert _stream_view(back) == _stream_view(m)
        assert len(m.idempotency_key()) == 32
    for s in result.statuses:
        assert s.source == source and s.message_id and s.status
        assert EARLIEST <= s.status_at <= latest
        orjson.dumps(s.to_fields())
    for d in result.dead_letters:
        assert d.source == source and re.fullmatch(r"[a-z0-9_]+", d.reason) and d.detail
        orjson.dumps(d.to_fields())


@pytest.mark.parametrize("source", SOURCES)
@SEC
@given(body=st.binary(max_size=2000))
@example(body=b"")
@example(body=b"\xff\xfe\x00\x00")
@example(body=b"\xed\xa0\x80")               # a UTF-16 surrogate encoded as UTF-8
@example(body=b"\xc0\xaf")                   # an overlong "/"
@example(body=b'{"a": "\\ud800"}')           # a lone surrogate escape
@example(body=b"[" * 100_000)
@example(body=b'{"a":' * 50_000)
@example(body=b"1" * 10_000)
@example(body=b"-1e999999")
def test_any_bytes_give_a_result_or_a_payload_error(source, body):
    _parse(source, body)


@SEC
@given(sb=mutated_bodies())
def test_mutated_provider_payloads_give_a_result_or_a_payload_error(sb):
    source, body = sb
    first = _parse(source, body)
    assert _parse(source, body) == first   # deterministic (pure function of the bytes)


@pytest.mark.parametrize("source, doc", [(s, d) for s, docs in SAMPLES.items() for d in docs],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_payload_parses(source, doc):
    """The fuzzers' seeds are valid: without this the mutations would start from garbage."""
    result = _parse(source, orjson.dumps(doc))
    assert result is not None and len(result) > 0


@pytest.mark.parametrize("nasty", NASTY_STRINGS, ids=range(len(NASTY_STRINGS)))
def test_nasty_strings_in_every_string_field_of_every_sample(nasty):
    """Each documented payload with each of its string fields in turn replaced by a nasty
    string: never an exception other than PayloadError."""
    for source, docs in SAMPLES.items():
        for doc in docs:
            for path in paths(doc):
                if isinstance(get_at(doc, path), str):
                    _parse(source, orjson.dumps(set_at(copy.deepcopy(doc), path, nasty)))


# --- phones -------------------------------------------------------------------------------------

phone_like = st.one_of(
    st.text(max_size=80), st.text(alphabet="0123456789+-() .０１２３４５６７８９", max_size=30),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["+6281234567890", "6281234567890", "081234567890", "0062812345678",
                     "6560123456", "+65 6012 3456", "wa.me/6281234567890", "0" * 64, "0" * 65,
                     "+" + "9" * 15, "\x00081234567890", "08123\n4567890"]))


@SEC
@given(value=st.one_of(phone_like, st.integers(min_value=-(10**30), max_value=10**30),
                       st.none()))
def test_phone_normalizers_give_none_or_a_valid_e164_fixed_point(value):
    for fn in (phones.from_provider_id, phones.from_crm_field, phones.from_free_text):
        if fn is phones.from_free_text and not (value is None or isinstance(value, str)):
            continue
        out = fn(value)
        assert out == fn(value)
        if out is None:
            continue
        assert E164.fullmatch(out), (fn.__name__, value, out)
        assert phonenumbers.is_valid_number(phonenumbers.parse(out, None))
        assert phones.from_provider_id(out) == out and phones.from_crm_field(out) == out
        assert phones.from_free_text(out) == out


# --- money --------------------------------------------------------------------------------------

@SEC
@given(text=any_text)
@example(text="sudah tf 999.999.999.999 M rupiah")
@example(text="tf " + "9" * 5000)
@example(text="Rp " + "1." * 3000 + "000")
@example(text="bayar " + "1,5 " * 2000 + "jt")
@example(text="sudah transfer 2 x 999.999.999.999.999 rupiah")
def test_money_parser_gives_bounded_integer_rupiah_inside_the_text(text):
    amounts = money.parse_amounts(text)
    assert amounts == money.parse_amounts(text)
    light = normalize_light(text)
    for a in amounts:
        assert isinstance(a.value, Decimal) and a.value == a.value.to_integral_value()
        assert 100 <= a.value <= money.MAX_AMOUNT, a
        assert 0 <= a.start < a.end <= len(light)
    value = money.payment_amount(text)
    if value is not None:
        # fits the numeric(20, 0) columns with room for the sums of a lead's payments
        assert value == value.to_integral_value() and 100 <= value <= money.MAX_AMOUNT
        assert value in {a.line_total for a in amounts}


_SENT = datetime(2025, 10, 1, 3, tzinfo=UTC)
_READERS = {
    "money": lambda text, c: (money.parse_amounts(text), money.payment_amount(text)),
    "dates": lambda text, c: dates.requested_date(text, _SENT, ZoneInfo("Asia/Jakarta")),
    "classify": lambda text, c: c.classify(text, "inbound", _SENT),
}
# About 200 kB each (a chat text that fits a 3 MB body many times over). Linear code reads one
# in well under a second; each of these took minutes to hours while a reader was quadratic
# (a regex tried from every digit of a run, a search from the text's start for every number,
# every hit compared with every kept hit, the rest of the text copied for every hit).
_LONG = [
    ("money", "1jt" * 100_000), ("money", "dp 1" * 50_000), ("money", "1." * 100_000),
    ("money", "1," * 100_000), ("money", "rp " * 70_000), ("money", "9" * 200_000),
    ("dates", "9" * 200_000), ("dates", "tgl " * 50_000), ("dates", "senin " * 35_000),
    ("dates", "01/" * 70_000), ("dates", "2 minggu " * 25_000),
    ("classify", "bookinggg " * 20_000), ("classify", "belum booking " * 15_000),
    ("classify", "mau daftar harga " * 12_000), ("classify", "sudah transfer " * 14_000),
    ("classify", "belum, transfer dibatalkan " * 8_000), ("classify", "a" * 200_000 + "!"),
    ("classify", "\u0301" * 100_000), ("classify", "9" * 100_000 + " booking"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reader, text", _LONG, ids=[f"{r}-{t[:12]!r}" for r, t in _LONG])
def test_long_repetitive_text_is_read_in_linear_time(reader, text, classifier):
    """No super-linear blow-up on long repetitive text: the timeout only catches blow-ups
    (seconds against minutes), it does not measure speed."""
    _READERS[reader](text, classifier)


# --- dates --------------------------------------------------------------------------------------

@SEC
@given(text=any_text,
       sent_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                            timezones=st.sampled_from([None, UTC])),
       tz=st.sampled_from(["Asia/Jakarta", "Asia/Jayapura", "UTC", "Pacific/Kiritimati",
                           "America/Adak"]))
@example(text="tgl 31 bulan depan", sent_at=datetime(2099, 12, 31, 23), tz="Asia/Jakarta")
@example(text="31/02 29/02 0/0 99/99 0000-00-00", sent_at=datetime(2024, 2, 29),
         tz="Asia/Jakarta")
@example(text="minggu depan besok lusa sabtu depan weekend depan", sent_at=datetime(2099, 12, 31),
         tz="UTC")
def test_date_parser_gives_none_or_a_date(text, sent_at, tz):
    zone = ZoneInfo(tz)
    got = dates.requested_date(text, sent_at, zone)
    assert got == dates.requested_date(text, sent_at, zone)
    assert got is None or type(got) is date


# --- keyword matcher and classifier -------------------------------------------------------------

KEYWORDS = load_csv(default_csv_path())


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(KEYWORDS, "security", ZoneInfo("Asia/Jakarta"))


@pytest.fixture(scope="module")
def uncached() -> Classifier:
    return Classifier(KEYWORDS, "security", ZoneInfo("Asia/Jakarta"), cache_size=0)


@SEC
@given(text=any_text, direction=st.sampled_from(["inbound", "outbound"]))
@example(text="sudah transfer 1,5jt ya kak", direction="inbound")
@example(text="\x00" * 10 + "booking", direction="inbound")
@example(text="İ" * 100 + "ﬁ" * 100 + "ß" * 100, direction="outbound")
def test_matcher_and_classifier_answer_any_unicode_deterministically(text, direction,
                                                                     classifier, uncached):
    matcher = classifier.matcher
    hits = matcher.find(text)
    assert hits == matcher.find(text)
    norm_len = len(normalize(text))
    keywords = {k.keyword for k in KEYWORDS}
    for h in hits:
        assert h.stage in STAGES and h.keyword in keywords
        assert 0 <= h.start < h.end <= norm_len
    sent_at = datetime(2025, 10, 1, 3, tzinfo=UTC)
    c = classifier.classify(text, direction, sent_at)
    assert c == classifier.classify(text, direction, sent_at) == \
        uncached.classify(text, direction, sent_at)
    assert set(c.stages) <= set(STAGES) and list(c.stages) == sorted(c.stages, key=STAGES.index)
    if c.amount is not None:
        assert "transaction" in c.stages and c.payment
        assert c.amount == c.amount.to_integral_value() and 100 <= c.amount <= money.MAX_AMOUNT


@SEC
@given(keywords=st.lists(st.builds(Keyword, st.sampled_from(STAGES), any_text,
                                   st.one_of(st.none(), st.text(max_size=10)), st.booleans()),
                         max_size=15),
       text=any_text)
def test_any_keyword_list_compiles_and_matches(keywords, text):
    """Keywords come from a sheet anyone in the team can edit: punctuation-only, emoji,
    control characters or 300-character keywords must not break the matcher."""
    matcher = Matcher(keywords)
    for h in matcher.find(text):
        assert any(k.keyword == h.keyword and k.active for k in keywords)
