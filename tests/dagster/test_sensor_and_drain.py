"""The stream sensor and the drain job against real Redis, Postgres and S3."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
import psycopg
import pytest

from funnel_dagster.defs.jobs import drain_job
from funnel_dagster.defs.sensors import message_stream_sensor
from funnel_ingest.settings import get_settings
from funnel_ingest.simulate.conversations import simulate
from tests.support import funnel_rows

SIM = simulate(15, seed=21, start=datetime(2025, 9, 1, tzinfo=timezone.utc), days=20)


def push(r, messages, stream="funnel:messages") -> list[str]:
    ids = []
    for m in messages:
        ids.append(r.xadd(stream, m.to_fields()).decode())
    return ids


def evaluate(resources, cursor=None, instance=None):
    ctx = dg.build_sensor_context(cursor=cursor,
                                  instance=instance or dg.DagsterInstance.ephemeral(),
                                  resources={"redis": resources["redis"]})
    return message_stream_sensor(ctx), ctx


def test_quiet_stream_skips(resources, clean, r):
    result, _ = evaluate(resources)
    assert not result.run_requests
    assert "no new messages" in str(result.skip_reason)


def test_new_entries_give_one_run_with_the_exact_range_and_the_cursor_advances(
        resources, clean, r):
    ids = push(r, [s.message for s in SIM.messages[:30]])
    result, _ = evaluate(resources)
    [request] = result.run_requests
    [rng] = request.run_config["ops"]["drain_stream_range"]["config"]["ranges"]
    assert rng == {"stream": "funnel:messages", "kind": "messages", "after_id": "0-0",
                   "until_id": ids[-1]}
    assert request.run_key == f"funnel:messages:0-0:{ids[-1]}"
    assert request.tags["funnel/shard"] == "funnel:messages"
    assert json.loads(result.cursor)["streams"]["funnel:messages"] == ids[-1]
    assert run_drain(resources, request).success
    # next tick: nothing new
    again, _ = evaluate(resources, cursor=result.cursor)
    assert not again.run_requests
    # more entries: the next range starts where the last ended
    more = push(r, [s.message for s in SIM.messages[30:40]])
    third, _ = evaluate(resources, cursor=result.cursor)
    [rng3] = third.run_requests[0].run_config["ops"]["drain_stream_range"]["config"]["ranges"]
    assert (rng3["after_id"], rng3["until_id"]) == (ids[-1], more[-1])


def test_sensor_reports_the_backlog_as_an_observation(resources, clean, r):
    push(r, [s.message for s in SIM.messages[:5]])
    result, _ = evaluate(resources)
    events = {e.asset_key.to_user_string(): e for e in result.asset_events}
    assert events["message_stream"].metadata["backlog"].value == 5
    assert events["raw_archive"].metadata["latest_objects"].value == "sim"


def run_drain(resources, request):
    return drain_job.execute_in_process(run_config=request.run_config, resources=resources,
                                        tags=request.tags)


def test_a_run_over_a_range_builds_the_funnel_and_is_idempotent(resources, clean, r, settings):
    from funnel_ingest.store import funnel as store
    from funnel_ingest.store.keywords import current_classifier
    deliveries = SIM.deliveries(seed=2)
    push(r, deliveries)
    result, _ = evaluate(resources)
    [request] = result.run_requests
    run = run_drain(resources, request)
    assert run.success
    with psycopg.connect(settings.database_url) as conn:
        drained = funnel_rows(conn)
        assert len(drained) == len(SIM.leads)
        assert r.xlen("funnel:messages") == 0  # trimmed after commit
        events = run.get_asset_materialization_events()
        assert {e.asset_key.to_user_string() for e in events} == {"classified_messages",
                                                                  "funnel"}
        # re-executing the same range changes nothing
        assert run_drain(resources, request).success
        assert funnel_rows(conn) == drained
        # and equals the engine run directly on the same messages
        conn.execute("TRUNCATE funnel, transactions, classified_messages, rooms CASCADE")
        with conn.transaction():
            store.process_messages(conn, deliveries, current_classifier(conn, r, settings))
        assert funnel_rows(conn) == drained


def test_a_failed_range_is_covered_by_the_next_run(resources, clean, r, settings):
    first = push(r, [s.message for s in SIM.messages[:20]])
    r1, _ = evaluate(resources)
    # the first run never happens (e.g. its process died); a later range arrives
    second = push(r, [s.message for s in SIM.messages[20:40]])
    r2, _ = evaluate(resources, cursor=r1.cursor)
    assert run_drain(resources, r2.run_requests[0]).success
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM classified_messages").fetchone()[0]
    assert stored == len({(m.message.source, m.message.message_id, m.message.room_key)
                          for m in SIM.messages[:40]})
    assert first and second and r.xlen("funnel:messages") == 0


def test_entries_left_by_a_failed_run_are_handed_out_again(resources, clean, r):
    push(r, [s.message for s in SIM.messages[:10]])
    r1, _ = evaluate(resources)  # handed out, never processed
    retry, _ = evaluate(resources, cursor=r1.cursor)
    [request] = retry.run_requests
    assert "retry@" in request.run_key


@pytest.fixture
def four_shards(monkeypatch):
    monkeypatch.setenv("STREAM_SHARDS", "4")
    get_settings.cache_clear()
    yield
    monkeypatch.setenv("STREAM_SHARDS", "1")
    get_settings.cache_clear()


def test_four_shards_get_one_cursor_and_one_serialized_run_each(resources, clean, r, settings,
                                                                four_shards):
    from funnel_ingest.messages import shard_for
    for s in SIM.messages:
        m = s.message
        if m.customer_key:
            r.xadd(f"funnel:messages:{shard_for(m.customer_key, 4)}", m.to_fields())
    result, _ = evaluate(resources)
    shards = {req.tags["funnel/shard"] for req in result.run_requests}
    assert shards == {f"funnel:messages:{n}" for n in range(4)}
    assert set(json.loads(result.cursor)["streams"]) >= shards
    instance = dg.DagsterInstance.ephemeral()
    for req in result.run_requests:
        assert drain_job.execute_in_process(run_config=req.run_config, resources=resources,
                                            tags=req.tags, instance=instance).success
    with psycopg.connect(settings.database_url) as conn:
        keys = {k for (k,) in conn.execute("SELECT DISTINCT customer_key FROM funnel")}
    assert keys == {ld.customer_key for ld in SIM.leads}


def test_a_shard_with_a_run_waiting_to_start_gets_no_new_run(resources, clean, r):
    push(r, [s.message for s in SIM.messages[:5]])
    instance = dg.DagsterInstance.ephemeral()
    r1, _ = evaluate(resources, instance=instance)
    req = r1.run_requests[0]
    instance.create_run_for_job(drain_job, run_config=req.run_config, tags=req.tags,
                                status=dg.DagsterRunStatus.NOT_STARTED)
    push(r, [s.message for s in SIM.messages[5:10]])
    r2, _ = evaluate(resources, cursor=r1.cursor, instance=instance)
    assert not r2.run_requests
    assert "waiting for the queued drain run" in str(r2.skip_reason)


def test_a_shard_whose_run_is_executing_gets_the_next_range_queued_behind_it(resources, clean, r):
    push(r, [s.message for s in SIM.messages[:5]])
    instance = dg.DagsterInstance.ephemeral()
    r1, _ = evaluate(resources, instance=instance)
    req = r1.run_requests[0]
    instance.create_run_for_job(drain_job, run_config=req.run_config, tags=req.tags,
                                status=dg.DagsterRunStatus.STARTED)
    more = push(r, [s.message for s in SIM.messages[5:10]])
    r2, _ = evaluate(resources, cursor=r1.cursor, instance=instance)
    [next_req] = r2.run_requests
    assert next_req.tags == req.tags
    [rng] = next_req.run_config["ops"]["drain_stream_range"]["config"]["ranges"]
    assert rng["until_id"] == more[-1]
