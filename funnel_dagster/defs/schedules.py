"""Schedules: keyword sync every 15 minutes, the CSV report every morning, data checks."""


from datetime import datetime, timedelta, timezone

import dagster as dg

from funnel_dagster.defs.checks import ALL_CHECKS
from funnel_dagster.defs.partitions import daily, partition_key
from funnel_ingest.settings import get_settings

keywords_job = dg.define_asset_job(
    "keywords_sync_job", selection=dg.AssetSelection.assets("keywords"),
    description="Pull the keywords from the sheet (or CSV) and publish a new version if changed.")
report_job = dg.define_asset_job(
    "funnel_report_job", selection=dg.AssetSelection.assets("funnel_report_csv"),
    description="Write one day's funnel CSV to the reports bucket.")
checks_job = dg.define_asset_job(
    "data_checks_job", selection=dg.AssetSelection.checks(*ALL_CHECKS),
    description="Run the data checks (duplicates, stage order, values, stream backlog).")

TIMEZONE = get_settings().funnel_timezone  # every schedule's cron is read in it

keywords_schedule = dg.ScheduleDefinition(
    name="keywords_sync_every_15_minutes", job=keywords_job, cron_schedule="*/15 * * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)

checks_schedule = dg.ScheduleDefinition(
    name="data_checks_every_10_minutes", job=checks_job, cron_schedule="*/10 * * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)


@dg.schedule(job=report_job, cron_schedule="0 7 * * *",
             execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
             description="At 07:00 in FUNNEL_TIMEZONE, the CSV report of the previous day.")
def daily_report_schedule(context: dg.ScheduleEvaluationContext
                          ) -> dg.RunRequest | dg.SkipReason:
    tz = get_settings().tz
    now = context.scheduled_execution_time or datetime.now(tz)
    day = (now.astimezone(tz) - timedelta(days=1)).date()
    key = partition_key(day)
    if key is None:
        return dg.SkipReason(f"{day} is before the first partition ({daily.start.date()})")
    return dg.RunRequest(run_key=f"report-{key}", partition_key=key)


@dg.op(description="Delete finished drain runs (and their event logs) older than the retention.",
       out=dg.Out(dg.Nothing))
def delete_old_drain_runs(context: dg.OpExecutionContext) -> None:
    days = get_settings().funnel_run_retention_days
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    deleted = 0
    while True:
        old = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name="drain_job", created_before=cutoff,
                                  statuses=[dg.DagsterRunStatus.SUCCESS,
                                            dg.DagsterRunStatus.FAILURE,
                                            dg.DagsterRunStatus.CANCELED]), limit=500)
        if not old:
            break
        for record in old:
            context.instance.delete_run(record.dagster_run.run_id)
        deleted += len(old)
    context.log.info(f"deleted {deleted} drain runs older than {days} days")


@dg.job(description="Keep the run history bounded: a year of micro-batches must not grow the "
                    "event log without limit (sensor/schedule ticks are purged by dagster.yaml).")
def run_history_cleanup_job():
    delete_old_drain_runs()


run_history_cleanup_schedule = dg.ScheduleDefinition(
    name="run_history_cleanup_daily", job=run_history_cleanup_job, cron_schedule="30 3 * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)
