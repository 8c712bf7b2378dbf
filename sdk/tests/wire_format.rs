//! The byte layouts docs/protocol.md states, checked against what the SDK really sends
//! and accepts over a real server. One side is an SDK client; the other is a device made
//! here by hand from vodozemac alone, the way a second implementation (libolm) would:
//! it signs its keys over bytes built from the document's tables, parses every plaintext
//! it receives by offset (not with the SDK's parsers), and writes its answers the same
//! way. If the document and the SDK drift apart, this fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Party, TestServer, receive};
use courier_protocol::api::keys::{IdentityKeys, SignedKey, UploadOneTimeKeysRequest};
use courier_protocol::api::messages::{DeviceEnvelope, EnvelopeType, SendMessageRequest};
use courier_protocol::api::stream::StreamItem;
use courier_protocol::keys::{decode_base64, decode_fixed, encode_base64};
use courier_protocol::{DeviceId, UserId};
use courier_sdk::transport::{ApiClient, SendOutcome};
use sqlx::PgPool;
use uuid::Uuid;
use vodozemac::Curve25519PublicKey;
use vodozemac::megolm::{self, InboundGroupSession, MegolmMessage, SessionKey};
use vodozemac::olm::{Account, Message, OlmMessage, PreKeyMessage, Session, SessionConfig};

/// Reads fields by offset, as the document's tables give them.
struct At<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> At<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let field = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        field
    }

    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_slice(self.take(16)).unwrap()
    }

    fn end(&self) {
        assert_eq!(
            self.offset,
            self.bytes.len(),
            "nothing follows the last field"
        );
    }
}

/// Base64 as section 1 has it: standard alphabet, no padding.
fn assert_wire_base64(text: &str) {
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        "standard alphabet, unpadded: {text}"
    );
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap()
}

