//! The records JavaScript sees: `courier_sdk::app`'s records field for field (napi turns
//! the snake_case names into camelCase), times as milliseconds (`number`), device IDs as
//! `number`, bodies as `Buffer`. Conversions only.

// napi-derive's generated glue for the `#[napi]` items of this module is unsafe; the
// hand-written code here has none.
#![allow(unsafe_code)]

use courier_sdk::app;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

/// Event sequence numbers and times are `u64`/`i64` in the SDK and `number` here: exact up
/// to 2^53, which a queue position or a millisecond time never reaches.
#[allow(clippy::cast_precision_loss)] // exact below 2^53 (see above)
pub(crate) fn number(value: u64) -> f64 {
    value as f64
}

/// One device of one user.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct DeviceAddress {
    /// The user (a UUID, hyphenated, lowercase).
    pub user_id: String,
    /// The server-assigned device ID.
    pub device_id: u32,
}

impl From<app::DeviceAddress> for DeviceAddress {
    fn from(device: app::DeviceAddress) -> Self {
        Self {
            user_id: device.user_id,
            device_id: device.device_id,
        }
    }
}

fn addresses(devices: Vec<app::DeviceAddress>) -> Vec<DeviceAddress> {
    devices.into_iter().map(DeviceAddress::from).collect()
}

/// What the server answered to a send.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct SentMessage {
    /// The server's message ID.
    pub message_id: String,
    /// The client message ID it was sent under (given, or generated).
    pub client_message_id: String,
    /// When the server stored it (ms since the Unix epoch).
    pub server_timestamp_ms: i64,
}

impl From<app::SentMessage> for SentMessage {
    fn from(sent: app::SentMessage) -> Self {
        Self {
            message_id: sent.message_id,
            client_message_id: sent.client_message_id,
            server_timestamp_ms: sent.server_timestamp_ms,
        }
    }
}

/// How far this device trusts another device's identity keys.
#[napi(string_enum = "snake_case")]
#[derive(Debug)]
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

impl From<app::TrustLevel> for TrustLevel {
    fn from(trust: app::TrustLevel) -> Self {
        match trust {
            app::TrustLevel::TrustedOnFirstUse => Self::TrustedOnFirstUse,
            app::TrustLevel::Verified => Self::Verified,
            app::TrustLevel::Unverified => Self::Unverified,
            app::TrustLevel::IdentityChanged => Self::IdentityChanged,
        }
    }
}

/// What this device knows of another device (or of itself).
#[napi(object)]
#[derive(Debug)]
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

impl From<app::DeviceInfo> for DeviceInfo {
    fn from(info: app::DeviceInfo) -> Self {
        Self {
            device: info.device.into(),
            trust: info.trust.into(),
            removed: info.removed,
            fingerprint: info.fingerprint,
        }
    }
}

/// A channel: its members and the devices a group message reaches.
#[napi(object)]
#[derive(Debug)]
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

impl From<app::ChannelInfo> for ChannelInfo {
    fn from(channel: app::ChannelInfo) -> Self {
        Self {
            channel_id: channel.channel_id,
            created_by: channel.created_by,
            members: channel.members,
            devices: addresses(channel.devices),
        }
    }
}

/// A sent message as a whole.
#[napi(string_enum = "lowercase")]
#[derive(Debug)]
pub enum MessageStatus {
    /// Stored; no recipient device has it yet.
    Sent,
    /// At least one recipient device acknowledged it.
    Delivered,
    /// At least one recipient read it (as privacy settings allow).
    Read,
}

/// One recipient device's copy of a sent message.
#[napi(object)]
#[derive(Debug)]
pub struct DeviceDelivery {
    /// The recipient device.
    pub device: DeviceAddress,
    /// When it acknowledged the message; absent while pending.
    pub delivered_at_ms: Option<i64>,
}

