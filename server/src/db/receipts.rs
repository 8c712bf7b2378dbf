//! Read state, read receipts, privacy settings and a message's delivery state.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::receipts::{
    Conversation, DeliveryState, DeviceDelivery, MessageState, PrivacySettings, ReadReceipt,
    UpdatePrivacySettings, UserRead,
};
use courier_protocol::api::stream::StreamItem;
use sqlx::PgPool;
use uuid::Uuid;

use super::device_id;
use super::stream::{UserItem, append_to_users};

/// A user's privacy settings (`None`: no such user).
pub async fn privacy(pool: &PgPool, user: UserId) -> Result<Option<PrivacySettings>, sqlx::Error> {
    let row: Option<(bool, bool)> = sqlx::query_as(
        "SELECT send_read_receipts, show_read_receipts FROM users WHERE user_id = $1",
    )
    .bind(user.as_uuid())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(send, show)| PrivacySettings {
        send_read_receipts: send,
        show_read_receipts: show,
    }))
}

/// Changes a user's privacy settings; returns them as they now are.
pub async fn update_privacy(
    pool: &PgPool,
    user: UserId,
    update: UpdatePrivacySettings,
) -> Result<Option<PrivacySettings>, sqlx::Error> {
    let row: Option<(bool, bool)> = sqlx::query_as(
        "UPDATE users SET send_read_receipts = COALESCE($2, send_read_receipts),
                          show_read_receipts = COALESCE($3, show_read_receipts)
         WHERE user_id = $1
         RETURNING send_read_receipts, show_read_receipts",
    )
    .bind(user.as_uuid())
    .bind(update.send_read_receipts)
    .bind(update.show_read_receipts)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(send, show)| PrivacySettings {
        send_read_receipts: send,
        show_read_receipts: show,
    }))
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    sender_user_id: Uuid,
    recipient_user_id: Option<Uuid>,
    channel_id: Option<Uuid>,
    /// Whether the reader's user has an envelope of it.
    received: bool,
}

impl MessageRow {
    /// The message's conversation as `user` sees it.
    fn conversation_for(&self, user: UserId) -> Option<Conversation> {
        if let Some(channel_id) = self.channel_id {
            return Some(Conversation::Channel { channel_id });
        }
        let sender = UserId::from(self.sender_user_id);
        let recipient = UserId::from(self.recipient_user_id?);
        Some(Conversation::Direct {
            user_id: if sender == user { recipient } else { sender },
        })
    }
}

fn conversation_key(conversation: Conversation) -> Uuid {
    match conversation {
        Conversation::Direct { user_id } => user_id.as_uuid(),
        Conversation::Channel { channel_id } => channel_id,
    }
}

/// What marking a message read did.
#[derive(Debug)]
pub struct ReadOutcome {
    /// The message's conversation, as the reader sees it.
    pub conversation: Conversation,
    /// Whether the read state changed.
    pub changed: bool,
    /// Receipts stored for the reader's other devices and the senders' devices.
    pub items: Vec<(DeviceRef, StreamItem)>,
}

