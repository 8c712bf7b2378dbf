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
///
/// The plan must stay linear in the batch whatever the planner estimates (a fresh or
/// unanalyzed `devices` table made it estimate one row everywhere, and it chose nested
/// loops over two CTEs: measured 17 ms of a 200-receipt append, all of it while the
/// device rows were locked; docs/benchmarks.md). So every device row is found by its own
/// key lookup (`LATERAL … OFFSET 0`: never a scan of all devices), its counter is read
/// under the lock (`FOR UPDATE` returns the newest committed version), and items meet
/// their device on one column (`dkey`), which the planner estimates sanely, where a
/// join on (user, device) is taken for one row.
macro_rules! numbered_stream_items {
    () => {
        "keyed AS (
             SELECT t.*, dense_rank() OVER (ORDER BY t.user_id, t.device_id) AS dkey FROM targets t
         ), wanted AS (
             SELECT dkey, user_id, device_id, count(*) AS n FROM keyed GROUP BY dkey, user_id, device_id
         ), locked AS (
             SELECT w.dkey, d.user_id, d.device_id, d.next_stream_seq AS first_seq, w.n
             FROM (SELECT * FROM wanted ORDER BY user_id, device_id) w
             CROSS JOIN LATERAL (
                 SELECT d.user_id, d.device_id, d.next_stream_seq FROM devices d
                 WHERE d.user_id = w.user_id AND d.device_id = w.device_id AND d.removed_at IS NULL
                 OFFSET 0 FOR UPDATE
             ) d
         ), bumped AS (
             UPDATE devices d SET next_stream_seq = l.first_seq + l.n
             FROM locked l
             WHERE d.user_id = l.user_id AND d.device_id = l.device_id
         ), numbered AS (
             SELECT k.*,
                    l.first_seq + row_number() OVER (PARTITION BY k.dkey ORDER BY k.ord) - 1 AS seq
             FROM keyed k JOIN locked l ON l.dkey = k.dkey
         )"
    };
}

pub mod accounts;
pub mod channels;
pub mod devices;
pub mod keys;
pub mod messages;
pub mod receipts;
pub mod registration_tokens;
pub mod stream;

use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{DeviceId, InvalidDeviceId};
use uuid::Uuid;

/// Whether a database error means the database cannot be reached right now (no
/// connection in time, a connection lost, the server shutting down or refusing
/// connections), rather than a failure of the statement: such a request may succeed if
/// tried again, and is answered `503 service_unavailable`.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // Class 08: connection exceptions; 57P01-57P03: the server is shutting down,
            // crashed or not yet accepting connections; 53300: too many connections.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Reads a device ID column (a positive `integer`) back into a [`DeviceId`].
pub(crate) fn device_id(id: i32) -> Result<DeviceId, sqlx::Error> {
    DeviceId::from_i32(id).map_err(|error: InvalidDeviceId| sqlx::Error::Decode(Box::new(error)))
}

/// Devices as the two arrays a statement `unnest`s (`$1::uuid[], $2::int4[]`).
pub(crate) fn device_columns<'a>(
    devices: impl IntoIterator<Item = &'a DeviceRef>,
) -> (Vec<Uuid>, Vec<i32>) {
    devices
        .into_iter()
        .map(|device| (device.user_id.as_uuid(), device.device_id.as_i32()))
        .unzip()
}
