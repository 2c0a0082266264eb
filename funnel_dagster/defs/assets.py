"""The data flow as software-defined assets:

    raw_archive (S3) ─┐
    message_stream ───┼─> classified_messages (daily) ─> funnel ─> funnel_report_csv (daily)
    keywords ─────────┘

`raw_archive` and `message_stream` are written by the ingest API, outside Dagster: they are
external assets whose activity the drain sensor reports as observations.
"""


import time
from datetime import date

import dagster as dg

from funnel_dagster.defs.partitions import daily
from funnel_dagster.defs.resources import (
    GoogleSheetsResource,
    PostgresResource,
    RedisResource,
    S3Resource,
    funnel_settings,
)
from funnel_dagster.metadata import day_metadata, funnel_metadata, md_cell
from funnel_ingest.report.export import export
from funnel_ingest.report.query import ReportFilter
from funnel_ingest.s3 import presigned_get
from funnel_ingest.store import funnel as store
from funnel_ingest.store import keywords as keyword_store
from funnel_ingest.store.backfill import backfill
from funnel_ingest.store.funnel import lock_writers

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
    """The keyword sets (opening, booking, transaction). Their source of truth, stated in the
    metadata: the Google Sheet when GSHEET_KEY is set (published by this sync), else the API
    and the CLI, and then the CSV (KEYWORDS_CSV or the packaged list) is published only when no
    version exists yet or when a sync of that file published the current one, never over a
    list published through the API. Every accepted set is a version (content hash) in Postgres,
    cached in Redis as keywords:opening / keywords:booking / keywords:transaction. An empty or
    failed sync keeps the previous version; so does a list that leaves a stage without active
    keywords (the run fails saying so, until it is published with force)."""
    settings = funnel_settings(postgres, redis, s3, sheets)
    truth = keyword_store.source_of_truth(settings)
    try:
        result = keyword_store.sync(settings, redis_client=redis.client(), scheduled=True)
    except keyword_store.StageEmptiedError as exc:
        raise dg.Failure(description=str(exc), metadata={
            "source_of_truth": truth.detail, "emptied_stages": ", ".join(exc.stages),
            "current_version": exc.current}) from None
    for warning in result.warnings:
        context.log.warning(warning)
    if result.skipped:
        context.log.info(result.skipped)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(result.version),
        metadata={"version": result.version, "changed": result.changed,
                  "published": result.skipped is None, "source": result.source,
                  "source_of_truth": truth.detail, "source_of_truth_kind": truth.kind,
                  "skipped": result.skipped or "", "forced": result.forced,
                  "dagster/row_count": result.row_count})




@dg.asset(
    deps=["raw_archive", "message_stream", "keywords"], partitions_def=daily,
    group_name="funnel", owners=OWNERS, kinds={"postgres"},
    # A backfill of any range is one run: the archive is listed and read once for the whole
    # range (a day's objects also serve its neighbours), not once per day in 30 processes.
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def classified_messages(context: dg.AssetExecutionContext, postgres: PostgresResource,
                        redis: RedisResource, s3: S3Resource) -> dg.MaterializeResult:
    """One row per message (deduplicated on source, message id and room) with the stages, the
    keywords hit, the payment amount and the keyword version. The drain sensor fills it in near
    real time. Materializing days (a backfill: any range is one run) re-reads their raw archive
    from S3, stores what is missing (e.g. after a Redis loss) and re-classifies every message of
    those days with the current keywords; the funnel of every customer concerned follows in the
    same run."""
    settings = funnel_settings(postgres, redis, s3)
    keys = context.partition_keys
    start, end = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
    with postgres.connect(autocommit=True) as conn:
        classifier = keyword_store.current_classifier(conn, redis.client(), settings)
        context.log.info(f"backfilling {start} .. {end} ({len(keys)} days) with keyword "
                         f"version {classifier.version}")
        result = backfill(conn, s3.client_factory(), s3.raw_bucket, classifier, start, end,
                          rules=settings.cycle_rules, log=context.log.info)
        funnel_meta = funnel_metadata(conn)
    for day in result.days:
        context.add_asset_metadata({**day_metadata(day.counts),
                                    "restored_from_archive": day.restored,
                                    "reclassified": day.reclassified,
                                    "classification_changed": day.changed,
                                    "customers_updated": day.customers},
                                   partition_key=day.day.isoformat())
    # the funnel of the customers concerned was recomputed by this run
    context.log_event(dg.AssetMaterialization("funnel", metadata={
        "source": "backfill", "range": f"{start} .. {end}",
        "customers_updated": result.customers + sum(d.customers for d in result.days),
        **funnel_meta}))
    return dg.MaterializeResult(metadata={
        "keyword_version": classifier.version, "range": f"{start} .. {end}",
        "archive_objects_read": result.objects, "archived_messages": result.archived,
        "backfill_seconds": round(result.seconds, 2),
        **{f"{step}_seconds": round(v, 2) for step, v in result.stages.items()}})


FUNNEL_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("lead_id", "text", "Stable id of the lead cycle (customer + opening message)",
                   constraints=dg.TableColumnConstraints(nullable=False, unique=True)),
    dg.TableColumn("leads_date", "date", "Business date the lead opened (FUNNEL_TIMEZONE)",
                   constraints=dg.TableColumnConstraints(nullable=False)),
    dg.TableColumn("channel", "text", "Marketing channel: the opening keyword's, else the "
                   "payload's hint (ads, campaign_blast, website, a CRM's own label such as "
                   "tiktok), else a campaign reply, else direct",
                   constraints=dg.TableColumnConstraints(nullable=False)),
    dg.TableColumn("phone", "text", "Customer phone, E.164 (empty when the provider withholds "
                   "it)"),
    dg.TableColumn("booking_date", "date", "Business date of the cycle's first booking message "
                   "(empty when none: never copied from the payment)"),
    dg.TableColumn("transaction_date", "date", "Business date of the cycle's first payment"),
    dg.TableColumn("transaction_value", "numeric", "Rupiah of that first payment (integer)"),
    dg.TableColumn("customer_key", "text", "E.164 phone, else the provider's user id",
                   constraints=dg.TableColumnConstraints(nullable=False)),
    dg.TableColumn("cycle", "integer", "1 for the customer's first lead, then 2, 3, ..."),
    dg.TableColumn("lead_at", "timestamptz", "Exact time (UTC) the lead opened"),
    dg.TableColumn("booking_at", "timestamptz", "Exact time (UTC) of the booking message"),
    dg.TableColumn("transaction_at", "timestamptz", "Exact time (UTC) of the first payment"),
    dg.TableColumn("transaction_total", "numeric", "Rupiah of every payment of the cycle"),
    dg.TableColumn("transactions", "integer", "Number of payments in the cycle"),
    dg.TableColumn("requested_date", "date", "A date the customer asked for, when stated"),
    dg.TableColumn("campaign_id", "text", "Campaign id sent by the CRM"),
    dg.TableColumn("ad_id", "text", "Click-to-WhatsApp ad id (referral source_id)"),
    dg.TableColumn("opening_keyword", "text", "The opening keyword the first message matched"),
    dg.TableColumn("opening_source", "text", "Source (provider) of the opening message"),
    dg.TableColumn("opening_message_id", "text", "Provider id of the opening message"),
    dg.TableColumn("medium", "text", "Messaging app of the conversation (whatsapp, instagram, "
                   "webchat, ...); never the channel"),
    dg.TableColumn("updated_at", "timestamptz", "When the row last changed"),
    dg.TableColumn("campaign", "text", "The lead's campaign in the campaign registry (a "
                   "template, broadcast, ad or imported name), else its campaign id as is"),
])


