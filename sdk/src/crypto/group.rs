//! Megolm group sessions for channels, sans I/O: this device's outbound session per
//! channel, the inbound sessions other devices shared with it, and the plaintexts of both.
//!
//! A channel message is encrypted once with the sender device's outbound Megolm session;
//! the server stores it once and fans it out. Each member device gets the session key
//! ("sender key") in its own Olm-encrypted [`Payload`] of kind [`PayloadKind::SenderKey`]
//! (built by [`GroupSessions::sender_key_payload`]), whose binding of sender and recipient
//! the Olm layer checks as for every payload; the caller decrypts that layer and hands
//! the payload to [`GroupSessions::add_inbound`].
//!
//! What is bound where:
//!
//! - the **sender-key payload** binds the sender (user, device, Ed25519 key), the
//!   recipient (user, device, Curve25519 key), the channel (its `conversation` field), and
//!   in its body ([`SenderKeyBody`]) the session ID and the signed session key;
//! - the **group plaintext** inside Megolm ([`GroupPlaintext`]) binds the channel, the
//!   sender user and device, the client message ID, the sender's time and the body, so
//!   the server cannot attribute a message to another channel or sender;
//! - inbound sessions are looked up by channel, sender user, sender device and session
//!   ID, and each (session, message index) is remembered with the server message ID it
//!   came as: the same pair again is a [`GroupDecrypted::Duplicate`], the same index under
//!   another message ID is a [`GroupError::Replayed`].
//!
//! Rotation ([`OutboundGroupSession::needs_rotation`]): after
//! [`MAX_MESSAGES_PER_SESSION`] messages, after [`MAX_SESSION_AGE_MS`], or as soon as a
//! device the session was shared with is no longer a member device (left, removed, or
//! re-keyed). Devices that join get the session at its current index: they read what
//! follows, not what came before.
//!
//! Every method that changes state takes a [`StoreTransaction`], so the caller can store
//! the outcome (a message, its event) in the same transaction.
//!
//! Encodings, all integers big-endian, nothing may follow the last field:
//!
//! ```text
//! group plaintext (version 1): version u8 = 1 | channel 16 | sender user 16
//!     | sender device u32 | client message ID: len u8, ASCII | timestamp ms u64
//!     | body: len u32, bytes
//! sender-key body (version 1): version u8 = 1 | session ID: len u8, ASCII
//!     | session key 229 (vodozemac's signed session-sharing format)
//! ```

use std::collections::HashSet;

use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vodozemac::megolm::{
    DecryptionError, GroupSession, GroupSessionPickle, InboundGroupSession,
    InboundGroupSessionPickle, MegolmMessage, SessionConfig, SessionKey, SessionOrdering,
};
use zeroize::{Zeroize as _, Zeroizing};

use super::devices::DeviceKeys;
use super::payload::{
    BoundDevice, Expected, Payload, PayloadError, PayloadKind, Reader, check_sent, put_body,
    put_client_message_id,
};
use super::store::{self as records, RecordError};
use crate::store::{SqliteStore, StoreError, StoreTransaction};

