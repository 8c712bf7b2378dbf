//! The app-facing surface: [`CourierClient`], what the iOS, Android, Python and Electron
//! bindings wrap (and what a Rust app uses).
//!
//! Written once here so each binding stays a shell of conversions: owned arguments
//! (strings, bytes, plain records), one flat error ([`CourierError`]), every operation an
//! `async fn(&self)` on a `Send + Sync` object, events through an [`EventListener`] the
//! app implements, and a [`ReceiveHandle`] that stops the receive loop.
//!
//! Threading: the client runs its work on the tokio runtime it was created on (the
//! binding's); the store's disk work runs on that runtime's blocking pool, and the
//! listener is called there too, never on an async worker thread.

mod error;
mod receive;
mod types;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use courier_protocol::api::receipts::UpdatePrivacySettings;
use url::Url;
use uuid::Uuid;

pub use error::CourierError;
pub use receive::{ConnectionState, EventListener, ListenerError, ReceiveHandle};
pub use types::{
    AppEvent, AppEventKind, ChannelInfo, DeliveryInfo, DeviceAddress, DeviceDelivery, DeviceInfo,
    MembershipKind, MessageStatus, PrivacySettings, ReceiveSummary, SentMessage, TrustLevel,
    UserRead,
};

use crate::client::Client;
use crate::store::StoreKey;
use types::{parse_device, parse_user, parse_uuid};

/// Most events one call of [`CourierClient::pending_events`] returns.
pub const MAX_EVENTS_PER_CALL: u32 = 1000;

/// A logged-in device, as an app holds it. `Send + Sync`: share it (an `Arc`) between
/// threads; every method takes `&self`.
///
/// Dropping it stops its receive loop (if one runs); work already handed to the store
/// finishes first.
pub struct CourierClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Set by [`CourierClient::log_out`]: every later call fails with `LoggedOut`.
    logged_out: AtomicBool,
    /// The runtime the receive loop is spawned on: the one the client was made on.
    runtime: tokio::runtime::Handle,
    receiving: std::sync::Mutex<Option<ReceiveHandle>>,
}

impl std::fmt::Debug for CourierClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CourierClient")
            .field("device", &self.own_device())
            .finish_non_exhaustive()
    }
}

impl Drop for CourierClient {
    fn drop(&mut self) {
        self.inner.stop_receiving();
    }
}

fn server_url(text: &str) -> Result<Url, CourierError> {
    Url::parse(text).map_err(|_| CourierError::invalid("the server URL does not parse"))
}

fn store_key(bytes: &[u8]) -> Result<StoreKey, CourierError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CourierError::invalid("the store key must be 32 bytes"))?;
    Ok(StoreKey::from_bytes(bytes))
}

fn client_message_id(given: Option<String>) -> String {
    given.unwrap_or_else(|| Uuid::new_v4().simple().to_string())
}

