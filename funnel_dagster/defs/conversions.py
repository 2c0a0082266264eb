"""Feedback to the ads: the Conversions API outbox delivered to Meta (docs/conversions.md).

    funnel ──(triggers, same transaction)──> meta_conversions ──> Meta's Conversions API

The outbox is written by Postgres itself whenever the funnel changes; `meta_conversions_sensor`
(every 30 s) launches `meta_conversions_job` when events are due and the Conversions API is
configured, and each run of it is one delivery pass (`funnel_ingest.conversions.delivery`),
recorded as a materialization of `meta_conversions` with the outbox's counts. The pass does its
own retries (per event, with backoff), so the job has no retry policy.
"""

import dagster as dg

from funnel_dagster.defs.assets import OWNERS
from funnel_dagster.defs.resources import PostgresResource
from funnel_dagster.metadata import md_cell
from funnel_ingest.conversions import outbox
from funnel_ingest.conversions.delivery import DeliveryReport, deliver, missing_settings
from funnel_ingest.settings import get_settings

JOB = "meta_conversions_job"
_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _counts_metadata(counts: outbox.Counts, errors: list[dict]) -> dict:
    by_event = "| event | " + " | ".join(outbox.STATUSES) + " |\n|---|" + "---|" * len(
        outbox.STATUSES) + "\n" + "\n".join(
        f"| {name} | " + " | ".join(str(n) for n in statuses.values()) + " |"
        for name, statuses in counts.by_event.items())
    last = "| event | status | attempts | answer |\n|---|---|---|---|\n" + "\n".join(
        f"| {md_cell(e['event_id'])} | {e['status']} | {e['attempts']} | {md_cell(e['error'])} |"
        for e in errors)
    return {**counts.by_status, "due": counts.due, "in_flight": counts.in_flight,
            "dagster/row_count": sum(counts.by_status.values()),
            **({"next_attempt_at": dg.MetadataValue.timestamp(counts.next_attempt_at)}
               if counts.next_attempt_at else {}),
            "by_event": dg.MetadataValue.md(by_event),
            "last_errors": dg.MetadataValue.md(last if errors else "none")}


def _pass_metadata(report: DeliveryReport | None) -> dict:
    if report is None:
        return {"pass": "not run: the Conversions API is off"}
    return {"pass_requests": report.requests, "pass_sent": report.sent,
            "pass_retried": report.retried, "pass_failed": report.failed,
            "pass_expired": report.expired, "pass_seconds": round(report.seconds, 2),
            "pass_stopped": report.stopped or ""}


@dg.asset(deps=["funnel"], group_name="feedback", owners=OWNERS, kinds={"postgres", "meta"},
          metadata={"dagster/table_name": "conversion_events"})
def meta_conversions(context: dg.AssetExecutionContext,
                     postgres: PostgresResource) -> dg.MaterializeResult:
    """What Meta's Conversions API was told about Click-to-WhatsApp leads: LeadSubmitted at the
    lead, Schedule at its booking, Purchase (value in IDR) at its transaction, each with the
    lead's ad click id (ctwa_clid), so the ad account optimizes for leads that pay. The outbox
    table conversion_events is filled by triggers on funnel; a materialization is one delivery
    pass: due events posted in batches, Meta's answer kept per event, failures retried with
    backoff. Metadata: events sent, failed, pending (due, in flight), expired, cancelled."""
    settings = get_settings()
    report = None
    with postgres.connect(autocommit=True) as conn:
        missing = missing_settings(settings)
        if missing:
            context.log.warning(f"the Conversions API is off (set {', '.join(missing)}): "
                                "nothing sent")
        else:
            report = deliver(conn, settings, log=context.log.info)
            context.log.info(f"sent {report.sent} events in {report.requests} requests; "
                             f"{report.retried} to retry, {report.failed} failed, "
                             f"{report.expired} expired")
            if report.stopped:
                context.log.warning(f"stopped: {report.stopped}; its events are retried later")
        metadata = _counts_metadata(outbox.counts(conn, settings.conversion_event_names),
                                    outbox.recent_errors(conn))
    return dg.MaterializeResult(metadata={**metadata, **_pass_metadata(report)})


meta_conversions_job = dg.define_asset_job(
    JOB, selection=dg.AssetSelection.assets("meta_conversions"),
    description="One delivery pass of the Conversions API outbox (the sensor launches it when "
                "events are due).")


@dg.sensor(job_name=JOB, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def meta_conversions_sensor(context: dg.SensorEvaluationContext,
                            postgres: PostgresResource) -> dg.RunRequest | dg.SkipReason:
    """Launches a delivery pass of the Conversions API outbox when events are due and no pass
    is running; says why not otherwise (off, nothing due, a pass in progress)."""
    settings = get_settings()
    missing = missing_settings(settings)
    if missing:
        return dg.SkipReason(f"the Conversions API is off: set {', '.join(missing)}")
    if context.instance.get_runs(dg.RunsFilter(job_name=JOB, statuses=_IN_PROGRESS), limit=1):
        return dg.SkipReason("a delivery pass is in progress")
    with postgres.connect() as conn:
        counts = outbox.counts(conn, settings.conversion_event_names)
    if not counts.due:
        upcoming = (f", next attempt at {counts.next_attempt_at:%Y-%m-%d %H:%M:%S %Z}"
                    if counts.next_attempt_at else "")
        return dg.SkipReason(f"no event due ({counts.by_status['pending']} pending{upcoming})")
    return dg.RunRequest(tags={"funnel/due_events": str(counts.due)})
