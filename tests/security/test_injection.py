"""Injection over HTTP against the real API, through ingest, the S3 archive, the stream, the
engine's drain into Postgres and the report:

- SQL metacharacters, quotes, dollar quotes, backslashes, format strings and NUL in every field
  of a message of each source are accepted, stored verbatim (NUL, which Postgres text cannot
  hold, is the one character dropped) and leave every table intact; as report filters they
  give 200 or 422, never a 5xx;
- ids and names with `../`, `/`, `%2F`, newlines or NUL never shape an archive key: every key
  is `raw/source=<route>/date=YYYY-MM-DD/hour=HH/<time>-<uuid>.ndjson`, holding the exact bytes;
- a traversal in the URL reaches no other route and no file.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv
from funnel_ingest.ingest import auth
from funnel_ingest.ingest.archive import read_lines
from tests.support import RAW_KEY, bucket_keys, drain_all, stream_lengths

EVIL = [
    "'; DROP TABLE funnel; --",
    "x'); DELETE FROM classified_messages WHERE ('1'='1",
    "$$; DROP TABLE classified_messages; $$",
    "$tag$ TRUNCATE funnel $tag$",
    "back\\slash\\ \\' \\x00 \\\\",
    'double"quote"; --',
    "%s %(x)s {0} {} %n",
    "semi;colon; /* comment */ --",
]  # (control characters, NUL included, are refused in ids and labels: test_hostile_senders)
TRAVERSAL = ["../../../../etc/passwd", "a/b/c", "%2F..%2F..%2Fraw", "..\\..\\x",
             "source=qontak/date=2000-01-01/hour=00/x", "/absolute", "."]
# ids with line breaks or NUL are refused before anything is archived
CONTROL = ["line\nbreak", "cr\r\nX-Injected: yes", "nul\x00x"]


def stored(value: str) -> str:
    """A value as Postgres stores it: verbatim except NUL, which `text` cannot hold."""
    return value.replace("\x00", "")


def _now(offset_minutes: int = 0) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1) + \
        timedelta(minutes=offset_minutes)


def generic_body(i: int, evil: str) -> dict:
    return {
        "room_id": f"room-{i}-{evil}", "channel": evil, "source": evil,
        "campaign_id": f"camp-{i}-{evil}", "ad_id": f"ad-{i}-{evil}",
        "sender": {"type": "customer", "phone": evil, "user_id": f"user-{i}-{evil}"},
        "message": {"id": f"msg-{i}-{evil}", "text": f"mau booking {evil} sudah transfer 1,5jt"},
        "timestamp": _now(i).isoformat(),
    }


def qontak_body(i: int, evil: str) -> dict:
    return {
        "id": f"q-{i}-{evil}", "text": f"halo {evil}", "type": evil[:20],
        "participant_type": "customer", "sender_type": "Models::Contact",
        "created_at": _now(i).isoformat().replace("+00:00", "Z"), "is_campaign": False,
        "room": {"id": f"qroom-{i}-{evil}", "channel": evil,
                 "account_uniq_id": f"acct-{i}-{evil}", "channel_integration_id": evil},
    }


def whatsapp_body(i: int, evil: str) -> dict:
    ts = str(int(_now(i).timestamp()))
    phone = f"62812345{i:05d}"
    return {"object": "whatsapp_business_account", "entry": [{"id": evil, "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"phone_number_id": evil},
            "contacts": [{"profile": {"name": evil}, "wa_id": phone}],
            "messages": [{
                "from": phone, "id": f"wamid.{i}.{evil}", "timestamp": ts, "type": "text",
                "text": {"body": evil},
                "referral": {"source_url": evil, "source_id": f"ad.{i}.{evil}",
                             "source_type": "ad", "headline": evil, "body": evil,
                             "ctwa_clid": evil},
                "context": {"id": f"ctx.{i}.{evil}", "from": evil}}],
            "statuses": [{"id": f"wamid.out.{i}.{evil}", "status": evil[:32], "timestamp": ts,
                          "recipient_id": evil,
                          "errors": [{"code": 1, "title": evil, "details": {"x": evil}}]}],
        }}]}]}


def send(api, route: str, doc, *, raw: bytes | None = None):
    body = raw if raw is not None else json.dumps(doc).encode()
    if route == "whatsapp":
        return api.whatsapp(body), body
    if route == "qontak":  # signed: the HMAC path
        sig = auth.sign(body, api.settings.webhook_hmac_secret.get_secret_value())
        return api.crm("/webhooks/qontak", body, token=None, signature=sig), body
    return api.crm("/webhook", body), body


@pytest.fixture(scope="module")
def classifier(sec_settings) -> Classifier:
    return Classifier(load_csv(default_csv_path()), "security", sec_settings.tz)


def drain(sec_settings, r, classifier) -> list:
    with psycopg.connect(sec_settings.database_url) as conn:
        return drain_all(conn, r, sec_settings, classifier)


TABLES = ("classified_messages", "funnel", "transactions", "rooms", "stream_offsets",
          "message_statuses", "dead_letters", "keyword_versions", "keyword_entries")


def tables_intact(conn) -> dict[str, int]:
    counts = {}
    for t in TABLES:
        assert conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is not None, t
        counts[t] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    return counts


def test_sql_metacharacters_in_every_field_are_stored_verbatim_and_tables_survive(
        sec_api, clean_redis, db, classifier, sec_settings):
    for i, evil in enumerate(EVIL):
        for route, build in (("generic", generic_body), ("qontak", qontak_body),
                             ("whatsapp", whatsapp_body)):
            res, _ = send(sec_api, route, build(i, evil))
            assert res.status_code == 200, (route, evil, res.text)
            assert res.json()["messages"] == 1 and res.json()["dead_letters"] == 0, res.text
    reports = drain(sec_settings, clean_redis, classifier)
    assert all(rep.bad_entries == 0 for rep in reports)
    assert stream_lengths(clean_redis, sec_settings) == dict.fromkeys(
        stream_lengths(clean_redis, sec_settings), 0), "the drain stopped part-way"

    counts = tables_intact(db)
    assert counts["classified_messages"] == 3 * len(EVIL)
    assert counts["message_statuses"] == len(EVIL)
    assert counts["funnel"] == 3 * len(EVIL)      # one lead per customer
    for i, evil in enumerate(EVIL):
        g = db.execute(
            "SELECT room_id, customer_key, user_id, campaign_id, ad_id, text, stages, amount "
            "FROM classified_messages WHERE source = 'generic' AND message_id = %s",
            (stored(f"msg-{i}-{evil}"),)).fetchone()
        assert g is not None, evil
        assert g[:6] == (stored(f"room-{i}-{evil}"), stored(f"generic-user:user-{i}-{evil}"),
                         stored(f"user-{i}-{evil}"), stored(f"camp-{i}-{evil}"),
                         stored(f"ad-{i}-{evil}"),
                         stored(f"mau booking {evil} sudah transfer 1,5jt"))
        # the engine still read the message: metacharacters do not derail classification
        assert "booking" in g[6] and g[7] == 1_500_000, (evil, g)
        q = db.execute(
            "SELECT room_id, customer_key, text, message_type FROM classified_messages "
            "WHERE source = 'qontak' AND message_id = %s", (stored(f"q-{i}-{evil}"),)).fetchone()
        assert q == (stored(f"qroom-{i}-{evil}"), stored(f"qontak-user:acct-{i}-{evil}"),
                     stored(f"halo {evil}"), stored(evil[:20])), evil
        w = db.execute(
            "SELECT text, ad_id, context_id, referral FROM classified_messages "
            "WHERE source = 'whatsapp' AND message_id = %s",
            (stored(f"wamid.{i}.{evil}"),)).fetchone()
        assert w[:3] == (stored(evil), stored(f"ad.{i}.{evil}"), stored(f"ctx.{i}.{evil}"))
        assert w[3]["headline"] == stored(evil) and w[3]["source_id"] == stored(f"ad.{i}.{evil}")
        s = db.execute("SELECT status, recipient, errors FROM message_statuses "
                       "WHERE message_id = %s", (stored(f"wamid.out.{i}.{evil}"),)).fetchone()
        assert s[0] == stored(evil[:32]) and s[2][0]["title"] == stored(evil), s
        lead = db.execute("SELECT campaign_id, ad_id FROM funnel WHERE customer_key = %s",
                          (stored(f"generic-user:user-{i}-{evil}"),)).fetchone()
        assert lead == (stored(f"camp-{i}-{evil}"), stored(f"ad-{i}-{evil}")), lead

    # report filters: the evil values are plain data, found exactly
    key = {"X-API-Key": sec_settings.api_key.get_secret_value()}
    for i, evil in enumerate(EVIL):
        for path in ("/funnel-report", "/funnel-report/daily"):
            for param in ("channel", "campaign"):
                res = sec_api.client.get(path, params={param: evil}, headers=key)
                assert res.status_code in (200, 422), (path, param, evil, res.text)
                if res.status_code == 422:
                    assert res.json()["error"] in ("invalid_filter", "invalid_request")
        if "\x00" not in evil:
            rows = sec_api.client.get("/funnel-report", params={"campaign": f"camp-{i}-{evil}"},
                                      headers=key).json()["rows"]
            assert [r["customer_key"] for r in rows] == [f"generic-user:user-{i}-{evil}"]
        csv = sec_api.client.get("/funnel-report", headers=key,
                                 params={"format": "csv", "channel": evil.replace("\x00", "")})
        assert csv.status_code in (200, 422), csv.text
    assert tables_intact(db) == counts


def test_sql_metacharacters_in_keywords_are_stored_verbatim(sec_api, sec_settings, db):
    key = {"X-API-Key": sec_settings.api_key.get_secret_value()}
    items = [{"stage": "booking", "keyword": evil, "channel": None} for evil in EVIL] + [
        {"stage": "opening", "keyword": "halo promo", "channel": "'; DROP TABLE funnel; --"},
        {"stage": "transaction", "keyword": "sudah transfer"}]
    res = sec_api.client.put("/keywords", json=items, headers=key)
    assert res.status_code == 200, res.text
    got = sec_api.client.get("/keywords", headers=key).json()["keywords"]
    assert {k["keyword"] for k in got if k["stage"] == "booking"} == {stored(e) for e in EVIL}
    assert "'; DROP TABLE funnel; --" in {k["channel"] for k in got}
    # a keyword that is nothing but NUL is empty: refused with its index, nothing changes
    res = sec_api.client.put("/keywords", headers=key, json=[
        {"stage": "booking", "keyword": "ok"}, {"stage": "booking", "keyword": "\x00\x00"}])
    assert res.status_code == 422 and res.json()["errors"][0]["index"] == 1, res.text
    assert sec_api.client.get("/keywords", headers=key).json()["keywords"] == got
    tables_intact(db)


@pytest.mark.parametrize("route", ["generic", "qontak", "whatsapp"])
def test_traversal_in_ids_never_shapes_an_archive_key(route, sec_api, clean_redis, s3_client,
                                                      sec_settings):
    before = bucket_keys(s3_client, sec_settings)
    sent: dict[str, bytes] = {}
    build = {"generic": generic_body, "qontak": qontak_body, "whatsapp": whatsapp_body}[route]
    for i, evil in enumerate(TRAVERSAL):
        doc = build(100 + i, evil)
        if route == "generic":
            doc["sender"]["phone"] = "081234567890"
        res, body = send(sec_api, route, doc)
        assert res.status_code == 200, (evil, res.text)
        raw_key = res.json()["raw_key"]
        assert RAW_KEY.fullmatch(raw_key) and raw_key.startswith(f"raw/source={route}/"), raw_key
        sent[raw_key + "\x1f" + str(i)] = body
    for i, evil in enumerate(CONTROL):
        doc = build(200 + i, evil)
        if route == "generic":
            doc["sender"]["phone"] = "081234567890"
        res, _ = send(sec_api, route, doc)
        assert res.status_code == 422 and "control characters" in res.json()["detail"], \
            (evil, res.text)
    new = bucket_keys(s3_client, sec_settings) - before
    assert len(new) <= len(TRAVERSAL)  # the refused ones archived nothing
    assert new and all(RAW_KEY.fullmatch(k) for k in new), sorted(new)
    assert all(k.startswith(f"raw/source={route}/") for k in new)
    # each body is archived byte for byte under the key the API answered
    for tag, body in sent.items():
        key = tag.split("\x1f")[0]
        lines = read_lines(s3_client.get_object(Bucket=sec_settings.raw_bucket,
                                                Key=key)["Body"].read())
        assert body.decode() in [ln["body"] for ln in lines]
        assert all(ln["source"] == route for ln in lines)


def _raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")), None)
                if length is not None and len(rest) >= length:
                    break
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data


@pytest.mark.parametrize("target", [
    b"/webhooks/../webhook", b"/webhooks/%2e%2e/webhook", b"/webhooks/..%2fwebhook",
    b"/webhook/../webhooks/qontak", b"/webhooks/whatsapp/../../webhook", b"//webhook",
    b"/webhook%00", b"/webhook/%2e%2e/%2e%2e/etc/passwd", b"/static/../../settings.py",
    b"/static/%2e%2e/%2e%2e/settings.py", b"/static/..%2f..%2fsettings.py",
    b"/static/vendor/../../../../../../etc/passwd", b"/static/%00.js", b"/static/a%00/../x.js",
    b"/static/" + b"a" * 5000 + b".js", b"/static/" + b"a/" * 3000 + b"x.js",
])
def test_traversal_in_the_url_reaches_no_other_route_and_no_file(target, sec_api, clean_redis,
                                                                 s3_client, sec_settings):
    before = bucket_keys(s3_client, sec_settings)
    body = json.dumps(generic_body(0, "x") | {"sender": {"type": "customer",
                                                         "phone": "081234567890"}}).encode()
    token = sec_settings.webhook_token.get_secret_value().encode()
    for method in (b"POST", b"GET"):
        request = (method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Type: application/json\r\nX-Webhook-Token: " + token +
                   b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        status, data = _raw_http(sec_api.port, request)
        assert status in (400, 404, 405), (target, data[:300])
        assert b"root:" not in data and b"SecretStr" not in data and b"def " not in data
    assert all(RAW_KEY.fullmatch(k) for k in bucket_keys(s3_client, sec_settings) - before)
    assert sec_api.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("header", [
    b"X-Webhook-Token: abc\x00def", b"X-Webhook-Token: \xff\xfe", b"X-Webhook-Token:  ",
    b"X-Webhook-Token: " + b"a" * 60_000, b"X-Webhook-Signature: sha256=" + b"0" * 64 + b"\t",
    b"X-Webhook-Signature: sha256=" + b"g" * 64, b"X-Webhook-Token: a\r\n X-Folded: b",
    b"Content-Length: -1", b"Content-Length: 99999999999999999999999",
    b"Transfer-Encoding: chunked", b"X-Webhook-Token: \xc3\xa9t\xc3\xa9",
])
def test_hostile_headers_are_refused_cleanly(header, sec_api, clean_redis, s3_client,
                                             sec_settings):
    """Header values an HTTP client library would refuse to send, sent raw: a 4xx from the
    server or its HTTP parser, never a 5xx or a dropped connection, nothing stored."""
    before = bucket_keys(s3_client, sec_settings)
    body = b'{"room_id": "r", "sender": {"phone": "081234567890"}, "message": {"id": "h"}, ' \
           b'"timestamp": 1749416383}'
    request = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + header + b"\r\n")
    if not header.lower().startswith((b"content-length", b"transfer-encoding")):
        request += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    request += b"\r\n" + body
    status, data = _raw_http(sec_api.port, request)
    assert 400 <= status < 500, (header[:60], data[:300])
    assert bucket_keys(s3_client, sec_settings) == before
    assert stream_lengths(clean_redis, sec_settings)[sec_settings.stream_key(0)] == 0
    assert sec_api.client.get("/healthz").status_code == 200