/// Marks a message read by `reader`'s user, or (with `up_to`) everything up to it in its
/// conversation, and stores the receipts, in one transaction. `None`: the reader's user
/// neither received nor sent this message.
pub async fn mark_read(
    pool: &PgPool,
    reader: DeviceRef,
    message_id: Uuid,
    up_to: bool,
) -> Result<Option<ReadOutcome>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let message: Option<MessageRow> = sqlx::query_as(
        "SELECT m.sender_user_id, m.recipient_user_id, m.channel_id,
                EXISTS (SELECT 1 FROM message_envelopes e
                        WHERE e.message_id = m.message_id AND e.recipient_user_id = $2) AS received
         FROM messages m WHERE m.message_id = $1",
    )
    .bind(message_id)
    .bind(reader.user_id.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(message) = message else {
        return Ok(None);
    };
    let own = UserId::from(message.sender_user_id) == reader.user_id;
    // A one-to-one message the reader's user only sent to itself has no conversation.
    let conversation = message.conversation_for(reader.user_id);
    let (Some(conversation), true) = (conversation, message.received || own) else {
        return Ok(None);
    };
    if own && !up_to {
        // Reading one's own message changes nothing.
        return Ok(Some(ReadOutcome {
            conversation,
            changed: false,
            items: Vec::new(),
        }));
    }

    let conversation_id = conversation_key(conversation);
    // The senders whose messages this read covers (the reader's own user excluded).
    let (read_at, senders): (Option<DateTime<Utc>>, Vec<Uuid>) = if up_to {
        let previous: Option<Uuid> = sqlx::query_scalar(
            "SELECT up_to_message_id FROM read_markers
             WHERE reader_user_id = $1 AND conversation_id = $2 FOR UPDATE",
        )
        .bind(reader.user_id.as_uuid())
        .bind(conversation_id)
        .fetch_optional(&mut *tx)
        .await?;
        if previous.is_some_and(|previous| previous >= message_id) {
            (None, Vec::new())
        } else {
            let read_at: DateTime<Utc> = sqlx::query_scalar(
                "INSERT INTO read_markers (reader_user_id, conversation_id, up_to_message_id)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (reader_user_id, conversation_id)
                 DO UPDATE SET up_to_message_id = EXCLUDED.up_to_message_id, read_at = now()
                 RETURNING read_at",
            )
            .bind(reader.user_id.as_uuid())
            .bind(conversation_id)
            .bind(message_id)
            .fetch_one(&mut *tx)
            .await?;
            let senders = match conversation {
                Conversation::Direct { user_id } => vec![user_id.as_uuid()],
                Conversation::Channel { channel_id } => {
                    sqlx::query_scalar(
                        "SELECT DISTINCT sender_user_id FROM messages
                         WHERE channel_id = $1 AND message_id > $2 AND message_id <= $3
                           AND sender_user_id <> $4",
                    )
                    .bind(channel_id)
                    .bind(previous.unwrap_or(Uuid::nil()))
                    .bind(message_id)
                    .bind(reader.user_id.as_uuid())
                    .fetch_all(&mut *tx)
                    .await?
                }
            };
            (Some(read_at), senders)
        }
    } else {
        let read_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO message_reads (message_id, reader_user_id) VALUES ($1, $2)
             ON CONFLICT DO NOTHING RETURNING read_at",
        )
        .bind(message_id)
        .bind(reader.user_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        (read_at, vec![message.sender_user_id])
    };
    let Some(read_at) = read_at else {
        return Ok(Some(ReadOutcome {
            conversation,
            changed: false,
            items: Vec::new(),
        }));
    };

    // Privacy: the reader must send read receipts and each sender show them. The reader's
    // own devices sync read state regardless.
    let mut involved: Vec<Uuid> = senders.clone();
    involved.push(reader.user_id.as_uuid());
    let settings: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        "SELECT user_id, send_read_receipts, show_read_receipts FROM users WHERE user_id = ANY($1)",
    )
    .bind(&involved)
    .fetch_all(&mut *tx)
    .await?;
    let reader_sends = settings
        .iter()
        .any(|(user, send, _)| *user == reader.user_id.as_uuid() && *send);
    let showing: BTreeSet<Uuid> = settings
        .iter()
        .filter(|(_, _, show)| *show)
        .map(|(user, _, _)| *user)
        .collect();

    let receipt = |conversation: Conversation| {
        StreamItem::Read(ReadReceipt {
            seq: 0,
            reader_user_id: reader.user_id,
            reader_device_id: reader.device_id,
            conversation,
            message_id,
            up_to,
            read_at,
        })
    };
    let mut items = vec![UserItem {
        user_id: reader.user_id,
        except: Some(reader.device_id),
        item: receipt(conversation),
    }];
    if reader_sends {
        for sender in senders.into_iter().filter(|s| showing.contains(s)) {
            // The conversation as the sender sees it.
            let theirs = match conversation {
                Conversation::Direct { .. } => Conversation::Direct {
                    user_id: reader.user_id,
                },
                channel => channel,
            };
            items.push(UserItem {
                user_id: UserId::from(sender),
                except: None,
                item: receipt(theirs),
            });
        }
    }
    let items = append_to_users(&mut tx, &items).await?;
    tx.commit().await?;
    Ok(Some(ReadOutcome {
        conversation,
        changed: true,
        items,
    }))
}

/// A message's delivery state, for a device of its sender (`None` for anyone else).
pub async fn delivery_state(
    pool: &PgPool,
    caller: UserId,
    message_id: Uuid,
) -> Result<Option<DeliveryState>, sqlx::Error> {
    let message: Option<(Uuid, Option<Uuid>, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT m.sender_user_id, m.recipient_user_id, m.channel_id, u.show_read_receipts
         FROM messages m JOIN users u ON u.user_id = m.sender_user_id
         WHERE m.message_id = $1",
    )
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    let Some((sender, _, channel_id, shows)) = message else {
        return Ok(None);
    };
    if sender != caller.as_uuid() {
        return Ok(None);
    }
    let rows: Vec<(Uuid, i32, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT recipient_user_id, recipient_device_id, delivered_at FROM message_envelopes
         WHERE message_id = $1 AND recipient_user_id <> $2
         ORDER BY recipient_user_id, recipient_device_id",
    )
    .bind(message_id)
    .bind(sender)
    .fetch_all(pool)
    .await?;
    let mut devices = Vec::with_capacity(rows.len());
    let mut users = BTreeSet::new();
    for (user, device, delivered_at) in rows {
        users.insert(user);
        devices.push(DeviceDelivery {
            user_id: UserId::from(user),
            device_id: device_id(device)?,
            delivered_at,
        });
    }
    let reads: Vec<(Uuid, DateTime<Utc>)> = if shows && !users.is_empty() {
        // A recipient's read markers are keyed by its view of the conversation: the
        // sender, or the channel.
        let conversation_id = channel_id.unwrap_or(sender);
        let users: Vec<Uuid> = users.into_iter().collect();
        sqlx::query_as(
            "SELECT u.user_id, COALESCE(r.read_at, k.read_at) AS read_at
             FROM users u
             LEFT JOIN message_reads r ON r.message_id = $1 AND r.reader_user_id = u.user_id
             LEFT JOIN read_markers k ON k.reader_user_id = u.user_id AND k.conversation_id = $2
                 AND k.up_to_message_id >= $1
             WHERE u.user_id = ANY($3) AND u.send_read_receipts
               AND COALESCE(r.read_at, k.read_at) IS NOT NULL
             ORDER BY u.user_id",
        )
        .bind(message_id)
        .bind(conversation_id)
        .bind(&users)
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };
    let state = if !reads.is_empty() {
        MessageState::Read
    } else if devices.iter().any(|d| d.delivered_at.is_some()) {
        MessageState::Delivered
    } else {
        MessageState::Sent
    };
    Ok(Some(DeliveryState {
        message_id,
        state,
        devices,
        reads: reads
            .into_iter()
            .map(|(user, read_at)| UserRead {
                user_id: UserId::from(user),
                read_at,
            })
            .collect(),
    }))
}
