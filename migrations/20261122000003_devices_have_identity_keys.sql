-- Whether a device has published identity keys, on the device row itself: every send
-- checks its envelopes against the reachable devices (active, with keys) of two users,
-- and reading one flag per device row beats probing another table for each of them.
ALTER TABLE devices ADD COLUMN has_identity_keys BOOLEAN NOT NULL DEFAULT false;

UPDATE devices d SET has_identity_keys = true
WHERE EXISTS (SELECT 1 FROM device_identity_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id);
