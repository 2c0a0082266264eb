"""Faults injected under load: nothing acknowledged is lost, nothing is counted twice.

Each test runs its own Postgres cluster, Redis, S3 server, API and drain processor (see
harness.py), sends the plan's webhooks from a separate process that redelivers what was not
acknowledged (as providers do), injects one fault, lets the pipeline recover, and compares the
funnel with the reference (the same messages processed in one batch). Every test also checks
that its fault actually bit (requests refused, a run failed, data gone), so none passes by
missing its moment.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import redis

from funnel_ingest.ingest.providers import parse
from funnel_ingest.ingest.stream import stream_id_key
from funnel_ingest.local.processes import wait_for
from funnel_ingest.simulate.sender import headers_for
from funnel_ingest.simulate.webhooks import ROUTES, Sample
from tests.faults.harness import FUNNEL, FaultStack, LoadResult, Plan, write_deliveries

RATE = 120.0  # webhooks/s: the plan's ~1,200 webhooks take about 10 s


def deliveries(fs: FaultStack, plan: Plan, tmp_path: Path, order: list[int] | None = None,
               name: str = "deliveries") -> Path:
    path = tmp_path / f"{name}.jsonl"
    write_deliveries(path, plan.samples, order or list(range(len(plan.samples))), fs.env)
    return path


def under_load(fs: FaultStack, plan: Plan, tmp_path: Path, fault: Callable[[], None], *,
               after: float = 2.5, batch_size: int = 500) -> LoadResult:
    """API and drainer up, the plan's webhooks sent at RATE; `fault()` `after` seconds in; the
    load's result once every webhook was answered for good and the streams are drained."""
    fs.start_api()
    fs.start_drainer(batch_size=batch_size)
    path = deliveries(fs, plan, tmp_path)
    loader = fs.load(path, rate=RATE)
    try:
        time.sleep(after)
        fault()
    except BaseException:
        loader.kill()
        raise
    result = fs.load_result(loader, path)
    fs.wait_drained()
    return result


def check(row, plan: Plan) -> None:
    assert row.acked == row.sent == len(plan.samples), "the provider gave up on some webhooks"
    assert row.lost == 0, f"{row.lost} acknowledged messages are not in Postgres"
    assert row.duplicated == 0, f"{row.duplicated} duplicated messages or leads"
    assert row.funnel_equal, "the funnel differs from the reference"


def test_api_killed_and_restarted_mid_load(fault_stack: FaultStack, plan: Plan, tmp_path: Path,
                                           report_row) -> None:
    fs = fault_stack

    def fault() -> None:
        fs.kill("api", signal.SIGKILL)
        time.sleep(1.0)
        fs.start_api()

    result = under_load(fs, plan, tmp_path, fault)
    row = fs.verify("API process SIGKILL, restarted after 1 s", plan, result)
    report_row(row)
    assert row.refused > 0, "the kill refused no request: the fault did not bite"
    check(row, plan)


def test_redis_restarted_empty_then_replayed(fault_stack: FaultStack, plan: Plan,
                                             tmp_path: Path, report_row) -> None:
    fs = fault_stack
    backlog = 0

    def fault() -> None:
        nonlocal backlog
        drainer = fs.procs["drainer"]
        os.killpg(drainer.pid, signal.SIGSTOP)  # hold the drain: a backlog waits on the stream
        time.sleep(1.5)
        backlog = fs.streams_backlog()
        fs.kill("redis", signal.SIGKILL)
        fs.start_redis()  # nothing on disk: back empty
        os.killpg(drainer.pid, signal.SIGCONT)

    result = under_load(fs, plan, tmp_path, fault, after=2.0)
    before = fs.verify("(before replay)", plan, result)
    assert backlog > 0 and before.lost > 0, "Redis lost nothing: the fault did not bite"

    out = fs.funnel("replay", "--since", fs.started_at.isoformat())
    assert out.returncode == 0, out.stderr
    reenqueued = int(re.search(r"re-enqueued (\d+) items", out.stdout)[1])
    assert reenqueued >= before.lost
    fs.wait_drained()
    again = fs.funnel("replay", "--since", fs.started_at.isoformat(), "--dry-run")
    assert "dry run: 0 items would be re-enqueued" in again.stdout, again.stdout

    row = fs.verify("Redis SIGKILL, back empty; `funnel replay`", plan, result,
                    notes=f"{backlog} entries on the stream lost; {before.lost} messages missing "
                          f"before replay; {reenqueued} items re-enqueued")
    report_row(row)
    check(row, plan)


