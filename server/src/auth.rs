//! Device access tokens, the authenticated-device extractor, and password hashing.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng as PasswordRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use courier_protocol::{DeviceId, ErrorCode, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

/// Every access token starts with this, so secret scanners can spot leaked ones.
const TOKEN_PREFIX: &str = "cdt_";
/// `last_seen_at` is written at most this often per device, not on every request.
const LAST_SEEN_GRANULARITY_MINUTES: i64 = 60;

/// A fresh access token (256 random bits) and the SHA-256 hash that is stored instead of it.
pub fn new_access_token() -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a token. A plain hash suffices: tokens carry 256 bits of entropy,
/// so there is nothing to brute-force, and lookups stay one index probe.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The device a request is authenticated as, from its bearer token.
#[derive(Debug, Clone, Copy)]
pub struct AuthenticatedDevice {
    /// The device's user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
}

impl FromRequestParts<AppState> for AuthenticatedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingToken,
                "send Authorization: Bearer <access token>",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| token.starts_with(TOKEN_PREFIX))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidToken,
                    "the Authorization header is not a Courier bearer token",
                )
            })?;

        let owner = db::devices::find_by_token(&state.pool, &hash_token(token))
            .await?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidToken, "the access token is not valid")
            })?;
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
        Ok(Self {
            user_id: owner.user_id,
            device_id: owner.device_id,
        })
    }
}

/// Argon2id password hashing, off the async runtime and with bounded concurrency: each
/// hash holds 19 MiB, so a burst of logins must not exhaust a small machine's memory.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash to verify against when the username does not exist, so that a login for an
    /// unknown user takes as long as one with a wrong password (no username probing).
    dummy_hash: Arc<OnceCell<String>>,
}

impl Passwords {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy_hash: Arc::new(OnceCell::new()),
        }
    }

    /// Hashes a password (Argon2id, default parameters, random salt) to a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut PasswordRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| ApiError::internal(anyhow::anyhow!("argon2: {error}")))
    }

    /// Checks a password against a stored hash; with no stored hash (unknown user) it
    /// spends the same time and answers `false`.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let (stored, known) = match stored {
            Some(stored) => (stored, true),
            None => {
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| self.hash("courier-dummy-password".to_owned()))
                    .await?;
                (dummy.clone(), false)
            }
        };
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored).is_ok_and(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, hash_a) = new_access_token();
        let (b, _) = new_access_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        // 32 bytes in unpadded base64url.
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(hash_token(&a), hash_a);
        assert_ne!(hash_a.to_vec(), a.as_bytes()[..32].to_vec());
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("correct horse".to_owned()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            passwords
                .verify("correct horse".to_owned(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".to_owned(), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("courier-dummy-password".to_owned(), None)
                .await
                .unwrap()
        );
    }
}
