//! The test vectors of docs/protocol.md (`docs/test-vectors/protocol-v1.json`), checked
//! against the SDK: every plaintext decodes with the SDK's parsers to the fields the file
//! states and re-encodes to the same bytes; every committed ciphertext decrypts, with the
//! committed recipient state, to the committed plaintext; and every stream item, run
//! through a crypto machine holding that state, ends as the file says (a message, or a
//! failure with its reason code).
//!
//! `UPDATE_VECTORS=1 cargo test -p courier-sdk vectors` makes new vectors (new keys, new
//! ciphertexts: Olm and Megolm are randomised) from the SDK's own output and writes the
//! file, then checks it like any run. Without it, the file is only read and checked, so a
//! change to an encoding or a check shows as a failure here.
//!
//! The recipient's state is vodozemac's pickles (`AccountPickle`, `SessionPickle`, as
//! JSON). The machine is given them the way it stores them (its account and Olm session
//! records, JSON in the store); that one coupling to the machine's record layout is
//! deliberate: it is what lets the vectors run through the SDK's real receive path.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use courier_protocol::api::channels::{GroupMessage, SenderKeyDistribution};
use courier_protocol::api::keys::{
    ClaimKeysResponse, ClaimedKey, DeviceRef, DirectoryDevice, IdentityKeys, SignedKey,
    UserDevicesResponse,
};
use courier_protocol::api::messages::EnvelopeType;
use courier_protocol::api::stream::Envelope;
use courier_protocol::keys::{decode_base64, decode_fixed, encode_base64};
use courier_protocol::{DeviceId, UserId, signing};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;
use vodozemac::Curve25519PublicKey;
use vodozemac::megolm::{self, GroupSession, GroupSessionPickle, InboundGroupSession, SessionKey};
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};

use super::group::{GroupPlaintext, SenderKeyBody};
use super::payload::{BoundDevice, Payload, PayloadKind};
use super::store as records;
use super::{CryptoMachine, Decrypted, Event, FailureReason, ItemOutcome};
use crate::store::{SqliteStore, StoreKey};

const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/test-vectors/protocol-v1.json"
);

const SENDER_USER: Uuid = Uuid::from_u128(0x0000_a11c_e000_4000_8000_0000_0000_0001);
const SENDER_DEVICE: u32 = 1;
const RECIPIENT_USER: Uuid = Uuid::from_u128(0x0000_0b0b_0000_4000_8000_0000_0000_0002);
const RECIPIENT_DEVICE: u32 = 2;
const CHANNEL: Uuid = Uuid::from_u128(0x0000_c4a7_0000_4000_8000_0000_0000_0003);
/// A user who is neither party (for a payload naming another conversation).
const STRANGER_USER: Uuid = Uuid::from_u128(0x0000_5757_0000_4000_8000_0000_0000_0004);
/// 2026-01-01T00:00:00Z, every item's `serverTimestamp`.
const SERVER_TIMESTAMP_MS: i64 = 1_767_225_600_000;
/// The sender's clock in every well-formed payload: 5 s before the server's.
const SENT_AT_MS: u64 = 1_767_225_595_000;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VectorFile {
    about: Vec<String>,
    sender: DeviceVector,
    recipient: RecipientVector,
    envelopes: Vec<EnvelopeVector>,
    sender_key: SenderKeyVector,
    group_messages: Vec<GroupVector>,
}

/// A device's published identity keys and the exact bytes its signature covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceVector {
    user_id: UserId,
    device_id: DeviceId,
    identity_keys: IdentityKeys,
    identity_keys_signed_bytes_hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecipientVector {
    #[serde(flatten)]
    device: DeviceVector,
    /// vodozemac's `AccountPickle` (JSON) before any item below was received.
    account_pickle: Value,
    /// When the fallback key was published (the machine's account record needs it).
    fallback_published_ms: u64,
    one_time_key: SignedKeyVector,
    fallback_key: SignedKeyVector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedKeyVector {
    #[serde(flatten)]
    key: SignedKey,
    signed_bytes_hex: String,
}

/// A payload's fields, as protocol.md names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayloadFields {
    version: u8,
    kind: u8,
    sender_user_id: UserId,
    sender_device_id: DeviceId,
    sender_ed25519: String,
    recipient_user_id: UserId,
    recipient_device_id: DeviceId,
    recipient_curve25519: String,
    conversation: Uuid,
    client_message_id: String,
    timestamp_ms: u64,
    body_hex: String,
}

