//! Read receipts, privacy settings, and a message's delivery state.

use axum::Json;
use axum::extract::State;
use courier_protocol::ErrorCode;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::receipts::{
    DeliveryState, MarkReadRequest, MarkReadResponse, PrivacySettings, UpdatePrivacySettings,
};
use uuid::Uuid;

use crate::api_doc::operation_errors;
use crate::auth::AuthenticatedDevice;
use crate::db;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

fn message_not_found() -> ApiError {
    ApiError::new(ErrorCode::MessageNotFound, "no such message for this user")
}

/// Marks a message read, or (`upTo`) everything up to it in its conversation. The
/// caller's other devices get the read state, and the senders of the messages covered get
/// a read receipt when the caller's user sends them and theirs shows them. Idempotent.
#[utoipa::path(
    post, path = "/v1/receipts/read", tag = super::tags::RECEIPTS,
    security(("bearer" = [])),
    request_body = MarkReadRequest,
    responses(
        (status = 200, body = MarkReadResponse, description = "Marked read (or it was already)"),
        MarkReadErrors,
    ),
)]
pub async fn mark_read(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<MarkReadRequest>,
) -> Result<Json<MarkReadResponse>, ApiError> {
    let reader = DeviceRef {
        user_id: caller.user_id,
        device_id: caller.device_id,
    };
    let outcome = db::receipts::mark_read(&state.pool, reader, request.message_id, request.up_to)
        .await?
        .ok_or_else(message_not_found)?;
    crate::delivery::deliver(&state.hub, &state.fabric, outcome.items);
    Ok(Json(MarkReadResponse {
        conversation: outcome.conversation,
        changed: outcome.changed,
    }))
}

/// A message's delivery state: each recipient device's acknowledgement, and who read it
/// (as far as privacy settings allow). Only the sender's user may ask.
#[utoipa::path(
    get, path = "/v1/messages/{messageId}/delivery", tag = super::tags::RECEIPTS,
    security(("bearer" = [])),
    params(("messageId" = Uuid, Path, description = "A message the caller's user sent")),
    responses(
        (status = 200, body = DeliveryState, description = "The message's delivery state"),
        DeliveryStateErrors,
    ),
)]
pub async fn delivery_state(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(message_id): ApiPath<Uuid>,
) -> Result<Json<DeliveryState>, ApiError> {
    db::receipts::delivery_state(&state.pool, caller.user_id, message_id)
        .await?
        .map(Json)
        .ok_or_else(message_not_found)
}

/// The caller's user's read-receipt privacy settings.
#[utoipa::path(
    get, path = "/v1/settings/privacy", tag = super::tags::RECEIPTS,
    security(("bearer" = [])),
    responses(
        (status = 200, body = PrivacySettings, description = "The settings"),
        GetPrivacyErrors,
    ),
)]
pub async fn get_privacy(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
) -> Result<Json<PrivacySettings>, ApiError> {
    let settings = db::receipts::privacy(&state.pool, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, "no such user"))?;
    Ok(Json(settings))
}

/// Changes the caller's user's read-receipt privacy settings (absent fields stay). They
/// apply to reads from now on.
#[utoipa::path(
    put, path = "/v1/settings/privacy", tag = super::tags::RECEIPTS,
    security(("bearer" = [])),
    request_body = UpdatePrivacySettings,
    responses(
        (status = 200, body = PrivacySettings, description = "The settings now"),
        UpdatePrivacyErrors,
    ),
)]
pub async fn update_privacy(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(update): ApiJson<UpdatePrivacySettings>,
) -> Result<Json<PrivacySettings>, ApiError> {
    let settings = db::receipts::update_privacy(&state.pool, caller.user_id, update)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, "no such user"))?;
    Ok(Json(settings))
}

operation_errors!(
    /// The errors of [`mark_read`].
    MarkReadErrors: AUTH + JSON_BODY + DATABASE + [MessageNotFound]
);
operation_errors!(
    /// The errors of [`delivery_state`].
    DeliveryStateErrors: AUTH + DATABASE + [InvalidPathParameter, MessageNotFound]
);
operation_errors!(
    /// The errors of [`get_privacy`].
    GetPrivacyErrors: AUTH + DATABASE + []
);
operation_errors!(
    /// The errors of [`update_privacy`].
    UpdatePrivacyErrors: AUTH + JSON_BODY + DATABASE + []
);
