//! Channels: members, per-device sender-key distributions, and who a group message must
//! reach.
//!
//! Membership changes lock the channel's row, so they are serialized per channel and
//! every member device sees them in one order.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use courier_protocol::UserId;
use courier_protocol::api::channels::{
    Channel, MembershipChange, MembershipChangeKind, SenderKeyDistribution,
};
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::EnvelopeType;
use courier_protocol::api::stream::StreamItem;
use courier_protocol::keys::encode_base64;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::device_id;
use super::stream::{UserItem, append_to_users};

/// Why a channel operation is refused (nothing was written).
#[derive(Debug)]
pub enum Refusal {
    /// No such channel, or the caller is not a member.
    ChannelNotFound,
    /// These users do not exist.
    UsersNotFound(Vec<UserId>),
    /// The channel would have more than this many members.
    TooManyMembers(usize),
    /// The user to remove is not a member.
    NotAMember,
    /// Only the creator removes others.
    NotCreator,
    /// These devices are not current member devices.
    NotMemberDevices(Vec<DeviceRef>),
}

/// A stored change and the stream items it produced.
#[derive(Debug)]
pub struct Changed<T> {
    pub value: T,
    pub items: Vec<(DeviceRef, StreamItem)>,
}

async fn members(conn: &mut PgConnection, channel_id: Uuid) -> Result<Vec<UserId>, sqlx::Error> {
    let members: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id",
    )
    .bind(channel_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(members.into_iter().map(UserId::from).collect())
}

/// The members' devices a group message must reach: active, identity keys published.
async fn member_devices(
    conn: &mut PgConnection,
    channel_id: Uuid,
) -> Result<Vec<DeviceRef>, sqlx::Error> {
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT d.user_id, d.device_id FROM channel_members c
         JOIN devices d ON d.user_id = c.user_id AND d.removed_at IS NULL AND d.has_identity_keys
         WHERE c.channel_id = $1
         ORDER BY d.user_id, d.device_id",
    )
    .bind(channel_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(user, device)| {
            Ok(DeviceRef {
                user_id: UserId::from(user),
                device_id: device_id(device)?,
            })
        })
        .collect()
}

