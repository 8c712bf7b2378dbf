//! Storing messages and their per-device envelopes.
//!
//! A send costs two round trips: [`prepare`] reads what the send is checked against (an
//! earlier message with this client ID, the device lists), and [`store`] writes the
//! message and all its envelopes in one statement, which is one transaction.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::{DeviceListMismatch, EnvelopeType};
use sqlx::PgPool;
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

/// What a send is checked against, read in one query.
#[derive(Debug)]
pub struct SendContext {
    /// The message this device sent earlier under the same client message ID.
    pub existing: Option<StoredMessage>,
    recipient_exists: bool,
    /// Reachable devices (active, identity keys published) of the recipient and sender.
    reachable: BTreeSet<DeviceRef>,
    /// Active devices (reachable or not) of the recipient and sender.
    active: BTreeSet<DeviceRef>,
    /// Removed devices of the recipient and sender.
    removed: BTreeSet<DeviceRef>,
}

#[derive(sqlx::FromRow)]
struct ContextRow {
    kind: i32,
    user_id: Option<Uuid>,
    device_id: Option<i32>,
    removed: Option<bool>,
    reachable: Option<bool>,
    message_id: Option<Uuid>,
    created_at: Option<DateTime<Utc>>,
    envelope_count: Option<i32>,
}

/// Reads an earlier message with this client ID, the device states of the recipient and
/// the sender, and whether the recipient exists, in one round trip.
pub async fn prepare(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
    recipient: UserId,
) -> Result<SendContext, sqlx::Error> {
    let rows: Vec<ContextRow> = sqlx::query_as(
        "SELECT 1 AS kind, d.user_id, d.device_id, d.removed_at IS NOT NULL AS removed,
                (d.removed_at IS NULL AND d.has_identity_keys) AS reachable,
                NULL::uuid AS message_id, NULL::timestamptz AS created_at, NULL::int4 AS envelope_count
         FROM devices d WHERE d.user_id IN ($1, $4)
         UNION ALL
         SELECT 2, NULL, NULL, NULL, NULL, message_id, created_at, envelope_count FROM messages
         WHERE sender_user_id = $1 AND sender_device_id = $2 AND client_message_id = $3
         UNION ALL
         SELECT 3, user_id, NULL, NULL, NULL, NULL, NULL, NULL FROM users WHERE user_id = $4",
    )
    .bind(sender.user_id.as_uuid())
    .bind(sender.device_id.as_i32())
    .bind(client_message_id)
    .bind(recipient.as_uuid())
    .fetch_all(pool)
    .await?;

    let mut context = SendContext {
        existing: None,
        recipient_exists: false,
        reachable: BTreeSet::new(),
        active: BTreeSet::new(),
        removed: BTreeSet::new(),
    };
    for row in rows {
        match (row.kind, row.user_id, row.device_id) {
            (1, Some(user_id), Some(id)) => {
                let device = DeviceRef {
                    user_id: UserId::from(user_id),
                    device_id: device_id(id)?,
                };
                if row.removed.unwrap_or(false) {
                    context.removed.insert(device);
                } else {
                    context.active.insert(device);
                    if row.reachable.unwrap_or(false) {
                        context.reachable.insert(device);
                    }
                }
            }
            (2, _, _) => {
                if let (Some(message_id), Some(created_at)) = (row.message_id, row.created_at) {
                    let envelope_count =
                        u32::try_from(row.envelope_count.unwrap_or(0)).unwrap_or(0);
                    context.existing = Some(StoredMessage {
                        message_id,
                        created_at,
                        envelope_count,
                    });
                }
            }
            (3, _, _) => context.recipient_exists = true,
            _ => {}
        }
    }
    Ok(context)
}

/// Why a send is refused before anything is written.
#[derive(Debug)]
pub enum Refusal {
    /// No such recipient user.
    RecipientNotFound,
    /// The recipient has no device that can receive.
    RecipientUnreachable,
    /// The envelope set does not match the device lists.
    Mismatch(DeviceListMismatch),
}

