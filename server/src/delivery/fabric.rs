//! The fabric between server processes that share one PostgreSQL: what one process must
//! tell the others so a device connected to any of them is served as if there were one.
//!
//! - `Items`: a device's stream has new items. The process holding the device's socket
//!   reads them from PostgreSQL (the database stays the source of truth; the signal
//!   carries no content).
//! - `Removed`: a device was removed: forget its cached token, close its socket.
//! - `DevicesChanged`: a user's device list changed: forget its cached list
//!   (`crate::device_lists`).
//! - `Connected`: a device opened a socket: an older socket of it elsewhere closes
//!   (`replaced`), so a device has one live connection across all processes.
//!
//! Two transports carry the same batches: PostgreSQL `NOTIFY` (no other infrastructure)
//! and NATS core publish/subscribe on one subject. Both share the queue, the batching
//! and the receiving side; only "send these payloads" and "listen" differ:
//!
//! - [`Fabric::publish`] never waits: signals go to a bounded queue; when it is full
//!   they are dropped and counted, and one `Resync` (everyone rereads every local stream)
//!   goes out with the next batch instead.
//! - A publisher task takes what is queued and sends it as payloads of
//!   `<process> <entry>;<entry>;…`. For PostgreSQL that is one statement (its own short
//!   transaction), never inside a send's transaction, so sends never wait on the
//!   notification queue's lock.
//! - A listener applies the others' payloads and ignores its own. Whenever signals may
//!   have been missed (the PostgreSQL listening connection, or the NATS connection,
//!   dropped and came back; NATS dropped messages for a slow subscriber), every local
//!   socket rereads its stream.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier_protocol::api::stream::close_code;
use courier_protocol::{DeviceId, UserId};
use futures::StreamExt;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{DeviceKey, Hub};
use crate::auth::TokenCache;
use crate::config::redact_nats_url;

/// The PostgreSQL channel every process listens on.
const CHANNEL: &str = "courier_fabric";
/// The NATS subject every process subscribes to.
const SUBJECT: &str = "courier.fabric";
/// `NOTIFY` payloads must stay under 8,000 bytes (NATS takes 1 MiB by default; the same
/// limit keeps one encoding for both).
const MAX_PAYLOAD: usize = 7_500;
/// Signals queued before the publisher is behind; past this, a `Resync` replaces them.
const QUEUE: usize = 65_536;
/// Signals taken from the queue per batch.
const BATCH: usize = 1024;
/// Attempts to send one batch before giving up on it (and resyncing everyone).
const ATTEMPTS: u64 = 3;

/// Which fabric connects the server processes.
#[derive(Clone, PartialEq, Eq)]
pub enum FabricKind {
    /// One process only: nothing is sent.
    None,
    /// PostgreSQL `LISTEN`/`NOTIFY` (no other infrastructure).
    Postgres,
    /// NATS core publish/subscribe.
    Nats {
        /// Server URL, or several separated by commas; may carry credentials.
        url: String,
    },
}

impl fmt::Debug for FabricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Postgres => f.write_str("Postgres"),
            Self::Nats { url } => f
                .debug_struct("Nats")
                .field("url", &redact_nats_url(url))
                .finish(),
        }
    }
}

/// A signal to the other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The device's stream has items up to `seq`.
    Items { device: DeviceKey, seq: u64 },
    /// The device was removed.
    Removed { device: DeviceKey },
    /// The device opened a socket at `at_ms` (ms since the epoch).
    Connected { device: DeviceKey, at_ms: u64 },
    /// The user's device list changed.
    DevicesChanged { user: UserId },
    /// Signals were dropped: every process rereads every local stream.
    Resync,
}

