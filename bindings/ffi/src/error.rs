//! [`CourierError`] as the foreign languages see it: Kotlin `CourierException.<Variant>`,
//! Swift `CourierError.<variant>`, Python `CourierError.<Variant>`, each a typed
//! exception with its fields, and on every variant the SDK's stable `code()`,
//! `server_code()`, `status()`, `is_retryable()` and `retry_after_ms()`.
//!
//! The SDK's enum is mirrored here (both `match`es are exhaustive: a variant added to the
//! SDK does not compile until it is mirrored) rather than exposed as a remote type, so
//! that its field names can differ where a foreign language would clash. The mirror differs in field names only where a foreign language would
//! clash: `message` is `detail` (Kotlin's `Throwable.message`), and the `Server` and
//! `UnexpectedResponse` fields that share a name with a method are prefixed (a Python
//! attribute would hide the method). The methods convert back to the SDK's error and ask
//! it, so codes and retry rules are decided in the SDK alone.

use courier_sdk::app as sdk;
use courier_sdk::app::DeviceAddress;

/// Why an operation failed. Every variant answers `code()` (stable, snake_case),
/// `server_code()`, `status()`, `is_retryable()` and `retry_after_ms()`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
#[uniffi::export(Display)]
pub enum CourierError {
    /// The server could not be reached, or the connection broke or timed out. Nothing
    /// the server acknowledged is lost; a send may be retried under the same client
    /// message ID.
    Network {
        /// What failed (never a URL or a token).
        detail: String,
    },
    /// The server refused the request with a code that has no variant of its own (see
    /// docs/api.md); the same values as `server_code()`, `status()` and
    /// `retry_after_ms()`.
    Server {
        /// The server's stable error code, e.g. `rate_limited`, `invalid_username`.
        server_error_code: String,
        /// The HTTP status.
        http_status: u16,
        /// The server's explanation, for people.
        detail: String,
        /// How long the server asked to wait before trying again.
        retry_after_millis: Option<u64>,
    },
    /// Wrong username or password.
    InvalidCredentials,
    /// Another account has this username (a deleted account's included).
    UsernameTaken,
    /// The server takes no new accounts: its operator closed registration (`register`
    /// only). Nothing was created.
    RegistrationClosed,
    /// The server takes new accounts with a registration token only, and the one given
    /// is missing, unknown, expired, revoked or used up (`register` only). Nothing was
    /// created; ask the operator for a new token.
    InvalidRegistrationToken,
    /// The password given to confirm `delete_account` is not the account's. Nothing
    /// changed: the account and this client still work.
    WrongPassword,
    /// The user already has as many devices as the server allows: remove one first.
    DeviceLimitReached {
        /// How many active devices the user has.
        count: u32,
        /// The server's per-user device limit.
        limit: u32,
        /// The user's active devices (one of them can be removed to make room).
        device_ids: Vec<u32>,
    },
    /// This device's token no longer works: the device was removed (from this device or
    /// another of the user's). Log in as a new device.
    DeviceRemoved,
    /// `log_out()` was called on this client.
    LoggedOut,
    /// The account was deleted (`delete_account`, on this client or an earlier one of
    /// the same store): every later call fails with this, and so does `open` of its
    /// store. Delete the store file and its key.
    AccountDeleted,
    /// The store holds no logged-in device: register or log in first.
    NotLoggedIn,
    /// The store already holds a device: open it, or log in with another store path.
    AlreadyLoggedIn,
    /// The store key does not open this store. The store is left as it was.
    WrongStoreKey,
    /// The store was written by a newer SDK; update the app (the file is left as it was).
    StoreTooNew {
        /// The schema version in the file.
        found: i64,
        /// The newest version this SDK knows.
        supported: i64,
    },
    /// The store file is damaged, tampered with, or not a Courier store.
    StoreDamaged {
        /// What is wrong.
        detail: String,
    },
    /// Another connection holds the store locked; try again.
    StoreBusy,
    /// The store could not be read or written (I/O error, full disk, permissions).
    Store {
        /// What failed.
        detail: String,
    },
    /// An argument is invalid: an ID that is not a UUID, a store key that is not 32
    /// bytes, a server URL that does not parse, a client message ID outside
    /// `[A-Za-z0-9_-]{1,64}`, a body too large.
    InvalidArgument {
        /// Which argument, and why.
        detail: String,
    },
    /// These devices changed identity keys: nothing goes to them until the app accepts
    /// the change (`accept_device_change`).
    BlockedDevices {
        /// The blocked devices.
        devices: Vec<DeviceAddress>,
    },
    /// These devices publish no keys, so no session can be opened with them.
    NoKeys {
        /// The devices without keys.
        devices: Vec<DeviceAddress>,
    },
    /// The recipient has no device that can receive.
    NoRecipientDevices,
    /// No such device in this device's records (fetch its user's devices first).
    NoSuchDevice {
        /// The device asked for.
        device: DeviceAddress,
    },
    /// The recipients' devices kept changing while sending; nothing was sent. Retry.
    DeviceListsUnsettled,
    /// The stream ended for good: another connection of this device took over.
    StreamEnded {
        /// Why (`replaced`, `closed_by_client`, ...).
        reason: String,
    },
    /// The server answered something that is not Courier's API (a proxy's page, a body
    /// that does not decode); `http_status` is also `status()`.
    UnexpectedResponse {
        /// The HTTP status (0 for a stream frame).
        http_status: u16,
        /// What was wrong with it.
        detail: String,
    },
    /// A receive loop is already running for this client.
    AlreadyReceiving,
    /// The app's listener failed (threw, or returned an error); its events stay queued
    /// and come again.
    ListenerFailed {
        /// The listener's error.
        detail: String,
    },
    /// A bug in the SDK or the binding (a panic caught before it reached the app).
    Internal {
        /// What failed.
        detail: String,
    },
}

