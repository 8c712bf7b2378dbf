//! The app-facing records: owned values only (IDs as strings, device IDs as `u32`, times
//! as milliseconds since the Unix epoch, bodies as bytes), so a binding maps each field
//! to its language's own type without knowing the wire.

use chrono::{DateTime, Utc};
use courier_protocol::api::channels::{Channel, MembershipChangeKind};
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::api::receipts::{self, Conversation, DeliveryState, MessageState};
use courier_protocol::{DeviceId, UserId};
use uuid::Uuid;

use super::CourierError;
use crate::crypto::{DeviceRecord, Event, FailureReason, QueuedEvent, TrustState};

/// One device of one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceAddress {
    /// The user (a UUID, hyphenated, lowercase).
    pub user_id: String,
    /// The server-assigned device ID.
    pub device_id: u32,
}

impl From<DeviceRef> for DeviceAddress {
    fn from(device: DeviceRef) -> Self {
        Self {
            user_id: device.user_id.to_string(),
            device_id: device.device_id.get(),
        }
    }
}

impl DeviceAddress {
    pub(crate) fn to_ref(&self) -> Result<DeviceRef, CourierError> {
        Ok(DeviceRef {
            user_id: parse_user(&self.user_id)?,
            device_id: parse_device(self.device_id)?,
        })
    }
}

pub(crate) fn parse_uuid(what: &str, text: &str) -> Result<Uuid, CourierError> {
    Uuid::parse_str(text).map_err(|_| CourierError::invalid(format!("{what} is not a UUID")))
}

pub(crate) fn parse_user(text: &str) -> Result<UserId, CourierError> {
    parse_uuid("the user ID", text).map(UserId::from)
}

pub(crate) fn parse_device(device_id: u32) -> Result<DeviceId, CourierError> {
    DeviceId::new(device_id)
        .map_err(|_| CourierError::invalid(format!("{device_id} is not a device ID")))
}

pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn id(uuid: Uuid) -> String {
    uuid.hyphenated().to_string()
}

/// What the server answered to a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The server's message ID.
    pub message_id: String,
    /// The client message ID it was sent under (given, or generated).
    pub client_message_id: String,
    /// When the server stored it.
    pub server_timestamp_ms: i64,
}

impl SentMessage {
    pub(crate) fn new(response: &SendMessageResponse, client_message_id: String) -> Self {
        Self {
            message_id: id(response.message_id),
            client_message_id,
            server_timestamp_ms: millis(response.server_timestamp),
        }
    }
}

/// How far this device trusts another device's identity keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustLevel {
    /// Known when this device first learned of its user: trusted on first use.
    TrustedOnFirstUse,
    /// The user compared fingerprints or safety numbers.
    Verified,
    /// Appeared after first contact; not verified.
    Unverified,
    /// Its identity keys changed: blocked until the app accepts the change.
    IdentityChanged,
}

impl From<TrustState> for TrustLevel {
    fn from(trust: TrustState) -> Self {
        match trust {
            TrustState::TrustedOnFirstUse => Self::TrustedOnFirstUse,
            TrustState::Verified => Self::Verified,
            TrustState::Unverified => Self::Unverified,
            TrustState::IdentityChanged => Self::IdentityChanged,
        }
    }
}

/// What this device knows of another device (or of itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device.
    pub device: DeviceAddress,
    /// Its trust level.
    pub trust: TrustLevel,
    /// The server no longer lists it.
    pub removed: bool,
    /// Its identity key's fingerprint, to compare out of band.
    pub fingerprint: String,
}

impl DeviceInfo {
    pub(crate) fn new(record: &DeviceRecord, fingerprint: String) -> Self {
        Self {
            device: record.device_ref().into(),
            trust: record.trust.into(),
            removed: record.removed,
            fingerprint,
        }
    }
}

/// A channel: its members and the devices a group message reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel (a UUID).
    pub channel_id: String,
    /// Who created it (the only member who may remove others).
    pub created_by: String,
    /// The members, in ID order.
    pub members: Vec<String>,
    /// The member devices a group message must reach.
    pub devices: Vec<DeviceAddress>,
}

impl From<Channel> for ChannelInfo {
    fn from(channel: Channel) -> Self {
        Self {
            channel_id: id(channel.channel_id),
            created_by: channel.created_by.to_string(),
            members: channel.members.iter().map(ToString::to_string).collect(),
            devices: channel.devices.into_iter().map(Into::into).collect(),
        }
    }
}

/// A sent message as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Stored; no recipient device has it yet.
    Sent,
    /// At least one recipient device acknowledged it.
    Delivered,
    /// At least one recipient read it (as privacy settings allow).
    Read,
}