/// Why a fabric could not start. `Display` names the fabric and, for NATS, the URL
/// without its credentials.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The PostgreSQL listening connection could not be opened.
    #[error("could not start the PostgreSQL fabric (LISTEN {CHANNEL}): {0}")]
    Postgres(#[from] sqlx::Error),
    /// NATS did not answer, refused us, or the URL is wrong.
    #[error(
        "Courier could not reach NATS at {url} ({reason}). Start NATS (scripts/ensure-nats.sh \
         installs and starts it on a development machine), set COURIER_NATS_URL, or choose \
         COURIER_FABRIC=postgres."
    )]
    Nats {
        /// The URL, redacted.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// The handle processes publish through. Publishing never waits.
#[derive(Debug, Clone)]
pub struct Fabric {
    tx: Option<mpsc::Sender<Signal>>,
    dropped: Arc<AtomicU64>,
}

impl Fabric {
    /// A fabric that sends nothing (one process).
    pub fn none() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues a signal for the other processes.
    pub fn publish(&self, signal: Signal) {
        if let Some(tx) = &self.tx
            && tx.try_send(signal).is_err()
        {
            // Behind: what was dropped is covered by one resync once there is room.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Milliseconds since the epoch (for `Connected`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn encode_device(out: &mut String, (user, device): DeviceKey) {
    out.push_str(&user.as_uuid().simple().to_string());
    out.push(':');
    out.push_str(&device.get().to_string());
}

fn encode(signal: Signal) -> String {
    let mut out = String::with_capacity(64);
    match signal {
        Signal::Items { device, seq } => {
            out.push_str("i:");
            encode_device(&mut out, device);
            out.push(':');
            out.push_str(&seq.to_string());
        }
        Signal::Removed { device } => {
            out.push_str("r:");
            encode_device(&mut out, device);
        }
        Signal::Connected { device, at_ms } => {
            out.push_str("c:");
            encode_device(&mut out, device);
            out.push(':');
            out.push_str(&at_ms.to_string());
        }
        Signal::DevicesChanged { user } => {
            out.push_str("d:");
            out.push_str(&user.as_uuid().simple().to_string());
        }
        Signal::Resync => out.push('s'),
    }
    out
}

fn decode(entry: &str) -> Option<Signal> {
    let mut parts = entry.split(':');
    let kind = parts.next()?;
    if kind == "s" {
        return Some(Signal::Resync);
    }
    let user = UserId::from(Uuid::parse_str(parts.next()?).ok()?);
    if kind == "d" {
        return Some(Signal::DevicesChanged { user });
    }
    let device = DeviceId::new(parts.next()?.parse().ok()?).ok()?;
    let device = (user, device);
    let signal = match kind {
        "i" => Signal::Items {
            device,
            seq: parts.next()?.parse().ok()?,
        },
        "r" => Signal::Removed { device },
        "c" => Signal::Connected {
            device,
            at_ms: parts.next()?.parse().ok()?,
        },
        _ => return None,
    };
    Some(signal)
}

/// Payloads for a batch: `<process> <entry>;<entry>;…`, each under [`MAX_PAYLOAD`].
fn payloads(process: &str, signals: &[Signal]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for signal in signals {
        let entry = encode(*signal);
        if !current.is_empty() && current.len() + entry.len() + 1 > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(process);
            current.push(' ');
        } else {
            current.push(';');
        }
        current.push_str(&entry);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The signals in another process's payload; nothing for this process's own (or for a
/// payload that is not ours at all). Entries that do not decode are skipped.
fn signals_from<'a>(process: &str, payload: &'a str) -> impl Iterator<Item = Signal> + 'a {
    let entries = match payload.split_once(' ') {
        Some((from, entries)) if from != process => entries,
        _ => "",
    };
    entries
        .split(';')
        .filter(|entry| !entry.is_empty())
        .filter_map(decode)
}

/// What a process does with the others' signals.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub hub: Arc<Hub>,
    pub tokens: Arc<TokenCache>,
    pub device_lists: Arc<crate::device_lists::DeviceLists>,
    /// Reads the signalled items (one query per payload for every local device).
    pub pool: PgPool,
}

impl Receiver {
    fn apply(&self, signal: Signal) {
        match signal {
            Signal::Items { device, .. } => self.hub.read_stream(device),
            Signal::Removed { device } => {
                self.tokens.forget_device(device.0, device.1);
                self.device_lists.forget(device.0);
                self.hub.close_device(device, close_code::DEVICE_REMOVED);
            }
            Signal::Connected { device, at_ms } => self.hub.replaced_elsewhere(device, at_ms),
            Signal::DevicesChanged { user } => self.device_lists.forget(user),
            Signal::Resync => {
                self.device_lists.forget_all();
                self.hub.read_all_streams();
            }
        }
    }

    /// Applies a payload from the transport, unless `process` (this one) sent it. The new
    /// items of devices connected here are read in one query for the whole payload and
    /// pushed like local sends (instead of one stream read per device); if that read
    /// fails, those devices reread their streams.
    fn apply_payload(&self, process: &str, payload: &str) {
        let mut items = Vec::new();
        for signal in signals_from(process, payload) {
            match signal {
                Signal::Items { device, seq } if self.hub.is_connected(device) => {
                    items.push((device, seq));
                }
                Signal::Items { .. } => {}
                other => self.apply(other),
            }
        }
        if items.is_empty() {
            return;
        }
        let receiver = self.clone();
        tokio::spawn(async move {
            match crate::db::stream::items_at(&receiver.pool, &items).await {
                Ok(found) => {
                    for (device, item) in found {
                        super::push_item(&receiver.hub, device, item);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read signalled items");
                    for (device, _) in items {
                        receiver.hub.read_stream(device);
                    }
                }
            }
        });
    }

    /// Signals may have been missed: every local socket rereads its stream.
    fn missed(&self) {
        self.device_lists.forget_all();
        self.hub.read_all_streams();
    }
}

/// The publishing side every transport shares: the queue behind [`Fabric`], cut into
/// batches of payloads.
struct Outbox {
    process: String,
    rx: mpsc::Receiver<Signal>,
    dropped: Arc<AtomicU64>,
    batch: Vec<Signal>,
}

impl Outbox {
    /// A queue of `capacity` signals, its handle, and its outbox.
    fn new(process: String, capacity: usize) -> (Fabric, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let fabric = Fabric {
            tx: Some(tx),
            dropped: dropped.clone(),
        };
        let outbox = Self {
            process,
            rx,
            dropped,
            batch: Vec::with_capacity(BATCH),
        };
        (fabric, outbox)
    }

    /// Waits for queued signals and returns them as payloads, with a `Resync` if any
    /// were dropped since the last batch; `None` once every handle is gone.
    async fn next(&mut self) -> Option<Vec<String>> {
        if self.rx.recv_many(&mut self.batch, BATCH).await == 0 {
            return None;
        }
        if self.dropped.swap(0, Ordering::Relaxed) > 0 {
            self.batch.push(Signal::Resync);
        }
        let payloads = payloads(&self.process, &self.batch);
        self.batch.clear();
        Some(payloads)
    }

    /// A batch could not be sent: the next one tells everyone to reread.
    fn lost(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a transport sends a batch's payloads to the other processes.
trait Transport: Send + 'static {
    type Error: fmt::Display + Send;

    /// Sends the payloads (all of them, or fails).
    fn send(&self, payloads: &[String]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called once the queue has ended (shutdown): push out what is still buffered.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// Sends batches until every [`Fabric`] handle is gone, retrying a failed batch a few
/// times and then giving it up for a resync.
async fn run_publisher<T: Transport>(transport: T, mut outbox: Outbox) {
    while let Some(payloads) = outbox.next().await {
        for attempt in 1..=ATTEMPTS {
            match transport.send(&payloads).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, attempt, "could not signal the other processes");
                    if attempt == ATTEMPTS {
                        outbox.lost();
                    } else {
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                }
            }
        }
    }
    transport.finish().await;
}

/// Starts the fabric `kind` names: its publisher and listener run until `stop` turns true
/// (the listener) and every [`Fabric`] handle is gone (the publisher).
pub async fn start(
    kind: &FabricKind,
    pool: &PgPool,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), StartError> {
    match kind {
        FabricKind::None => Ok((Fabric::none(), Vec::new())),
        FabricKind::Postgres => Ok(start_postgres(pool.clone(), receiver, stop).await?),
        FabricKind::Nats { url } => start_nats(url, receiver, stop).await,
    }
}

fn process_id() -> String {
    Uuid::new_v4().simple().to_string()
}

// ---- PostgreSQL: NOTIFY out, LISTEN in ----

struct PgNotify {
    pool: PgPool,
}

impl Transport for PgNotify {
    type Error = sqlx::Error;

    async fn send(&self, payloads: &[String]) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    async fn finish(self) {}
}

/// Starts the PostgreSQL fabric: a publisher and a listener, until `stop` turns true.
async fn start_postgres(
    pool: PgPool,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), sqlx::Error> {
    let process = process_id();
    // Its own connection, outside the handlers' pool: a pool that is closing waits for
    // every connection it lent, and the listener never gives its back.
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let mut listener = PgListener::connect_with(&listener_pool).await?;
    listener.listen(CHANNEL).await?;
    let (fabric, outbox) = Outbox::new(process.clone(), QUEUE);
    let publisher = tokio::spawn(run_publisher(PgNotify { pool }, outbox));
    let listening = tokio::spawn(listen_postgres(
        listener_pool,
        listener,
        process,
        receiver,
        stop,
    ));
    Ok((fabric, vec![publisher, listening]))
}

async fn listen_postgres(
    listener_pool: PgPool,
    mut listener: PgListener,
    process: String,
    receiver: Receiver,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            _ = stop.changed() => {
                // Close the connection before the process (or a test's database) goes.
                drop(listener);
                listener_pool.close().await;
                return;
            }
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => receiver.apply_payload(&process, notification.payload()),
            // The connection dropped and was re-established: signals may be lost.
            Ok(None) => receiver.missed(),
            Err(error) => {
                tracing::warn!(%error, "lost the fabric's listening connection");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

// ---- NATS: core publish and subscribe on one subject ----

struct NatsPublish {
    client: async_nats::Client,
}

impl Transport for NatsPublish {
    type Error = async_nats::PublishError;

    async fn send(&self, payloads: &[String]) -> Result<(), async_nats::PublishError> {
        // `publish` only hands the message to the client's connection task; it waits
        // only while that task is behind (or reconnecting), which holds up this
        // publisher, never a send.
        for payload in payloads {
            self.client.publish(SUBJECT, payload.clone().into()).await?;
        }
        // The client writes out what `publish` buffered only when its buffer fills or a
        // timer fires: at a few payloads per batch that held signals back for
        // milliseconds, and the receiving sockets, seeing later local pushes first,
        // reread their streams. Measured with two processes (docs/benchmarks.md): p50
        // 89-119 ms without this flush, 14-18 ms with it, at 1,111 messages/s. The next
        // batch gathers while this one is flushed.
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush fabric signals to NATS");
        }
        Ok(())
    }

    async fn finish(self) {
        // Signals published just before shutdown still reach the others.
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush the last fabric signals to NATS");
        }
    }
}

/// Starts the NATS fabric on `url` (one server, or several separated by commas): a
/// publisher and a subscriber, until `stop` turns true. Fails if NATS does not answer
/// now; once started, the client reconnects by itself for as long as it takes.
async fn start_nats(
    url: &str,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), StartError> {
    let failed = |reason: String| StartError::Nats {
        url: redact_nats_url(url),
        reason,
    };
    let servers = url
        .split(',')
        .map(|one| one.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(error.to_string()))?;
    let process = process_id();
    // Raised on every (re)connection and when NATS dropped messages for us; the
    // subscriber task answers it, since it can first make sure the subscription is back.
    let missed = Arc::new(Notify::new());
    let on_event = missed.clone();
    let client = async_nats::ConnectOptions::new()
        .name("courier-server")
        // Our own signals are of no use to us: the server need not send them back.
        .no_echo()
        .event_callback(move |event| {
            let missed = on_event.clone();
            async move {
                match event {
                    async_nats::Event::Connected => missed.notify_one(),
                    async_nats::Event::SlowConsumer(_) => {
                        tracing::warn!(
                            "NATS dropped fabric signals for this process (slow consumer); \
                             every local socket rereads its stream"
                        );
                        missed.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost the fabric's NATS connection; reconnecting");
                    }
                    _ => {}
                }
            }
        })
        .connect(servers.as_slice())
        .await
        .map_err(|error| failed(error.to_string()))?;
    let subscriber = client
        .subscribe(SUBJECT)
        .await
        .map_err(|error| failed(error.to_string()))?;
    // The subscription is in place on the server before this process serves anyone.
    client
        .flush()
        .await
        .map_err(|error| failed(error.to_string()))?;
    let (fabric, outbox) = Outbox::new(process.clone(), QUEUE);
    let publisher = tokio::spawn(run_publisher(
        NatsPublish {
            client: client.clone(),
        },
        outbox,
    ));
    let listening = tokio::spawn(listen_nats(
        client, subscriber, missed, process, receiver, stop,
    ));
    Ok((fabric, vec![publisher, listening]))
}

async fn listen_nats(
    client: async_nats::Client,
    mut subscriber: async_nats::Subscriber,
    missed: Arc<Notify>,
    process: String,
    receiver: Receiver,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                // Dropping the subscriber unsubscribes; the connection closes once the
                // publisher's client is gone too.
                drop(subscriber);
                return;
            }
            () = missed.notified() => {
                // After a reconnection the client resubscribes before it handles our
                // flush, so once the flush is answered no later signal can be missed:
                // only then reread.
                match tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "could not flush the NATS connection"),
                    Err(_) => tracing::warn!("NATS did not answer a flush within 5 s"),
                }
                receiver.missed();
            }
            message = subscriber.next() => match message {
                Some(message) => match std::str::from_utf8(&message.payload) {
                    Ok(payload) => receiver.apply_payload(&process, payload),
                    Err(_) => tracing::warn!("ignored a fabric message that is not UTF-8"),
                },
                // The client gave the subscription up: take a new one, then reread what
                // may have been missed meanwhile.
                None => match client.subscribe(SUBJECT).await {
                    Ok(again) => {
                        tracing::warn!("the fabric's NATS subscription ended; subscribed again");
                        subscriber = again;
                        missed.notify_one();
                    }
                    Err(error) => {
                        tracing::error!(%error, "the fabric's NATS subscription ended and cannot be renewed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceKey {
        (UserId::new_random(), DeviceId::new(7).unwrap())
    }

    #[test]
    fn signals_round_trip_and_payloads_stay_under_the_limit() {
        let device = device();
        let signals: Vec<Signal> = (0..1_000)
            .map(|seq| match seq % 5 {
                0 => Signal::Items { device, seq },
                1 => Signal::Removed { device },
                2 => Signal::Connected { device, at_ms: seq },
                3 => Signal::DevicesChanged { user: device.0 },
                _ => Signal::Resync,
            })
            .collect();
        let payloads = payloads("p1", &signals);
        assert!(payloads.len() > 1);
        let mut decoded = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD);
            let (from, entries) = payload.split_once(' ').unwrap();
            assert_eq!(from, "p1");
            decoded.extend(entries.split(';').map(|e| decode(e).unwrap()));
        }
        assert_eq!(decoded, signals);
    }

    #[test]
    fn a_process_applies_the_others_payloads_but_not_its_own_or_garbage() {
        let device = device();
        let signals = [Signal::Items { device, seq: 3 }, Signal::Removed { device }];
        let payload = payloads("other", &signals).remove(0);
        assert_eq!(signals_from("me", &payload).collect::<Vec<_>>(), signals);
        assert_eq!(signals_from("other", &payload).count(), 0);
        // A stranger's message on the subject, or a broken entry, is skipped.
        assert_eq!(signals_from("me", "no-space-here").count(), 0);
        assert_eq!(
            signals_from("me", "other x:1;s;i:zz").collect::<Vec<_>>(),
            [Signal::Resync]
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_signals_and_the_next_batch_carries_a_resync() {
        let (fabric, mut outbox) = Outbox::new("p1".to_owned(), 2);
        let device = device();
        for seq in 1..=5 {
            fabric.publish(Signal::Items { device, seq });
        }
        let batch = outbox.next().await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(
            signals_from("me", &batch[0]).collect::<Vec<_>>(),
            [
                Signal::Items { device, seq: 1 },
                Signal::Items { device, seq: 2 },
                Signal::Resync,
            ]
        );
        // The drop was reported once; a batch that cannot be sent reports it again.
        fabric.publish(Signal::Items { device, seq: 6 });
        outbox.lost();
        let batch = outbox.next().await.unwrap();
        assert_eq!(
            signals_from("me", &batch[0]).collect::<Vec<_>>(),
            [Signal::Items { device, seq: 6 }, Signal::Resync,]
        );
        drop(fabric);
        assert!(outbox.next().await.is_none());
    }

    #[test]
    fn the_nats_url_is_redacted_in_debug() {
        let kind = FabricKind::Nats {
            url: "nats://courier:s3cret@nats.internal:4222".to_owned(),
        };
        let debug = format!("{kind:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("nats.internal"), "{debug}");
    }
}
