//! A device's stream: reading undelivered items in order, appending receipts and
//! membership changes, marking items delivered (which sends delivered receipts).
//!
//! A device's stream lives in three tables that share its sequence
//! (`devices.next_stream_seq`): `message_envelopes` (one-to-one envelopes and group
//! message rows), `sender_key_distributions`, and `stream_events` (receipts, membership
//! changes; stored as the item's JSON).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_protocol::api::channels::{GroupMessage, SenderKeyDistribution};
use courier_protocol::api::messages::EnvelopeType;
use courier_protocol::api::receipts::{DeliveredReceipt, Delivery, MAX_DELIVERIES_PER_RECEIPT};
use courier_protocol::api::stream::{Envelope, StreamItem};
use courier_protocol::keys::encode_base64;
use courier_protocol::{DeviceId, UserId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::device_id;
use courier_protocol::api::keys::DeviceRef;

/// `message_envelopes.envelope_type` of a group message's per-device row.
pub const GROUP_ROW_TYPE: i16 = 3;

#[derive(sqlx::FromRow)]
struct EnvelopeRow {
    seq: i64,
    message_id: Uuid,
    sender_user_id: Uuid,
    sender_device_id: i32,
    client_message_id: String,
    protocol_version: i16,
    envelope_type: i16,
    ciphertext: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
    /// Only selected by the single-envelope lookup.
    #[sqlx(default)]
    delivered: bool,
}

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored stream item has {what}").into())
}

fn seq_of(seq: i64) -> Result<u64, sqlx::Error> {
    u64::try_from(seq).map_err(|_| corrupt("a negative seq"))
}

impl EnvelopeRow {
    fn into_envelope(self) -> Result<Envelope, sqlx::Error> {
        Ok(Envelope {
            seq: seq_of(self.seq)?,
            message_id: self.message_id,
            sender_user_id: UserId::from(self.sender_user_id),
            sender_device_id: device_id(self.sender_device_id)?,
            client_message_id: self.client_message_id,
            protocol_version: u8::try_from(self.protocol_version)
                .map_err(|_| corrupt("a bad protocol version"))?,
            envelope_type: EnvelopeType::from_i16(self.envelope_type)
                .ok_or_else(|| corrupt("an unknown type"))?,
            ciphertext: encode_base64(self.ciphertext.as_deref().unwrap_or_default()),
            server_timestamp: self.created_at,
        })
    }
}

const ENVELOPE_COLUMNS: &str = "e.seq, e.message_id, m.sender_user_id, m.sender_device_id, m.client_message_id, m.protocol_version, \
     e.envelope_type, COALESCE(e.ciphertext, m.encrypted_envelope) AS ciphertext, m.created_at";

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// One row of the three-table stream read; which columns are set depends on `kind`.
#[derive(sqlx::FromRow)]
struct ItemRow {
    /// 0: envelope, 1: group message, 2: sender key, 3: event.
    kind: i16,
    seq: i64,
    message_id: Option<Uuid>,
    sender_user_id: Option<Uuid>,
    sender_device_id: Option<i32>,
    /// Set for envelopes and group messages.
    client_message_id: Option<String>,
    protocol_version: Option<i16>,
    envelope_type: Option<i16>,
    ciphertext: Option<Vec<u8>>,
    created_at: Option<DateTime<Utc>>,
    channel_id: Option<Uuid>,
    session_id: Option<String>,
    body: Option<String>,
}