impl From<sdk::CourierError> for CourierError {
    fn from(error: sdk::CourierError) -> Self {
        use sdk::CourierError as E;
        match error {
            E::Network { message } => Self::Network { detail: message },
            E::Server {
                code,
                status,
                message,
                retry_after_ms,
            } => Self::Server {
                server_error_code: code,
                http_status: status,
                detail: message,
                retry_after_millis: retry_after_ms,
            },
            E::InvalidCredentials => Self::InvalidCredentials,
            E::UsernameTaken => Self::UsernameTaken,
            E::RegistrationClosed => Self::RegistrationClosed,
            E::InvalidRegistrationToken => Self::InvalidRegistrationToken,
            E::WrongPassword => Self::WrongPassword,
            E::DeviceLimitReached {
                count,
                limit,
                device_ids,
            } => Self::DeviceLimitReached {
                count,
                limit,
                device_ids,
            },
            E::DeviceRemoved => Self::DeviceRemoved,
            E::LoggedOut => Self::LoggedOut,
            E::AccountDeleted => Self::AccountDeleted,
            E::NotLoggedIn => Self::NotLoggedIn,
            E::AlreadyLoggedIn => Self::AlreadyLoggedIn,
            E::WrongStoreKey => Self::WrongStoreKey,
            E::StoreTooNew { found, supported } => Self::StoreTooNew { found, supported },
            E::StoreDamaged { message } => Self::StoreDamaged { detail: message },
            E::StoreBusy => Self::StoreBusy,
            E::Store { message } => Self::Store { detail: message },
            E::InvalidArgument { message } => Self::InvalidArgument { detail: message },
            E::BlockedDevices { devices } => Self::BlockedDevices { devices },
            E::NoKeys { devices } => Self::NoKeys { devices },
            E::NoRecipientDevices => Self::NoRecipientDevices,
            E::NoSuchDevice { device } => Self::NoSuchDevice { device },
            E::DeviceListsUnsettled => Self::DeviceListsUnsettled,
            E::StreamEnded { reason } => Self::StreamEnded { reason },
            E::UnexpectedResponse { status, message } => Self::UnexpectedResponse {
                http_status: status,
                detail: message,
            },
            E::AlreadyReceiving => Self::AlreadyReceiving,
            E::ListenerFailed { message } => Self::ListenerFailed { detail: message },
            E::Internal { message } => Self::Internal { detail: message },
        }
    }
}

