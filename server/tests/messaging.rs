//! The messaging core: V2 per-device envelopes, V1 compatibility, ordered per-device
//! streams over WebSocket and REST, idempotent sends, restarts, removal, retention.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{
    Received, TestDevice, TestServer, assert_error, envelope_plaintext, envelope_text, v2_body,
};
use courier_protocol::api::messages::{DeviceListMismatch, SendMessageResponse};
use courier_protocol::api::stream::{InboxPage, StreamItem, close_code};
use courier_protocol::keys::encode_base64;
use courier_protocol::{DeviceId, UserId};
use courier_server::{MIGRATOR, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

/// A user with published devices.
struct User {
    id: UserId,
    devices: Vec<TestDevice>,
}

impl User {
    async fn new(server: &TestServer, name: &str, devices: usize) -> Self {
        let account = server.create_account(name).await;
        let mut list = Vec::new();
        for _ in 0..devices {
            list.push(server.new_published_device(name).await);
        }
        Self {
            id: account.user_id,
            devices: list,
        }
    }

    fn refs(&self) -> Vec<(UserId, DeviceId)> {
        self.devices
            .iter()
            .map(|d| (d.user_id, d.device_id))
            .collect()
    }
}

/// The envelope targets of a V2 send from `sender` to `recipient`: every recipient device
/// and every other device of the sender.
fn targets(sender: &TestDevice, sender_user: &User, recipient: &User) -> Vec<(UserId, DeviceId)> {
    let mut all = recipient.refs();
    all.extend(
        sender_user
            .refs()
            .into_iter()
            .filter(|(_, d)| *d != sender.device_id),
    );
    all
}

async fn send(server: &TestServer, sender: &TestDevice, body: Value) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(body),
        )
        .await
}

