//! Account administration through the app-facing surface against the real server:
//! registration by token (and a closed server), and deleting the account.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Recorder, TestServer};
use courier_sdk::app::{ConnectionState, CourierClient, CourierError};
use courier_server::config::RegistrationMode;
use sqlx::PgPool;
use tempfile::TempDir;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";
const KEY: [u8; 32] = [7; 32];

struct Device {
    client: CourierClient,
    dir: TempDir,
}

impl Device {
    fn path(&self) -> String {
        self.dir.path().join("store.db").display().to_string()
    }
}

fn store_path(dir: &TempDir) -> String {
    dir.path().join("store.db").display().to_string()
}

async fn try_register(
    server: &TestServer,
    username: &str,
    token: Option<&str>,
) -> Result<Device, CourierError> {
    let dir = TempDir::new().unwrap();
    let client = CourierClient::register(
        server.base_url.to_string(),
        store_path(&dir),
        KEY.to_vec(),
        username.into(),
        PASSWORD.into(),
        "phone".into(),
        token.map(str::to_owned),
    )
    .await?;
    Ok(Device { client, dir })
}

async fn try_login(server: &TestServer, username: &str) -> Result<Device, CourierError> {
    let dir = TempDir::new().unwrap();
    let client = CourierClient::login(
        server.base_url.to_string(),
        store_path(&dir),
        KEY.to_vec(),
        username.into(),
        PASSWORD.into(),
        "laptop".into(),
    )
    .await?;
    Ok(Device { client, dir })
}

/// Envelopes the server holds for a user's devices that no device has taken yet.
async fn undelivered_for(pool: &PgPool, user_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM message_envelopes
         WHERE recipient_user_id = $1 AND delivered_at IS NULL",
    )
    .bind(Uuid::parse_str(user_id).unwrap())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Messages the server stored for a user.
