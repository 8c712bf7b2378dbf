//! The `users` table: creation (with a registration token when the server asks for
//! one), credentials, deactivation, and the operator's listings.

use chrono::{DateTime, Utc};
use courier_protocol::{DeviceId, UserId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{device_id, registration_tokens};

/// The outcome of creating a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// The user exists now.
    Created,
    /// Another user (a deactivated one included) has the username; nothing changed.
    UsernameTaken,
    /// The registration token is unknown, expired, revoked or used up; nothing changed.
    TokenRefused,
}

/// Inserts a user. With `registration_token`, one use of that token is taken in the same
/// transaction: a refused username does not use it up, and two racing creations cannot
/// both take its last use.
pub async fn create_user(
    pool: &PgPool,
    user_id: UserId,
    username: &str,
    password_hash: &str,
    registration_token: Option<&[u8; 32]>,
) -> Result<Creation, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(token) = registration_token {
        if !registration_tokens::take_use(&mut tx, token).await? {
            return Ok(Creation::TokenRefused);
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO users (user_id, username, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(user_id.as_uuid())
    .bind(username)
    .bind(password_hash)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() != 1 {
        // Dropping the transaction rolls the token's use back.
        return Ok(Creation::UsernameTaken);
    }
    tx.commit().await?;
    Ok(Creation::Created)
}

/// Whether any user, deactivated or not, has this canonical username.
pub async fn username_exists(pool: &PgPool, username: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)")
        .bind(username)
        .fetch_one(pool)
        .await
}

/// The user ID and password hash for a canonical username; `None` for a deactivated
/// user, who cannot log in.
pub async fn find_credentials(
    pool: &PgPool,
    username: &str,
) -> Result<Option<(UserId, String)>, sqlx::Error> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT user_id, password_hash FROM users WHERE username = $1 AND deactivated_at IS NULL",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, hash)| (UserId::from(id), hash)))
}

/// The password hash of an active user.
pub async fn password_hash(pool: &PgPool, user_id: UserId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT password_hash FROM users WHERE user_id = $1 AND deactivated_at IS NULL",
    )
    .bind(user_id.as_uuid())
    .fetch_optional(pool)
    .await
}

/// Whether a user exists.
pub async fn exists(pool: &PgPool, user_id: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)")
        .bind(user_id.as_uuid())
        .fetch_one(pool)
        .await
}

/// What deactivating a user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivation {
    /// The devices that were active and are removed now.
    pub removed_devices: Vec<DeviceId>,
    /// Envelopes and sender keys to those devices that were still undelivered, dropped.
    pub dropped_items: u64,
    /// The user had been deactivated before (nothing was left to do).
    pub already_deactivated: bool,
}

