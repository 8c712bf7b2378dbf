//! The caller's own devices.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use courier_protocol::DeviceId;
use courier_protocol::api::devices::OwnDevicesResponse;

use super::accounts::device_not_found;
use crate::api_doc::operation_errors;
use crate::auth::AuthenticatedDevice;
use crate::db;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;

/// Lists the caller's active devices.
#[utoipa::path(
    get, path = "/v1/devices", tag = super::tags::DEVICES,
    security(("bearer" = [])),
    responses(
        (status = 200, body = OwnDevicesResponse, description = "The caller's active devices"),
        ListDevicesErrors,
    ),
)]
pub async fn list_devices(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
) -> Result<Json<OwnDevicesResponse>, ApiError> {
    let devices = db::devices::list_active(&state.pool, caller.user_id).await?;
    Ok(Json(OwnDevicesResponse {
        devices,
        device_limit: state.settings.device_limit,
    }))
}

/// Removes one of the caller's devices (the caller itself included): its token stops
/// working at once, its socket closes, its keys leave the directory and its pending
/// envelopes are dropped. Its ID is never reused.
#[utoipa::path(
    delete, path = "/v1/devices/{deviceId}", tag = super::tags::DEVICES,
    security(("bearer" = [])),
    params(("deviceId" = u32, Path, description = "One of the caller's devices")),
    responses(
        (status = 204, description = "Removed"),
        RemoveDeviceErrors,
    ),
)]
pub async fn remove_device(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(device_id): ApiPath<DeviceId>,
) -> Result<StatusCode, ApiError> {
    if !db::devices::remove(&state.pool, caller.user_id, device_id).await? {
        return Err(device_not_found());
    }
    state.device_removed(caller.user_id, device_id);
    tracing::info!(user_id = %caller.user_id, %device_id, by = %caller.device_id, "device removed");
    Ok(StatusCode::NO_CONTENT)
}

operation_errors!(
    /// The errors of [`list_devices`].
    ListDevicesErrors: AUTH + DATABASE + []
);
operation_errors!(
    /// The errors of [`remove_device`].
    RemoveDeviceErrors: AUTH + DATABASE + [InvalidPathParameter, DeviceNotFound]
);
