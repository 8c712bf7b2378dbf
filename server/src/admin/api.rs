//! The admin API's request and response bodies (JSON, camelCase), shared by the server
//! and `courier-server admin`. docs/admin.md documents them.

use chrono::{DateTime, Utc};
use courier_protocol::api::devices::OwnDevice;
use courier_protocol::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// A user as an operator sees it (no keys, no password, nothing a user wrote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSummary {
    /// The user's ID.
    pub user_id: UserId,
    /// The canonical username (reserved for good once the account exists).
    pub username: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account was deactivated (by an operator or deleted by its user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Devices the user has now.
    pub active_devices: u32,
}

/// `GET /admin/v1/users`: a page of users by username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserList {
    /// Users, by username.
    pub users: Vec<UserSummary>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// `GET /admin/v1/users/{user}`: one user and its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDetails {
    /// The user.
    pub user: UserSummary,
    /// Its active devices.
    pub devices: Vec<OwnDevice>,
}

/// `POST /admin/v1/users/{user}/deactivate`: what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeactivationReport {
    /// The user.
    pub user_id: UserId,
    /// Devices removed now (their tokens revoked, sockets closed, keys deleted).
    pub removed_devices: Vec<DeviceId>,
    /// Undelivered envelopes and sender keys to those devices, dropped.
    pub dropped_items: u64,
    /// The user was deactivated before this call.
    pub already_deactivated: bool,
}

/// `POST /admin/v1/registration-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueRegistrationToken {
    /// Accounts the token may create (absent: any number until it expires or is revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_allowed: Option<u32>,
    /// Seconds from now until it expires (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// Whether a registration token can create an account now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// It can.
    Valid,
    /// Its uses are used up.
    UsedUp,
    /// It expired.
    Expired,
    /// An operator revoked it.
    Revoked,
}

/// A registration token's record (the token itself is shown once, when issued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationTokenInfo {
    /// Names the token for listing and revoking.
    pub token_id: uuid::Uuid,
    /// Whether it works now.
    pub state: TokenState,
    /// Accounts it may create (absent: any number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_allowed: Option<u32>,
    /// Accounts it created.
    pub uses: u32,
    /// When it expires (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The answer to issuing a token: the token, once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedRegistrationToken {
    /// Give this to the person who will register (`registrationToken` in
    /// `POST /v1/accounts`). The server keeps only its hash.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub info: RegistrationTokenInfo,
}

impl std::fmt::Debug for IssuedRegistrationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedRegistrationToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// `GET /admin/v1/registration-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationTokenList {
    /// Every token, newest first.
    pub tokens: Vec<RegistrationTokenInfo>,
}

/// `GET /admin/v1/stats`: the server's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    /// Accounts ever created (deactivated ones included).
    pub users: u64,
    /// Accounts deactivated or deleted.
    pub deactivated_users: u64,
    /// Devices registered and not removed.
    pub active_devices: u64,
    /// Active devices per active user, on average (absent with no active devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_devices_per_user: Option<f64>,
    /// The most active devices one user has.
    pub max_devices_per_user: u32,
    /// Envelopes waiting for their device.
    pub undelivered_envelopes: u64,
    /// Sender-key distributions waiting for their device.
    pub undelivered_sender_keys: u64,
    /// The oldest waiting envelope's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_undelivered_at: Option<DateTime<Utc>>,
    /// Messages sent in the last 24 hours by protocol version.
    pub messages_last_day: ProtocolUsage,
}

/// Messages by protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolUsage {
    /// Protocol V1 (one envelope per user).
    pub v1: u64,
    /// Protocol V2 (one envelope per device).
    pub v2: u64,
}
