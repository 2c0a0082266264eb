"""The report summary (sql/009_report_summary.sql): kept equal to the leads by every kind of
write, read to its stated precision, folded without changing a sum, and never a lock that two
writers wait on."""

from __future__ import annotations

import random
import shutil
from datetime import date, timedelta

import psycopg
import pytest

from funnel_ingest import db
from funnel_ingest.report import query
from funnel_ingest.report.query import TIME_PRECISION, ReportFilter
from funnel_ingest.store.funnel import compact_summary
from tests.support import DAY, FUNNEL_COLUMNS, insert, lead

# the exact figures, from the leads themselves (what the report computed before the summary)
EXACT = """
    SELECT channel, count(*), count(*) FILTER (WHERE booking_at IS NOT NULL
                                                 OR transaction_at IS NOT NULL),
           count(transaction_at), coalesce(sum(transaction_value), 0)::bigint,
           round(avg(transaction_value))::bigint, coalesce(sum(transaction_total), 0)::bigint,
           percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (
               ORDER BY date_part('epoch', booking_at - lead_at)),
           percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (
               ORDER BY date_part('epoch', transaction_at - lead_at))
      FROM funnel WHERE leads_date BETWEEN %s AND %s GROUP BY channel ORDER BY channel"""


def exact(conn: psycopg.Connection, start: date, end: date) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in conn.execute(EXACT, (start, end))}


def read(conn: psycopg.Connection, start: date, end: date) -> dict[str, dict]:
    return {c["channel"]: c for c in query.summary(conn, ReportFilter(start, end))["by_channel"]}


def assert_matches(conn: psycopg.Connection, start: date, end: date) -> None:
    want, got = exact(conn, start, end), read(conn, start, end)
    assert sorted(got) == sorted(want)
    for channel, (leads, booked, paid, revenue, average, payments, book_p, pay_p) in want.items():
        g = got[channel]
        assert (g["leads"], g["bookings"], g["transactions"]) == (leads, booked, paid)
        assert (g["revenue"]["sum"], g["revenue"]["average"], g["revenue"]["payments_sum"]) == (
            revenue, average, payments)
        for pcts, times in ((book_p, g["lead_to_booking_seconds"]),
                            (pay_p, g["lead_to_transaction_seconds"])):
            if pcts is None:
                assert times == {"median": None, "p90": None}
                continue
            for want_s, got_s in zip(pcts, (times["median"], times["p90"]), strict=True):
                assert got_s == pytest.approx(want_s, rel=TIME_PRECISION, abs=1.0)


