//! Messages and their per-device envelopes in PostgreSQL: the device lists sends are
//! checked against ([`read_device_lists`]), [`store_batch`], which writes many messages
//! and all their envelopes in one statement (one transaction), and the lookup of earlier
//! messages by client message ID. The rules a send follows live in `crate::sends`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::EnvelopeType;
use courier_protocol::api::receipts::Conversation;
use sqlx::PgPool;
use uuid::Uuid;

use super::device_id;

/// A stored message, as the send answer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub envelope_count: u32,
    /// Where it went: the recipient user, or the channel.
    pub conversation: Conversation,
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

/// A user's devices, as sends are checked against them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDevices {
    /// Whether the user exists.
    pub exists: bool,
    /// Every device the user ever had, removed ones included.
    pub devices: Vec<DeviceState>,
}

/// One device's state for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceState {
    pub device: DeviceRef,
    pub removed: bool,
    /// Active, with identity keys published.
    pub reachable: bool,
}

/// Reads the device lists of `users` in one query (a user that does not exist gets an
/// empty list with `exists: false`).
pub async fn read_device_lists(
    pool: &PgPool,
    users: &[UserId],
) -> Result<HashMap<UserId, Arc<UserDevices>>, sqlx::Error> {
    let ids: Vec<Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    /// A user, and one of its devices (none for a user without devices).
    type ListRow = (Uuid, Option<i32>, Option<bool>, Option<bool>);
    let rows: Vec<ListRow> = sqlx::query_as(
        "SELECT u.user_id, d.device_id, d.removed_at IS NOT NULL,
                d.removed_at IS NULL AND d.has_identity_keys
         FROM users u LEFT JOIN devices d ON d.user_id = u.user_id
         WHERE u.user_id = ANY($1::uuid[])",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut lists: HashMap<UserId, UserDevices> = users
        .iter()
        .map(|user| {
            (
                *user,
                UserDevices {
                    exists: false,
                    devices: Vec::new(),
                },
            )
        })
        .collect();
    for (user, device, removed, reachable) in rows {
        let user_id = UserId::from(user);
        let list = lists.entry(user_id).or_insert_with(|| UserDevices {
            exists: true,
            devices: Vec::new(),
        });
        list.exists = true;
        if let Some(device) = device {
            list.devices.push(DeviceState {
                device: DeviceRef {
                    user_id,
                    device_id: device_id(device)?,
                },
                removed: removed.unwrap_or(false),
                reachable: reachable.unwrap_or(false),
            });
        }
    }
    Ok(lists
        .into_iter()
        .map(|(user, list)| (user, Arc::new(list)))
        .collect())
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
    /// These devices were removed after the send was checked: nothing written.
    Stale(Vec<DeviceRef>),
}

/// One message to store (see [`store_batch`]).
#[derive(Debug, Clone)]
pub struct StoreJob {
    pub sender: DeviceRef,
    pub client_message_id: String,
    pub recipient: UserId,
    /// The V1 ciphertext, or a group message's Megolm ciphertext, stored once on the
    /// message; `None` for V2.
    pub legacy_envelope: Option<Vec<u8>>,
    pub envelopes: Vec<NewEnvelope>,
    /// A group message: its channel and session (its envelopes are the member devices'
    /// stream rows, without ciphertext).
    pub channel: Option<GroupTarget>,
}

impl StoreJob {
    /// The conversation the message belongs to: its recipient user, or its channel.
    pub fn conversation(&self) -> Conversation {
        match &self.channel {
            Some(channel) => Conversation::Channel {
                channel_id: channel.channel_id,
            },
            None => Conversation::Direct {
                user_id: self.recipient,
            },
        }
    }
}

/// Where a group message goes.
#[derive(Debug, Clone)]
pub struct GroupTarget {
    pub channel_id: Uuid,
    pub session_id: String,
}

#[derive(sqlx::FromRow)]
struct PlacedRow {
    ord: i64,
    message_id: Uuid,
    user_id: Uuid,
    device_id: i32,
    seq: i64,
    created_at: Option<DateTime<Utc>>,
}

/// Writes messages and their envelopes, many in one statement (so one transaction and
/// one commit for all of them):
///
/// 1. count the envelopes per target device, lock those devices' rows in (user, device)
///    order (so concurrent statements never deadlock), skipping devices removed meanwhile;
/// 2. take a run of stream sequence numbers per device (under the lock, so in commit
///    order) and give each envelope its number, in the order of the jobs;
/// 3. insert each message whose every device was locked and whose client ID is new (a
///    racing retry that committed first wins), and the envelopes of the inserted ones,
///    from arrays (one statement, never one per envelope).
///
/// A message that is not inserted leaves its sequence numbers unused: a device's stream
/// may skip a number in those rare races, which readers handle.
pub async fn store_batch(
    pool: &PgPool,
    jobs: &[StoreJob],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    let message_ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    let sender_users: Vec<Uuid> = jobs.iter().map(|j| j.sender.user_id.as_uuid()).collect();
    let sender_devices: Vec<i32> = jobs.iter().map(|j| j.sender.device_id.as_i32()).collect();
    let client_ids: Vec<&str> = jobs.iter().map(|j| j.client_message_id.as_str()).collect();
    let recipients: Vec<Option<Uuid>> = jobs
        .iter()
        .map(|j| j.channel.is_none().then(|| j.recipient.as_uuid()))
        .collect();
    let versions: Vec<i16> = jobs
        .iter()
        .map(|j| {
            if j.legacy_envelope.is_some() && j.channel.is_none() {
                1
            } else {
                2
            }
        })
        .collect();
    let channels: Vec<Option<Uuid>> = jobs
        .iter()
        .map(|j| j.channel.as_ref().map(|c| c.channel_id))
        .collect();
    let sessions: Vec<Option<&str>> = jobs
        .iter()
        .map(|j| j.channel.as_ref().map(|c| c.session_id.as_str()))
        .collect();
    let legacies: Vec<Option<&[u8]>> = jobs.iter().map(|j| j.legacy_envelope.as_deref()).collect();
    let counts: Vec<i32> = jobs
        .iter()
        .map(|j| i32::try_from(j.envelopes.len()).unwrap_or(i32::MAX))
        .collect();
    let mut ords = Vec::new();
    let mut users = Vec::new();
    let mut ids = Vec::new();
    let mut types = Vec::new();
    let mut ciphertexts: Vec<Option<&[u8]>> = Vec::new();
    for (ord, job) in jobs.iter().enumerate() {
        for envelope in &job.envelopes {
            ords.push(i64::try_from(ord).unwrap_or(i64::MAX) + 1);
            users.push(envelope.device.user_id.as_uuid());
            ids.push(envelope.device.device_id.as_i32());
            types.push(if job.channel.is_some() {
                super::stream::GROUP_ROW_TYPE
            } else {
                envelope.envelope_type.as_i16()
            });
            ciphertexts.push(envelope.ciphertext.as_deref());
        }
    }

    let rows: Vec<PlacedRow> = sqlx::query_as(concat!(
        "WITH msgs AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::text[], $5::uuid[], $6::int2[], $7::bytea[], $8::int4[],
                                  $14::uuid[], $15::text[])
                 WITH ORDINALITY AS m (message_id, sender_user_id, sender_device_id, client_message_id,
                                       recipient_user_id, protocol_version, encrypted_envelope, envelope_count,
                                       channel_id, group_session_id, ord)
         ), targets AS (
             SELECT * FROM unnest($9::int8[], $10::uuid[], $11::int4[], $12::int2[], $13::bytea[])
                 AS t (ord, user_id, device_id, envelope_type, ciphertext)
         ), ",
        numbered_stream_items!(),
        ", placed AS (
             SELECT ord, user_id, device_id, envelope_type, ciphertext, seq FROM numbered
         ), complete AS (
             -- A message is stored only if all its devices were placed. `>=`, not `=`
             -- (the same here: a message never has more placed rows than envelopes),
             -- because the planner guesses that `=` between two columns keeps 0.5% of
             -- the rows: a one-row estimate for `ins`, and nested loops over it below,
             -- quadratic in the batch.
             SELECT m.* FROM msgs m
             JOIN (SELECT ord, count(*) AS n FROM placed GROUP BY ord) p ON p.ord = m.ord
             WHERE p.n >= m.envelope_count
         ), ins AS (
             INSERT INTO messages (message_id, sender_user_id, sender_device_id, client_message_id,
                                   recipient_user_id, protocol_version, encrypted_envelope, envelope_count,
                                   channel_id, group_session_id)
             SELECT message_id, sender_user_id, sender_device_id, client_message_id,
                    recipient_user_id, protocol_version, encrypted_envelope, envelope_count,
                    channel_id, group_session_id
             FROM complete
             ON CONFLICT (sender_user_id, sender_device_id, client_message_id) DO NOTHING
             RETURNING message_id, created_at
         ), e AS (
             INSERT INTO message_envelopes (recipient_user_id, recipient_device_id, seq, message_id,
                                            envelope_type, ciphertext, created_at)
             SELECT p.user_id, p.device_id, p.seq, i.message_id, p.envelope_type, p.ciphertext, i.created_at
             FROM placed p JOIN msgs m ON m.ord = p.ord JOIN ins i ON i.message_id = m.message_id
         )
         SELECT p.ord, m.message_id, p.user_id, p.device_id, p.seq, i.created_at
         FROM placed p JOIN msgs m ON m.ord = p.ord LEFT JOIN ins i ON i.message_id = m.message_id",
    ))
    .bind(&message_ids)
    .bind(&sender_users)
    .bind(&sender_devices)
    .bind(&client_ids)
    .bind(&recipients)
    .bind(&versions)
    .bind(&legacies)
    .bind(&counts)
    .bind(&ords)
    .bind(&users)
    .bind(&ids)
    .bind(&types)
    .bind(&ciphertexts)
    .bind(&channels)
    .bind(&sessions)
    .fetch_all(pool)
    .await?;

    let mut placed: Vec<Vec<Placed>> = vec![Vec::new(); jobs.len()];
    let mut created: Vec<Option<DateTime<Utc>>> = vec![None; jobs.len()];
    for row in rows {
        let Some(index) = usize::try_from(row.ord - 1)
            .ok()
            .filter(|index| *index < jobs.len())
        else {
            continue;
        };
        let device = DeviceRef {
            user_id: UserId::from(row.user_id),
            device_id: device_id(row.device_id)?,
        };
        placed[index].push(Placed {
            device,
            seq: u64::try_from(row.seq).unwrap_or(0),
        });
        created[index] = created[index].or(row.created_at);
        debug_assert_eq!(row.message_id, message_ids[index]);
    }
    let outcomes = jobs
        .iter()
        .zip(placed)
        .zip(created)
        .zip(message_ids)
        .map(|(((job, placed), created_at), message_id)| {
            if placed.len() != job.envelopes.len() {
                let locked: BTreeSet<DeviceRef> = placed.iter().map(|p| p.device).collect();
                return StoreOutcome::Stale(
                    job.envelopes
                        .iter()
                        .map(|e| e.device)
                        .filter(|d| !locked.contains(d))
                        .collect(),
                );
            }
            match created_at {
                Some(created_at) => StoreOutcome::Stored {
                    message: StoredMessage {
                        message_id,
                        created_at,
                        envelope_count: u32::try_from(job.envelopes.len()).unwrap_or(u32::MAX),
                        conversation: job.conversation(),
                    },
                    placed,
                },
                None => StoreOutcome::Duplicate,
            }
        })
        .collect();
    Ok(outcomes)
}