impl ItemRow {
    fn into_item(self) -> Result<StreamItem, sqlx::Error> {
        let seq = seq_of(self.seq)?;
        let missing = || corrupt("a missing column");
        let sender = || -> Result<(UserId, DeviceId), sqlx::Error> {
            Ok((
                UserId::from(self.sender_user_id.ok_or_else(missing)?),
                device_id(self.sender_device_id.ok_or_else(missing)?)?,
            ))
        };
        let ciphertext = encode_base64(self.ciphertext.as_deref().unwrap_or_default());
        Ok(match self.kind {
            0 => {
                let (sender_user_id, sender_device_id) = sender()?;
                StreamItem::Envelope(Envelope {
                    seq,
                    message_id: self.message_id.ok_or_else(missing)?,
                    sender_user_id,
                    sender_device_id,
                    client_message_id: self.client_message_id.ok_or_else(missing)?,
                    protocol_version: self
                        .protocol_version
                        .and_then(|v| u8::try_from(v).ok())
                        .ok_or_else(|| corrupt("a bad protocol version"))?,
                    envelope_type: self
                        .envelope_type
                        .and_then(EnvelopeType::from_i16)
                        .ok_or_else(|| corrupt("an unknown type"))?,
                    ciphertext,
                    server_timestamp: self.created_at.ok_or_else(missing)?,
                })
            }
            1 => {
                let (sender_user_id, sender_device_id) = sender()?;
                StreamItem::GroupMessage(GroupMessage {
                    seq,
                    message_id: self.message_id.ok_or_else(missing)?,
                    channel_id: self.channel_id.ok_or_else(missing)?,
                    sender_user_id,
                    sender_device_id,
                    client_message_id: self.client_message_id.ok_or_else(missing)?,
                    session_id: self.session_id.ok_or_else(missing)?,
                    ciphertext,
                    server_timestamp: self.created_at.ok_or_else(missing)?,
                })
            }
            2 => {
                let (sender_user_id, sender_device_id) = sender()?;
                StreamItem::SenderKey(SenderKeyDistribution {
                    seq,
                    channel_id: self.channel_id.ok_or_else(missing)?,
                    sender_user_id,
                    sender_device_id,
                    session_id: self.session_id.ok_or_else(missing)?,
                    envelope_type: self
                        .envelope_type
                        .and_then(EnvelopeType::from_i16)
                        .ok_or_else(|| corrupt("an unknown type"))?,
                    ciphertext,
                    server_timestamp: self.created_at.ok_or_else(missing)?,
                })
            }
            3 => {
                let mut item: StreamItem = serde_json::from_str(&self.body.ok_or_else(missing)?)
                    .map_err(|_| corrupt("an undecodable body"))?;
                item.set_seq(seq);
                item
            }
            _ => return Err(corrupt("an unknown kind")),
        })
    }
}

/// A page of a device's stream.
#[derive(Debug)]
pub struct StreamPage {
    /// The items, in stream order.
    pub items: Vec<StreamItem>,
    /// Whether the byte budget left out items that the item limit would have taken (so
    /// more follow even if the page holds fewer than the limit).
    pub cut_by_bytes: bool,
}

