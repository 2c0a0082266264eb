"""`funnel drain` runs the Dagster drain job in-process until the streams are empty."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from funnel_ingest.simulate.conversations import simulate
from tests.support import empty_engine_tables

ROOT = Path(__file__).resolve().parents[2]


def test_funnel_drain_empties_the_streams_into_the_funnel(settings, r):
    with psycopg.connect(settings.database_url) as conn:
        empty_engine_tables(conn)
        conn.commit()
    sim = simulate(10, seed=4, start=datetime(2025, 9, 1, tzinfo=timezone.utc), days=5)
    for m in sim.deliveries(seed=4):
        r.xadd("funnel:messages", m.to_fields())
    r.xadd("funnel:statuses", {"source": "whatsapp", "message_id": "wamid.s1", "status": "read",
                               "status_at": "2025-09-02T01:00:00+00:00", "raw_key": "k"})
    env = {**os.environ, "DAGSTER_HOME": ""}
    env.pop("DAGSTER_HOME")
    out = subprocess.run([sys.executable, "-m", "funnel_ingest.cli", "drain", "--batch-size",
                          "25"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "funnel:messages:" in out.stdout
    assert r.xlen("funnel:messages") == 0 and r.xlen("funnel:statuses") == 0
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM funnel").fetchone()[0] == len(sim.leads)
        assert conn.execute("SELECT count(*) FROM message_statuses").fetchone()[0] == 1
    again = subprocess.run([sys.executable, "-m", "funnel_ingest.cli", "drain"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert "nothing to drain" in again.stdout


def test_funnel_backfill_reports_each_day_and_refuses_a_reversed_range(settings, r):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    bad = subprocess.run([sys.executable, "-m", "funnel_ingest.cli", "backfill", "--from",
                          "2025-09-03", "--to", "2025-09-01"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "before" in bad.stderr
    out = subprocess.run([sys.executable, "-m", "funnel_ingest.cli", "backfill", "--from",
                          "2025-09-01", "--to", "2025-09-02"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("2025-09-0")]
    assert [ln[:10] for ln in lines] == ["2025-09-01", "2025-09-02"]
    day_line = re.compile(r"2025-09-0\d: \d+ messages; \d+ restored from the archive, \d+ "
                          r"re-classified \(\d+ changed, \d+ customers updated\)")
    assert all(day_line.fullmatch(ln) for ln in lines), lines
