"""Ingest under sustained open-loop load: hold a rate, or find the highest rate that meets the bar.

    .venv/bin/python bench/load.py --rate 1000 --duration 60      # hold 1,000 webhooks/s for 60 s
    .venv/bin/python bench/load.py --find-max                     # highest rate with p99 < 100 ms
    .venv/bin/python bench/load.py --rate 1000 --workers 1,2      # compare API worker counts

The API runs as its own process (`funnel api`, `--workers` granian workers; default what
`funnel api` runs: API_WORKERS, else one per CPU) on loopback against the local stack (a bench
Redis db and bucket); the load generator (bench/loadgen.py) is another process firing single-
message webhooks on a fixed schedule, latency measured from each request's scheduled send time.

Each step prints: the rate held, achieved acknowledged req/s, p50/p99 latency, errors by kind,
the server's own p99 (bucket bound, ms) of the request, the S3 PUT and the Redis append —
a client p99 far above the server's is time spent queueing before the app ran — the
durability check — entries on the stream vs acknowledged messages; every acknowledged
message id must be on the stream and every acknowledged raw_key must be an object in S3;
`foreign` counts entries that are not ours (someone else using the bench Redis db) — the
archive PUTs per second, the CPU used by the API (also per request), the S3 server, Redis and
the generator (percent of one core; `lag`: how many ms late the generator sent at worst), the
whole machine's busy percent (`oth%`: what other processes used) and its load average, since
the 2 cores are shared. Before each step it waits (up to `--quiet-wait` s, column `wait`) for
the neighbours' CPU use to fall under `--quiet-below`.

`--find-max` raises the rate by `--factor` while a step passes (no errors, p99 under `--p99-ms`,
durable), then bisects between the last pass and the first failure until the bracket is within
5 % or `--budget` seconds are spent; each step lasts `--step-duration` seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (  # noqa: E402
    api_server,
    cpu_seconds,
    default_workers,
    ingest_env,
    loadgen,
    machine_busy_seconds,
    pids_named,
    process_tree,
    redis_db,
)

from funnel_ingest import s3  # noqa: E402
from funnel_ingest.settings import Settings  # noqa: E402

HEADER = (f"{'workers':>7} {'rate':>6} {'ok/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'errors':>14} {'stream/acked':>13} {'missing':>8} {'foreign':>7} {'srv/s3/rds p99<=':>16} "
          f"{'PUT/s':>6} {'api%':>5} {'ms/req':>6} {'s3%':>4} "
          f"{'rds%':>4} {'gen%':>4} {'lag':>4} {'busy%':>5} {'oth%':>4} {'load1':>5} {'wait':>4} "
          f"{'verdict':>7}")


def histograms(url: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(metric, label value) -> cumulative [(le, count)] of the API's latency histograms."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("funnel_request_seconds_bucket", "funnel_store_seconds_bucket"):
                label = sample.labels.get("route") or sample.labels.get("store", "")
                out.setdefault((sample.name, label), []).append(
                    (float(sample.labels["le"]), sample.value))
    return out


def server_p99_ms(before: dict, after: dict, key: tuple[str, str]) -> float:
    """Upper bucket bound of the 99th percentile over the step (inf when above the last)."""
    now, then = after.get(key, []), dict(before.get(key, []))
    deltas = [(le, count - then.get(le, 0)) for le, count in sorted(now)]
    if not deltas or deltas[-1][1] <= 0:
        return 0.0
    total = deltas[-1][1]
    return next(le for le, c in deltas if c >= 0.99 * total) * 1000


def stream_message_ids(r: redis.Redis, streams: list[str]) -> tuple[int, set[str]]:
    entries, ids = 0, set()
    for stream in streams:
        start = "-"
        while True:
            batch = r.xrange(stream, min=start, max="+", count=10_000)
            if not batch:
                break
            for _, fields in batch:
                ids.add(fields[b"message_id"].decode())
            entries += len(batch)
            start = "(" + batch[-1][0].decode()
    return entries, ids


def archived_keys(s3_client, bucket: str, keys: set[str]) -> set[str]:
    """Which of `keys` exist in `bucket` (one listing per hour prefix, from the earliest key)."""
    by_prefix: dict[str, list[str]] = {}
    for key in keys:
        prefix, name = key.rsplit("/", 1)
        by_prefix.setdefault(prefix + "/", []).append(name)
    found: set[str] = set()
    for prefix, names in by_prefix.items():
        # names start with a UTC timestamp (archive.object_key): list from the earliest one
        start_after = prefix + min(names)[:21]
        for page in s3_client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, StartAfter=start_after):
            found.update(o["Key"] for o in page.get("Contents", []))
    return keys & found


def durability(r: redis.Redis, settings: Settings, s3_client, acked_file: Path) -> dict:
    acked_ids: set[str] = set()
    raw_keys: set[str] = set()
    for line in acked_file.read_text().splitlines():
        key, ids = line.split("\t")
        raw_keys.add(key)
        acked_ids.update(ids.split(","))
    entries, on_stream = stream_message_ids(r, settings.stream_keys())
    archived = archived_keys(s3_client, settings.raw_bucket, raw_keys)
    # foreign: entries that are none of ours (another process writing to the same Redis db; a
    # flush by it would also show as missing)
    return {"entries": entries, "acked": len(acked_ids), "foreign": len(on_stream - acked_ids),
            "missing": len(acked_ids - on_stream), "objects": len(raw_keys),
            "missing_objects": len(raw_keys - archived)}


def wait_quiet(below: float, timeout: float) -> float:
    """Wait (up to `timeout` s) until the machine's CPU use over 3 s — the API is idle between
    steps, so this is the neighbours' — is under `below` percent (200 = both cores busy)."""
    started = time.monotonic()
    ncpu = os.cpu_count() or 1
    while below > 0 and time.monotonic() - started < timeout:
        busy0, total0 = machine_busy_seconds()
        time.sleep(3)
        busy1, total1 = machine_busy_seconds()
        if 100 * ncpu * (busy1 - busy0) / max(total1 - total0, 1e-9) < below:
            break
    return time.monotonic() - started


