//! Administering Courier end to end: registration modes and tokens, the admin API on the
//! private listener (and never on the public one), deactivating a user and a user
//! deleting the account (sockets close, tokens die, senders are refused as stale, the
//! username stays reserved), and `courier-server admin` against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{PASSWORD, Received, TestServer, TestUser, assert_error, read, v2_body};
use courier_protocol::api::messages::DeviceListMismatch;
use courier_protocol::api::stream::close_code;
use courier_protocol::{DeviceId, UserId};
use courier_server::admin::api::{
    DeactivationReport, IssuedRegistrationToken, RegistrationTokenList, ServerStats, TokenState,
    UserDetails, UserList,
};
use courier_server::config::{AdminToken, RegistrationMode};
use courier_server::{MIGRATOR, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";

fn settings(registration: RegistrationMode) -> Settings {
    Settings {
        registration,
        admin_token: Some(ADMIN_TOKEN.parse::<AdminToken>().unwrap()),
        ..Settings::default()
    }
}

/// A request to the admin API with the admin token.
async fn admin(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .request(method, server.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn issue_token(server: &TestServer, body: Value) -> IssuedRegistrationToken {
    let (status, answer) = admin(
        server,
        Method::POST,
        "/admin/v1/registration-tokens",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    serde_json::from_value(answer).unwrap()
}

async fn create(server: &TestServer, username: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"username": username, "password": PASSWORD});
    if let Some(token) = token {
        body["registrationToken"] = json!(token);
    }
    server
        .call(Method::POST, "/v1/accounts", None, Some(body))
        .await
}

async fn send(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    server
        .call(Method::POST, "/v1/messages", Some(token), Some(body))
        .await
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_closed_server_takes_no_accounts_and_existing_ones_keep_working(pool: PgPool) {
    // Accounts made while registration was open keep logging in after it closes.
    let open = TestServer::start_with(pool.clone(), settings(RegistrationMode::Open)).await;
    open.create_account("alice").await;
    open.stop().await.unwrap();

    let server = TestServer::start_with(pool.clone(), settings(RegistrationMode::Closed)).await;
    let refused = create(&server, "bob", None).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "registration_closed");
    // A token does not open a closed server.
    let token = issue_token(&server, json!({})).await;
    let refused = create(&server, "bob", Some(&token.token)).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "registration_closed");
    assert_eq!(count(&pool, "SELECT count(*) FROM users").await, 1);
    server.login("alice").await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn token_registration_takes_valid_tokens_only_and_counts_their_uses(pool: PgPool) {
    let server = TestServer::start_with(pool.clone(), settings(RegistrationMode::Token)).await;
    assert_error(
        &create(&server, "alice", None).await,
        StatusCode::FORBIDDEN,
        "invalid_registration_token",
    );
    assert_error(
        &create(&server, "alice", Some("crt_made-up")).await,
        StatusCode::FORBIDDEN,
        "invalid_registration_token",
    );

    // A single-use token creates one account.
    let single = issue_token(&server, json!({"usesAllowed": 1})).await;
    assert!(single.token.starts_with("crt_"), "{}", single.token);
    assert_eq!(single.info.state, TokenState::Valid);
    let (status, body) = create(&server, "alice", Some(&single.token)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_error(
        &create(&server, "bob", Some(&single.token)).await,
        StatusCode::FORBIDDEN,
        "invalid_registration_token",
    );

    // A refused username does not use up a multi-use token.
    let double = issue_token(&server, json!({"usesAllowed": 2, "expiresInSecs": 3600})).await;
    assert!(double.info.expires_at.is_some());
    assert_error(
        &create(&server, "alice", Some(&double.token)).await,
        StatusCode::CONFLICT,
        "username_taken",
    );
    for name in ["bob", "carol"] {
        let (status, body) = create(&server, name, Some(&double.token)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_error(
        &create(&server, "dave", Some(&double.token)).await,
        StatusCode::FORBIDDEN,
        "invalid_registration_token",
    );

    // Revoked and expired tokens are refused.
    let revoked = issue_token(&server, json!({})).await;
    let (status, body) = admin(
        &server,
        Method::DELETE,
        &format!("/admin/v1/registration-tokens/{}", revoked.info.token_id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "revoked");
    assert_error(
        &create(&server, "dave", Some(&revoked.token)).await,
        StatusCode::FORBIDDEN,
        "invalid_registration_token",
    );
    let expired = issue_token(&server, json!({"expiresInSecs": 3600})).await;
    sqlx::query(
        "UPDATE registration_tokens SET expires_at = now() - interval '1 second' WHERE token_id = $1",
    )
    .bind(expired.info.token_id)
    .execute(&pool)
    .await
    .unwrap();
    assert_error(
        &create(&server, "dave", Some(&expired.token)).await,
        StatusCode::FORBIDDEN,
        "invalid_registration_token",
    );

    // The list says each token's state and uses, and never the tokens.
    let (status, body) = admin(&server, Method::GET, "/admin/v1/registration-tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.to_string().contains(&single.token[4..]), "{body}");
    let list: RegistrationTokenList = serde_json::from_value(body).unwrap();
    let state_of = |id| {
        let token = list.tokens.iter().find(|t| t.token_id == id).unwrap();
        (token.state, token.uses)
    };
    assert_eq!(state_of(single.info.token_id), (TokenState::UsedUp, 1));
    assert_eq!(state_of(double.info.token_id), (TokenState::UsedUp, 2));
    assert_eq!(state_of(revoked.info.token_id), (TokenState::Revoked, 0));
    assert_eq!(state_of(expired.info.token_id), (TokenState::Expired, 0));
    assert_eq!(count(&pool, "SELECT count(*) FROM users").await, 3);

    // Bad requests get the one error shape.
    for body in [
        json!({"usesAllowed": 0}),
        json!({"expiresInSecs": 0}),
        json!({"uses": 3}),
    ] {
        let answer = admin(
            &server,
            Method::POST,
            "/admin/v1/registration-tokens",
            Some(body),
        )
        .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request_body");
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn racing_registrations_take_a_single_use_token_once(pool: PgPool) {
    let server = TestServer::start_with(pool.clone(), settings(RegistrationMode::Token)).await;
    let single = issue_token(&server, json!({"usesAllowed": 1})).await;
    let names: Vec<String> = (0..8).map(|i| format!("racer{i}")).collect();
    let answers = futures::future::join_all(
        names
            .iter()
            .map(|name| create(&server, name, Some(&single.token))),
    )
    .await;
    let created = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{answers:?}");
    for answer in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_error(answer, StatusCode::FORBIDDEN, "invalid_registration_token");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM users").await, 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_open_server_ignores_registration_tokens(pool: PgPool) {
    let server = TestServer::start_with(pool, settings(RegistrationMode::Open)).await;
    let (status, body) = create(&server, "alice", Some("crt_anything")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_admin_api_needs_the_admin_token_and_only_the_private_listener_serves_it(pool: PgPool) {
    let server = TestServer::start_with(pool.clone(), settings(RegistrationMode::Open)).await;
    let device = server.new_device_of_new_user("alice").await;
    // Not on the public listener, whatever the token.
    for token in [ADMIN_TOKEN, device.as_str()] {
        let answer = server
            .call(Method::GET, "/admin/v1/stats", Some(token), None)
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    let ask = |token: Option<&'static str>| {
        let mut request = server.http.get(server.admin_url("/admin/v1/stats"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { read(request.send().await.unwrap()).await }
    };
    assert_error(&ask(None).await, StatusCode::UNAUTHORIZED, "missing_token");
    assert_error(
        &ask(Some("test-admin-token-0123456789abcdef012345678X")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    // A device's token is not an admin token.
    let answer = read(
        server
            .http
            .get(server.admin_url("/admin/v1/stats"))
            .bearer_auth(&device)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_token");
    let (status, _) = ask(Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await.unwrap();

    // Without an admin token configured, the admin API is off and says how to turn it on.
    let off = TestServer::start(pool).await;
    let answer = read(
        off.http
            .get(off.admin_url("/admin/v1/stats"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("COURIER_ADMIN_TOKEN")
    );
}

impl TestServer {
    /// A new account's first device's token.
    async fn new_device_of_new_user(&self, name: &str) -> String {
        self.create_account(name).await;
        self.login(name).await.access_token
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn users_are_listed_a_page_at_a_time_and_found_by_id_or_name(pool: PgPool) {
    let server = TestServer::start_with(pool, settings(RegistrationMode::Open)).await;
    let mut ids = Vec::new();
    for name in ["anna", "anton", "bert", "an_na"] {
        ids.push(server.create_account(name).await.user_id);
    }
    server.login("anton").await;

    let page = |query: &'static str| {
        let server = &server;
        async move {
            let (status, body) = admin(server, Method::GET, query, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_value::<UserList>(body).unwrap()
        }
    };
    let names = |list: &UserList| {
        list.users
            .iter()
            .map(|u| u.username.clone())
            .collect::<Vec<_>>()
    };
    let first = page("/admin/v1/users?limit=2").await;
    assert_eq!(names(&first), ["an_na", "anna"]);
    assert_eq!(first.next_after.as_deref(), Some("anna"));
    let second = page("/admin/v1/users?limit=2&after=anna").await;
    assert_eq!(names(&second), ["anton", "bert"]);
    assert_eq!(second.users[0].active_devices, 1);
    assert!(second.next_after.is_none());
    // A prefix search takes `_` literally.
    assert_eq!(names(&page("/admin/v1/users?search=AN_").await), ["an_na"]);
    assert_eq!(names(&page("/admin/v1/users?search=ant").await), ["anton"]);

    for key in ["anton".to_owned(), ids[1].to_string()] {
        let (status, body) = admin(
            &server,
            Method::GET,
            &format!("/admin/v1/users/{key}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let details: UserDetails = serde_json::from_value(body).unwrap();
        assert_eq!(details.user.user_id, ids[1]);
        assert_eq!(details.devices.len(), 1);
    }
    let unknown = admin(&server, Method::GET, "/admin/v1/users/nobody", None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "user_not_found");
    let bad = admin(&server, Method::GET, "/admin/v1/users/no%20such", None).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_path_parameter");
    let bad = admin(&server, Method::GET, "/admin/v1/users?limit=0", None).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_query_parameter");
}

/// The message Bob's first device sends Alice: one envelope per device of the two users
/// (but the sending one).
fn to_alice(client_id: &str, alice: &TestUser, bob: &TestUser) -> Value {
    let mut devices = alice.refs();
    devices.extend(bob.refs().into_iter().skip(1));
    v2_body(client_id, alice.id, &devices, "hello")
}

fn pairs(list: &[courier_protocol::api::keys::DeviceRef]) -> BTreeSet<(UserId, u32)> {
    list.iter()
        .map(|d| (d.user_id, d.device_id.get()))
        .collect()
}

/// What every deactivation leaves, however it came about: the devices' tokens answer
/// `device_removed`, the password logs in no more, the username stays taken, the key
/// directory lists no device, senders are refused as stale, and nothing waits for the
/// removed devices.
async fn assert_deactivated(server: &TestServer, pool: &PgPool, alice: &TestUser, bob: &TestUser) {
    for device in &alice.devices {
        let answer = server
            .call(Method::GET, "/v1/devices", Some(&device.token), None)
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "device_removed");
    }
    assert_error(
        &server.try_login("alice").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_error(
        &create(server, "Alice", None).await,
        StatusCode::CONFLICT,
        "username_taken",
    );
    let (status, directory) = server
        .call(
            Method::GET,
            &format!("/v1/keys/devices/{}", alice.id),
            Some(&bob.devices[0].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{directory}");
    assert_eq!(directory["devices"], json!([]));

    // Bob's send with the devices he knew: refused, Alice's devices named stale.
    let answer = send(server, &bob.devices[0].token, to_alice("after", alice, bob)).await;
    assert_error(&answer, StatusCode::CONFLICT, "device_list_mismatch");
    let mismatch: DeviceListMismatch =
        serde_json::from_value(answer.1["error"]["details"].clone()).unwrap();
    assert_eq!(pairs(&mismatch.stale), pairs_of(alice));
    // With the fresh (empty) list there is no one to send to.
    let bob_only: Vec<_> = bob.refs().into_iter().skip(1).collect();
    let answer = send(
        server,
        &bob.devices[0].token,
        v2_body("after", alice.id, &bob_only, "hello"),
    )
    .await;
    assert_error(&answer, StatusCode::CONFLICT, "recipient_unreachable");

    let waiting = count(
        pool,
        &format!(
            "SELECT count(*) FROM message_envelopes WHERE recipient_user_id = '{}' AND delivered_at IS NULL",
            alice.id
        ),
    )
    .await;
    assert_eq!(waiting, 0, "nothing waits for a removed device");
    let keys = count(
        pool,
        &format!(
            "SELECT (SELECT count(*) FROM one_time_keys WHERE user_id = '{0}')
                  + (SELECT count(*) FROM device_identity_keys WHERE user_id = '{0}')",
            alice.id
        ),
    )
    .await;
    assert_eq!(keys, 0, "the keys are deleted");
}

fn pairs_of(user: &TestUser) -> BTreeSet<(UserId, u32)> {
    user.devices
        .iter()
        .map(|d| (d.user_id, d.device_id.get()))
        .collect()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_operator_deactivates_a_user_and_everything_it_had_stops(pool: PgPool) {
    let server = TestServer::start_with(pool.clone(), settings(RegistrationMode::Open)).await;
    let alice = TestUser::new(&server, "alice", 2).await;
    let bob = TestUser::new(&server, "bob", 2).await;
    // Alice's first device is online; a message waits for her second.
    let mut socket = server.connect(&alice.devices[0].token, None).await;
    assert!(matches!(socket.next().await, Received::CaughtUp(_)));
    let (status, body) = send(
        &server,
        &bob.devices[0].token,
        to_alice("before", &alice, &bob),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(matches!(socket.next().await, Received::Envelope(_)));

    let (status, body) = admin(
        &server,
        Method::POST,
        &format!("/admin/v1/users/{}/deactivate", alice.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report: DeactivationReport = serde_json::from_value(body).unwrap();
    assert_eq!(
        report.removed_devices,
        alice
            .devices
            .iter()
            .map(|d| d.device_id)
            .collect::<Vec<DeviceId>>()
    );
    assert_eq!(
        report.dropped_items, 2,
        "both of Alice's envelopes were pending"
    );
    assert!(!report.already_deactivated);
    // Her open socket closes at once, as a removed device's does.
    assert!(
        matches!(
            socket.next().await,
            Received::Closed(Some(close_code::DEVICE_REMOVED))
        ),
        "the deactivated user's socket closes"
    );
    assert_deactivated(&server, &pool, &alice, &bob).await;

    // The operator sees it; a second deactivation changes nothing.
    let (_, body) = admin(&server, Method::GET, "/admin/v1/users/alice", None).await;
    let details: UserDetails = serde_json::from_value(body).unwrap();
    assert!(details.user.deactivated_at.is_some());
    assert!(details.devices.is_empty());
    let (_, body) = admin(
        &server,
        Method::POST,
        "/admin/v1/users/alice/deactivate",
        None,
    )
    .await;
    let again: DeactivationReport = serde_json::from_value(body).unwrap();
    assert!(again.already_deactivated && again.removed_devices.is_empty());

    // Bob's messages still reach his own other device.
    let (status, body) = admin(&server, Method::GET, "/admin/v1/stats", None).await;
    assert_eq!(status, StatusCode::OK);
    let stats: ServerStats = serde_json::from_value(body).unwrap();
    assert_eq!(stats.users, 2);
    assert_eq!(stats.deactivated_users, 1);
    assert_eq!(stats.active_devices, 2);
    assert_eq!(stats.max_devices_per_user, 2);
    assert_eq!(stats.messages_last_day.v2, 1);
    assert_eq!(stats.messages_last_day.v1, 0);
    // Bob's second device has not taken the copy of his sent message.
    assert_eq!(stats.undelivered_envelopes, 1);
    assert!(stats.oldest_undelivered_at.is_some());

    let unknown = admin(
        &server,
        Method::POST,
        &format!("/admin/v1/users/{}/deactivate", UserId::new_random()),
        None,
    )
    .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "user_not_found");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_user_deletes_the_account_with_the_password(pool: PgPool) {
    let server = TestServer::start_with(pool.clone(), settings(RegistrationMode::Open)).await;
    let alice = TestUser::new(&server, "alice", 2).await;
    let bob = TestUser::new(&server, "bob", 1).await;
    let mut other_device = server.connect(&alice.devices[1].token, None).await;
    assert!(matches!(other_device.next().await, Received::CaughtUp(_)));

    let delete = |password: &'static str| {
        server.call(
            Method::DELETE,
            "/v1/accounts/me",
            Some(&alice.devices[0].token),
            Some(json!({"password": password})),
        )
    };
    // A stolen token alone cannot delete the account.
    assert_error(
        &delete("not the password").await,
        StatusCode::FORBIDDEN,
        "wrong_password",
    );
    let answer = server
        .call(
            Method::DELETE,
            "/v1/accounts/me",
            Some(&alice.devices[0].token),
            None,
        )
        .await;
    assert_error(
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let answer = server
        .call(
            Method::DELETE,
            "/v1/accounts/me",
            None,
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "missing_token");
    server.login("alice").await;

    let (status, body) = delete(PASSWORD).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        matches!(
            other_device.next().await,
            Received::Closed(Some(close_code::DEVICE_REMOVED))
        ),
        "the user's other device's socket closes"
    );
    assert_deactivated(&server, &pool, &alice, &bob).await;
    // The device that logged in during the test is gone too.
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT count(*) FROM devices WHERE user_id = '{}' AND removed_at IS NULL",
                alice.id
            )
        )
        .await,
        0
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_operator_removes_one_device(pool: PgPool) {
    let server = TestServer::start_with(pool, settings(RegistrationMode::Open)).await;
    let alice = TestUser::new(&server, "alice", 2).await;
    let mut socket = server.connect(&alice.devices[0].token, None).await;
    assert!(matches!(socket.next().await, Received::CaughtUp(_)));
    let path = format!(
        "/admin/v1/users/alice/devices/{}",
        alice.devices[0].device_id
    );
    let (status, body) = admin(&server, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(matches!(
        socket.next().await,
        Received::Closed(Some(close_code::DEVICE_REMOVED))
    ));
    let answer = server
        .call(
            Method::GET,
            "/v1/devices",
            Some(&alice.devices[0].token),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "device_removed");
    // Her other device, and her account, carry on.
    let (status, _) = server
        .call(
            Method::GET,
            "/v1/devices",
            Some(&alice.devices[1].token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let again = admin(&server, Method::DELETE, &path, None).await;
    assert_error(&again, StatusCode::NOT_FOUND, "device_not_found");
}

/// `courier-server admin` run as an operator runs it, against a real server's private
/// listener.
fn cli(server: &TestServer, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_courier-server"));
    command
        .env_remove("COURIER_ADMIN_TOKEN")
        .arg("admin")
        .arg("--url")
        .arg(&server.admin_base)
        .args(args);
    if let Some(token) = token {
        command.env("COURIER_ADMIN_TOKEN", token);
    }
    command.output().unwrap()
}

fn stdout_json(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_admin_command_line_issues_tokens_and_deactivates_users(pool: PgPool) {
    let server = TestServer::start_with(pool, settings(RegistrationMode::Token)).await;
    let server = std::sync::Arc::new(server);
    let run = |token: Option<&'static str>, args: &'static [&'static str]| {
        let server = server.clone();
        async move {
            tokio::task::spawn_blocking(move || cli(&server, token, args))
                .await
                .unwrap()
        }
    };

    let issued = stdout_json(
        &run(
            Some(ADMIN_TOKEN),
            &["tokens", "issue", "--uses", "1", "--expires-in-days", "7"],
        )
        .await,
    );
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(issued["usesAllowed"], 1);
    let (status, body) = create(&server, "alice", Some(&token)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut socket = server
        .connect(&server.login("alice").await.access_token, None)
        .await;
    assert!(matches!(socket.next().await, Received::CaughtUp(_)));

    let listed = stdout_json(&run(Some(ADMIN_TOKEN), &["tokens", "list"]).await);
    assert_eq!(listed["tokens"][0]["state"], "used_up");
    assert!(
        !listed.to_string().contains(&token),
        "the list never shows a token"
    );
    let users = stdout_json(&run(Some(ADMIN_TOKEN), &["users", "list", "--search", "al"]).await);
    assert_eq!(users["users"][0]["username"], "alice");

    let report = stdout_json(&run(Some(ADMIN_TOKEN), &["users", "deactivate", "alice"]).await);
    assert_eq!(report["removedDevices"], json!([1]));
    assert!(matches!(
        socket.next().await,
        Received::Closed(Some(close_code::DEVICE_REMOVED))
    ));
    let stats = stdout_json(&run(Some(ADMIN_TOKEN), &["stats"]).await);
    assert_eq!(stats["deactivatedUsers"], 1);

    // Clear errors, exit status 1: no token, a wrong one, an unknown user.
    let no_token = run(None, &["stats"]).await;
    assert_eq!(no_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("COURIER_ADMIN_TOKEN"));
    let wrong = run(Some("a-wrong-admin-token-0123456789abcdef0123"), &["stats"]).await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("invalid_token"));
    let unknown = run(Some(ADMIN_TOKEN), &["users", "show", "nobody"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("user_not_found"));
}

#[test]
fn the_admin_command_line_says_when_no_server_answers() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_courier-server"))
        .env("COURIER_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["admin", "--url", &url, "stats"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
    assert!(!stderr.contains(ADMIN_TOKEN), "{stderr}");

    // A user named with characters no ID or username has is refused before any request.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_courier-server"))
        .env("COURIER_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["admin", "--url", &url, "users", "show", "../stats"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a user ID or a username"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot reach"), "{stderr}");
}
