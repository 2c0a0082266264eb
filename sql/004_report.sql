-- Indexes for the funnel report (GET /funnel-report, /funnel-report/daily, funnel export).
--
-- Both are in report order (leads_date, lead_at, lead_id), so a keyset page is one short
-- index range, and both carry the columns the summary reads (INCLUDE), so a summary is an
-- index-only scan of exactly the filtered leads, never a visit to the table's pages:
--   funnel_report_channel  a channel (or each of several channels) over a date range;
--   funnel_report_order    a date range over all channels.
-- They replace funnel_leads_date_channel (002), whose every use one of them serves.
--
-- No summary table: the counts and sums of a month and a channel come from the index-only scan
-- in tens of milliseconds at 1,000,000 leads, and the medians / p90 (most of a summary's cost)
-- cannot be pre-aggregated exactly. Measured with bench/report.py.
CREATE INDEX IF NOT EXISTS funnel_report_channel ON funnel (channel, leads_date, lead_at, lead_id)
    INCLUDE (booking_at, transaction_at, transaction_value, transaction_total, campaign_id);
CREATE INDEX IF NOT EXISTS funnel_report_order ON funnel (leads_date, lead_at, lead_id)
    INCLUDE (channel, booking_at, transaction_at, transaction_value, transaction_total,
             campaign_id);
DROP INDEX IF EXISTS funnel_leads_date_channel;
