"""Funnel engine throughput, beside Postgres' own bulk speed measured in the same run.

    .venv/bin/python bench/engine.py                    # 1,000,000 messages
    .venv/bin/python bench/engine.py --messages 100000  # a quicker look

1. simulate conversations until about N messages (seeded), with redeliveries;
2. classification alone (keywords, affixes, negations, money, dates): messages/s;
3. the engine on one N-message batch into an empty funnel database (COPY to staging, insert
   with the idempotency key, lead cycles of every touched customer, funnel merge): messages/s;
4. Postgres alone on the same rows: COPY into a staging table, and COPY + INSERT … ON CONFLICT
   into a table with the same unique key (the bulk-upsert ceiling docs/architecture.md names);
5. the classifier's precision/recall per stage and the funnel's exact-match rate against the
   simulator's ground truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import fresh_database, stack_env  # noqa: E402

from funnel_ingest.engine.classify import Classifier  # noqa: E402
from funnel_ingest.engine.keywords import default_csv_path, load_csv  # noqa: E402
from funnel_ingest.settings import Settings  # noqa: E402
from funnel_ingest.simulate.conversations import customers_for_messages, simulate  # noqa: E402
from funnel_ingest.store import funnel as store  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from quality import quality_report  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    url = fresh_database(stack_env(), "funnel_bench")
    settings = Settings(database_url=url)
    classifier = Classifier(list(load_csv(default_csv_path())), "bench", settings.tz)

    t = time.perf_counter()
    customers = customers_for_messages(args.messages, days=120)
    sim = simulate(customers, seed=args.seed, start=datetime(2025, 6, 1, tzinfo=timezone.utc),
                   days=120)
    messages = sim.deliveries(seed=args.seed)
    print(f"simulated {customers} customers, {len(sim.messages)} messages, "
          f"{len(messages)} deliveries in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    for m in messages:
        classifier.classify(m.text, m.direction, m.sent_at)
    dt = time.perf_counter() - t
    print(f"classification alone:        {len(messages) / dt:10,.0f} msgs/s  ({dt:.1f} s)")

    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        with conn.transaction():
            res = store.process_messages(conn, messages, classifier)
        dt = time.perf_counter() - t
        engine_rate = len(messages) / dt
        print(f"engine, one batch:           {engine_rate:10,.0f} msgs/s  ({dt:.1f} s; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
              + f"; {res.inserted} new, {res.duplicates} duplicates, {res.leads} leads)")

        rows = store.message_rows(messages, classifier)
        conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS bench_copy AS "
                     f"SELECT {', '.join(store.MESSAGE_COLUMNS)} FROM classified_messages "
                     "WITH NO DATA")
        conn.execute("TRUNCATE bench_copy")
        t = time.perf_counter()
        store._copy(conn, "bench_copy", store.MESSAGE_COLUMNS, rows)
        conn.commit()
        dt_copy = time.perf_counter() - t
        copy_rate = len(rows) / dt_copy
        print(f"postgres COPY alone:         {copy_rate:10,.0f} rows/s  ({dt_copy:.1f} s)")

        conn.execute("CREATE TABLE IF NOT EXISTS bench_upsert (LIKE bench_copy)")
        conn.execute("TRUNCATE bench_upsert")
        conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS bench_upsert_key "
                     "ON bench_upsert (source, message_id, room_key)")
        conn.execute("TRUNCATE bench_copy")
        conn.commit()
        t = time.perf_counter()
        store._copy(conn, "bench_copy", store.MESSAGE_COLUMNS, rows)
        conn.execute("INSERT INTO bench_upsert SELECT * FROM bench_copy ON CONFLICT DO NOTHING")
        conn.commit()
        dt_up = time.perf_counter() - t
        upsert_rate = len(rows) / dt_up
        print(f"postgres COPY + upsert:      {upsert_rate:10,.0f} rows/s  ({dt_up:.1f} s)")
        print(f"engine / bulk upsert:        {engine_rate / upsert_rate:10.2f}")
        quality_report(conn, sim, classifier)


if __name__ == "__main__":
    main()
