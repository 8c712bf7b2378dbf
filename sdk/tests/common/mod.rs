//! Test harness: a real Courier server on port 0 over the test's own PostgreSQL database,
//! and devices that talk to it through the SDK's transport, holding real Ed25519 keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::time::Duration;

use courier_sdk::app::{
    AppEvent, AppEventKind, ConnectionState, CourierError, EventListener, ListenerError,
};
use tokio::sync::Notify;

use courier_protocol::api::accounts::{CreateAccountRequest, LoginRequest};
use courier_protocol::api::keys::{IdentityKeys, SignedKey};
use courier_protocol::api::messages::{DeviceEnvelope, EnvelopeType, SendMessageRequest};
use courier_protocol::keys::encode_base64;
use courier_protocol::{DeviceId, UserId, signing};
use courier_sdk::transport::{ApiClient, DeviceLogin, StreamConnection, TransportError};
use courier_server::Settings;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use sqlx::PgPool;
use tokio::sync::oneshot;
use url::Url;

pub const PASSWORD: &str = "correct horse battery";

/// A Courier server serving one test's database on an ephemeral port.
pub struct TestServer {
    pub base_url: Url,
    /// The private listener (the admin API), when started with one.
    pub admin_url: Option<Url>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// The admin token of servers started by [`TestServer::start_administered`].
pub const ADMIN_TOKEN: &str = "sdk-test-admin-token-0123456789abcdef01234567";

impl TestServer {
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, Settings::default()).await
    }

    pub async fn start_with(pool: PgPool, settings: Settings) -> Self {
        Self::start_at(pool, settings, "127.0.0.1:0").await
    }

    /// A server on a given address (to restart one where its clients expect it).
    pub async fn start_at(pool: PgPool, settings: Settings, address: &str) -> Self {
        // A server just stopped on this address may not have released it yet.
        let mut attempts = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => break listener,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot bind {address}: {error}"),
            }
        };
        let base_url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(courier_server::launch(pool, settings, listener, async {
            let _ = rx.await;
        }));
        Self {
            base_url,
            admin_url: None,
            shutdown: Some(tx),
        }
    }

    /// A server with its private listener (the admin API, under [`ADMIN_TOKEN`]) and
    /// `registration` as its registration mode.
    pub async fn start_administered(
        pool: PgPool,
        registration: courier_server::config::RegistrationMode,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let admin_url = format!("http://{}", admin.local_addr().unwrap())
            .parse()
            .unwrap();
        let settings = Settings {
            registration,
            admin_token: Some(ADMIN_TOKEN.parse().unwrap()),
            ..Settings::default()
        };
        let (tx, rx) = oneshot::channel::<()>();
        let launch = courier_server::Launch {
            pool,
            direct_database: None,
            settings,
            public_listener: listener,
            admin_listener: Some(admin),
        };
        tokio::spawn(courier_server::launch_with(launch, async {
            let _ = rx.await;
        }));
        Self {
            base_url,
            admin_url: Some(admin_url),
            shutdown: Some(tx),
        }
    }

    /// Issues a registration token through the admin API (`POST
    /// /admin/v1/registration-tokens`); `uses`: how many registrations it lets in
    /// (`None`: any number).
    pub async fn issue_registration_token(&self, uses: Option<u32>) -> String {
        let admin = self.admin_url.as_ref().expect("started administered");
        let mut body = serde_json::json!({});
        if let Some(uses) = uses {
            body["usesAllowed"] = serde_json::json!(uses);
        }
        let response = reqwest::Client::new()
            .post(admin.join("admin/v1/registration-tokens").unwrap())
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            201,
            "issuing a registration token"
        );
        let issued: serde_json::Value = response.json().await.unwrap();
        issued["token"].as_str().unwrap().to_owned()
    }

    /// A client without a token.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.base_url.clone()).unwrap()
    }

    pub async fn create_account(&self, username: &str) -> UserId {
        self.client()
            .create_account(&CreateAccountRequest {
                username: username.into(),
                password: PASSWORD.into(),
                registration_token: None,
            })
            .await
            .unwrap()
            .user_id
    }

    pub async fn try_login(&self, username: &str) -> Result<DeviceLogin, TransportError> {
        self.client().login(&login_request(username)).await
    }

    /// Logs in as a new device with fresh keys (not yet published).
    pub async fn new_device(&self, username: &str) -> TestDevice {
        let login = self.try_login(username).await.unwrap();
        TestDevice::new(self, login)
    }

    /// Logs in as a new device and publishes its identity keys.
    pub async fn new_published_device(&self, username: &str) -> TestDevice {
        let device = self.new_device(username).await;
        device
            .client
            .publish_identity_keys(&device.identity_keys())
            .await
            .unwrap();
        device
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn login_request(username: &str) -> LoginRequest {
    LoginRequest {
        username: username.into(),
        password: PASSWORD.into(),
        device_id: DeviceId::NEW,
        device_name: Some(format!("{username}'s device")),
        replace_device_id: None,
    }
}

/// A device as an app holds it: its session, its client and its key pairs.
pub struct TestDevice {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub client: ApiClient,
    pub signing_key: SigningKey,
    pub curve25519: [u8; 32],
}

impl TestDevice {
    pub fn new(server: &TestServer, login: DeviceLogin) -> Self {
        Self {
            user_id: login.user_id,
            device_id: login.device_id,
            client: server.client().with_token(login.access_token),
            signing_key: SigningKey::generate(&mut rand::rngs::OsRng),
            curve25519: random_key(),
        }
    }

    pub fn token(&self) -> &str {
        self.client.token().unwrap().expose_secret()
    }

    pub fn ed25519(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    pub fn identity_keys(&self) -> IdentityKeys {
        let payload = signing::identity_keys_payload(
            self.user_id,
            self.device_id,
            &self.curve25519,
            &self.ed25519(),
        );
        IdentityKeys {
            curve25519: encode_base64(&self.curve25519),
            ed25519: encode_base64(&self.ed25519()),
            signature: encode_base64(&self.signing_key.sign(&payload).to_bytes()),
        }
    }

    pub fn one_time_key(&self, key_id: &str) -> SignedKey {
        let key = random_key();
        let payload = signing::one_time_key_payload(self.user_id, self.device_id, key_id, &key);
        SignedKey {
            key_id: key_id.into(),
            key: encode_base64(&key),
            signature: encode_base64(&self.signing_key.sign(&payload).to_bytes()),
        }
    }

    pub fn fallback_key(&self, key_id: &str) -> SignedKey {
        let key = random_key();
        let payload = signing::fallback_key_payload(self.user_id, self.device_id, key_id, &key);
        SignedKey {
            key_id: key_id.into(),
            key: encode_base64(&key),
            signature: encode_base64(&self.signing_key.sign(&payload).to_bytes()),
        }
    }

    pub async fn connect(&self, after: Option<u64>) -> StreamConnection {
        self.client.open_stream(after).await.unwrap()
    }
}

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// A V2 send with one envelope per listed device (the ciphertext stands in for Olm's).
pub fn v2_send(
    client_message_id: &str,
    recipient: UserId,
    devices: &[(UserId, DeviceId)],
) -> SendMessageRequest {
    SendMessageRequest {
        protocol_version: Some(2),
        client_message_id: client_message_id.into(),
        recipient_user_id: recipient,
        device_envelopes: Some(
            devices
                .iter()
                .map(|&(user_id, device_id)| DeviceEnvelope {
                    user_id,
                    device_id,
                    envelope_type: EnvelopeType::Normal,
                    ciphertext: encode_base64(format!("{user_id}/{device_id}").as_bytes()),
                })
                .collect(),
        ),
        encrypted_envelope: None,
    }
}

/// Waits for `condition` to hold, checking every 50 ms for at most 10 s (a bound for
/// work the server does in the background, such as writing acknowledgements).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// SDK clients (crypto core, encrypted store, transport), one store per device.

use courier_sdk::client::Client;
use courier_sdk::crypto::{Event, QueuedEvent};
use courier_sdk::store::StoreKey;
use tempfile::TempDir;

/// The store key every test device uses.
pub fn key() -> StoreKey {
    StoreKey::from_bytes([5; 32])
}

pub struct Party {
    pub dir: TempDir,
    pub clients: Vec<Client>,
}

impl Party {
    pub fn user(&self) -> UserId {
        self.clients[0].own_device().user_id
    }

    pub fn store_path(&self, index: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("device-{index}.db"))
    }

    pub async fn register(server: &TestServer, name: &str, devices: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut party = Party {
            dir,
            clients: Vec::new(),
        };
        let first = Client::register(
            server.base_url.clone(),
            &party.store_path(0),
            &key(),
            name,
            PASSWORD,
            "device 0",
            None,
        )
        .await
        .unwrap();
        party.clients.push(first);
        for _ in 1..devices {
            party.add_device(server, name).await;
        }
        party
    }

    pub async fn add_device(&mut self, server: &TestServer, name: &str) -> &Client {
        let index = self.clients.len();
        let client = Client::login(
            server.base_url.clone(),
            &self.store_path(index),
            &key(),
            name,
            PASSWORD,
            &format!("device {index}"),
        )
        .await
        .unwrap();
        self.clients.push(client);
        &self.clients[index]
    }
}

/// The message bodies among a client's pending events, in order; confirms them.
pub async fn take_messages(client: &Client) -> Vec<String> {
    let events: Vec<QueuedEvent> = client.pending_events(10_000).await.unwrap();
    if let Some(last) = events.last() {
        client.confirm_events(last.seq).await.unwrap();
    }
    events
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Message { message } => Some(String::from_utf8(message.body).unwrap()),
            _ => None,
        })
        .collect()
}

