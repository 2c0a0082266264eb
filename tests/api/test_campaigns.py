"""GET/PUT /campaigns and POST /campaigns/import through the real app over loopback HTTP, on
a funnel drained from provider payloads; the report's campaign columns, breakdown and filter."""

from __future__ import annotations

import csv
import io
from typing import Any

import psycopg
import pytest

from funnel_ingest.api import campaigns as campaign_routes
from funnel_ingest.report.query import REPORT_COLUMNS
from tests.support import drain_all, insert, lead, post_campaign_payloads

BUTTON_WAMID = "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
BROADCAST = "broadcast:b7e2c0d4-5a61-4f0e-8d3b-1c9a2f6e4d85"


@pytest.fixture
def drained(api, r, settings, funnel_db, classifier) -> psycopg.Connection:
    """The campaign payloads drained, plus leads of unknown campaign ids inserted as the merge
    writes them (the raw id as the key)."""
    post_campaign_payloads(api)
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    insert(funnel_db, [lead("campaign_blast", campaign="wamid.unknown-1", lead_id="u1"),
                       lead("campaign_blast", campaign="wamid.unknown-2", lead_id="u2",
                            book=60, pay=120, value=300_000),
                       lead("direct", lead_id="none")])
    return funnel_db


def campaigns_of(conn: psycopg.Connection) -> dict[str, str | None]:
    return dict(conn.execute("SELECT customer_key, campaign FROM funnel"))


def stamps(conn: psycopg.Connection) -> dict[str, Any]:
    return dict(conn.execute("SELECT lead_id, (campaign, updated_at) FROM funnel"))


def put(api, key, body) -> Any:
    return api.client.put("/campaigns", json=body, headers=key)


def post_csv(api, key, text: str, content_type: str = "text/csv") -> Any:
    return api.client.post("/campaigns/import", content=text.encode(),
                           headers={**key, "Content-Type": content_type})


# ---------------------------------------------------------------------------------------------
# imports


def test_a_put_names_a_message_and_updates_only_the_leads_it_concerns(api, key, drained):
    before = dict(drained.execute("SELECT lead_id, (campaign, updated_at) FROM funnel"))
    button = drained.execute("SELECT lead_id FROM funnel WHERE campaign_id = %s",
                             (BUTTON_WAMID,)).fetchone()[0]
    body = [{"message_id": BUTTON_WAMID, "campaign": "Promo  Desember ", "sent": 1},
            {"message_id": "wamid.unknown-1", "campaign": "Promo Desember"}]
    resp = put(api, key, body)
    assert resp.status_code == 200, resp.text
    # the echo's message ref moves from template:promo_desember; the unknown id is new
    assert resp.json() == {"entries": 2, "campaigns": 1, "refs_added": 1, "refs_moved": 1,
                           "campaigns_removed": 0, "leads_updated": 2, "warnings": []}
    after = dict(drained.execute("SELECT lead_id, (campaign, updated_at) FROM funnel"))
    changed = {lid for lid in after if after[lid] != before[lid]}
    assert changed == {button, "u1"}        # the others keep their row and its updated_at
    assert {after[lid][0] for lid in changed} == {"Promo Desember"}
    # the same body again changes nothing
    again = put(api, key, body).json()
    assert (again["refs_added"], again["refs_moved"], again["leads_updated"]) == (0, 0, 0)
    assert dict(drained.execute("SELECT lead_id, (campaign, updated_at) FROM funnel")) == after


def test_importing_a_template_moves_the_messages_sent_as_it(api, key, drained):
    resp = put(api, key, [{"template": "promo_desember", "campaign": "Promo Desember",
                           "sent": 5000}])
    body = resp.json()
    assert (body["refs_moved"], body["campaigns_removed"], body["leads_updated"]) == (2, 1, 1)
    assert campaigns_of(drained)["+6285712345678"] == "Promo Desember"
    registry = dict(drained.execute("SELECT campaign, sent FROM campaigns"))
    assert "template:promo_desember" not in registry and registry["Promo Desember"] == 5000
    # a message an import named itself keeps its campaign when its template moves again
    put(api, key, [{"message_id": BUTTON_WAMID, "campaign": "Promo VIP"}])
    put(api, key, [{"template": "promo_desember", "campaign": "Promo Desember 2"}])
    assert campaigns_of(drained)["+6285712345678"] == "Promo VIP"


def test_an_ad_renamed_by_import_keeps_its_name_against_the_next_referral(api, r, key, drained,
                                                                          settings, classifier):
    assert put(api, key, [{"ad_id": "120226305854810726", "campaign": "CTWA Bali"}]
               ).status_code == 200
    assert campaigns_of(drained)["+6281234567890"] == "CTWA Bali"
    r.flushdb()
    post_campaign_payloads(api)            # the referral (headline "Chat with us") again
    drain_all(drained, r, settings, classifier)
    drained.commit()
    assert campaigns_of(drained)["+6281234567890"] == "CTWA Bali"
    assert drained.execute("SELECT name, name_source FROM campaigns WHERE campaign = "
                           "'CTWA Bali'").fetchone() == ("CTWA Bali", "import")


