//! The key directory: identity keys, one-time keys, fallback keys, claims, and the
//! notice a device gets when claims leave it few one-time keys.

use std::collections::{HashMap, HashSet};

use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::stream::StreamItem;
use courier_protocol::limits::ONE_TIME_KEYS_LOW_THRESHOLD;
use courier_protocol::{DeviceId, UserId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::device_id;

/// A device's identity keys as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentityKeys {
    pub curve25519: [u8; 32],
    pub ed25519: [u8; 32],
    pub signature: [u8; 64],
}

/// A Curve25519 key whose signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    pub key_id: String,
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

fn fixed<const N: usize>(bytes: Vec<u8>) -> Result<[u8; N], sqlx::Error> {
    // The schema's CHECK constraints guarantee the lengths; a mismatch is corruption.
    bytes
        .try_into()
        .map_err(|_| sqlx::Error::Decode("stored key has the wrong length".into()))
}

/// Identity keys as stored.
#[derive(sqlx::FromRow)]
struct IdentityRow {
    device_id: i32,
    curve25519_key: Vec<u8>,
    ed25519_key: Vec<u8>,
    signature: Vec<u8>,
}

impl IdentityRow {
    fn into_keys(self) -> Result<(DeviceId, StoredIdentityKeys), sqlx::Error> {
        let keys = StoredIdentityKeys {
            curve25519: fixed(self.curve25519_key)?,
            ed25519: fixed(self.ed25519_key)?,
            signature: fixed(self.signature)?,
        };
        Ok((device_id(self.device_id)?, keys))
    }
}

/// The identity keys a device published, if any.
pub async fn identity_keys(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
) -> Result<Option<StoredIdentityKeys>, sqlx::Error> {
    let row: Option<IdentityRow> = sqlx::query_as(
        "SELECT device_id, curve25519_key, ed25519_key, signature
         FROM device_identity_keys WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(IdentityRow::into_keys)
        .transpose()?
        .map(|(_, keys)| keys))
}

/// The outcome of publishing identity keys.
#[derive(Debug, PartialEq, Eq)]
pub enum IdentityPublish {
    /// Stored for the first time.
    Created,
    /// The same keys were already stored.
    Unchanged,
    /// Different keys are stored; nothing changed.
    Conflict,
}

/// Stores a device's identity keys once; a device's identity never changes.
pub async fn publish_identity_keys(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    keys: &StoredIdentityKeys,
) -> Result<IdentityPublish, sqlx::Error> {
    // One statement: the keys, and the device's flag that makes it reachable.
    let inserted = sqlx::query(
        "WITH inserted AS (
             INSERT INTO device_identity_keys (user_id, device_id, curve25519_key, ed25519_key, signature)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, device_id) DO NOTHING
             RETURNING user_id, device_id
         )
         UPDATE devices d SET has_identity_keys = true
         FROM inserted i WHERE d.user_id = i.user_id AND d.device_id = i.device_id",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(&keys.curve25519[..])
    .bind(&keys.ed25519[..])
    .bind(&keys.signature[..])
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(IdentityPublish::Created);
    }
    let stored = identity_keys(pool, user_id, device_id).await?;
    // Signatures may legitimately differ (Ed25519 signing is deterministic, but another
    // implementation may randomise); the identity is the pair of keys.
    Ok(match stored {
        Some(stored) if stored.curve25519 == keys.curve25519 && stored.ed25519 == keys.ed25519 => {
            IdentityPublish::Unchanged
        }
        _ => IdentityPublish::Conflict,
    })
}

/// The outcome of uploading one-time keys.
#[derive(Debug, PartialEq, Eq)]
pub enum OneTimeUpload {
    /// Stored (re-uploads of known key IDs with the same key are no-ops); the device now
    /// has `unclaimed` keys.
    Stored { unclaimed: u32 },
    /// These key IDs are stored with a different key; nothing changed.
    Conflict(Vec<String>),
    /// The upload would leave more than `max` unclaimed keys; nothing changed.
    LimitReached { unclaimed: u32 },
}