/// The channel's creator, locking its row (`FOR UPDATE` for membership changes, `FOR
/// SHARE` otherwise), if `caller` is a member.
async fn lock_as_member(
    conn: &mut PgConnection,
    channel_id: Uuid,
    caller: UserId,
    exclusive: bool,
) -> Result<Option<UserId>, sqlx::Error> {
    let lock = if exclusive { "FOR UPDATE" } else { "FOR SHARE" };
    let creator: Option<Uuid> = sqlx::query_scalar(&format!(
        "SELECT c.created_by FROM channels c
         WHERE c.channel_id = $1
           AND EXISTS (SELECT 1 FROM channel_members m WHERE m.channel_id = c.channel_id AND m.user_id = $2)
         {lock} OF c"
    ))
    .bind(channel_id)
    .bind(caller.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(creator.map(UserId::from))
}

async fn missing_users(
    conn: &mut PgConnection,
    users: &BTreeSet<UserId>,
) -> Result<Vec<UserId>, sqlx::Error> {
    let ids: Vec<Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    let found: BTreeSet<Uuid> =
        sqlx::query_scalar::<_, Uuid>("SELECT user_id FROM users WHERE user_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    Ok(users
        .iter()
        .filter(|u| !found.contains(&u.as_uuid()))
        .copied()
        .collect())
}

/// The membership item, for every member (and `also`), except the acting device.
fn membership_items(
    caller: DeviceRef,
    channel_id: Uuid,
    change: MembershipChangeKind,
    user_ids: Vec<UserId>,
    members: &[UserId],
    also: &[UserId],
    at: DateTime<Utc>,
) -> Vec<UserItem> {
    let item = StreamItem::Membership(MembershipChange {
        seq: 0,
        channel_id,
        change,
        user_ids,
        by_user_id: caller.user_id,
        members: members.to_vec(),
        at,
    });
    members
        .iter()
        .chain(also)
        .map(|user| UserItem {
            user_id: *user,
            except: (*user == caller.user_id).then_some(caller.device_id),
            item: item.clone(),
        })
        .collect()
}

async fn now(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT now()").fetch_one(conn).await
}

/// Creates a channel of `caller`'s user and `others`.
pub async fn create(
    pool: &PgPool,
    caller: DeviceRef,
    others: &[UserId],
    max_members: usize,
) -> Result<Result<Changed<Channel>, Refusal>, sqlx::Error> {
    let mut wanted: BTreeSet<UserId> = others.iter().copied().collect();
    wanted.insert(caller.user_id);
    if wanted.len() > max_members {
        return Ok(Err(Refusal::TooManyMembers(max_members)));
    }
    let mut tx = pool.begin().await?;
    let missing = missing_users(&mut tx, &wanted).await?;
    if !missing.is_empty() {
        return Ok(Err(Refusal::UsersNotFound(missing)));
    }
    let channel_id = Uuid::now_v7();
    sqlx::query("INSERT INTO channels (channel_id, created_by) VALUES ($1, $2)")
        .bind(channel_id)
        .bind(caller.user_id.as_uuid())
        .execute(&mut *tx)
        .await?;
    let ids: Vec<Uuid> = wanted.iter().map(|u| u.as_uuid()).collect();
    sqlx::query("INSERT INTO channel_members (channel_id, user_id) SELECT $1, unnest($2::uuid[])")
        .bind(channel_id)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    let members: Vec<UserId> = wanted.into_iter().collect();
    let at = now(&mut tx).await?;
    let items = membership_items(
        caller,
        channel_id,
        MembershipChangeKind::Created,
        members.clone(),
        &members,
        &[],
        at,
    );
    let items = append_to_users(&mut tx, &items).await?;
    let devices = member_devices(&mut tx, channel_id).await?;
    tx.commit().await?;
    Ok(Ok(Changed {
        value: Channel {
            channel_id,
            created_by: caller.user_id,
            members,
            devices,
        },
        items,
    }))
}

/// A channel as `caller` (a member) sees it.
pub async fn get(
    pool: &PgPool,
    caller: UserId,
    channel_id: Uuid,
) -> Result<Option<Channel>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let creator: Option<Uuid> = sqlx::query_scalar(
        "SELECT c.created_by FROM channels c JOIN channel_members m
             ON m.channel_id = c.channel_id AND m.user_id = $2
         WHERE c.channel_id = $1",
    )
    .bind(channel_id)
    .bind(caller.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(creator) = creator else {
        return Ok(None);
    };
    Ok(Some(Channel {
        channel_id,
        created_by: UserId::from(creator),
        members: members(&mut conn, channel_id).await?,
        devices: member_devices(&mut conn, channel_id).await?,
    }))
}

/// The channels `caller` is a member of, oldest first, with their members and member
/// devices: one query, however many channels.
pub async fn list(pool: &PgPool, caller: UserId) -> Result<Vec<Channel>, sqlx::Error> {
    // One row per channel, member and reachable device (NULL: a member without one).
    let rows: Vec<(Uuid, Uuid, Uuid, Option<i32>)> = sqlx::query_as(
        "SELECT c.channel_id, c.created_by, m.user_id, d.device_id
         FROM channel_members mine
         JOIN channels c ON c.channel_id = mine.channel_id
         JOIN channel_members m ON m.channel_id = c.channel_id
         LEFT JOIN devices d ON d.user_id = m.user_id AND d.removed_at IS NULL AND d.has_identity_keys
         WHERE mine.user_id = $1
         ORDER BY c.channel_id, m.user_id, d.device_id",
    )
    .bind(caller.as_uuid())
    .fetch_all(pool)
    .await?;
    let mut channels: Vec<Channel> = Vec::new();
    for (channel_id, created_by, user, device) in rows {
        if channels.last().is_none_or(|c| c.channel_id != channel_id) {
            channels.push(Channel {
                channel_id,
                created_by: UserId::from(created_by),
                members: Vec::new(),
                devices: Vec::new(),
            });
        }
        let Some(channel) = channels.last_mut() else {
            continue;
        };
        let user_id = UserId::from(user);
        if channel.members.last() != Some(&user_id) {
            channel.members.push(user_id);
        }
        if let Some(device) = device {
            channel.devices.push(DeviceRef {
                user_id,
                device_id: device_id(device)?,
            });
        }
    }
    Ok(channels)
}

/// Adds users to a channel (any member may); those already members are skipped.
pub async fn add_members(
    pool: &PgPool,
    caller: DeviceRef,
    channel_id: Uuid,
    users: &[UserId],
    max_members: usize,
) -> Result<Result<Changed<Vec<UserId>>, Refusal>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if lock_as_member(&mut tx, channel_id, caller.user_id, true)
        .await?
        .is_none()
    {
        return Ok(Err(Refusal::ChannelNotFound));
    }
    let wanted: BTreeSet<UserId> = users.iter().copied().collect();
    let missing = missing_users(&mut tx, &wanted).await?;
    if !missing.is_empty() {
        return Ok(Err(Refusal::UsersNotFound(missing)));
    }
    let ids: Vec<Uuid> = wanted.iter().map(|u| u.as_uuid()).collect();
    let mut added: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO channel_members (channel_id, user_id) SELECT $1, unnest($2::uuid[])
         ON CONFLICT DO NOTHING RETURNING user_id",
    )
    .bind(channel_id)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    added.sort();
    let members = members(&mut tx, channel_id).await?;
    if members.len() > max_members {
        // Dropping the transaction rolls the inserts back.
        return Ok(Err(Refusal::TooManyMembers(max_members)));
    }
    let added: Vec<UserId> = added.into_iter().map(UserId::from).collect();
    let mut items = Vec::new();
    if !added.is_empty() {
        let at = now(&mut tx).await?;
        let wanted = membership_items(
            caller,
            channel_id,
            MembershipChangeKind::Added,
            added.clone(),
            &members,
            &[],
            at,
        );
        items = append_to_users(&mut tx, &wanted).await?;
    }
    tx.commit().await?;
    Ok(Ok(Changed {
        value: added,
        items,
    }))
}