/// The group plaintext encoding this SDK writes and reads.
pub const GROUP_PLAINTEXT_VERSION: u8 = 1;
/// The sender-key body encoding this SDK writes and reads.
pub const SENDER_KEY_VERSION: u8 = 1;
/// An outbound session is replaced once it has encrypted this many messages.
pub const MAX_MESSAGES_PER_SESSION: u32 = 100;
/// An outbound session is replaced once it is this old (7 days).
pub const MAX_SESSION_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Length of a signed Megolm session key (vodozemac's session-sharing format).
const SESSION_KEY_LEN: usize = 229;
/// Longest session ID accepted (vodozemac's are 43 characters of base64).
const SESSION_ID_MAX_LEN: usize = 64;

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Reading or writing the store failed; the transaction rolls back.
    #[error(transparent)]
    Store(#[from] RecordError),
    /// A plaintext (a sender-key payload or its body, or a group message) is malformed
    /// or not canonical, or cannot be encoded (invalid client message ID, body too
    /// large), or a sender-key payload is addressed to another device.
    #[error(transparent)]
    Plaintext(#[from] PayloadError),
    /// The payload handed to [`GroupSessions::add_inbound`] is not a sender key.
    #[error("the payload is not a sender key")]
    NotASenderKey,
    /// The sender named inside (a sender-key payload or a group plaintext) is not the
    /// sender the Olm layer verified, or the server reported.
    #[error("the sender named inside does not match the verified sender")]
    SenderMismatch,
    /// The channel named inside is not the channel it was delivered for.
    #[error("the channel named inside does not match the channel it was delivered for")]
    ChannelMismatch,
    /// The session ID the sender key was delivered under is not the ID of the Megolm
    /// session it carries.
    #[error("the sender key's session ID does not match the session it carries")]
    SessionIdMismatch,
    /// The session key does not decode, its signature does not verify, or it does not
    /// belong to the session ID it came with.
    #[error("the session key is invalid")]
    InvalidSessionKey,
    /// A session with this ID from this sender is already stored, and the new key is not
    /// a copy of it (another ratchet, or another sender key).
    #[error("the session key conflicts with the stored session of the same ID")]
    ConflictingSession,
    /// No inbound session for this channel, sender device and session ID: its sender key
    /// has not arrived (yet), or the message is attributed to the wrong sender or channel.
    #[error("no inbound session for this channel, sender and session ID")]
    UnknownSession,
    /// The ciphertext is not a Megolm message.
    #[error("the ciphertext is not a Megolm message")]
    Malformed,
    /// The message was encrypted before the session was shared with this device (it
    /// joined later), or before the earliest index this device holds.
    #[error("message index {message_index} precedes the first known index {first_known_index}")]
    IndexBeforeFirstKnown {
        /// The earliest index this device can decrypt.
        first_known_index: u32,
        /// The message's index.
        message_index: u32,
    },
    /// Signature or MAC check failed: not encrypted with this session.
    #[error("the message does not decrypt with its session")]
    Undecryptable,
    /// This message index of the session was already seen under another server message
    /// ID: a replay.
    #[error("message index {message_index} was already received under another message ID")]
    Replayed {
        /// The replayed index.
        message_index: u32,
    },
}

impl From<StoreError> for GroupError {
    fn from(error: StoreError) -> Self {
        GroupError::Store(RecordError::Store(error))
    }
}

/// The plaintext inside a Megolm message (see the module docs for its encoding).
#[derive(Clone, PartialEq, Eq)]
pub struct GroupPlaintext {
    pub channel_id: Uuid,
    /// The sending device.
    pub sender: DeviceRef,
    pub client_message_id: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for GroupPlaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupPlaintext")
            .field("channel_id", &self.channel_id)
            .field("sender", &self.sender)
            .field("client_message_id", &self.client_message_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl GroupPlaintext {
    /// Encodes the plaintext.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        if self.sender.device_id.is_new() {
            return Err(PayloadError::InvalidDeviceId);
        }
        let mut out = Vec::with_capacity(1 + 16 + 16 + 4 + 1 + 64 + 8 + 4 + self.body.len());
        out.push(GROUP_PLAINTEXT_VERSION);
        out.extend_from_slice(self.channel_id.as_bytes());
        out.extend_from_slice(self.sender.user_id.as_bytes());
        out.extend_from_slice(&self.sender.device_id.get().to_be_bytes());
        put_client_message_id(&mut out, &self.client_message_id)?;
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        put_body(&mut out, &self.body)?;
        Ok(out)
    }

    /// Decodes a plaintext: only the exact encoding of some plaintext is accepted.
    /// Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut reader = Reader(bytes);
        let version = reader.byte()?;
        if version != GROUP_PLAINTEXT_VERSION {
            return Err(PayloadError::UnsupportedVersion(version));
        }
        let channel_id = Uuid::from_bytes(reader.array()?);
        let user_id = reader.user()?;
        let device_id = reader.device_id()?;
        let client_message_id = reader.client_message_id()?;
        let timestamp_ms = u64::from_be_bytes(reader.array()?);
        let body = reader.body()?;
        reader.finish()?;
        Ok(GroupPlaintext {
            channel_id,
            sender: DeviceRef { user_id, device_id },
            client_message_id,
            timestamp_ms,
            body,
        })
    }
}

/// The body of a sender-key payload: a session ID and its signed session key (secret).
pub struct SenderKeyBody {
    session_id: String,
    first_known_index: u32,
    session_key: SessionKey,
}

impl std::fmt::Debug for SenderKeyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKeyBody")
            .field("session_id", &self.session_id)
            .field("first_known_index", &self.first_known_index)
            .finish_non_exhaustive()
    }
}