impl From<CourierError> for sdk::CourierError {
    fn from(error: CourierError) -> Self {
        use CourierError as E;
        match error {
            E::Network { detail } => Self::Network { message: detail },
            E::Server {
                server_error_code,
                http_status,
                detail,
                retry_after_millis,
            } => Self::Server {
                code: server_error_code,
                status: http_status,
                message: detail,
                retry_after_ms: retry_after_millis,
            },
            E::InvalidCredentials => Self::InvalidCredentials,
            E::UsernameTaken => Self::UsernameTaken,
            E::RegistrationClosed => Self::RegistrationClosed,
            E::InvalidRegistrationToken => Self::InvalidRegistrationToken,
            E::WrongPassword => Self::WrongPassword,
            E::DeviceLimitReached {
                count,
                limit,
                device_ids,
            } => Self::DeviceLimitReached {
                count,
                limit,
                device_ids,
            },
            E::DeviceRemoved => Self::DeviceRemoved,
            E::LoggedOut => Self::LoggedOut,
            E::AccountDeleted => Self::AccountDeleted,
            E::NotLoggedIn => Self::NotLoggedIn,
            E::AlreadyLoggedIn => Self::AlreadyLoggedIn,
            E::WrongStoreKey => Self::WrongStoreKey,
            E::StoreTooNew { found, supported } => Self::StoreTooNew { found, supported },
            E::StoreDamaged { detail } => Self::StoreDamaged { message: detail },
            E::StoreBusy => Self::StoreBusy,
            E::Store { detail } => Self::Store { message: detail },
            E::InvalidArgument { detail } => Self::InvalidArgument { message: detail },
            E::BlockedDevices { devices } => Self::BlockedDevices { devices },
            E::NoKeys { devices } => Self::NoKeys { devices },
            E::NoRecipientDevices => Self::NoRecipientDevices,
            E::NoSuchDevice { device } => Self::NoSuchDevice { device },
            E::DeviceListsUnsettled => Self::DeviceListsUnsettled,
            E::StreamEnded { reason } => Self::StreamEnded { reason },
            E::UnexpectedResponse {
                http_status,
                detail,
            } => Self::UnexpectedResponse {
                status: http_status,
                message: detail,
            },
            E::AlreadyReceiving => Self::AlreadyReceiving,
            E::ListenerFailed { detail } => Self::ListenerFailed { message: detail },
            E::Internal { detail } => Self::Internal { message: detail },
        }
    }
}

impl CourierError {
    fn sdk(&self) -> sdk::CourierError {
        self.clone().into()
    }
}

/// The SDK's message for people (Kotlin `toString()`, Swift `description`, Python
/// `str()`).
impl std::fmt::Display for CourierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.sdk(), f)
    }
}

impl std::error::Error for CourierError {}

#[uniffi::export]
impl CourierError {
    /// The stable code of this error (snake_case, e.g. `device_limit_reached`; listed in
    /// docs/bindings.md).
    pub fn code(&self) -> String {
        self.sdk().code().to_owned()
    }

    /// The server's error code, when the server refused the request.
    pub fn server_code(&self) -> Option<String> {
        self.sdk().server_code()
    }

    /// The HTTP status of the server's refusal, when there was one.
    pub fn status(&self) -> Option<u16> {
        self.sdk().status()
    }

    /// Whether the same call can succeed later (after `retry_after_ms()` if given).
    pub fn is_retryable(&self) -> bool {
        self.sdk().is_retryable()
    }

    /// How long the server asked to wait before trying again.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.sdk().retry_after_ms()
    }
}

/// A failure of the foreign side that uniffi reports instead of a value (it cannot
/// happen for the generated code's own calls; kept so it is an error, never a panic).
impl From<uniffi::UnexpectedUniFFICallbackError> for CourierError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Internal {
            detail: error.reason,
        }
    }
}

