//! The key directory: publish identity, one-time and fallback keys; list a user's
//! devices; claim keys to open sessions.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use courier_protocol::api::errors::{
    CountLimitDetails, DuplicateKeyIdDetails, FieldDetails, KeyConflictDetails, KeyLengthDetails,
    SignatureDetails, StoredKeysDetails,
};
use courier_protocol::api::keys::{
    ClaimKeysRequest, ClaimKeysResponse, ClaimedKey, DirectoryDevice, IdentityKeys,
    KeyCountResponse, SignedKey, UploadOneTimeKeysRequest, UserDevicesResponse,
};
use courier_protocol::keys::{KeyDecodeError, decode_fixed, encode_base64};
use courier_protocol::signing::{self, SignatureError};
use courier_protocol::{ErrorCode, UserId, limits};

use crate::api_doc::operation_errors;
use crate::auth::AuthenticatedDevice;
use crate::db;
use crate::db::keys::{IdentityPublish, OneTimeUpload, StoredIdentityKeys, VerifiedKey};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// Decodes a base64 key or signature field of exactly `N` bytes, naming the field on error.
fn decode_field<const N: usize>(field: &str, text: &str) -> Result<[u8; N], ApiError> {
    decode_fixed::<N>(text).map_err(|error| match error {
        KeyDecodeError::InvalidBase64 => ApiError::new(
            ErrorCode::InvalidBase64,
            format!("{field} is not valid base64"),
        )
        .with_details(FieldDetails {
            field: field.to_owned(),
        }),
        KeyDecodeError::WrongLength { expected, actual } => ApiError::new(
            ErrorCode::InvalidKeyLength,
            format!("{field} must decode to {expected} bytes, not {actual}"),
        )
        .with_details(KeyLengthDetails {
            field: field.to_owned(),
            expected: u32::try_from(expected).unwrap_or(u32::MAX),
            actual: u32::try_from(actual).unwrap_or(u32::MAX),
        }),
    })
}

fn signature_error(error: SignatureError, field: &str, key_id: Option<&str>) -> ApiError {
    match error {
        SignatureError::InvalidPublicKey => ApiError::new(
            ErrorCode::InvalidPublicKey,
            "the Ed25519 key is not a valid public key",
        )
        .with_details(FieldDetails {
            field: "ed25519".to_owned(),
        }),
        SignatureError::BadSignature => ApiError::new(
            ErrorCode::InvalidSignature,
            format!("{field} does not verify"),
        )
        .with_details(SignatureDetails {
            field: field.to_owned(),
            key_id: key_id.map(str::to_owned),
        }),
    }
}

fn identity_keys_wire(keys: &StoredIdentityKeys) -> IdentityKeys {
    IdentityKeys {
        curve25519: encode_base64(&keys.curve25519),
        ed25519: encode_base64(&keys.ed25519),
        signature: encode_base64(&keys.signature),
    }
}

/// Decodes a signed Curve25519 key and checks its key ID and its signature by `signer`
/// over the payload `payload_fn` builds.
fn verify_signed_key(
    key: &SignedKey,
    field: &str,
    signer: &[u8; 32],
    payload_fn: impl Fn(&str, &[u8; 32]) -> Vec<u8>,
) -> Result<VerifiedKey, ApiError> {
    if !limits::check_key_id(&key.key_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidKeyId,
            "a key ID is 1 to 64 characters of [A-Za-z0-9_+/=-]",
        )
        .with_details(FieldDetails {
            field: format!("{field}.keyId"),
        }));
    }
    let public_key = decode_field::<32>(&format!("{field}.key"), &key.key)?;
    let signature = decode_field::<64>(&format!("{field}.signature"), &key.signature)?;
    signing::verify(signer, &payload_fn(&key.key_id, &public_key), &signature).map_err(
        |error| signature_error(error, &format!("{field}.signature"), Some(&key.key_id)),
    )?;
    Ok(VerifiedKey {
        key_id: key.key_id.clone(),
        public_key,
        signature,
    })
}

async fn signing_key_of(
    state: &AppState,
    caller: AuthenticatedDevice,
) -> Result<[u8; 32], ApiError> {
    db::keys::identity_keys(&state.pool, caller.user_id, caller.device_id)
        .await?
        .map(|keys| keys.ed25519)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdentityKeysRequired,
                "publish this device's identity keys first",
            )
        })
}

