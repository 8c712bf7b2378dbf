//! SQL, one module per domain. Functions take the pool (or a transaction) and plain
//! values; HTTP concerns stay in `routes`.

/// The CTEs that give new stream items their sequence numbers, shared by every statement
/// that appends to device streams (sends, sender keys, receipts and membership items).
///
/// It expects a CTE `targets` with one row per new item (`ord`, `user_id`, `device_id`,
/// and whatever the item carries) and defines `numbered`: those rows whose device is
/// active, each with its `seq`. It locks the target devices' rows in (user, device)
/// order, so concurrent statements never deadlock, and takes a run of
/// `devices.next_stream_seq` per device under that lock, so numbers are handed out in
/// commit order per device: a reader that has seen seq N has seen every committed item
/// below it. Items of one device are numbered in `ord` order.
macro_rules! numbered_stream_items {
    () => {
        "wanted AS (
             SELECT user_id, device_id, count(*) AS n FROM targets GROUP BY user_id, device_id
         ), locked AS (
             SELECT d.user_id, d.device_id FROM devices d
             JOIN wanted w ON d.user_id = w.user_id AND d.device_id = w.device_id
             WHERE d.removed_at IS NULL
             ORDER BY d.user_id, d.device_id
             FOR UPDATE OF d
         ), bumped AS (
             UPDATE devices d SET next_stream_seq = d.next_stream_seq + w.n
             FROM locked l JOIN wanted w ON w.user_id = l.user_id AND w.device_id = l.device_id
             WHERE d.user_id = l.user_id AND d.device_id = l.device_id
             RETURNING d.user_id, d.device_id, d.next_stream_seq - w.n AS first_seq
         ), numbered AS (
             SELECT t.*,
                    b.first_seq + row_number() OVER (PARTITION BY t.user_id, t.device_id ORDER BY t.ord) - 1 AS seq
             FROM targets t JOIN bumped b ON b.user_id = t.user_id AND b.device_id = t.device_id
         )"
    };
}

pub mod accounts;
pub mod channels;
pub mod devices;
pub mod keys;
pub mod messages;
pub mod receipts;
pub mod stream;

use courier_protocol::{DeviceId, InvalidDeviceId};

/// Reads a device ID column (a positive `integer`) back into a [`DeviceId`].
pub(crate) fn device_id(id: i32) -> Result<DeviceId, sqlx::Error> {
    DeviceId::from_i32(id).map_err(|error: InvalidDeviceId| sqlx::Error::Decode(Box::new(error)))
}