/// A kind-1 payload, written from the table of section 5.1.
#[allow(clippy::too_many_arguments)]
fn payload_by_hand(
    kind: u8,
    sender: (UserId, DeviceId, [u8; 32]),
    recipient: (UserId, DeviceId, [u8; 32]),
    conversation: Uuid,
    client_message_id: &str,
    timestamp_ms: u64,
    body: &[u8],
) -> Vec<u8> {
    let mut out = vec![1, kind];
    for (user, device, key) in [sender, recipient] {
        out.extend_from_slice(user.as_bytes());
        out.extend_from_slice(&device.get().to_be_bytes());
        out.extend_from_slice(&key);
    }
    out.extend_from_slice(conversation.as_bytes());
    out.push(u8::try_from(client_message_id.len()).unwrap());
    out.extend_from_slice(client_message_id.as_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    assert_eq!(out.len(), 135 + client_message_id.len() + body.len());
    out
}

/// The fields of a payload, read by offset (section 5.1).
struct PayloadByHand {
    kind: u8,
    sender: (Uuid, u32, [u8; 32]),
    recipient: (Uuid, u32, [u8; 32]),
    conversation: Uuid,
    client_message_id: String,
    timestamp_ms: u64,
    body: Vec<u8>,
}

/// User ID (16), device ID (`u32`), key (32).
fn read_device(at: &mut At<'_>) -> (Uuid, u32, [u8; 32]) {
    (at.uuid(), at.u32(), at.take(32).try_into().unwrap())
}

fn read_payload(bytes: &[u8]) -> PayloadByHand {
    let mut at = At::new(bytes);
    assert_eq!(at.u8(), 1, "payload version");
    let kind = at.u8();
    let sender = read_device(&mut at);
    let recipient = read_device(&mut at);
    assert_eq!(at.offset, 106);
    let conversation = at.uuid();
    let length = usize::from(at.u8());
    let client_message_id = String::from_utf8(at.take(length).to_vec()).unwrap();
    let timestamp_ms = at.u64();
    let body_length = usize::try_from(at.u32()).unwrap();
    let body = at.take(body_length).to_vec();
    at.end();
    assert_eq!(bytes.len(), 135 + length + body_length);
    PayloadByHand {
        kind,
        sender,
        recipient,
        conversation,
        client_message_id,
        timestamp_ms,
        body,
    }
}

/// A device that knows Courier only from protocol.md.
struct HandMade {
    user_id: UserId,
    device_id: DeviceId,
    api: ApiClient,
    account: Account,
}

impl HandMade {
    async fn register(server: &TestServer, name: &str) -> Self {
        server.create_account(name).await;
        let login = server.try_login(name).await.unwrap();
        let mut device = Self {
            user_id: login.user_id,
            device_id: login.device_id,
            api: server.client().with_token(login.access_token),
            account: Account::new(),
        };
        device.publish_keys().await;
        device
    }

    fn curve25519(&self) -> [u8; 32] {
        self.account.identity_keys().curve25519.to_bytes()
    }

    fn ed25519(&self) -> [u8; 32] {
        *self.account.identity_keys().ed25519.as_bytes()
    }

    /// Section 3.1 and 3.2: the signed bytes built from the tables.
    async fn publish_keys(&mut self) {
        let mut signed = b"courier:identity-keys:v1\0".to_vec();
        signed.extend_from_slice(self.user_id.as_bytes());
        signed.extend_from_slice(&self.device_id.get().to_be_bytes());
        signed.extend_from_slice(&self.curve25519());
        signed.extend_from_slice(&self.ed25519());
        assert_eq!(signed.len(), 109);
        self.api
            .publish_identity_keys(&IdentityKeys {
                curve25519: encode_base64(&self.curve25519()),
                ed25519: encode_base64(&self.ed25519()),
                signature: encode_base64(&self.account.sign(&signed).to_bytes()),
            })
            .await
            .expect("the server verifies the identity keys signed as documented");

        self.account.generate_one_time_keys(2);
        let mut keys: Vec<_> = self.account.one_time_keys().into_iter().collect();
        keys.sort_by_key(|(id, _)| *id);
        let one_time_keys = keys
            .into_iter()
            .map(|(id, key)| {
                let key_id = id.to_base64();
                let mut signed = b"courier:one-time-key:v1\0".to_vec();
                signed.extend_from_slice(self.user_id.as_bytes());
                signed.extend_from_slice(&self.device_id.get().to_be_bytes());
                signed.extend_from_slice(&u16::try_from(key_id.len()).unwrap().to_be_bytes());
                signed.extend_from_slice(key_id.as_bytes());
                signed.extend_from_slice(key.as_bytes());
                assert_eq!(signed.len(), 78 + key_id.len());
                SignedKey {
                    key_id,
                    key: encode_base64(key.as_bytes()),
                    signature: encode_base64(&self.account.sign(&signed).to_bytes()),
                }
            })
            .collect();
        self.api
            .upload_one_time_keys(&UploadOneTimeKeysRequest { one_time_keys })
            .await
            .expect("the server verifies the one-time keys signed as documented");
        self.account.mark_keys_as_published();
    }

    /// The stream's items, less `oneTimeKeysLow` notices: this device publishes only a
    /// few one-time keys, so the first claim already sends one, and it is not what these
    /// checks are about.
    async fn items(&self) -> Vec<StreamItem> {
        let mut items = self.api.inbox(0, None).await.unwrap().items;
        items.retain(|item| !matches!(item, StreamItem::OneTimeKeysLow { .. }));
        items
    }

    /// The sender's identity keys from the directory (section 3.1).
    async fn peer_keys(&self, user: UserId) -> (DeviceId, [u8; 32], [u8; 32]) {
        let listed = self.api.user_devices(user).await.unwrap();
        let device = &listed.devices[0];
        (
            device.device_id,
            decode_fixed(&device.identity_keys.curve25519).unwrap(),
            decode_fixed(&device.identity_keys.ed25519).unwrap(),
        )
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_device_built_from_the_document_talks_with_the_sdk(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let mut bob = HandMade::register(&server, "bob").await;
    let alice_user = alice.user();
    let (alice_device, alice_curve, alice_ed) = bob.peer_keys(alice_user).await;

    // The SDK claims one of Bob's one-time keys (checking the documented signature) and
    // sends a pre-key message.
    let sent_at = now_ms();
    let sent = alice.clients[0]
        .send(bob.user_id, b"hello, hand-made bob")
        .await
        .expect("the SDK accepts the one-time key signed as documented");
    let items = bob.items().await;
    let StreamItem::Envelope(envelope) = &items[0] else {
        panic!("an envelope, got {:?}", items[0]);
    };
    assert_eq!(envelope.message_id, sent.message_id);
    assert_eq!(envelope.protocol_version, 2);
    assert_eq!(envelope.envelope_type, EnvelopeType::PreKey);
    assert_wire_base64(&envelope.ciphertext);
    // Section 4.5: the raw Olm message, no type byte; Olm version 1 messages start 0x03.
    let bytes = decode_base64(&envelope.ciphertext).unwrap();
    assert_eq!(bytes[0], 0x03);
    let pre_key = PreKeyMessage::from_bytes(&bytes).unwrap();
    let created = bob
        .account
        .create_inbound_session(
            SessionConfig::version_1(),
            Curve25519PublicKey::from_bytes(alice_curve),
            &pre_key,
        )
        .unwrap();
    let mut session: Session = created.session;
    let payload = read_payload(&created.plaintext);
    assert_eq!(payload.kind, 1);
    assert_eq!(
        payload.sender,
        (alice_user.as_uuid(), alice_device.get(), alice_ed)
    );
    assert_eq!(
        payload.recipient,
        (bob.user_id.as_uuid(), bob.device_id.get(), bob.curve25519())
    );
    assert_eq!(payload.conversation, bob.user_id.as_uuid());
    assert_eq!(payload.client_message_id, envelope.client_message_id);
    assert!(payload.timestamp_ms >= sent_at && payload.timestamp_ms <= now_ms());
    assert_eq!(payload.body, b"hello, hand-made bob");

    // Bob answers with a payload written from the table: a normal message (4.2).
    let answer = payload_by_hand(
        1,
        (bob.user_id, bob.device_id, bob.ed25519()),
        (alice_user, alice_device, alice_curve),
        alice_user.as_uuid(),
        "hand-made-answer",
        now_ms(),
        b"hi alice, from the document",
    );
    let (message_type, ciphertext) = session.encrypt(&answer).unwrap().to_parts();
    assert_eq!(message_type, 1);
    let outcome = bob
        .api
        .send_message(&SendMessageRequest {
            protocol_version: Some(2),
            client_message_id: "hand-made-answer".into(),
            recipient_user_id: alice_user,
            device_envelopes: Some(vec![DeviceEnvelope {
                user_id: alice_user,
                device_id: alice_device,
                envelope_type: EnvelopeType::Normal,
                ciphertext: encode_base64(&ciphertext),
            }]),
            encrypted_envelope: None,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, SendOutcome::Sent(_)));
    assert_eq!(
        receive(&alice.clients[0]).await,
        vec!["hi alice, from the document"]
    );

    // V1 (section 4.6): the raw Olm message, no envelope type.
    let v1 = payload_by_hand(
        1,
        (bob.user_id, bob.device_id, bob.ed25519()),
        (alice_user, alice_device, alice_curve),
        alice_user.as_uuid(),
        "hand-made-v1",
        now_ms(),
        b"V1, from the document",
    );
    let OlmMessage::Normal(normal) = session.encrypt(&v1).unwrap() else {
        panic!("an established session sends normal messages");
    };
    let raw: Vec<u8> = normal.to_bytes();
    assert!(Message::from_bytes(&raw).is_ok());
    let outcome = bob
        .api
        .send_message(&SendMessageRequest {
            protocol_version: Some(1),
            client_message_id: "hand-made-v1".into(),
            recipient_user_id: alice_user,
            device_envelopes: None,
            encrypted_envelope: Some(encode_base64(&raw)),
        })
        .await
        .unwrap();
    assert!(matches!(outcome, SendOutcome::Sent(_)));
    assert_eq!(
        receive(&alice.clients[0]).await,
        vec!["V1, from the document"]
    );

    // A channel: the SDK shares its Megolm session with Bob's device (a kind-2 payload,
    // section 7.3), then sends a group message (7.4).
    let channel = alice.clients[0]
        .create_channel(&[bob.user_id])
        .await
        .unwrap();
    let group_sent = alice.clients[0]
        .send_group(channel.channel_id, b"hello, channel")
        .await
        .unwrap();
    let items = bob.items().await;
    let sender_key = items
        .iter()
        .find_map(|item| match item {
            StreamItem::SenderKey(sender_key) => Some(sender_key.clone()),
            _ => None,
        })
        .expect("a sender key");
    assert_eq!(sender_key.envelope_type, EnvelopeType::Normal);
    assert_wire_base64(&sender_key.ciphertext);
    let olm = Message::from_bytes(&decode_base64(&sender_key.ciphertext).unwrap()).unwrap();
    let plaintext = session.decrypt(&OlmMessage::Normal(olm)).unwrap();
    let payload = read_payload(&plaintext);
    assert_eq!(payload.kind, 2);
    assert_eq!(
        payload.sender,
        (alice_user.as_uuid(), alice_device.get(), alice_ed)
    );
    assert_eq!(
        payload.recipient,
        (bob.user_id.as_uuid(), bob.device_id.get(), bob.curve25519())
    );
    assert_eq!(payload.conversation, channel.channel_id);
    assert_eq!(
        payload.client_message_id,
        sender_key.session_id.replace('+', "-").replace('/', "_")
    );

    // The sender-key body and the Megolm session key in it (section 7.3).
    let mut at = At::new(&payload.body);
    assert_eq!(at.u8(), 1, "sender-key body version");
    let id_length = usize::from(at.u8());
    let session_id = String::from_utf8(at.take(id_length).to_vec()).unwrap();
    let key = at.take(229);
    at.end();
    assert_eq!(session_id, sender_key.session_id);
    let mut key_at = At::new(key);
    assert_eq!(key_at.u8(), 2, "SessionKey version");
    let index = key_at.u32();
    key_at.take(128);
    let signing_key = key_at.take(32);
    key_at.take(64);
    key_at.end();
    assert_eq!(session_id, encode_base64(signing_key));
    // libolm's olm_init_inbound_group_session takes this key as unpadded base64.
    let session_key = SessionKey::from_base64(&encode_base64(key)).unwrap();
    let mut inbound = InboundGroupSession::new(&session_key, megolm::SessionConfig::version_1());
    assert_eq!(inbound.first_known_index(), index);
    assert_eq!(inbound.session_id(), session_id);

    let group_message = items
        .iter()
        .find_map(|item| match item {
            StreamItem::GroupMessage(message) => Some(message.clone()),
            _ => None,
        })
        .expect("a group message");
    assert_eq!(group_message.message_id, group_sent.message_id);
    assert_eq!(group_message.session_id, session_id);
    assert_wire_base64(&group_message.ciphertext);
    let megolm_bytes = decode_base64(&group_message.ciphertext).unwrap();
    assert_eq!(
        megolm_bytes[0], 0x03,
        "Megolm version 1 messages start 0x03"
    );
    let decrypted = inbound
        .decrypt(&MegolmMessage::from_bytes(&megolm_bytes).unwrap())
        .unwrap();
    // The group plaintext (section 7.4).
    let mut at = At::new(&decrypted.plaintext);
    assert_eq!(at.u8(), 1, "group plaintext version");
    assert_eq!(at.uuid(), channel.channel_id);
    assert_eq!(at.uuid(), alice_user.as_uuid());
    assert_eq!(at.u32(), alice_device.get());
    let length = usize::from(at.u8());
    assert_eq!(at.take(length), group_message.client_message_id.as_bytes());
    let timestamp = at.u64();
    assert!(timestamp <= now_ms());
    let body_length = usize::try_from(at.u32()).unwrap();
    assert_eq!(at.take(body_length), b"hello, channel");
    at.end();
}
