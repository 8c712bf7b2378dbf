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
    /// The private listener (metrics, probes).
    pub admin_base: String,
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
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_base = format!("http://{}", admin.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let launch = courier_server::Launch {
            pool,
            direct_database: None,
            settings,
            public_listener: listener,
            admin_listener: Some(admin),
        };
        let task = tokio::spawn(courier_server::launch_with(launch, async {
            let _ = rx.await;
        }));
        Self {
            base,
            admin_base,
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

    /// A URL on the private listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_base)
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
            registration_token: None,
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

/// A device's WebSocket, as a client holds it.
pub struct Socket {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What a socket read produced.
#[derive(Debug)]
pub enum Received {
    Envelope(courier_protocol::api::stream::Envelope),
    /// Any other stream item (group message, sender key, membership, receipt).
    Item(courier_protocol::api::stream::StreamItem),
    CaughtUp(u64),
    Error(String),
    Closed(Option<u16>),
}

/// A socket read, unparsed.
#[derive(Debug)]
pub enum RawFrame {
    Text(String),
    Closed(Option<u16>),
}

impl TestServer {
    /// Tries to open `token`'s socket: `Ok` when it opened, else the HTTP answer.
    pub async fn try_connect(
        &self,
        token: &str,
    ) -> Result<(), (StatusCode, Option<String>, Value)> {
        match tokio_tungstenite::connect_async(self.socket_request(token, None)).await {
            Ok(_) => Ok(()),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap().to_owned());
                let body = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .unwrap_or(Value::Null);
                Err((status, retry_after, body))
            }
            Err(error) => panic!("the connection failed: {error}"),
        }
    }

    /// Opens `device`'s stream socket, optionally resuming after a cursor.
    pub async fn connect(&self, token: &str, after: Option<u64>) -> Socket {
        let request = self.socket_request(token, after);
        let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Socket { stream }
    }

    /// The WebSocket upgrade request of `token`'s stream.
    fn socket_request(
        &self,
        token: &str,
        after: Option<u64>,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut url = format!("{}/v1/ws", self.base.replacen("http", "ws", 1));
        if let Some(after) = after {
            url.push_str(&format!("?after={after}"));
        }
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
}

impl Socket {
    /// The next meaningful frame, waiting at most 10 s (a bound, not a timing assertion).
    pub async fn next(&mut self) -> Received {
        use courier_protocol::api::stream::{ControlFrame, ServerFrame, StreamItem};
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let message =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.stream.next())
                    .await
                    .expect("a frame within 10 s");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return match serde_json::from_str::<ServerFrame>(text.as_str()).unwrap() {
                        ServerFrame::Item(StreamItem::Envelope(envelope)) => {
                            Received::Envelope(envelope)
                        }
                        ServerFrame::Item(item) => Received::Item(item),
                        ServerFrame::Control(ControlFrame::CaughtUp { cursor }) => {
                            Received::CaughtUp(cursor)
                        }
                        ServerFrame::Control(ControlFrame::Error { code, .. }) => {
                            Received::Error(code)
                        }
                    };
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Closed(None),
            }
        }
    }

    /// The next envelope, passing over delivered receipts (a sender's devices get them
    /// whenever a recipient acknowledges; tests of envelopes do not look at them).
    pub async fn next_envelope(&mut self) -> courier_protocol::api::stream::Envelope {
        loop {
            match self.next().await {
                Received::Envelope(envelope) => return envelope,
                Received::Item(courier_protocol::api::stream::StreamItem::Delivered(_)) => {}
                other => panic!("expected an envelope, got {other:?}"),
            }
        }
    }

    /// The next stream item of any kind other than an envelope.
    pub async fn next_item(&mut self) -> courier_protocol::api::stream::StreamItem {
        match self.next().await {
            Received::Item(item) => item,
            other => panic!("expected a stream item, got {other:?}"),
        }
    }

    /// Reads envelopes until `caughtUp`, returning them (delivered receipts passed over,
    /// as in [`Self::next_envelope`]).
    pub async fn backlog(&mut self) -> (Vec<courier_protocol::api::stream::Envelope>, u64) {
        let mut envelopes = Vec::new();
        loop {
            match self.next().await {
                Received::Envelope(envelope) => envelopes.push(envelope),
                Received::Item(courier_protocol::api::stream::StreamItem::Delivered(_)) => {}
                Received::CaughtUp(cursor) => return (envelopes, cursor),
                other => panic!("expected the backlog, got {other:?}"),
            }
        }
    }

    /// Reads every item until `caughtUp`.
    pub async fn backlog_items(&mut self) -> (Vec<courier_protocol::api::stream::StreamItem>, u64) {
        let mut items = Vec::new();
        loop {
            match self.next().await {
                Received::Envelope(envelope) => {
                    items.push(courier_protocol::api::stream::StreamItem::Envelope(
                        envelope,
                    ));
                }
                Received::Item(item) => items.push(item),
                Received::CaughtUp(cursor) => return (items, cursor),
                other => panic!("expected the backlog, got {other:?}"),
            }
        }
    }

    /// The next text frame as it arrived, or the close (its code), waiting at most 10 s
    /// (a bound, not a timing assertion).
    pub async fn next_raw(&mut self) -> RawFrame {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let message =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.stream.next())
                    .await
                    .expect("a frame within 10 s");
            match message {
                Some(Ok(Message::Text(text))) => return RawFrame::Text(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    return RawFrame::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return RawFrame::Closed(None),
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .unwrap();
    }

    pub async fn ack_up_to(&mut self, seq: u64) {
        self.send_text(&format!(r#"{{"type":"ack","upTo":{seq}}}"#))
            .await;
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Builds a V2 send body with one envelope per listed device, each ciphertext naming its
/// device so a test can check every device got its own.
pub fn v2_body(
    client_message_id: &str,
    recipient: UserId,
    devices: &[(UserId, DeviceId)],
    text: &str,
) -> Value {
    let envelopes: Vec<Value> = devices
        .iter()
        .map(|(user, device)| {
            serde_json::json!({
                "userId": user,
                "deviceId": device,
                "envelopeType": "normal",
                "ciphertext": encode_base64(envelope_plaintext(*user, *device, text).as_bytes()),
            })
        })
        .collect();
    serde_json::json!({
        "protocolVersion": 2,
        "clientMessageId": client_message_id,
        "recipientUserId": recipient,
        "deviceEnvelopes": envelopes,
    })
}

/// What a test puts in an envelope for one device (stands in for an Olm ciphertext).
pub fn envelope_plaintext(user: UserId, device: DeviceId, text: &str) -> String {
    format!("{user}/{device}:{text}")
}

/// Decodes a test envelope's content.
pub fn envelope_text(envelope: &courier_protocol::api::stream::Envelope) -> String {
    String::from_utf8(courier_protocol::keys::decode_base64(&envelope.ciphertext).unwrap()).unwrap()
}

/// A user with published devices.
pub struct TestUser {
    pub id: UserId,
    pub devices: Vec<TestDevice>,
}

impl TestUser {
    pub async fn new(server: &TestServer, name: &str, devices: usize) -> Self {
        let account = server.create_account(name).await;
        let mut list = Vec::new();
        for _ in 0..devices {
            list.push(server.new_published_device(name).await);
        }
        Self {
            id: account.user_id,
            devices: list,
        }
    }

    pub fn refs(&self) -> Vec<(UserId, DeviceId)> {
        self.devices
            .iter()
            .map(|d| (d.user_id, d.device_id))
            .collect()
    }
}

impl TestServer {
    /// Every undelivered item of a device's stream, read over REST (nothing acknowledged).
    pub async fn inbox(
        &self,
        device: &TestDevice,
    ) -> Vec<courier_protocol::api::stream::StreamItem> {
        match self.try_inbox(device).await {
            Ok(items) => items,
            Err((status, body)) => panic!("the inbox answered {status}: {body}"),
        }
    }

    /// Every undelivered item of a device's stream, page after page (a page is bounded in
    /// bytes as well as items, so `hasMore` is followed), or the first refusal.
    pub async fn try_inbox(
        &self,
        device: &TestDevice,
    ) -> Result<Vec<courier_protocol::api::stream::StreamItem>, (StatusCode, Value)> {
        let mut items = Vec::new();
        let mut after = 0;
        loop {
            let (status, body) = self
                .call(
                    Method::GET,
                    &format!("/v1/inbox?after={after}&limit=1000"),
                    Some(&device.token),
                    None,
                )
                .await;
            if status != StatusCode::OK {
                return Err((status, body));
            }
            let page: courier_protocol::api::stream::InboxPage =
                serde_json::from_value(body).unwrap();
            items.extend(page.items);
            if !page.has_more {
                return Ok(items);
            }
            after = page.next_cursor;
        }
    }
}