impl SendContext {
    /// Checks a V2 envelope set: exactly the reachable devices of the recipient and of the
    /// sender, less the sending device.
    pub fn check_v2(
        &self,
        sender: DeviceRef,
        recipient: UserId,
        requested: &BTreeSet<DeviceRef>,
    ) -> Result<(), Refusal> {
        let expected: BTreeSet<DeviceRef> = self
            .reachable
            .iter()
            .filter(|device| **device != sender)
            .copied()
            .collect();
        self.check_recipient(recipient, &expected)?;
        let mismatch = compare(&expected, &self.removed, requested);
        if mismatch.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Mismatch(mismatch))
        }
    }

    /// The devices a V1 message goes to: every active device of the recipient (V1 knows
    /// nothing of devices or of their keys), less the sending device.
    pub fn v1_targets(
        &self,
        sender: DeviceRef,
        recipient: UserId,
    ) -> Result<Vec<DeviceRef>, Refusal> {
        let targets: BTreeSet<DeviceRef> = self
            .active
            .iter()
            .filter(|device| device.user_id == recipient && **device != sender)
            .copied()
            .collect();
        self.check_recipient(recipient, &targets)?;
        Ok(targets.into_iter().collect())
    }

    fn check_recipient(
        &self,
        recipient: UserId,
        targets: &BTreeSet<DeviceRef>,
    ) -> Result<(), Refusal> {
        if !self.recipient_exists {
            return Err(Refusal::RecipientNotFound);
        }
        if !targets.iter().any(|device| device.user_id == recipient) {
            return Err(Refusal::RecipientUnreachable);
        }
        Ok(())
    }
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

/// The outcome of [`store`].
#[derive(Debug)]
pub enum StoreOutcome {
    /// Stored; each envelope's stream position.
    Stored {
        message: StoredMessage,
        placed: Vec<Placed>,
    },
    /// This client message ID was stored meanwhile by a racing retry: nothing written.
    Duplicate,
    /// These devices were removed after [`prepare`] read them: nothing written.
    Stale(Vec<DeviceRef>),
}

#[derive(sqlx::FromRow)]
struct PlacedRow {
    user_id: Uuid,
    device_id: i32,
    seq: i64,
    created_at: Option<DateTime<Utc>>,
}