def step(url: str, env: dict[str, str], settings: Settings, r: redis.Redis, s3_client,
         api_pid: int, rate: float, duration: float, seed: int, args) -> dict:
    r.flushdb()
    waited = wait_quiet(args.quiet_below, args.quiet_wait)
    with tempfile.NamedTemporaryFile(prefix="funnel-acked-", suffix=".tsv") as acked:
        api_pids = process_tree(api_pid)
        others = {"s3": pids_named("weed", urlsplit(settings.s3_endpoint_url).port),
                  "redis": pids_named("redis-server", urlsplit(settings.redis_url).port)}
        cpu0 = {"api": cpu_seconds(api_pids), **{k: cpu_seconds(v) for k, v in others.items()}}
        busy0, total0 = machine_busy_seconds()
        hist0 = histograms(url)
        res = loadgen(url, env, kind=args.kind, rate=rate, duration=duration,
                      concurrency=args.concurrency, timeout=args.timeout, seed=seed,
                      acked_out=acked.name)
        busy1, total1 = machine_busy_seconds()
        hist1 = histograms(url)
        secs = res["seconds"]
        cpu = {"api": cpu_seconds(api_pids) - cpu0["api"],
               **{k: cpu_seconds(v) - cpu0[k] for k, v in others.items()}}
        check = durability(r, settings, s3_client, Path(acked.name))
    ncpu = os.cpu_count() or 1
    res.update(check, rate=rate, load=os.getloadavg(), api_processes=len(api_pids), waited=waited,
               cpu_pct={**{k: 100 * v / secs for k, v in cpu.items()},
                        "gen": 100 * res["loadgen_cpu_s"] / secs},
               busy_pct=100 * ncpu * (busy1 - busy0) / max(total1 - total0, 1e-9))
    res["server_p99_ms"] = {
        "request": server_p99_ms(hist0, hist1, ("funnel_request_seconds_bucket", args.kind)),
        "s3": server_p99_ms(hist0, hist1, ("funnel_store_seconds_bucket", "s3")),
        "redis": server_p99_ms(hist0, hist1, ("funnel_store_seconds_bucket", "redis"))}
    res["durable"] = check["missing"] == 0 and check["missing_objects"] == 0
    res["passed"] = (res["errors"] == 0 and res["p99_ms"] < args.p99_ms and res["durable"])
    return res


def row(workers: int, res: dict) -> str:
    errors = ",".join(f"{k}:{v}" for k, v in res["error_kinds"].items()) or "0"
    cpu = res["cpu_pct"]
    return (f"{workers:>7} {res['rate']:>6.0f} {res['ok_per_s']:>7.0f} {res['p50_ms']:>8.1f} "
            f"{res['p99_ms']:>8.1f} {res['max_ms']:>8.0f} {errors:>14} "
            f"{res['entries']:>6}/{res['acked']:<6} "
            f"{res['missing'] + res['missing_objects']:>8} {res['foreign']:>7} "
            f"{'/'.join(f'{v:g}' for v in res['server_p99_ms'].values()):>16} "
            f"{res['objects'] / res['seconds']:>6.0f} "
            f"{cpu['api']:>5.0f} {10 * cpu['api'] / max(res['ok_per_s'], 1):>6.2f} {cpu['s3']:>4.0f} "
            f"{cpu['redis']:>4.0f} {cpu['gen']:>4.0f} {res['max_send_lag_ms']:>4.0f} "
            f"{res['busy_pct']:>5.0f} "
            f"{res['busy_pct'] - sum(cpu.values()):>4.0f} "
            f"{res['load'][0]:>5.2f} {res['waited']:>4.0f} {'pass' if res['passed'] else 'FAIL':>7}")


