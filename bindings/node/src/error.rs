//! `CourierError` as a JavaScript `Error`: `name` is `"CourierError"`, `code` the SDK's
//! stable code (`device_limit_reached`, `network`, ...), `message` the SDK's text for
//! people, and these properties where they apply:
//!
//! | property       | type                | set for                                   |
//! | -------------- | ------------------- | ----------------------------------------- |
//! | `retryable`    | `boolean`           | always                                    |
//! | `serverCode`   | `string`            | the server refused (its stable code)      |
//! | `status`       | `number`            | the HTTP status of that refusal           |
//! | `retryAfterMs` | `number`            | the server asked to wait                  |
//! | `count`, `limit`, `deviceIds` | `number`, `number`, `number[]` | `device_limit_reached` |
//! | `found`, `supported` | `number`      | `store_too_new`                           |
//! | `devices`      | `DeviceAddress[]`   | `blocked_devices`, `no_keys`              |
//! | `device`       | `DeviceAddress`     | `no_such_device`                          |
//! | `reason`       | `string`            | `stream_ended`                            |
//!
//! The one code of this binding's own is `client_closed`: a call on a client after its
//! `close()`.

use courier_sdk::app;
use napi::bindgen_prelude::{JsObjectValue, Object, ToNapiValue};
use napi::{Env, JsValue, Status};

use napi_derive::napi;

use crate::types::DeviceAddress;

/// The shape of the error every call rejects with and `onError` receives: an `Error`
/// whose `name` is `"CourierError"`, with these properties (the optional ones where they
/// apply). `code` is the SDK's stable code (`network`, `server`, `invalid_credentials`,
/// `username_taken`, `registration_closed`, `invalid_registration_token`,
/// `wrong_password`, `device_limit_reached`, `device_removed`, `logged_out`,
/// `account_deleted`, `not_logged_in`, `already_logged_in`, `wrong_store_key`,
/// `store_too_new`, `store_damaged`, `store_busy`, `store`, `invalid_argument`,
/// `blocked_devices`, `no_keys`, `no_recipient_devices`, `no_such_device`,
/// `device_lists_unsettled`, `stream_ended`, `unexpected_response`, `already_receiving`,
/// `listener_failed`, `internal`) or this binding's `client_closed`.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Debug)]
#[allow(dead_code)] // a TypeScript declaration only: `to_js_error` builds the object
pub struct CourierError {
    /// Always `"CourierError"`.
    pub name: String,
    /// For people (never key material, tokens or message content).
    pub message: String,
    /// The stable code to match on.
    pub code: String,
    /// Whether the same call can succeed later (after `retryAfterMs`, if set).
    pub retryable: bool,
    /// The server's stable error code, when the server refused.
    pub server_code: Option<String>,
    /// The HTTP status of the server's refusal.
    pub status: Option<u32>,
    /// How long the server asked to wait (ms).
    pub retry_after_ms: Option<f64>,
    /// `device_limit_reached`: the user's active devices.
    pub count: Option<u32>,
    /// `device_limit_reached`: the server's per-user limit.
    pub limit: Option<u32>,
    /// `device_limit_reached`: the IDs of the active devices (remove one to make room).
    pub device_ids: Option<Vec<u32>>,
    /// `store_too_new`: the store file's schema version.
    pub found: Option<i64>,
    /// `store_too_new`: the newest version this SDK knows.
    pub supported: Option<i64>,
    /// `blocked_devices`, `no_keys`: the devices concerned.
    pub devices: Option<Vec<DeviceAddress>>,
    /// `no_such_device`: the device asked for.
    pub device: Option<DeviceAddress>,
    /// `stream_ended`: why (`replaced`, `closed_by_client`, ...).
    pub reason: Option<String>,
}

/// The binding's own error: a call after `close()`.
pub(crate) const CLIENT_CLOSED: &str = "client_closed";

/// An error as the binding raises it: one of the SDK's, or the binding's own.
#[derive(Debug)]
pub(crate) enum BindingError {
    /// The SDK's error, passed on as it is.
    Sdk(app::CourierError),
    /// `close()` was called on this client.
    Closed,
}

impl From<app::CourierError> for BindingError {
    fn from(error: app::CourierError) -> Self {
        Self::Sdk(error)
    }
}

/// Builds the JavaScript error object for `error` (on the JavaScript thread).
pub(crate) fn to_js_error<'env>(
    env: &'env Env,
    error: &BindingError,
) -> napi::Result<Object<'env>> {
    let (code, message) = match error {
        BindingError::Sdk(error) => (error.code(), error.to_string()),
        BindingError::Closed => (CLIENT_CLOSED, "this client was closed".to_owned()),
    };
    let mut object = env.create_error(napi::Error::new(Status::GenericFailure, message))?;
    object.set_named_property("name", "CourierError")?;
    object.set_named_property("code", code)?;
    let BindingError::Sdk(error) = error else {
        object.set_named_property("retryable", false)?;
        return Ok(object);
    };
    object.set_named_property("retryable", error.is_retryable())?;
    if let Some(server_code) = error.server_code() {
        object.set_named_property("serverCode", server_code)?;
    }
    if let Some(status) = error.status() {
        object.set_named_property("status", u32::from(status))?;
    }
    if let Some(retry_after_ms) = error.retry_after_ms() {
        object.set_named_property("retryAfterMs", crate::types::number(retry_after_ms))?;
    }
    match error {
        app::CourierError::DeviceLimitReached {
            count,
            limit,
            device_ids,
        } => {
            object.set_named_property("count", *count)?;
            object.set_named_property("limit", *limit)?;
            object.set_named_property("deviceIds", device_ids.clone())?;
        }
        app::CourierError::StoreTooNew { found, supported } => {
            object.set_named_property("found", *found)?;
            object.set_named_property("supported", *supported)?;
        }
        app::CourierError::BlockedDevices { devices } | app::CourierError::NoKeys { devices } => {
            let devices: Vec<DeviceAddress> = devices.iter().cloned().map(Into::into).collect();
            object.set_named_property("devices", devices)?;
        }
        app::CourierError::NoSuchDevice { device } => {
            object.set_named_property("device", DeviceAddress::from(device.clone()))?;
        }
        app::CourierError::StreamEnded { reason } => {
            object.set_named_property("reason", reason.as_str())?;
        }
        _ => {}
    }
    Ok(object)
}

/// The JavaScript error for `error`, as a `napi::Error` that rejects a promise (or is
/// thrown) with exactly that object.
pub(crate) fn to_napi_error(env: &Env, error: &BindingError) -> napi::Error {
    match to_js_error(env, error) {
        Ok(object) => napi::Error::from(object.to_unknown()),
        // Creating an object failed (the environment is going away): a plain error.
        Err(_) => napi::Error::new(Status::GenericFailure, message_of(error)),
    }
}

fn message_of(error: &BindingError) -> String {
    match error {
        BindingError::Sdk(error) => format!("{}: {error}", error.code()),
        BindingError::Closed => format!("{CLIENT_CLOSED}: this client was closed"),
    }
}

/// An error on its way to JavaScript (an `onError` argument).
#[derive(Debug)]
pub struct JsCourierError(pub(crate) BindingError);

// napi's conversion trait is an `unsafe fn` (it receives a raw `napi_env`); this one
// wraps it back into an `Env` and builds the object with the safe API above.
#[allow(unsafe_code)]
impl ToNapiValue for JsCourierError {
    unsafe fn to_napi_value(
        env: napi::sys::napi_env,
        value: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        let env = Env::from_raw(env);
        Ok(to_js_error(&env, &value.0)?.raw())
    }
}