/// What receiving an item must end in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
enum Outcome {
    /// Shown to the app.
    #[serde(rename_all = "camelCase")]
    Message {
        conversation: Uuid,
        client_message_id: String,
        sent_at_ms: u64,
        body_hex: String,
    },
    /// A sender key taken in.
    #[serde(rename_all = "camelCase")]
    SenderKeyStored { session_id: String },
    /// Recorded as unreadable, with this reason code (and for `rejected`, the SDK's
    /// text, informative).
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeVector {
    name: String,
    about: String,
    /// The `envelope` stream item, as the server sends it (without its `type` tag).
    item: Envelope,
    /// vodozemac `SessionPickle`s (JSON) the recipient holds with the sender before this
    /// item, besides its account (empty: the account alone).
    recipient_sessions: Vec<Value>,
    /// The Olm plaintext, when the ciphertext decrypts.
    plaintext_hex: Option<String>,
    /// The plaintext's fields, when it decodes as a payload.
    payload: Option<PayloadFields>,
    expected: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SenderKeyBodyFields {
    version: u8,
    session_id: String,
    /// The Megolm session key as libolm's `olm_outbound_group_session_key` gives it
    /// (vodozemac `SessionKey::to_base64`): the 229 bytes below, unpadded base64.
    session_key_base64: String,
    session_key_hex: String,
    first_known_index: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SenderKeyVector {
    about: String,
    /// The `senderKey` stream item.
    item: SenderKeyDistribution,
    plaintext_hex: String,
    payload: PayloadFields,
    body: SenderKeyBodyFields,
    expected: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupFields {
    version: u8,
    channel_id: Uuid,
    sender_user_id: UserId,
    sender_device_id: DeviceId,
    client_message_id: String,
    timestamp_ms: u64,
    body_hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupVector {
    name: String,
    about: String,
    /// The `groupMessage` stream item; the recipient takes in `senderKey.item` first.
    item: GroupMessage,
    plaintext_hex: String,
    plaintext: GroupFields,
    message_index: u32,
    expected: Outcome,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len() % 2 == 0, "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn user(id: Uuid) -> UserId {
    UserId::from(id)
}

fn device_id(id: u32) -> DeviceId {
    DeviceId::new(id).expect("device ID")
}

fn server_timestamp() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(SERVER_TIMESTAMP_MS).expect("timestamp")
}

/// The stable code of a failure reason, as the app surface gives it (`app::types`), and
/// for `rejected` the SDK's text saying which check failed.
fn reason_code(reason: &FailureReason) -> Outcome {
    let (code, detail) = match reason {
        FailureReason::SenderBlocked => ("sender_blocked", None),
        FailureReason::SenderRemoved => ("sender_removed", None),
        FailureReason::UnknownSender => ("unknown_sender", None),
        FailureReason::Malformed => ("malformed", None),
        FailureReason::Undecryptable => ("undecryptable", None),
        FailureReason::WrongSender => ("wrong_sender", None),
        FailureReason::WrongRecipient => ("wrong_recipient", None),
        FailureReason::WrongConversation => ("wrong_conversation", None),
        FailureReason::ClientMessageIdMismatch => ("client_message_id_mismatch", None),
        FailureReason::TimestampOutOfRange => ("timestamp_out_of_range", None),
        FailureReason::Rejected(text) => ("rejected", Some(text.clone())),
    };
    Outcome::Failed {
        reason: code.into(),
        detail,
    }
}

fn failed(reason: &str, detail: Option<&str>) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
        detail: detail.map(str::to_owned),
    }
}

fn fields_of(payload: &Payload, bytes: &[u8]) -> PayloadFields {
    PayloadFields {
        version: bytes[0],
        kind: bytes[1],
        sender_user_id: payload.sender.user_id,
        sender_device_id: payload.sender.device_id,
        sender_ed25519: encode_base64(&payload.sender.key),
        recipient_user_id: payload.recipient.user_id,
        recipient_device_id: payload.recipient.device_id,
        recipient_curve25519: encode_base64(&payload.recipient.key),
        conversation: payload.conversation,
        client_message_id: payload.client_message_id.clone(),
        timestamp_ms: payload.timestamp_ms,
        body_hex: hex(&payload.body),
    }
}

fn payload_of(fields: &PayloadFields) -> Payload {
    Payload {
        kind: match fields.kind {
            1 => PayloadKind::Message,
            2 => PayloadKind::SenderKey,
            other => panic!("no payload kind {other}"),
        },
        sender: BoundDevice {
            user_id: fields.sender_user_id,
            device_id: fields.sender_device_id,
            key: decode_fixed(&fields.sender_ed25519).expect("sender key"),
        },
        recipient: BoundDevice {
            user_id: fields.recipient_user_id,
            device_id: fields.recipient_device_id,
            key: decode_fixed(&fields.recipient_curve25519).expect("recipient key"),
        },
        conversation: fields.conversation,
        client_message_id: fields.client_message_id.clone(),
        timestamp_ms: fields.timestamp_ms,
        body: unhex(&fields.body_hex),
    }
}

fn group_fields_of(plaintext: &GroupPlaintext) -> GroupFields {
    GroupFields {
        version: 1,
        channel_id: plaintext.channel_id,
        sender_user_id: plaintext.sender.user_id,
        sender_device_id: plaintext.sender.device_id,
        client_message_id: plaintext.client_message_id.clone(),
        timestamp_ms: plaintext.timestamp_ms,
        body_hex: hex(&plaintext.body),
    }
}

// ---------------------------------------------------------------------------------------
// Machines holding given state.

fn memory_store() -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open_in_memory(&StoreKey::from_bytes([7; 32])).expect("store"))
}

/// The machine's Olm session partition for a peer device: user ID ‖ device ID.
fn session_partition(peer: DeviceRef) -> Vec<u8> {
    let mut key = peer.user_id.as_bytes().to_vec();
    key.extend_from_slice(&peer.device_id.get().to_be_bytes());
    key
}

/// A machine for `user`/`device` holding `account` (and these Olm sessions with `peer`),
/// written as the machine stores its records.
fn machine_with(
    user_id: UserId,
    device: DeviceId,
    account: &Value,
    fallback_published_ms: u64,
    peer: DeviceRef,
    sessions: &[Value],
) -> CryptoMachine {
    let store = memory_store();
    store
        .transaction(|tx| {
            records::put(
                tx,
                records::ACCOUNT,
                b"",
                b"account",
                &json!({
                    "user_id": user_id,
                    "device_id": device,
                    "pickle": account,
                    "fallback_published_ms": fallback_published_ms,
                    "fallback_unpublished": false,
                }),
            )?;
            for (index, pickle) in sessions.iter().enumerate() {
                let parsed: SessionPickle =
                    serde_json::from_value(pickle.clone()).expect("session pickle");
                let session_id = Session::from_pickle(parsed).session_id();
                records::put(
                    tx,
                    records::OLM_SESSIONS,
                    &session_partition(peer),
                    session_id.as_bytes(),
                    &json!({
                        "session_id": session_id,
                        "last_used": sessions.len() - index,
                        "pickle": pickle,
                    }),
                )?;
            }
            Ok::<_, records::RecordError>(())
        })
        .expect("write the records");
    let machine = CryptoMachine::load(store)
        .expect("load the machine")
        .expect("an account");
    assert_eq!(machine.own_device(), DeviceRef::new(user_id, device));
    machine
}

fn listing(device: &DeviceVector) -> UserDevicesResponse {
    UserDevicesResponse {
        user_id: device.user_id,
        devices: vec![DirectoryDevice {
            device_id: device.device_id,
            identity_keys: device.identity_keys.clone(),
        }],
    }
}

/// The recipient as the file describes it, before any item, knowing the sender.
fn recipient_machine(file: &VectorFile, sessions: &[Value]) -> CryptoMachine {
    let recipient = &file.recipient;
    let mut machine = machine_with(
        recipient.device.user_id,
        recipient.device.device_id,
        &recipient.account_pickle,
        recipient.fallback_published_ms,
        DeviceRef::new(file.sender.user_id, file.sender.device_id),
        sessions,
    );
    machine
        .update_device_list(&listing(&file.sender))
        .expect("the sender's list");
    assert!(
        machine
            .devices(file.sender.user_id)
            .expect("devices")
            .iter()
            .any(|record| record.device_id == file.sender.device_id),
        "the sender's self-signed identity keys are taken in"
    );
    machine
}

fn account_record(store: &SqliteStore) -> Value {
    records::get::<Value>(store, records::ACCOUNT, b"", b"account")
        .expect("read")
        .expect("an account record")
}

