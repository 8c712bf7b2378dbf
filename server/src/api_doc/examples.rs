//! An example of every operation's request body and success response, for generators and
//! readers: values as the server reads and answers them (`server/tests/openapi.rs`
//! validates each against its schema).

use courier_protocol::keys::encode_base64;
use serde_json::{Value, json};

const ALICE: &str = "0190b3a4-9a5e-7c1d-8f3e-2b4c6d8e0f12";
const BOB: &str = "0190b3a5-1c2d-7e3f-9a4b-5c6d7e8f9a0b";
const CHANNEL: &str = "0190b3b0-4d5e-7f60-8a1b-2c3d4e5f6a7b";
const MESSAGE: &str = "0190b3c2-7a8b-7c9d-8e0f-1a2b3c4d5e6f";
const SESSION: &str = "Pz0JS1i2c5PyM3aUoYJ2K3bNcqzNBnTzyfTuqAfu6bI";
const AT: &str = "2026-12-02T18:03:10Z";

fn key(byte: u8) -> String {
    encode_base64(&[byte; 32])
}

fn signature(byte: u8) -> String {
    encode_base64(&[byte; 64])
}

fn ciphertext(byte: u8) -> String {
    encode_base64(&[byte; 48])
}

fn identity_keys() -> Value {
    json!({ "curve25519": key(1), "ed25519": key(2), "signature": signature(3) })
}

fn signed_key(id: &str) -> Value {
    json!({ "keyId": id, "key": key(4), "signature": signature(5) })
}

fn channel() -> Value {
    json!({
        "channelId": CHANNEL,
        "createdBy": ALICE,
        "members": [ALICE, BOB],
        "devices": [
            { "userId": ALICE, "deviceId": 1 },
            { "userId": ALICE, "deviceId": 2 },
            { "userId": BOB, "deviceId": 1 },
        ],
    })
}

fn sent() -> Value {
    json!({ "messageId": MESSAGE, "serverTimestamp": AT, "envelopeCount": 2 })
}

fn key_count() -> Value {
    json!({ "oneTimeKeyCount": 100, "fallbackKeyId": "f1" })
}

fn envelope() -> Value {
    json!({
        "seq": 7,
        "messageId": MESSAGE,
        "clientMessageId": "6f1c2e1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
        "senderUserId": ALICE,
        "senderDeviceId": 1,
        "protocolVersion": 2,
        "envelopeType": "preKey",
        "ciphertext": ciphertext(6),
        "serverTimestamp": AT,
    })
}

fn privacy() -> Value {
    json!({ "sendReadReceipts": false, "showReadReceipts": true })
}

/// The example request body of an operation (by its ID), if it takes one.
pub(super) fn request(operation: &str) -> Option<Value> {
    Some(match operation {
        "create_account" => json!({
            "username": "alice",
            "password": "correct horse battery",
            "registrationToken": "crt_q3xPRNb3dXy1hT2mB6vC0w7kZfL9sEaJ4uYgHnVtKoM",
        }),
        "delete_account" => json!({ "password": "correct horse battery" }),
        "login" => json!({
            "username": "alice",
            "password": "correct horse battery",
            "deviceId": 0,
            "deviceName": "Alice's phone",
        }),
        "publish_identity_keys" => identity_keys(),
        "upload_one_time_keys" => {
            json!({ "oneTimeKeys": [signed_key("AAAAAQ"), signed_key("AAAAAg")] })
        }
        "set_fallback_key" => signed_key("f1"),
        "claim_keys" => json!({ "devices": [{ "userId": BOB, "deviceId": 1 }] }),
        "send_message" => json!({
            "protocolVersion": 2,
            "clientMessageId": "6f1c2e1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
            "recipientUserId": BOB,
            "deviceEnvelopes": [
                { "userId": BOB, "deviceId": 1, "envelopeType": "preKey", "ciphertext": ciphertext(7) },
                { "userId": ALICE, "deviceId": 2, "envelopeType": "normal", "ciphertext": ciphertext(8) },
            ],
        }),
        "ack_inbox" => json!({ "upTo": 7 }),
        "mark_read" => json!({ "messageId": MESSAGE, "upTo": true }),
        "update_privacy" => json!({ "sendReadReceipts": false }),
        "create_channel" => json!({ "members": [BOB] }),
        "add_members" => json!({ "userIds": [BOB] }),
        "upload_sender_keys" => json!({
            "sessionId": SESSION,
            "distributions": [
                { "userId": BOB, "deviceId": 1, "envelopeType": "preKey", "ciphertext": ciphertext(9) },
            ],
        }),
        "send_group_message" => json!({
            "clientMessageId": "3d9e0f1a-2b3c-4d5e-8f6a-7b8c9d0e1f2a",
            "sessionId": SESSION,
            "ciphertext": ciphertext(10),
        }),
        _ => return None,
    })
}

/// The example body of an operation's success answer with `status`, if it has one.
pub(super) fn response(operation: &str, status: u16) -> Option<Value> {
    Some(match (operation, status) {
        ("healthz" | "readyz", _) => json!({ "status": "ok" }),
        ("create_account", _) => json!({ "userId": ALICE, "username": "alice" }),
        ("login", _) => json!({
            "userId": ALICE,
            "deviceId": 2,
            "accessToken": "cdt_3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        }),
        ("list_devices", _) => json!({
            "devices": [
                {
                    "deviceId": 1,
                    "deviceName": "Alice's laptop",
                    "createdAt": "2026-11-30T09:12:44Z",
                    "lastSeenAt": AT,
                    "hasIdentityKeys": true,
                },
                {
                    "deviceId": 2,
                    "deviceName": "Alice's phone",
                    "createdAt": "2026-12-01T07:40:02Z",
                    "lastSeenAt": AT,
                    "hasIdentityKeys": false,
                },
            ],
            "deviceLimit": 5,
        }),
        ("publish_identity_keys", _) => json!({ "deviceId": 2, "identityKeys": identity_keys() }),
        ("upload_one_time_keys" | "set_fallback_key" | "key_count", _) => key_count(),
        ("user_devices", _) => json!({
            "userId": BOB,
            "devices": [{ "deviceId": 1, "identityKeys": identity_keys() }],
        }),
        ("claim_keys", _) => json!({
            "keys": [{
                "userId": BOB,
                "deviceId": 1,
                "keyId": "AAAAAQ",
                "key": key(4),
                "signature": signature(5),
                "fallback": false,
            }],
            "unavailable": [{ "userId": BOB, "deviceId": 3 }],
        }),
        ("send_message" | "send_group_message", _) => sent(),
        ("get_envelope", _) => envelope(),
        ("list_inbox", _) => {
            let mut item = envelope();
            item["type"] = json!("envelope");
            json!({ "items": [item], "nextCursor": 7, "hasMore": false })
        }
        ("ack_inbox", _) => json!({ "delivered": 1 }),
        ("mark_read", _) => json!({
            "conversation": { "kind": "direct", "userId": ALICE },
            "changed": true,
        }),
        ("delivery_state", _) => json!({
            "messageId": MESSAGE,
            "state": "delivered",
            "devices": [
                { "userId": BOB, "deviceId": 1, "deliveredAt": AT },
                { "userId": BOB, "deviceId": 3 },
            ],
            "reads": [],
        }),
        ("get_privacy" | "update_privacy", _) => privacy(),
        ("create_channel" | "get_channel" | "add_members", _) => channel(),
        ("list_channels", _) => json!([channel()]),
        ("upload_sender_keys", _) => json!({ "stored": 1 }),
        _ => return None,
    })
}
