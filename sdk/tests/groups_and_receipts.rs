//! Receipts and channels end to end: real SDK clients with three devices per user against
//! the real server and PostgreSQL, offline devices included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Party, TestServer};
use courier_protocol::UserId;
use courier_protocol::api::receipts::{Conversation, MessageState, UpdatePrivacySettings};
use courier_protocol::api::stream::StreamItem;
use courier_sdk::client::Client;
use courier_sdk::crypto::{Event, FailureReason, ItemOutcome};
use sqlx::PgPool;
use uuid::Uuid;

/// Receives everything waiting and returns the events it queued (confirmed).
async fn receive_events(client: &Client) -> Vec<Event> {
    client.receive_until_caught_up().await.unwrap();
    let events = client.pending_events(10_000).await.unwrap();
    if let Some(last) = events.last() {
        client.confirm_events(last.seq).await.unwrap();
    }
    events.into_iter().map(|e| e.event).collect()
}

/// Receives live (`Client::run`) until the events gathered so far satisfy `done`, woken by
/// the client as events queue up, at most 10 s (a bound, not a timing assertion): for
/// what the server writes in batches, like delivered receipts.
async fn receive_events_until(client: &Client, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut gathered = Vec::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = client.run(async {
        let _ = stopped.await;
    });
    let waiting = async {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let events = client.pending_events(10_000).await.unwrap();
                if let Some(last) = events.last() {
                    client.confirm_events(last.seq).await.unwrap();
                }
                gathered.extend(events.into_iter().map(|e| e.event));
                if done(&gathered) {
                    break;
                }
                client.wait_for_events().await.unwrap();
            }
        })
        .await;
        let _ = stop.send(());
        waited
    };
    let (ran, waited) = tokio::join!(running, waiting);
    ran.unwrap();
    assert!(
        waited.is_ok(),
        "the expected events did not come within 10 s: {gathered:?}"
    );
    gathered
}

