//! `CourierClient` and `ReceiveHandle` for JavaScript: each method converts its
//! arguments on the JavaScript thread, runs the SDK's call on the napi tokio runtime (the
//! one the SDK client was created on) and settles a promise with the converted result,
//! or rejects it with the error object of [`crate::error`]. A panic in the SDK's call
//! becomes an `internal` error; none crosses into JavaScript.

// napi-derive's generated glue for the `#[napi]` items of this module is unsafe; the
// hand-written code here has none.
#![allow(unsafe_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use courier_sdk::app;
use futures::FutureExt as _;
use napi::Env;
use napi::bindgen_prelude::{Function, PromiseRaw, ToNapiValue, Uint8Array};
use napi_derive::napi;

use crate::error::{BindingError, JsCourierError, to_napi_error};
use crate::listener::{JsListener, Returned};
use crate::types::{
    AppEvent, ChannelInfo, ConnectionState, DeliveryInfo, DeviceAddress, DeviceInfo,
    PrivacySettings, ReceiveSummary, SentMessage,
};

type Outcome<T> = Result<T, BindingError>;

/// Runs `future` on the napi runtime; resolves with `convert(value)` or rejects with the
/// error object. A panic inside `future` rejects with an `internal` error.
fn settle<'env, T, V, F, C>(
    env: &'env Env,
    future: F,
    convert: C,
) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    F: Future<Output = Outcome<T>> + Send + 'static,
    C: FnOnce(T) -> V + 'static,
{
    let guarded = AssertUnwindSafe(future).catch_unwind().map(|result| {
        Ok::<_, napi::Error>(
            result.unwrap_or_else(|panic| Err(BindingError::Sdk(internal(&*panic)))),
        )
    });
    env.spawn_future_with_callback(guarded, move |env, outcome| match outcome {
        Ok(value) => Ok(convert(value)),
        Err(error) => Err(to_napi_error(env, &error)),
    })
}

/// The message of a caught panic, as an `internal` error.
fn internal(panic: &(dyn std::any::Any + Send)) -> app::CourierError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    app::CourierError::Internal {
        message: format!("the SDK panicked: {what}"),
    }
}

/// Rejects right away (an argument failed before anything ran).
fn reject<'env, V: ToNapiValue>(
    env: &'env Env,
    error: BindingError,
) -> napi::Result<PromiseRaw<'env, V>> {
    settle(
        env,
        async move { Err::<std::convert::Infallible, _>(error) },
        |never| match never {},
    )
}

/// A logged-in device (one store, one account device). Create it with `register`,
/// `login` or `open`; every method returns a promise. `close()` releases it.
#[napi]
pub struct CourierClient {
    /// `None` once closed.
    inner: Mutex<Option<Arc<app::CourierClient>>>,
}

impl std::fmt::Debug for CourierClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CourierClient").finish_non_exhaustive()
    }
}

impl CourierClient {
    fn new(client: app::CourierClient) -> Self {
        Self {
            inner: Mutex::new(Some(Arc::new(client))),
        }
    }

    fn get(&self) -> Outcome<Arc<app::CourierClient>> {
        self.inner
            .lock()
            .ok()
            .and_then(|inner| inner.clone())
            .ok_or(BindingError::Closed)
    }

    /// Runs `call` on the SDK client (or rejects with `client_closed`).
    fn call<'env, T, V, F, Fut, C>(
        &self,
        env: &'env Env,
        call: F,
        convert: C,
    ) -> napi::Result<PromiseRaw<'env, V>>
    where
        T: Send + 'static,
        V: ToNapiValue,
        F: FnOnce(Arc<app::CourierClient>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, app::CourierError>> + Send + 'static,
        C: FnOnce(T) -> V + 'static,
    {
        match self.get() {
            Ok(client) => settle(
                env,
                async move { call(client).await.map_err(BindingError::from) },
                convert,
            ),
            Err(error) => reject(env, error),
        }
    }
}

fn bytes(array: &Uint8Array) -> Vec<u8> {
    array.to_vec()
}

