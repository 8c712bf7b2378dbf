//! The key directory: identity keys, signed one-time keys, fallback keys, claims.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, UserId};

/// A device's long-term identity keys with its self-signature.
///
/// `signature` is an Ed25519 signature by `ed25519` over
/// [`identity_keys_payload`](crate::signing::identity_keys_payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IdentityKeys {
    /// Curve25519 identity key (32 bytes, base64).
    pub curve25519: String,
    /// Ed25519 signing key (32 bytes, base64).
    pub ed25519: String,
    /// Ed25519 signature (64 bytes, base64).
    pub signature: String,
}

/// A Curve25519 key (one-time or fallback) signed by the device's Ed25519 key over
/// [`one_time_key_payload`](crate::signing::one_time_key_payload) or
/// [`fallback_key_payload`](crate::signing::fallback_key_payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SignedKey {
    /// The key's ID, unique per device (1 to 64 characters of `[A-Za-z0-9_+/=-]`).
    pub key_id: String,
    /// Curve25519 public key (32 bytes, base64).
    pub key: String,
    /// Ed25519 signature (64 bytes, base64).
    pub signature: String,
}

/// Uploads a batch of one-time keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UploadOneTimeKeysRequest {
    /// At most 100 keys ([`MAX_ONE_TIME_KEYS_PER_UPLOAD`](crate::limits::MAX_ONE_TIME_KEYS_PER_UPLOAD)).
    pub one_time_keys: Vec<SignedKey>,
}

/// How many keys the calling device has left on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyCountResponse {
    /// Unclaimed one-time keys.
    pub one_time_key_count: u32,
    /// The ID of the current fallback key, if one is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_key_id: Option<String>,
}

/// A user's device as the key directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DirectoryDevice {
    /// The device's ID.
    pub device_id: DeviceId,
    /// Its identity keys.
    pub identity_keys: IdentityKeys,
}

/// A user's reachable devices: active devices that published identity keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserDevicesResponse {
    /// Whose devices these are.
    pub user_id: UserId,
    /// By ascending device ID.
    pub devices: Vec<DirectoryDevice>,
}

/// A (user, device) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceRef {
    /// The user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
}

impl DeviceRef {
    /// The device `device_id` of `user_id`.
    pub const fn new(user_id: UserId, device_id: DeviceId) -> Self {
        Self { user_id, device_id }
    }
}

/// Claims one key per device, to open sessions with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimKeysRequest {
    /// At most 1,000 devices ([`MAX_DEVICES_PER_CLAIM`](crate::limits::MAX_DEVICES_PER_CLAIM));
    /// repeats are claimed once.
    pub devices: Vec<DeviceRef>,
}

/// A claimed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimedKey {
    /// The key's user.
    pub user_id: UserId,
    /// The key's device.
    pub device_id: DeviceId,
    /// The signed key.
    #[serde(flatten)]
    pub key: SignedKey,
    /// `true` for the device's fallback key, handed out only when it has no one-time key
    /// left (and not consumed by the claim).
    pub fallback: bool,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimKeysResponse {
    /// One key per device that had one.
    pub keys: Vec<ClaimedKey>,
    /// Devices that had nothing: unknown, removed, or without one-time and fallback keys.
    pub unavailable: Vec<DeviceRef>,
}
