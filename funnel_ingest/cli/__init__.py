"""`funnel`: the project's command line.

    funnel up | down | status [--env]   the local stack (Postgres, Redis, S3 server)
    funnel migrate                      apply the SQL migrations
    funnel api                          run the ingest API in the foreground
    funnel drain [--follow]             process the streams into the funnel (without Dagster)
    funnel replay [--since 3d]          re-enqueue archived messages missing from Postgres
    funnel conversions status|send|retry   the Meta Conversions API outbox
    funnel demo                         stack up, API up, a burst of sample webhooks, counts
    funnel campaigns import FILE | list name campaigns from a broadcast log, list them
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import signal
import time
from datetime import datetime, timedelta

from funnel_ingest.cli._common import apply_env, err, stop_on_sigterm


def cmd_up(args: argparse.Namespace) -> int:
    from funnel_ingest.local import stack
    env = stack.up(log=err)
    apply_env(env)
    from funnel_ingest import db
    from funnel_ingest.settings import get_settings
    applied = db.migrate(get_settings().database_url)
    err(f"migrations applied: {applied or 'none pending'}")
    from funnel_ingest.local.dagster import dagster_env
    denv = dagster_env(env, stack.state_dir())  # the home and storage the local Dagster uses
    err(f"Dagster instance: DAGSTER_HOME={denv['DAGSTER_HOME']} (storage: Postgres database "
         f"{denv['DAGSTER_PG_DB']})")
    err('stack is up; use it from a shell with: eval "$(funnel status --env)"')
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from funnel_ingest.local import stack
    stack.down(log=err)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from funnel_ingest.local import stack
    if args.env:
        from funnel_ingest.local.dagster import dagster_vars
        env = stack.stack_env()
        env.update(dagster_vars(env["DATABASE_URL"], stack.state_dir()))
        for key, value in env.items():
            print(f"{key}={shlex.quote(value)}")
        print("export " + " ".join(env))  # so `eval` hands them to child processes too
        return 0
    st = stack.status()
    for name in ("postgres", "redis", "s3"):
        info = st.get(name, {})
        state = "up" if info.get("up") else "down"
        extra = " ".join(f"{k}={v}" for k, v in info.items() if k not in ("up",))
        print(f"{name:9} {state:5} {extra}")
    print(f"state dir {st.get('state_dir')}")
    return 0 if all(st.get(n, {}).get("up") for n in ("postgres", "redis", "s3")) else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from funnel_ingest import db
    from funnel_ingest.settings import get_settings
    url = get_settings().database_url
    db.ensure_database(url)
    print(f"applied: {db.migrate(url) or 'none pending'}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """The funnel recomputed from every stored message (after an upgrade whose funnel rules
    changed); with --reclassify the messages are classified again first, day by day, with the
    current keyword version and classifier rules."""
    import psycopg
    import redis

    from funnel_ingest import db
    from funnel_ingest.settings import get_settings
    from funnel_ingest.store import funnel as store
    from funnel_ingest.store.keywords import current_classifier

    settings = get_settings()
    db.migrate(settings.database_url)
    started = time.perf_counter()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if args.reclassify:
            classifier = current_classifier(conn, redis.Redis.from_url(settings.redis_url),
                                            settings)
            first, last = conn.execute("SELECT min(message_date), max(message_date) "
                                       "FROM classified_messages").fetchone()
            day, total = first, 0
            while day is not None and day <= last:
                with conn.transaction():
                    store.lock_writers(conn, exclusive=False)
                    total += store.reclassify(conn, classifier, day, day, recompute=False
                                              ).received
                err(f"reclassified {day}: {total:,} messages so far")
                day += timedelta(days=1)
            print(f"reclassified {total:,} messages with keyword version {classifier.version}")
        with conn.transaction():
            store.lock_writers(conn, exclusive=True)
            leads = store.rebuild(conn, settings.tz, settings.cycle_rules)
        store.compact_summary(conn)
    print(f"rebuilt the funnel: {leads:,} leads in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    """`API_WORKERS` granian workers (default: one per usable CPU) serving the app, with the
    protocol limits of the settings: header bytes (431 past HTTP_MAX_HEADER_BYTES; the header
    count is the server's 100) and a deadline for the headers (HTTP_HEADER_TIMEOUT_SECONDS,
    then the connection is closed). Bodies are bounded in the app (funnel_ingest/api/edge.py).
    Several workers share their Prometheus metrics through a fresh PROMETHEUS_MULTIPROC_DIR,
    removed when they stop."""
    import shutil
    import tempfile

    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    from funnel_ingest.settings import get_settings

    cfg = get_settings()  # a bad setting stops here, before any worker starts
    workers = cfg.api_workers or len(os.sched_getaffinity(0))
    metrics_dir = ""
    if workers > 1:  # set before any worker imports prometheus_client
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix="funnel-metrics-")
    try:
        Granian(
            "funnel_ingest.main:app", address=args.host, port=args.port,
            interface=Interfaces.ASGI, workers=workers, http=HTTPModes.http1,
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, round(cfg.http_header_timeout_seconds * 1000)),
                max_buffer_size=cfg.http_max_header_bytes),
            backlog=4096, backpressure=cfg.http_max_connections,
            log_access=False, respawn_failed_workers=True, workers_kill_timeout=15,
            log_level=LogLevels(cfg.log_level.lower()),
            # the server's lines formatted as the app's (main.create_app's basicConfig)
            log_dictconfig={"formatters": {
                "generic": {"()": "logging.Formatter",
                            "fmt": "%(asctime)s %(levelname)s granian %(message)s"},
                "access": {"()": "logging.Formatter", "fmt": "%(message)s"}}},
        ).serve()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _drain_until_empty(settings, r, instance, batch_size: int,
                       totals: dict[str, list[int]]) -> None:
    """Run the Dagster drain job in-process over each stream's current range until every
    stream is empty."""
    from funnel_dagster.defs.jobs import drain_job, drain_totals
    from funnel_dagster.defs.resources import resources
    from funnel_ingest.ingest.stream import newest_id

    streams = [(s, "messages") for s in settings.stream_keys()] + [
        (settings.status_stream, "statuses"), (settings.deadletter_stream, "deadletters")]
    while True:
        ranges = []
        for stream, kind in streams:
            if newest := newest_id(r, stream):
                ranges.append({"stream": stream, "kind": kind, "until_id": newest})
        if not ranges:
            return
        result = drain_job.execute_in_process(
            run_config={"ops": {"drain_stream_range": {"config": {
                "ranges": ranges, "chunk_size": batch_size}}},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            resources=resources(), instance=instance, tags={"funnel/trigger": "cli"})
        for event in result.all_events:  # a store failed and the op's retry policy took over
            if event.is_step_up_for_retry:
                err(f"funnel drain: step retried: {event.message}")
        for stream, out in drain_totals(result).items():
            t = totals.setdefault(stream, [0, 0])
            t[0] += out["entries"]
            t[1] += out["inserted"]


def cmd_drain(args: argparse.Namespace) -> int:
    """Run the Dagster drain job in-process until every stream is empty (`--follow`: keep
    draining, and retry after a failure, until interrupted)."""

    import dagster as dg
    import redis

    from funnel_ingest import db
    from funnel_ingest.settings import get_settings

    settings = get_settings()
    r = redis.Redis.from_url(settings.redis_url, socket_timeout=30, socket_connect_timeout=5)
    instance = (dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME")
                else dg.DagsterInstance.ephemeral())
    totals: dict[str, list[int]] = {}
    started = time.perf_counter()
    if not args.follow:
        db.migrate(settings.database_url)
        _drain_until_empty(settings, r, instance, args.batch_size, totals)
    else:
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        migrated, following, failures = False, False, 0
        while not stopping:
            try:
                if not migrated:
                    db.migrate(settings.database_url)
                    migrated = True
                _drain_until_empty(settings, r, instance, args.batch_size, totals)
                if not following:
                    following = True
                    err("funnel drain: following the streams (SIGTERM or Ctrl-C to stop)")
                failures = 0
                delay = args.interval
            except Exception as exc:  # a store is down: the range stays, the next pass retries
                failures += 1
                delay = min(30.0, args.interval * 2 ** min(failures, 6))
                err(f"funnel drain: pass failed ({type(exc).__name__}: {exc}); "
                     f"retrying in {delay:.1f} s")
            deadline = time.monotonic() + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.1, delay))
    seconds = time.perf_counter() - started
    for stream, (entries, inserted) in totals.items():
        print(f"{stream}: {entries} entries, {inserted} new "
              f"({entries / seconds if seconds else 0:.0f} entries/s)")
    if not totals:
        print("nothing to drain: every stream is empty")
    return 0


def _when(text: str) -> datetime:
    """An ISO date or date-time (naive = UTC), or a duration back from now: 90m, 6h, 3d."""
    from datetime import timedelta, timezone

    if m := re.fullmatch(r"(\d+)\s*([mhd])", text.strip()):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m[2]]
        return datetime.now(timezone.utc) - timedelta(**{unit: int(m[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO date/time nor a duration like 6h or 3d") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-enqueue archived messages missing from Postgres and from the streams."""
    import psycopg
    import redis

    from funnel_ingest import db
    from funnel_ingest import s3 as s3mod
    from funnel_ingest.settings import get_settings
    from funnel_ingest.store.reconcile import reconcile

    settings = get_settings()
    db.migrate(settings.database_url)
    if args.until and args.until < args.since:
        err("funnel replay: --until is before --since")
        return 2
    with psycopg.connect(settings.database_url) as conn:
        report = reconcile(conn, redis.Redis.from_url(settings.redis_url), s3mod.client(settings),
                           settings, since=args.since, until=args.until, dry_run=args.dry_run)
    print(f"archive objects read: {report.objects}")
    for kind, label in (("message", "messages"), ("status", "statuses"),
                        ("deadletter", "dead letters")):
        print(f"{label}: {report.archived[kind]} archived, {report.stored[kind]} in Postgres, "
              f"{report.on_stream[kind]} waiting on a stream, {report.missing[kind]} missing")
    if args.dry_run:
        print(f"dry run: {report.total_missing} items would be re-enqueued")
    else:
        print(f"re-enqueued {report.total_missing} items"
              + (f"; restored {report.rooms_restored} rooms in Redis" if report.total_missing
                 else "") + (" (run `funnel drain`, or let the sensor pick them up)"
                             if report.total_missing else ""))
    return 0


