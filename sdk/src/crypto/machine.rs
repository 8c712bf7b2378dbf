//! [`CryptoMachine`]: this device's keys, its Olm sessions with other devices, and what it
//! knows of them, over the encrypted store. No network: the client asks it what to send
//! and hands it what arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use courier_protocol::api::channels::MembershipChange;
use courier_protocol::api::keys::{
    ClaimKeysResponse, DeviceRef, IdentityKeys, SignedKey, UploadOneTimeKeysRequest,
    UserDevicesResponse,
};
use courier_protocol::api::messages::{
    DeviceEnvelope, EnvelopeType, SendMessageRequest, SendMessageResponse,
};
use courier_protocol::api::receipts::ReadReceipt;
use courier_protocol::api::stream::Envelope;
use courier_protocol::keys::{decode_base64, decode_fixed, encode_base64};
use courier_protocol::{DeviceId, UserId, signing};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vodozemac::olm::{
    Account, AccountPickle, Message, OlmMessage, PreKeyMessage, Session, SessionConfig,
    SessionPickle,
};
use vodozemac::{Curve25519PublicKey, KeyId};

use super::devices::{DeviceChange, DeviceKeys, DeviceRecord, TrustState, reconcile};
use super::group::{GroupError, ReceivedGroupMessage};
use super::payload::{BoundDevice, Expected, Payload, PayloadError, PayloadKind, check_sent};
use super::store::{self as records, RecordError};
use super::verification;
use crate::store::SqliteStore;

mod channels;
mod outbox;

pub use channels::{ItemOutcome, SenderKeyShare};
pub use outbox::{OutgoingSend, OutgoingTarget};

/// One-time keys kept on the server; topped up when fewer than half remain.
pub const ONE_TIME_KEY_TARGET: u32 = 50;
/// How often the fallback key is replaced.
pub const FALLBACK_KEY_ROTATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Why the crypto core could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Reading or writing the store failed; nothing of the operation was kept.
    #[error(transparent)]
    Store(#[from] RecordError),
    /// The store already holds an account (of another device, or this one).
    #[error("the store already holds an account")]
    AccountExists,
    /// This device has never fetched the user's device list.
    #[error("the device list of this user has not been fetched")]
    UnknownUser(UserId),
    /// The recipient has no device that can receive.
    #[error("the recipient has no device")]
    NoRecipientDevices,
    /// These devices changed identity keys; nothing goes to them until the app accepts.
    #[error("{} device(s) changed identity keys and are blocked until accepted", .0.len())]
    BlockedDevices(Vec<DeviceRef>),
    /// These devices have no Olm session yet: claim their keys first.
    #[error("{} device(s) need a session: claim their one-time keys", .0.len())]
    MissingSessions(Vec<DeviceRef>),
    /// The envelope's sending device is not in this device's records: fetch its user's
    /// device list, then try again.
    #[error("the sending device is not known: refresh its user's device list")]
    UnknownSender(DeviceRef),
    /// The message could not be encoded (invalid client message ID, body too large).
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// No such device in this device's records.
    #[error("no such device")]
    NoSuchDevice(DeviceRef),
    /// A group session operation failed (no session for the channel, a plaintext that
    /// cannot be encoded, the store).
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The key directory answered with the devices of another user than the one asked
    /// for; nothing of it was stored.
    #[error("the key directory listed another user's devices than the ones asked for")]
    DirectoryUserMismatch {
        /// The user whose devices were asked for.
        asked: UserId,
        /// The user the answer names.
        listed: UserId,
    },
}

/// Why an envelope was not decrypted. Reported to the app; the envelope is acknowledged
/// (retrying would fail the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureReason {
    /// The sender's identity keys changed and the app has not accepted the change.
    SenderBlocked,
    /// The sending device was removed.
    SenderRemoved,
    /// The sending device is not in its user's device list (removed before this device
    /// could learn its keys).
    UnknownSender,
    /// The ciphertext is malformed.
    Malformed,
    /// No session decrypts it: replayed, or encrypted for another device.
    Undecryptable,
    /// It decrypted, but the payload names another sender (user or device) than the one
    /// the server authenticated for the stream item.
    WrongSender,
    /// It decrypted, but the payload names another recipient (user or device) than this
    /// device.
    WrongRecipient,
    /// It decrypted, but the payload belongs to another conversation than the item's:
    /// another user (one-to-one) or another channel (group).
    WrongConversation,
    /// It decrypted, but the client message ID inside differs from the item's
    /// `clientMessageId`.
    ClientMessageIdMismatch,
    /// It decrypted, but the sender's timestamp inside is too far from the item's
    /// `serverTimestamp` (see [`super::payload::MAX_TIMESTAMP_BEFORE_SERVER_MS`] and
    /// [`super::payload::MAX_TIMESTAMP_AFTER_SERVER_MS`]).
    TimestampOutOfRange,
    /// It decrypted, but what is inside fails another check (it does not decode, is of
    /// the wrong kind, names other keys than those on record, carries another session
    /// than it was delivered under, ...); the text says which.
    Rejected(String),
}

impl From<PayloadError> for FailureReason {
    fn from(error: PayloadError) -> Self {
        match error {
            PayloadError::SenderMismatch => FailureReason::WrongSender,
            PayloadError::RecipientMismatch => FailureReason::WrongRecipient,
            PayloadError::ConversationMismatch => FailureReason::WrongConversation,
            PayloadError::ClientMessageIdMismatch => FailureReason::ClientMessageIdMismatch,
            PayloadError::TimestampOutOfRange => FailureReason::TimestampOutOfRange,
            other => FailureReason::Rejected(other.to_string()),
        }
    }
}