impl SenderKeyBody {
    fn new(session_key: SessionKey) -> Self {
        let inbound = InboundGroupSession::new(&session_key, SessionConfig::version_1());
        Self {
            session_id: inbound.session_id(),
            first_known_index: inbound.first_known_index(),
            session_key,
        }
    }

    #[cfg(test)]
    /// The Megolm session ID.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    #[cfg(test)]
    /// The first message index the key decrypts.
    pub fn first_known_index(&self) -> u32 {
        self.first_known_index
    }

    /// Encodes the body (secret: it holds the session key).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let key = Zeroizing::new(self.session_key.to_bytes());
        let mut out = Zeroizing::new(Vec::with_capacity(2 + self.session_id.len() + key.len()));
        out.push(SENDER_KEY_VERSION);
        // A session ID is 43 characters of base64; the length fits.
        out.push(u8::try_from(self.session_id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.session_id.as_bytes());
        out.extend_from_slice(&key);
        out
    }

    /// Decodes a body: the session key's signature must verify and the session ID must
    /// be the key's. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, GroupError> {
        let mut reader = Reader(bytes);
        let version = reader.byte()?;
        if version != SENDER_KEY_VERSION {
            return Err(PayloadError::UnsupportedVersion(version).into());
        }
        let id_len = usize::from(reader.byte()?);
        if id_len > SESSION_ID_MAX_LEN {
            return Err(GroupError::InvalidSessionKey);
        }
        let session_id = std::str::from_utf8(reader.take(id_len)?)
            .map_err(|_| GroupError::InvalidSessionKey)?
            .to_owned();
        let key_bytes = reader.take(SESSION_KEY_LEN)?;
        reader.finish()?;
        let session_key =
            SessionKey::from_bytes(key_bytes).map_err(|_| GroupError::InvalidSessionKey)?;
        let body = Self::new(session_key);
        // The ID is derived from the key: one body, one encoding.
        if body.session_id != session_id
            || *Zeroizing::new(body.session_key.to_bytes()) != key_bytes
        {
            return Err(GroupError::InvalidSessionKey);
        }
        Ok(body)
    }
}

/// Whether a member device is this device (whatever its key).
fn same_device(a: &BoundDevice, b: DeviceRef) -> bool {
    a.user_id == b.user_id && a.device_id == b.device_id
}

/// A member device as sessions are shared with it: user, device and Curve25519 identity
/// key, so a device whose identity key changed is not the device it was shared with.
type MemberKey = (UserId, DeviceId, [u8; 32]);

fn device_key(device: &BoundDevice) -> MemberKey {
    (device.user_id, device.device_id, device.key)
}

/// This device's outbound session for one channel.
pub struct OutboundGroupSession {
    channel_id: Uuid,
    owner: DeviceRef,
    created_ms: u64,
    shared_with: Vec<BoundDevice>,
    session_id: String,
    session: GroupSession,
}

impl std::fmt::Debug for OutboundGroupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundGroupSession")
            .field("channel_id", &self.channel_id)
            .field("session_id", &self.session_id)
            .field("message_index", &self.session.message_index())
            .field("created_ms", &self.created_ms)
            .field("shared_with", &self.shared_with.len())
            .finish_non_exhaustive()
    }
}

impl OutboundGroupSession {
    #[cfg(test)]
    /// The channel.
    pub fn channel_id(&self) -> Uuid {
        self.channel_id
    }

