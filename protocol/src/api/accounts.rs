//! `POST /v1/accounts`, `POST /v1/login` and `DELETE /v1/accounts/me`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Redacted;
use crate::ids::{DeviceId, UserId};

/// Creates an account.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateAccountRequest {
    /// 3 to 32 characters of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter;
    /// case-insensitive (stored lowercase).
    pub username: String,
    /// 8 characters to 256 bytes.
    pub password: String,
    /// A registration token from the server's operator: required when the server takes
    /// new accounts by token only, ignored when registration is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token: Option<String>,
}

impl fmt::Debug for CreateAccountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAccountRequest")
            .field("username", &self.username)
            .field("password", &Redacted)
            .field(
                "registration_token",
                &self.registration_token.as_ref().map(|_| Redacted),
            )
            .finish()
    }
}

/// Deletes the caller's account (`DELETE /v1/accounts/me`): the password again, so a
/// stolen device token alone cannot.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeleteAccountRequest {
    /// The account's password.
    pub password: String,
}

impl fmt::Debug for DeleteAccountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeleteAccountRequest")
            .field("password", &Redacted)
            .finish()
    }
}

/// The account that was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateAccountResponse {
    /// The new user's ID.
    pub user_id: UserId,
    /// The canonical (lowercase) username.
    pub username: String,
}

/// Logs in as a new device (`deviceId: 0`) or again as an existing one.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// The username (case-insensitive).
    pub username: String,
    /// The password.
    pub password: String,
    /// `0` registers a new device and the server assigns its ID. An existing device's ID
    /// issues a fresh token for it and revokes its old one.
    #[serde(with = "crate::ids::login_device_id")]
    pub device_id: DeviceId,
    /// A name for the new device that the user's other devices see (1 to 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// With `deviceId: 0`: remove this device of the user in the same step, to make room
    /// when the device limit is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_device_id: Option<DeviceId>,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &Redacted)
            .field("device_id", &self.device_id)
            .field("device_name", &self.device_name)
            .field("replace_device_id", &self.replace_device_id)
            .finish()
    }
}

/// A device session: who the device is and the token it authenticates with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// The user's ID.
    pub user_id: UserId,
    /// The device's ID (server-assigned for a new device).
    pub device_id: DeviceId,
    /// Send as `Authorization: Bearer <accessToken>`. Shown once; the server keeps only a
    /// hash of it.
    pub access_token: String,
}

impl fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("access_token", &Redacted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_and_tokens() {
        let request = LoginRequest {
            username: "alice".into(),
            password: "hunter2hunter2".into(),
            device_id: DeviceId::NEW,
            device_name: None,
            replace_device_id: None,
        };
        assert!(!format!("{request:?}").contains("hunter2"));
        let create = CreateAccountRequest {
            username: "alice".into(),
            password: "hunter2hunter2".into(),
            registration_token: Some("crt_invitation".into()),
        };
        assert!(!format!("{create:?}").contains("hunter2"));
        assert!(!format!("{create:?}").contains("invitation"));
        let delete = DeleteAccountRequest {
            password: "hunter2hunter2".into(),
        };
        assert!(!format!("{delete:?}").contains("hunter2"));
        let response = LoginResponse {
            user_id: UserId::new_random(),
            device_id: DeviceId::NEW,
            access_token: "secret-token-value".into(),
        };
        assert!(!format!("{response:?}").contains("secret-token-value"));
    }

    #[test]
    fn login_uses_camel_case_fields() {
        let json = r#"{"username":"a","password":"b","deviceId":0,"replaceDeviceId":3}"#;
        let request: LoginRequest = serde_json::from_str(json).unwrap();
        assert!(request.device_id.is_new());
        assert_eq!(request.replace_device_id, Some(DeviceId::new(3).unwrap()));
    }
}
