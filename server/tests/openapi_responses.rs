//! The OpenAPI document tells the truth about every response: a client runs every
//! operation against a real server (each success, and each error code the document lists
//! for it), every response is validated against the served document with a JSON Schema
//! validator, every request the server accepted is validated against the document's
//! request schema, and at the end every documented (operation, status, code) must have
//! been answered. A code documented but never answered fails, as does an answer the
//! document does not describe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use common::{PASSWORD, TestDevice, TestServer, random_key};
use courier_protocol::keys::encode_base64;
use courier_protocol::{DeviceId, UserId};
use courier_server::MIGRATOR;
use courier_server::Settings;
use courier_server::config::RegistrationMode;
use courier_server::rate_limits::{Rate, RateLimitSettings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// The one code no test can provoke honestly: a server bug.
const NOT_PROVOKED: &[&str] = &["internal_error"];

/// A request body as the client sends it.
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

/// One operation of the document.
struct Operation {
    id: String,
    method: String,
    template: String,
    /// It takes a bearer token.
    authenticated: bool,
    /// It takes a JSON body.
    has_body: bool,
}

impl Operation {
    fn http_method(&self) -> Method {
        Method::from_bytes(self.method.to_uppercase().as_bytes()).unwrap()
    }
}

/// The served document, its operations, compiled validators, and what was answered.
struct Contract {
    document: Value,
    operations: Vec<Operation>,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
    answered: Mutex<BTreeSet<(String, u16, String)>>,
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl Contract {
    fn new(document: Value) -> Self {
        let mut operations = Vec::new();
        for (template, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                operations.push(Operation {
                    id: operation["operationId"].as_str().unwrap().to_owned(),
                    method: method.clone(),
                    template: template.clone(),
                    authenticated: operation.get("security").is_some(),
                    has_body: operation.get("requestBody").is_some(),
                });
            }
        }
        Self {
            document,
            operations,
            validators: Mutex::new(HashMap::new()),
            answered: Mutex::new(BTreeSet::new()),
        }
    }

    fn operation(&self, method: &Method, path: &str) -> &Operation {
        let path = path.split('?').next().unwrap();
        let segments: Vec<&str> = path.split('/').collect();
        self.operations
            .iter()
            .find(|operation| {
                let template: Vec<&str> = operation.template.split('/').collect();
                operation.method == method.as_str().to_lowercase()
                    && template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || t.starts_with('{'))
            })
            .unwrap_or_else(|| panic!("{method} {path} is not an operation of the document"))
    }

    /// A validator for the schema at `pointer`, the whole document as its root resource.
    fn validator(&self, pointer: &str) -> std::sync::Arc<jsonschema::Validator> {
        let mut validators = self.validators.lock().unwrap();
        validators
            .entry(pointer.to_owned())
            .or_insert_with(|| {
                let mut root = self.document.clone();
                // A URI fragment: braces of path templates are percent-encoded.
                let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
                root["$ref"] = Value::String(format!("#{fragment}"));
                std::sync::Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .should_validate_formats(true)
                        .build(&root)
                        .unwrap_or_else(|error| panic!("{pointer}: not a schema: {error}")),
                )
            })
            .clone()
    }

    fn assert_valid(&self, pointer: &str, instance: &Value, what: &str) {
        let validator = self.validator(pointer);
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} does not match the document ({pointer}): {errors:#?}\n{instance:#}"
        );
    }

    /// Checks one exchange against the document and records it.
    fn check(
        &self,
        method: &Method,
        path: &str,
        request: &Body,
        status: StatusCode,
        response: &Value,
    ) {
        let operation = self.operation(method, path);
        let base = format!(
            "/paths/{}/{}",
            escape(&operation.template),
            operation.method
        );
        let what = format!("{method} {path} → {status}");
        let documented = self
            .document
            .pointer(&format!("{base}/responses/{}", status.as_u16()))
            .unwrap_or_else(|| panic!("{what}: the document lists no such status\n{response}"));
        if documented.get("content").is_some() {
            self.assert_valid(
                &format!(
                    "{base}/responses/{}/content/application~1json/schema",
                    status.as_u16()
                ),
                response,
                &what,
            );
        } else {
            assert_eq!(*response, Value::Null, "{what}: the document says no body");
        }
        if status.is_success() {
            if let Body::Json(body) = request {
                self.assert_valid(
                    &format!("{base}/requestBody/content/application~1json/schema"),
                    body,
                    &format!("the accepted request of {what}"),
                );
            }
        }
        let code = response["error"]["code"].as_str().unwrap_or("").to_owned();
        self.answered
            .lock()
            .unwrap()
            .insert((operation.id.clone(), status.as_u16(), code));
    }

    /// Every (operation, status, code) the document lists: successes with an empty code.
    fn documented(&self) -> BTreeSet<(String, u16, String)> {
        let mut all = BTreeSet::new();
        for operation in &self.operations {
            let pointer = format!(
                "/paths/{}/{}/responses",
                escape(&operation.template),
                operation.method
            );
            for (status, response) in self
                .document
                .pointer(&pointer)
                .unwrap()
                .as_object()
                .unwrap()
            {
                let status: u16 = status.parse().unwrap();
                if status < 400 {
                    all.insert((operation.id.clone(), status, String::new()));
                    continue;
                }
                let codes = response
                    .pointer("/content/application~1json/schema/allOf/1/properties/error/properties/code/enum")
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("{}: {status} lists no codes", operation.id));
                for code in codes {
                    let code = code.as_str().unwrap().to_owned();
                    if !NOT_PROVOKED.contains(&code.as_str()) {
                        all.insert((operation.id.clone(), status, code));
                    }
                }
                // Every example is one of the response's codes and valid against it.
                let examples = response["content"]["application/json"]["examples"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{}: {status} has no examples", operation.id));
                assert_eq!(examples.len(), codes.len(), "{}: {status}", operation.id);
                for (name, example) in examples {
                    self.assert_valid(
                        &format!("{pointer}/{status}/content/application~1json/schema"),
                        &example["value"],
                        &format!("{}'s {status} example {name}", operation.id),
                    );
                }
            }
        }
        all
    }
}

