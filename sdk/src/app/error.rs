//! [`CourierError`]: every failure of the app-facing surface as one flat enum.
//!
//! The SDK's own errors nest (client, crypto core, group sessions, records, store,
//! transport) because each layer has its own causes; an app wants one thing to match on.
//! Each variant has a stable snake_case [`code`](CourierError::code), the server's code
//! and HTTP status where the server refused, and whether trying again can help. Messages
//! never carry key material, tokens or message content.

use std::time::Duration;

use courier_protocol::ErrorCode;
use courier_protocol::api::keys::DeviceRef;

use super::DeviceAddress;
use crate::client::ClientError;
use crate::crypto::{GroupError, MachineError, RecordError};
use crate::store::StoreError;
use crate::transport::{StreamClosed, TransportError};

/// Why an operation of [`CourierClient`](super::CourierClient) failed.
///
/// Exhaustive on purpose: each binding mirrors it with a `match`, so a new variant is a
/// compile error there instead of an error the apps cannot tell apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CourierError {
    /// The server could not be reached, or the connection broke or timed out. Nothing
    /// the server acknowledged is lost; a send may be retried under the same client
    /// message ID.
    #[error("network error: {message}")]
    Network {
        /// What failed (never a URL or a token).
        message: String,
    },
    /// The server refused the request with a code that has no variant of its own (see
    /// docs/api.md for the codes); `retry_after_ms` is the server's `Retry-After`.
    #[error("the server refused the request (HTTP {status} {code}): {message}")]
    Server {
        /// The server's stable error code, e.g. `rate_limited`, `invalid_username`.
        code: String,
        /// The HTTP status.
        status: u16,
        /// The server's explanation, for people.
        message: String,
        /// How long the server asked to wait before trying again.
        retry_after_ms: Option<u64>,
    },
    /// Wrong username or password.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// Another account has this username (a deleted account's included: a username is
    /// never given out again).
    #[error("the username is taken")]
    UsernameTaken,
    /// The server takes no new accounts: its operator closed registration
    /// ([`register`](super::CourierClient::register) only). Nothing was created; a
    /// registration token does not help.
    #[error("the server takes no new accounts")]
    RegistrationClosed,
    /// The server takes new accounts with a registration token from its operator only,
    /// and the one given is missing, unknown, expired, revoked or used up
    /// ([`register`](super::CourierClient::register) only). Nothing was created; ask the
    /// operator for a new token.
    #[error("the registration token is missing or not valid")]
    InvalidRegistrationToken,
    /// The password given to confirm [`delete_account`](super::CourierClient::delete_account)
    /// is not the account's. Nothing changed: the account and this client still work.
    #[error("the password is wrong")]
    WrongPassword,
    /// The user already has as many devices as the server allows: remove one first.
    #[error("the account has {count} of {limit} devices")]
    DeviceLimitReached {
        /// How many active devices the user has.
        count: u32,
        /// The server's per-user device limit.
        limit: u32,
        /// The user's active devices (one of them can be removed to make room).
        device_ids: Vec<u32>,
    },
    /// This device's token no longer works: the device was removed (from this device or
    /// another of the user's), or it logged in again elsewhere. Log in as a new device.
    #[error("this device was removed or signed out at the server")]
    DeviceRemoved,
    /// [`log_out`](super::CourierClient::log_out) was called on this client.
    #[error("this client has logged out")]
    LoggedOut,
    /// The account was deleted ([`delete_account`](super::CourierClient::delete_account),
    /// on this client or an earlier one of the same store): every later call of the
    /// client fails with this, and so does [`open`](super::CourierClient::open) of its
    /// store. Delete the store file and its key.
    #[error("the account was deleted")]
    AccountDeleted,
    /// The store holds no logged-in device: register or log in first.
    #[error("the store holds no logged-in device")]
    NotLoggedIn,
    /// The store already holds a device: open it, or log in with another store path.
    #[error("the store already holds a device")]
    AlreadyLoggedIn,
    /// The store key does not open this store. The store is left as it was.
    #[error("the store key does not open this store")]
    WrongStoreKey,
    /// The store was written by a newer SDK; update the app (the file is left as it was).
    #[error("the store has schema version {found}; this SDK supports up to {supported}")]
    StoreTooNew {
        /// The schema version in the file.
        found: i64,
        /// The newest version this SDK knows.
        supported: i64,
    },
    /// The store file is damaged, tampered with, or not a Courier store.
    #[error("the store is damaged: {message}")]
    StoreDamaged {
        /// What is wrong.
        message: String,
    },
    /// Another connection holds the store locked; try again.
    #[error("the store is locked by another connection")]
    StoreBusy,
    /// The store could not be read or written (I/O error, full disk, permissions).
    #[error("the store failed: {message}")]
    Store {
        /// What failed.
        message: String,
    },
    /// An argument is invalid: an ID that is not a UUID, a store key that is not 32
    /// bytes, a server URL that does not parse, a client message ID outside
    /// `[A-Za-z0-9_-]{1,64}`, a body too large.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// Which argument, and why.
        message: String,
    },
    /// These devices changed identity keys: nothing goes to them until the app accepts
    /// the change ([`accept_device_change`](super::CourierClient::accept_device_change)).
    #[error("{} device(s) changed identity keys and are blocked until accepted", devices.len())]
    BlockedDevices {
        /// The blocked devices.
        devices: Vec<DeviceAddress>,
    },
    /// These devices publish no keys, so no session can be opened with them.
    #[error("{} device(s) have no keys to open a session with", devices.len())]
    NoKeys {
        /// The devices without keys.
        devices: Vec<DeviceAddress>,
    },
    /// The recipient has no device that can receive.
    #[error("the recipient has no device")]
    NoRecipientDevices,
    /// No such device in this device's records (fetch its user's devices first).
    #[error("no such device")]
    NoSuchDevice {
        /// The device asked for.
        device: DeviceAddress,
    },
    /// The recipients' devices kept changing while sending; nothing was sent. Retry.
    #[error("the recipients' devices kept changing; the message was not sent")]
    DeviceListsUnsettled,
    /// The stream ended for good: another connection of this device took over.
    #[error("the stream ended: {reason}")]
    StreamEnded {
        /// Why (`replaced`, `closed_by_client`, ...).
        reason: String,
    },
    /// The server answered something that is not Courier's API (a proxy's page, a
    /// body that does not decode).
    #[error("unexpected response (HTTP {status}): {message}")]
    UnexpectedResponse {
        /// The HTTP status (0 for a stream frame).
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// A receive loop is already running for this client.
    #[error("this client already has a receive loop running")]
    AlreadyReceiving,
    /// The app's listener failed (threw, or returned an error); its events stay queued
    /// and come again.
    #[error("the event listener failed: {message}")]
    ListenerFailed {
        /// The listener's error.
        message: String,
    },
    /// A bug in the SDK (a panic caught before it reached the app).
    #[error("internal error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}

impl CourierError {
    /// The stable code of this error (snake_case; listed in docs/bindings.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Network { .. } => "network",
            Self::Server { .. } => "server",
            Self::InvalidCredentials => "invalid_credentials",
            Self::UsernameTaken => "username_taken",
            Self::RegistrationClosed => "registration_closed",
            Self::InvalidRegistrationToken => "invalid_registration_token",
            Self::WrongPassword => "wrong_password",
            Self::DeviceLimitReached { .. } => "device_limit_reached",
            Self::DeviceRemoved => "device_removed",
            Self::LoggedOut => "logged_out",
            Self::AccountDeleted => "account_deleted",
            Self::NotLoggedIn => "not_logged_in",
            Self::AlreadyLoggedIn => "already_logged_in",
            Self::WrongStoreKey => "wrong_store_key",
            Self::StoreTooNew { .. } => "store_too_new",
            Self::StoreDamaged { .. } => "store_damaged",
            Self::StoreBusy => "store_busy",
            Self::Store { .. } => "store",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::BlockedDevices { .. } => "blocked_devices",
            Self::NoKeys { .. } => "no_keys",
            Self::NoRecipientDevices => "no_recipient_devices",
            Self::NoSuchDevice { .. } => "no_such_device",
            Self::DeviceListsUnsettled => "device_lists_unsettled",
            Self::StreamEnded { .. } => "stream_ended",
            Self::UnexpectedResponse { .. } => "unexpected_response",
            Self::AlreadyReceiving => "already_receiving",
            Self::ListenerFailed { .. } => "listener_failed",
            Self::Internal { .. } => "internal",
        }
    }

    /// The server's error code, when the server refused the request.
    pub fn server_code(&self) -> Option<String> {
        match self {
            Self::Server { code, .. } => Some(code.clone()),
            Self::InvalidCredentials => Some(ErrorCode::InvalidCredentials.as_str().to_owned()),
            Self::UsernameTaken => Some(ErrorCode::UsernameTaken.as_str().to_owned()),
            Self::RegistrationClosed => Some(ErrorCode::RegistrationClosed.as_str().to_owned()),
            Self::InvalidRegistrationToken => {
                Some(ErrorCode::InvalidRegistrationToken.as_str().to_owned())
            }
            Self::WrongPassword => Some(ErrorCode::WrongPassword.as_str().to_owned()),
            Self::DeviceLimitReached { .. } => {
                Some(ErrorCode::DeviceLimitReached.as_str().to_owned())
            }
            Self::DeviceRemoved => Some(ErrorCode::DeviceRemoved.as_str().to_owned()),
            _ => None,
        }
    }

    /// The HTTP status of the server's refusal, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Server { status, .. } | Self::UnexpectedResponse { status, .. } => Some(*status),
            Self::InvalidCredentials => Some(ErrorCode::InvalidCredentials.http_status()),
            Self::UsernameTaken => Some(ErrorCode::UsernameTaken.http_status()),
            Self::RegistrationClosed => Some(ErrorCode::RegistrationClosed.http_status()),
            Self::InvalidRegistrationToken => {
                Some(ErrorCode::InvalidRegistrationToken.http_status())
            }
            Self::WrongPassword => Some(ErrorCode::WrongPassword.http_status()),
            Self::DeviceLimitReached { .. } => Some(ErrorCode::DeviceLimitReached.http_status()),
            Self::DeviceRemoved => Some(ErrorCode::DeviceRemoved.http_status()),
            _ => None,
        }
    }

    /// Whether the same call can succeed later (after [`retry_after_ms`] if given).
    ///
    /// [`retry_after_ms`]: CourierError::retry_after_ms
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { .. }
            | Self::StoreBusy
            | Self::DeviceListsUnsettled
            | Self::ListenerFailed { .. } => true,
            Self::Server { status, .. } => *status == 429 || *status >= 500,
            Self::UnexpectedResponse { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// How long the server asked to wait before trying again.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::Server { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn addresses(devices: Vec<DeviceRef>) -> Vec<DeviceAddress> {
    devices.into_iter().map(DeviceAddress::from).collect()
}