    /// The Megolm session ID.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    #[cfg(test)]
    /// The index the next message gets (the number of messages encrypted so far).
    pub fn message_index(&self) -> u32 {
        self.session.message_index()
    }

    #[cfg(test)]
    /// When the session was created (ms since the epoch, the caller's clock).
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    #[cfg(test)]
    /// The devices that were given the session (key: Curve25519 identity key).
    pub fn shared_with(&self) -> &[BoundDevice] {
        &self.shared_with
    }

    /// Whether the session must be replaced before the next message: it encrypted
    /// [`MAX_MESSAGES_PER_SESSION`] messages, is [`MAX_SESSION_AGE_MS`] old, or a device
    /// it was shared with is not among `current_member_devices` (left, removed, or its
    /// identity key changed). Each member device's `key` is its Curve25519 identity key.
    pub fn needs_rotation(&self, now_ms: u64, current_member_devices: &[BoundDevice]) -> bool {
        if self.session.message_index() >= MAX_MESSAGES_PER_SESSION
            || now_ms.saturating_sub(self.created_ms) >= MAX_SESSION_AGE_MS
        {
            return true;
        }
        let current: HashSet<MemberKey> = current_member_devices.iter().map(device_key).collect();
        self.shared_with
            .iter()
            .any(|device| !current.contains(&device_key(device)))
    }

    /// The member devices that have not been given this session yet (this device
    /// excluded), each once: they get it at its current index, so they read the messages
    /// that follow and none before. Check [`Self::needs_rotation`] first.
    pub fn devices_to_share_with(
        &self,
        current_member_devices: &[BoundDevice],
    ) -> Vec<BoundDevice> {
        let mut seen: HashSet<MemberKey> = self.shared_with.iter().map(device_key).collect();
        current_member_devices
            .iter()
            .filter(|device| !same_device(device, self.owner))
            .filter(|device| seen.insert(device_key(device)))
            .copied()
            .collect()
    }

    /// Records that these devices were given the session (call once the server took
    /// their sender keys, then store the session with [`GroupSessions::save_outbound`]).
    pub fn mark_shared(&mut self, devices: &[BoundDevice]) {
        let mut known: HashSet<MemberKey> = self.shared_with.iter().map(device_key).collect();
        for device in devices {
            if !same_device(device, self.owner) && known.insert(device_key(device)) {
                self.shared_with.push(*device);
            }
        }
    }

    /// The session key at the current index, for distribution to new devices (secret).
    pub fn export_session_key(&self) -> SenderKeyBody {
        SenderKeyBody::new(self.session.session_key())
    }

    /// Encrypts raw bytes (the caller encodes the plaintext).
    fn encrypt_bytes(&mut self, plaintext: &[u8]) -> GroupCiphertext {
        let message_index = self.session.message_index();
        let message = self.session.encrypt(plaintext);
        GroupCiphertext {
            session_id: self.session_id.clone(),
            ciphertext: message.to_bytes(),
            message_index,
        }
    }

    fn record(&self) -> OutboundRecord {
        OutboundRecord {
            channel_id: self.channel_id,
            owner: self.owner,
            created_ms: self.created_ms,
            shared_with: self
                .shared_with
                .iter()
                .map(|d| SharedDevice {
                    user_id: d.user_id,
                    device_id: d.device_id,
                    curve25519: d.key,
                })
                .collect(),
            pickle: self.session.pickle(),
        }
    }

    fn from_record(record: OutboundRecord) -> Self {
        let session = GroupSession::from_pickle(record.pickle);
        Self {
            channel_id: record.channel_id,
            owner: record.owner,
            created_ms: record.created_ms,
            shared_with: record
                .shared_with
                .into_iter()
                .map(|d| BoundDevice {
                    user_id: d.user_id,
                    device_id: d.device_id,
                    key: d.curve25519,
                })
                .collect(),
            session_id: session.session_id(),
            session,
        }
    }
}

/// A group message encrypted for a channel: what to send.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupCiphertext {
    /// The Megolm session ID.
    pub session_id: String,
    /// The Megolm message.
    pub ciphertext: Vec<u8>,
    /// The message's index in its session.
    pub message_index: u32,
}

