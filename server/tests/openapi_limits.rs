//! The document states the limits the server enforces: for each one, the value in the
//! schema is the constant (or setting) the server checks against, a request at the limit
//! validates against the document and the real server accepts it, and a request one past
//! it fails validation and the server refuses it with the documented code. Every answer
//! is validated against the document too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/schema.rs"]
mod schema;

use common::{PASSWORD, TestDevice, TestServer};
use courier_protocol::DeviceId;
use courier_protocol::api::messages::PROTOCOL_VERSIONS;
use courier_protocol::api::stream::MAX_SEQ;
use courier_protocol::keys::{encode_base64, max_base64_len};
use courier_protocol::limits::{
    CLIENT_MESSAGE_ID_MAX_CHARS, DEVICE_NAME_MAX_CHARS, KEY_ID_MAX_CHARS, MAX_CHANNEL_MEMBERS,
    MAX_DEVICES_PER_CLAIM, MAX_INBOX_PAGE_ITEMS, MAX_ONE_TIME_KEYS_PER_UPLOAD, PASSWORD_MAX_BYTES,
    PASSWORD_MIN_CHARS, SESSION_ID_MAX_CHARS, USERNAME_MAX_CHARS, USERNAME_MIN_CHARS,
};
use courier_server::rate_limits::RateLimitSettings;
use courier_server::{MIGRATOR, Settings};
use reqwest::{Method, StatusCode};
use schema::{Schemas, operation_pointer, parameter_schema, request_schema};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const SESSION: &str = "Pz0JS1i2c5PyM3aUoYJ2K3bNcqzNBnTzyfTuqAfu6bI";

fn property(schema: &str, property: &str, keyword: &str) -> String {
    format!("/components/schemas/{schema}/properties/{property}/{keyword}")
}

/// A client that checks every answer against the served document.
struct Api<'a> {
    server: &'a TestServer,
    schemas: &'a Schemas,
}

/// A request with a JSON body at a limit and one past it.
struct BodyCase<'a> {
    method: Method,
    template: &'a str,
    path: String,
    token: Option<&'a str>,
    at: Value,
    past: Value,
    code: &'a str,
}

/// A path or query parameter at a limit and one past it: the value, and the path with it.
struct ParameterCase<'a> {
    template: &'a str,
    method: Method,
    name: &'a str,
    token: &'a str,
    at: (Value, String),
    past: (Value, String),
    /// What the server answers the value at the limit with.
    accepted: StatusCode,
    code: &'a str,
}

impl Api<'_> {
    /// The document states `expected` at `pointer`.
    #[track_caller]
    fn states(&self, pointer: &str, expected: impl Into<Value>) {
        assert_eq!(
            self.schemas.document.pointer(pointer),
            Some(&expected.into()),
            "{pointer}"
        );
    }

    async fn exchange(
        &self,
        method: Method,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self.server.call(method.clone(), path, token, body).await;
        let pointer = format!(
            "{}/responses/{}",
            operation_pointer(method.as_str(), template),
            answer.0.as_u16()
        );
        let documented = self
            .schemas
            .document
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("{method} {path} answered {}: undocumented", answer.0));
        if documented.get("content").is_some() {
            self.schemas.assert_valid(
                &format!("{pointer}/content/application~1json/schema"),
                &answer.1,
                &format!("the answer of {method} {path}"),
            );
        }
        answer
    }

    async fn body_limit(&self, case: BodyCase<'_>) -> Value {
        let schema = request_schema(case.method.as_str(), case.template);
        let what = format!("{} {}", case.method, case.template);
        self.schemas
            .assert_valid(&schema, &case.at, &format!("{what} at the limit"));
        let accepted = self
            .exchange(
                case.method.clone(),
                case.template,
                &case.path,
                case.token,
                Some(case.at),
            )
            .await;
        assert!(accepted.0.is_success(), "{what} at the limit: {accepted:?}");
        self.schemas
            .assert_invalid(&schema, &case.past, &format!("{what} past the limit"));
        let refused = self
            .exchange(
                case.method,
                case.template,
                &case.path,
                case.token,
                Some(case.past),
            )
            .await;
        assert_eq!(refused.1["error"]["code"], case.code, "{what}: {refused:?}");
        accepted.1
    }

    async fn parameter_limit(&self, case: ParameterCase<'_>) {
        let schema = parameter_schema(
            &self.schemas.document,
            case.method.as_str(),
            case.template,
            case.name,
        );
        let what = format!("{} {} {}", case.method, case.template, case.name);
        self.schemas
            .assert_valid(&schema, &case.at.0, &format!("{what} at the limit"));
        let accepted = self
            .exchange(
                case.method.clone(),
                case.template,
                &case.at.1,
                Some(case.token),
                None,
            )
            .await;
        assert_eq!(
            accepted.0, case.accepted,
            "{what} at the limit: {accepted:?}"
        );
        self.schemas
            .assert_invalid(&schema, &case.past.0, &format!("{what} past the limit"));
        let refused = self
            .exchange(
                case.method,
                case.template,
                &case.past.1,
                Some(case.token),
                None,
            )
            .await;
        assert_eq!(refused.1["error"]["code"], case.code, "{what}: {refused:?}");
    }
}

