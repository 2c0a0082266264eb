"""Helpers of the test suite (fixtures live in the conftest.py files): the real app
served over loopback, payload files, throwaway servers, table readers, report rows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import uvicorn
from hypothesis import HealthCheck
from hypothesis import settings as hsettings

from funnel_dagster.defs.resources import (
    GoogleSheetsResource,
    PostgresResource,
    RedisResource,
    S3Resource,
)
from funnel_ingest.engine.classify import Classifier
from funnel_ingest.ingest import auth
from funnel_ingest.local.processes import free_port
from funnel_ingest.settings import Settings
from funnel_ingest.store.drain import DrainReport, drain_range

PAYLOADS = Path(__file__).parent / "payloads"


# The simulated histories of the tests start in 2025; without this the partitions would start
# at the first day with data in whatever database the code location sees when it is imported.
# (tests/deployment runs the code location without it, as deployments do.)
TEST_START_DATE = "2025-01-01"


# Tests use their own database, Redis db and buckets on the stack's servers.
TEST_DB = os.environ.get("FUNNEL_TEST_DB", "funnel_test")


TEST_REDIS_DB = int(os.environ.get("FUNNEL_TEST_REDIS_DB", "15"))


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def raw_objects(s3_client, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


class ApiServer:
    """The real app under uvicorn in a thread, reached over loopback HTTP."""

    def __init__(self, settings: Settings) -> None:
        from funnel_ingest.main import create_app

        self.settings = settings
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
            access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.base_url, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(15)

    # signed senders, as each provider sends
    def whatsapp(self, body: bytes, signature: str | None = "sign", **headers: str) -> httpx.Response:
        h = {"Content-Type": "application/json", **headers}
        if signature == "sign":
            signature = auth.sign(body, self.settings.whatsapp_app_secret.get_secret_value())
        if signature is not None:
            h["X-Hub-Signature-256"] = signature
        return self.client.post("/webhooks/whatsapp", content=body, headers=h)

    def crm(self, path: str, body: bytes, *, token: str | None = "default",
            signature: str | None = None) -> httpx.Response:
        h = {"Content-Type": "application/json"}
        if token == "default":
            token = self.settings.webhook_token.get_secret_value()
        if token is not None:
            h["X-Webhook-Token"] = token
        if signature is not None:
            h["X-Webhook-Signature"] = signature
        return self.client.post(path, content=body, headers=h)


def post_samples(api: ApiServer, settings: Settings, samples) -> None:
    """Send simulated provider bodies (`simulate.webhooks.Sample`s) to the API, signed as each
    provider signs them; every one must be acknowledged."""
    from funnel_ingest.ingest import auth
    from funnel_ingest.simulate.webhooks import ROUTES

    for sample in samples:
        headers = {"Content-Type": "application/json"}
        if sample.source == "whatsapp":
            headers["X-Hub-Signature-256"] = auth.sign(
                sample.body, settings.whatsapp_app_secret.get_secret_value())
        else:
            headers["X-Webhook-Token"] = settings.webhook_token.get_secret_value()
        res = api.client.post(ROUTES[sample.source], content=sample.body, headers=headers)
        assert res.status_code == 200, res.text


def post_campaign_payloads(api: ApiServer) -> None:
    """The payloads that name campaigns, and the replies to them: a WhatsApp template echo and
    the button reply pointing at it, a Click-to-WhatsApp referral, a Qontak broadcast and the
    customer's reply in its room, a generic message with a named campaign label."""
    for name in ("whatsapp_template_echo.json", "whatsapp_button.json",
                 "whatsapp_referral.json"):
        assert api.whatsapp(payload(name)).status_code == 200
    for name in ("qontak_broadcast.json", "qontak_customer.json"):
        assert api.crm("/webhooks/qontak", payload(name)).status_code == 200
    assert api.crm("/webhook", payload("generic_campaign.json")).status_code == 200


def start_redis_server(port: int, workdir: Path, output=subprocess.DEVNULL) -> subprocess.Popen:
    """A redis-server on 127.0.0.1:`port` keeping nothing on disk (a restart comes back
    empty), once it answers PING."""
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=output, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server on port {port} did not answer within 10 s")


# Tables the engine writes (keyword versions are kept: they are published, not derived).
ENGINE_TABLES = ("classified_messages", "funnel", "transactions", "rooms", "stream_offsets",
                 "message_statuses", "dead_letters", "conversion_events", "campaign_refs",
                 "campaigns")


def empty_engine_tables(conn: psycopg.Connection, keep: tuple[str, ...] = ()) -> None:
    tables = ", ".join(t for t in ENGINE_TABLES if t not in keep)
    conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def pg_count(settings: Settings, sql: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql).fetchone()[0]