def test_postgres_restarted_mid_run(fault_stack: FaultStack, plan: Plan, tmp_path: Path,
                                    report_row) -> None:
    fs = fault_stack

    def fault() -> None:
        fs.stop_postgres("immediate")  # the server's processes exit at once, as on a crash
        time.sleep(2.0)
        fs.start_postgres()

    result = under_load(fs, plan, tmp_path, fault, batch_size=100)
    log = (fs.root / "logs" / "drainer.log").read_text()
    failed, retried = log.count("pass failed"), log.count("step retried")
    row = fs.verify("Postgres crash (immediate stop), restarted after 2 s", plan, result,
                    notes=f"drain: {retried} step retries (the op's retry policy), "
                          f"{failed} failed passes run again")
    report_row(row)
    assert failed + retried > 0, "no drain run failed or retried: the fault did not bite"
    assert row.refused == 0, "ingest does not need Postgres: nothing should be refused"
    check(row, plan)


def _last_generated(fs: FaultStack) -> str:
    r = redis.Redis(port=fs.redis_port, decode_responses=True)
    key = fs.settings.stream_keys()[0]
    return r.xinfo_stream(key)["last-generated-id"] if r.exists(key) else "0-0"


def probe_refused(fs: FaultStack, probe: Sample, hold: float) -> float:
    """While S3 is out: `probe` is answered 503 (archive unavailable) and nothing is appended
    for `hold` seconds after it; the seconds the 503 took."""
    time.sleep(0.5)  # requests in flight when the fault began settle
    seen_before = _last_generated(fs)
    started = time.monotonic()
    answer = httpx.post(fs.api_url + ROUTES[probe.source], content=probe.body,
                        headers=headers_for(probe, fs.env), timeout=30)
    took = time.monotonic() - started
    assert answer.status_code == 503, answer.text
    assert "s3" in answer.text.lower() or "archive" in answer.text.lower(), answer.text
    time.sleep(hold)
    assert _last_generated(fs) == seen_before, "something was appended while the store was out"
    return took


def test_s3_stopped_refuses_then_accepts(fault_stack: FaultStack, plan: Plan, tmp_path: Path,
                                         report_row) -> None:
    fs = fault_stack

    def fault() -> None:
        fs.kill("s3", signal.SIGKILL)
        probe_refused(fs, plan.samples[-1], hold=1.5)
        fs.start_s3()

    result = under_load(fs, plan, tmp_path, fault)
    row = fs.verify("S3 server SIGKILL, restarted after 2.5 s", plan, result,
                    notes="probe during the outage: 503, no stream entry")
    report_row(row)
    assert row.refused > 0, "no request was refused: the fault did not bite"
    check(row, plan)


