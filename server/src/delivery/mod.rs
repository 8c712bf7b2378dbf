//! Real-time delivery: the [`Hub`] of live device connections, the WebSocket
//! [`connection`] task, the acknowledgement batcher ([`acks`]) and [`retention`].
//!
//! Live push is an optimisation over the inbox, never the source of truth: every item is
//! committed to the device's stream before it is pushed, a connection that misses pushes
//! (slow reader, gap in sequence numbers) reads the stream from PostgreSQL instead, and
//! whatever is not acknowledged is sent again on the next connection.

pub mod acks;
pub(crate) mod connection;
pub mod fabric;
pub mod retention;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};

use courier_protocol::api::keys::DeviceRef;
use tokio::sync::{Notify, mpsc};

use crate::metrics::Metrics;
use crate::tokens::TokenHash;

/// Most bytes of frames queued for one connection's live push (at least one frame is
/// always taken): past it, pushes are dropped and the connection reads the stream from
/// the database, so a slow reader holds bytes, not a count of items of any size.
pub const PUSH_QUEUE_BYTES: usize = 256 * 1024;

/// A frame ready to write: its stream position and its JSON text (serialized once, by
/// the sender).
#[derive(Debug, Clone)]
pub struct PushedFrame {
    pub seq: u64,
    pub text: Arc<str>,
}

/// Out-of-band signals to a connection, which a full push buffer cannot block.
#[derive(Debug, Default)]
pub struct ConnectionSignal {
    /// Pushes were dropped: read the stream from the database.
    pub missed: AtomicBool,
    /// Close with this code (0: stay open).
    pub close_code: AtomicU16,
    pub notify: Notify,
    /// Bytes of frames in the push queue.
    queued_bytes: AtomicUsize,
}

/// A connection's end of its push queue: what it takes stops counting against
/// [`PUSH_QUEUE_BYTES`].
#[derive(Debug)]
pub struct PushReceiver {
    rx: mpsc::Receiver<PushedFrame>,
    signal: Arc<ConnectionSignal>,
}

impl PushReceiver {
    /// The next pushed frame; `None` once the hub has let go of the connection.
    pub async fn recv(&mut self) -> Option<PushedFrame> {
        let frame = self.rx.recv().await;
        self.took(frame.as_ref());
        frame
    }

    /// A pushed frame if one is queued.
    pub fn try_recv(&mut self) -> Option<PushedFrame> {
        let frame = self.rx.try_recv().ok();
        self.took(frame.as_ref());
        frame
    }

    /// Empties the queue (its frames are older than what the database holds).
    pub fn clear(&mut self) {
        while self.try_recv().is_some() {}
    }

    fn took(&self, frame: Option<&PushedFrame>) {
        if let Some(frame) = frame {
            self.signal
                .queued_bytes
                .fetch_sub(frame.text.len(), Ordering::AcqRel);
        }
    }
}

#[derive(Debug)]
struct Registered {
    id: u64,
    /// The token the connection was opened with.
    token: TokenHash,
    /// When it registered (ms since the epoch): the newest connection of a device wins
    /// across processes.
    at_ms: u64,
    tx: mpsc::Sender<PushedFrame>,
    signal: Arc<ConnectionSignal>,
}

/// The live connections of this process, one per device.
#[derive(Debug)]
pub struct Hub {
    connections: std::sync::Mutex<HashMap<DeviceRef, Registered>>,
    next_id: AtomicU64,
    buffer: usize,
    metrics: Arc<Metrics>,
}

/// What a new connection gets from [`Hub::register`].
#[derive(Debug)]
pub struct Registration {
    pub id: u64,
    pub rx: PushReceiver,
    pub signal: Arc<ConnectionSignal>,
}

