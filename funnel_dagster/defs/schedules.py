"""Schedules: keyword sync every 15 minutes, the CSV report every morning, data checks."""


from datetime import datetime, timedelta

import dagster as dg

from funnel_ingest.settings import get_settings

from .checks import ALL_CHECKS

keywords_job = dg.define_asset_job(
    "keywords_sync_job", selection=dg.AssetSelection.assets("keywords"),
    description="Pull the keywords from the sheet (or CSV) and publish a new version if changed.")
report_job = dg.define_asset_job(
    "funnel_report_job", selection=dg.AssetSelection.assets("funnel_report_csv"),
    description="Write one day's funnel CSV to the reports bucket.")
checks_job = dg.define_asset_job(
    "data_checks_job", selection=dg.AssetSelection.checks(*ALL_CHECKS),
    description="Run the data checks (duplicates, stage order, values, stream backlog).")

keywords_schedule = dg.ScheduleDefinition(
    name="keywords_sync_every_15_minutes", job=keywords_job, cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)

checks_schedule = dg.ScheduleDefinition(
    name="data_checks_every_10_minutes", job=checks_job, cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)


@dg.schedule(job=report_job, cron_schedule="0 7 * * *",
             execution_timezone=get_settings().funnel_timezone,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="At 07:00 in FUNNEL_TIMEZONE, the CSV report of the previous day.")
def daily_report_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tz = get_settings().tz
    now = context.scheduled_execution_time or datetime.now(tz)
    day = (now.astimezone(tz) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"report-{day}", partition_key=day)