fn session_pickles(store: &SqliteStore, peer: DeviceRef) -> Vec<Value> {
    let mut stored: Vec<Value> =
        records::list(store, records::OLM_SESSIONS, &session_partition(peer)).expect("read");
    stored.sort_by_key(|record| std::cmp::Reverse(record["last_used"].as_u64()));
    stored
        .into_iter()
        .map(|record| record["pickle"].clone())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Making the vectors.

struct Maker {
    sender_account: Account,
    sender: DeviceVector,
    recipient: RecipientVector,
    recipient_curve25519: Curve25519PublicKey,
    /// The recipient's unused one-time keys, for crafted pre-key messages.
    spare_one_time_keys: Vec<Curve25519PublicKey>,
    next_message: u128,
}

impl Maker {
    fn message_id(&mut self) -> Uuid {
        self.next_message += 1;
        Uuid::from_u128(0x0000_3e55_0000_4000_8000_0000_0000_0000 + self.next_message)
    }

    fn sender_bound(&self) -> BoundDevice {
        BoundDevice {
            user_id: self.sender.user_id,
            device_id: self.sender.device_id,
            key: decode_fixed(&self.sender.identity_keys.ed25519).expect("key"),
        }
    }

    fn recipient_bound(&self) -> BoundDevice {
        BoundDevice {
            user_id: self.recipient.device.user_id,
            device_id: self.recipient.device.device_id,
            key: self.recipient_curve25519.to_bytes(),
        }
    }

    fn message_payload(&self, client_message_id: &str, body: &[u8]) -> Payload {
        Payload {
            kind: PayloadKind::Message,
            sender: self.sender_bound(),
            recipient: self.recipient_bound(),
            conversation: RECIPIENT_USER,
            client_message_id: client_message_id.into(),
            timestamp_ms: SENT_AT_MS,
            body: body.to_vec(),
        }
    }

    /// A pre-key message of a new session on one of the recipient's spare one-time keys.
    fn crafted_pre_key(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let one_time_key = self
            .spare_one_time_keys
            .pop()
            .expect("a spare one-time key");
        let mut session = self
            .sender_account
            .create_outbound_session(
                SessionConfig::version_1(),
                self.recipient_curve25519,
                one_time_key,
            )
            .expect("outbound session");
        let (message_type, bytes) = session.encrypt(plaintext).expect("encrypt").to_parts();
        assert_eq!(message_type, 0);
        bytes
    }

    fn envelope(
        &mut self,
        client_message_id: &str,
        protocol_version: u8,
        envelope_type: EnvelopeType,
        ciphertext: &[u8],
    ) -> Envelope {
        let message_id = self.message_id();
        Envelope {
            seq: u64::try_from(self.next_message).unwrap_or(u64::MAX),
            message_id,
            sender_user_id: self.sender.user_id,
            sender_device_id: self.sender.device_id,
            client_message_id: client_message_id.into(),
            protocol_version,
            envelope_type,
            ciphertext: encode_base64(ciphertext),
            server_timestamp: server_timestamp(),
        }
    }

    /// A crafted V2 pre-key envelope whose plaintext is `plaintext` as it is.
    fn crafted(
        &mut self,
        name: &str,
        about: &str,
        item_client_message_id: &str,
        plaintext: &[u8],
        expected: Outcome,
    ) -> EnvelopeVector {
        let ciphertext = self.crafted_pre_key(plaintext);
        let item = self.envelope(item_client_message_id, 2, EnvelopeType::PreKey, &ciphertext);
        let payload = Payload::decode(plaintext)
            .ok()
            .map(|decoded| fields_of(&decoded, plaintext));
        EnvelopeVector {
            name: name.into(),
            about: about.into(),
            item,
            recipient_sessions: Vec::new(),
            plaintext_hex: Some(hex(plaintext)),
            payload,
            expected,
        }
    }
}

fn device_vector(machine: &CryptoMachine) -> DeviceVector {
    let own = machine.own_device();
    let keys = machine.identity_keys();
    DeviceVector {
        user_id: own.user_id,
        device_id: own.device_id,
        identity_keys: machine.identity_keys_upload(),
        identity_keys_signed_bytes_hex: hex(&signing::identity_keys_payload(
            own.user_id,
            own.device_id,
            &keys.curve25519,
            &keys.ed25519,
        )),
    }
}

fn signed_key_vector(device: &DeviceVector, key: SignedKey, fallback: bool) -> SignedKeyVector {
    let public = decode_fixed::<32>(&key.key).expect("key");
    let bytes = if fallback {
        signing::fallback_key_payload(device.user_id, device.device_id, &key.key_id, &public)
    } else {
        signing::one_time_key_payload(device.user_id, device.device_id, &key.key_id, &public)
    };
    SignedKeyVector {
        key,
        signed_bytes_hex: hex(&bytes),
    }
}

fn message_vector(
    name: &str,
    about: &str,
    item: Envelope,
    recipient_sessions: Vec<Value>,
    plaintext: &[u8],
) -> EnvelopeVector {
    let payload = Payload::decode(plaintext).expect("the SDK's own payload");
    EnvelopeVector {
        name: name.into(),
        about: about.into(),
        item,
        recipient_sessions,
        plaintext_hex: Some(hex(plaintext)),
        expected: Outcome::Message {
            conversation: payload.sender.user_id.as_uuid(),
            client_message_id: payload.client_message_id.clone(),
            sent_at_ms: payload.timestamp_ms,
            body_hex: hex(&payload.body),
        },
        payload: Some(fields_of(&payload, plaintext)),
    }
}

/// Decrypts an SDK-made envelope the way the recipient will (to record its plaintext).
fn olm_plaintext(
    recipient_account: &Value,
    sessions: &[Value],
    sender_curve25519: Curve25519PublicKey,
    item: &Envelope,
) -> Vec<u8> {
    decrypt_committed(recipient_account, sessions, sender_curve25519, item)
        .expect("the recipient decrypts it")
}

fn make_vectors() -> VectorFile {
    let sender_user = user(SENDER_USER);
    let recipient_user = user(RECIPIENT_USER);
    let sender_ref = DeviceRef::new(sender_user, device_id(SENDER_DEVICE));
    let recipient_ref = DeviceRef::new(recipient_user, device_id(RECIPIENT_DEVICE));
    // The stores are kept to read the machines' records (their pickles).
    let sender_store = memory_store();
    let recipient_store = memory_store();
    let mut sender = CryptoMachine::create(
        Arc::clone(&sender_store),
        sender_user,
        device_id(SENDER_DEVICE),
    )
    .expect("sender");
    let mut recipient = CryptoMachine::create(
        Arc::clone(&recipient_store),
        recipient_user,
        device_id(RECIPIENT_DEVICE),
    )
    .expect("recipient");

    // The recipient publishes 50 one-time keys and a fallback key.
    let upload = recipient
        .one_time_keys_for_upload(0)
        .expect("keys")
        .expect("an upload");
    recipient.mark_one_time_keys_published().expect("published");
    let fallback_published_ms =
        u64::try_from(SERVER_TIMESTAMP_MS).unwrap_or(0) - 24 * 60 * 60 * 1000;
    let fallback = recipient
        .fallback_key_for_upload(fallback_published_ms)
        .expect("fallback")
        .expect("a fallback key");
    recipient
        .mark_fallback_key_published(fallback_published_ms)
        .expect("published");
    let recipient_record = account_record(&recipient_store);
    let recipient_account = recipient_record["pickle"].clone();

    let sender_vector = device_vector(&sender);
    let recipient_device = device_vector(&recipient);
    let recipient_vector = RecipientVector {
        one_time_key: signed_key_vector(&recipient_device, upload.one_time_keys[0].clone(), false),
        fallback_key: signed_key_vector(&recipient_device, fallback, true),
        device: recipient_device,
        account_pickle: recipient_account.clone(),
        fallback_published_ms,
    };
    let sender_pickle: AccountPickle =
        serde_json::from_value(account_record(&sender_store)["pickle"].clone()).expect("pickle");
    let recipient_curve25519 =
        Curve25519PublicKey::from_bytes(recipient.identity_keys().curve25519);
    let sender_curve25519 = Curve25519PublicKey::from_bytes(sender.identity_keys().curve25519);
    let mut maker = Maker {
        sender_account: Account::from_pickle(sender_pickle),
        sender: sender_vector.clone(),
        recipient: recipient_vector.clone(),
        recipient_curve25519,
        spare_one_time_keys: upload.one_time_keys[1..]
            .iter()
            .map(|key| Curve25519PublicKey::from_bytes(decode_fixed(&key.key).expect("key")))
            .collect(),
        next_message: 0,
    };

    // Each side knows the other; the sender's own user has no other device.
    sender
        .update_device_list(&listing(&recipient_vector.device))
        .expect("list");
    sender
        .update_device_list(&UserDevicesResponse {
            user_id: sender_user,
            devices: vec![],
        })
        .expect("list");
    recipient
        .update_device_list(&listing(&sender_vector))
        .expect("list");
    recipient
        .update_device_list(&UserDevicesResponse {
            user_id: recipient_user,
            devices: vec![],
        })
        .expect("list");

    // 1. A pre-key message, as the SDK sends it, on the recipient's first one-time key.
    let unusable = sender
        .add_claimed_keys(&ClaimKeysResponse {
            keys: vec![ClaimedKey {
                user_id: recipient_user,
                device_id: recipient_ref.device_id,
                key: recipient_vector.one_time_key.key.clone(),
                fallback: false,
            }],
            unavailable: vec![],
        })
        .expect("claim");
    assert!(unusable.is_empty(), "the one-time key's signature verifies");
    let first = sender
        .encrypt_message(
            recipient_user,
            "vector-pre-key",
            b"hello, pre-key",
            SENT_AT_MS,
        )
        .expect("encrypt");
    let first_envelope = &first.request.device_envelopes.as_ref().expect("V2")[0];
    assert_eq!(first_envelope.envelope_type, EnvelopeType::PreKey);
    let pre_key_item = maker.envelope(
        "vector-pre-key",
        2,
        EnvelopeType::PreKey,
        &decode_base64(&first_envelope.ciphertext).expect("base64"),
    );
    let pre_key_plaintext =
        olm_plaintext(&recipient_account, &[], sender_curve25519, &pre_key_item);
    let mut envelopes = vec![message_vector(
        "pre-key message",
        "An Olm pre-key message (type 0) on the recipient's one-time key `recipient.oneTimeKey`, \
         made by the SDK. The recipient creates an inbound session from its account alone.",
        pre_key_item.clone(),
        Vec::new(),
        &pre_key_plaintext,
    )];

    // 2. A sender key (kind 2) over the same, still pre-key, Olm session.
    let recipient_record_for_sender = sender
        .devices(recipient_user)
        .expect("devices")
        .into_iter()
        .find(|record| record.device_ref() == recipient_ref)
        .expect("the recipient's record");
    let share = sender
        .prepare_sender_keys(CHANNEL, &[recipient_record_for_sender], SENT_AT_MS)
        .expect("share")
        .expect("a share");
    sender.commit_sender_keys(&share).expect("commit");
    let distribution = &share.request.distributions[0];
    let sender_key_item = SenderKeyDistribution {
        seq: 100,
        channel_id: CHANNEL,
        sender_user_id: sender_user,
        sender_device_id: sender_ref.device_id,
        session_id: share.request.session_id.clone(),
        envelope_type: distribution.envelope_type,
        ciphertext: distribution.ciphertext.clone(),
        server_timestamp: server_timestamp(),
    };
    let sender_key_plaintext = decrypt_committed_parts(
        &recipient_account,
        &[],
        sender_curve25519,
        sender_key_item.envelope_type,
        &sender_key_item.ciphertext,
    )
    .expect("the recipient decrypts the sender key");
    let sender_key_payload = Payload::decode(&sender_key_plaintext).expect("payload");
    let body = SenderKeyBody::decode(&sender_key_payload.body).expect("body");
    let session_key_bytes = sender_key_payload.body[2 + body.session_id().len()..].to_vec();
    let session_key = SessionKey::from_bytes(&session_key_bytes).expect("session key");
    let sender_key = SenderKeyVector {
        about: "A sender key: an Olm message (over the same session as the pre-key message, \
                so still a pre-key message) whose payload is kind 2, naming the channel; its \
                body carries the Megolm session ID and session key. Take it in before the \
                group messages."
            .into(),
        item: sender_key_item.clone(),
        plaintext_hex: hex(&sender_key_plaintext),
        payload: fields_of(&sender_key_payload, &sender_key_plaintext),
        body: SenderKeyBodyFields {
            version: sender_key_payload.body[0],
            session_id: body.session_id().to_owned(),
            session_key_base64: session_key.to_base64(),
            session_key_hex: hex(&session_key_bytes),
            first_known_index: body.first_known_index(),
        },
        expected: Outcome::SenderKeyStored {
            session_id: body.session_id().to_owned(),
        },
    };

    // 3. Group messages: one from the SDK, then crafted ones on the same session.
    let mut group_messages = Vec::new();
    let group_request = sender
        .encrypt_group_message(CHANNEL, "vector-group", b"hello, channel", SENT_AT_MS)
        .expect("group message");
    let mut group_session = {
        let record = records::get::<Value>(
            &sender_store,
            records::GROUP_OUTBOUND,
            b"",
            CHANNEL.as_bytes(),
        )
        .expect("read")
        .expect("the outbound session");
        let pickle: GroupSessionPickle =
            serde_json::from_value(record["pickle"].clone()).expect("pickle");
        GroupSession::from_pickle(pickle)
    };
    let mut inbound = InboundGroupSession::new(&session_key, megolm::SessionConfig::version_1());
    let mut group_vector = |name: &str,
                            about: &str,
                            item_client_message_id: &str,
                            ciphertext: Vec<u8>,
                            expected: Option<&str>|
     -> GroupVector {
        let message = megolm::MegolmMessage::from_bytes(&ciphertext).expect("megolm");
        let decrypted = inbound.decrypt(&message).expect("decrypts");
        let plaintext = GroupPlaintext::decode(&decrypted.plaintext).expect("group plaintext");
        let index = u128::from(decrypted.message_index);
        GroupVector {
            name: name.into(),
            about: about.into(),
            item: GroupMessage {
                seq: 200 + u64::from(decrypted.message_index),
                message_id: Uuid::from_u128(0x0000_6e55_0000_4000_8000_0000_0000_0000 + index),
                channel_id: CHANNEL,
                sender_user_id: sender_user,
                sender_device_id: sender_ref.device_id,
                client_message_id: item_client_message_id.into(),
                session_id: body.session_id().to_owned(),
                ciphertext: encode_base64(&ciphertext),
                server_timestamp: server_timestamp(),
            },
            plaintext_hex: hex(&decrypted.plaintext),
            plaintext: group_fields_of(&plaintext),
            message_index: decrypted.message_index,
            expected: match expected {
                None => Outcome::Message {
                    conversation: CHANNEL,
                    client_message_id: plaintext.client_message_id.clone(),
                    sent_at_ms: plaintext.timestamp_ms,
                    body_hex: hex(&plaintext.body),
                },
                Some(reason) => failed(reason, None),
            },
        }
    };
    group_messages.push(group_vector(
        "group message",
        "A Megolm message made by the SDK with the session of `senderKey`.",
        "vector-group",
        decode_base64(&group_request.ciphertext).expect("base64"),
        None,
    ));
    let crafted_group = |session: &mut GroupSession, plaintext: GroupPlaintext| {
        session
            .encrypt(plaintext.encode().expect("encode"))
            .to_bytes()
    };
    let good_group = GroupPlaintext {
        channel_id: CHANNEL,
        sender: sender_ref,
        client_message_id: "vector-group-2".into(),
        timestamp_ms: SENT_AT_MS,
        body: b"crafted".to_vec(),
    };
    let ciphertext = crafted_group(
        &mut group_session,
        GroupPlaintext {
            channel_id: Uuid::from_u128(0xdead),
            ..good_group.clone()
        },
    );
    group_messages.push(group_vector(
        "group: wrong channel",
        "The group plaintext names another channel than the item's `channelId`.",
        "vector-group-2",
        ciphertext,
        Some("wrong_conversation"),
    ));
    let ciphertext = crafted_group(
        &mut group_session,
        GroupPlaintext {
            sender: DeviceRef::new(sender_user, device_id(SENDER_DEVICE + 1)),
            ..good_group.clone()
        },
    );
    group_messages.push(group_vector(
        "group: wrong sender",
        "The group plaintext names another device of the sending user than the item's.",
        "vector-group-2",
        ciphertext,
        Some("wrong_sender"),
    ));
    let ciphertext = crafted_group(&mut group_session, good_group.clone());
    group_messages.push(group_vector(
        "group: client message ID mismatch",
        "The group plaintext's client message ID is not the item's `clientMessageId`.",
        "vector-group-other",
        ciphertext,
        Some("client_message_id_mismatch"),
    ));
    let ciphertext = crafted_group(
        &mut group_session,
        GroupPlaintext {
            timestamp_ms: SENT_AT_MS - 25 * 60 * 60 * 1000,
            ..good_group.clone()
        },
    );
    group_messages.push(group_vector(
        "group: timestamp out of range",
        "The group plaintext's timestamp is 25 hours before the item's `serverTimestamp`.",
        "vector-group-2",
        ciphertext,
        Some("timestamp_out_of_range"),
    ));

    // 4. The recipient takes in the pre-key message and answers (a normal message); the
    //    sender reads the answer, so its next message is a normal message.
    assert!(matches!(
        recipient.decrypt_envelope(&pre_key_item),
        Ok(Decrypted::Message(_))
    ));
    let answer = recipient
        .encrypt_message(sender_user, "vector-answer", b"answer", SENT_AT_MS)
        .expect("answer");
    let answer_envelope = &answer.request.device_envelopes.as_ref().expect("V2")[0];
    assert_eq!(answer_envelope.envelope_type, EnvelopeType::Normal);
    let answer_item = Envelope {
        sender_user_id: recipient_user,
        sender_device_id: recipient_ref.device_id,
        client_message_id: "vector-answer".into(),
        envelope_type: EnvelopeType::Normal,
        ciphertext: answer_envelope.ciphertext.clone(),
        ..maker.envelope("vector-answer", 2, EnvelopeType::Normal, &[])
    };
    assert!(matches!(
        sender.decrypt_envelope(&answer_item),
        Ok(Decrypted::Message(_))
    ));
    let recipient_sessions = session_pickles(&recipient_store, sender_ref);
    let second = sender
        .encrypt_message(
            recipient_user,
            "vector-normal",
            b"hello, normal",
            SENT_AT_MS,
        )
        .expect("encrypt");
    let second_envelope = &second.request.device_envelopes.as_ref().expect("V2")[0];
    assert_eq!(second_envelope.envelope_type, EnvelopeType::Normal);
    let normal_item = maker.envelope(
        "vector-normal",
        2,
        EnvelopeType::Normal,
        &decode_base64(&second_envelope.ciphertext).expect("base64"),
    );
    let normal_plaintext = olm_plaintext(
        &recipient_account,
        &recipient_sessions,
        sender_curve25519,
        &normal_item,
    );
    envelopes.push(message_vector(
        "normal message",
        "An Olm normal message (type 1), made by the SDK after the recipient answered. The \
         recipient holds the session in `recipientSessions` (its state after sending the \
         answer).",
        normal_item,
        recipient_sessions,
        &normal_plaintext,
    ));

    // 5. V1: the raw Olm message, its type found by parsing.
    let v1_plaintext = maker
        .message_payload("vector-v1", b"hello, V1")
        .encode()
        .expect("encode");
    let v1_ciphertext = maker.crafted_pre_key(&v1_plaintext);
    let v1_item = maker.envelope("vector-v1", 1, EnvelopeType::Legacy, &v1_ciphertext);
    envelopes.push(message_vector(
        "V1 ciphertext",
        "A V1 envelope (`protocolVersion` 1, `envelopeType` legacy): the ciphertext is the \
         raw Olm message, here a pre-key message; the receiver finds its type by parsing.",
        v1_item,
        Vec::new(),
        &v1_plaintext,
    ));
    let mut typed = vec![0u8];
    typed.extend_from_slice(&maker.crafted_pre_key(&v1_plaintext));
    let typed_item = maker.envelope("vector-v1", 1, EnvelopeType::Legacy, &typed);
    envelopes.push(EnvelopeVector {
        name: "V1 with a leading type byte".into(),
        about: "The old V1 form (a type byte 0x00 before the Olm message) is not an Olm \
                message."
            .into(),
        item: typed_item,
        recipient_sessions: Vec::new(),
        plaintext_hex: None,
        payload: None,
        expected: failed("malformed", None),
    });

    // 6. Rejections: each a pre-key message on a spare one-time key, decrypting fine,
    //    with one thing wrong inside (or on the item).
    let good = maker.message_payload("vector-reject", b"must not be shown");
    let mut wrong_recipient = good.clone();
    wrong_recipient.recipient.device_id = device_id(RECIPIENT_DEVICE + 1);
    envelopes.push(maker.crafted(
        "wrong recipient",
        "The payload names another device of the recipient user.",
        "vector-reject",
        &wrong_recipient.encode().expect("encode"),
        failed("wrong_recipient", None),
    ));
    let mut wrong_sender = good.clone();
    wrong_sender.sender.device_id = device_id(SENDER_DEVICE + 1);
    envelopes.push(maker.crafted(
        "wrong sender",
        "The payload names another device of the sending user than the item's sender.",
        "vector-reject",
        &wrong_sender.encode().expect("encode"),
        failed("wrong_sender", None),
    ));
    let mut wrong_sender_key = good.clone();
    wrong_sender_key.sender.key = recipient_curve25519.to_bytes();
    envelopes.push(maker.crafted(
        "wrong sender key",
        "The payload names the sending device, but with another Ed25519 key than its key on \
         record.",
        "vector-reject",
        &wrong_sender_key.encode().expect("encode"),
        failed(
            "rejected",
            Some("the payload's sender key does not match the sender's key on record"),
        ),
    ));
    let mut wrong_recipient_key = good.clone();
    wrong_recipient_key.recipient.key = [0x42; 32];
    envelopes.push(maker.crafted(
        "wrong recipient key",
        "The payload names the recipient device, but with another Curve25519 key than its \
         own.",
        "vector-reject",
        &wrong_recipient_key.encode().expect("encode"),
        failed(
            "rejected",
            Some("the payload was addressed to another identity key of this device"),
        ),
    ));
    let mut wrong_conversation = good.clone();
    wrong_conversation.conversation = STRANGER_USER;
    envelopes.push(maker.crafted(
        "wrong conversation",
        "A message from another user names a conversation other than the recipient's user.",
        "vector-reject",
        &wrong_conversation.encode().expect("encode"),
        failed("wrong_conversation", None),
    ));
    envelopes.push(maker.crafted(
        "client message ID mismatch",
        "The payload's client message ID is not the item's `clientMessageId`.",
        "vector-other-id",
        &good.encode().expect("encode"),
        failed("client_message_id_mismatch", None),
    ));
    let mut too_old = good.clone();
    too_old.timestamp_ms =
        u64::try_from(SERVER_TIMESTAMP_MS).unwrap_or(0) - 24 * 60 * 60 * 1000 - 1;
    envelopes.push(maker.crafted(
        "timestamp too old",
        "The payload's timestamp is 24 hours and 1 ms before the item's `serverTimestamp`.",
        "vector-reject",
        &too_old.encode().expect("encode"),
        failed("timestamp_out_of_range", None),
    ));
    let mut too_new = good.clone();
    too_new.timestamp_ms = u64::try_from(SERVER_TIMESTAMP_MS).unwrap_or(0) + 60 * 60 * 1000 + 1;
    envelopes.push(maker.crafted(
        "timestamp too new",
        "The payload's timestamp is 1 hour and 1 ms after the item's `serverTimestamp`.",
        "vector-reject",
        &too_new.encode().expect("encode"),
        failed("timestamp_out_of_range", None),
    ));
    let mut unknown_kind = good.encode().expect("encode");
    unknown_kind[1] = 3;
    envelopes.push(maker.crafted(
        "unknown kind",
        "The payload's kind byte is 3.",
        "vector-reject",
        &unknown_kind,
        failed("rejected", Some("payload kind 3 is not known")),
    ));
    let mut truncated = good.encode().expect("encode");
    truncated.pop();
    envelopes.push(maker.crafted(
        "truncated payload",
        "The payload lacks the last byte of its body.",
        "vector-reject",
        &truncated,
        failed("rejected", Some("the payload is truncated")),
    ));
    let mut sender_key_in_envelope = good.clone();
    sender_key_in_envelope.kind = PayloadKind::SenderKey;
    envelopes.push(maker.crafted(
        "sender key in an envelope",
        "A kind-2 payload arriving as an `envelope` item.",
        "vector-reject",
        &sender_key_in_envelope.encode().expect("encode"),
        failed(
            "rejected",
            Some("an envelope carries a payload that is not a message"),
        ),
    ));

    VectorFile {
        about: vec![
            "Test vectors for docs/protocol.md, made by the Courier SDK (vodozemac 0.11, Olm \
             and Megolm SessionConfig::version_1, libolm-compatible). Regenerate with \
             UPDATE_VECTORS=1 cargo test -p courier-sdk vectors; sdk/src/crypto/vectors.rs \
             checks them."
                .into(),
            "Byte strings are lowercase hex (*Hex) or unpadded standard base64 (keys, \
             signatures, ciphertexts, as on the wire). Stream items are the JSON the server \
             sends, without their `type` tag."
                .into(),
            "The recipient state is vodozemac pickles (unencrypted, JSON). Every envelope \
             vector starts from `recipient.accountPickle` plus its own `recipientSessions`, \
             independently of the others; a group message vector starts from the account \
             after taking in `senderKey.item`."
                .into(),
        ],
        sender: sender_vector,
        recipient: recipient_vector,
        envelopes,
        sender_key,
        group_messages,
    }
}

// ---------------------------------------------------------------------------------------
// Checking them.

/// Decrypts an item's ciphertext with vodozemac alone, from the committed state: the
/// account, then the sessions. V1 (`legacy`) is parsed as a pre-key message, then as a
/// normal message.
fn decrypt_committed(
    account: &Value,
    sessions: &[Value],
    sender_curve25519: Curve25519PublicKey,
    item: &Envelope,
) -> Option<Vec<u8>> {
    decrypt_committed_parts(
        account,
        sessions,
        sender_curve25519,
        item.envelope_type,
        &item.ciphertext,
    )
}

fn decrypt_committed_parts(
    account: &Value,
    sessions: &[Value],
    sender_curve25519: Curve25519PublicKey,
    envelope_type: EnvelopeType,
    ciphertext: &str,
) -> Option<Vec<u8>> {
    let bytes = decode_base64(ciphertext).ok()?;
    let message = match envelope_type {
        EnvelopeType::PreKey => OlmMessage::from_parts(0, &bytes).ok()?,
        EnvelopeType::Normal => OlmMessage::from_parts(1, &bytes).ok()?,
        EnvelopeType::Legacy => OlmMessage::from_parts(0, &bytes)
            .or_else(|_| OlmMessage::from_parts(1, &bytes))
            .ok()?,
    };
    for pickle in sessions {
        let pickle: SessionPickle = serde_json::from_value(pickle.clone()).ok()?;
        if let Ok(plaintext) = Session::from_pickle(pickle).decrypt(&message) {
            return Some(plaintext);
        }
    }
    let OlmMessage::PreKey(pre_key) = &message else {
        return None;
    };
    let pickle: AccountPickle = serde_json::from_value(account.clone()).ok()?;
    Account::from_pickle(pickle)
        .create_inbound_session(SessionConfig::version_1(), sender_curve25519, pre_key)
        .ok()
        .map(|created| created.plaintext)
}

fn read_file() -> VectorFile {
    let text = std::fs::read_to_string(VECTORS_PATH)
        .unwrap_or_else(|error| panic!("{VECTORS_PATH}: {error} (UPDATE_VECTORS=1 makes it)"));
    serde_json::from_str(&text).expect("the vectors parse")
}

/// The vectors, made first if `UPDATE_VECTORS` is set; once per test run (the tests run
/// in parallel and must not write the file over each other).
fn vectors() -> &'static VectorFile {
    static VECTORS: OnceLock<VectorFile> = OnceLock::new();
    VECTORS.get_or_init(|| {
        if std::env::var_os("UPDATE_VECTORS").is_some() {
            let file = make_vectors();
            let mut text = serde_json::to_string_pretty(&file).expect("serialize");
            text.push('\n');
            std::fs::write(VECTORS_PATH, text).expect("write the vectors");
        }
        read_file()
    })
}

