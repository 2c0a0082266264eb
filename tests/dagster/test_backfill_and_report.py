"""Backfills from the raw archive, the CSV report and the data checks."""

from __future__ import annotations

import csv
import io
from datetime import datetime, time, timedelta, timezone

import dagster as dg
import psycopg

from funnel_dagster.defs import assets, checks
from funnel_dagster.defs.jobs import drain_job
from funnel_dagster.defs.sensors import message_stream_sensor
from funnel_ingest.report.query import REPORT_COLUMNS
from funnel_ingest.simulate.conversations import simulate
from funnel_ingest.simulate.webhooks import to_webhooks
from tests.support import ApiServer, empty_engine_tables, funnel_rows, post_samples


def _yesterday(settings):
    return (datetime.now(settings.tz) - timedelta(days=1)).date()


def _ingest_and_drain(settings, resources, day):
    start = datetime.combine(day, time(0, 30), settings.tz).astimezone(timezone.utc)
    sim = simulate(40, seed=8, start=start, days=1)
    deliveries = sim.deliveries(seed=8)
    with ApiServer(settings) as api:
        post_samples(api, settings, to_webhooks(deliveries))
    ctx = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(),
                                  resources={"redis": resources["redis"]})
    for request in message_stream_sensor(ctx).run_requests:
        assert drain_job.execute_in_process(run_config=request.run_config, resources=resources,
                                            tags=request.tags).success
    return sim


def _own_archive(settings, resources):
    """Settings and resources on a new raw bucket (other tests' objects are not in it)."""
    import uuid

    from funnel_ingest import s3
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    settings = settings.replace(raw_bucket=bucket)
    s3.ensure_buckets(settings)
    old = resources["s3"]
    return settings, {**resources, "s3": type(old)(
        endpoint_url=old.endpoint_url, access_key_id=old.access_key_id,
        secret_access_key=old.secret_access_key, region=old.region, raw_bucket=bucket,
        reports_bucket=old.reports_bucket)}


def test_backfilling_a_day_from_the_raw_archive_restores_the_funnel_after_a_redis_loss(
        settings, resources, clean, r):
    # an archive of its own: the backfill reads every object of the day
    settings, resources = _own_archive(settings, resources)
    day = _yesterday(settings)
    sim = _ingest_and_drain(settings, resources, day)
    with psycopg.connect(settings.database_url) as conn:
        before = funnel_rows(conn)
        assert len(before) == len(sim.leads)
        # Redis is lost and the tables are emptied: only the archive remains
        r.flushdb()
        empty_engine_tables(conn, keep=("stream_offsets",))
        conn.commit()
        restored = 0
        for d in (day, day + timedelta(days=1)):  # the simulated day ends just after midnight
            result = dg.materialize([assets.classified_messages], partition_key=d.isoformat(),
                                    resources=resources)
            assert result.success
            [meta] = [e.materialization.metadata for e in result.get_asset_materialization_events()
                      if e.materialization.asset_key == dg.AssetKey("classified_messages")]
            restored += meta["restored_from_archive"].value
        assert restored > 0
        assert funnel_rows(conn) == before


def test_a_range_backfill_is_one_run_reading_each_archive_object_once(
        settings, resources, clean, r):
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from funnel_ingest.ingest.archive import range_keys

    settings, resources = _own_archive(settings, resources)
    day = _yesterday(settings)
    _ingest_and_drain(settings, resources, day)
    first, last = day - timedelta(days=2), day + timedelta(days=1)
    with psycopg.connect(settings.database_url) as conn:
        before = funnel_rows(conn)
        stored = dict(conn.execute("SELECT message_date, count(*) FROM classified_messages "
                                   "GROUP BY 1").fetchall())
        empty_engine_tables(conn, keep=("stream_offsets",))  # only the archive remains
        conn.commit()
    result = dg.materialize(
        [assets.classified_messages], resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
              ASSET_PARTITION_RANGE_END_TAG: last.isoformat()})
    assert result.success
    events = [e.materialization for e in result.get_asset_materialization_events()
              if e.materialization.asset_key == dg.AssetKey("classified_messages")]
    assert [e.partition for e in events] == [
        (first + timedelta(days=n)).isoformat() for n in range(4)]
    keys = list(range_keys(resources["s3"].client(), settings.raw_bucket, first, last,
                           settings.tz))
    assert len(keys) == len(set(keys)) > 0
    assert {e.metadata["archive_objects_read"].value for e in events} == {len(keys)}
    for e in events:  # each day its own counts
        n = stored.get(datetime.fromisoformat(e.partition).date(), 0)
        assert e.metadata["dagster/row_count"].value == n
        assert e.metadata["restored_from_archive"].value == n
    with psycopg.connect(settings.database_url) as conn:
        assert funnel_rows(conn) == before