fn stream_reason(reason: StreamClosed) -> String {
    match reason {
        StreamClosed::Replaced => "replaced".to_owned(),
        StreamClosed::IdleTimeout => "idle_timeout".to_owned(),
        StreamClosed::DeviceRemoved => "device_removed".to_owned(),
        StreamClosed::TooSlow => "too_slow".to_owned(),
        StreamClosed::TokenRevoked => "token_revoked".to_owned(),
        StreamClosed::GoingAway => "going_away".to_owned(),
        StreamClosed::ServerError => "server_error".to_owned(),
        StreamClosed::Other { code } => format!("close_code_{code}"),
        StreamClosed::ConnectionLost => "connection_lost".to_owned(),
        StreamClosed::ClosedByClient => "closed_by_client".to_owned(),
    }
}

fn from_stream_closed(reason: StreamClosed) -> CourierError {
    match reason {
        StreamClosed::DeviceRemoved | StreamClosed::TokenRevoked => CourierError::DeviceRemoved,
        StreamClosed::ConnectionLost
        | StreamClosed::IdleTimeout
        | StreamClosed::TooSlow
        | StreamClosed::GoingAway
        | StreamClosed::ServerError => CourierError::Network {
            message: format!("the stream connection closed ({})", stream_reason(reason)),
        },
        other => CourierError::StreamEnded {
            reason: stream_reason(other),
        },
    }
}