fn sender_curve25519(file: &VectorFile) -> Curve25519PublicKey {
    Curve25519PublicKey::from_bytes(
        decode_fixed(&file.sender.identity_keys.curve25519).expect("key"),
    )
}

/// Decodes, compares and re-encodes one payload vector.
fn check_payload(name: &str, plaintext: &[u8], fields: &PayloadFields) {
    let decoded = Payload::decode(plaintext).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        &fields_of(&decoded, plaintext),
        fields,
        "{name}: decoded fields"
    );
    assert_eq!(
        payload_of(fields).encode().expect("encode"),
        plaintext,
        "{name}: re-encoded bytes"
    );
}

#[test]
fn vectors_signed_keys_verify_over_the_stated_bytes() {
    let file = vectors();
    for device in [&file.sender, &file.recipient.device] {
        let curve = decode_fixed::<32>(&device.identity_keys.curve25519).expect("key");
        let ed = decode_fixed::<32>(&device.identity_keys.ed25519).expect("key");
        let signature = decode_fixed::<64>(&device.identity_keys.signature).expect("signature");
        let bytes = signing::identity_keys_payload(device.user_id, device.device_id, &curve, &ed);
        assert_eq!(hex(&bytes), device.identity_keys_signed_bytes_hex);
        assert_eq!(
            signing::verify_identity_keys(
                device.user_id,
                device.device_id,
                &curve,
                &ed,
                &signature
            ),
            Ok(())
        );
    }
    let device = &file.recipient.device;
    let ed = decode_fixed::<32>(&device.identity_keys.ed25519).expect("key");
    for (vector, fallback) in [
        (&file.recipient.one_time_key, false),
        (&file.recipient.fallback_key, true),
    ] {
        let key = decode_fixed::<32>(&vector.key.key).expect("key");
        let bytes = if fallback {
            signing::fallback_key_payload(
                device.user_id,
                device.device_id,
                &vector.key.key_id,
                &key,
            )
        } else {
            signing::one_time_key_payload(
                device.user_id,
                device.device_id,
                &vector.key.key_id,
                &key,
            )
        };
        assert_eq!(hex(&bytes), vector.signed_bytes_hex);
        let signature = decode_fixed::<64>(&vector.key.signature).expect("signature");
        assert_eq!(signing::verify(&ed, &bytes, &signature), Ok(()));
        // A one-time key's signature is not a fallback key's, and back.
        let other = if fallback {
            signing::one_time_key_payload(
                device.user_id,
                device.device_id,
                &vector.key.key_id,
                &key,
            )
        } else {
            signing::fallback_key_payload(
                device.user_id,
                device.device_id,
                &vector.key.key_id,
                &key,
            )
        };
        assert!(signing::verify(&ed, &other, &signature).is_err());
    }
}

