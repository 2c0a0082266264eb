"""The jobs: the drain of exact stream ranges (the sensor's micro-batches), the replay of the
archive after a Redis loss, the asset jobs the schedules launch, and the run-history cleanup.
Every job runs its steps in the run worker's own process (see `definitions.py`)."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from funnel_dagster.defs.partitions import partition_key
from funnel_dagster.defs.resources import (
    PostgresResource,
    RedisResource,
    S3Resource,
    funnel_settings,
)
from funnel_dagster.metadata import day_metadata, funnel_metadata
from funnel_ingest.settings import get_settings
from funnel_ingest.store import keywords as keyword_store
from funnel_ingest.store.drain import DrainReport, drain_range
from funnel_ingest.store.funnel import day_counts
from funnel_ingest.store.reconcile import reconcile

CHUNK = 50_000


class StreamRange(dg.Config):
    stream: str
    kind: str = "messages"  # messages | statuses | deadletters
    after_id: str = "0-0"
    until_id: str = "+"


class DrainConfig(dg.Config):
    ranges: list[StreamRange]
    chunk_size: int = CHUNK


@dg.op(out=dg.Out(dg.Nothing),
       retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL,
                                   jitter=dg.Jitter.PLUS_MINUS))
def drain_stream_range(context: dg.OpExecutionContext, config: DrainConfig,
                       postgres: PostgresResource, redis: RedisResource,
                       s3: S3Resource) -> dg.Output:
    """Process the given stream ranges into classified_messages and the funnel. Everything it
    produces is in Postgres: the op's output is Nothing (no IO manager), with the per-stream
    counts as output metadata."""
    settings = funnel_settings(postgres, redis, s3)
    r = redis.client()
    reports: list[DrainReport] = []
    with postgres.connect(autocommit=True) as conn:
        classifier = None
        for rng in config.ranges:
            if rng.kind == "messages" and classifier is None:
                classifier = keyword_store.current_classifier(conn, redis.client(), settings)
            rep = drain_range(conn, r, rng.stream, kind=rng.kind,
                              classifier=classifier if rng.kind == "messages" else None,
                              after_id=rng.after_id, until_id=rng.until_id,
                              batch_size=config.chunk_size,
                              rules=settings.cycle_rules)
            context.log.info(f"{rng.stream}: {rep.entries} entries, {rep.inserted} new, "
                             f"{rep.duplicates} duplicates in {rep.seconds:.2f} s")
            reports.append(rep)
        messages = [rep for rep in reports if rep.days]
        if messages:
            ranges = ", ".join(f"{rep.stream} ..{rep.last_id}" for rep in messages)
            days = set().union(*(rep.days for rep in messages))
            for day, counts in sorted(day_counts(conn, days).items()):
                key = partition_key(day)
                if key:
                    context.log_event(dg.AssetMaterialization(
                        "classified_messages", partition=key,
                        metadata={**day_metadata(counts), "source": "drain",
                                  "stream_ranges": ranges}))
            context.log_event(dg.AssetMaterialization("funnel", metadata={
                "source": "drain", "messages": sum(rep.entries for rep in messages),
                "new": sum(rep.inserted for rep in messages),
                "customers_updated": sum(rep.customers for rep in messages),
                **funnel_metadata(conn)}))
    totals = {rep.stream: {"entries": rep.entries, "inserted": rep.inserted,
                           "customers": rep.customers, "resumed": rep.resumed,
                           "last_id": rep.last_id, "seconds": round(rep.seconds, 3),
                           "stages": {k: round(v, 3) for k, v in rep.stages.items()}}
              for rep in reports}
    return dg.Output(None, metadata={"streams": dg.MetadataValue.json(totals)})


def drain_totals(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Per stream, the counts an in-process drain_job run reported (its output metadata):
    entries, inserted, customers (resumed: from a later cycle), last_id, seconds and seconds
    per stage."""
    for event in result.all_events:
        if event.is_successful_output:
            return event.step_output_data.metadata["streams"].value
    return {}


# In-process: the job is one step, so a multiprocess executor would only add a second Python
# process (and a second code load) to every micro-batch run.
@dg.job(executor_def=dg.in_process_executor,
        description="Drain exact ranges of the message streams into the funnel (the sensor's "
                    "micro-batches; `funnel drain` runs it in-process).")
def drain_job():
    drain_stream_range()


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


keywords_job = dg.define_asset_job(
    "keywords_sync_job", selection=dg.AssetSelection.assets("keywords"),
    description="Pull the keywords from the sheet (or, without a sheet, the CSV while it is in "
                "charge of the list) and publish a new version if changed.")


report_job = dg.define_asset_job(
    "funnel_report_job", selection=dg.AssetSelection.assets("funnel_report_csv"),
    description="Write one day's funnel CSV to the reports bucket.")


checks_job = dg.define_asset_job(
    "data_checks_job", selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("classified_messages"), "no_duplicate_messages"),
        dg.AssetCheckKey(dg.AssetKey("funnel"), "stage_dates_in_order"),
        dg.AssetCheckKey(dg.AssetKey("funnel"), "non_negative_values"),
        dg.AssetCheckKey(dg.AssetKey("message_stream"), "stream_backlog")),
    description="Run the data checks (duplicates, stage order, values, stream backlog).")


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
