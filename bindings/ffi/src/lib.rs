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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use courier_sdk::app as sdk;

pub use error::{CourierError, ListenerError};
pub use listener::{EventListener, ReceiveHandle};

uniffi::setup_scaffolding!();

/// A spawned task that is aborted when whoever waits for it stops waiting.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A logged-in device, as an app holds it. Every method may be called from any thread.
///
/// Dropping it (Kotlin `close()`, Swift releasing it, Python garbage-collecting it)
/// stops its receive loop.
#[derive(Debug, uniffi::Object)]
pub struct CourierClient {
    inner: Arc<sdk::CourierClient>,
}

impl CourierClient {
    fn wrap(inner: sdk::CourierClient) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(inner),
        })
    }

    /// Runs one SDK operation as a task of its own on the runtime and waits for it.
    ///
    /// Why: uniffi polls an exported future from the foreign caller's thread and calls
    /// back into the foreign language at every wake-up, from the SDK thread that woke
    /// it (a send wakes at every HTTP exchange and store write). From Kotlin each such
    /// call goes through JNA, which attaches the waking thread to the JVM, and resumes a
    /// coroutine that polls again: milliseconds per send. As a task, the operation wakes
    /// the foreign side once, when it is done, and its work runs on the runtime's
    /// threads, not the app's. Dropping the returned future (a cancelled coroutine or
    /// Swift task) aborts the task, as dropping the SDK's future would.
    fn run<T, Work, Operation>(
        &self,
        work: Work,
    ) -> impl Future<Output = Result<T, CourierError>> + use<T, Work, Operation>
    where
        T: Send + 'static,
        Work: FnOnce(Arc<sdk::CourierClient>) -> Operation,
        Operation: Future<Output = Result<T, sdk::CourierError>> + Send + 'static,
    {
        let operation = work(Arc::clone(&self.inner));
        async move {
            // Spawned at the first poll, inside the runtime uniffi enters for it.
            let task = AbortOnDrop(tokio::spawn(operation));
            match task.await {
                Ok(result) => result.map_err(CourierError::from),
                Err(failed) => Err(CourierError::Internal {
                    detail: if failed.is_panic() {
                        "the SDK operation panicked".to_owned()
                    } else {
                        "the SDK operation was cancelled".to_owned()
                    },
                }),
            }
        }
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
    ///
    /// `registration_token`: the operator's token, for a server that takes new accounts
    /// by token only (`null`/`nil`/`None`, the default, for an open server). Fails with
    /// `InvalidRegistrationToken` when the server needs one and it is missing or not
    /// valid, and with `RegistrationClosed` when the server takes no new accounts.
    #[uniffi::constructor(default(registration_token = None))]
    pub async fn register(
        server_url: String,
        store_path: String,
        store_key: Vec<u8>,
        username: String,
        password: String,
        device_name: String,
        registration_token: Option<String>,
    ) -> Result<Arc<Self>, CourierError> {
        let inner = sdk::CourierClient::register(
            server_url,
            store_path,
            store_key,
            username,
            password,
            device_name,
            registration_token,
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
    /// fails with `WrongStoreKey` and leaves the file as it was; the store of a deleted
    /// account fails with `AccountDeleted`.
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
        self.run(move |client| async move {
            client
                .send(recipient_user_id, body, client_message_id)
                .await
        })
        .await
    }

    /// Sends `body` to every member device of a channel (see `send` for the client
    /// message ID).
    pub async fn send_group(
        &self,
        channel_id: String,
        body: Vec<u8>,
        client_message_id: Option<String>,
    ) -> Result<sdk::SentMessage, CourierError> {
        self.run(move |client| async move {
            client.send_group(channel_id, body, client_message_id).await
        })
        .await
    }

    /// Sends again what the store kept: messages whose send failed with a retryable
    /// error (or was cut off by the app ending), each under its client message ID, so
    /// none arrives twice. The receive loop does this whenever it connects; an app
    /// without a loop calls it. Returns how many went.
    pub async fn send_unsent(&self) -> Result<u32, CourierError> {
        self.run(move |client| async move { client.send_unsent().await })
            .await
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
        self.run(move |client| async move { client.receive_until_caught_up().await })
            .await
    }

    /// Events not yet confirmed, oldest first (at most `limit`, at most 1000).
    pub async fn pending_events(&self, limit: u32) -> Result<Vec<sdk::AppEvent>, CourierError> {
        self.run(move |client| async move { client.pending_events(limit).await })
            .await
    }

    /// The app handled every event up to and including `up_to_seq`.
    pub async fn confirm_events(&self, up_to_seq: u64) -> Result<(), CourierError> {
        self.run(move |client| async move { client.confirm_events(up_to_seq).await })
            .await
    }

    /// A user's devices as this device knows them (fetched when first needed).
    pub async fn devices(&self, user_id: String) -> Result<Vec<sdk::DeviceInfo>, CourierError> {
        self.run(move |client| async move { client.devices(user_id).await })
            .await
    }

    /// Fetches a user's devices from the server (changes become events) and returns them.
    pub async fn refresh_devices(
        &self,
        user_id: String,
    ) -> Result<Vec<sdk::DeviceInfo>, CourierError> {
        self.run(move |client| async move { client.refresh_devices(user_id).await })
            .await
    }

    /// Marks a device verified (the user compared its fingerprint or the safety number).
    pub async fn verify_device(&self, user_id: String, device_id: u32) -> Result<(), CourierError> {
        self.run(move |client| async move { client.verify_device(user_id, device_id).await })
            .await
    }

    /// Accepts a device's new identity keys: it is unblocked (and unverified).
    pub async fn accept_device_change(
        &self,
        user_id: String,
        device_id: u32,
    ) -> Result<(), CourierError> {
        self.run(move |client| async move { client.accept_device_change(user_id, device_id).await })
            .await
    }

    /// The safety number of this user and `other_user_id`: the same on both sides while
    /// neither user's devices changed keys.
    pub async fn safety_number(&self, other_user_id: String) -> Result<String, CourierError> {
        self.run(move |client| async move { client.safety_number(other_user_id).await })
            .await
    }

    /// Creates a channel of this user and `member_user_ids`.
    pub async fn create_channel(
        &self,
        member_user_ids: Vec<String>,
    ) -> Result<sdk::ChannelInfo, CourierError> {
        self.run(move |client| async move { client.create_channel(member_user_ids).await })
            .await
    }

    /// A channel this user is a member of.
    pub async fn channel(&self, channel_id: String) -> Result<sdk::ChannelInfo, CourierError> {
        self.run(move |client| async move { client.channel(channel_id).await })
            .await
    }

    /// Adds members to a channel (they read what is sent from now on).
    pub async fn add_channel_members(
        &self,
        channel_id: String,
        user_ids: Vec<String>,
    ) -> Result<sdk::ChannelInfo, CourierError> {
        self.run(
            move |client| async move { client.add_channel_members(channel_id, user_ids).await },
        )
        .await
    }

    /// Leaves a channel (this user) or removes a member (the creator only).
    pub async fn remove_channel_member(
        &self,
        channel_id: String,
        user_id: String,
    ) -> Result<(), CourierError> {
        self.run(
            move |client| async move { client.remove_channel_member(channel_id, user_id).await },
        )
        .await
    }

    /// Marks a received message read, or (`up_to`) everything up to it in its
    /// conversation. Returns whether this changed the read state.
    pub async fn mark_read(&self, message_id: String, up_to: bool) -> Result<bool, CourierError> {
        self.run(move |client| async move { client.mark_read(message_id, up_to).await })
            .await
    }

    /// A message this user sent: which recipient devices have it, and who read it.
    pub async fn delivery_state(
        &self,
        message_id: String,
    ) -> Result<sdk::DeliveryInfo, CourierError> {
        self.run(move |client| async move { client.delivery_state(message_id).await })
            .await
    }

    /// This user's read-receipt privacy settings.
    pub async fn privacy_settings(&self) -> Result<sdk::PrivacySettings, CourierError> {
        self.run(move |client| async move { client.privacy_settings().await })
            .await
    }

    /// Changes the settings given (`null`/`None`/`nil` keeps one) and returns them all.
    pub async fn set_privacy_settings(
        &self,
        send_read_receipts: Option<bool>,
        show_read_receipts: Option<bool>,
    ) -> Result<sdk::PrivacySettings, CourierError> {
        self.run(move |client| async move {
            client
                .set_privacy_settings(send_read_receipts, show_read_receipts)
                .await
        })
        .await
    }

    /// Removes another of this user's devices at the server (its token stops working,
    /// its sockets close). Removing this device is `log_out`.
    pub async fn remove_device(&self, device_id: u32) -> Result<(), CourierError> {
        self.run(move |client| async move { client.remove_device(device_id).await })
            .await
    }

    /// Logs this device out: removes it at the server, stops the receive loop; every
    /// later call fails with `LoggedOut`. The store file stays: the app deletes it (and
    /// its key).
    pub async fn log_out(&self) -> Result<(), CourierError> {
        self.run(move |client| async move { client.log_out().await })
            .await
    }

    /// Deletes the user's account, confirmed with its `password`: at the server every
    /// device of the user is removed (the others' calls then fail with `DeviceRemoved`),
    /// their keys and undelivered messages are deleted, and the username stays taken for
    /// good. This client stops its receive loop, every later call fails with
    /// `AccountDeleted`, and `open` of its store fails with `AccountDeleted`. The store
    /// file stays: the app deletes it (and its key). A wrong password fails with
    /// `WrongPassword` and changes nothing.
    pub async fn delete_account(&self, password: String) -> Result<(), CourierError> {
        self.run(move |client| async move { client.delete_account(password).await })
            .await
    }
}
