//! Test harness: a real server on port 0 over a per-test PostgreSQL database, a real HTTP
//! client, and devices holding real Ed25519 keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use courier_protocol::api::accounts::{
    CreateAccountRequest, CreateAccountResponse, LoginRequest, LoginResponse,
};
use courier_protocol::api::keys::{IdentityKeys, SignedKey};
use courier_protocol::keys::encode_base64;
use courier_protocol::{DeviceId, UserId, signing};
use courier_server::Settings;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery";

/// A Courier server serving one test's database on an ephemeral port.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, Settings::default()).await
    }

    pub async fn start_with(pool: PgPool, settings: Settings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(courier_server::launch(pool, settings, listener, async {
            let _ = rx.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and returns what `launch` returned.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request, with a JSON body if given, and returns status and JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        read(response).await
    }

    pub async fn create_account(&self, username: &str) -> CreateAccountResponse {
        let body = CreateAccountRequest {
            username: username.into(),
            password: PASSWORD.into(),
        };
        let (status, json) = self
            .call(
                Method::POST,
                "/v1/accounts",
                None,
                Some(serde_json::to_value(body).unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        serde_json::from_value(json).unwrap()
    }

    pub async fn try_login(&self, username: &str) -> (StatusCode, Value) {
        let body = LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
            device_id: DeviceId::NEW,
            device_name: None,
            replace_device_id: None,
        };
        self.call(
            Method::POST,
            "/v1/login",
            None,
            Some(serde_json::to_value(body).unwrap()),
        )
        .await
    }

    pub async fn login(&self, username: &str) -> LoginResponse {
        let (status, json) = self.try_login(username).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        serde_json::from_value(json).unwrap()
    }

    /// Logs in as a new device with fresh keys (not yet published).
    pub async fn new_device(&self, username: &str) -> TestDevice {
        TestDevice::from_login(self.login(username).await)
    }

    /// Logs in as a new device and publishes its identity keys.
    pub async fn new_published_device(&self, username: &str) -> TestDevice {
        let device = self.new_device(username).await;
        let (status, json) = self
            .call(
                Method::PUT,
                "/v1/keys/identity",
                Some(&device.token),
                Some(device.identity_keys_json()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
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

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
    };
    (status, json)
}

/// Asserts an error answer: status, code, and the one error shape.
#[track_caller]
pub fn assert_error(actual: &(StatusCode, Value), status: StatusCode, code: &str) {
    let (actual_status, body) = actual;
    assert_eq!(*actual_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A device as a client holds it: its session and its key pairs.
pub struct TestDevice {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub token: String,
    pub signing_key: SigningKey,
    pub curve25519: [u8; 32],
}

impl TestDevice {
    pub fn from_login(login: LoginResponse) -> Self {
        let mut curve25519 = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut curve25519);
        Self {
            user_id: login.user_id,
            device_id: login.device_id,
            token: login.access_token,
            signing_key: SigningKey::generate(&mut rand::rngs::OsRng),
            curve25519,
        }
    }

    pub fn ed25519(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// Identity keys signed for `device_id` (normally this device's own).
    pub fn identity_keys_for(&self, device_id: DeviceId) -> IdentityKeys {
        let payload = signing::identity_keys_payload(
            self.user_id,
            device_id,
            &self.curve25519,
            &self.ed25519(),
        );
        IdentityKeys {
            curve25519: encode_base64(&self.curve25519),
            ed25519: encode_base64(&self.ed25519()),
            signature: encode_base64(&self.signing_key.sign(&payload).to_bytes()),
        }
    }

    pub fn identity_keys_json(&self) -> Value {
        serde_json::to_value(self.identity_keys_for(self.device_id)).unwrap()
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
}

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}
