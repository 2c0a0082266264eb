"""Limits over HTTP against the real API: oversized bodies (declared or streamed chunked),
deep nesting, invalid UTF-8, huge but legal text and batches. Each is accepted or refused with
a clear 4xx and its reason; a refused body leaves nothing in S3 or on the streams, and the server
keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv
from funnel_ingest.ingest import auth
from funnel_ingest.ingest.archive import read_lines
from funnel_ingest.ingest.providers.generic import MAX_BATCH
from tests.support import (
    RAW_KEY,
    ApiServer,
    bucket_keys,
    drain_all,
    metric,
    payload,
    stream_lengths,
)

LIMIT = 2048
ROUTES = {"whatsapp": "/webhooks/whatsapp", "qontak": "/webhooks/qontak", "generic": "/webhook"}
SAMPLE = {"whatsapp": "whatsapp_text.json", "qontak": "qontak_customer.json",
          "generic": "generic_customer.json"}


def headers_for(api: ApiServer, route: str, body: bytes) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if route == "whatsapp":
        h["X-Hub-Signature-256"] = auth.sign(body, api.settings.whatsapp_app_secret
                                             .get_secret_value())
    elif route == "qontak":
        h["X-Webhook-Signature"] = auth.sign(body, api.settings.webhook_hmac_secret
                                             .get_secret_value())
    else:
        h["X-Webhook-Token"] = api.settings.webhook_token.get_secret_value()
    return h


def post(api: ApiServer, route: str, body: bytes, *, chunked: bool = False):
    content: bytes | Iterator[bytes] = body
    if chunked:  # no Content-Length: the server must count what it reads
        content = iter([body[i:i + 1000] for i in range(0, len(body), 1000)])
    return api.client.post(ROUTES[route], content=content, headers=headers_for(api, route, body))


def with_text(route: str, text: str) -> bytes:
    doc = json.loads(payload(SAMPLE[route]))
    if route == "whatsapp":
        doc["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = text
    elif route == "qontak":
        doc["text"] = text
    else:
        doc["message"]["text"] = text
    return orjson.dumps(doc)


@pytest.fixture(scope="module")
def small_api(sec_settings) -> Iterator[ApiServer]:
    with ApiServer(sec_settings.replace(max_body_bytes=LIMIT)) as server:
        yield server


def nothing_written(r, s3_client, cfg, before: set[str]) -> None:
    assert bucket_keys(s3_client, cfg) == before
    assert set(stream_lengths(r, cfg).values()) == {0}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", ROUTES)
def test_body_over_the_limit_gets_413_with_its_reason_and_nothing_is_written(
        route, chunked, small_api, clean_redis, s3_client, sec_settings):
    before = bucket_keys(s3_client, sec_settings)
    counted = metric(small_api, "funnel_webhooks_rejected_total", source=route,
                     reason="body_too_large")
    res = post(small_api, route, with_text(route, "x" * 5000), chunked=chunked)
    assert res.status_code == 413, res.text
    assert res.json()["error"] == "body_too_large" and str(LIMIT) in res.json()["detail"]
    assert metric(small_api, "funnel_webhooks_rejected_total", source=route,
                  reason="body_too_large") == counted + 1
    nothing_written(clean_redis, s3_client, sec_settings, before)
    assert small_api.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("route", ROUTES)
def test_the_limit_is_exact(route, small_api, clean_redis, s3_client, sec_settings):
    """A body of exactly the limit is read and accepted; one byte more is refused."""
    base = with_text(route, "")
    at_limit = with_text(route, "x" * (LIMIT - len(base)))
    assert len(at_limit) == LIMIT
    res = post(small_api, route, at_limit, chunked=True)
    assert res.status_code == 200, res.text
    over = with_text(route, "x" * (LIMIT - len(base) + 1))
    assert post(small_api, route, over, chunked=True).status_code == 413


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(small_api,
                                                                              sec_settings):
    """Content-Length says 1 GB and no byte of body follows: the answer must not wait for it."""
    import socket

    with socket.create_connection(("127.0.0.1", small_api.port), timeout=10) as sock:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"X-Webhook-Token: " + sec_settings.webhook_token.get_secret_value()
                     .encode() + b"\r\nContent-Length: 1000000000\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"body_too_large" in head


def _deep(route: str) -> list[bytes]:
    depth = 100_000
    nested = b"[" * depth + b"]" * depth
    envelope = {
        "whatsapp": b'{"object": "whatsapp_business_account", "entry": ' + nested + b"}",
        "qontak": b'{"id": "q", "created_at": "2025-01-01T00:00:00Z", "room": {"id": "r"}, '
                  b'"text": ' + nested + b"}",
        "generic": b'{"sender": {"phone": "081234567890"}, "timestamp": 1749416383, '
                   b'"message": {"id": "m", "text": "hi", "extra": ' + nested + b"}}",
    }[route]
    return [b"[" * depth, b'{"a":' * depth, nested, envelope]


@pytest.mark.parametrize("route", ROUTES)
def test_deeply_nested_json_is_a_4xx_not_a_crash(route, sec_api, clean_redis, s3_client,
                                                 sec_settings):
    before = bucket_keys(s3_client, sec_settings)
    for body in _deep(route):
        res = post(sec_api, route, body)
        assert res.status_code in (400, 422), (body[:60], res.status_code, res.text[:300])
        assert res.json()["error"] in ("malformed_json", "wrong_shape")
    nothing_written(clean_redis, s3_client, sec_settings, before)
    assert sec_api.client.get("/healthz").status_code == 200


INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80"]


@pytest.mark.parametrize("route", ROUTES)
def test_invalid_utf8_inside_valid_json_is_400_and_nothing_is_written(
        route, sec_api, clean_redis, s3_client, sec_settings):
    before = bucket_keys(s3_client, sec_settings)
    marker = "MARKER-\u00e9"
    template = with_text(route, marker)
    for bad in INVALID_UTF8:
        body = template.replace(marker.encode(), b"ok " + bad + b" ok")
        res = post(sec_api, route, body)
        assert res.status_code == 400, (bad, res.text)
        assert res.json()["error"] == "invalid_utf8"
    nothing_written(clean_redis, s3_client, sec_settings, before)


@pytest.mark.parametrize("route", ROUTES)
def test_a_byte_order_mark_is_accepted_or_refused_cleanly(route, sec_api, clean_redis):
    res = post(sec_api, route, b"\xef\xbb\xbf" + with_text(route, "halo"))
    assert res.status_code in (200, 400), res.text


@pytest.mark.parametrize("route, size", [("generic", 2_900_000), ("qontak", 1_000_000),
                                         ("whatsapp", 1_000_000)])
def test_huge_text_within_the_limit_is_accepted_archived_exactly_and_drained(
        route, size, sec_api, clean_redis, s3_client, sec_settings, db):
    words = "halo kak mau booking tgl 5, sudah transfer 1,5jt ya 🙏 "
    text = words * (size // len(words.encode()))
    body = with_text(route, text)
    assert size * 0.95 < len(body) < sec_settings.max_body_bytes
    res = post(sec_api, route, body)
    assert res.status_code == 200, res.text
    key = res.json()["raw_key"]
    assert RAW_KEY.fullmatch(key)
    lines = read_lines(s3_client.get_object(Bucket=sec_settings.raw_bucket, Key=key)["Body"]
                       .read())
    assert body.decode() in [ln["body"] for ln in lines]
    if route != "generic":
        return  # the engine's side once is enough (it is the slow part)
    classifier = Classifier(load_csv(default_csv_path()), "security", sec_settings.tz)
    with psycopg.connect(sec_settings.database_url) as conn:
        reports = drain_all(conn, clean_redis, sec_settings, classifier)
    assert sum(rep.inserted for rep in reports) == 1
    stored, stages, amount = db.execute(
        "SELECT text, stages, amount FROM classified_messages").fetchone()
    assert stored == text and "booking" in stages and amount == 1_500_000


def test_batches_over_the_cap_are_refused_and_at_the_cap_accepted(sec_api, clean_redis):
    one = json.loads(payload("generic_customer.json"))
    batch = [dict(one, message={"id": f"b-{i}", "text": "halo"}) for i in range(MAX_BATCH + 1)]
    res = post(sec_api, "generic", orjson.dumps(batch))
    assert res.status_code == 422 and res.json()["error"] == "wrong_shape", res.text
    res = post(sec_api, "generic", orjson.dumps(batch[:MAX_BATCH]))
    assert res.status_code == 200 and res.json()["messages"] == MAX_BATCH, res.text


def test_a_whatsapp_body_with_thousands_of_messages_is_handled(sec_api, clean_redis,
                                                               sec_settings):
    """Meta batches; nothing caps the items of one body but the size limit. Thousands of
    messages in one body are accepted (or refused with a 4xx), never a 5xx or a timeout."""
    doc = json.loads(payload("whatsapp_text.json"))
    value = doc["entry"][0]["changes"][0]["value"]
    template = value["messages"][0]
    value["messages"] = [dict(template, id=f"wamid.bulk.{i}") for i in range(5000)]
    body = orjson.dumps(doc)
    assert len(body) < sec_settings.max_body_bytes
    res = post(sec_api, "whatsapp", body)
    assert res.status_code == 200, res.text
    assert res.json()["messages"] == 5000 and RAW_KEY.fullmatch(res.json()["raw_key"])
    assert stream_lengths(clean_redis, sec_settings)[sec_settings.stream_key(0)] == 5000
