//! Shared state handed to every handler.

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::Passwords;

/// Runtime limits of a server instance (from [`Config`](crate::Config) in the binary;
/// tests build them directly).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Active devices a user may have at once.
    pub device_limit: u32,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Password hashes computed at once (each Argon2id hash holds 19 MiB).
    pub max_concurrent_password_hashes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            device_limit: 5,
            max_body_bytes: 1024 * 1024,
            max_concurrent_password_hashes: std::thread::available_parallelism()
                .map_or(2, |n| n.get().max(2)),
        }
    }
}

/// Handler state: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub passwords: Passwords,
}

impl AppState {
    pub fn new(pool: PgPool, settings: Settings) -> Self {
        let passwords = Passwords::new(settings.max_concurrent_password_hashes);
        Self {
            pool,
            settings: Arc::new(settings),
            passwords,
        }
    }
}
