//! Acknowledgements from WebSockets, written in batches.
//!
//! Every connected device acknowledges what it stored; one UPDATE per acknowledgement would
//! cost a commit each. The batcher gathers what arrives while the previous batch is being
//! written and marks it all delivered in one transaction per kind (with the delivered
//! receipts it causes, which are then pushed to the senders' devices).
//!
//! A batch that cannot be written (the database is down) is kept and tried again, with
//! a backoff, until it is written: what arrives meanwhile is merged into it (per device
//! the highest cumulative acknowledgement wins, single items are a set), so it stays
//! bounded by [`MAX_PENDING`]; at that bound the batcher stops taking acknowledgements
//! and the acking connections wait. What a crash loses is only what was not yet written
//! (at most one batch interval, a write in flight, and during an outage what is held):
//! those items are sent again (at-least-once; the SDK deduplicates).

use std::collections::{BTreeSet, HashMap};
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
/// Most acknowledgements held while they cannot be written (per device one cumulative
/// one, plus single items); past this the connections wait.
const MAX_PENDING: usize = 65_536;
/// The first wait before writing a failed batch again; it doubles up to [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to write a batch.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

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

/// Acknowledgements as written: (device, seq) pairs.
type Entries = Vec<(DeviceRef, u64)>;

/// Acknowledgements not yet written, merged: per device the highest cumulative one, and
/// the single items above it.
#[derive(Debug, Default)]
struct Pending {
    up_to: HashMap<DeviceRef, u64>,
    each: HashMap<DeviceRef, BTreeSet<u64>>,
    /// Items in `each`.
    each_len: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.up_to.len() + self.each_len
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn merge(&mut self, ack: Ack) {
        match ack {
            Ack::UpTo(device, seq) => {
                let entry = self.up_to.entry(device).or_insert(seq);
                *entry = (*entry).max(seq);
                let up_to = *entry;
                // Single items it covers need not be written.
                if let Some(seqs) = self.each.get_mut(&device) {
                    let above = seqs.split_off(&(up_to.saturating_add(1)));
                    self.each_len -= seqs.len();
                    *seqs = above;
                    if seqs.is_empty() {
                        self.each.remove(&device);
                    }
                }
            }
            Ack::Each(device, seqs) => {
                let covered = self.up_to.get(&device).copied().unwrap_or(0);
                let set = self.each.entry(device).or_default();
                for seq in seqs {
                    if seq > covered && set.insert(seq) {
                        self.each_len += 1;
                    }
                }
                if set.is_empty() {
                    self.each.remove(&device);
                }
            }
        }
    }

    /// Up to [`MAX_BATCH`] acknowledgements to write next (they stay pending until
    /// [`Self::written`]).
    fn next_batch(&self) -> (Entries, Entries) {
        let up_to: Entries = self
            .up_to
            .iter()
            .take(MAX_BATCH)
            .map(|(device, seq)| (*device, *seq))
            .collect();
        let room = MAX_BATCH - up_to.len();
        let each: Entries = self
            .each
            .iter()
            .flat_map(|(device, seqs)| seqs.iter().map(move |seq| (*device, *seq)))
            .take(room)
            .collect();
        (up_to, each)
    }

    /// A batch from [`Self::next_batch`] was written (nothing was merged meanwhile).
    fn written(&mut self, up_to: &[(DeviceRef, u64)], each: &[(DeviceRef, u64)]) {
        for (device, _) in up_to {
            self.up_to.remove(device);
        }
        for (device, seq) in each {
            if let Some(seqs) = self.each.get_mut(device)
                && seqs.remove(seq)
            {
                self.each_len -= 1;
                if seqs.is_empty() {
                    self.each.remove(device);
                }
            }
        }
    }
}

