//! `GET /v1/devices`, `DELETE /v1/devices/{deviceId}` and the device-limit error details.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;

/// One of the caller's own devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OwnDevice {
    /// The device's ID.
    pub device_id: DeviceId,
    /// The name given at login, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// When the device was registered.
    pub created_at: DateTime<Utc>,
    /// When the device last authenticated (updated at most once an hour).
    pub last_seen_at: DateTime<Utc>,
    /// Whether the device has published its identity keys (only then can others reach it).
    pub has_identity_keys: bool,
}

/// The caller's active devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OwnDevicesResponse {
    /// Active devices, by ascending ID.
    pub devices: Vec<OwnDevice>,
    /// How many devices the server allows per user.
    pub device_limit: u32,
}

/// `details` of a `device_limit_reached` error: enough to let the user pick a device to
/// replace (see `replaceDeviceId` at login).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceLimitDetails {
    /// How many active devices the user has.
    pub count: u32,
    /// The server's per-user device limit.
    pub limit: u32,
    /// The user's active devices.
    pub devices: Vec<OwnDevice>,
}