/// The committed document states the default settings' configurable limits; a server
/// configured otherwise serves its own.
#[test]
fn configurable_limits_are_the_settings() {
    let defaults = Settings::default();
    for (settings, document) in [
        (defaults.clone(), courier_server::router::openapi()),
        (
            Settings {
                max_envelope_bytes: 100,
                max_envelopes_per_message: 7,
                ..defaults.clone()
            },
            courier_server::router::openapi_for(&Settings {
                max_envelope_bytes: 100,
                max_envelopes_per_message: 7,
                ..defaults
            }),
        ),
    ] {
        for (schema, field) in [
            ("DeviceEnvelope", "ciphertext"),
            ("SendMessageRequest", "encryptedEnvelope"),
            ("DeviceSenderKey", "ciphertext"),
            ("SendGroupMessageRequest", "ciphertext"),
        ] {
            assert_eq!(
                document.pointer(&property(schema, field, "maxLength")),
                Some(&json!(max_base64_len(settings.max_envelope_bytes))),
                "{schema}.{field}"
            );
        }
        for (schema, field) in [
            ("SendMessageRequest", "deviceEnvelopes"),
            ("UploadSenderKeysRequest", "distributions"),
        ] {
            assert_eq!(
                document.pointer(&property(schema, field, "maxItems")),
                Some(&json!(settings.max_envelopes_per_message)),
                "{schema}.{field}"
            );
        }
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_limit_in_the_document_is_the_one_the_server_enforces(pool: PgPool) {
    let settings = Settings {
        device_limit: 10,
        max_envelope_bytes: 300,
        max_envelopes_per_message: 3,
        rate_limits: RateLimitSettings::off(),
        ..Settings::default()
    };
    let server = TestServer::start_with(pool.clone(), settings.clone()).await;
    let (_, document) = server.call(Method::GET, "/openapi.json", None, None).await;
    let schemas = Schemas::new(document);
    let api = Api {
        server: &server,
        schemas: &schemas,
    };
    let account =
        |username: &str, password: &str| json!({ "username": username, "password": password });
    let create = |at: Value, past: Value, code| BodyCase {
        method: Method::POST,
        template: "/v1/accounts",
        path: "/v1/accounts".into(),
        token: None,
        at,
        past,
        code,
    };

    // Usernames: lengths and characters (uppercase is accepted: usernames are
    // case-insensitive).
    api.states(
        &property("CreateAccountRequest", "username", "minLength"),
        USERNAME_MIN_CHARS,
    );
    api.states(
        &property("CreateAccountRequest", "username", "maxLength"),
        USERNAME_MAX_CHARS,
    );
    let longest = format!("u{}", "x".repeat(USERNAME_MAX_CHARS - 1));
    let created = api
        .body_limit(create(
            account(&longest, PASSWORD),
            account(&format!("{longest}x"), PASSWORD),
            "invalid_username",
        ))
        .await;
    schemas.assert_valid(
        "/components/schemas/CreateAccountResponse",
        &created,
        "the created account",
    );
    let shortest = "u".repeat(USERNAME_MIN_CHARS);
    api.body_limit(create(
        account(&shortest, PASSWORD),
        account(&shortest[1..], PASSWORD),
        "invalid_username",
    ))
    .await;
    api.body_limit(create(
        account("Carol.B-C_1", PASSWORD),
        account("1carol", PASSWORD),
        "invalid_username",
    ))
    .await;

    // Passwords: characters at least, bytes at most (ASCII, so maxLength reaches it).
    api.states(
        &property("CreateAccountRequest", "password", "minLength"),
        PASSWORD_MIN_CHARS,
    );
    api.states(
        &property("CreateAccountRequest", "password", "maxLength"),
        PASSWORD_MAX_BYTES,
    );
    api.body_limit(create(
        account("pw-short", &"p".repeat(PASSWORD_MIN_CHARS)),
        account("pw-short2", &"p".repeat(PASSWORD_MIN_CHARS - 1)),
        "invalid_password",
    ))
    .await;
    api.body_limit(create(
        account("pw-long", &"p".repeat(PASSWORD_MAX_BYTES)),
        account("pw-long2", &"p".repeat(PASSWORD_MAX_BYTES + 1)),
        "invalid_password",
    ))
    .await;

    // Device names at login: lengths, no control characters.
    let alice_id = server.create_account("alice").await.user_id;
    api.states(
        &property("LoginRequest", "deviceName", "maxLength"),
        DEVICE_NAME_MAX_CHARS,
    );
    api.states(&property("LoginRequest", "deviceName", "minLength"), 1);
    let login = |name: &str| json!({ "username": "alice", "password": PASSWORD, "deviceId": 0, "deviceName": name });
    let login_case = |at: Value, past: Value, code| BodyCase {
        method: Method::POST,
        template: "/v1/login",
        path: "/v1/login".into(),
        token: None,
        at,
        past,
        code,
    };
    let named = api
        .body_limit(login_case(
            login(&"n".repeat(DEVICE_NAME_MAX_CHARS)),
            login(&"n".repeat(DEVICE_NAME_MAX_CHARS + 1)),
            "invalid_device_name",
        ))
        .await;
    let alice1 = TestDevice::from_login(serde_json::from_value(named).unwrap());
    let shortest_name = api
        .body_limit(login_case(login("n"), login(""), "invalid_device_name"))
        .await;
    let spare = TestDevice::from_login(serde_json::from_value(shortest_name).unwrap());
    api.body_limit(login_case(
        login("Alice's phone ☎"),
        login("tab\there"),
        "invalid_device_name",
    ))
    .await;

    // Device IDs: 1 to 2³¹−1 everywhere; 0 only in a login, where it means "assign".
    api.states("/components/schemas/DeviceId/minimum", 1);
    api.states("/components/schemas/DeviceId/maximum", DeviceId::MAX);
    api.states(&property("LoginRequest", "deviceId", "minimum"), 0);
    api.states(
        &property("LoginRequest", "deviceId", "maximum"),
        DeviceId::MAX,
    );
    // A device with the largest ID (the server assigns them in order; no test registers
    // two billion devices).
    sqlx::query("INSERT INTO devices (user_id, device_id, token_hash) VALUES ($1, $2, $3)")
        .bind(alice_id.as_uuid())
        .bind(DeviceId::new(DeviceId::MAX).unwrap().as_i32())
        .bind(common::random_key().to_vec())
        .execute(&pool)
        .await
        .unwrap();
    let relogin = |id: u64| json!({ "username": "alice", "password": PASSWORD, "deviceId": id });
    api.body_limit(login_case(
        relogin(u64::from(DeviceId::MAX)),
        relogin(u64::from(DeviceId::MAX) + 1),
        "invalid_request_body",
    ))
    .await;
    let max_path = format!("/v1/devices/{}", DeviceId::MAX);
    let past_path = format!("/v1/devices/{}", u64::from(DeviceId::MAX) + 1);
    api.parameter_limit(ParameterCase {
        template: "/v1/devices/{deviceId}",
        method: Method::DELETE,
        name: "deviceId",
        token: &alice1.token,
        at: (json!(DeviceId::MAX), max_path),
        past: (json!(u64::from(DeviceId::MAX) + 1), past_path),
        accepted: StatusCode::NO_CONTENT,
        code: "invalid_path_parameter",
    })
    .await;
    api.parameter_limit(ParameterCase {
        template: "/v1/devices/{deviceId}",
        method: Method::DELETE,
        name: "deviceId",
        token: &alice1.token,
        at: (
            json!(spare.device_id),
            format!("/v1/devices/{}", spare.device_id),
        ),
        past: (json!(0), "/v1/devices/0".into()),
        accepted: StatusCode::NO_CONTENT,
        code: "invalid_path_parameter",
    })
    .await;

    // Keys: key IDs, and base64 of exactly the key's length (padded or not).
    let alice = server.new_published_device("alice").await;
    api.states(
        &property("SignedKey", "keyId", "maxLength"),
        KEY_ID_MAX_CHARS,
    );
    let upload = |keys: Vec<Value>| json!({ "oneTimeKeys": keys });
    let key = |id: &str| serde_json::to_value(alice.one_time_key(id)).unwrap();
    let longest_id = "k".repeat(KEY_ID_MAX_CHARS);
    let keys_case = |at: Value, past: Value, code| BodyCase {
        method: Method::POST,
        template: "/v1/keys/one-time",
        path: "/v1/keys/one-time".into(),
        token: Some(alice.token.as_str()),
        at,
        past,
        code,
    };
    api.body_limit(keys_case(
        upload(vec![key(&longest_id)]),
        upload(vec![key(&format!("{longest_id}k"))]),
        "invalid_key_id",
    ))
    .await;
    let mut padded = key("padded");
    padded["signature"] = json!(format!("{}==", padded["signature"].as_str().unwrap()));
    let mut long_signature = key("long");
    long_signature["signature"] = json!(encode_base64(&[5u8; 65]));
    api.body_limit(keys_case(
        upload(vec![padded]),
        upload(vec![long_signature]),
        "invalid_key_length",
    ))
    .await;
    let mut padded_key = key("padded-key");
    padded_key["key"] = json!(format!("{}=", padded_key["key"].as_str().unwrap()));
    let mut short_key = key("short");
    short_key["key"] = json!(encode_base64(&[4u8; 31]));
    // The signature covers the key: a valid one over the padded key's bytes still holds.
    api.body_limit(keys_case(
        upload(vec![padded_key]),
        upload(vec![short_key]),
        "invalid_key_length",
    ))
    .await;
    api.states(
        &property("UploadOneTimeKeysRequest", "oneTimeKeys", "maxItems"),
        MAX_ONE_TIME_KEYS_PER_UPLOAD,
    );
    let batch = |prefix: &str, count: usize| {
        upload((0..count).map(|i| key(&format!("{prefix}{i}"))).collect())
    };
    api.body_limit(keys_case(
        batch("a", MAX_ONE_TIME_KEYS_PER_UPLOAD),
        batch("b", MAX_ONE_TIME_KEYS_PER_UPLOAD + 1),
        "too_many_keys",
    ))
    .await;

    // Claims: devices per claim, device IDs up to the largest.
    api.states(
        &property("ClaimKeysRequest", "devices", "maxItems"),
        MAX_DEVICES_PER_CLAIM,
    );
    let bob_id = server.create_account("bob").await.user_id;
    let bob: Vec<TestDevice> = {
        let mut devices = Vec::new();
        for _ in 0..3 {
            devices.push(server.new_published_device("bob").await);
        }
        devices
    };
    let claim = |ids: std::ops::RangeInclusive<u64>| json!({ "devices": ids.map(|id| json!({ "userId": bob_id, "deviceId": id })).collect::<Vec<_>>() });
    let claim_case = |at: Value, past: Value, code| BodyCase {
        method: Method::POST,
        template: "/v1/keys/claim",
        path: "/v1/keys/claim".into(),
        token: Some(alice.token.as_str()),
        at,
        past,
        code,
    };
    let max_claim = MAX_DEVICES_PER_CLAIM as u64;
    api.body_limit(claim_case(
        claim(1..=max_claim),
        claim(1..=max_claim + 1),
        "too_many_devices",
    ))
    .await;
    let most = u64::from(DeviceId::MAX);
    api.body_limit(claim_case(
        claim(most..=most),
        claim(most + 1..=most + 1),
        "invalid_request_body",
    ))
    .await;

    // Sends: client message IDs, protocol versions, envelope counts and sizes (this
    // server's settings).
    let envelope = |device: &TestDevice, bytes: usize| {
        json!({
            "userId": device.user_id,
            "deviceId": device.device_id,
            "envelopeType": "preKey",
            "ciphertext": encode_base64(&vec![7u8; bytes]),
        })
    };
    let send = |id: &str, version: i64, envelopes: Vec<Value>| json!({ "protocolVersion": version, "clientMessageId": id, "recipientUserId": bob_id, "deviceEnvelopes": envelopes });
    let to_bob = |bytes: usize| {
        bob.iter()
            .map(|device| envelope(device, bytes))
            .collect::<Vec<_>>()
    };
    let send_case = |at: Value, past: Value, code| BodyCase {
        method: Method::POST,
        template: "/v1/messages",
        path: "/v1/messages".into(),
        token: Some(alice.token.as_str()),
        at,
        past,
        code,
    };
    api.states(
        &property("SendMessageRequest", "clientMessageId", "maxLength"),
        CLIENT_MESSAGE_ID_MAX_CHARS,
    );
    let longest_message_id = "m".repeat(CLIENT_MESSAGE_ID_MAX_CHARS);
    api.body_limit(send_case(
        send(&longest_message_id, 2, to_bob(16)),
        send(&format!("{longest_message_id}m"), 2, to_bob(16)),
        "invalid_client_message_id",
    ))
    .await;
    let (oldest, newest) = (
        i64::from(*PROTOCOL_VERSIONS.iter().min().unwrap()),
        i64::from(*PROTOCOL_VERSIONS.iter().max().unwrap()),
    );
    for schema in ["SendMessageRequest", "Envelope"] {
        api.states(&property(schema, "protocolVersion", "minimum"), oldest);
        api.states(&property(schema, "protocolVersion", "maximum"), newest);
    }
    api.body_limit(send_case(
        send("v-newest", newest, to_bob(16)),
        send("v-past", newest + 1, to_bob(16)),
        "unsupported_protocol_version",
    ))
    .await;
    api.body_limit(send_case(
        json!({ "protocolVersion": oldest, "clientMessageId": "v-oldest", "recipientUserId": bob_id, "encryptedEnvelope": encode_base64(&[1u8; 16]) }),
        json!({ "protocolVersion": oldest - 1, "clientMessageId": "v-before", "recipientUserId": bob_id, "encryptedEnvelope": encode_base64(&[1u8; 16]) }),
        "unsupported_protocol_version",
    ))
    .await;
    api.states(
        &property("SendMessageRequest", "deviceEnvelopes", "maxItems"),
        settings.max_envelopes_per_message,
    );
    assert_eq!(bob.len(), settings.max_envelopes_per_message);
    let mut one_more = to_bob(16);
    one_more.push(envelope(&alice1, 16));
    api.body_limit(send_case(
        send("count-at", 2, to_bob(16)),
        send("count-past", 2, one_more),
        "too_many_envelopes",
    ))
    .await;
    api.states(
        &property("DeviceEnvelope", "ciphertext", "maxLength"),
        max_base64_len(settings.max_envelope_bytes),
    );
    api.body_limit(send_case(
        send("size-at", 2, to_bob(settings.max_envelope_bytes)),
        send("size-past", 2, to_bob(settings.max_envelope_bytes + 1)),
        "envelope_too_large",
    ))
    .await;
    // The inbox: `after` up to 2⁶³−1, `limit` 1 to 1,000; acknowledgements up to 2⁶³−1.
    let bob1 = &bob[0];
    api.parameter_limit(ParameterCase {
        template: "/v1/inbox",
        method: Method::GET,
        name: "after",
        token: &bob1.token,
        at: (json!(MAX_SEQ), format!("/v1/inbox?after={MAX_SEQ}")),
        past: (
            json!(MAX_SEQ + 1),
            format!("/v1/inbox?after={}", MAX_SEQ + 1),
        ),
        accepted: StatusCode::OK,
        code: "invalid_query_parameter",
    })
    .await;
    let inbox_limit = parameter_schema(&schemas.document, "get", "/v1/inbox", "limit");
    api.states(&format!("{inbox_limit}/minimum"), 1);
    api.states(&format!("{inbox_limit}/maximum"), MAX_INBOX_PAGE_ITEMS);
    for (at, past) in [(MAX_INBOX_PAGE_ITEMS, MAX_INBOX_PAGE_ITEMS + 1), (1, 0)] {
        api.parameter_limit(ParameterCase {
            template: "/v1/inbox",
            method: Method::GET,
            name: "limit",
            token: &bob1.token,
            at: (json!(at), format!("/v1/inbox?limit={at}")),
            past: (json!(past), format!("/v1/inbox?limit={past}")),
            accepted: StatusCode::OK,
            code: "invalid_query_parameter",
        })
        .await;
    }
    api.states(&property("AckRequest", "upTo", "maximum"), MAX_SEQ);
    api.body_limit(BodyCase {
        method: Method::POST,
        template: "/v1/inbox/ack",
        path: "/v1/inbox/ack".into(),
        token: Some(bob1.token.as_str()),
        at: json!({ "upTo": MAX_SEQ }),
        past: json!({ "upTo": MAX_SEQ + 1 }),
        code: "invalid_request_body",
    })
    .await;

    // Channels: members per request (the caller is always one), session IDs, sender
    // keys per upload.
    sqlx::query(
        "INSERT INTO users (user_id, username, password_hash)
         SELECT gen_random_uuid(), 'member' || i, 'not a hash' FROM generate_series(1, $1) AS i",
    )
    .bind(i32::try_from(MAX_CHANNEL_MEMBERS).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let others: Vec<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM users WHERE username LIKE 'member%'")
            .fetch_all(&pool)
            .await
            .unwrap();
    api.states(
        &property("CreateChannelRequest", "members", "maxItems"),
        MAX_CHANNEL_MEMBERS - 1,
    );
    api.body_limit(BodyCase {
        method: Method::POST,
        template: "/v1/channels",
        path: "/v1/channels".into(),
        token: Some(alice.token.as_str()),
        at: json!({ "members": others[..MAX_CHANNEL_MEMBERS - 1] }),
        past: json!({ "members": others }),
        code: "too_many_members",
    })
    .await;
    let (_, empty) = api
        .exchange(
            Method::POST,
            "/v1/channels",
            "/v1/channels",
            Some(&alice.token),
            Some(json!({ "members": [] })),
        )
        .await;
    api.states(
        &property("AddMembersRequest", "userIds", "maxItems"),
        MAX_CHANNEL_MEMBERS - 1,
    );
    api.body_limit(BodyCase {
        method: Method::POST,
        template: "/v1/channels/{channelId}/members",
        path: format!(
            "/v1/channels/{}/members",
            empty["channelId"].as_str().unwrap()
        ),
        token: Some(alice.token.as_str()),
        at: json!({ "userIds": others[..MAX_CHANNEL_MEMBERS - 1] }),
        past: json!({ "userIds": others }),
        code: "too_many_members",
    })
    .await;

    let (_, channel) = api
        .exchange(
            Method::POST,
            "/v1/channels",
            "/v1/channels",
            Some(&alice.token),
            Some(json!({ "members": [bob_id] })),
        )
        .await;
    let sender_keys = format!(
        "/v1/channels/{}/sender-keys",
        channel["channelId"].as_str().unwrap()
    );
    let distributions = |session: &str, devices: &[&TestDevice]| {
        json!({
            "sessionId": session,
            "distributions": devices.iter().map(|device| envelope(device, 48)).collect::<Vec<_>>(),
        })
    };
    let bobs: Vec<&TestDevice> = bob.iter().collect();
    let mut too_many = bobs.clone();
    too_many.push(&alice1);
    let keys_case = |at: Value, past: Value, code| BodyCase {
        method: Method::POST,
        template: "/v1/channels/{channelId}/sender-keys",
        path: sender_keys.clone(),
        token: Some(alice.token.as_str()),
        at,
        past,
        code,
    };
    api.states(
        &property("UploadSenderKeysRequest", "sessionId", "maxLength"),
        SESSION_ID_MAX_CHARS,
    );
    let longest_session = "s".repeat(SESSION_ID_MAX_CHARS);
    api.body_limit(keys_case(
        distributions(&longest_session, &bobs),
        distributions(&format!("{longest_session}s"), &bobs),
        "invalid_session_id",
    ))
    .await;
    api.states(
        &property("UploadSenderKeysRequest", "distributions", "maxItems"),
        settings.max_envelopes_per_message,
    );
    api.body_limit(keys_case(
        distributions(SESSION, &bobs),
        distributions(SESSION, &too_many),
        "too_many_envelopes",
    ))
    .await;
}
