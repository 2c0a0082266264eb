-- The outbox of the funnel's events for Meta's Conversions API (docs/conversions.md): one row
-- per (lead, event) of a Click-to-WhatsApp lead, queued by triggers on `funnel` in the very
-- transaction that writes the funnel row, and delivered by `funnel_ingest/conversions/`.
--
-- Every writer of `funnel` (a drain's batch, a backfill day, `funnel rebuild`, a reclassify)
-- goes through these triggers, so no write path can forget to queue an event, and an event is
-- queued exactly when its funnel row commits: a rolled-back batch queues nothing.
--
-- Events (only for leads whose opening message carried a referral with a `ctwa_clid`):
--   LeadSubmitted  at lead_at
--   Schedule       at booking_at, once the lead has a booking
--   Purchase       at transaction_at, once the lead has a transaction with a value (IDR)
-- At most one row per (lead_id, event_name): recomputing a lead never queues an event twice.
-- `event_id` is derived from that key, so a resend (after a crash between Meta's answer and
-- the row's update) carries the same id and Meta keeps one event.
CREATE TABLE IF NOT EXISTS conversion_events (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id         text        NOT NULL,
    event_name      text        NOT NULL
                    CHECK (event_name IN ('LeadSubmitted', 'Schedule', 'Purchase')),
    event_id        text        GENERATED ALWAYS AS (lead_id || ':' || event_name) STORED,
    event_time      timestamptz NOT NULL,
    ctwa_clid       text        NOT NULL,
    value           numeric(20, 0) CHECK (value >= 0),       -- Rupiah; Purchase only
    -- pending: to send (again); sent: Meta accepted it; failed: refused CONVERSIONS_MAX_ATTEMPTS
    -- times; expired: older than Meta accepts, never sent; cancelled: its lead or stage is gone
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'expired', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- a delivery's claim: rows with a claim that has not run out belong to that delivery
    claim_token     uuid,
    claimed_until   timestamptz,
    -- the last attempt: Meta's answer (HTTP status, body) or, without an answer, what failed
    response_status integer,
    response_body   text,
    error           text,
    sent_at         timestamptz,
    sent_event      jsonb,                                    -- the event as Meta accepted it
    queued_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversion_events_once UNIQUE (lead_id, event_name)
);

CREATE INDEX IF NOT EXISTS conversion_events_due
    ON conversion_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS conversion_events_status ON conversion_events (status);

-- New or changed funnel rows (`new_rows`, the statement's transition table). Only a WhatsApp
-- lead with an ad id can carry a click id (the referral's source_id is the ad id; only the
-- WhatsApp Cloud API sends referrals), so the opening message is looked up for those alone. A
-- pending event takes the lead's current values; a cancelled one whose stage is back is
-- pending again; a failed one is queued again (attempts from 0) when its values changed; a
-- sent or expired one is left as it is. A pending event whose stage is no longer there (a
-- booking that a re-classification took away) is cancelled.
--
-- Each ad lead costs one probe of the messages' unique index and one of the outbox's, written
-- as LATERAL subqueries with a LIMIT, which the planner cannot turn into a join of its own
-- choosing. Left to itself, knowing how many rows a transition table holds but not how few of
-- them are ad leads, it merge-joined a drain batch's 10,000 rows with an index scan of all of
-- classified_messages (0.75 s at 300,000 messages, growing with the table), and with hash and
-- merge joins off it scanned the new rows once per pending event (20 s).
CREATE OR REPLACE FUNCTION conversion_events_queue() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    gone bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE ad_id IS NOT NULL
                                            AND opening_source = 'whatsapp') THEN
        RETURN NULL;  -- no lead of this statement came from a Click-to-WhatsApp ad
    END IF;
    WITH ads AS (
        SELECT n.lead_id, n.lead_at, n.booking_at, n.transaction_at, n.transaction_value,
               m.ctwa_clid
          FROM new_rows n
         CROSS JOIN LATERAL (
               SELECT c.referral ->> 'ctwa_clid' AS ctwa_clid FROM classified_messages c
                WHERE c.source = n.opening_source AND c.message_id = n.opening_message_id
                  AND c.customer_key = n.customer_key
                LIMIT 1) m
         WHERE n.ad_id IS NOT NULL AND n.opening_source = 'whatsapp'
           AND coalesce(m.ctwa_clid, '') <> ''
    ), events (lead_id, event_name, event_time, value, ctwa_clid) AS (
        SELECT lead_id, 'LeadSubmitted', lead_at, NULL::numeric, ctwa_clid FROM ads
        UNION ALL
        SELECT lead_id, 'Schedule', booking_at, NULL, ctwa_clid FROM ads
         WHERE booking_at IS NOT NULL
        UNION ALL
        SELECT lead_id, 'Purchase', transaction_at, transaction_value, ctwa_clid FROM ads
         WHERE transaction_at IS NOT NULL AND transaction_value IS NOT NULL
    )
    INSERT INTO conversion_events AS e (lead_id, event_name, event_time, value, ctwa_clid)
    SELECT lead_id, event_name, event_time, value, ctwa_clid FROM events
    ON CONFLICT (lead_id, event_name) DO UPDATE
       SET event_time = EXCLUDED.event_time, value = EXCLUDED.value,
           ctwa_clid = EXCLUDED.ctwa_clid, status = 'pending',
           attempts = CASE WHEN e.status = 'failed' THEN 0 ELSE e.attempts END,
           next_attempt_at = CASE WHEN e.status = 'pending' THEN e.next_attempt_at
                                  ELSE now() END,
           updated_at = now()
     WHERE (e.status IN ('pending', 'cancelled')
            AND (e.status, e.event_time, e.value, e.ctwa_clid) IS DISTINCT FROM
                ('pending', EXCLUDED.event_time, EXCLUDED.value, EXCLUDED.ctwa_clid))
        OR (e.status = 'failed'
            AND (e.event_time, e.value, e.ctwa_clid) IS DISTINCT FROM
                (EXCLUDED.event_time, EXCLUDED.value, EXCLUDED.ctwa_clid));

    SELECT array_agg(x.id) INTO gone
      FROM new_rows n
     CROSS JOIN LATERAL (
           SELECT e.id FROM conversion_events e
            WHERE e.lead_id = n.lead_id AND e.status = 'pending'
              AND ((e.event_name = 'Schedule' AND n.booking_at IS NULL)
                   OR (e.event_name = 'Purchase'
                       AND (n.transaction_at IS NULL OR n.transaction_value IS NULL)))
            LIMIT 3) x  -- a lead has at most one row per event name
     WHERE n.ad_id IS NOT NULL AND n.opening_source = 'whatsapp';
    IF gone IS NOT NULL THEN
        UPDATE conversion_events SET status = 'cancelled', updated_at = now()
         WHERE id = ANY(gone);
    END IF;
    RETURN NULL;
END
$$;

-- Deleted funnel rows (`old_rows`): a lead that vanished (its opening message is no longer an
-- opening) takes its unsent events with it. What Meta already has stays `sent`.
CREATE OR REPLACE FUNCTION conversion_events_cancel() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    gone bigint[];
BEGIN
    SELECT array_agg(x.id) INTO gone
      FROM old_rows o
     CROSS JOIN LATERAL (
           SELECT e.id FROM conversion_events e
            WHERE e.lead_id = o.lead_id AND e.status = 'pending' LIMIT 3) x
     WHERE o.ad_id IS NOT NULL AND o.opening_source = 'whatsapp';
    IF gone IS NOT NULL THEN
        UPDATE conversion_events SET status = 'cancelled', updated_at = now()
         WHERE id = ANY(gone);
    END IF;
    RETURN NULL;
END
$$;

-- Statement-level, with transition tables: one pass per statement over the rows it changed
-- (a drain's batch writes thousands of funnel rows in one statement), not a call per row.
-- Named for the outbox: other statement triggers on `funnel` keep their own names.
DROP TRIGGER IF EXISTS funnel_conversions_insert ON funnel;
CREATE TRIGGER funnel_conversions_insert
    AFTER INSERT ON funnel REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversion_events_queue();

DROP TRIGGER IF EXISTS funnel_conversions_update ON funnel;
CREATE TRIGGER funnel_conversions_update
    AFTER UPDATE ON funnel REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversion_events_queue();

DROP TRIGGER IF EXISTS funnel_conversions_delete ON funnel;
CREATE TRIGGER funnel_conversions_delete
    AFTER DELETE ON funnel REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversion_events_cancel();