/// Removes a member: the caller itself (leaving) or, by the creator, anyone.
pub async fn remove_member(
    pool: &PgPool,
    caller: DeviceRef,
    channel_id: Uuid,
    user: UserId,
) -> Result<Result<Changed<()>, Refusal>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(creator) = lock_as_member(&mut tx, channel_id, caller.user_id, true).await? else {
        return Ok(Err(Refusal::ChannelNotFound));
    };
    if user != caller.user_id && caller.user_id != creator {
        return Ok(Err(Refusal::NotCreator));
    }
    let removed = sqlx::query("DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2")
        .bind(channel_id)
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Ok(Err(Refusal::NotAMember));
    }
    let members = members(&mut tx, channel_id).await?;
    let at = now(&mut tx).await?;
    let wanted = membership_items(
        caller,
        channel_id,
        MembershipChangeKind::Removed,
        vec![user],
        &members,
        &[user],
        at,
    );
    let items = append_to_users(&mut tx, &wanted).await?;
    tx.commit().await?;
    Ok(Ok(Changed { value: (), items }))
}

/// One sender key to store for one member device.
#[derive(Debug, Clone)]
pub struct NewSenderKey {
    pub device: DeviceRef,
    pub envelope_type: EnvelopeType,
    pub ciphertext: Vec<u8>,
}