impl std::fmt::Debug for GroupCiphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCiphertext")
            .field("session_id", &self.session_id)
            .field("message_index", &self.message_index)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A group message as the server delivered it.
#[derive(Clone, PartialEq, Eq)]
pub struct IncomingGroupMessage {
    pub channel_id: Uuid,
    /// The sending device, as the server reports it.
    pub sender: DeviceRef,
    /// The Megolm session ID, as the server reports it.
    pub session_id: String,
    /// The server's message ID.
    pub message_id: Uuid,
    /// The client message ID the server delivered it under.
    pub client_message_id: String,
    /// When the server stored it, milliseconds since the Unix epoch.
    pub server_timestamp_ms: i64,
    /// The Megolm message.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for IncomingGroupMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingGroupMessage")
            .field("channel_id", &self.channel_id)
            .field("sender", &self.sender)
            .field("session_id", &self.session_id)
            .field("message_id", &self.message_id)
            .field("client_message_id", &self.client_message_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// A group message decrypted and checked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedGroupMessage {
    /// The server's message ID.
    pub message_id: Uuid,
    pub channel_id: Uuid,
    pub sender: DeviceRef,
    /// The sending device's Ed25519 key as the Olm layer verified it when the session
    /// arrived; a caller that finds the device re-keyed or blocked since should not trust
    /// the message.
    pub sender_ed25519: [u8; 32],
    pub session_id: String,
    pub message_index: u32,
    pub client_message_id: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for ReceivedGroupMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedGroupMessage")
            .field("message_id", &self.message_id)
            .field("channel_id", &self.channel_id)
            .field("sender", &self.sender)
            .field("message_index", &self.message_index)
            .field("client_message_id", &self.client_message_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What became of a group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDecrypted {
    /// Decrypted and checked; its index is now recorded as seen.
    Message(ReceivedGroupMessage),
    /// This very message (same session, index and server message ID) was read before.
    Duplicate,
}

/// What [`GroupSessions::add_inbound`] did with a sender key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundOutcome {
    /// A session this device did not have.
    New,
    /// A copy reaching further back replaced the stored one.
    Replaced,
    /// The stored copy reaches back as far or further: kept, the new one dropped.
    Kept,
}

/// The result of [`GroupSessions::add_inbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundAdded {
    pub session_id: String,
    /// The first index the stored session decrypts (after the addition).
    pub first_known_index: u32,
    pub outcome: InboundOutcome,
}

#[derive(Serialize, Deserialize)]
struct SharedDevice {
    user_id: UserId,
    device_id: DeviceId,
    curve25519: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct OutboundRecord {
    channel_id: Uuid,
    owner: DeviceRef,
    created_ms: u64,
    shared_with: Vec<SharedDevice>,
    pickle: GroupSessionPickle,
}

#[derive(Serialize, Deserialize)]
struct InboundRecord {
    channel_id: Uuid,
    sender: DeviceRef,
    sender_ed25519: [u8; 32],
    session_id: String,
    pickle: InboundGroupSessionPickle,
}

/// Inbound sessions' partition: channel, sender user, sender device.
fn sender_partition(channel_id: Uuid, sender: DeviceRef) -> Vec<u8> {
    let mut key = Vec::with_capacity(36);
    key.extend_from_slice(channel_id.as_bytes());
    key.extend_from_slice(sender.user_id.as_bytes());
    key.extend_from_slice(&sender.device_id.get().to_be_bytes());
    key
}

/// Seen indices' partition: one per inbound session.
fn seen_partition(channel_id: Uuid, sender: DeviceRef, session_id: &str) -> Vec<u8> {
    let mut key = sender_partition(channel_id, sender);
    key.extend_from_slice(session_id.as_bytes());
    key
}

/// This device's group sessions over the encrypted store. Holds nothing but who this
/// device is: every session lives in the store, read and written in the caller's
/// transaction.
pub struct GroupSessions {
    own: DeviceRef,
    keys: DeviceKeys,
}

impl std::fmt::Debug for GroupSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSessions")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl GroupSessions {
    /// This device and its identity keys.
    pub fn new(own: DeviceRef, keys: DeviceKeys) -> Self {
        Self { own, keys }
    }

