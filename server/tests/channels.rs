//! Channels: membership changes in every member device's stream, sender keys per device,
//! group messages stored once and fanned out, refusals that name what is missing, and
//! receipts for group messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestDevice, TestServer, TestUser, assert_error};
use courier_protocol::api::channels::{Channel, MembershipChangeKind, MissingSenderKeys};
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::api::receipts::Conversation;
use courier_protocol::api::stream::StreamItem;
use courier_protocol::keys::{decode_base64, encode_base64};
use courier_protocol::{UserId, limits};
use courier_server::MIGRATOR;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

async fn create(server: &TestServer, by: &TestDevice, members: &[UserId]) -> Channel {
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/channels",
            Some(&by.token),
            Some(json!({ "members": members })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_value(body).unwrap()
}

/// What a test puts in a sender key for one device (stands in for an Olm ciphertext).
fn key_for(device: &DeviceRef, session: &str) -> String {
    format!("{session}->{}/{}", device.user_id, device.device_id)
}

async fn share(
    server: &TestServer,
    by: &TestDevice,
    channel: Uuid,
    session: &str,
    devices: &[DeviceRef],
) -> (StatusCode, Value) {
    let distributions: Vec<Value> = devices
        .iter()
        .map(|d| {
            json!({
                "userId": d.user_id,
                "deviceId": d.device_id,
                "envelopeType": "preKey",
                "ciphertext": encode_base64(key_for(d, session).as_bytes()),
            })
        })
        .collect();
    server
        .call(
            Method::POST,
            &format!("/v1/channels/{channel}/sender-keys"),
            Some(&by.token),
            Some(json!({ "sessionId": session, "distributions": distributions })),
        )
        .await
}

async fn send_group(
    server: &TestServer,
    by: &TestDevice,
    channel: Uuid,
    session: &str,
    id: &str,
    text: &str,
) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/v1/channels/{channel}/messages"),
            Some(&by.token),
            Some(json!({
                "clientMessageId": id,
                "sessionId": session,
                "ciphertext": encode_base64(text.as_bytes()),
            })),
        )
        .await
}

async fn get_channel(server: &TestServer, by: &TestDevice, channel: Uuid) -> (StatusCode, Value) {
    server
        .call(
            Method::GET,
            &format!("/v1/channels/{channel}"),
            Some(&by.token),
            None,
        )
        .await
}

