"""A sensor-launched drain run whose worker dies mid-chunk (SIGKILL), and the daemon killed and
restarted meanwhile; the sensor hands the range out again, and the funnel ends as if nothing
happened: every message stored once, the funnel equal to a full rebuild of them.

Two ways it happens: the worker alone is killed (its code server, still alive, reports the run
failed), and the daemon's whole process tree is killed at once, worker and code server with it,
as when its container dies (nobody is left to report: run monitoring finds the worker gone,
through the launcher's health check, and fails the run). (Runs after test_launch_paths: it kills
the daemon of the shared deployment and restarts it.)"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from funnel_dagster.launcher import process_started_at
from funnel_ingest.local.processes import wait_for
from funnel_ingest.simulate.conversations import customers_for_messages, simulate
from tests.deployment.test_launch_paths import KEYS, rebuilt
from tests.faults.harness import funnel_rows
from tests.private_stack import Deployment

pytestmark = pytest.mark.timeout(420)

MESSAGES = 30_000  # one chunk of several seconds: the kill lands inside it


def _worker_pid(dep: Deployment, run_id: str) -> int | None:
    """The run worker's pid, from the engine event it logs when it starts (what the launcher's
    health check reads)."""
    data = dep.dagster.graphql("""
        query Events($id: ID!) { logsForRun(runId: $id) { ... on EventConnection {
          events { __typename ... on EngineEvent { message } } } } }""", {"id": run_id})
    for event in data["logsForRun"].get("events", []):
        message = event.get("message") or ""
        if message.startswith("Started process for run (pid: "):
            return int(message.split("pid: ", 1)[1].rstrip(")."))
    return None


_FAILURE = """
query Failure($id: ID!) { logsForRun(runId: $id) { ... on EventConnection {
  events { __typename ... on RunFailureEvent { message } ... on EngineEvent { message } } } } }
"""


def _failure_messages(dep: Deployment, run_id: str) -> list[str]:
    data = dep.dagster.graphql(_FAILURE, {"id": run_id})["logsForRun"]
    return [e.get("message") or "" for e in data.get("events", [])]


@pytest.mark.parametrize("crash", ["worker, then the daemon", "the daemon's whole tree"])
def test_a_drain_run_killed_mid_chunk_is_failed_and_its_range_handed_out_again(
        deployment: Deployment, crash: str):
    dep = deployment
    dep.wait_drained()
    seed = 20261202 if not crash.startswith("worker") else 20261203
    sensor_runs = {r["runId"] for r in dep.dagster.runs(
        **{"dagster/sensor_name": "message_stream_sensor"})}
    start = datetime.now(timezone.utc) - timedelta(days=1)
    sim = simulate(customers_for_messages(MESSAGES, days=1), seed=seed, start=start, days=1)
    messages = [s.message for s in sim.messages]
    r = dep.redis()
    stream = dep.settings.stream_key(0)
    try:
        pipe = r.pipeline(transaction=False)
        for m in messages:
            pipe.xadd(stream, m.to_fields())
        ids = pipe.execute()
        last_id = ids[-1].decode()
    finally:
        r.close()

    # the sensor hands the range to a new drain run; wait for its worker to be busy with it
    def new_run() -> dict | None:
        runs = [x for x in dep.dagster.runs(**{"dagster/sensor_name": "message_stream_sensor"})
                if x["runId"] not in sensor_runs and x["status"] == "STARTED"]
        return runs[0] if runs else None

    run = wait_for(new_run, 60, 0.2, "a started drain run for the new range")
    pid = wait_for(lambda: _worker_pid(dep, run["runId"]), 30, 0.2, "the run worker's pid")
    assert process_started_at(pid) is not None
    time.sleep(1.0)  # reading and classifying the chunk
    whole_tree = crash == "the daemon's whole tree"
    if not whole_tree:
        os.kill(pid, signal.SIGKILL)
    dep.dagster.restart_daemon(signal.SIGKILL, whole_group=whole_tree)
    assert process_started_at(pid) is None, "the run worker survived"
    with dep.connect() as conn:
        offset = conn.execute("SELECT last_id FROM stream_offsets WHERE stream = %s",
                              (stream,)).fetchone()
    assert offset is None or offset[0] != last_id, "the run had committed its chunk already"

    killed = wait_for(lambda: (x := dep.dagster.run(run["runId"]))["status"] != "STARTED" and x,
                      90, 1, "the killed run marked as failed")
    assert killed["status"] == "FAILURE", killed
    if whole_tree:  # failed by the daemon's run monitoring, from the launcher's health check
        assert any(f"run worker process {pid} is gone" in m
                   for m in _failure_messages(dep, run["runId"])), \
            _failure_messages(dep, run["runId"])
    dep.wait_drained(180)

    def retried() -> list[dict]:
        return [x for x in dep.dagster.runs(**{"dagster/sensor_name": "message_stream_sensor"})
                if x["runId"] not in sensor_runs | {run["runId"]} and x["status"] == "SUCCESS"]

    assert wait_for(retried, 60, 1, "a successful drain run after the failure")
    with dep.connect() as conn:
        stored = {k for k in conn.execute(KEYS).fetchall()}
        offset = conn.execute("SELECT last_id FROM stream_offsets WHERE stream = %s",
                              (stream,)).fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM classified_messages").fetchone()[0]
        funnel = funnel_rows(conn)
    expected = {(m.source, m.message_id, m.room_key) for m in messages}
    assert expected <= stored, f"{len(expected - stored)} messages lost"
    assert rows == len(stored)  # each stored once
    assert offset == last_id
    assert funnel == rebuilt(dep)