/// One recipient device's copy of a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDelivery {
    /// The recipient device.
    pub device: DeviceAddress,
    /// When it acknowledged the message; `None` while pending.
    pub delivered_at_ms: Option<i64>,
}

/// A recipient user that read a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRead {
    /// The reader.
    pub user_id: String,
    /// When the read state covering the message was set.
    pub read_at_ms: i64,
}

/// A sent message's delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The message.
    pub message_id: String,
    /// The message as a whole.
    pub status: MessageStatus,
    /// Every recipient device it was stored for.
    pub devices: Vec<DeviceDelivery>,
    /// Recipient users that read it.
    pub reads: Vec<UserRead>,
}

impl From<DeliveryState> for DeliveryInfo {
    fn from(state: DeliveryState) -> Self {
        Self {
            message_id: id(state.message_id),
            status: match state.state {
                MessageState::Sent => MessageStatus::Sent,
                MessageState::Delivered => MessageStatus::Delivered,
                MessageState::Read => MessageStatus::Read,
            },
            devices: state
                .devices
                .into_iter()
                .map(|d| DeviceDelivery {
                    device: DeviceRef {
                        user_id: d.user_id,
                        device_id: d.device_id,
                    }
                    .into(),
                    delivered_at_ms: d.delivered_at.map(millis),
                })
                .collect(),
            reads: state
                .reads
                .into_iter()
                .map(|r| UserRead {
                    user_id: r.user_id.to_string(),
                    read_at_ms: millis(r.read_at),
                })
                .collect(),
        }
    }
}

/// A user's read-receipt privacy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrivacySettings {
    /// Others learn when this user reads their messages.
    pub send_read_receipts: bool,
    /// This user learns when others read its messages.
    pub show_read_receipts: bool,
}

impl From<receipts::PrivacySettings> for PrivacySettings {
    fn from(settings: receipts::PrivacySettings) -> Self {
        Self {
            send_read_receipts: settings.send_read_receipts,
            show_read_receipts: settings.show_read_receipts,
        }
    }
}

/// What one pass over the stream stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ReceiveSummary {
    /// New messages stored.
    pub messages: u32,
    /// Items seen before (redeliveries).
    pub duplicates: u32,
    /// Items that could not be read (reported as events).
    pub failures: u32,
}

impl From<crate::client::ReceiveSummary> for ReceiveSummary {
    fn from(summary: crate::client::ReceiveSummary) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            messages: count(summary.messages),
            duplicates: count(summary.duplicates),
            failures: count(summary.failures),
        }
    }
}

/// What happened to a channel's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipKind {
    /// The channel was created with these members.
    Created,
    /// These users joined.
    Added,
    /// These users left or were removed.
    Removed,
}

/// One event for the app, with its place in the queue (confirm up to `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEvent {
    /// The event's position in this device's event queue.
    pub seq: u64,
    /// What happened.
    pub kind: AppEventKind,
}

