-- Accounts, server-assigned devices and the key directory.

CREATE TABLE users (
    user_id        UUID PRIMARY KEY,
    -- Canonical (lowercase) form; the rules live in courier_protocol::limits.
    username       TEXT NOT NULL UNIQUE,
    -- Argon2id PHC string.
    password_hash  TEXT NOT NULL,
    -- The next device ID to assign. Incremented under the row lock, so device IDs are
    -- per-user, monotonic and never reused, however many logins race.
    next_device_id INTEGER NOT NULL DEFAULT 1 CHECK (next_device_id > 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    user_id      UUID NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    device_id    INTEGER NOT NULL CHECK (device_id > 0),
    device_name  TEXT,
    -- SHA-256 of the bearer token; the token itself is never stored. Kept after removal
    -- so a removed device is told so (device_removed) rather than "unknown token".
    token_hash   BYTEA NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    removed_at   TIMESTAMPTZ,
    PRIMARY KEY (user_id, device_id)
);

CREATE INDEX devices_active_by_user ON devices (user_id, device_id) WHERE removed_at IS NULL;

CREATE TABLE device_identity_keys (
    user_id        UUID NOT NULL,
    device_id      INTEGER NOT NULL,
    curve25519_key BYTEA NOT NULL CHECK (length(curve25519_key) = 32),
    ed25519_key    BYTEA NOT NULL CHECK (length(ed25519_key) = 32),
    signature      BYTEA NOT NULL CHECK (length(signature) = 64),
    published_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE one_time_keys (
    user_id     UUID NOT NULL,
    device_id   INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    public_key  BYTEA NOT NULL CHECK (length(public_key) = 32),
    signature   BYTEA NOT NULL CHECK (length(signature) = 64),
    uploaded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when handed out. The row stays, so a re-upload of a claimed key ID is a no-op
    -- and a one-time key is never handed out twice.
    claimed_at  TIMESTAMPTZ,
    PRIMARY KEY (user_id, device_id, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE INDEX one_time_keys_unclaimed ON one_time_keys (user_id, device_id, uploaded_at, key_id)
    WHERE claimed_at IS NULL;

CREATE TABLE fallback_keys (
    user_id     UUID NOT NULL,
    device_id   INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    public_key  BYTEA NOT NULL CHECK (length(public_key) = 32),
    signature   BYTEA NOT NULL CHECK (length(signature) = 64),
    uploaded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
