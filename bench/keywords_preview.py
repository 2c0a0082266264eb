"""Keyword impact preview over 30 days of demo data: how long `PUT /keywords?dry_run=true` and
`funnel keywords preview FILE` take to re-classify a month of stored messages with a candidate
list and recompute the customers it changes.

    .venv/bin/python bench/keywords_preview.py                    # 30 days at the demo's density
    .venv/bin/python bench/keywords_preview.py --customers 22500  # ten times as many customers

1. a separate database (`<stack database>_bench_kwpreview` on the stack's Postgres) gets the
   migrations, the packaged keyword list as the current version, and `--customers` simulated
   customers' conversations of the last `--days` days (the demo sends 150 customers over two
   days: 2,250 over 30 days is the same density), stored and classified as the drain does,
   then ANALYZE;
2. the preview (store/impact.py, what the API and the CLI call) of three candidates over a
   30-day window, `--repeat` times each, median and every time printed:
   - the current list itself (nothing changes: the cost of reading and classifying twice),
   - the list without the booking keyword "pesan" (a usual edit),
   - the list without every booking keyword (the worst case: most customers recomputed);
3. `funnel keywords preview FILE` end to end (the console script in a subprocess, its wall
   time: process start, imports, preview and printing) for the second candidate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import fresh_database, stack_env  # noqa: E402


def fill(url: str, customers: int, days: int, seed: int) -> tuple[int, float]:
    """Store the simulated month classified with the packaged list; (messages, seconds)."""
    from funnel_ingest.engine.classify import Classifier
    from funnel_ingest.engine.keywords import KeywordSet, default_csv_path, load_csv
    from funnel_ingest.settings import get_settings
    from funnel_ingest.simulate.conversations import simulate
    from funnel_ingest.store import funnel as store
    from funnel_ingest.store import keywords as keyword_store

    settings = get_settings()
    t0 = time.perf_counter()
    end = datetime.now(UTC) - timedelta(minutes=5)
    sim = simulate(customers, seed=seed, start=end - timedelta(days=days), days=days)
    messages = [m.message for m in sim.messages]
    kset = KeywordSet.build(load_csv(default_csv_path()), "default:keywords.csv")
    classifier = Classifier(list(kset.keywords), kset.version, settings.tz)
    with psycopg.connect(url, autocommit=True) as conn:
        keyword_store.save_version(conn, kset, action="seed")
        for i in range(0, len(messages), 10_000):  # the drain's batch size
            with conn.transaction():
                store.process_messages(conn, messages[i:i + 10_000], classifier,
                                       rules=settings.cycle_rules)
        conn.execute("ANALYZE")
    return len(messages), time.perf_counter() - t0


def candidates() -> list[tuple[str, list]]:
    from funnel_ingest.engine.keywords import default_csv_path, load_csv

    packaged = load_csv(default_csv_path())
    return [("the current list (no change)", packaged),
            ('without the booking keyword "pesan"',
             [k for k in packaged if (k.stage, k.keyword) != ("booking", "pesan")]),
            ("without any booking keyword", [k for k in packaged if k.stage != "booking"])]


def measure(url: str, window: int, repeat: int) -> None:
    from funnel_ingest.engine.keywords import KeywordSet
    from funnel_ingest.settings import get_settings
    from funnel_ingest.store import impact as impact_store

    settings = get_settings()
    for name, keywords in candidates():
        kset = KeywordSet.build(keywords, "bench")
        cold, warm, impact = [], [], None
        for _ in range(repeat):
            for kept, times in ((False, cold), (True, warm)):
                if not kept:  # as in a fresh process: the classifiers are built again
                    impact_store._CLASSIFIERS.clear()
                with psycopg.connect(url, autocommit=True) as conn:
                    impact = impact_store.preview(conn, kset, tz=settings.tz,
                                                  rules=settings.cycle_rules, days=window)
                times.append(impact.seconds)
        assert impact is not None
        total = impact.total.change
        print(f"{name}: {statistics.median(cold):.2f} s (median of "
              f"{', '.join(f'{t:.2f}' for t in cold)}; again in the same process, the "
              f"classifiers kept: {statistics.median(warm):.2f} s); {impact.messages:,} "
              f"messages read, {impact.changed_messages:,} classified differently, "
              f"{impact.customers:,} customers recomputed; bookings {total.bookings:+,}, "
              f"transactions {total.transactions:+,}")


def cli(env: dict[str, str], window: int) -> None:
    from funnel_ingest.engine.keywords import default_csv_path

    _, keywords = candidates()[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.csv"
        rows = [f'{k.stage},"{k.keyword}",{k.channel or ""},{k.active}' for k in keywords]
        path.write_text("stage,keyword,channel,active\n" + "\n".join(rows) + "\n")
        funnel = str(Path(sys.executable).parent / "funnel")
        command = [funnel, "keywords", "preview", str(path), "--days", str(window)]
        t0 = time.perf_counter()
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
    said = next(line for line in out.stdout.splitlines() if line.startswith("window "))
    print(f"`funnel keywords preview candidate.csv --days {window}` (the packaged list "
          f"{default_csv_path().name} without \"pesan\"): {wall:.2f} s wall time; it said: "
          f"{said}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=2250)
    p.add_argument("--days", type=int, default=30, help="days of simulated traffic")
    p.add_argument("--window", type=int, default=30, help="the preview's window (days)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()

    env = stack_env(quiet=True)
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    url = fresh_database(env, f"{database}_bench_kwpreview")
    env = {**os.environ, **env, "DATABASE_URL": url, "GSHEET_KEY": "", "KEYWORDS_CSV": ""}
    os.environ.update(env)
    from funnel_ingest.settings import get_settings
    get_settings.cache_clear()

    messages, seconds = fill(url, args.customers, args.days, args.seed)
    print(f"stored {messages:,} messages of {args.customers:,} customers over {args.days} days "
          f"in {seconds:.1f} s (database {url.rsplit('/', 1)[1]})")
    measure(url, args.window, args.repeat)
    cli(env, args.window)


if __name__ == "__main__":
    main()
