//! The app-facing surface (`courier_sdk::app`) against the real server: what every
//! binding wraps, tested once in Rust (each binding repeats the scenario in its language).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Recorder, TestServer};
use courier_sdk::app::{AppEventKind, ConnectionState, CourierClient, CourierError};
use sqlx::PgPool;
use tempfile::TempDir;

const PASSWORD: &str = "correct horse battery";
const KEY: [u8; 32] = [9; 32];

struct Device {
    client: CourierClient,
    _dir: Arc<TempDir>,
    path: String,
}

async fn register(server: &TestServer, username: &str) -> Device {
    let dir = Arc::new(TempDir::new().unwrap());
    let path = dir.path().join("store.db").display().to_string();
    let client = CourierClient::register(
        server.base_url.to_string(),
        path.clone(),
        KEY.to_vec(),
        username.into(),
        PASSWORD.into(),
        "phone".into(),
        None,
    )
    .await
    .unwrap();
    Device {
        client,
        _dir: dir,
        path,
    }
}

async fn login(server: &TestServer, username: &str) -> Result<Device, CourierError> {
    let dir = Arc::new(TempDir::new().unwrap());
    let path = dir.path().join("store.db").display().to_string();
    let client = CourierClient::login(
        server.base_url.to_string(),
        path.clone(),
        KEY.to_vec(),
        username.into(),
        PASSWORD.into(),
        "laptop".into(),
    )
    .await?;
    Ok(Device {
        client,
        _dir: dir,
        path,
    })
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn two_users_with_two_devices_each_talk_and_every_listener_hears_it(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = [
        register(&server, "alice").await,
        login(&server, "alice").await.unwrap(),
    ];
    let bob = [
        register(&server, "bob").await,
        login(&server, "bob").await.unwrap(),
    ];
    let alice_id = alice[0].client.own_device().user_id;
    let bob_id = bob[0].client.own_device().user_id;
    assert_ne!(
        alice[0].client.own_device().device_id,
        alice[1].client.own_device().device_id,
        "the server assigns each device its own ID"
    );

    let mut listeners = Vec::new();
    let mut handles = Vec::new();
    for device in alice.iter().chain(&bob) {
        let recorder = Arc::new(Recorder::default());
        handles.push(device.client.start_receiving(recorder.clone()).unwrap());
        listeners.push(recorder);
    }
    for recorder in &listeners {
        recorder
            .until("a connection", |r| {
                r.states
                    .lock()
                    .unwrap()
                    .contains(&ConnectionState::Connected)
            })
            .await;
    }
    assert!(matches!(
        alice[0].client.start_receiving(listeners[0].clone()),
        Err(CourierError::AlreadyReceiving)
    ));

    let sent = alice[0]
        .client
        .send(
            bob_id.clone(),
            b"hello bob".to_vec(),
            Some("greeting-1".into()),
        )
        .await
        .unwrap();
    assert_eq!(sent.client_message_id, "greeting-1");
    for recorder in &listeners[1..] {
        recorder
            .until("alice's message", |r| r.has_body("hello bob"))
            .await;
    }
    bob[1]
        .client
        .send(alice_id.clone(), b"hi alice".to_vec(), None)
        .await
        .unwrap();
    for index in [0, 1, 2] {
        listeners[index]
            .until("bob's answer", |r| r.has_body("hi alice"))
            .await;
    }
    let events = listeners[2].events.lock().unwrap().clone();
    let from_alice = events
        .iter()
        .find_map(|event| match &event.kind {
            AppEventKind::Message {
                sender,
                conversation_user_id,
                client_message_id,
                from_own_device,
                ..
            } if client_message_id == "greeting-1" => Some((
                sender.clone(),
                conversation_user_id.clone(),
                *from_own_device,
            )),
            _ => None,
        })
        .unwrap();
    assert_eq!(from_alice.0, alice[0].client.own_device());
    assert_eq!(from_alice.1, alice_id);
    assert!(!from_alice.2);

    // A channel: one group message reaches every other member device.
    let channel = alice[0]
        .client
        .create_channel(vec![bob_id.clone()])
        .await
        .unwrap();
    assert_eq!(channel.members.len(), 2);
    alice[0]
        .client
        .send_group(channel.channel_id.clone(), b"to the group".to_vec(), None)
        .await
        .unwrap();
    for recorder in &listeners[1..] {
        recorder
            .until("the group message", |r| r.has_body("to the group"))
            .await;
    }

    // Nothing reached a listener twice.
    for recorder in &listeners {
        let seqs: Vec<u64> = recorder
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        let mut unique = seqs.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            seqs.len(),
            unique.len(),
            "every event reaches the listener once"
        );
    }

    // Cancelling stops the loop; the listener hears it stopped.
    for (handle, recorder) in handles.iter().zip(&listeners) {
        handle.cancel();
        tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .unwrap();
        assert!(handle.is_finished());
        assert_eq!(
            recorder.states.lock().unwrap().last(),
            Some(&ConnectionState::Stopped)
        );
    }
    // What the listeners accepted was confirmed: only later events are still pending.
    for (device, recorder) in alice.iter().chain(&bob).zip(&listeners) {
        let accepted = recorder
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .max()
            .unwrap();
        let pending = device.client.pending_events(1000).await.unwrap();
        assert!(
            pending.iter().all(|e| e.seq > accepted),
            "accepted events are confirmed"
        );
    }
    // Stopped means stopped: a message sent now waits at the server, a new loop gets
    // it, and the old listener (its loop has ended) never does.
    let before = listeners[2].bodies().len();
    alice[0]
        .client
        .send(bob_id, b"after the loop".to_vec(), None)
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let handle = bob[0].client.start_receiving(recorder.clone()).unwrap();
    recorder
        .until("the message sent while stopped", |r| {
            r.has_body("after the loop")
        })
        .await;
    assert_eq!(listeners[2].bodies().len(), before);
    handle.cancel();
    handle.wait().await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_failing_listener_gets_its_batch_again_and_the_loop_reports_the_failure(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let bob_id = bob.client.own_device().user_id;
    alice
        .client
        .send(bob_id, b"kept until taken".to_vec(), None)
        .await
        .unwrap();

    let recorder = Arc::new(Recorder {
        fail_first: Mutex::new(2),
        ..Recorder::default()
    });
    let handle = bob.client.start_receiving(recorder.clone()).unwrap();
    recorder
        .until("the message, after two refusals", |r| {
            r.has_body("kept until taken")
        })
        .await;
    let batches = recorder.batches.lock().unwrap().clone();
    let first_seq = batches[0][0];
    assert!(
        batches.len() >= 3 && batches[1][0] == first_seq && batches[2][0] == first_seq,
        "a refused batch comes again from its first event: {batches:?}"
    );
    let failures = recorder
        .errors
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, CourierError::ListenerFailed { message } if message == "the app's database is busy"))
        .count();
    assert_eq!(failures, 2, "each refusal is reported");
    assert!(!handle.is_finished(), "the loop survives its listener");
    handle.cancel();
    handle.wait().await;
    assert!(
        bob.client.pending_events(100).await.unwrap().is_empty(),
        "the accepted batch was confirmed"
    );
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn dropping_the_client_stops_its_loop(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let bob = register(&server, "bob").await;
    let recorder = Arc::new(Recorder::default());
    let handle = bob.client.start_receiving(recorder.clone()).unwrap();
    recorder
        .until("a connection", |r| {
            r.states
                .lock()
                .unwrap()
                .contains(&ConnectionState::Connected)
        })
        .await;
    drop(bob.client);
    tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("the loop ends when its client is dropped");
    assert_eq!(
        recorder.states.lock().unwrap().last(),
        Some(&ConnectionState::Stopped)
    );
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn failures_arrive_as_one_flat_typed_error(pool: PgPool) {
    let server = TestServer::start_with(
        pool,
        courier_server::Settings {
            device_limit: 2,
            rate_limits: courier_server::rate_limits::RateLimitSettings::off(),
            ..courier_server::Settings::default()
        },
    )
    .await;
    let alice = register(&server, "alice").await;
    let second = login(&server, "alice").await.unwrap();

    // The device limit, with its counts.
    let error = login(&server, "alice").await.err().unwrap();
    match &error {
        CourierError::DeviceLimitReached {
            count,
            limit,
            device_ids,
        } => {
            assert_eq!((*count, *limit), (2, 2));
            assert_eq!(device_ids.len(), 2);
        }
        other => panic!("expected the device limit, got {other:?}"),
    }
    assert_eq!(error.code(), "device_limit_reached");
    assert_eq!(error.server_code().as_deref(), Some("device_limit_reached"));
    assert_eq!(error.status(), Some(409));
    assert!(!error.is_retryable());

    // Wrong password; a taken username.
    let dir = TempDir::new().unwrap();
    let wrong = CourierClient::login(
        server.base_url.to_string(),
        dir.path().join("x.db").display().to_string(),
        KEY.to_vec(),
        "alice".into(),
        "not the password".into(),
        "tablet".into(),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(wrong, CourierError::InvalidCredentials);
    let taken = CourierClient::register(
        server.base_url.to_string(),
        dir.path().join("y.db").display().to_string(),
        KEY.to_vec(),
        "alice".into(),
        PASSWORD.into(),
        "tablet".into(),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(taken, CourierError::UsernameTaken);

    // Arguments are checked before anything is done.
    let bad = alice
        .client
        .send("not-a-uuid".into(), b"x".to_vec(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(bad.code(), "invalid_argument");
    let short_key = CourierClient::open(alice.path.clone(), vec![1; 16])
        .await
        .err()
        .unwrap();
    assert_eq!(short_key.code(), "invalid_argument");

    // A wrong store key: typed, and the store is untouched.
    let wrong_key = CourierClient::open(alice.path.clone(), vec![1; 32])
        .await
        .err()
        .unwrap();
    assert_eq!(wrong_key, CourierError::WrongStoreKey);
    let reopened = CourierClient::open(alice.path.clone(), KEY.to_vec())
        .await
        .unwrap();
    assert_eq!(reopened.own_device(), alice.client.own_device());
    drop(reopened);

    // Unreachable: a retryable network error.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unreachable = CourierClient::register(
        format!("http://127.0.0.1:{closed_port}"),
        dir.path().join("z.db").display().to_string(),
        KEY.to_vec(),
        "carol".into(),
        PASSWORD.into(),
        "phone".into(),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(unreachable.code(), "network");
    assert!(unreachable.is_retryable());

    // Removed from another device: the removed one's calls fail as removed.
    alice
        .client
        .remove_device(second.client.own_device().device_id)
        .await
        .unwrap();
    let removed = second.client.privacy_settings().await.err().unwrap();
    assert_eq!(removed, CourierError::DeviceRemoved);

    // After log-out every call is refused, and the device is gone at the server.
    alice.client.log_out().await.unwrap();
    let after = alice
        .client
        .send(alice.client.own_device().user_id, b"x".to_vec(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(after, CourierError::LoggedOut);
    assert!(matches!(
        alice.client.start_receiving(Arc::new(Recorder::default())),
        Err(CourierError::LoggedOut)
    ));
    let reopened = CourierClient::open(alice.path.clone(), KEY.to_vec())
        .await
        .unwrap();
    assert_eq!(
        reopened.privacy_settings().await.err(),
        Some(CourierError::DeviceRemoved),
        "its token died with it"
    );
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_send_cut_off_by_the_network_is_kept_and_goes_once_when_the_loop_connects(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let address = format!(
        "{}:{}",
        server.base_url.host_str().unwrap(),
        server.base_url.port().unwrap()
    );
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let bob_id = bob.client.own_device().user_id;
    alice
        .client
        .send(bob_id.clone(), b"before".to_vec(), None)
        .await
        .unwrap();

    // The server is gone: the send fails as retryable, and is kept.
    drop(server);
    let error = alice
        .client
        .send(
            bob_id.clone(),
            b"while away".to_vec(),
            Some("away-1".into()),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), "network", "{error:?}");
    assert!(error.is_retryable());

    // Back on the same address: the loop connects and sends what was kept.
    let _server = TestServer::start_at(pool, courier_server::Settings::default(), &address).await;
    let recorder = Arc::new(Recorder::default());
    let handle = alice.client.start_receiving(recorder.clone()).unwrap();
    let sent_away = |r: &Recorder| {
        r.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|event| match &event.kind {
                AppEventKind::Sent {
                    client_message_id,
                    message_id,
                    ..
                } if client_message_id == "away-1" => Some(message_id.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    recorder
        .until("the kept message to be sent", |r| !sent_away(r).is_empty())
        .await;

    // The app retries too, under the same ID: the original answer, no second copy, no
    // second `Sent`.
    let retried = alice
        .client
        .send(bob_id, b"while away".to_vec(), Some("away-1".into()))
        .await
        .unwrap();
    assert_eq!(vec![retried.message_id], sent_away(&recorder));
    assert_eq!(
        alice.client.send_unsent().await.unwrap(),
        0,
        "nothing is left kept"
    );
    handle.cancel();
    handle.wait().await;
    assert_eq!(sent_away(&recorder).len(), 1);

    bob.client.receive_until_caught_up().await.unwrap();
    let bodies: Vec<Vec<u8>> = bob
        .client
        .pending_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| match event.kind {
            AppEventKind::Message { body, .. } => Some(body),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, [b"before".to_vec(), b"while away".to_vec()]);
}