/// Undelivered items of a device's stream after `after`, in order: at most `limit`, and
/// no more than `max_bytes` of ciphertext and event bodies (at least one item, however
/// large), so a page of large envelopes is held in memory in bytes, not items. One query
/// over the three stream tables.
pub async fn undelivered_after(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    after: u64,
    limit: i64,
    max_bytes: i64,
) -> Result<StreamPage, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Bounded {
        #[sqlx(flatten)]
        row: ItemRow,
        /// Rows the item limit took, before the byte budget.
        candidates: i64,
    }
    // The running total of the rows before each one decides (so the first row always
    // fits); lengths come from the values' headers, without reading them.
    let rows: Vec<Bounded> = sqlx::query_as(
        "SELECT * FROM (
           SELECT u.*,
                  count(*) OVER () AS candidates,
                  COALESCE(sum(COALESCE(octet_length(u.ciphertext), octet_length(u.body), 0))
                      OVER (ORDER BY u.seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS bytes_before
           FROM (
        (SELECT CASE WHEN e.envelope_type = 3 THEN 1::int2 ELSE 0::int2 END AS kind, e.seq, e.message_id,
                 m.sender_user_id, m.sender_device_id, m.client_message_id, m.protocol_version, e.envelope_type,
                 COALESCE(e.ciphertext, m.encrypted_envelope) AS ciphertext, m.created_at,
                 m.channel_id, m.group_session_id AS session_id, NULL::text AS body
          FROM message_envelopes e JOIN messages m ON m.message_id = e.message_id
          WHERE e.recipient_user_id = $1 AND e.recipient_device_id = $2 AND e.delivered_at IS NULL
            AND e.seq > GREATEST($3, (SELECT COALESCE(max(f.delivered_through), 0) FROM device_delivery_floors f
                                      WHERE f.user_id = $1 AND f.device_id = $2))
          ORDER BY e.seq LIMIT $4)
         UNION ALL
         (SELECT 2::int2, s.seq, NULL, s.sender_user_id, s.sender_device_id, NULL, NULL, s.envelope_type,
                 s.ciphertext, s.created_at, s.channel_id, s.session_id, NULL
          FROM sender_key_distributions s
          WHERE s.recipient_user_id = $1 AND s.recipient_device_id = $2 AND s.seq > $3 AND s.delivered_at IS NULL
          ORDER BY s.seq LIMIT $4)
         UNION ALL
         (SELECT 3::int2, v.seq, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, v.body
          FROM stream_events v
          WHERE v.recipient_user_id = $1 AND v.recipient_device_id = $2 AND v.seq > $3
          ORDER BY v.seq LIMIT $4)
         ORDER BY seq LIMIT $4) u
         ) w
         WHERE w.bytes_before < $5
         ORDER BY w.seq",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(seq_param(after))
    .bind(limit)
    .bind(max_bytes)
    .fetch_all(pool)
    .await?;
    let candidates = rows.first().map_or(0, |row| row.candidates);
    let cut_by_bytes = usize::try_from(candidates).unwrap_or(usize::MAX) > rows.len();
    let items = rows
        .into_iter()
        .map(|bounded| bounded.row.into_item())
        .collect::<Result<_, _>>()?;
    Ok(StreamPage {
        items,
        cut_by_bytes,
    })
}

/// Undelivered items at exactly these stream positions, in one query over the three
/// stream tables (what another process signalled; positions already delivered or gone
/// are left out).
pub async fn items_at(
    pool: &PgPool,
    positions: &[(DeviceRef, u64)],
) -> Result<Vec<(DeviceRef, StreamItem)>, sqlx::Error> {
    let (users, devices) = super::device_columns(positions.iter().map(|(device, _)| device));
    let seqs: Vec<i64> = positions.iter().map(|(_, s)| seq_param(*s)).collect();
    #[derive(sqlx::FromRow)]
    struct Placed {
        user_id: Uuid,
        device_id: i32,
        #[sqlx(flatten)]
        row: ItemRow,
    }
    let rows: Vec<Placed> = sqlx::query_as(
        "WITH p AS (SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int8[]) AS p (user_id, device_id, seq))
         SELECT e.recipient_user_id AS user_id, e.recipient_device_id AS device_id,
                CASE WHEN e.envelope_type = 3 THEN 1::int2 ELSE 0::int2 END AS kind, e.seq, e.message_id,
                m.sender_user_id, m.sender_device_id, m.client_message_id, m.protocol_version, e.envelope_type,
                COALESCE(e.ciphertext, m.encrypted_envelope) AS ciphertext, m.created_at,
                m.channel_id, m.group_session_id AS session_id, NULL::text AS body
         FROM p JOIN message_envelopes e ON e.recipient_user_id = p.user_id
             AND e.recipient_device_id = p.device_id AND e.seq = p.seq AND e.delivered_at IS NULL
         JOIN messages m ON m.message_id = e.message_id
         UNION ALL
         SELECT s.recipient_user_id, s.recipient_device_id, 2::int2, s.seq, NULL, s.sender_user_id,
                s.sender_device_id, NULL, NULL, s.envelope_type, s.ciphertext, s.created_at, s.channel_id,
                s.session_id, NULL
         FROM p JOIN sender_key_distributions s ON s.recipient_user_id = p.user_id
             AND s.recipient_device_id = p.device_id AND s.seq = p.seq AND s.delivered_at IS NULL
         UNION ALL
         SELECT v.recipient_user_id, v.recipient_device_id, 3::int2, v.seq, NULL, NULL, NULL, NULL,
                NULL, NULL, NULL, NULL, NULL, NULL, v.body
         FROM p JOIN stream_events v ON v.recipient_user_id = p.user_id
             AND v.recipient_device_id = p.device_id AND v.seq = p.seq",
    )
    .bind(&users)
    .bind(&devices)
    .bind(&seqs)
    .fetch_all(pool)
    .await?;
    let mut items = rows
        .into_iter()
        .map(|placed| {
            Ok((
                DeviceRef::new(UserId::from(placed.user_id), device_id(placed.device_id)?),
                placed.row.into_item()?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // In stream order per device, so connections write them without holding any back.
    items.sort_by_key(|(device, item)| (*device, item.seq()));
    Ok(items)
}

/// An item to append to every active device of a user, except one.
#[derive(Debug, Clone)]
pub struct UserItem {
    pub user_id: UserId,
    /// The device that caused the item (it knows already).
    pub except: Option<DeviceId>,
    /// The item (its `seq` is assigned here).
    pub item: StreamItem,
}

/// Appends items to the streams of every active device of their users, in one statement
/// (inside the caller's transaction), numbered as every stream item is
/// (`numbered_stream_items!`). Returns each stored item with its seq.
pub async fn append_to_users(
    conn: &mut PgConnection,
    items: &[UserItem],
) -> Result<Vec<(DeviceRef, StreamItem)>, sqlx::Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Uuid> = items.iter().map(|i| i.user_id.as_uuid()).collect();
    let except: Vec<Option<i32>> = items
        .iter()
        .map(|i| i.except.map(DeviceId::as_i32))
        .collect();
    let mut bodies = Vec::with_capacity(items.len());
    for item in items {
        bodies.push(
            serde_json::to_string(&item.item)
                .map_err(|error| sqlx::Error::Encode(Box::new(error)))?,
        );
    }
    let rows: Vec<(i64, Uuid, i32, i64)> = sqlx::query_as(concat!(
        "WITH t AS (
             SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[])
                 WITH ORDINALITY AS t (user_id, except_device, body, ord)
         ), targets AS (
             SELECT t.ord, d.user_id, d.device_id, t.body FROM t
             CROSS JOIN LATERAL (
                 SELECT d.user_id, d.device_id FROM devices d
                 WHERE d.user_id = t.user_id AND d.removed_at IS NULL
                   AND d.device_id IS DISTINCT FROM t.except_device
                 OFFSET 0
             ) d
         ), ",
        numbered_stream_items!(),
        ", ins AS (
             INSERT INTO stream_events (recipient_user_id, recipient_device_id, seq, body)
             SELECT user_id, device_id, seq, body FROM numbered
         )
         SELECT ord, user_id, device_id, seq FROM numbered",
    ))
    .bind(&users)
    .bind(&except)
    .bind(&bodies)
    .fetch_all(&mut *conn)
    .await?;
    let mut placed = Vec::with_capacity(rows.len());
    for (ord, user, device, seq) in rows {
        let Some(source) = usize::try_from(ord - 1).ok().and_then(|i| items.get(i)) else {
            continue;
        };
        let mut item = source.item.clone();
        item.set_seq(seq_of(seq)?);
        placed.push((DeviceRef::new(UserId::from(user), device_id(device)?), item));
    }
    Ok(placed)
}

/// The state of one message's envelope for one device.
#[derive(Debug)]
pub enum EnvelopeLookup {
    /// Not delivered yet: here it is.
    Pending(Envelope),
    /// Delivered; its ciphertext is gone.
    Delivered,
    /// No envelope of this message for this device (group messages are read from the
    /// stream).
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
         WHERE e.message_id = $3 AND e.recipient_user_id = $1 AND e.recipient_device_id = $2
           AND e.envelope_type <> 3"
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

/// The highest sequence number committed to a device's stream (0 if none), if
/// `token_hash` is the hash of the device's current token and the device is not removed.
pub async fn committed_seq(
    pool: &PgPool,
    device: DeviceRef,
    token_hash: &[u8; 32],
) -> Result<Option<u64>, sqlx::Error> {
    let next: Option<i64> = sqlx::query_scalar(
        "SELECT next_stream_seq FROM devices
         WHERE user_id = $1 AND device_id = $2 AND token_hash = $3 AND removed_at IS NULL",
    )
    .bind(device.user_id.as_uuid())
    .bind(device.device_id.as_i32())
    .bind(&token_hash[..])
    .fetch_optional(pool)
    .await?;
    Ok(next.map(|next| u64::try_from(next - 1).unwrap_or(0)))
}

/// Which items of a device an acknowledgement covers.
#[derive(Debug, Clone, Copy)]
pub enum AckRange {
    /// Every item with `seq` up to the given one.
    UpTo,
    /// Exactly the item with the given `seq`.
    Exactly,
}

/// What an acknowledgement changed.
#[derive(Debug, Default)]
pub struct Acked {
    /// Envelopes (one-to-one and group) newly marked delivered.
    pub envelopes: u64,
    /// Delivered receipts stored for the senders' devices, to push.
    pub receipts: Vec<(DeviceRef, StreamItem)>,
}

#[derive(sqlx::FromRow)]
struct AckedRow {
    message_id: Uuid,
    recipient_user_id: Uuid,
    recipient_device_id: i32,
    delivered_at: DateTime<Utc>,
    /// The sender to tell (V2 and group messages to another user), if any.
    notify_user_id: Option<Uuid>,
}

/// The acknowledgement statement's CTE that raises each device's delivery floor to its
/// cumulative acknowledgement. Never past the stream's committed end as this statement sees
/// it: every envelope below that is committed and visible here, so every one up to the new
/// floor is either marked by this statement or was delivered before.
const RAISE_DELIVERY_FLOORS: &str = ", floors AS (
             INSERT INTO device_delivery_floors AS f (user_id, device_id, delivered_through)
             SELECT a.user_id, a.device_id, max(LEAST(a.seq, c.committed))
             FROM a CROSS JOIN LATERAL (
                 SELECT d.next_stream_seq - 1 AS committed FROM devices d
                 WHERE d.user_id = a.user_id AND d.device_id = a.device_id
                 OFFSET 0
             ) c
             GROUP BY a.user_id, a.device_id
             -- Rows locked in one order: two acknowledging processes never deadlock.
             ORDER BY a.user_id, a.device_id
             ON CONFLICT (user_id, device_id) DO UPDATE
                 SET delivered_through = GREATEST(f.delivered_through, EXCLUDED.delivered_through)
         )";

/// Marks delivered the undelivered items each `(device, seq)` entry covers (per `range`)
/// in all three stream tables, purging ciphertexts and deleting acknowledged events, and
/// stores delivered receipts for the senders of the envelopes, all in one transaction.
pub async fn mark_delivered(
    pool: &PgPool,
    entries: &[(DeviceRef, u64)],
    range: AckRange,
) -> Result<Acked, sqlx::Error> {
    let users: Vec<Uuid> = entries
        .iter()
        .map(|(device, _)| device.user_id.as_uuid())
        .collect();
    let devices: Vec<i32> = entries
        .iter()
        .map(|(device, _)| device.device_id.as_i32())
        .collect();
    let seqs: Vec<i64> = entries.iter().map(|(_, seq)| seq_param(*seq)).collect();
    let (comparison, floors) = match range {
        AckRange::UpTo => ("<=", RAISE_DELIVERY_FLOORS),
        AckRange::Exactly => ("=", ""),
    };
    let mut tx = pool.begin().await?;
    // Data-modifying CTEs all run, whether or not the final SELECT reads them.
    let rows: Vec<AckedRow> = sqlx::query_as(&format!(
        "WITH a AS (
             SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int8[]) AS a (user_id, device_id, seq)
         ), pending AS (
             -- One primary-key range per device, from its delivery floor: whatever the
             -- planner thinks of the table, never a scan of every device's envelopes.
             SELECT p.* FROM a CROSS JOIN LATERAL (
                 SELECT e.recipient_user_id, e.recipient_device_id, e.seq FROM message_envelopes e
                 WHERE e.recipient_user_id = a.user_id AND e.recipient_device_id = a.device_id
                   AND e.seq > (SELECT COALESCE(max(f.delivered_through), 0) FROM device_delivery_floors f
                                WHERE f.user_id = a.user_id AND f.device_id = a.device_id)
                   AND e.seq {comparison} a.seq AND e.delivered_at IS NULL
                 OFFSET 0
             ) p
         ){floors}, env AS (
             UPDATE message_envelopes e SET delivered_at = now(), ciphertext = NULL
             FROM pending p
             WHERE e.recipient_user_id = p.recipient_user_id
               AND e.recipient_device_id = p.recipient_device_id
               AND e.seq = p.seq AND e.delivered_at IS NULL
             RETURNING e.message_id, e.recipient_user_id, e.recipient_device_id, e.delivered_at
         ), keys AS (
             UPDATE sender_key_distributions s SET delivered_at = now(), ciphertext = NULL
             FROM a
             WHERE s.recipient_user_id = a.user_id AND s.recipient_device_id = a.device_id
               AND s.seq {comparison} a.seq AND s.delivered_at IS NULL
         ), events AS (
             DELETE FROM stream_events v USING a
             WHERE v.recipient_user_id = a.user_id AND v.recipient_device_id = a.device_id
               AND v.seq {comparison} a.seq
         )
         SELECT env.message_id, env.recipient_user_id, env.recipient_device_id, env.delivered_at,
                CASE WHEN m.protocol_version = 2 AND m.sender_user_id <> env.recipient_user_id
                     THEN m.sender_user_id END AS notify_user_id
         FROM env JOIN messages m ON m.message_id = env.message_id"
    ))
    .bind(&users)
    .bind(&devices)
    .bind(&seqs)
    .fetch_all(&mut *tx)
    .await?;
    let envelopes = rows.len() as u64;
    let receipts = store_delivered_receipts(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(Acked {
        envelopes,
        receipts,
    })
}

