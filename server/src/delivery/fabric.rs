//! The fabric between server processes that share one PostgreSQL: what one process must
//! tell the others so a device connected to any of them is served as if there were one.
//!
//! - `Items`: a device's stream has new items. The process holding the device's socket
//!   reads them from PostgreSQL (the database stays the source of truth; the signal
//!   carries no content).
//! - `Removed`: a device was removed: forget its cached token, close its socket.
//! - `Connected`: a device opened a socket: an older socket of it elsewhere closes
//!   (`replaced`), so a device has one live connection across all processes.
//!
//! The PostgreSQL fabric sends signals with `NOTIFY`, batched: a publisher task gathers
//! what is queued and sends it with one statement (its own short transaction), never
//! inside a send's transaction, so sends never wait on the notification queue's lock.
//! Each process ignores its own signals. If the listening connection drops, signals may
//! have been missed: every local socket then rereads its stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use courier_protocol::api::stream::close_code;
use courier_protocol::{DeviceId, UserId};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{DeviceKey, Hub};
use crate::auth::TokenCache;

/// The channel every process listens on.
const CHANNEL: &str = "courier_fabric";
/// `NOTIFY` payloads must stay under 8,000 bytes.
const MAX_PAYLOAD: usize = 7_500;
/// Signals queued before the publisher is behind; past this, a `Resync` replaces them.
const QUEUE: usize = 65_536;

/// Which fabric connects the server processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FabricKind {
    /// One process only: nothing is sent.
    None,
    /// PostgreSQL `LISTEN`/`NOTIFY` (no other infrastructure).
    Postgres,
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
    /// Signals were dropped: every process rereads every local stream.
    Resync,
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

/// What a process does with the others' signals.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub hub: Arc<Hub>,
    pub tokens: Arc<TokenCache>,
}

impl Receiver {
    fn apply(&self, signal: Signal) {
        match signal {
            Signal::Items { device, .. } => self.hub.read_stream(device),
            Signal::Removed { device } => {
                self.tokens.forget_device(device.0, device.1);
                self.hub.close_device(device, close_code::DEVICE_REMOVED);
            }
            Signal::Connected { device, at_ms } => self.hub.replaced_elsewhere(device, at_ms),
            Signal::Resync => self.hub.read_all_streams(),
        }
    }
}

/// Starts the PostgreSQL fabric: a publisher and a listener, until `stop` turns true.
pub async fn start_postgres(
    pool: PgPool,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), sqlx::Error> {
    let process = Uuid::new_v4().simple().to_string();
    // Its own connection, outside the handlers' pool: a pool that is closing waits for
    // every connection it lent, and the listener never gives its back.
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let mut listener = PgListener::connect_with(&listener_pool).await?;
    listener.listen(CHANNEL).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let fabric = Fabric {
        tx: Some(tx),
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let publisher = tokio::spawn(publish(pool, process.clone(), rx, fabric.dropped.clone()));
    let listening = tokio::spawn(listen(listener_pool, listener, process, receiver, stop));
    Ok((fabric, vec![publisher, listening]))
}

async fn publish(
    pool: PgPool,
    process: String,
    mut rx: mpsc::Receiver<Signal>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        if dropped.swap(0, Ordering::Relaxed) > 0 {
            batch.push(Signal::Resync);
        }
        let payloads = payloads(&process, &batch);
        batch.clear();
        for attempt in 1..=3u64 {
            match sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(&payloads)
                .execute(&pool)
                .await
            {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, attempt, "could not notify the other processes");
                    if attempt == 3 {
                        // Given up on these: make the others reread everything.
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
            }
        }
    }
}

async fn listen(
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
            Ok(Some(notification)) => {
                let Some((from, entries)) = notification.payload().split_once(' ') else {
                    continue;
                };
                if from == process {
                    continue;
                }
                for signal in entries.split(';').filter_map(decode) {
                    receiver.apply(signal);
                }
            }
            // The connection dropped and was re-established: signals may be lost.
            Ok(None) => receiver.hub.read_all_streams(),
            Err(error) => {
                tracing::warn!(%error, "lost the fabric's listening connection");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_and_payloads_stay_under_the_limit() {
        let device = (UserId::new_random(), DeviceId::new(7).unwrap());
        let signals: Vec<Signal> = (0..1_000)
            .map(|seq| match seq % 4 {
                0 => Signal::Items { device, seq },
                1 => Signal::Removed { device },
                2 => Signal::Connected { device, at_ms: seq },
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
}