/// A recipient user that read a sent message.
#[napi(object)]
#[derive(Debug)]
pub struct UserRead {
    /// The reader.
    pub user_id: String,
    /// When the read state covering the message was set.
    pub read_at_ms: i64,
}

/// A sent message's delivery state.
#[napi(object)]
#[derive(Debug)]
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

impl From<app::DeliveryInfo> for DeliveryInfo {
    fn from(info: app::DeliveryInfo) -> Self {
        Self {
            message_id: info.message_id,
            status: match info.status {
                app::MessageStatus::Sent => MessageStatus::Sent,
                app::MessageStatus::Delivered => MessageStatus::Delivered,
                app::MessageStatus::Read => MessageStatus::Read,
            },
            devices: info
                .devices
                .into_iter()
                .map(|d| DeviceDelivery {
                    device: d.device.into(),
                    delivered_at_ms: d.delivered_at_ms,
                })
                .collect(),
            reads: info
                .reads
                .into_iter()
                .map(|r| UserRead {
                    user_id: r.user_id,
                    read_at_ms: r.read_at_ms,
                })
                .collect(),
        }
    }
}

/// A user's read-receipt privacy settings.
#[napi(object)]
#[derive(Debug)]
pub struct PrivacySettings {
    /// Others learn when this user reads their messages.
    pub send_read_receipts: bool,
    /// This user learns when others read its messages.
    pub show_read_receipts: bool,
}

impl From<app::PrivacySettings> for PrivacySettings {
    fn from(settings: app::PrivacySettings) -> Self {
        Self {
            send_read_receipts: settings.send_read_receipts,
            show_read_receipts: settings.show_read_receipts,
        }
    }
}

/// What one pass over the stream stored.
#[napi(object)]
#[derive(Debug)]
pub struct ReceiveSummary {
    /// New messages stored.
    pub messages: u32,
    /// Items seen before (redeliveries).
    pub duplicates: u32,
    /// Items that could not be read (reported as events).
    pub failures: u32,
}

impl From<app::ReceiveSummary> for ReceiveSummary {
    fn from(summary: app::ReceiveSummary) -> Self {
        Self {
            messages: summary.messages,
            duplicates: summary.duplicates,
            failures: summary.failures,
        }
    }
}

/// What happened to a channel's membership.
#[napi(string_enum = "lowercase")]
#[derive(Debug)]
pub enum MembershipKind {
    /// The channel was created with these members.
    Created,
    /// These users joined.
    Added,
    /// These users left or were removed.
    Removed,
}

/// The receive loop's connection to the server (`state` tells which).
#[napi(
    discriminant = "state",
    discriminant_case = "lowercase",
    object_from_js = false
)]
#[derive(Debug)]
pub enum ConnectionState {
    /// Opening the stream.
    Connecting,
    /// The stream is open.
    Connected,
    /// The connection dropped or was refused; the next try is in `retryInMs`.
    Disconnected {
        /// Milliseconds until the next connection attempt.
        retry_in_ms: f64,
    },
    /// The loop ended (cancelled, logged out, the client closed, or a final error
    /// reported through `onError`).
    Stopped,
}

impl From<app::ConnectionState> for ConnectionState {
    fn from(state: app::ConnectionState) -> Self {
        match state {
            app::ConnectionState::Connecting => Self::Connecting,
            app::ConnectionState::Connected => Self::Connected,
            app::ConnectionState::Disconnected { retry_in_ms } => Self::Disconnected {
                retry_in_ms: number(retry_in_ms),
            },
            app::ConnectionState::Stopped => Self::Stopped,
        }
    }
}

