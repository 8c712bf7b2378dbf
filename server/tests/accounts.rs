//! Accounts, login, server-assigned device IDs, the device limit and device removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{PASSWORD, TestServer, assert_error, read};
use courier_protocol::api::accounts::LoginResponse;
use courier_protocol::api::devices::{DeviceLimitDetails, OwnDevicesResponse};
use courier_server::{MIGRATOR, Settings};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "MIGRATOR")]
async fn account_creation_and_login_register_a_device(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let account = server.create_account("Alice").await;
    assert_eq!(account.username, "alice", "usernames are stored lowercase");

    let login = server.login("ALICE").await;
    assert_eq!(login.user_id, account.user_id);
    assert_eq!(login.device_id.get(), 1, "the first device gets ID 1");
    assert!(login.access_token.starts_with("cdt_"));

    let (status, body) = server
        .call(Method::GET, "/v1/devices", Some(&login.access_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let devices: OwnDevicesResponse = serde_json::from_value(body).unwrap();
    assert_eq!(devices.devices.len(), 1);
    assert_eq!(devices.devices[0].device_id, login.device_id);
    assert!(!devices.devices[0].has_identity_keys);
    assert_eq!(devices.device_limit, 5);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn taken_usernames_and_bad_credentials_are_refused(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("bob").await;
    let again = server
        .call(
            Method::POST,
            "/v1/accounts",
            None,
            Some(json!({"username": "BOB", "password": PASSWORD})),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "username_taken");

    let wrong_password = server
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "bob", "password": "not the password", "deviceId": 0})),
        )
        .await;
    assert_error(
        &wrong_password,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let unknown_user = server
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "nobody", "password": PASSWORD, "deviceId": 0})),
        )
        .await;
    assert_error(
        &unknown_user,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_eq!(
        wrong_password.1["error"]["message"], unknown_user.1["error"]["message"],
        "no username probing"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn username_rules_are_enforced(pool: PgPool) {
    let server = TestServer::start(pool).await;
    for bad in [
        "ab",
        "1abc",
        "has space",
        "way_too_long_a_username_for_courier",
        "émile",
        "",
    ] {
        let answer = server
            .call(
                Method::POST,
                "/v1/accounts",
                None,
                Some(json!({"username": bad, "password": PASSWORD})),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_username");
    }
    for bad in ["short", &"x".repeat(257)] {
        let answer = server
            .call(
                Method::POST,
                "/v1/accounts",
                None,
                Some(json!({"username": "carol", "password": bad})),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_password");
    }
    server.create_account("carol.d-e_f").await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_logins_get_distinct_monotonic_device_ids(pool: PgPool) {
    // 20 logins to one account at once are past the per-account login limit (10 at
    // once); this test is about racing registrations, so without limits.
    let server = TestServer::start_with(
        pool,
        Settings {
            device_limit: 25,
            rate_limits: courier_server::rate_limits::RateLimitSettings::off(),
            ..Settings::default()
        },
    )
    .await;
    server.create_account("dave").await;

    let logins = futures::future::join_all((0..20).map(|_| server.login("dave"))).await;
    let ids: BTreeSet<u32> = logins.iter().map(|login| login.device_id.get()).collect();
    assert_eq!(
        ids,
        (1..=20).collect::<BTreeSet<u32>>(),
        "20 racing logins get IDs 1..=20, each once"
    );
    let tokens: BTreeSet<&str> = logins
        .iter()
        .map(|login| login.access_token.as_str())
        .collect();
    assert_eq!(tokens.len(), 20);

    // Removing a device does not free its ID: the next login gets 21.
    let first = &logins[0];
    let (status, _) = server
        .call(
            Method::DELETE,
            "/v1/devices/20",
            Some(&first.access_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(server.login("dave").await.device_id.get(), 21);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_device_limit_answers_with_count_limit_and_devices(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("erin").await;
    let mut logins: Vec<LoginResponse> = Vec::new();
    for _ in 0..5 {
        logins.push(server.login("erin").await);
    }
    let refused = server.try_login("erin").await;
    assert_error(&refused, StatusCode::CONFLICT, "device_limit_reached");
    let details: DeviceLimitDetails =
        serde_json::from_value(refused.1["error"]["details"].clone()).unwrap();
    assert_eq!(details.count, 5);
    assert_eq!(details.limit, 5);
    let listed: Vec<u32> = details
        .devices
        .iter()
        .map(|device| device.device_id.get())
        .collect();
    assert_eq!(listed, vec![1, 2, 3, 4, 5]);

    // Replacing a device in the same login makes room, and revokes the replaced one.
    let (status, body) = server
        .call(Method::POST, "/v1/login", None, Some(json!({"username": "erin", "password": PASSWORD, "deviceId": 0, "replaceDeviceId": 2})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deviceId"], 6);
    let old = server
        .call(
            Method::GET,
            "/v1/devices",
            Some(&logins[1].access_token),
            None,
        )
        .await;
    assert_error(&old, StatusCode::UNAUTHORIZED, "device_removed");

    // Replacing a device that is not there changes nothing.
    let missing = server
        .call(Method::POST, "/v1/login", None, Some(json!({"username": "erin", "password": PASSWORD, "deviceId": 0, "replaceDeviceId": 2})))
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "device_not_found");
    assert_error(
        &server.try_login("erin").await,
        StatusCode::CONFLICT,
        "device_limit_reached",
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn removing_a_device_revokes_its_token_and_deletes_its_keys(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("frank").await;
    let phone = server.new_published_device("frank").await;
    let laptop = server.new_published_device("frank").await;
    let (_, own) = server
        .call(Method::GET, "/v1/devices", Some(&laptop.token), None)
        .await;
    let own: OwnDevicesResponse = serde_json::from_value(own).unwrap();
    assert!(
        own.devices.iter().all(|device| device.has_identity_keys),
        "{own:?}"
    );

    let path = format!("/v1/keys/devices/{}", phone.user_id);
    let (_, before) = server
        .call(Method::GET, &path, Some(&laptop.token), None)
        .await;
    assert_eq!(before["devices"].as_array().unwrap().len(), 2);

    let removed = server
        .call(
            Method::DELETE,
            &format!("/v1/devices/{}", phone.device_id),
            Some(&laptop.token),
            None,
        )
        .await;
    assert_eq!(removed.0, StatusCode::NO_CONTENT);

    let revoked = server
        .call(Method::GET, "/v1/keys/count", Some(&phone.token), None)
        .await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED, "device_removed");
    let (_, after) = server
        .call(Method::GET, &path, Some(&laptop.token), None)
        .await;
    let remaining: Vec<u64> = after["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_u64().unwrap())
        .collect();
    assert_eq!(remaining, vec![u64::from(laptop.device_id.get())]);

    let again = server
        .call(
            Method::DELETE,
            &format!("/v1/devices/{}", phone.device_id),
            Some(&laptop.token),
            None,
        )
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "device_not_found");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_user_cannot_remove_another_users_device(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("gina").await;
    server.create_account("hank").await;
    let gina = server.new_device("gina").await;
    let hank = server.new_device("hank").await;
    // Hank's device 1 and Gina's device 1 share an ID; Hank's token only reaches his own.
    let answer = server
        .call(
            Method::DELETE,
            &format!("/v1/devices/{}", gina.device_id),
            Some(&hank.token),
            None,
        )
        .await;
    assert_eq!(answer.0, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .call(Method::GET, "/v1/devices", Some(&gina.token), None)
            .await
            .0,
        StatusCode::OK,
        "Gina's device is untouched"
    );
    assert_error(
        &server
            .call(Method::GET, "/v1/devices", Some(&hank.token), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "device_removed",
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn logging_in_again_as_a_device_rotates_its_token(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("ivan").await;
    let first = server.login("ivan").await;
    let (status, body) = server
        .call(Method::POST, "/v1/login", None, Some(json!({"username": "ivan", "password": PASSWORD, "deviceId": first.device_id.get()})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second: LoginResponse = serde_json::from_value(body).unwrap();
    assert_eq!(second.device_id, first.device_id);
    assert_ne!(second.access_token, first.access_token);
    assert_error(
        &server
            .call(Method::GET, "/v1/devices", Some(&first.access_token), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_eq!(
        server
            .call(Method::GET, "/v1/devices", Some(&second.access_token), None)
            .await
            .0,
        StatusCode::OK
    );

    let unknown = server
        .call(
            Method::POST,
            "/v1/login",
            None,
            Some(json!({"username": "ivan", "password": PASSWORD, "deviceId": 99})),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "device_not_found");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn tokens_are_stored_only_as_hashes(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    server.create_account("judy").await;
    let login = server.login("judy").await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM devices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(
        !stored
            .windows(8)
            .any(|w| login.access_token.as_bytes().windows(8).any(|t| t == w))
    );
    let password_hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(password_hash.starts_with("$argon2id$"));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_refused(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("judy").await;
    let login = server.login("judy").await;
    let with_header = |value: String| {
        server
            .http
            .get(server.url("/v1/devices"))
            .header("authorization", value)
            .send()
    };
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = with_header(format!("{scheme} {}", login.access_token))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "scheme {scheme}");
    }
    let refused = read(
        with_header(format!("Basic {}", login.access_token))
            .await
            .unwrap(),
    )
    .await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "invalid_token");
}
