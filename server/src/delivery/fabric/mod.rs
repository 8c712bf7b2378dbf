//! The fabric between server processes that share one PostgreSQL: what one process must
//! tell the others so a device connected to any of them is served as if there were one.
//!
//! - `Items`: a device's stream has new items. The process holding the device's socket
//!   reads them from PostgreSQL (the database stays the source of truth; the signal
//!   carries no content).
//! - `Removed`: a device was removed: forget its cached token, close its socket.
//! - `TokenReplaced`: a device logged in again: forget its cached tokens, close its
//!   sockets opened with an older token.
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
//!
//! Files: `codec` (the payload format), `outbox` (the queue, batches, the publisher
//! loop), `receiver` (what a process does with the others' signals), and one file per
//! transport (`postgres`, `nats`).

mod codec;
mod nats;
mod outbox;
mod postgres;
mod receiver;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::FabricKind;

pub use receiver::Receiver;

/// Signals queued before the publisher is behind; past this, a `Resync` replaces them.
const QUEUE: usize = 65_536;

/// A signal to the other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The device's stream has items up to `seq`.
    Items { device: DeviceRef, seq: u64 },
    /// The device was removed.
    Removed { device: DeviceRef },
    /// The device got a new token (it logged in again): its older tokens are dead.
    TokenReplaced { device: DeviceRef },
    /// The device opened a socket at `at_ms` (ms since the epoch).
    Connected { device: DeviceRef, at_ms: u64 },
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
    #[error("could not start the PostgreSQL fabric (LISTEN {channel}): {0}", channel = postgres::CHANNEL)]
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

/// Starts the fabric `kind` names: its publisher and listener run until `stop` turns true
/// (the listener) and every [`Fabric`] handle is gone (the publisher).
pub async fn start(
    kind: &FabricKind,
    pool: &PgPool,
    direct: Option<&sqlx::postgres::PgConnectOptions>,
    receiver: Receiver,
    stop: watch::Receiver<bool>,
) -> Result<(Fabric, Vec<JoinHandle<()>>), StartError> {
    match kind {
        FabricKind::None => Ok((Fabric::none(), Vec::new())),
        FabricKind::Postgres => {
            Ok(postgres::start(pool.clone(), direct.cloned(), receiver, stop).await?)
        }
        FabricKind::Nats { url } => nats::start(url, receiver, stop).await,
    }
}

fn process_id() -> String {
    Uuid::new_v4().simple().to_string()
}
