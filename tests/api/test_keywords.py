"""Keyword routes on the real app (uvicorn on loopback), real Postgres and Redis; only Google's
token endpoint is faked (`responses`) for the failing-sheet case. Plus the `funnel keywords`
commands, in process."""

from __future__ import annotations

import argparse
import json

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from funnel_ingest.cli import keywords as keyword_cli
from funnel_ingest.engine.keywords import (
    KeywordSet,
    default_csv_path,
    from_json_items,
    load_csv,
)
from funnel_ingest.store import keywords as keyword_store
from tests.support import ApiServer

API_KEY = "kw-test-api-key-6c1f0b2e"
AUTH = {"X-API-Key": API_KEY}
ROUTES = [("GET", "/keywords", None), ("PUT", "/keywords", []), ("POST", "/keywords/sync", None)]

NEW_LIST = [
    {"stage": "opening", "keyword": "Halo, saya lihat iklan di TikTok", "channel": "ads"},
    {"stage": "opening", "keyword": "halo"},
    {"stage": "booking", "keyword": "booking"},
    {"stage": "booking", "keyword": "reservasi", "active": True},
    {"stage": "booking", "keyword": "jadwalkan", "active": False},
    {"stage": "transaction", "keyword": "sudah transfer", "active": "ya"},
]


def api_settings(settings, **changes):
    base = {"api_key": API_KEY, "gsheet_key": "", "keywords_csv": "",
            "google_service_account_file": "", "gsheet_worksheet": ""}
    return settings.replace(**{**base, **changes})


@pytest.fixture
def kapi(settings, r, kw_db):
    with ApiServer(api_settings(settings)) as server:
        yield server


def call(api, method, path, body=None, headers=AUTH, **params):
    kwargs = {"headers": headers, "params": params}
    if body is not None:
        kwargs["json"] = body
    return api.client.request(method, path, **kwargs)


def current(conn) -> str | None:
    return keyword_store.current_version_id(conn)


# --- authentication --------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,body", ROUTES)
def test_missing_key_is_401_wrong_key_is_403(kapi, kw_db, method, path, body):
    res = call(kapi, method, path, body, headers={})
    assert res.status_code == 401
    assert res.json()["error"] == "missing_api_key" and res.json()["detail"]
    res = call(kapi, method, path, body, headers={"X-API-Key": API_KEY + "x"})
    assert res.status_code == 403 and res.json()["error"] == "invalid_api_key"
    assert current(kw_db) is None  # nothing was done


def test_without_api_key_configured_the_routes_answer_503(settings, r, kw_db):
    with ApiServer(api_settings(settings, api_key="")) as api:
        for method, path, body in ROUTES:
            res = call(api, method, path, body, headers={"X-API-Key": ""})
            assert res.status_code == 503 and res.json()["error"] == "not_configured"
        assert api.client.get("/healthz").status_code == 200


# --- GET / sync ------------------------------------------------------------------------------

def test_get_before_anything_was_published_is_404(kapi):
    res = call(kapi, "GET", "/keywords")
    assert res.status_code == 404 and res.json()["error"] == "no_keywords"


def test_sync_publishes_the_packaged_csv_and_get_shows_it(kapi, kw_db, r):
    res = call(kapi, "POST", "/keywords/sync")
    assert res.status_code == 200, res.text
    body = res.json()
    expected = load_csv(default_csv_path())
    assert body["changed"] is True and body["source"] == "default:keywords.csv"
    assert body["row_count"] == len(expected) and len(body["version"]) == 16
    assert current(kw_db) == body["version"]
    assert r.get("keywords:version").decode() == body["version"]
    booking = {k.keyword.encode() for k in expected if k.stage == "booking" and k.active}
    assert r.smembers("keywords:booking") == booking

    got = call(kapi, "GET", "/keywords").json()
    assert got["version"] == body["version"] and got["source"] == "default:keywords.csv"
    assert got["row_count"] == len(got["keywords"]) == len(expected)
    assert {(k["stage"], k["keyword"], k["channel"], k["active"]) for k in got["keywords"]} == {
        (k.stage, k.keyword, k.channel, k.active) for k in expected}

    again = call(kapi, "POST", "/keywords/sync").json()
    assert again["version"] == body["version"] and again["changed"] is False


