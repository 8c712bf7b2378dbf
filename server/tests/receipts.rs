//! Delivery and read receipts across every device of the sender and the reader, stored
//! for offline devices, under each combination of the privacy settings; the delivery-state
//! query.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestServer, TestUser, assert_error, v2_body};
use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::api::receipts::{
    Conversation, DeliveryState, MarkReadResponse, MessageState, PrivacySettings, ReadReceipt,
};
use courier_protocol::api::stream::StreamItem;
use courier_protocol::{DeviceId, UserId};
use courier_server::MIGRATOR;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Sends a V2 message from `sender.devices[0]` to every device of `recipient` and the
/// sender's other devices.
async fn send(server: &TestServer, sender: &TestUser, recipient: &TestUser, id: &str) -> Uuid {
    let mut targets = recipient.refs();
    targets.extend(sender.refs().into_iter().skip(1));
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.devices[0].token),
            Some(v2_body(id, recipient.id, &targets, id)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_value::<SendMessageResponse>(body)
        .unwrap()
        .message_id
}

/// The deliveries a device's stream reports (user, device, message).
fn deliveries(items: &[StreamItem]) -> Vec<(UserId, DeviceId, Uuid)> {
    items
        .iter()
        .filter_map(|item| match item {
            StreamItem::Delivered(receipt) => Some(receipt),
            _ => None,
        })
        .flat_map(|receipt| {
            receipt.deliveries.iter().flat_map(|d| {
                d.device_ids
                    .iter()
                    .map(|device| (d.user_id, *device, d.message_id))
            })
        })
        .collect()
}

fn reads(items: &[StreamItem]) -> Vec<ReadReceipt> {
    items
        .iter()
        .filter_map(|item| match item {
            StreamItem::Read(receipt) => Some(receipt.clone()),
            _ => None,
        })
        .collect()
}

