//! Courier for Kotlin (Android and the JVM), Swift (iOS) and Python: uniffi bindings over
//! [`courier_sdk::app`].
//!
//! A shell of conversions, not an API of its own: every type and method here is the one
//! of `courier_sdk::app` under the same name, with the same documentation (see
//! docs/bindings.md for the platform notes). Records and enums are exposed as they are
//! (`#[uniffi::remote]`, so the compiler checks each definition here against the SDK's);
//! the error and the listener are mirrored because the foreign side raises and
//! implements them.
//!
//! Threading: every method that does I/O is `async` (Kotlin `suspend`, Swift `async`,
//! Python coroutine) and runs on the tokio runtime uniffi provides; the receive loop
//! runs there too and calls the listener from the runtime's blocking pool, one call at
//! a time.

mod error;
mod listener;
mod types;

use std::sync::Arc;

use courier_sdk::app as sdk;

pub use error::{CourierError, ListenerError};
pub use listener::{EventListener, ReceiveHandle};

uniffi::setup_scaffolding!();

/// A logged-in device, as an app holds it. Every method may be called from any thread.
///
/// Dropping it (Kotlin `close()`, Swift releasing it, Python garbage-collecting it)
/// stops its receive loop.
#[derive(Debug, uniffi::Object)]
pub struct CourierClient {
    inner: sdk::CourierClient,
}

impl CourierClient {
    fn wrap(inner: sdk::CourierClient) -> Arc<Self> {
        Arc::new(Self { inner })
    }

