//! [`Client`]: the crypto core and the network together, as an app uses them.
//!
//! - Register or log in: the server assigns the device ID; the client creates the
//!   device's keys, publishes them, and fetches its own user's device list. A login cut
//!   off after the server created the device is finished by [`Client::open`].
//! - Send: fetch (and cache) device lists, claim keys for devices without a session,
//!   encrypt one envelope per device, send; on the server's device-list refusal refresh
//!   the lists and try again (bounded); a network error is retried with the same client
//!   message ID, so nothing is sent twice.
//! - Receive: read the stream (WebSocket, REST as fallback), decrypt and store each
//!   envelope, and acknowledge it only after it is stored. A redelivered envelope is
//!   recognised by its message ID and reaches the app once.
//! - Delete the account ([`Client::delete_account`]): the server removes every device of
//!   the user; this client stops and its store is marked deleted, so neither it nor a
//!   later [`Client::open`] of the store can be used again ([`ClientError::AccountDeleted`]).
//! - Events for the app queue up in the store ([`Client::pending_events`]) until the app
//!   confirms them, so a crash loses none and repeats none it confirmed.
//!   [`Client::wait_for_events`] resolves when there are some, so an app running
//!   [`Client::run`] never has to poll.
//!
//! Store work (one SQLite transaction per operation, each one an fsync, and a wait of up
//! to the store's busy timeout while another connection holds the file) runs on Tokio's
//! blocking pool, never on the runtime's worker threads: an app on a `current_thread`
//! runtime keeps running while the store waits.

mod channels;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier_protocol::api::accounts::{CreateAccountRequest, LoginRequest};
use courier_protocol::api::keys::{ClaimKeysRequest, DeviceRef};
use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::api::stream::{ControlFrame, Envelope, ServerFrame, StreamItem};
use courier_protocol::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, MutexGuard, watch};
use url::Url;
use uuid::Uuid;

use crate::crypto::machine::FailureReason;
use crate::crypto::{
    CryptoMachine, Decrypted, DeviceChange, DeviceRecord, MachineError, OutgoingSend,
    OutgoingTarget, QueuedEvent,
};
use crate::store::{SqliteStore, StoreError, StoreKey};
use crate::transport::{
    AccessToken, ApiClient, Backoff, BackoffPolicy, SendOutcome, StreamClosed, TransportError,
};

/// Sends tried per message before giving up: each refusal for a device-list mismatch
/// refreshes the lists once.
const MAX_SEND_ATTEMPTS: usize = 4;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server or the network failed, or refused the request.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The crypto core refused or failed (blocked devices, store failure, ...).
    #[error(transparent)]
    Crypto(#[from] MachineError),
    /// Opening the store failed (wrong key, damaged file).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds no device: register or log in first.
    #[error("the store holds no logged-in device")]
    NotLoggedIn,
    /// The client's record in the store does not decode (written by an incompatible SDK).
    #[error("the stored client state is unreadable")]
    StoredStateInvalid,
    /// The device lists kept changing while sending.
    #[error("the recipient's devices kept changing; the message was not sent")]
    DeviceListsUnsettled,
    /// These devices publish no keys at all, so no session can be opened with them.
    #[error("{} device(s) have no keys to open a session with", .0.len())]
    NoKeys(Vec<DeviceRef>),
    /// The stream ended for good: this device was removed or another connection of it
    /// took over.
    #[error("the stream ended: {0:?}")]
    StreamEnded(StreamClosed),
    /// This client's account was deleted ([`Client::delete_account`]), from this client
    /// or from an earlier one on the same store: the store is marked so, its token is
    /// gone, and nothing more can be done with it (delete the file and its key).
    #[error("the account was deleted")]
    AccountDeleted,
    /// Store work on the blocking pool did not finish: it panicked (a bug) or the runtime
    /// is shutting down. Its transaction committed or rolled back whole, as every one
    /// does. The panic's message is not kept: it may quote stored data.
    #[error("store work on the blocking pool panicked or was cancelled")]
    StoreTaskFailed,
}

impl ClientError {
    /// Whether the same send can succeed later: the network or the server failed in a
    /// way worth retrying, or the device lists kept changing.
    pub fn may_pass(&self) -> bool {
        match self {
            ClientError::Transport(error) => error.is_retryable(),
            ClientError::DeviceListsUnsettled => true,
            _ => false,
        }
    }
}

/// What the client keeps beside the crypto state.
#[derive(Serialize, Deserialize)]
struct ClientRecord {
    server: String,
    token: String,
    /// Everything up to here was stored and acknowledged.
    cursor: u64,
    /// Login finished: identity keys, one-time and fallback keys published and the own
    /// device list fetched. `false` between a login's token being stored and that, so
    /// [`Client::open`] finishes it. Stores from before this field had always finished.
    #[serde(default = "finished")]
    keys_published: bool,
    /// The account was deleted ([`Client::delete_account`]): [`Client::open`] refuses
    /// the store. `token` is emptied with it.
    #[serde(default)]
    account_deleted: bool,
}

