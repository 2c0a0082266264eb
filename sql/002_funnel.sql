-- The funnel: one row per lead cycle (docs/funnel.md). Dates are business dates in
-- FUNNEL_TIMEZONE; the *_at columns are the exact UTC timestamps they come from.
CREATE TABLE IF NOT EXISTS funnel (
    lead_id            text        PRIMARY KEY,   -- stable: hash of customer + opening message
    leads_date         date        NOT NULL,
    channel            text        NOT NULL,
    phone              text,                      -- E.164; NULL when the provider withholds it
    booking_date       date,
    transaction_date   date,
    transaction_value  numeric(20, 0) CHECK (transaction_value >= 0),
    customer_key       text        NOT NULL,
    cycle              integer     NOT NULL,      -- 1 for the customer's first lead, 2, …
    lead_at            timestamptz NOT NULL,
    booking_at         timestamptz,
    transaction_at     timestamptz,
    transaction_total  numeric(20, 0) CHECK (transaction_total >= 0),
    transactions       integer     NOT NULL DEFAULT 0,
    requested_date     date,
    campaign_id        text,
    ad_id              text,
    opening_keyword    text,
    opening_source     text        NOT NULL,
    opening_message_id text        NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (booking_at IS NULL OR booking_at >= lead_at),
    CHECK (transaction_at IS NULL OR (booking_at IS NOT NULL AND transaction_at >= booking_at))
);

CREATE INDEX IF NOT EXISTS funnel_leads_date_channel ON funnel (leads_date, channel);
CREATE INDEX IF NOT EXISTS funnel_customer ON funnel (customer_key);
CREATE INDEX IF NOT EXISTS funnel_updated ON funnel (updated_at);

-- Every payment statement on its own (down payment + settlement), tied to its lead.
CREATE TABLE IF NOT EXISTS transactions (
    message_pk     bigint      PRIMARY KEY REFERENCES classified_messages (id) ON DELETE CASCADE,
    lead_id        text        NOT NULL,
    customer_key   text        NOT NULL,
    paid_at        timestamptz NOT NULL,
    paid_date      date        NOT NULL,
    amount         numeric(20, 0) CHECK (amount >= 0),
    direction      text        NOT NULL
);

CREATE INDEX IF NOT EXISTS transactions_lead ON transactions (lead_id);
CREATE INDEX IF NOT EXISTS transactions_customer ON transactions (customer_key);
