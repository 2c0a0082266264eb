"""Schedules: keyword sync every 15 minutes, the CSV report every morning, data checks, the
run-history cleanup, and the (stopped by default) hourly archive replay. They name their jobs
(jobs.py) by name, as the other definitions refer to each other."""


from datetime import datetime, timedelta

import dagster as dg

from funnel_dagster.defs.partitions import daily, partition_key
from funnel_ingest.settings import get_settings

TIMEZONE = get_settings().funnel_timezone  # every schedule's cron is read in it

keywords_schedule = dg.ScheduleDefinition(
    name="keywords_sync_every_15_minutes", job_name="keywords_sync_job", cron_schedule="*/15 * * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)

checks_schedule = dg.ScheduleDefinition(
    name="data_checks_every_10_minutes", job_name="data_checks_job", cron_schedule="*/10 * * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)


@dg.schedule(job_name="funnel_report_job", cron_schedule="0 7 * * *",
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






run_history_cleanup_schedule = dg.ScheduleDefinition(
    name="run_history_cleanup_daily", job_name="run_history_cleanup_job", cron_schedule="30 3 * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)


# Off by default: it reads every archive object of its window each hour (a safety net for
# short Redis losses when turned on; after a known loss, launch the job over the whole window).
replay_archive_schedule = dg.ScheduleDefinition(
    name="replay_archive_hourly", job_name="replay_archive_job", cron_schedule="20 * * * *",
    execution_timezone=TIMEZONE,
    run_config={"ops": {"replay_archive": {"config": {"since_hours": 3,
                                                      "until_minutes_ago": 10}}}},
    default_status=dg.DefaultScheduleStatus.STOPPED)