/// A client of one server that checks every exchange against the contract.
struct Client<'a> {
    server: &'a TestServer,
    contract: &'a Contract,
}

impl Client<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> (StatusCode, Value) {
        let mut request = self
            .server
            .http
            .request(method.clone(), self.server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match &body {
            Body::None => request,
            Body::Json(value) => request.json(value),
            Body::Raw(content_type, bytes) => request
                .header("content-type", *content_type)
                .body(bytes.clone()),
        };
        let response = request.send().await.unwrap();
        let (status, json) = common::read(response).await;
        self.contract.check(&method, path, &body, status, &json);
        (status, json)
    }

    /// Sends a request and expects it refused with `code`.
    async fn refuse(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
        code: &str,
    ) {
        let answer = self.call(method.clone(), path, token, body).await;
        assert_eq!(
            answer.1["error"]["code"], code,
            "{method} {path}: {}: {}",
            answer.0, answer.1
        );
    }

    async fn refuse_send(&self, method: Method, path: &str, token: &str, body: Value, code: &str) {
        self.refuse(method, path, Some(token), Body::Json(body), code)
            .await;
    }

    async fn refuse_get(&self, path: &str, token: &str, code: &str) {
        self.refuse(Method::GET, path, Some(token), Body::None, code)
            .await;
    }

    /// Expects `code` from a request.
    #[track_caller]
    fn expect(&self, answer: &(StatusCode, Value), code: &str) {
        assert_eq!(
            answer.1["error"]["code"], code,
            "{}: {}",
            answer.0, answer.1
        );
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), Body::None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(token), Body::Json(body)).await
    }
}

fn success(answer: &(StatusCode, Value)) -> &Value {
    assert!(answer.0.is_success(), "{}: {}", answer.0, answer.1);
    &answer.1
}

/// Builds a concrete path for an operation with parseable, existing IDs.
fn concrete(template: &str, ids: &Ids) -> String {
    template
        .replace("{deviceId}", &ids.device.to_string())
        .replace("{userId}", &ids.user.to_string())
        .replace("{messageId}", &ids.message.to_string())
        .replace("{channelId}", &ids.channel.to_string())
}

struct Ids {
    device: DeviceId,
    user: UserId,
    message: Uuid,
    channel: Uuid,
}

async fn login(client: &Client<'_>, username: &str) -> TestDevice {
    let answer = client
        .call(
            Method::POST,
            "/v1/login",
            None,
            Body::Json(json!({ "username": username, "password": PASSWORD, "deviceId": 0, "deviceName": "test device" })),
        )
        .await;
    TestDevice::from_login(serde_json::from_value(success(&answer).clone()).unwrap())
}

async fn account(client: &Client<'_>, username: &str) -> UserId {
    let answer = client
        .call(
            Method::POST,
            "/v1/accounts",
            None,
            Body::Json(json!({ "username": username, "password": PASSWORD })),
        )
        .await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
    serde_json::from_value(answer.1["userId"].clone()).unwrap()
}

async fn publish(client: &Client<'_>, device: &TestDevice) {
    let answer = client
        .send(
            Method::PUT,
            "/v1/keys/identity",
            &device.token,
            device.identity_keys_json(),
        )
        .await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
}

fn envelope(user: UserId, device: DeviceId, bytes: usize) -> Value {
    json!({
        "userId": user,
        "deviceId": device,
        "envelopeType": "preKey",
        "ciphertext": encode_base64(&vec![7u8; bytes]),
    })
}

fn sender_key(user: UserId, device: DeviceId) -> Value {
    json!({
        "userId": user,
        "deviceId": device,
        "envelopeType": "preKey",
        "ciphertext": encode_base64(&[9u8; 48]),
    })
}

const SESSION: &str = "Pz0JS1i2c5PyM3aUoYJ2K3bNcqzNBnTzyfTuqAfu6bI";