/// Writes a message and its envelopes in one statement (so one transaction):
///
/// 1. lock the target devices' rows in (user, device) order, so concurrent sends never
///    deadlock, skipping devices removed meanwhile;
/// 2. take the next stream sequence number of each (under the lock, so in commit order);
/// 3. insert the message, only if every device was locked, and only if its client ID is
///    new (a racing retry that committed first wins);
/// 4. insert every envelope from arrays (one statement, not one per envelope).
///
/// When step 3 inserts nothing, the sequence numbers taken in step 2 stay unused: a
/// device's stream may skip a number in that rare race, which readers handle.
pub async fn store(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
    recipient: UserId,
    legacy_envelope: Option<&[u8]>,
    envelopes: &[NewEnvelope],
) -> Result<StoreOutcome, sqlx::Error> {
    let message_id = Uuid::now_v7();
    let users: Vec<Uuid> = envelopes
        .iter()
        .map(|e| e.device.user_id.as_uuid())
        .collect();
    let ids: Vec<i32> = envelopes
        .iter()
        .map(|e| e.device.device_id.as_i32())
        .collect();
    let types: Vec<i16> = envelopes.iter().map(|e| e.envelope_type.as_i16()).collect();
    let ciphertexts: Vec<Option<&[u8]>> =
        envelopes.iter().map(|e| e.ciphertext.as_deref()).collect();
    let count = i32::try_from(envelopes.len()).unwrap_or(i32::MAX);
    let protocol_version: i16 = if legacy_envelope.is_some() { 1 } else { 2 };

    let rows: Vec<PlacedRow> = sqlx::query_as(
        "WITH targets AS (
             SELECT * FROM unnest($9::uuid[], $10::int4[], $11::int2[], $12::bytea[])
                 AS t (user_id, device_id, envelope_type, ciphertext)
         ), locked AS (
             SELECT d.user_id, d.device_id FROM devices d
             JOIN targets t ON d.user_id = t.user_id AND d.device_id = t.device_id
             WHERE d.removed_at IS NULL
             ORDER BY d.user_id, d.device_id
             FOR UPDATE OF d
         ), bumped AS (
             UPDATE devices d SET next_stream_seq = d.next_stream_seq + 1
             FROM locked l WHERE d.user_id = l.user_id AND d.device_id = l.device_id
             RETURNING d.user_id, d.device_id, d.next_stream_seq - 1 AS seq
         ), m AS (
             INSERT INTO messages (message_id, sender_user_id, sender_device_id, client_message_id,
                                   recipient_user_id, protocol_version, encrypted_envelope, envelope_count)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8
             WHERE (SELECT count(*) FROM bumped) = $8
             ON CONFLICT (sender_user_id, sender_device_id, client_message_id) DO NOTHING
             RETURNING message_id, created_at
         ), e AS (
             INSERT INTO message_envelopes (recipient_user_id, recipient_device_id, seq, message_id,
                                            envelope_type, ciphertext, created_at)
             SELECT t.user_id, t.device_id, b.seq, m.message_id, t.envelope_type, t.ciphertext, m.created_at
             FROM m, targets t JOIN bumped b ON b.user_id = t.user_id AND b.device_id = t.device_id
         )
         SELECT b.user_id, b.device_id, b.seq, m.created_at FROM bumped b LEFT JOIN m ON true",
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
    .bind(&types)
    .bind(&ciphertexts)
    .fetch_all(pool)
    .await?;

    let mut placed = Vec::with_capacity(rows.len());
    let mut created_at = None;
    for row in rows {
        created_at = created_at.or(row.created_at);
        let device = DeviceRef {
            user_id: UserId::from(row.user_id),
            device_id: device_id(row.device_id)?,
        };
        placed.push(Placed {
            device,
            seq: u64::try_from(row.seq).unwrap_or(0),
        });
    }
    if placed.len() != envelopes.len() {
        let locked: BTreeSet<DeviceRef> = placed.iter().map(|p| p.device).collect();
        return Ok(StoreOutcome::Stale(
            envelopes
                .iter()
                .map(|e| e.device)
                .filter(|d| !locked.contains(d))
                .collect(),
        ));
    }
    Ok(match created_at {
        Some(created_at) => StoreOutcome::Stored {
            message: StoredMessage {
                message_id,
                created_at,
                envelope_count: u32::try_from(count).unwrap_or(0),
            },
            placed,
        },
        None => StoreOutcome::Duplicate,
    })
}

/// The message a device sent under a client message ID, if any.
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

    #[test]
    fn v2_expects_every_reachable_device_but_the_sender() {
        let sender = d(1, 1);
        let context = SendContext {
            existing: None,
            recipient_exists: true,
            reachable: BTreeSet::from([d(1, 1), d(1, 2), d(2, 1)]),
            active: BTreeSet::from([d(1, 1), d(1, 2), d(2, 1), d(2, 2)]),
            removed: BTreeSet::new(),
        };
        let recipient = d(2, 1).user_id;
        assert!(
            context
                .check_v2(sender, recipient, &BTreeSet::from([d(1, 2), d(2, 1)]))
                .is_ok()
        );
        assert!(matches!(
            context.check_v2(sender, recipient, &BTreeSet::from([d(2, 1)])),
            Err(Refusal::Mismatch(_))
        ));
        // V1 reaches every active device of the recipient, keys or not.
        assert_eq!(
            context.v1_targets(sender, recipient).unwrap(),
            vec![d(2, 1), d(2, 2)]
        );
    }
}
