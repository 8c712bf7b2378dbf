//! The SDK's transport against a real Courier server, real PostgreSQL, real HTTP and
//! WebSocket: typed calls, the error shape, the stream and its close reasons, TLS, and
//! the reconnect backoff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestDevice, TestServer, eventually, login_request, v2_send};
use courier_protocol::api::keys::{ClaimKeysRequest, DeviceRef, UploadOneTimeKeysRequest};
use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::api::stream::{ControlFrame, Envelope, ServerFrame, StreamItem};
use courier_protocol::keys::decode_fixed;
use courier_protocol::{DeviceId, ErrorCode, UserId, signing};
use courier_sdk::transport::{
    AccessToken, ApiClient, Backoff, BackoffPolicy, NetworkErrorKind, SendOutcome, StreamClosed,
    StreamConnection, TransportError,
};
use courier_server::Settings;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::PgPool;
use tokio::io::AsyncReadExt;
use url::Url;

/// The next frame, waiting at most 10 s (a bound, not a timing assertion).
async fn next(stream: &mut StreamConnection) -> Result<ServerFrame, TransportError> {
    tokio::time::timeout(Duration::from_secs(10), stream.next_frame())
        .await
        .expect("a frame within 10 s")
}

async fn next_envelope(stream: &mut StreamConnection) -> Envelope {
    match next(stream).await {
        Ok(ServerFrame::Item(StreamItem::Envelope(envelope))) => envelope,
        other => panic!("expected an envelope, got {other:?}"),
    }
}

async fn caught_up(stream: &mut StreamConnection) -> u64 {
    match next(stream).await {
        Ok(ServerFrame::Control(ControlFrame::CaughtUp { cursor })) => cursor,
        other => panic!("expected caughtUp, got {other:?}"),
    }
}

/// Sends a V2 message from `sender` that must be stored.
async fn send(
    sender: &TestDevice,
    id: &str,
    recipient: UserId,
    devices: &[&TestDevice],
) -> SendMessageResponse {
    let devices: Vec<_> = devices.iter().map(|d| (d.user_id, d.device_id)).collect();
    match sender
        .client
        .send_message(&v2_send(id, recipient, &devices))
        .await
        .unwrap()
    {
        SendOutcome::Sent(sent) => sent,
        other => panic!("expected Sent, got {other:?}"),
    }
}