impl From<TransportError> for CourierError {
    fn from(error: TransportError) -> Self {
        if let Some(details) = error.device_limit_details() {
            return Self::DeviceLimitReached {
                count: details.count,
                limit: details.limit,
                device_ids: details.devices.iter().map(|d| d.device_id.get()).collect(),
            };
        }
        match error {
            TransportError::Api {
                status,
                code,
                message,
                retry_after,
                ..
            } => match code {
                ErrorCode::InvalidCredentials => Self::InvalidCredentials,
                ErrorCode::UsernameTaken => Self::UsernameTaken,
                ErrorCode::RegistrationClosed => Self::RegistrationClosed,
                ErrorCode::InvalidRegistrationToken => Self::InvalidRegistrationToken,
                ErrorCode::WrongPassword => Self::WrongPassword,
                ErrorCode::DeviceRemoved | ErrorCode::InvalidToken => Self::DeviceRemoved,
                code => Self::Server {
                    code: code.as_str().to_owned(),
                    status,
                    message,
                    retry_after_ms: retry_after.map(duration_ms),
                },
            },
            TransportError::Network { kind, .. } => Self::Network {
                message: kind.to_string(),
            },
            TransportError::UnexpectedResponse { status, problem } => Self::UnexpectedResponse {
                status,
                message: problem,
            },
            TransportError::StreamClosed { reason, .. } => from_stream_closed(reason),
            TransportError::UnexpectedFrame { .. } | TransportError::UnknownItem { .. } => {
                Self::UnexpectedResponse {
                    status: 0,
                    message: error.to_string(),
                }
            }
            TransportError::MissingToken => Self::NotLoggedIn,
            TransportError::MalformedToken => Self::StoreDamaged {
                message: error.to_string(),
            },
            TransportError::InvalidBaseUrl { .. } => Self::invalid(error.to_string()),
            other => Self::Internal {
                message: other.to_string(),
            },
        }
    }
}

