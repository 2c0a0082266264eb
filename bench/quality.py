"""Classifier precision/recall per stage and the funnel's exact-match rate against the
simulator's ground truth.

    .venv/bin/python bench/quality.py --customers 2000
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funnel_ingest.engine.classify import Classifier  # noqa: E402
from funnel_ingest.simulate.conversations import Simulation  # noqa: E402

STAGE_NAMES = ("opening", "booking", "transaction")


def classifier_scores(sim: Simulation, classifier: Classifier) -> dict[str, tuple[float, float]]:
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for s in sim.messages:
        got = set(classifier.classify(s.message.text, s.message.direction,
                                      s.message.sent_at).stages)
        want = set(s.truth.stages)
        for stage in STAGE_NAMES:
            if stage in got and stage in want:
                tp[stage] += 1
            elif stage in got:
                fp[stage] += 1
            elif stage in want:
                fn[stage] += 1
    return {st: (tp[st] / max(tp[st] + fp[st], 1), tp[st] / max(tp[st] + fn[st], 1))
            for st in STAGE_NAMES}


def funnel_match(conn: psycopg.Connection, sim: Simulation) -> tuple[int, int, Counter]:
    """(exactly matching leads, truth leads, mismatching fields)."""
    got = {}
    for row in conn.execute(
            "SELECT customer_key, lead_at, channel, phone, booking_at, transaction_at, "
            "transaction_value, medium FROM funnel"):
        got[(row[0], row[1])] = row[2:]
    exact = 0
    wrong: Counter = Counter()
    for lead in sim.leads:
        row = got.get((lead.customer_key, lead.lead_at))
        want = (lead.channel, lead.phone, lead.booking_at, lead.transaction_at,
                lead.transaction_value, lead.medium)
        if row is None:
            wrong["lead missing"] += 1
            continue
        if tuple(row) == want:
            exact += 1
        for name, a, b in zip(("channel", "phone", "booking_at", "transaction_at",
                               "transaction_value", "medium"), row, want, strict=True):
            if a != b:
                wrong[name] += 1
    extra = len(got) - sum(1 for ld in sim.leads if (ld.customer_key, ld.lead_at) in got)
    if extra:
        wrong["extra leads"] += extra
    return exact, len(sim.leads), wrong


def quality_report(conn: psycopg.Connection, sim: Simulation, classifier: Classifier) -> None:
    for stage, (precision, recall) in classifier_scores(sim, classifier).items():
        print(f"classifier {stage:12} precision {precision:6.3f}  recall {recall:6.3f}")
    exact, total, wrong = funnel_match(conn, sim)
    print(f"funnel rows exactly matching the ground truth: {exact}/{total} "
          f"({exact / max(total, 1):.3f}); mismatches by field: {dict(wrong)}")


def main() -> None:
    from funnel_ingest.engine.keywords import default_csv_path, load_csv
    from funnel_ingest.settings import Settings
    from funnel_ingest.simulate.conversations import simulate
    from funnel_ingest.store import funnel as store

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    from _bench import fresh_database, stack_env
    url = fresh_database(stack_env(quiet=True), "funnel_quality")
    settings = Settings(database_url=url)
    classifier = Classifier(list(load_csv(default_csv_path())), "quality", settings.tz)
    sim = simulate(args.customers, seed=args.seed,
                   start=datetime(2025, 6, 1, tzinfo=timezone.utc), days=90)
    with psycopg.connect(url) as conn:
        with conn.transaction():
            store.process_messages(conn, sim.deliveries(seed=args.seed), classifier)
        quality_report(conn, sim, classifier)


if __name__ == "__main__":
    main()
