//! The `devices` table: registration with server-assigned IDs, tokens, removal.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use courier_protocol::api::devices::OwnDevice;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{DeviceId, UserId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::device_id;

/// What a token hash resolves to.
#[derive(Debug, Clone, Copy)]
pub struct TokenOwner {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub removed: bool,
    pub last_seen_at: DateTime<Utc>,
}

/// Looks up the device a token hash belongs to (removed devices included, so the caller
/// can say so).
pub async fn find_by_token(
    pool: &PgPool,
    token_hash: &[u8; 32],
) -> Result<Option<TokenOwner>, sqlx::Error> {
    let row: Option<(Uuid, i32, bool, DateTime<Utc>)> = sqlx::query_as(
        "SELECT user_id, device_id, removed_at IS NOT NULL, last_seen_at FROM devices WHERE token_hash = $1",
    )
    .bind(&token_hash[..])
    .fetch_optional(pool)
    .await?;
    row.map(|(user_id, id, removed, last_seen_at)| {
        Ok(TokenOwner {
            user_id: UserId::from(user_id),
            device_id: device_id(id)?,
            removed,
            last_seen_at,
        })
    })
    .transpose()
}

/// The current token hash of each of `devices` (`None` for a removed device; devices
/// not in the database are left out), in one query.
pub async fn current_tokens(
    pool: &PgPool,
    devices: &[DeviceRef],
) -> Result<HashMap<DeviceRef, Option<[u8; 32]>>, sqlx::Error> {
    let (users, ids) = super::device_columns(devices);
    let rows: Vec<(Uuid, i32, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT d.user_id, d.device_id, d.token_hash, d.removed_at IS NOT NULL
         FROM unnest($1::uuid[], $2::int4[]) AS w (user_id, device_id)
         JOIN devices d ON d.user_id = w.user_id AND d.device_id = w.device_id",
    )
    .bind(&users)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(user, device, hash, removed)| {
            let device = DeviceRef::new(UserId::from(user), device_id(device)?);
            let hash = (!removed)
                .then(|| <[u8; 32]>::try_from(hash.as_slice()).ok())
                .flatten();
            Ok((device, hash))
        })
        .collect()
}

/// Records that a device was seen now.
pub async fn touch(pool: &PgPool, user_id: UserId, device_id: DeviceId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET last_seen_at = now() WHERE user_id = $1 AND device_id = $2")
        .bind(user_id.as_uuid())
        .bind(device_id.as_i32())
        .execute(pool)
        .await?;
    Ok(())
}

/// The outcome of registering a new device.
#[derive(Debug)]
pub enum Registration {
    /// The device was registered with this ID.
    Registered(DeviceId),
    /// The user is at the device limit; nothing changed.
    LimitReached { count: u32 },
    /// The device to replace is not an active device of the user; nothing changed.
    ReplaceTargetNotFound,
    /// The user was deactivated while logging in; nothing changed.
    AccountDeactivated,
}

/// Registers a new device for `user_id` with a server-assigned ID, optionally removing
/// `replace` in the same transaction.
///
/// The user row is locked first, so concurrent logins of one user take turns: the limit
/// check and the ID assignment see each other's results, IDs are distinct and monotonic,
/// and a removed device's ID is never handed out again (the counter only grows).
pub async fn register(
    pool: &PgPool,
    user_id: UserId,
    token_hash: &[u8; 32],
    device_name: Option<&str>,
    replace: Option<DeviceId>,
    limit: u32,
) -> Result<Registration, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (next_id, deactivated): (i32, bool) = sqlx::query_as(
        "SELECT next_device_id, deactivated_at IS NOT NULL FROM users WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user_id.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    // The password checked out before the account was deactivated; the lock says so now.
    if deactivated {
        return Ok(Registration::AccountDeactivated);
    }

    if let Some(replace) = replace {
        if !remove_in(&mut tx, user_id, replace).await? {
            return Ok(Registration::ReplaceTargetNotFound);
        }
    }

    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM devices WHERE user_id = $1 AND removed_at IS NULL",
    )
    .bind(user_id.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    if active >= i64::from(limit) {
        return Ok(Registration::LimitReached {
            count: u32::try_from(active).unwrap_or(u32::MAX),
        });
    }

    sqlx::query(
        "INSERT INTO devices (user_id, device_id, device_name, token_hash) VALUES ($1, $2, $3, $4)",
    )
    .bind(user_id.as_uuid())
    .bind(next_id)
    .bind(device_name)
    .bind(&token_hash[..])
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE users SET next_device_id = next_device_id + 1 WHERE user_id = $1")
        .bind(user_id.as_uuid())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Registration::Registered(device_id(next_id)?))
}

/// Gives an active device a new token, revoking its old one. `false` if no such device.
pub async fn replace_token(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    token_hash: &[u8; 32],
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE devices SET token_hash = $3, last_seen_at = now()
         WHERE user_id = $1 AND device_id = $2 AND removed_at IS NULL",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(&token_hash[..])
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

#[derive(sqlx::FromRow)]
struct OwnDeviceRow {
    device_id: i32,
    device_name: Option<String>,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    has_identity_keys: bool,
}

/// The user's active devices, by ascending ID.
pub async fn list_active(pool: &PgPool, user_id: UserId) -> Result<Vec<OwnDevice>, sqlx::Error> {
    let rows: Vec<OwnDeviceRow> = sqlx::query_as(
        "SELECT device_id, device_name, created_at, last_seen_at, has_identity_keys
         FROM devices WHERE user_id = $1 AND removed_at IS NULL
         ORDER BY device_id",
    )
    .bind(user_id.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(OwnDevice {
                device_id: device_id(row.device_id)?,
                device_name: row.device_name,
                created_at: row.created_at,
                last_seen_at: row.last_seen_at,
                has_identity_keys: row.has_identity_keys,
            })
        })
        .collect()
}

/// Removes an active device: its token stops working at once and its keys are deleted.
/// `false` if the user has no such active device.
pub async fn remove(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = remove_in(&mut tx, user_id, device_id).await?;
    tx.commit().await?;
    Ok(removed)
}

/// [`remove`] inside the caller's transaction.
pub(crate) async fn remove_in(
    conn: &mut PgConnection,
    user_id: UserId,
    device_id: DeviceId,
) -> Result<bool, sqlx::Error> {
    let marked = sqlx::query(
        "UPDATE devices SET removed_at = now(), has_identity_keys = false
         WHERE user_id = $1 AND device_id = $2 AND removed_at IS NULL",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .execute(&mut *conn)
    .await?;
    if marked.rows_affected() == 0 {
        return Ok(false);
    }
    // Its pending stream items will never be read; its keys leave the directory.
    for statement in [
        "DELETE FROM message_envelopes
         WHERE recipient_user_id = $1 AND recipient_device_id = $2 AND delivered_at IS NULL",
        "DELETE FROM sender_key_distributions
         WHERE recipient_user_id = $1 AND recipient_device_id = $2 AND delivered_at IS NULL",
        "DELETE FROM stream_events WHERE recipient_user_id = $1 AND recipient_device_id = $2",
    ] {
        sqlx::query(statement)
            .bind(user_id.as_uuid())
            .bind(device_id.as_i32())
            .execute(&mut *conn)
            .await?;
    }
    for table in [
        "device_identity_keys",
        "one_time_keys",
        "fallback_keys",
        "one_time_keys_low_notices",
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
        ))
        .bind(user_id.as_uuid())
        .bind(device_id.as_i32())
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}
