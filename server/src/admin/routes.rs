//! The admin API's handlers (`/admin/v1/...`, private listener only).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use courier_protocol::{DeviceId, ErrorCode, UserId, limits};
use serde::Deserialize;
use uuid::Uuid;

use super::Operator;
use super::api::{
    DeactivationReport, IssueRegistrationToken, IssuedRegistrationToken, ProtocolUsage,
    RegistrationTokenInfo, RegistrationTokenList, ServerStats, TokenState, UserDetails, UserList,
    UserSummary,
};
use crate::db;
use crate::db::accounts::{UserKey, UserRecord};
use crate::db::registration_tokens::TokenRecord;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Most users one page lists.
pub const MAX_PAGE: u32 = 500;
/// Users a page lists when `limit` is not given.
const DEFAULT_PAGE: u32 = 100;
/// The longest a registration token may live: ten years.
const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// The admin routes, for the private listener's router.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/users", get(list_users))
        .route("/admin/v1/users/{user}", get(show_user))
        .route("/admin/v1/users/{user}/deactivate", post(deactivate))
        .route(
            "/admin/v1/users/{user}/devices/{device_id}",
            delete(remove_device),
        )
        .route(
            "/admin/v1/registration-tokens",
            get(list_tokens).post(issue_token),
        )
        .route(
            "/admin/v1/registration-tokens/{token_id}",
            delete(revoke_token),
        )
        .route("/admin/v1/stats", get(stats))
}

/// `GET /admin/v1/users` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Usernames starting with this (any case).
    search: Option<String>,
    /// The previous page's `nextAfter`.
    after: Option<String>,
    /// Users per page, 1 to [`MAX_PAGE`].
    limit: Option<u32>,
}

async fn list_users(
    State(state): State<AppState>,
    _: Operator,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UserList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQueryParameter,
            format!("limit is 1 to {MAX_PAGE}"),
        ));
    }
    let search = query.search.map(|search| search.to_lowercase());
    // One more than asked says whether there is a next page.
    let mut records = db::accounts::list(
        &state.pool,
        search.as_deref(),
        query.after.as_deref(),
        i64::from(limit) + 1,
    )
    .await?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_after = more
        .then(|| records.last().map(|record| record.username.clone()))
        .flatten();
    Ok(Json(UserList {
        users: records.into_iter().map(summary).collect(),
        next_after,
    }))
}

async fn show_user(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<UserDetails>, ApiError> {
    let record = find(&state, &user).await?;
    let user_id = UserId::from(record.user_id);
    let devices = db::devices::list_active(&state.pool, user_id).await?;
    Ok(Json(UserDetails {
        user: summary(record),
        devices,
    }))
}

async fn deactivate(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<DeactivationReport>, ApiError> {
    let user_id = UserId::from(find(&state, &user).await?.user_id);
    let deactivation = super::deactivate_user(&state, user_id)
        .await?
        .ok_or_else(user_not_found)?;
    Ok(Json(DeactivationReport {
        user_id,
        removed_devices: deactivation.removed_devices,
        dropped_items: deactivation.dropped_items,
        already_deactivated: deactivation.already_deactivated,
    }))
}

async fn remove_device(
    State(state): State<AppState>,
    _: Operator,
    ApiPath((user, device_id)): ApiPath<(String, DeviceId)>,
) -> Result<StatusCode, ApiError> {
    let user_id = UserId::from(find(&state, &user).await?.user_id);
    if !db::devices::remove(&state.pool, user_id, device_id).await? {
        return Err(crate::routes::accounts::device_not_found());
    }
    state.device_removed(user_id, device_id);
    tracing::info!(%user_id, %device_id, "device removed by an operator");
    Ok(StatusCode::NO_CONTENT)
}

async fn issue_token(
    State(state): State<AppState>,
    _: Operator,
    ApiJson(request): ApiJson<IssueRegistrationToken>,
) -> Result<(StatusCode, Json<IssuedRegistrationToken>), ApiError> {
    let uses_allowed = match request.uses_allowed {
        None => None,
        Some(uses) => Some(
            i32::try_from(uses)
                .ok()
                .filter(|uses| *uses > 0)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequestBody,
                        "usesAllowed is 1 to 2147483647 (or absent: unlimited)",
                    )
                })?,
        ),
    };
    let expires_at = match request.expires_in_secs {
        None => None,
        Some(secs) if (1..=MAX_TOKEN_LIFETIME_SECS).contains(&secs) => {
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            Some(Utc::now() + chrono::Duration::seconds(secs))
        }
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequestBody,
                format!("expiresInSecs is 1 to {MAX_TOKEN_LIFETIME_SECS} (or absent: never)"),
            ));
        }
    };
    let (token, hash) = crate::tokens::new_registration_token();
    let record = db::registration_tokens::insert(
        &state.pool,
        Uuid::new_v4(),
        &hash,
        uses_allowed,
        expires_at,
    )
    .await?;
    tracing::info!(token_id = %record.token_id, "registration token issued");
    Ok((
        StatusCode::CREATED,
        Json(IssuedRegistrationToken {
            token,
            info: token_info(record, Utc::now()),
        }),
    ))
}