#[napi]
impl CourierClient {
    /// Creates an account and logs in as its first device, keeping the device in a new
    /// store file at `storePath`, encrypted under `storeKey` (32 bytes; in Electron keep
    /// it with `safeStorage`). `registrationToken` is the operator's token, for a server
    /// that takes new accounts by token only (leave it out, or pass `null`, for an open
    /// server). Rejects with `invalid_registration_token` when the server needs one and
    /// it is missing or not valid, and with `registration_closed` when the server takes
    /// no new accounts.
    #[napi(ts_return_type = "Promise<CourierClient>")]
    // napi hands JavaScript arguments over by value; the bytes are copied out.
    #[allow(clippy::needless_pass_by_value, clippy::too_many_arguments)]
    pub fn register<'env>(
        env: &'env Env,
        server_url: String,
        store_path: String,
        store_key: Uint8Array,
        username: String,
        password: String,
        device_name: String,
        registration_token: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, CourierClient>> {
        let key = bytes(&store_key);
        settle(
            env,
            async move {
                app::CourierClient::register(
                    server_url,
                    store_path,
                    key,
                    username,
                    password,
                    device_name,
                    registration_token,
                )
                .await
                .map_err(BindingError::from)
            },
            CourierClient::new,
        )
    }

    /// Logs in as a new device of an existing account (the server assigns its ID), in a
    /// new store at `storePath`.
    #[napi(ts_return_type = "Promise<CourierClient>")]
    // napi hands JavaScript arguments over by value; the bytes are copied out.
    #[allow(clippy::needless_pass_by_value)]
    pub fn login<'env>(
        env: &'env Env,
        server_url: String,
        store_path: String,
        store_key: Uint8Array,
        username: String,
        password: String,
        device_name: String,
    ) -> napi::Result<PromiseRaw<'env, CourierClient>> {
        let key = bytes(&store_key);
        settle(
            env,
            async move {
                app::CourierClient::login(
                    server_url,
                    store_path,
                    key,
                    username,
                    password,
                    device_name,
                )
                .await
                .map_err(BindingError::from)
            },
            CourierClient::new,
        )
    }

    /// Opens the device kept in an existing store (after an app restart). A wrong key
    /// rejects with `wrong_store_key` and leaves the file as it was; the store of a
    /// deleted account rejects with `account_deleted`.
    #[napi(ts_return_type = "Promise<CourierClient>")]
    // napi hands JavaScript arguments over by value; the bytes are copied out.
    #[allow(clippy::needless_pass_by_value)]
    pub fn open<'env>(
        env: &'env Env,
        store_path: String,
        store_key: Uint8Array,
    ) -> napi::Result<PromiseRaw<'env, CourierClient>> {
        let key = bytes(&store_key);
        settle(
            env,
            async move {
                app::CourierClient::open(store_path, key)
                    .await
                    .map_err(BindingError::from)
            },
            CourierClient::new,
        )
    }

    /// This device (its user ID and device ID). Throws `client_closed` after `close()`.
    #[napi(getter, catch_unwind)]
    pub fn own_device(&self, env: &Env) -> napi::Result<DeviceAddress> {
        self.get()
            .map(|client| client.own_device().into())
            .map_err(|error| to_napi_error(env, &error))
    }

    /// Sends `body` to every device of `recipientUserId` and to this user's other
    /// devices. Retrying under the same `clientMessageId` (after a `network` error, an
    /// app restart) is answered with the original message and stores nothing new.
    #[napi(ts_return_type = "Promise<SentMessage>")]
    // napi hands JavaScript arguments over by value; the bytes are copied out.
    #[allow(clippy::needless_pass_by_value)]
    pub fn send<'env>(
        &self,
        env: &'env Env,
        recipient_user_id: String,
        body: Uint8Array,
        client_message_id: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, SentMessage>> {
        let body = bytes(&body);
        self.call(
            env,
            move |c| async move { c.send(recipient_user_id, body, client_message_id).await },
            SentMessage::from,
        )
    }

    /// Sends `body` to every member device of a channel (see `send` for
    /// `clientMessageId`).
    #[napi(ts_return_type = "Promise<SentMessage>")]
    // napi hands JavaScript arguments over by value; the bytes are copied out.
    #[allow(clippy::needless_pass_by_value)]
    pub fn send_group<'env>(
        &self,
        env: &'env Env,
        channel_id: String,
        body: Uint8Array,
        client_message_id: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, SentMessage>> {
        let body = bytes(&body);
        self.call(
            env,
            move |c| async move { c.send_group(channel_id, body, client_message_id).await },
            SentMessage::from,
        )
    }

    /// Sends again what the outbox kept (sends that failed with a retryable error, or
    /// were cut off by the app ending), each under its client message ID, so none
    /// arrives twice. The receive loop does this whenever it connects; an app without a
    /// loop calls it. Resolves with how many went.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn send_unsent<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, u32>> {
        self.call(env, |c| async move { c.send_unsent().await }, |count| count)
    }

    /// Starts the receive loop: it keeps the stream open (reconnecting with backoff),
    /// stores what arrives and calls `listener.onEvents` with batches of events on the
    /// JavaScript thread. A batch is confirmed once `onEvents` returned (or its promise
    /// resolved); if it throws (or rejects), `onError` hears `listener_failed` and the
    /// batch comes again after a pause. Connection changes go to `onConnectionState`,
    /// errors the loop survives (and the one that stops it) to `onError`. Throws
    /// `already_receiving` while another loop of this client runs.
    #[napi(catch_unwind, ts_args_type = "listener: EventListener")]
    pub fn start_receiving(
        &self,
        env: &Env,
        listener: Listener<'_>,
    ) -> napi::Result<ReceiveHandle> {
        let to_js = |error: BindingError| to_napi_error(env, &error);
        let client = self.get().map_err(to_js)?;
        let js_listener = JsListener {
            on_events: listener
                .on_events
                .build_threadsafe_function()
                .callee_handled::<false>()
                .build()?,
            on_connection_state: listener
                .on_connection_state
                .map(|f| {
                    f.build_threadsafe_function()
                        .callee_handled::<false>()
                        .build()
                })
                .transpose()?,
            on_error: listener
                .on_error
                .map(|f| {
                    f.build_threadsafe_function()
                        .callee_handled::<false>()
                        .build()
                })
                .transpose()?,
        };
        let handle = client
            .start_receiving(Arc::new(js_listener))
            .map_err(|error| to_js(error.into()))?;
        Ok(ReceiveHandle { inner: handle })
    }

    /// Connects, stores and acknowledges everything waiting, and resolves (for scripts;
    /// an app in the foreground uses `startReceiving`).
    #[napi(ts_return_type = "Promise<ReceiveSummary>")]
    pub fn receive_until_caught_up<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<PromiseRaw<'env, ReceiveSummary>> {
        self.call(
            env,
            |c| async move { c.receive_until_caught_up().await },
            ReceiveSummary::from,
        )
    }

    /// Events not yet confirmed, oldest first (at most `limit`, at most 1000).
    #[napi(ts_return_type = "Promise<Array<AppEvent>>")]
    pub fn pending_events<'env>(
        &self,
        env: &'env Env,
        limit: u32,
    ) -> napi::Result<PromiseRaw<'env, Vec<AppEvent>>> {
        self.call(
            env,
            move |c| async move { c.pending_events(limit).await },
            |events| events.into_iter().map(AppEvent::from).collect(),
        )
    }

    /// The app handled every event up to and including `upToSeq`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn confirm_events<'env>(
        &self,
        env: &'env Env,
        up_to_seq: f64,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let Some(seq) = seq_of(up_to_seq) else {
            return reject(
                env,
                BindingError::Sdk(app::CourierError::InvalidArgument {
                    message: "upToSeq must be a whole number, 0 or more".to_owned(),
                }),
            );
        };
        self.call(
            env,
            move |c| async move { c.confirm_events(seq).await },
            |()| (),
        )
    }

    /// A user's devices as this device knows them.
    #[napi(ts_return_type = "Promise<Array<DeviceInfo>>")]
    pub fn devices<'env>(
        &self,
        env: &'env Env,
        user_id: String,
    ) -> napi::Result<PromiseRaw<'env, Vec<DeviceInfo>>> {
        self.call(env, move |c| async move { c.devices(user_id).await }, infos)
    }

    /// Fetches a user's devices from the server (changes become events) and returns them.
    #[napi(ts_return_type = "Promise<Array<DeviceInfo>>")]
    pub fn refresh_devices<'env>(
        &self,
        env: &'env Env,
        user_id: String,
    ) -> napi::Result<PromiseRaw<'env, Vec<DeviceInfo>>> {
        self.call(
            env,
            move |c| async move { c.refresh_devices(user_id).await },
            infos,
        )
    }

    /// Marks a device verified (the user compared its fingerprint or the safety number).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn verify_device<'env>(
        &self,
        env: &'env Env,
        user_id: String,
        device_id: u32,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        self.call(
            env,
            move |c| async move { c.verify_device(user_id, device_id).await },
            |()| (),
        )
    }

    /// Accepts a device's new identity keys: it is unblocked (and unverified).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn accept_device_change<'env>(
        &self,
        env: &'env Env,
        user_id: String,
        device_id: u32,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        self.call(
            env,
            move |c| async move { c.accept_device_change(user_id, device_id).await },
            |()| (),
        )
    }

    /// The safety number of this user and `otherUserId`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn safety_number<'env>(
        &self,
        env: &'env Env,
        other_user_id: String,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        self.call(
            env,
            move |c| async move { c.safety_number(other_user_id).await },
            |s| s,
        )
    }

    /// Creates a channel of this user and `memberUserIds`.
    #[napi(ts_return_type = "Promise<ChannelInfo>")]
    pub fn create_channel<'env>(
        &self,
        env: &'env Env,
        member_user_ids: Vec<String>,
    ) -> napi::Result<PromiseRaw<'env, ChannelInfo>> {
        self.call(
            env,
            move |c| async move { c.create_channel(member_user_ids).await },
            ChannelInfo::from,
        )
    }

    /// A channel this user is a member of.
    #[napi(ts_return_type = "Promise<ChannelInfo>")]
    pub fn channel<'env>(
        &self,
        env: &'env Env,
        channel_id: String,
    ) -> napi::Result<PromiseRaw<'env, ChannelInfo>> {
        self.call(
            env,
            move |c| async move { c.channel(channel_id).await },
            ChannelInfo::from,
        )
    }

    /// Adds members to a channel (they read what is sent from now on).
    #[napi(ts_return_type = "Promise<ChannelInfo>")]
    pub fn add_channel_members<'env>(
        &self,
        env: &'env Env,
        channel_id: String,
        user_ids: Vec<String>,
    ) -> napi::Result<PromiseRaw<'env, ChannelInfo>> {
        self.call(
            env,
            move |c| async move { c.add_channel_members(channel_id, user_ids).await },
            ChannelInfo::from,
        )
    }

    /// Leaves a channel (this user) or removes a member (the creator only).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove_channel_member<'env>(
        &self,
        env: &'env Env,
        channel_id: String,
        user_id: String,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        self.call(
            env,
            move |c| async move { c.remove_channel_member(channel_id, user_id).await },
            |()| (),
        )
    }

    /// Marks a received message read, or (`upTo`) everything up to it in its
    /// conversation. Resolves with whether this changed the read state.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn mark_read<'env>(
        &self,
        env: &'env Env,
        message_id: String,
        up_to: bool,
    ) -> napi::Result<PromiseRaw<'env, bool>> {
        self.call(
            env,
            move |c| async move { c.mark_read(message_id, up_to).await },
            |changed| changed,
        )
    }

    /// A message this user sent: which recipient devices have it, and who read it.
    #[napi(ts_return_type = "Promise<DeliveryInfo>")]
    pub fn delivery_state<'env>(
        &self,
        env: &'env Env,
        message_id: String,
    ) -> napi::Result<PromiseRaw<'env, DeliveryInfo>> {
        self.call(
            env,
            move |c| async move { c.delivery_state(message_id).await },
            DeliveryInfo::from,
        )
    }

    /// This user's read-receipt privacy settings.
    #[napi(ts_return_type = "Promise<PrivacySettings>")]
    pub fn privacy_settings<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<PromiseRaw<'env, PrivacySettings>> {
        self.call(
            env,
            |c| async move { c.privacy_settings().await },
            PrivacySettings::from,
        )
    }

    /// Changes the settings given (an absent one stays) and resolves with them all.
    #[napi(ts_return_type = "Promise<PrivacySettings>")]
    pub fn set_privacy_settings<'env>(
        &self,
        env: &'env Env,
        send_read_receipts: Option<bool>,
        show_read_receipts: Option<bool>,
    ) -> napi::Result<PromiseRaw<'env, PrivacySettings>> {
        self.call(
            env,
            move |c| async move {
                c.set_privacy_settings(send_read_receipts, show_read_receipts)
                    .await
            },
            PrivacySettings::from,
        )
    }

    /// Removes another of this user's devices at the server. Removing this device is
    /// `logOut`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove_device<'env>(
        &self,
        env: &'env Env,
        device_id: u32,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        self.call(
            env,
            move |c| async move { c.remove_device(device_id).await },
            |()| (),
        )
    }

    /// Logs this device out at the server and stops the receive loop; later calls reject
    /// with `logged_out`. The store file stays: the app deletes it (and its key).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn log_out<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.call(env, |c| async move { c.log_out().await }, |()| ())
    }

    /// Deletes the user's account, confirmed with its `password`: at the server every
    /// device of the user is removed (the others' calls then reject with
    /// `device_removed`), their keys and undelivered messages are deleted, and the
    /// username stays taken for good. This client stops its receive loop, later calls
    /// reject with `account_deleted`, and `open` of its store rejects with
    /// `account_deleted`. The store file stays: the app deletes it (and its key). A wrong
    /// password rejects with `wrong_password` and changes nothing.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn delete_account<'env>(
        &self,
        env: &'env Env,
        password: String,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        self.call(
            env,
            move |c| async move { c.delete_account(password).await },
            |()| (),
        )
    }

    /// Releases this client: its receive loop stops and the store closes once calls
    /// still running have finished; later calls reject with `client_closed`. Idempotent.
    /// (Garbage collection of an unreachable client does the same.)
    #[napi(catch_unwind)]
    pub fn close(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.take();
        }
    }

    /// Whether `close()` was called.
    #[napi(getter, catch_unwind)]
    pub fn is_closed(&self) -> bool {
        self.get().is_err()
    }
}