    /// The SDK's client, for Rust code that drives the same object (the benchmark).
    pub fn sdk(&self) -> &sdk::CourierClient {
        &self.inner
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl CourierClient {
    /// Creates an account and logs in as its first device, keeping the device in a new
    /// store at `store_path` encrypted under `store_key` (32 bytes from the platform's
    /// key store: the iOS Keychain, the Android Keystore).
    #[uniffi::constructor]
    pub async fn register(
        server_url: String,
        store_path: String,
        store_key: Vec<u8>,
        username: String,
        password: String,
        device_name: String,
    ) -> Result<Arc<Self>, CourierError> {
        let inner = sdk::CourierClient::register(
            server_url,
            store_path,
            store_key,
            username,
            password,
            device_name,
        )
        .await?;
        Ok(Self::wrap(inner))
    }

    /// Logs in as a new device of an existing account (the server assigns its ID).
    #[uniffi::constructor]
    pub async fn login(
        server_url: String,
        store_path: String,
        store_key: Vec<u8>,
        username: String,
        password: String,
        device_name: String,
    ) -> Result<Arc<Self>, CourierError> {
        let inner = sdk::CourierClient::login(
            server_url,
            store_path,
            store_key,
            username,
            password,
            device_name,
        )
        .await?;
        Ok(Self::wrap(inner))
    }

    /// Opens the device kept in an existing store (after an app restart). A wrong key
    /// fails with `WrongStoreKey` and leaves the file as it was.
    #[uniffi::constructor]
    pub async fn open(store_path: String, store_key: Vec<u8>) -> Result<Arc<Self>, CourierError> {
        Ok(Self::wrap(
            sdk::CourierClient::open(store_path, store_key).await?,
        ))
    }

    /// This device.
    pub fn own_device(&self) -> sdk::DeviceAddress {
        self.inner.own_device()
    }

    /// Sends `body` to every device of `recipient_user_id` and to this user's other
    /// devices. The message is kept in the store until the server has it: after a
    /// retryable error it is sent again under its client message ID when the receive
    /// loop connects (or by `send_unsent`). Under a given `client_message_id` a retry
    /// (after a network error, an app restart) is answered with the original message
    /// and stores nothing new.
    pub async fn send(
        &self,
        recipient_user_id: String,
        body: Vec<u8>,
        client_message_id: Option<String>,
    ) -> Result<sdk::SentMessage, CourierError> {
        Ok(self
            .inner
            .send(recipient_user_id, body, client_message_id)
            .await?)
    }

    /// Sends `body` to every member device of a channel (see `send` for the client
    /// message ID).
    pub async fn send_group(
        &self,
        channel_id: String,
        body: Vec<u8>,
        client_message_id: Option<String>,
    ) -> Result<sdk::SentMessage, CourierError> {
        Ok(self
            .inner
            .send_group(channel_id, body, client_message_id)
            .await?)
    }

    /// Sends again what the store kept: messages whose send failed with a retryable
    /// error (or was cut off by the app ending), each under its client message ID, so
    /// none arrives twice. The receive loop does this whenever it connects; an app
    /// without a loop calls it. Returns how many went.
    pub async fn send_unsent(&self) -> Result<u32, CourierError> {
        Ok(self.inner.send_unsent().await?)
    }

    /// Starts the receive loop: it keeps the stream open (reconnecting with backoff),
    /// stores and acknowledges what arrives, and hands events to `listener` in batches;
    /// a batch the listener accepts is confirmed and never delivered again. Runs until
    /// `ReceiveHandle.cancel()`, `log_out`, the client is dropped, or the device is
    /// removed. The listener is called from an SDK thread, one call at a time.
    pub fn start_receiving(
        &self,
        listener: Box<dyn EventListener>,
    ) -> Result<Arc<ReceiveHandle>, CourierError> {
        let handle = self
            .inner
            .start_receiving(Arc::new(listener::Adapter::new(listener)))?;
        Ok(Arc::new(ReceiveHandle::new(handle)))
    }

    /// Connects, stores and acknowledges everything waiting, and returns (for apps woken
    /// in the background; an app in the foreground runs `start_receiving`).
    pub async fn receive_until_caught_up(&self) -> Result<sdk::ReceiveSummary, CourierError> {
        Ok(self.inner.receive_until_caught_up().await?)
    }

    /// Events not yet confirmed, oldest first (at most `limit`, at most 1000).
    pub async fn pending_events(&self, limit: u32) -> Result<Vec<sdk::AppEvent>, CourierError> {
        Ok(self.inner.pending_events(limit).await?)
    }

    /// The app handled every event up to and including `up_to_seq`.
    pub async fn confirm_events(&self, up_to_seq: u64) -> Result<(), CourierError> {
        Ok(self.inner.confirm_events(up_to_seq).await?)
    }

    /// A user's devices as this device knows them (fetched when first needed).
    pub async fn devices(&self, user_id: String) -> Result<Vec<sdk::DeviceInfo>, CourierError> {
        Ok(self.inner.devices(user_id).await?)
    }

    /// Fetches a user's devices from the server (changes become events) and returns them.
    pub async fn refresh_devices(
        &self,
        user_id: String,
    ) -> Result<Vec<sdk::DeviceInfo>, CourierError> {
        Ok(self.inner.refresh_devices(user_id).await?)
    }

    /// Marks a device verified (the user compared its fingerprint or the safety number).
    pub async fn verify_device(&self, user_id: String, device_id: u32) -> Result<(), CourierError> {
        Ok(self.inner.verify_device(user_id, device_id).await?)
    }

    /// Accepts a device's new identity keys: it is unblocked (and unverified).
    pub async fn accept_device_change(
        &self,
        user_id: String,
        device_id: u32,
    ) -> Result<(), CourierError> {
        Ok(self.inner.accept_device_change(user_id, device_id).await?)
    }

    /// The safety number of this user and `other_user_id`: the same on both sides while
    /// neither user's devices changed keys.
    pub async fn safety_number(&self, other_user_id: String) -> Result<String, CourierError> {
        Ok(self.inner.safety_number(other_user_id).await?)
    }

    /// Creates a channel of this user and `member_user_ids`.
    pub async fn create_channel(
        &self,
        member_user_ids: Vec<String>,
    ) -> Result<sdk::ChannelInfo, CourierError> {
        Ok(self.inner.create_channel(member_user_ids).await?)
    }

    /// A channel this user is a member of.
    pub async fn channel(&self, channel_id: String) -> Result<sdk::ChannelInfo, CourierError> {
        Ok(self.inner.channel(channel_id).await?)
    }

    /// Adds members to a channel (they read what is sent from now on).
    pub async fn add_channel_members(
        &self,
        channel_id: String,
        user_ids: Vec<String>,
    ) -> Result<sdk::ChannelInfo, CourierError> {
        Ok(self.inner.add_channel_members(channel_id, user_ids).await?)
    }

    /// Leaves a channel (this user) or removes a member (the creator only).
    pub async fn remove_channel_member(
        &self,
        channel_id: String,
        user_id: String,
    ) -> Result<(), CourierError> {
        Ok(self
            .inner
            .remove_channel_member(channel_id, user_id)
            .await?)
    }

    /// Marks a received message read, or (`up_to`) everything up to it in its
    /// conversation. Returns whether this changed the read state.
    pub async fn mark_read(&self, message_id: String, up_to: bool) -> Result<bool, CourierError> {
        Ok(self.inner.mark_read(message_id, up_to).await?)
    }

    /// A message this user sent: which recipient devices have it, and who read it.
    pub async fn delivery_state(
        &self,
        message_id: String,
    ) -> Result<sdk::DeliveryInfo, CourierError> {
        Ok(self.inner.delivery_state(message_id).await?)
    }

    /// This user's read-receipt privacy settings.
    pub async fn privacy_settings(&self) -> Result<sdk::PrivacySettings, CourierError> {
        Ok(self.inner.privacy_settings().await?)
    }

    /// Changes the settings given (`null`/`None`/`nil` keeps one) and returns them all.
    pub async fn set_privacy_settings(
        &self,
        send_read_receipts: Option<bool>,
        show_read_receipts: Option<bool>,
    ) -> Result<sdk::PrivacySettings, CourierError> {
        Ok(self
            .inner
            .set_privacy_settings(send_read_receipts, show_read_receipts)
            .await?)
    }

    /// Removes another of this user's devices at the server (its token stops working,
    /// its sockets close). Removing this device is `log_out`.
    pub async fn remove_device(&self, device_id: u32) -> Result<(), CourierError> {
        Ok(self.inner.remove_device(device_id).await?)
    }

    /// Logs this device out: removes it at the server, stops the receive loop; every
    /// later call fails with `LoggedOut`. The store file stays: the app deletes it (and
    /// its key).
    pub async fn log_out(&self) -> Result<(), CourierError> {
        Ok(self.inner.log_out().await?)
    }
}