@dg.asset(deps=["classified_messages"], group_name="funnel", owners=OWNERS, kinds={"postgres"},
          metadata={"dagster/column_schema": FUNNEL_SCHEMA, "dagster/table_name": "funnel"})
def funnel(context: dg.AssetExecutionContext, postgres: PostgresResource,
           redis: RedisResource, s3: S3Resource) -> dg.MaterializeResult:
    """One row per lead cycle: leads date, channel, phone, booking date, transaction date,
    transaction value (plus lead id, customer key, campaign / ad, opening keyword, exact
    timestamps). Kept up to date incrementally by every drain run and backfill; materializing
    it rebuilds it from all classified messages (the result is the same by construction)."""
    settings = funnel_settings(postgres, redis, s3)
    with postgres.connect() as conn:
        with conn.transaction():
            lock_writers(conn, exclusive=True)
            leads = store.rebuild(conn, settings.tz, settings.cycle_rules)
        store.compact_summary(conn)
        metadata = funnel_metadata(conn)
    context.log.info(f"rebuilt the funnel: {leads} leads")
    return dg.MaterializeResult(metadata=metadata)






@dg.asset(deps=["funnel"], partitions_def=daily, group_name="reporting", owners=OWNERS,
          kinds={"s3", "csv"},
          check_specs=[dg.AssetCheckSpec(
              "rows_match_funnel", asset="funnel_report_csv",
              description="The CSV holds exactly the funnel's leads of its day.")])
def funnel_report_csv(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      redis: RedisResource, s3: S3Resource) -> dg.MaterializeResult:
    """The day's leads as CSV in REPORTS_BUCKET (reports/funnel/date=<day>/funnel_<day>.csv):
    leads_date, channel, phone, booking_date, transaction_date, transaction_value, then the
    extra columns. Written every morning at 07:00 (FUNNEL_TIMEZONE) for the previous day; the
    metadata links to it with a presigned URL (REPORT_LINK_TTL_SECONDS, signed for
    S3_PUBLIC_URL)."""
    settings = funnel_settings(postgres, redis, s3)
    day = date.fromisoformat(context.partition_key)
    key = f"reports/funnel/date={day.isoformat()}/funnel_{day.isoformat()}.csv"
    written = export(settings, ReportFilter(start=day, end=day),
                     f"s3://{s3.reports_bucket}/{key}", "csv", head=10)
    shown = written.head
    md = "\n".join(["| " + " | ".join(md_cell(v) for v in shown[0][:6]) + " |", "|" + "---|" * 6]
                   + ["| " + " | ".join(md_cell(v) for v in row[:6]) + " |" for row in shown[1:]]
                   ) if shown else ""
    url = presigned_get(settings, s3.reports_bucket, key)
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(f"s3://{s3.reports_bucket}/{key}"),
                  "url": dg.MetadataValue.url(url),
                  "url_expires_at": dg.MetadataValue.timestamp(
                      time.time() + settings.report_link_ttl_seconds),
                  "dagster/row_count": written.rows, "bytes": written.bytes,
                  "preview": dg.MetadataValue.md(md)},
        check_results=[dg.AssetCheckResult(
            check_name="rows_match_funnel", passed=written.rows == written.expected,
            metadata={"csv_rows": written.rows, "funnel_leads": written.expected})])