/// Stores one delivered receipt per sender (more past [`MAX_DELIVERIES_PER_RECEIPT`]) for
/// every device of that sender.
async fn store_delivered_receipts(
    conn: &mut PgConnection,
    rows: Vec<AckedRow>,
) -> Result<Vec<(DeviceRef, StreamItem)>, sqlx::Error> {
    // One entry per message and recipient user: the devices of one acknowledgement batch
    // share its time (the transaction's), so nothing is lost by grouping them.
    let mut by_sender: BTreeMap<Uuid, BTreeMap<(Uuid, Uuid), Delivery>> = BTreeMap::new();
    for row in rows {
        let Some(sender) = row.notify_user_id else {
            continue;
        };
        let device = device_id(row.recipient_device_id)?;
        by_sender
            .entry(sender)
            .or_default()
            .entry((row.message_id, row.recipient_user_id))
            .or_insert_with(|| Delivery {
                message_id: row.message_id,
                user_id: UserId::from(row.recipient_user_id),
                device_ids: Vec::new(),
                delivered_at: row.delivered_at,
            })
            .device_ids
            .push(device);
    }
    let mut items = Vec::new();
    for (sender, deliveries) in by_sender {
        let deliveries: Vec<Delivery> = deliveries
            .into_values()
            .map(|mut delivery| {
                delivery.device_ids.sort();
                delivery
            })
            .collect();
        for chunk in deliveries.chunks(MAX_DELIVERIES_PER_RECEIPT) {
            items.push(UserItem {
                user_id: UserId::from(sender),
                except: None,
                item: StreamItem::Delivered(DeliveredReceipt {
                    seq: 0,
                    deliveries: chunk.to_vec(),
                }),
            });
        }
    }
    append_to_users(conn, &items).await
}

