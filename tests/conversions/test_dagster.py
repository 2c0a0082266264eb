"""The Conversions API in Dagster: the sensor launches a delivery pass when events are due, the
pass runs as a materialization of `meta_conversions` whose metadata counts the outbox, and
nothing is launched or sent while the feature is off (Dagster's test APIs, real services)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from funnel_dagster.definitions import defs
from funnel_dagster.defs.conversions import JOB, meta_conversions, meta_conversions_sensor
from funnel_ingest.settings import get_settings
from tests.conversions.conftest import ACCESS_TOKEN, ctwa, outbox_rows, recent
from tests.support import dagster_resources


def tick(settings, instance):
    ctx = dg.build_sensor_context(instance=instance, resources=dagster_resources(settings))
    return meta_conversions_sensor(ctx)


def materialization(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.asset_materializations_for_node("meta_conversions")
    return {k: v.value for k, v in event.metadata.items()}


def test_the_sensor_launches_a_pass_that_delivers_the_due_events(conv_db, ingest, meta,
                                                                 settings, capi_env):
    instance = dg.DagsterInstance.ephemeral()
    assert tick(settings, instance).skip_message == "no event due (0 pending)"
    c = ctwa(recent(), book=timedelta(minutes=5), pay=timedelta(minutes=30))
    ingest(*c.bodies)

    request = tick(settings, instance)
    assert isinstance(request, dg.RunRequest) and request.tags["funnel/due_events"] == "3"
    job = defs().resolve_job_def(JOB)
    result = job.execute_in_process(instance=instance, tags=request.tags)
    assert result.success
    meta_data = materialization(result)
    assert {k: meta_data[k] for k in ("sent", "pending", "failed", "due", "pass_sent",
                                      "pass_requests", "dagster/row_count")} == {
        "sent": 3, "pending": 0, "failed": 0, "due": 0, "pass_sent": 3, "pass_requests": 1,
        "dagster/row_count": 3}
    assert "| LeadSubmitted | 0 | 1 |" in meta_data["by_event"]
    assert sorted(meta.accepted_ids()) == sorted(row[2] for row in outbox_rows(conv_db))
    assert meta.violations == []
    # the token is in no log line of the run
    assert not [e for e in instance.all_logs(result.run_id)
                if ACCESS_TOKEN in (e.user_message or "")]
    assert tick(settings, instance).skip_message == "no event due (0 pending)"


def test_no_second_pass_while_one_is_in_progress(conv_db, ingest, meta, settings, capi_env):
    instance = dg.DagsterInstance.ephemeral()
    ingest(*ctwa(recent()).bodies)
    instance.create_run_for_job(defs().resolve_job_def(JOB), status=dg.DagsterRunStatus.STARTED)
    assert tick(settings, instance).skip_message == "a delivery pass is in progress"


def test_a_refused_event_shows_in_the_materialization(conv_db, ingest, meta, settings,
                                                      capi_env):
    c = ctwa(recent())
    ingest(*c.bodies)
    [(_, _, event_id, *_)] = outbox_rows(conv_db)
    meta.refused_ids.add(event_id)
    result = dg.materialize([meta_conversions], resources=dagster_resources(settings),
                            instance=dg.DagsterInstance.ephemeral())
    meta_data = materialization(result)
    assert (meta_data["pending"], meta_data["pass_retried"], meta_data["sent"]) == (1, 1, 0)
    assert f"| {event_id} | pending | 1 | HTTP 400: Invalid parameter" in meta_data["last_errors"]


def test_switched_off_the_sensor_launches_nothing_and_a_pass_sends_nothing(
        conv_db, ingest, meta, settings, capi_env):
    ingest(*ctwa(recent(), book=timedelta(minutes=5)).bodies)
    capi_env.delenv("META_CAPI_ACCESS_TOKEN")
    get_settings.cache_clear()
    instance = dg.DagsterInstance.ephemeral()
    assert tick(settings, instance).skip_message == (
        "the Conversions API is off: set META_CAPI_ACCESS_TOKEN")
    result = dg.materialize([meta_conversions], resources=dagster_resources(settings),
                            instance=instance)
    assert result.success
    meta_data = materialization(result)
    assert (meta_data["pending"], meta_data["sent"]) == (2, 0)
    assert meta_data["pass"] == "not run: the Conversions API is off"
    assert meta.requests == []


def test_the_asset_follows_the_funnel_in_the_lineage(stack_env):
    graph = defs().resolve_asset_graph()
    node = graph.get(dg.AssetKey("meta_conversions"))
    assert {p.to_user_string() for p in node.parent_keys} == {"funnel"}
    assert node.description and node.owners and node.kinds == {"postgres", "meta"}
    loaded = defs()
    assert JOB in {j.name for j in loaded.resolve_all_job_defs()}
    assert "meta_conversions_sensor" in {s.name for s in loaded.sensors}
