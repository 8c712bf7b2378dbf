//! Storing messages and their per-device envelopes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::{DeviceListMismatch, EnvelopeType};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::device_id;

/// A stored message, as the send answer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub envelope_count: u32,
}

/// One envelope to store: its device, type and decoded ciphertext (`None` for V1 rows,
/// whose ciphertext is on the message).
#[derive(Debug, Clone)]
pub struct NewEnvelope {
    pub device: DeviceRef,
    pub envelope_type: EnvelopeType,
    pub ciphertext: Option<Vec<u8>>,
}

/// A stored envelope's place in its device's stream.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub device: DeviceRef,
    pub seq: u64,
}

/// The outcome of a send.
#[derive(Debug)]
pub enum SendOutcome {
    /// Stored; each envelope's stream position, in the order of the request.
    Stored {
        message: StoredMessage,
        placed: Vec<Placed>,
    },
    /// This client message ID was stored before (by a retry that won a race).
    Duplicate(StoredMessage),
    /// The envelope set does not match the device lists; nothing stored.
    Mismatch(DeviceListMismatch),
    /// No such recipient user.
    RecipientNotFound,
    /// The recipient has no device that can receive; nothing stored.
    RecipientUnreachable,
}

/// The message a device sent earlier under this client message ID, if any.
pub async fn find_by_client_id(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
) -> Result<Option<StoredMessage>, sqlx::Error> {
    let row: Option<(Uuid, DateTime<Utc>, i32)> = sqlx::query_as(
        "SELECT message_id, created_at, envelope_count FROM messages
         WHERE sender_user_id = $1 AND sender_device_id = $2 AND client_message_id = $3",
    )
    .bind(sender.user_id.as_uuid())
    .bind(sender.device_id.as_i32())
    .bind(client_message_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(message_id, created_at, count)| StoredMessage {
        message_id,
        created_at,
        envelope_count: u32::try_from(count).unwrap_or(0),
    }))
}

#[derive(sqlx::FromRow)]
struct DeviceState {
    user_id: Uuid,
    device_id: i32,
    removed: bool,
    reachable: bool,
}

/// The devices of some users: active and reachable (identity keys published), and removed.
async fn device_states(
    conn: &mut PgConnection,
    users: &[Uuid],
) -> Result<Vec<DeviceState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.user_id, d.device_id, d.removed_at IS NOT NULL AS removed,
                (d.removed_at IS NULL AND EXISTS (
                    SELECT 1 FROM device_identity_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id
                )) AS reachable
         FROM devices d WHERE d.user_id = ANY($1)",
    )
    .bind(users)
    .fetch_all(conn)
    .await
}

async fn user_exists(conn: &mut PgConnection, user_id: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)")
        .bind(user_id.as_uuid())
        .fetch_one(conn)
        .await
}

fn device_ref(user_id: Uuid, id: i32) -> Result<DeviceRef, sqlx::Error> {
    Ok(DeviceRef {
        user_id: UserId::from(user_id),
        device_id: device_id(id)?,
    })
}

/// Locks the devices' rows in a fixed order (so concurrent sends never deadlock) and takes
/// the next stream sequence number of each. Devices removed meanwhile are left out.
async fn take_stream_seqs(
    conn: &mut PgConnection,
    devices: &[DeviceRef],
) -> Result<BTreeMap<DeviceRef, u64>, sqlx::Error> {
    let users: Vec<Uuid> = devices
        .iter()
        .map(|device| device.user_id.as_uuid())
        .collect();
    let ids: Vec<i32> = devices
        .iter()
        .map(|device| device.device_id.as_i32())
        .collect();
    let rows: Vec<(Uuid, i32, i64)> = sqlx::query_as(
        "UPDATE devices d SET next_stream_seq = d.next_stream_seq + 1
         FROM (
             SELECT dd.user_id, dd.device_id FROM devices dd
             JOIN unnest($1::uuid[], $2::int4[]) AS w (user_id, device_id)
               ON dd.user_id = w.user_id AND dd.device_id = w.device_id
             WHERE dd.removed_at IS NULL
             ORDER BY dd.user_id, dd.device_id
             FOR UPDATE OF dd
         ) locked
         WHERE d.user_id = locked.user_id AND d.device_id = locked.device_id
         RETURNING d.user_id, d.device_id, d.next_stream_seq - 1",
    )
    .bind(&users)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(user_id, id, seq)| Ok((device_ref(user_id, id)?, u64::try_from(seq).unwrap_or(0))))
        .collect()
}

