"""The data flow as software-defined assets:

    raw_archive (S3) ─┐
    message_stream ───┼─> classified_messages (daily) ─> funnel ─> funnel_report_csv (daily)
    keywords ─────────┘

`raw_archive` and `message_stream` are written by the ingest API, outside Dagster: they are
external assets whose activity the drain sensor reports as observations.
"""


import io
from datetime import date

import dagster as dg

from funnel_ingest.engine import keyword_store, store
from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.replay import archived_day
from funnel_ingest.report import count_leads, csv_chunks

from .partitions import daily
from .resources import (GoogleSheetsResource, PostgresResource, RedisResource, S3Resource,
                        funnel_settings)

OWNERS = ["team:growth-data"]

raw_archive = dg.AssetSpec(
    "raw_archive", group_name="ingest", owners=OWNERS, kinds={"s3"},
    description="Exact webhook bodies as received by the ingest API (newline-delimited JSON "
                "objects under raw/source=<source>/date=<UTC date>/ in RAW_BUCKET). The source "
                "of truth for backfills and recovery.")
message_stream = dg.AssetSpec(
    "message_stream", group_name="ingest", owners=OWNERS, kinds={"redis"},
    description="Normalized messages appended by the ingest API to the Redis Stream(s) "
                "funnel:messages[:n]; drained into classified_messages by the drain sensor.")


@dg.asset(
    group_name="funnel", owners=OWNERS, kinds={"postgres", "redis", "googlesheets"},
)
def keywords(context: dg.AssetExecutionContext, postgres: PostgresResource,
             redis: RedisResource, s3: S3Resource, sheets: GoogleSheetsResource
             ) -> dg.MaterializeResult:
    """The keyword sets (opening, booking, transaction) from the Google Sheet, or the CSV when no
    sheet is configured. Every accepted set is a version (content hash) in Postgres and is
    cached in Redis as keywords:opening / keywords:booking / keywords:transaction. An empty or
    failed sync keeps the previous version."""
    settings = funnel_settings(postgres, redis, s3, sheets)
    result = keyword_store.sync(settings, redis_client=redis.client())
    for warning in result.warnings:
        context.log.warning(warning)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(result.version),
        metadata={"version": result.version, "changed": result.changed,
                  "source": result.source, "dagster/row_count": result.row_count})


def _classifier(conn, redis: RedisResource, settings) -> Classifier:
    kset = keyword_store.load_current(conn, redis.client(), settings=settings)
    return Classifier(list(kset.keywords), kset.version, settings.tz)