/// Stores the calling device's sender keys of one session for member devices; a device
/// that has this session's key already keeps its first copy.
pub async fn store_sender_keys(
    pool: &PgPool,
    caller: DeviceRef,
    channel_id: Uuid,
    session_id: &str,
    keys: &[NewSenderKey],
) -> Result<Result<Changed<u32>, Refusal>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if lock_as_member(&mut tx, channel_id, caller.user_id, false)
        .await?
        .is_none()
    {
        return Ok(Err(Refusal::ChannelNotFound));
    }
    let allowed: BTreeSet<DeviceRef> = member_devices(&mut tx, channel_id)
        .await?
        .into_iter()
        .filter(|d| *d != caller)
        .collect();
    let outside: Vec<DeviceRef> = keys
        .iter()
        .map(|k| k.device)
        .filter(|d| !allowed.contains(d))
        .collect();
    if !outside.is_empty() {
        return Ok(Err(Refusal::NotMemberDevices(outside)));
    }
    let users: Vec<Uuid> = keys.iter().map(|k| k.device.user_id.as_uuid()).collect();
    let devices: Vec<i32> = keys.iter().map(|k| k.device.device_id.as_i32()).collect();
    let types: Vec<i16> = keys.iter().map(|k| k.envelope_type.as_i16()).collect();
    let ciphertexts: Vec<&[u8]> = keys.iter().map(|k| k.ciphertext.as_slice()).collect();
    let rows: Vec<(Uuid, i32, i64, i16, DateTime<Utc>)> = sqlx::query_as(
        concat!(
            "WITH t AS (
             SELECT * FROM unnest($5::uuid[], $6::int4[], $7::int2[], $8::bytea[])
                 WITH ORDINALITY AS t (user_id, device_id, envelope_type, ciphertext, ord)
         ), targets AS (
             SELECT t.* FROM t WHERE NOT EXISTS (
                 SELECT 1 FROM sender_key_distributions s
                 WHERE s.channel_id = $1 AND s.sender_user_id = $2 AND s.sender_device_id = $3
                   AND s.session_id = $4 AND s.recipient_user_id = t.user_id
                   AND s.recipient_device_id = t.device_id)
         ), ",
            numbered_stream_items!(),
            "
         INSERT INTO sender_key_distributions (recipient_user_id, recipient_device_id, seq, channel_id,
             sender_user_id, sender_device_id, session_id, envelope_type, ciphertext)
         SELECT user_id, device_id, seq, $1, $2, $3, $4, envelope_type, ciphertext FROM numbered
         ON CONFLICT DO NOTHING
         RETURNING recipient_user_id, recipient_device_id, seq, envelope_type, created_at",
        ),
    )
    .bind(channel_id)
    .bind(caller.user_id.as_uuid())
    .bind(caller.device_id.as_i32())
    .bind(session_id)
    .bind(&users)
    .bind(&devices)
    .bind(&types)
    .bind(&ciphertexts)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut items = Vec::with_capacity(rows.len());
    for (user, device, seq, envelope_type, created_at) in rows {
        let device = DeviceRef {
            user_id: UserId::from(user),
            device_id: device_id(device)?,
        };
        let Some(key) = keys.iter().find(|k| k.device == device) else {
            continue;
        };
        items.push((
            device,
            StreamItem::SenderKey(SenderKeyDistribution {
                seq: u64::try_from(seq).unwrap_or(0),
                channel_id,
                sender_user_id: caller.user_id,
                sender_device_id: caller.device_id,
                session_id: session_id.to_owned(),
                envelope_type: EnvelopeType::from_i16(envelope_type)
                    .unwrap_or(EnvelopeType::Normal),
                ciphertext: encode_base64(&key.ciphertext),
                server_timestamp: created_at,
            }),
        ));
    }
    Ok(Ok(Changed {
        value: u32::try_from(items.len()).unwrap_or(u32::MAX),
        items,
    }))
}

/// Who a group message from `caller` under `session_id` must reach, or which of them
/// lack the session's key.
#[derive(Debug)]
pub enum GroupTargets {
    /// Every member device (but the sending one) has the key.
    Ready(Vec<DeviceRef>),
    /// These member devices have no key of this session from the caller.
    MissingKeys(Vec<DeviceRef>),
}

/// Checks a group send against the channel's current member devices.
pub async fn group_targets(
    pool: &PgPool,
    caller: DeviceRef,
    channel_id: Uuid,
    session_id: &str,
) -> Result<Option<GroupTargets>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $2)",
    )
    .bind(channel_id)
    .bind(caller.user_id.as_uuid())
    .fetch_one(&mut *conn)
    .await?;
    if !member {
        return Ok(None);
    }
    let rows: Vec<(Uuid, i32, bool)> = sqlx::query_as(
        "SELECT d.user_id, d.device_id, EXISTS (
             SELECT 1 FROM sender_key_distributions s
             WHERE s.channel_id = $1 AND s.sender_user_id = $2 AND s.sender_device_id = $3
               AND s.session_id = $4 AND s.recipient_user_id = d.user_id
               AND s.recipient_device_id = d.device_id) AS has_key
         FROM channel_members c
         JOIN devices d ON d.user_id = c.user_id AND d.removed_at IS NULL AND d.has_identity_keys
         WHERE c.channel_id = $1 AND NOT (d.user_id = $2 AND d.device_id = $3)
         ORDER BY d.user_id, d.device_id",
    )
    .bind(channel_id)
    .bind(caller.user_id.as_uuid())
    .bind(caller.device_id.as_i32())
    .bind(session_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut ready = Vec::with_capacity(rows.len());
    let mut missing = Vec::new();
    for (user, device, has_key) in rows {
        let device = DeviceRef {
            user_id: UserId::from(user),
            device_id: device_id(device)?,
        };
        if has_key {
            ready.push(device);
        } else {
            missing.push(device);
        }
    }
    Ok(Some(if missing.is_empty() {
        GroupTargets::Ready(ready)
    } else {
        GroupTargets::MissingKeys(missing)
    }))
}
