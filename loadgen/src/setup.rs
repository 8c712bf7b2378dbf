//! Populating a server: accounts, devices with published identity keys, sockets.

use std::sync::Arc;

use anyhow::{Context, bail};
use courier_protocol::api::accounts::{CreateAccountRequest, LoginRequest, LoginResponse};
use courier_protocol::api::keys::IdentityKeys;
use courier_protocol::keys::encode_base64;
use courier_protocol::{DeviceId, UserId, signing};
use ed25519_dalek::{Signer, SigningKey};
use futures::{StreamExt, TryStreamExt};
use rand::RngCore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Password of every generated account.
const PASSWORD: &str = "loadgen password 1";

/// A registered device with published keys.
#[derive(Debug, Clone)]
pub struct Device {
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub token: String,
}

/// A generated user and its devices.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: UserId,
    pub devices: Vec<Device>,
}

/// Creates `users` accounts with `devices` each, `parallel` requests at a time.
pub async fn populate(
    http: &reqwest::Client,
    base: &str,
    run: &str,
    users: usize,
    devices: usize,
    parallel: usize,
) -> anyhow::Result<Vec<User>> {
    futures::stream::iter(0..users)
        .map(|index| create_user(http, base, format!("lg{run}u{index}"), devices))
        .buffered(parallel.max(1))
        .try_collect()
        .await
}

async fn create_user(
    http: &reqwest::Client,
    base: &str,
    username: String,
    devices: usize,
) -> anyhow::Result<User> {
    let created = http
        .post(format!("{base}/v1/accounts"))
        .json(&CreateAccountRequest {
            username: username.clone(),
            password: PASSWORD.into(),
            registration_token: None,
        })
        .send()
        .await?;
    if !created.status().is_success() {
        bail!(
            "creating {username}: {} {}",
            created.status(),
            created.text().await.unwrap_or_default()
        );
    }
    let mut list = Vec::with_capacity(devices);
    for _ in 0..devices {
        list.push(create_device(http, base, &username).await?);
    }
    let user_id = list
        .first()
        .map(|d| d.user_id)
        .context("a user needs a device")?;
    Ok(User {
        user_id,
        devices: list,
    })
}

async fn create_device(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> anyhow::Result<Device> {
    let login = http
        .post(format!("{base}/v1/login"))
        .json(&LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
            device_id: DeviceId::NEW,
            device_name: None,
            replace_device_id: None,
        })
        .send()
        .await?;
    if !login.status().is_success() {
        bail!(
            "login {username}: {} {}",
            login.status(),
            login.text().await.unwrap_or_default()
        );
    }
    let login: LoginResponse = login.json().await?;
    let signing_key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut curve25519 = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut curve25519);
    let ed25519 = signing_key.verifying_key().to_bytes();
    let payload =
        signing::identity_keys_payload(login.user_id, login.device_id, &curve25519, &ed25519);
    let keys = IdentityKeys {
        curve25519: encode_base64(&curve25519),
        ed25519: encode_base64(&ed25519),
        signature: encode_base64(&signing_key.sign(&payload).to_bytes()),
    };
    let published = http
        .put(format!("{base}/v1/keys/identity"))
        .bearer_auth(&login.access_token)
        .json(&keys)
        .send()
        .await?;
    if !published.status().is_success() {
        bail!(
            "publishing keys: {} {}",
            published.status(),
            published.text().await.unwrap_or_default()
        );
    }
    Ok(Device {
        user_id: login.user_id,
        device_id: login.device_id,
        token: login.access_token,
    })
}

/// A device's WebSocket.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a device's stream socket.
pub async fn connect(base: &str, device: &Device) -> anyhow::Result<Socket> {
    let mut request = format!("{}/v1/ws", base.replacen("http", "ws", 1)).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", device.token).parse()?);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(socket)
}

/// Shared, read-only view of the generated population.
pub type Population = Arc<Vec<User>>;
