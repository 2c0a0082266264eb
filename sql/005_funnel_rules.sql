-- New funnel rules (docs/funnel.md): the medium (the messaging app a conversation runs on)
-- apart from the marketing channel, and an observed booking date. Before, a CRM label that
-- was not ads / campaign / website made the lead `direct`, a medium label such as
-- "instagram" was read as a channel hint, and a payment set the booking time.
--
-- Stored messages are brought to the new meaning here: WhatsApp Cloud messages are the
-- whatsapp medium; a Qontak room's channel is its medium; a generic label that names a medium
-- moves from channel_hint to medium. The funnel's rows get their medium (and the new booking
-- and repeat-lead rules) from `funnel rebuild`, which the upgrade notes in the README ask for.
ALTER TABLE classified_messages ADD COLUMN IF NOT EXISTS medium text;
ALTER TABLE funnel ADD COLUMN IF NOT EXISTS medium text;

CREATE TEMP TABLE medium_aliases (label text PRIMARY KEY, medium text NOT NULL) ON COMMIT DROP;
INSERT INTO medium_aliases VALUES
    ('whatsapp', 'whatsapp'), ('wa', 'whatsapp'), ('whatsapp_business', 'whatsapp'),
    ('wa_business', 'whatsapp'), ('waba', 'whatsapp'), ('whatsapp_cloud', 'whatsapp'),
    ('whatsapp_api', 'whatsapp'), ('wa_api', 'whatsapp'),
    ('instagram', 'instagram'), ('ig', 'instagram'), ('insta', 'instagram'),
    ('instagram_dm', 'instagram'), ('ig_dm', 'instagram'),
    ('messenger', 'messenger'), ('facebook', 'messenger'), ('fb', 'messenger'),
    ('facebook_messenger', 'messenger'), ('fb_messenger', 'messenger'), ('fbm', 'messenger'),
    ('telegram', 'telegram'), ('tele', 'telegram'), ('tg', 'telegram'),
    ('line', 'line'), ('line_oa', 'line'),
    ('email', 'email'), ('e_mail', 'email'), ('mail', 'email'), ('gmail', 'email'),
    ('sms', 'sms'),
    ('webchat', 'webchat'), ('web_chat', 'webchat'), ('live_chat', 'webchat'),
    ('chat_widget', 'webchat');

UPDATE classified_messages SET medium = 'whatsapp'
 WHERE source = 'whatsapp' AND medium IS NULL;

-- Qontak stored its room channel folded by the old channel aliases: web chat rooms as 'website'
UPDATE classified_messages m
   SET medium = CASE WHEN m.room_channel = 'website' THEN 'webchat'
                     ELSE coalesce(a.medium, m.room_channel) END
  FROM (SELECT DISTINCT room_channel FROM classified_messages
         WHERE source = 'qontak' AND room_channel IS NOT NULL) r
  LEFT JOIN medium_aliases a ON a.label = r.room_channel
 WHERE m.source = 'qontak' AND m.medium IS NULL AND m.room_channel = r.room_channel;

UPDATE classified_messages m SET medium = a.medium, channel_hint = NULL
  FROM medium_aliases a
 WHERE m.source = 'generic' AND m.medium IS NULL AND m.channel_hint = a.label;

-- A payment no longer implies a booking time (the booking date holds what was said, and a
-- booking may follow the payment): the funnel's check becomes lead <= booking, lead <=
-- transaction. 002 created the old check unnamed; it is found by what it says.
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'funnel'::regclass AND contype = 'c'
                AND pg_get_constraintdef(oid) LIKE '%transaction_at >= booking_at%'
    LOOP
        EXECUTE format('ALTER TABLE funnel DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
ALTER TABLE funnel DROP CONSTRAINT IF EXISTS funnel_transaction_after_lead;
ALTER TABLE funnel ADD CONSTRAINT funnel_transaction_after_lead
    CHECK (transaction_at IS NULL OR transaction_at >= lead_at);
