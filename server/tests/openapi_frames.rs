//! The WebSocket's frames are in the document (`ServerFrame`, `ClientFrame`,
//! `WebSocketCloseCode`, named by the socket route's `x-websocket`), and they are the ones
//! a real socket carries: real traffic (envelopes V1 and V2, a channel's membership,
//! sender key and group message, delivered and read receipts, `caughtUp`, an error frame
//! for a bad client frame, a close) is read off real sockets and every frame received,
//! and every client frame sent, is validated against those components.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/schema.rs"]
mod schema;

use std::collections::BTreeSet;

use common::{RawFrame, Socket, TestDevice, TestServer};
use courier_protocol::api::stream::close_code;
use courier_protocol::keys::encode_base64;
use courier_server::MIGRATOR;
use courier_server::Settings;
use courier_server::rate_limits::RateLimitSettings;
use reqwest::{Method, StatusCode};
use schema::Schemas;
use serde_json::{Value, json};
use sqlx::PgPool;

const SERVER_FRAME: &str = "/components/schemas/ServerFrame";
const CLIENT_FRAME: &str = "/components/schemas/ClientFrame";
const CLOSE_CODE: &str = "/components/schemas/WebSocketCloseCode";
const SESSION: &str = "Pz0JS1i2c5PyM3aUoYJ2K3bNcqzNBnTzyfTuqAfu6bI";

/// Reads and checks frames of one socket against the document.
struct Frames<'a> {
    schemas: &'a Schemas,
    /// Every frame `type` received.
    seen: BTreeSet<String>,
}

