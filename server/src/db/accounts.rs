//! The `users` table.

use courier_protocol::UserId;
use sqlx::PgPool;
use uuid::Uuid;

/// Inserts a user; `false` if the username is taken.
pub async fn create_user(
    pool: &PgPool,
    user_id: UserId,
    username: &str,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO users (user_id, username, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(user_id.as_uuid())
    .bind(username)
    .bind(password_hash)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The user ID and password hash for a canonical username.
pub async fn find_credentials(
    pool: &PgPool,
    username: &str,
) -> Result<Option<(UserId, String)>, sqlx::Error> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT user_id, password_hash FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, hash)| (UserId::from(id), hash)))
}

/// Whether a user exists.
pub async fn exists(pool: &PgPool, user_id: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)")
        .bind(user_id.as_uuid())
        .fetch_one(pool)
        .await
}