/// Marks one message's envelope for a device delivered (and tells its sender). `None` if
/// the device has no envelope of that message; `Some` with no change if it was delivered
/// already.
pub async fn mark_message_delivered(
    pool: &PgPool,
    user_id: UserId,
    device_id: DeviceId,
    message_id: Uuid,
) -> Result<Option<Acked>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let target: Option<(i64, bool)> = sqlx::query_as(
        "SELECT seq, delivered_at IS NULL FROM message_envelopes
         WHERE message_id = $3 AND recipient_user_id = $1 AND recipient_device_id = $2
         FOR UPDATE",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(message_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seq, pending)) = target else {
        return Ok(None);
    };
    if !pending {
        return Ok(Some(Acked::default()));
    }
    let rows: Vec<AckedRow> = sqlx::query_as(
        "WITH env AS (
             UPDATE message_envelopes e SET delivered_at = now(), ciphertext = NULL
             WHERE e.recipient_user_id = $1 AND e.recipient_device_id = $2 AND e.seq = $3
             RETURNING e.message_id, e.recipient_user_id, e.recipient_device_id, e.delivered_at
         )
         SELECT env.message_id, env.recipient_user_id, env.recipient_device_id, env.delivered_at,
                CASE WHEN m.protocol_version = 2 AND m.sender_user_id <> env.recipient_user_id
                     THEN m.sender_user_id END AS notify_user_id
         FROM env JOIN messages m ON m.message_id = env.message_id",
    )
    .bind(user_id.as_uuid())
    .bind(device_id.as_i32())
    .bind(seq)
    .fetch_all(&mut *tx)
    .await?;
    let envelopes = rows.len() as u64;
    let receipts = store_delivered_receipts(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(Some(Acked {
        envelopes,
        receipts,
    }))
}
