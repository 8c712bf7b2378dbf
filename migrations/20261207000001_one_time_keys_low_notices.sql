-- The "one-time keys low" notice, once per crossing.
--
-- A claim that leaves a device with fewer unclaimed one-time keys than
-- courier_protocol::limits::ONE_TIME_KEYS_LOW_THRESHOLD appends a `oneTimeKeysLow` item
-- to the device's stream and records here that the notice is outstanding, in the same
-- transaction; while the row exists, further claims send nothing. An upload that brings
-- the count back to the threshold or above deletes the row (re-arms the notice). Both
-- write it only while holding the device's row lock (`devices ... FOR UPDATE`), so the
-- decision is made once per crossing however many claims race.
CREATE TABLE one_time_keys_low_notices (
    user_id   UUID NOT NULL,
    device_id INTEGER NOT NULL,
    -- Unclaimed one-time keys left when the notice was sent.
    count     INTEGER NOT NULL CHECK (count >= 0),
    sent_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