/// Stores a batch of verified one-time keys in one transaction; one that leaves the device
/// with at least [`ONE_TIME_KEYS_LOW_THRESHOLD`] unclaimed keys re-arms its
/// `oneTimeKeysLow` notice.
pub async fn upload_one_time_keys(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    keys: &[VerifiedKey],
    max_unclaimed: usize,
) -> Result<OneTimeUpload, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Uploads of one device take turns, so the count check below sees a settled count.
    sqlx::query("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2 FOR UPDATE")
        .bind(user_id.as_uuid())
        .bind(device_id.as_i32())
        .execute(&mut *tx)
        .await?;

    let key_ids: Vec<&str> = keys.iter().map(|key| key.key_id.as_str()).collect();
    let existing: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, public_key FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = ANY($3)",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(&key_ids)
    .fetch_all(&mut *tx)
    .await?;
    let existing: HashMap<String, Vec<u8>> = existing.into_iter().collect();
    let conflicts: Vec<String> = keys
        .iter()
        .filter(|key| {
            existing
                .get(&key.key_id)
                .is_some_and(|stored| stored[..] != key.public_key[..])
        })
        .map(|key| key.key_id.clone())
        .collect();
    if !conflicts.is_empty() {
        return Ok(OneTimeUpload::Conflict(conflicts));
    }

    let public_keys: Vec<&[u8]> = keys.iter().map(|key| &key.public_key[..]).collect();
    let signatures: Vec<&[u8]> = keys.iter().map(|key| &key.signature[..]).collect();
    sqlx::query(
        "INSERT INTO one_time_keys (user_id, device_id, key_id, public_key, signature)
         SELECT $1, $2, k.key_id, k.public_key, k.signature
         FROM unnest($3::text[], $4::bytea[], $5::bytea[]) AS k (key_id, public_key, signature)
         ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(&key_ids)
    .bind(&public_keys)
    .bind(&signatures)
    .execute(&mut *tx)
    .await?;

    let unclaimed = count_unclaimed(&mut tx, user_id, device_id).await?;
    if unclaimed as usize > max_unclaimed {
        return Ok(OneTimeUpload::LimitReached {
            unclaimed: unclaimed - u32::try_from(keys.len()).unwrap_or(0),
        });
    }
    if unclaimed >= ONE_TIME_KEYS_LOW_THRESHOLD {
        // Back up: the next claim that takes the device below the threshold tells it
        // again. Under the device row lock, as claims decide (see `claim`).
        sqlx::query("DELETE FROM one_time_keys_low_notices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id.as_uuid())
            .bind(device_id.as_i32())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(OneTimeUpload::Stored { unclaimed })
}

async fn count_unclaimed(
    conn: &mut PgConnection,
    user_id: UserId,
    device_id: DeviceId,
) -> Result<u32, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND claimed_at IS NULL",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .fetch_one(conn)
    .await?;
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// Sets (or replaces) a device's fallback key.
pub async fn set_fallback_key(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    key: &VerifiedKey,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO fallback_keys (user_id, device_id, key_id, public_key, signature) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, device_id) DO UPDATE
         SET key_id = EXCLUDED.key_id, public_key = EXCLUDED.public_key, signature = EXCLUDED.signature, uploaded_at = now()",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(&key.key_id)
    .bind(&key.public_key[..])
    .bind(&key.signature[..])
    .execute(pool)
    .await?;
    Ok(())
}

/// Unclaimed one-time keys and the fallback key ID of a device.
pub async fn key_counts(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
) -> Result<(u32, Option<String>), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let unclaimed = count_unclaimed(&mut conn, user_id, device_id).await?;
    let fallback: Option<String> = sqlx::query_scalar(
        "SELECT key_id FROM fallback_keys WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .fetch_optional(&mut *conn)
    .await?;
    Ok((unclaimed, fallback))
}

/// A user's reachable devices (active, with identity keys), by ascending ID.
pub async fn directory(
    pool: &PgPool,
    user_id: UserId,
) -> Result<Vec<(DeviceId, StoredIdentityKeys)>, sqlx::Error> {
    let rows: Vec<IdentityRow> = sqlx::query_as(
        "SELECT k.device_id, k.curve25519_key, k.ed25519_key, k.signature
         FROM device_identity_keys k
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
         WHERE k.user_id = $1 AND d.removed_at IS NULL
         ORDER BY k.device_id",
    )
    .bind(user_id.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(IdentityRow::into_keys).collect()
}

/// A claimed key as the claim queries return it.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    user_id: Uuid,
    device_id: i32,
    key_id: String,
    public_key: Vec<u8>,
    signature: Vec<u8>,
}

impl ClaimedRow {
    fn into_claimed(self, fallback: bool) -> Result<Claimed, sqlx::Error> {
        Ok(Claimed {
            device: DeviceRef {
                user_id: UserId::from(self.user_id),
                device_id: device_id(self.device_id)?,
            },
            key: VerifiedKey {
                key_id: self.key_id,
                public_key: fixed(self.public_key)?,
                signature: fixed(self.signature)?,
            },
            fallback,
        })
    }
}

/// A key handed out by [`claim`].
#[derive(Debug, Clone)]
pub struct Claimed {
    pub device: DeviceRef,
    pub key: VerifiedKey,
    pub fallback: bool,
}

/// What [`claim`] did.
#[derive(Debug)]
pub struct ClaimOutcome {
    /// The keys handed out, by device.
    pub claimed: Vec<Claimed>,
    /// The devices that had neither a one-time nor a fallback key.
    pub unavailable: Vec<DeviceRef>,
    /// `oneTimeKeysLow` items stored for devices this claim took below
    /// [`ONE_TIME_KEYS_LOW_THRESHOLD`], to deliver after the commit.
    pub notices: Vec<(DeviceRef, StreamItem)>,
}

/// Claims one key for each device: for `one_time` devices an unclaimed one-time key if it
/// has one (marked claimed, so never handed out again), else its fallback key; for
/// `fallback_first` devices (claimed too often) its fallback key, else a one-time key.
/// Returns the claimed keys, the devices that had neither, and the notices for devices
/// whose one-time keys this claim took below [`ONE_TIME_KEYS_LOW_THRESHOLD`].
///
/// One transaction. Lock order (the same as every other writer of a device's keys, so
/// concurrent claims, uploads, removals and sends never deadlock): first the named
/// devices' rows (`devices ... FOR UPDATE`, in (user, device) order, as a send locks its
/// recipients), then their one-time key rows, then their `one_time_keys_low_notices` rows,
/// then the stream (`numbered_stream_items!` takes the same device rows again). Uploads
/// and removals lock the one device row first too. Holding the device rows, claims of one
/// device take turns, so each counts the keys left after every earlier claim has
/// committed: the claim that crosses the threshold is the one that sees it crossed, and
/// the notice row's primary key is inserted once however many claims race.
pub async fn claim(
    pool: &PgPool,
    one_time: &[&DeviceRef],
    fallback_first: &[&DeviceRef],
) -> Result<ClaimOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_devices(&mut tx, one_time.iter().chain(fallback_first).copied()).await?;
    let mut claimed = Vec::with_capacity(one_time.len() + fallback_first.len());
    let mut served = HashSet::with_capacity(one_time.len() + fallback_first.len());
    for claim in claim_one_time(&mut tx, one_time).await? {
        served.insert(claim.device);
        claimed.push(claim);
    }
    let rest: Vec<&DeviceRef> = one_time
        .iter()
        .chain(fallback_first)
        .filter(|device| !served.contains(**device))
        .copied()
        .collect();
    for claim in claim_fallback(&mut tx, &rest).await? {
        served.insert(claim.device);
        claimed.push(claim);
    }
    // A device claimed too often that has no fallback key still gets a one-time key:
    // reachable beats keeping its one-time keys.
    let rest: Vec<&DeviceRef> = fallback_first
        .iter()
        .filter(|device| !served.contains(**device))
        .copied()
        .collect();
    for claim in claim_one_time(&mut tx, &rest).await? {
        served.insert(claim.device);
        claimed.push(claim);
    }

    let drawn: Vec<&DeviceRef> = claimed
        .iter()
        .filter(|claim| !claim.fallback)
        .map(|claim| &claim.device)
        .collect();
    let notices = notify_low(&mut tx, &drawn).await?;
    tx.commit().await?;

    let unavailable = one_time
        .iter()
        .chain(fallback_first)
        .filter(|device| !served.contains(**device))
        .map(|device| **device)
        .collect();
    claimed.sort_by_key(|claim| claim.device);
    Ok(ClaimOutcome {
        claimed,
        unavailable,
        notices,
    })
}

