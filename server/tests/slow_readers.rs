//! Readers that are slow or stop reading: what the server holds for them is bounded in
//! bytes, and a stalled device socket is closed with `4004` in a close frame the device
//! reads once it reads again (not dropped under it as `1006`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Received, TestDevice, TestServer, v2_body};
use courier_protocol::api::stream::{InboxPage, close_code};
use courier_server::{MIGRATOR, Settings};
use reqwest::{Method, StatusCode};
use sqlx::PgPool;

/// Text of about 48 KiB, so each envelope is about 64 KiB of base64 on the wire.
fn large_text(i: usize) -> String {
    format!("{i}:{}", "x".repeat(48 * 1024))
}

async fn send_large(server: &TestServer, alice: &TestDevice, bob: &TestDevice, count: usize) {
    for i in 0..count {
        let body = v2_body(
            &format!("large-{i}"),
            bob.user_id,
            &[(bob.user_id, bob.device_id)],
            &large_text(i),
        );
        let (status, json) = server
            .call(Method::POST, "/v1/messages", Some(&alice.token), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
    }
}

/// Waits (at most 20 s, a bound, not a timing assertion) until the server reports no open
/// device socket: it has given up on the one that stopped reading.
async fn wait_until_no_socket_is_open(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = server
            .http
            .get(server.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics
            .lines()
            .any(|line| line == "courier_websocket_connections 0")
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled socket was not closed within the bound"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_device_that_stops_reading_is_closed_with_4004_it_can_read(pool: PgPool) {
    let server = TestServer::start_with(
        pool,
        Settings {
            ws_send_timeout: Duration::from_secs(1),
            ..Settings::default()
        },
    )
    .await;
    server.create_account("alice").await;
    server.create_account("bob").await;
    let alice = server.new_published_device("alice").await;
    let bob = server.new_published_device("bob").await;
    let mut socket = server.connect(&bob.token, None).await;
    let (backlog, _) = socket.backlog().await;
    assert!(backlog.is_empty());

    // Bob stops reading while far more than any socket buffer arrives for him (about
    // 5 MiB): the server's writes stall, and after the send timeout it gives up.
    send_large(&server, &alice, &bob, 80).await;
    wait_until_no_socket_is_open(&server).await;

    // Reading again, Bob gets whole frames in order, then the close frame saying why.
    let mut next_text = 0;
    let code = loop {
        match socket.next().await {
            Received::Envelope(envelope) => {
                let text = common::envelope_text(&envelope);
                let expected =
                    common::envelope_plaintext(bob.user_id, bob.device_id, &large_text(next_text));
                assert!(
                    text == expected,
                    "envelope {next_text} arrived whole and in order"
                );
                next_text += 1;
            }
            Received::Closed(code) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        code,
        Some(close_code::TOO_SLOW),
        "after {next_text} envelopes"
    );
    assert!(
        next_text < 80,
        "the socket was cut off before everything was sent"
    );

    // Nothing is lost: a new socket gets the rest.
    let mut socket = server.connect(&bob.token, None).await;
    let (rest, _) = socket.backlog().await;
    assert_eq!(
        rest.len(),
        80,
        "unacknowledged envelopes are all sent again"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_inbox_page_of_large_envelopes_is_bounded_in_bytes(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    server.create_account("bob").await;
    let alice = server.new_published_device("alice").await;
    let bob = server.new_published_device("bob").await;
    send_large(&server, &alice, &bob, 40).await;

    // 40 envelopes of 48 KiB (about 2 MiB) fit the item limit but not the byte budget:
    // pages end early with `hasMore`, and following the cursor gets every one in order.
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, json) = server
            .call(
                Method::GET,
                &format!("/v1/inbox?after={after}&limit=1000"),
                Some(&bob.token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let page: InboxPage = serde_json::from_value(json).unwrap();
        pages += 1;
        assert!(
            page.items.len() <= 22,
            "a page holds at most about 1 MiB of ciphertext, not {} envelopes",
            page.items.len()
        );
        seen.extend(
            page.items
                .iter()
                .map(courier_protocol::api::stream::StreamItem::seq),
        );
        after = page.next_cursor;
        if !page.has_more {
            break;
        }
        assert!(!page.items.is_empty());
    }
    assert_eq!(seen.len(), 40);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert!(pages >= 2);
}