/// A message received and stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessage {
    /// The server's message ID.
    pub message_id: Uuid,
    pub sender: DeviceRef,
    /// The other party of the conversation: the sender's user, or, for a copy of what one
    /// of our own devices sent, the user it was sent to.
    pub conversation: UserId,
    pub client_message_id: String,
    pub sent_at_ms: u64,
    pub server_timestamp: DateTime<Utc>,
    /// Sent by another device of this user.
    pub from_own_device: bool,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("message_id", &self.message_id)
            .field("sender", &self.sender)
            .field("client_message_id", &self.client_message_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What the app hears about, in order, from [`CryptoMachine::pending_events`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// A message arrived.
    Message { message: ReceivedMessage },
    /// An envelope could not be read.
    DecryptionFailed {
        message_id: Uuid,
        sender: DeviceRef,
        reason: FailureReason,
    },
    /// A user's devices changed.
    Device { change: DeviceChange },
    /// The server stored a message this device sent: it is on its way to every device
    /// (delivery and read receipts follow as they come).
    Sent {
        message_id: Uuid,
        client_message_id: String,
        recipient: UserId,
        server_timestamp: DateTime<Utc>,
    },
    /// A group message arrived.
    GroupMessage {
        message: ReceivedGroupMessage,
        server_timestamp: DateTime<Utc>,
    },
    /// A group message (with its ID) or a sender key (without) could not be read.
    GroupDecryptionFailed {
        channel_id: Uuid,
        sender: DeviceRef,
        message_id: Option<Uuid>,
        reason: FailureReason,
    },
    /// The server stored a group message this device sent.
    GroupSent {
        message_id: Uuid,
        channel_id: Uuid,
        client_message_id: String,
        server_timestamp: DateTime<Utc>,
    },
    /// A recipient device acknowledged a message this user sent.
    Delivered {
        message_id: Uuid,
        device: DeviceRef,
        delivered_at: DateTime<Utc>,
    },
    /// Messages were read: by this user on another device (`readerUserId` is this user:
    /// the read state to show), or by a recipient (a read receipt).
    Read { receipt: ReadReceipt },
    /// A channel's membership changed.
    Membership { change: MembershipChange },
}

/// An event with its place in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    pub seq: u64,
    pub event: Event,
}

/// What became of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decrypted {
    /// Decrypted, checked and stored; queued for the app.
    Message(ReceivedMessage),
    /// Seen before (a redelivery): nothing new.
    Duplicate,
    /// Not readable; the failure is queued for the app.
    Failed(FailureReason),
}

/// A message encrypted for every device it must reach.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub request: SendMessageRequest,
    touched: Vec<DeviceRef>,
}

#[derive(Serialize, Deserialize)]
struct AccountRecord {
    user_id: UserId,
    device_id: DeviceId,
    pickle: AccountPickle,
    /// When the current fallback key was made and published (ms since the epoch).
    fallback_published_ms: Option<u64>,
    /// A fallback key was generated but its upload not confirmed.
    fallback_unpublished: bool,
}

#[derive(Serialize, Deserialize)]
struct SessionRecord {
    session_id: String,
    /// Bumped on every use: the most recently used session is the one to send with.
    last_used: u64,
    pickle: SessionPickle,
}

#[derive(Serialize, Deserialize)]
struct ReceivedMarker {
    failed: bool,
}

struct CachedSession {
    session_id: String,
    last_used: u64,
    session: Session,
}

impl CachedSession {
    fn record(&self) -> SessionRecord {
        SessionRecord {
            session_id: self.session_id.clone(),
            last_used: self.last_used,
            pickle: self.session.pickle(),
        }
    }
}

fn put_session(
    tx: &mut crate::store::StoreTransaction<'_>,
    device: DeviceRef,
    record: &SessionRecord,
) -> Result<(), RecordError> {
    records::put(
        tx,
        records::OLM_SESSIONS,
        &device_key(device),
        record.session_id.as_bytes(),
        record,
    )
}

/// This device's crypto state. Every change is written to the store in one transaction
/// before the method that made it returns.
pub struct CryptoMachine {
    store: Arc<SqliteStore>,
    own: DeviceRef,
    keys: DeviceKeys,
    account: Account,
    fallback_published_ms: Option<u64>,
    fallback_unpublished: bool,
    /// Sessions by peer device, loaded on first use.
    sessions: HashMap<DeviceRef, Vec<CachedSession>>,
    /// Device lists by user as stored (`None`: never fetched), loaded on first use and
    /// dropped whenever a write changes them, so sending reads no records.
    device_lists: Mutex<HashMap<UserId, Option<Vec<DeviceRecord>>>>,
    use_counter: u64,
}

impl std::fmt::Debug for CryptoMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoMachine")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A V1 (`legacy`) ciphertext: the raw Olm message, whose type the envelope does not say.
/// A pre-key message does not parse as a normal one and the other way round (their
/// encodings differ in field types), so parsing tells them apart.
fn legacy_olm_message(bytes: &[u8]) -> Result<OlmMessage, vodozemac::DecodeError> {
    match PreKeyMessage::from_bytes(bytes) {
        Ok(pre_key) => Ok(OlmMessage::PreKey(pre_key)),
        Err(_) => Message::from_bytes(bytes).map(OlmMessage::Normal),
    }
}

fn device_key(device: DeviceRef) -> Vec<u8> {
    let mut key = device.user_id.as_bytes().to_vec();
    key.extend_from_slice(&device.device_id.get().to_be_bytes());
    key
}

