"""Near-real-time processing: the sensor hands exact stream ranges to `drain_job` (jobs.py).

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

import dagster as dg

from funnel_dagster.defs.resources import (
    RedisResource,
)
from funnel_ingest.ingest.stream import newest_id, oldest_age_seconds, oldest_id, stream_id_key
from funnel_ingest.settings import get_settings

SHARD_TAG = "funnel/shard"
# A shard with a run waiting to start gets no new run: that run will be followed by one taking
# everything that arrived meanwhile. A shard whose run is executing does get the next range,
# queued behind it (the `funnel/shard` tag limit serializes them), so the next run's launch
# overlaps the current run's work.
_WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING]


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


# The backlog is recorded as an observation of message_stream when it changes noticeably: when
# it empties or fills, when it moved by a fifth since the last record, or when it changed at
# all and the last record is five minutes old. A quiet stream records nothing; a busy one at
# most a few hundred events a day (every 5 s would be 17,000).
OBSERVE_CHANGE = 0.2
OBSERVE_EVERY_SECONDS = 300.0


def _worth_recording(backlog: int, last: dict | None, now: float) -> bool:
    if last is None:
        return True
    before = int(last.get("backlog", 0))
    if backlog == before:
        return False
    if (backlog == 0) != (before == 0):
        return True
    if abs(backlog - before) >= OBSERVE_CHANGE * max(before, 1):
        return True
    return now - float(last.get("at", 0)) >= OBSERVE_EVERY_SECONDS


def _read_cursor(text: str | None) -> tuple[dict[str, str], dict | None]:
    """(stream -> last id handed out, the last recorded backlog). Cursors written before the
    backlog was recorded hold the stream ids alone."""
    data = json.loads(text) if text else {}
    if "streams" in data:
        return dict(data["streams"]), data.get("observed")
    return data, None


@dg.sensor(job_name="drain_job", minimum_interval_seconds=5,
           default_status=dg.DefaultSensorStatus.RUNNING)
def message_stream_sensor(context: dg.SensorEvaluationContext,
                          redis: RedisResource) -> dg.SensorResult:
    """Hands each message shard's new stream range to a drain run (one cursor per shard; no new
    run while the shard's previous one is still waiting to start), and records the stream's
    backlog (and the newest archive objects) as observations of message_stream and raw_archive
    when the backlog changes noticeably."""
    settings = get_settings()
    r = redis.client()
    cursor, observed = _read_cursor(context.cursor)
    runs = context.instance.get_runs(filters=dg.RunsFilter(
        job_name="drain_job", statuses=[*_WAITING, dg.DagsterRunStatus.STARTED]), limit=200)
    busy = {run.tags[SHARD_TAG] for run in runs
            if run.tags.get(SHARD_TAG) and run.status in _WAITING}
    running = frozenset(run.tags[SHARD_TAG] for run in runs if run.tags.get(SHARD_TAG))
    requests, new_cursor = plan_runs(r, cursor, busy, running)
    lengths = {s: r.xlen(s) for s in settings.stream_keys()}
    backlog = sum(lengths.values())
    now = time.time()
    events: list = []
    if _worth_recording(backlog, observed, now):
        observed = {"backlog": backlog, "at": now}
        events.append(dg.AssetObservation("message_stream", metadata={
            "backlog": backlog,
            "oldest_entry_age_seconds": round(max(
                (oldest_age_seconds(r, s) for s in settings.stream_keys()), default=0.0), 1),
            **{f"length {s}": n for s, n in lengths.items()}}))
        newest = [r.xrevrange(s, count=1) for s in settings.stream_keys()]
        keys = sorted({e[0][1].get(b"raw_key", b"").decode() for e in newest if e} - {""})
        if keys:  # the archive objects holding the newest messages
            events.append(dg.AssetObservation("raw_archive", metadata={
                "latest_objects": ", ".join(keys), "bucket": settings.raw_bucket}))
    state = json.dumps({"streams": new_cursor, "observed": observed})
    if not requests:
        reason = (f"waiting for the queued drain run of {', '.join(sorted(busy))}" if busy
                  else f"no new messages (backlog {backlog})")
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=state,
                               asset_events=events)
    return dg.SensorResult(run_requests=requests, cursor=state, asset_events=events)
