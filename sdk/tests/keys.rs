//! One-time keys top up while a device stays connected: claims that take them low make
//! the server send a `oneTimeKeysLow` item, and the SDK uploads more on it (the top-ups
//! at login and at `caughtUp` come only once per connection).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Party, TestDevice, TestServer};
use courier_protocol::api::keys::ClaimKeysRequest;
use courier_protocol::api::stream::StreamItem;
use courier_sdk::client::Client;
use courier_sdk::crypto::machine::ONE_TIME_KEY_TARGET;
use courier_server::Settings;
use courier_server::rate_limits::RateLimitSettings;
use sqlx::PgPool;

/// The longest wait for the device to top up: generous, a bound on a machine under load,
/// not an assertion on speed.
const TOP_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The SDK tops up when fewer than this many remain; at or above it, it is back up.
const TOPPED_UP: u32 = ONE_TIME_KEY_TARGET / 2;

async fn server(pool: PgPool) -> TestServer {
    // Past the per-target claim rate limit the server hands out the fallback key first;
    // these tests drain one-time keys, so without limits.
    TestServer::start_with(
        pool,
        Settings {
            rate_limits: RateLimitSettings::off(),
            ..Settings::default()
        },
    )
    .await
}

/// The device's unclaimed one-time keys, as the server counts them (`GET /v1/keys/count`
/// with the device's own token).
async fn server_count(client: &Client) -> u32 {
    client.api().key_count().await.unwrap().one_time_key_count
}

/// Claims, as another user over HTTP, as many one-time keys of `target` as the server
/// holds for it now, one claim each.
async fn claim_all(claimer: &TestDevice, target: &Client) {
    let request = ClaimKeysRequest {
        devices: vec![target.own_device()],
    };
    for _ in 0..server_count(target).await {
        claimer.client.claim_keys(&request).await.unwrap();
    }
}

/// Polls the server's count until the device has topped up.
async fn until_topped_up(client: &Client, what: &str) {
    let deadline = tokio::time::Instant::now() + TOP_UP_TIMEOUT;
    loop {
        let count = server_count(client).await;
        if count >= TOPPED_UP {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the device did not top up its one-time keys (the server has {count})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the device's stream still holds an unacknowledged `oneTimeKeysLow` item.
async fn notice_pending(client: &Client) -> bool {
    client
        .api()
        .inbox(0, None)
        .await
        .unwrap()
        .items
        .iter()
        .any(|item| matches!(item, StreamItem::OneTimeKeysLow { .. }))
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_connected_device_tops_up_its_one_time_keys_without_reconnecting(pool: PgPool) {
    let server = server(pool).await;
    let dana = Party::register(&server, "dana", 1).await;
    let device = &dana.clients[0];
    server.create_account("eve").await;
    let eve = server.new_published_device("eve").await;
    assert_eq!(server_count(device).await, ONE_TIME_KEY_TARGET);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = device.run(async {
        let _ = stopped.await;
    });
    let draining = async {
        // The first drain may meet the connection's own top-up at `caughtUp` (it runs
        // once, whenever the socket opens); once the keys are back, that top-up is
        // behind us, and only the stream's notice can bring them back a second time.
        claim_all(&eve, device).await;
        until_topped_up(device, "the first drain").await;
        claim_all(&eve, device).await;
        until_topped_up(device, "the second drain, on the same connection").await;
        common::eventually("the notices acknowledged", || async {
            !notice_pending(device).await
        })
        .await;
        let _ = stop.send(());
    };
    let (ran, ()) = tokio::join!(running, draining);
    ran.unwrap();
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_device_reading_the_inbox_over_rest_tops_up_on_the_notice(pool: PgPool) {
    let server = server(pool).await;
    let dana = Party::register(&server, "dana", 1).await;
    let device = &dana.clients[0];
    server.create_account("eve").await;
    let eve = server.new_published_device("eve").await;

    claim_all(&eve, device).await;
    assert_eq!(server_count(device).await, 0);
    assert!(notice_pending(device).await);

    // Nothing but the inbox read: no login, no socket, no `caughtUp`.
    device.sync_over_rest().await.unwrap();
    assert!(server_count(device).await >= TOPPED_UP);
    assert!(!notice_pending(device).await, "the notice is acknowledged");
}