async fn list_tokens(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<RegistrationTokenList>, ApiError> {
    let now = Utc::now();
    let tokens = db::registration_tokens::list(&state.pool)
        .await?
        .into_iter()
        .map(|record| token_info(record, now))
        .collect();
    Ok(Json(RegistrationTokenList { tokens }))
}

async fn revoke_token(
    State(state): State<AppState>,
    _: Operator,
    ApiPath(token_id): ApiPath<Uuid>,
) -> Result<Json<RegistrationTokenInfo>, ApiError> {
    let record = db::registration_tokens::revoke(&state.pool, token_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such registration token"))?;
    tracing::info!(%token_id, "registration token revoked");
    Ok(Json(token_info(record, Utc::now())))
}

async fn stats(State(state): State<AppState>, _: Operator) -> Result<Json<ServerStats>, ApiError> {
    let row = db::accounts::stats(&state.pool).await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let active_users = row.users - row.deactivated_users;
    #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
    let average_devices_per_user = (row.active_devices > 0 && active_users > 0)
        .then(|| row.active_devices as f64 / active_users as f64);
    Ok(Json(ServerStats {
        users: count(row.users),
        deactivated_users: count(row.deactivated_users),
        active_devices: count(row.active_devices),
        average_devices_per_user,
        max_devices_per_user: row
            .max_devices_per_user
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        undelivered_envelopes: count(row.undelivered_envelopes),
        undelivered_sender_keys: count(row.undelivered_sender_keys),
        oldest_undelivered_at: row.oldest_undelivered_at,
        messages_last_day: ProtocolUsage {
            v1: count(row.v1_messages_last_day),
            v2: count(row.v2_messages_last_day),
        },
    }))
}

/// A user named by ID or username.
async fn find(state: &AppState, user: &str) -> Result<UserRecord, ApiError> {
    let key = match user.parse::<Uuid>() {
        Ok(id) => UserKey::Id(UserId::from(id)),
        Err(_) => UserKey::Username(limits::canonical_username(user).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidPathParameter,
                "name a user by its ID or its username",
            )
        })?),
    };
    db::accounts::find(&state.pool, &key)
        .await?
        .ok_or_else(user_not_found)
}

fn user_not_found() -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, "no such user")
}

fn summary(record: UserRecord) -> UserSummary {
    UserSummary {
        user_id: UserId::from(record.user_id),
        username: record.username,
        created_at: record.created_at,
        deactivated_at: record.deactivated_at,
        active_devices: u32::try_from(record.active_devices).unwrap_or(u32::MAX),
    }
}

fn token_info(record: TokenRecord, now: DateTime<Utc>) -> RegistrationTokenInfo {
    let state = if record.revoked_at.is_some() {
        TokenState::Revoked
    } else if record.expires_at.is_some_and(|at| at <= now) {
        TokenState::Expired
    } else if record
        .uses_allowed
        .is_some_and(|allowed| record.uses >= allowed)
    {
        TokenState::UsedUp
    } else {
        TokenState::Valid
    };
    RegistrationTokenInfo {
        token_id: record.token_id,
        state,
        uses_allowed: record.uses_allowed.and_then(|n| u32::try_from(n).ok()),
        uses: u32::try_from(record.uses).unwrap_or(0),
        expires_at: record.expires_at,
        created_at: record.created_at,
        revoked_at: record.revoked_at,
    }
}
