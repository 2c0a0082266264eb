"""A constructed funnel whose booking figures a keyword change moves by known amounts: what the
keyword-change tests (API, CLI, store) preview and publish.

Eight customers chat over the last hours; the current list books with "reservasi" and "booking":
- c1..c3 open with the TikTok ad's prefilled text (channel ads), then "mau reservasi besok ya";
- c4, c5 open with "halo kak" (direct), then "mau reservasi besok ya";
- c6, c7 open with "halo kak", then "mau booking dong" (not touched by the change);
- c8 opens with "halo kak", says "reservasi dong", then pays ("sudah transfer 500rb ya").
One more customer, c9, did the same as c4 forty days ago: outside a 30-day window.

Removing "reservasi" (`WITHOUT_RESERVASI`) so un-books exactly c1..c5 (ads -3, direct -2) in a
30-day window (c9 as well with 60 days); c8 keeps counting as booked (paid), though its
"reservasi dong" message and its lead's booking date change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import KeywordSet
from funnel_ingest.engine.model import Keyword
from funnel_ingest.messages import NormalizedMessage
from funnel_ingest.store import funnel as store
from funnel_ingest.store import keywords as keyword_store

TIKTOK = "Halo, saya lihat iklan di TikTok"
CURRENT = [Keyword("opening", TIKTOK, "ads"), Keyword("opening", "halo"),
           Keyword("booking", "reservasi"), Keyword("booking", "booking"),
           Keyword("transaction", "sudah transfer")]
WITHOUT_RESERVASI = [k for k in CURRENT if k.keyword != "reservasi"]
WITHOUT_BOOKING = [k for k in CURRENT if k.stage != "booking"]


def items(keywords: list[Keyword]) -> list[dict]:
    """The keywords as PUT /keywords' JSON body."""
    return [{"stage": k.stage, "keyword": k.keyword, "channel": k.channel, "active": k.active}
            for k in keywords]


def csv_text(keywords: list[Keyword]) -> str:
    """The keywords as a keyword CSV (the sheet's layout)."""
    lines = ["stage,keyword,channel,active"]
    lines += [f'{k.stage},"{k.keyword}",{k.channel or ""},{"TRUE" if k.active else "FALSE"}'
              for k in keywords]
    return "\n".join(lines) + "\n"


def _message(customer: int, n: int, text: str, at: datetime) -> NormalizedMessage:
    phone = f"+6281200{customer:06d}"
    return NormalizedMessage("whatsapp", f"wamid.kw{customer}-{n}", at, "inbound", "customer",
                             text, customer_key=phone, phone=phone)


def messages(now: datetime | None = None) -> list[NormalizedMessage]:
    start = (now or datetime.now(UTC)) - timedelta(hours=3)
    out: list[NormalizedMessage] = []
    for c in range(1, 9):
        opening = TIKTOK if c <= 3 else "halo kak"
        second = ("mau booking dong" if c in (6, 7) else
                  "reservasi dong" if c == 8 else "mau reservasi besok ya")
        out += [_message(c, 1, opening, start),
                _message(c, 2, second, start + timedelta(minutes=5))]
    out.append(_message(8, 3, "sudah transfer 500rb ya", start + timedelta(minutes=9)))
    old = start - timedelta(days=40)
    out += [_message(9, 1, "halo kak", old),
            _message(9, 2, "mau reservasi besok ya", old + timedelta(minutes=5))]
    return out


def store_case(conn: psycopg.Connection, tz) -> KeywordSet:
    """Publish `CURRENT` (in Postgres only) and drain the case's messages with it, on a
    connection in autocommit mode with empty engine tables; the published set."""
    kset = KeywordSet.build(CURRENT, "test:current")
    keyword_store.save_version(conn, kset)
    with conn.transaction():
        store.process_messages(conn, messages(), Classifier(list(kset.keywords), kset.version,
                                                            tz))
    return kset


def snapshot(conn: psycopg.Connection, r) -> dict:
    """Every table a keyword change or the funnel could write, and every Redis key, as values
    to compare: a dry run must leave all of them as they were."""
    tables = ("classified_messages", "funnel", "transactions", "rooms", "customer_locks",
              "keyword_versions", "keyword_entries", "keyword_publications")
    out: dict = {t: conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' "
                                 f"ORDER BY x::text), '')) FROM {t} x").fetchone()
                 for t in tables}
    out["redis"] = {key: r.dump(key) for key in sorted(r.keys("*"))}
    return out