    /// The channel's current outbound session, if any.
    pub fn outbound(
        &self,
        store: &SqliteStore,
        channel_id: Uuid,
    ) -> Result<Option<OutboundGroupSession>, GroupError> {
        Ok(records::get::<OutboundRecord>(
            store,
            records::GROUP_OUTBOUND,
            b"",
            channel_id.as_bytes(),
        )?
        .map(OutboundGroupSession::from_record))
    }

    /// [`Self::outbound`], inside a transaction.
    pub fn load_outbound(
        &self,
        tx: &mut StoreTransaction<'_>,
        channel_id: Uuid,
    ) -> Result<Option<OutboundGroupSession>, GroupError> {
        Ok(records::tx_get::<OutboundRecord>(
            tx,
            records::GROUP_OUTBOUND,
            b"",
            channel_id.as_bytes(),
        )?
        .map(OutboundGroupSession::from_record))
    }

    /// Creates and stores a new outbound session for the channel, replacing the current
    /// one (rotation). This device keeps an inbound copy from index 0, so it reads its own
    /// messages too. The new session is shared with nobody yet.
    pub fn create_outbound(
        &self,
        tx: &mut StoreTransaction<'_>,
        channel_id: Uuid,
        now_ms: u64,
    ) -> Result<OutboundGroupSession, GroupError> {
        let session = GroupSession::new(SessionConfig::version_1());
        let inbound = InboundGroupSession::new(&session.session_key(), SessionConfig::version_1());
        let outbound = OutboundGroupSession {
            channel_id,
            owner: self.own,
            created_ms: now_ms,
            shared_with: Vec::new(),
            session_id: session.session_id(),
            session,
        };
        put_inbound(
            tx,
            &InboundRecord {
                channel_id,
                sender: self.own,
                sender_ed25519: self.keys.ed25519,
                session_id: outbound.session_id.clone(),
                pickle: inbound.pickle(),
            },
        )?;
        self.save_outbound(tx, &outbound)?;
        Ok(outbound)
    }

    /// Stores an outbound session (after [`OutboundGroupSession::mark_shared`]).
    pub fn save_outbound(
        &self,
        tx: &mut StoreTransaction<'_>,
        session: &OutboundGroupSession,
    ) -> Result<(), GroupError> {
        records::put(
            tx,
            records::GROUP_OUTBOUND,
            b"",
            session.channel_id.as_bytes(),
            &session.record(),
        )?;
        Ok(())
    }

    #[cfg(test)]
    /// Drops the channel's outbound session (the next message starts a new one);
    /// `true` if there was one.
    pub fn discard_outbound(
        &self,
        tx: &mut StoreTransaction<'_>,
        channel_id: Uuid,
    ) -> Result<bool, GroupError> {
        Ok(tx.delete(records::GROUP_OUTBOUND, b"", channel_id.as_bytes())?)
    }

    /// The encoded sender-key [`Payload`] giving `session` (at its current index) to
    /// `recipient` (key: its Curve25519 identity key), to encrypt with Olm for that
    /// device. Secret: it holds the session key. Its client message ID is the session ID
    /// in the URL-safe base64 alphabet (the field must be filled; nothing relies on it).
    pub fn sender_key_payload(
        &self,
        session: &OutboundGroupSession,
        recipient: BoundDevice,
        timestamp_ms: u64,
    ) -> Result<Zeroizing<Vec<u8>>, GroupError> {
        let mut payload = Payload {
            kind: PayloadKind::SenderKey,
            sender: BoundDevice {
                user_id: self.own.user_id,
                device_id: self.own.device_id,
                key: self.keys.ed25519,
            },
            recipient,
            conversation: session.channel_id,
            client_message_id: session.session_id.replace('+', "-").replace('/', "_"),
            timestamp_ms,
            body: session.export_session_key().encode().to_vec(),
        };
        let encoded = payload.encode().map(Zeroizing::new);
        payload.body.zeroize();
        Ok(encoded?)
    }

