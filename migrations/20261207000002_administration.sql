-- Administration: deactivated accounts and registration tokens. Additive only, so a
-- server one release older runs on this schema (docs/deploy.md, "Rolling back").

-- Set when the user deleted the account or an operator deactivated it. The row stays so
-- the username stays reserved (nobody can take over a name others trust); the devices
-- are removed and the password hash cleared.
ALTER TABLE users ADD COLUMN deactivated_at TIMESTAMPTZ;

CREATE TABLE registration_tokens (
    token_id     UUID PRIMARY KEY,
    -- SHA-256 of the token; the token itself is shown once, when issued.
    token_hash   BYTEA NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- NULL: any number of accounts.
    uses_allowed INTEGER CHECK (uses_allowed > 0),
    uses         INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    -- NULL: never expires.
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ
);