pub async fn receive(client: &Client) -> Vec<String> {
    client.receive_until_caught_up().await.unwrap();
    take_messages(client).await
}

/// Records everything an app-facing receive loop tells its listener; fails the first
/// `fail_first` batches (an app whose own storage is busy).
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<AppEvent>>,
    pub batches: Mutex<Vec<Vec<u64>>>,
    pub states: Mutex<Vec<ConnectionState>>,
    pub errors: Mutex<Vec<CourierError>>,
    pub fail_first: Mutex<usize>,
    pub changed: Notify,
}

impl EventListener for Recorder {
    fn on_events(&self, events: Vec<AppEvent>) -> Result<(), ListenerError> {
        self.batches
            .lock()
            .unwrap()
            .push(events.iter().map(|e| e.seq).collect());
        let mut fail = self.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            self.changed.notify_waiters();
            return Err(ListenerError {
                message: "the app's database is busy".into(),
            });
        }
        self.events.lock().unwrap().extend(events);
        self.changed.notify_waiters();
        Ok(())
    }

    fn on_connection_state(&self, state: ConnectionState) {
        self.states.lock().unwrap().push(state);
        self.changed.notify_waiters();
    }

    fn on_error(&self, error: CourierError) {
        self.errors.lock().unwrap().push(error);
        self.changed.notify_waiters();
    }
}

impl Recorder {
    /// Waits (bounded) until `done` holds for what was recorded.
    pub async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if done(self) {
                    return;
                }
                // Woken by the listener, or looked at again every 50 ms.
                let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    pub fn bodies(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|event| match &event.kind {
                AppEventKind::Message { body, .. } | AppEventKind::GroupMessage { body, .. } => {
                    Some(String::from_utf8(body.clone()).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    pub fn has_body(&self, body: &str) -> bool {
        self.bodies().iter().any(|b| b == body)
    }

    /// Whether the loop reported being connected.
    pub fn connected(&self) -> bool {
        self.states
            .lock()
            .unwrap()
            .contains(&ConnectionState::Connected)
    }
}
