"""Keyword changes that cannot wreck the funnel, through the real app (uvicorn on loopback),
real Postgres and Redis: one source of truth (409 under the Google Sheet), every version kept,
diff and rollback, `force` for a list that empties a stage, and the impact preview
(`dry_run=true`) that writes nothing and counts exactly the leads a change un-books."""

from __future__ import annotations

import psycopg
import pytest

from funnel_ingest.engine.keywords import KeywordSet, default_csv_path, load_csv
from funnel_ingest.engine.model import Keyword
from funnel_ingest.store import keywords as keyword_store
from tests.api.test_keywords import NEW_LIST, api_settings, call
from tests.keyword_cases import (
    CURRENT,
    WITHOUT_BOOKING,
    WITHOUT_RESERVASI,
    csv_text,
    items,
    snapshot,
    store_case,
)
from tests.support import ApiServer, empty_engine_tables

SHEET = "1KeywordSheetOfTheGrowthTeam000000000000000"


@pytest.fixture
def kapi(settings, r, kw_db):
    with ApiServer(api_settings(settings)) as server:
        yield server


@pytest.fixture
def sheet_api(settings, r, kw_db):
    """The API with GSHEET_KEY set (worksheet "Keywords"): the sheet is the source of truth."""
    with ApiServer(api_settings(settings, gsheet_key=SHEET, gsheet_worksheet="Keywords",
                                google_service_account_file="/nonexistent/sa.json")) as server:
        yield server


