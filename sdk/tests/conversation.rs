//! The SDK end to end: real clients (crypto core, encrypted store, transport) against the
//! real server and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Party, TestServer, key, receive, take_messages};
use courier_protocol::api::keys::ClaimKeysRequest;
use courier_protocol::api::stream::StreamItem;
use courier_sdk::client::{Client, ClientError};
use courier_sdk::crypto::{Decrypted, Event, QueuedEvent};
use sqlx::PgPool;
use std::sync::Arc;

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn every_device_of_both_users_decrypts_every_message_meant_for_it(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 2).await;
    let bob = Party::register(&server, "bob", 3).await;

    // Alice's device 0 learned her own list before device 1 existed: the server refuses
    // the first attempt and the client refreshes and retries by itself.
    let sent = alice.clients[0]
        .send(bob.user(), b"hello bob")
        .await
        .unwrap();
    assert_eq!(
        sent.envelope_count, 4,
        "3 of Bob's devices and Alice's other one"
    );
    for client in &bob.clients {
        assert_eq!(receive(client).await, vec!["hello bob"]);
    }
    assert_eq!(
        receive(&alice.clients[1]).await,
        vec!["hello bob"],
        "the sender's other device"
    );
    let events = alice.clients[0].pending_events(100).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(&e.event,
            Event::Sent { message_id, recipient, .. } if *message_id == sent.message_id && *recipient == bob.user())),
        "the sender hears that the server stored its message"
    );
    assert!(
        receive(&alice.clients[0]).await.is_empty(),
        "not to the sending device"
    );

    // Bob answers from device 1: Alice's two devices and Bob's other two get it.
    bob.clients[1]
        .send(alice.user(), b"hi alice")
        .await
        .unwrap();
    for client in alice
        .clients
        .iter()
        .chain([&bob.clients[0], &bob.clients[2]])
    {
        assert_eq!(receive(client).await, vec!["hi alice"]);
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn an_offline_device_catches_up_in_order(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 2).await;
    let expected: Vec<String> = (0..30).map(|i| format!("message {i}")).collect();
    for body in &expected {
        alice.clients[0]
            .send(bob.user(), body.as_bytes())
            .await
            .unwrap();
    }
    // Bob's device 1 was offline for all of it.
    assert_eq!(receive(&bob.clients[1]).await, expected);
    // And over REST for a client that cannot hold a socket: nothing new, in order.
    let summary = bob.clients[0].sync_over_rest().await.unwrap();
    assert_eq!(summary.messages, 30);
    assert_eq!(take_messages(&bob.clients[0]).await, expected);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_device_added_later_gets_later_messages_only(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let mut bob = Party::register(&server, "bob", 1).await;
    alice.clients[0].send(bob.user(), b"before").await.unwrap();
    let late = bob.add_device(&server, "bob").await;
    assert!(receive(late).await.is_empty());
    alice.clients[0].send(bob.user(), b"after").await.unwrap();
    assert_eq!(receive(&bob.clients[1]).await, vec!["after"]);
    assert_eq!(receive(&bob.clients[0]).await, vec!["before", "after"]);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_removed_device_gets_nothing_more(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 2).await;
    alice.clients[0].send(bob.user(), b"one").await.unwrap();
    assert_eq!(receive(&bob.clients[1]).await, vec!["one"]);

    let removed = bob.clients[1].own_device().device_id;
    bob.clients[0].remove_device(removed).await.unwrap();
    // Alice still lists the removed device: the server refuses it as stale, the client
    // refreshes and sends to the rest.
    let sent = alice.clients[0].send(bob.user(), b"two").await.unwrap();
    assert_eq!(sent.envelope_count, 1);
    assert_eq!(receive(&bob.clients[0]).await, vec!["one", "two"]);
    match bob.clients[1].receive_until_caught_up().await {
        Err(ClientError::Transport(error)) => {
            assert_eq!(
                error.code(),
                Some(courier_protocol::ErrorCode::DeviceRemoved)
            );
        }
        other => panic!("a removed device must not read its stream: {other:?}"),
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_crash_between_decrypt_and_ack_hands_the_message_to_the_app_once(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    alice.clients[0]
        .send(bob.user(), b"exactly once")
        .await
        .unwrap();

    // Bob's device reads its inbox, decrypts and stores, and dies before acknowledging.
    let page = bob.clients[0].api().inbox(0, None).await.unwrap();
    let StreamItem::Envelope(envelope) = &page.items[0] else {
        panic!("expected an envelope, got {:?}", page.items[0]);
    };
    let stored = bob.clients[0].process_envelope(envelope).await.unwrap();
    assert!(matches!(stored, Decrypted::Message(_)));
    let Party { dir, clients } = bob;
    drop(clients);

    // Restart from the store: the server sends the envelope again; it is recognised.
    let restarted = Client::open(&dir.path().join("device-0.db"), &key())
        .await
        .unwrap();
    let summary = restarted.receive_until_caught_up().await.unwrap();
    assert_eq!((summary.messages, summary.duplicates), (0, 1));
    assert_eq!(take_messages(&restarted).await, vec!["exactly once"]);
    // Acknowledged now: a later connection gets nothing.
    let summary = restarted.receive_until_caught_up().await.unwrap();
    assert_eq!(summary.duplicates + summary.messages, 0);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn the_store_survives_a_process_restart_mid_conversation(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    alice.clients[0].send(bob.user(), b"first").await.unwrap();
    assert_eq!(receive(&bob.clients[0]).await, vec!["first"]);

    let Party { dir, clients } = alice;
    drop(clients);
    let alice = Client::open(&dir.path().join("device-0.db"), &key())
        .await
        .unwrap();
    alice.send(bob.user(), b"second").await.unwrap();
    assert_eq!(receive(&bob.clients[0]).await, vec!["second"]);
    bob.clients[0]
        .send(alice.own_device().user_id, b"third")
        .await
        .unwrap();
    assert_eq!(receive(&alice).await, vec!["third"]);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn one_time_keys_are_topped_up_and_the_fallback_key_still_opens_a_session(pool: PgPool) {
    // 50 claims of Bob's device in a row are past the server's per-target rate limit
    // (past it a claim gets the fallback key, keeping the one-time keys); this test drains
    // them on purpose, so without limits.
    let server = TestServer::start_with(
        pool,
        courier_server::Settings {
            rate_limits: courier_server::rate_limits::RateLimitSettings::off(),
            ..courier_server::Settings::default()
        },
    )
    .await;
    let mut alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    let bob_device = bob.clients[0].own_device();
    assert_eq!(
        bob.clients[0]
            .api()
            .key_count()
            .await
            .unwrap()
            .one_time_key_count,
        50
    );

    // Someone claims all of Bob's one-time keys.
    for _ in 0..50 {
        let claimed = alice.clients[0]
            .api()
            .claim_keys(&ClaimKeysRequest {
                devices: vec![bob_device],
            })
            .await
            .unwrap();
        assert!(!claimed.keys[0].fallback);
    }
    assert_eq!(
        bob.clients[0]
            .api()
            .key_count()
            .await
            .unwrap()
            .one_time_key_count,
        0
    );

    // A new device of Alice's opens its session with Bob on the fallback key.
    let late = alice.add_device(&server, "alice").await;
    late.send(bob.user(), b"via the fallback key")
        .await
        .unwrap();
    assert_eq!(receive(&bob.clients[0]).await, vec!["via the fallback key"]);
    // Receiving tops the one-time keys up again.
    assert_eq!(
        bob.clients[0]
            .api()
            .key_count()
            .await
            .unwrap()
            .one_time_key_count,
        50
    );
}

/// What a malicious server could do: copy an undelivered envelope of one device as a new
/// message into a device's stream (the same device: a replay; another: a re-addressing).
async fn forge_copy(
    pool: &PgPool,
    from: courier_protocol::api::keys::DeviceRef,
    to: courier_protocol::api::keys::DeviceRef,
) -> uuid::Uuid {
    let forged = uuid::Uuid::now_v7();
    let original: uuid::Uuid = sqlx::query_scalar(
        "SELECT message_id FROM message_envelopes
         WHERE recipient_user_id = $1 AND recipient_device_id = $2 AND delivered_at IS NULL
         ORDER BY seq LIMIT 1",
    )
    .bind(from.user_id.as_uuid())
    .bind(from.device_id.as_i32())
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO messages (message_id, sender_user_id, sender_device_id, client_message_id,
                               recipient_user_id, protocol_version, envelope_count)
         SELECT $2, sender_user_id, sender_device_id, 'forged-' || $2::text, recipient_user_id, protocol_version, 1
         FROM messages WHERE message_id = $1",
    )
    .bind(original)
    .bind(forged)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH bumped AS (
             UPDATE devices SET next_stream_seq = next_stream_seq + 1
             WHERE user_id = $3 AND device_id = $4 RETURNING next_stream_seq - 1 AS seq
         )
         INSERT INTO message_envelopes (recipient_user_id, recipient_device_id, seq, message_id,
                                        envelope_type, ciphertext)
         SELECT $3, $4, bumped.seq, $5, e.envelope_type, e.ciphertext
         FROM message_envelopes e, bumped
         WHERE e.message_id = $1 AND e.recipient_user_id = $2 AND e.recipient_device_id = $6",
    )
    .bind(original)
    .bind(from.user_id.as_uuid())
    .bind(to.user_id.as_uuid())
    .bind(to.device_id.as_i32())
    .bind(forged)
    .bind(from.device_id.as_i32())
    .execute(pool)
    .await
    .unwrap();
    forged
}

fn failures(events: &[QueuedEvent]) -> Vec<uuid::Uuid> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::DecryptionFailed { message_id, .. } => Some(*message_id),
            _ => None,
        })
        .collect()
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_replayed_or_re_addressed_ciphertext_is_rejected(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 2).await;
    let (bob0, bob1) = (bob.clients[0].own_device(), bob.clients[1].own_device());
    alice.clients[0].send(bob.user(), b"genuine").await.unwrap();
    let replayed = forge_copy(&pool, bob0, bob0).await;
    let re_addressed = forge_copy(&pool, bob0, bob1).await;

    for (client, forged) in [(&bob.clients[0], replayed), (&bob.clients[1], re_addressed)] {
        let summary = client.receive_until_caught_up().await.unwrap();
        assert_eq!((summary.messages, summary.failures), (1, 1));
        let events = client.pending_events(100).await.unwrap();
        assert_eq!(failures(&events), vec![forged]);
        assert_eq!(take_messages(client).await, vec!["genuine"]);
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn an_identity_key_change_is_flagged_and_blocks_sending_until_accepted(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 2).await;
    alice.clients[0].send(bob.user(), b"before").await.unwrap();
    let bob1 = bob.clients[1].own_device();

    // The server (or whoever holds its database) swaps Bob's device 1 for keys of its
    // own, self-signed so the directory accepts them.
    let imposter = vodozemac::olm::Account::new();
    let keys = imposter.identity_keys();
    let payload = courier_protocol::signing::identity_keys_payload(
        bob1.user_id,
        bob1.device_id,
        &keys.curve25519.to_bytes(),
        keys.ed25519.as_bytes(),
    );
    sqlx::query(
        "UPDATE device_identity_keys SET curve25519_key = $3, ed25519_key = $4, signature = $5
         WHERE user_id = $1 AND device_id = $2",
    )
    .bind(bob1.user_id.as_uuid())
    .bind(bob1.device_id.as_i32())
    .bind(keys.curve25519.to_bytes().to_vec())
    .bind(keys.ed25519.as_bytes().to_vec())
    .bind(imposter.sign(payload).to_bytes().to_vec())
    .execute(&pool)
    .await
    .unwrap();

    let changes = alice.clients[0].refresh_devices(bob.user()).await.unwrap();
    assert_eq!(
        changes,
        vec![courier_sdk::crypto::DeviceChange::IdentityChanged { device: bob1 }]
    );
    match alice.clients[0].send(bob.user(), b"blocked").await {
        Err(ClientError::Crypto(courier_sdk::crypto::MachineError::BlockedDevices(devices))) => {
            assert_eq!(devices, vec![bob1]);
        }
        other => panic!("a send to a re-keyed device must be blocked: {other:?}"),
    }
    // Nothing left: Bob's devices got only the first message.
    assert_eq!(receive(&bob.clients[0]).await, vec!["before"]);

    // The app accepts the change: sending is no longer blocked. The one-time keys on the
    // server were signed by the real device, not by the new keys, so no session opens
    // with the imposter either.
    alice.clients[0].accept_identity_change(bob1).await.unwrap();
    match alice.clients[0].send(bob.user(), b"after").await {
        Err(ClientError::NoKeys(devices)) => assert_eq!(devices, vec![bob1]),
        other => panic!("expected the imposter's keys to fail their signatures: {other:?}"),
    }
}

/// Waits until a client's queue holds `count` messages (woken by the client, bounded at
/// 10 s); returns them.
async fn wait_for_messages(client: &Client, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while got.len() < count {
            client.wait_for_events().await.unwrap();
            got.extend(take_messages(client).await);
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "only {} of {count} messages arrived: {got:?}",
        got.len()
    );
    got
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn the_receive_loop_reconnects_after_a_server_restart_and_stops_when_replaced(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let address = format!(
        "{}:{}",
        server.base_url.host_str().unwrap(),
        server.base_url.port().unwrap()
    );
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Arc::new(Party::register(&server, "bob", 1).await);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let looping = {
        let bob = bob.clone();
        tokio::spawn(async move {
            bob.clients[0]
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    alice.clients[0].send(bob.user(), b"live").await.unwrap();
    assert_eq!(wait_for_messages(&bob.clients[0], 1).await, vec!["live"]);

    // The server goes away and comes back on the same address: the loop reconnects by
    // itself and resumes after what it stored.
    drop(server);
    let server =
        TestServer::start_at(pool.clone(), courier_server::Settings::default(), &address).await;
    alice.clients[0]
        .send(bob.user(), b"after the restart")
        .await
        .unwrap();
    assert_eq!(
        wait_for_messages(&bob.clients[0], 1).await,
        vec!["after the restart"]
    );

    // Another connection of the same device takes over: the loop ends for good.
    let other = bob.clients[0].api().open_stream(None).await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), looping)
        .await
        .expect("the loop ends when replaced")
        .unwrap();
    assert!(
        matches!(
            ended,
            Err(ClientError::StreamEnded(
                courier_sdk::transport::StreamClosed::Replaced
            ))
        ),
        "{ended:?}"
    );
    drop((other, stop, server));
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_retried_send_with_the_same_client_id_is_stored_and_received_once(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    // The answer to the first attempt was lost (as after a network error): the app, or
    // the client's own retry, sends again under the same client message ID.
    let first = alice.clients[0]
        .send_with_id(bob.user(), "retry-me", b"only once")
        .await
        .unwrap();
    let again = alice.clients[0]
        .send_with_id(bob.user(), "retry-me", b"only once")
        .await
        .unwrap();
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(receive(&bob.clients[0]).await, vec!["only once"]);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn an_app_waiting_for_events_is_woken_when_a_message_arrives(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    let receiver = &bob.clients[0];
    take_messages(receiver).await; // whatever registration queued
    assert!(receiver.pending_events(10).await.unwrap().is_empty());

    // The app waits while the receive loop runs; the message is sent meanwhile.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = receiver.run(async {
        let _ = stopped.await;
    });
    let waiting = async {
        let woken = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            receiver.wait_for_events(),
        )
        .await;
        let _ = stop.send(());
        woken
    };
    let sending = async {
        alice.clients[0].send(bob.user(), b"wake up").await.unwrap();
    };
    let (ran, woken, ()) = tokio::join!(running, waiting, sending);
    ran.unwrap();
    woken.expect("the wait was not woken within 10 s").unwrap();
    assert_eq!(take_messages(receiver).await, vec!["wake up"]);

    // With events already queued, the wait resolves without anything new arriving.
    alice.clients[0].send(bob.user(), b"again").await.unwrap();
    receiver.receive_until_caught_up().await.unwrap();
    assert!(!receiver.pending_events(10).await.unwrap().is_empty());
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        receiver.wait_for_events(),
    )
    .await
    .expect("pending events did not resolve the wait")
    .unwrap();
}

/// A V1 sender built by hand: a vodozemac account of its own (not the SDK's), sending
/// V1 messages as docs/api.md describes them: `encryptedEnvelope` is the raw Olm message
/// in base64, with nothing in front.
#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_hand_built_v1_send_is_decrypted_by_an_sdk_device(pool: PgPool) {
    use courier_protocol::api::keys::IdentityKeys;
    use courier_protocol::api::messages::{EnvelopeType, SendMessageRequest};
    use courier_protocol::keys::{decode_base64, decode_fixed, encode_base64};
    use courier_protocol::signing;
    use courier_sdk::testing::MessagePayload;
    use courier_sdk::transport::SendOutcome;
    use vodozemac::Curve25519PublicKey;
    use vodozemac::olm::{Account, OlmMessage, SessionConfig};

    let server = TestServer::start(pool).await;
    let bob = Party::register(&server, "bob", 1).await;
    let bob_device = bob.clients[0].own_device();
    server.create_account("carol").await;
    let carol = common::TestDevice::new(&server, server.try_login("carol").await.unwrap());
    let carol_device = courier_protocol::api::keys::DeviceRef {
        user_id: carol.user_id,
        device_id: carol.device_id,
    };
    let account = Account::new();
    let identity = account.identity_keys();
    let (curve25519, ed25519) = (identity.curve25519.to_bytes(), *identity.ed25519.as_bytes());
    let signed =
        signing::identity_keys_payload(carol.user_id, carol.device_id, &curve25519, &ed25519);
    carol
        .client
        .publish_identity_keys(&IdentityKeys {
            curve25519: encode_base64(&curve25519),
            ed25519: encode_base64(&ed25519),
            signature: encode_base64(&account.sign(&signed).to_bytes()),
        })
        .await
        .unwrap();

    // Carol opens an Olm session with Bob's device from the directory and a claimed key.
    let directory = carol.client.user_devices(bob.user()).await.unwrap();
    let bob_identity: [u8; 32] =
        decode_fixed(&directory.devices[0].identity_keys.curve25519).unwrap();
    let claimed = carol
        .client
        .claim_keys(&ClaimKeysRequest {
            devices: vec![bob_device],
        })
        .await
        .unwrap();
    let one_time_key: [u8; 32] = decode_fixed(&claimed.keys[0].key.key).unwrap();
    let mut session = account
        .create_outbound_session(
            SessionConfig::version_1(),
            Curve25519PublicKey::from_bytes(bob_identity),
            Curve25519PublicKey::from_bytes(one_time_key),
        )
        .unwrap();
    let v1_send = |session: &mut vodozemac::olm::Session, id: &str, body: &[u8]| {
        let payload = MessagePayload {
            sender: carol_device,
            sender_ed25519: ed25519,
            recipient: bob_device,
            recipient_curve25519: bob_identity,
            conversation: bob_device.user_id.as_uuid(),
            client_message_id: id.into(),
            timestamp_ms: u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap(),
            body: body.to_vec(),
        };
        let message = session.encrypt(payload.encode().unwrap()).unwrap();
        let kind = match &message {
            OlmMessage::PreKey(_) => EnvelopeType::PreKey,
            OlmMessage::Normal(_) => EnvelopeType::Normal,
        };
        let (_, raw) = message.to_parts();
        let request = SendMessageRequest {
            protocol_version: Some(1),
            client_message_id: id.into(),
            recipient_user_id: bob_device.user_id,
            device_envelopes: None,
            encrypted_envelope: Some(encode_base64(&raw)),
        };
        (kind, request)
    };

    // The first message of the session is a pre-key message.
    let (kind, request) = v1_send(&mut session, "v1-first", b"hello from v1");
    assert_eq!(kind, EnvelopeType::PreKey);
    assert!(matches!(
        carol.client.send_message(&request).await.unwrap(),
        SendOutcome::Sent(_)
    ));
    assert_eq!(receive(&bob.clients[0]).await, vec!["hello from v1"]);

    // Bob answers (a V2 envelope for Carol's device); once Carol has read it, her next
    // message is a normal one.
    bob.clients[0]
        .send(carol.user_id, b"hello carol")
        .await
        .unwrap();
    let page = carol.client.inbox(0, None).await.unwrap();
    let answer = page
        .items
        .iter()
        .find_map(|item| match item {
            StreamItem::Envelope(envelope) => Some(envelope),
            _ => None,
        })
        .expect("Bob's envelope in Carol's inbox");
    let answer_type = match answer.envelope_type {
        EnvelopeType::PreKey => 0,
        _ => 1,
    };
    let answer =
        OlmMessage::from_parts(answer_type, &decode_base64(&answer.ciphertext).unwrap()).unwrap();
    session.decrypt(&answer).unwrap();
    let (kind, request) = v1_send(&mut session, "v1-second", b"and again");
    assert_eq!(kind, EnvelopeType::Normal);
    assert!(matches!(
        carol.client.send_message(&request).await.unwrap(),
        SendOutcome::Sent(_)
    ));
    assert_eq!(receive(&bob.clients[0]).await, vec!["and again"]);
}