@dg.asset(
    deps=["raw_archive", "message_stream", "keywords"], partitions_def=daily,
    group_name="funnel", owners=OWNERS, kinds={"postgres"},
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def classified_messages(context: dg.AssetExecutionContext, postgres: PostgresResource,
                        redis: RedisResource, s3: S3Resource) -> dg.MaterializeResult:
    """One row per message (deduplicated on source, message id and room) with the stages, the
    keywords hit, the payment amount and the keyword version. The drain sensor fills it in near
    real time; materializing a day (a backfill) re-reads that day's raw archive from S3, stores
    what is missing (e.g. after a Redis loss) and re-classifies the whole day with the current
    keywords; the funnel of every customer concerned follows."""
    settings = funnel_settings(postgres, redis, s3)
    day = date.fromisoformat(context.partition_key)
    messages, objects = archived_day(s3.client(), s3.raw_bucket, day, settings.tz)
    with postgres.connect() as conn, conn.transaction():
        classifier = _classifier(conn, redis, settings)
        restored = store.process_messages(conn, messages, classifier,
                                          lead_window_days=settings.lead_window_days)
        redone = store.reclassify(conn, classifier, day, day,
                                  lead_window_days=settings.lead_window_days)
        counts = dict(conn.execute(
            "SELECT unnest(stages) AS stage, count(*) FROM classified_messages "
            "WHERE message_date = %s GROUP BY 1", (day,)).fetchall())
    return dg.MaterializeResult(metadata={
        "dagster/row_count": redone.received, "archive_objects_read": objects,
        "archived_messages": len(messages), "restored_from_archive": restored.inserted,
        "customers_updated": redone.customers, "keyword_version": classifier.version,
        **{f"stage_{k}": v for k, v in counts.items()}})


@dg.asset(deps=["classified_messages"], group_name="funnel", owners=OWNERS, kinds={"postgres"})
def funnel(context: dg.AssetExecutionContext, postgres: PostgresResource,
           redis: RedisResource, s3: S3Resource) -> dg.MaterializeResult:
    """One row per lead cycle: leads date, channel, phone, booking date, transaction date,
    transaction value (plus lead id, customer key, campaign / ad, opening keyword, exact
    timestamps). Kept up to date incrementally by every drain run and backfill; materializing
    it rebuilds it from all classified messages (the result is the same by construction)."""
    settings = funnel_settings(postgres, redis, s3)
    with postgres.connect() as conn, conn.transaction():
        leads = store.rebuild(conn, settings.tz, settings.lead_window_days)
        metadata = funnel_metadata(conn)
    metadata["dagster/row_count"] = leads
    return dg.MaterializeResult(metadata=metadata)


def funnel_metadata(conn) -> dict:
    rows = conn.execute(
        "SELECT channel, count(*), count(booking_at), count(transaction_at), "
        "coalesce(sum(transaction_value), 0) FROM funnel GROUP BY 1 ORDER BY 1").fetchall()
    table = "| channel | leads | bookings | transactions | value |\n|---|---|---|---|---|\n" + \
        "\n".join(f"| {c} | {n} | {b} | {t} | {int(v):,} |" for c, n, b, t, v in rows)
    return {"by_channel": dg.MetadataValue.md(table),
            **{f"leads_{c}": n for c, n, *_ in rows}}


@dg.asset(deps=["funnel"], partitions_def=daily, group_name="reporting", owners=OWNERS,
          kinds={"s3", "csv"},
          check_specs=[dg.AssetCheckSpec(
              "rows_match_funnel", asset="funnel_report_csv",
              description="The CSV holds exactly the funnel's leads of its day.")])
def funnel_report_csv(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      s3: S3Resource) -> dg.MaterializeResult:
    """The day's leads as CSV in REPORTS_BUCKET (reports/funnel/date=<day>/funnel_<day>.csv):
    leads_date, channel, phone, booking_date, transaction_date, transaction_value, then the
    extra columns. Written every morning at 07:00 (FUNNEL_TIMEZONE) for the previous day."""
    day = date.fromisoformat(context.partition_key)
    key = f"reports/funnel/date={day.isoformat()}/funnel_{day.isoformat()}.csv"
    buf = io.BytesIO()
    with postgres.connect() as conn:
        for chunk in csv_chunks(conn, day, day):
            buf.write(chunk)
        rows = count_leads(conn, day, day)
    data = buf.getvalue()
    written = max(0, data.count(b"\n") - 1)  # minus the header; values never hold newlines
    s3.client().put_object(Bucket=s3.reports_bucket, Key=key, Body=data,
                           ContentType="text/csv")
    preview = data.decode().splitlines()[:11]
    md = "\n".join(["| " + " | ".join(line.split(",")[:6]) + " |" for line in preview[:1]]
                   + ["|" + "---|" * 6]
                   + ["| " + " | ".join(line.split(",")[:6]) + " |" for line in preview[1:]])
    url = f"{s3.endpoint_url.rstrip('/')}/{s3.reports_bucket}/{key}"
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(f"s3://{s3.reports_bucket}/{key}"),
                  "url": dg.MetadataValue.url(url), "dagster/row_count": written,
                  "bytes": len(data), "preview": dg.MetadataValue.md(md)},
        check_results=[dg.AssetCheckResult(
            check_name="rows_match_funnel", passed=written == rows,
            metadata={"csv_rows": written, "funnel_leads": rows})])