impl CryptoMachine {
    /// Creates this device's account (new identity keys) and stores it.
    pub fn create(
        store: Arc<SqliteStore>,
        user_id: UserId,
        device_id: DeviceId,
    ) -> Result<Self, MachineError> {
        if records::get::<AccountRecord>(&store, records::ACCOUNT, b"", b"account")?.is_some() {
            return Err(MachineError::AccountExists);
        }
        let machine = Self::from_account(store, user_id, device_id, Account::new(), None, false);
        machine.save_account_only()?;
        Ok(machine)
    }

    /// Loads the account from the store; `None` if there is none yet.
    pub fn load(store: Arc<SqliteStore>) -> Result<Option<Self>, MachineError> {
        let Some(record) =
            records::get::<AccountRecord>(&store, records::ACCOUNT, b"", b"account")?
        else {
            return Ok(None);
        };
        Ok(Some(Self::from_account(
            store,
            record.user_id,
            record.device_id,
            Account::from_pickle(record.pickle),
            record.fallback_published_ms,
            record.fallback_unpublished,
        )))
    }

    fn from_account(
        store: Arc<SqliteStore>,
        user_id: UserId,
        device_id: DeviceId,
        account: Account,
        fallback_published_ms: Option<u64>,
        fallback_unpublished: bool,
    ) -> Self {
        let identity = account.identity_keys();
        Self {
            store,
            own: DeviceRef { user_id, device_id },
            keys: DeviceKeys {
                curve25519: identity.curve25519.to_bytes(),
                ed25519: *identity.ed25519.as_bytes(),
            },
            account,
            fallback_published_ms,
            fallback_unpublished,
            sessions: HashMap::new(),
            device_lists: Mutex::new(HashMap::new()),
            use_counter: now_ms(),
        }
    }

    /// This device.
    pub fn own_device(&self) -> DeviceRef {
        self.own
    }

    /// This device's identity keys.
    pub fn identity_keys(&self) -> DeviceKeys {
        self.keys
    }

    fn account_record(&self) -> AccountRecord {
        AccountRecord {
            user_id: self.own.user_id,
            device_id: self.own.device_id,
            pickle: self.account.pickle(),
            fallback_published_ms: self.fallback_published_ms,
            fallback_unpublished: self.fallback_unpublished,
        }
    }

    fn save_account_only(&self) -> Result<(), MachineError> {
        let record = self.account_record();
        self.store.transaction(|tx| {
            records::put(tx, records::ACCOUNT, b"", b"account", &record)?;
            Ok::<_, RecordError>(())
        })?;
        Ok(())
    }

    /// Puts the account back to what the store holds, after a write that failed.
    fn reload_account(&mut self) {
        if let Ok(Some(record)) =
            records::get::<AccountRecord>(&self.store, records::ACCOUNT, b"", b"account")
        {
            self.account = Account::from_pickle(record.pickle);
            self.fallback_published_ms = record.fallback_published_ms;
            self.fallback_unpublished = record.fallback_unpublished;
        }
    }

    fn sign(&self, payload: &[u8]) -> String {
        encode_base64(&self.account.sign(payload).to_bytes())
    }

    /// The self-signed identity keys to publish.
    pub fn identity_keys_upload(&self) -> IdentityKeys {
        let payload = signing::identity_keys_payload(
            self.own.user_id,
            self.own.device_id,
            &self.keys.curve25519,
            &self.keys.ed25519,
        );
        IdentityKeys {
            curve25519: encode_base64(&self.keys.curve25519),
            ed25519: encode_base64(&self.keys.ed25519),
            signature: self.sign(&payload),
        }
    }

    fn signed_key(&self, key_id: KeyId, key: Curve25519PublicKey, fallback: bool) -> SignedKey {
        let key_id = key_id.to_base64();
        let payload = if fallback {
            signing::fallback_key_payload(
                self.own.user_id,
                self.own.device_id,
                &key_id,
                key.as_bytes(),
            )
        } else {
            signing::one_time_key_payload(
                self.own.user_id,
                self.own.device_id,
                &key_id,
                key.as_bytes(),
            )
        };
        SignedKey {
            key: encode_base64(key.as_bytes()),
            signature: self.sign(&payload),
            key_id,
        }
    }

    /// One-time keys to upload, given how many the server still holds: `None` while at
    /// least half of [`ONE_TIME_KEY_TARGET`] remain. The new keys are stored before this
    /// returns (a crash after the upload must not lose their secrets); call
    /// [`Self::mark_one_time_keys_published`] once the server took them. Asking again
    /// before that returns the same keys (the upload is idempotent).
    pub fn one_time_keys_for_upload(
        &mut self,
        server_count: u32,
    ) -> Result<Option<UploadOneTimeKeysRequest>, MachineError> {
        let mut unpublished = self.account.one_time_keys();
        if unpublished.is_empty() {
            if server_count >= ONE_TIME_KEY_TARGET / 2 {
                return Ok(None);
            }
            let wanted = ONE_TIME_KEY_TARGET.saturating_sub(server_count);
            self.account
                .generate_one_time_keys(usize::try_from(wanted).unwrap_or(0));
            if let Err(error) = self.save_account_only() {
                self.reload_account();
                return Err(error);
            }
            unpublished = self.account.one_time_keys();
        }
        let mut keys: Vec<(KeyId, Curve25519PublicKey)> = unpublished.into_iter().collect();
        keys.sort_by_key(|(id, _)| *id);
        Ok(Some(UploadOneTimeKeysRequest {
            one_time_keys: keys
                .into_iter()
                .map(|(id, key)| self.signed_key(id, key, false))
                .collect(),
        }))
    }

    /// The server stored the one-time keys from [`Self::one_time_keys_for_upload`].
    pub fn mark_one_time_keys_published(&mut self) -> Result<(), MachineError> {
        self.account.mark_keys_as_published();
        self.save_account_only()
            .inspect_err(|_| self.reload_account())
    }

