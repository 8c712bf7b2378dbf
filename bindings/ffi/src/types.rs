//! The SDK's records and enums, exposed as they are: each `#[uniffi::remote]` item
//! restates the SDK's definition (the compiler rejects a field or variant that differs)
//! and uniffi generates the conversions for it. The documentation here is what the
//! generated Kotlin, Swift and Python carry.

use courier_sdk::app::{
    AppEvent, AppEventKind, ChannelInfo, ConnectionState, DeliveryInfo, DeviceAddress,
    DeviceDelivery, DeviceInfo, MembershipKind, MessageStatus, PrivacySettings, ReceiveSummary,
    SentMessage, TrustLevel, UserRead,
};

/// One device of one user.
#[uniffi::remote(Record)]
pub struct DeviceAddress {
    /// The user (a UUID, hyphenated, lowercase).
    pub user_id: String,
    /// The server-assigned device ID.
    pub device_id: u32,
}

/// What the server answered to a send.
#[uniffi::remote(Record)]
pub struct SentMessage {
    /// The server's message ID.
    pub message_id: String,
    /// The client message ID it was sent under (given, or generated).
    pub client_message_id: String,
    /// When the server stored it (milliseconds since the Unix epoch).
    pub server_timestamp_ms: i64,
}

/// How far this device trusts another device's identity keys.
#[uniffi::remote(Enum)]
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

/// What this device knows of another device (or of itself).
#[uniffi::remote(Record)]
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

/// A channel: its members and the devices a group message reaches.
#[uniffi::remote(Record)]
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

/// A sent message as a whole.
#[uniffi::remote(Enum)]
pub enum MessageStatus {
    /// Stored; no recipient device has it yet.
    Sent,
    /// At least one recipient device acknowledged it.
    Delivered,
    /// At least one recipient read it (as privacy settings allow).
    Read,
}

/// One recipient device's copy of a sent message.
#[uniffi::remote(Record)]
pub struct DeviceDelivery {
    /// The recipient device.
    pub device: DeviceAddress,
    /// When it acknowledged the message; absent while pending.
    pub delivered_at_ms: Option<i64>,
}

/// A recipient user that read a sent message.
#[uniffi::remote(Record)]
pub struct UserRead {
    /// The reader.
    pub user_id: String,
    /// When the read state covering the message was set.
    pub read_at_ms: i64,
}

/// A sent message's delivery state.
#[uniffi::remote(Record)]
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

/// A user's read-receipt privacy settings.
#[uniffi::remote(Record)]
pub struct PrivacySettings {
    /// Others learn when this user reads their messages.
    pub send_read_receipts: bool,
    /// This user learns when others read its messages.
    pub show_read_receipts: bool,
}

/// What one pass over the stream stored.
#[uniffi::remote(Record)]
pub struct ReceiveSummary {
    /// New messages stored.
    pub messages: u32,
    /// Items seen before (redeliveries).
    pub duplicates: u32,
    /// Items that could not be read (reported as events).
    pub failures: u32,
}

/// What happened to a channel's membership.
#[uniffi::remote(Enum)]
pub enum MembershipKind {
    /// The channel was created with these members.
    Created,
    /// These users joined.
    Added,
    /// These users left or were removed.
    Removed,
}

/// One event for the app, with its place in the queue (confirm up to `seq`).
#[uniffi::remote(Record)]
pub struct AppEvent {
    /// The event's position in this device's event queue.
    pub seq: u64,
    /// What happened.
    pub kind: AppEventKind,
}

/// What happened. Bodies are the plaintext the sender encrypted.
#[uniffi::remote(Enum)]
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
        /// Why (as for `DecryptionFailed`).
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

/// The receive loop's connection to the server.
#[uniffi::remote(Enum)]
pub enum ConnectionState {
    /// Opening the stream.
    Connecting,
    /// The stream is open; what is waiting arrives, then new items as they come.
    Connected,
    /// The connection dropped or was refused; the next try is in `retry_in_ms`.
    Disconnected {
        /// Milliseconds until the next connection attempt.
        retry_in_ms: u64,
    },
    /// The loop ended (cancelled, logged out, the client dropped, or a final error
    /// reported through `on_error`).
    Stopped,
}
