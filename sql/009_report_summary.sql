-- The report summary: the funnel's figures per lead date, channel, medium, campaign, ad and
-- opening keyword, maintained with the funnel (docs/funnel.md, "Report summary"). The report's
-- summaries, daily figures, breakdowns and time-to-convert histograms read it instead of the
-- leads, so a month of 300,000 leads is a few thousand summary rows.
--
-- Maintained by statement-level triggers on `funnel`: every statement that inserts, updates or
-- deletes leads (the drain, a rebuild, a re-classification, a campaign import, an erasure)
-- appends, in its own transaction, one row of differences per group it changed: +1 lead,
-- -1 booking, ... Appending never waits on another writer (no row is updated in place, so two
-- drains on different shards never lock each other or deadlock on a busy day's row); readers
-- sum the rows of a group, so a group may be split over several rows at any time.
-- `funnel_summary_compact()` folds each day's rows into one row per group (the drain calls it
-- after its batch commits); it changes no sum, only how many rows hold them.
--
-- Times to convert are histograms: per group, stage (booking, transaction) and bucket of
-- `duration_buckets`, the number of leads and the sum of their times (in milliseconds). A median or p90
-- is read from the buckets holding its ranks (each rank's value taken as its bucket's mean),
-- so it is exact when a bucket's leads took the same time, and within one bucket's width
-- otherwise: buckets grow by 2^(1/16) (4.4 %) from 1 second on, and also break at the
-- report's duration bounds (5 minutes, 30 minutes, 2 hours, ...) so those histograms are exact.