#[test]
fn vectors_plaintexts_decode_to_their_fields_and_re_encode_to_their_bytes() {
    let file = vectors();
    let mut decoded = 0;
    for vector in &file.envelopes {
        let Some(plaintext) = &vector.plaintext_hex else {
            continue;
        };
        let plaintext = unhex(plaintext);
        match &vector.payload {
            Some(fields) => {
                check_payload(&vector.name, &plaintext, fields);
                decoded += 1;
            }
            None => assert!(
                Payload::decode(&plaintext).is_err(),
                "{}: the file says it does not decode",
                vector.name
            ),
        }
    }
    assert!(decoded >= 3, "the message vectors decode");

    let sender_key = &file.sender_key;
    let plaintext = unhex(&sender_key.plaintext_hex);
    check_payload("sender key", &plaintext, &sender_key.payload);
    assert_eq!(plaintext[1], 2, "kind 2");
    let body_bytes = unhex(&sender_key.payload.body_hex);
    let body = SenderKeyBody::decode(&body_bytes).expect("the sender-key body");
    assert_eq!(body.session_id(), sender_key.body.session_id);
    assert_eq!(body.first_known_index(), sender_key.body.first_known_index);
    assert_eq!(body_bytes[0], sender_key.body.version);
    assert_eq!(*body.encode(), body_bytes, "the body re-encodes");
    let key_bytes = unhex(&sender_key.body.session_key_hex);
    let session_key = SessionKey::from_base64(&sender_key.body.session_key_base64).expect("key");
    assert_eq!(session_key.to_bytes(), key_bytes);
    assert_eq!(
        InboundGroupSession::new(&session_key, megolm::SessionConfig::version_1()).session_id(),
        sender_key.body.session_id,
        "the session ID is the key's"
    );

    for vector in &file.group_messages {
        let plaintext = unhex(&vector.plaintext_hex);
        let decoded =
            GroupPlaintext::decode(&plaintext).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        assert_eq!(
            group_fields_of(&decoded),
            vector.plaintext,
            "{}",
            vector.name
        );
        assert_eq!(
            decoded.encode().expect("encode"),
            plaintext,
            "{}",
            vector.name
        );
    }
}