def test_s3_hanging_gets_a_bounded_503_then_accepts(fault_stack: FaultStack, plan: Plan,
                                                    tmp_path: Path, report_row) -> None:
    fs = fault_stack
    fs.extra_env["ARCHIVE_TIMEOUT_SECONDS"] = "2"
    took = 0.0

    def fault() -> None:
        nonlocal took
        s3 = fs.procs["s3"]
        s3.send_signal(signal.SIGSTOP)  # a partition: connections open, nothing answers
        try:
            took = probe_refused(fs, plan.samples[-1], hold=1.0)
        finally:
            s3.send_signal(signal.SIGCONT)
        assert took < 2 + 1.5, f"the 503 took {took:.1f} s with a 2 s archive timeout"

    result = under_load(fs, plan, tmp_path, fault)
    row = fs.verify("S3 server hung (SIGSTOP) for about 3.5 s", plan, result,
                    notes=f"probe during the hang: 503 after {took:.1f} s "
                          "(ARCHIVE_TIMEOUT_SECONDS=2), no stream entry")
    report_row(row)
    assert row.refused > 0, "no request was refused: the fault did not bite"
    check(row, plan)


def test_drain_killed_half_way_then_rerun(fault_stack: FaultStack, plan: Plan, tmp_path: Path,
                                          report_row) -> None:
    fs = fault_stack
    fs.start_api()
    path = deliveries(fs, plan, tmp_path)
    result = fs.load_result(fs.load(path, rate=400), path)
    backlog = fs.streams_backlog()
    assert backlog > 0
    drain = subprocess.Popen([FUNNEL, "drain", "--batch-size", "50"], env=fs._child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)

    stream = fs.settings.stream_keys()[0]

    def committed_offset() -> str | None:
        with psycopg.connect(fs.env["DATABASE_URL"]) as conn:
            row = conn.execute("SELECT last_id FROM stream_offsets WHERE stream = %s",
                               (stream,)).fetchone()
            return row[0] if row else None

    r = redis.Redis(port=fs.redis_port)
    ids = [i.decode() for i, _ in r.xrange(stream)]
    half = stream_id_key(ids[len(ids) // 2])
    wait_for(lambda: (o := committed_offset()) and stream_id_key(o) >= half, 120, 0.01,
             "half the backlog committed", tolerate_errors=True)
    os.killpg(drain.pid, signal.SIGKILL)
    drain.wait()
    left = len(r.xrange(stream, min=f"({committed_offset()}", max="+"))
    assert 0 < left < backlog, "the run was not killed half-way"
    offset = stream_id_key(committed_offset())
    assert left == sum(stream_id_key(i) > offset for i in ids), \
        "an entry beyond the committed offset left the stream"
    rerun = fs.funnel("drain")
    assert rerun.returncode == 0, rerun.stderr
    assert fs.streams_backlog() == 0
    assert "nothing to drain" in fs.funnel("drain").stdout
    row = fs.verify("`funnel drain` SIGKILL half-way, re-run", plan, result,
                    notes=f"killed with {left} of {backlog} entries left")
    report_row(row)
    check(row, plan)


def _duplicates_counted(fs: FaultStack) -> float:
    text = httpx.get(fs.api_url + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^funnel_duplicates_total\{[^}]*\} (\S+)$", text,
                                            re.M))


def test_every_payload_five_times_in_reverse_order(fault_stack: FaultStack, plan: Plan,
                                                   tmp_path: Path, report_row) -> None:
    fs = fault_stack
    fs.start_api()
    fs.start_drainer()
    n = len(plan.samples)
    order = [i for i in reversed(range(n)) for _ in range(5)]  # copies in flight together
    path = deliveries(fs, plan, tmp_path, order)
    result = fs.load_result(fs.load(path, rate=600, concurrency=64), path, timeout=300)
    fs.wait_drained()
    items, distinct = 0, set()
    for s in plan.samples:
        part = parse(s.source, s.body)
        keys = [m.idempotency_key() for m in part.messages] + [
            st.idempotency_key() for st in part.statuses]
        items += 5 * len(keys)
        distinct.update(keys)
    row = fs.verify("every payload 5 times, in reverse order", plan, result,
                    notes=f"{result.deliveries} requests; the API counted "
                          f"{_duplicates_counted(fs):.0f} redeliveries")
    report_row(row)
    assert _duplicates_counted(fs) == items - len(distinct)
    check(row, plan)