async fn send_ok(server: &TestServer, sender: &TestDevice, body: Value) -> SendMessageResponse {
    let (status, body) = send(server, sender, body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Sends `count` V2 messages to `targets`, with client IDs `{prefix}0`, `{prefix}1`, ….
async fn send_numbered(
    server: &TestServer,
    sender: &TestDevice,
    recipient: UserId,
    targets: &[(UserId, DeviceId)],
    (prefix, count): (&str, usize),
    text: &str,
) {
    for i in 0..count {
        send_ok(
            server,
            sender,
            v2_body(&format!("{prefix}{i}"), recipient, targets, text),
        )
        .await;
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_device_gets_exactly_its_envelope_in_order(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = User::new(&server, "alice", 3).await;
    let bob = User::new(&server, "bob", 3).await;

    let mut sockets = Vec::new();
    for device in alice.devices.iter().chain(&bob.devices) {
        let mut socket = server.connect(&device.token, None).await;
        assert_eq!(socket.backlog().await, (vec![], 0));
        sockets.push(socket);
    }

    // Messages both ways, from different devices.
    let script = [
        (0usize, true, "hi bob"),
        (1, false, "hi alice"),
        (2, true, "how are you"),
        (0, false, "fine"),
    ];
    let mut sent = Vec::new();
    for (i, (device, from_alice, text)) in script.iter().enumerate() {
        let (sender_user, recipient) = if *from_alice {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        let sender = &sender_user.devices[*device];
        let body = v2_body(
            &format!("m{i}"),
            recipient.id,
            &targets(sender, sender_user, recipient),
            text,
        );
        let answer = send_ok(&server, sender, body).await;
        assert_eq!(answer.envelope_count, 5);
        sent.push((sender.user_id, sender.device_id, answer.message_id, *text));
    }

    for (socket, device) in sockets
        .iter_mut()
        .zip(alice.devices.iter().chain(&bob.devices))
    {
        let expected: Vec<_> = sent
            .iter()
            .filter(|(user, dev, _, _)| !(*user == device.user_id && *dev == device.device_id))
            .collect();
        let mut last_seq = 0;
        for (sender_user, sender_device, message_id, text) in expected {
            let envelope = socket.next_envelope().await;
            assert_eq!(envelope.message_id, *message_id, "in send order");
            assert_eq!(envelope.sender_user_id, *sender_user);
            assert_eq!(envelope.sender_device_id, *sender_device);
            assert_eq!(envelope.protocol_version, 2);
            assert_eq!(
                envelope_text(&envelope),
                envelope_plaintext(device.user_id, device.device_id, text),
                "its own envelope"
            );
            assert_eq!(envelope.seq, last_seq + 1, "a gapless per-device sequence");
            last_seq = envelope.seq;
        }
        socket.ack_up_to(last_seq).await;
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn missing_extra_and_stale_devices_are_refused_together(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = User::new(&server, "alice", 2).await;
    let bob = User::new(&server, "bob", 3).await;
    let removed = bob.devices[2].device_id;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/devices/{removed}"),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Bob's device 1 missing, his removed device 3 (stale), a device that never existed
    // (extra), Alice's own sending device (extra), and Alice's other device missing.
    let sender = &alice.devices[0];
    let devices = vec![
        (bob.id, bob.devices[1].device_id),
        (bob.id, removed),
        (bob.id, DeviceId::new(42).unwrap()),
        (alice.id, sender.device_id),
    ];
    let answer = send(&server, sender, v2_body("x1", bob.id, &devices, "hello")).await;
    assert_error(&answer, StatusCode::CONFLICT, "device_list_mismatch");
    let mismatch: DeviceListMismatch =
        serde_json::from_value(answer.1["error"]["details"].clone()).unwrap();
    let pairs = |list: &[courier_protocol::api::keys::DeviceRef]| {
        list.iter()
            .map(|d| (d.user_id, d.device_id.get()))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        pairs(&mismatch.missing),
        BTreeSet::from([
            (bob.id, bob.devices[0].device_id.get()),
            (alice.id, alice.devices[1].device_id.get())
        ])
    );
    assert_eq!(
        pairs(&mismatch.stale),
        BTreeSet::from([(bob.id, removed.get())])
    );
    assert_eq!(
        pairs(&mismatch.extra),
        BTreeSet::from([(bob.id, 42), (alice.id, sender.device_id.get())])
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM messages").await,
        0,
        "nothing stored"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM message_envelopes").await,
        0,
        "nothing stored"
    );

    // Fixed in one round trip.
    let good = targets(sender, &alice, &bob)
        .into_iter()
        .filter(|(_, d)| *d != removed)
        .collect::<Vec<_>>();
    send_ok(&server, sender, v2_body("x1", bob.id, &good, "hello")).await;
}

/// Sends are checked against cached device lists: a device that becomes reachable (or is
/// removed) right after a send counts for the very next one.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_next_send_sees_a_device_list_change_at_once(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = User::new(&server, "alice", 1).await;
    let mut bob = User::new(&server, "bob", 1).await;
    let sender = &alice.devices[0];
    let first = send_ok(
        &server,
        sender,
        v2_body("c1", bob.id, &targets(sender, &alice, &bob), "one"),
    )
    .await;

    // Bob's new device publishes its keys: a send without it is refused as missing it,
    // a send with it goes through.
    let old_targets = targets(sender, &alice, &bob);
    bob.devices.push(server.new_published_device("bob").await);
    let answer = send(&server, sender, v2_body("c2", bob.id, &old_targets, "two")).await;
    assert_error(&answer, StatusCode::CONFLICT, "device_list_mismatch");
    let mismatch: DeviceListMismatch =
        serde_json::from_value(answer.1["error"]["details"].clone()).unwrap();
    assert_eq!(mismatch.missing.len(), 1);
    assert_eq!(mismatch.missing[0].device_id, bob.devices[1].device_id);
    // A retry of the first message, with the envelope set it had, still gets its answer:
    // the original stands whatever the device lists are now.
    let (status, retry) = send(&server, sender, v2_body("c1", bob.id, &old_targets, "one")).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(retry["messageId"], json!(first.message_id));
    send_ok(
        &server,
        sender,
        v2_body("c2", bob.id, &targets(sender, &alice, &bob), "two"),
    )
    .await;

    // Bob removes his first device: the next send to it calls it stale.
    let removed = bob.devices[0].device_id;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/devices/{removed}"),
            Some(&bob.devices[1].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let answer = send(
        &server,
        sender,
        v2_body("c3", bob.id, &targets(sender, &alice, &bob), "three"),
    )
    .await;
    assert_error(&answer, StatusCode::CONFLICT, "device_list_mismatch");
    let mismatch: DeviceListMismatch =
        serde_json::from_value(answer.1["error"]["details"].clone()).unwrap();
    assert_eq!(mismatch.stale.len(), 1);
    assert_eq!(mismatch.stale[0].device_id, removed);
    assert!(mismatch.missing.is_empty() && mismatch.extra.is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn retries_are_idempotent_concurrently_and_after_a_restart(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = User::new(&server, "alice", 2).await;
    let bob = User::new(&server, "bob", 2).await;
    let sender = &alice.devices[0];
    let body = v2_body("same-id", bob.id, &targets(sender, &alice, &bob), "once");

    let answers =
        futures::future::join_all((0..10).map(|_| send(&server, sender, body.clone()))).await;
    let created = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "exactly one send stores: {answers:?}");
    for (status, answer) in &answers {
        assert!(status.is_success(), "{answer}");
        assert_eq!(
            answer, &answers[0].1,
            "every retry gets the original answer"
        );
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM messages").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM message_envelopes").await,
        3
    );

    // After a restart the database still knows: same answer, nothing new.
    server.stop().await.unwrap();
    let server = TestServer::start(pool.clone()).await;
    let (status, again) = send(&server, sender, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, answers[0].1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM message_envelopes").await,
        3
    );

    // Another device reusing the ID sends a different message.
    let other = &alice.devices[1];
    let answer = send_ok(
        &server,
        other,
        v2_body("same-id", bob.id, &targets(other, &alice, &bob), "twice"),
    )
    .await;
    assert_ne!(json!(answer.message_id), answers[0].1["messageId"]);
    assert_eq!(count(&pool, "SELECT count(*) FROM messages").await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_restart_between_send_and_ack_delivers_once_per_device(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 2).await;

    // Bob's first device receives but does not ack; his second is offline.
    let mut online = server.connect(&bob.devices[0].token, None).await;
    online.backlog().await;
    let sender = &alice.devices[0];
    let sent = send_ok(
        &server,
        sender,
        v2_body("r1", bob.id, &targets(sender, &alice, &bob), "survives"),
    )
    .await;
    let first = online.next_envelope().await;
    assert_eq!(first.message_id, sent.message_id);

    server.stop().await.unwrap();
    assert!(matches!(
        online.next().await,
        Received::Closed(Some(close_code::GOING_AWAY))
    ));
    let server = TestServer::start(pool.clone()).await;

    for device in &bob.devices {
        let mut socket = server.connect(&device.token, None).await;
        let (envelopes, _) = socket.backlog().await;
        assert_eq!(envelopes.len(), 1, "exactly once");
        assert_eq!(envelopes[0].message_id, sent.message_id);
        assert_eq!(
            envelope_text(&envelopes[0]),
            envelope_plaintext(bob.id, device.device_id, "survives")
        );
        socket.ack_up_to(envelopes[0].seq).await;
        socket.close().await;
    }
    // Acknowledged: a new connection gets nothing again. The ack is written in a batch,
    // so wait for it through the database rather than a fixed delay.
    wait_for_delivered(&pool, 2).await;
    for device in &bob.devices {
        let mut socket = server.connect(&device.token, None).await;
        assert_eq!(socket.backlog().await.0.len(), 0);
    }
}

/// Waits until `n` envelopes are marked delivered (acks are written in batches), polling
/// the condition itself for at most 10 s.
async fn wait_for_delivered(pool: &PgPool, n: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(
        pool,
        "SELECT count(*) FROM message_envelopes WHERE delivered",
    )
    .await
        < n
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} envelopes were not marked delivered within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_offline_device_catches_up_on_1000_messages_in_order(pool: PgPool) {
    // 1000 sends in a row from one device are past the per-device send limit; this test
    // is about catching up, so without limits.
    let server = TestServer::start_with(
        pool.clone(),
        Settings {
            rate_limits: courier_server::rate_limits::RateLimitSettings::off(),
            ..Settings::default()
        },
    )
    .await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 2).await;
    let sender = &alice.devices[0];
    let all = targets(sender, &alice, &bob);
    for i in 0..1000 {
        send_ok(
            &server,
            sender,
            v2_body(&format!("c{i}"), bob.id, &all, &format!("message {i}")),
        )
        .await;
    }

    // Device 1 over the WebSocket.
    let device = &bob.devices[0];
    let mut socket = server.connect(&device.token, None).await;
    let (envelopes, cursor) = socket.backlog().await;
    assert_eq!(envelopes.len(), 1000);
    for (i, envelope) in envelopes.iter().enumerate() {
        assert_eq!(envelope.seq, i as u64 + 1);
        assert_eq!(
            envelope_text(envelope),
            envelope_plaintext(bob.id, device.device_id, &format!("message {i}"))
        );
    }
    assert_eq!(cursor, 1000);

    // Device 2 over REST, in pages.
    let device = &bob.devices[1];
    let mut after = 0;
    let mut texts = Vec::new();
    loop {
        let (status, body) = server
            .call(
                Method::GET,
                &format!("/v1/inbox?after={after}&limit=300"),
                Some(&device.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: InboxPage = serde_json::from_value(body).unwrap();
        for item in &page.items {
            let StreamItem::Envelope(envelope) = item else {
                panic!("only envelopes were sent, got {item:?}");
            };
            texts.push(envelope_text(envelope));
        }
        after = page.next_cursor;
        if !page.has_more {
            break;
        }
    }
    let expected: Vec<String> = (0..1000)
        .map(|i| envelope_plaintext(bob.id, device.device_id, &format!("message {i}")))
        .collect();
    assert_eq!(texts, expected);
    let (_, acked) = server
        .call(
            Method::POST,
            "/v1/inbox/ack",
            Some(&device.token),
            Some(json!({"upTo": after})),
        )
        .await;
    assert_eq!(acked["delivered"], 1000);
    let (_, page) = server
        .call(Method::GET, "/v1/inbox", Some(&device.token), None)
        .await;
    assert_eq!(page["items"], json!([]));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn v1_and_v2_clients_talk_to_each_other(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let modern = User::new(&server, "modern", 2).await;
    // A V1 client: one device, which it never names.
    let legacy = User::new(&server, "legacy", 1).await;
    let legacy_device = &legacy.devices[0];

    // V1 sender (no protocolVersion, one envelope) to a V2 user: every device gets it.
    let v1 = json!({"clientMessageId": "old-1", "recipientUserId": modern.id, "encryptedEnvelope": encode_base64(b"v1 ciphertext")});
    let sent = send_ok(&server, legacy_device, v1).await;
    assert_eq!(sent.envelope_count, 2);
    for device in &modern.devices {
        let mut socket = server.connect(&device.token, None).await;
        let (envelopes, _) = socket.backlog().await;
        assert_eq!(envelopes.len(), 1);
        assert_eq!(envelopes[0].protocol_version, 1, "marked as V1");
        assert_eq!(envelope_text(&envelopes[0]), "v1 ciphertext");
        assert_eq!(envelopes[0].sender_user_id, legacy.id);
    }

    // V2 sender to the V1 client: through its device's envelope, fetched without a device ID.
    let sender = &modern.devices[0];
    let sent = send_ok(
        &server,
        sender,
        v2_body(
            "new-1",
            legacy.id,
            &targets(sender, &modern, &legacy),
            "to legacy",
        ),
    )
    .await;
    let path = format!("/v1/messages/{}/envelope", sent.message_id);
    let (status, envelope) = server
        .call(Method::GET, &path, Some(&legacy_device.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{envelope}");
    let envelope: courier_protocol::api::stream::Envelope =
        serde_json::from_value(envelope).unwrap();
    assert_eq!(
        envelope_text(&envelope),
        envelope_plaintext(legacy.id, legacy_device.device_id, "to legacy")
    );
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/messages/{}/delivered", sent.message_id),
            Some(&legacy_device.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let again = server
        .call(Method::GET, &path, Some(&legacy_device.token), None)
        .await;
    assert_error(&again, StatusCode::GONE, "envelope_delivered");
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/messages/{}/delivered", sent.message_id),
            Some(&legacy_device.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "idempotent");

    // Usage by protocol version: metrics and the monitoring query agree.
    let (_, metrics) = (
        StatusCode::OK,
        server
            .http
            .get(server.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        metrics.contains("courier_messages_sent_total{protocol_version=\"1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("courier_messages_sent_total{protocol_version=\"2\"} 1"),
        "{metrics}"
    );
    // Both sends went through the writer, and its wait is in the histogram.
    assert!(
        metrics.contains("courier_send_wait_seconds_count 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("courier_send_wait_seconds_bucket{le=\"+Inf\"} 2\n"),
        "{metrics}"
    );
    let by_version: Vec<(i16, i64)> =
        sqlx::query_as("SELECT protocol_version, count(*) FROM messages GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(by_version, vec![(1, 1), (2, 1)]);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_device_reads_only_its_own_envelopes(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 2).await;
    let eve = User::new(&server, "eve", 1).await;
    let sender = &alice.devices[0];
    let sent = send_ok(
        &server,
        sender,
        v2_body("p1", bob.id, &targets(sender, &alice, &bob), "private"),
    )
    .await;
    let path = format!("/v1/messages/{}/envelope", sent.message_id);

    let own = server
        .call(
            Method::GET,
            &format!("{path}?deviceId={}", bob.devices[0].device_id),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_eq!(own.0, StatusCode::OK);
    let other_device = server
        .call(
            Method::GET,
            &format!("{path}?deviceId={}", bob.devices[1].device_id),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_error(&other_device, StatusCode::NOT_FOUND, "message_not_found");
    let other_user = server
        .call(Method::GET, &path, Some(&eve.devices[0].token), None)
        .await;
    assert_error(&other_user, StatusCode::NOT_FOUND, "message_not_found");
    let sender_itself = server
        .call(Method::GET, &path, Some(&sender.token), None)
        .await;
    assert_error(&sender_itself, StatusCode::NOT_FOUND, "message_not_found");
    let mark_other = server
        .call(
            Method::POST,
            &format!("/v1/messages/{}/delivered", sent.message_id),
            Some(&eve.devices[0].token),
            None,
        )
        .await;
    assert_error(&mark_other, StatusCode::NOT_FOUND, "message_not_found");
    let (_, inbox) = server
        .call(Method::GET, "/v1/inbox", Some(&eve.devices[0].token), None)
        .await;
    assert_eq!(inbox["items"], json!([]));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_second_socket_replaces_the_first(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 1).await;
    let mut first = server.connect(&bob.devices[0].token, None).await;
    first.backlog().await;
    let mut second = server.connect(&bob.devices[0].token, None).await;
    second.backlog().await;
    assert!(matches!(
        first.next().await,
        Received::Closed(Some(close_code::REPLACED))
    ));

    let sender = &alice.devices[0];
    let sent = send_ok(
        &server,
        sender,
        v2_body(
            "s1",
            bob.id,
            &targets(sender, &alice, &bob),
            "to the new one",
        ),
    )
    .await;
    assert_eq!(second.next_envelope().await.message_id, sent.message_id);
}

/// A stolen token keeps nothing: when the device logs in again (a new token), its socket
/// opened with the old token closes at once (4005), before anything else is sent on it,
/// so it can neither read nor acknowledge what is sent next; the new token gets it all.
#[sqlx::test(migrator = "MIGRATOR")]
async fn logging_in_again_closes_the_socket_opened_with_the_old_token(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 1).await;
    let stolen = bob.devices[0].token.clone();
    let mut thief = server.connect(&stolen, None).await;
    thief.backlog().await;

    let (status, body) = server
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "bob", "password": common::PASSWORD, "deviceId": bob.devices[0].device_id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh: courier_protocol::api::accounts::LoginResponse =
        serde_json::from_value(body).unwrap();
    // Closed by the time the login is answered: the next frame is the close.
    assert!(matches!(
        thief.next().await,
        Received::Closed(Some(close_code::TOKEN_REVOKED))
    ));

    let sender = &alice.devices[0];
    let sent = send_ok(
        &server,
        sender,
        v2_body("r1", bob.id, &targets(sender, &alice, &bob), "after login"),
    )
    .await;
    let mut owner = server.connect(&fresh.access_token, None).await;
    let (backlog, _) = owner.backlog().await;
    assert_eq!(
        backlog.iter().map(|e| e.message_id).collect::<Vec<_>>(),
        vec![sent.message_id]
    );
    // The old token opens nothing any more.
    let refused = server
        .call(Method::GET, "/v1/inbox", Some(&stolen), None)
        .await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn oversized_and_malformed_envelopes_are_refused(pool: PgPool) {
    let server = TestServer::start_with(
        pool.clone(),
        Settings {
            max_envelope_bytes: 1024,
            ..Settings::default()
        },
    )
    .await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 1).await;
    let sender = &alice.devices[0];
    let bob_device = bob.devices[0].device_id;
    let envelope = |ciphertext: Value, kind: &str| json!({"userId": bob.id, "deviceId": bob_device, "envelopeType": kind, "ciphertext": ciphertext});
    let v2 = |envelopes: Vec<Value>| json!({"protocolVersion": 2, "clientMessageId": "e1", "recipientUserId": bob.id, "deviceEnvelopes": envelopes});
    let ok = json!(encode_base64(b"fine"));

    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "too large",
            v2(vec![envelope(json!(encode_base64(&[1u8; 1025])), "normal")]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "envelope_too_large",
        ),
        (
            "bad base64",
            v2(vec![envelope(json!("***"), "normal")]),
            StatusCode::BAD_REQUEST,
            "invalid_base64",
        ),
        (
            "empty",
            v2(vec![envelope(json!(""), "normal")]),
            StatusCode::BAD_REQUEST,
            "invalid_envelope",
        ),
        (
            "legacy type in V2",
            v2(vec![envelope(ok.clone(), "legacy")]),
            StatusCode::BAD_REQUEST,
            "invalid_envelope",
        ),
        (
            "unknown type",
            v2(vec![envelope(ok.clone(), "weird")]),
            StatusCode::BAD_REQUEST,
            "invalid_request_body",
        ),
        (
            "ciphertext not a string",
            v2(vec![envelope(json!(5), "normal")]),
            StatusCode::BAD_REQUEST,
            "invalid_request_body",
        ),
        (
            "twice for one device",
            v2(vec![
                envelope(ok.clone(), "normal"),
                envelope(ok.clone(), "preKey"),
            ]),
            StatusCode::BAD_REQUEST,
            "duplicate_envelope",
        ),
        (
            "both V1 and V2",
            json!({"protocolVersion": 2, "clientMessageId": "e1", "recipientUserId": bob.id, "deviceEnvelopes": [], "encryptedEnvelope": ok}),
            StatusCode::BAD_REQUEST,
            "invalid_request_body",
        ),
        (
            "V1 without an envelope",
            json!({"protocolVersion": 1, "clientMessageId": "e1", "recipientUserId": bob.id}),
            StatusCode::BAD_REQUEST,
            "invalid_request_body",
        ),
        (
            "protocol 3",
            json!({"protocolVersion": 3, "clientMessageId": "e1", "recipientUserId": bob.id, "deviceEnvelopes": []}),
            StatusCode::BAD_REQUEST,
            "unsupported_protocol_version",
        ),
        (
            "bad client message ID",
            json!({"protocolVersion": 2, "clientMessageId": "has space", "recipientUserId": bob.id, "deviceEnvelopes": []}),
            StatusCode::BAD_REQUEST,
            "invalid_client_message_id",
        ),
        (
            "V1 too large",
            json!({"clientMessageId": "e1", "recipientUserId": bob.id, "encryptedEnvelope": encode_base64(&[1u8; 2000])}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "envelope_too_large",
        ),
        (
            "unknown recipient",
            json!({"protocolVersion": 2, "clientMessageId": "e1", "recipientUserId": uuid::Uuid::nil(), "deviceEnvelopes": []}),
            StatusCode::NOT_FOUND,
            "user_not_found",
        ),
    ];
    for (name, body, status, code) in cases {
        let answer = send(&server, sender, body).await;
        assert_eq!(answer.0, status, "{name}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], code, "{name}: {}", answer.1);
    }
    let too_many: Vec<Value> = (1..=101).map(|i| json!({"userId": bob.id, "deviceId": i, "envelopeType": "normal", "ciphertext": ok})).collect();
    assert_error(
        &send(&server, sender, v2(too_many)).await,
        StatusCode::BAD_REQUEST,
        "too_many_envelopes",
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM messages").await,
        0,
        "nothing stored"
    );

    // A recipient with no reachable device.
    let ghost = server.create_account("ghost").await;
    let unreachable = send(&server, sender, json!({"protocolVersion": 2, "clientMessageId": "e2", "recipientUserId": ghost.user_id, "deviceEnvelopes": []})).await;
    assert_error(&unreachable, StatusCode::CONFLICT, "recipient_unreachable");

    // Bad frames on the socket get an error frame; the socket stays usable.
    let mut socket = server.connect(&bob.devices[0].token, None).await;
    socket.backlog().await;
    socket.send_text("not json").await;
    assert!(matches!(socket.next().await, Received::Error(code) if code == "invalid_frame"));
    let sent = send_ok(
        &server,
        sender,
        v2_body("e3", bob.id, &[(bob.id, bob_device)], "still works"),
    )
    .await;
    assert_eq!(socket.next_envelope().await.message_id, sent.message_id);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn removing_a_device_drops_its_envelopes_and_later_sends_call_it_stale(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 2).await;
    let sender = &alice.devices[0];
    send_ok(
        &server,
        sender,
        v2_body("d1", bob.id, &targets(sender, &alice, &bob), "before"),
    )
    .await;

    let mut doomed = server.connect(&bob.devices[1].token, None).await;
    let gone = bob.devices[1].device_id;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/devices/{gone}"),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Its socket is closed with the removal code (after the backlog it was sent).
    loop {
        match doomed.next().await {
            Received::Closed(code) => {
                assert_eq!(code, Some(close_code::DEVICE_REMOVED));
                break;
            }
            _ => continue,
        }
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM message_envelopes WHERE recipient_device_id = $1 AND recipient_user_id = $2 AND NOT delivered")
        .bind(gone.as_i32())
        .bind(bob.id.as_uuid())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);

    let stale = send(
        &server,
        sender,
        v2_body("d2", bob.id, &targets(sender, &alice, &bob), "after"),
    )
    .await;
    assert_error(&stale, StatusCode::CONFLICT, "device_list_mismatch");
    assert_eq!(
        stale.1["error"]["details"]["stale"][0]["deviceId"],
        gone.get()
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_slow_device_still_gets_everything_in_order(pool: PgPool) {
    // A push buffer of one: nearly every push overflows, so the device is served from the
    // database instead, and must still see every item once, in order.
    let server = TestServer::start_with(
        pool,
        Settings {
            ws_push_buffer: 1,
            ..Settings::default()
        },
    )
    .await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 1).await;
    let mut socket = server.connect(&bob.devices[0].token, None).await;
    socket.backlog().await;
    let sender = &alice.devices[0];
    let to_bob = [(bob.id, bob.devices[0].device_id)];
    futures::future::join_all((0..200).map(|i| {
        send_ok(
            &server,
            sender,
            v2_body(&format!("s{i}"), bob.id, &to_bob, &format!("{i}")),
        )
    }))
    .await;
    let mut seqs = Vec::new();
    while seqs.len() < 200 {
        seqs.push(socket.next_envelope().await.seq);
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let metrics = server
        .http
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("courier_push_overflows_total 0\n"),
        "the test exercised overflow: {metrics}"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn retention_expires_undelivered_envelopes_in_batches(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 1).await;
    let sender = &alice.devices[0];
    let to_bob = [(bob.id, bob.devices[0].device_id)];
    send_numbered(&server, sender, bob.id, &to_bob, ("t", 25), "old").await;
    // Five delivered, twenty undelivered; all made older than the TTL.
    let (_, _) = server
        .call(
            Method::POST,
            "/v1/inbox/ack",
            Some(&bob.devices[0].token),
            Some(json!({"upTo": 5})),
        )
        .await;
    sqlx::query("UPDATE message_envelopes SET created_at = now() - interval '31 days'")
        .execute(&pool)
        .await
        .unwrap();
    send_ok(&server, sender, v2_body("fresh", bob.id, &to_bob, "new")).await;

    let report = courier_server::delivery::retention::run_once(
        &pool,
        std::time::Duration::from_secs(30 * 86400),
        7,
    )
    .await
    .unwrap();
    assert_eq!(report.expired_envelopes, 20);
    assert!(report.batches >= 3, "20 rows in batches of 7: {report:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM message_envelopes WHERE delivered"
        )
        .await,
        5,
        "delivery state stays"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM message_envelopes WHERE ciphertext IS NOT NULL"
        )
        .await,
        1,
        "only the fresh one holds ciphertext"
    );
    let (_, inbox) = server
        .call(Method::GET, "/v1/inbox", Some(&bob.devices[0].token), None)
        .await;
    assert_eq!(inbox["items"].as_array().unwrap().len(), 1);
}

/// The sequence numbers of a device's inbox from the start of its stream.
async fn inbox_seqs(server: &TestServer, device: &TestDevice) -> Vec<u64> {
    let (status, body) = server
        .call(Method::GET, "/v1/inbox?after=0", Some(&device.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: InboxPage = serde_json::from_value(body).unwrap();
    page.items.iter().map(StreamItem::seq).collect()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_acknowledgement_past_the_end_of_the_stream_skips_no_later_envelope(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = User::new(&server, "alice", 1).await;
    let bob = User::new(&server, "bob", 1).await;
    let (sender, device) = (&alice.devices[0], &bob.devices[0]);
    let to_bob = [(bob.id, device.device_id)];
    send_numbered(&server, sender, bob.id, &to_bob, ("a", 3), "before").await;
    let ack = |up_to: u64| {
        server.call(
            Method::POST,
            "/v1/inbox/ack",
            Some(&device.token),
            Some(json!({"upTo": up_to})),
        )
    };
    let (status, acked) = ack(1000).await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["delivered"], 3);
    // The delivery floor stops at the stream's end, not at the acknowledged number.
    assert_eq!(
        count(
            &pool,
            "SELECT delivered_through FROM device_delivery_floors"
        )
        .await,
        3
    );

    send_numbered(&server, sender, bob.id, &to_bob, ("b", 2), "after").await;
    assert_eq!(inbox_seqs(&server, device).await, vec![4, 5]);
    let (_, acked) = ack(4).await;
    assert_eq!(acked["delivered"], 1);
    assert_eq!(inbox_seqs(&server, device).await, vec![5]);
    let mut socket = server.connect(&device.token, None).await;
    let (envelopes, _) = socket.backlog().await;
    assert_eq!(envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5]);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn racing_sends_reach_a_device_in_sequence_order(pool: PgPool) {
    // Sends commit in sequence order per device, but their pushes race each other; the
    // socket must still write them gapless and in order.
    let server = TestServer::start(pool).await;
    let alice = User::new(&server, "alice", 2).await;
    let bob = User::new(&server, "bob", 2).await;
    let mut sockets = Vec::new();
    for device in &bob.devices {
        let mut socket = server.connect(&device.token, None).await;
        socket.backlog().await;
        sockets.push(socket);
    }
    let sends = (0..300).map(|i| {
        let sender = &alice.devices[i % 2];
        send_ok(
            &server,
            sender,
            v2_body(
                &format!("race{i}"),
                bob.id,
                &targets(sender, &alice, &bob),
                "x",
            ),
        )
    });
    futures::future::join_all(sends).await;
    for socket in &mut sockets {
        let mut seqs = Vec::new();
        while seqs.len() < 300 {
            seqs.push(socket.next_envelope().await.seq);
        }
        assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    }
}

/// Two server instances on one database (each with its own hub, token cache and fabric
/// connection, as two processes have): what one does reaches sockets held by the other.
#[sqlx::test(migrator = "MIGRATOR")]
async fn two_servers_on_one_database_deliver_close_and_replace_across_each_other(pool: PgPool) {
    let one = TestServer::start(pool.clone()).await;
    let two = TestServer::start(pool.clone()).await;
    let alice = User::new(&one, "alice", 1).await;
    let bob = User::new(&one, "bob", 2).await;

    // Bob's device 0 listens on server one; Alice sends through server two.
    let mut socket = one.connect(&bob.devices[0].token, None).await;
    socket.backlog().await;
    let sender = &alice.devices[0];
    let sent = send_ok(
        &two,
        sender,
        v2_body("x1", bob.id, &targets(sender, &alice, &bob), "across"),
    )
    .await;
    let envelope = socket.next_envelope().await;
    assert_eq!(envelope.message_id, sent.message_id);
    assert!(envelope_text(&envelope).ends_with(":across"));

    // A newer socket of the device on server two replaces the one on server one.
    let mut newer = two.connect(&bob.devices[0].token, None).await;
    newer.backlog().await;
    assert!(matches!(
        socket.next().await,
        Received::Closed(Some(close_code::REPLACED))
    ));

    // Bob's device 1, known to server one's token cache, is removed through server two:
    // server one refuses its token at once and closes its socket.
    let victim = &bob.devices[1];
    let mut victim_socket = one.connect(&victim.token, None).await;
    victim_socket.backlog().await;
    let (status, _) = one
        .call(Method::GET, "/v1/devices", Some(&victim.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/v1/devices/{}", victim.device_id.get());
    let (status, body) = two
        .call(Method::DELETE, &path, Some(&bob.devices[0].token), None)
        .await;
    assert!(status.is_success(), "{body}");
    assert!(matches!(
        victim_socket.next().await,
        Received::Closed(Some(close_code::DEVICE_REMOVED))
    ));
    let refused = one
        .call(Method::GET, "/v1/devices", Some(&victim.token), None)
        .await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "device_removed");
}