#[test]
fn vectors_ciphertexts_decrypt_with_the_committed_state_to_the_committed_plaintexts() {
    let file = vectors();
    let sender = sender_curve25519(file);
    for vector in &file.envelopes {
        let plaintext = decrypt_committed(
            &file.recipient.account_pickle,
            &vector.recipient_sessions,
            sender,
            &vector.item,
        );
        assert_eq!(
            plaintext.map(|p| hex(&p)),
            vector.plaintext_hex,
            "{}",
            vector.name
        );
    }
    let sender_key = &file.sender_key;
    let plaintext = decrypt_committed_parts(
        &file.recipient.account_pickle,
        &[],
        sender,
        sender_key.item.envelope_type,
        &sender_key.item.ciphertext,
    )
    .expect("the sender key decrypts");
    assert_eq!(hex(&plaintext), sender_key.plaintext_hex);
    let session_key = SessionKey::from_base64(&sender_key.body.session_key_base64).expect("key");
    let mut inbound = InboundGroupSession::new(&session_key, megolm::SessionConfig::version_1());
    for vector in &file.group_messages {
        let bytes = decode_base64(&vector.item.ciphertext).expect("base64");
        let message = megolm::MegolmMessage::from_bytes(&bytes).expect("a Megolm message");
        let decrypted = inbound.decrypt(&message).expect("decrypts");
        assert_eq!(
            hex(&decrypted.plaintext),
            vector.plaintext_hex,
            "{}",
            vector.name
        );
        assert_eq!(
            decrypted.message_index, vector.message_index,
            "{}",
            vector.name
        );
    }
}