/// What happened. Bodies are the plaintext the sender encrypted; `Debug` shows their
/// length only.
#[derive(Clone, PartialEq, Eq)]
pub enum AppEventKind {
    /// A message arrived (from another user, or a copy of what another device of this
    /// user sent).
    Message {
        /// The server's message ID.
        message_id: String,
        /// The sending device.
        sender: DeviceAddress,
        /// The other party of the conversation: the sender's user, or for a copy of this
        /// user's own message, the user it was sent to.
        conversation_user_id: String,
        /// The sender's client message ID.
        client_message_id: String,
        /// The sender's clock at sending.
        sent_at_ms: u64,
        /// When the server stored it.
        server_timestamp_ms: i64,
        /// Sent by another device of this user.
        from_own_device: bool,
        /// The plaintext.
        body: Vec<u8>,
    },
    /// An envelope could not be read; `reason` is one of `sender_blocked`,
    /// `sender_removed`, `unknown_sender`, `malformed`, `undecryptable`, `wrong_sender`,
    /// `wrong_recipient`, `wrong_conversation`, `client_message_id_mismatch`,
    /// `timestamp_out_of_range`, `rejected`.
    DecryptionFailed {
        /// The server's message ID.
        message_id: String,
        /// The device that sent it.
        sender: DeviceAddress,
        /// Why.
        reason: String,
    },
    /// A device appeared after first contact (not trusted until verified).
    DeviceAdded {
        /// The device.
        device: DeviceAddress,
    },
    /// A device is gone.
    DeviceRemoved {
        /// The device.
        device: DeviceAddress,
    },
    /// A device's identity keys changed: it is blocked until the app accepts.
    DeviceIdentityChanged {
        /// The device.
        device: DeviceAddress,
    },
    /// The server stored a message this device sent.
    Sent {
        /// The server's message ID.
        message_id: String,
        /// The client message ID.
        client_message_id: String,
        /// The user it went to.
        recipient_user_id: String,
        /// When the server stored it.
        server_timestamp_ms: i64,
    },
    /// A group message arrived.
    GroupMessage {
        /// The server's message ID.
        message_id: String,
        /// The channel.
        channel_id: String,
        /// The sending device.
        sender: DeviceAddress,
        /// The sender's client message ID.
        client_message_id: String,
        /// The sender's clock at sending.
        sent_at_ms: u64,
        /// When the server stored it.
        server_timestamp_ms: i64,
        /// The plaintext.
        body: Vec<u8>,
    },
    /// A group message (with its ID) or a sender key (without) could not be read.
    GroupDecryptionFailed {
        /// The channel.
        channel_id: String,
        /// The sending device.
        sender: DeviceAddress,
        /// The message, when it was a message.
        message_id: Option<String>,
        /// Why (as for [`AppEventKind::DecryptionFailed`]).
        reason: String,
    },
    /// The server stored a group message this device sent.
    GroupSent {
        /// The server's message ID.
        message_id: String,
        /// The channel.
        channel_id: String,
        /// The client message ID.
        client_message_id: String,
        /// When the server stored it.
        server_timestamp_ms: i64,
    },
    /// A recipient device acknowledged a message this user sent.
    Delivered {
        /// The message.
        message_id: String,
        /// The recipient device.
        device: DeviceAddress,
        /// When.
        delivered_at_ms: i64,
    },
    /// Messages were read: by this user on another device (`reader` is this user: the
    /// read state to show), or by a recipient (a read receipt).
    Read {
        /// Who read, on which device.
        reader: DeviceAddress,
        /// The direct conversation (from the reader's point of view), if it is one.
        conversation_user_id: Option<String>,
        /// The channel, if it is one.
        channel_id: Option<String>,
        /// The message read, or the last one read.
        message_id: String,
        /// Every message of the conversation up to `message_id` is read.
        up_to: bool,
        /// When it was marked read.
        read_at_ms: i64,
    },
    /// A channel's membership changed.
    Membership {
        /// The channel.
        channel_id: String,
        /// What happened.
        change: MembershipKind,
        /// The users it happened to.
        user_ids: Vec<String>,
        /// Who did it.
        by_user_id: String,
        /// The members after the change.
        members: Vec<String>,
        /// When.
        at_ms: i64,
    },
}

impl std::fmt::Debug for AppEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message {
                message_id, body, ..
            } => f
                .debug_struct("Message")
                .field("message_id", message_id)
                .field("body_len", &body.len())
                .finish_non_exhaustive(),
            Self::GroupMessage {
                message_id,
                channel_id,
                body,
                ..
            } => f
                .debug_struct("GroupMessage")
                .field("message_id", message_id)
                .field("channel_id", channel_id)
                .field("body_len", &body.len())
                .finish_non_exhaustive(),
            Self::DecryptionFailed {
                message_id, reason, ..
            } => f
                .debug_struct("DecryptionFailed")
                .field("message_id", message_id)
                .field("reason", reason)
                .finish_non_exhaustive(),
            Self::DeviceAdded { device } => f.debug_tuple("DeviceAdded").field(device).finish(),
            Self::DeviceRemoved { device } => f.debug_tuple("DeviceRemoved").field(device).finish(),
            Self::DeviceIdentityChanged { device } => f
                .debug_tuple("DeviceIdentityChanged")
                .field(device)
                .finish(),
            Self::Sent { message_id, .. } => f
                .debug_struct("Sent")
                .field("message_id", message_id)
                .finish_non_exhaustive(),
            Self::GroupDecryptionFailed {
                channel_id, reason, ..
            } => f
                .debug_struct("GroupDecryptionFailed")
                .field("channel_id", channel_id)
                .field("reason", reason)
                .finish_non_exhaustive(),
            Self::GroupSent { message_id, .. } => f
                .debug_struct("GroupSent")
                .field("message_id", message_id)
                .finish_non_exhaustive(),
            Self::Delivered {
                message_id, device, ..
            } => f
                .debug_struct("Delivered")
                .field("message_id", message_id)
                .field("device", device)
                .finish_non_exhaustive(),
            Self::Read {
                message_id, up_to, ..
            } => f
                .debug_struct("Read")
                .field("message_id", message_id)
                .field("up_to", up_to)
                .finish_non_exhaustive(),
            Self::Membership {
                channel_id, change, ..
            } => f
                .debug_struct("Membership")
                .field("channel_id", channel_id)
                .field("change", change)
                .finish_non_exhaustive(),
        }
    }
}

