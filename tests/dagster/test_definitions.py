"""The code location loads, and its lineage reads like the data flow."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from funnel_dagster.definitions import defs
from funnel_dagster.defs.schedules import daily_report_schedule

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