/// One event from the receive loop: `type` tells which, `seq` is its place in this
/// device's event queue (`confirmEvents(seq)` confirms it and everything before).
/// Message bodies are `Buffer`s holding the plaintext.
#[napi(
    discriminant = "type",
    discriminant_case = "snake_case",
    object_from_js = false
)]
pub enum AppEvent {
    /// A message arrived (from another user, or a copy of what another device of this
    /// user sent).
    Message {
        /// The event's position in the queue.
        seq: f64,
        /// The server's message ID.
        message_id: String,
        /// The sending device.
        sender: DeviceAddress,
        /// The other party of the conversation: the sender's user, or for a copy of this
        /// user's own message, the user it was sent to.
        conversation_user_id: String,
        /// The sender's client message ID.
        client_message_id: String,
        /// The sender's clock at sending (ms).
        sent_at_ms: f64,
        /// When the server stored it (ms).
        server_timestamp_ms: i64,
        /// Sent by another device of this user.
        from_own_device: bool,
        /// The plaintext.
        body: Buffer,
    },
    /// An envelope could not be read; `reason` is one of `sender_blocked`,
    /// `sender_removed`, `unknown_sender`, `malformed`, `undecryptable`, `wrong_sender`,
    /// `wrong_recipient`, `wrong_conversation`, `client_message_id_mismatch`,
    /// `timestamp_out_of_range`, `rejected`.
    DecryptionFailed {
        /// The event's position in the queue.
        seq: f64,
        /// The server's message ID.
        message_id: String,
        /// The device that sent it.
        sender: DeviceAddress,
        /// Why.
        reason: String,
    },
    /// A device appeared after first contact (not trusted until verified).
    DeviceAdded {
        /// The event's position in the queue.
        seq: f64,
        /// The device.
        device: DeviceAddress,
    },
    /// A device is gone.
    DeviceRemoved {
        /// The event's position in the queue.
        seq: f64,
        /// The device.
        device: DeviceAddress,
    },
    /// A device's identity keys changed: it is blocked until the app accepts.
    DeviceIdentityChanged {
        /// The event's position in the queue.
        seq: f64,
        /// The device.
        device: DeviceAddress,
    },
    /// The server stored a message this device sent.
    Sent {
        /// The event's position in the queue.
        seq: f64,
        /// The server's message ID.
        message_id: String,
        /// The client message ID.
        client_message_id: String,
        /// The user it went to.
        recipient_user_id: String,
        /// When the server stored it (ms).
        server_timestamp_ms: i64,
    },
    /// A group message arrived.
    GroupMessage {
        /// The event's position in the queue.
        seq: f64,
        /// The server's message ID.
        message_id: String,
        /// The channel.
        channel_id: String,
        /// The sending device.
        sender: DeviceAddress,
        /// The sender's client message ID.
        client_message_id: String,
        /// The sender's clock at sending (ms).
        sent_at_ms: f64,
        /// When the server stored it (ms).
        server_timestamp_ms: i64,
        /// The plaintext.
        body: Buffer,
    },
    /// A group message (with its ID) or a sender key (without) could not be read.
    GroupDecryptionFailed {
        /// The event's position in the queue.
        seq: f64,
        /// The channel.
        channel_id: String,
        /// The sending device.
        sender: DeviceAddress,
        /// The message, when it was a message.
        message_id: Option<String>,
        /// Why (as for `decryption_failed`).
        reason: String,
    },
    /// The server stored a group message this device sent.
    GroupSent {
        /// The event's position in the queue.
        seq: f64,
        /// The server's message ID.
        message_id: String,
        /// The channel.
        channel_id: String,
        /// The client message ID.
        client_message_id: String,
        /// When the server stored it (ms).
        server_timestamp_ms: i64,
    },
    /// A recipient device acknowledged a message this user sent.
    Delivered {
        /// The event's position in the queue.
        seq: f64,
        /// The message.
        message_id: String,
        /// The recipient device.
        device: DeviceAddress,
        /// When (ms).
        delivered_at_ms: i64,
    },
    /// Messages were read: by this user on another device (`reader` is this user), or by
    /// a recipient (a read receipt).
    Read {
        /// The event's position in the queue.
        seq: f64,
        /// Who read, on which device.
        reader: DeviceAddress,
        /// The direct conversation (from the reader's point of view), if it is one.
        conversation_user_id: Option<String>,
        /// The channel, if it is one.
        channel_id: Option<String>,
        /// The message read, or the last one read.
        message_id: String,
        /// Every message of the conversation up to `messageId` is read.
        up_to: bool,
        /// When it was marked read (ms).
        read_at_ms: i64,
    },
    /// A channel's membership changed.
    Membership {
        /// The event's position in the queue.
        seq: f64,
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
        /// When (ms).
        at_ms: i64,
    },
}