/// The stable code of a failure reason (listed with [`AppEventKind::DecryptionFailed`]).
pub(crate) fn failure_code(reason: &FailureReason) -> String {
    match reason {
        FailureReason::SenderBlocked => "sender_blocked",
        FailureReason::SenderRemoved => "sender_removed",
        FailureReason::UnknownSender => "unknown_sender",
        FailureReason::Malformed => "malformed",
        FailureReason::Undecryptable => "undecryptable",
        FailureReason::WrongSender => "wrong_sender",
        FailureReason::WrongRecipient => "wrong_recipient",
        FailureReason::WrongConversation => "wrong_conversation",
        FailureReason::ClientMessageIdMismatch => "client_message_id_mismatch",
        FailureReason::TimestampOutOfRange => "timestamp_out_of_range",
        FailureReason::Rejected(_) => "rejected",
    }
    .to_owned()
}

impl From<QueuedEvent> for AppEvent {
    fn from(queued: QueuedEvent) -> Self {
        use crate::crypto::DeviceChange;
        let kind = match queued.event {
            Event::Message { message } => AppEventKind::Message {
                message_id: id(message.message_id),
                sender: message.sender.into(),
                conversation_user_id: message.conversation.to_string(),
                client_message_id: message.client_message_id,
                sent_at_ms: message.sent_at_ms,
                server_timestamp_ms: millis(message.server_timestamp),
                from_own_device: message.from_own_device,
                body: message.body,
            },
            Event::DecryptionFailed {
                message_id,
                sender,
                reason,
            } => AppEventKind::DecryptionFailed {
                message_id: id(message_id),
                sender: sender.into(),
                reason: failure_code(&reason),
            },
            Event::Device { change } => match change {
                DeviceChange::Added { device } => AppEventKind::DeviceAdded {
                    device: device.into(),
                },
                DeviceChange::Removed { device } => AppEventKind::DeviceRemoved {
                    device: device.into(),
                },
                DeviceChange::IdentityChanged { device } => AppEventKind::DeviceIdentityChanged {
                    device: device.into(),
                },
            },
            Event::Sent {
                message_id,
                client_message_id,
                recipient,
                server_timestamp,
            } => AppEventKind::Sent {
                message_id: id(message_id),
                client_message_id,
                recipient_user_id: recipient.to_string(),
                server_timestamp_ms: millis(server_timestamp),
            },
            Event::GroupMessage {
                message,
                server_timestamp,
            } => AppEventKind::GroupMessage {
                message_id: id(message.message_id),
                channel_id: id(message.channel_id),
                sender: message.sender.into(),
                client_message_id: message.client_message_id,
                sent_at_ms: message.sent_at_ms,
                server_timestamp_ms: millis(server_timestamp),
                body: message.body,
            },
            Event::GroupDecryptionFailed {
                channel_id,
                sender,
                message_id,
                reason,
            } => AppEventKind::GroupDecryptionFailed {
                channel_id: id(channel_id),
                sender: sender.into(),
                message_id: message_id.map(id),
                reason: failure_code(&reason),
            },
            Event::GroupSent {
                message_id,
                channel_id,
                client_message_id,
                server_timestamp,
            } => AppEventKind::GroupSent {
                message_id: id(message_id),
                channel_id: id(channel_id),
                client_message_id,
                server_timestamp_ms: millis(server_timestamp),
            },
            Event::Delivered {
                message_id,
                device,
                delivered_at,
            } => AppEventKind::Delivered {
                message_id: id(message_id),
                device: device.into(),
                delivered_at_ms: millis(delivered_at),
            },
            Event::Read { receipt } => {
                let (conversation_user_id, channel_id) = match receipt.conversation {
                    Conversation::Direct { user_id } => (Some(user_id.to_string()), None),
                    Conversation::Channel { channel_id } => (None, Some(id(channel_id))),
                };
                AppEventKind::Read {
                    reader: DeviceRef {
                        user_id: receipt.reader_user_id,
                        device_id: receipt.reader_device_id,
                    }
                    .into(),
                    conversation_user_id,
                    channel_id,
                    message_id: id(receipt.message_id),
                    up_to: receipt.up_to,
                    read_at_ms: millis(receipt.read_at),
                }
            }
            Event::Membership { change } => AppEventKind::Membership {
                channel_id: id(change.channel_id),
                change: match change.change {
                    MembershipChangeKind::Created => MembershipKind::Created,
                    MembershipChangeKind::Added => MembershipKind::Added,
                    MembershipChangeKind::Removed => MembershipKind::Removed,
                },
                user_ids: change.user_ids.iter().map(ToString::to_string).collect(),
                by_user_id: change.by_user_id.to_string(),
                members: change.members.iter().map(ToString::to_string).collect(),
                at_ms: millis(change.at),
            },
        };
        Self {
            seq: queued.seq,
            kind,
        }
    }
}