fn finished() -> bool {
    true
}

const CLIENT: &str = "client";

fn encode_record(record: &ClientRecord) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(record).map_err(|_| ClientError::StoredStateInvalid)
}

fn decode_record(bytes: &[u8]) -> Result<ClientRecord, ClientError> {
    serde_json::from_slice(bytes).map_err(|_| ClientError::StoredStateInvalid)
}

/// Runs store work on the blocking pool; a panic in it becomes
/// [`ClientError::StoreTaskFailed`] instead of unwinding through the caller.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, ClientError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ClientError::StoreTaskFailed)
}

/// Opens (or creates) the store on the blocking pool: opening runs the schema check in a
/// write transaction, which may wait for another connection.
async fn open_store(path: &Path, key: &StoreKey) -> Result<Arc<SqliteStore>, ClientError> {
    let path = path.to_owned();
    let key = key.duplicate();
    Ok(blocking(move || SqliteStore::open(&path, &key).map(Arc::new)).await??)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A logged-in device.
pub struct Client {
    api: ApiClient,
    store: Arc<SqliteStore>,
    /// Shared with the blocking-pool task that uses it ([`Client::with_machine`]).
    machine: Arc<Mutex<CryptoMachine>>,
    own: DeviceRef,
    /// Bumped after every use of the crypto core that may change it (the only thing that
    /// queues events), so [`Client::wait_for_events`] wakes up to look. Shared with the
    /// blocking-pool task, which bumps it also when the caller stopped waiting.
    machine_used: Arc<watch::Sender<u64>>,
    /// Set once the account is deleted ([`Client::delete_account`]): every later call
    /// fails with [`ClientError::AccountDeleted`], and [`Client::run`] stops.
    deleted: watch::Sender<bool>,
}

/// The crypto core, locked; announces its use when released (it may have queued events).
pub struct MachineGuard<'a> {
    machine: MutexGuard<'a, CryptoMachine>,
    used: &'a watch::Sender<u64>,
}

impl std::fmt::Debug for MachineGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineGuard").finish_non_exhaustive()
    }
}

impl std::ops::Deref for MachineGuard<'_> {
    type Target = CryptoMachine;

    fn deref(&self) -> &CryptoMachine {
        &self.machine
    }
}

impl std::ops::DerefMut for MachineGuard<'_> {
    fn deref_mut(&mut self) -> &mut CryptoMachine {
        &mut self.machine
    }
}

impl Drop for MachineGuard<'_> {
    fn drop(&mut self) {
        self.used.send_modify(|uses| *uses = uses.wrapping_add(1));
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api", &self.api)
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

/// What [`Client::receive_until_caught_up`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveSummary {
    /// New messages stored.
    pub messages: usize,
    /// Envelopes seen before (redeliveries).
    pub duplicates: usize,
    /// Envelopes that could not be read (reported as events).
    pub failures: usize,
    /// Socket items of a type this SDK does not know, acknowledged and skipped (the REST
    /// inbox leaves them out of its pages, so they are not counted there).
    pub skipped: usize,
}

/// Where [`Client::run`]'s connection is, for an observer (the app surface's listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamPhase {
    /// Opening the stream.
    Connecting,
    /// The stream is open.
    Connected,
    /// The connection ended or was refused; the next try is in `retry_in`.
    Disconnected { retry_in: Duration },
}

/// An observer that hears nothing.
fn unobserved(_: StreamPhase) {}

