//! Rate limits: login per account and per address (the trusted proxy header only when
//! configured), account creation, key claims per claiming and per target device, sends,
//! WebSocket connects. Quotas are tiny and per hour, so nothing here depends on timing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{PASSWORD, TestDevice, TestServer, assert_error, v2_body};
use courier_protocol::api::keys::{ClaimKeysResponse, SignedKey};
use courier_protocol::api::stream::InboxPage;
use courier_server::rate_limits::{Rate, RateLimitSettings};
use courier_server::{MIGRATOR, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Generous everywhere, so that a test meets only the limit it sets.
fn generous() -> RateLimitSettings {
    let many = Rate::per_hour(10_000, 10_000);
    RateLimitSettings {
        enabled: true,
        client_ip_header: None,
        login_per_address: many,
        login_per_account: many,
        accounts_per_address: many,
        claims_per_device: many,
        claims_per_target: many,
        sends_per_device: many,
        sockets_per_device: many,
        sockets_per_address: many,
        ..RateLimitSettings::default()
    }
}

async fn start(pool: PgPool, rate_limits: RateLimitSettings) -> TestServer {
    TestServer::start_with(
        pool,
        Settings {
            rate_limits,
            ..Settings::default()
        },
    )
    .await
}

/// A request with extra headers; status, `Retry-After` and JSON body.
async fn call_with(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Option<String>, Value) {
    let mut request = server.http.request(method, server.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let (status, json) = common::read(response).await;
    (status, retry_after, json)
}

/// Asserts a `429 rate_limited` answer of `limit`, with `Retry-After` in whole seconds
/// (at least one) matching the details.
#[track_caller]
fn assert_rate_limited(answer: &(StatusCode, Option<String>, Value), limit: &str) {
    let (status, retry_after, body) = answer;
    assert_error(
        &(*status, body.clone()),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert_eq!(body["error"]["details"]["limit"], limit, "{body}");
    let seconds: u64 = retry_after
        .as_deref()
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(seconds >= 1, "{seconds}");
    assert_eq!(
        body["error"]["details"]["retryAfterSeconds"], seconds,
        "{body}"
    );
}

fn login_body(username: &str, password: &str) -> Value {
    json!({ "username": username, "password": password, "deviceId": 0 })
}

async fn login(
    server: &TestServer,
    username: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    call_with(
        server,
        Method::POST,
        "/v1/login",
        None,
        headers,
        login_body(username, password),
    )
    .await
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn wrong_passwords_lock_one_account_and_then_even_the_right_one_waits(pool: PgPool) {
    let server = start(
        pool.clone(),
        RateLimitSettings {
            login_per_account: Rate::per_hour(3, 3),
            ..generous()
        },
    )
    .await;
    server.create_account("alice").await;
    server.create_account("bob").await;

    for _ in 0..3 {
        let answer = login(&server, "alice", "wrong password!", &[]).await;
        assert_error(
            &(answer.0, answer.2),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    // The right password is not even checked now, under any spelling of the name.
    assert_rate_limited(
        &login(&server, "alice", PASSWORD, &[]).await,
        "login_per_account",
    );
    assert_rate_limited(
        &login(&server, "ALICE", PASSWORD, &[]).await,
        "login_per_account",
    );
    let alice_devices: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM devices d JOIN users u ON u.user_id = d.user_id WHERE u.username = 'alice'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(alice_devices, 0, "a refused login registers nothing");
    // Another account, from the same address, is not affected.
    let (status, _, body) = login(&server, "bob", PASSWORD, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn login_attempts_count_per_address_and_the_proxy_header_only_when_trusted(pool: PgPool) {
    let per_address = RateLimitSettings {
        login_per_address: Rate::per_hour(2, 2),
        ..generous()
    };
    let untrusting = start(pool.clone(), per_address.clone()).await;
    let trusting = start(
        pool,
        RateLimitSettings {
            client_ip_header: Some("fly-client-ip".parse().unwrap()),
            ..per_address
        },
    )
    .await;
    untrusting.create_account("carol").await;

    // Not trusted: whatever the header says, every attempt comes from 127.0.0.1.
    for address in ["203.0.113.1", "203.0.113.2"] {
        let (status, _, body) = login(
            &untrusting,
            "carol",
            PASSWORD,
            &[("fly-client-ip", address)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_rate_limited(
        &login(
            &untrusting,
            "carol",
            PASSWORD,
            &[("fly-client-ip", "203.0.113.3")],
        )
        .await,
        "login_per_address",
    );

    // Trusted: each address has its own allowance.
    for _ in 0..2 {
        let (status, _, body) = login(
            &trusting,
            "carol",
            "wrong password!",
            &[("Fly-Client-IP", "203.0.113.1")],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_rate_limited(
        &login(
            &trusting,
            "carol",
            PASSWORD,
            &[("Fly-Client-IP", "203.0.113.1")],
        )
        .await,
        "login_per_address",
    );
    let (status, _, body) = login(
        &trusting,
        "carol",
        PASSWORD,
        &[("Fly-Client-IP", "203.0.113.2")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without the header (or with one that does not parse), the peer address counts.
    let (status, _, body) = login(&trusting, "carol", PASSWORD, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn account_creation_is_limited_per_address_and_a_refusal_creates_nothing(pool: PgPool) {
    let server = start(
        pool.clone(),
        RateLimitSettings {
            accounts_per_address: Rate::per_hour(2, 2),
            ..generous()
        },
    )
    .await;
    server.create_account("dave").await;
    server.create_account("erin").await;
    let answer = call_with(
        &server,
        Method::POST,
        "/v1/accounts",
        None,
        &[],
        json!({ "username": "frank", "password": PASSWORD }),
    )
    .await;
    assert_rate_limited(&answer, "accounts_per_address");
    let frank: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE username = 'frank'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(frank, 0);
}

/// Uploads `count` one-time keys (and a fallback key, when given) for `device`.
async fn publish_keys(
    server: &TestServer,
    device: &TestDevice,
    count: usize,
    fallback: Option<&SignedKey>,
) {
    let keys: Vec<SignedKey> = (0..count)
        .map(|i| device.one_time_key(&format!("otk{i}")))
        .collect();
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(json!({ "oneTimeKeys": keys })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    if let Some(fallback) = fallback {
        let (status, body) = server
            .call(
                Method::PUT,
                "/v1/keys/fallback",
                Some(&device.token),
                Some(serde_json::to_value(fallback).unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn one_time_key_count(server: &TestServer, device: &TestDevice) -> u64 {
    let (status, body) = server
        .call(Method::GET, "/v1/keys/count", Some(&device.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["oneTimeKeyCount"].as_u64().unwrap()
}

fn claim_body(devices: &[&TestDevice]) -> Value {
    let devices: Vec<Value> = devices
        .iter()
        .map(|device| json!({ "userId": device.user_id, "deviceId": device.device_id }))
        .collect();
    json!({ "devices": devices })
}

async fn claim(
    server: &TestServer,
    claimer: &TestDevice,
    targets: &[&TestDevice],
) -> (StatusCode, Option<String>, Value) {
    call_with(
        server,
        Method::POST,
        "/v1/keys/claim",
        Some(&claimer.token),
        &[],
        claim_body(targets),
    )
    .await
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn key_claims_are_limited_per_claiming_device_one_per_device_named(pool: PgPool) {
    let server = start(
        pool,
        RateLimitSettings {
            claims_per_device: Rate::per_hour(3, 3),
            ..generous()
        },
    )
    .await;
    server.create_account("gina").await;
    server.create_account("mallory").await;
    let first = server.new_published_device("gina").await;
    let second = server.new_published_device("gina").await;
    publish_keys(&server, &first, 5, None).await;
    publish_keys(&server, &second, 5, None).await;
    let claimer = server.new_published_device("mallory").await;
    let other_claimer = server.new_published_device("mallory").await;

    // Two devices named cost two; one more costs the third.
    let (status, _, body) = claim(&server, &claimer, &[&first, &second]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = claim(&server, &claimer, &[&first]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_rate_limited(
        &claim(&server, &claimer, &[&second]).await,
        "claims_per_device",
    );
    assert_eq!(
        one_time_key_count(&server, &second).await,
        4,
        "a refused claim takes no key"
    );
    // The limit is the claiming device's: another one claims as before.
    let (status, _, body) = claim(&server, &other_claimer, &[&second]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(one_time_key_count(&server, &second).await, 3);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_device_claimed_too_often_is_served_its_fallback_key_and_keeps_its_one_time_keys(
    pool: PgPool,
) {
    let server = start(
        pool,
        RateLimitSettings {
            claims_per_target: Rate::per_hour(2, 2),
            ..generous()
        },
    )
    .await;
    server.create_account("hana").await;
    server.create_account("mallory").await;
    let target = server.new_published_device("hana").await;
    let fallback = target.fallback_key("fb1");
    publish_keys(&server, &target, 5, Some(&fallback)).await;
    // A device that published no fallback key.
    let bare = server.new_published_device("hana").await;
    publish_keys(&server, &bare, 6, None).await;
    let claimers = [
        server.new_published_device("mallory").await,
        server.new_published_device("mallory").await,
    ];

    let mut fallbacks = 0;
    for round in 0..6 {
        let (status, _, body) = claim(&server, &claimers[round % 2], &[&target, &bare]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: ClaimKeysResponse = serde_json::from_value(body).unwrap();
        assert!(answer.unavailable.is_empty());
        let key = |device: &TestDevice| {
            answer
                .keys
                .iter()
                .find(|key| key.user_id == device.user_id && key.device_id == device.device_id)
                .unwrap()
                .clone()
        };
        let served = key(&target);
        if round < 2 {
            assert!(!served.fallback, "round {round}: a one-time key");
        } else {
            assert!(served.fallback, "round {round}: the fallback key");
            assert_eq!(served.key, fallback);
            fallbacks += 1;
        }
        // Without a fallback key a one-time key is still handed out: reachable first.
        assert!(!key(&bare).fallback);
    }
    assert_eq!(fallbacks, 4);
    assert_eq!(
        one_time_key_count(&server, &target).await,
        3,
        "only the claims within the limit took one-time keys"
    );
    assert_eq!(one_time_key_count(&server, &bare).await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn sends_are_limited_per_device_and_a_refused_send_stores_nothing(pool: PgPool) {
    let server = start(
        pool,
        RateLimitSettings {
            sends_per_device: Rate::per_hour(2, 2),
            ..generous()
        },
    )
    .await;
    server.create_account("ivan").await;
    server.create_account("judy").await;
    let sender = server.new_published_device("ivan").await;
    let other_sender = server.new_published_device("ivan").await;
    let recipient = server.new_published_device("judy").await;
    // Every device of the recipient, and the sender's other device.
    let body = |id: &str, own_other: &TestDevice| {
        v2_body(
            id,
            recipient.user_id,
            &[
                (recipient.user_id, recipient.device_id),
                (own_other.user_id, own_other.device_id),
            ],
            id,
        )
    };

    for id in ["m1", "m2"] {
        let (status, _, answer) = call_with(
            &server,
            Method::POST,
            "/v1/messages",
            Some(&sender.token),
            &[],
            body(id, &other_sender),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let refused = call_with(
        &server,
        Method::POST,
        "/v1/messages",
        Some(&sender.token),
        &[],
        body("m3", &other_sender),
    )
    .await;
    assert_rate_limited(&refused, "sends_per_device");

    // The limit is the sending device's own.
    let (status, _, answer) = call_with(
        &server,
        Method::POST,
        "/v1/messages",
        Some(&other_sender.token),
        &[],
        body("m4", &sender),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    let (status, page) = server
        .call(Method::GET, "/v1/inbox", Some(&recipient.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let page: InboxPage = serde_json::from_value(page).unwrap();
    let texts: Vec<String> = page
        .items
        .iter()
        .filter_map(|item| match item {
            courier_protocol::api::stream::StreamItem::Envelope(envelope) => {
                Some(common::envelope_text(envelope))
            }
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts.iter().all(|text| !text.ends_with(":m3")), "{texts:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn websocket_connects_are_limited_per_device(pool: PgPool) {
    let server = start(
        pool,
        RateLimitSettings {
            sockets_per_device: Rate::per_hour(2, 2),
            ..generous()
        },
    )
    .await;
    server.create_account("kate").await;
    let device = server.new_published_device("kate").await;
    let other = server.new_published_device("kate").await;
    for _ in 0..2 {
        server.try_connect(&device.token).await.unwrap();
    }
    assert_rate_limited(
        &server.try_connect(&device.token).await.unwrap_err(),
        "sockets_per_device",
    );
    server.try_connect(&other.token).await.unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn websocket_connects_are_limited_per_address(pool: PgPool) {
    let server = start(
        pool,
        RateLimitSettings {
            sockets_per_address: Rate::per_hour(2, 2),
            ..generous()
        },
    )
    .await;
    server.create_account("liam").await;
    let first = server.new_published_device("liam").await;
    let second = server.new_published_device("liam").await;
    server.try_connect(&first.token).await.unwrap();
    server.try_connect(&second.token).await.unwrap();
    assert_rate_limited(
        &server.try_connect(&first.token).await.unwrap_err(),
        "sockets_per_address",
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn off_turns_every_limit_off(pool: PgPool) {
    let tiny = Rate::per_hour(1, 1);
    let server = start(
        pool,
        RateLimitSettings {
            enabled: false,
            login_per_address: tiny,
            login_per_account: tiny,
            accounts_per_address: tiny,
            sockets_per_device: tiny,
            ..generous()
        },
    )
    .await;
    server.create_account("mona").await;
    server.create_account("nina").await;
    let device = server.new_published_device("mona").await;
    server.new_published_device("mona").await;
    for _ in 0..2 {
        server.try_connect(&device.token).await.unwrap();
    }
}