fn group_texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::GroupMessage { message, .. } => {
                Some(String::from_utf8(message.body.clone()).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn delivered(events: &[Event], message: Uuid) -> Vec<(UserId, u32)> {
    let mut found: Vec<(UserId, u32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered {
                message_id, device, ..
            } if *message_id == message => Some((device.user_id, device.device_id.get())),
            _ => None,
        })
        .collect();
    found.sort();
    found
}

fn read_by(events: &[Event], message: Uuid) -> Vec<(UserId, Conversation)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Read { receipt } if receipt.message_id == message => {
                Some((receipt.reader_user_id, receipt.conversation))
            }
            _ => None,
        })
        .collect()
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn receipts_reach_every_device_of_both_users_offline_ones_included(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 3).await;
    let bob = Party::register(&server, "bob", 3).await;
    let sent = alice.clients[0].send(bob.user(), b"hi").await.unwrap();

    // Bob's first device takes the message (and acknowledges it); his second reads it on
    // the spot, up to it; his third is offline throughout.
    receive_events(&bob.clients[0]).await;
    receive_events(&bob.clients[1]).await;
    let read = bob.clients[1]
        .mark_read(sent.message_id, true)
        .await
        .unwrap();
    assert!(read.changed);
    assert_eq!(
        read.conversation,
        Conversation::Direct {
            user_id: alice.user()
        }
    );

    let bob0 = bob.clients[0].own_device().device_id.get();
    let bob1 = bob.clients[1].own_device().device_id.get();
    for (index, client) in alice.clients.iter().enumerate() {
        // Acknowledgements are written in batches (up to 200 ms apart): receive until
        // both deliveries have come (bounded).
        let events = receive_events_until(client, |events| {
            delivered(events, sent.message_id).len() == 2
        })
        .await;
        assert_eq!(
            delivered(&events, sent.message_id),
            {
                let mut expected = vec![(bob.user(), bob0), (bob.user(), bob1)];
                expected.sort();
                expected
            },
            "alice device {index}"
        );
        assert_eq!(
            read_by(&events, sent.message_id),
            vec![(
                bob.user(),
                Conversation::Direct {
                    user_id: bob.user()
                }
            )],
            "alice device {index}"
        );
    }
    // Bob's other devices get his read state, the offline one too once it connects; the
    // reading device gets nothing back.
    for client in [&bob.clients[0], &bob.clients[2]] {
        let events = receive_events(client).await;
        assert_eq!(
            read_by(&events, sent.message_id),
            vec![(
                bob.user(),
                Conversation::Direct {
                    user_id: alice.user()
                }
            )]
        );
    }
    assert!(read_by(&receive_events(&bob.clients[1]).await, sent.message_id).is_empty());

    // Acknowledgements are written in batches, after the socket has moved on: wait for
    // the receipt of bob/2's (bounded), then the state shows all three.
    let bob2 = (bob.user(), bob.clients[2].own_device().device_id.get());
    receive_events_until(&alice.clients[2], |events| {
        delivered(events, sent.message_id).contains(&bob2)
    })
    .await;
    let state = alice.clients[2]
        .delivery_state(sent.message_id)
        .await
        .unwrap();
    assert_eq!(state.state, MessageState::Read);
    assert_eq!(
        state
            .devices
            .iter()
            .filter(|d| d.delivered_at.is_some())
            .count(),
        3,
        "bob/2 acknowledged when it came online"
    );
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn each_privacy_combination_holds_through_the_sdk(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = Party::register(&server, "alice", 3).await;
    let bob = Party::register(&server, "bob", 3).await;
    for (bob_sends, alice_shows) in [(true, true), (true, false), (false, true), (false, false)] {
        bob.clients[2]
            .set_privacy_settings(UpdatePrivacySettings {
                send_read_receipts: Some(bob_sends),
                show_read_receipts: None,
            })
            .await
            .unwrap();
        alice.clients[1]
            .set_privacy_settings(UpdatePrivacySettings {
                send_read_receipts: None,
                show_read_receipts: Some(alice_shows),
            })
            .await
            .unwrap();
        let sent = alice.clients[0].send(bob.user(), b"m").await.unwrap();
        receive_events(&bob.clients[0]).await;
        bob.clients[0]
            .mark_read(sent.message_id, false)
            .await
            .unwrap();

        let visible = bob_sends && alice_shows;
        for client in &alice.clients {
            let seen = !read_by(&receive_events(client).await, sent.message_id).is_empty();
            assert_eq!(seen, visible, "send {bob_sends}, show {alice_shows}");
        }
        for client in &bob.clients[1..] {
            assert_eq!(
                read_by(&receive_events(client).await, sent.message_id).len(),
                1,
                "Bob's own devices sync his read state whatever the settings"
            );
        }
        let state = alice.clients[0]
            .delivery_state(sent.message_id)
            .await
            .unwrap();
        assert_eq!(state.state == MessageState::Read, visible);
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_three_member_channel_reaches_every_device_and_drops_a_removed_member(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = Party::register(&server, "alice", 2).await;
    let mut bob = Party::register(&server, "bob", 2).await;
    let carol = Party::register(&server, "carol", 3).await;
    let channel = alice.clients[0]
        .create_channel(&[bob.user(), carol.user()])
        .await
        .unwrap();
    let id = channel.channel_id;

    alice.clients[0].send_group(id, b"one").await.unwrap();
    bob.clients[1].send_group(id, b"from bob").await.unwrap();
    // Every member device reads both (the senders' own other devices included), in order.
    for client in alice
        .clients
        .iter()
        .chain(&bob.clients)
        .chain(&carol.clients)
    {
        let own = client.own_device();
        let expected: Vec<&str> = [
            ("one", alice.clients[0].own_device()),
            ("from bob", bob.clients[1].own_device()),
        ]
        .into_iter()
        .filter(|(_, sender)| *sender != own)
        .map(|(text, _)| text)
        .collect();
        assert_eq!(
            group_texts(&receive_events(client).await),
            expected,
            "{own:?}"
        );
    }

    // A device Bob adds now reads what follows, not what came before.
    bob.add_device(&server, "bob").await;
    // Carol is removed: Alice's next message goes under a new session Carol never gets.
    alice.clients[0]
        .remove_channel_member(id, carol.user())
        .await
        .unwrap();
    let second = alice.clients[0].send_group(id, b"two").await.unwrap();
    assert_eq!(second.envelope_count, 4, "alice/1, bob/0, bob/1, bob/2");
    assert_eq!(
        group_texts(&receive_events(&bob.clients[2]).await),
        vec!["two"]
    );
    assert_eq!(
        group_texts(&receive_events(&bob.clients[0]).await),
        vec!["two"]
    );
    for client in &carol.clients {
        let events = receive_events(client).await;
        assert!(group_texts(&events).is_empty());
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Membership { change } if change.user_ids == vec![carol.user()]
        )));
    }

    // Even handed the ciphertext (a server that copies the row into her stream), Carol
    // cannot read it: she never had the session.
    let carol0 = carol.clients[0].own_device();
    let forged = Uuid::now_v7();
    sqlx::query(
        "WITH source AS (SELECT * FROM messages WHERE message_id = $1)
         INSERT INTO messages (message_id, sender_user_id, sender_device_id, client_message_id,
             protocol_version, encrypted_envelope, envelope_count, channel_id, group_session_id)
         SELECT $2, sender_user_id, sender_device_id, 'forged', 2,
             (SELECT encrypted_envelope FROM messages m JOIN message_envelopes e USING (message_id)
              WHERE m.message_id = $1 LIMIT 1), 1, channel_id, group_session_id
         FROM source",
    )
    .bind(second.message_id)
    .bind(forged)
    .execute(&pool)
    .await
    .unwrap();
    forge_stream_row(&pool, carol0, forged).await;
    let events = receive_events(&carol.clients[0]).await;
    assert!(group_texts(&events).is_empty());
    assert!(events.iter().any(|e| matches!(
        e,
        Event::GroupDecryptionFailed { message_id: Some(m), reason: FailureReason::Undecryptable, .. } if *m == forged
    )));
}