    /// Encrypts a message for the channel with `session` and stores the advanced session
    /// in `tx`: send the ciphertext only after the transaction commits (a message index
    /// is never used twice).
    pub fn encrypt(
        &self,
        tx: &mut StoreTransaction<'_>,
        session: &mut OutboundGroupSession,
        client_message_id: &str,
        timestamp_ms: u64,
        body: &[u8],
    ) -> Result<GroupCiphertext, GroupError> {
        let plaintext = Zeroizing::new(
            GroupPlaintext {
                channel_id: session.channel_id,
                sender: self.own,
                client_message_id: client_message_id.to_owned(),
                timestamp_ms,
                body: body.to_vec(),
            }
            .encode()?,
        );
        let ciphertext = session.encrypt_bytes(&plaintext);
        self.save_outbound(tx, session)?;
        Ok(ciphertext)
    }

    /// Takes in a sender key that arrived in an Olm message. `channel_id` is the channel
    /// it was delivered for, `session_id` the session ID it was delivered under, `sender`
    /// the sending device with the Ed25519 key the Olm layer verified it by, `payload`
    /// the decrypted Olm plaintext. The payload must be a sender key for this device from
    /// that sender, for that channel, carrying that session.
    ///
    /// A second copy of a stored session (same sender, same ID) replaces it only if it
    /// reaches further back; a later copy never replaces an earlier one.
    pub fn add_inbound(
        &self,
        tx: &mut StoreTransaction<'_>,
        channel_id: Uuid,
        session_id: &str,
        sender: BoundDevice,
        payload: &Payload,
    ) -> Result<InboundAdded, GroupError> {
        if payload.kind != PayloadKind::SenderKey {
            return Err(GroupError::NotASenderKey);
        }
        payload
            .check(&Expected {
                sender,
                recipient: BoundDevice {
                    user_id: self.own.user_id,
                    device_id: self.own.device_id,
                    key: self.keys.curve25519,
                },
            })
            .map_err(|error| match error {
                PayloadError::SenderMismatch => GroupError::SenderMismatch,
                other => GroupError::Plaintext(other),
            })?;
        if payload.conversation != channel_id {
            return Err(GroupError::ChannelMismatch);
        }
        let body = SenderKeyBody::decode(&payload.body)?;
        // Stored under the ID it carries, looked up (for duplicates) under the one it was
        // delivered with: the two must be one.
        if body.session_id != session_id {
            return Err(GroupError::SessionIdMismatch);
        }
        let sender_ref = DeviceRef {
            user_id: sender.user_id,
            device_id: sender.device_id,
        };
        let mut new = InboundGroupSession::new(&body.session_key, SessionConfig::version_1());
        let partition = sender_partition(channel_id, sender_ref);
        let stored = records::tx_get::<InboundRecord>(
            tx,
            records::GROUP_INBOUND,
            &partition,
            body.session_id.as_bytes(),
        )?;
        let outcome = match stored {
            None => InboundOutcome::New,
            Some(record) => {
                if record.sender_ed25519 != sender.key {
                    return Err(GroupError::ConflictingSession);
                }
                let mut old = InboundGroupSession::from_pickle(record.pickle);
                match new.compare(&mut old) {
                    SessionOrdering::Better => InboundOutcome::Replaced,
                    SessionOrdering::Equal | SessionOrdering::Worse => {
                        return Ok(InboundAdded {
                            session_id: body.session_id.clone(),
                            first_known_index: old.first_known_index(),
                            outcome: InboundOutcome::Kept,
                        });
                    }
                    SessionOrdering::Unconnected => return Err(GroupError::ConflictingSession),
                }
            }
        };
        put_inbound(
            tx,
            &InboundRecord {
                channel_id,
                sender: sender_ref,
                sender_ed25519: sender.key,
                session_id: body.session_id.clone(),
                pickle: new.pickle(),
            },
        )?;
        Ok(InboundAdded {
            session_id: body.session_id.clone(),
            first_known_index: new.first_known_index(),
            outcome,
        })
    }

