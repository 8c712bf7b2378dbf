//! Account creation (as the server's registration mode allows), login (device
//! registration) and the user's own account deletion.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use courier_protocol::api::accounts::{
    CreateAccountRequest, CreateAccountResponse, DeleteAccountRequest, LoginRequest, LoginResponse,
};
use courier_protocol::api::devices::DeviceLimitDetails;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{ErrorCode, UserId, limits};

use crate::api_doc::operation_errors;
use crate::auth::AuthenticatedDevice;
use crate::config::RegistrationMode;
use crate::db;
use crate::db::accounts::Creation;
use crate::db::devices::Registration;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::rate_limits::ClientAddress;
use crate::state::AppState;
use crate::tokens::{hash_token, new_access_token};

/// Creates an account. Whether anyone may depends on the server's registration mode:
/// open, by registration token (`registrationToken`), or closed.
#[utoipa::path(
    post, path = "/v1/accounts", tag = super::tags::ACCOUNTS,
    request_body = CreateAccountRequest,
    responses(
        (status = 201, body = CreateAccountResponse, description = "The account was created"),
        CreateAccountErrors,
    ),
)]
pub async fn create_account(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(request): ApiJson<CreateAccountRequest>,
) -> Result<(StatusCode, Json<CreateAccountResponse>), ApiError> {
    if state.settings.registration == RegistrationMode::Closed {
        return Err(ApiError::new(
            ErrorCode::RegistrationClosed,
            "this server takes no new accounts",
        ));
    }
    let username = limits::canonical_username(&request.username)
        .map_err(|error| ApiError::new(ErrorCode::InvalidUsername, error.to_string()))?;
    limits::check_password(&request.password)
        .map_err(|error| ApiError::new(ErrorCode::InvalidPassword, error.to_string()))?;
    // Counted before the database or Argon2 is asked anything.
    state.rate_limits.check_account_creation(address)?;

    let registration_token = match state.settings.registration {
        RegistrationMode::Token => {
            let token = request
                .registration_token
                .as_deref()
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .ok_or_else(|| invalid_registration_token("this server takes new accounts with a registration token only; ask its operator for one"))?;
            Some(hash_token(token))
        }
        RegistrationMode::Open | RegistrationMode::Closed => None,
    };

    // Cheap pre-checks so a taken name or a bad token costs no hashing; the insert below
    // decides races.
    if db::accounts::username_exists(&state.pool, &username).await? {
        return Err(username_taken());
    }
    if let Some(token) = &registration_token {
        if !db::registration_tokens::is_valid(&state.pool, token).await? {
            return Err(token_refused());
        }
    }
    let password_hash = state.passwords.hash(request.password).await?;
    let user_id = UserId::new_random();
    match db::accounts::create_user(
        &state.pool,
        user_id,
        &username,
        &password_hash,
        registration_token.as_ref(),
    )
    .await?
    {
        Creation::Created => {}
        Creation::UsernameTaken => return Err(username_taken()),
        Creation::TokenRefused => return Err(token_refused()),
    }
    tracing::info!(%user_id, "account created");
    Ok((
        StatusCode::CREATED,
        Json(CreateAccountResponse { user_id, username }),
    ))
}

fn username_taken() -> ApiError {
    ApiError::new(ErrorCode::UsernameTaken, "this username is taken")
}

fn invalid_registration_token(message: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidRegistrationToken, message)
}

fn token_refused() -> ApiError {
    invalid_registration_token("the registration token is unknown, expired, revoked or used up")
}

