-- Receipts and read state, privacy settings, channels with per-device sender keys.

-- Read-receipt privacy (both on by default; see courier_protocol::api::receipts).
ALTER TABLE users
    ADD COLUMN send_read_receipts BOOLEAN NOT NULL DEFAULT true,
    ADD COLUMN show_read_receipts BOOLEAN NOT NULL DEFAULT true;

-- Stream items other than envelopes and sender keys: receipts and membership changes.
-- Same sequence as the device's envelopes (devices.next_stream_seq). `body` is the item's
-- JSON as served, with seq 0 (set on read). Deleted once acknowledged.
CREATE TABLE stream_events (
    recipient_user_id   UUID NOT NULL,
    recipient_device_id INTEGER NOT NULL,
    seq                 BIGINT NOT NULL,
    body                TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (recipient_user_id, recipient_device_id, seq)
);

-- Read state. A watermark per reader user and conversation (everything up to a message,
-- by server order: message IDs are time-ordered UUIDs)...
CREATE TABLE read_markers (
    reader_user_id     UUID NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    -- The other user of a one-to-one conversation, or the channel.
    conversation_id    UUID NOT NULL,
    up_to_message_id   UUID NOT NULL,
    read_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (reader_user_id, conversation_id)
);

-- ...and single messages marked read on their own.
CREATE TABLE message_reads (
    message_id     UUID NOT NULL,
    reader_user_id UUID NOT NULL,
    read_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, reader_user_id)
);

CREATE TABLE channels (
    channel_id UUID PRIMARY KEY,
    created_by UUID NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE channel_members (
    channel_id UUID NOT NULL REFERENCES channels (channel_id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id)
);

CREATE INDEX channel_members_by_user ON channel_members (user_id);

-- A group message is stored once (its Megolm ciphertext in encrypted_envelope, purged
-- like a V1 message's once every device has it) and has one stream row per member
-- device (envelope_type 3, no ciphertext of its own).
ALTER TABLE messages
    ALTER COLUMN recipient_user_id DROP NOT NULL,
    ADD COLUMN channel_id UUID,
    ADD COLUMN group_session_id TEXT,
    ADD CONSTRAINT messages_one_recipient CHECK ((recipient_user_id IS NULL) = (channel_id IS NOT NULL)),
    ADD CONSTRAINT messages_group_session CHECK ((channel_id IS NULL) = (group_session_id IS NULL));

-- Senders of a channel's messages in a range (read receipts for "read up to").
CREATE INDEX messages_by_channel ON messages (channel_id, message_id) WHERE channel_id IS NOT NULL;

ALTER TABLE message_envelopes DROP CONSTRAINT message_envelopes_envelope_type_check;
ALTER TABLE message_envelopes ADD CONSTRAINT message_envelopes_envelope_type_check
    CHECK (envelope_type IN (0, 1, 2, 3));

-- A sending device's Megolm session key, Olm-encrypted for one member device; a stream
-- item of that device, with its delivered flag (ciphertext purged once delivered).
CREATE TABLE sender_key_distributions (
    recipient_user_id   UUID NOT NULL,
    recipient_device_id INTEGER NOT NULL,
    seq                 BIGINT NOT NULL,
    channel_id          UUID NOT NULL REFERENCES channels (channel_id) ON DELETE CASCADE,
    sender_user_id      UUID NOT NULL,
    sender_device_id    INTEGER NOT NULL,
    session_id          TEXT NOT NULL,
    envelope_type       SMALLINT NOT NULL CHECK (envelope_type IN (0, 1)),
    ciphertext          BYTEA,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at        TIMESTAMPTZ,
    PRIMARY KEY (recipient_user_id, recipient_device_id, seq),
    -- One copy per device and session: a re-upload keeps the first.
    UNIQUE (channel_id, sender_user_id, sender_device_id, session_id, recipient_user_id, recipient_device_id)
);

CREATE INDEX sender_key_distributions_undelivered
    ON sender_key_distributions (recipient_user_id, recipient_device_id, seq)
    WHERE delivered_at IS NULL;
