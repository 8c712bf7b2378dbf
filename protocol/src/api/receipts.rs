//! Delivery and read receipts, read state across a user's devices, and the privacy
//! settings that govern read receipts.
//!
//! - Delivered: when a recipient device acknowledges an envelope of a V2 or group
//!   message, every device of the sender gets a [`DeliveredReceipt`] item in its stream.
//! - Read: a device marks one message, or everything up to a message in its conversation,
//!   read ([`MarkReadRequest`]). Every other device of the reader gets a [`ReadReceipt`]
//!   item (always: read state is the user's own), and so does every device of each sender
//!   whose messages it covers, when the reader sends read receipts and the sender shows
//!   them ([`PrivacySettings`]; the server enforces both).
//! - The sender asks for a message's [`DeliveryState`] at any time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{DeviceId, UserId};

/// A conversation: with one other user, or a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Conversation {
    /// The one-to-one conversation with `userId` (from the reader's point of view).
    Direct {
        /// The other user.
        // utoipa does not read `rename_all_fields`: named here for the document too.
        #[serde(rename = "userId")]
        user_id: UserId,
    },
    /// A channel.
    Channel {
        /// The channel.
        #[serde(rename = "channelId")]
        channel_id: Uuid,
    },
}

/// Recipient devices of one user that acknowledged one message at the same time (in one
/// acknowledgement batch of the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The message (sent by the user whose devices get this receipt).
    pub message_id: Uuid,
    /// The recipient devices' user.
    pub user_id: UserId,
    /// The recipient devices, in ID order.
    pub device_ids: Vec<DeviceId>,
    /// When they acknowledged it.
    pub delivered_at: DateTime<Utc>,
}

/// Stream item: recipient devices acknowledged messages this user sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeliveredReceipt {
    /// The item's position in this device's stream.
    pub seq: u64,
    /// What was delivered, one entry per message and recipient user (at most 500 entries,
    /// [`MAX_DELIVERIES_PER_RECEIPT`]; a larger batch arrives as several items).
    pub deliveries: Vec<Delivery>,
}

/// Most deliveries one [`DeliveredReceipt`] lists.
pub const MAX_DELIVERIES_PER_RECEIPT: usize = 500;

/// Stream item: a user read messages.
///
/// Sent to the reader's other devices (their read state) and to the senders of the
/// messages covered (their read receipts), subject to the privacy settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReadReceipt {
    /// The item's position in this device's stream.
    pub seq: u64,
    /// Who read.
    pub reader_user_id: UserId,
    /// On which device.
    pub reader_device_id: DeviceId,
    /// The conversation, from the reader's point of view (a sender receiving this
    /// receipt for a one-to-one conversation finds its own user ID here).
    pub conversation: Conversation,
    /// The message read, or the last message read.
    pub message_id: Uuid,
    /// `true`: every message of the conversation up to and including `messageId` (by
    /// server order) is read; `false`: only `messageId`.
    pub up_to: bool,
    /// When it was marked read.
    pub read_at: DateTime<Utc>,
}

/// `POST /v1/receipts/read`: marks a message read, or everything up to it in its
/// conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MarkReadRequest {
    /// A message the caller's user received (or sent, with `upTo`).
    pub message_id: Uuid,
    /// Also every earlier message of the same conversation.
    #[serde(default)]
    pub up_to: bool,
}

/// The answer to [`MarkReadRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MarkReadResponse {
    /// The message's conversation, from the caller's point of view.
    pub conversation: Conversation,
    /// Whether this changed the read state (`false`: it was read already).
    pub changed: bool,
}

/// A user's read-receipt privacy settings (`GET`/`PUT /v1/settings/privacy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PrivacySettings {
    /// Others learn when this user reads their messages (default on). Off, the user's
    /// own devices still sync read state.
    pub send_read_receipts: bool,
    /// This user learns when others read its messages (default on).
    pub show_read_receipts: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            send_read_receipts: true,
            show_read_receipts: true,
        }
    }
}

/// `PUT /v1/settings/privacy`: the settings to change (absent fields stay as they are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UpdatePrivacySettings {
    /// Others learn when this user reads their messages (absent: unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_read_receipts: Option<bool>,
    /// This user learns when others read its messages (absent: unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_read_receipts: Option<bool>,
}

/// A message as a whole: sent, delivered to at least one recipient device, read by at
/// least one recipient user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum MessageState {
    /// Stored; no recipient device has acknowledged it yet.
    Sent,
    /// At least one recipient device acknowledged it.
    Delivered,
    /// At least one recipient read it (only shown when the reader sends read receipts
    /// and the asking user shows them).
    Read,
}

/// One recipient device's copy of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceDelivery {
    /// The device's user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// When it acknowledged the message; absent while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A recipient user that read the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserRead {
    /// The reader.
    pub user_id: UserId,
    /// When the read state covering the message was set.
    pub read_at: DateTime<Utc>,
}

/// `GET /v1/messages/{messageId}/delivery`: a message's delivery state, for its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeliveryState {
    /// The message.
    pub message_id: Uuid,
    /// The message as a whole.
    pub state: MessageState,
    /// Every recipient device the message was stored for (the sender's own devices are
    /// not listed), in user and device order.
    pub devices: Vec<DeviceDelivery>,
    /// Recipient users that read it, as far as privacy settings allow.
    pub reads: Vec<UserRead>,
}
