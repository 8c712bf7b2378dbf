//! Device access tokens: fresh random tokens, the hash stored instead of them, and a
//! short-lived cache of authenticated tokens.

use std::collections::HashMap;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use courier_protocol::{DeviceId, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db;

/// Every access token starts with this, so secret scanners can spot leaked ones.
pub(crate) const TOKEN_PREFIX: &str = "cdt_";

/// The SHA-256 hash of an access token: what the database stores and what a socket
/// remembers it was opened with. Not a secret (tokens carry 256 bits), but not for logs
/// either, so `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A fresh access token (256 random bits) and the SHA-256 hash that is stored instead of it.
pub fn new_access_token() -> (String, [u8; 32]) {
    new_token(TOKEN_PREFIX)
}

/// `prefix` and 256 random bits (URL-safe base64), and the token's SHA-256 hash.
fn new_token(prefix: &str) -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash_token(&token);
    (token, hash)
}

/// Every registration token starts with this (told apart from access tokens at a glance).
pub(crate) const REGISTRATION_TOKEN_PREFIX: &str = "crt_";

/// A fresh registration token (256 random bits) and the SHA-256 hash stored instead.
pub fn new_registration_token() -> (String, [u8; 32]) {
    new_token(REGISTRATION_TOKEN_PREFIX)
}

/// The stored form of a token. A plain hash suffices: tokens carry 256 bits of entropy,
/// so there is nothing to brute-force, and lookups stay one index probe.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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

    pub(crate) fn get(&self, hash: &[u8; 32]) -> Option<db::devices::TokenOwner> {
        self.lock()
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(owner, _)| *owner)
    }

    pub(crate) fn insert(&self, hash: [u8; 32], owner: db::devices::TokenOwner) {
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

    /// Forgets every cached token (signals that would have named some may be lost).
    pub fn forget_all(&self) {
        self.lock().clear();
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
}