    /// Whether an inbound session for this channel, sender device and session ID is
    /// stored (a message whose session is missing can wait for its sender key).
    pub fn has_inbound(
        &self,
        store: &SqliteStore,
        channel_id: Uuid,
        sender: DeviceRef,
        session_id: &str,
    ) -> Result<bool, GroupError> {
        Ok(records::get::<InboundRecord>(
            store,
            records::GROUP_INBOUND,
            &sender_partition(channel_id, sender),
            session_id.as_bytes(),
        )?
        .is_some())
    }

    /// Decrypts a group message with the session stored for its channel, sender device
    /// and session ID, checks that the plaintext names that channel and sender, the client
    /// message ID it was delivered under and a timestamp near the server's (see
    /// [`check_sent`]), and records its index as seen with its server message ID (in
    /// `tx`).
    pub fn decrypt_group(
        &self,
        tx: &mut StoreTransaction<'_>,
        message: &IncomingGroupMessage,
    ) -> Result<GroupDecrypted, GroupError> {
        let partition = sender_partition(message.channel_id, message.sender);
        let record = records::tx_get::<InboundRecord>(
            tx,
            records::GROUP_INBOUND,
            &partition,
            message.session_id.as_bytes(),
        )?
        .ok_or(GroupError::UnknownSession)?;
        if record.channel_id != message.channel_id
            || record.sender != message.sender
            || record.session_id != message.session_id
        {
            // Only a corrupted store gets here: records are keyed by these fields.
            return Err(GroupError::UnknownSession);
        }
        let megolm =
            MegolmMessage::from_bytes(&message.ciphertext).map_err(|_| GroupError::Malformed)?;
        let mut session = InboundGroupSession::from_pickle(record.pickle);
        let decrypted = session.decrypt(&megolm).map_err(|error| match error {
            DecryptionError::UnknownMessageIndex(first_known_index, message_index) => {
                GroupError::IndexBeforeFirstKnown {
                    first_known_index,
                    message_index,
                }
            }
            _ => GroupError::Undecryptable,
        })?;
        let message_index = decrypted.message_index;
        let bytes = Zeroizing::new(decrypted.plaintext);
        let plaintext = GroupPlaintext::decode(&bytes)?;
        if plaintext.channel_id != message.channel_id {
            return Err(GroupError::ChannelMismatch);
        }
        if plaintext.sender != message.sender {
            return Err(GroupError::SenderMismatch);
        }
        let seen_partition =
            seen_partition(message.channel_id, message.sender, &message.session_id);
        let index_key = message_index.to_be_bytes();
        match records::tx_get::<Uuid>(tx, records::GROUP_SEEN, &seen_partition, &index_key)? {
            Some(seen) if seen == message.message_id => return Ok(GroupDecrypted::Duplicate),
            // Said before the labels are checked: a replay is the more precise diagnosis
            // (a replay is stored under another client message ID, as the server refuses
            // one ID twice).
            Some(_) => return Err(GroupError::Replayed { message_index }),
            None => {}
        }
        // Checked before the index is recorded: a relabelled message does not use up the
        // index of the genuine one.
        check_sent(
            &plaintext.client_message_id,
            plaintext.timestamp_ms,
            &message.client_message_id,
            message.server_timestamp_ms,
        )?;
        records::put(
            tx,
            records::GROUP_SEEN,
            &seen_partition,
            &index_key,
            &message.message_id,
        )?;
        Ok(GroupDecrypted::Message(ReceivedGroupMessage {
            message_id: message.message_id,
            channel_id: message.channel_id,
            sender: message.sender,
            sender_ed25519: record.sender_ed25519,
            session_id: message.session_id.clone(),
            message_index,
            client_message_id: plaintext.client_message_id,
            sent_at_ms: plaintext.timestamp_ms,
            body: plaintext.body,
        }))
    }
}

fn put_inbound(tx: &mut StoreTransaction<'_>, record: &InboundRecord) -> Result<(), RecordError> {
    records::put(
        tx,
        records::GROUP_INBOUND,
        &sender_partition(record.channel_id, record.sender),
        record.session_id.as_bytes(),
        record,
    )
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
