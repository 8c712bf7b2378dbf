//! Storing messages and their per-device envelopes.
//!
//! A send is one statement ([`SEND_SQL`]): one round trip, one transaction.

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

/// What to send: V2 envelopes (decoded), or a V1 ciphertext for every device.
#[derive(Debug, Clone, Copy)]
pub enum SendRequest<'a> {
    V2(&'a [NewEnvelope]),
    V1(&'a [u8]),
}

/// The outcome of [`send`].
#[derive(Debug)]
pub enum SendOutcome {
    /// Stored; each envelope's stream position.
    Stored {
        message: StoredMessage,
        placed: Vec<Placed>,
    },
    /// This device sent a message under this client ID before: its answer stands.
    Existing(StoredMessage),
    /// Refused; nothing written.
    Refused(Refusal),
}

#[derive(sqlx::FromRow)]
struct SendRow {
    kind: i32,
    user_id: Option<Uuid>,
    device_id: Option<i32>,
    removed: Option<bool>,
    reachable: Option<bool>,
    seq: Option<i64>,
    message_id: Option<Uuid>,
    created_at: Option<DateTime<Utc>>,
    envelope_count: Option<i32>,
}

/// The send in one statement, so one round trip and one transaction. It:
///
/// 1. reads an earlier message under this client ID, and the device states of the
///    recipient and the sender;
/// 2. checks the envelope set against them (V2: exactly the reachable devices of both,
///    less the sending device) or derives it (V1: every active device of the recipient);
/// 3. only then locks the target devices' rows in (user, device) order, so concurrent
///    sends never deadlock, skipping devices removed meanwhile, and takes each one's next
///    stream sequence number (under the lock, so in commit order per device);
/// 4. inserts the message, only if every target was locked and its client ID is still
///    new, and all envelopes from arrays (not a statement per envelope);
/// 5. returns what it read and what it placed, from which [`send`] tells the outcome.
///
/// When step 4 inserts nothing after step 3 ran (a racing removal or retry), the
/// sequence numbers taken stay unused: a stream may skip a number then; readers cope.
const SEND_SQL: &str = "
WITH existing AS (
    SELECT message_id, created_at, envelope_count FROM messages
    WHERE sender_user_id = $2 AND sender_device_id = $3 AND client_message_id = $4
), devs AS (
    SELECT d.user_id, d.device_id, d.removed_at IS NOT NULL AS removed,
           (d.removed_at IS NULL AND EXISTS (
               SELECT 1 FROM device_identity_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id
           )) AS reachable
    FROM devices d WHERE d.user_id IN ($2, $5)
), req AS (
    SELECT t.user_id, t.device_id, t.envelope_type, t.ciphertext
    FROM unnest($8::uuid[], $9::int4[], $10::int2[], $11::bytea[]) AS t (user_id, device_id, envelope_type, ciphertext)
    WHERE $6 = 2
    UNION ALL
    SELECT user_id, device_id, 2::int2, NULL::bytea FROM devs
    WHERE $6 = 1 AND NOT removed AND user_id = $5 AND NOT (user_id = $2 AND device_id = $3)
), expected AS (
    SELECT user_id, device_id FROM devs
    WHERE $6 = 2 AND reachable AND NOT (user_id = $2 AND device_id = $3)
), go AS (
    SELECT NOT EXISTS (SELECT 1 FROM existing)
       AND EXISTS (SELECT 1 FROM req WHERE user_id = $5)
       AND ($6 = 1 OR (
               NOT EXISTS (SELECT user_id, device_id FROM expected EXCEPT SELECT user_id, device_id FROM req)
           AND NOT EXISTS (SELECT user_id, device_id FROM req EXCEPT SELECT user_id, device_id FROM expected)
       )) AS ok
), locked AS (
    SELECT d.user_id, d.device_id FROM devices d
    JOIN req t ON d.user_id = t.user_id AND d.device_id = t.device_id
    WHERE d.removed_at IS NULL AND (SELECT ok FROM go)
    ORDER BY d.user_id, d.device_id
    FOR UPDATE OF d
), bumped AS (
    UPDATE devices d SET next_stream_seq = d.next_stream_seq + 1
    FROM locked l WHERE d.user_id = l.user_id AND d.device_id = l.device_id
    RETURNING d.user_id, d.device_id, d.next_stream_seq - 1 AS seq
), m AS (
    INSERT INTO messages (message_id, sender_user_id, sender_device_id, client_message_id,
                          recipient_user_id, protocol_version, encrypted_envelope, envelope_count)
    SELECT $1, $2, $3, $4, $5, $6, $7, (SELECT count(*) FROM req)
    WHERE (SELECT count(*) FROM bumped) = (SELECT count(*) FROM req) AND (SELECT count(*) FROM req) > 0
    ON CONFLICT (sender_user_id, sender_device_id, client_message_id) DO NOTHING
    RETURNING message_id, created_at, envelope_count
), e AS (
    INSERT INTO message_envelopes (recipient_user_id, recipient_device_id, seq, message_id,
                                   envelope_type, ciphertext, created_at)
    SELECT t.user_id, t.device_id, b.seq, m.message_id, t.envelope_type, t.ciphertext, m.created_at
    FROM m, req t JOIN bumped b ON b.user_id = t.user_id AND b.device_id = t.device_id
)
SELECT 1 AS kind, user_id, device_id, removed, reachable,
       NULL::int8 AS seq, NULL::uuid AS message_id, NULL::timestamptz AS created_at, NULL::int4 AS envelope_count
FROM devs
UNION ALL
SELECT 2, NULL, NULL, NULL, NULL, NULL, message_id, created_at, envelope_count FROM existing
UNION ALL
SELECT 3, b.user_id, b.device_id, NULL, NULL, b.seq, m.message_id, m.created_at, m.envelope_count
FROM bumped b LEFT JOIN m ON true
UNION ALL
SELECT 4, user_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM users WHERE user_id = $5";

/// Sends a message: checks it against the device lists and stores it, in one statement
/// (see [`SEND_SQL`]).
pub async fn send(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
    recipient: UserId,
    request: SendRequest<'_>,
) -> Result<SendOutcome, sqlx::Error> {
    let message_id = Uuid::now_v7();
    let empty: &[NewEnvelope] = &[];
    let (version, legacy, envelopes): (i16, Option<&[u8]>, &[NewEnvelope]) = match request {
        SendRequest::V2(envelopes) => (2, None, envelopes),
        SendRequest::V1(ciphertext) => (1, Some(ciphertext), empty),
    };
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

    let rows: Vec<SendRow> = sqlx::query_as(SEND_SQL)
        .bind(message_id)
        .bind(sender.user_id.as_uuid())
        .bind(sender.device_id.as_i32())
        .bind(client_message_id)
        .bind(recipient.as_uuid())
        .bind(version)
        .bind(legacy)
        .bind(&users)
        .bind(&ids)
        .bind(&types)
        .bind(&ciphertexts)
        .fetch_all(pool)
        .await?;

    let mut context = SendContext {
        existing: None,
        recipient_exists: false,
        reachable: BTreeSet::new(),
        active: BTreeSet::new(),
        removed: BTreeSet::new(),
    };
    let mut placed = Vec::new();
    let mut stored = None;
    for row in rows {
        let device = match (row.user_id, row.device_id) {
            (Some(user_id), Some(id)) => Some(DeviceRef {
                user_id: UserId::from(user_id),
                device_id: device_id(id)?,
            }),
            _ => None,
        };
        let message = match (row.message_id, row.created_at) {
            (Some(message_id), Some(created_at)) => Some(StoredMessage {
                message_id,
                created_at,
                envelope_count: u32::try_from(row.envelope_count.unwrap_or(0)).unwrap_or(0),
            }),
            _ => None,
        };
        match (row.kind, device) {
            (1, Some(device)) => {
                if row.removed.unwrap_or(false) {
                    context.removed.insert(device);
                } else {
                    context.active.insert(device);
                    if row.reachable.unwrap_or(false) {
                        context.reachable.insert(device);
                    }
                }
            }
            (2, _) => context.existing = message,
            (3, Some(device)) => {
                placed.push(Placed {
                    device,
                    seq: u64::try_from(row.seq.unwrap_or(0)).unwrap_or(0),
                });
                stored = stored.or(message);
            }
            (4, _) => context.recipient_exists = true,
            _ => {}
        }
    }

    if let Some(existing) = context.existing {
        return Ok(SendOutcome::Existing(existing));
    }
    if let Some(message) = stored {
        return Ok(SendOutcome::Stored { message, placed });
    }
    // Nothing stored: say why.
    let targets: BTreeSet<DeviceRef> = match request {
        SendRequest::V2(envelopes) => {
            let requested = envelopes.iter().map(|e| e.device).collect();
            if let Err(refusal) = context.check_v2(sender, recipient, &requested) {
                return Ok(SendOutcome::Refused(refusal));
            }
            requested
        }
        SendRequest::V1(_) => match context.v1_targets(sender, recipient) {
            Ok(targets) => targets.into_iter().collect(),
            Err(refusal) => return Ok(SendOutcome::Refused(refusal)),
        },
    };
    let locked: BTreeSet<DeviceRef> = placed.iter().map(|p| p.device).collect();
    let stale: Vec<DeviceRef> = targets.difference(&locked).copied().collect();
    if !stale.is_empty() {
        // Removed after the statement's snapshot was taken.
        let mismatch = DeviceListMismatch {
            stale,
            ..DeviceListMismatch::default()
        };
        return Ok(SendOutcome::Refused(Refusal::Mismatch(mismatch)));
    }
    // Every check passed and every device was locked, yet nothing was inserted: a retry
    // with the same client ID committed first. Its answer stands.
    find_by_client_id(pool, sender, client_message_id)
        .await?
        .map(SendOutcome::Existing)
        .ok_or_else(|| sqlx::Error::Protocol("a conflicting message vanished".into()))
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