def metric(api: ApiServer, name: str, **labels: str) -> float:
    """The current value of one Prometheus sample served by the API (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(api.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def funnel_rows(conn: psycopg.Connection) -> list[tuple]:
    """The funnel table without its bookkeeping timestamp, in a stable order."""
    return conn.execute(
        """SELECT lead_id, leads_date, channel, phone, booking_date, transaction_date,
                  transaction_value, customer_key, cycle, lead_at, booking_at, transaction_at,
                  transaction_total, transactions, requested_date, campaign_id, ad_id,
                  opening_keyword, opening_source, opening_message_id, medium, campaign
             FROM funnel ORDER BY lead_id""").fetchall()


def transaction_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        """SELECT m.source, m.message_id, m.room_key, t.lead_id, t.amount, t.paid_at
             FROM transactions t JOIN classified_messages m ON m.id = t.message_pk
            ORDER BY 1, 2, 3""").fetchall()


def dagster_resources(settings) -> dict:
    """The code location's resources on `settings` (the test stack's by default)."""
    return {
        "postgres": PostgresResource(database_url=settings.database_url),
        "redis": RedisResource(redis_url=settings.redis_url),
        "s3": S3Resource(endpoint_url=settings.s3_endpoint_url,
                         access_key_id=settings.s3_access_key_id,
                         secret_access_key=settings.s3_secret_access_key.get_secret_value(),
                         region=settings.s3_region, raw_bucket=settings.raw_bucket,
                         reports_bucket=settings.reports_bucket),
        "sheets": GoogleSheetsResource(),
    }


SEC = hsettings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
"""Hypothesis settings of this directory: derandomized (the same inputs every run), bounded,
no example database, no wall-clock deadline. Used per test, never loaded as a global profile."""


# Distinctive values: a leak of any of them in a log cannot be a coincidence.
SECRETS = {
    "webhook_token": "sec-webhook-token-Q7v2Lr9Kp",
    "webhook_hmac_secret": "sec-crm-hmac-secret-Zt4Wm8Hy",
    "whatsapp_app_secret": "sec-wa-app-secret-Jd6Nf3Xs",
    "whatsapp_verify_token": "sec-wa-verify-token-Bk5Rc1Pe",
    "api_key": "sec-api-key-Gh2Tq7Vw",
}


BUCKET_SAFE = re.compile(r"[^a-z0-9-]+")


# raw/source=<route>/date=YYYY-MM-DD/hour=HH/<YYYYmmddTHHMMSSffffff>Z-<uuid hex>.ndjson
RAW_KEY = re.compile(
    r"raw/source=(whatsapp|qontak|generic)/date=\d{4}-\d{2}-\d{2}/hour=\d{2}/"
    r"\d{8}T\d{12}Z-[0-9a-f]{32}\.ndjson")


def stream_lengths(r: redis.Redis, cfg: Settings) -> dict[str, int]:
    return {k: r.xlen(k) for k in (*cfg.stream_keys(), cfg.status_stream, cfg.deadletter_stream)}


def bucket_keys(s3_client, cfg: Settings) -> set[str]:
    return set(raw_objects(s3_client, cfg.raw_bucket))


JKT = timedelta(hours=7)  # Asia/Jakarta, the test settings' FUNNEL_TIMEZONE (no DST)
FUNNEL_COLUMNS = ("lead_id", "leads_date", "channel", "phone", "booking_date", "transaction_date",
         "transaction_value", "customer_key", "cycle", "lead_at", "booking_at",
         "transaction_at", "transaction_total", "transactions", "requested_date", "campaign_id",
         "ad_id", "opening_keyword", "opening_source", "opening_message_id", "medium", "campaign")
_lead_ids = iter(range(10**9))


DAY = date(2025, 10, 1)


def lead(channel: str = "ads", day: date = DAY, *, minute: int = 0, book: int | None = None,
         pay: int | None = None, value: int | None = None, total: int | None = None,
         campaign: str | None = None, lead_id: str | None = None,
         medium: str | None = "whatsapp") -> dict[str, Any]:
    """A funnel row whose lead opens `minute` minutes after 10:00 (Jakarta) on `day`; `book`
    and `pay` are seconds from the lead to its booking / transaction; `campaign` its
    campaign_id, resolved to itself (as the merge resolves an id the registry does not
    know)."""
    n = next(_lead_ids)
    lead_at = datetime(day.year, day.month, day.day, 10, tzinfo=UTC) - JKT + \
        timedelta(minutes=minute)
    booking_at = lead_at + timedelta(seconds=book) if book is not None else None
    tx_at = lead_at + timedelta(seconds=pay) if pay is not None else None
    phone = f"+62812{n:08d}"
    return {
        "lead_id": f"lead-{n:09d}" if lead_id is None else lead_id,
        "leads_date": day, "channel": channel,
        "phone": phone,
        "booking_date": (booking_at + JKT).date() if booking_at else None,
        "transaction_date": (tx_at + JKT).date() if tx_at else None,
        "transaction_value": value, "customer_key": phone, "cycle": 1, "lead_at": lead_at,
        "booking_at": booking_at, "transaction_at": tx_at,
        "transaction_total": total if total is not None else value,
        "transactions": int(tx_at is not None), "requested_date": None,
        "campaign_id": campaign, "ad_id": None, "opening_keyword": None,
        "opening_source": "whatsapp", "opening_message_id": f"wamid.{n}", "medium": medium,
        "campaign": campaign}


def insert(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY funnel ({', '.join(FUNNEL_COLUMNS)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row([row[c] for c in FUNNEL_COLUMNS])
    conn.commit()


def insert_many(conn: psycopg.Connection, n: int, start: date = DAY, days: int = 30) -> None:
    """`n` leads spread over `days` days, all channels, a third of them paid (server-side)."""
    conn.execute(
        """INSERT INTO funnel (lead_id, leads_date, channel, phone, booking_date,
               transaction_date, transaction_value, customer_key, cycle, lead_at, booking_at,
               transaction_at, transaction_total, transactions, campaign_id, opening_source,
               opening_message_id, campaign)
           SELECT 'bulk-' || lpad(i::text, 9, '0'), d::date,
                  (ARRAY['ads','direct','website','campaign_blast'])[1 + mod(i, 4)],
                  '+62813' || lpad(i::text, 8, '0'),
                  CASE WHEN mod(i, 3) > 0 THEN d::date END,
                  CASE WHEN mod(i, 3) = 2 THEN d::date END,
                  CASE WHEN mod(i, 3) = 2 THEN 150000 + mod(i, 1000) * 1000 END,
                  '+62813' || lpad(i::text, 8, '0'), 1, t,
                  CASE WHEN mod(i, 3) > 0 THEN t + interval '5 minutes' END,
                  CASE WHEN mod(i, 3) = 2 THEN t + interval '10 minutes' END,
                  CASE WHEN mod(i, 3) = 2 THEN 150000 + mod(i, 1000) * 1000 END,
                  CASE WHEN mod(i, 3) = 2 THEN 1 ELSE 0 END,
                  'campaign-' || mod(i, 7), 'whatsapp', 'wamid.bulk.' || i,
                  'campaign-' || mod(i, 7)
             FROM generate_series(0, %s - 1) AS i,
                  LATERAL (SELECT %s::date + mod(i, %s) AS d) AS dd,
                  LATERAL (SELECT (d::timestamp + interval '3 hours'
                                   + (i / %s) * interval '1 second') AT TIME ZONE 'UTC' AS t)
                          AS tt""", (n, start, days, days))
    conn.commit()


def hand_computed_rows() -> list[dict[str, Any]]:
    return [
        # ads: 5 leads, 4 bookings (60/120/180/240 s), 3 transactions (600/1200/3000 s)
        lead("ads", book=60, pay=600, value=1_000_000, total=1_500_000, minute=1),
        lead("ads", book=120, pay=1200, value=2_000_000, minute=2),
        lead("ads", book=180, minute=3),
        lead("ads", minute=4),
        lead("ads", book=240, pay=3000, value=500_000, minute=5),
        # website: 2 leads, nothing further
        lead("website", minute=6), lead("website", minute=7),
        # direct: a payment without a stated amount
        lead("direct", book=30, pay=90, value=None, total=None, minute=8),
    ]


def drain_all(conn: psycopg.Connection, r: redis.Redis, settings: Settings,
              classifier: Classifier, batch_size: int = 10_000) -> list[DrainReport]:
    """Everything on every stream now (`funnel drain`)."""
    reports = [
        drain_range(conn, r, key, kind="messages", classifier=classifier, after_id="0-0",
                    batch_size=batch_size, rules=settings.cycle_rules)
        for key in settings.stream_keys()
    ]
    reports.append(drain_range(conn, r, settings.status_stream, kind="statuses", classifier=None,
                               after_id="0-0", batch_size=batch_size))
    reports.append(drain_range(conn, r, settings.deadletter_stream, kind="deadletters",
                               classifier=None, after_id="0-0", batch_size=batch_size))
    return reports