def test_a_csv_broadcast_log_is_imported_with_crm_column_names(api, key, drained):
    log = ("No,WhatsApp Message ID,Phone,Campaign Name,Status\n"
           f"1,{BUTTON_WAMID},6285712345678,Promo Desember,read\n"
           "2,wamid.unknown-1,6281200000001,Promo Desember,delivered\n"
           "3,wamid.unknown-3,6281200000003,Promo Desember,failed\n"
           "\n")
    resp = post_csv(api, key, log)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["entries"], body["refs_added"], body["refs_moved"], body["leads_updated"]
            ) == (3, 2, 1, 2)
    assert body["warnings"] == ["columns ignored: No, Phone, Status"]
    listed = {c["campaign"]: c for c in api.client.get("/campaigns", headers=key).json()[
        "campaigns"]}
    assert listed["Promo Desember"]["sent"] == 3 and listed["Promo Desember"]["leads"] == 2


@pytest.mark.parametrize("body,problems", [
    ([{"campaign": "x"}], [{"index": 0, "message": "give exactly one of message_id, template, "
                                                   "broadcast_id, ad_id"}]),
    ([{"message_id": "a", "template": "t", "campaign": "x"}],
     [{"index": 0, "message": "give exactly one of message_id, template, broadcast_id, ad_id, "
                              "not message_id and template"}]),
    ([{"message_id": "a"}, {"message_id": "b", "campaign": " "}],
     [{"index": 0, "message": "campaign (the campaign's name) is missing"},
      {"index": 1, "message": "campaign must be 1 to 200 characters without control "
                              "characters"}]),
    ([{"message_id": "a", "campaign": "x", "sent": -1}, {"ad_id": "1", "campaign": "y",
                                                         "colour": "red"}],
     [{"index": 0, "message": "sent must be a whole number >= 0"},
      {"index": 1, "message": "unknown field 'colour' (expected message_id, template, "
                              "broadcast_id, ad_id, campaign, sent)"}]),
    ([{"message_id": "a", "campaign": "x"}, {"message_id": "a", "campaign": "y"}],
     [{"index": 1, "message": "message 'a' is given to campaign 'y' here and to 'x' at index 0"}]),
    ([], [{"message": "no entries to import"}]),
    ({"message_id": "a"}, [{"message": "the body must be a JSON array of entries"}]),
])
def test_bad_entries_get_422_listing_each_and_change_nothing(api, key, drained, body, problems):
    before = (stamps(drained), drained.execute("SELECT count(*) FROM campaign_refs").fetchone())
    resp = put(api, key, body)
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_campaigns"
    assert resp.json()["errors"] == problems
    assert (stamps(drained), drained.execute("SELECT count(*) FROM campaign_refs").fetchone()
            ) == before


def test_bad_csv_gets_rows_named_and_other_bodies_a_clear_4xx(api, key, drained, monkeypatch):
    resp = post_csv(api, key, "template,campaign\npromo,Promo\n,Nothing\nx\x01y,Bad\n")
    assert resp.status_code == 422
    assert [e["row"] for e in resp.json()["errors"]] == [3, 4]
    assert post_csv(api, key, "phone,name\n62812,x\n").json()["detail"].startswith(
        "row 1: the header needs a campaign column")
    assert post_csv(api, key, "a,b", content_type="application/json").status_code == 415
    latin = api.client.post("/campaigns/import", content="template,campaign\npromo,Promoción\n"
                            .encode("latin-1"), headers={**key, "Content-Type": "text/csv"})
    assert latin.status_code == 400 and latin.json()["error"] == "invalid_utf8"
    assert api.client.put("/campaigns", content=b"{not json", headers=key).status_code == 400
    monkeypatch.setattr(campaign_routes, "MAX_IMPORT_BYTES", 100)
    big = post_csv(api, key, "template,campaign\n" + "promo,Promo\n" * 20)
    assert big.status_code == 413 and big.json()["error"] == "body_too_large"


@pytest.mark.parametrize("method,path", [("get", "/campaigns"), ("put", "/campaigns"),
                                         ("post", "/campaigns/import")])
def test_campaign_routes_refuse_a_missing_or_wrong_api_key(api, funnel_db, method, path):
    call = getattr(api.client, method)
    kwargs = {} if method == "get" else {"content": b"[]"}
    assert call(path, **kwargs).status_code == 401
    assert call(path, headers={"X-API-Key": "wrong"}, **kwargs).status_code == 403
    assert funnel_db.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 0