def _day(text: str):
    """A business date argument (YYYY-MM-DD)."""
    from datetime import date
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-10-31 ({exc})"
                                         ) from None


def dagster_instance():
    """The Dagster instance the UI shows: DAGSTER_HOME's when set, else the local stack's (the
    one `funnel demo` runs and `funnel status --env` exports); an ephemeral one, with a note,
    when neither exists."""
    import dagster as dg

    from funnel_ingest.local import stack
    from funnel_ingest.local.dagster import dagster_env, dagster_home

    if not os.environ.get("DAGSTER_HOME"):
        home = dagster_home(stack.state_dir())
        if not (home / "dagster.yaml").exists():
            err("funnel: no Dagster instance (DAGSTER_HOME unset, no local stack): this run "
                 "will not show in the Dagster UI")
            return dg.DagsterInstance.ephemeral()
        from funnel_ingest.settings import get_settings
        # the storage database of this DATABASE_URL (`<db>_dagster`), created when missing
        os.environ.update(dagster_env({"DATABASE_URL": get_settings().database_url},
                                      stack.state_dir()))
    return dg.DagsterInstance.get()


def cmd_backfill(args: argparse.Namespace) -> int:
    """Re-read days from the raw archive and re-classify them with the current keywords: one
    run of the code location's asset job over the whole range, recorded in the Dagster
    instance, so it shows in the UI beside the backfills launched there."""
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    start, end = args.start, args.end
    if end < start:
        err(f"funnel backfill: --to {end} is before --from {start}")
        return 2
    from funnel_dagster.defs.partitions import daily
    first, last = daily.get_first_partition_key(), daily.get_last_partition_key()
    if start.isoformat() < first or end.isoformat() > last:
        err(f"funnel backfill: {start} .. {end} is outside the partitions {first} .. {last} "
             "(the first is FUNNEL_START_DATE, else the first day with data; the last is "
             "today in FUNNEL_TIMEZONE)")
        return 2
    from funnel_dagster.definitions import defs
    from funnel_dagster.launcher import worker_tags

    instance = dagster_instance()
    job = defs().resolve_implicit_global_asset_job_def()
    days = (end - start).days + 1
    err(f"backfilling {start} .. {end} ({days} days) as one run in {instance.root_directory}")
    result = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("classified_messages")],
        tags={ASSET_PARTITION_RANGE_START_TAG: start.isoformat(),
              ASSET_PARTITION_RANGE_END_TAG: end.isoformat(),
              "funnel/trigger": "cli-backfill", **worker_tags()},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure.step_failure_data.error.message.strip() if failure else "failed"
        err(f"funnel backfill: run {result.run_id} failed: {reason.splitlines()[-1]}")
        return 1
    for event in result.get_asset_materialization_events():
        m = event.materialization
        if m.asset_key.path != ["classified_messages"]:
            continue
        meta = {k: v.value for k, v in m.metadata.items()}
        print(f"{m.partition}: {meta['dagster/row_count']} messages; "
              f"{meta['restored_from_archive']} restored from the archive, "
              f"{meta['reclassified']} re-classified ({meta['classification_changed']} "
              f"changed, {meta['customers_updated']} customers updated)")
    print(f"run {result.run_id} succeeded")
    return 0