    /// A fallback key to publish: a new one when there is none or the current one is
    /// older than [`FALLBACK_KEY_ROTATION_MS`]; `None` otherwise. Stored before it is
    /// returned; confirm with [`Self::mark_fallback_key_published`]. The previous fallback
    /// key keeps working for sessions that senders started with it meanwhile.
    pub fn fallback_key_for_upload(
        &mut self,
        now_ms: u64,
    ) -> Result<Option<SignedKey>, MachineError> {
        let due = match self.fallback_published_ms {
            None => true,
            Some(at) => now_ms.saturating_sub(at) >= FALLBACK_KEY_ROTATION_MS,
        };
        if !due && !self.fallback_unpublished {
            return Ok(None);
        }
        if !self.fallback_unpublished {
            self.account.generate_fallback_key();
            self.fallback_unpublished = true;
            if let Err(error) = self.save_account_only() {
                self.reload_account();
                return Err(error);
            }
        }
        Ok(self
            .account
            .fallback_key()
            .into_iter()
            .next()
            .map(|(id, key)| self.signed_key(id, key, true)))
    }

    /// The server stored the fallback key from [`Self::fallback_key_for_upload`].
    pub fn mark_fallback_key_published(&mut self, now_ms: u64) -> Result<(), MachineError> {
        self.fallback_unpublished = false;
        self.fallback_published_ms = Some(now_ms);
        self.account.mark_keys_as_published();
        self.save_account_only()
            .inspect_err(|_| self.reload_account())
    }

    /// [`Self::update_device_list`] for the answer to asking the key directory for
    /// `asked`'s devices: an answer that lists another user's devices is refused
    /// ([`MachineError::DirectoryUserMismatch`]) and nothing is stored.
    pub fn update_device_list_of(
        &mut self,
        asked: UserId,
        listed: &UserDevicesResponse,
    ) -> Result<Vec<DeviceChange>, MachineError> {
        if listed.user_id != asked {
            return Err(MachineError::DirectoryUserMismatch {
                asked,
                listed: listed.user_id,
            });
        }
        self.update_device_list(listed)
    }

    /// Takes in a user's device list from the key directory: records new devices (trusted
    /// on first use if this is the first list of that user, unverified otherwise), marks
    /// gone ones removed (and drops their sessions), blocks re-keyed ones, and queues an
    /// event per change. Devices whose keys fail their self-signature are ignored. The
    /// list is taken as `listed.user_id`'s; for an answer to a request, use
    /// [`Self::update_device_list_of`], which checks it is the user asked for.
    pub fn update_device_list(
        &mut self,
        listed: &UserDevicesResponse,
    ) -> Result<Vec<DeviceChange>, MachineError> {
        let user_key = *listed.user_id.as_bytes();
        let known: Vec<DeviceRecord> = records::list(&self.store, records::DEVICES, &user_key)?;
        let first_contact =
            records::get::<bool>(&self.store, records::TRACKED_USERS, b"", &user_key)?.is_none();
        let out = reconcile(&known, listed, first_contact, Some(self.own));
        self.store.transaction(|tx| {
            records::put(tx, records::TRACKED_USERS, b"", &user_key, &true)?;
            for record in &out.updated {
                records::put(
                    tx,
                    records::DEVICES,
                    &user_key,
                    &record.device_id.get().to_be_bytes(),
                    record,
                )?;
                if record.removed {
                    tx.delete_partition(records::OLM_SESSIONS, &device_key(record.device_ref()))?;
                }
            }
            for change in &out.changes {
                queue_event(
                    tx,
                    &Event::Device {
                        change: change.clone(),
                    },
                )?;
            }
            Ok::<_, RecordError>(())
        })?;
        self.device_lists().remove(&listed.user_id);
        for record in out.updated.iter().filter(|r| r.removed) {
            self.sessions.remove(&record.device_ref());
        }
        Ok(out.changes)
    }

    fn device_lists(&self) -> MutexGuard<'_, HashMap<UserId, Option<Vec<DeviceRecord>>>> {
        // A panic elsewhere cannot leave the map half-written: entries are replaced whole.
        self.device_lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A user's stored device list, `None` if it was never fetched.
    fn device_list(&self, user_id: UserId) -> Result<Option<Vec<DeviceRecord>>, MachineError> {
        if let Some(cached) = self.device_lists().get(&user_id) {
            return Ok(cached.clone());
        }
        let tracked =
            records::get::<bool>(&self.store, records::TRACKED_USERS, b"", user_id.as_bytes())?
                .is_some();
        let list = if tracked {
            let mut devices: Vec<DeviceRecord> =
                records::list(&self.store, records::DEVICES, user_id.as_bytes())?;
            devices.sort_by_key(|d| d.device_id);
            Some(devices)
        } else {
            None
        };
        self.device_lists().insert(user_id, list.clone());
        Ok(list)
    }

    /// The devices this device knows of a user (removed ones included).
    pub fn devices(&self, user_id: UserId) -> Result<Vec<DeviceRecord>, MachineError> {
        Ok(self.device_list(user_id)?.unwrap_or_default())
    }

    fn device(&self, device: DeviceRef) -> Result<Option<DeviceRecord>, MachineError> {
        Ok(self
            .devices(device.user_id)?
            .into_iter()
            .find(|d| d.device_id == device.device_id))
    }

    fn set_trust(&mut self, device: DeviceRef, trust: TrustState) -> Result<(), MachineError> {
        let mut record = self
            .device(device)?
            .ok_or(MachineError::NoSuchDevice(device))?;
        record.trust = trust;
        record.previous_keys = None;
        self.store.transaction(|tx| {
            records::put(
                tx,
                records::DEVICES,
                device.user_id.as_bytes(),
                &device.device_id.get().to_be_bytes(),
                &record,
            )
        })?;
        self.device_lists().remove(&device.user_id);
        Ok(())
    }

