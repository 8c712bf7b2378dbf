-- Messages, per-device envelopes and the per-device stream.

-- Each device's stream has its own sequence. The counter sits on the device row: a send
-- locks its recipients' rows (in a fixed order) for the length of its transaction, so
-- sequence numbers are handed out in commit order per device, and a reader that has seen
-- seq N has seen every committed item below it.
ALTER TABLE devices ADD COLUMN next_stream_seq BIGINT NOT NULL DEFAULT 1 CHECK (next_stream_seq > 0);

CREATE TABLE messages (
    -- Time-ordered (UUIDv7), assigned by the server.
    message_id         UUID PRIMARY KEY,
    -- From the sender's token, never from the request body.
    sender_user_id     UUID NOT NULL,
    sender_device_id   INTEGER NOT NULL,
    client_message_id  TEXT NOT NULL,
    recipient_user_id  UUID NOT NULL,
    protocol_version   SMALLINT NOT NULL CHECK (protocol_version IN (1, 2)),
    -- Protocol V1 only (the legacy column): one ciphertext for every device of the
    -- recipient. NULL for V2, and purged once every device has it.
    encrypted_envelope BYTEA,
    envelope_count     INTEGER NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Idempotency: a retry of the same client message ID from the same device finds the
    -- original. Enforced here, so it holds across restarts and racing retries.
    UNIQUE (sender_user_id, sender_device_id, client_message_id)
);

-- One row per (message, recipient device): the device's stream. No foreign keys on this
-- hot table: rows are written in the same transaction as their message, and removed by
-- device removal and retention.
CREATE TABLE message_envelopes (
    recipient_user_id   UUID NOT NULL,
    recipient_device_id INTEGER NOT NULL,
    seq                 BIGINT NOT NULL,
    message_id          UUID NOT NULL,
    -- 0 pre-key, 1 normal, 2 legacy (V1: the ciphertext is messages.encrypted_envelope).
    envelope_type       SMALLINT NOT NULL CHECK (envelope_type IN (0, 1, 2)),
    -- NULL once delivered (purged) and for V1 rows.
    ciphertext          BYTEA,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at        TIMESTAMPTZ,
    delivered           BOOLEAN GENERATED ALWAYS AS (delivered_at IS NOT NULL) STORED,
    PRIMARY KEY (recipient_user_id, recipient_device_id, seq)
);

-- A message's envelopes (one device's envelope by message ID; delivery state per device).
CREATE INDEX message_envelopes_by_message ON message_envelopes (message_id);

-- What is still to deliver, per device, in stream order. Small: rows leave it when acked.
CREATE INDEX message_envelopes_undelivered
    ON message_envelopes (recipient_user_id, recipient_device_id, seq)
    WHERE delivered_at IS NULL;

-- V1 messages whose legacy ciphertext is still held (retention purges it once every
-- device has the message).
CREATE INDEX messages_v1_pending ON messages (message_id) WHERE encrypted_envelope IS NOT NULL;