@pytest.fixture
def case(settings, r, kw_db):
    """The constructed funnel of tests/keyword_cases.py, stored with its current version."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        empty_engine_tables(conn)
        kset = store_case(conn, settings.tz)
        yield conn, kset
        empty_engine_tables(conn)


def current(conn) -> str | None:
    return keyword_store.current_version_id(conn)


# --- source of truth -------------------------------------------------------------------------

def test_get_keywords_states_the_api_as_the_source_of_truth_without_a_sheet(kapi):
    missing = call(kapi, "GET", "/keywords")
    assert missing.status_code == 404
    assert missing.json()["source_of_truth"]["kind"] == "api"
    assert call(kapi, "PUT", "/keywords", NEW_LIST).status_code == 200
    got = call(kapi, "GET", "/keywords").json()
    truth = got["source_of_truth"]
    assert truth["kind"] == "api" and truth["writable"] is True
    assert truth["file"] == "default:keywords.csv" and truth["sheet_key"] is None
    assert "only when no version exists" in truth["detail"]
    assert got["published"]["action"] == "put" and got["published"]["source"] == "api"
    assert got["published"]["version"] == got["version"]


def test_under_a_sheet_writes_answer_409_naming_the_sheet_and_change_nothing(sheet_api, kw_db,
                                                                              r):
    old = KeywordSet.build(load_csv(default_csv_path()), "sheet:old")
    keyword_store.save_version(kw_db, old)
    kset = KeywordSet.build(CURRENT, f"sheet:{SHEET}/Keywords")
    keyword_store.publish(sheet_api.settings, kset, redis_client=r)
    before = snapshot(kw_db, r)

    got = call(sheet_api, "GET", "/keywords").json()
    assert got["source_of_truth"] == {
        "kind": "sheet", "sheet_key": SHEET, "worksheet": "Keywords", "file": None,
        "writable": False, "detail": got["source_of_truth"]["detail"]}
    assert SHEET in got["source_of_truth"]["detail"]

    refusals = [call(sheet_api, "PUT", "/keywords", items(WITHOUT_RESERVASI)),
                call(sheet_api, "PUT", "/keywords", items(WITHOUT_RESERVASI), force="true"),
                call(sheet_api, "POST", f"/keywords/rollback/{old.version}"),
                call(sheet_api, "POST", "/keywords/sync", source="csv")]
    for res in refusals:
        assert res.status_code == 409, res.text
        body = res.json()
        assert body["error"] == "sheet_is_source_of_truth"
        assert SHEET in body["detail"] and "'Keywords'" in body["detail"]
        assert body["source_of_truth"]["sheet_key"] == SHEET
    assert snapshot(kw_db, r) == before
    assert current(kw_db) == kset.version
    # reading and previewing stay open
    assert call(sheet_api, "GET", "/keywords/versions").status_code == 200
    dry = call(sheet_api, "PUT", "/keywords", items(WITHOUT_RESERVASI), dry_run="true")
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    assert snapshot(kw_db, r) == before


# --- versions, diff, rollback ----------------------------------------------------------------

def test_every_version_is_kept_listed_and_can_be_rolled_back(kapi, kw_db, r):
    a = call(kapi, "PUT", "/keywords", items(CURRENT)).json()["version"]
    b = call(kapi, "PUT", "/keywords", items(WITHOUT_RESERVASI)).json()["version"]
    c = call(kapi, "PUT", "/keywords", NEW_LIST).json()["version"]
    listed = call(kapi, "GET", "/keywords/versions").json()
    assert listed["current"] == c and listed["source_of_truth"]["kind"] == "api"
    assert [v["version"] for v in listed["versions"]] == [c, b, a]
    assert [v["current"] for v in listed["versions"]] == [True, False, False]
    assert listed["versions"][2]["active"] == {"opening": 2, "booking": 2, "transaction": 1}
    assert listed["versions"][0]["last_publication"]["previous"] == b

    res = call(kapi, "POST", f"/keywords/rollback/{a}")
    assert res.status_code == 200, res.text
    assert res.json()["version"] == a and res.json()["changed"] is True
    assert current(kw_db) == a
    assert r.get("keywords:version").decode() == a
    assert r.smembers("keywords:booking") == {b"reservasi", b"booking"}
    listed = call(kapi, "GET", "/keywords/versions").json()["versions"]
    assert [v["version"] for v in listed] == [a, c, b]  # none deleted
    assert listed[0]["last_publication"]["action"] == "rollback"
    assert listed[0]["last_publication"]["source"] == "api"
    assert listed[0]["last_publication"]["previous"] == c
    assert call(kapi, "GET", "/keywords").json()["published"]["action"] == "rollback"

    again = call(kapi, "POST", f"/keywords/rollback/{a}").json()
    assert again["changed"] is False
    unknown = call(kapi, "POST", "/keywords/rollback/0123456789abcdef")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_version"
    assert call(kapi, "POST", "/keywords/rollback/not-a-version").status_code == 422
    assert current(kw_db) == a
    n = kw_db.execute("SELECT count(*) FROM keyword_publications").fetchone()[0]
    assert n == 4  # three PUTs and one rollback that changed the current version


def test_diff_names_added_removed_and_changed_keywords_per_stage(kapi, kw_db):
    a = call(kapi, "PUT", "/keywords", items(CURRENT)).json()["version"]
    changed = [k if k.keyword != "halo" else Keyword("opening", "Halo", "direct")
               for k in WITHOUT_RESERVASI] + [Keyword("booking", "jadwalkan", active=False)]
    b = call(kapi, "PUT", "/keywords", items(changed)).json()["version"]
    res = call(kapi, "GET", "/keywords/diff", **{"from": a, "to": b})
    assert res.status_code == 200, res.text
    d = res.json()
    assert (d["from"], d["to"]) == (a, b)
    assert (d["added"], d["removed"], d["changed"]) == (1, 1, 1)
    assert d["emptied_stages"] == []
    assert d["stages"]["booking"]["added"] == [
        {"stage": "booking", "keyword": "jadwalkan", "channel": None, "active": False}]
    assert d["stages"]["booking"]["removed"] == [
        {"stage": "booking", "keyword": "reservasi", "channel": None, "active": True}]
    assert d["stages"]["opening"]["changed"] == [{
        "keyword": "Halo",
        "before": {"stage": "opening", "keyword": "halo", "channel": None, "active": True},
        "after": {"stage": "opening", "keyword": "Halo", "channel": "direct", "active": True}}]
    assert d["stages"]["transaction"] == {"added": [], "removed": [], "changed": []}
    # `to` defaults to the current version; the reverse diff swaps added and removed
    back = call(kapi, "GET", "/keywords/diff", **{"from": b}).json()
    assert back["to"] == b and back["added"] == 0 == back["removed"]
    rev = call(kapi, "GET", "/keywords/diff", **{"from": b, "to": a}).json()
    assert rev["stages"]["booking"]["added"][0]["keyword"] == "reservasi"
    missing = call(kapi, "GET", "/keywords/diff", **{"from": "0123456789abcdef"})
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_version"
    assert call(kapi, "GET", "/keywords/diff", **{"from": "nope"}).status_code == 422


# --- force -----------------------------------------------------------------------------------

def test_a_list_that_empties_a_stage_needs_force_on_put_sync_and_rollback(settings, r, kw_db,
                                                                          tmp_path):
    csv = tmp_path / "kw.csv"
    csv.write_text(csv_text(WITHOUT_BOOKING))
    with ApiServer(api_settings(settings, keywords_csv=str(csv))) as api:
        full = call(api, "PUT", "/keywords", items(CURRENT)).json()["version"]
        before = snapshot(kw_db, r)
        for method, path, body in [("PUT", "/keywords", items(WITHOUT_BOOKING)),
                                   ("POST", "/keywords/sync", None)]:
            res = call(api, method, path, body)
            assert res.status_code == 409, res.text
            assert res.json()["error"] == "stage_emptied"
            assert res.json()["stages"] == ["booking"]
            assert "no active booking keyword would remain" in res.json()["detail"]
            assert f"{full} has 2 booking" in res.json()["detail"]
        assert snapshot(kw_db, r) == before

        forced = call(api, "PUT", "/keywords", items(WITHOUT_BOOKING), force="true").json()
        assert forced["changed"] is True and forced["forced"] is True
        assert current(kw_db) == forced["version"]
        assert r.smembers("keywords:booking") == set()
        assert kw_db.execute("SELECT forced FROM keyword_publications ORDER BY id DESC LIMIT 1"
                             ).fetchone() == (True,)
        # back to the full list: nothing is emptied, no force needed
        assert call(api, "POST", f"/keywords/rollback/{full}").json()["forced"] is False
        # rolling back to the list without booking keywords needs force as well
        res = call(api, "POST", f"/keywords/rollback/{forced['version']}")
        assert res.status_code == 409 and res.json()["error"] == "stage_emptied"
        assert current(kw_db) == full
        res = call(api, "POST", f"/keywords/rollback/{forced['version']}", force="true")
        assert res.status_code == 200 and current(kw_db) == forced["version"]


# --- impact preview --------------------------------------------------------------------------

def test_dry_run_counts_exactly_the_leads_a_removed_booking_keyword_unbooks(kapi, case, r):
    conn, kset = case
    keyword_store.cache(r, kset)
    before = snapshot(conn, r)
    res = call(kapi, "PUT", "/keywords", items(WITHOUT_RESERVASI), dry_run="true")
    assert res.status_code == 200, res.text
    doc = res.json()
    assert snapshot(conn, r) == before  # nothing written: tables, versions, Redis

    assert doc["dry_run"] is True and doc["current_version"] == kset.version
    assert doc["candidate_version"] == KeywordSet.build(WITHOUT_RESERVASI, "x").version
    assert doc["window"]["days"] == 30
    assert doc["messages"] == 17  # c9's two messages are 40 days old
    assert doc["changed_messages"] == 6 and doc["customers_recomputed"] == 6
    assert doc["leads_changed"] == 6
    assert {s["stage"]: (s["before"], s["after"]) for s in doc["stages"]} == {
        "opening": (8, 8), "booking": (8, 2), "transaction": (1, 1)}
    channels = {c["channel"]: c for c in doc["channels"]}
    assert set(channels) == {"ads", "direct"}
    assert channels["ads"]["before"] == {"leads": 3, "bookings": 3, "transactions": 0,
                                         "value": 0}
    assert channels["ads"]["change"] == {"leads": 0, "bookings": -3, "transactions": 0,
                                         "value": 0}
    assert channels["direct"]["before"] == {"leads": 5, "bookings": 5, "transactions": 1,
                                            "value": 500000}
    assert channels["direct"]["after"] == {"leads": 5, "bookings": 3, "transactions": 1,
                                           "value": 500000}
    assert doc["total"]["change"] == {"leads": 0, "bookings": -5, "transactions": 0, "value": 0}
    first = doc["examples"][0]
    assert first["excerpt"] == "mau reservasi besok ya" and first["messages"] == 5
    assert (first["stages_before"], first["stages_after"]) == (["booking"], [])
    assert (first["keywords_before"], first["keywords_after"]) == (["reservasi"], [])
    assert doc["examples"][1]["excerpt"] == "reservasi dong"
    assert doc["needs_force"] is False and doc["stale_messages"] == 0
    assert doc["seconds"] >= 0

    # a wider window reaches c9 (un-booked too); the stored funnel agrees with the preview
    wide = call(kapi, "PUT", "/keywords", items(WITHOUT_RESERVASI), dry_run="true",
                days="60").json()
    assert wide["changed_messages"] == 7
    assert {c["channel"]: c["change"]["bookings"] for c in wide["channels"]} == {
        "ads": -3, "direct": -3}
    assert snapshot(conn, r) == before


def test_dry_run_of_the_current_list_changes_nothing_and_flags_an_emptied_stage(kapi, case):
    conn, kset = case
    same = call(kapi, "PUT", "/keywords", items(CURRENT), dry_run="true").json()
    assert same["changed_messages"] == 0 and same["leads_changed"] == 0
    assert same["candidate_version"] == kset.version
    assert all(c["change"] == {"leads": 0, "bookings": 0, "transactions": 0, "value": 0}
               for c in same["channels"])
    empty = call(kapi, "PUT", "/keywords", items(WITHOUT_BOOKING), dry_run="true").json()
    assert empty["needs_force"] is True and empty["emptied_stages"] == ["booking"]
    assert empty["total"]["change"]["bookings"] == -7  # c8 paid: still counted as booked
    assert current(conn) == kset.version


def test_dry_run_refuses_bad_windows_and_bad_bodies(kapi, case):
    for days in ("0", "367", "x"):
        res = call(kapi, "PUT", "/keywords", items(CURRENT), dry_run="true", days=days)
        assert res.status_code == 422, days
    res = call(kapi, "PUT", "/keywords", [{"stage": "bookin", "keyword": "x"}], dry_run="true")
    assert res.status_code == 422 and res.json()["errors"][0]["index"] == 0


def test_sync_dry_run_previews_the_configured_file_without_publishing(settings, r, case,
                                                                     tmp_path):
    conn, kset = case
    csv = tmp_path / "kw.csv"
    csv.write_text(csv_text(WITHOUT_RESERVASI))
    with ApiServer(api_settings(settings, keywords_csv=str(csv))) as api:
        before = snapshot(conn, r)
        doc = call(api, "POST", "/keywords/sync", dry_run="true").json()
        assert doc["dry_run"] is True and doc["changed_messages"] == 6
        assert doc["total"]["change"]["bookings"] == -5
        assert snapshot(conn, r) == before
        assert current(conn) == kset.version


def test_openapi_documents_the_new_routes(kapi):
    spec = kapi.client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/keywords/versions", "/keywords/diff", "/keywords/rollback/{version}"} <= set(paths)
    put = paths["/keywords"]["put"]
    assert {p["name"] for p in put["parameters"]} >= {"dry_run", "force", "days"}
    assert "409" in put["responses"] and "409" in paths["/keywords/rollback/{version}"]["post"][
        "responses"]
    assert "KeywordImpact" in spec["components"]["schemas"]