async fn mark_read(
    server: &TestServer,
    token: &str,
    message_id: Uuid,
    up_to: bool,
) -> MarkReadResponse {
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/receipts/read",
            Some(token),
            Some(json!({ "messageId": message_id, "upTo": up_to })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn delivery_state(server: &TestServer, token: &str, message_id: Uuid) -> DeliveryState {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/v1/messages/{message_id}/delivery"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn set_privacy(server: &TestServer, token: &str, send: bool, show: bool) {
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/settings/privacy",
            Some(token),
            Some(json!({ "sendReadReceipts": send, "showReadReceipts": show })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let settings: PrivacySettings = serde_json::from_value(body).unwrap();
    assert_eq!(
        (settings.send_read_receipts, settings.show_read_receipts),
        (send, show)
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_sender_device_learns_each_delivery_including_offline_ones(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 3).await;
    let bob = TestUser::new(&server, "bob", 3).await;
    // alice/2 is online; alice/3 stays offline throughout.
    let mut alice2 = server.connect(&alice.devices[1].token, None).await;
    assert!(alice2.backlog().await.0.is_empty());

    let message = send(&server, &alice, &bob, "m1").await;
    // alice/2's own copy arrives and is acknowledged: an own device is not a delivery.
    let own = alice2.next_envelope().await;
    alice2.ack_up_to(own.seq).await;

    // bob/1 acknowledges over the socket, bob/2 over REST; bob/3 never.
    let mut bob1 = server.connect(&bob.devices[0].token, None).await;
    let (backlog, cursor) = bob1.backlog().await;
    assert_eq!(backlog.len(), 1);
    bob1.ack_up_to(cursor).await;
    let item = alice2.next_item().await;
    let StreamItem::Delivered(receipt) = &item else {
        panic!("expected a delivered receipt, got {item:?}");
    };
    assert_eq!(receipt.deliveries.len(), 1);
    assert_eq!(
        (
            receipt.deliveries[0].user_id,
            receipt.deliveries[0].device_ids.clone()
        ),
        (bob.id, vec![bob.devices[0].device_id])
    );
    assert_eq!(receipt.deliveries[0].message_id, message);

    let (status, body) = server
        .call(
            Method::POST,
            &format!("/v1/messages/{message}/delivered"),
            Some(&bob.devices[1].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let item = alice2.next_item().await;
    let StreamItem::Delivered(receipt) = &item else {
        panic!("expected a delivered receipt, got {item:?}");
    };
    assert_eq!(
        receipt.deliveries[0].device_ids,
        vec![bob.devices[1].device_id]
    );

    // The offline device and the sending device have both receipts stored.
    for device in [&alice.devices[0], &alice.devices[2]] {
        let items = server.inbox(device).await;
        let mut got = deliveries(&items);
        got.sort();
        let mut expected = vec![
            (bob.id, bob.devices[0].device_id, message),
            (bob.id, bob.devices[1].device_id, message),
        ];
        expected.sort();
        assert_eq!(got, expected);
    }

    // The state, per device: two delivered, one pending; the sender's devices not listed.
    let state = delivery_state(&server, &alice.devices[2].token, message).await;
    assert_eq!(state.state, MessageState::Delivered);
    assert_eq!(state.devices.len(), 3);
    assert!(state.devices.iter().all(|d| d.user_id == bob.id));
    let delivered: Vec<bool> = state
        .devices
        .iter()
        .map(|d| d.delivered_at.is_some())
        .collect();
    assert_eq!(delivered, vec![true, true, false]);
    assert!(state.reads.is_empty());

    // Only the sender's user may ask; a recipient cannot.
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/v1/messages/{message}/delivery"),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_error(&(status, body), StatusCode::NOT_FOUND, "message_not_found");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn read_state_reaches_all_reader_devices_and_all_sender_devices(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 3).await;
    let bob = TestUser::new(&server, "bob", 3).await;
    let first = send(&server, &alice, &bob, "m1").await;
    let second = send(&server, &alice, &bob, "m2").await;
    let mut bob3 = server.connect(&bob.devices[2].token, None).await;
    let (_, cursor) = bob3.backlog().await;
    bob3.ack_up_to(cursor).await;

    // bob/2 reads everything up to the second message.
    let answer = mark_read(&server, &bob.devices[1].token, second, true).await;
    assert!(answer.changed);
    assert_eq!(
        answer.conversation,
        Conversation::Direct { user_id: alice.id }
    );

    // Bob's other devices (online and offline) get the read state; not the reader.
    let live = loop {
        match bob3.next_item().await {
            StreamItem::Read(receipt) => break receipt,
            StreamItem::Delivered(_) => {}
            other => panic!("expected a read receipt, got {other:?}"),
        }
    };
    assert_eq!(live.reader_user_id, bob.id);
    assert_eq!(live.reader_device_id, bob.devices[1].device_id);
    assert_eq!(
        live.conversation,
        Conversation::Direct { user_id: alice.id }
    );
    assert_eq!((live.message_id, live.up_to), (second, true));
    assert_eq!(reads(&server.inbox(&bob.devices[0]).await).len(), 1);
    assert!(reads(&server.inbox(&bob.devices[1]).await).is_empty());

    // Every device of Alice gets it, the conversation named from her side.
    for device in &alice.devices {
        let receipts = reads(&server.inbox(device).await);
        assert_eq!(receipts.len(), 1, "{receipts:?}");
        assert_eq!(
            receipts[0].conversation,
            Conversation::Direct { user_id: bob.id }
        );
        assert_eq!(receipts[0].message_id, second);
    }
    // Both messages read (the first by the watermark).
    for message in [first, second] {
        let state = delivery_state(&server, &alice.devices[0].token, message).await;
        assert_eq!(state.state, MessageState::Read);
        assert_eq!(state.reads.len(), 1);
        assert_eq!(state.reads[0].user_id, bob.id);
    }

    // Reading an earlier message up to it again changes nothing and tells no one.
    let again = mark_read(&server, &bob.devices[0].token, first, true).await;
    assert!(!again.changed);
    assert_eq!(reads(&server.inbox(&alice.devices[2]).await).len(), 1);

    // A single message read on its own.
    let third = send(&server, &alice, &bob, "m3").await;
    let one = mark_read(&server, &bob.devices[0].token, third, false).await;
    assert!(one.changed);
    let receipts = reads(&server.inbox(&alice.devices[1]).await);
    assert_eq!(receipts.len(), 2);
    assert!(receipts.iter().any(|r| r.message_id == third && !r.up_to));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn each_privacy_combination_is_enforced_by_the_server(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 2).await;
    let bob = TestUser::new(&server, "bob", 2).await;
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/settings/privacy",
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_value::<PrivacySettings>(body).unwrap(),
        PrivacySettings::default()
    );

    for (index, (bob_sends, alice_shows)) in
        [(true, true), (true, false), (false, true), (false, false)]
            .into_iter()
            .enumerate()
    {
        set_privacy(&server, &bob.devices[0].token, bob_sends, true).await;
        set_privacy(&server, &alice.devices[0].token, true, alice_shows).await;
        let message = send(&server, &alice, &bob, &format!("m{index}")).await;
        mark_read(&server, &bob.devices[0].token, message, false).await;

        let visible = bob_sends && alice_shows;
        for device in &alice.devices {
            let seen = reads(&server.inbox(device).await)
                .iter()
                .any(|r| r.message_id == message);
            assert_eq!(seen, visible, "send {bob_sends}, show {alice_shows}");
        }
        let state = delivery_state(&server, &alice.devices[0].token, message).await;
        assert_eq!(
            state.state == MessageState::Read,
            visible,
            "send {bob_sends}, show {alice_shows}"
        );
        // Bob's own other device syncs the read state whatever the settings.
        assert!(
            reads(&server.inbox(&bob.devices[1]).await)
                .iter()
                .any(|r| r.message_id == message)
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn reading_a_message_the_user_never_received_is_refused(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    let carol = TestUser::new(&server, "carol", 1).await;
    let message = send(&server, &alice, &bob, "m1").await;
    for id in [message, Uuid::now_v7()] {
        let answer = server
            .call(
                Method::POST,
                "/v1/receipts/read",
                Some(&carol.devices[0].token),
                Some(json!({ "messageId": id })),
            )
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "message_not_found");
    }
    let answer = server
        .call(
            Method::POST,
            "/v1/receipts/read",
            Some(&carol.devices[0].token),
            Some(json!({ "messageId": "not-a-uuid" })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request_body");
    let answer = server
        .call(
            Method::PUT,
            "/v1/settings/privacy",
            Some(&carol.devices[0].token),
            Some(json!({ "sendReadReceipts": "yes" })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request_body");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn deliveries_acknowledged_together_are_one_entry_per_message_and_user(pool: PgPool) {
    // Acknowledgements gather for up to a second: three devices acknowledging at once
    // land in at most two batches, so some entry lists more than one device.
    let settings = courier_server::Settings {
        ack_batch_interval: std::time::Duration::from_secs(1),
        ..courier_server::Settings::default()
    };
    let server = TestServer::start_with(pool, settings).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 3).await;
    let message = send(&server, &alice, &bob, "m1").await;
    let mut alice0 = server.connect(&alice.devices[0].token, None).await;
    assert!(alice0.backlog_items().await.0.is_empty());

    let mut sockets = Vec::new();
    for device in &bob.devices {
        let mut socket = server.connect(&device.token, None).await;
        let (_, cursor) = socket.backlog().await;
        sockets.push((socket, cursor));
    }
    for (socket, cursor) in &mut sockets {
        socket.ack_up_to(*cursor).await;
    }

    let mut entries = Vec::new();
    while entries
        .iter()
        .map(|(_, devices): &(Uuid, Vec<DeviceId>)| devices.len())
        .sum::<usize>()
        < 3
    {
        let item = alice0.next_item().await;
        let StreamItem::Delivered(receipt) = &item else {
            panic!("expected a delivered receipt, got {item:?}");
        };
        for delivery in &receipt.deliveries {
            assert_eq!(delivery.user_id, bob.id);
            entries.push((delivery.message_id, delivery.device_ids.clone()));
        }
    }
    assert!(entries.len() <= 2, "{entries:?}");
    assert!(entries.iter().all(|(id, _)| *id == message));
    assert!(
        entries.iter().any(|(_, devices)| devices.len() > 1),
        "{entries:?}"
    );
    let mut all: Vec<DeviceId> = entries.into_iter().flat_map(|(_, d)| d).collect();
    all.sort();
    let mut expected: Vec<DeviceId> = bob.devices.iter().map(|d| d.device_id).collect();
    expected.sort();
    assert_eq!(all, expected, "each device once");
}