impl Hub {
    pub fn new(buffer: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            connections: std::sync::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            buffer: buffer.max(1),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceRef, Registered>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // operation is a single insert or remove), so a poisoned lock is still usable.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a device's new connection (opened with `token`), replacing (and
    /// closing) an older one.
    pub fn register(&self, device: DeviceRef, token: TokenHash, at_ms: u64) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.buffer);
        let signal = Arc::new(ConnectionSignal::default());
        let previous = self.lock().insert(
            device,
            Registered {
                id,
                token,
                at_ms,
                tx,
                signal: signal.clone(),
            },
        );
        if let Some(previous) = previous {
            Metrics::add(&self.metrics.ws_replaced, 1);
            close(
                &previous.signal,
                courier_protocol::api::stream::close_code::REPLACED,
            );
        }
        Registration {
            id,
            rx: PushReceiver {
                rx,
                signal: signal.clone(),
            },
            signal,
        }
    }

    /// Removes a connection, unless a newer one has replaced it already.
    pub fn unregister(&self, device: DeviceRef, id: u64) {
        let mut connections = self.lock();
        if connections
            .get(&device)
            .is_some_and(|registered| registered.id == id)
        {
            connections.remove(&device);
        }
    }

    /// Pushes a committed stream item to the device if it is connected here. Never waits:
    /// with a full buffer the connection is told to read the stream from the database.
    pub fn push(&self, device: DeviceRef, frame: PushedFrame) {
        let connections = self.lock();
        let Some(registered) = connections.get(&device) else {
            return;
        };
        let signal = &registered.signal;
        let size = frame.text.len();
        let queued = signal.queued_bytes.fetch_add(size, Ordering::AcqRel);
        let over_budget = queued > 0 && queued + size > PUSH_QUEUE_BYTES;
        let sent = !over_budget && registered.tx.try_send(frame).is_ok();
        if !sent {
            signal.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            if !registered.tx.is_closed() {
                Metrics::add(&self.metrics.push_overflows, 1);
                signal.missed.store(true, Ordering::Release);
                signal.notify.notify_one();
            }
        }
    }

    /// Whether a device has a connection here.
    pub fn is_connected(&self, device: DeviceRef) -> bool {
        self.lock().contains_key(&device)
    }

    /// Tells a device's connection here to read its stream from the database (its new
    /// items were stored by another process).
    pub fn read_stream(&self, device: DeviceRef) {
        if let Some(registered) = self.lock().get(&device) {
            registered.signal.missed.store(true, Ordering::Release);
            registered.signal.notify.notify_one();
        }
    }

    /// Tells every connection here to read its stream (signals may have been missed).
    pub fn read_all_streams(&self) {
        for registered in self.lock().values() {
            registered.signal.missed.store(true, Ordering::Release);
            registered.signal.notify.notify_one();
        }
    }

    /// Another process took a connection of `device` at `at_ms`: an older one here
    /// closes as replaced.
    pub fn replaced_elsewhere(&self, device: DeviceRef, at_ms: u64) {
        let mut connections = self.lock();
        if connections
            .get(&device)
            .is_some_and(|registered| registered.at_ms <= at_ms)
            && let Some(registered) = connections.remove(&device)
        {
            Metrics::add(&self.metrics.ws_replaced, 1);
            close(
                &registered.signal,
                courier_protocol::api::stream::close_code::REPLACED,
            );
        }
    }

    /// Closes a device's connection (the device was removed).
    pub fn close_device(&self, device: DeviceRef, code: u16) {
        if let Some(registered) = self.lock().remove(&device) {
            close(&registered.signal, code);
        }
    }

    /// The connections here, with the tokens they were opened with (of `devices` only,
    /// or of every device).
    pub fn connections(&self, devices: Option<&[DeviceRef]>) -> Vec<(DeviceRef, u64, TokenHash)> {
        let connections = self.lock();
        match devices {
            Some(devices) => devices
                .iter()
                .filter_map(|device| {
                    connections
                        .get(device)
                        .map(|registered| (*device, registered.id, registered.token))
                })
                .collect(),
            None => connections
                .iter()
                .map(|(device, registered)| (*device, registered.id, registered.token))
                .collect(),
        }
    }

    /// Closes one connection of a device, unless a newer one replaced it meanwhile.
    pub fn close_connection(&self, device: DeviceRef, id: u64, code: u16) {
        let mut connections = self.lock();
        if connections
            .get(&device)
            .is_some_and(|registered| registered.id == id)
            && let Some(registered) = connections.remove(&device)
        {
            close(&registered.signal, code);
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, code: u16) {
        for (_, registered) in self.lock().drain() {
            close(&registered.signal, code);
        }
    }
}

