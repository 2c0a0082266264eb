"""Findings of the hostile-sender probe, one test each: credentials judged from the headers
before any body byte is read, signatures that can be required, control characters refused in
ids and labels, and CSV cells that a spreadsheet would run as formulas neutralized in every CSV
the project writes."""

from __future__ import annotations

import csv
import io
import socket
import time
from datetime import date

import dagster as dg
import orjson
import psycopg
import pytest

from funnel_dagster.defs import assets
from funnel_ingest.cli import main as cli_main
from funnel_ingest.ingest import auth
from tests.support import ApiServer, hand_computed_rows, insert, lead

FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "-2+3+cmd",
            "@SUM(1+1)*cmd", "\tlooks-empty", "\r=1+1"]
DAY = date(2025, 10, 1)


def _generic(**changes) -> bytes:
    body = {"room_id": "room-h1", "channel": "ads",
            "sender": {"type": "customer", "phone": "081234567890"},
            "message": {"id": "h-1", "text": "Halo kak, mau info promo"},
            "timestamp": "2025-10-01T09:15:00+07:00", **changes}
    return orjson.dumps(body)


# --------------------------------------------------------------------------- credentials first


def _raw_request(port: int, path: str, headers: dict[str, str], body: bytes = b"",
                 wait: float = 5.0) -> tuple[bytes, float]:
    """Send the request line and headers (and `body`, possibly less than declared); the first
    bytes of the answer and how long it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        t0 = time.monotonic()
        sock.sendall(head.encode() + body)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            data = b""
        return data, time.monotonic() - t0


@pytest.mark.parametrize("path, headers, status", [
    ("/webhook", {"X-Webhook-Token": "wrong"}, b"403"),
    ("/webhook", {}, b"401"),
    ("/webhooks/qontak", {"X-Webhook-Signature": "md5=abc"}, b"401"),
    ("/webhooks/whatsapp", {}, b"401"),
    ("/webhooks/whatsapp", {"X-Hub-Signature-256": "sha256=zz"}, b"401"),
])
def test_bad_credentials_are_refused_before_the_body_is_sent(sec_api, path, headers, status):
    # 3 MB declared, nothing sent: an answer now means the body was never waited for
    data, took = _raw_request(sec_api.port, path, {
        "Content-Type": "application/json", "Content-Length": str(3 * 1024 * 1024),
        **headers})
    assert data.startswith(b"HTTP/1.1 " + status), data[:200]
    assert took < 2.0


def test_a_good_token_still_gets_its_body_read_and_accepted(sec_api, clean_redis):
    res = sec_api.crm("/webhook", _generic())
    assert res.status_code == 200, res.text


def test_a_required_signature_refuses_the_token_alone(sec_settings):
    strict = sec_settings.replace(webhook_require_signature=True)
    body = _generic(message={"id": "h-sig", "text": "halo"})
    with ApiServer(strict) as api:
        token_only = api.crm("/webhook", body)
        assert token_only.status_code == 401
        assert token_only.json()["error"] == "missing_signature"
        assert "WEBHOOK_REQUIRE_SIGNATURE" in token_only.json()["detail"]
        signed = api.crm("/webhook", body, token=None, signature=auth.sign(
            body, strict.webhook_hmac_secret.get_secret_value()))
        assert signed.status_code == 200, signed.text


def test_a_required_signature_without_a_secret_is_a_configuration_error():
    with pytest.raises(auth.NotConfigured, match="WEBHOOK_HMAC_SECRET is empty"):
        auth.crm_precheck("tok", None, "tok", "", require_signature=True)


# --------------------------------------------------------------------------- control characters


@pytest.mark.parametrize("changes, field", [
    ({"campaign_id": "c1\nsecond line"}, "campaign_id"),
    ({"ad_id": "ad\r1"}, "ad_id"),
    ({"channel": "ads\x00"}, "channel"),
    ({"room_id": "room\u2028x"}, "room_id"),
    ({"message": {"id": "m\t1", "text": "ok"}}, "message.id"),
])
def test_control_characters_in_ids_and_labels_get_a_422_naming_the_field(
        sec_api, changes, field):
    res = sec_api.crm("/webhook", _generic(**changes))
    assert res.status_code == 422, res.text
    assert field in res.json()["detail"] and "control characters" in res.json()["detail"]


def test_line_breaks_in_message_texts_are_kept(sec_api, clean_redis):
    res = sec_api.crm("/webhook", _generic(message={"id": "h-nl", "text": "baris 1\nbaris 2"}))
    assert res.status_code == 200, res.text


def test_a_whatsapp_message_id_with_a_newline_is_refused(sec_api):
    body = orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "messages": [
            {"from": "6281234567890", "id": "wamid.A\nB", "timestamp": "1749416383",
             "type": "text", "text": {"body": "halo"}}]}}]}]})
    res = sec_api.whatsapp(body)
    assert res.status_code == 422 and "id" in res.json()["detail"]


# --------------------------------------------------------------------------- formula cells


@pytest.fixture
def hostile_funnel(funnel_db):
    rows = [lead("ads", DAY, campaign=f, lead_id=f"hostile-{n}") for n, f in enumerate(FORMULAS)]
    insert(funnel_db, hand_computed_rows() + rows)
    return funnel_db


def _cells(text: str) -> list[str]:
    return [c for row in csv.reader(io.StringIO(text)) for c in row]


def _assert_neutralized(text: str) -> None:
    cells = _cells(text)
    risky = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert not risky, risky
    for f in FORMULAS:
        assert "'" + f in cells, f
    phones = [c for c in cells if c.startswith("'+62")]
    assert phones  # E.164 phones open as text, the + and every digit kept


def test_the_api_csv_neutralizes_formula_cells_and_keeps_them_exact_on_request(
        api, hostile_funnel, key):  # noqa: F811 (the fixture)
    resp = api.client.get("/funnel-report", params={"format": "csv"}, headers=key)
    assert resp.status_code == 200
    _assert_neutralized(resp.text)
    exact = api.client.get("/funnel-report", params={"format": "csv",
                                                     "spreadsheet_safe": "false"}, headers=key)
    cells = _cells(exact.text)
    assert all(f in cells for f in FORMULAS if not f.startswith("\r"))
    assert any(c.startswith("+62") for c in cells)


def test_funnel_export_neutralizes_formula_cells_unless_exact_values(hostile_funnel, tmp_path):
    out = tmp_path / "r.csv"
    assert cli_main(["export", "-o", str(out), "--no-progress"]) == 0
    _assert_neutralized(out.read_bytes().decode())
    assert cli_main(["export", "-o", str(out), "--no-progress", "--exact-values"]) == 0
    assert FORMULAS[0] in _cells(out.read_bytes().decode())


def test_the_dagster_csv_neutralizes_formula_cells_and_counts_rows_not_newlines(
        hostile_funnel, settings, s3_client):
    from tests.support import dagster_resources

    resources = dagster_resources(settings)
    result = dg.materialize([assets.funnel_report_csv], partition_key=DAY.isoformat(),
                            resources=resources)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed  # a CR inside a cell does not throw the row count off
    report_key = f"reports/funnel/date={DAY}/funnel_{DAY}.csv"
    body = s3_client.get_object(Bucket=settings.reports_bucket, Key=report_key)["Body"].read().decode()
    _assert_neutralized(body)
    with psycopg.connect(settings.database_url) as conn:
        n = conn.execute("SELECT count(*) FROM funnel WHERE leads_date = %s", (DAY,)).fetchone()[0]
    assert len(list(csv.reader(io.StringIO(body)))) - 1 == n


# --------------------------------------------------------------------------- readiness


def test_a_flood_of_readyz_calls_opens_no_postgres_connection_per_call(sec_api, sec_settings):
    import asyncio
    import threading

    import httpx

    dbname = psycopg.conninfo.conninfo_to_dict(sec_settings.database_url)["dbname"]
    with psycopg.connect(sec_settings.database_url, autocommit=True) as watch:
        t0 = watch.execute("SELECT now()").fetchone()[0]
        peak, stop = [0], threading.Event()

        def sample() -> None:
            with psycopg.connect(sec_settings.database_url, autocommit=True) as conn:
                while not stop.is_set():
                    n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                     "AND backend_start >= %s AND pid <> pg_backend_pid()",
                                     (dbname, t0)).fetchone()[0]
                    peak[0] = max(peak[0], n)
                    time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()

        async def flood() -> list[int]:
            async with httpx.AsyncClient(base_url=sec_api.base_url, timeout=10) as client:
                answers = await asyncio.gather(*(client.get("/readyz") for _ in range(30)))
                await asyncio.sleep(2.1)  # past the cache: a second round checks again
                answers += await asyncio.gather(*(client.get("/readyz") for _ in range(30)))
            return [a.status_code for a in answers]

        try:
            codes = asyncio.run(flood())
        finally:
            stop.set()
            sampler.join()
    assert codes == [200] * 60
    assert peak[0] <= 1, f"{peak[0]} new connections during 60 calls (the sampler's excluded)"


# --------------------------------------------------------------------------- console markup


def test_labels_with_console_markup_print_as_text_in_funnel_report(funnel_db, capsys):
    insert(funnel_db, [lead("[/oops]", DAY), lead("[link=http://evil.example]x[/link]", DAY),
                       lead("[bold red]ads", DAY)])
    assert cli_main(["report", "--from", DAY.isoformat(), "--to", DAY.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "[/oops]" in out and "[link=http://evil.example]x[/link]" in out
    assert "[bold red]ads" in out


# --------------------------------------------------------------------------- the room map


def test_room_entries_expire_unless_used_and_an_expired_room_still_resolves(
        sec_settings, clean_redis, funnel_db):
    from funnel_ingest.store.keywords import current_classifier
    from tests.support import drain_all

    cfg = sec_settings.replace(room_ttl_seconds=3)
    room = {"room_id": "room-ttl-1", "channel": "ads"}
    customer = _generic(**room, message={"id": "t-1", "text": "Halo kak, mau info promo"})
    agent = _generic(**room, sender={"type": "agent", "phone": "6281100000001"},
                     message={"id": "t-2", "text": "Baik kak, silakan booking"},
                     timestamp="2025-10-01T09:20:00+07:00")
    room_key = "funnel:room:generic:room-ttl-1"
    with ApiServer(cfg) as api:
        assert api.crm("/webhook", customer).status_code == 200
        assert clean_redis.get(room_key) == b"+6281234567890"
        assert 0 < clean_redis.ttl(room_key) <= 3
        memory = clean_redis.memory_usage(room_key)
        print(f"\nroom map: {memory} bytes per room entry")
        assert memory < 200
        drain_all(funnel_db, clean_redis, cfg, current_classifier(funnel_db, None, cfg))
        funnel_db.commit()
        time.sleep(3.5)
        assert clean_redis.get(room_key) is None  # bounded: gone after its TTL
        assert api.crm("/webhook", agent).status_code == 200
    drain_all(funnel_db, clean_redis, cfg, current_classifier(funnel_db, None, cfg))
    funnel_db.commit()
    resolved = funnel_db.execute("SELECT customer_key FROM classified_messages WHERE "
                                 "message_id = 't-2'").fetchone()
    assert resolved == ("+6281234567890",)  # the rooms table in Postgres is the fallback
