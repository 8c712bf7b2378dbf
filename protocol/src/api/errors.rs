//! The `details` of error answers: one type per shape, and which code carries which.
//!
//! The server builds every `details` from these types, so the OpenAPI document (which
//! lists them, and ties each to its codes) says exactly what a response carries.

use serde::{Deserialize, Serialize};

use super::keys::DeviceRef;
use crate::ErrorCode;
use crate::ids::UserId;

/// `details` naming the request field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FieldDetails {
    /// The field, as a JSON path into the request (`deviceEnvelopes[2].ciphertext`).
    pub field: String,
}

/// `details` of `invalid_signature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SignatureDetails {
    /// The signed field.
    pub field: String,
    /// The one-time key whose signature fails, for one-time key uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// `details` of `invalid_key_length`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyLengthDetails {
    /// The field.
    pub field: String,
    /// Bytes the field must decode to.
    pub expected: u32,
    /// Bytes it decoded to.
    pub actual: u32,
}

/// `details` of a field over its limit (`envelope_too_large`, an `invalid_query_parameter`
/// out of range).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FieldLimitDetails {
    /// The field.
    pub field: String,
    /// Its largest allowed value (for a ciphertext, decoded bytes).
    pub max: u64,
}

/// `details` of a count over its limit (`too_many_keys`, `too_many_devices`,
/// `too_many_envelopes`, `too_many_members`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CountLimitDetails {
    /// The most the request may carry.
    pub max: u64,
}

/// `details` of `duplicate_key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DuplicateKeyIdDetails {
    /// The key ID named twice.
    pub key_id: String,
}

/// `details` of `one_time_key_conflict`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyConflictDetails {
    /// Key IDs uploaded before with a different key.
    pub key_ids: Vec<String>,
}

/// `details` of `one_time_key_limit_reached`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StoredKeysDetails {
    /// Unclaimed one-time keys the device has stored.
    pub stored: u64,
    /// The most it may store.
    pub max: u64,
}

/// `details` of `unsupported_protocol_version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SupportedVersionsDetails {
    /// The protocol versions the server speaks.
    pub supported: Vec<u8>,
}

/// `details` of `user_not_found` when a request names several users (channels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UnknownUsersDetails {
    /// The users that do not exist.
    pub user_ids: Vec<UserId>,
}

/// `details` of `not_a_member_device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DevicesDetails {
    /// The devices the request named wrongly.
    pub devices: Vec<DeviceRef>,
}

/// `details` of `rate_limited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitDetails {
    /// Which limit: `login_per_address`, `login_per_account`, `accounts_per_address`,
    /// `claims_per_device`, `claims_per_target`, `sends_per_device`, `sockets_per_device`,
    /// `sockets_per_address`.
    pub limit: String,
    /// Whole seconds to wait (also in `Retry-After`).
    pub retry_after_seconds: u64,
}

/// Whether an error answer with this code carries `details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailsPresence {
    /// Never.
    Never,
    /// Always, of the named schema.
    Always(&'static str),
    /// Sometimes (as the code's documentation says), of the named schema.
    Sometimes(&'static str),
}

impl ErrorCode {
    /// The schema (by its component name) of this code's `details`.
    pub fn details(self) -> DetailsPresence {
        use DetailsPresence::{Always, Never, Sometimes};
        match self {
            ErrorCode::InvalidBase64
            | ErrorCode::InvalidEnvelope
            | ErrorCode::InvalidKeyId
            | ErrorCode::InvalidPublicKey => Always("FieldDetails"),
            ErrorCode::InvalidSignature => Always("SignatureDetails"),
            ErrorCode::InvalidKeyLength => Always("KeyLengthDetails"),
            ErrorCode::EnvelopeTooLarge => Always("FieldLimitDetails"),
            ErrorCode::InvalidQueryParameter => Sometimes("FieldLimitDetails"),
            ErrorCode::TooManyKeys
            | ErrorCode::TooManyDevices
            | ErrorCode::TooManyEnvelopes
            | ErrorCode::TooManyMembers => Always("CountLimitDetails"),
            ErrorCode::DuplicateKeyId => Always("DuplicateKeyIdDetails"),
            ErrorCode::OneTimeKeyConflict => Always("KeyConflictDetails"),
            ErrorCode::OneTimeKeyLimitReached => Always("StoredKeysDetails"),
            ErrorCode::UnsupportedProtocolVersion => Always("SupportedVersionsDetails"),
            ErrorCode::DuplicateEnvelope => Always("DeviceRef"),
            ErrorCode::UserNotFound => Sometimes("UnknownUsersDetails"),
            ErrorCode::NotAMemberDevice => Always("DevicesDetails"),
            ErrorCode::RateLimited => Always("RateLimitDetails"),
            ErrorCode::DeviceLimitReached => Always("DeviceLimitDetails"),
            ErrorCode::DeviceListMismatch => Always("DeviceListMismatch"),
            ErrorCode::MissingSenderKeys => Always("MissingSenderKeys"),
            _ => Never,
        }
    }
}