def random_leads(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        book = int(rng.lognormvariate(7, 1.6)) if rng.random() < 0.6 else None
        pay = book + int(rng.lognormvariate(9, 1.2)) if book is not None and rng.random() < .6 \
            else None
        value = rng.randrange(1, 5000) * 1000 if pay is not None else None
        rows.append(lead(rng.choice(("ads", "direct", "website", "campaign_blast")),
                         DAY + timedelta(days=rng.randrange(10)), minute=rng.randrange(600),
                         book=book, pay=pay, value=value,
                         campaign=rng.choice((None, "spring", "autumn")),
                         medium=rng.choice(("whatsapp", "instagram", None))))
    return rows


def test_inserts_updates_and_deletes_keep_the_summary_equal_to_the_leads(funnel_db):
    rng = random.Random(7)
    insert(funnel_db, random_leads(rng, 400))
    end = DAY + timedelta(days=9)
    assert_matches(funnel_db, DAY, end)
    # a booking learned later, a transaction settled, a lead moved to another channel and
    # day, leads gone: each statement's differences, in the same transaction as the write
    funnel_db.execute("UPDATE funnel SET booking_at = lead_at + interval '42 minutes' "
                      "WHERE booking_at IS NULL AND transaction_at IS NULL "
                      "AND lead_id IN (SELECT lead_id FROM funnel ORDER BY lead_id LIMIT 50)")
    funnel_db.execute("UPDATE funnel SET transaction_value = transaction_value * 2, "
                      "transaction_total = transaction_total + 1 WHERE channel = 'website'")
    funnel_db.execute("UPDATE funnel SET channel = 'direct', leads_date = leads_date + 1 "
                      "WHERE channel = 'ads' AND cycle = 1 AND lead_id LIKE '%3'")
    funnel_db.execute("DELETE FROM funnel WHERE lead_id LIKE '%7'")
    funnel_db.commit()
    assert_matches(funnel_db, DAY, end + timedelta(days=1))
    # a rolled back write leaves no trace
    funnel_db.execute("DELETE FROM funnel")
    funnel_db.rollback()
    assert_matches(funnel_db, DAY, end + timedelta(days=1))
    funnel_db.execute("TRUNCATE funnel")
    funnel_db.commit()
    assert read(funnel_db, DAY, end) == {}
    assert funnel_db.execute("SELECT count(*) FROM funnel_summary").fetchone()[0] == 0


def test_breakdowns_daily_and_durations_read_the_same_leads(funnel_db):
    insert(funnel_db, random_leads(random.Random(11), 300))
    filt = ReportFilter(DAY, DAY + timedelta(days=9), mediums=("whatsapp",))
    by_campaign = query.breakdown(funnel_db, filt, "campaign")
    want = dict(funnel_db.execute(
        "SELECT campaign_id, count(*) FROM funnel WHERE medium = 'whatsapp' GROUP BY 1"))
    assert {g["value"]: g["leads"] for g in by_campaign["groups"]} == want
    assert [g["leads"] for g in by_campaign["groups"]] == sorted(want.values(), reverse=True)
    days = query.daily(funnel_db, filt)
    want_days = funnel_db.execute(
        "SELECT leads_date, channel, count(*) FROM funnel WHERE medium = 'whatsapp' "
        "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    assert [(date.fromisoformat(d["leads_date"]), d["channel"], d["leads"]) for d in days] == \
        want_days
    hist = query.durations(funnel_db, filt)
    bounds = list(query.DURATION_BOUNDS)
    want_hist = [0] * (len(bounds) + 1)
    for (seconds,) in funnel_db.execute(
            "SELECT date_part('epoch', booking_at - lead_at) FROM funnel "
            "WHERE medium = 'whatsapp' AND booking_at IS NOT NULL"):
        want_hist[sum(seconds >= b for b in bounds)] += 1
    assert hist["lead_to_booking"] == want_hist


@pytest.mark.parametrize("start_day, days", [(0, 10), (5, 14), (0, 28), (3, 25), (12, 2)])
def test_figures_read_whole_weeks_and_the_days_around_them_alike(funnel_db, start_day, days):
    """A breakdown, a summary and the duration chart read the weekly histograms for the range's
    whole weeks and the daily ones for the days around them: the same figures as the leads
    give, whatever the range's first and last weekday."""
    rng = random.Random(17)
    rows = random_leads(rng, 600)
    for row in rows:  # spread over five weeks
        shift = timedelta(days=rng.randrange(35))
        row["leads_date"] += shift
        for c in ("lead_at", "booking_at", "transaction_at"):
            row[c] = row[c] and row[c] + shift
    insert(funnel_db, rows)
    compact_summary(funnel_db)
    start = DAY + timedelta(days=start_day)
    end = start + timedelta(days=days - 1)
    got = {g["value"]: g for g in query.breakdown(funnel_db, ReportFilter(start, end),
                                                  "campaign")["groups"]}
    want = funnel_db.execute(
        "SELECT campaign_id, count(*), percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP ("
        "ORDER BY date_part('epoch', booking_at - lead_at)) FROM funnel "
        "WHERE leads_date BETWEEN %s AND %s GROUP BY 1", (start, end)).fetchall()
    assert sorted(got, key=str) == sorted((c for c, _, _ in want), key=str)
    for campaign, leads, pcts in want:
        g = got[campaign]
        assert g["leads"] == leads
        times = g["lead_to_booking_seconds"]
        assert [times["median"], times["p90"]] == pytest.approx(pcts, rel=TIME_PRECISION)
    # the summary per channel and the duration chart read the channel-grain weeks and days alike
    assert_matches(funnel_db, start, end)
    bounds = list(query.DURATION_BOUNDS)
    want_hist = [0] * (len(bounds) + 1)
    for (seconds,) in funnel_db.execute(
            "SELECT date_part('epoch', transaction_at - lead_at) FROM funnel WHERE leads_date "
            "BETWEEN %s AND %s AND transaction_at IS NOT NULL", (start, end)):
        want_hist[sum(seconds >= b for b in bounds)] += 1
    assert query.durations(funnel_db, ReportFilter(start, end))["lead_to_transaction"] == \
        want_hist


def test_medians_and_p90_are_exact_when_a_bucket_holds_one_time_and_close_otherwise(funnel_db):
    # 60, 120, 180, 240 s fall in four buckets: percentile_cont's 150 and 222 exactly
    insert(funnel_db, [lead("ads", book=s) for s in (60, 120, 180, 240)])
    times = read(funnel_db, DAY, DAY)["ads"]["lead_to_booking_seconds"]
    assert times == {"median": 150.0, "p90": 222.0}
    # 1000 s and 1010 s share a bucket: read as its mean, within the stated precision
    insert(funnel_db, [lead("direct", book=s) for s in (1000, 1010, 1010)])
    median = read(funnel_db, DAY, DAY)["direct"]["lead_to_booking_seconds"]["median"]
    assert median != 1010.0
    assert median == pytest.approx(1010, rel=TIME_PRECISION)


def test_compaction_folds_rows_without_changing_a_figure(funnel_db):
    rng = random.Random(3)
    for _ in range(5):  # five writes: five rows for most groups
        insert(funnel_db, random_leads(rng, 60))
    end = DAY + timedelta(days=9)
    before = query.summary(funnel_db, ReportFilter(DAY, end))
    loose = funnel_db.execute("SELECT count(*) FROM funnel_summary").fetchone()[0]
    assert compact_summary(funnel_db) == 10
    rows = funnel_db.execute("SELECT count(*), bool_and(compacted) FROM funnel_summary"
                             ).fetchone()
    groups = funnel_db.execute(
        "SELECT count(*) FROM (SELECT DISTINCT leads_date, channel, medium, campaign, ad_id, "
        "opening_keyword FROM funnel) g").fetchone()[0]
    assert rows == (groups, True) and groups < loose
    assert query.summary(funnel_db, ReportFilter(DAY, end)) == before
    assert compact_summary(funnel_db) == 0  # nothing loose left
    assert_matches(funnel_db, DAY, end)


def test_one_compaction_at_a_time(funnel_db, settings):
    insert(funnel_db, random_leads(random.Random(5), 20))
    with psycopg.connect(settings.database_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(7305598112593717505)")  # one is running
        assert compact_summary(funnel_db) == -1
    assert compact_summary(funnel_db) > 0


def test_two_writers_of_one_group_never_wait_on_each_other(funnel_db, settings):
    """Each statement appends its differences: a drain on another shard writing leads of the
    same day and channel is not blocked by this transaction's summary rows (nor the
    compaction by either)."""
    insert(funnel_db, [lead("ads")])
    with psycopg.connect(settings.database_url) as a, psycopg.connect(settings.database_url) as b:
        b.execute("SET lock_timeout = '2s'")
        a.execute("UPDATE funnel SET transaction_value = 5, transaction_at = lead_at, "
                  "booking_at = lead_at, transactions = 1")  # open: its rows are locked
        insert(b, [lead("ads"), lead("ads", book=5)])  # commits without waiting
        assert compact_summary(b) > 0
        a.commit()
    assert_matches(funnel_db, DAY, DAY)


def test_the_migration_summarises_the_leads_stored_before_it(settings, tmp_path):
    url = settings.database_url.rsplit("/", 1)[0] + "/funnel_mig_summary"
    db.drop_database(url)
    db.ensure_database(url)
    try:
        for m in db.load_migrations():
            if m.version < 9:
                shutil.copy(db.sql_dir() / f"{m.version:03d}_{m.name}.sql", tmp_path)
        db.migrate(url, tmp_path)
        columns = [c for c in FUNNEL_COLUMNS if c != "campaign"]
        with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(
                f"COPY funnel ({', '.join(columns)}) FROM STDIN") as cp:
            for row in random_leads(random.Random(9), 50):
                cp.write_row([row[c] for c in columns])
        db.migrate(url)
        with psycopg.connect(url) as conn:
            assert_matches(conn, DAY, DAY + timedelta(days=9))
    finally:
        db.drop_database(url)


def test_ranges_at_the_calendars_ends_read_their_days(funnel_db):
    """A range reaching year 1 or 9999 has no whole week to read (the Monday or Sunday around
    its end does not exist): it reads the daily rows, never fails."""
    insert(funnel_db, [lead("ads", book=60)])
    for filt in (ReportFilter(end=date(1, 1, 1)), ReportFilter(start=date(9999, 12, 28)),
                 ReportFilter(start=date(1, 1, 1), end=date(9999, 12, 31))):
        got = query.summary(funnel_db, filt)["total"]
        assert got["leads"] == (1 if filt.start == date(1, 1, 1) else 0)
        query.breakdown(funnel_db, filt, "campaign")
        query.durations(funnel_db, filt)