impl Frames<'_> {
    /// The next frame, validated against `ServerFrame` (a close fails the test).
    async fn next(&mut self, socket: &mut Socket) -> Value {
        match socket.next_raw().await {
            RawFrame::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                self.schemas
                    .assert_valid(SERVER_FRAME, &frame, "a server frame");
                self.seen.insert(frame["type"].as_str().unwrap().to_owned());
                frame
            }
            RawFrame::Closed(code) => panic!("the socket closed ({code:?})"),
        }
    }

    /// Frames until one of `kind`, returning it.
    async fn until(&mut self, socket: &mut Socket, kind: &str) -> Value {
        loop {
            let frame = self.next(socket).await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Sends a client frame the document allows.
    async fn send(&self, socket: &mut Socket, frame: Value) {
        self.schemas
            .assert_valid(CLIENT_FRAME, &frame, "a client frame");
        socket.send_text(&frame.to_string()).await;
    }
}

fn envelope(device: &TestDevice, byte: u8) -> Value {
    json!({
        "userId": device.user_id,
        "deviceId": device.device_id,
        "envelopeType": "preKey",
        "ciphertext": encode_base64(&[byte; 40]),
    })
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_frame_on_a_real_socket_is_a_documented_one(pool: PgPool) {
    let server = TestServer::start_with(
        pool,
        Settings {
            rate_limits: RateLimitSettings::off(),
            ..Settings::default()
        },
    )
    .await;
    let (_, document) = server.call(Method::GET, "/openapi.json", None, None).await;
    let socket_route = &document["paths"]["/v1/ws"]["get"]["x-websocket"];
    assert_eq!(
        socket_route["serverFrame"]["$ref"],
        format!("#{SERVER_FRAME}")
    );
    assert_eq!(
        socket_route["clientFrame"]["$ref"],
        format!("#{CLIENT_FRAME}")
    );
    assert_eq!(socket_route["closeCode"]["$ref"], format!("#{CLOSE_CODE}"));
    let schemas = Schemas::new(document);
    let mut frames = Frames {
        schemas: &schemas,
        seen: BTreeSet::new(),
    };

    server.create_account("alice").await;
    let bob_id = server.create_account("bob").await.user_id;
    let alice = server.new_published_device("alice").await;
    let alice2 = server.new_published_device("alice").await;
    let bob = server.new_published_device("bob").await;

    // Alice's socket first: her receipts arrive live.
    let mut alice_socket = server.connect(&alice.token, None).await;
    frames.until(&mut alice_socket, "caughtUp").await;

    // Direct messages, V2 and V1.
    let (status, sent) = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&alice.token),
            Some(json!({
                "protocolVersion": 2,
                "clientMessageId": "m1",
                "recipientUserId": bob_id,
                "deviceEnvelopes": [envelope(&bob, 1), envelope(&alice2, 2)],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&alice.token),
            Some(json!({
                "protocolVersion": 1,
                "clientMessageId": "m2",
                "recipientUserId": bob_id,
                "encryptedEnvelope": encode_base64(&[3u8; 40]),
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A channel: its membership, a sender key, a group message.
    let (status, channel) = server
        .call(
            Method::POST,
            "/v1/channels",
            Some(&alice.token),
            Some(json!({ "members": [bob_id] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let channel_id = channel["channelId"].as_str().unwrap();
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/v1/channels/{channel_id}/sender-keys"),
            Some(&alice.token),
            Some(json!({
                "sessionId": SESSION,
                "distributions": [envelope(&bob, 4), envelope(&alice2, 5)],
            })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/v1/channels/{channel_id}/messages"),
            Some(&alice.token),
            Some(json!({
                "clientMessageId": "g1",
                "sessionId": SESSION,
                "ciphertext": encode_base64(&[6u8; 40]),
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Bob's backlog, then his acknowledgements: cumulative and per item.
    let mut bob_socket = server.connect(&bob.token, None).await;
    let mut backlog = Vec::new();
    loop {
        let frame = frames.next(&mut bob_socket).await;
        if frame["type"] == "caughtUp" {
            break;
        }
        backlog.push(frame);
    }
    let kinds: BTreeSet<&str> = backlog
        .iter()
        .map(|frame| frame["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["envelope", "groupMessage", "membership", "senderKey"]),
        "{backlog:#?}"
    );
    let versions: BTreeSet<u64> = backlog
        .iter()
        .filter(|frame| frame["type"] == "envelope")
        .map(|frame| frame["protocolVersion"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, BTreeSet::from([1, 2]));
    let seqs: Vec<u64> = backlog
        .iter()
        .map(|frame| frame["seq"].as_u64().unwrap())
        .collect();
    frames
        .send(&mut bob_socket, json!({ "type": "ack", "seqs": seqs[..1] }))
        .await;
    frames
        .send(
            &mut bob_socket,
            json!({ "type": "ack", "upTo": seqs.last().unwrap() }),
        )
        .await;

    // Frames the server cannot use: each is outside ClientFrame and answered with an
    // error frame; the socket stays open.
    for bad in [
        json!({ "type": "ack", "upTo": -1 }),
        json!({ "type": "subscribe" }),
    ] {
        schemas.assert_invalid(CLIENT_FRAME, &bad, "a bad client frame");
        bob_socket.send_text(&bad.to_string()).await;
        let error = frames.until(&mut bob_socket, "error").await;
        assert_eq!(error["code"], "invalid_frame", "{error}");
    }

    // Bob reads the V2 message: Alice's devices get a read receipt; his acknowledgement
    // got them a delivered one.
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/receipts/read",
            Some(&bob.token),
            Some(json!({ "messageId": sent["messageId"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut receipts = BTreeSet::new();
    while receipts.len() < 2 {
        let frame = frames.next(&mut alice_socket).await;
        let kind = frame["type"].as_str().unwrap().to_owned();
        if kind == "delivered" || kind == "read" {
            receipts.insert(kind);
        }
        if let Some(seq) = frame["seq"].as_u64() {
            frames
                .send(&mut alice_socket, json!({ "type": "ack", "upTo": seq }))
                .await;
        }
    }

    // A newer socket of Bob's device replaces the first: its close code is documented.
    let mut newer = server.connect(&bob.token, None).await;
    let code = loop {
        match bob_socket.next_raw().await {
            RawFrame::Text(text) => {
                schemas.assert_valid(
                    SERVER_FRAME,
                    &serde_json::from_str(&text).unwrap(),
                    "a server frame",
                );
            }
            RawFrame::Closed(code) => break code.expect("a close code"),
        }
    };
    assert_eq!(code, close_code::REPLACED);
    schemas.assert_valid(CLOSE_CODE, &json!(code), "the close code");
    schemas.assert_invalid(CLOSE_CODE, &json!(4999), "an unknown close code");
    frames.until(&mut newer, "caughtUp").await;

    assert_eq!(
        frames.seen,
        [
            "caughtUp",
            "delivered",
            "envelope",
            "error",
            "groupMessage",
            "membership",
            "read",
            "senderKey"
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
    );
    newer.close().await;
    alice_socket.close().await;
}
