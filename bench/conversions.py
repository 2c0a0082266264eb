"""What the Conversions API outbox costs the drain: its triggers on `funnel` run in every
batch's transaction.

    .venv/bin/python bench/conversions.py                       # 300,000 messages, batches of 50,000
    .venv/bin/python bench/conversions.py --messages 1000000

The same simulated deliveries (with redeliveries; the simulator's ad leads carry a referral
with a click id, or none for a Status ad) are stored batch by batch, as the drain stores them
(`store.process_messages`: copy, insert, funnel), into two fresh databases: one as migrated,
one with the outbox triggers disabled. The two take turns per batch, in alternating order, so
that neither gets the warmer caches or the quieter neighbours. Prints per database the seconds
of the insert and funnel stages summed over the batches and the outbox rows queued; then the
time of `rebuild` on each from an emptied funnel table (every lead inserted again, so the
insert trigger sees every row).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import fresh_database, stack_env  # noqa: E402

from funnel_ingest.engine.classify import Classifier  # noqa: E402
from funnel_ingest.engine.keywords import default_csv_path, load_csv  # noqa: E402
from funnel_ingest.settings import Settings  # noqa: E402
from funnel_ingest.simulate.conversations import customers_for_messages, simulate  # noqa: E402
from funnel_ingest.store import funnel as store  # noqa: E402

TRIGGERS = ("funnel_conversions_insert", "funnel_conversions_update", "funnel_conversions_delete")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=300_000,
                   help="about how many distinct messages to simulate (default 300,000)")
    p.add_argument("--batch", type=int, default=50_000, help="messages per batch (the drain's)")
    args = p.parse_args()

    env = stack_env(quiet=True)
    urls = {"with triggers": fresh_database(env, "funnel_bench_conversions_on"),
            "without": fresh_database(env, "funnel_bench_conversions_off")}
    with psycopg.connect(urls["without"], autocommit=True) as conn:
        for name in TRIGGERS:
            conn.execute(f"ALTER TABLE funnel DISABLE TRIGGER {name}")
    tz = Settings().tz
    classifier = Classifier(list(load_csv(default_csv_path())), "bench", tz)
    sim = simulate(customers_for_messages(args.messages, days=60), seed=5,
                   start=datetime(2025, 6, 1, tzinfo=timezone.utc), days=60)
    deliveries = sim.deliveries(seed=5)
    print(f"{len(deliveries):,} deliveries ({len(sim.messages):,} distinct messages) in "
          f"batches of {args.batch:,}")
    del sim

    conns = {label: psycopg.connect(url) for label, url in urls.items()}
    for conn in conns.values():  # the trigger functions' own time (pg_stat_user_functions)
        conn.execute("SET track_functions = 'pl'")
        conn.execute("SELECT pg_stat_reset()")
        conn.commit()
    seconds = {label: {"insert": 0.0, "funnel": 0.0} for label in conns}
    order = list(conns)
    for i in range(0, len(deliveries), args.batch):
        batch = deliveries[i:i + args.batch]
        for label in order:
            with conns[label].transaction():
                result = store.process_messages(conns[label], batch, classifier)
            for stage in ("insert", "funnel"):
                seconds[label][stage] += result.seconds[stage]
        order.reverse()
    for label, conn in conns.items():
        queued = conn.execute("SELECT count(*) FROM conversion_events").fetchone()[0]
        leads = conn.execute("SELECT count(*) FROM funnel").fetchone()[0]
        s = seconds[label]
        print(f"{label:14} insert {s['insert']:6.2f} s, funnel {s['funnel']:6.2f} s; "
              f"{leads:,} leads, {queued:,} outbox rows")
    base = seconds["without"]["funnel"]
    print(f"funnel stage with the triggers: {seconds['with triggers']['funnel'] / base:.3f} x")
    print(f"  the trigger functions' time: {_function_seconds(conns['with triggers'])}")
    for label in order:
        conn = conns[label]
        with conn.transaction():
            conn.execute("TRUNCATE funnel, transactions")
        t = time.perf_counter()
        with conn.transaction():
            store.lock_writers(conn, exclusive=True)
            leads = store.rebuild(conn, tz)
        print(f"rebuild {label:14} {time.perf_counter() - t:6.2f} s ({leads:,} leads)")
    print(f"  the trigger functions' time: {_function_seconds(conns['with triggers'])} "
          "(drain and rebuild)")
    for conn in conns.values():
        conn.close()


def _function_seconds(conn: psycopg.Connection) -> str:
    """Calls and seconds of the outbox's trigger functions so far (their statistics are
    flushed at transaction end; the snapshot is cleared to read them again)."""
    time.sleep(1.1)  # the cumulative statistics reach the view within a second
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute("SELECT funcname, calls, total_time FROM pg_stat_user_functions "
                        "WHERE funcname LIKE 'conversion_events_%' ORDER BY 1").fetchall()
    conn.commit()
    return ", ".join(f"{name} {calls} calls {ms / 1000:.2f} s" for name, calls, ms in rows)


if __name__ == "__main__":
    main()
