//! The `registration_tokens` table: tokens an operator hands out so people can create
//! accounts on a server whose registration is by token.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A registration token as stored (never the token itself).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct TokenRecord {
    pub token_id: Uuid,
    pub uses_allowed: Option<i32>,
    pub uses: i32,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "token_id, uses_allowed, uses, expires_at, created_at, revoked_at";

/// The token `$1` names, if it can create an account now: not revoked, not expired, not
/// used up.
macro_rules! valid_token {
    () => {
        "token_hash = $1 AND revoked_at IS NULL
         AND (expires_at IS NULL OR expires_at > now())
         AND (uses_allowed IS NULL OR uses < uses_allowed)"
    };
}

/// Stores a new token's hash.
pub async fn insert(
    pool: &PgPool,
    token_id: Uuid,
    token_hash: &[u8; 32],
    uses_allowed: Option<i32>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<TokenRecord, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO registration_tokens (token_id, token_hash, uses_allowed, expires_at)
         VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    ))
    .bind(token_id)
    .bind(&token_hash[..])
    .bind(uses_allowed)
    .bind(expires_at)
    .fetch_one(pool)
    .await
}

/// Every token, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM registration_tokens ORDER BY created_at DESC, token_id"
    ))
    .fetch_all(pool)
    .await
}

/// Revokes a token (idempotent); `None` if there is no such token.
pub async fn revoke(pool: &PgPool, token_id: Uuid) -> Result<Option<TokenRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE registration_tokens SET revoked_at = COALESCE(revoked_at, now())
         WHERE token_id = $1 RETURNING {COLUMNS}"
    ))
    .bind(token_id)
    .fetch_optional(pool)
    .await
}

/// Whether a token is valid now (a cheap check before a password is hashed; the use is
/// taken by [`take_use`] with the account's creation).
pub async fn is_valid(pool: &PgPool, token_hash: &[u8; 32]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(concat!(
        "SELECT EXISTS (SELECT 1 FROM registration_tokens WHERE ",
        valid_token!(),
        ")"
    ))
    .bind(&token_hash[..])
    .fetch_one(pool)
    .await
}

/// Takes one use of a valid token (not revoked, not expired, not used up); `false` if the
/// token is not valid. The row update serializes racing creations on the last use.
pub async fn take_use(conn: &mut PgConnection, token_hash: &[u8; 32]) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(concat!(
        "UPDATE registration_tokens SET uses = uses + 1 WHERE ",
        valid_token!()
    ))
    .bind(&token_hash[..])
    .execute(&mut *conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}
