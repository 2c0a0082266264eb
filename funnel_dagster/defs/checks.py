"""Asset checks that guard the data (run by the `data_checks` job every 10 minutes)."""



import dagster as dg

from funnel_dagster.defs.resources import PostgresResource, RedisResource
from funnel_ingest.ingest.stream import oldest_age_seconds
from funnel_ingest.settings import get_settings


def _none_found(postgres: PostgresResource, count_sql: str, label: str) -> dg.AssetCheckResult:
    """Passes when `count_sql` counts no offending rows; the count goes in the metadata."""
    with postgres.connect() as conn:
        found = conn.execute(count_sql).fetchone()[0]
    return dg.AssetCheckResult(passed=found == 0, metadata={label: found})


@dg.asset_check(asset="classified_messages", description="Each delivered message is stored "
                "once: no two rows share (source, message id, room).")
def no_duplicate_messages(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _none_found(postgres, "SELECT count(*) FROM (SELECT 1 FROM classified_messages "
                       "GROUP BY source, message_id, room_key HAVING count(*) > 1) d",
                       "duplicate_keys")


@dg.asset_check(asset="funnel", description="No stage before its lead: lead <= booking and "
                "lead <= transaction (a booking may come after the payment, and a paid lead may "
                "have no booking message).")
def stage_dates_in_order(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _none_found(
        postgres, "SELECT count(*) FROM funnel WHERE booking_at < lead_at "
        "OR transaction_at < lead_at", "leads_out_of_order")


@dg.asset_check(asset="funnel", description="Transaction values and totals are not negative.")
def non_negative_values(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _none_found(postgres, "SELECT count(*) FROM funnel WHERE transaction_value < 0 "
                       "OR transaction_total < 0", "negative_values")


@dg.asset_check(asset="message_stream", description="Stream backlog under FUNNEL_MAX_BACKLOG "
                "entries and its oldest entry younger than FUNNEL_MAX_BACKLOG_AGE_SECONDS.")
def stream_backlog(redis: RedisResource) -> dg.AssetCheckResult:
    r = redis.client()
    settings = get_settings()
    backlog = sum(r.xlen(s) for s in settings.stream_keys())
    oldest = max((oldest_age_seconds(r, s) for s in settings.stream_keys()), default=0.0)
    return dg.AssetCheckResult(
        passed=(backlog <= settings.funnel_max_backlog
                and oldest <= settings.funnel_max_backlog_age_seconds),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"backlog": backlog, "oldest_entry_age_seconds": round(oldest, 1),
                  "max_backlog": settings.funnel_max_backlog,
                  "max_age_seconds": settings.funnel_max_backlog_age_seconds})