fn others(channel: &Channel, sender: &TestDevice) -> Vec<DeviceRef> {
    channel
        .devices
        .iter()
        .filter(|d| !(d.user_id == sender.user_id && d.device_id == sender.device_id))
        .copied()
        .collect()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_group_message_is_stored_once_and_reaches_every_member_device(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = TestUser::new(&server, "alice", 2).await;
    let bob = TestUser::new(&server, "bob", 2).await;
    let carol = TestUser::new(&server, "carol", 3).await;
    let sender = &alice.devices[0];
    let mut carol1 = server.connect(&carol.devices[0].token, None).await;
    assert!(carol1.backlog_items().await.0.is_empty());

    let channel = create(&server, sender, &[bob.id, carol.id]).await;
    let mut members = vec![alice.id, bob.id, carol.id];
    members.sort();
    assert_eq!(channel.members, members);
    assert_eq!(channel.created_by, alice.id);
    assert_eq!(channel.devices.len(), 7);

    // Every member device but the creating one learns of the channel.
    let item = carol1.next_item().await;
    let StreamItem::Membership(change) = &item else {
        panic!("expected a membership change, got {item:?}");
    };
    assert_eq!(change.change, MembershipChangeKind::Created);
    assert_eq!(change.members, members);
    assert_eq!(change.by_user_id, alice.id);
    for device in alice
        .devices
        .iter()
        .chain(&bob.devices)
        .chain(&carol.devices)
    {
        let memberships = server
            .inbox(device)
            .await
            .into_iter()
            .filter(|item| matches!(item, StreamItem::Membership(_)))
            .count();
        let expected =
            usize::from(device.device_id != sender.device_id || device.user_id != alice.id);
        assert_eq!(memberships, expected);
    }

    // One sender key per member device, each in that device's stream.
    let targets = others(&channel, sender);
    assert_eq!(targets.len(), 6);
    let (status, body) = share(&server, sender, channel.channel_id, "S1", &targets).await;
    assert_eq!(
        (status, body["stored"].as_u64()),
        (StatusCode::OK, Some(6)),
        "{body}"
    );
    let item = carol1.next_item().await;
    let StreamItem::SenderKey(key) = &item else {
        panic!("expected a sender key, got {item:?}");
    };
    assert_eq!(
        (
            key.channel_id,
            key.sender_user_id,
            key.sender_device_id,
            key.session_id.as_str()
        ),
        (channel.channel_id, alice.id, sender.device_id, "S1")
    );
    let own = DeviceRef {
        user_id: carol.id,
        device_id: carol.devices[0].device_id,
    };
    assert_eq!(
        decode_base64(&key.ciphertext).unwrap(),
        key_for(&own, "S1").as_bytes()
    );
    // A second upload of the same session keeps the first copies.
    let (status, body) = share(&server, sender, channel.channel_id, "S1", &targets).await;
    assert_eq!(
        (status, body["stored"].as_u64()),
        (StatusCode::OK, Some(0)),
        "{body}"
    );

    let (status, body) =
        send_group(&server, sender, channel.channel_id, "S1", "g1", "hello all").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sent: SendMessageResponse = serde_json::from_value(body).unwrap();
    assert_eq!(sent.envelope_count, 6);
    let item = carol1.next_item().await;
    let StreamItem::GroupMessage(message) = &item else {
        panic!("expected a group message, got {item:?}");
    };
    assert_eq!(message.message_id, sent.message_id);
    assert_eq!(message.channel_id, channel.channel_id);
    assert_eq!(message.session_id, "S1");
    assert_eq!(decode_base64(&message.ciphertext).unwrap(), b"hello all");
    for device in targets.iter() {
        let holder = alice
            .devices
            .iter()
            .chain(&bob.devices)
            .chain(&carol.devices)
            .find(|d| d.user_id == device.user_id && d.device_id == device.device_id)
            .unwrap();
        let groups: Vec<_> = server
            .inbox(holder)
            .await
            .into_iter()
            .filter(|item| matches!(item, StreamItem::GroupMessage(_)))
            .collect();
        assert_eq!(groups.len(), 1);
    }
    // Stored once: one ciphertext on the message, stream rows without their own.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM messages WHERE encrypted_envelope IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM message_envelopes WHERE ciphertext IS NULL AND envelope_type = 3"
        )
        .await,
        6
    );
    // A retry answers the original.
    let (status, body) =
        send_group(&server, sender, channel.channel_id, "S1", "g1", "hello all").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messageId"], json!(sent.message_id));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_send_missing_a_distribution_is_refused_naming_the_devices(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 2).await;
    let carol = TestUser::new(&server, "carol", 2).await;
    let sender = &alice.devices[0];
    let channel = create(&server, sender, &[bob.id, carol.id]).await;
    let targets = others(&channel, sender);
    let (left_out, given) = targets.split_last().unwrap();
    share(&server, sender, channel.channel_id, "S1", given).await;

    let answer = send_group(&server, sender, channel.channel_id, "S1", "g1", "x").await;
    assert_error(&answer, StatusCode::CONFLICT, "missing_sender_keys");
    let details: MissingSenderKeys =
        serde_json::from_value(answer.1["error"]["details"].clone()).unwrap();
    assert_eq!(details.session_id, "S1");
    assert_eq!(details.devices, vec![*left_out]);
    assert_eq!(count(&pool, "SELECT count(*) FROM messages").await, 0);

    // Once it has the key the send goes through; then a device joins and is named.
    share(&server, sender, channel.channel_id, "S1", &[*left_out]).await;
    let (status, body) = send_group(&server, sender, channel.channel_id, "S1", "g1", "x").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let newcomer = server.new_published_device("carol").await;
    let answer = send_group(&server, sender, channel.channel_id, "S1", "g2", "y").await;
    assert_error(&answer, StatusCode::CONFLICT, "missing_sender_keys");
    let details: MissingSenderKeys =
        serde_json::from_value(answer.1["error"]["details"].clone()).unwrap();
    assert_eq!(
        details.devices,
        vec![DeviceRef {
            user_id: carol.id,
            device_id: newcomer.device_id
        }]
    );
    // A new session needs every device again.
    let answer = send_group(&server, sender, channel.channel_id, "S2", "g3", "z").await;
    assert_error(&answer, StatusCode::CONFLICT, "missing_sender_keys");
    let details: MissingSenderKeys =
        serde_json::from_value(answer.1["error"]["details"].clone()).unwrap();
    assert_eq!(details.devices.len(), 5);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn membership_changes_reach_members_and_the_removed(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 2).await;
    let carol = TestUser::new(&server, "carol", 1).await;
    let dave = TestUser::new(&server, "dave", 1).await;
    let channel = create(&server, &alice.devices[0], &[bob.id, carol.id]).await;
    let id = channel.channel_id;

    // Any member adds; the new member's devices and everyone else's learn it.
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/v1/channels/{id}/members"),
            Some(&bob.devices[0].token),
            Some(json!({ "userIds": [dave.id, carol.id] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after: Channel = serde_json::from_value(body).unwrap();
    assert_eq!(after.members.len(), 4);
    let last_change = |items: Vec<StreamItem>| {
        items
            .into_iter()
            .filter_map(|item| match item {
                StreamItem::Membership(change) => Some(change),
                _ => None,
            })
            .next_back()
            .unwrap()
    };
    let change = last_change(server.inbox(&dave.devices[0]).await);
    assert_eq!(change.change, MembershipChangeKind::Added);
    assert_eq!(change.user_ids, vec![dave.id]);
    assert_eq!(change.by_user_id, bob.id);

    // Only the creator removes others.
    let answer = server
        .call(
            Method::DELETE,
            &format!("/v1/channels/{id}/members/{}", carol.id),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_channel_creator");

    // Bob leaves: his devices get the last word, the others see him go.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/channels/{id}/members/{}", bob.id),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let change = last_change(server.inbox(&bob.devices[1]).await);
    assert_eq!(change.change, MembershipChangeKind::Removed);
    assert_eq!(change.user_ids, vec![bob.id]);
    assert!(!change.members.contains(&bob.id));
    let change = last_change(server.inbox(&carol.devices[0]).await);
    assert_eq!(change.change, MembershipChangeKind::Removed);
    let answer = get_channel(&server, &bob.devices[0], id).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "channel_not_found");

    // Bob's devices are no longer targets: a key for them is refused, and sends do not
    // wait for them.
    let bob_device = DeviceRef {
        user_id: bob.id,
        device_id: bob.devices[0].device_id,
    };
    let answer = share(&server, &alice.devices[0], id, "S1", &[bob_device]).await;
    assert_error(&answer, StatusCode::CONFLICT, "not_a_member_device");
    let (status, body) = get_channel(&server, &alice.devices[0], id).await;
    assert_eq!(status, StatusCode::OK);
    let now: Channel = serde_json::from_value(body).unwrap();
    let targets = others(&now, &alice.devices[0]);
    assert!(targets.iter().all(|d| d.user_id != bob.id));
    share(&server, &alice.devices[0], id, "S1", &targets).await;
    let (status, body) = send_group(&server, &alice.devices[0], id, "S1", "g1", "after bob").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        !server
            .inbox(&bob.devices[1])
            .await
            .iter()
            .any(|item| matches!(item, StreamItem::GroupMessage(_)))
    );

    // The creator removes Carol; removing her twice is refused.
    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let (status, body) = server
            .call(
                Method::DELETE,
                &format!("/v1/channels/{id}/members/{}", carol.id),
                Some(&alice.devices[0].token),
                None,
            )
            .await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/channels",
            Some(&carol.devices[0].token),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn group_messages_get_delivered_and_read_receipts(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 2).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    let carol = TestUser::new(&server, "carol", 2).await;
    let channel = create(&server, &alice.devices[0], &[bob.id, carol.id]).await;
    let id = channel.channel_id;
    let targets = others(&channel, &alice.devices[0]);
    share(&server, &alice.devices[0], id, "S1", &targets).await;
    let mut sent = Vec::new();
    for n in 0..3 {
        let (status, body) =
            send_group(&server, &alice.devices[0], id, "S1", &format!("g{n}"), "x").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        sent.push(
            serde_json::from_value::<SendMessageResponse>(body)
                .unwrap()
                .message_id,
        );
    }

    // Alice's second device is online; it has the channel's creation, the sender key
    // and the three messages waiting (its own user's: no receipts for those).
    let mut alice2 = server.connect(&alice.devices[1].token, None).await;
    let (items, cursor) = alice2.backlog_items().await;
    assert_eq!(items.len(), 5, "{items:?}");
    alice2.ack_up_to(cursor).await;

    // Carol's first device takes its stream; Alice's devices learn of each delivery.
    let mut carol1 = server.connect(&carol.devices[0].token, None).await;
    let (_, cursor) = carol1.backlog_items().await;
    carol1.ack_up_to(cursor).await;
    let mut delivered = Vec::new();
    while delivered.len() < sent.len() {
        let item = alice2.next_item().await;
        let StreamItem::Delivered(receipt) = &item else {
            panic!("expected a delivered receipt, got {item:?}");
        };
        for delivery in &receipt.deliveries {
            assert_eq!(
                (delivery.user_id, delivery.device_ids.clone()),
                (carol.id, vec![carol.devices[0].device_id])
            );
            delivered.push(delivery.message_id);
        }
    }
    assert_eq!(delivered, sent, "Carol's device delivered all three");

    // Bob reads everything up to the last message.
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/receipts/read",
            Some(&bob.devices[0].token),
            Some(json!({ "messageId": sent[2], "upTo": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_value::<Conversation>(body["conversation"].clone()).unwrap(),
        Conversation::Channel { channel_id: id }
    );
    let item = alice2.next_item().await;
    let StreamItem::Read(read) = &item else {
        panic!("expected a read receipt, got {item:?}");
    };
    assert_eq!(read.reader_user_id, bob.id);
    assert_eq!(read.conversation, Conversation::Channel { channel_id: id });
    assert_eq!((read.message_id, read.up_to), (sent[2], true));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn bad_channel_requests_get_their_codes(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let mallory = TestUser::new(&server, "mallory", 1).await;
    let token = &alice.devices[0].token;

    let ghost = UserId::from(Uuid::new_v4());
    let answer = server
        .call(
            Method::POST,
            "/v1/channels",
            Some(token),
            Some(json!({ "members": [ghost] })),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "user_not_found");
    assert_eq!(answer.1["error"]["details"]["userIds"], json!([ghost]));

    let crowd: Vec<UserId> = (0..limits::MAX_CHANNEL_MEMBERS)
        .map(|_| UserId::from(Uuid::new_v4()))
        .collect();
    let answer = server
        .call(
            Method::POST,
            "/v1/channels",
            Some(token),
            Some(json!({ "members": crowd })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "too_many_members");

    let channel = create(&server, &alice.devices[0], &[]).await;
    let id = channel.channel_id;
    // Not a member: the channel does not exist for Mallory.
    let answer = get_channel(&server, &mallory.devices[0], id).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "channel_not_found");
    let answer = send_group(&server, &mallory.devices[0], id, "S1", "g1", "x").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "channel_not_found");
    // Alone in the channel, a message would reach nobody.
    let answer = send_group(&server, &alice.devices[0], id, "S1", "g1", "x").await;
    assert_error(&answer, StatusCode::CONFLICT, "recipient_unreachable");
    for session in ["", "has space", &"a".repeat(65)] {
        let answer = send_group(&server, &alice.devices[0], id, session, "g1", "x").await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_session_id");
    }
    let answer = server
        .call(
            Method::POST,
            &format!("/v1/channels/{id}/messages"),
            Some(token),
            Some(json!({ "clientMessageId": "g1", "sessionId": "S1", "ciphertext": "***" })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_base64");
    let answer = server
        .call(Method::GET, "/v1/channels/not-a-uuid", Some(token), None)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_path_parameter");

    // Sender keys are checked like V2 envelopes, before the database is asked anything.
    let key = |device: u32, envelope_type: &str, ciphertext: &str| json!({ "userId": mallory.id, "deviceId": device, "envelopeType": envelope_type, "ciphertext": ciphertext });
    let upload = |distributions: Vec<Value>, session: &str| json!({ "sessionId": session, "distributions": distributions });
    let path = format!("/v1/channels/{id}/sender-keys");
    for (body, code) in [
        (
            upload(vec![key(1, "legacy", "AAAA")], "S1"),
            "invalid_envelope",
        ),
        (
            upload(
                vec![key(1, "preKey", "AAAA"), key(1, "normal", "AAAA")],
                "S1",
            ),
            "duplicate_envelope",
        ),
        (
            upload(vec![key(1, "preKey", "***")], "S1"),
            "invalid_base64",
        ),
        (upload(vec![key(1, "preKey", "")], "S1"), "invalid_envelope"),
        (
            upload(vec![key(1, "preKey", "AAAA")], "not base64!"),
            "invalid_session_id",
        ),
        (
            upload((1..=101).map(|d| key(d, "preKey", "AAAA")).collect(), "S1"),
            "too_many_envelopes",
        ),
    ] {
        let answer = server
            .call(Method::POST, &path, Some(token), Some(body))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, code);
    }
    let answer = server
        .call(
            Method::POST,
            &path,
            Some(token),
            Some(upload(vec![key(1, "preKey", "AAAA")], "S1")),
        )
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "not_a_member_device");
}

async fn list_channels(server: &TestServer, by: &TestDevice) -> Vec<Channel> {
    let (status, body) = server
        .call(Method::GET, "/v1/channels", Some(&by.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body).unwrap()
}

/// `GET /v1/channels`: every channel of the caller's user and no other, oldest first, each
/// as `GET /v1/channels/{id}` shows it; a channel left is gone from the list.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_channel_list_shows_each_channel_of_the_user_as_its_own_page_does(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 2).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    let carol = TestUser::new(&server, "carol", 3).await;
    // Carol has a device without published keys: not among any channel's devices.
    server.login("carol").await;
    let with_bob = create(&server, &alice.devices[0], &[bob.id]).await;
    let not_alices = create(&server, &carol.devices[0], &[bob.id]).await;
    let with_both = create(&server, &bob.devices[0], &[alice.id, carol.id]).await;

    let listed = list_channels(&server, &alice.devices[1]).await;
    let ids: Vec<Uuid> = listed.iter().map(|c| c.channel_id).collect();
    assert_eq!(ids, vec![with_bob.channel_id, with_both.channel_id]);
    for channel in &listed {
        let (status, page) = get_channel(&server, &alice.devices[0], channel.channel_id).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            *channel,
            serde_json::from_value::<Channel>(page).unwrap(),
            "the list agrees with the channel's own page"
        );
    }
    assert_eq!(listed[1].members.len(), 3);
    assert_eq!(listed[1].devices.len(), 2 + 1 + 3);
    assert_eq!(list_channels(&server, &bob.devices[0]).await.len(), 3);
    let carols: Vec<Uuid> = list_channels(&server, &carol.devices[0])
        .await
        .iter()
        .map(|c| c.channel_id)
        .collect();
    assert_eq!(carols, vec![not_alices.channel_id, with_both.channel_id]);

    // Alice leaves the channel with Bob: it is gone from her list.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/channels/{}/members/{}", with_bob.channel_id, alice.id),
            Some(&alice.devices[0].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ids: Vec<Uuid> = list_channels(&server, &alice.devices[0])
        .await
        .iter()
        .map(|c| c.channel_id)
        .collect();
    assert_eq!(ids, vec![with_both.channel_id]);
}

/// A client message ID names one message of its device: reusing it for another
/// conversation (a channel after a user, another user, another channel) is refused with
/// its own code and stores nothing, while a retry to the same conversation still gets the
/// original's answer.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_client_message_id_reused_for_another_conversation_is_refused_and_stores_nothing(
    pool: PgPool,
) {
    let server = TestServer::start(pool.clone()).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    let carol = TestUser::new(&server, "carol", 1).await;
    let sender = &alice.devices[0];
    let channel = create(&server, sender, &[bob.id]).await;
    let (status, body) = share(
        &server,
        sender,
        channel.channel_id,
        "s1",
        &others(&channel, sender),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other_channel = create(&server, sender, &[carol.id]).await;
    let (status, body) = share(
        &server,
        sender,
        other_channel.channel_id,
        "s1",
        &others(&other_channel, sender),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let direct = |id: &str, to: &TestUser| common::v2_body(id, to.id, &to.refs(), "hello");

    // A direct message under X, then a group message under X: refused, nothing stored.
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(direct("x", &bob)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let original: SendMessageResponse = serde_json::from_value(body).unwrap();
    let reused = send_group(&server, sender, channel.channel_id, "s1", "x", "group text").await;
    assert_error(&reused, StatusCode::CONFLICT, "client_message_id_reused");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM messages WHERE channel_id IS NOT NULL"
        )
        .await,
        0
    );
    // The same ID to another user: refused too.
    let reused = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(direct("x", &carol)),
        )
        .await;
    assert_error(&reused, StatusCode::CONFLICT, "client_message_id_reused");
    assert_eq!(count(&pool, "SELECT count(*) FROM messages").await, 1);
    assert!(
        !server
            .inbox(&carol.devices[0])
            .await
            .iter()
            .any(|item| matches!(item, StreamItem::Envelope(_)))
    );
    // A retry to the same conversation is still the original.
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(direct("x", &bob)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let retry: SendMessageResponse = serde_json::from_value(body).unwrap();
    assert_eq!(retry.message_id, original.message_id);

    // The other way round: a group message under Y, then Y elsewhere.
    let (status, body) =
        send_group(&server, sender, channel.channel_id, "s1", "y", "group text").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let group: SendMessageResponse = serde_json::from_value(body).unwrap();
    let reused = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(direct("y", &bob)),
        )
        .await;
    assert_error(&reused, StatusCode::CONFLICT, "client_message_id_reused");
    let reused = send_group(
        &server,
        sender,
        other_channel.channel_id,
        "s1",
        "y",
        "other",
    )
    .await;
    assert_error(&reused, StatusCode::CONFLICT, "client_message_id_reused");
    let (status, body) = send_group(&server, sender, channel.channel_id, "s1", "y", "again").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let retry: SendMessageResponse = serde_json::from_value(body).unwrap();
    assert_eq!(retry.message_id, group.message_id);
    assert_eq!(count(&pool, "SELECT count(*) FROM messages").await, 2);
    // Bob got exactly the two messages that were stored: one direct, one group.
    let items = server.inbox(&bob.devices[0]).await;
    let envelopes = items
        .iter()
        .filter(|item| matches!(item, StreamItem::Envelope(_)))
        .count();
    let groups = items
        .iter()
        .filter(|item| matches!(item, StreamItem::GroupMessage(_)))
        .count();
    assert_eq!((envelopes, groups), (1, 1), "{items:?}");
}