def test_backfill_reclassifies_the_day_with_the_current_keywords(settings, resources, clean, r):
    from funnel_ingest.engine.keywords import KeywordSet, default_csv_path, load_csv
    from funnel_ingest.store import keywords as keyword_store
    day = _yesterday(settings)
    _ingest_and_drain(settings, resources, day)
    with psycopg.connect(settings.database_url) as conn:
        booked = conn.execute("SELECT count(*) FROM funnel WHERE booking_at IS NOT NULL"
                              ).fetchone()[0]
        assert booked > 0
        # the team drops every booking keyword; a backfill applies it to history
        kept = [k for k in load_csv(default_csv_path()) if k.stage != "booking"]
        keyword_store.save_version(conn, KeywordSet.build(kept, "test"), force=True)
        conn.commit()
        assert dg.materialize([assets.classified_messages], partition_key=day.isoformat(),
                              resources=resources).success
        rebooked = conn.execute(
            "SELECT count(*) FROM funnel WHERE booking_at IS NOT NULL AND transaction_at IS NULL"
        ).fetchone()[0]
        assert rebooked == 0  # only purchases still imply a booking
        version = conn.execute("SELECT DISTINCT keyword_version FROM classified_messages "
                               "WHERE message_date = %s", (day,)).fetchall()
        assert len(version) == 1


def test_daily_csv_report_holds_the_days_leads_in_the_agreed_column_order(
        settings, resources, clean, r, s3_client):
    day = _yesterday(settings)
    _ingest_and_drain(settings, resources, day)
    result = dg.materialize([assets.funnel_report_csv], partition_key=day.isoformat(),
                            resources=resources)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    key = f"reports/funnel/date={day}/funnel_{day}.csv"
    body = s3_client.get_object(Bucket=settings.reports_bucket, Key=key)["Body"].read().decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert tuple(rows[0]) == REPORT_COLUMNS
    assert rows[0][:6] == ["leads_date", "channel", "phone", "booking_date", "transaction_date",
                           "transaction_value"]
    with psycopg.connect(settings.database_url) as conn:
        n = conn.execute("SELECT count(*) FROM funnel WHERE leads_date = %s", (day,)).fetchone()[0]
    assert len(rows) - 1 == n > 0
    assert all(r_[0] == day.isoformat() for r_ in rows[1:])
    values = [r_[5] for r_ in rows[1:] if r_[5]]
    assert values and all(v.isdigit() for v in values)  # integers, no decimals


def test_data_checks_pass_on_a_drained_funnel(settings, resources, clean, r):
    _ingest_and_drain(settings, resources, _yesterday(settings))
    for check in (checks.no_duplicate_messages, checks.stage_dates_in_order,
                  checks.non_negative_values):
        ctx = dg.build_asset_check_context()
        assert check(ctx, resources["postgres"]).passed if _takes_context(check) else \
            check(resources["postgres"]).passed
    assert checks.stream_backlog(resources["redis"]).passed


def _takes_context(check) -> bool:
    import inspect
    return "context" in inspect.signature(check.node_def.compute_fn.decorated_fn).parameters


def test_out_of_order_stage_dates_cannot_even_be_stored(settings, resources, clean, r):
    """The stage-order check guards the data; the table's constraints already refuse it."""
    import pytest
    _ingest_and_drain(settings, resources, _yesterday(settings))
    with psycopg.connect(settings.database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE funnel SET booking_at = lead_at - interval '1 day' "
                         "WHERE lead_id = (SELECT lead_id FROM funnel LIMIT 1)")


def test_replay_job_re_enqueues_what_a_redis_loss_took_and_nothing_else(
        settings, resources, clean, r):
    from funnel_dagster.defs.jobs import replay_archive_job

    settings, resources = _own_archive(settings, resources)  # the replay reads all of it
    day = _yesterday(settings)
    sim = _ingest_and_drain(settings, resources, day)
    with psycopg.connect(settings.database_url) as conn:
        before = funnel_rows(conn)
        assert len(before) == len(sim.leads)
        # a third of the customers' messages were still waiting when Redis lost everything
        lost = conn.execute(
            "DELETE FROM classified_messages WHERE customer_key IN (SELECT DISTINCT "
            "customer_key FROM classified_messages ORDER BY customer_key LIMIT 13) "
            "RETURNING id").fetchall()
        conn.commit()
    r.flushdb()

    def run(**config):
        result = replay_archive_job.execute_in_process(
            run_config={"ops": {"replay_archive": {"config": config}}}, resources=resources)
        assert result.success
        [output] = [e for e in result.all_events if e.is_successful_output]
        return output.step_output_data.metadata["summary"].value

    dry = run(since_hours=6, dry_run=True)
    assert dry["missing"]["message"] == len(lost)
    assert r.xlen(settings.stream_keys()[0]) == 0            # a dry run appends nothing
    out = run(since_hours=6)
    assert out["missing"]["message"] == len(lost)
    assert out["rooms_restored"] > 0                         # the room map is back in Redis
    assert r.xlen(settings.stream_keys()[0]) == len(lost)
    assert run(since_hours=6)["missing"]["message"] == 0     # found on the stream now
    with psycopg.connect(settings.database_url) as conn:
        ctx = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(),
                                      resources={"redis": resources["redis"]})
        for request in message_stream_sensor(ctx).run_requests:
            assert drain_job.execute_in_process(run_config=request.run_config,
                                                resources=resources, tags=request.tags).success
        assert funnel_rows(conn) == before
    assert run(since_hours=6)["missing"] == {"message": 0, "status": 0, "deadletter": 0}


def test_replay_job_refuses_an_empty_window(resources, clean):
    from funnel_dagster.defs.jobs import replay_archive_job

    result = replay_archive_job.execute_in_process(
        run_config={"ops": {"replay_archive": {"config": {"since_hours": 1,
                                                          "until_minutes_ago": 90}}}},
        resources=resources, raise_on_error=False)
    assert not result.success
