"""Whatever the parsers accept, the engine can store: mutated provider payloads are parsed,
sent through the stream's field encoding, and processed into Postgres by the drain's own
functions (`process_messages`, `store_statuses`, `store_dead_letters`). A single item the
database refuses would fail the drain's whole batch on every retry and stop the funnel, so any
exception here is a bug. Each example runs in a transaction that is rolled back."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import psycopg
import pytest
from hypothesis import given
from hypothesis import settings as hsettings

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv
from funnel_ingest.ingest.providers import PayloadError, parse
from funnel_ingest.messages import NormalizedMessage
from funnel_ingest.store.funnel import process_messages, store_dead_letters, store_statuses
from tests.security.fuzzing import mutated_bodies
from tests.support import SEC


class Rollback(Exception):
    pass


@pytest.fixture(scope="module")
def conn(sec_settings):
    with psycopg.connect(sec_settings.database_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def classifier(sec_settings) -> Classifier:
    return Classifier(load_csv(default_csv_path()), "security", sec_settings.tz)


def _store(conn, result, classifier) -> None:
    now = datetime.now(timezone.utc)
    messages = []
    for i, m in enumerate(result.messages):
        m.raw_key, m.raw_line, m.received_at = "raw/fuzz", i + 1, now
        # exactly what the drain reads back from the stream
        messages.append(NormalizedMessage.from_fields(
            {k.encode(): v.encode() for k, v in m.to_fields().items()}))
    try:
        with conn.transaction():
            res = process_messages(conn, messages, classifier)
            assert res.received == len(messages)
            store_statuses(conn, result.statuses)
            store_dead_letters(conn, [(f"1-{i}", d) for i, d in enumerate(result.dead_letters)])
            raise Rollback
    except Rollback:
        pass


@hsettings(SEC, max_examples=80)
@given(sb=mutated_bodies())
def test_every_parsed_payload_can_be_stored(sb, conn, classifier):
    source, body = sb
    try:
        result = parse(source, body)
    except PayloadError:
        return
    _store(conn, result, classifier)


@pytest.mark.parametrize("text", [
    "sudah tf 999.999.999.999 M rupiah", "sudah transfer 2 x 999.999.999.999.999 rupiah",
    "lunas " + "9" * 12 + " miliar", "dp 1 jt 999 rb " * 50, "nul \x00 byte sudah transfer 1jt",
])
def test_extreme_amounts_and_nul_text_can_be_stored(text, conn, classifier):
    """Amounts the numeric(20, 0) columns cannot hold, and NUL in a text, which Postgres' text
    cannot hold (in ids and labels control characters are refused by the parser: see
    test_hostile_senders)."""
    body = (b'{"room_id": "r-nul", "sender": {"phone": "081234567890"}, "message": '
            b'{"id": "m-nul", "text": ' + json.dumps(text).encode() +
            b'}, "timestamp": 1749416383, "campaign_id": "c-nul"}')
    _store(conn, parse("generic", body), classifier)
