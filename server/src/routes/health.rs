//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use courier_protocol::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api_doc::operation_errors;
use crate::error::ApiError;
use crate::state::AppState;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// Always `"ok"` on success.
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = super::tags::OPERATIONS, responses((status = 200, body = HealthStatus, description = "The process is alive")))]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// The process can reach its database.
#[utoipa::path(
    get, path = "/readyz", tag = super::tags::OPERATIONS,
    responses(
        (status = 200, body = HealthStatus, description = "The database answered"),
        ReadyzErrors,
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    let ping = sqlx::query("SELECT 1").execute(&state.pool);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(Json(HealthStatus { status: "ok" })),
        _ => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "the database is not reachable",
        )),
    }
}

operation_errors!(
    /// The errors of [`readyz`].
    ReadyzErrors: [ServiceUnavailable]
);