-- Bucket 0 holds [0, 1) s; bucket i >= 1 holds [lower_seconds, the next bucket's lower_seconds);
-- the last one is open. Never changed once filled: summary rows refer to bucket numbers.
CREATE TABLE IF NOT EXISTS duration_buckets (
    bucket        smallint PRIMARY KEY CHECK (bucket >= 0),
    lower_seconds numeric  NOT NULL UNIQUE
);

INSERT INTO duration_buckets (bucket, lower_seconds)
SELECT (row_number() OVER (ORDER BY edge))::smallint - 1, edge
  FROM (SELECT 0::numeric AS edge
        UNION
        SELECT round((2::numeric ^ (k / 16.0))::numeric, 6) FROM generate_series(0, 16 * 27) k
        UNION
        SELECT unnest(ARRAY[300, 1800, 7200, 21600, 86400, 259200, 604800, 1209600,
                            2592000]::numeric[])) edges
ON CONFLICT DO NOTHING;

-- The lower edges of buckets 1.. as one array, for width_bucket (bucket 0 is below the first).
CREATE OR REPLACE FUNCTION duration_bucket_edges() RETURNS numeric[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT array_agg(lower_seconds ORDER BY bucket) FROM duration_buckets WHERE bucket > 0 $$;

CREATE TABLE IF NOT EXISTS funnel_summary (
    leads_date      date    NOT NULL,
    channel         text    NOT NULL,
    medium          text,
    campaign        text,
    ad_id           text,
    opening_keyword text,
    leads           integer NOT NULL,
    bookings        integer NOT NULL,   -- booked or paid (a paid lead counts as booked)
    transactions    integer NOT NULL,
    valued          integer NOT NULL,   -- leads with a transaction value (for the average)
    revenue_sum     numeric NOT NULL,   -- transaction_value
    payments_sum    numeric NOT NULL,   -- transaction_total
    compacted       boolean NOT NULL DEFAULT false
);

CREATE INDEX IF NOT EXISTS funnel_summary_day ON funnel_summary (leads_date, channel);
CREATE INDEX IF NOT EXISTS funnel_summary_loose ON funnel_summary (leads_date) WHERE NOT compacted;

CREATE TABLE IF NOT EXISTS funnel_summary_times (
    leads_date      date     NOT NULL,
    channel         text     NOT NULL,
    medium          text,
    campaign        text,
    ad_id           text,
    opening_keyword text,
    stage           text     NOT NULL CHECK (stage IN ('booking', 'transaction')),
    bucket          smallint NOT NULL,
    leads           integer  NOT NULL,
    -- the sum of the leads' times, whole milliseconds: exact up to 2^53 (a double sums
    -- faster than a numeric, which is what sum(bigint) returns)
    milliseconds    double precision NOT NULL,
    compacted       boolean  NOT NULL DEFAULT false
);

CREATE INDEX IF NOT EXISTS funnel_summary_times_day
    ON funnel_summary_times (leads_date, channel);
CREATE INDEX IF NOT EXISTS funnel_summary_times_loose
    ON funnel_summary_times (leads_date) WHERE NOT compacted;

-- The same histograms per week (Monday) instead of per day: a breakdown by campaign, ad or
-- opening keyword over a month reads its whole weeks here and only the days at its ends above.
-- With dozens of campaigns and ads a day, a day's group holds a few dozen leads, so it has
-- about one row per lead; a week's group about seven times fewer.
CREATE TABLE IF NOT EXISTS funnel_summary_week_times (
    week            date     NOT NULL CHECK (extract(isodow FROM week) = 1),
    channel         text     NOT NULL,
    medium          text,
    campaign        text,
    ad_id           text,
    opening_keyword text,
    stage           text     NOT NULL CHECK (stage IN ('booking', 'transaction')),
    bucket          smallint NOT NULL,
    leads           integer  NOT NULL,
    milliseconds    double precision NOT NULL,
    compacted       boolean  NOT NULL DEFAULT false
);

CREATE INDEX IF NOT EXISTS funnel_summary_week_times_week
    ON funnel_summary_week_times (week, channel);
CREATE INDEX IF NOT EXISTS funnel_summary_week_times_loose
    ON funnel_summary_week_times (week) WHERE NOT compacted;

-- The same histograms per lead date, channel and medium only: what the default views read
-- (a month over all channels is ~25,000 of these rows against ~150,000 of the above when
-- every day has dozens of campaigns and ads).
CREATE TABLE IF NOT EXISTS funnel_summary_channel_times (
    leads_date      date     NOT NULL,
    channel         text     NOT NULL,
    medium          text,
    stage           text     NOT NULL CHECK (stage IN ('booking', 'transaction')),
    bucket          smallint NOT NULL,
    leads           integer  NOT NULL,
    milliseconds    double precision NOT NULL,
    compacted       boolean  NOT NULL DEFAULT false
);

-- in the order the daily figures read them (no sort), with what they sum
CREATE INDEX IF NOT EXISTS funnel_summary_channel_times_day
    ON funnel_summary_channel_times (leads_date, channel, stage, bucket)
    INCLUDE (medium, leads, milliseconds);
CREATE INDEX IF NOT EXISTS funnel_summary_channel_times_loose
    ON funnel_summary_channel_times (leads_date) WHERE NOT compacted;

-- ... and per week, channel and medium: a month's summary or duration chart reads its whole
-- weeks here.
CREATE TABLE IF NOT EXISTS funnel_summary_channel_week_times (
    week            date     NOT NULL CHECK (extract(isodow FROM week) = 1),
    channel         text     NOT NULL,
    medium          text,
    stage           text     NOT NULL CHECK (stage IN ('booking', 'transaction')),
    bucket          smallint NOT NULL,
    leads           integer  NOT NULL,
    milliseconds    double precision NOT NULL,
    compacted       boolean  NOT NULL DEFAULT false
);

CREATE INDEX IF NOT EXISTS funnel_summary_channel_week_times_week
    ON funnel_summary_channel_week_times (week, channel);
CREATE INDEX IF NOT EXISTS funnel_summary_channel_week_times_loose
    ON funnel_summary_channel_week_times (week) WHERE NOT compacted;

-- The statement appending the time histograms' differences to `target`, whose group columns
-- are `keys` (a `week` column is the Monday of the lead date's week).
CREATE OR REPLACE FUNCTION funnel_summary_times_statement(target text, keys text, changes text)
    RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format($q$
        INSERT INTO %1$s (%2$s, stage, bucket, leads, milliseconds)
        SELECT %3$s, t.stage, width_bucket(t.seconds, $1), sum(sign),
               sum(sign * round(t.seconds * 1000))
          FROM (%4$s) AS c,
               LATERAL (VALUES ('booking', extract(epoch FROM booking_at - lead_at)),
                               ('transaction', extract(epoch FROM transaction_at - lead_at)))
                       AS t (stage, seconds)
         WHERE t.seconds IS NOT NULL
         GROUP BY %2$s, t.stage, width_bucket(t.seconds, $1)
        HAVING sum(sign) <> 0 OR sum(sign * round(t.seconds * 1000)) <> 0$q$,
        target, keys,
        replace(keys, 'week', $w$date_trunc('week', leads_date)::date AS week$w$), changes)
$$;

-- The statements that append the differences of the leads in `changes` (a query of funnel rows
-- with a `sign` column: +1 for a row as it is now, -1 for a row as it was), one row per group
-- that changed; $1 is duration_bucket_edges(). Run by the trigger, which alone sees the
-- statement's transition tables, and once by this migration.
CREATE OR REPLACE FUNCTION funnel_summary_statements(changes text) RETURNS text[]
    LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY[
        format($q$
        INSERT INTO funnel_summary (leads_date, channel, medium, campaign, ad_id,
                                    opening_keyword, leads, bookings, transactions, valued,
                                    revenue_sum, payments_sum)
        SELECT leads_date, channel, medium, campaign, ad_id, opening_keyword, sum(sign),
               coalesce(sum(sign) FILTER (WHERE booking_at IS NOT NULL
                                             OR transaction_at IS NOT NULL), 0),
               coalesce(sum(sign) FILTER (WHERE transaction_at IS NOT NULL), 0),
               coalesce(sum(sign) FILTER (WHERE transaction_value IS NOT NULL), 0),
               coalesce(sum(sign * transaction_value), 0),
               coalesce(sum(sign * transaction_total), 0)
          FROM (%s) AS c
         GROUP BY 1, 2, 3, 4, 5, 6
        HAVING sum(sign) <> 0
            OR sum(sign) FILTER (WHERE booking_at IS NOT NULL OR transaction_at IS NOT NULL) <> 0
            OR sum(sign) FILTER (WHERE transaction_at IS NOT NULL) <> 0
            OR sum(sign) FILTER (WHERE transaction_value IS NOT NULL) <> 0
            OR coalesce(sum(sign * transaction_value), 0) <> 0
            OR coalesce(sum(sign * transaction_total), 0) <> 0$q$, changes),
        funnel_summary_times_statement('funnel_summary_times',
            'leads_date, channel, medium, campaign, ad_id, opening_keyword', changes),
        funnel_summary_times_statement('funnel_summary_week_times',
            'week, channel, medium, campaign, ad_id, opening_keyword', changes),
        funnel_summary_times_statement('funnel_summary_channel_times',
            'leads_date, channel, medium', changes),
        funnel_summary_times_statement('funnel_summary_channel_week_times',
            'week, channel, medium', changes)]
$$;

CREATE OR REPLACE FUNCTION funnel_summary_trigger() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    changes text;
    statement text;
    edges numeric[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE funnel_summary, funnel_summary_times, funnel_summary_week_times,
                 funnel_summary_channel_times, funnel_summary_channel_week_times;
        RETURN NULL;
    END IF;
    changes := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT *, 1 AS sign FROM funnel_summary_new'
        WHEN 'DELETE' THEN 'SELECT *, -1 AS sign FROM funnel_summary_old'
        ELSE 'SELECT *, 1 AS sign FROM funnel_summary_new '
             'UNION ALL SELECT *, -1 AS sign FROM funnel_summary_old' END;
    edges := duration_bucket_edges();  -- once per statement, not per row
    FOREACH statement IN ARRAY funnel_summary_statements(changes) LOOP
        EXECUTE statement USING edges;
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS funnel_summary_insert ON funnel;
CREATE TRIGGER funnel_summary_insert AFTER INSERT ON funnel
    REFERENCING NEW TABLE AS funnel_summary_new
    FOR EACH STATEMENT EXECUTE FUNCTION funnel_summary_trigger();
DROP TRIGGER IF EXISTS funnel_summary_update ON funnel;
CREATE TRIGGER funnel_summary_update AFTER UPDATE ON funnel
    REFERENCING OLD TABLE AS funnel_summary_old NEW TABLE AS funnel_summary_new
    FOR EACH STATEMENT EXECUTE FUNCTION funnel_summary_trigger();
DROP TRIGGER IF EXISTS funnel_summary_delete ON funnel;
CREATE TRIGGER funnel_summary_delete AFTER DELETE ON funnel
    REFERENCING OLD TABLE AS funnel_summary_old
    FOR EACH STATEMENT EXECUTE FUNCTION funnel_summary_trigger();
DROP TRIGGER IF EXISTS funnel_summary_truncate ON funnel;
CREATE TRIGGER funnel_summary_truncate AFTER TRUNCATE ON funnel
    FOR EACH STATEMENT EXECUTE FUNCTION funnel_summary_trigger();

-- Folds the rows of `target` in the `periods` (values of its column `period`) into one row
-- per group (`keys`), summing `sums`; groups whose sums are all 0 are dropped.
CREATE OR REPLACE FUNCTION funnel_summary_fold(target text, period text, keys text, sums text,
                                               periods date[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($q$
        WITH gone AS (DELETE FROM %1$s WHERE %2$s = ANY($1) RETURNING *)
        INSERT INTO %1$s (%2$s, %3$s, %4$s, compacted)
        SELECT %2$s, %3$s, %5$s, true FROM gone GROUP BY %2$s, %3$s HAVING %6$s$q$,
        target, period, keys, sums,
        (SELECT string_agg(format('sum(%s)', s), ', ') FROM unnest(string_to_array(sums, ', ')) s),
        (SELECT string_agg(format('sum(%s) <> 0', s), ' OR ')
           FROM unnest(string_to_array(sums, ', ')) s))
    USING periods;
END $$;

-- Folds the loose rows of every day (and week) that has some into one row per group. One
-- compaction at a time (others return at once: the next one folds what they left); returns
-- the number of days folded, or -1 when another compaction runs. Concurrent writers only
-- append, so they never wait on it; a reader sees the day before or after the fold, with the
-- same sums.
CREATE OR REPLACE FUNCTION funnel_summary_compact() RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    days date[];
    weeks date[];
    times text := 'stage, bucket';
    dims text := 'channel, medium, campaign, ad_id, opening_keyword';
BEGIN
    IF NOT pg_try_advisory_xact_lock(7305598112593717505) THEN  -- 'funnelsu' in ASCII
        RETURN -1;
    END IF;
    SELECT array_agg(DISTINCT week) INTO weeks
      FROM funnel_summary_week_times WHERE NOT compacted;
    IF weeks IS NOT NULL THEN
        PERFORM funnel_summary_fold('funnel_summary_week_times', 'week',
                                    dims || ', ' || times, 'leads, milliseconds', weeks);
    END IF;
    SELECT array_agg(DISTINCT week) INTO weeks
      FROM funnel_summary_channel_week_times WHERE NOT compacted;
    IF weeks IS NOT NULL THEN
        PERFORM funnel_summary_fold('funnel_summary_channel_week_times', 'week',
                                    'channel, medium, ' || times, 'leads, milliseconds', weeks);
    END IF;
    SELECT array_agg(DISTINCT leads_date) INTO days
      FROM (SELECT leads_date FROM funnel_summary WHERE NOT compacted
            UNION SELECT leads_date FROM funnel_summary_times WHERE NOT compacted
            UNION SELECT leads_date FROM funnel_summary_channel_times WHERE NOT compacted) d;
    IF days IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM funnel_summary_fold('funnel_summary', 'leads_date', dims,
        'leads, bookings, transactions, valued, revenue_sum, payments_sum', days);
    PERFORM funnel_summary_fold('funnel_summary_times', 'leads_date', dims || ', ' || times,
                                'leads, milliseconds', days);
    PERFORM funnel_summary_fold('funnel_summary_channel_times', 'leads_date',
                                'channel, medium, ' || times, 'leads, milliseconds', days);
    RETURN cardinality(days);
END $$;

-- The leads stored before this migration (the triggers see only later changes).
TRUNCATE funnel_summary, funnel_summary_times, funnel_summary_week_times,
                 funnel_summary_channel_times, funnel_summary_channel_week_times;
DO $$
DECLARE
    statement text;
BEGIN
    FOREACH statement IN ARRAY funnel_summary_statements('SELECT *, 1 AS sign FROM funnel') LOOP
        EXECUTE statement USING duration_bucket_edges();
    END LOOP;
END $$;
SELECT funnel_summary_compact();
