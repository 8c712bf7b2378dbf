//! Device access tokens, the authenticated-device extractor, and password hashing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

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
use tokio::sync::OnceCell;

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
        Ok(Self {
            user_id: owner.user_id,
            device_id: owner.device_id,
        })
    }
}

/// Argon2id password hashing on a small dedicated thread pool: each hash holds 19 MiB,
/// so a burst of logins must neither block the async runtime nor spread that memory over
/// many threads (glibc keeps an arena per thread, and arenas do not shrink).
#[derive(Debug, Clone)]
pub struct Passwords {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
    /// A hash to verify against when the username does not exist, so that a login for an
    /// unknown user takes as long as one with a wrong password (no username probing).
    dummy_hash: Arc<OnceCell<String>>,
}

impl Passwords {
    /// Starts `threads` hashing threads (they end when the last clone is dropped).
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("courier-argon2-{index}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start a password hashing thread");
            }
        }
        Self {
            jobs,
            dummy_hash: Arc::new(OnceCell::new()),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| {
                ApiError::internal(anyhow::anyhow!("the password hashing threads are gone"))
            })?;
        result
            .await
            .map_err(|_| ApiError::internal(anyhow::anyhow!("a password hashing job was dropped")))
    }

    /// Hashes a password (Argon2id, default parameters, random salt) to a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || {
            let salt = SaltString::generate(&mut PasswordRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
        })
        .await?
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
        let matches = self
            .run(move || {
                PasswordHash::new(&stored).is_ok_and(|hash| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .is_ok()
                })
            })
            .await?;
        Ok(known && matches)
    }
}

/// Recently authenticated tokens, so a busy device costs no database read per request.
///
/// Entries live `ttl`; removing a device or replacing its token forgets its entries at
/// once in this process (other processes, once there are several, within `ttl`).
#[derive(Debug)]
pub struct TokenCache {
    entries: std::sync::Mutex<HashMap<[u8; 32], (db::devices::TokenOwner, Instant)>>,
    ttl: std::time::Duration,
    max_entries: usize,
}

impl TokenCache {
    pub fn new(ttl: std::time::Duration, max_entries: usize) -> Self {
        Self {
            entries: std::sync::Mutex::new(HashMap::new()),
            ttl,
            max_entries,
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (db::devices::TokenOwner, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, hash: &[u8; 32]) -> Option<db::devices::TokenOwner> {
        self.lock()
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(owner, _)| *owner)
    }

    fn insert(&self, hash: [u8; 32], owner: db::devices::TokenOwner) {
        let mut entries = self.lock();
        if entries.len() >= self.max_entries {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(hash, (owner, Instant::now()));
    }

    /// Forgets every cached token of a device (it was removed, or got a new token).
    pub fn forget_device(&self, user_id: UserId, device_id: DeviceId) {
        self.lock()
            .retain(|_, (owner, _)| !(owner.user_id == user_id && owner.device_id == device_id));
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