/// What an [`EventListener`](crate::EventListener) returns to refuse a batch: the events
/// stay queued and come again after a pause; the loop reports `ListenerFailed` through
/// `on_error`. Any exception the listener throws arrives as `Failed` with the
/// exception's text.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum ListenerError {
    /// The listener could not take the batch.
    Failed {
        /// What failed (reported back in `CourierError.ListenerFailed`).
        detail: String,
    },
}

impl std::fmt::Display for ListenerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed { detail } => f.write_str(detail),
        }
    }
}

impl std::error::Error for ListenerError {}

/// A Kotlin, Swift or Python exception thrown by the listener (of any type other than
/// `ListenerError`) arrives here: a refusal, not a panic.
impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed {
            detail: error.reason,
        }
    }
}

impl From<ListenerError> for sdk::ListenerError {
    fn from(error: ListenerError) -> Self {
        match error {
            ListenerError::Failed { detail } => Self { message: detail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceAddress {
        DeviceAddress {
            user_id: "0190b5a2-7c1e-7d00-8000-000000000001".to_owned(),
            device_id: 2,
        }
    }

    /// One of each variant the SDK has. A variant added there and not mirrored here
    /// becomes `Internal`, which the round trip below rejects once it is listed.
    fn every_sdk_error() -> Vec<sdk::CourierError> {
        use sdk::CourierError as E;
        let text = || "what happened".to_owned();
        vec![
            E::Network { message: text() },
            E::Server {
                code: "rate_limited".to_owned(),
                status: 429,
                message: text(),
                retry_after_ms: Some(1500),
            },
            E::InvalidCredentials,
            E::UsernameTaken,
            E::RegistrationClosed,
            E::InvalidRegistrationToken,
            E::WrongPassword,
            E::DeviceLimitReached {
                count: 3,
                limit: 3,
                device_ids: vec![1, 2, 3],
            },
            E::DeviceRemoved,
            E::LoggedOut,
            E::AccountDeleted,
            E::NotLoggedIn,
            E::AlreadyLoggedIn,
            E::WrongStoreKey,
            E::StoreTooNew {
                found: 9,
                supported: 4,
            },
            E::StoreDamaged { message: text() },
            E::StoreBusy,
            E::Store { message: text() },
            E::InvalidArgument { message: text() },
            E::BlockedDevices {
                devices: vec![device()],
            },
            E::NoKeys {
                devices: vec![device()],
            },
            E::NoRecipientDevices,
            E::NoSuchDevice { device: device() },
            E::DeviceListsUnsettled,
            E::StreamEnded {
                reason: "replaced".to_owned(),
            },
            E::UnexpectedResponse {
                status: 502,
                message: text(),
            },
            E::AlreadyReceiving,
            E::ListenerFailed { message: text() },
            E::Internal { message: text() },
        ]
    }

    #[test]
    fn every_error_crosses_and_comes_back_unchanged_with_its_code_status_and_retryability() {
        for original in every_sdk_error() {
            let mirrored = CourierError::from(original.clone());
            assert_eq!(sdk::CourierError::from(mirrored.clone()), original);
            assert_eq!(mirrored.code(), original.code());
            assert_eq!(mirrored.server_code(), original.server_code());
            assert_eq!(mirrored.status(), original.status());
            assert_eq!(mirrored.is_retryable(), original.is_retryable());
            assert_eq!(mirrored.retry_after_ms(), original.retry_after_ms());
            assert_eq!(mirrored.to_string(), original.to_string());
        }
    }

    #[test]
    fn a_foreign_exception_in_the_listener_is_a_refusal_not_a_panic() {
        let thrown = uniffi::UnexpectedUniFFICallbackError {
            reason: "java.lang.IllegalStateException: full".to_owned(),
        };
        let refusal = sdk::ListenerError::from(ListenerError::from(thrown));
        assert_eq!(refusal.message, "java.lang.IllegalStateException: full");
    }
}
