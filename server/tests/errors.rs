//! Bad input: every case answers its status and stable code in the one error shape, and
//! nothing a client sends produces a 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{PASSWORD, Received, TestServer, TestUser, assert_error, read, v2_body};
use courier_protocol::keys::encode_base64;
use courier_server::{MIGRATOR, Settings};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

/// How a case's request is built.
enum Body {
    None,
    /// Sent as JSON with `Content-Type: application/json`.
    Json(&'static str),
    /// Sent raw with the given content type.
    Raw(&'static str, &'static str),
    /// A JSON body of this many bytes.
    Large(usize),
}

/// Whose token a case sends.
#[derive(Clone, Copy)]
enum Token {
    None,
    Valid,
    Removed,
    Unknown,
    Garbage,
    NotBearer,
}

/// A `&'static str` for a case body built at run time.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    token: Token,
    body: Body,
    status: StatusCode,
    code: &'static str,
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn bad_inputs_get_their_status_and_code(pool: PgPool) {
    let server = TestServer::start_with(
        pool,
        Settings {
            max_body_bytes: 64 * 1024,
            ..Settings::default()
        },
    )
    .await;
    server.create_account("alice").await;
    let device = server.new_published_device("alice").await;
    let removed = server.new_device("alice").await;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/devices/{}", removed.device_id),
            Some(&device.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let user = device.user_id;
    let key32 = encode_base64(&[7; 32]);
    let sig64 = encode_base64(&[7; 64]);
    let identity_wrong_len = Box::leak(
        format!(
            r#"{{"curve25519":"{}","ed25519":"{key32}","signature":"{sig64}"}}"#,
            encode_base64(&[1; 16])
        )
        .into_boxed_str(),
    );
    let identity_bad_b64 = Box::leak(
        format!(r#"{{"curve25519":"%%%","ed25519":"{key32}","signature":"{sig64}"}}"#)
            .into_boxed_str(),
    );
    // The encoding of the identity point: a small-order (weak) key that would verify anything.
    let mut weak_key = [0u8; 32];
    weak_key[0] = 1;
    let identity_bad_point = Box::leak(
        format!(
            r#"{{"curve25519":"{key32}","ed25519":"{}","signature":"{sig64}"}}"#,
            encode_base64(&weak_key)
        )
        .into_boxed_str(),
    );
    let many_devices = Box::leak(
        format!(
            r#"{{"devices":[{}]}}"#,
            vec![format!(r#"{{"userId":"{user}","deviceId":1}}"#); 1001].join(",")
        )
        .into_boxed_str(),
    );

    let channel = uuid::Uuid::nil();
    let send_with = |field: &str| {
        leak(format!(
            r#"{{"clientMessageId": "p1", "recipientUserId": "{user}", "deviceEnvelopes": [], {field}}}"#
        ))
    };
    let login_with = |device_id: &str| {
        leak(format!(
            r#"{{"username": "alice", "password": "{PASSWORD}", "deviceId": {device_id}}}"#
        ))
    };

    let cases = vec![
        // Device 0 names no device: only login reads it (as "assign me one").
        Case {
            name: "a send naming device 0",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(
                r#"{{"clientMessageId": "z1", "recipientUserId": "{user}", "deviceEnvelopes": [{{"userId": "{user}", "deviceId": 0, "envelopeType": "preKey", "ciphertext": "{key32}"}}]}}"#
            ))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "a claim naming device 0",
            method: Method::POST,
            path: "/v1/keys/claim".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(
                r#"{{"devices": [{{"userId": "{user}", "deviceId": 0}}]}}"#
            ))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "removing device 0",
            method: Method::DELETE,
            path: "/v1/devices/0".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_path_parameter",
        },
        Case {
            name: "malformed JSON",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::Json("{\"username\": "),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
        },
        Case {
            name: "wrong type",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::Json(r#"{"username": 5, "password": "xxxxxxxxxx"}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "missing field",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(r#"{"username": "alice", "password": "xxxxxxxxxx"}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "negative device ID",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(r#"{"username": "alice", "password": "xxxxxxxxxx", "deviceId": -1}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "device ID past i32",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(
                r#"{"username": "alice", "password": "xxxxxxxxxx", "deviceId": 3000000000}"#,
            ),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "replace with an existing device ID",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(
                r#"{"username": "alice", "password": "correct horse battery", "deviceId": 1, "replaceDeviceId": 2}"#,
            ),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "control character in device name",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(
                r#"{"username": "alice", "password": "correct horse battery", "deviceId": 0, "deviceName": "a\u0007b"}"#,
            ),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_device_name",
        },
        Case {
            name: "JSON array instead of object",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::Json("[]"),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "not JSON content type",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::Raw("text/plain", r#"{"username":"x","password":"y"}"#),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
        },
        Case {
            name: "no body where one is needed",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::None,
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
        },
        Case {
            name: "oversized body",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::Large(65 * 1024),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
        },
        Case {
            name: "oversized authenticated body",
            method: Method::POST,
            path: "/v1/keys/one-time".into(),
            token: Token::Valid,
            body: Body::Large(65 * 1024),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
        },
        Case {
            name: "bad base64",
            method: Method::PUT,
            path: "/v1/keys/identity".into(),
            token: Token::Valid,
            body: Body::Json(identity_bad_b64),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_base64",
        },
        Case {
            name: "wrong key length",
            method: Method::PUT,
            path: "/v1/keys/identity".into(),
            token: Token::Valid,
            body: Body::Json(identity_wrong_len),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_key_length",
        },
        Case {
            name: "weak Ed25519 key",
            method: Method::PUT,
            path: "/v1/keys/identity".into(),
            token: Token::Valid,
            body: Body::Json(identity_bad_point),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_public_key",
        },
        Case {
            name: "missing token",
            method: Method::GET,
            path: "/v1/devices".into(),
            token: Token::None,
            body: Body::None,
            status: StatusCode::UNAUTHORIZED,
            code: "missing_token",
        },
        Case {
            name: "revoked token",
            method: Method::GET,
            path: "/v1/devices".into(),
            token: Token::Removed,
            body: Body::None,
            status: StatusCode::UNAUTHORIZED,
            code: "device_removed",
        },
        Case {
            name: "unknown token",
            method: Method::GET,
            path: "/v1/devices".into(),
            token: Token::Unknown,
            body: Body::None,
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_token",
        },
        Case {
            name: "garbage token",
            method: Method::GET,
            path: "/v1/keys/count".into(),
            token: Token::Garbage,
            body: Body::None,
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_token",
        },
        Case {
            name: "basic auth instead of bearer",
            method: Method::GET,
            path: "/v1/keys/count".into(),
            token: Token::NotBearer,
            body: Body::None,
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_token",
        },
        Case {
            name: "token checked before the body",
            method: Method::POST,
            path: "/v1/keys/claim".into(),
            token: Token::None,
            body: Body::Json("{"),
            status: StatusCode::UNAUTHORIZED,
            code: "missing_token",
        },
        Case {
            name: "another user's device",
            method: Method::DELETE,
            path: "/v1/devices/99".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::NOT_FOUND,
            code: "device_not_found",
        },
        Case {
            name: "device ID not a number",
            method: Method::DELETE,
            path: "/v1/devices/abc".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_path_parameter",
        },
        Case {
            name: "device ID out of range",
            method: Method::DELETE,
            path: "/v1/devices/4294967296".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_path_parameter",
        },
        Case {
            name: "user ID not a UUID",
            method: Method::GET,
            path: "/v1/keys/devices/not-a-uuid".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_path_parameter",
        },
        Case {
            name: "unknown user",
            method: Method::GET,
            path: format!("/v1/keys/devices/{}", uuid::Uuid::nil()),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::NOT_FOUND,
            code: "user_not_found",
        },
        Case {
            name: "too many devices in a claim",
            method: Method::POST,
            path: "/v1/keys/claim".into(),
            token: Token::Valid,
            body: Body::Json(many_devices),
            status: StatusCode::BAD_REQUEST,
            code: "too_many_devices",
        },
        Case {
            name: "claim with a bad user ID",
            method: Method::POST,
            path: "/v1/keys/claim".into(),
            token: Token::Valid,
            body: Body::Json(r#"{"devices":[{"userId":"x","deviceId":1}]}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "one-time keys not a list",
            method: Method::POST,
            path: "/v1/keys/one-time".into(),
            token: Token::Valid,
            body: Body::Json(r#"{"oneTimeKeys": {}}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "unknown route",
            method: Method::GET,
            path: "/v1/nothing-here".into(),
            token: Token::None,
            body: Body::None,
            status: StatusCode::NOT_FOUND,
            code: "not_found",
        },
        Case {
            name: "wrong method",
            method: Method::PATCH,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::None,
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
        },
        Case {
            name: "socket without a token",
            method: Method::GET,
            path: "/v1/ws".into(),
            token: Token::None,
            body: Body::None,
            status: StatusCode::UNAUTHORIZED,
            code: "missing_token",
        },
        Case {
            name: "socket route without an upgrade",
            method: Method::GET,
            path: "/v1/ws".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "not_websocket",
        },
        Case {
            name: "socket cursor not a number",
            method: Method::GET,
            path: "/v1/ws?after=soon".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_query_parameter",
        },
        Case {
            name: "inbox page too large",
            method: Method::GET,
            path: "/v1/inbox?limit=5000".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_query_parameter",
        },
        Case {
            name: "message ID not a UUID",
            method: Method::GET,
            path: "/v1/messages/123/envelope".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_path_parameter",
        },
        Case {
            name: "ack cursor negative",
            method: Method::POST,
            path: "/v1/inbox/ack".into(),
            token: Token::Valid,
            body: Body::Json(r#"{"upTo": -1}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        // An object never arrives as an array (serde would read the fields by position).
        Case {
            name: "account as an array",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::Json(r#"["dave", "correct horse battery"]"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "login as an array",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(r#"["alice", "correct horse battery", 0]"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "privacy settings as an array",
            method: Method::PUT,
            path: "/v1/settings/privacy".into(),
            token: Token::Valid,
            body: Body::Json("[false, false]"),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "identity keys as an array",
            method: Method::PUT,
            path: "/v1/keys/identity".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(r#"["{key32}", "{key32}", "{sig64}"]"#))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "one-time key as an array",
            method: Method::POST,
            path: "/v1/keys/one-time".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(
                r#"{{"oneTimeKeys": [["k1", "{key32}", "{sig64}"]]}}"#
            ))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "fallback key as an array",
            method: Method::PUT,
            path: "/v1/keys/fallback".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(r#"["f1", "{key32}", "{sig64}"]"#))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "claimed device as an array",
            method: Method::POST,
            path: "/v1/keys/claim".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(r#"{{"devices": [["{user}", 1]]}}"#))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "send as an array",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(r#"[2, "p1", "{user}", []]"#))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "device envelope as an array",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(
                r#"{{"protocolVersion": 2, "clientMessageId": "p1", "recipientUserId": "{user}", "deviceEnvelopes": [["{user}", 1, "normal", "AAAA"]]}}"#
            ))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "acknowledgement as an array",
            method: Method::POST,
            path: "/v1/inbox/ack".into(),
            token: Token::Valid,
            body: Body::Json("[5]"),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "read mark as an array",
            method: Method::POST,
            path: "/v1/receipts/read".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(r#"["{channel}", true]"#))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "channel as an array",
            method: Method::POST,
            path: "/v1/channels".into(),
            token: Token::Valid,
            body: Body::Json("[[]]"),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "new members as an array",
            method: Method::POST,
            path: format!("/v1/channels/{channel}/members"),
            token: Token::Valid,
            body: Body::Json("[[]]"),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "sender key as an array",
            method: Method::POST,
            path: format!("/v1/channels/{channel}/sender-keys"),
            token: Token::Valid,
            body: Body::Json(leak(format!(
                r#"{{"sessionId": "s1", "distributions": [["{user}", 1, "normal", "AAAA"]]}}"#
            ))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "group message as an array",
            method: Method::POST,
            path: format!("/v1/channels/{channel}/messages"),
            token: Token::Valid,
            body: Body::Json(r#"["g1", "s1", "AAAA"]"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        // Numbers: a valid JSON number out of range for its field is the wrong shape.
        Case {
            name: "device ID too large for any number",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(login_with("1e400")),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "device ID below any number",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(login_with("-1e400")),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "device ID past 64 bits",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(login_with("100000000000000000000000")),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "claimed device ID too large for any number",
            method: Method::POST,
            path: "/v1/keys/claim".into(),
            token: Token::Valid,
            body: Body::Json(leak(format!(
                r#"{{"devices": [{{"userId": "{user}", "deviceId": 1e400}}]}}"#
            ))),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "an out-of-range number in a body that is not JSON",
            method: Method::POST,
            path: "/v1/login".into(),
            token: Token::None,
            body: Body::Json(r#"{"username": "alice", "deviceId": 1e400"#),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
        },
        Case {
            name: "a wrong shape in a body that is not JSON",
            method: Method::POST,
            path: "/v1/accounts".into(),
            token: Token::None,
            body: Body::Json(r#"{"username": 5} trailing"#),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
        },
        Case {
            name: "protocol version past u8",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(send_with(r#""protocolVersion": 256"#)),
            status: StatusCode::BAD_REQUEST,
            code: "unsupported_protocol_version",
        },
        Case {
            name: "protocol version 1000",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(send_with(r#""protocolVersion": 1000"#)),
            status: StatusCode::BAD_REQUEST,
            code: "unsupported_protocol_version",
        },
        Case {
            name: "negative protocol version",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(send_with(r#""protocolVersion": -1"#)),
            status: StatusCode::BAD_REQUEST,
            code: "unsupported_protocol_version",
        },
        Case {
            name: "protocol version u64::MAX",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(send_with(r#""protocolVersion": 18446744073709551615"#)),
            status: StatusCode::BAD_REQUEST,
            code: "unsupported_protocol_version",
        },
        Case {
            name: "protocol version not an integer",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(send_with(r#""protocolVersion": 1.5"#)),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "protocol version a string",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(send_with(r#""protocolVersion": "2""#)),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "protocol version too large for any number",
            method: Method::POST,
            path: "/v1/messages".into(),
            token: Token::Valid,
            body: Body::Json(send_with(r#""protocolVersion": 1e400"#)),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "ack cursor past int64",
            method: Method::POST,
            path: "/v1/inbox/ack".into(),
            token: Token::Valid,
            body: Body::Json(r#"{"upTo": 9223372036854775808}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "ack cursor u64::MAX",
            method: Method::POST,
            path: "/v1/inbox/ack".into(),
            token: Token::Valid,
            body: Body::Json(r#"{"upTo": 18446744073709551615}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "ack cursor too large for any number",
            method: Method::POST,
            path: "/v1/inbox/ack".into(),
            token: Token::Valid,
            body: Body::Json(r#"{"upTo": 1e400}"#),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request_body",
        },
        Case {
            name: "inbox cursor past int64",
            method: Method::GET,
            path: "/v1/inbox?after=9223372036854775808".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_query_parameter",
        },
        Case {
            name: "inbox cursor past u64",
            method: Method::GET,
            path: "/v1/inbox?after=18446744073709551616".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_query_parameter",
        },
        Case {
            name: "socket cursor past int64",
            method: Method::GET,
            path: "/v1/ws?after=9223372036854775808".into(),
            token: Token::Valid,
            body: Body::None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_query_parameter",
        },
    ];

    for case in cases {
        let mut request = server
            .http
            .request(case.method.clone(), server.url(&case.path));
        request = match case.token {
            Token::None => request,
            Token::Valid => request.bearer_auth(&device.token),
            Token::Removed => request.bearer_auth(&removed.token),
            Token::Unknown => {
                request.bearer_auth("cdt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            }
            Token::Garbage => request.bearer_auth("\u{1F600} not a token"),
            Token::NotBearer => request.basic_auth("alice", Some(PASSWORD)),
        };
        request = match case.body {
            Body::None => request,
            Body::Json(text) => request
                .header("content-type", "application/json")
                .body(text),
            Body::Raw(content_type, text) => {
                request.header("content-type", content_type).body(text)
            }
            Body::Large(size) => {
                let padding = "x".repeat(size);
                request
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"username":"alice","password":"{padding}"}}"#))
            }
        };
        let answer = read(request.send().await.unwrap()).await;
        assert_eq!(answer.0, case.status, "{}: {}", case.name, answer.1);
        assert_eq!(
            answer.1["error"]["code"], case.code,
            "{}: {}",
            case.name, answer.1
        );
        assert!(
            answer.1["error"]["message"].is_string(),
            "{}: {}",
            case.name,
            answer.1
        );
    }

    // The server is still fine after all of that.
    let (status, _) = server
        .call(Method::GET, "/v1/devices", Some(&device.token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn bodies_given_as_arrays_store_nothing(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    let sender = &alice.devices[0];

    // Fields by position would make an account.
    let answer = server
        .http
        .post(server.url("/v1/accounts"))
        .header("content-type", "application/json")
        .body(format!(r#"["dave", "{PASSWORD}"]"#))
        .send()
        .await
        .unwrap();
    assert_error(
        &read(answer).await,
        StatusCode::BAD_REQUEST,
        "invalid_request_body",
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE username = 'dave'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0, "no account for dave");
    server.create_account("dave").await;

    // ... and turn both privacy settings off.
    let answer = server
        .http
        .put(server.url("/v1/settings/privacy"))
        .bearer_auth(&sender.token)
        .header("content-type", "application/json")
        .body("[false, false]")
        .send()
        .await
        .unwrap();
    assert_error(
        &read(answer).await,
        StatusCode::BAD_REQUEST,
        "invalid_request_body",
    );
    let (status, settings) = server
        .call(
            Method::GET,
            "/v1/settings/privacy",
            Some(&sender.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        settings,
        json!({"sendReadReceipts": true, "showReadReceipts": true}),
        "settings unchanged"
    );

    // ... and send a message whose envelopes are arrays.
    let (user, device) = bob.refs()[0];
    let answer = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            Some(json!({
                "protocolVersion": 2,
                "clientMessageId": "m1",
                "recipientUserId": bob.id,
                "deviceEnvelopes": [[user, device, "normal", encode_base64(b"hello")]],
            })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request_body");
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(messages, 0, "no message stored");
    assert!(server.inbox(&bob.devices[0]).await.is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn unsupported_protocol_versions_name_the_supported_ones(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    for version in [
        json!(0),
        json!(3),
        json!(256),
        json!(1000),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
    ] {
        let answer = server
            .call(
                Method::POST,
                "/v1/messages",
                Some(&alice.devices[0].token),
                Some(json!({
                    "protocolVersion": version,
                    "clientMessageId": "v1",
                    "recipientUserId": bob.id,
                    "deviceEnvelopes": [],
                })),
            )
            .await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "unsupported_protocol_version",
        );
        assert_eq!(
            answer.1["error"]["details"],
            json!({"supported": [1, 2]}),
            "{version}"
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn sequence_numbers_up_to_the_int64_maximum_are_taken(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let device = &alice.devices[0];
    let max = i64::MAX;

    let (status, page) = server
        .call(
            Method::GET,
            &format!("/v1/inbox?after={max}"),
            Some(&device.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["nextCursor"], json!(max));
    let (status, acked) = server
        .call(
            Method::POST,
            "/v1/inbox/ack",
            Some(&device.token),
            Some(json!({"upTo": max})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked, json!({"delivered": 0}));

    let mut socket = server
        .connect(&device.token, Some(max.unsigned_abs()))
        .await;
    assert!(matches!(socket.next().await, Received::CaughtUp(_)));
    socket.close().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn bad_socket_frames_get_invalid_frame_and_acknowledge_nothing(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let alice = TestUser::new(&server, "alice", 1).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&alice.devices[0].token),
            Some(v2_body("f1", bob.id, &bob.refs(), "keep me")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let receiver = &bob.devices[0];
    let mut socket = server.connect(&receiver.token, None).await;
    let (envelopes, cursor) = socket.backlog().await;
    assert_eq!(envelopes.len(), 1);
    for frame in [
        // Arrays, which serde would read as an ack by position.
        "[]".to_owned(),
        format!(r#"["ack", {cursor}]"#),
        format!(r#"["ack", {cursor}, [{cursor}]]"#),
        // Sequence numbers past int64, which the server would cap at what it sent.
        r#"{"type": "ack", "upTo": 9223372036854775808}"#.to_owned(),
        r#"{"type": "ack", "seqs": [9223372036854775808]}"#.to_owned(),
        r#"{"type": "ack", "upTo": 1e400}"#.to_owned(),
    ] {
        socket.send_text(&frame).await;
        match socket.next().await {
            Received::Error(code) => assert_eq!(code, "invalid_frame", "{frame}"),
            other => panic!("{frame}: expected an error frame, got {other:?}"),
        }
    }
    socket.close().await;

    let inbox = server.inbox(receiver).await;
    assert_eq!(inbox.len(), 1, "the envelope is still undelivered");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn server_errors_do_not_leak_details(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    server.create_account("bob").await;
    let device = server.new_device("bob").await;
    // Break the database under the server: the answer is a bare internal error.
    sqlx::query("DROP TABLE fallback_keys")
        .execute(&pool)
        .await
        .unwrap();
    let answer = server
        .call(Method::GET, "/v1/keys/count", Some(&device.token), None)
        .await;
    assert_error(&answer, StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
    let text = answer.1.to_string();
    assert!(
        !text.contains("fallback_keys") && !text.contains("relation"),
        "{text}"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn probes_answer_and_shutdown_is_graceful(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    assert_eq!(
        server.call(Method::GET, "/healthz", None, None).await.1["status"],
        "ok"
    );
    assert_eq!(
        server.call(Method::GET, "/readyz", None, None).await.1["status"],
        "ok"
    );

    pool.close().await;
    assert_error(
        &server.call(Method::GET, "/readyz", None, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert_eq!(
        server.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK,
        "alive even when not ready"
    );

    let base = server.base.clone();
    server.stop().await.unwrap();
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "the listener is closed after shutdown"
    );
}