/// An Ed25519 public key encoding that is not a point.
fn invalid_ed25519() -> [u8; 32] {
    (0u8..=255)
        .map(|byte| {
            let mut key = [byte; 32];
            key[31] &= 0x7f;
            key
        })
        .find(|key| ed25519_dalek::VerifyingKey::from_bytes(key).is_err())
        .expect("a non-point encoding")
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_documented_answer_is_given_and_every_answer_is_documented(pool: PgPool) {
    let settings = Settings {
        device_limit: 2,
        rate_limits: RateLimitSettings::off(),
        ..Settings::default()
    };
    let server = TestServer::start_with(pool.clone(), settings.clone()).await;
    let (_, document) = server.call(Method::GET, "/openapi.json", None, None).await;
    let contract = Contract::new(document);
    let client = Client {
        server: &server,
        contract: &contract,
    };
    let api = &client;

    // Probes.
    success(&api.call(Method::GET, "/healthz", None, Body::None).await);
    success(&api.call(Method::GET, "/readyz", None, Body::None).await);

    // Accounts and login.
    let alice_id = account(api, "alice").await;
    let bob_id = account(api, "bob").await;
    let carol_id = account(api, "carol").await;
    let dave_id = account(api, "dave").await;
    for (body, code) in [
        (
            json!({ "username": "1alice", "password": PASSWORD }),
            "invalid_username",
        ),
        (
            json!({ "username": "erin", "password": "short" }),
            "invalid_password",
        ),
        (
            json!({ "username": "Alice", "password": PASSWORD }),
            "username_taken",
        ),
    ] {
        api.refuse(Method::POST, "/v1/accounts", None, Body::Json(body), code)
            .await;
    }
    let alice = login(api, "alice").await;
    let alice2 = login(api, "alice").await;
    let bob = login(api, "bob").await;
    let bob2 = login(api, "bob").await; // never publishes keys
    let carol = login(api, "carol").await;
    let carol2 = login(api, "carol").await; // removed below
    for (body, code) in [
        (
            json!({ "username": "dave", "password": PASSWORD, "deviceId": 0, "deviceName": "" }),
            "invalid_device_name",
        ),
        (
            json!({ "username": "dave", "password": "wrong password", "deviceId": 0 }),
            "invalid_credentials",
        ),
        (
            json!({ "username": "dave", "password": PASSWORD, "deviceId": 99 }),
            "device_not_found",
        ),
        (
            json!({ "username": "alice", "password": PASSWORD, "deviceId": 0 }),
            "device_limit_reached",
        ),
    ] {
        api.refuse(Method::POST, "/v1/login", None, Body::Json(body), code)
            .await;
    }

    // Account deletion: refused with a wrong password, then done.
    account(api, "zed").await;
    let zed = login(api, "zed").await;
    api.refuse_send(
        Method::DELETE,
        "/v1/accounts/me",
        &zed.token,
        json!({ "password": "not the password" }),
        "wrong_password",
    )
    .await;
    success(
        &api.send(
            Method::DELETE,
            "/v1/accounts/me",
            &zed.token,
            json!({ "password": PASSWORD }),
        )
        .await,
    );

    // Registration modes other than open.
    for (registration, code) in [
        (RegistrationMode::Closed, "registration_closed"),
        (RegistrationMode::Token, "invalid_registration_token"),
    ] {
        let gated = TestServer::start_with(
            pool.clone(),
            Settings {
                registration,
                ..settings.clone()
            },
        )
        .await;
        let gated_api = Client {
            server: &gated,
            contract: &contract,
        };
        gated_api
            .refuse(
                Method::POST,
                "/v1/accounts",
                None,
                Body::Json(json!({ "username": "yves", "password": PASSWORD, "registrationToken": "crt_unknown" })),
                code,
            )
            .await;
    }

    // Devices.
    success(&api.get("/v1/devices", &alice.token).await);
    api.refuse(
        Method::DELETE,
        "/v1/devices/x",
        Some(&alice.token),
        Body::None,
        "invalid_path_parameter",
    )
    .await;
    api.refuse(
        Method::DELETE,
        "/v1/devices/99",
        Some(&alice.token),
        Body::None,
        "device_not_found",
    )
    .await;
    let removed = api
        .call(
            Method::DELETE,
            &format!("/v1/devices/{}", carol2.device_id),
            Some(&carol.token),
            Body::None,
        )
        .await;
    assert_eq!(removed.0, StatusCode::NO_CONTENT, "{}", removed.1);

    // Identity keys.
    for device in [&alice, &alice2, &bob, &carol] {
        publish(api, device).await;
    }
    success(
        &api.send(
            Method::PUT,
            "/v1/keys/identity",
            &alice.token,
            alice.identity_keys_json(),
        )
        .await,
    );
    // Each field broken in turn (bob2 has published nothing yet).
    for (field, value, code) in [
        ("curve25519", json!("!!!not base64"), "invalid_base64"),
        (
            "curve25519",
            json!(encode_base64(&[1u8; 31])),
            "invalid_key_length",
        ),
        (
            "ed25519",
            json!(encode_base64(&invalid_ed25519())),
            "invalid_public_key",
        ),
        (
            "signature",
            json!(encode_base64(&[3u8; 64])),
            "invalid_signature",
        ),
    ] {
        let mut keys = bob2.identity_keys_json();
        keys[field] = value;
        api.refuse_send(Method::PUT, "/v1/keys/identity", &bob2.token, keys, code)
            .await;
    }
    let other = TestDevice {
        user_id: alice.user_id,
        device_id: alice.device_id,
        token: alice.token.clone(),
        signing_key: ed25519_dalek::SigningKey::from_bytes(&random_key()),
        curve25519: random_key(),
    };
    api.refuse_send(
        Method::PUT,
        "/v1/keys/identity",
        &alice.token,
        other.identity_keys_json(),
        "identity_keys_conflict",
    )
    .await;

    // One-time and fallback keys.
    let upload = |device: &TestDevice, ids: std::ops::Range<usize>| json!({ "oneTimeKeys": ids.map(|i| device.one_time_key(&format!("k{i}"))).collect::<Vec<_>>() });
    success(
        &api.send(
            Method::POST,
            "/v1/keys/one-time",
            &bob.token,
            upload(&bob, 0..3),
        )
        .await,
    );
    api.refuse_send(
        Method::POST,
        "/v1/keys/one-time",
        &alice.token,
        upload(&alice, 0..101),
        "too_many_keys",
    )
    .await;
    let key = alice.one_time_key("dup");
    api.refuse_send(
        Method::POST,
        "/v1/keys/one-time",
        &alice.token,
        json!({ "oneTimeKeys": [key.clone(), key] }),
        "duplicate_key_id",
    )
    .await;
    for (field, value, code) in [
        ("keyId", json!("has space"), "invalid_key_id"),
        ("key", json!("!!"), "invalid_base64"),
        (
            "key",
            json!(encode_base64(&[1u8; 16])),
            "invalid_key_length",
        ),
        (
            "signature",
            json!(encode_base64(&[5u8; 64])),
            "invalid_signature",
        ),
    ] {
        let mut key = serde_json::to_value(alice.one_time_key("x")).unwrap();
        key[field] = value;
        let body = json!({ "oneTimeKeys": [key] });
        api.refuse_send(Method::POST, "/v1/keys/one-time", &alice.token, body, code)
            .await;
    }
    api.refuse_send(
        Method::POST,
        "/v1/keys/one-time",
        &bob2.token,
        upload(&bob2, 0..1),
        "identity_keys_required",
    )
    .await;
    api.refuse_send(
        Method::POST,
        "/v1/keys/one-time",
        &bob.token,
        upload(&bob, 0..1),
        "one_time_key_conflict",
    )
    .await;
    for batch in 0..5 {
        success(
            &api.send(
                Method::POST,
                "/v1/keys/one-time",
                &carol.token,
                upload(&carol, batch * 100..batch * 100 + 100),
            )
            .await,
        );
    }
    api.refuse_send(
        Method::POST,
        "/v1/keys/one-time",
        &carol.token,
        upload(&carol, 500..501),
        "one_time_key_limit_reached",
    )
    .await;

    let fallback = serde_json::to_value(bob.fallback_key("f1")).unwrap();
    success(
        &api.send(
            Method::PUT,
            "/v1/keys/fallback",
            &bob.token,
            fallback.clone(),
        )
        .await,
    );
    for (field, value, code) in [
        ("keyId", json!("bad id"), "invalid_key_id"),
        ("key", json!("!!"), "invalid_base64"),
        ("key", json!(encode_base64(&[1u8; 8])), "invalid_key_length"),
        (
            "signature",
            json!(encode_base64(&[6u8; 64])),
            "invalid_signature",
        ),
    ] {
        let mut key = fallback.clone();
        key[field] = value;
        api.refuse_send(Method::PUT, "/v1/keys/fallback", &bob.token, key, code)
            .await;
    }
    api.refuse_send(
        Method::PUT,
        "/v1/keys/fallback",
        &bob2.token,
        serde_json::to_value(bob2.fallback_key("f")).unwrap(),
        "identity_keys_required",
    )
    .await;
    success(&api.get("/v1/keys/count", &bob.token).await);

    // The directory and claims.
    success(
        &api.get(&format!("/v1/keys/devices/{bob_id}"), &alice.token)
            .await,
    );
    api.refuse_get(
        "/v1/keys/devices/not-a-uuid",
        &alice.token,
        "invalid_path_parameter",
    )
    .await;
    api.refuse_get(
        &format!("/v1/keys/devices/{}", Uuid::new_v4()),
        &alice.token,
        "user_not_found",
    )
    .await;
    success(
        &api.send(
            Method::POST,
            "/v1/keys/claim",
            &alice.token,
            json!({ "devices": [{ "userId": bob_id, "deviceId": bob.device_id }] }),
        )
        .await,
    );
    let many: Vec<Value> = (1..=1001)
        .map(|i| json!({ "userId": bob_id, "deviceId": i }))
        .collect();
    api.refuse_send(
        Method::POST,
        "/v1/keys/claim",
        &alice.token,
        json!({ "devices": many }),
        "too_many_devices",
    )
    .await;

    // Direct messages.
    let to_bob = |id: &str, envelopes: Vec<Value>| json!({ "protocolVersion": 2, "clientMessageId": id, "recipientUserId": bob_id, "deviceEnvelopes": envelopes });
    let good = || {
        vec![
            envelope(bob_id, bob.device_id, 40),
            envelope(alice_id, alice2.device_id, 40),
        ]
    };
    let first = api
        .send(
            Method::POST,
            "/v1/messages",
            &alice.token,
            to_bob("m1", good()),
        )
        .await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let message_id: Uuid = serde_json::from_value(first.1["messageId"].clone()).unwrap();
    let retry = api
        .send(
            Method::POST,
            "/v1/messages",
            &alice.token,
            to_bob("m1", good()),
        )
        .await;
    assert_eq!(retry.0, StatusCode::OK, "{}", retry.1);
    let v1 = json!({ "protocolVersion": 1, "clientMessageId": "v1-1", "recipientUserId": bob_id, "encryptedEnvelope": encode_base64(&[8u8; 40]) });
    success(
        &api.send(Method::POST, "/v1/messages", &alice.token, v1)
            .await,
    );
    let mut legacy = good();
    legacy[0]["envelopeType"] = json!("legacy");
    let mut bad_base64 = good();
    bad_base64[0]["ciphertext"] = json!("!!");
    let mut duplicate = good();
    duplicate.push(duplicate[0].clone());
    let too_many: Vec<Value> = (1..=101)
        .map(|i| envelope(bob_id, DeviceId::new(i).unwrap(), 4))
        .collect();
    let mut too_large = good();
    too_large[0] = envelope(bob_id, bob.device_id, 64 * 1024 + 1);
    for (body, code) in [
        (to_bob("bad id!", good()), "invalid_client_message_id"),
        (
            json!({ "protocolVersion": 3, "clientMessageId": "m2", "recipientUserId": bob_id, "deviceEnvelopes": [] }),
            "unsupported_protocol_version",
        ),
        (to_bob("m2", bad_base64), "invalid_base64"),
        (to_bob("m2", legacy), "invalid_envelope"),
        (to_bob("m2", duplicate), "duplicate_envelope"),
        (to_bob("m2", too_many), "too_many_envelopes"),
        (to_bob("m2", too_large), "envelope_too_large"),
        (
            json!({ "protocolVersion": 2, "clientMessageId": "m2", "recipientUserId": Uuid::new_v4(), "deviceEnvelopes": [] }),
            "user_not_found",
        ),
        (
            to_bob("m2", vec![envelope(alice_id, alice2.device_id, 4)]),
            "device_list_mismatch",
        ),
        (
            json!({ "protocolVersion": 2, "clientMessageId": "m2", "recipientUserId": dave_id, "deviceEnvelopes": [envelope(alice_id, alice2.device_id, 4)] }),
            "recipient_unreachable",
        ),
        (
            json!({ "protocolVersion": 2, "clientMessageId": "m1", "recipientUserId": carol_id, "deviceEnvelopes": [envelope(carol_id, carol.device_id, 4), envelope(alice_id, alice2.device_id, 4)] }),
            "client_message_id_reused",
        ),
    ] {
        api.refuse_send(Method::POST, "/v1/messages", &alice.token, body, code)
            .await;
    }

    // Reading one envelope, marking one delivered, delivery state, read receipts.
    let envelope_path = format!("/v1/messages/{message_id}/envelope");
    success(&api.get(&envelope_path, &bob.token).await);
    success(
        &api.get(
            &format!("{envelope_path}?deviceId={}", bob.device_id),
            &bob.token,
        )
        .await,
    );
    api.refuse_get(
        "/v1/messages/x/envelope",
        &bob.token,
        "invalid_path_parameter",
    )
    .await;
    api.refuse_get(
        &format!("{envelope_path}?deviceId=x"),
        &bob.token,
        "invalid_query_parameter",
    )
    .await;
    api.refuse_get(
        &format!("/v1/messages/{}/envelope", Uuid::new_v4()),
        &bob.token,
        "message_not_found",
    )
    .await;
    let delivered_path = format!("/v1/messages/{message_id}/delivered");
    api.refuse(
        Method::POST,
        "/v1/messages/x/delivered",
        Some(&bob.token),
        Body::None,
        "invalid_path_parameter",
    )
    .await;
    api.refuse(
        Method::POST,
        &format!("{delivered_path}?deviceId=x"),
        Some(&bob.token),
        Body::None,
        "invalid_query_parameter",
    )
    .await;
    api.refuse(
        Method::POST,
        &format!("/v1/messages/{}/delivered", Uuid::new_v4()),
        Some(&bob.token),
        Body::None,
        "message_not_found",
    )
    .await;
    let marked = api
        .call(Method::POST, &delivered_path, Some(&bob.token), Body::None)
        .await;
    assert_eq!(marked.0, StatusCode::NO_CONTENT, "{}", marked.1);
    api.refuse_get(&envelope_path, &bob.token, "envelope_delivered")
        .await;
    success(
        &api.get(&format!("/v1/messages/{message_id}/delivery"), &alice.token)
            .await,
    );
    api.refuse_get(
        "/v1/messages/x/delivery",
        &alice.token,
        "invalid_path_parameter",
    )
    .await;
    api.refuse_get(
        &format!("/v1/messages/{}/delivery", Uuid::new_v4()),
        &alice.token,
        "message_not_found",
    )
    .await;
    success(
        &api.send(
            Method::POST,
            "/v1/receipts/read",
            &bob.token,
            json!({ "messageId": message_id }),
        )
        .await,
    );
    api.refuse_send(
        Method::POST,
        "/v1/receipts/read",
        &bob.token,
        json!({ "messageId": Uuid::new_v4() }),
        "message_not_found",
    )
    .await;
    success(&api.get("/v1/settings/privacy", &bob.token).await);
    success(
        &api.send(
            Method::PUT,
            "/v1/settings/privacy",
            &bob.token,
            json!({ "sendReadReceipts": false }),
        )
        .await,
    );

    // The inbox.
    let page = success(&api.get("/v1/inbox?limit=50", &bob.token).await).clone();
    // Alice's claim left Bob 2 of his 3 one-time keys: the page holds the notice, so it
    // validated against StreamItemOneTimeKeysLow too.
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["type"] == "oneTimeKeysLow" && item["count"] == 2),
        "{page}"
    );
    api.refuse_get("/v1/inbox?limit=0", &bob.token, "invalid_query_parameter")
        .await;
    api.refuse_get("/v1/inbox?after=x", &bob.token, "invalid_query_parameter")
        .await;
    success(
        &api.send(
            Method::POST,
            "/v1/inbox/ack",
            &bob.token,
            json!({ "upTo": page["nextCursor"] }),
        )
        .await,
    );

    // The WebSocket: the upgrade, and the answers without one.
    let socket = server.connect(&bob.token, None).await;
    contract
        .answered
        .lock()
        .unwrap()
        .insert(("open_socket".into(), 101, String::new()));
    socket.close().await;
    api.refuse_get("/v1/ws", &bob.token, "not_websocket").await;
    api.refuse_get("/v1/ws?after=x", &bob.token, "invalid_query_parameter")
        .await;

    // Channels.
    let channel = api
        .send(
            Method::POST,
            "/v1/channels",
            &alice.token,
            json!({ "members": [bob_id] }),
        )
        .await;
    assert_eq!(channel.0, StatusCode::CREATED, "{}", channel.1);
    let channel_id: Uuid = serde_json::from_value(channel.1["channelId"].clone()).unwrap();
    let too_many_members: Vec<Uuid> = (0..257).map(|_| Uuid::new_v4()).collect();
    api.refuse_send(
        Method::POST,
        "/v1/channels",
        &alice.token,
        json!({ "members": too_many_members }),
        "too_many_members",
    )
    .await;
    api.refuse_send(
        Method::POST,
        "/v1/channels",
        &alice.token,
        json!({ "members": [Uuid::new_v4()] }),
        "user_not_found",
    )
    .await;
    success(&api.get("/v1/channels", &alice.token).await);
    let channel_path = format!("/v1/channels/{channel_id}");
    success(&api.get(&channel_path, &bob.token).await);
    api.refuse_get("/v1/channels/x", &bob.token, "invalid_path_parameter")
        .await;
    api.refuse_get(
        &format!("/v1/channels/{}", Uuid::new_v4()),
        &bob.token,
        "channel_not_found",
    )
    .await;
    let members = format!("{channel_path}/members");
    success(
        &api.send(
            Method::POST,
            &members,
            &alice.token,
            json!({ "userIds": [carol_id] }),
        )
        .await,
    );
    api.refuse_send(
        Method::POST,
        "/v1/channels/x/members",
        &alice.token,
        json!({ "userIds": [] }),
        "invalid_path_parameter",
    )
    .await;
    api.refuse_send(
        Method::POST,
        &members,
        &alice.token,
        json!({ "userIds": too_many_members }),
        "too_many_members",
    )
    .await;
    api.refuse_send(
        Method::POST,
        &format!("/v1/channels/{}/members", Uuid::new_v4()),
        &alice.token,
        json!({ "userIds": [dave_id] }),
        "channel_not_found",
    )
    .await;
    api.refuse_send(
        Method::POST,
        &members,
        &alice.token,
        json!({ "userIds": [Uuid::new_v4()] }),
        "user_not_found",
    )
    .await;
    api.refuse(
        Method::DELETE,
        &format!("{members}/x"),
        Some(&alice.token),
        Body::None,
        "invalid_path_parameter",
    )
    .await;
    api.refuse(
        Method::DELETE,
        &format!("{members}/{alice_id}"),
        Some(&bob.token),
        Body::None,
        "not_channel_creator",
    )
    .await;
    api.refuse(
        Method::DELETE,
        &format!("/v1/channels/{}/members/{bob_id}", Uuid::new_v4()),
        Some(&alice.token),
        Body::None,
        "channel_not_found",
    )
    .await;
    api.refuse(
        Method::DELETE,
        &format!("{members}/{dave_id}"),
        Some(&alice.token),
        Body::None,
        "not_a_member",
    )
    .await;
    let left = api
        .call(
            Method::DELETE,
            &format!("{members}/{carol_id}"),
            Some(&carol.token),
            Body::None,
        )
        .await;
    assert_eq!(left.0, StatusCode::NO_CONTENT, "{}", left.1);

    // Sender keys and group messages.
    let sender_keys = format!("{channel_path}/sender-keys");
    let keys_body = |session: &str, distributions: Vec<Value>| json!({ "sessionId": session, "distributions": distributions });
    let all_keys = || {
        vec![
            sender_key(bob_id, bob.device_id),
            sender_key(alice_id, alice2.device_id),
        ]
    };
    success(
        &api.send(
            Method::POST,
            &sender_keys,
            &alice.token,
            keys_body(SESSION, all_keys()),
        )
        .await,
    );
    let mut bad_base64 = all_keys();
    bad_base64[0]["ciphertext"] = json!("!!");
    let mut legacy = all_keys();
    legacy[0]["envelopeType"] = json!("legacy");
    let mut duplicate = all_keys();
    duplicate.push(duplicate[0].clone());
    let too_many: Vec<Value> = (1..=101)
        .map(|i| sender_key(bob_id, DeviceId::new(i).unwrap()))
        .collect();
    let mut too_large = all_keys();
    too_large[0]["ciphertext"] = json!(encode_base64(&vec![1u8; 64 * 1024 + 1]));
    api.refuse_send(
        Method::POST,
        "/v1/channels/x/sender-keys",
        &alice.token,
        keys_body(SESSION, all_keys()),
        "invalid_path_parameter",
    )
    .await;
    api.refuse_send(
        Method::POST,
        &format!("/v1/channels/{}/sender-keys", Uuid::new_v4()),
        &alice.token,
        keys_body(SESSION, all_keys()),
        "channel_not_found",
    )
    .await;
    for (body, code) in [
        (
            keys_body("not a session!", all_keys()),
            "invalid_session_id",
        ),
        (keys_body(SESSION, bad_base64), "invalid_base64"),
        (keys_body(SESSION, legacy), "invalid_envelope"),
        (keys_body(SESSION, duplicate), "duplicate_envelope"),
        (keys_body(SESSION, too_many), "too_many_envelopes"),
        (keys_body(SESSION, too_large), "envelope_too_large"),
        (
            keys_body(SESSION, vec![sender_key(carol_id, carol.device_id)]),
            "not_a_member_device",
        ),
    ] {
        api.refuse_send(Method::POST, &sender_keys, &alice.token, body, code)
            .await;
    }
    let group = format!("{channel_path}/messages");
    let group_body = |id: &str, session: &str, ciphertext: &str| json!({ "clientMessageId": id, "sessionId": session, "ciphertext": ciphertext });
    let ciphertext = encode_base64(&[4u8; 64]);
    let sent = api
        .send(
            Method::POST,
            &group,
            &alice.token,
            group_body("g1", SESSION, &ciphertext),
        )
        .await;
    assert_eq!(sent.0, StatusCode::CREATED, "{}", sent.1);
    let again = api
        .send(
            Method::POST,
            &group,
            &alice.token,
            group_body("g1", SESSION, &ciphertext),
        )
        .await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
    let huge = encode_base64(&vec![1u8; 64 * 1024 + 1]);
    api.refuse_send(
        Method::POST,
        "/v1/channels/x/messages",
        &alice.token,
        group_body("g2", SESSION, &ciphertext),
        "invalid_path_parameter",
    )
    .await;
    api.refuse_send(
        Method::POST,
        &format!("/v1/channels/{}/messages", Uuid::new_v4()),
        &alice.token,
        group_body("g2", SESSION, &ciphertext),
        "channel_not_found",
    )
    .await;
    for (body, code) in [
        (
            group_body("bad id!", SESSION, &ciphertext),
            "invalid_client_message_id",
        ),
        (
            group_body("g2", "not a session!", &ciphertext),
            "invalid_session_id",
        ),
        (group_body("g2", SESSION, "!!"), "invalid_base64"),
        (group_body("g2", SESSION, ""), "invalid_envelope"),
        (group_body("g2", SESSION, &huge), "envelope_too_large"),
        (
            group_body(
                "g2",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                &ciphertext,
            ),
            "missing_sender_keys",
        ),
        (
            group_body("m1", SESSION, &ciphertext),
            "client_message_id_reused",
        ),
    ] {
        api.refuse_send(Method::POST, &group, &alice.token, body, code)
            .await;
    }
    let lonely = api
        .send(
            Method::POST,
            "/v1/channels",
            &carol.token,
            json!({ "members": [] }),
        )
        .await;
    let lonely_id = success(&lonely)["channelId"].as_str().unwrap().to_owned();
    api.refuse_send(
        Method::POST,
        &format!("/v1/channels/{lonely_id}/messages"),
        &carol.token,
        group_body("g3", SESSION, &ciphertext),
        "recipient_unreachable",
    )
    .await;

    // What every authenticated route, every body route answers.
    let ids = Ids {
        device: alice2.device_id,
        user: bob_id,
        message: message_id,
        channel: channel_id,
    };
    for operation in &contract.operations {
        let (method, path) = (operation.http_method(), concrete(&operation.template, &ids));
        let path = path.as_str();
        if operation.authenticated {
            api.refuse(method.clone(), path, None, Body::None, "missing_token")
                .await;
            api.refuse(
                method.clone(),
                path,
                Some("not-a-token"),
                Body::None,
                "invalid_token",
            )
            .await;
            api.refuse(
                method.clone(),
                path,
                Some(&carol2.token),
                Body::None,
                "device_removed",
            )
            .await;
        }
        if operation.has_body {
            let token = Some(alice.token.as_str());
            api.refuse(
                method.clone(),
                path,
                token,
                Body::Raw("application/json", b"{\"a\":".to_vec()),
                "malformed_json",
            )
            .await;
            api.refuse(
                method.clone(),
                path,
                token,
                Body::Raw("application/json", b"[]".to_vec()),
                "invalid_request_body",
            )
            .await;
            api.refuse(
                method.clone(),
                path,
                token,
                Body::Raw("text/plain", b"{}".to_vec()),
                "unsupported_media_type",
            )
            .await;
            let mut big = b"{\"a\":\"".to_vec();
            big.resize(settings.max_body_bytes + 16, b'a');
            big.extend_from_slice(b"\"}");
            api.refuse(
                method.clone(),
                path,
                token,
                Body::Raw("application/json", big),
                "payload_too_large",
            )
            .await;
        }
    }

    // Rate limits, on a server that allows one of everything.
    let one = Rate::per_minute(1, 1);
    let limited = TestServer::start_with(
        pool.clone(),
        Settings {
            rate_limits: RateLimitSettings {
                login_per_address: one,
                accounts_per_address: one,
                claims_per_device: one,
                sends_per_device: one,
                sockets_per_device: one,
                ..RateLimitSettings::default()
            },
            ..settings.clone()
        },
    )
    .await;
    let strict = Client {
        server: &limited,
        contract: &contract,
    };
    let api = &strict;
    let new_account = |name: &str| Body::Json(json!({ "username": name, "password": PASSWORD }));
    api.call(Method::POST, "/v1/accounts", None, new_account("frank"))
        .await;
    api.refuse(
        Method::POST,
        "/v1/accounts",
        None,
        new_account("grace"),
        "rate_limited",
    )
    .await;
    let dave_login =
        || Body::Json(json!({ "username": "dave", "password": PASSWORD, "deviceId": 0 }));
    let dave = TestDevice::from_login(
        serde_json::from_value(
            success(
                &api.call(Method::POST, "/v1/login", None, dave_login())
                    .await,
            )
            .clone(),
        )
        .unwrap(),
    );
    api.refuse(
        Method::POST,
        "/v1/login",
        None,
        dave_login(),
        "rate_limited",
    )
    .await;
    // Confirming a password counts as a login attempt.
    api.refuse_send(
        Method::DELETE,
        "/v1/accounts/me",
        &dave.token,
        json!({ "password": PASSWORD }),
        "rate_limited",
    )
    .await;
    let claim = json!({ "devices": [{ "userId": bob_id, "deviceId": bob.device_id }] });
    success(
        &api.send(Method::POST, "/v1/keys/claim", &dave.token, claim.clone())
            .await,
    );
    api.refuse_send(
        Method::POST,
        "/v1/keys/claim",
        &dave.token,
        claim,
        "rate_limited",
    )
    .await;
    // Refused (bob has shared no sender key) but counted.
    api.send(
        Method::POST,
        &group,
        &bob.token,
        group_body("b1", SESSION, &ciphertext),
    )
    .await;
    api.refuse_send(
        Method::POST,
        &group,
        &bob.token,
        group_body("b2", SESSION, &ciphertext),
        "rate_limited",
    )
    .await;
    api.refuse_send(Method::POST, "/v1/messages", &bob.token, json!({ "protocolVersion": 2, "clientMessageId": "b3", "recipientUserId": alice_id, "deviceEnvelopes": [] }), "rate_limited").await;
    limited.connect(&dave.token, None).await.close().await;
    let (status, _, body) = limited.try_connect(&dave.token).await.unwrap_err();
    contract.check(&Method::GET, "/v1/ws", &Body::None, status, &body);
    api.expect(&(status, body), "rate_limited");

    // The database gone: every operation that needs it says so.
    pool.close().await;
    let closed = Client {
        server: &server,
        contract: &contract,
    };
    let api = &closed;
    for operation in &contract.operations {
        let (method, path) = (operation.http_method(), concrete(&operation.template, &ids));
        let path = path.as_str();
        if operation.id == "healthz" {
            continue;
        }
        // Tokens are cached for a few seconds after use: dave's has never been used on
        // this server, so authenticating it asks the database first.
        let token = operation.authenticated.then_some(dave.token.as_str());
        let body = match operation.id.as_str() {
            "create_account" => Body::Json(json!({ "username": "henry", "password": PASSWORD })),
            "login" => {
                Body::Json(json!({ "username": "henry", "password": PASSWORD, "deviceId": 0 }))
            }
            _ if operation.has_body => Body::Json(json!({})),
            _ => Body::None,
        };
        api.refuse(method.clone(), path, token, body, "service_unavailable")
            .await;
    }

    let documented = contract.documented();
    let answered = contract.answered.lock().unwrap().clone();
    let missing: Vec<_> = documented.difference(&answered).collect();
    assert!(
        missing.is_empty(),
        "documented but never answered: {missing:#?}"
    );
}