/// Publishes the calling device's identity keys, self-signed over a payload that binds
/// its user and device IDs. Once per device: the same keys again are accepted, different
/// ones refused.
#[utoipa::path(
    put, path = "/v1/keys/identity", tag = super::tags::KEYS,
    security(("bearer" = [])),
    request_body = IdentityKeys,
    responses(
        (status = 201, body = DirectoryDevice, description = "Published"),
        (status = 200, body = DirectoryDevice, description = "The same keys were already published"),
        PublishIdentityKeysErrors,
    ),
)]
pub async fn publish_identity_keys(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<IdentityKeys>,
) -> Result<(StatusCode, Json<DirectoryDevice>), ApiError> {
    let keys = StoredIdentityKeys {
        curve25519: decode_field("curve25519", &request.curve25519)?,
        ed25519: decode_field("ed25519", &request.ed25519)?,
        signature: decode_field("signature", &request.signature)?,
    };
    signing::verify_identity_keys(
        caller.user_id,
        caller.device_id,
        &keys.curve25519,
        &keys.ed25519,
        &keys.signature,
    )
    .map_err(|error| signature_error(error, "signature", None))?;
    let status = match db::keys::publish_identity_keys(
        &state.pool,
        caller.user_id,
        caller.device_id,
        &keys,
    )
    .await?
    {
        IdentityPublish::Created => {
            state.devices_changed(caller.user_id);
            StatusCode::CREATED
        }
        IdentityPublish::Unchanged => StatusCode::OK,
        IdentityPublish::Conflict => {
            return Err(ApiError::new(
                ErrorCode::IdentityKeysConflict,
                "this device already published different identity keys; a new identity needs a new device",
            ));
        }
    };
    Ok((
        status,
        Json(DirectoryDevice {
            device_id: caller.device_id,
            identity_keys: identity_keys_wire(&keys),
        }),
    ))
}

/// Uploads a batch of signed one-time keys. All or nothing: one bad key refuses the batch.
/// Re-uploading a key ID with the same key is a no-op (also after it was claimed).
#[utoipa::path(
    post, path = "/v1/keys/one-time", tag = super::tags::KEYS,
    security(("bearer" = [])),
    request_body = UploadOneTimeKeysRequest,
    responses(
        (status = 200, body = KeyCountResponse, description = "Stored: the device's key counts now"),
        UploadOneTimeKeysErrors,
    ),
)]
pub async fn upload_one_time_keys(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<UploadOneTimeKeysRequest>,
) -> Result<Json<KeyCountResponse>, ApiError> {
    let max = limits::MAX_ONE_TIME_KEYS_PER_UPLOAD;
    if request.one_time_keys.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooManyKeys,
            format!("at most {max} one-time keys per upload"),
        )
        .with_details(CountLimitDetails { max: max as u64 }));
    }
    let mut seen = HashSet::with_capacity(request.one_time_keys.len());
    if let Some(duplicate) = request
        .one_time_keys
        .iter()
        .find(|key| !seen.insert(key.key_id.as_str()))
    {
        return Err(
            ApiError::new(ErrorCode::DuplicateKeyId, "the upload names a key ID twice")
                .with_details(DuplicateKeyIdDetails {
                    key_id: duplicate.key_id.clone(),
                }),
        );
    }

    let signer = signing_key_of(&state, caller).await?;
    let keys = request
        .one_time_keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            verify_signed_key(
                key,
                &format!("oneTimeKeys[{index}]"),
                &signer,
                |key_id, public_key| {
                    signing::one_time_key_payload(
                        caller.user_id,
                        caller.device_id,
                        key_id,
                        public_key,
                    )
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let max_stored = limits::MAX_STORED_ONE_TIME_KEYS;
    match db::keys::upload_one_time_keys(
        &state.pool,
        caller.user_id,
        caller.device_id,
        &keys,
        max_stored,
    )
    .await?
    {
        OneTimeUpload::Stored { .. } => key_count(State(state), caller).await,
        OneTimeUpload::Conflict(key_ids) => Err(ApiError::new(
            ErrorCode::OneTimeKeyConflict,
            "key IDs already uploaded with a different key; nothing was stored",
        )
        .with_details(KeyConflictDetails { key_ids })),
        OneTimeUpload::LimitReached { unclaimed } => Err(ApiError::new(
            ErrorCode::OneTimeKeyLimitReached,
            format!(
                "a device holds at most {max_stored} unclaimed one-time keys; nothing was stored"
            ),
        )
        .with_details(StoredKeysDetails {
            stored: u64::from(unclaimed),
            max: max_stored as u64,
        })),
    }
}

/// Publishes (or replaces) the calling device's signed fallback key, handed out when its
/// one-time keys run out.
#[utoipa::path(
    put, path = "/v1/keys/fallback", tag = super::tags::KEYS,
    security(("bearer" = [])),
    request_body = SignedKey,
    responses(
        (status = 200, body = KeyCountResponse, description = "Published: the device's key counts now"),
        SetFallbackKeyErrors,
    ),
)]
pub async fn set_fallback_key(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<SignedKey>,
) -> Result<Json<KeyCountResponse>, ApiError> {
    let signer = signing_key_of(&state, caller).await?;
    let key = verify_signed_key(&request, "fallbackKey", &signer, |key_id, public_key| {
        signing::fallback_key_payload(caller.user_id, caller.device_id, key_id, public_key)
    })?;
    db::keys::set_fallback_key(&state.pool, caller.user_id, caller.device_id, &key).await?;
    key_count(State(state), caller).await
}

