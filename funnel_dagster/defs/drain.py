"""Near-real-time processing: a sensor hands exact stream ranges to the drain job.

The sensor's cursor holds, per stream, the last id handed to a run. On each tick it asks for
one run per message shard covering (cursor, newest id], unless that shard still has a run
waiting to start: the next run then takes everything that arrived meanwhile, so batches are
small when traffic is quiet (fresh) and large under a burst (few runs, per-run overhead
amortized). The statuses and dead-letter streams ride along with shard 0's run. A run reads
its range in chunks, commits each chunk together with the stream offset, and only then trims
the stream; runs of one shard are serialized by the `funnel/shard` tag concurrency limit.
"""


import json
import time
from datetime import date

import dagster as dg

from funnel_ingest.engine.drain import (DrainReport, drain_range, newest_id, oldest_age_seconds,
                                         oldest_id, stream_id_key)
from funnel_ingest.settings import get_settings

from .assets import _classifier, funnel_metadata
from .partitions import daily
from .resources import PostgresResource, RedisResource, S3Resource, funnel_settings

CHUNK = 50_000
SHARD_TAG = "funnel/shard"
# A shard with a run waiting to start gets no new run: that run will be followed by one taking
# everything that arrived meanwhile. A shard whose run is executing does get the next range,
# queued behind it (the `funnel/shard` tag limit serializes them), so the next run's launch
# overlaps the current run's work.
_WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING]


class StreamRange(dg.Config):
    stream: str
    kind: str = "messages"  # messages | statuses | deadletters
    after_id: str = "0-0"
    until_id: str = "+"


class DrainConfig(dg.Config):
    ranges: list[StreamRange]
    chunk_size: int = CHUNK


def _partition_key(day: date) -> str | None:
    key = day.isoformat()
    return key if daily.start.date() <= day else None  # type: ignore[union-attr]


@dg.op(retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL,
                                   jitter=dg.Jitter.PLUS_MINUS))
def drain_stream_range(context: dg.OpExecutionContext, config: DrainConfig,
                       postgres: PostgresResource, redis: RedisResource,
                       s3: S3Resource) -> dict:
    """Process the given stream ranges into classified_messages and the funnel."""
    settings = funnel_settings(postgres, redis, s3)
    r = redis.client()
    reports: list[DrainReport] = []
    with postgres.connect(autocommit=True) as conn:
        classifier = None
        for rng in config.ranges:
            if rng.kind == "messages" and classifier is None:
                classifier = _classifier(conn, redis, settings)
            rep = drain_range(conn, r, rng.stream, kind=rng.kind,
                              classifier=classifier if rng.kind == "messages" else None,
                              after_id=rng.after_id, until_id=rng.until_id,
                              batch_size=config.chunk_size,
                              lead_window_days=settings.lead_window_days)
            context.log.info(f"{rng.stream}: {rep.entries} entries, {rep.inserted} new, "
                             f"{rep.duplicates} duplicates in {rep.seconds:.2f} s")
            reports.append(rep)
        messages = [rep for rep in reports if rep.days]
        if messages:
            days = sorted(set().union(*(rep.days for rep in messages)))
            for day in days:
                key = _partition_key(day)
                if key:
                    context.log_event(dg.AssetMaterialization(
                        "classified_messages", partition=key,
                        metadata={"source": "drain", "stream_ranges": ", ".join(
                            f"{rep.stream} ..{rep.last_id}" for rep in messages)}))
            context.log_event(dg.AssetMaterialization("funnel", metadata={
                "source": "drain", "messages": sum(rep.entries for rep in messages),
                "new": sum(rep.inserted for rep in messages),
                "customers_updated": sum(rep.customers for rep in messages),
                **funnel_metadata(conn)}))
    return {rep.stream: {"entries": rep.entries, "inserted": rep.inserted,
                         "last_id": rep.last_id} for rep in reports}


@dg.job(executor_def=dg.in_process_executor,
        description="Drain exact ranges of the message streams into the funnel (the sensor's "
                    "micro-batches; `funnel drain` runs it in-process).")
