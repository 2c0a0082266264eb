"""`replay_archive_job`: `funnel replay` from the Dagster UI (and an optional hourly schedule).

Re-enqueues archived items that are neither waiting on a stream nor stored in Postgres (after
Redis lost data); the sensor then drains them like any other traffic. See
`funnel_ingest.store.reconcile`.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from funnel_dagster.defs.resources import (
    PostgresResource,
    RedisResource,
    S3Resource,
    funnel_settings,
)
from funnel_ingest.settings import get_settings
from funnel_ingest.store.reconcile import reconcile


class ReplayConfig(dg.Config):
    since_hours: float = 72.0        # archive objects received from now - since_hours …
    until_minutes_ago: float = 0.0   # … up to now - until_minutes_ago
    dry_run: bool = False            # only count what is missing


@dg.op(description="Re-enqueue archived messages found neither on a stream nor in Postgres.",
       out=dg.Out(dg.Nothing))
def replay_archive(context: dg.OpExecutionContext, config: ReplayConfig,
                   postgres: PostgresResource, redis: RedisResource, s3: S3Resource
                   ) -> dg.Output:
    if config.since_hours <= 0 or config.until_minutes_ago < 0 \
            or config.until_minutes_ago >= config.since_hours * 60:
        raise dg.Failure(f"empty or negative window: since_hours={config.since_hours}, "
                         f"until_minutes_ago={config.until_minutes_ago}")
    settings = funnel_settings(postgres, redis, s3)
    now = datetime.now(timezone.utc)
    since = now - timedelta(hours=config.since_hours)
    until = now - timedelta(minutes=config.until_minutes_ago)
    with postgres.connect() as conn:
        report = reconcile(conn, redis.client(), s3.client(), settings, since=since,
                           until=until, dry_run=config.dry_run)
    context.log.info(f"{report.objects} archive objects from {since:%Y-%m-%d %H:%M} to "
                     f"{until:%Y-%m-%d %H:%M} UTC; missing: {report.missing}"
                     + (" (dry run)" if config.dry_run else "; re-enqueued"))
    summary = {"objects": report.objects, "archived": report.archived,
               "on_stream": report.on_stream, "stored": report.stored,
               "missing": report.missing, "rooms_restored": report.rooms_restored,
               "dry_run": config.dry_run}
    # the result is on the streams (and in the metadata), not a value for another step
    return dg.Output(None, metadata={"summary": dg.MetadataValue.json(summary),
                                     "missing": dg.MetadataValue.json(report.missing),
                                     "archive_objects": report.objects,
                                     "dry_run": config.dry_run})


@dg.job(description="Recovery after Redis lost data: re-enqueue archived messages missing from "
                    "Postgres and from the streams (same as `funnel replay`). Idempotent.")
def replay_archive_job():
    replay_archive()


# Off by default: it reads every archive object of its window each hour (a safety net for
# short Redis losses when turned on; after a known loss, launch the job over the whole window).
replay_archive_schedule = dg.ScheduleDefinition(
    name="replay_archive_hourly", job=replay_archive_job, cron_schedule="20 * * * *",
    execution_timezone=get_settings().funnel_timezone,
    run_config={"ops": {"replay_archive": {"config": {"since_hours": 3,
                                                      "until_minutes_ago": 10}}}},
    default_status=dg.DefaultScheduleStatus.STOPPED)
