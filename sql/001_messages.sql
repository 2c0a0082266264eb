-- Normalized messages, one row per delivered message however often it was delivered.
-- The unique key is the idempotency guarantee of DESIGN.md section 3: (source, message id),
-- plus the room for formats whose ids are only unique within a room (the generic format;
-- room_key is '' for sources with globally unique ids).
CREATE TABLE IF NOT EXISTS messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        text        NOT NULL,
    message_id    text        NOT NULL,
    room_key      text        NOT NULL DEFAULT '',
    room_id       text,
    customer_key  text,
    phone         text,
    user_id       text,
    direction     text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    sender_type   text        NOT NULL,
    sent_at       timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    text          text        NOT NULL DEFAULT '',
    message_type  text,
    channel_hint  text,
    campaign_id   text,
    ad_id         text,
    referral      jsonb,
    raw_key       text        NOT NULL,
    stream_id     text,
    CONSTRAINT messages_idempotency UNIQUE (source, message_id, room_key)
);

CREATE INDEX IF NOT EXISTS messages_customer_sent ON messages (customer_key, sent_at);
CREATE INDEX IF NOT EXISTS messages_room ON messages (room_id) WHERE room_id IS NOT NULL;

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

-- Rooms (generic format, Qontak) and the customer they belong to, so an agent's message is
-- tied to the room's customer even when it arrives before the customer's first message.
CREATE TABLE IF NOT EXISTS rooms (
    source        text        NOT NULL,
    room_id       text        NOT NULL,
    customer_key  text        NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, room_id)
);