/// Locks the rows of these devices (`FOR UPDATE`, in (user, device) order).
async fn lock_devices(
    conn: &mut PgConnection,
    devices: impl Iterator<Item = &DeviceRef>,
) -> Result<(), sqlx::Error> {
    let mut devices: Vec<&DeviceRef> = devices.collect();
    if devices.is_empty() {
        return Ok(());
    }
    devices.sort();
    devices.dedup();
    let (user_ids, device_ids) = super::device_columns(devices);
    sqlx::query(
        "SELECT d.device_id
         FROM (SELECT * FROM unnest($1::uuid[], $2::int4[]) AS w (user_id, device_id)
               ORDER BY user_id, device_id) w
         CROSS JOIN LATERAL (
             SELECT d.device_id FROM devices d
             WHERE d.user_id = w.user_id AND d.device_id = w.device_id
             OFFSET 0 FOR UPDATE
         ) d",
    )
    .bind(&user_ids)
    .bind(&device_ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Of these devices (whose rows the caller holds locked), those now below
/// [`ONE_TIME_KEYS_LOW_THRESHOLD`] unclaimed one-time keys that have no outstanding
/// notice get one: a `one_time_keys_low_notices` row and a `oneTimeKeysLow` stream item.
async fn notify_low(
    conn: &mut PgConnection,
    devices: &[&DeviceRef],
) -> Result<Vec<(DeviceRef, StreamItem)>, sqlx::Error> {
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let (user_ids, device_ids) = super::device_columns(devices.iter().copied());
    let threshold = i64::from(ONE_TIME_KEYS_LOW_THRESHOLD);
    let crossed: Vec<(Uuid, i32, i32)> = sqlx::query_as(
        "INSERT INTO one_time_keys_low_notices (user_id, device_id, count)
         SELECT w.user_id, w.device_id, c.n::int4
         FROM unnest($1::uuid[], $2::int4[]) AS w (user_id, device_id)
         CROSS JOIN LATERAL (
             SELECT count(*) AS n FROM one_time_keys o
             WHERE o.user_id = w.user_id AND o.device_id = w.device_id AND o.claimed_at IS NULL
         ) c
         WHERE c.n < $3
         ORDER BY w.user_id, w.device_id
         ON CONFLICT (user_id, device_id) DO NOTHING
         RETURNING user_id, device_id, count",
    )
    .bind(&user_ids)
    .bind(&device_ids)
    .bind(threshold)
    .fetch_all(&mut *conn)
    .await?;
    let items = crossed
        .into_iter()
        .map(|(user, device, count)| {
            Ok((
                DeviceRef::new(UserId::from(user), device_id(device)?),
                StreamItem::OneTimeKeysLow {
                    seq: 0,
                    count: u32::try_from(count).unwrap_or(0),
                },
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    super::stream::append_to_devices(conn, &items).await
}

/// One unclaimed one-time key of each device that has one, marked claimed.
async fn claim_one_time(
    conn: &mut PgConnection,
    devices: &[&DeviceRef],
) -> Result<Vec<Claimed>, sqlx::Error> {
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let (user_ids, device_ids) = super::device_columns(devices.iter().copied());
    let one_time: Vec<ClaimedRow> = sqlx::query_as(
        "WITH wanted AS (
             SELECT * FROM unnest($1::uuid[], $2::int4[]) AS w (user_id, device_id)
         ), picked AS (
             SELECT k.user_id, k.device_id, k.key_id
             FROM wanted w
             CROSS JOIN LATERAL (
                 SELECT o.user_id, o.device_id, o.key_id
                 FROM one_time_keys o
                 WHERE o.user_id = w.user_id AND o.device_id = w.device_id AND o.claimed_at IS NULL
                 ORDER BY o.uploaded_at, o.key_id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED
             ) k
         )
         UPDATE one_time_keys o SET claimed_at = now()
         FROM picked p
         WHERE o.user_id = p.user_id AND o.device_id = p.device_id AND o.key_id = p.key_id
         RETURNING o.user_id, o.device_id, o.key_id, o.public_key, o.signature",
    )
    .bind(&user_ids)
    .bind(&device_ids)
    .fetch_all(&mut *conn)
    .await?;
    one_time
        .into_iter()
        .map(|row| row.into_claimed(false))
        .collect()
}

/// The fallback key of each device that has one.
async fn claim_fallback(
    conn: &mut PgConnection,
    devices: &[&DeviceRef],
) -> Result<Vec<Claimed>, sqlx::Error> {
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let (user_ids, device_ids) = super::device_columns(devices.iter().copied());
    let fallbacks: Vec<ClaimedRow> = sqlx::query_as(
        "SELECT f.user_id, f.device_id, f.key_id, f.public_key, f.signature
         FROM unnest($1::uuid[], $2::int4[]) AS w (user_id, device_id)
         JOIN fallback_keys f ON f.user_id = w.user_id AND f.device_id = w.device_id",
    )
    .bind(&user_ids)
    .bind(&device_ids)
    .fetch_all(&mut *conn)
    .await?;
    fallbacks
        .into_iter()
        .map(|row| row.into_claimed(true))
        .collect()
}