def _print_summary(conn) -> None:
    """The funnel by channel, most leads first."""
    from funnel_ingest.report.query import channel_counts

    rows = sorted(channel_counts(conn), key=lambda r: -r["leads"])
    print(f"\n{'channel':16}{'leads':>8}{'booked':>8}{'paid':>8}{'revenue (Rp)':>18}")
    for r in rows:
        print(f"{r['channel']:16}{r['leads']:8}{r['bookings']:8}{r['transactions']:8}"
              f"{r['revenue']:18,}")


def _print_campaigns(conn, limit: int = 8) -> None:
    """The campaigns with the most leads, by name (an id nothing named as itself)."""
    from funnel_ingest.report.campaigns import campaign_figures

    found = campaign_figures(conn, limit)
    if not found["campaigns"]:
        return
    print(f"\n{'campaign':40}{'leads':>8}{'paid':>8}  key")
    for c in found["campaigns"]:
        name = c["name"] or f"{c['campaign'][:28]} (unknown)"
        print(f"{name[:39]:40}{c['leads']:8}{c['transactions']:8}  {c['campaign'][:48]}")
    if found["omitted"]:
        print(f"... and {found['omitted']} more campaigns (funnel campaigns list)")


def cmd_demo(args: argparse.Namespace) -> int:
    import psycopg
    import redis

    from funnel_ingest import s3
    from funnel_ingest.local import stack
    from funnel_ingest.local.dagster import LocalDagster, dagster_vars
    from funnel_ingest.local.processes import free_port, start_api, stop_process_group
    from funnel_ingest.report.export import export
    from funnel_ingest.report.query import ReportFilter
    from funnel_ingest.settings import get_settings
    from funnel_ingest.simulate.sender import send_all

    cmd_up(args)
    env = stack.stack_env()
    apply_env(env)
    settings = get_settings()
    state = stack.state_dir()
    port = args.port or free_port()
    stop_on_sigterm()
    err(f"starting the API on 127.0.0.1:{port} (log: {state / 'logs' / 'api.log'})")
    api = start_api(env, port, state / "logs" / "api.log")
    denv = {**env, **dagster_vars(env["DATABASE_URL"], state)}  # prepared by cmd_up
    err("starting Dagster (webserver + daemon; the stream sensor drains every 5 s) ...")
    dagster = LocalDagster(denv, state, port=args.dagster_port or None)
    try:
        dagster.start()
        err(f"Dagster UI: {dagster.base_url}")
        r = redis.Redis.from_url(settings.redis_url)
        from funnel_ingest.simulate.traffic import recent_traffic
        sim, samples = recent_traffic(args.customers, args.seed)
        err(f"sending {len(samples)} webhooks ({len(sim.messages)} messages of "
             f"{args.customers} simulated customers: WhatsApp, Qontak, generic) ...")
        report = asyncio.run(send_all(f"http://127.0.0.1:{port}", samples, env,
                                      concurrency=args.concurrency))
        objects = sum(page.get("KeyCount", 0) for page in s3.client(settings).get_paginator(
            "list_objects_v2").paginate(Bucket=settings.raw_bucket, Prefix="raw/"))
        print(f"webhooks sent:            {report.sent} in {report.seconds:.2f} s "
              f"({report.sent / max(report.seconds, 1e-9):.0f}/s), accepted {report.accepted}, "
              f"p50 {report.percentile(50) * 1000:.1f} ms, p99 {report.percentile(99) * 1000:.1f} ms")
        print(f"raw archive objects:      {len(report.raw_keys)} written now "
              f"({objects} in s3://{settings.raw_bucket}/raw/)")
        print(f"items appended:           {report.messages} new, {report.duplicates} redeliveries")
        err("waiting for the sensor's drain runs to empty the stream ...")
        t0 = time.monotonic()
        while any(r.xlen(k) for k in settings.stream_keys()):
            if time.monotonic() - t0 > args.timeout:
                raise RuntimeError(f"the stream was not drained within {args.timeout} s; see "
                                   f"{dagster.daemon_log} and {dagster.base_url}/runs")
            time.sleep(1)
        print(f"stream drained by Dagster {time.monotonic() - t0:.1f} s after the last webhook")
        out_dir = state / "reports"
        out_dir.mkdir(exist_ok=True)
        with psycopg.connect(settings.database_url) as conn:
            _print_summary(conn)
            _print_campaigns(conn)
            first, last = conn.execute("SELECT min(leads_date), max(leads_date) FROM funnel"
                                       ).fetchone()
            if first:
                path = out_dir / f"funnel_{first}_{last}.csv"
                export(settings, ReportFilter(first, last), str(path), "csv")
                print(f"\nfunnel report CSV:        {path}")
        if args.keep:
            print(f"API {f'http://127.0.0.1:{port}'} and Dagster {dagster.base_url} keep running; "
                  "stop them with Ctrl-C")
            while True:
                time.sleep(3600)
        return 0 if report.accepted == report.sent else 1
    finally:
        dagster.stop()
        stop_process_group(api)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="funnel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start (or reuse) Postgres, Redis and an S3 server").set_defaults(
        func=cmd_up)
    sub.add_parser("down", help="stop what `funnel up` started").set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="show the stack; --env prints its settings")
    st.add_argument("--env", action="store_true", help="print KEY=VALUE lines for eval")
    st.set_defaults(func=cmd_status)
    sub.add_parser("migrate", help="apply pending SQL migrations").set_defaults(func=cmd_migrate)
    api = sub.add_parser("api", help="run the ingest API in the foreground")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)
    drain = sub.add_parser("drain", help="process everything on the streams now")
    drain.add_argument("--batch-size", type=int, default=10_000)
    drain.add_argument("--follow", action="store_true",
                       help="keep draining (and retry after failures) until interrupted")
    drain.add_argument("--interval", type=float, default=1.0,
                       help="seconds between passes with --follow")
    drain.set_defaults(func=cmd_drain)
    rp = sub.add_parser("replay", help="re-enqueue archived messages missing from Postgres "
                        "(after Redis lost data)")
    rp.add_argument("--since", type=_when, default="3d",
                    help="archive objects received from (ISO date/time in UTC, or 6h, 3d; "
                    "default 3d)")
    rp.add_argument("--until", type=_when, default=None, help="… up to (default: now)")
    rp.add_argument("--dry-run", action="store_true", help="only count what is missing")
    rp.set_defaults(func=cmd_replay)
    from funnel_ingest.cli import campaigns, conversions, keywords, report
    keywords.add_parsers(sub)
    report.add_parsers(sub)
    campaigns.add_parsers(sub)
    conversions.add_parsers(sub)
    bf = sub.add_parser("backfill", help="re-read days from the raw archive and re-classify them "
                        "(one Dagster run, shown in the UI)")
    bf.add_argument("--from", dest="start", required=True, type=_day,
                    help="first business date, YYYY-MM-DD")
    bf.add_argument("--to", dest="end", required=True, type=_day,
                    help="last business date, YYYY-MM-DD")
    bf.set_defaults(func=cmd_backfill)
    rb = sub.add_parser("rebuild", help="recompute the whole funnel from the stored messages "
                        "(after an upgrade that changed the funnel rules)")
    rb.add_argument("--reclassify", action="store_true",
                    help="classify every stored message again first (the upgrade changed the "
                         "classifier or the keywords)")
    rb.set_defaults(func=cmd_rebuild)
    demo = sub.add_parser("demo", help="run the pipeline end to end on local defaults")
    demo.add_argument("--customers", type=int, default=150, help="simulated customers")
    demo.add_argument("--concurrency", type=int, default=32)
    demo.add_argument("--timeout", type=float, default=180, help="seconds to wait for the drain")
    demo.add_argument("--dagster-port", type=int, default=0)
    demo.add_argument("--keep", action="store_true", help="leave the API and Dagster running")
    demo.add_argument("--seed", type=int, default=None,
                      help="seed of the sample traffic (default: new messages every run)")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a CLI message, not a traceback, for operational failures
        from funnel_ingest.settings import Settings
        if Settings().funnel_debug:
            raise
        err(f"funnel {args.command}: {type(exc).__name__}: {exc}")
        return 1