fn infos(devices: Vec<app::DeviceInfo>) -> Vec<DeviceInfo> {
    devices.into_iter().map(DeviceInfo::from).collect()
}

/// A JavaScript number as an event sequence number: a whole number from 0 to 2^53.
fn seq_of(value: f64) -> Option<u64> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if (0.0..=MAX_SAFE).contains(&value) && value.fract() == 0.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
        Some(value as u64)
    } else {
        None
    }
}

/// The callbacks of `startReceiving`. Each is called on the JavaScript thread; the
/// receive loop waits for each call to finish (or its promise to settle) before the
/// next.
#[napi(object, object_to_js = false, js_name = "EventListener")]
pub struct Listener<'a> {
    /// A batch of events, oldest first. Returning (or resolving) confirms them; throwing
    /// (or rejecting) has them delivered again.
    #[napi(ts_type = "(events: Array<AppEvent>) => void | Promise<void>")]
    pub on_events: Function<'a, Vec<AppEvent>, Returned>,
    /// The stream's connection changed (the last call is `{ state: 'stopped' }`).
    #[napi(ts_type = "(state: ConnectionState) => void")]
    pub on_connection_state: Option<Function<'a, ConnectionState, Returned>>,
    /// An error the loop survived, or the one that stopped it (see `CourierError`).
    #[napi(ts_type = "(error: CourierError) => void")]
    pub on_error: Option<Function<'a, JsCourierError, Returned>>,
}

impl std::fmt::Debug for Listener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

/// Stops a receive loop. Dropping it does not stop the loop: call `cancel()` (or
/// `close()` the client).
#[napi]
pub struct ReceiveHandle {
    inner: app::ReceiveHandle,
}

impl std::fmt::Debug for ReceiveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveHandle").finish_non_exhaustive()
    }
}

#[napi]
impl ReceiveHandle {
    /// Asks the loop to stop. A batch `onEvents` is handling is confirmed first; then
    /// `onConnectionState` hears `{ state: 'stopped' }` and `wait()` resolves.
    #[napi(catch_unwind)]
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// Whether the loop has ended.
    #[napi(getter, catch_unwind)]
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Resolves once the loop has ended.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let handle = self.inner.clone();
        settle(
            env,
            async move {
                handle.wait().await;
                Ok(())
            },
            |()| (),
        )
    }
}