impl From<StoreError> for CourierError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::WrongKey => Self::WrongStoreKey,
            StoreError::UnsupportedVersion { found, supported } => {
                Self::StoreTooNew { found, supported }
            }
            StoreError::Busy => Self::StoreBusy,
            StoreError::Corrupted { .. }
            | StoreError::MissingKeyCheck
            | StoreError::NotAStore
            | StoreError::FileDamaged(_) => Self::StoreDamaged {
                message: error.to_string(),
            },
            other => Self::Store {
                message: other.to_string(),
            },
        }
    }
}

impl From<RecordError> for CourierError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Store(store) => store.into(),
            undecodable @ RecordError::Undecodable { .. } => Self::StoreDamaged {
                message: undecodable.to_string(),
            },
        }
    }
}

impl From<MachineError> for CourierError {
    fn from(error: MachineError) -> Self {
        match error {
            MachineError::Store(record) => record.into(),
            MachineError::AccountExists => Self::AlreadyLoggedIn,
            MachineError::NoRecipientDevices => Self::NoRecipientDevices,
            MachineError::BlockedDevices(devices) => Self::BlockedDevices {
                devices: addresses(devices),
            },
            // The client resolves these by fetching lists and claiming keys; seen here
            // only when the lists kept changing under it.
            MachineError::UnknownUser(_)
            | MachineError::MissingSessions(_)
            | MachineError::UnknownSender(_) => Self::DeviceListsUnsettled,
            MachineError::Payload(payload) => Self::invalid(payload.to_string()),
            MachineError::NoSuchDevice(device) => Self::NoSuchDevice {
                device: device.into(),
            },
            MachineError::Group(group) => group.into(),
            // The directory's answer itself was wrong.
            mismatch @ MachineError::DirectoryUserMismatch { .. } => Self::UnexpectedResponse {
                status: 200,
                message: mismatch.to_string(),
            },
        }
    }
}

impl From<GroupError> for CourierError {
    fn from(error: GroupError) -> Self {
        match error {
            GroupError::Store(record) => record.into(),
            GroupError::Plaintext(payload) => Self::invalid(payload.to_string()),
            other => Self::Internal {
                message: other.to_string(),
            },
        }
    }
}

impl From<ClientError> for CourierError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Transport(transport) => transport.into(),
            ClientError::Crypto(machine) => machine.into(),
            ClientError::Store(store) => store.into(),
            ClientError::NotLoggedIn => Self::NotLoggedIn,
            ClientError::StoredStateInvalid => Self::StoreDamaged {
                message: error.to_string(),
            },
            ClientError::DeviceListsUnsettled => Self::DeviceListsUnsettled,
            ClientError::NoKeys(devices) => Self::NoKeys {
                devices: addresses(devices),
            },
            ClientError::StreamEnded(reason) => from_stream_closed(reason),
            ClientError::AccountDeleted => Self::AccountDeleted,
            ClientError::StoreTaskFailed => Self::Internal {
                message: error.to_string(),
            },
        }
    }
}
