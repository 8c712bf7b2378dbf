-- Acknowledging an envelope no longer writes an index entry.
--
-- The undelivered partial index named `delivered_at` in its predicate, so setting it made
-- every acknowledgement a non-HOT update: a new heap tuple on another page plus a new entry
-- in each of the table's indexes, then vacuum work for the dead ones. What it found (a
-- device's undelivered envelopes) is now a primary-key range that starts at the device's
-- delivery floor: every envelope of the device at or below it is delivered (or gone).
CREATE TABLE device_delivery_floors (
    user_id           UUID NOT NULL,
    device_id         INTEGER NOT NULL,
    -- Raised by cumulative acknowledgements, never past an envelope the acknowledging
    -- statement saw, so it never skips one committed later. No foreign key: inserting one
    -- would share-lock the device row that every send to the device locks for update.
    delivered_through BIGINT NOT NULL CHECK (delivered_through >= 0),
    PRIMARY KEY (user_id, device_id)
);

-- Existing devices start at their first undelivered envelope (read while its index exists).
INSERT INTO device_delivery_floors (user_id, device_id, delivered_through)
SELECT d.user_id, d.device_id,
       COALESCE((SELECT min(e.seq) - 1 FROM message_envelopes e
                 WHERE e.recipient_user_id = d.user_id AND e.recipient_device_id = d.device_id
                   AND e.delivered_at IS NULL),
                d.next_stream_seq - 1)
FROM devices d;

DROP INDEX message_envelopes_undelivered;

-- Room on each page for the acknowledged version of its rows (ciphertext purged, so
-- smaller), so the update stays on the page (HOT) and touches no index.
ALTER TABLE message_envelopes SET (fillfactor = 70);