def test_sync_with_bad_csv_rows_is_422_by_row_and_keeps_the_version(settings, r, kw_db, tmp_path):
    bad = tmp_path / "kw.csv"
    bad.write_text("stage,keyword,channel,active\nopening,halo,,TRUE\nbokking,x,,TRUE\n"
                   "booking,,,TRUE\n")
    with ApiServer(api_settings(settings, keywords_csv=str(bad))) as api:
        assert call(api, "PUT", "/keywords", NEW_LIST).status_code == 200
        before = current(kw_db)
        res = call(api, "POST", "/keywords/sync")
        assert res.status_code == 422
        body = res.json()
        assert body["error"] == "invalid_keywords"
        assert [e["row"] for e in body["errors"]] == [3, 4]
        assert "row 3" in body["detail"] and "row 4" in body["detail"]
        assert current(kw_db) == before
        assert r.get("keywords:version").decode() == before


def test_sync_when_the_sheet_fails_is_502_and_keeps_the_version(settings, r, kw_db, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa = tmp_path / "sa.json"
    sa.write_text(json.dumps({
        "type": "service_account", "project_id": "funnel-test", "private_key_id": "k1",
        "private_key": key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "client_email": "funnel-sync@funnel-test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))
    cfg = api_settings(settings, gsheet_key="1NoSuchAccess", google_service_account_file=str(sa))
    with ApiServer(cfg) as api:
        # (the sheet is the source of truth: PUT /keywords is refused, the store publishes)
        keyword_store.publish(cfg, KeywordSet.build(from_json_items(NEW_LIST), "sheet:earlier"),
                              redis_client=r)
        before = current(kw_db)
        with responses.RequestsMock() as google:
            google.add(responses.POST, "https://oauth2.googleapis.com/token", status=400,
                       json={"error": "invalid_grant", "error_description": "Invalid JWT "
                                                                            "Signature."})
            res = call(api, "POST", "/keywords/sync")
        assert res.status_code == 502, res.text
        assert res.json()["error"] == "sheet_auth_failed"
        assert "invalid_grant" in res.json()["detail"]
        assert current(kw_db) == before
        assert r.get("keywords:version").decode() == before
        # the sheet stays the one source of truth: its failure does not hand over to the CSV
        res = call(api, "POST", "/keywords/sync", source="csv")
        assert res.status_code == 409 and res.json()["error"] == "sheet_is_source_of_truth"
        assert "1NoSuchAccess" in res.json()["detail"]
        assert current(kw_db) == before


def test_sync_source_sheet_without_a_sheet_configured_is_503(kapi, kw_db):
    res = call(kapi, "POST", "/keywords/sync", source="sheet")
    assert res.status_code == 503 and res.json()["error"] == "sheet_not_configured"
    res = call(kapi, "POST", "/keywords/sync", source="bogus")
    assert res.status_code == 422
    assert current(kw_db) is None


# --- PUT -------------------------------------------------------------------------------------

def test_put_replaces_the_list_in_postgres_and_redis(kapi, kw_db, r):
    assert call(kapi, "POST", "/keywords/sync").status_code == 200
    old = current(kw_db)
    res = call(kapi, "PUT", "/keywords", NEW_LIST)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["changed"] is True and body["source"] == "api" and body["row_count"] == 6
    assert body["version"] != old
    assert current(kw_db) == body["version"]
    stored = kw_db.execute("SELECT row_count, source FROM keyword_versions WHERE version = %s",
                           (body["version"],)).fetchone()
    assert stored == (6, "api")
    assert r.smembers("keywords:booking") == {b"booking", b"reservasi"}
    assert r.smembers("keywords:opening") == {b"Halo, saya lihat iklan di TikTok", b"halo"}
    assert r.smembers("keywords:transaction") == {b"sudah transfer"}
    assert r.get("keywords:version").decode() == body["version"]
    entries = json.loads(r.get("keywords:entries"))
    assert entries["version"] == body["version"]
    assert {"stage": "opening", "keyword": "Halo, saya lihat iklan di TikTok", "channel": "ads",
            "active": True} in entries["keywords"]
    assert {"stage": "booking", "keyword": "jadwalkan", "channel": None,
            "active": False} in entries["keywords"]

    got = call(kapi, "GET", "/keywords").json()
    assert got["version"] == body["version"] and got["source"] == "api"
    # the same content in another order: same version, unchanged
    again = call(kapi, "PUT", "/keywords", list(reversed(NEW_LIST))).json()
    assert again["version"] == body["version"] and again["changed"] is False
    # the older version can be made current again
    back = call(kapi, "POST", "/keywords/sync").json()
    assert back["version"] == old and back["changed"] is True
    assert current(kw_db) == old
    assert r.smembers("keywords:booking") != {b"booking", b"reservasi"}


def test_put_bad_items_is_422_naming_every_index_and_changes_nothing(kapi, kw_db, r):
    assert call(kapi, "PUT", "/keywords", NEW_LIST).status_code == 200
    before = current(kw_db)
    res = call(kapi, "PUT", "/keywords", [
        {"stage": "booking", "keyword": "book"},
        {"stage": "bookin", "keyword": "x"},
        {"stage": "booking", "keyword": "  "},
        {"stage": "transaction", "keyword": "lunas", "active": "maybe"},
        "halo",
    ])
    assert res.status_code == 422
    body = res.json()
    assert body["error"] == "invalid_keywords"
    assert [e["index"] for e in body["errors"]] == [1, 2, 3, 4]
    assert "unknown stage 'bookin'" in body["errors"][0]["message"]
    assert "index 1" in body["detail"] and "index 4" in body["detail"]
    assert current(kw_db) == before
    assert r.smembers("keywords:booking") == {b"booking", b"reservasi"}


def test_put_empty_list_is_422_and_keeps_the_version(kapi, kw_db, r):
    assert call(kapi, "PUT", "/keywords", NEW_LIST).status_code == 200
    before = current(kw_db)
    res = call(kapi, "PUT", "/keywords", [])
    assert res.status_code == 422 and res.json()["error"] == "empty_keyword_set"
    assert current(kw_db) == before
    assert r.get("keywords:version").decode() == before
    assert r.smembers("keywords:booking") == {b"booking", b"reservasi"}


def test_put_not_an_array_or_not_json(kapi, kw_db):
    res = call(kapi, "PUT", "/keywords", {"stage": "booking", "keyword": "x"})
    assert res.status_code == 422 and res.json()["error"] == "invalid_keywords"
    res = kapi.client.put("/keywords", content=b"{nope", headers=AUTH)
    assert res.status_code == 400 and res.json()["error"] == "invalid_json"
    assert current(kw_db) is None


def test_postgres_down_is_503_and_the_api_still_starts(settings, r):
    cfg = api_settings(settings, database_url="postgresql://postgres@127.0.0.1:1/none")
    with ApiServer(cfg) as api:
        assert api.client.get("/healthz").status_code == 200
        for method, path, body in [("GET", "/keywords", None), ("PUT", "/keywords", NEW_LIST),
                                   ("POST", "/keywords/sync", None)]:
            res = call(api, method, path, body)
            assert res.status_code == 503, res.text
            assert res.json()["error"] == "store_unavailable"


def test_openapi_documents_the_routes(kapi):
    spec = kapi.client.get("/openapi.json").json()
    put = spec["paths"]["/keywords"]["put"]
    assert put["tags"] == ["keywords"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert {"200", "401", "403", "422"} <= set(put["responses"])
    assert "502" in spec["paths"]["/keywords/sync"]["post"]["responses"]
    assert spec["paths"]["/keywords"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"]["$ref"].endswith("/KeywordVersion")
    assert any("X-API-Key" == s.get("name")
               for s in spec["components"]["securitySchemes"].values())


# --- CLI -------------------------------------------------------------------------------------

def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="funnel")
    keyword_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_sync_and_show(kw_db, r, tmp_path, capsys):
    csv = tmp_path / "kw.csv"
    csv.write_text("opening,booking,transaction\nhalo,booking,sudah transfer\n,reservasi,\n")
    assert run_cli("keywords", "sync", "--csv", str(csv)) == 0
    out = capsys.readouterr().out
    version = current(kw_db)
    assert version in out and "4 keywords" in out and "now current" in out
    assert r.smembers("keywords:booking") == {b"booking", b"reservasi"}

    assert run_cli("keywords", "show") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"version  {version}" and out[1] == f"source   csv:{csv}"
    table = "\n".join(out)
    assert "stage" in table and "reservasi" in table and "sudah transfer" in table

    assert run_cli("keywords", "show", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == version and len(doc["keywords"]) == 4


def test_cli_sync_bad_rows_is_one_line_exit_1(kw_db, tmp_path, capsys):
    csv = tmp_path / "kw.csv"
    csv.write_text("stage,keyword\nopening,halo\nbookin,x\nbooking,\n")
    assert run_cli("keywords", "sync", "--csv", str(csv)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("funnel keywords sync: 2 bad keyword rows: row 3: ")
    assert "row 4: keyword is empty" in err
    assert current(kw_db) is None
    assert run_cli("keywords", "show") == 1
    assert "no keyword version" in capsys.readouterr().err