impl std::fmt::Debug for AppEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Bodies are message plaintext: never in a debug string.
        f.debug_struct("AppEvent").finish_non_exhaustive()
    }
}

impl From<app::AppEvent> for AppEvent {
    fn from(event: app::AppEvent) -> Self {
        use app::AppEventKind as K;
        let seq = number(event.seq);
        match event.kind {
            K::Message {
                message_id,
                sender,
                conversation_user_id,
                client_message_id,
                sent_at_ms,
                server_timestamp_ms,
                from_own_device,
                body,
            } => Self::Message {
                seq,
                message_id,
                sender: sender.into(),
                conversation_user_id,
                client_message_id,
                sent_at_ms: number(sent_at_ms),
                server_timestamp_ms,
                from_own_device,
                body: body.into(),
            },
            K::DecryptionFailed {
                message_id,
                sender,
                reason,
            } => Self::DecryptionFailed {
                seq,
                message_id,
                sender: sender.into(),
                reason,
            },
            K::DeviceAdded { device } => Self::DeviceAdded {
                seq,
                device: device.into(),
            },
            K::DeviceRemoved { device } => Self::DeviceRemoved {
                seq,
                device: device.into(),
            },
            K::DeviceIdentityChanged { device } => Self::DeviceIdentityChanged {
                seq,
                device: device.into(),
            },
            K::Sent {
                message_id,
                client_message_id,
                recipient_user_id,
                server_timestamp_ms,
            } => Self::Sent {
                seq,
                message_id,
                client_message_id,
                recipient_user_id,
                server_timestamp_ms,
            },
            K::GroupMessage {
                message_id,
                channel_id,
                sender,
                client_message_id,
                sent_at_ms,
                server_timestamp_ms,
                body,
            } => Self::GroupMessage {
                seq,
                message_id,
                channel_id,
                sender: sender.into(),
                client_message_id,
                sent_at_ms: number(sent_at_ms),
                server_timestamp_ms,
                body: body.into(),
            },
            K::GroupDecryptionFailed {
                channel_id,
                sender,
                message_id,
                reason,
            } => Self::GroupDecryptionFailed {
                seq,
                channel_id,
                sender: sender.into(),
                message_id,
                reason,
            },
            K::GroupSent {
                message_id,
                channel_id,
                client_message_id,
                server_timestamp_ms,
            } => Self::GroupSent {
                seq,
                message_id,
                channel_id,
                client_message_id,
                server_timestamp_ms,
            },
            K::Delivered {
                message_id,
                device,
                delivered_at_ms,
            } => Self::Delivered {
                seq,
                message_id,
                device: device.into(),
                delivered_at_ms,
            },
            K::Read {
                reader,
                conversation_user_id,
                channel_id,
                message_id,
                up_to,
                read_at_ms,
            } => Self::Read {
                seq,
                reader: reader.into(),
                conversation_user_id,
                channel_id,
                message_id,
                up_to,
                read_at_ms,
            },
            K::Membership {
                channel_id,
                change,
                user_ids,
                by_user_id,
                members,
                at_ms,
            } => Self::Membership {
                seq,
                channel_id,
                change: match change {
                    app::MembershipKind::Created => MembershipKind::Created,
                    app::MembershipKind::Added => MembershipKind::Added,
                    app::MembershipKind::Removed => MembershipKind::Removed,
                },
                user_ids,
                by_user_id,
                members,
                at_ms,
            },
        }
    }
}
