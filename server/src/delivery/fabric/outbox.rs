//! The publishing side every transport shares: the queue behind [`Fabric`], cut into
//! batches of payloads, and the loop that hands them to a transport.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::codec::payloads;
use super::{Fabric, Signal};

/// Signals taken from the queue per batch.
const BATCH: usize = 1024;
/// Attempts to send one batch before giving up on it (and resyncing everyone).
const ATTEMPTS: u64 = 3;

/// The publishing side every transport shares: the queue behind [`Fabric`], cut into
/// batches of payloads.
pub(super) struct Outbox {
    process: String,
    rx: mpsc::Receiver<Signal>,
    dropped: Arc<AtomicU64>,
    batch: Vec<Signal>,
}

impl Outbox {
    /// A queue of `capacity` signals, its handle, and its outbox.
    pub(super) fn new(process: String, capacity: usize) -> (Fabric, Self) {
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
pub(super) trait Transport: Send + 'static {
    type Error: fmt::Display + Send;

    /// Sends the payloads (all of them, or fails).
    fn send(&self, payloads: &[String]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called once the queue has ended (shutdown): push out what is still buffered.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// Sends batches until every [`Fabric`] handle is gone, retrying a failed batch a few
/// times and then giving it up for a resync.
pub(super) async fn run_publisher<T: Transport>(transport: T, mut outbox: Outbox) {
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

#[cfg(test)]
mod tests {
    use courier_protocol::api::keys::DeviceRef;
    use courier_protocol::{DeviceId, UserId};

    use super::super::codec::signals_from;
    use super::*;

    fn device() -> DeviceRef {
        DeviceRef::new(UserId::new_random(), DeviceId::new(7).unwrap())
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
}