/// Closes the connections here of `devices` (every connection, with `None`) whose token
/// is no longer their device's current one: the device logged in again (a new token),
/// or was removed. Asks the database, so it is right whatever signal (or none) brought
/// the change here; if the database cannot be asked, the connections close anyway
/// (as a server error: their clients reconnect, and are authenticated again).
pub async fn close_revoked(hub: &Hub, pool: &sqlx::PgPool, devices: Option<&[DeviceRef]>) {
    use courier_protocol::api::stream::close_code;
    let connections = hub.connections(devices);
    if connections.is_empty() {
        return;
    }
    let wanted: Vec<DeviceRef> = connections.iter().map(|(device, _, _)| *device).collect();
    match crate::db::devices::current_tokens(pool, &wanted).await {
        Ok(current) => {
            for (device, id, token) in connections {
                match current.get(&device) {
                    Some(Some(valid)) if *valid == token.0 => {}
                    Some(Some(_)) => hub.close_connection(device, id, close_code::TOKEN_REVOKED),
                    // Removed, or gone from the database.
                    Some(None) | None => {
                        hub.close_connection(device, id, close_code::DEVICE_REMOVED);
                    }
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, sockets = connections.len(), "could not check the tokens of open sockets; closing them");
            for (device, id, _) in connections {
                hub.close_connection(device, id, close_code::SERVER_ERROR);
            }
        }
    }
}

fn close(signal: &ConnectionSignal, code: u16) {
    signal.close_code.store(code, Ordering::Release);
    signal.notify.notify_one();
}

/// Pushes stored stream items to their devices connected here, and tells the other
/// processes (their devices read the items from PostgreSQL).
pub fn deliver(
    hub: &Hub,
    fabric: &fabric::Fabric,
    items: Vec<(DeviceRef, courier_protocol::api::stream::StreamItem)>,
) {
    for (device, item) in items {
        let seq = item.seq();
        push_item(hub, device, item);
        fabric.publish(fabric::Signal::Items { device, seq });
    }
}

/// Pushes one stored stream item to its device if it is connected here.
pub(crate) fn push_item(
    hub: &Hub,
    device: DeviceRef,
    item: courier_protocol::api::stream::StreamItem,
) {
    use courier_protocol::api::stream::ServerFrame;
    let seq = item.seq();
    match serde_json::to_string(&ServerFrame::Item(item)) {
        Ok(text) => hub.push(
            device,
            PushedFrame {
                seq,
                text: Arc::from(text),
            },
        ),
        Err(error) => tracing::error!(%error, "could not encode a stream item"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_protocol::{DeviceId, UserId};

    fn frame(seq: u64, bytes: usize) -> PushedFrame {
        PushedFrame {
            seq,
            text: Arc::from("x".repeat(bytes)),
        }
    }

    #[tokio::test]
    async fn the_push_queue_is_bounded_in_bytes_not_only_items() {
        let hub = Hub::new(64, Arc::new(Metrics::default()));
        let device = DeviceRef::new(
            UserId::from(uuid::Uuid::from_u128(1)),
            DeviceId::new(1).unwrap(),
        );
        let mut registration = hub.register(device, TokenHash([0; 32]), 0);
        let third = PUSH_QUEUE_BYTES / 3;

        // Three frames of a third of the budget fit, the fourth does not (64 items would):
        // it is dropped and the connection told to read the database.
        for seq in 1..=4 {
            hub.push(device, frame(seq, third));
        }
        assert!(registration.signal.missed.load(Ordering::Acquire));
        let mut taken = Vec::new();
        while let Some(pushed) = registration.rx.try_recv() {
            taken.push(pushed.seq);
        }
        assert_eq!(taken, [1, 2, 3]);

        // What the connection took no longer counts; a single frame over the budget is
        // still taken into an empty queue.
        hub.push(device, frame(5, PUSH_QUEUE_BYTES * 2));
        assert_eq!(registration.rx.try_recv().map(|p| p.seq), Some(5));
        for seq in 6..=8 {
            hub.push(device, frame(seq, third));
        }
        registration.rx.clear();
        assert_eq!(registration.signal.queued_bytes.load(Ordering::Acquire), 0);
    }
}
