//! A receiver refuses payloads bound to something other than the stream item they came
//! in: a real SDK sender's Olm session carries payloads changed by hand (through
//! `courier_sdk::testing`) to name another recipient device, another sender, another
//! conversation, another client message ID than the send's, or a timestamp far from the
//! server's. Each is reported with its own reason code, acknowledged, and does not stop
//! the genuine message after it. Real server, real PostgreSQL, real SDK clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Party, TestServer, eventually, receive};
use courier_protocol::api::messages::SendMessageRequest;
use courier_protocol::{DeviceId, UserId};
use courier_sdk::app::{AppEvent, AppEventKind};
use courier_sdk::client::Client;
use courier_sdk::testing::{MessagePayload, encrypt_for};
use courier_sdk::transport::SendOutcome;
use sqlx::PgPool;
use uuid::Uuid;

/// 2100-01-01T00:00:00Z, in milliseconds since the Unix epoch.
const YEAR_2100_MS: u64 = 4_102_444_800_000;

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap()
}

/// Alice sends Bob a message under `client_message_id` whose payload is the one her
/// device would send, changed by `tamper`. Returns the server's message ID.
async fn send_tampered(
    alice: &Client,
    bob: &Client,
    client_message_id: &str,
    tamper: impl FnOnce(&mut MessagePayload),
) -> Uuid {
    let bob_device = bob.own_device();
    let envelope = {
        let mut machine = alice.crypto().await;
        let mut payload = MessagePayload::genuine(
            &machine,
            bob_device.user_id,
            bob_device,
            client_message_id,
            b"tampered",
            now_ms(),
        )
        .unwrap();
        tamper(&mut payload);
        let plaintext = payload.encode().unwrap();
        encrypt_for(&mut machine, bob_device, &plaintext).unwrap()
    };
    let outcome = alice
        .api()
        .send_message(&SendMessageRequest {
            protocol_version: Some(2),
            client_message_id: client_message_id.into(),
            recipient_user_id: bob_device.user_id,
            device_envelopes: Some(vec![envelope]),
            encrypted_envelope: None,
        })
        .await
        .unwrap();
    match outcome {
        SendOutcome::Sent(sent) => sent.message_id,
        other => panic!("the server refused the send: {other:?}"),
    }
}

/// Alice (one device) and Bob (one device) with an Olm session from a genuine message;
/// then Alice's tampered message, which Bob must refuse with `reason`, acknowledge, and
/// read on: a genuine message after it arrives.
async fn refused_with(pool: PgPool, reason: &str, tamper: impl FnOnce(&mut MessagePayload)) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    let (alice, bob_party) = (&alice.clients[0], bob);
    let bob = &bob_party.clients[0];
    alice.send(bob_party.user(), b"hello").await.unwrap();
    assert_eq!(receive(bob).await, vec!["hello"]);

    let tampered = send_tampered(alice, bob, "tampered-1", tamper).await;
    bob.receive_until_caught_up().await.unwrap();
    let events = bob.pending_events(100).await.unwrap();
    let last = events
        .last()
        .expect("an event for the tampered message")
        .seq;
    let kinds: Vec<AppEventKind> = events
        .into_iter()
        .map(|event| AppEvent::from(event).kind)
        .filter(|kind| {
            matches!(
                kind,
                AppEventKind::Message { .. } | AppEventKind::DecryptionFailed { .. }
            )
        })
        .collect();
    match kinds.as_slice() {
        [
            AppEventKind::DecryptionFailed {
                message_id,
                sender,
                reason: reported,
            },
        ] => {
            assert_eq!(*message_id, tampered.to_string());
            assert_eq!(sender.user_id, alice.own_device().user_id.to_string());
            assert_eq!(reported, reason);
        }
        other => panic!("expected one failure with {reason}, got {other:?}"),
    }
    bob.confirm_events(last).await.unwrap();

    // Acknowledged: the server holds nothing more for Bob (acknowledgements are written
    // in the background).
    eventually("the tampered envelope to be acknowledged", || async {
        bob.api().inbox(0, None).await.unwrap().items.is_empty()
    })
    .await;
    alice
        .send(bob_party.user(), b"after the tampered one")
        .await
        .unwrap();
    assert_eq!(receive(bob).await, vec!["after the tampered one"]);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_for_another_recipient_device_is_wrong_recipient(pool: PgPool) {
    refused_with(pool, "wrong_recipient", |payload| {
        payload.recipient.device_id = DeviceId::new(payload.recipient.device_id.get() + 1).unwrap();
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_for_another_recipient_user_is_wrong_recipient(pool: PgPool) {
    refused_with(pool, "wrong_recipient", |payload| {
        payload.recipient.user_id = UserId::new_random();
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_naming_another_sender_device_is_wrong_sender(pool: PgPool) {
    refused_with(pool, "wrong_sender", |payload| {
        payload.sender.device_id = DeviceId::new(payload.sender.device_id.get() + 1).unwrap();
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_naming_another_sender_user_is_wrong_sender(pool: PgPool) {
    refused_with(pool, "wrong_sender", |payload| {
        payload.sender.user_id = UserId::new_random();
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_of_another_conversation_is_wrong_conversation(pool: PgPool) {
    refused_with(pool, "wrong_conversation", |payload| {
        payload.conversation = Uuid::new_v4();
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_with_another_client_message_id_is_a_mismatch(pool: PgPool) {
    refused_with(pool, "client_message_id_mismatch", |payload| {
        payload.client_message_id = "another-send".into();
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_stamped_at_the_epoch_is_out_of_range(pool: PgPool) {
    refused_with(pool, "timestamp_out_of_range", |payload| {
        payload.timestamp_ms = 0;
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_payload_stamped_in_2100_is_out_of_range(pool: PgPool) {
    refused_with(pool, "timestamp_out_of_range", |payload| {
        payload.timestamp_ms = YEAR_2100_MS;
    })
    .await;
}