async fn messages_for(pool: &PgPool, user_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE recipient_user_id = $1")
        .bind(Uuid::parse_str(user_id).unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn deleting_the_account_needs_the_password_and_retires_every_device_of_it(pool: PgPool) {
    let server = TestServer::start(pool.clone()).await;
    let phone = try_register(&server, "alice", None).await.unwrap();
    let laptop = try_login(&server, "alice").await.unwrap();
    let bob = try_register(&server, "bob", None).await.unwrap();
    let alice_id = phone.client.own_device().user_id;

    // The laptop listens; the phone does not, so what is sent to it stays pending.
    let recorder = Arc::new(Recorder::default());
    let handle = laptop.client.start_receiving(recorder.clone()).unwrap();
    recorder
        .until("the laptop to connect", Recorder::connected)
        .await;
    bob.client
        .send(alice_id.clone(), b"before".to_vec(), None)
        .await
        .unwrap();
    recorder
        .until("bob's first message", |r| r.has_body("before"))
        .await;

    // A wrong password: typed, and nothing changes.
    let wrong = phone
        .client
        .delete_account("not the password".into())
        .await
        .unwrap_err();
    assert_eq!(wrong, CourierError::WrongPassword);
    assert_eq!(wrong.code(), "wrong_password");
    assert_eq!(wrong.server_code().as_deref(), Some("wrong_password"));
    assert_eq!(wrong.status(), Some(403));
    assert!(!wrong.is_retryable());
    phone.client.privacy_settings().await.unwrap();
    assert!(
        !handle.is_finished(),
        "the other device's loop keeps running"
    );
    bob.client
        .send(alice_id.clone(), b"still here".to_vec(), None)
        .await
        .unwrap();
    recorder
        .until("bob's second message", |r| r.has_body("still here"))
        .await;
    assert!(
        undelivered_for(&pool, &alice_id).await > 0,
        "the phone has not taken bob's messages"
    );

    // The right password: the account goes.
    phone.client.delete_account(PASSWORD.into()).await.unwrap();

    // This client is retired, and so is its store.
    for error in [
        phone.client.privacy_settings().await.unwrap_err(),
        phone
            .client
            .send(alice_id.clone(), b"x".to_vec(), None)
            .await
            .unwrap_err(),
        phone.client.pending_events(10).await.unwrap_err(),
        phone
            .client
            .delete_account(PASSWORD.into())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(error, CourierError::AccountDeleted);
        assert_eq!(error.code(), "account_deleted");
    }
    assert!(matches!(
        phone.client.start_receiving(Arc::new(Recorder::default())),
        Err(CourierError::AccountDeleted)
    ));
    let reopened = CourierClient::open(phone.path(), KEY.to_vec())
        .await
        .unwrap_err();
    assert_eq!(reopened, CourierError::AccountDeleted);

    // The other device of the user: its stream ends as removed, its calls fail so.
    tokio::time::timeout(Duration::from_secs(20), handle.wait())
        .await
        .expect("the laptop's receive loop stops");
    assert!(
        recorder
            .errors
            .lock()
            .unwrap()
            .contains(&CourierError::DeviceRemoved),
        "the laptop's loop ends as removed: {:?}",
        recorder.errors.lock().unwrap()
    );
    assert_eq!(
        recorder.states.lock().unwrap().last(),
        Some(&ConnectionState::Stopped)
    );
    assert_eq!(
        laptop.client.privacy_settings().await.unwrap_err(),
        CourierError::DeviceRemoved
    );

    // The envelopes waiting for the phone were dropped.
    assert_eq!(undelivered_for(&pool, &alice_id).await, 0);

    // Bob, whose lists still hold alice's two devices: refused as stale, he refreshes
    // and finds no device to send to. Nothing is stored for alice, nothing stays in his
    // outbox.
    let stored_before = messages_for(&pool, &alice_id).await;
    let refused = bob
        .client
        .send(alice_id.clone(), b"after".to_vec(), None)
        .await
        .unwrap_err();
    assert_eq!(refused, CourierError::NoRecipientDevices);
    assert!(!refused.is_retryable());
    assert_eq!(messages_for(&pool, &alice_id).await, stored_before);
    assert_eq!(undelivered_for(&pool, &alice_id).await, 0);
    assert_eq!(bob.client.send_unsent().await.unwrap(), 0);
    let alice_devices = bob.client.devices(alice_id.clone()).await.unwrap();
    assert!(
        alice_devices.iter().all(|d| d.removed),
        "bob sees alice's devices removed: {alice_devices:?}"
    );

    // The username stays taken; the old password opens nothing.
    assert_eq!(
        try_register(&server, "alice", None).await.err(),
        Some(CourierError::UsernameTaken)
    );
    assert_eq!(
        try_login(&server, "alice").await.err(),
        Some(CourierError::InvalidCredentials)
    );
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_server_registering_by_token_takes_a_valid_token_once_and_nothing_else(pool: PgPool) {
    let server = TestServer::start_administered(pool, RegistrationMode::Token).await;

    // Without a token, and with one the operator never issued: typed, nothing created.
    for token in [None, Some("crt_not-a-token-the-operator-issued")] {
        let dir = TempDir::new().unwrap();
        let error = CourierClient::register(
            server.base_url.to_string(),
            store_path(&dir),
            KEY.to_vec(),
            "alice".into(),
            PASSWORD.into(),
            "phone".into(),
            token.map(str::to_owned),
        )
        .await
        .unwrap_err();
        assert_eq!(error, CourierError::InvalidRegistrationToken, "{token:?}");
        assert_eq!(error.code(), "invalid_registration_token");
        assert_eq!(
            error.server_code().as_deref(),
            Some("invalid_registration_token")
        );
        assert_eq!(error.status(), Some(403));
        assert!(!error.is_retryable());
        assert!(
            !dir.path().join("store.db").exists(),
            "no store is made for a refused registration"
        );
    }
    assert_eq!(
        try_login(&server, "alice").await.err(),
        Some(CourierError::InvalidCredentials),
        "no account was created"
    );

    // A token for one use lets one registration in, and the account works.
    let token = server.issue_registration_token(Some(1)).await;
    let alice = try_register(&server, "alice", Some(&token)).await.unwrap();
    alice.client.privacy_settings().await.unwrap();
    let bob_dir = TempDir::new().unwrap();
    let used_up = CourierClient::register(
        server.base_url.to_string(),
        store_path(&bob_dir),
        KEY.to_vec(),
        "bob".into(),
        PASSWORD.into(),
        "phone".into(),
        Some(token.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(used_up, CourierError::InvalidRegistrationToken);

    // A token for any number of uses keeps working.
    let shared = server.issue_registration_token(None).await;
    for name in ["bob", "carol"] {
        try_register(&server, name, Some(&shared)).await.unwrap();
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn a_closed_server_refuses_registration_with_or_without_a_token(pool: PgPool) {
    let server = TestServer::start_administered(pool, RegistrationMode::Closed).await;
    let token = server.issue_registration_token(None).await;
    for token in [None, Some(token.as_str())] {
        let error = try_register(&server, "alice", token).await.err().unwrap();
        assert_eq!(error, CourierError::RegistrationClosed, "{token:?}");
        assert_eq!(error.code(), "registration_closed");
        assert_eq!(error.server_code().as_deref(), Some("registration_closed"));
        assert_eq!(error.status(), Some(403));
        assert!(!error.is_retryable());
    }
}

#[sqlx::test(migrator = "courier_server::MIGRATOR")]
async fn an_open_server_ignores_a_registration_token(pool: PgPool) {
    let server = TestServer::start_administered(pool, RegistrationMode::Open).await;
    try_register(&server, "alice", Some("crt_anything"))
        .await
        .unwrap();
    try_register(&server, "bob", None).await.unwrap();
}
