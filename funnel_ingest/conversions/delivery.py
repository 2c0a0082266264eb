"""One delivery pass over the outbox: expire what Meta would refuse as too old, then claim a
batch of due events, post it, record Meta's answer on each of its events, and claim the next,
until nothing is due (or `max_batches`).

A batch Meta refuses with a 400 is split in halves and each half sent again at once, down to
single events, so one bad event neither holds back the others nor leaves them with its error.
An answer about the request (no answer, 5xx, throttling, the token) ends the pass: every event
would meet it, so its batch backs off and the rest waits for the next pass. The Dagster asset
`meta_conversions` and `funnel conversions send` both run `deliver`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from funnel_ingest.conversions import outbox
from funnel_ingest.conversions.meta import Answer, MetaClient, OutboxEvent, Verdict, event
from funnel_ingest.settings import Settings


class NotConfigured(RuntimeError):
    """The Conversions API is off: a setting it needs is empty."""


def missing_settings(settings: Settings) -> list[str]:
    """The settings the Conversions API needs that are empty (none: it is on)."""
    needed = {"META_CAPI_DATASET_ID": settings.meta_capi_dataset_id,
              "META_CAPI_ACCESS_TOKEN": settings.meta_capi_access_token.get_secret_value(),
              "WHATSAPP_BUSINESS_ACCOUNT_ID": settings.whatsapp_business_account_id}
    return [name for name, value in needed.items() if not value]


@dataclass
class DeliveryReport:
    requests: int = 0     # requests posted to Meta (a split batch makes several)
    sent: int = 0         # events Meta accepted
    retried: int = 0      # events whose attempt failed and that will be tried again
    failed: int = 0       # events that failed their last attempt
    expired: int = 0      # events too old for Meta, never sent
    stopped: str | None = None  # why the pass stopped before the outbox was empty
    seconds: float = 0.0


def deliver(conn: psycopg.Connection, settings: Settings, *, client: MetaClient | None = None,
            max_batches: int | None = None,
            log: Callable[[str], None] = lambda _msg: None) -> DeliveryReport:
    """Send the due events of the outbox (`conn`: autocommit). Raises NotConfigured when the
    Conversions API is off; never for what Meta or the network does (that is recorded)."""
    missing = missing_settings(settings)
    if missing:
        raise NotConfigured(f"the Conversions API is off: set {', '.join(missing)}")
    t0 = time.perf_counter()
    report = DeliveryReport()
    started = outbox.now(conn)
    max_age = settings.conversions_max_event_age_hours * 3600
    report.expired = outbox.expire(conn, max_age)
    if report.expired:
        log(f"{report.expired} events older than Meta accepts expired (never sent)")
    backoff = outbox.Backoff(settings.conversions_max_attempts,
                             settings.conversions_retry_base_seconds,
                             settings.conversions_retry_max_seconds)
    meta = client or MetaClient(settings)
    batches = 0
    try:
        while max_batches is None or batches < max_batches:
            token = uuid.uuid4()
            rows = outbox.claim(conn, token, names=settings.conversion_event_names,
                                limit=settings.conversions_batch_size,
                                lease_seconds=settings.conversions_claim_seconds,
                                max_age_seconds=max_age, due_by=started)
            if not rows:
                break
            batches += 1
            try:
                stop = _send(conn, meta, settings, token, rows, backoff, report, log)
            finally:
                outbox.release(conn, token, settings.conversions_claim_seconds)
            if stop:
                report.stopped = stop
                break
    finally:
        if client is None:
            meta.close()
    report.seconds = time.perf_counter() - t0
    return report


def _send(conn: psycopg.Connection, meta: MetaClient, settings: Settings, token: uuid.UUID,
          rows: Sequence[OutboxEvent], backoff: outbox.Backoff, report: DeliveryReport,
          log: Callable[[str], None]) -> str | None:
    """Post `rows` and record the answer; a refused batch is split. Returns why the pass must
    stop (Meta unavailable), else None."""
    events = [event(r, settings.whatsapp_business_account_id) for r in rows]
    answer = meta.post(events)
    report.requests += 1
    if answer.verdict is Verdict.ACCEPTED:
        report.sent += outbox.record_sent(conn, rows, events, answer,
                                          settings.conversions_claim_seconds)
        return None
    if answer.verdict is Verdict.REFUSED and len(rows) > 1:
        half = len(rows) // 2
        log(f"Meta refused a batch of {len(rows)} events ({answer.error}); sending it in halves")
        return (_send(conn, meta, settings, token, rows[:half], backoff, report, log)
                or _send(conn, meta, settings, token, rows[half:], backoff, report, log))
    return _failed(conn, token, rows, answer, backoff, settings.conversions_claim_seconds,
                   report, log)


def _failed(conn: psycopg.Connection, token: uuid.UUID, rows: Sequence[OutboxEvent],
            answer: Answer, backoff: outbox.Backoff, patience: float, report: DeliveryReport,
            log: Callable[[str], None]) -> str | None:
    retried, failed = outbox.record_failed(conn, token, rows, answer, backoff, patience)
    report.retried += retried
    report.failed += failed
    what = rows[0].event_id if len(rows) == 1 else f"{len(rows)} events"
    log(f"{what}: {answer.error} ({retried} to retry, {failed} failed)")
    if answer.verdict is Verdict.UNAVAILABLE:
        return f"Meta unavailable: {answer.error}"
    return None