    /// The app's user compared this device's fingerprint (or the safety number).
    pub fn verify_device(&mut self, device: DeviceRef) -> Result<(), MachineError> {
        self.set_trust(device, TrustState::Verified)
    }

    /// The app accepts a device's new identity keys: it gets messages again (unverified).
    /// Sessions with the old keys are dropped.
    pub fn accept_identity_change(&mut self, device: DeviceRef) -> Result<(), MachineError> {
        self.set_trust(device, TrustState::Unverified)?;
        self.store.transaction(|tx| {
            tx.delete_partition(records::OLM_SESSIONS, &device_key(device))?;
            Ok::<_, RecordError>(())
        })?;
        self.sessions.remove(&device);
        Ok(())
    }

    /// A device's fingerprint (see [`verification`]).
    pub fn fingerprint(&self, device: DeviceRef) -> Result<String, MachineError> {
        if device == self.own {
            return Ok(verification::device_fingerprint(&self.own_record()));
        }
        let record = self
            .device(device)?
            .ok_or(MachineError::NoSuchDevice(device))?;
        Ok(verification::device_fingerprint(&record))
    }

    fn own_record(&self) -> DeviceRecord {
        DeviceRecord {
            user_id: self.own.user_id,
            device_id: self.own.device_id,
            keys: self.keys,
            previous_keys: None,
            trust: TrustState::Verified,
            removed: false,
        }
    }

    /// The safety number of this user and `other` (see [`verification`]).
    pub fn safety_number(&self, other: UserId) -> Result<String, MachineError> {
        let mut devices = self.devices(self.own.user_id)?;
        devices.push(self.own_record());
        devices.extend(self.devices(other)?);
        let refs: Vec<&DeviceRecord> = devices.iter().collect();
        Ok(verification::safety_number(self.own.user_id, other, &refs))
    }

    /// Every device a message to `recipient` must reach: the recipient's current devices
    /// and this user's other current devices. Refused while any of them is blocked.
    pub fn send_targets(&self, recipient: UserId) -> Result<Vec<DeviceRecord>, MachineError> {
        let lists = [recipient, self.own.user_id].map(|user| {
            self.device_list(user)?
                .ok_or(MachineError::UnknownUser(user))
        });
        let [recipient_devices, own_devices] = lists;
        let (recipient_devices, own_devices) = (recipient_devices?, own_devices?);
        let mut targets: Vec<DeviceRecord> = recipient_devices
            .into_iter()
            .filter(|d| !d.removed)
            .collect();
        if !targets.iter().any(|d| d.user_id == recipient) {
            return Err(MachineError::NoRecipientDevices);
        }
        if recipient != self.own.user_id {
            targets.extend(
                own_devices
                    .into_iter()
                    .filter(|d| !d.removed && d.device_ref() != self.own),
            );
        }
        let blocked: Vec<DeviceRef> = targets
            .iter()
            .filter(|d| !d.trust.allows_messages())
            .map(DeviceRecord::device_ref)
            .collect();
        if !blocked.is_empty() {
            return Err(MachineError::BlockedDevices(blocked));
        }
        Ok(targets)
    }

    fn load_sessions(
        &mut self,
        device: DeviceRef,
    ) -> Result<&mut Vec<CachedSession>, MachineError> {
        if !self.sessions.contains_key(&device) {
            let mut stored: Vec<SessionRecord> =
                records::list(&self.store, records::OLM_SESSIONS, &device_key(device))?;
            stored.sort_by_key(|s| std::cmp::Reverse(s.last_used));
            let cached = stored
                .into_iter()
                .map(|record| CachedSession {
                    session_id: record.session_id,
                    last_used: record.last_used,
                    session: Session::from_pickle(record.pickle),
                })
                .collect();
            self.sessions.insert(device, cached);
        }
        Ok(self.sessions.entry(device).or_default())
    }

    /// The devices among `targets` that have no session yet.
    pub fn devices_without_session(
        &mut self,
        targets: &[DeviceRecord],
    ) -> Result<Vec<DeviceRef>, MachineError> {
        let mut missing = Vec::new();
        for target in targets {
            if self.load_sessions(target.device_ref())?.is_empty() {
                missing.push(target.device_ref());
            }
        }
        Ok(missing)
    }

    /// Opens sessions from claimed one-time (or fallback) keys, after checking each key's
    /// signature by its device's signing key on record. Returns the devices whose key was
    /// missing or did not verify.
    pub fn add_claimed_keys(
        &mut self,
        claimed: &ClaimKeysResponse,
    ) -> Result<Vec<DeviceRef>, MachineError> {
        let mut failed: Vec<DeviceRef> = claimed.unavailable.clone();
        let mut opened: Vec<(DeviceRef, CachedSession)> = Vec::new();
        for key in &claimed.keys {
            let device = DeviceRef {
                user_id: key.user_id,
                device_id: key.device_id,
            };
            let Some(record) = self
                .device(device)?
                .filter(|r| !r.removed && r.trust.allows_messages())
            else {
                failed.push(device);
                continue;
            };
            let Ok(public) = decode_fixed::<32>(&key.key.key) else {
                failed.push(device);
                continue;
            };
            let Ok(signature) = decode_fixed::<64>(&key.key.signature) else {
                failed.push(device);
                continue;
            };
            let payload = if key.fallback {
                signing::fallback_key_payload(
                    device.user_id,
                    device.device_id,
                    &key.key.key_id,
                    &public,
                )
            } else {
                signing::one_time_key_payload(
                    device.user_id,
                    device.device_id,
                    &key.key.key_id,
                    &public,
                )
            };
            if signing::verify(&record.keys.ed25519, &payload, &signature).is_err() {
                failed.push(device);
                continue;
            }
            match self.account.create_outbound_session(
                SessionConfig::version_1(),
                Curve25519PublicKey::from_bytes(record.keys.curve25519),
                Curve25519PublicKey::from_bytes(public),
            ) {
                Ok(session) => opened.push((
                    device,
                    CachedSession {
                        session_id: session.session_id(),
                        last_used: 0,
                        session,
                    },
                )),
                Err(_) => failed.push(device),
            }
        }
        self.use_counter += 1;
        for (_, cached) in &mut opened {
            cached.last_used = self.use_counter;
        }
        self.store.transaction(|tx| {
            for (device, cached) in &opened {
                put_session(tx, *device, &cached.record())?;
            }
            Ok::<_, RecordError>(())
        })?;
        for (device, cached) in opened {
            self.load_sessions(device)?.insert(0, cached);
        }
        Ok(failed)
    }

