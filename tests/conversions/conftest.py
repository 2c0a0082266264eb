"""Conversions fixtures: Click-to-WhatsApp conversations as signed webhooks (built from the
provider-documented referral payload), drained by the real drain into the funnel, and the local
stand-in of Meta's endpoint with settings pointing at it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count

import psycopg
import pytest

from funnel_ingest.settings import Settings, get_settings
from tests.conversions.meta_capi import MetaCapiServer
from tests.support import ApiServer, drain_all, payload

DATASET_ID = "918273645501"
ACCESS_TOKEN = "capi-token-Vq8Lm2Zr"   # distinctive: a leak in a log cannot be a coincidence
BUSINESS_ACCOUNT_ID = "102290129340398"  # the entry id of the referral payload

_numbers = count(1)


def wa_body(phone: str, message_id: str, at: datetime, text: str,
            referral: dict | None = None) -> bytes:
    """A WhatsApp Cloud API notification of one customer text, shaped as the documented
    Click-to-WhatsApp payload (tests/payloads/whatsapp_referral.json); `referral` None: an
    ordinary message without one."""
    body = json.loads(payload("whatsapp_referral.json"))
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["wa_id"] = phone
    message = value["messages"][0]
    message.update({"from": phone, "id": message_id, "timestamp": str(int(at.timestamp())),
                    "text": {"body": text}})
    if referral is None:
        del message["referral"]
    else:
        message["referral"] = referral
    return json.dumps(body).encode()


@dataclass
class Conversation:
    """One customer's Click-to-WhatsApp conversation: its webhooks and its click id."""

    phone: str
    clid: str | None
    bodies: list[bytes]


def ctwa(start: datetime, *, book: timedelta | None = None, pay: timedelta | None = None,
         amount: str = "1,5jt", clid: bool = True, referral: bool = True) -> Conversation:
    """A customer who taps an ad at `start` ("Halo kak, mau tanya paket liburan ini", with
    the ad's referral), asks to book `book` later and reports the transfer `pay` later.
    `clid=False`: an ad whose referral has no click id (an ad in WhatsApp Status);
    `referral=False`: an organic conversation."""
    n = next(_numbers)
    phone = f"628129{n:07d}"
    ref = dict(json.loads(payload("whatsapp_referral.json"))["entry"][0]["changes"][0]
               ["value"]["messages"][0]["referral"])
    click = f"ARAkLkA8test{n:06d}clid" if clid else None
    if click:
        ref["ctwa_clid"] = click
    else:
        del ref["ctwa_clid"]
    bodies = [wa_body(phone, f"wamid.ctwa{n}.open", start, "Halo kak, mau tanya paket liburan ini",
                      ref if referral else None)]
    if book is not None:
        bodies.append(wa_body(phone, f"wamid.ctwa{n}.book", start + book,
                              "Saya mau booking untuk tanggal 20 ya kak"))
    if pay is not None:
        text = f"Sudah transfer {amount} ya kak" if amount else "Sudah transfer ya kak"
        bodies.append(wa_body(phone, f"wamid.ctwa{n}.pay", start + pay, text))
    return Conversation(phone, click if referral else None, bodies)


def recent(hours: float = 2.0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours)


@pytest.fixture
def conv_db(funnel_db: psycopg.Connection) -> psycopg.Connection:
    """The test database with the engine's tables and the outbox emptied (autocommit)."""
    funnel_db.autocommit = True
    return funnel_db


@pytest.fixture
def ingest(api: ApiServer, r, settings: Settings, classifier, conv_db):
    """Post webhooks through the real API, then drain the streams into the funnel."""
    def send(*bodies: bytes) -> None:
        for body in bodies:
            res = api.whatsapp(body)
            assert res.status_code == 200, res.text
        drain_all(conv_db, r, settings, classifier)
    return send


def outbox_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT lead_id, event_name, event_id, event_time, ctwa_clid, value, "
                        "status FROM conversion_events ORDER BY lead_id, event_name").fetchall()


@pytest.fixture
def meta() -> Iterator[MetaCapiServer]:
    with MetaCapiServer(DATASET_ID, ACCESS_TOKEN, BUSINESS_ACCOUNT_ID) as server:
        yield server


@pytest.fixture
def capi_settings(settings: Settings, meta: MetaCapiServer) -> Settings:
    """The test settings with the Conversions API on, pointed at the local server; short waits
    so that retries can be watched."""
    return settings.replace(
        meta_capi_dataset_id=DATASET_ID, meta_capi_access_token=ACCESS_TOKEN,
        whatsapp_business_account_id=BUSINESS_ACCOUNT_ID, meta_graph_url=meta.graph_url,
        meta_graph_version=meta.version, conversions_timeout_seconds=1.0,
        conversions_retry_base_seconds=30.0, conversions_retry_max_seconds=600.0,
        conversions_max_attempts=3)


@pytest.fixture
def capi_env(monkeypatch, meta):
    """The Conversions API switched on in the environment (what the CLI and a run worker
    read), pointed at the local server."""
    for name, value in {"META_CAPI_DATASET_ID": DATASET_ID,
                        "META_CAPI_ACCESS_TOKEN": ACCESS_TOKEN,
                        "WHATSAPP_BUSINESS_ACCOUNT_ID": BUSINESS_ACCOUNT_ID,
                        "META_GRAPH_URL": meta.graph_url,
                        "CONVERSIONS_TIMEOUT_SECONDS": "1"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