impl Client {
    /// Creates an account and logs in as its first device.
    ///
    /// `registration_token` is the operator's token for a server that takes new accounts
    /// by token only (`None` for an open server, which ignores one). The server refuses
    /// with `403` and [`ErrorCode::InvalidRegistrationToken`] when the token is needed
    /// and missing, unknown, expired, revoked or used up, and with
    /// [`ErrorCode::RegistrationClosed`] when it takes no new accounts; both come as
    /// [`ClientError::Transport`] ([`TransportError::code`]), before any store is made.
    ///
    /// [`ErrorCode::InvalidRegistrationToken`]: courier_protocol::ErrorCode::InvalidRegistrationToken
    /// [`ErrorCode::RegistrationClosed`]: courier_protocol::ErrorCode::RegistrationClosed
    pub async fn register(
        server: Url,
        store_path: &Path,
        store_key: &StoreKey,
        username: &str,
        password: &str,
        device_name: &str,
        registration_token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let api = ApiClient::new(server.clone())?;
        api.create_account(&CreateAccountRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            registration_token: registration_token.map(str::to_owned),
        })
        .await?;
        Self::login(
            server,
            store_path,
            store_key,
            username,
            password,
            device_name,
        )
        .await
    }

    /// Logs in as a new device of an existing account (the server assigns its ID),
    /// creates and publishes its keys, and learns its own user's devices.
    ///
    /// The store keeps the token and the account before anything is published, and
    /// records when publishing is done. If this fails after the server created the
    /// device (the network dropped), the store holds that device with its work pending:
    /// [`Client::open`] finishes it, so the device does not stay one nobody can send to.
    /// Refused with [`MachineError::AccountExists`] before anything reaches the server
    /// if the store already holds a device (open that one instead).
    pub async fn login(
        server: Url,
        store_path: &Path,
        store_key: &StoreKey,
        username: &str,
        password: &str,
        device_name: &str,
    ) -> Result<Self, ClientError> {
        let store = open_store(store_path, store_key).await?;
        let existing = {
            let store = store.clone();
            blocking(move || CryptoMachine::load(store).map(|machine| machine.is_some())).await??
        };
        // Checked first: a login past this point creates a device at the server, and a
        // store that cannot take it would leave that device to nobody.
        if existing {
            return Err(MachineError::AccountExists.into());
        }
        let mut api = ApiClient::new(server.clone())?;
        let login = api
            .login(&LoginRequest {
                username: username.to_owned(),
                password: password.to_owned(),
                device_id: DeviceId::NEW,
                device_name: Some(device_name.to_owned()),
                replace_device_id: None,
            })
            .await?;
        let record_bytes = encode_record(&ClientRecord {
            server: server.to_string(),
            token: login.access_token.expose_secret().to_owned(),
            cursor: 0,
            keys_published: false,
            account_deleted: false,
        })?;
        let (user_id, device_id) = (login.user_id, login.device_id);
        let machine = {
            let store = store.clone();
            blocking(move || {
                // The account first, then the token: a store with a token always has its
                // keys.
                let machine = CryptoMachine::create(store.clone(), user_id, device_id)?;
                store.transaction(|tx| tx.put(CLIENT, b"", b"client", &record_bytes))?;
                Ok::<_, ClientError>(machine)
            })
            .await??
        };
        api.set_token(login.access_token);
        let client = Self::assemble(api, store, machine);
        client.finish_login().await?;
        Ok(client)
    }

    /// Reopens the device kept in the store (after an app restart).
    ///
    /// If the login that made the device did not finish publishing its keys (see
    /// [`Client::login`]), this finishes it first: identity keys (the server takes the
    /// same keys again as a no-op), one-time and fallback keys, the own device list. If
    /// that fails, this returns the error rather than a client nobody can send to; the
    /// work stays pending, so when the error is retryable
    /// ([`TransportError::is_retryable`]) the next `open` tries again. A device removed
    /// meanwhile fails for good: log in anew with a new store. A store whose account was
    /// deleted ([`Client::delete_account`]) is refused with [`ClientError::AccountDeleted`].
    pub async fn open(store_path: &Path, store_key: &StoreKey) -> Result<Self, ClientError> {
        let store = open_store(store_path, store_key).await?;
        let (record, machine) = {
            let store = store.clone();
            blocking(move || {
                let record = Self::record_in(&store)?.ok_or(ClientError::NotLoggedIn)?;
                let machine = CryptoMachine::load(store)?.ok_or(ClientError::NotLoggedIn)?;
                Ok::<_, ClientError>((record, machine))
            })
            .await??
        };
        if record.account_deleted {
            return Err(ClientError::AccountDeleted);
        }
        let server = Url::parse(&record.server).map_err(|_| ClientError::StoredStateInvalid)?;
        let api = ApiClient::new(server)?.with_token(AccessToken::new(record.token));
        let client = Self::assemble(api, store, machine);
        if !record.keys_published {
            client.finish_login().await?;
        }
        Ok(client)
    }

    fn assemble(api: ApiClient, store: Arc<SqliteStore>, machine: CryptoMachine) -> Self {
        Self {
            api,
            store,
            own: machine.own_device(),
            machine: Arc::new(Mutex::new(machine)),
            machine_used: Arc::new(watch::Sender::new(0)),
            deleted: watch::Sender::new(false),
        }
    }

    /// The API client, unless the account was deleted.
    fn live_api(&self) -> Result<&ApiClient, ClientError> {
        self.check_live()?;
        Ok(&self.api)
    }

    /// Refuses every call once the account is deleted.
    fn check_live(&self) -> Result<(), ClientError> {
        if *self.deleted.borrow() {
            return Err(ClientError::AccountDeleted);
        }
        Ok(())
    }

    /// Deletes this user's account at the server (`DELETE /v1/accounts/me`, confirmed
    /// with `password`), then retires this client.
    ///
    /// At the server every device of the user is removed (this one and the others: their
    /// tokens answer `device_removed`, their streams close as removed), their keys and
    /// pending envelopes are deleted, and the username stays reserved; other users see
    /// the device list change and can no longer send to the user.
    ///
    /// Here, once the server confirmed: [`Client::run`] stops (it returns
    /// [`ClientError::AccountDeleted`]), every later call of this client fails with
    /// [`ClientError::AccountDeleted`], and the store is marked deleted (its token
    /// erased), so [`Client::open`] refuses it with the same error. The store file stays
    /// with the messages it holds: the app deletes it and its key, as after a log-out.
    ///
    /// A wrong password is refused with `403` [`ErrorCode::WrongPassword`] (as
    /// [`ClientError::Transport`]) and changes nothing. If marking the store fails, the
    /// account is deleted all the same and this client is retired; the store error is
    /// returned, and a later `open` gets a client whose calls the server refuses as
    /// `device_removed`.
    ///
    /// [`ErrorCode::WrongPassword`]: courier_protocol::ErrorCode::WrongPassword
    pub async fn delete_account(&self, password: &str) -> Result<(), ClientError> {
        self.live_api()?.delete_account(password).await?;
        self.deleted.send_replace(true);
        let store = self.store.clone();
        blocking(move || {
            store.transaction(|tx| {
                let bytes = tx
                    .get(CLIENT, b"", b"client")?
                    .ok_or(ClientError::NotLoggedIn)?;
                let mut record = decode_record(&bytes)?;
                record.account_deleted = true;
                record.token = String::new();
                tx.put(CLIENT, b"", b"client", &encode_record(&record)?)?;
                Ok::<_, ClientError>(())
            })
        })
        .await?
    }

    /// Whether this client's account was deleted ([`Client::delete_account`]).
    pub fn is_deleted(&self) -> bool {
        *self.deleted.borrow()
    }

    /// Publishes what a login publishes, then records that it is done. Each step can be
    /// repeated: the server answers a re-publish of the same identity keys as a no-op,
    /// and key uploads are stored before they are sent and re-sent until confirmed.
    async fn finish_login(&self) -> Result<(), ClientError> {
        // Signing only, no store work: done on this task.
        let identity = self.machine.lock().await.identity_keys_upload();
        self.live_api()?.publish_identity_keys(&identity).await?;
        self.maintain_keys().await?;
        self.refresh_devices(self.own.user_id).await?;
        self.update_record(|record| {
            let changed = !record.keys_published;
            record.keys_published = true;
            changed
        })
        .await
    }

    fn record_in(store: &SqliteStore) -> Result<Option<ClientRecord>, ClientError> {
        store
            .get(CLIENT, b"", b"client")?
            .map(|bytes| decode_record(&bytes))
            .transpose()
    }

    /// Changes the stored client record in one transaction; `change` says whether it
    /// changed anything (else nothing is written).
    async fn update_record(
        &self,
        change: impl FnOnce(&mut ClientRecord) -> bool + Send + 'static,
    ) -> Result<(), ClientError> {
        self.with_store(move |store| {
            store.transaction(|tx| {
                let bytes = tx
                    .get(CLIENT, b"", b"client")?
                    .ok_or(ClientError::NotLoggedIn)?;
                let mut record = decode_record(&bytes)?;
                if change(&mut record) {
                    tx.put(CLIENT, b"", b"client", &encode_record(&record)?)?;
                }
                Ok(())
            })
        })
        .await?
    }

    /// Runs `f` on the store on the blocking pool.
    async fn with_store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteStore) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        self.check_live()?;
        let store = self.store.clone();
        blocking(move || f(&store)).await
    }

    /// Runs `f` on the crypto core on the blocking pool (every machine method is a store
    /// transaction), then announces the use: it may have queued events.
    async fn with_machine<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CryptoMachine) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        self.on_machine(true, f).await
    }

    /// [`Client::with_machine`] for what only reads: no announcement, so a waiter that
    /// looks does not wake itself.
    async fn read_machine<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CryptoMachine) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        self.on_machine(false, f).await
    }

    async fn on_machine<R: Send + 'static>(
        &self,
        announce: bool,
        f: impl FnOnce(&mut CryptoMachine) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        self.check_live()?;
        let mut machine = self.machine.clone().lock_owned().await;
        let used = announce.then(|| self.machine_used.clone());
        // The task owns the lock: a caller that stops waiting leaves the operation to
        // finish whole, and the core locked until it has.
        blocking(move || {
            let result = f(&mut machine);
            drop(machine);
            if let Some(used) = used {
                used.send_modify(|uses| *uses = uses.wrapping_add(1));
            }
            result
        })
        .await
    }

    /// This device.
    pub fn own_device(&self) -> DeviceRef {
        self.own
    }

    /// The typed API client (for what the client does not wrap).
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The crypto core, locked, for what the client does not wrap.
    // For tests: its methods run store work on the calling task; apps use the client's
    // own methods (devices, verify_device, fingerprint, ...), which run it off the
    // runtime.
    #[doc(hidden)]
    pub async fn crypto(&self) -> MachineGuard<'_> {
        MachineGuard {
            machine: self.machine.lock().await,
            used: &self.machine_used,
        }
    }

    /// The devices this device knows of a user (removed ones included) and how far it
    /// trusts each.
    pub async fn devices(&self, user: UserId) -> Result<Vec<DeviceRecord>, ClientError> {
        Ok(self.read_machine(move |m| m.devices(user)).await??)
    }

    /// The app's user compared this device's fingerprint (or the safety number).
    pub async fn verify_device(&self, device: DeviceRef) -> Result<(), ClientError> {
        Ok(self
            .with_machine(move |m| m.verify_device(device))
            .await??)
    }

    /// The app accepts a device's new identity keys: it gets messages again (unverified);
    /// sessions with the old keys are dropped.
    pub async fn accept_identity_change(&self, device: DeviceRef) -> Result<(), ClientError> {
        Ok(self
            .with_machine(move |m| m.accept_identity_change(device))
            .await??)
    }

    /// A device's fingerprint (this device's own included), to compare out of band.
    pub async fn fingerprint(&self, device: DeviceRef) -> Result<String, ClientError> {
        Ok(self.read_machine(move |m| m.fingerprint(device)).await??)
    }

    /// The safety number of this user and `other`, over both users' current devices:
    /// both sides see the same digits when they see the same devices.
    pub async fn safety_number(&self, other: UserId) -> Result<String, ClientError> {
        Ok(self.read_machine(move |m| m.safety_number(other)).await??)
    }

    /// Tops up one-time keys when the server runs low and rotates the fallback key when
    /// due. Each batch is stored before it is uploaded and confirmed after.
    pub async fn maintain_keys(&self) -> Result<(), ClientError> {
        let count = self.live_api()?.key_count().await?.one_time_key_count;
        let upload = self
            .with_machine(move |m| m.one_time_keys_for_upload(count))
            .await??;
        if let Some(upload) = upload {
            self.live_api()?.upload_one_time_keys(&upload).await?;
            self.with_machine(|m| m.mark_one_time_keys_published())
                .await??;
        }
        let now = now_ms();
        let fallback = self
            .with_machine(move |m| m.fallback_key_for_upload(now))
            .await??;
        if let Some(fallback) = fallback {
            self.live_api()?.set_fallback_key(&fallback).await?;
            self.with_machine(move |m| m.mark_fallback_key_published(now))
                .await??;
        }
        Ok(())
    }

    /// Fetches a user's devices from the key directory and takes them in; returns what
    /// changed (also queued as events).
    pub async fn refresh_devices(&self, user_id: UserId) -> Result<Vec<DeviceChange>, ClientError> {
        let listed = self.live_api()?.user_devices(user_id).await?;
        Ok(self
            .with_machine(move |m| m.update_device_list_of(user_id, &listed))
            .await??)
    }

    /// Sends `body` to `recipient` (all its devices and this user's other devices) under
    /// a new client message ID.
    pub async fn send(
        &self,
        recipient: UserId,
        body: &[u8],
    ) -> Result<SendMessageResponse, ClientError> {
        let client_message_id = Uuid::new_v4().simple().to_string();
        self.send_with_id(recipient, &client_message_id, body).await
    }

    /// Sends under the given client message ID: a retry of a send that may have reached
    /// the server returns the original answer and stores nothing new.
    ///
    /// The message is kept in the store's outbox first: a failure that may pass (the
    /// network, the server, lists that kept changing) leaves it there, and
    /// [`Client::send_outgoing`] sends it again under the same ID; a final refusal
    /// drops it.
    pub async fn send_with_id(
        &self,
        recipient: UserId,
        client_message_id: &str,
        body: &[u8],
    ) -> Result<SendMessageResponse, ClientError> {
        let target = OutgoingTarget::User(recipient);
        self.keep_outgoing(&target, client_message_id, body).await?;
        let result = self.send_kept(recipient, client_message_id, body).await;
        self.settle_outgoing(target, client_message_id, &result)
            .await?;
        result
    }

    /// Keeps a message in the outbox until the server stored it.
    async fn keep_outgoing(
        &self,
        target: &OutgoingTarget,
        client_message_id: &str,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let send = OutgoingSend {
            target: target.clone(),
            client_message_id: client_message_id.to_owned(),
            body: body.to_vec(),
            queued_at_ms: now_ms(),
        };
        self.with_machine(move |m| m.keep_outgoing(&send)).await??;
        Ok(())
    }

    /// After a send: a refusal that will not pass drops the kept message (a success
    /// already took it out, with its event).
    async fn settle_outgoing<T>(
        &self,
        target: OutgoingTarget,
        client_message_id: &str,
        result: &Result<T, ClientError>,
    ) -> Result<(), ClientError> {
        if let Err(error) = result {
            if !error.may_pass() {
                let id = client_message_id.to_owned();
                self.with_machine(move |m| m.drop_outgoing(&target, &id))
                    .await??;
            }
        }
        Ok(())
    }

    /// Sends again, oldest first, what the outbox kept (sends cut off by the network, the
    /// server, or the app ending), each under its client message ID: the server answers
    /// one it already stored with the original, so nothing arrives twice. Stops at the
    /// first failure that may pass (it stays kept) and returns it; returns how many went.
    pub async fn send_outgoing(&self) -> Result<u32, ClientError> {
        let kept = self.read_machine(|m| m.outgoing()).await??;
        let mut sent = 0;
        for send in kept {
            let result = match send.target {
                OutgoingTarget::User(user) => self
                    .send_kept(user, &send.client_message_id, &send.body)
                    .await
                    .map(|_| ()),
                OutgoingTarget::Channel(channel) => self
                    .send_group_kept(channel, &send.client_message_id, &send.body)
                    .await
                    .map(|_| ()),
            };
            self.settle_outgoing(send.target, &send.client_message_id, &result)
                .await?;
            match result {
                Ok(()) => sent += 1,
                Err(error) if error.may_pass() => return Err(error),
                // Refused for good and dropped; the rest still go.
                Err(_) => {}
            }
        }
        Ok(sent)
    }

    /// [`Client::send_with_id`] without the outbox.
    async fn send_kept(
        &self,
        recipient: UserId,
        client_message_id: &str,
        body: &[u8],
    ) -> Result<SendMessageResponse, ClientError> {
        // Shared with each blocking-pool task instead of copied into it.
        let client_message_id: Arc<str> = client_message_id.into();
        let body: Arc<[u8]> = body.into();
        for _ in 0..MAX_SEND_ATTEMPTS {
            let request = self.encrypt(recipient, &client_message_id, &body).await?;
            match self.send_retrying(&request).await? {
                SendOutcome::Sent(response) => {
                    let (id, sent) = (client_message_id.clone(), response.clone());
                    self.with_machine(move |m| m.record_sent(recipient, &id, &sent))
                        .await??;
                    return Ok(response);
                }
                SendOutcome::DeviceListMismatch(mismatch) => {
                    let mut users: Vec<UserId> = mismatch
                        .missing
                        .iter()
                        .chain(&mismatch.extra)
                        .chain(&mismatch.stale)
                        .map(|d| d.user_id)
                        .collect();
                    users.sort();
                    users.dedup();
                    for user in users {
                        self.refresh_devices(user).await?;
                    }
                }
            }
        }
        Err(ClientError::DeviceListsUnsettled)
    }

    /// Encrypts for the current device lists, opening the sessions that are missing.
    async fn encrypt(
        &self,
        recipient: UserId,
        client_message_id: &Arc<str>,
        body: &Arc<[u8]>,
    ) -> Result<courier_protocol::api::messages::SendMessageRequest, ClientError> {
        // Bounded: each round fetches a list or opens sessions, after which it succeeds.
        for _ in 0..4 {
            let (id, body) = (client_message_id.clone(), body.clone());
            let attempt = self
                .with_machine(move |m| m.encrypt_message(recipient, &id, &body, now_ms()))
                .await?;
            match attempt {
                Ok(message) => return Ok(message.request),
                Err(MachineError::UnknownUser(user)) => {
                    self.refresh_devices(user).await?;
                }
                Err(MachineError::MissingSessions(devices)) => {
                    self.open_sessions(devices).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ClientError::DeviceListsUnsettled)
    }

    /// Claims keys of these devices and opens Olm sessions with them.
    async fn open_sessions(&self, devices: Vec<DeviceRef>) -> Result<(), ClientError> {
        let claimed = self
            .live_api()?
            .claim_keys(&ClaimKeysRequest { devices })
            .await?;
        let failed = self
            .with_machine(move |m| m.add_claimed_keys(&claimed))
            .await??;
        if !failed.is_empty() {
            return Err(ClientError::NoKeys(failed));
        }
        Ok(())
    }

    /// Sends one request, retrying network failures with backoff (same body, same client
    /// message ID: the server answers a retry with the original).
    async fn send_retrying(
        &self,
        request: &courier_protocol::api::messages::SendMessageRequest,
    ) -> Result<SendOutcome, ClientError> {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let mut attempts = 0;
        loop {
            match self.live_api()?.send_message(request).await {
                Err(error) if error.is_retryable() && attempts < 5 => {
                    attempts += 1;
                    // The server's Retry-After paces it; a long one goes to the app.
                    let Some(delay) = backoff.delay_after(&error) else {
                        return Err(error.into());
                    };
                    tokio::time::sleep(delay).await;
                }
                result => return Ok(result?),
            }
        }
    }

    /// Decrypts and stores one envelope (no acknowledgement: acknowledge it after this
    /// returns). An envelope from a device this device does not know makes it fetch the
    /// sender's device list first.
    pub async fn process_envelope(&self, envelope: &Envelope) -> Result<Decrypted, ClientError> {
        let owned = envelope.clone();
        let first = self
            .with_machine(move |m| m.decrypt_envelope(&owned))
            .await?;
        match first {
            Err(MachineError::UnknownSender(sender)) => {
                self.refresh_devices(sender.user_id).await?;
                let envelope = envelope.clone();
                let again = self
                    .with_machine(move |machine| match machine.decrypt_envelope(&envelope) {
                        // Still unknown: removed before we could learn its keys.
                        Err(MachineError::UnknownSender(_)) => {
                            machine.reject_envelope(&envelope, FailureReason::UnknownSender)
                        }
                        other => other,
                    })
                    .await?;
                Ok(again?)
            }
            other => Ok(other?),
        }
    }

    async fn cursor(&self) -> Result<u64, ClientError> {
        self.with_store(|store| Ok(Self::record_in(store)?.map_or(0, |r| r.cursor)))
            .await?
    }

    async fn set_cursor(&self, cursor: u64) -> Result<(), ClientError> {
        self.update_record(move |record| {
            let advances = cursor > record.cursor;
            if advances {
                record.cursor = cursor;
            }
            advances
        })
        .await
    }

    /// Connects to the stream, stores and acknowledges everything waiting, and returns at
    /// `caughtUp`.
    pub async fn receive_until_caught_up(&self) -> Result<ReceiveSummary, ClientError> {
        let summary = self.stream(true, &unobserved).await?;
        self.maintain_keys().await?;
        Ok(summary)
    }

    /// One connection of the stream: each envelope is stored, then acknowledged. Returns
    /// at `caughtUp` if `until_caught_up`, else only when the connection ends (an error).
    ///
    /// The stored cursor moves at `caughtUp` and when the connection ends, not per
    /// envelope: a cursor that lags after a crash only means envelopes come again, and
    /// they are recognised as duplicates.
    async fn stream(
        &self,
        until_caught_up: bool,
        observe: &(dyn Fn(StreamPhase) + Send + Sync),
    ) -> Result<ReceiveSummary, ClientError> {
        let mut stream = self
            .live_api()?
            .open_stream(Some(self.cursor().await?))
            .await?;
        observe(StreamPhase::Connected);
        let mut summary = ReceiveSummary::default();
        let mut stored_through = None;
        let ended = async {
            loop {
                let frame = match stream.next_frame().await {
                    Ok(frame) => frame,
                    // A newer server's item: nothing to store, and holding it back would
                    // stall the stream (it would come first again on every connection).
                    Err(TransportError::UnknownItem { seq, .. }) => {
                        summary.skipped += 1;
                        stored_through = Some(seq);
                        stream.ack_up_to(seq).await?;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                match frame {
                    ServerFrame::Item(StreamItem::Envelope(envelope)) => {
                        self.take(&envelope, &mut summary).await?;
                        stored_through = Some(envelope.seq);
                        stream.ack_up_to(envelope.seq).await?;
                    }
                    ServerFrame::Item(other) => {
                        self.take_item(&other, &mut summary).await?;
                        stored_through = Some(other.seq());
                        stream.ack_up_to(other.seq()).await?;
                    }
                    ServerFrame::Control(ControlFrame::CaughtUp { .. }) => {
                        if let Some(seq) = stored_through.take() {
                            self.set_cursor(seq).await?;
                        }
                        if until_caught_up {
                            return Ok::<_, ClientError>(());
                        }
                        self.maintain_keys().await?;
                    }
                    ServerFrame::Control(_) => {}
                }
            }
        }
        .await;
        if let Some(seq) = stored_through {
            self.set_cursor(seq).await?;
        }
        ended?;
        stream.close().await;
        Ok(summary)
    }

    async fn take(
        &self,
        envelope: &Envelope,
        summary: &mut ReceiveSummary,
    ) -> Result<(), ClientError> {
        match self.process_envelope(envelope).await? {
            Decrypted::Message(_) => summary.messages += 1,
            Decrypted::Duplicate => summary.duplicates += 1,
            Decrypted::Failed(_) => summary.failures += 1,
        }
        Ok(())
    }

    async fn take_item(
        &self,
        item: &StreamItem,
        summary: &mut ReceiveSummary,
    ) -> Result<(), ClientError> {
        match self.process_item(item).await? {
            crate::crypto::ItemOutcome::Stored => {
                if matches!(item, StreamItem::GroupMessage(_)) {
                    summary.messages += 1;
                }
            }
            crate::crypto::ItemOutcome::Duplicate => summary.duplicates += 1,
            crate::crypto::ItemOutcome::Failed(_) => summary.failures += 1,
        }
        Ok(())
    }

    /// Reads the inbox over REST (for when a socket cannot be held), page by page, storing
    /// then acknowledging each page.
    pub async fn sync_over_rest(&self) -> Result<ReceiveSummary, ClientError> {
        let mut summary = ReceiveSummary::default();
        let mut after = self.cursor().await?;
        loop {
            let page = self.live_api()?.inbox(after, None).await?;
            for item in &page.items {
                match item {
                    StreamItem::Envelope(envelope) => self.take(envelope, &mut summary).await?,
                    other => self.take_item(other, &mut summary).await?,
                }
            }
            // Up to the page's cursor, not its last item: items of types this SDK does not
            // know are left out of the page, and are acknowledged (skipped) with it.
            let through = page.next_cursor;
            if through <= after {
                break;
            }
            self.set_cursor(through).await?;
            self.live_api()?.ack_inbox(through).await?;
            after = through;
        }
        Ok(summary)
    }

    /// Keeps the stream open until `shutdown` resolves: stores and acknowledges each
    /// envelope as it comes, reconnects with backoff after a drop (resuming after the
    /// last stored item), and stops for good when this device is removed, another
    /// connection of it takes over, or the account is deleted
    /// ([`ClientError::AccountDeleted`]).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), ClientError> {
        self.run_observed(shutdown, &unobserved).await
    }

    /// [`Client::run`], telling `observe` when the connection opens, drops and retries.
    pub(crate) async fn run_observed(
        &self,
        shutdown: impl Future<Output = ()>,
        observe: &(dyn Fn(StreamPhase) + Send + Sync),
    ) -> Result<(), ClientError> {
        tokio::pin!(shutdown);
        let mut deleted = self.deleted.subscribe();
        let mut backoff = Backoff::new(BackoffPolicy::default());
        loop {
            self.check_live()?;
            let connected_at = Instant::now();
            observe(StreamPhase::Connecting);
            let ended = tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = deleted.wait_for(|deleted| *deleted) => return Err(ClientError::AccountDeleted),
                ended = self.stream(false, observe) => ended.map(|_| ()),
            };
            // A refused reconnect (429, 503) says how long to wait: at least that long.
            let mut asked = None;
            match ended {
                Err(ClientError::Transport(error)) => {
                    if let Some(reason) = error.stream_closed().filter(|r| !r.should_reconnect()) {
                        return Err(ClientError::StreamEnded(reason));
                    }
                    if !error.is_retryable() && error.stream_closed().is_none() {
                        return Err(ClientError::Transport(error));
                    }
                    asked = error.retry_after();
                }
                Err(other) => return Err(other),
                Ok(()) => {}
            }
            backoff.connection_ended(connected_at.elapsed());
            let delay = backoff
                .next_delay()
                .min(Duration::from_secs(30))
                .max(asked.unwrap_or_default());
            observe(StreamPhase::Disconnected { retry_in: delay });
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = deleted.wait_for(|deleted| *deleted) => return Err(ClientError::AccountDeleted),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Removes one of this user's devices (this one included) at the server, then
    /// refreshes the own device list.
    pub async fn remove_device(&self, device_id: DeviceId) -> Result<(), ClientError> {
        self.live_api()?.remove_device(device_id).await?;
        if device_id != self.own.device_id {
            self.refresh_devices(self.own.user_id).await?;
        }
        Ok(())
    }

    /// Events not yet confirmed, oldest first.
    pub async fn pending_events(&self, limit: usize) -> Result<Vec<QueuedEvent>, ClientError> {
        Ok(self
            .read_machine(move |m| m.pending_events(limit))
            .await??)
    }

    /// The app handled every event up to `seq`.
    pub async fn confirm_events(&self, seq: u64) -> Result<(), ClientError> {
        Ok(self.with_machine(move |m| m.confirm_events(seq)).await??)
    }

    /// Resolves once there are unconfirmed events (at once if there are already): what an
    /// app awaits while [`Client::run`] receives, instead of polling
    /// [`Client::pending_events`]. Wrap it in a timeout to bound the wait.
    pub async fn wait_for_events(&self) -> Result<(), ClientError> {
        // Subscribed before looking, so a use of the core in between still wakes us.
        let mut used = self.machine_used.subscribe();
        loop {
            // A look, not a use: it does not wake waiters (this one included).
            let pending = self.read_machine(|m| m.pending_events(1)).await??;
            if !pending.is_empty() {
                return Ok(());
            }
            // The sender lives in `self`, so it cannot be dropped while we wait.
            let _ = used.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_from_before_resumable_logins_counts_as_finished() {
        let old = br#"{"server":"http://127.0.0.1:1/","token":"t","cursor":7}"#;
        let record = decode_record(old).unwrap();
        assert!(record.keys_published);
        assert!(!record.account_deleted);
        assert_eq!(record.cursor, 7);
    }
}