/// A port on loopback with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn device_ref(device: &TestDevice) -> DeviceRef {
    DeviceRef {
        user_id: device.user_id,
        device_id: device.device_id,
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn create_account_and_login_get_a_server_assigned_device_id_each_time(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let user_id = server.create_account("alice").await;

    let first = server.try_login("alice").await.unwrap();
    let second = server.try_login("alice").await.unwrap();
    assert_eq!(first.user_id, user_id);
    assert_eq!(second.user_id, user_id);
    assert!(!first.device_id.is_new());
    assert!(!second.device_id.is_new());
    assert_ne!(first.device_id, second.device_id);
    assert_ne!(
        first.access_token.expose_secret(),
        second.access_token.expose_secret()
    );

    let client = server.client().with_token(second.access_token);
    let own = client.list_own_devices().await.unwrap();
    let ids: Vec<DeviceId> = own.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(ids, vec![first.device_id, second.device_id]);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn login_past_the_device_limit_reports_the_devices_to_replace(pool: PgPool) {
    let settings = Settings {
        device_limit: 2,
        ..Settings::default()
    };
    let server = TestServer::start_with(pool, settings).await;
    server.create_account("alice").await;
    let first = server.try_login("alice").await.unwrap();
    let second = server.try_login("alice").await.unwrap();

    let refused = server.try_login("alice").await.unwrap_err();
    assert!(
        matches!(
            &refused,
            TransportError::Api {
                status: 409,
                code: ErrorCode::DeviceLimitReached,
                details: Some(_),
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(!refused.is_retryable());
    let details = refused.device_limit_details().unwrap();
    assert_eq!((details.count, details.limit), (2, 2));
    let listed: Vec<DeviceId> = details.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(listed, vec![first.device_id, second.device_id]);

    // The app offers to replace one: the new device takes its place in one step.
    let mut replacing = login_request("alice");
    replacing.replace_device_id = Some(first.device_id);
    let third = server.client().login(&replacing).await.unwrap();
    assert!(third.device_id > second.device_id);
    let replaced = server
        .client()
        .with_token(first.access_token)
        .key_count()
        .await
        .unwrap_err();
    assert_eq!(replaced.code(), Some(ErrorCode::DeviceRemoved));
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn identity_one_time_and_fallback_keys_round_trip_through_a_claim(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    let bob_id = server.create_account("bob").await;
    let alice = server.new_published_device("alice").await;
    let bob = server.new_device("bob").await;

    let published = bob
        .client
        .publish_identity_keys(&bob.identity_keys())
        .await
        .unwrap();
    assert_eq!(published.device_id, bob.device_id);
    assert_eq!(published.identity_keys, bob.identity_keys());
    // Publishing the same keys again is fine.
    bob.client
        .publish_identity_keys(&published.identity_keys)
        .await
        .unwrap();

    let one_time_keys = vec![
        bob.one_time_key("otk1"),
        bob.one_time_key("otk2"),
        bob.one_time_key("otk3"),
    ];
    let counts = bob
        .client
        .upload_one_time_keys(&UploadOneTimeKeysRequest {
            one_time_keys: one_time_keys.clone(),
        })
        .await
        .unwrap();
    assert_eq!(counts.one_time_key_count, 3);
    assert_eq!(counts.fallback_key_id, None);
    let fallback = bob.fallback_key("fb1");
    let counts = bob.client.set_fallback_key(&fallback).await.unwrap();
    assert_eq!(counts.one_time_key_count, 3);
    assert_eq!(counts.fallback_key_id.as_deref(), Some("fb1"));
    assert_eq!(bob.client.key_count().await.unwrap(), counts);

    // Alice finds Bob's device and checks its self-signature herself.
    let directory = alice.client.user_devices(bob_id).await.unwrap();
    assert_eq!(directory.user_id, bob_id);
    assert_eq!(directory.devices.len(), 1);
    let listed = &directory.devices[0];
    assert_eq!(listed.device_id, bob.device_id);
    let bob_ed25519: [u8; 32] = decode_fixed(&listed.identity_keys.ed25519).unwrap();
    signing::verify_identity_keys(
        bob_id,
        bob.device_id,
        &decode_fixed(&listed.identity_keys.curve25519).unwrap(),
        &bob_ed25519,
        &decode_fixed(&listed.identity_keys.signature).unwrap(),
    )
    .unwrap();

    // Each claim hands out one uploaded key once, then the fallback key.
    let nobody = DeviceRef {
        user_id: bob_id,
        device_id: DeviceId::new(999).unwrap(),
    };
    let mut claimed_ids = BTreeSet::new();
    for round in 0..4 {
        let claim = alice
            .client
            .claim_keys(&ClaimKeysRequest {
                devices: vec![device_ref(&bob), nobody],
            })
            .await
            .unwrap();
        assert_eq!(claim.unavailable, vec![nobody]);
        assert_eq!(claim.keys.len(), 1);
        let key = &claim.keys[0];
        assert_eq!((key.user_id, key.device_id), (bob_id, bob.device_id));
        let public_key: [u8; 32] = decode_fixed(&key.key.key).unwrap();
        let payload = if key.fallback {
            signing::fallback_key_payload(bob_id, bob.device_id, &key.key.key_id, &public_key)
        } else {
            signing::one_time_key_payload(bob_id, bob.device_id, &key.key.key_id, &public_key)
        };
        signing::verify(
            &bob_ed25519,
            &payload,
            &decode_fixed(&key.key.signature).unwrap(),
        )
        .unwrap();
        if round < 3 {
            assert!(!key.fallback);
            assert!(one_time_keys.contains(&key.key));
            assert!(claimed_ids.insert(key.key.key_id.clone()), "claimed twice");
        } else {
            assert!(key.fallback);
            assert_eq!(key.key, fallback);
        }
    }
    assert_eq!(bob.client.key_count().await.unwrap().one_time_key_count, 0);
    let own = bob.client.list_own_devices().await.unwrap();
    assert!(own.devices[0].has_identity_keys);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn send_reports_a_device_list_mismatch_and_sends_a_matching_set(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice_id = server.create_account("alice").await;
    let bob_id = server.create_account("bob").await;
    let alice1 = server.new_published_device("alice").await;
    let alice2 = server.new_published_device("alice").await;
    let bob1 = server.new_published_device("bob").await;
    let bob2 = server.new_published_device("bob").await;
    bob1.client.remove_device(bob2.device_id).await.unwrap();

    // Missing: Alice's other device. Extra: the sending device. Stale: Bob's removed one.
    let wrong = v2_send(
        "m1",
        bob_id,
        &[
            (bob_id, bob1.device_id),
            (bob_id, bob2.device_id),
            (alice_id, alice1.device_id),
        ],
    );
    let outcome = alice1.client.send_message(&wrong).await.unwrap();
    let SendOutcome::DeviceListMismatch(mismatch) = outcome else {
        panic!("expected a device list mismatch, got {outcome:?}");
    };
    assert_eq!(mismatch.missing, vec![device_ref(&alice2)]);
    assert_eq!(mismatch.extra, vec![device_ref(&alice1)]);
    assert_eq!(mismatch.stale, vec![device_ref(&bob2)]);

    // Fixed, with the same client message ID: stored.
    let right = v2_send(
        "m1",
        bob_id,
        &[(bob_id, bob1.device_id), (alice_id, alice2.device_id)],
    );
    let SendOutcome::Sent(sent) = alice1.client.send_message(&right).await.unwrap() else {
        panic!("expected Sent");
    };
    assert_eq!(sent.envelope_count, 2);
    assert!(!sent.message_id.is_nil());
    // A retry answers the original message.
    assert_eq!(
        alice1.client.send_message(&right).await.unwrap(),
        SendOutcome::Sent(sent.clone())
    );
    assert_eq!(
        bob1.client
            .get_envelope(sent.message_id)
            .await
            .unwrap()
            .sender_device_id,
        alice1.device_id
    );
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_wrong_token_is_an_invalid_token_api_error(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let client = server
        .client()
        .with_token(AccessToken::new("cdt_not-a-token-the-server-issued"));
    let error = client.key_count().await.unwrap_err();
    assert!(
        matches!(
            error,
            TransportError::Api {
                status: 401,
                code: ErrorCode::InvalidToken,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    // The WebSocket upgrade is refused the same way.
    let error = client.open_stream(None).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidToken));
    assert_eq!(error.status(), Some(401));
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_network_error() {
    let base_url: Url = format!("http://127.0.0.1:{}", closed_port())
        .parse()
        .unwrap();
    let token = AccessToken::new("cdt_unreachable-secret-token");
    let client = ApiClient::new(base_url.clone())
        .unwrap()
        .with_token(token.clone());

    let error = client.key_count().await.unwrap_err();
    assert!(
        matches!(
            error,
            TransportError::Network {
                kind: NetworkErrorKind::Connect,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.code(), None);

    let error = StreamConnection::connect(&base_url, &token, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TransportError::Network {
                kind: NetworkErrorKind::Connect,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn debug_and_errors_never_show_the_token(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    let login = server.try_login("alice").await.unwrap();
    let token = login.access_token.expose_secret().to_owned();
    assert!(token.starts_with("cdt_"));
    assert!(!format!("{login:?}").contains(&token));

    let client = server.client().with_token(login.access_token.clone());
    assert!(!format!("{client:?}").contains(&token), "{client:?}");

    // An API error for a request made with the token: this device removes itself.
    client.remove_device(login.device_id).await.unwrap();
    let refused = client.key_count().await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::DeviceRemoved));
    let refused_stream = client.open_stream(None).await.unwrap_err();
    assert_eq!(refused_stream.code(), Some(ErrorCode::DeviceRemoved));

    // A network error for a request made with the token.
    let unreachable = ApiClient::new(
        format!("http://127.0.0.1:{}", closed_port())
            .parse()
            .unwrap(),
    )
    .unwrap()
    .with_token(login.access_token.clone());
    let network = unreachable.key_count().await.unwrap_err();

    for error in [&refused, &refused_stream, &network] {
        let mut shown = format!("{error} {error:?}");
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            shown.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert!(!shown.contains(&token), "{shown}");
        assert!(!shown.contains(&token["cdt_".len()..]), "{shown}");
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn the_stream_sends_the_backlog_then_caught_up_then_live_items(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    let bob_id = server.create_account("bob").await;
    let alice = server.new_published_device("alice").await;
    let bob = server.new_published_device("bob").await;

    let waiting = send(&alice, "m1", bob_id, &[&bob]).await;
    let mut stream = bob.connect(None).await;
    let first = next_envelope(&mut stream).await;
    assert_eq!(first.message_id, waiting.message_id);
    assert_eq!(
        (first.sender_user_id, first.sender_device_id),
        (alice.user_id, alice.device_id)
    );
    assert_eq!(first.protocol_version, 2);
    assert_eq!(caught_up(&mut stream).await, first.seq);

    let live = send(&alice, "m2", bob_id, &[&bob]).await;
    let second = next_envelope(&mut stream).await;
    assert_eq!(second.message_id, live.message_id);
    assert!(second.seq > first.seq);

    stream.ack_up_to(second.seq).await.unwrap();
    eventually("the acknowledgement to be written", || async {
        bob.client.inbox(0, None).await.unwrap().items.is_empty()
    })
    .await;
    stream.close().await;

    // Resuming after what was stored sends nothing old.
    let mut resumed = bob.connect(Some(second.seq)).await;
    assert_eq!(caught_up(&mut resumed).await, second.seq);
    let later = send(&alice, "m3", bob_id, &[&bob]).await;
    let third = next_envelope(&mut resumed).await;
    assert_eq!(third.message_id, later.message_id);
    assert!(third.seq > second.seq);
    resumed.close().await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn ack_each_acknowledges_only_the_listed_items(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    let bob_id = server.create_account("bob").await;
    let alice = server.new_published_device("alice").await;
    let bob = server.new_published_device("bob").await;
    for id in ["m1", "m2", "m3"] {
        send(&alice, id, bob_id, &[&bob]).await;
    }

    let mut stream = bob.connect(None).await;
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(next_envelope(&mut stream).await.seq);
    }
    assert_eq!(caught_up(&mut stream).await, seqs[2]);
    stream.ack_each(&[seqs[0], seqs[2]]).await.unwrap();
    eventually("the acknowledgements to be written", || async {
        let page = bob.client.inbox(0, None).await.unwrap();
        page.items.iter().map(StreamItem::seq).collect::<Vec<_>>() == vec![seqs[1]]
    })
    .await;
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_second_connection_of_the_device_replaces_the_first(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    let bob_id = server.create_account("bob").await;
    let alice = server.new_published_device("alice").await;
    let bob = server.new_published_device("bob").await;

    let mut first = bob.connect(None).await;
    caught_up(&mut first).await;
    let mut second = bob.connect(None).await;
    caught_up(&mut second).await;

    let error = next(&mut first).await.unwrap_err();
    assert_eq!(
        error.stream_closed(),
        Some(StreamClosed::Replaced),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(!StreamClosed::Replaced.should_reconnect());
    assert_eq!(first.closed(), Some(StreamClosed::Replaced));
    // Later calls give the same answer instead of touching the socket.
    assert_eq!(
        first.next_frame().await.unwrap_err().stream_closed(),
        Some(StreamClosed::Replaced)
    );
    assert_eq!(
        first.ack_up_to(1).await.unwrap_err().stream_closed(),
        Some(StreamClosed::Replaced)
    );

    // The newer connection has the stream.
    let sent = send(&alice, "m1", bob_id, &[&bob]).await;
    assert_eq!(next_envelope(&mut second).await.message_id, sent.message_id);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn removing_a_device_closes_its_stream_for_good(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("bob").await;
    let phone = server.new_published_device("bob").await;
    let laptop = server.new_published_device("bob").await;

    let mut stream = laptop.connect(None).await;
    caught_up(&mut stream).await;
    phone.client.remove_device(laptop.device_id).await.unwrap();

    let error = next(&mut stream).await.unwrap_err();
    assert_eq!(
        error.stream_closed(),
        Some(StreamClosed::DeviceRemoved),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    let refused = laptop.client.open_stream(None).await.unwrap_err();
    assert!(
        matches!(
            refused,
            TransportError::Api {
                status: 401,
                code: ErrorCode::DeviceRemoved,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(!refused.is_retryable());
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn the_inbox_pages_serves_single_envelopes_and_acknowledges(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    let bob_id = server.create_account("bob").await;
    let alice = server.new_published_device("alice").await;
    let bob = server.new_published_device("bob").await;
    let m1 = send(&alice, "m1", bob_id, &[&bob]).await;
    let m2 = send(&alice, "m2", bob_id, &[&bob]).await;

    let page = bob.client.inbox(0, Some(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.has_more);
    let rest = bob.client.inbox(page.next_cursor, None).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(!rest.has_more);
    let StreamItem::Envelope(second) = &rest.items[0] else {
        panic!("expected an envelope");
    };
    assert_eq!(second.message_id, m2.message_id);

    let envelope = bob.client.get_envelope(m1.message_id).await.unwrap();
    assert_eq!(envelope.seq, page.items[0].seq());
    bob.client.mark_delivered(m1.message_id).await.unwrap();
    bob.client.mark_delivered(m1.message_id).await.unwrap();
    let gone = bob.client.get_envelope(m1.message_id).await.unwrap_err();
    assert!(
        matches!(
            gone,
            TransportError::Api {
                status: 410,
                code: ErrorCode::EnvelopeDelivered,
                ..
            }
        ),
        "{gone:?}"
    );
    let unknown = bob
        .client
        .get_envelope(uuid::Uuid::now_v7())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::MessageNotFound));

    assert_eq!(bob.client.ack_inbox(second.seq).await.unwrap().delivered, 1);
    assert!(bob.client.inbox(0, None).await.unwrap().items.is_empty());
}

/// `https` and `wss` URLs open TLS: a listener sees a TLS handshake record (0x16, then
/// version 3.x) as the first bytes, and the client reports a network error.
#[tokio::test]
async fn https_and_wss_urls_speak_tls() {
    async fn first_bytes_seen(listener: &tokio::net::TcpListener) -> [u8; 2] {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut bytes = [0u8; 2];
        socket.read_exact(&mut bytes).await.unwrap();
        bytes
        // Dropping the socket fails the handshake.
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url: Url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    )
    .parse()
    .unwrap();
    let token = AccessToken::new("cdt_tls-test");
    let client = ApiClient::new(base_url.clone())
        .unwrap()
        .with_token(token.clone());

    let (seen, answer) = tokio::join!(first_bytes_seen(&listener), client.key_count());
    assert_eq!(seen, [0x16, 0x03], "a TLS handshake record");
    let error = answer.unwrap_err();
    assert!(matches!(error, TransportError::Network { .. }), "{error:?}");
    assert!(error.is_retryable());

    let (seen, answer) = tokio::join!(
        first_bytes_seen(&listener),
        StreamConnection::connect(&base_url, &token, None)
    );
    assert_eq!(seen, [0x16, 0x03], "a TLS handshake record");
    let error = answer.unwrap_err();
    assert!(matches!(error, TransportError::Network { .. }), "{error:?}");
}

#[test]
fn backoff_delays_never_exceed_the_cap() {
    let policy = BackoffPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(30),
        stable_after: Duration::from_secs(30),
    };
    for seed in 0..20 {
        let mut backoff = Backoff::with_rng(policy, StdRng::seed_from_u64(seed));
        for _ in 0..100 {
            let ceiling = backoff.ceiling();
            assert!(ceiling <= policy.max);
            let delay = backoff.next_delay();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
        }
    }
}

#[test]
fn backoff_delays_grow_until_the_cap() {
    let policy = BackoffPolicy::default();
    let mut backoff = Backoff::with_rng(policy, StdRng::seed_from_u64(1));
    let mut ceilings = Vec::new();
    for _ in 0..10 {
        ceilings.push(backoff.ceiling());
        backoff.next_delay();
    }
    let millis: Vec<u128> = ceilings.iter().map(Duration::as_millis).collect();
    assert_eq!(
        millis,
        vec![250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );

    // With full jitter single delays vary; their average doubles with the ceiling.
    let attempts = 8;
    let samples = 400u32;
    let mut averages = vec![Duration::ZERO; attempts];
    for seed in 0..u64::from(samples) {
        let mut backoff = Backoff::with_rng(policy, StdRng::seed_from_u64(seed));
        for average in &mut averages {
            *average += backoff.next_delay() / samples;
        }
    }
    for pair in averages.windows(2) {
        assert!(pair[1] > pair[0], "{averages:?}");
    }
    assert!(averages[0] < policy.initial);
    assert!(averages[attempts - 1] > policy.max / 3, "{averages:?}");
}

#[test]
fn backoff_resets_after_a_stable_connection() {
    let policy = BackoffPolicy::default();
    let mut backoff = Backoff::with_rng(policy, StdRng::seed_from_u64(2));
    for _ in 0..6 {
        backoff.next_delay();
    }
    assert!(backoff.ceiling() > policy.initial);

    // A connection that dropped at once keeps backing off.
    backoff.connection_ended(Duration::from_secs(1));
    assert_eq!(backoff.failures(), 6);

    // One that stayed up starts over.
    backoff.connection_ended(policy.stable_after);
    assert_eq!(backoff.ceiling(), policy.initial);
    assert!(backoff.next_delay() <= policy.initial);

    backoff.next_delay();
    backoff.reset();
    assert_eq!(backoff.failures(), 0);
    assert_eq!(backoff.ceiling(), policy.initial);
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_rate_limited_call_says_how_long_to_wait(pool: PgPool) {
    use courier_server::rate_limits::{Rate, RateLimitSettings};
    let settings = Settings {
        rate_limits: RateLimitSettings {
            login_per_account: Rate::per_hour(2, 2),
            sockets_per_device: Rate::per_hour(1, 1),
            ..RateLimitSettings::default()
        },
        ..Settings::default()
    };
    let server = TestServer::start_with(pool, settings).await;
    server.create_account("alice").await;
    let device = server.new_device("alice").await;
    server.try_login("alice").await.unwrap();

    // Over the login limit: 429 rate_limited, retryable, with the server's Retry-After.
    let refused = server.try_login("alice").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused:?}");
    assert_eq!(refused.status(), Some(429));
    assert!(refused.is_retryable());
    let wait = refused.retry_after().expect("a Retry-After");
    assert!(wait >= Duration::from_secs(1), "{wait:?}");

    // A refused socket upgrade carries it too.
    let first = device.client.open_stream(None).await.unwrap();
    drop(first);
    let refused = device.client.open_stream(None).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused:?}");
    assert!(
        refused
            .retry_after()
            .is_some_and(|wait| wait >= Duration::from_secs(1))
    );

    // Other errors have none.
    let wrong = server
        .client()
        .with_token(AccessToken::new("cdt_not-a-token-the-server-issued"));
    assert_eq!(wrong.key_count().await.unwrap_err().retry_after(), None);
}
