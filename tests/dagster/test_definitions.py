"""The code location loads, and its lineage reads like the data flow."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from funnel_dagster.definitions import defs
from funnel_dagster.defs.schedules import daily_report_schedule
from funnel_ingest.settings import get_settings


def test_definitions_are_loadable(stack_env):
    dg.Definitions.validate_loadable(defs)


def test_lineage_follows_the_data_flow(stack_env):
    graph = defs.resolve_asset_graph()
    deps = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
            for k in graph.get_all_asset_keys()}
    assert deps["classified_messages"] == {"raw_archive", "message_stream", "keywords"}
    assert deps["funnel"] == {"classified_messages"}
    assert deps["funnel_report_csv"] == {"funnel"}
    for key in ("keywords", "classified_messages", "funnel", "funnel_report_csv"):
        node = graph.get(dg.AssetKey(key))
        assert node.description and node.owners and node.kinds
    assert graph.get(dg.AssetKey("classified_messages")).partitions_def is not None


def test_daily_report_schedule_asks_for_yesterday_in_the_funnel_timezone(stack_env):
    at = datetime(2025, 10, 2, 7, 0, tzinfo=ZoneInfo("Asia/Jakarta"))
    ctx = dg.build_schedule_context(scheduled_execution_time=at,
                                    repository_def=defs.get_repository_def())
    request = daily_report_schedule.evaluate_tick(ctx).run_requests[0]
    assert request.partition_key == "2025-10-01"


def test_old_drain_runs_are_deleted_and_recent_ones_kept(stack_env, monkeypatch):
    from datetime import timedelta

    from funnel_dagster.defs import schedules
    from funnel_dagster.defs.drain import drain_job
    instance = dg.DagsterInstance.ephemeral()
    kept = instance.create_run_for_job(
        drain_job, status=dg.DagsterRunStatus.SUCCESS,
        run_config={"ops": {"drain_stream_range": {"config": {"ranges": []}}}})
    monkeypatch.setenv("FUNNEL_RUN_RETENTION_DAYS", "0")  # everything finished before now is old
    get_settings.cache_clear()
    try:
        result = schedules.run_history_cleanup_job.execute_in_process(instance=instance)
    finally:
        monkeypatch.delenv("FUNNEL_RUN_RETENTION_DAYS")
        get_settings.cache_clear()
    assert result.success
    assert instance.get_run_by_id(kept.run_id) is None
    assert instance.get_run_by_id(result.run_id) is not None  # other jobs untouched
    del timedelta
