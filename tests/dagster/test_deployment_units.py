"""The pieces a deployment relies on, one by one: where the partitions start, when the sensor
records the backlog, the run-worker health check, and the funnel writers' lock.
(tests/deployment runs them together on a real webserver + daemon.)"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import date, datetime, timezone

import dagster as dg
import psycopg
import pytest

from funnel_dagster.defs import partitions
from funnel_dagster.defs.jobs import drain_job
from funnel_dagster.defs.sensors import _read_cursor, _worth_recording
from funnel_dagster.launcher import HOST_TAG, PID_TAG, MonitoredRunLauncher, worker_tags
from funnel_ingest import db, s3
from funnel_ingest.simulate.conversations import simulate
from funnel_ingest.store.funnel import lock_writers
from tests.dagster.test_sensor_and_drain import evaluate, push, run_drain

SIM = simulate(6, seed=5, start=datetime(2025, 9, 1, tzinfo=timezone.utc), days=3)


# --------------------------------------------------------------------------- partition start


@pytest.fixture
def empty_store(settings):
    """Settings on a new, migrated database and a new raw bucket (dropped afterwards)."""
    name = f"funnel_test_start_{uuid.uuid4().hex[:8]}"
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    db.ensure_database(url)
    db.migrate(url)
    fresh = settings.replace(database_url=url, raw_bucket=f"start-{uuid.uuid4().hex[:10]}",
                             funnel_start_date="")
    s3.ensure_buckets(fresh)
    yield fresh
    s3.delete_bucket(s3.client(fresh), fresh.raw_bucket)
    db.drop_database(url)


def test_the_start_date_setting_wins(empty_store):
    assert partitions.partition_start(empty_store.replace(funnel_start_date="2024-03-05")) \
        == date(2024, 3, 5)


def test_a_new_install_starts_two_days_before_today(empty_store):
    today = date(2026, 12, 1)
    assert partitions.partition_start(empty_store, today=today) == date(2026, 11, 29)


def test_the_first_message_date_in_postgres_starts_the_partitions(empty_store):
    with psycopg.connect(empty_store.database_url) as conn:
        conn.execute("""INSERT INTO classified_messages (source, message_id, direction,
                        sender_type, sent_at, message_date, raw_key)
                        VALUES ('generic', 'm1', 'inbound', 'customer', now(), '2026-10-07',
                                'raw/x')""")
    assert partitions.partition_start(empty_store, today=date(2026, 12, 1)) == date(2026, 10, 7)


def test_an_archive_without_tables_starts_the_lookahead_before_its_first_date(empty_store):
    client = s3.client(empty_store)
    for key in ("raw/source=whatsapp/date=2026-11-20/hour=01/a.ndjson",
                "raw/source=qontak/date=2026-11-18/hour=23/b.ndjson",
                "raw/source=generic/date=2026-11-25/hour=00/c.ndjson"):
        client.put_object(Bucket=empty_store.raw_bucket, Key=key, Body=b"{}\n")
    assert partitions.partition_start(empty_store, today=date(2026, 12, 1)) == date(2026, 11, 16)


def test_unreachable_stores_only_make_the_start_fall_back(empty_store):
    down = empty_store.replace(database_url="postgresql://nobody@127.0.0.1:1/none",
                               s3_endpoint_url="http://127.0.0.1:1")
    t0 = time.monotonic()
    assert partitions.partition_start(down, today=date(2026, 12, 1)) == date(2026, 11, 29)
    assert time.monotonic() - t0 < 15


def test_a_bad_start_date_setting_is_refused_with_its_value(settings):
    with pytest.raises(ValueError, match="'2025-02-30' is not a date"):
        settings.replace(funnel_start_date="2025-02-30")


# --------------------------------------------------------------------------- backlog records


def test_the_backlog_is_recorded_when_it_changes_noticeably():
    now = 1_000_000.0
    assert _worth_recording(0, None, now)                       # the first tick
    last = {"backlog": 1000, "at": now}
    assert not _worth_recording(1000, last, now + 5)            # unchanged
    assert not _worth_recording(1100, last, now + 5)            # a small move, recently
    assert _worth_recording(1300, last, now + 5)                # a fifth or more
    assert _worth_recording(0, last, now + 5)                   # emptied
    assert _worth_recording(1, {"backlog": 0, "at": now}, now + 5)  # filled
    assert _worth_recording(1100, last, now + 301)              # changed, last record old


def test_cursors_written_before_the_backlog_records_still_read():
    streams, observed = _read_cursor(json.dumps({"funnel:messages": "5-0"}))
    assert streams == {"funnel:messages": "5-0"} and observed is None
    streams, observed = _read_cursor(json.dumps({"streams": {"funnel:messages": "7-1"},
                                                 "observed": {"backlog": 3, "at": 1.0}}))
    assert streams == {"funnel:messages": "7-1"} and observed["backlog"] == 3


def test_a_quiet_stream_records_its_backlog_once_not_every_tick(resources, clean, r):
    first, _ = evaluate(resources)
    assert [e.asset_key.to_user_string() for e in first.asset_events] == ["message_stream"]
    again, _ = evaluate(resources, cursor=first.cursor)
    third, _ = evaluate(resources, cursor=again.cursor)
    assert again.asset_events == third.asset_events == []
    assert "no new messages" in again.skip_reason.skip_message


def test_drain_runs_give_each_day_its_row_count_and_stage_counts(resources, clean, r, settings):
    push(r, [s.message for s in SIM.messages])
    result, _ = evaluate(resources)
    run = run_drain(resources, result.run_requests[0])
    events = [e.materialization for e in run.get_asset_materialization_events()
              if e.materialization.asset_key == dg.AssetKey("classified_messages")]
    with psycopg.connect(settings.database_url) as conn:
        counts = dict(conn.execute("SELECT message_date::text, count(*) FROM "
                                   "classified_messages GROUP BY 1").fetchall())
        booked = dict(conn.execute("SELECT message_date::text, count(*) FROM classified_messages"
                                   " WHERE 'booking' = ANY(stages) GROUP BY 1").fetchall())
    assert {e.partition for e in events} == set(counts)
    for e in events:
        assert e.metadata["dagster/row_count"].value == counts[e.partition]
        assert e.metadata["stage_booking"].value == booked.get(e.partition, 0)
    [funnel] = [e.materialization for e in run.get_asset_materialization_events()
                if e.materialization.asset_key == dg.AssetKey("funnel")]
    with psycopg.connect(settings.database_url) as conn:
        leads = conn.execute("SELECT count(*) FROM funnel").fetchone()[0]
    assert funnel.metadata["dagster/row_count"].value == leads > 0


# --------------------------------------------------------------------------- run-worker health


@pytest.fixture
def launcher() -> tuple[dg.DagsterInstance, MonitoredRunLauncher]:
    instance = dg.DagsterInstance.ephemeral()
    launcher = MonitoredRunLauncher()
    launcher.register_instance(instance)
    return instance, launcher


def _run_with(instance: dg.DagsterInstance, tags: dict[str, str]):
    return instance.create_run_for_job(
        drain_job, status=dg.DagsterRunStatus.STARTED, tags=tags,
        run_config={"ops": {"drain_stream_range": {"config": {"ranges": []}}}})


def test_a_live_worker_is_reported_running(launcher):
    instance, check = launcher
    result = check.check_run_worker_health(_run_with(instance, worker_tags()))
    assert result.status.value == "RUNNING" and "alive" in result.msg


def test_a_killed_worker_is_reported_failed(launcher):
    instance, check = launcher
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = _run_with(instance, {PID_TAG: str(child.pid), HOST_TAG: worker_tags()[HOST_TAG]})
    assert "alive" in check.check_run_worker_health(run).msg
    child.kill()
    child.wait()
    result = check.check_run_worker_health(run)
    assert result.status.value == "FAILED" and f"{child.pid} is gone" in result.msg


def test_a_pid_reused_by_a_later_process_counts_as_gone(launcher):
    instance, check = launcher
    run = _run_with(instance, {})
    time.sleep(2.5)  # the run's worker was recorded before this process started
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        instance.add_run_tags(run.run_id, {PID_TAG: str(later.pid),
                                           HOST_TAG: worker_tags()[HOST_TAG]})
        result = check.check_run_worker_health(instance.get_run_by_id(run.run_id))
        assert result.status.value == "FAILED" and "pid reused" in result.msg
    finally:
        later.kill()
        later.wait()


def test_a_worker_on_another_machine_is_never_failed_by_the_check(launcher):
    instance, check = launcher
    run = _run_with(instance, {PID_TAG: "999999", HOST_TAG: "some-other-host"})
    result = check.check_run_worker_health(run)
    assert result.status.value == "RUNNING" and "not checked" in result.msg
    no_pid = _run_with(instance, {})
    assert check.check_run_worker_health(no_pid).status.value == "RUNNING"


# --------------------------------------------------------------------------- writers' lock


def test_a_drain_chunk_waits_for_a_full_rebuild_holding_the_writers_lock(
        resources, clean, r, settings):
    push(r, [s.message for s in SIM.messages[:20]])
    result, _ = evaluate(resources)
    holder = psycopg.connect(settings.database_url)
    holder.execute("BEGIN")
    lock_writers(holder, exclusive=True)
    done = threading.Event()

    def drain() -> None:
        run_drain(resources, result.run_requests[0])
        done.set()

    worker = threading.Thread(target=drain)
    worker.start()
    try:
        assert not done.wait(3.0), "the drain chunk did not wait for the exclusive lock"
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute("SELECT count(*) FROM classified_messages").fetchone()[0] == 0
    finally:
        holder.rollback()
        holder.close()
    worker.join(60)
    assert done.is_set()
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM classified_messages").fetchone()[0] > 0