/// Deletes the caller's account, with its password: every one of its devices is removed
/// (tokens stop working, sockets close, keys leave the directory, pending envelopes are
/// dropped) and the username stays reserved. Other users' sends to its devices are
/// refused as stale from then on.
#[utoipa::path(
    delete, path = "/v1/accounts/me", tag = super::tags::ACCOUNTS,
    security(("bearer" = [])),
    request_body = DeleteAccountRequest,
    responses(
        (status = 204, description = "The account is deleted"),
        DeleteAccountErrors,
    ),
)]
pub async fn delete_account(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<DeleteAccountRequest>,
) -> Result<StatusCode, ApiError> {
    // A password guess like a login's: the login limit per address bounds them.
    state.rate_limits.check_login(address, None)?;
    let stored = db::accounts::password_hash(&state.pool, caller.user_id).await?;
    if !state.passwords.verify(request.password, stored).await? {
        return Err(ApiError::new(
            ErrorCode::WrongPassword,
            "the password is not this account's",
        ));
    }
    let deactivation = crate::admin::deactivate_user(&state, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, "no such user"))?;
    tracing::info!(
        user_id = %caller.user_id,
        devices = deactivation.removed_devices.len(),
        "account deleted by its user"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Logs in: `deviceId: 0` registers a new device (the server assigns its ID); an existing
/// device's ID gives that device a fresh token and revokes its old one.
#[utoipa::path(
    post, path = "/v1/login", tag = super::tags::ACCOUNTS,
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse, description = "Logged in: the device and its new access token"),
        LoginErrors,
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    if let Some(name) = &request.device_name {
        if !limits::check_device_name(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidDeviceName,
                "a device name is 1 to 64 characters without control characters",
            ));
        }
    }
    if request.replace_device_id.is_some() && !request.device_id.is_new() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestBody,
            "replaceDeviceId goes with deviceId 0 (a new device)",
        ));
    }

    // Usernames that break the rules cannot exist; they fail like a wrong password.
    let username = limits::canonical_username(&request.username).ok();
    // Every attempt counts, before the password is hashed: a refused one costs no Argon2
    // and says nothing about the password.
    state
        .rate_limits
        .check_login(address, username.as_deref())?;
    let credentials = match &username {
        Some(username) => db::accounts::find_credentials(&state.pool, username).await?,
        None => None,
    };
    let (user_id, stored_hash) = match credentials {
        Some((user_id, hash)) => (Some(user_id), Some(hash)),
        None => (None, None),
    };
    let verified = state
        .passwords
        .verify(request.password, stored_hash)
        .await?;
    let user_id = match user_id {
        Some(user_id) if verified => user_id,
        _ => {
            return Err(invalid_credentials());
        }
    };

    let (access_token, token_hash) = new_access_token();
    if !request.device_id.is_new() {
        if !db::devices::replace_token(&state.pool, user_id, request.device_id, &token_hash).await?
        {
            return Err(device_not_found());
        }
        state
            .token_replaced(DeviceRef::new(user_id, request.device_id))
            .await;
        tracing::info!(%user_id, device_id = %request.device_id, "device logged in again");
        return Ok(Json(LoginResponse {
            user_id,
            device_id: request.device_id,
            access_token,
        }));
    }

    let limit = state.settings.device_limit;
    let registration = db::devices::register(
        &state.pool,
        user_id,
        &token_hash,
        request.device_name.as_deref(),
        request.replace_device_id,
        limit,
    )
    .await?;
    match registration {
        Registration::Registered(device_id) => {
            if let Some(replaced) = request.replace_device_id {
                state.device_removed(user_id, replaced);
            }
            state.devices_changed(user_id);
            tracing::info!(%user_id, %device_id, "device registered");
            Ok(Json(LoginResponse {
                user_id,
                device_id,
                access_token,
            }))
        }
        Registration::ReplaceTargetNotFound => Err(device_not_found()),
        Registration::AccountDeactivated => Err(invalid_credentials()),
        Registration::LimitReached { count } => {
            let devices = db::devices::list_active(&state.pool, user_id).await?;
            Err(ApiError::new(
                ErrorCode::DeviceLimitReached,
                format!("this account already has {count} of {limit} devices; remove one, or log in with replaceDeviceId"),
            )
            .with_details(DeviceLimitDetails { count, limit, devices }))
        }
    }
}

/// A failed login, whatever failed (no such user, a deactivated one, a wrong password).
fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredentials, "wrong username or password")
}

pub(crate) fn device_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::DeviceNotFound,
        "no such active device for this user",
    )
}

operation_errors!(
    /// The errors of [`create_account`].
    CreateAccountErrors: JSON_BODY + DATABASE + [InvalidUsername, InvalidPassword, UsernameTaken, RegistrationClosed, InvalidRegistrationToken, RateLimited]
);
operation_errors!(
    /// The errors of [`delete_account`].
    DeleteAccountErrors: AUTH + JSON_BODY + DATABASE + [WrongPassword, RateLimited]
);
operation_errors!(
    /// The errors of [`login`].
    LoginErrors: JSON_BODY + DATABASE + [InvalidDeviceName, InvalidCredentials, DeviceNotFound, DeviceLimitReached, RateLimited]
);
