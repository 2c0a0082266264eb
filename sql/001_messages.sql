-- Messages, one row per delivered message however often it was delivered, with what the
-- classifier read in it. The unique key is the idempotency guarantee (docs/ingest.md):
-- (source, message id), plus the room for formats whose ids are only unique within a room (the
-- generic format; room_key is '' for sources with globally unique ids).
CREATE TABLE IF NOT EXISTS classified_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source          text        NOT NULL,
    message_id      text        NOT NULL,
    room_key        text        NOT NULL DEFAULT '',
    room_id         text,
    customer_key    text,                       -- NULL until an agent message's room is known
    phone           text,
    user_id         text,
    direction       text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    sender_type     text        NOT NULL,
    sent_at         timestamptz NOT NULL,
    message_date    date        NOT NULL,       -- sent_at's business date in FUNNEL_TIMEZONE
    received_at     timestamptz,
    text            text        NOT NULL DEFAULT '',
    message_type    text,
    channel_hint    text,
    room_channel    text,
    campaign_id     text,
    ad_id           text,
    referral        jsonb,
    context_id      text,
    raw_key         text        NOT NULL,
    raw_line        integer     NOT NULL DEFAULT 0,
    -- classification
    stages          text[]      NOT NULL DEFAULT '{}',
    keywords        text[]      NOT NULL DEFAULT '{}',
    opening_keyword text,
    opening_channel text,
    payment         boolean     NOT NULL DEFAULT false,
    amount          numeric(20, 0) CHECK (amount >= 0),
    requested_date  date,
    keyword_version text        NOT NULL DEFAULT '',
    classified_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT classified_messages_idempotency UNIQUE (source, message_id, room_key)
);

CREATE INDEX IF NOT EXISTS classified_messages_customer
    ON classified_messages (customer_key, sent_at);
CREATE INDEX IF NOT EXISTS classified_messages_date ON classified_messages (message_date);
CREATE INDEX IF NOT EXISTS classified_messages_unresolved_room
    ON classified_messages (source, room_id) WHERE customer_key IS NULL;

-- Delivery receipts of our outbound messages (WhatsApp statuses[], Qontak status events).
-- Kept for campaign delivery reporting; never classified as customer messages.
CREATE TABLE IF NOT EXISTS message_statuses (
    source        text        NOT NULL,
    message_id    text        NOT NULL,
    status        text        NOT NULL,
    recipient     text,
    status_at     timestamptz NOT NULL,
    errors        jsonb,
    raw_key       text        NOT NULL,
    PRIMARY KEY (source, message_id, status)
);

-- Well-formed items no lead can use (no customer key, unsupported type), with the reason.
CREATE TABLE IF NOT EXISTS dead_letters (
    stream_id     text        PRIMARY KEY,
    source        text        NOT NULL,
    reason        text        NOT NULL,
    detail        text        NOT NULL,
    message_id    text,
    raw_key       text        NOT NULL,
    raw_line      integer     NOT NULL DEFAULT 0,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- Rooms (generic format, Qontak) and the customer they belong to, so an agent's message is
-- tied to the room's customer even when it arrives before the customer's first message.
CREATE TABLE IF NOT EXISTS rooms (
    source        text        NOT NULL,
    room_id       text        NOT NULL,
    customer_key  text        NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, room_id)
);

-- How far each stream has been processed (committed with the batch it covers).
CREATE TABLE IF NOT EXISTS stream_offsets (
    stream        text        PRIMARY KEY,
    last_id       text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