async fn run(
    pool: PgPool,
    metrics: Arc<Metrics>,
    hub: Arc<Hub>,
    fabric: Fabric,
    interval: Duration,
    mut rx: mpsc::Receiver<Ack>,
) {
    let mut pending = Pending::default();
    let mut received = Vec::with_capacity(MAX_BATCH);
    let mut retry_wait = FIRST_RETRY_WAIT;
    loop {
        if pending.is_empty() {
            if rx.recv_many(&mut received, MAX_BATCH).await == 0 {
                break;
            }
            for ack in received.drain(..) {
                pending.merge(ack);
            }
        }
        let started = tokio::time::Instant::now();
        let (up_to, each) = pending.next_batch();
        match write(&pool, &up_to, &each).await {
            Ok(acked) => {
                pending.written(&up_to, &each);
                retry_wait = FIRST_RETRY_WAIT;
                Metrics::add(&metrics.envelopes_delivered, acked.envelopes);
                super::deliver(&hub, &fabric, acked.receipts);
            }
            Err(error) => {
                // Kept, and tried again until written: dropped, the items would be sent
                // again although the device stored them.
                tracing::warn!(
                    %error,
                    pending = pending.len(),
                    retry_in_ms = u64::try_from(retry_wait.as_millis()).unwrap_or(u64::MAX),
                    "could not record acknowledgements; trying again"
                );
                gather_until(&mut pending, &mut rx, started + retry_wait).await;
                retry_wait = (retry_wait * 2).min(MAX_RETRY_WAIT);
                continue;
            }
        }
        // Let acknowledgements gather: each batch stores one delivered receipt per sender
        // and device, so fewer, larger batches mean fewer stream rows. Not while more are
        // held (a full batch, or what an outage left: sleeping would cap the rate at one
        // batch per interval, and the connections, blocked on a full queue, would stop
        // pushing), and not while closing: the last acknowledgements are written at once.
        if pending.is_empty() && up_to.len() + each.len() < MAX_BATCH && !rx.is_closed() {
            tokio::time::sleep_until(started + interval).await;
        }
    }
}

/// Waits until `deadline`, merging what arrives meanwhile into `pending` while it holds
/// fewer than [`MAX_PENDING`] (past that the connections wait on the queue).
async fn gather_until(
    pending: &mut Pending,
    rx: &mut mpsc::Receiver<Ack>,
    deadline: tokio::time::Instant,
) {
    while pending.len() < MAX_PENDING {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            ack = rx.recv() => match ack {
                Some(ack) => pending.merge(ack),
                // Closing: what is held is still written.
                None => break,
            },
        }
    }
    tokio::time::sleep_until(deadline).await;
}

async fn write(
    pool: &PgPool,
    up_to: &[(DeviceRef, u64)],
    each: &[(DeviceRef, u64)],
) -> Result<Acked, sqlx::Error> {
    let mut acked = Acked::default();
    if !up_to.is_empty() {
        acked = db::stream::mark_delivered(pool, up_to, AckRange::UpTo).await?;
    }
    if !each.is_empty() {
        let more = db::stream::mark_delivered(pool, each, AckRange::Exactly).await?;
        acked.envelopes += more.envelopes;
        acked.receipts.extend(more.receipts);
    }
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use courier_protocol::{DeviceId, UserId};

    use super::*;

    fn device(id: u32) -> DeviceRef {
        DeviceRef::new(UserId::new_random(), DeviceId::new(id).unwrap())
    }

    #[test]
    fn the_highest_cumulative_acknowledgement_wins_and_covers_single_items() {
        let mut pending = Pending::default();
        let a = device(1);
        let b = device(2);
        pending.merge(Ack::Each(a, vec![3, 9, 12]));
        pending.merge(Ack::UpTo(a, 10));
        pending.merge(Ack::UpTo(a, 7));
        pending.merge(Ack::Each(a, vec![4, 12, 15]));
        pending.merge(Ack::Each(b, vec![2]));
        assert_eq!(pending.up_to.get(&a), Some(&10));
        assert_eq!(
            pending
                .each
                .get(&a)
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [12, 15]
        );
        assert_eq!(pending.len(), 4);
        let (up_to, each) = pending.next_batch();
        pending.written(&up_to, &each);
        assert!(pending.is_empty());
        assert_eq!(pending.each_len, 0);
    }
}
