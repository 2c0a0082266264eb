"""Report latency at 1,000,000 leads (docs/architecture.md: `/funnel-report` p95 under 200 ms
for a month and a channel; a full CSV export streams without loading everything in memory).

    .venv/bin/python bench/report.py                      # 1,000,000 leads over 90 days
    .venv/bin/python bench/report.py --days 30            # all of them in one month (worst case)
    .venv/bin/python bench/report.py --reuse              # keep the filled database, measure again

1. a separate database (`funnel_bench_report` on the stack's Postgres) gets the migrations and
   `--leads` synthetic funnel rows by COPY (channel shares, stage rates and stage times like
   the simulator's: ads 33 %, direct 27 %, website 21 %, campaign_blast 19 %; 60 % booked,
   40 % paid; campaign_blast and ads leads in 12 and 30 campaigns, 6 of them named in the
   campaign registry, the others unknown ids), then VACUUM ANALYZE (as autovacuum leaves a
   table that stopped changing);
2. the API runs as its own process (one granian worker) on that database;
3. measured over HTTP: `/funnel-report` first page (rows + summary) for the busiest month and
   one channel (the channels in turn), the next page by cursor, `/funnel-report/daily` for the
   same filter, the month over all channels; for the month over all channels the routes the
   dashboard reads (daily with and without times, durations, breakdown by campaign and by
   medium) and its whole default view (its five requests sent at once, timed until the last
   answer), and that view broken down by campaign (six requests); then the full
   CSV export (every row, streamed), with the API process' peak RSS before and after it;
4. `funnel export` of every lead to a file, as CSV and as Parquet.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funnel_ingest import db
from funnel_ingest.local import stack
from funnel_ingest.local.processes import (
    api_worker_pids,
    free_port,
    start_api,
    stop_process_group,
)
from funnel_ingest.report.export import export
from funnel_ingest.report.query import ReportFilter
from funnel_ingest.settings import Settings

DB_NAME = "funnel_bench_report"
CHANNELS = ("ads", "direct", "website", "campaign_blast")
SHARES = (0.33, 0.27, 0.21, 0.19)
START = datetime(2025, 7, 1, tzinfo=UTC)
JAKARTA = timedelta(hours=7)  # FUNNEL_TIMEZONE Asia/Jakarta has no DST
COLUMNS = ("lead_id", "leads_date", "channel", "phone", "booking_date", "transaction_date",
           "transaction_value", "customer_key", "cycle", "lead_at", "booking_at",
           "transaction_at", "transaction_total", "transactions", "campaign_id", "ad_id",
           "opening_keyword", "opening_source", "opening_message_id", "campaign")
NAMED_CAMPAIGNS = 6
"""blast-0 .. blast-5 get a name in the campaign registry; the other keys stay unknown ids."""


def synthetic_leads(n: int, days: int, seed: int, offset: int = 0) -> pd.DataFrame:
    """`n` funnel rows whose leads open uniformly over `days` days from START."""
    rng = np.random.default_rng(seed + offset)
    lead_at = pd.to_datetime(START) + pd.to_timedelta(
        rng.integers(0, days * 86400, n), unit="s")
    channel = rng.choice(np.array(CHANNELS), n, p=SHARES)
    booked = rng.random(n) < 0.6
    paid = booked & (rng.random(n) < 2 / 3)
    booking_at = lead_at + pd.to_timedelta(rng.lognormal(np.log(1100), 1.6, n), unit="s")
    tx_at = booking_at + pd.to_timedelta(rng.lognormal(np.log(12000), 1.2, n), unit="s")
    value = (np.round(rng.lognormal(np.log(1_000_000), 0.7, n), -3)).astype(np.int64)
    settled = rng.random(n) < 0.3
    phone = "+628" + pd.Series(rng.integers(10**9, 10**10, n)).astype(str)
    idx = np.arange(offset, offset + n)
    campaign = np.where(channel == "campaign_blast",
                        "blast-" + pd.Series(idx % 12).astype(str).to_numpy(),
                        np.where(channel == "ads",
                                 "ads-" + pd.Series(idx % 30).astype(str).to_numpy(), None))

    def business_date(ts: pd.Series) -> pd.Series:
        return (ts + JAKARTA).dt.date

    df = pd.DataFrame({
        "lead_id": pd.Series(rng.integers(0, 2**63, n, dtype=np.int64)).map("{:016x}".format)
        + pd.Series(idx).map("{:08x}".format),
        "leads_date": business_date(pd.Series(lead_at)),
        "channel": channel,
        "phone": phone,
        "booking_date": business_date(pd.Series(booking_at)).where(booked),
        "transaction_date": business_date(pd.Series(tx_at)).where(paid),
        "transaction_value": pd.Series(value).where(paid).astype("Int64"),
        "customer_key": phone,
        "cycle": 1,
        "lead_at": pd.Series(lead_at),
        "booking_at": pd.Series(booking_at).where(booked),
        "transaction_at": pd.Series(tx_at).where(paid),
        "transaction_total": pd.Series(np.where(settled, value * 2, value)).where(paid)
        .astype("Int64"),
        "transactions": np.where(paid, np.where(settled, 2, 1), 0),
        "campaign_id": campaign,
        "ad_id": None,
        "opening_keyword": None,
        "opening_source": rng.choice(np.array(["whatsapp", "qontak", "generic"]), n),
        "opening_message_id": pd.Series(idx).map("m{:09d}".format),
        "campaign": campaign,  # resolved as the merge resolves ids the registry knows as keys
    })
    return df[list(COLUMNS)]


def fill(url: str, leads: int, days: int, seed: int) -> float:
    """Empty the funnel of `url` and COPY `leads` rows into it; returns the seconds taken."""
    t = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE funnel, campaign_refs, campaigns")
        conn.execute("INSERT INTO campaigns (campaign, name, kind, source) SELECT 'blast-' || i, "
                     "'Blast ' || i, 'broadcast', 'import' FROM generate_series(0, %s) AS i",
                     (NAMED_CAMPAIGNS - 1,))
        with conn.cursor() as cur, cur.copy(
                f"COPY funnel ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)") as copy:
            step = 100_000
            for offset in range(0, leads, step):
                df = synthetic_leads(min(step, leads - offset), days, seed, offset)
                copy.write(df.to_csv(index=False, header=False,
                                     date_format="%Y-%m-%d %H:%M:%S+00"))
                print(f"  {offset + len(df):,} leads", end="\r", file=sys.stderr, flush=True)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        # as after a drain run: the report summary's rows folded, one per group and day
        conn.execute("SELECT funnel_summary_compact()")
        conn.execute("VACUUM (ANALYZE) funnel, funnel_summary, funnel_summary_times, "
                     "funnel_summary_week_times, funnel_summary_channel_times, "
                     "funnel_summary_channel_week_times")
    print(file=sys.stderr)
    return time.perf_counter() - t


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(client: httpx.Client, path: str, params: list[dict], n: int) -> list[float]:
    """Seconds of `n` sequential GETs of `path`, cycling through `params`."""
    times = []
    for i in range(n):
        t = time.perf_counter()
        r = client.get(path, params=params[i % len(params)])
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    return times


def timed_view(client: httpx.Client, requests: list[tuple[str, dict]], n: int) -> list[float]:
    """Seconds of `n` dashboard views: each sends `requests` at once, as the page does, and is
    done when the last answer is in."""
    times = []
    with ThreadPoolExecutor(len(requests)) as pool:
        for _ in range(n):
            t = time.perf_counter()
            for r in list(pool.map(lambda req: client.get(req[0], params=req[1]), requests)):
                r.raise_for_status()
            times.append(time.perf_counter() - t)
    return times


def line(name: str, times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return (f"{name:44} p50 {statistics.median(ms):7.1f} ms   p95 {pct(ms, 95):7.1f} ms   "
            f"p99 {pct(ms, 99):7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)})")


def peak_rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--leads", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=90, help="days the leads are spread over")
    p.add_argument("--requests", type=int, default=200, help="requests per measured route")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reuse", action="store_true",
                   help="measure the database as the last run left it (no refill)")
    args = p.parse_args()

    env = stack.up(log=lambda m: print(m, file=sys.stderr))
    base = env["DATABASE_URL"].rsplit("/", 1)[0]
    url = f"{base}/{DB_NAME}"
    db.ensure_database(url)
    db.migrate(url)
    if not args.reuse:
        print(f"filling {DB_NAME} with {args.leads:,} leads over {args.days} days ...",
              file=sys.stderr)
        seconds = fill(url, args.leads, args.days, args.seed)
        print(f"COPY + VACUUM ANALYZE: {seconds:.1f} s ({args.leads / seconds:,.0f} leads/s)")
    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT count(*) FROM funnel").fetchone()[0]
        month, in_month = conn.execute(
            "SELECT date_trunc('month', leads_date)::date AS m, count(*) FROM funnel "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1").fetchone()
        per_channel = dict(conn.execute(
            "SELECT channel, count(*) FROM funnel WHERE leads_date >= %s AND leads_date < %s "
            "GROUP BY 1", (month, (month + timedelta(days=32)).replace(day=1))).fetchall())
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('funnel'))").fetchone()
    end = (month + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    print(f"funnel: {total:,} leads ({size[0]} with indexes); busiest month {month:%Y-%m}: "
          f"{in_month:,} leads; per channel: "
          + ", ".join(f"{c} {n:,}" for c, n in sorted(per_channel.items())))

    api_key = "bench-report-key"
    port = free_port()
    api = start_api({**env, "DATABASE_URL": url, "API_KEY": api_key}, port,
                    stack.state_dir() / "logs" / "bench-report-api.log")
    try:
        headers = {"X-API-Key": api_key}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers,
                          timeout=120) as client:
            span = {"start": month.isoformat(), "end": end.isoformat()}
            one_channel = [{**span, "channel": c} for c in CHANNELS]
            timed(client, "/funnel-report", one_channel, 8)  # warm-up: pool, caches
            print(line("/funnel-report month + channel, page 1",
                       timed(client, "/funnel-report", one_channel, args.requests)))
            second = [{**q, "cursor": client.get("/funnel-report", params=q).json()[
                "next_cursor"]} for q in one_channel]
            print(line("/funnel-report month + channel, page 2",
                       timed(client, "/funnel-report", second, args.requests)))
            print(line("/funnel-report/daily month + channel",
                       timed(client, "/funnel-report/daily", one_channel, args.requests // 2)))
            print(line("/funnel-report month, all channels",
                       timed(client, "/funnel-report", [span], max(20, args.requests // 5))))
            # what the dashboard asks for on its default view (a month, every channel), and
            # when its breakdown selector changes
            few = max(20, args.requests // 5)
            for path, extra in (("/funnel-report/daily", {}),
                                ("/funnel-report/daily", {"times": "false"}),
                                ("/funnel-report/durations", {}),
                                ("/funnel-report/breakdown", {"by": "campaign"}),
                                ("/funnel-report/breakdown", {"by": "medium"})):
                name = f"{path.removeprefix('/funnel-report')} " + " ".join(
                    f"{k}={v}" for k, v in extra.items())
                print(line(f"{name.strip()} month, all channels",
                           timed(client, path, [{**span, **extra}], few)))
            before_end = month - timedelta(days=1)
            before = {"start": (before_end - (end - month)).isoformat(),
                      "end": before_end.isoformat(), "limit": 1}
            view = [("/funnel-report", {**span, "limit": 1}),
                    ("/funnel-report/daily", {**span, "times": "false"}),
                    ("/funnel-report", before), ("/funnel-report/durations", span),
                    ("/funnel-report", {**span, "limit": 50, "summary": "false"})]
            print(line("dashboard view: its 5 requests at once",
                       timed_view(client, view, few)))
            by_campaign = [*view, ("/funnel-report/breakdown", {**span, "by": "campaign"})]
            print(line("dashboard by campaign: 6 requests at once",
                       timed_view(client, by_campaign, few)))

            (worker,) = api_worker_pids(api)
            rss_before = peak_rss_mb(worker)
            t = time.perf_counter()
            size_bytes = rows = chunks = 0
            with client.stream("GET", "/funnel-report", params={"format": "csv"}) as r:
                r.raise_for_status()
                for chunk in r.iter_raw():
                    size_bytes += len(chunk)
                    rows += chunk.count(b"\n")
                    chunks += 1
            dt = time.perf_counter() - t
            rss_after = peak_rss_mb(worker)
            print(f"{'full CSV export over HTTP':44} {dt:.1f} s: {rows - 1:,} rows, "
                  f"{size_bytes / 1e6:,.0f} MB in {chunks:,} chunks "
                  f"({(rows - 1) / dt:,.0f} rows/s); API peak RSS {rss_before:.0f} MB before, "
                  f"{rss_after:.0f} MB after")
    finally:
        stop_process_group(api)

    settings = Settings(database_url=url)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("csv", "parquet"):
            if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
                print("funnel export parquet: skipped (pyarrow is not installed)")
                continue
            out = Path(tmp) / f"funnel_report.{fmt}"
            t = time.perf_counter()
            rows = export(settings, ReportFilter(), str(out), fmt).rows
            dt = time.perf_counter() - t
            print(f"{'funnel export ' + fmt + ' (every lead, to a file)':44} {dt:.1f} s: "
                  f"{rows:,} rows, {out.stat().st_size / 1e6:,.0f} MB ({rows / dt:,.0f} rows/s)")


if __name__ == "__main__":
    main()