    /// Encrypts a message for every target device, advancing their sessions in memory
    /// only. [`Self::commit_outgoing`] must store them before the message is sent; use
    /// [`Self::encrypt_message`] for both.
    pub fn prepare_message(
        &mut self,
        recipient: UserId,
        client_message_id: &str,
        body: &[u8],
        timestamp_ms: u64,
    ) -> Result<OutgoingMessage, MachineError> {
        let targets = self.send_targets(recipient)?;
        let missing = self.devices_without_session(&targets)?;
        if !missing.is_empty() {
            return Err(MachineError::MissingSessions(missing));
        }
        let sender = BoundDevice {
            user_id: self.own.user_id,
            device_id: self.own.device_id,
            key: self.keys.ed25519,
        };
        let mut envelopes = Vec::with_capacity(targets.len());
        let mut touched = Vec::with_capacity(targets.len());
        for target in &targets {
            let payload = Payload {
                kind: PayloadKind::Message,
                sender,
                recipient: BoundDevice {
                    user_id: target.user_id,
                    device_id: target.device_id,
                    key: target.keys.curve25519,
                },
                conversation: recipient.as_uuid(),
                client_message_id: client_message_id.to_owned(),
                timestamp_ms,
                body: body.to_vec(),
            }
            .encode()?;
            self.use_counter += 1;
            let counter = self.use_counter;
            let sessions = self.load_sessions(target.device_ref())?;
            let Some(cached) = sessions.first_mut() else {
                return Err(MachineError::MissingSessions(vec![target.device_ref()]));
            };
            cached.last_used = counter;
            // Olm encryption fails only on a session that cannot send (never the case
            // for sessions this machine keeps); such a device needs a fresh session.
            let Ok(message) = cached.session.encrypt(&payload) else {
                return Err(MachineError::MissingSessions(vec![target.device_ref()]));
            };
            let (message_type, ciphertext) = message.to_parts();
            envelopes.push(DeviceEnvelope {
                user_id: target.user_id,
                device_id: target.device_id,
                envelope_type: if message_type == 0 {
                    EnvelopeType::PreKey
                } else {
                    EnvelopeType::Normal
                },
                ciphertext: encode_base64(&ciphertext),
            });
            touched.push(target.device_ref());
        }
        Ok(OutgoingMessage {
            request: SendMessageRequest {
                protocol_version: Some(2),
                client_message_id: client_message_id.to_owned(),
                recipient_user_id: recipient,
                device_envelopes: Some(envelopes),
                encrypted_envelope: None,
            },
            touched,
        })
    }

    /// Stores the sessions [`Self::prepare_message`] advanced, in one transaction.
    pub fn commit_outgoing(&mut self, message: &OutgoingMessage) -> Result<(), MachineError> {
        self.store_sessions(&message.touched)
    }

    /// Stores the current sessions of these devices, in one transaction.
    pub(crate) fn store_sessions(&mut self, devices: &[DeviceRef]) -> Result<(), MachineError> {
        let writes: Vec<(DeviceRef, SessionRecord)> = devices
            .iter()
            .filter_map(|device| Some((*device, self.current_session(*device)?)))
            .collect();
        self.store.transaction(|tx| {
            for (device, record) in &writes {
                put_session(tx, *device, record)?;
            }
            Ok::<_, RecordError>(())
        })?;
        Ok(())
    }

    /// The record of the session a device is sent to (the most recently used one).
    fn current_session(&self, device: DeviceRef) -> Option<SessionRecord> {
        self.sessions
            .get(&device)
            .and_then(|sessions| sessions.first())
            .map(CachedSession::record)
    }

    /// Encrypts and stores: the message is ready to send.
    pub fn encrypt_message(
        &mut self,
        recipient: UserId,
        client_message_id: &str,
        body: &[u8],
        timestamp_ms: u64,
    ) -> Result<OutgoingMessage, MachineError> {
        let message = self.prepare_message(recipient, client_message_id, body, timestamp_ms)?;
        self.commit_outgoing(&message)?;
        Ok(message)
    }

    /// Decrypts an envelope from this device's stream, checks what is inside against the
    /// envelope and this device, and stores the result (session state, the message or
    /// the failure, and its event) in one transaction. Acknowledge the envelope only after
    /// this returns `Ok`: an `Err` means nothing was stored and the envelope must be read
    /// again ([`MachineError::UnknownSender`]: after refreshing the sender's device list).
    pub fn decrypt_envelope(&mut self, envelope: &Envelope) -> Result<Decrypted, MachineError> {
        if self.already_received(envelope.message_id)? {
            return Ok(Decrypted::Duplicate);
        }
        let sender = DeviceRef {
            user_id: envelope.sender_user_id,
            device_id: envelope.sender_device_id,
        };
        let (record, refused) = self.sender_record(sender)?;
        let outcome = match refused {
            Some(reason) => Err(reason),
            None => self.decrypt_from(envelope, &record),
        };
        let account_changed = matches!(outcome, Ok((_, true)));
        let result = match outcome {
            Ok((message, _)) => Decrypted::Message(message),
            Err(reason) => Decrypted::Failed(reason),
        };
        self.store_result(envelope, sender, result, account_changed)
    }