impl CourierClient {
    fn new(client: Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                logged_out: AtomicBool::new(false),
                runtime: tokio::runtime::Handle::current(),
                receiving: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Creates an account and logs in as its first device, keeping the device in a new
    /// store at `store_path` encrypted under `store_key` (32 bytes from the platform's
    /// key store).
    ///
    /// `registration_token`: the token the server's operator handed out, for a server
    /// that takes new accounts by token only; `None` for an open server (which ignores
    /// one). Refused with [`CourierError::InvalidRegistrationToken`] when the server
    /// needs one and it is missing or not valid (unknown, expired, revoked, used up), and
    /// with [`CourierError::RegistrationClosed`] when the server takes no new accounts.
    pub async fn register(
        server_url: String,
        store_path: String,
        store_key: Vec<u8>,
        username: String,
        password: String,
        device_name: String,
        registration_token: Option<String>,
    ) -> Result<Self, CourierError> {
        let url = self::server_url(&server_url)?;
        let key = self::store_key(&store_key)?;
        let client = Client::register(
            url,
            &PathBuf::from(store_path),
            &key,
            &username,
            &password,
            &device_name,
            registration_token.as_deref(),
        )
        .await?;
        Ok(Self::new(client))
    }

    /// Logs in as a new device of an existing account (the server assigns its ID).
    pub async fn login(
        server_url: String,
        store_path: String,
        store_key: Vec<u8>,
        username: String,
        password: String,
        device_name: String,
    ) -> Result<Self, CourierError> {
        let url = self::server_url(&server_url)?;
        let key = self::store_key(&store_key)?;
        let client = Client::login(
            url,
            &PathBuf::from(store_path),
            &key,
            &username,
            &password,
            &device_name,
        )
        .await?;
        Ok(Self::new(client))
    }

    /// Opens the device kept in an existing store (after an app restart). A wrong key
    /// fails with `WrongStoreKey` and leaves the file as it was; the store of a deleted
    /// account fails with `AccountDeleted`.
    pub async fn open(store_path: String, store_key: Vec<u8>) -> Result<Self, CourierError> {
        let key = self::store_key(&store_key)?;
        let client = Client::open(&PathBuf::from(store_path), &key).await?;
        Ok(Self::new(client))
    }

    /// This device.
    pub fn own_device(&self) -> DeviceAddress {
        self.inner.client.own_device().into()
    }

    fn client(&self) -> Result<&Client, CourierError> {
        self.inner.live()
    }

    /// Sends `body` to every device of `recipient_user_id` and to this user's other
    /// devices. The message is kept in the store until the server has it: after a
    /// retryable error it is sent again under its client message ID when the receive
    /// loop connects (or by [`send_unsent`](Self::send_unsent)), and `Sent` is reported
    /// once. The app may also retry itself under the same `client_message_id`: the server
    /// answers a repeat with the original message and stores nothing new.
    pub async fn send(
        &self,
        recipient_user_id: String,
        body: Vec<u8>,
        client_message_id: Option<String>,
    ) -> Result<SentMessage, CourierError> {
        let recipient = parse_user(&recipient_user_id)?;
        let id = self::client_message_id(client_message_id);
        let response = self.client()?.send_with_id(recipient, &id, &body).await?;
        Ok(SentMessage::new(&response, id))
    }

    /// Sends `body` to every member device of a channel (see [`send`](Self::send) for
    /// the client message ID).
    pub async fn send_group(
        &self,
        channel_id: String,
        body: Vec<u8>,
        client_message_id: Option<String>,
    ) -> Result<SentMessage, CourierError> {
        let channel = parse_uuid("the channel ID", &channel_id)?;
        let id = self::client_message_id(client_message_id);
        let response = self
            .client()?
            .send_group_with_id(channel, &id, &body)
            .await?;
        Ok(SentMessage::new(&response, id))
    }

    /// Sends again what the outbox kept: messages whose send failed with a retryable
    /// error (or was cut off by the app ending), each under its client message ID, so
    /// none arrives twice. The receive loop does this whenever it connects; an app
    /// without a loop calls it. Returns how many went.
    pub async fn send_unsent(&self) -> Result<u32, CourierError> {
        Ok(self.client()?.send_outgoing().await?)
    }

    /// Starts the receive loop: it keeps the stream open (reconnecting with backoff),
    /// stores and acknowledges what arrives, and hands events to `listener` in batches;
    /// a batch the listener accepts is confirmed and never delivered again. Runs until
    /// [`ReceiveHandle::cancel`], [`log_out`](Self::log_out), the client is dropped, or
    /// the device is removed.
    pub fn start_receiving(
        &self,
        listener: Arc<dyn EventListener>,
    ) -> Result<ReceiveHandle, CourierError> {
        self.client()?;
        let mut receiving = self
            .inner
            .receiving
            .lock()
            .map_err(|_| CourierError::Internal {
                message: "the receive state is poisoned".to_owned(),
            })?;
        if receiving
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
        {
            return Err(CourierError::AlreadyReceiving);
        }
        let handle = receive::start(self.inner.clone(), listener);
        *receiving = Some(handle.clone());
        Ok(handle)
    }

    /// Connects, stores and acknowledges everything waiting, and returns (for scripts and
    /// apps woken in the background; an app in the foreground runs
    /// [`start_receiving`](Self::start_receiving)).
    pub async fn receive_until_caught_up(&self) -> Result<ReceiveSummary, CourierError> {
        Ok(self.client()?.receive_until_caught_up().await?.into())
    }

    /// Events not yet confirmed, oldest first (at most `limit`, at most
    /// [`MAX_EVENTS_PER_CALL`]).
    pub async fn pending_events(&self, limit: u32) -> Result<Vec<AppEvent>, CourierError> {
        let limit = usize::try_from(limit.min(MAX_EVENTS_PER_CALL)).unwrap_or(1);
        let events = self.client()?.pending_events(limit).await?;
        Ok(events.into_iter().map(AppEvent::from).collect())
    }

    /// The app handled every event up to and including `up_to_seq`.
    pub async fn confirm_events(&self, up_to_seq: u64) -> Result<(), CourierError> {
        Ok(self.client()?.confirm_events(up_to_seq).await?)
    }

    /// A user's devices as this device knows them (fetched when first needed).
    pub async fn devices(&self, user_id: String) -> Result<Vec<DeviceInfo>, CourierError> {
        let user = parse_user(&user_id)?;
        self.inner.devices(user).await
    }

    /// Fetches a user's devices from the server (changes become events) and returns them.
    pub async fn refresh_devices(&self, user_id: String) -> Result<Vec<DeviceInfo>, CourierError> {
        let user = parse_user(&user_id)?;
        self.client()?.refresh_devices(user).await?;
        self.inner.devices(user).await
    }

    /// Marks a device verified (the user compared its fingerprint or the safety number).
    pub async fn verify_device(&self, user_id: String, device_id: u32) -> Result<(), CourierError> {
        let device = DeviceAddress { user_id, device_id }.to_ref()?;
        Ok(self.client()?.verify_device(device).await?)
    }

    /// Accepts a device's new identity keys: it is unblocked (and unverified).
    pub async fn accept_device_change(
        &self,
        user_id: String,
        device_id: u32,
    ) -> Result<(), CourierError> {
        let device = DeviceAddress { user_id, device_id }.to_ref()?;
        Ok(self.client()?.accept_identity_change(device).await?)
    }

    /// The safety number of this user and `other_user_id`: the same on both sides while
    /// neither user's devices changed keys.
    pub async fn safety_number(&self, other_user_id: String) -> Result<String, CourierError> {
        let other = parse_user(&other_user_id)?;
        Ok(self.client()?.safety_number(other).await?)
    }

    /// Creates a channel of this user and `member_user_ids`.
    pub async fn create_channel(
        &self,
        member_user_ids: Vec<String>,
    ) -> Result<ChannelInfo, CourierError> {
        let members = member_user_ids
            .iter()
            .map(|user| parse_user(user))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.client()?.create_channel(&members).await?.into())
    }

