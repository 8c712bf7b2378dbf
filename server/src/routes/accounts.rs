//! Account creation and login (device registration).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use courier_protocol::api::accounts::{
    CreateAccountRequest, CreateAccountResponse, LoginRequest, LoginResponse,
};
use courier_protocol::api::devices::DeviceLimitDetails;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{ErrorCode, UserId, limits};

use crate::api_doc::operation_errors;
use crate::db;
use crate::db::devices::Registration;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::rate_limits::ClientAddress;
use crate::state::AppState;
use crate::tokens::new_access_token;

/// Creates an account.
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
    let username = limits::canonical_username(&request.username)
        .map_err(|error| ApiError::new(ErrorCode::InvalidUsername, error.to_string()))?;
    limits::check_password(&request.password)
        .map_err(|error| ApiError::new(ErrorCode::InvalidPassword, error.to_string()))?;
    // Counted before the database or Argon2 is asked anything.
    state.rate_limits.check_account_creation(address)?;

    // Cheap pre-check so a taken name costs no hashing; the insert below decides races.
    if db::accounts::find_credentials(&state.pool, &username)
        .await?
        .is_some()
    {
        return Err(username_taken());
    }
    let password_hash = state.passwords.hash(request.password).await?;
    let user_id = UserId::new_random();
    if !db::accounts::create_user(&state.pool, user_id, &username, &password_hash).await? {
        return Err(username_taken());
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
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "wrong username or password",
            ));
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

pub(crate) fn device_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::DeviceNotFound,
        "no such active device for this user",
    )
}

operation_errors!(
    /// The errors of [`create_account`].
    CreateAccountErrors: JSON_BODY + DATABASE + [InvalidUsername, InvalidPassword, UsernameTaken, RateLimited]
);
operation_errors!(
    /// The errors of [`login`].
    LoginErrors: JSON_BODY + DATABASE + [InvalidDeviceName, InvalidCredentials, DeviceNotFound, DeviceLimitReached, RateLimited]
);
