"""GET /funnel-report (JSON pages + summary, streamed CSV) and /funnel-report/daily, on funnel
rows inserted directly, through the real app over loopback HTTP."""

from __future__ import annotations

import csv
import io
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from funnel_ingest.local.processes import free_port
from funnel_ingest.report.query import REPORT_COLUMNS
from tests.support import (
    DAY,
    ApiServer,
    hand_computed_rows,
    insert,
    insert_many,
    lead,
)


def get(api: ApiServer, key: dict[str, str], path: str = "/funnel-report",
        **params: Any) -> httpx.Response:
    return api.client.get(path, params=params, headers=key)


def all_pages(api: ApiServer, key: dict[str, str], **params: Any) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        body = get(api, key, **params, **({"cursor": cursor} if cursor else {})).json()
        pages.append(body["rows"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


# ---------------------------------------------------------------------------------------------
# auth


@pytest.mark.parametrize("path,params", [("/funnel-report", {}),
                                         ("/funnel-report", {"format": "csv"}),
                                         ("/funnel-report/daily", {}),
                                         ("/funnel-report/breakdown", {"by": "medium"}),
                                         ("/funnel-report/durations", {})])
def test_report_routes_refuse_a_missing_or_wrong_api_key(api, funnel_db, path, params):
    missing = api.client.get(path, params=params)
    assert missing.status_code == 401
    assert missing.json() == {"error": "missing_api_key",
                              "detail": "the X-API-Key header is missing"}
    wrong = api.client.get(path, params=params, headers={"X-API-Key": "not-the-key"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "invalid_api_key"


def test_report_routes_answer_503_when_no_api_key_is_configured(settings, r):
    with ApiServer(settings.replace(api_key="")) as server:
        resp = server.client.get("/funnel-report", headers={"X-API-Key": "anything"})
    assert resp.status_code == 503 and resp.json()["error"] == "not_configured"


def test_postgres_down_is_a_503_not_a_hang_and_the_api_stays_up(settings, r, key):
    down = settings.replace(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    with ApiServer(down) as server:
        t = time.monotonic()
        resp = server.client.get("/funnel-report", headers=key)
        assert resp.status_code == 503 and resp.json()["error"] == "store_unavailable"
        assert time.monotonic() - t < 15
        csv_resp = server.client.get("/funnel-report", params={"format": "csv"}, headers=key)
        assert csv_resp.status_code == 503
        assert server.client.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------------------------
# summary math


def test_summary_per_channel_and_total_match_hand_computed_figures(api, funnel_db, key):
    insert(funnel_db, hand_computed_rows())
    body = get(api, key, start="2025-10-01", end="2025-10-01").json()
    by = {c["channel"]: c for c in body["summary"]["by_channel"]}
    assert list(by) == ["ads", "direct", "website"]
    ads = by["ads"]
    assert (ads["leads"], ads["bookings"], ads["transactions"]) == (5, 4, 3)
    assert ads["conversion"] == {"lead_to_booking": 0.8, "booking_to_transaction": 0.75,
                                 "lead_to_transaction": 0.6}
    # sum of first payments; average over the 3 paid leads, rounded to the Rupiah
    assert ads["revenue"] == {"sum": 3_500_000, "average": 1_166_667, "payments_sum": 4_000_000}
    # percentile_cont: median of 60,120,180,240 = 150; p90 at rank 2.7 = 180 + 0.7 * 60
    assert ads["lead_to_booking_seconds"] == {"median": 150.0, "p90": 222.0}
    # 600, 1200, 3000: median 1200; p90 at rank 1.8 = 1200 + 0.8 * 1800
    assert ads["lead_to_transaction_seconds"] == {"median": 1200.0, "p90": 2640.0}

    web = by["website"]
    assert (web["leads"], web["bookings"], web["transactions"]) == (2, 0, 0)
    assert web["conversion"] == {"lead_to_booking": 0.0, "booking_to_transaction": None,
                                 "lead_to_transaction": 0.0}
    assert web["revenue"] == {"sum": 0, "average": None, "payments_sum": 0}
    assert web["lead_to_booking_seconds"] == {"median": None, "p90": None}

    direct = by["direct"]
    assert (direct["transactions"], direct["revenue"]["sum"], direct["revenue"]["average"]) \
        == (1, 0, None)
    assert direct["lead_to_transaction_seconds"] == {"median": 90.0, "p90": 90.0}

    total = body["summary"]["total"]
    assert (total["leads"], total["bookings"], total["transactions"]) == (8, 5, 4)
    assert total["conversion"] == {"lead_to_booking": 0.625, "booking_to_transaction": 0.8,
                                   "lead_to_transaction": 0.5}
    assert total["revenue"] == {"sum": 3_500_000, "average": 1_166_667,
                                "payments_sum": 4_000_000}
    # 30, 60, 120, 180, 240: median 120, p90 at rank 3.6 = 180 + 0.6 * 60
    assert total["lead_to_booking_seconds"] == {"median": 120.0, "p90": 216.0}
    # 90, 600, 1200, 3000: median 900, p90 at rank 2.7 = 1200 + 0.7 * 1800
    assert total["lead_to_transaction_seconds"] == {"median": 900.0, "p90": 2460.0}


def test_a_one_channel_filter_has_that_channels_figures_as_total(api, funnel_db, key):
    insert(funnel_db, hand_computed_rows())
    body = get(api, key, channel="ads").json()
    [ads] = body["summary"]["by_channel"]
    assert body["summary"]["total"] == {k: v for k, v in ads.items() if k != "channel"}


def test_an_empty_selection_has_zero_figures(api, funnel_db, key):
    body = get(api, key, channel="nowhere").json()
    assert body["rows"] == [] and body["next_cursor"] is None
    assert body["summary"]["by_channel"] == []
    assert body["summary"]["total"]["leads"] == 0
    assert body["summary"]["total"]["conversion"]["lead_to_booking"] is None


def test_daily_summary_per_lead_date_and_channel(api, funnel_db, key):
    nxt = DAY + timedelta(days=1)
    insert(funnel_db, [
        lead("ads", book=60, pay=120, value=100_000), lead("ads"),
        lead("website", book=300),
        lead("ads", nxt, book=10, pay=20, value=300_000), lead("ads", nxt, book=30, pay=60,
                                                                value=200_000),
        lead("ads", DAY + timedelta(days=2))])  # outside the range
    body = get(api, key, "/funnel-report/daily", start=DAY.isoformat(),
               end=nxt.isoformat()).json()
    got = [(d["leads_date"], d["channel"], d["leads"], d["bookings"], d["transactions"],
            d["revenue"]["sum"], d["lead_to_booking_seconds"]["median"]) for d in body["days"]]
    assert got == [("2025-10-01", "ads", 2, 1, 1, 100_000, 60.0),
                   ("2025-10-01", "website", 1, 1, 0, 0, 300.0),
                   ("2025-10-02", "ads", 2, 2, 2, 500_000, 20.0)]
    assert body["days"][2]["conversion"]["lead_to_transaction"] == 1.0
    assert body["filters"] == {"start": "2025-10-01", "end": "2025-10-02", "channels": [],
                               "campaign": None, "mediums": [], "timezone": "Asia/Jakarta"}
    only_web = get(api, key, "/funnel-report/daily", channel="website").json()
    assert [d["channel"] for d in only_web["days"]] == ["website"]
    # for charts of counts and rates: the same days without the times
    counts = get(api, key, "/funnel-report/daily", start=DAY.isoformat(), end=nxt.isoformat(),
                 times="false").json()
    assert [(d["leads_date"], d["channel"], d["leads"], d["revenue"]["sum"],
             d["lead_to_booking_seconds"]["median"]) for d in counts["days"]] == [
        (day, channel, leads, revenue, None) for day, channel, leads, _, _, revenue, _ in got]


def test_breakdown_per_medium_campaign_and_opening_keyword_largest_groups_first(
        api, funnel_db, key):
    """The summary per value of the chosen dimension, groups with the most leads first; leads
    without a value are one group (value null); beyond `limit`, the groups and leads left out
    are counted, never silently dropped."""
    rows = [lead("ads", book=60, pay=120, value=100_000, campaign="spring", medium="instagram"),
            lead("ads", campaign="spring", medium="instagram"),
            lead("ads", book=30, campaign="spring"),
            lead("website", campaign="autumn"), lead("website", medium=None),
            lead("direct", book=10, pay=600, value=50_000)]
    rows[0]["opening_keyword"] = rows[1]["opening_keyword"] = "promo bali"
    insert(funnel_db, rows)
    by_medium = get(api, key, "/funnel-report/breakdown", by="medium").json()
    assert [(g["value"], g["leads"], g["bookings"], g["transactions"])
            for g in by_medium["groups"]] == [("whatsapp", 3, 2, 1), ("instagram", 2, 1, 1),
                                              (None, 1, 0, 0)]
    assert by_medium["groups"][1]["conversion"]["lead_to_transaction"] == 0.5
    assert by_medium["groups"][1]["lead_to_booking_seconds"]["median"] == 60.0
    assert (by_medium["by"], by_medium["omitted_groups"], by_medium["omitted_leads"]) == (
        "medium", 0, 0)

    top = get(api, key, "/funnel-report/breakdown", by="campaign", limit=1).json()
    assert [(g["value"], g["leads"]) for g in top["groups"]] == [("spring", 3)]
    assert (top["omitted_groups"], top["omitted_leads"]) == (2, 3)   # autumn 1, none 2

    keyword = get(api, key, "/funnel-report/breakdown", by="opening_keyword",
                  channel="ads").json()
    assert [(g["value"], g["leads"]) for g in keyword["groups"]] == [("promo bali", 2),
                                                                     (None, 1)]
    assert keyword["filters"]["channels"] == ["ads"]

    empty = get(api, key, "/funnel-report/breakdown", by="ad", start="2030-01-01").json()
    assert (empty["groups"], empty["omitted_groups"], empty["omitted_leads"]) == ([], 0, 0)
    for bad in ({"by": "phone"}, {"by": "medium", "limit": 0}, {"by": "medium", "limit": 101},
                {"by": "medium", "start": "2025-10-02", "end": "2025-10-01"}):
        assert get(api, key, "/funnel-report/breakdown", **bad).status_code == 422, bad


def test_durations_count_leads_per_time_bucket_from_lead_to_booking_and_to_transaction(
        api, funnel_db, key):
    """Each bucket holds its lower edge: a booking 300 s after the lead is in "5-30 minutes";
    leads with no booking (no transaction) are not counted for that stage."""
    day, hour = 86400, 3600
    insert(funnel_db, [
        lead("ads", book=60, pay=299), lead("ads", book=300, pay=2 * hour),
        lead("ads", book=1799, pay=3 * day), lead("website", book=40 * day, pay=45 * day),
        lead("website"), lead("direct", pay=7 * day),        # paid without a booking message
        lead("direct", DAY + timedelta(days=1), book=60)])   # outside the range below
    body = get(api, key, "/funnel-report/durations", start=DAY.isoformat(),
               end=DAY.isoformat()).json()
    assert body["bounds_seconds"] == [300, 1800, 7200, 21600, 86400, 259200, 604800, 1209600,
                                      2592000]
    assert body["lead_to_booking"] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert body["lead_to_transaction"] == [1, 0, 0, 1, 0, 0, 1, 1, 0, 1]
    assert body["filters"]["start"] == "2025-10-01"
    ads = get(api, key, "/funnel-report/durations", channel="ads").json()
    assert sum(ads["lead_to_booking"]) == 3 and sum(ads["lead_to_transaction"]) == 3
    assert get(api, key, "/funnel-report/durations", start="2025-10-02",
               end="2025-10-01").status_code == 422


# ---------------------------------------------------------------------------------------------
# filters


def test_filters_select_lead_dates_inclusively_channels_and_campaign(api, funnel_db, key):
    rows = [lead("ads", DAY - timedelta(days=1), lead_id="before"),
            lead("ads", DAY, lead_id="first-day", campaign="promo-10"),
            lead("website", DAY + timedelta(days=3), lead_id="middle"),
            lead("direct", DAY + timedelta(days=6), lead_id="last-day", campaign="promo-10"),
            lead("campaign_blast", DAY + timedelta(days=6), minute=1, lead_id="blast"),
            lead("ads", DAY + timedelta(days=7), lead_id="after")]
    insert(funnel_db, rows)

    def ids(**params: Any) -> list[str]:
        body = get(api, key, start="2025-10-01", end="2025-10-07", **params).json()
        return [r["lead_id"] for r in body["rows"]]

    assert ids() == ["first-day", "middle", "last-day", "blast"]
    assert ids(channel=["ads", "direct"]) == ["first-day", "last-day"]
    assert ids(channel="website") == ["middle"]
    assert ids(campaign="promo-10") == ["first-day", "last-day"]
    assert ids(campaign="promo-10", channel="direct") == ["last-day"]
    open_end = get(api, key, start="2025-10-07").json()["rows"]
    assert [r["lead_id"] for r in open_end] == ["last-day", "blast", "after"]
    open_start = get(api, key, end="2025-09-30").json()["rows"]
    assert [r["lead_id"] for r in open_start] == ["before"]


def test_medium_is_a_filter_and_the_column_after_the_six_user_columns(api, funnel_db, key):
    insert(funnel_db, [lead("ads", lead_id="wa"), lead("ads", minute=1, lead_id="ig",
                                                         medium="instagram"),
                       lead("tiktok", minute=2, lead_id="none", medium=None)])

    def ids(**params: Any) -> list[str]:
        return [r["lead_id"] for r in get(api, key, **params).json()["rows"]]

    assert ids(medium="instagram") == ["ig"]
    assert ids(medium=["whatsapp", "Instagram"]) == ["wa", "ig"]
    assert ids(medium="whatsapp", channel="tiktok") == []
    assert REPORT_COLUMNS[6] == "medium"
    text = get(api, key, format="csv", medium="instagram").text
    header, row = list(csv.reader(io.StringIO(text)))
    assert header[:7] == ["leads_date", "channel", "phone", "booking_date", "transaction_date",
                          "transaction_value", "medium"]
    assert row[6] == "instagram"
    assert get(api, key, medium=" ").status_code == 422


def test_a_paid_lead_counts_as_booked_while_its_booking_date_stays_empty(api, funnel_db, key):
    insert(funnel_db, [lead("ads", book=60, pay=600, value=100_000, lead_id="booked"),
                       lead("ads", minute=1, pay=300, value=200_000, lead_id="paid-only"),
                       lead("ads", minute=2, lead_id="asked")])
    body = get(api, key).json()
    rows = {r["lead_id"]: r for r in body["rows"]}
    assert rows["paid-only"]["booking_date"] is None and rows["paid-only"]["booking_at"] is None
    [ads] = body["summary"]["by_channel"]
    assert (ads["leads"], ads["bookings"], ads["transactions"]) == (3, 2, 2)
    assert ads["conversion"]["booking_to_transaction"] == 1.0
    # time to book over the observed booking only; time to pay over both payments
    assert ads["lead_to_booking_seconds"] == {"median": 60.0, "p90": 60.0}
    assert ads["lead_to_transaction_seconds"]["median"] == 450.0


def test_rows_have_the_report_columns_in_order_with_iso_dates_and_integer_values(
        api, funnel_db, key):
    insert(funnel_db, [lead("ads", book=60, pay=600, value=1_250_000, total=2_000_000,
                            campaign="c1")])
    body = get(api, key).json()
    assert body["columns"] == list(REPORT_COLUMNS)
    [row] = body["rows"]
    assert list(row) == list(REPORT_COLUMNS)
    assert row["leads_date"] == "2025-10-01" and row["transaction_date"] == "2025-10-01"
    assert row["transaction_value"] == 1_250_000 and row["transaction_total"] == 2_000_000
    assert row["lead_at"] == "2025-10-01T03:00:00+00:00"  # 10:00 in Jakarta, as UTC


@pytest.mark.parametrize("params,reason", [
    ({"start": "2025-10-08", "end": "2025-10-01"}, "start (2025-10-08) is after end (2025-10-01)"),
    ({"start": "2025-02-30"}, "query.start"),
    ({"end": "yesterday"}, "query.end"),
    ({"limit": "0"}, "query.limit"),
    ({"limit": "1001"}, "query.limit"),
    ({"format": "xlsx"}, "query.format"),
    ({"channel": " "}, "channel must not be empty"),
    ({"campaign": "x" * 201}, "campaign must be 1 to 200 characters"),
    ({"cursor": "not-a-cursor"}, "cursor is not a cursor this API issued"),
    ({"cursor": "WyJ4Il0", "format": "csv"}, "cursor applies to format=json only"),
])
def test_invalid_filters_get_422_with_the_reason(api, funnel_db, key, params, reason):
    resp = get(api, key, **params)
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] in ("invalid_filter", "invalid_request")
    assert reason in body["detail"]


def test_daily_refuses_invalid_filters_too(api, funnel_db, key):
    resp = get(api, key, "/funnel-report/daily", start="2025-10-02", end="2025-10-01")
    assert resp.status_code == 422 and "after end" in resp.json()["detail"]


# ---------------------------------------------------------------------------------------------
# keyset pagination


def paging_rows() -> list[dict[str, Any]]:
    """240 leads over 4 days and 3 channels, many sharing the same lead time (ties)."""
    return [lead(("ads", "website", "direct")[i % 3], DAY + timedelta(days=i % 4),
                 minute=(i // 12) % 5, lead_id=f"p-{(i * 7919) % 1000:04d}-{i}")
            for i in range(240)]


def expected_order(conn: psycopg.Connection, where: str = "TRUE") -> list[str]:
    return [r[0] for r in conn.execute(
        f"SELECT lead_id FROM funnel WHERE {where} ORDER BY leads_date, lead_at, lead_id")]


@pytest.mark.parametrize("params,where", [
    ({}, "TRUE"),
    ({"channel": "website"}, "channel = 'website'"),
    ({"channel": ["ads", "direct"]}, "channel IN ('ads', 'direct')"),
    ({"start": "2025-10-02", "end": "2025-10-03", "channel": ["direct", "ads"]},
     "leads_date BETWEEN '2025-10-02' AND '2025-10-03' AND channel IN ('ads', 'direct')"),
])
def test_keyset_pages_cover_every_row_once_in_report_order(api, funnel_db, key, params, where):
    insert(funnel_db, paging_rows())
    pages = all_pages(api, key, limit=7, **params)
    got = [r["lead_id"] for page in pages for r in page]
    assert got == expected_order(funnel_db, where)
    assert len(got) == len(set(got))
    assert all(len(p) == 7 for p in pages[:-1]) and 0 < len(pages[-1]) <= 7


def test_pages_stay_stable_while_leads_arrive_and_only_the_first_has_the_summary(
        api, funnel_db, key):
    insert(funnel_db, paging_rows())
    first = get(api, key, limit=50).json()
    assert first["summary"]["total"]["leads"] == 240
    seen = [r["lead_id"] for r in first["rows"]]
    # a lead before the cursor and one after it arrive between two page requests
    insert(funnel_db, [lead("ads", DAY, minute=0, lead_id="a-late-early-one"),
                       lead("ads", DAY + timedelta(days=3), minute=59, lead_id="z-newest")])
    cursor = first["next_cursor"]
    while cursor:
        body = get(api, key, limit=50, cursor=cursor).json()
        assert body["summary"] is None
        seen += [r["lead_id"] for r in body["rows"]]
        cursor = body["next_cursor"]
    assert len(seen) == len(set(seen)) == 241  # nothing twice; the one after the cursor seen
    assert "z-newest" in seen and "a-late-early-one" not in seen
    forced = get(api, key, limit=50, cursor=first["next_cursor"], summary="true").json()
    assert forced["summary"]["total"]["leads"] == 242


def test_a_cursor_only_continues_its_own_filters(api, funnel_db, key):
    insert(funnel_db, paging_rows())
    cursor = get(api, key, limit=5, channel="ads").json()["next_cursor"]
    other = get(api, key, limit=5, channel="website", cursor=cursor)
    assert other.status_code == 422 and "other filters" in other.json()["detail"]
    same = get(api, key, limit=5, channel="ads", cursor=cursor)
    assert same.status_code == 200 and len(same.json()["rows"]) == 5


# ---------------------------------------------------------------------------------------------
# CSV


def test_csv_has_the_report_columns_and_the_same_rows_as_json(api, funnel_db, key):
    insert(funnel_db, hand_computed_rows())
    resp = get(api, key, format="csv", start="2025-10-01", end="2025-10-01", channel="ads")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in resp.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(resp.text)))
    assert tuple(table[0]) == REPORT_COLUMNS
    assert table[0][:6] == ["leads_date", "channel", "phone", "booking_date",
                            "transaction_date", "transaction_value"]
    json_rows = get(api, key, channel="ads").json()["rows"]
    assert [r[REPORT_COLUMNS.index("lead_id")] for r in table[1:]] == [r["lead_id"] for r in json_rows]
    first = dict(zip(table[0], table[1]))
    assert first["leads_date"] == "2025-10-01" and first["transaction_value"] == "1000000"
    assert first["transaction_total"] == "1500000"
    assert first["lead_at"] == "2025-10-01 03:01:00+00"


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_csv_of_200k_rows_streams_in_chunks_with_bounded_server_memory(
        stack_env, settings, funnel_db, key, tmp_path):
    """The API as its own process: its peak RSS while streaming 200,000 rows (~30 MB of CSV)
    grows by a fraction of the body, and the client gets it in many chunks."""
    from funnel_ingest.local.processes import api_worker_pids, start_api, stop_process_group

    insert_many(funnel_db, 200_000)
    port = free_port()
    proc = start_api(stack_env, port, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=key, timeout=120) as c:
            assert c.get("/funnel-report", params={"limit": 1}).status_code == 200  # warm
            (worker,) = api_worker_pids(proc)
            Path(f"/proc/{worker}/clear_refs").write_text("5")  # reset the peak RSS
            before = _peak_rss_kb(worker)
            size = lines = chunks = 0
            with c.stream("GET", "/funnel-report", params={"format": "csv"}) as resp:
                assert resp.status_code == 200
                assert "content-length" not in resp.headers  # chunked: not built in memory
                for chunk in resp.iter_raw():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
                    chunks += 1
            peak = _peak_rss_kb(worker)
    finally:
        stop_process_group(proc)
    assert lines == 200_001
    assert chunks >= 100
    growth_kb = peak - before
    print(f"peak RSS growth {growth_kb} kB for {size} bytes in {chunks} chunks")
    assert size > 25_000_000
    assert growth_kb < 16 * 1024 and growth_kb * 1024 < size / 4, (growth_kb, size)


def test_an_aborted_csv_download_frees_its_connection(api, funnel_db, key, settings):
    insert_many(funnel_db, 50_000)
    with api.client.stream("GET", "/funnel-report", params={"format": "csv"},
                           headers=key) as resp:
        next(resp.iter_raw())  # read a little, then hang up
    deadline = time.monotonic() + 10
    query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND query LIKE 'COPY (SELECT%%' AND pid <> pg_backend_pid()")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while conn.execute(query).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert conn.execute(query).fetchone()[0] == 0
    assert get(api, key, limit=1).status_code == 200


def test_concurrent_requests_share_the_pool(api, funnel_db, key):
    insert(funnel_db, hand_computed_rows())
    codes: list[int] = []

    def call() -> None:
        with httpx.Client(base_url=api.base_url, headers=key, timeout=30) as c:
            codes.extend(c.get("/funnel-report", params={"channel": "ads"}).status_code
                         for _ in range(5))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 40


def test_openapi_documents_the_report_routes(api):
    spec = api.client.get("/openapi.json").json()
    params = {p["name"] for p in spec["paths"]["/funnel-report"]["get"]["parameters"]}
    assert {"start", "end", "channel", "campaign", "format", "limit", "cursor"} <= params
    assert "/funnel-report/daily" in spec["paths"] and "/dashboard" in spec["paths"]
    assert {"/funnel-report/breakdown", "/funnel-report/durations",
            "/dashboard/settings"} <= set(spec["paths"])
    assert "FunnelReportPage" in spec["components"]["schemas"]


def test_transaction_values_are_integers_even_for_large_sums(api, funnel_db, key):
    insert(funnel_db, [lead("ads", book=1, pay=2, value=9_000_000_000_000)])
    body = get(api, key).json()
    assert body["rows"][0]["transaction_value"] == 9_000_000_000_000
    assert body["summary"]["total"]["revenue"]["sum"] == int(Decimal("9e12"))
