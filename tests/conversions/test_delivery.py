"""Delivery of the outbox to Meta's Conversions API, against a local server that checks the
documented request shape: every event once, Meta's answers kept per event, retries with
backoff, nothing sent when the feature is off, and exactly-once under a killed delivery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from funnel_ingest.conversions.delivery import NotConfigured, deliver
from tests.conversions.conftest import (
    ACCESS_TOKEN,
    BUSINESS_ACCOUNT_ID,
    DATASET_ID,
    ctwa,
    outbox_rows,
    recent,
)
from tests.conversions.meta_capi import graph_error

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def state(conn) -> dict[str, tuple]:
    """event_id -> (status, attempts, response_status, error)."""
    return {row[0]: tuple(row[1:]) for row in conn.execute(
        "SELECT event_id, status, attempts, response_status, error FROM conversion_events")}


def deliver_when_due(conn, settings, timeout: float = 10.0):
    """Run delivery passes until one finds something due (the backoff has passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = deliver(conn, settings)
        if report.requests:
            return report
        time.sleep(0.05)
    raise AssertionError("nothing became due")


def test_every_event_reaches_meta_once_in_the_documented_shape(conv_db, ingest, meta,
                                                               capi_settings):
    paid = ctwa(recent(), book=timedelta(minutes=10), pay=timedelta(minutes=40))
    just_asking = ctwa(recent(1))
    ingest(*paid.bodies, *just_asking.bodies)
    queued = {row[2]: row for row in outbox_rows(conv_db)}
    assert len(queued) == 4

    report = deliver(conv_db, capi_settings)
    assert (report.sent, report.requests, report.retried, report.failed) == (4, 1, 0, 0)
    assert meta.violations == []
    assert sorted(meta.accepted_ids()) == sorted(queued)
    for e in meta.accepted:
        lead_id, name, event_id, event_time, clid, value, _ = queued[e["event_id"]]
        assert e["event_name"] == name
        assert e["event_time"] == int(event_time.timestamp())
        assert e["user_data"] == {"whatsapp_business_account_id": BUSINESS_ACCOUNT_ID,
                                  "ctwa_clid": clid}
        assert e.get("custom_data") == (
            {"currency": "IDR", "value": 1_500_000} if name == "Purchase" else None)
    assert {e["user_data"]["ctwa_clid"] for e in meta.accepted} == {paid.clid, just_asking.clid}
    # recorded per event: sent, one attempt, Meta's answer, the event as it was sent
    rows = conv_db.execute("SELECT event_id, status, attempts, response_status, response_body, "
                           "sent_event FROM conversion_events").fetchall()
    sent = {e["event_id"]: e for e in meta.accepted}
    for event_id, status, attempts, http, body, event in rows:
        assert (status, attempts, http) == ("sent", 1, 200)
        assert '"events_received": 4' in body
        assert event == sent[event_id]
    # nothing is due any more: a second pass posts nothing
    assert deliver(conv_db, capi_settings).requests == 0
    assert len(meta.requests) == 1


def test_batches_hold_at_most_the_batch_size(conv_db, ingest, meta, capi_settings):
    convs = [ctwa(recent(), book=timedelta(minutes=5)) for _ in range(3)]
    ingest(*[b for c in convs for b in c.bodies])
    report = deliver(conv_db, capi_settings.replace(conversions_batch_size=4))
    assert [len(req.events) for req in meta.requests] == [4, 2]
    assert report.sent == 6 and Counter(meta.accepted_ids()).most_common(1)[0][1] == 1


def test_switched_off_nothing_reaches_the_network(conv_db, ingest, meta, settings,
                                                  capi_settings, stack_env, tmp_path):
    c = ctwa(recent(), book=timedelta(minutes=5))
    ingest(*c.bodies)
    off = capi_settings.replace(meta_capi_access_token="")
    with pytest.raises(NotConfigured, match="set META_CAPI_ACCESS_TOKEN"):
        deliver(conv_db, off)
    env = {**os.environ, **stack_env, "META_GRAPH_URL": meta.graph_url,
           "META_CAPI_DATASET_ID": DATASET_ID, "META_CAPI_ACCESS_TOKEN": ""}
    out = subprocess.run([str(VENV_PYTHON), "-m", "funnel_ingest.cli", "conversions", "send"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "funnel conversions send: the Conversions API is off: set META_CAPI_ACCESS_TOKEN, "
        "WHATSAPP_BUSINESS_ACCOUNT_ID"]
    assert meta.requests == []
    assert {row[6] for row in outbox_rows(conv_db)} == {"pending"}  # kept for when it is on


def test_a_refused_event_keeps_meta_s_answer_backs_off_and_fails_alone(conv_db, ingest, meta,
                                                                       capi_settings):
    good, bad = ctwa(recent(), book=timedelta(minutes=5)), ctwa(recent())
    ingest(*good.bodies, *bad.bodies)
    [bad_id] = [row[2] for row in outbox_rows(conv_db) if row[4] == bad.clid]
    meta.refused_ids.add(bad_id)
    fast = capi_settings.replace(conversions_retry_base_seconds=0.2,
                                 conversions_retry_max_seconds=0.3)

    report = deliver(conv_db, fast)
    # the batch of three is refused whole, then split until the bad event stands alone
    assert len(meta.requests[0].events) == 3
    refused = [req for req in meta.requests if req.status == 400]
    assert all(bad_id in {e["event_id"] for e in req.events} for req in refused)
    assert len(refused[-1].events) == 1
    assert (report.sent, report.retried, report.failed) == (2, 1, 0)
    assert meta.violations == []
    assert sorted(meta.accepted_ids()) == sorted(set(state(conv_db)) - {bad_id})
    status, attempts, http, error = state(conv_db)[bad_id]
    assert (status, attempts, http) == ("pending", 1, 400)
    assert error == (f"HTTP 400: Invalid parameter: ctwa_clid of {bad_id} is not a click of "
                     "this business (code 100)")
    body, wait = conv_db.execute(
        "SELECT response_body, extract(epoch FROM next_attempt_at - updated_at) "
        "FROM conversion_events WHERE event_id = %s", (bad_id,)).fetchone()
    assert '"code": 100' in body and float(wait) == pytest.approx(0.2)

    deliver_when_due(conv_db, fast)  # second attempt: waits doubled, capped at 0.3 s
    assert state(conv_db)[bad_id][:2] == ("pending", 2)
    assert float(conv_db.execute(
        "SELECT extract(epoch FROM next_attempt_at - updated_at) FROM conversion_events "
        "WHERE event_id = %s", (bad_id,)).fetchone()[0]) == pytest.approx(0.3)
    report = deliver_when_due(conv_db, fast)  # the third and last attempt
    assert (report.failed, state(conv_db)[bad_id][:3]) == (1, ("failed", 3, 400))
    assert deliver(conv_db, fast).requests == 0  # failed events are not sent again
    assert [r for r, n in Counter(meta.accepted_ids()).items() if n > 1] == []


def test_server_errors_and_timeouts_stop_the_pass_and_are_retried(conv_db, ingest, meta,
                                                                  capi_settings):
    convs = [ctwa(recent(), book=timedelta(minutes=5)) for _ in range(2)]
    ingest(*[b for c in convs for b in c.bodies])
    fast = capi_settings.replace(conversions_batch_size=2, conversions_retry_base_seconds=0.2,
                                 conversions_retry_max_seconds=0.2)
    meta.script.extend([graph_error("Service temporarily unavailable", code=2, status=503,
                                    transient=True), "stall"])

    report = deliver(conv_db, fast)  # 503: the pass stops after its first batch
    assert report.stopped == ("Meta unavailable: HTTP 503: Service temporarily unavailable "
                              "(code 2)")
    first = {e["event_id"] for e in meta.requests[0].events}
    assert {k: v[:3] for k, v in state(conv_db).items() if k in first} == dict.fromkeys(
        first, ("pending", 1, 503))
    assert {v[:2] for k, v in state(conv_db).items() if k not in first} == {("pending", 0)}

    before = {k: v[1] for k, v in state(conv_db).items()}
    report = deliver_when_due(conv_db, fast)  # no answer within the timeout
    assert report.stopped == "Meta unavailable: no answer within 1 s"
    stalled = {e["event_id"] for e in meta.requests[1].events}
    assert {k: state(conv_db)[k] for k in stalled} == {
        k: ("pending", before[k] + 1, None, "no answer within 1 s") for k in stalled}

    time.sleep(0.25)  # past every backoff
    assert deliver(conv_db, fast).stopped is None
    assert {v[0] for v in state(conv_db).values()} == {"sent"}
    assert meta.violations == []
    # the stalled request did reach Meta: its events arrived twice, with the same ids
    deadline = time.monotonic() + 10
    while len(meta.accepted) < len(state(conv_db)) + len(stalled):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sorted(meta.accepted_ids()) == sorted([*state(conv_db), *stalled])


def test_events_older_than_meta_accepts_expire_unsent(conv_db, ingest, meta, capi_settings):
    c = ctwa(recent(24 * 8), book=timedelta(days=8) - timedelta(hours=1))
    ingest(*c.bodies)
    report = deliver(conv_db, capi_settings)
    assert (report.expired, report.sent) == (1, 1)
    assert [e["event_name"] for e in meta.accepted] == ["Schedule"]
    assert {row[1]: row[6] for row in outbox_rows(conv_db)} == {
        "LeadSubmitted": "expired", "Schedule": "sent"}
    assert meta.violations == []


def test_event_names_left_out_of_the_setting_stay_pending(conv_db, ingest, meta, capi_settings):
    c = ctwa(recent(), book=timedelta(minutes=5), pay=timedelta(minutes=9))
    ingest(*c.bodies)
    deliver(conv_db, capi_settings.replace(conversions_events="LeadSubmitted,Purchase"))
    assert sorted(e["event_name"] for e in meta.accepted) == ["LeadSubmitted", "Purchase"]
    assert {row[1]: row[6] for row in outbox_rows(conv_db)}["Schedule"] == "pending"


def _recording_session(conn, database: str) -> int | None:
    """The server process of the session of `database` that has tried to record a batch
    Meta accepted, if there is one."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s "
        "AND query LIKE '%%SET status = ''sent''%%'", (database,)).fetchone()
    return row[0] if row else None


def test_a_delivery_killed_between_meta_s_answer_and_its_record_loses_no_event_and_makes_no_second(  # noqa: E501
        conv_db, ingest, meta, settings, stack_env, tmp_path):
    convs = [ctwa(recent(), book=timedelta(minutes=5)) for _ in range(3)]
    ingest(*[b for c in convs for b in c.bodies])
    queued = {row[2] for row in outbox_rows(conv_db)}
    assert len(queued) == 6
    env = {**os.environ, **stack_env, "DATABASE_URL": settings.database_url,
           "META_GRAPH_URL": meta.graph_url, "META_CAPI_DATASET_ID": DATASET_ID,
           "META_CAPI_ACCESS_TOKEN": ACCESS_TOKEN,
           "WHATSAPP_BUSINESS_ACCOUNT_ID": BUSINESS_ACCOUNT_ID, "CONVERSIONS_BATCH_SIZE": "2",
           "CONVERSIONS_CLAIM_SECONDS": "5"}
    command = [str(VENV_PYTHON), "-m", "funnel_ingest.cli", "conversions", "send"]

    # Meta accepts the first batch; before its answer leaves, the test locks the batch's rows,
    # so the delivery, once it has the answer, cannot record it (its record skips rows another
    # transaction holds, and tries again); then it is killed
    blocker = psycopg.connect(settings.database_url)
    answered = threading.Event()

    def hold_the_record(events: list[dict]) -> None:
        if not answered.is_set():
            blocker.execute("SELECT 1 FROM conversion_events WHERE event_id = ANY(%s) "
                            "FOR UPDATE", ([e["event_id"] for e in events],))
            answered.set()

    meta.before_answer = hold_the_record
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert answered.wait(60), proc.communicate(timeout=5)
        database = conv_db.info.dbname
        deadline = time.monotonic() + 30
        while (session := _recording_session(conv_db, database)) is None:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        while conv_db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                              (session,)).fetchone()[0]:  # its session ended with it
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        blocker.rollback()
        blocker.close()
    first = {e["event_id"] for e in meta.requests[0].events}
    assert len(meta.requests) == 1 and first <= set(meta.accepted_ids())
    # Meta has the batch, the outbox does not know: still pending under the dead claim
    claimed = conv_db.execute("SELECT event_id, status, attempts, claimed_until > now() "
                              "FROM conversion_events WHERE claim_token IS NOT NULL"
                              ).fetchall()
    assert sorted(claimed) == sorted((i, "pending", 0, True) for i in first)

    # the next delivery, once the dead claim has run out, sends the rest and that batch again
    while conv_db.execute("SELECT bool_or(claimed_until > now()) FROM conversion_events"
                          ).fetchone()[0]:
        time.sleep(0.1)
    meta.before_answer = None
    out = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("sent 6 events in 3 requests")
    assert ACCESS_TOKEN not in out.stdout + out.stderr

    received = Counter(meta.accepted_ids())
    assert set(received) == queued                                  # none lost
    assert {i for i, n in received.items() if n > 1} == first       # resent: the killed batch
    assert max(received.values()) == 2
    for event_id in first:  # the two copies are one event: the same id, the same content
        a, b = [e for e in meta.accepted if e["event_id"] == event_id]
        assert a == b
    assert meta.violations == []
    assert {v[:2] for v in state(conv_db).values()} == {("sent", 1)}


def test_the_cli_shows_the_outbox_and_queues_failed_events_again(conv_db, ingest, meta,
                                                                   capi_env, capsys):
    from funnel_ingest.cli import main

    c = ctwa(recent())
    ingest(*c.bodies)
    [(_, _, event_id, *_)] = outbox_rows(conv_db)
    meta.refused_ids.add(event_id)
    capi_env.setenv("CONVERSIONS_MAX_ATTEMPTS", "1")
    assert main(["conversions", "send"]) == 0
    assert capsys.readouterr().out.startswith(
        "sent 0 events in 1 requests; 0 to retry, 1 failed, 0 expired (")
    assert main(["conversions", "status"]) == 0
    error = (f"HTTP 400: Invalid parameter: ctwa_clid of {event_id} is not a click of this "
             "business (code 100)")
    assert capsys.readouterr().out.splitlines() == [
        "Conversions API: on",
        "pending 0, sent 0, failed 1, expired 0, cancelled 0; due now 0, in flight 0",
        "  LeadSubmitted  failed 1",
        "last errors:",
        f"  {event_id} [failed, 1 attempts]: {error}"]

    meta.refused_ids.clear()
    assert main(["conversions", "retry"]) == 0
    assert capsys.readouterr().out == "1 failed events pending again\n"
    assert main(["conversions", "send"]) == 0
    assert capsys.readouterr().out.startswith("sent 1 events in 1 requests")
    assert main(["conversions", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["enabled"], status["by_status"]["sent"], status["due"]) == (True, 1, 0)
    assert meta.accepted_ids() == [event_id]


def test_recording_an_answer_never_waits_for_a_writer_holding_its_rows(conv_db, ingest, meta,
                                                                       settings, capi_settings):
    """A drain's transaction that holds one event of a batch (its trigger updated the event)
    and then wants another: the delivery records what it can lock, the drain goes on, the
    rest is recorded once the drain commits. A record that waited for the first row while
    holding the second would deadlock with it."""
    c = ctwa(recent(), book=timedelta(minutes=5))
    ingest(*c.bodies)
    ids = {row[1]: row[2] for row in outbox_rows(conv_db)}
    drain = psycopg.connect(settings.database_url)
    drain.execute("SET lock_timeout = '5s'")
    watch = psycopg.connect(settings.database_url, autocommit=True)
    held = threading.Event()

    def drain_updates_the_lead(events: list[dict]) -> None:
        drain.execute("UPDATE conversion_events SET updated_at = now() WHERE event_id = %s",
                      (ids["LeadSubmitted"],))
        held.set()

    meta.before_answer = drain_updates_the_lead
    result: list = []
    worker = threading.Thread(target=lambda: result.append(deliver(conv_db, capi_settings)))
    worker.start()
    try:
        assert held.wait(30)
        deadline = time.monotonic() + 30
        while _recording_session(watch, watch.info.dbname) is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # the drain's next statement touches the other event of the batch: no wait, no deadlock
        drain.execute("UPDATE conversion_events SET updated_at = now() WHERE event_id = %s",
                      (ids["Schedule"],))
        assert state(watch)[ids["Schedule"]][:2] == ("sent", 1)
        assert state(watch)[ids["LeadSubmitted"]][:2] == ("pending", 0)
        drain.commit()
        worker.join(30)
    finally:
        drain.close()
        watch.close()
    assert result[0].sent == 2
    assert {v[:2] for v in state(conv_db).values()} == {("sent", 1)}
