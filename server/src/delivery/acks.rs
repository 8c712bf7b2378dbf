//! Acknowledgements from WebSockets, written in batches.
//!
//! Every connected device acknowledges what it stored; one UPDATE per acknowledgement would
//! cost a commit each. The batcher gathers what arrives while the previous batch is being
//! written and marks it all delivered in one transaction per kind (with the delivered
//! receipts it causes, which are then pushed to the senders' devices). An acknowledgement lost
//! in a crash only means the item is sent again (at-least-once; the SDK deduplicates).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::fabric::Fabric;
use courier_protocol::api::keys::DeviceRef;

use super::Hub;
use crate::db;
use crate::db::stream::{AckRange, Acked};
use crate::metrics::Metrics;

/// Most acknowledgements written in one batch.
const MAX_BATCH: usize = 4096;

/// An acknowledgement from a device's connection.
#[derive(Debug, Clone)]
pub enum Ack {
    /// Every item up to and including `seq`.
    UpTo(DeviceRef, u64),
    /// These items.
    Each(DeviceRef, Vec<u64>),
}

/// The connections' handle on the batcher.
#[derive(Debug, Clone)]
pub struct AckSender(mpsc::Sender<Ack>);

impl AckSender {
    /// Queues an acknowledgement. Waits when the batcher is behind, which slows the acking
    /// connection instead of growing memory.
    pub async fn send(&self, ack: Ack) {
        // Closed only at shutdown, after every connection has gone.
        let _ = self.0.send(ack).await;
    }
}

/// Starts the batcher. It ends, after writing what it has, once every sender is dropped.
pub fn start(
    pool: PgPool,
    metrics: Arc<Metrics>,
    hub: Arc<Hub>,
    fabric: Fabric,
    interval: Duration,
) -> (AckSender, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
    let task = tokio::spawn(run(pool, metrics, hub, fabric, interval, rx));
    (AckSender(tx), task)
}

async fn run(
    pool: PgPool,
    metrics: Arc<Metrics>,
    hub: Arc<Hub>,
    fabric: Fabric,
    interval: Duration,
    mut rx: mpsc::Receiver<Ack>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = rx.recv_many(&mut batch, MAX_BATCH).await;
        if received == 0 {
            break;
        }
        let started = tokio::time::Instant::now();
        let mut up_to: HashMap<DeviceRef, u64> = HashMap::new();
        let mut each: Vec<(DeviceRef, u64)> = Vec::new();
        for ack in batch.drain(..) {
            match ack {
                Ack::UpTo(device, seq) => {
                    let entry = up_to.entry(device).or_insert(seq);
                    *entry = (*entry).max(seq);
                }
                Ack::Each(device, seqs) => each.extend(seqs.into_iter().map(|seq| (device, seq))),
            }
        }
        // Retry a failed write a few times: the items would otherwise be sent again,
        // which is safe but wasteful.
        for attempt in 1..=3 {
            match write(&pool, &up_to, &each).await {
                Ok(acked) => {
                    Metrics::add(&metrics.envelopes_delivered, acked.envelopes);
                    super::deliver(&hub, &fabric, acked.receipts);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "could not record acknowledgements");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
        // Let acknowledgements gather: each batch stores one delivered receipt per sender
        // and device, so fewer, larger batches mean fewer stream rows. Not after a full
        // batch (more are waiting: sleeping would cap the rate at one batch per interval,
        // and the connections, blocked on a full queue, would stop pushing), and not
        // while closing: the last acknowledgements are written at once.
        if received < MAX_BATCH && !rx.is_closed() {
            tokio::time::sleep_until(started + interval).await;
        }
    }
}

async fn write(
    pool: &PgPool,
    up_to: &HashMap<DeviceRef, u64>,
    each: &[(DeviceRef, u64)],
) -> Result<Acked, sqlx::Error> {
    let mut acked = Acked::default();
    if !up_to.is_empty() {
        let entries: Vec<(DeviceRef, u64)> =
            up_to.iter().map(|(device, seq)| (*device, *seq)).collect();
        acked = db::stream::mark_delivered(pool, &entries, AckRange::UpTo).await?;
    }
    if !each.is_empty() {
        let more = db::stream::mark_delivered(pool, each, AckRange::Exactly).await?;
        acked.envelopes += more.envelopes;
        acked.receipts.extend(more.receipts);
    }
    Ok(acked)
}