/// Inserts the message and its envelopes in one statement. `None` if the client message
/// ID was taken meanwhile (a concurrent retry committed first).
#[allow(clippy::too_many_arguments)]
async fn insert_message(
    conn: &mut PgConnection,
    sender: DeviceRef,
    client_message_id: &str,
    recipient: UserId,
    protocol_version: i16,
    legacy_envelope: Option<&[u8]>,
    envelopes: &[NewEnvelope],
    seqs: &BTreeMap<DeviceRef, u64>,
) -> Result<Option<StoredMessage>, sqlx::Error> {
    let message_id = Uuid::now_v7();
    let users: Vec<Uuid> = envelopes
        .iter()
        .map(|e| e.device.user_id.as_uuid())
        .collect();
    let ids: Vec<i32> = envelopes
        .iter()
        .map(|e| e.device.device_id.as_i32())
        .collect();
    let stream_seqs: Vec<i64> = envelopes
        .iter()
        .map(|e| {
            seqs.get(&e.device)
                .map_or(0, |seq| i64::try_from(*seq).unwrap_or(i64::MAX))
        })
        .collect();
    let types: Vec<i16> = envelopes.iter().map(|e| e.envelope_type.as_i16()).collect();
    let ciphertexts: Vec<Option<&[u8]>> =
        envelopes.iter().map(|e| e.ciphertext.as_deref()).collect();
    let count = i32::try_from(envelopes.len()).unwrap_or(i32::MAX);

    let row: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "WITH m AS (
             INSERT INTO messages (message_id, sender_user_id, sender_device_id, client_message_id,
                                   recipient_user_id, protocol_version, encrypted_envelope, envelope_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (sender_user_id, sender_device_id, client_message_id) DO NOTHING
             RETURNING message_id, created_at
         ), e AS (
             INSERT INTO message_envelopes (recipient_user_id, recipient_device_id, seq, message_id,
                                            envelope_type, ciphertext, created_at)
             SELECT v.user_id, v.device_id, v.seq, m.message_id, v.envelope_type, v.ciphertext, m.created_at
             FROM m, unnest($9::uuid[], $10::int4[], $11::int8[], $12::int2[], $13::bytea[])
                  AS v (user_id, device_id, seq, envelope_type, ciphertext)
         )
         SELECT created_at FROM m",
    )
    .bind(message_id)
    .bind(sender.user_id.as_uuid())
    .bind(sender.device_id.as_i32())
    .bind(client_message_id)
    .bind(recipient.as_uuid())
    .bind(protocol_version)
    .bind(legacy_envelope)
    .bind(count)
    .bind(&users)
    .bind(&ids)
    .bind(&stream_seqs)
    .bind(&types)
    .bind(&ciphertexts)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(created_at,)| StoredMessage {
        message_id,
        created_at,
        envelope_count: u32::try_from(envelopes.len()).unwrap_or(u32::MAX),
    }))
}

fn placed(envelopes: &[NewEnvelope], seqs: &BTreeMap<DeviceRef, u64>) -> Vec<Placed> {
    envelopes
        .iter()
        .filter_map(|e| {
            seqs.get(&e.device).map(|seq| Placed {
                device: e.device,
                seq: *seq,
            })
        })
        .collect()
}

/// Stores a V2 message: one envelope per device, which must be exactly the reachable
/// devices of the recipient and of the sender, less the sending device.
pub async fn store_v2(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
    recipient: UserId,
    envelopes: &[NewEnvelope],
) -> Result<SendOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let users: Vec<Uuid> = BTreeSet::from([recipient.as_uuid(), sender.user_id.as_uuid()])
        .into_iter()
        .collect();
    let states = device_states(&mut tx, &users).await?;

    let mut expected = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for state in &states {
        let device = device_ref(state.user_id, state.device_id)?;
        if state.reachable && device != sender {
            expected.insert(device);
        } else if state.removed {
            removed.insert(device);
        }
    }
    if !expected.iter().any(|device| device.user_id == recipient) {
        let exists = states
            .iter()
            .any(|state| state.user_id == recipient.as_uuid())
            || user_exists(&mut tx, recipient).await?;
        return Ok(if exists {
            SendOutcome::RecipientUnreachable
        } else {
            SendOutcome::RecipientNotFound
        });
    }

    let requested: BTreeSet<DeviceRef> = envelopes.iter().map(|e| e.device).collect();
    let mismatch = compare(&expected, &removed, &requested);
    if !mismatch.is_empty() {
        return Ok(SendOutcome::Mismatch(mismatch));
    }

    let devices: Vec<DeviceRef> = requested.into_iter().collect();
    let seqs = take_stream_seqs(&mut tx, &devices).await?;
    if seqs.len() != devices.len() {
        // Removed between the check and the lock: those devices are stale now.
        let stale = devices
            .into_iter()
            .filter(|device| !seqs.contains_key(device))
            .collect();
        return Ok(SendOutcome::Mismatch(DeviceListMismatch {
            stale,
            ..DeviceListMismatch::default()
        }));
    }

    match insert_message(
        &mut tx,
        sender,
        client_message_id,
        recipient,
        2,
        None,
        envelopes,
        &seqs,
    )
    .await?
    {
        Some(message) => {
            tx.commit().await?;
            Ok(SendOutcome::Stored {
                placed: placed(envelopes, &seqs),
                message,
            })
        }
        None => {
            drop(tx);
            duplicate(pool, sender, client_message_id).await
        }
    }
}