/// Puts a group message row into a device's stream, as a server that misroutes would.
async fn forge_stream_row(
    pool: &PgPool,
    device: courier_protocol::api::keys::DeviceRef,
    message_id: Uuid,
) {
    sqlx::query(
        "WITH seq AS (
             UPDATE devices SET next_stream_seq = next_stream_seq + 1
             WHERE user_id = $1 AND device_id = $2 RETURNING next_stream_seq - 1 AS seq
         )
         INSERT INTO message_envelopes (recipient_user_id, recipient_device_id, seq, message_id, envelope_type)
         SELECT $1, $2, seq, $3, 3 FROM seq",
    )
    .bind(device.user_id.as_uuid())
    .bind(device.device_id.as_i32())
    .bind(message_id)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_replayed_group_message_is_rejected(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = Party::register(&server, "alice", 1).await;
    let bob = Party::register(&server, "bob", 1).await;
    let channel = alice.clients[0]
        .create_channel(&[bob.user()])
        .await
        .unwrap();
    let sent = alice.clients[0]
        .send_group(channel.channel_id, b"once")
        .await
        .unwrap();
    // The server stores the same ciphertext again as a new message (before Bob reads).
    let replay = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO messages (message_id, sender_user_id, sender_device_id, client_message_id,
             protocol_version, encrypted_envelope, envelope_count, channel_id, group_session_id)
         SELECT $2, sender_user_id, sender_device_id, 'replay', 2, encrypted_envelope, 1,
             channel_id, group_session_id
         FROM messages WHERE message_id = $1",
    )
    .bind(sent.message_id)
    .bind(replay)
    .execute(&pool)
    .await
    .unwrap();
    forge_stream_row(&pool, bob.clients[0].own_device(), replay).await;

    // The genuine message, handed to the client twice (a lost acknowledgement): the
    // second time it is a duplicate.
    let page = bob.clients[0].api().inbox(0, None).await.unwrap();
    let at = page
        .items
        .iter()
        .position(
            |item| matches!(item, StreamItem::GroupMessage(m) if m.message_id == sent.message_id),
        )
        .expect("the group message in Bob's inbox");
    // What comes before it (the membership change, Alice's sender key) first.
    for item in &page.items[..at] {
        bob.clients[0].process_item(item).await.unwrap();
    }
    let genuine = &page.items[at];
    assert_eq!(
        bob.clients[0].process_item(genuine).await.unwrap(),
        ItemOutcome::Stored
    );
    assert_eq!(
        bob.clients[0].process_item(genuine).await.unwrap(),
        ItemOutcome::Duplicate
    );

    let events = receive_events(&bob.clients[0]).await;
    assert_eq!(group_texts(&events), vec!["once"], "once, not twice");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::GroupDecryptionFailed { message_id: Some(m), reason: FailureReason::Rejected(_), .. } if *m == replay
    )));
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_group_message_from_a_device_removed_before_it_was_learned_is_acknowledged(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = Party::register(&server, "alice", 1).await;
    let mut bob = Party::register(&server, "bob", 1).await;
    let channel = alice.clients[0]
        .create_channel(&[bob.user()])
        .await
        .unwrap();
    let id = channel.channel_id;
    alice.clients[0].send_group(id, b"hello").await.unwrap();

    // A device Bob adds sends once and is removed before Alice ever lists Bob's devices
    // again: to Alice its sender key and message come from a device no list names.
    let fleeting = bob.add_device(&server, "bob").await.own_device();
    let gone = bob.clients[1].send_group(id, b"fleeting").await.unwrap();
    bob.clients[0]
        .remove_device(fleeting.device_id)
        .await
        .unwrap();

    let events = receive_events(&alice.clients[0]).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::GroupDecryptionFailed { message_id: Some(m), reason: FailureReason::UnknownSender, .. }
                if *m == gone.message_id
        )),
        "{events:?}"
    );
    // Acknowledged: nothing comes again, and Bob's next message arrives.
    bob.clients[0].send_group(id, b"after").await.unwrap();
    let events = receive_events(&alice.clients[0]).await;
    assert_eq!(group_texts(&events), vec!["after"]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::GroupDecryptionFailed { .. })),
        "{events:?}"
    );
}