/// Deactivates a user in one transaction: every active device is removed (tokens stop
/// working, keys leave the directory, pending envelopes are dropped), the password hash
/// is cleared, and the row stays so the username stays reserved. `None` if no such user.
///
/// The user row is locked first, as a device registration locks it, so a login racing
/// the deactivation either finishes before it (and its device is removed here) or sees
/// the user deactivated.
pub async fn deactivate(
    pool: &PgPool,
    user_id: UserId,
) -> Result<Option<Deactivation>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let already: Option<bool> = sqlx::query_scalar(
        "SELECT deactivated_at IS NOT NULL FROM users WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user_id.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(already_deactivated) = already else {
        return Ok(None);
    };
    let dropped_items: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM message_envelopes
                 WHERE recipient_user_id = $1 AND delivered_at IS NULL)
              + (SELECT count(*) FROM sender_key_distributions
                 WHERE recipient_user_id = $1 AND delivered_at IS NULL)",
    )
    .bind(user_id.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    let active: Vec<i32> = sqlx::query_scalar(
        "SELECT device_id FROM devices WHERE user_id = $1 AND removed_at IS NULL ORDER BY device_id",
    )
    .bind(user_id.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    let mut removed_devices = Vec::with_capacity(active.len());
    for id in active {
        let device = device_id(id)?;
        if super::devices::remove_in(&mut tx, user_id, device).await? {
            removed_devices.push(device);
        }
    }
    mark_deactivated(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(Some(Deactivation {
        removed_devices,
        dropped_items: u64::try_from(dropped_items).unwrap_or(0),
        already_deactivated,
    }))
}

async fn mark_deactivated(conn: &mut PgConnection, user_id: UserId) -> Result<(), sqlx::Error> {
    // No password verifies against an empty hash (and logins skip deactivated users).
    sqlx::query(
        "UPDATE users SET deactivated_at = COALESCE(deactivated_at, now()), password_hash = ''
         WHERE user_id = $1",
    )
    .bind(user_id.as_uuid())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A user as an operator sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub user_id: Uuid,
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
    pub active_devices: i64,
}

const USER_RECORD: &str = "SELECT u.user_id, u.username, u.created_at, u.deactivated_at,
        (SELECT count(*) FROM devices d WHERE d.user_id = u.user_id AND d.removed_at IS NULL)
            AS active_devices
     FROM users u";

/// Users by username, those starting with `prefix` if given, after `after` (keyset
/// pagination), at most `limit`.
pub async fn list(
    pool: &PgPool,
    prefix: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserRecord>, sqlx::Error> {
    // The prefix is matched with LIKE: its own wildcards are taken literally.
    let pattern = prefix.map(|prefix| {
        let escaped = prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("{escaped}%")
    });
    sqlx::query_as(&format!(
        "{USER_RECORD}
         WHERE ($1::text IS NULL OR u.username LIKE $1)
           AND ($2::text IS NULL OR u.username > $2)
         ORDER BY u.username
         LIMIT $3"
    ))
    .bind(pattern)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One user, by ID or canonical username.
pub async fn find(pool: &PgPool, key: &UserKey) -> Result<Option<UserRecord>, sqlx::Error> {
    let query = format!("{USER_RECORD} WHERE u.user_id = $1 OR u.username = $2");
    let (id, name) = match key {
        UserKey::Id(id) => (Some(id.as_uuid()), None),
        UserKey::Username(name) => (None, Some(name.as_str())),
    };
    sqlx::query_as(&query)
        .bind(id)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// How an operator names a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey {
    /// By user ID.
    Id(UserId),
    /// By canonical username.
    Username(String),
}

/// Counts for the operator: the reference deployment's monitoring queries, over the whole
/// database.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StatsRow {
    pub users: i64,
    pub deactivated_users: i64,
    pub active_devices: i64,
    pub max_devices_per_user: Option<i32>,
    pub undelivered_envelopes: i64,
    pub undelivered_sender_keys: i64,
    pub oldest_undelivered_at: Option<DateTime<Utc>>,
    pub v1_messages_last_day: i64,
    pub v2_messages_last_day: i64,
}

/// The server's numbers (a few counting scans: an operator's query, not a hot path).
pub async fn stats(pool: &PgPool) -> Result<StatsRow, sqlx::Error> {
    sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM users) AS users,
            (SELECT count(*) FROM users WHERE deactivated_at IS NOT NULL) AS deactivated_users,
            (SELECT count(*) FROM devices WHERE removed_at IS NULL) AS active_devices,
            (SELECT max(n)::int4 FROM (SELECT count(*) AS n FROM devices
                WHERE removed_at IS NULL GROUP BY user_id) per_user) AS max_devices_per_user,
            backlog.undelivered_envelopes,
            (SELECT count(*) FROM sender_key_distributions WHERE delivered_at IS NULL)
                AS undelivered_sender_keys,
            backlog.oldest_undelivered_at,
            (SELECT count(*) FROM messages
                WHERE protocol_version = 1 AND created_at > now() - interval '1 day')
                AS v1_messages_last_day,
            (SELECT count(*) FROM messages
                WHERE protocol_version = 2 AND created_at > now() - interval '1 day')
                AS v2_messages_last_day
         FROM (
            -- No index holds undelivered envelopes (an acknowledgement would have to
            -- update it); each device's lie above its delivery floor, so only those are
            -- read (docs/operations.md, the backlog query).
            SELECT count(*) AS undelivered_envelopes, min(e.created_at) AS oldest_undelivered_at
            FROM devices d CROSS JOIN LATERAL (
                SELECT e.created_at FROM message_envelopes e
                WHERE e.recipient_user_id = d.user_id AND e.recipient_device_id = d.device_id
                  AND e.seq > COALESCE((SELECT f.delivered_through FROM device_delivery_floors f
                                        WHERE f.user_id = d.user_id AND f.device_id = d.device_id), 0)
                  AND e.delivered_at IS NULL
            ) e
            WHERE d.removed_at IS NULL
         ) backlog",
    )
    .fetch_one(pool)
    .await
}
