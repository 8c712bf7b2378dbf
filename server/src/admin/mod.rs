//! Administering a server: the admin API on the private listener (authenticated with the
//! operator's admin token) and the `courier-server admin` client of it.
//!
//! One implementation of each action: the CLI calls the API, so a deactivation from the
//! command line closes sockets in every process exactly as one from the API does.

pub mod api;
pub mod cli;
mod routes;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use courier_protocol::{ErrorCode, UserId};
use sha2::{Digest, Sha256};

use crate::db;
use crate::db::accounts::Deactivation;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) use routes::router;

/// A request that presented the admin token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.settings.admin_token else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "the admin API is off: set COURIER_ADMIN_TOKEN to turn it on",
            ));
        };
        let presented = crate::auth::bearer_token(parts, "admin token")?.unwrap_or_default();
        // Digests compared, so the time taken says nothing about the token's characters.
        let matches =
            Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.expose().as_bytes());
        if matches {
            Ok(Self)
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidToken,
                "the admin token is not valid",
            ))
        }
    }
}

/// Deactivates a user (an operator's action, or the user deleting the account) and tells
/// every process, as a device removal does: each removed device's token is forgotten, its
/// sockets close, and the user's device list is read afresh, so sends to it are refused
/// as stale.
pub(crate) async fn deactivate_user(
    state: &AppState,
    user_id: UserId,
) -> Result<Option<Deactivation>, ApiError> {
    let Some(deactivation) = db::accounts::deactivate(&state.pool, user_id).await? else {
        return Ok(None);
    };
    for device in &deactivation.removed_devices {
        state.device_removed(user_id, *device);
    }
    tracing::info!(
        %user_id,
        devices = deactivation.removed_devices.len(),
        dropped = deactivation.dropped_items,
        "user deactivated"
    );
    Ok(Some(deactivation))
}