#[test]
fn vectors_items_end_as_stated_through_the_machine() {
    let file = vectors();
    let mut reasons = std::collections::BTreeSet::new();
    for vector in &file.envelopes {
        let mut machine = recipient_machine(file, &vector.recipient_sessions);
        let outcome = machine
            .decrypt_envelope(&vector.item)
            .unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        let actual = match outcome {
            Decrypted::Message(message) => Outcome::Message {
                conversation: message.conversation.as_uuid(),
                client_message_id: message.client_message_id,
                sent_at_ms: message.sent_at_ms,
                body_hex: hex(&message.body),
            },
            Decrypted::Failed(reason) => reason_code(&reason),
            Decrypted::Duplicate => panic!("{}: a duplicate on a fresh machine", vector.name),
        };
        assert_eq!(actual, vector.expected, "{}", vector.name);
        if let Outcome::Failed { reason, .. } = actual {
            reasons.insert(reason);
        }
        // A redelivery is a duplicate, whatever the outcome.
        assert_eq!(
            machine.decrypt_envelope(&vector.item).expect("again"),
            Decrypted::Duplicate,
            "{}",
            vector.name
        );
    }
    for reason in [
        "wrong_recipient",
        "wrong_sender",
        "wrong_conversation",
        "client_message_id_mismatch",
        "timestamp_out_of_range",
        "malformed",
    ] {
        assert!(reasons.contains(reason), "no rejection vector for {reason}");
    }

    for vector in &file.group_messages {
        let mut machine = recipient_machine(file, &[]);
        assert_eq!(
            machine
                .process_sender_key(&file.sender_key.item)
                .expect("the sender key"),
            ItemOutcome::Stored
        );
        let outcome = machine
            .decrypt_group_message(&vector.item)
            .unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        let actual = match outcome {
            ItemOutcome::Stored => {
                let events = machine.pending_events(100).expect("events");
                let message = events
                    .into_iter()
                    .find_map(|queued| match queued.event {
                        Event::GroupMessage { message, .. } => Some(message),
                        _ => None,
                    })
                    .expect("a group message event");
                Outcome::Message {
                    conversation: message.channel_id,
                    client_message_id: message.client_message_id,
                    sent_at_ms: message.sent_at_ms,
                    body_hex: hex(&message.body),
                }
            }
            ItemOutcome::Failed(reason) => reason_code(&reason),
            ItemOutcome::Duplicate => panic!("{}: a duplicate on a fresh machine", vector.name),
        };
        assert_eq!(actual, vector.expected, "{}", vector.name);
    }
    let mut machine = recipient_machine(file, &[]);
    let stored = machine
        .process_sender_key(&file.sender_key.item)
        .expect("the sender key");
    let actual = match stored {
        ItemOutcome::Stored => Outcome::SenderKeyStored {
            session_id: file.sender_key.body.session_id.clone(),
        },
        ItemOutcome::Failed(reason) => reason_code(&reason),
        ItemOutcome::Duplicate => panic!("a duplicate on a fresh machine"),
    };
    assert_eq!(actual, file.sender_key.expected);
}