async fn duplicate(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
) -> Result<SendOutcome, sqlx::Error> {
    find_by_client_id(pool, sender, client_message_id)
        .await?
        .map(SendOutcome::Duplicate)
        .ok_or_else(|| sqlx::Error::Protocol("a conflicting message vanished".into()))
}

/// What is wrong with a requested envelope set, all at once.
pub fn compare(
    expected: &BTreeSet<DeviceRef>,
    removed: &BTreeSet<DeviceRef>,
    requested: &BTreeSet<DeviceRef>,
) -> DeviceListMismatch {
    let missing = expected.difference(requested).copied().collect();
    let (stale, extra) = requested
        .difference(expected)
        .copied()
        .partition(|device| removed.contains(device));
    DeviceListMismatch {
        missing,
        extra,
        stale,
    }
}

/// Stores a V1 message: one ciphertext on the message (the legacy column), and a stream
/// row for every active device of the recipient.
pub async fn store_v1(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
    recipient: UserId,
    ciphertext: &[u8],
) -> Result<SendOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let states = device_states(&mut tx, &[recipient.as_uuid()]).await?;
    let mut devices: Vec<DeviceRef> = Vec::new();
    for state in states.iter().filter(|state| !state.removed) {
        let device = device_ref(state.user_id, state.device_id)?;
        if device != sender {
            devices.push(device);
        }
    }
    if devices.is_empty() {
        let exists = !states.is_empty() || user_exists(&mut tx, recipient).await?;
        return Ok(if exists {
            SendOutcome::RecipientUnreachable
        } else {
            SendOutcome::RecipientNotFound
        });
    }
    let seqs = take_stream_seqs(&mut tx, &devices).await?;
    let envelopes: Vec<NewEnvelope> = seqs
        .keys()
        .map(|device| NewEnvelope {
            device: *device,
            envelope_type: EnvelopeType::Legacy,
            ciphertext: None,
        })
        .collect();
    if envelopes.is_empty() {
        return Ok(SendOutcome::RecipientUnreachable);
    }
    match insert_message(
        &mut tx,
        sender,
        client_message_id,
        recipient,
        1,
        Some(ciphertext),
        &envelopes,
        &seqs,
    )
    .await?
    {
        Some(message) => {
            tx.commit().await?;
            Ok(SendOutcome::Stored {
                placed: placed(&envelopes, &seqs),
                message,
            })
        }
        None => {
            drop(tx);
            duplicate(pool, sender, client_message_id).await
        }
    }
}

#[cfg(test)]
mod tests {
    use courier_protocol::DeviceId;

    use super::*;

    fn d(user: u8, device: u32) -> DeviceRef {
        DeviceRef {
            user_id: UserId::from(Uuid::from_bytes([user; 16])),
            device_id: DeviceId::new(device).unwrap(),
        }
    }

    #[test]
    fn compare_reports_missing_extra_and_stale_together() {
        let expected = BTreeSet::from([d(1, 1), d(1, 2), d(2, 1)]);
        let removed = BTreeSet::from([d(1, 3)]);
        let requested = BTreeSet::from([d(1, 1), d(1, 3), d(2, 9)]);
        let mismatch = compare(&expected, &removed, &requested);
        assert_eq!(mismatch.missing, vec![d(1, 2), d(2, 1)]);
        assert_eq!(mismatch.stale, vec![d(1, 3)]);
        assert_eq!(mismatch.extra, vec![d(2, 9)]);
        assert!(compare(&expected, &removed, &expected).is_empty());
    }
}
