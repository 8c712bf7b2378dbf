//! The authenticated-device extractor: a request's bearer token, checked against the
//! token cache or the database.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{Duration, Utc};
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{DeviceId, ErrorCode, UserId};

use crate::db;
use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::{TOKEN_PREFIX, TokenHash, hash_token};

/// `last_seen_at` is written at most this often per device, not on every request.
const LAST_SEEN_GRANULARITY_MINUTES: i64 = 60;

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 9110 §11.1); `None` when the header has another form. No header
/// at all answers `missing_token`, naming the `expected` token.
pub(crate) fn bearer_token<'a>(
    parts: &'a Parts,
    expected: &str,
) -> Result<Option<&'a str>, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingToken,
            format!("send Authorization: Bearer <{expected}>"),
        )
    })?;
    Ok(header.to_str().ok().and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }))
}

/// The device a request is authenticated as, from its bearer token.
#[derive(Debug, Clone, Copy)]
pub struct AuthenticatedDevice {
    /// The device's user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// The token it presented (a socket opened with it closes when it stops being valid).
    pub token: TokenHash,
}

impl AuthenticatedDevice {
    /// The device, as one value.
    pub fn device(&self) -> DeviceRef {
        DeviceRef::new(self.user_id, self.device_id)
    }
}

impl FromRequestParts<AppState> for AuthenticatedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts, "access token")?
            .filter(|token| token.starts_with(TOKEN_PREFIX))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidToken,
                    "the Authorization header is not a Courier bearer token",
                )
            })?;

        let hash = hash_token(token);
        let owner = match state.tokens.get(&hash) {
            Some(owner) => owner,
            None => {
                let owner = db::devices::find_by_token(&state.pool, &hash)
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::InvalidToken, "the access token is not valid")
                    })?;
                if !owner.removed {
                    state.tokens.insert(hash, owner);
                }
                owner
            }
        };
        if owner.removed {
            return Err(ApiError::new(
                ErrorCode::DeviceRemoved,
                "this device has been removed; log in again as a new device",
            ));
        }
        if Utc::now() - owner.last_seen_at > Duration::minutes(LAST_SEEN_GRANULARITY_MINUTES) {
            // Best effort and off the request path: a lost update only makes last-seen older.
            let pool = state.pool.clone();
            tokio::spawn(async move {
                if let Err(error) = db::devices::touch(&pool, owner.user_id, owner.device_id).await
                {
                    tracing::warn!(error = %error, "could not update a device's last-seen time");
                }
            });
        }
        // The connection authenticated: it no longer counts against the cap on
        // connections that have not.
        if let Some(connection) = parts
            .extensions
            .get::<std::sync::Arc<crate::serve::ConnectionShared>>()
        {
            connection.authenticated();
        }
        Ok(Self {
            user_id: owner.user_id,
            device_id: owner.device_id,
            token: TokenHash(hash),
        })
    }
}