# ---------------------------------------------------------------------------------------------
# GET /campaigns


def test_campaigns_list_names_kinds_figures_and_reply_rates(api, key, drained):
    put(api, key, [{"broadcast_id": "b7e2c0d4-5a61-4f0e-8d3b-1c9a2f6e4d85",
                    "campaign": "Promo 12.12", "sent": 4}])
    body = api.client.get("/campaigns", headers=key).json()
    got = {c["campaign"]: c for c in body["campaigns"]}
    assert set(got) == {"Promo 12.12", "template:promo_desember", "ad:120226305854810726",
                        "promo-oktober", "wamid.unknown-1", "wamid.unknown-2"}
    assert body["total"] == 6 and body["omitted"] == 0
    promo = got["Promo 12.12"]
    assert (promo["name"], promo["kind"], promo["source"], promo["sent"], promo["leads"],
            promo["reply_rate"], promo["known"]) == ("Promo 12.12", "broadcast", "import", 4, 1,
                                                     0.25, True)
    assert got["ad:120226305854810726"]["name"] == "Chat with us"
    assert got["ad:120226305854810726"]["reply_rate"] is None          # sent unknown
    unknown = got["wamid.unknown-2"]
    assert (unknown["known"], unknown["name"], unknown["kind"], unknown["leads"],
            unknown["bookings"], unknown["transactions"], unknown["revenue"],
            unknown["lead_to_transaction"]) == (False, None, None, 1, 1, 1, 300_000, 1.0)
    first = api.client.get("/campaigns", headers=key, params={"limit": 1}).json()
    assert len(first["campaigns"]) == 1 and first["omitted"] == 5
    assert api.client.get("/campaigns", headers=key, params={"limit": 0}).status_code == 422


# ---------------------------------------------------------------------------------------------
# the report


def test_report_rows_and_csv_end_with_the_campaign_and_its_name(api, key, drained):
    assert REPORT_COLUMNS[-2:] == ("campaign", "campaign_name")
    rows = {r["customer_key"]: r for r in api.client.get(
        "/funnel-report", headers=key, params={"limit": 100}).json()["rows"]}
    button = rows["+6285712345678"]
    assert (button["campaign_id"], button["campaign"], button["campaign_name"]) == (
        BUTTON_WAMID, "template:promo_desember", "promo_desember")
    unknown = next(r for r in rows.values() if r["campaign_id"] == "wamid.unknown-1")
    assert (unknown["campaign"], unknown["campaign_name"]) == ("wamid.unknown-1", None)
    table = list(csv.DictReader(io.StringIO(api.client.get(
        "/funnel-report", headers=key, params={"format": "csv"}).text)))
    assert list(table[0])[-2:] == ["campaign", "campaign_name"]
    by_key = {t["customer_key"].lstrip("'"): t for t in table}
    assert by_key["+6281234567890"]["campaign_name"] == "Chat with us"
    assert by_key["+6281298765432"]["campaign_name"] == "Promo Oktober Lombok"
    assert next(t for t in table if t["campaign_id"] == "wamid.unknown-1")["campaign_name"] == ""


def test_the_campaign_filter_matches_the_resolved_key_and_the_raw_id(api, key, drained):
    def customers(campaign: str) -> set[str]:
        return {r["customer_key"] for r in api.client.get(
            "/funnel-report", headers=key, params={"campaign": campaign}).json()["rows"]}

    assert customers("template:promo_desember") == customers(BUTTON_WAMID) == {"+6285712345678"}
    assert customers("ad:120226305854810726") == {"+6281234567890"}
    put(api, key, [{"message_id": BUTTON_WAMID, "campaign": "Promo Desember"}])
    assert customers("Promo Desember") == customers(BUTTON_WAMID) == {"+6285712345678"}
    assert customers("template:promo_desember") == set()


def test_the_breakdown_by_campaign_names_its_groups_and_keeps_unknown_ids(api, key, drained):
    body = api.client.get("/funnel-report/breakdown", headers=key,
                          params={"by": "campaign"}).json()
    groups = {g["value"]: (g["name"], g["leads"]) for g in body["groups"]}
    assert groups == {"template:promo_desember": ("promo_desember", 1),
                      "ad:120226305854810726": ("Chat with us", 1),
                      BROADCAST: ("Promo 12.12 Bali", 1),
                      "promo-oktober": ("Promo Oktober Lombok", 1),
                      "wamid.unknown-1": (None, 1), "wamid.unknown-2": (None, 1),
                      None: (None, 1)}
    medium = api.client.get("/funnel-report/breakdown", headers=key,
                            params={"by": "medium"}).json()
    assert all(g["name"] is None for g in medium["groups"])