    /// A channel this user is a member of.
    pub async fn channel(&self, channel_id: String) -> Result<ChannelInfo, CourierError> {
        let channel = parse_uuid("the channel ID", &channel_id)?;
        Ok(self.client()?.channel(channel).await?.into())
    }

    /// Adds members to a channel (they read what is sent from now on).
    pub async fn add_channel_members(
        &self,
        channel_id: String,
        user_ids: Vec<String>,
    ) -> Result<ChannelInfo, CourierError> {
        let channel = parse_uuid("the channel ID", &channel_id)?;
        let users = user_ids
            .iter()
            .map(|user| parse_user(user))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .client()?
            .add_channel_members(channel, &users)
            .await?
            .into())
    }

    /// Leaves a channel (this user) or removes a member (the creator only).
    pub async fn remove_channel_member(
        &self,
        channel_id: String,
        user_id: String,
    ) -> Result<(), CourierError> {
        let channel = parse_uuid("the channel ID", &channel_id)?;
        let user = parse_user(&user_id)?;
        Ok(self.client()?.remove_channel_member(channel, user).await?)
    }

    /// Marks a received message read, or (`up_to`) everything up to it in its
    /// conversation. Returns whether this changed the read state.
    pub async fn mark_read(&self, message_id: String, up_to: bool) -> Result<bool, CourierError> {
        let message = parse_uuid("the message ID", &message_id)?;
        Ok(self.client()?.mark_read(message, up_to).await?.changed)
    }

    /// A message this user sent: which recipient devices have it, and who read it.
    pub async fn delivery_state(&self, message_id: String) -> Result<DeliveryInfo, CourierError> {
        let message = parse_uuid("the message ID", &message_id)?;
        Ok(self.client()?.delivery_state(message).await?.into())
    }

    /// This user's read-receipt privacy settings.
    pub async fn privacy_settings(&self) -> Result<PrivacySettings, CourierError> {
        Ok(self.client()?.privacy_settings().await?.into())
    }

    /// Changes the settings given (`None` keeps one) and returns them all.
    pub async fn set_privacy_settings(
        &self,
        send_read_receipts: Option<bool>,
        show_read_receipts: Option<bool>,
    ) -> Result<PrivacySettings, CourierError> {
        let update = UpdatePrivacySettings {
            send_read_receipts,
            show_read_receipts,
        };
        Ok(self.client()?.set_privacy_settings(update).await?.into())
    }

    /// Removes another of this user's devices at the server (its token stops working,
    /// its sockets close). Removing this device is [`log_out`](Self::log_out).
    pub async fn remove_device(&self, device_id: u32) -> Result<(), CourierError> {
        let device = parse_device(device_id)?;
        if device == self.inner.client.own_device().device_id {
            return self.log_out().await;
        }
        Ok(self.client()?.remove_device(device).await?)
    }

    /// Logs this device out: removes it at the server (its token and sockets die, other
    /// devices stop sending to it), stops the receive loop; every later call fails with
    /// `LoggedOut`. The store file stays: the app deletes it (and its key).
    pub async fn log_out(&self) -> Result<(), CourierError> {
        let client = self.client()?;
        if let Err(error) = client.remove_device(client.own_device().device_id).await {
            match CourierError::from(error) {
                // Removed already (from another device): logging out is done.
                CourierError::DeviceRemoved => {}
                other => return Err(other),
            }
        }
        self.inner.logged_out.store(true, Ordering::SeqCst);
        self.inner.stop_receiving();
        Ok(())
    }

    /// Deletes the user's account, confirmed with its `password`: at the server every
    /// device of the user is removed (this one and the others, whose calls then fail
    /// with `DeviceRemoved` and whose receive loops stop), their keys and undelivered
    /// messages are deleted, and the username stays taken for good. Other users can no
    /// longer send to the user (their sends fail with `NoRecipientDevices`).
    ///
    /// Then this client stops its receive loop, every later call fails with
    /// `AccountDeleted`, and its store is marked deleted, so `open` of it fails with
    /// `AccountDeleted` too. The store file stays: the app deletes it (and its key).
    ///
    /// A wrong password fails with `WrongPassword` and changes nothing.
    pub async fn delete_account(&self, password: String) -> Result<(), CourierError> {
        let result = self.client()?.delete_account(&password).await;
        if self.inner.client.is_deleted() {
            // Deleted at the server, whether or not the store could be marked.
            self.inner.stop_receiving();
        }
        Ok(result?)
    }
}

impl Inner {
    fn live(&self) -> Result<&Client, CourierError> {
        if self.logged_out.load(Ordering::SeqCst) {
            return Err(CourierError::LoggedOut);
        }
        if self.client.is_deleted() {
            return Err(CourierError::AccountDeleted);
        }
        Ok(&self.client)
    }

    fn stop_receiving(&self) {
        if let Ok(receiving) = self.receiving.lock() {
            if let Some(handle) = receiving.as_ref() {
                handle.cancel();
            }
        }
    }

    async fn devices(
        &self,
        user: courier_protocol::UserId,
    ) -> Result<Vec<DeviceInfo>, CourierError> {
        let client = self.live()?;
        let mut devices = Vec::new();
        for record in client.devices(user).await? {
            let fingerprint = client.fingerprint(record.device_ref()).await?;
            devices.push(DeviceInfo::new(&record, fingerprint));
        }
        Ok(devices)
    }
}
