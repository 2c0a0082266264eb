"""The code location loads, and its lineage reads like the data flow."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from funnel_dagster.definitions import defs
from funnel_dagster.defs.schedules import daily_report_schedule
from funnel_ingest.settings import get_settings


def test_definitions_are_loadable(stack_env):
    dg.Definitions.validate_loadable(defs())


def test_lineage_follows_the_data_flow(stack_env):
    graph = defs().resolve_asset_graph()
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
                                    repository_def=defs().get_repository_def())
    request = daily_report_schedule.evaluate_tick(ctx).run_requests[0]
    assert request.partition_key == "2025-10-01"


def test_old_drain_runs_are_deleted_and_recent_ones_kept(stack_env, monkeypatch):
    from funnel_dagster.defs import jobs

    instance = dg.DagsterInstance.ephemeral()
    kept = instance.create_run_for_job(
        jobs.drain_job, status=dg.DagsterRunStatus.SUCCESS,
        run_config={"ops": {"drain_stream_range": {"config": {"ranges": []}}}})
    monkeypatch.setenv("FUNNEL_RUN_RETENTION_DAYS", "0")  # everything finished before now is old
    get_settings.cache_clear()
    try:
        result = jobs.run_history_cleanup_job.execute_in_process(instance=instance)
    finally:
        monkeypatch.delenv("FUNNEL_RUN_RETENTION_DAYS")
        get_settings.cache_clear()
    assert result.success
    assert instance.get_run_by_id(kept.run_id) is None
    assert instance.get_run_by_id(result.run_id) is not None  # other jobs untouched


def test_every_definition_in_defs_is_loaded_without_a_list(stack_env):
    """What a defs/ module defines at its top level is in the code location: nothing to
    register by hand (and nothing registered twice)."""
    import importlib
    import pkgutil

    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

    import funnel_dagster.defs as package

    loaded = defs()
    jobs = {j.name for j in loaded.resolve_all_job_defs()}
    schedules = {s.name for s in loaded.schedules}
    sensors = {s.name for s in loaded.sensors}
    assets = {k.to_user_string() for k in loaded.resolve_all_asset_keys()}
    found = 0
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, (dg.JobDefinition, UnresolvedAssetJobDefinition)):
                assert value.name in jobs
            elif isinstance(value, dg.ScheduleDefinition):
                assert value.name in schedules
            elif isinstance(value, dg.SensorDefinition):
                assert value.name in sensors
            elif isinstance(value, dg.AssetsDefinition):
                assert {k.to_user_string() for k in value.keys} <= assets
            elif isinstance(value, dg.AssetSpec):
                assert value.key.to_user_string() in assets
            else:
                continue
            found += 1
    assert found >= 6 + 5 + 1 + 6


def test_importing_the_code_location_runs_no_migration(tmp_path):
    """Migrations run when the definitions are loaded, not when the module is imported (a
    test, the CLI or a tool importing it must not touch the database)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    out = subprocess.run([sys.executable, "-c", "import funnel_dagster.definitions"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "migrations not applied" not in out.stderr