def find_max(run, args) -> tuple[float, list[dict]]:
    """Raise the rate by args.factor while it passes, then bisect; bounded by args.budget."""
    started = time.monotonic()
    results: list[dict] = []
    lo, hi = 0.0, 0.0  # highest pass, lowest failure
    rate = args.start

    def time_left() -> bool:
        return time.monotonic() - started + args.step_duration + 10 < args.budget

    while time_left():
        res = run(rate)
        results.append(res)
        if res["passed"]:
            lo = max(lo, rate)
        else:
            hi = rate if not hi else min(hi, rate)
        if not hi:
            if rate >= args.max_rate:
                break
            rate = min(args.max_rate, round(rate * args.factor))
        elif not lo:
            rate = round(rate / args.factor)
            if rate < 50:
                break
        elif hi / lo > 1.05:
            rate = round((lo + hi) / 2)
        else:
            break
    return lo, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=1000, help="requests/s to hold")
    p.add_argument("--duration", type=float, default=60, help="seconds to hold it")
    p.add_argument("--find-max", action="store_true", help="search the highest passing rate")
    p.add_argument("--start", type=float, default=600, help="find-max: first rate")
    p.add_argument("--factor", type=float, default=1.25, help="find-max: step up factor")
    p.add_argument("--max-rate", type=float, default=5000, help="find-max: never above")
    p.add_argument("--step-duration", type=float, default=15, help="find-max: seconds per step")
    p.add_argument("--budget", type=float, default=420, help="find-max: seconds in all, per "
                   "worker count")
    p.add_argument("--p99-ms", type=float, default=100, help="the latency bar")
    p.add_argument("--workers", default=str(default_workers()),
                   help="API workers, or a comma list to compare (default: %(default)s)")
    p.add_argument("--quiet-below", type=float, default=30, help="before each step, wait until "
                   "the machine's CPU use is under this percent (200 = 2 cores busy; 0 = no wait)")
    p.add_argument("--quiet-wait", type=float, default=60, help="at most this many seconds")
    p.add_argument("--redis-db", type=int, default=0, help="the bench's Redis db (default "
                   "12); it is flushed before every step")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for the API process (e.g. ARCHIVE_BATCH_MS=10); repeatable")
    p.add_argument("--kind", default="generic", choices=["generic", "whatsapp"])
    p.add_argument("--concurrency", type=int, default=512, help="the generator's connection cap")
    p.add_argument("--timeout", type=float, default=10, help="client timeout per request (s)")
    args = p.parse_args()

    env = ingest_env()
    if args.redis_db:
        env["REDIS_URL"] = redis_db(env, args.redis_db)
    env.update(item.split("=", 1) for item in args.set)
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    r = redis.Redis.from_url(env["REDIS_URL"])
    s3_client = s3.client(settings)
    summary: list[str] = []
    for workers in [int(w) for w in args.workers.split(",")]:
        with api_server(env, workers) as (url, api):
            loadgen(url, env, requests=1000, concurrency=32, kind=args.kind, seed=99)  # warm up
            print(f"\nAPI workers={workers} (pids {process_tree(api.pid)})  "
                  f"loadavg before {os.getloadavg()}", flush=True)
            print(HEADER, flush=True)
            seeds = iter(range(1000 * workers, 1000 * workers + 1000))

            def run(rate: float) -> dict:
                res = step(url, env, settings, r, s3_client, api.pid, rate,
                           args.step_duration if args.find_max else args.duration,
                           next(seeds), args)
                print(row(workers, res), flush=True)
                return res

            if args.find_max:
                best, _ = find_max(run, args)
                summary.append(f"workers={workers}: highest rate with p99 < {args.p99_ms:g} ms, "
                               f"no errors, durable: {best:.0f} req/s "
                               f"({args.step_duration:g} s steps)")
            else:
                res = run(args.rate)
                summary.append(f"workers={workers}: {args.rate:.0f} req/s for "
                               f"{args.duration:g} s: {'pass' if res['passed'] else 'FAIL'} "
                               f"(p99 {res['p99_ms']:.1f} ms, errors {res['errors']}, "
                               f"{res['acked']} acknowledged messages, "
                               f"{res['missing']} missing from the stream, "
                               f"{res['missing_objects']} raw objects missing)")
    r.flushdb()
    print()
    for line in summary:
        print(line)
    print(f"loadavg after {os.getloadavg()}")


if __name__ == "__main__":
    main()
