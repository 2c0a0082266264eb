-- Campaigns with names (docs/funnel.md, Campaigns). A lead's campaign_id is mostly the id of
-- the outbound message it answered (a `wamid.…`, a Qontak message uuid), so a breakdown by it
-- is unreadable. The registry maps the ids leads carry to campaigns with names:
--
--   campaigns       one row per campaign: its key, name, kind, sent count (from imports) and
--                   where it came from;
--   campaign_refs   the ids that lead to a campaign: outbound message ids and generic campaign
--                   labels (kind 'message', matched against funnel.campaign_id), ad source ids
--                   ('ad', matched against funnel.ad_id), template names and Qontak broadcast
--                   ids or names ('template', 'broadcast': the identity a payload-learned
--                   message ref came through, `via_kind`/`via_ref`, so an import naming the
--                   template moves its messages too).
--
-- The drain fills both from the payloads of each batch (store/campaigns.py, `learn`); imports
-- (PUT /campaigns, POST /campaigns/import, `funnel campaigns import`) name campaigns and move
-- refs. A ref an import set is never moved back by a payload, and a name an import gave is
-- never replaced by one a payload carries.
--
-- funnel.campaign is the lead's resolved campaign key: the campaign of its campaign_id's ref,
-- else of its ad's ref, else the raw campaign_id (an unknown id stays visible), else
-- 'ad:' || ad_id. It is written with the row by the funnel merge and re-resolved by plain
-- UPDATEs when refs change.
CREATE TABLE IF NOT EXISTS campaigns (
    campaign       text        PRIMARY KEY CHECK (campaign <> ''),
    name           text        CHECK (name <> ''),   -- NULL: no name known (shown as the key)
    name_source    text,                             -- who named it: a provider, or 'import'
    kind           text        NOT NULL CHECK (kind IN ('broadcast', 'template', 'ad')),
    sent           bigint      CHECK (sent >= 0),    -- messages sent, from imports; NULL unknown
    source         text        NOT NULL,             -- whatsapp | qontak | generic | import
    first_seen_at  timestamptz,                      -- its first and latest message (payloads)
    last_seen_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS campaign_refs (
    kind        text        NOT NULL CHECK (kind IN ('message', 'template', 'broadcast', 'ad')),
    ref         text        NOT NULL CHECK (ref <> ''),
    campaign    text        NOT NULL REFERENCES campaigns (campaign),
    origin      text        NOT NULL CHECK (origin IN ('payload', 'import')),
    via_kind    text,                                -- a payload message ref: the template or
    via_ref     text,                                -- broadcast the message was sent as
    sent        bigint      CHECK (sent >= 0),       -- messages this ref stands for (imports)
    source      text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, ref)
);

CREATE INDEX IF NOT EXISTS campaign_refs_campaign ON campaign_refs (campaign);
CREATE INDEX IF NOT EXISTS campaign_refs_via ON campaign_refs (via_kind, via_ref)
    WHERE via_ref IS NOT NULL;

-- What payloads say about campaigns, kept with each message (NULL for old rows)
ALTER TABLE classified_messages ADD COLUMN IF NOT EXISTS template_name text;
ALTER TABLE classified_messages ADD COLUMN IF NOT EXISTS campaign_name text;
ALTER TABLE classified_messages ADD COLUMN IF NOT EXISTS broadcast_id text;

ALTER TABLE funnel ADD COLUMN IF NOT EXISTS campaign text;

-- re-resolution finds the rows of changed refs by these; the report filters and groups by
-- the resolved key
CREATE INDEX IF NOT EXISTS funnel_campaign_id ON funnel (campaign_id) WHERE campaign_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS funnel_ad_id ON funnel (ad_id) WHERE ad_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS funnel_campaign ON funnel (campaign, leads_date, lead_at, lead_id)
    INCLUDE (booking_at, transaction_at, transaction_value, transaction_total)
    WHERE campaign IS NOT NULL;

-- The registry seeded from the messages stored before it existed: the ads their referrals
-- named (the latest headline as name, on one line, as the parsers write names now) and the
-- generic format's campaign labels.
INSERT INTO campaigns (campaign, name, name_source, kind, source, first_seen_at, last_seen_at)
SELECT 'ad:' || ad_id,
       (array_agg(headline ORDER BY sent_at DESC) FILTER (WHERE headline <> ''))[1],
       min(source) FILTER (WHERE headline <> ''),
       'ad', min(source), min(sent_at), max(sent_at)
  FROM (SELECT ad_id, source, sent_at,
               left(btrim(regexp_replace(referral ->> 'headline', '[[:space:][:cntrl:]]+', ' ',
                                         'g')), 200) AS headline
          FROM classified_messages
         WHERE ad_id <> '' AND direction = 'inbound') m
 GROUP BY ad_id
ON CONFLICT (campaign) DO NOTHING;

INSERT INTO campaign_refs (kind, ref, campaign, origin, source)
SELECT 'ad', substr(campaign, 4), campaign, 'payload', source
  FROM campaigns WHERE kind = 'ad'
ON CONFLICT DO NOTHING;

INSERT INTO campaigns (campaign, kind, source, first_seen_at, last_seen_at)
SELECT campaign_id, 'broadcast', 'generic', min(sent_at), max(sent_at)
  FROM classified_messages
 WHERE source = 'generic' AND campaign_id <> ''
 GROUP BY campaign_id
ON CONFLICT (campaign) DO NOTHING;

INSERT INTO campaign_refs (kind, ref, campaign, origin, source)
SELECT DISTINCT 'message', campaign_id, campaign_id, 'payload', 'generic'
  FROM classified_messages
 WHERE source = 'generic' AND campaign_id <> ''
ON CONFLICT DO NOTHING;

UPDATE funnel f
   SET campaign = coalesce(
       (SELECT r.campaign FROM campaign_refs r WHERE r.kind = 'message' AND r.ref = f.campaign_id),
       (SELECT r.campaign FROM campaign_refs r WHERE r.kind = 'ad' AND r.ref = f.ad_id),
       nullif(f.campaign_id, ''), 'ad:' || nullif(f.ad_id, ''))
 WHERE f.campaign_id IS NOT NULL OR f.ad_id IS NOT NULL;

-- The report's two indexes (004) carry the resolved campaign too, so a breakdown by campaign
-- (and a summary filtered by one) stays an index-only scan of the leads it reads, as it was on
-- campaign_id. Rebuilt here, after the column is filled (a few seconds per million leads,
-- writes to the funnel waiting meanwhile).
DROP INDEX IF EXISTS funnel_report_channel;
CREATE INDEX funnel_report_channel ON funnel (channel, leads_date, lead_at, lead_id)
    INCLUDE (booking_at, transaction_at, transaction_value, transaction_total, campaign_id,
             campaign);
DROP INDEX IF EXISTS funnel_report_order;
CREATE INDEX funnel_report_order ON funnel (leads_date, lead_at, lead_id)
    INCLUDE (channel, booking_at, transaction_at, transaction_value, transaction_total,
             campaign_id, campaign);
