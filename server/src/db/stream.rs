//! A device's stream: reading undelivered items in order, marking them delivered.

use chrono::{DateTime, Utc};
use courier_protocol::api::messages::EnvelopeType;
use courier_protocol::api::stream::Envelope;
use courier_protocol::keys::encode_base64;
use courier_protocol::{DeviceId, UserId};
use sqlx::PgPool;
use uuid::Uuid;

use super::device_id;
use crate::delivery::DeviceKey;

#[derive(sqlx::FromRow)]
struct EnvelopeRow {
    seq: i64,
    message_id: Uuid,
    sender_user_id: Uuid,
    sender_device_id: i32,
    protocol_version: i16,
    envelope_type: i16,
    ciphertext: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
    /// Only selected by the single-envelope lookup.
    #[sqlx(default)]
    delivered: bool,
}

impl EnvelopeRow {
    fn into_envelope(self) -> Result<Envelope, sqlx::Error> {
        let corrupt =
            |what: &str| sqlx::Error::Decode(format!("stored envelope has {what}").into());
        Ok(Envelope {
            seq: u64::try_from(self.seq).map_err(|_| corrupt("a negative seq"))?,
            message_id: self.message_id,
            sender_user_id: UserId::from(self.sender_user_id),
            sender_device_id: device_id(self.sender_device_id)?,
            protocol_version: u8::try_from(self.protocol_version)
                .map_err(|_| corrupt("a bad protocol version"))?,
            envelope_type: EnvelopeType::from_i16(self.envelope_type)
                .ok_or_else(|| corrupt("an unknown type"))?,
            ciphertext: encode_base64(self.ciphertext.as_deref().unwrap_or_default()),
            server_timestamp: self.created_at,
        })
    }
}

const ENVELOPE_COLUMNS: &str = "e.seq, e.message_id, m.sender_user_id, m.sender_device_id, m.protocol_version, \
     e.envelope_type, COALESCE(e.ciphertext, m.encrypted_envelope) AS ciphertext, m.created_at";

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Undelivered items of a device's stream after `after`, in order, at most `limit`.
pub async fn undelivered_after(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    after: u64,
    limit: i64,
) -> Result<Vec<Envelope>, sqlx::Error> {
    let rows: Vec<EnvelopeRow> = sqlx::query_as(&format!(
        "SELECT {ENVELOPE_COLUMNS}
         FROM message_envelopes e JOIN messages m ON m.message_id = e.message_id
         WHERE e.recipient_user_id = $1 AND e.recipient_device_id = $2 AND e.seq > $3 AND e.delivered_at IS NULL
         ORDER BY e.seq
         LIMIT $4"
    ))
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(seq_param(after))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(EnvelopeRow::into_envelope).collect()
}

/// The state of one message's envelope for one device.
#[derive(Debug)]
pub enum EnvelopeLookup {
    /// Not delivered yet: here it is.
    Pending(Envelope),
    /// Delivered; its ciphertext is gone.
    Delivered,
    /// No envelope of this message for this device.
    NotFound,
}

/// A device's envelope of one message.
pub async fn envelope_for_message(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    message_id: Uuid,
) -> Result<EnvelopeLookup, sqlx::Error> {
    let row: Option<EnvelopeRow> = sqlx::query_as(&format!(
        "SELECT {ENVELOPE_COLUMNS}, e.delivered
         FROM message_envelopes e JOIN messages m ON m.message_id = e.message_id
         WHERE e.message_id = $3 AND e.recipient_user_id = $1 AND e.recipient_device_id = $2"
    ))
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => EnvelopeLookup::NotFound,
        Some(row) if row.delivered => EnvelopeLookup::Delivered,
        Some(row) => EnvelopeLookup::Pending(row.into_envelope()?),
    })
}

/// The highest sequence number committed to a device's stream (0 if none).
pub async fn committed_seq(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
) -> Result<u64, sqlx::Error> {
    let next: Option<i64> = sqlx::query_scalar(
        "SELECT next_stream_seq FROM devices WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .fetch_optional(pool)
    .await?;
    Ok(next.map_or(0, |next| u64::try_from(next - 1).unwrap_or(0)))
}

/// Which items of a device an acknowledgement covers.
#[derive(Debug, Clone, Copy)]
pub enum AckRange {
    /// Every item with `seq` up to the given one.
    UpTo,
    /// Exactly the item with the given `seq`.
    Exactly,
}

/// Marks delivered, purging the ciphertext, the undelivered items each `(device, seq)`
/// entry covers (per `range`), in one statement. Returns how many items changed.
pub async fn mark_delivered(
    pool: &PgPool,
    entries: &[(DeviceKey, u64)],
    range: AckRange,
) -> Result<u64, sqlx::Error> {
    let users: Vec<Uuid> = entries
        .iter()
        .map(|((user, _), _)| user.as_uuid())
        .collect();
    let devices: Vec<i32> = entries
        .iter()
        .map(|((_, device), _)| device.as_i32())
        .collect();
    let seqs: Vec<i64> = entries.iter().map(|(_, seq)| seq_param(*seq)).collect();
    let comparison = match range {
        AckRange::UpTo => "<=",
        AckRange::Exactly => "=",
    };
    let done = sqlx::query(&format!(
        "UPDATE message_envelopes e SET delivered_at = now(), ciphertext = NULL
         FROM unnest($1::uuid[], $2::int4[], $3::int8[]) AS a (user_id, device_id, seq)
         WHERE e.recipient_user_id = a.user_id AND e.recipient_device_id = a.device_id
           AND e.seq {comparison} a.seq AND e.delivered_at IS NULL"
    ))
    .bind(&users)
    .bind(&devices)
    .bind(&seqs)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Marks one message's envelope for a device delivered. `None` if the device has no
/// envelope of that message; `Some(false)` if it was delivered already.
pub async fn mark_message_delivered(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    message_id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    let state: Option<bool> = sqlx::query_scalar(
        "WITH target AS (
             SELECT recipient_user_id, recipient_device_id, seq, delivered_at IS NULL AS pending
             FROM message_envelopes
             WHERE message_id = $3 AND recipient_user_id = $1 AND recipient_device_id = $2
         ), updated AS (
             UPDATE message_envelopes e SET delivered_at = now(), ciphertext = NULL
             FROM target t
             WHERE e.recipient_user_id = t.recipient_user_id AND e.recipient_device_id = t.recipient_device_id
               AND e.seq = t.seq AND t.pending
         )
         SELECT pending FROM target",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    Ok(state)
}