/// The message a device sent under a client message ID, if any.
pub async fn find_by_client_id(
    pool: &PgPool,
    sender: DeviceRef,
    client_message_id: &str,
) -> Result<Option<StoredMessage>, sqlx::Error> {
    Ok(find_by_client_ids(pool, &[(sender, client_message_id)])
        .await?
        .pop()
        .flatten())
}

/// The messages devices sent under client message IDs, in the order of `keys`, in one
/// query.
pub async fn find_by_client_ids(
    pool: &PgPool,
    keys: &[(DeviceRef, &str)],
) -> Result<Vec<Option<StoredMessage>>, sqlx::Error> {
    let users: Vec<Uuid> = keys.iter().map(|(d, _)| d.user_id.as_uuid()).collect();
    let devices: Vec<i32> = keys.iter().map(|(d, _)| d.device_id.as_i32()).collect();
    let ids: Vec<&str> = keys.iter().map(|(_, id)| *id).collect();
    /// A found message: its place in `keys`, ID, time, envelope count, recipient user or
    /// channel.
    type FoundRow = (i64, Uuid, DateTime<Utc>, i32, Option<Uuid>, Option<Uuid>);
    let rows: Vec<FoundRow> = sqlx::query_as(
        "SELECT k.ord, m.message_id, m.created_at, m.envelope_count, m.recipient_user_id, m.channel_id
         FROM unnest($1::uuid[], $2::int4[], $3::text[]) WITH ORDINALITY
             AS k (user_id, device_id, client_message_id, ord)
         JOIN messages m ON m.sender_user_id = k.user_id AND m.sender_device_id = k.device_id
             AND m.client_message_id = k.client_message_id",
    )
    .bind(&users)
    .bind(&devices)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut found = vec![None; keys.len()];
    for (ord, message_id, created_at, count, recipient, channel) in rows {
        let conversation = match (channel, recipient) {
            (Some(channel_id), _) => Conversation::Channel { channel_id },
            (None, Some(user_id)) => Conversation::Direct {
                user_id: UserId::from(user_id),
            },
            (None, None) => {
                return Err(sqlx::Error::Protocol(
                    "a message with neither recipient nor channel".into(),
                ));
            }
        };
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| found.get_mut(i)) {
            *slot = Some(StoredMessage {
                message_id,
                created_at,
                envelope_count: u32::try_from(count).unwrap_or(0),
                conversation,
            });
        }
    }
    Ok(found)
}
