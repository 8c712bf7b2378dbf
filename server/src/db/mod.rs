//! SQL, one module per domain. Functions take the pool (or a transaction) and plain
//! values; HTTP concerns stay in `routes`.

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