    /// Whether a message (by server message ID) was stored, or recorded as unreadable,
    /// before.
    fn already_received(&self, message_id: Uuid) -> Result<bool, MachineError> {
        Ok(records::get::<ReceivedMarker>(
            &self.store,
            records::RECEIVED,
            b"",
            message_id.as_bytes(),
        )?
        .is_some())
    }

    /// The sending device's record, and why nothing from it is read (removed, or blocked
    /// by an identity change), if so. [`MachineError::UnknownSender`]: refresh its user's
    /// device list, then try again.
    fn sender_record(
        &self,
        sender: DeviceRef,
    ) -> Result<(DeviceRecord, Option<FailureReason>), MachineError> {
        let record = self
            .device(sender)?
            .ok_or(MachineError::UnknownSender(sender))?;
        let refused = if record.removed {
            Some(FailureReason::SenderRemoved)
        } else if !record.trust.allows_messages() {
            Some(FailureReason::SenderBlocked)
        } else {
            None
        };
        Ok((record, refused))
    }

    /// Records an envelope as unreadable without trying it (its sender cannot be known):
    /// the failure is queued for the app and a redelivery is a duplicate.
    pub fn reject_envelope(
        &mut self,
        envelope: &Envelope,
        reason: FailureReason,
    ) -> Result<Decrypted, MachineError> {
        let sender = DeviceRef {
            user_id: envelope.sender_user_id,
            device_id: envelope.sender_device_id,
        };
        self.store_result(envelope, sender, Decrypted::Failed(reason), false)
    }

    /// Stores what became of an envelope, with its event and the session it advanced,
    /// in one transaction.
    fn store_result(
        &mut self,
        envelope: &Envelope,
        sender: DeviceRef,
        result: Decrypted,
        account_changed: bool,
    ) -> Result<Decrypted, MachineError> {
        let message_key = *envelope.message_id.as_bytes();
        let event = match &result {
            Decrypted::Message(message) => Event::Message {
                message: message.clone(),
            },
            Decrypted::Failed(reason) => Event::DecryptionFailed {
                message_id: envelope.message_id,
                sender,
                reason: reason.clone(),
            },
            Decrypted::Duplicate => return Ok(result),
        };
        let account = account_changed.then(|| self.account_record());
        let session = self.current_session(sender);
        let written = self.store.transaction(|tx| {
            if let Some(account) = &account {
                records::put(tx, records::ACCOUNT, b"", b"account", account)?;
            }
            if let Some(session) = &session {
                put_session(tx, sender, session)?;
            }
            records::put(
                tx,
                records::RECEIVED,
                b"",
                &message_key,
                &ReceivedMarker {
                    failed: matches!(result, Decrypted::Failed(_)),
                },
            )?;
            queue_event(tx, &event)
        });
        if let Err(error) = written {
            // Memory ran ahead of the store: go back to what is stored, so reading the
            // envelope again works.
            self.sessions.remove(&sender);
            if account_changed {
                self.reload_account();
            }
            return Err(error.into());
        }
        Ok(result)
    }

    /// Olm-decrypts and checks; `Ok((message, account_changed))`.
    fn decrypt_from(
        &mut self,
        envelope: &Envelope,
        record: &DeviceRecord,
    ) -> Result<(ReceivedMessage, bool), FailureReason> {
        let bytes = decode_base64(&envelope.ciphertext).map_err(|_| FailureReason::Malformed)?;
        let message = match envelope.envelope_type {
            EnvelopeType::PreKey => OlmMessage::from_parts(0, &bytes),
            EnvelopeType::Normal => OlmMessage::from_parts(1, &bytes),
            EnvelopeType::Legacy => legacy_olm_message(&bytes),
        }
        .map_err(|_| FailureReason::Malformed)?;
        let sender = record.device_ref();
        let (plaintext, account_changed) = self.olm_decrypt(sender, record, &message)?;
        let payload = Payload::decode(&plaintext)
            .map_err(|error| FailureReason::Rejected(error.to_string()))?;
        if payload.kind != PayloadKind::Message {
            // A sender key travels as its own stream item, never as an envelope.
            return Err(FailureReason::Rejected(
                "an envelope carries a payload that is not a message".into(),
            ));
        }
        payload
            .check(&Expected {
                sender: BoundDevice {
                    user_id: sender.user_id,
                    device_id: sender.device_id,
                    key: record.keys.ed25519,
                },
                recipient: BoundDevice {
                    user_id: self.own.user_id,
                    device_id: self.own.device_id,
                    key: self.keys.curve25519,
                },
            })
            .map_err(FailureReason::from)?;
        check_sent(
            &payload.client_message_id,
            payload.timestamp_ms,
            &envelope.client_message_id,
            envelope.server_timestamp.timestamp_millis(),
        )?;
        Ok((
            ReceivedMessage {
                message_id: envelope.message_id,
                sender,
                conversation: if sender.user_id == self.own.user_id {
                    UserId::from(payload.conversation)
                } else {
                    sender.user_id
                },
                client_message_id: payload.client_message_id,
                sent_at_ms: payload.timestamp_ms,
                server_timestamp: envelope.server_timestamp,
                from_own_device: sender.user_id == self.own.user_id,
                body: payload.body,
            },
            account_changed,
        ))
    }