def drain_job():
    drain_stream_range()


def plan_runs(r, cursor: dict[str, str], busy_shards: set[str],
              running_shards: frozenset[str] = frozenset()
              ) -> tuple[list[dg.RunRequest], dict[str, str]]:
    """Run requests for the streams with new entries since the cursor; the new cursor.
    `busy_shards` have a run waiting to start; `running_shards` one executing."""
    settings = get_settings()
    cursor = dict(cursor)
    requests: list[dg.RunRequest] = []
    side = [(settings.status_stream, "statuses"), (settings.deadletter_stream, "deadletters")]
    for n, stream in enumerate(settings.stream_keys()):
        if stream in busy_shards:
            continue
        ranges: list[dict] = []
        extra = side if n == 0 else []
        retry = False
        for name, kind in [(stream, "messages"), *extra]:
            newest = newest_id(r, name)
            prev = cursor.get(name, "0-0")
            if newest and stream_id_key(newest) > stream_id_key(prev):
                ranges.append({"stream": name, "kind": kind, "after_id": prev,
                               "until_id": newest})
                cursor[name] = newest
            elif newest and stream not in running_shards and oldest_id(r, name) is not None:
                # entries handed out earlier are still on the stream (streams are trimmed
                # only after commit): their run failed; hand the range out again
                ranges.append({"stream": name, "kind": kind, "after_id": "0-0",
                               "until_id": prev})
                retry = True
        if ranges:
            key = "|".join(f"{x['stream']}:{x['after_id']}:{x['until_id']}" for x in ranges)
            if retry:
                key += f"|retry@{time.time():.0f}"
            requests.append(dg.RunRequest(
                run_key=key, tags={SHARD_TAG: stream},
                run_config={"ops": {"drain_stream_range": {"config": {"ranges": ranges}}}}))
    return requests, cursor


@dg.sensor(job=drain_job, minimum_interval_seconds=5,
           default_status=dg.DefaultSensorStatus.RUNNING)
def message_stream_sensor(context: dg.SensorEvaluationContext,
                          redis: RedisResource) -> dg.SensorResult | dg.SkipReason:
    """Hands each message shard's new stream range to a drain run (one cursor per shard; no new
    run while the shard's previous one is still waiting to start), and reports the stream's
    backlog and newest archive objects as observations of message_stream and raw_archive."""
    settings = get_settings()
    r = redis.client()
    cursor = json.loads(context.cursor) if context.cursor else {}
    runs = context.instance.get_runs(filters=dg.RunsFilter(
        job_name="drain_job", statuses=[*_WAITING, dg.DagsterRunStatus.STARTED]), limit=200)
    busy = {run.tags[SHARD_TAG] for run in runs
            if run.tags.get(SHARD_TAG) and run.status in _WAITING}
    running = frozenset(run.tags[SHARD_TAG] for run in runs if run.tags.get(SHARD_TAG))
    requests, new_cursor = plan_runs(r, cursor, busy, running)
    backlog = {s: r.xlen(s) for s in settings.stream_keys()}
    observation = dg.AssetObservation("message_stream", metadata={
        "backlog": sum(backlog.values()),
        "oldest_entry_age_seconds": round(max(
            (oldest_age_seconds(r, s) for s in settings.stream_keys()), default=0.0), 1),
        **{f"length {s}": n for s, n in backlog.items()}})
    events: list = [observation]
    if requests:  # the archive objects holding the newest messages handed out now
        newest = [r.xrevrange(s, count=1) for s in settings.stream_keys()]
        keys = sorted({e[0][1].get(b"raw_key", b"").decode() for e in newest if e} - {""})
        if keys:
            events.append(dg.AssetObservation("raw_archive", metadata={
                "latest_objects": ", ".join(keys), "bucket": settings.raw_bucket}))
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            "no new messages" if not busy else f"waiting for runs of {sorted(busy)}"),
            cursor=json.dumps(new_cursor), asset_events=events)
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(new_cursor),
                           asset_events=events)