/// How many unclaimed one-time keys the calling device has, and its fallback key ID, so
/// the SDK can top them up.
#[utoipa::path(
    get, path = "/v1/keys/count", tag = super::tags::KEYS,
    security(("bearer" = [])),
    responses(
        (status = 200, body = KeyCountResponse, description = "The device's key counts"),
        KeyCountErrors,
    ),
)]
pub async fn key_count(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
) -> Result<Json<KeyCountResponse>, ApiError> {
    let (one_time_key_count, fallback_key_id) =
        db::keys::key_counts(&state.pool, caller.user_id, caller.device_id).await?;
    Ok(Json(KeyCountResponse {
        one_time_key_count,
        fallback_key_id,
    }))
}

/// Lists a user's reachable devices (active, with published identity keys) and their
/// identity keys. Any authenticated device may ask.
#[utoipa::path(
    get, path = "/v1/keys/devices/{userId}", tag = super::tags::KEYS,
    security(("bearer" = [])),
    params(("userId" = String, Path, format = Uuid, description = "The user whose devices to list")),
    responses(
        (status = 200, body = UserDevicesResponse, description = "The user's reachable devices"),
        UserDevicesErrors,
    ),
)]
pub async fn user_devices(
    State(state): State<AppState>,
    _caller: AuthenticatedDevice,
    ApiPath(user_id): ApiPath<UserId>,
) -> Result<Json<UserDevicesResponse>, ApiError> {
    let devices = db::keys::directory(&state.pool, user_id).await?;
    if devices.is_empty() && !db::accounts::exists(&state.pool, user_id).await? {
        return Err(ApiError::new(ErrorCode::UserNotFound, "no such user"));
    }
    let devices = devices
        .iter()
        .map(|(device_id, keys)| DirectoryDevice {
            device_id: *device_id,
            identity_keys: identity_keys_wire(keys),
        })
        .collect();
    Ok(Json(UserDevicesResponse { user_id, devices }))
}

/// Claims one key per named device to open Olm sessions: a one-time key while the device
/// has any (each handed out at most once, also under concurrent claims), else its fallback
/// key (flagged). Devices with neither are listed as unavailable. A device whose one-time
/// keys are being claimed faster than the per-target rate limit is served its fallback key
/// instead (a one-time key only when it has no fallback key), so that no one can drain its
/// one-time keys.
#[utoipa::path(
    post, path = "/v1/keys/claim", tag = super::tags::KEYS,
    security(("bearer" = [])),
    request_body = ClaimKeysRequest,
    responses(
        (status = 200, body = ClaimKeysResponse, description = "One key per device that had one, and the devices that had none"),
        ClaimKeysErrors,
    ),
)]
pub async fn claim_keys(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<ClaimKeysRequest>,
) -> Result<Json<ClaimKeysResponse>, ApiError> {
    let max = limits::MAX_DEVICES_PER_CLAIM;
    if request.devices.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooManyDevices,
            format!("a claim names at most {max} devices"),
        )
        .with_details(CountLimitDetails { max: max as u64 }));
    }
    let mut seen = HashSet::with_capacity(request.devices.len());
    let devices: Vec<_> = request
        .devices
        .into_iter()
        .filter(|device| seen.insert(*device))
        .collect();
    state
        .rate_limits
        .check_claims(caller.device(), devices.len())?;
    let (one_time, fallback_first): (Vec<_>, Vec<_>) = devices
        .iter()
        .partition(|device| !state.rate_limits.target_over_limit(**device));
    let (claimed, unavailable) = db::keys::claim(&state.pool, &one_time, &fallback_first).await?;
    let keys = claimed
        .into_iter()
        .map(|claim| ClaimedKey {
            user_id: claim.device.user_id,
            device_id: claim.device.device_id,
            key: SignedKey {
                key_id: claim.key.key_id,
                key: encode_base64(&claim.key.public_key),
                signature: encode_base64(&claim.key.signature),
            },
            fallback: claim.fallback,
        })
        .collect();
    Ok(Json(ClaimKeysResponse { keys, unavailable }))
}

operation_errors!(
    /// The errors of [`publish_identity_keys`].
    PublishIdentityKeysErrors: AUTH + JSON_BODY + DATABASE + [InvalidBase64, InvalidKeyLength, InvalidPublicKey, InvalidSignature, IdentityKeysConflict]
);
operation_errors!(
    /// The errors of [`upload_one_time_keys`].
    UploadOneTimeKeysErrors: AUTH + JSON_BODY + DATABASE + [TooManyKeys, DuplicateKeyId, InvalidKeyId, InvalidBase64, InvalidKeyLength, InvalidSignature, IdentityKeysRequired, OneTimeKeyConflict, OneTimeKeyLimitReached]
);
operation_errors!(
    /// The errors of [`set_fallback_key`].
    SetFallbackKeyErrors: AUTH + JSON_BODY + DATABASE + [InvalidKeyId, InvalidBase64, InvalidKeyLength, InvalidSignature, IdentityKeysRequired]
);
operation_errors!(
    /// The errors of [`key_count`].
    KeyCountErrors: AUTH + DATABASE + []
);
operation_errors!(
    /// The errors of [`user_devices`].
    UserDevicesErrors: AUTH + DATABASE + [InvalidPathParameter, UserNotFound]
);
operation_errors!(
    /// The errors of [`claim_keys`].
    ClaimKeysErrors: AUTH + JSON_BODY + DATABASE + [TooManyDevices, RateLimited]
);