    fn olm_decrypt(
        &mut self,
        sender: DeviceRef,
        record: &DeviceRecord,
        message: &OlmMessage,
    ) -> Result<(Vec<u8>, bool), FailureReason> {
        self.use_counter += 1;
        let counter = self.use_counter;
        let sessions = self
            .load_sessions(sender)
            .map_err(|_| FailureReason::Undecryptable)?;
        let pre_key_session_id = match message {
            OlmMessage::PreKey(pre_key) => Some(pre_key.session_id()),
            OlmMessage::Normal(_) => None,
        };
        let mut session_exists = false;
        for index in 0..sessions.len() {
            let cached = &mut sessions[index];
            if pre_key_session_id
                .as_ref()
                .is_some_and(|id| *id != cached.session_id)
            {
                continue;
            }
            session_exists |= pre_key_session_id.is_some();
            if let Ok(plaintext) = cached.session.decrypt(message) {
                cached.last_used = counter;
                // The session just used goes first: it is the one to answer with.
                let used = sessions.remove(index);
                sessions.insert(0, used);
                return Ok((plaintext, false));
            }
        }
        let OlmMessage::PreKey(pre_key) = message else {
            return Err(FailureReason::Undecryptable);
        };
        // The session this pre-key message starts exists and did not decrypt it: a replay
        // (its message key is used up). The fallback key would open the session a second
        // time, from scratch, and hand the replayed plaintext over again.
        if session_exists {
            return Err(FailureReason::Undecryptable);
        }
        let created = self
            .account
            .create_inbound_session(
                SessionConfig::version_1(),
                Curve25519PublicKey::from_bytes(record.keys.curve25519),
                pre_key,
            )
            .map_err(|_| FailureReason::Undecryptable)?;
        let session = created.session;
        let sessions = self
            .load_sessions(sender)
            .map_err(|_| FailureReason::Undecryptable)?;
        sessions.insert(
            0,
            CachedSession {
                session_id: session.session_id(),
                last_used: counter,
                session,
            },
        );
        Ok((created.plaintext, true))
    }

    /// The server stored a kept message (see [`CryptoMachine::keep_outgoing`]): it leaves
    /// the outbox and its [`Event::Sent`] is queued (once: a repeat queues nothing).
    pub fn record_sent(
        &self,
        recipient: UserId,
        client_message_id: &str,
        response: &SendMessageResponse,
    ) -> Result<(), MachineError> {
        let event = Event::Sent {
            message_id: response.message_id,
            client_message_id: client_message_id.to_owned(),
            recipient,
            server_timestamp: response.server_timestamp,
        };
        self.record_outgoing_sent(
            &OutgoingTarget::User(recipient),
            client_message_id,
            response.message_id,
            &event,
        )
    }

    /// Events not yet confirmed by the app, oldest first, at most `limit`. Reads only
    /// those: the queue is the contiguous range `first_event_seq..next_event_seq`.
    pub fn pending_events(&self, limit: usize) -> Result<Vec<QueuedEvent>, MachineError> {
        let (first, next) = self.store.transaction(event_range)?;
        let last = next.min(first.saturating_add(limit as u64));
        let mut events = Vec::with_capacity(usize::try_from(last - first).unwrap_or(0));
        for seq in first..last {
            if let Some(event) =
                records::get::<QueuedEvent>(&self.store, records::EVENTS, b"", &seq.to_be_bytes())?
            {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// The app has handled every event up to and including `seq`: deletes those, and
    /// only those (O(confirmed), not O(queue)).
    pub fn confirm_events(&self, seq: u64) -> Result<(), MachineError> {
        self.store.transaction(|tx| {
            let (first, next) = event_range(tx)?;
            let through = seq.min(next.saturating_sub(1));
            if through < first {
                return Ok(());
            }
            for confirmed in first..=through {
                tx.delete(records::EVENTS, b"", &confirmed.to_be_bytes())?;
            }
            records::put(tx, records::META, b"", FIRST_EVENT_SEQ, &(through + 1))
        })?;
        Ok(())
    }
}

/// The lowest event not yet confirmed (the queue's head).
const FIRST_EVENT_SEQ: &[u8] = b"first_event_seq";
/// The seq the next queued event gets (the queue's end, exclusive).
const NEXT_EVENT_SEQ: &[u8] = b"next_event_seq";

/// The queued events' range, `first..next`. A store from before the head was kept
/// finds it once from the events themselves (O(queue), that one time) and keeps it.
fn event_range(tx: &mut crate::store::StoreTransaction<'_>) -> Result<(u64, u64), RecordError> {
    let next = records::tx_get::<u64>(tx, records::META, b"", NEXT_EVENT_SEQ)?.unwrap_or(1);
    if let Some(first) = records::tx_get::<u64>(tx, records::META, b"", FIRST_EVENT_SEQ)? {
        return Ok((first.min(next), next));
    }
    let queued: Vec<QueuedEvent> = records::tx_list(tx, records::EVENTS, b"")?;
    let first = queued.iter().map(|event| event.seq).min().unwrap_or(next);
    records::put(tx, records::META, b"", FIRST_EVENT_SEQ, &first)?;
    Ok((first, next))
}

fn queue_event(
    tx: &mut crate::store::StoreTransaction<'_>,
    event: &Event,
) -> Result<(), RecordError> {
    // The head is known before the first event past it is added (old stores find it).
    let (_, seq) = event_range(tx)?;
    records::put(tx, records::META, b"", NEXT_EVENT_SEQ, &(seq + 1))?;
    records::put(
        tx,
        records::EVENTS,
        b"",
        &seq.to_be_bytes(),
        &QueuedEvent {
            seq,
            event: event.clone(),
        },
    )
}
