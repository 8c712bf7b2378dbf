//! One device's WebSocket: sends its stream in order, takes its acknowledgements.
//!
//! On open: register with the hub (so live pushes start queueing), take the `after` cursor
//! as an implicit acknowledgement, send every undelivered item from PostgreSQL, then say
//! `caughtUp`. After that, live pushes are written as they come; a push that skips a
//! sequence number, or a dropped push (full buffer), makes the connection read the stream
//! from PostgreSQL again, so the device always gets its items in order and none is lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use courier_protocol::api::stream::{
    ClientFrame, ControlFrame, INVALID_FRAME, ServerFrame, close_code,
};
use futures::SinkExt;
use tokio::time::{Instant, MissedTickBehavior};

use super::acks::Ack;
use courier_protocol::api::keys::DeviceRef;

use super::{ConnectionSignal, PushReceiver, PushedFrame};
use crate::config::Settings;
use crate::db;
use crate::metrics::Metrics;
use crate::serve::ConnectionShared;
use crate::tokens::TokenHash;

/// Items read from PostgreSQL per query when catching up.
const CATCH_UP_PAGE: i64 = 500;
/// Most ciphertext bytes in one catch-up page (at least one item): the page is held
/// while a slow reader takes it, so it is bounded in bytes.
const CATCH_UP_PAGE_BYTES: i64 = 256 * 1024;
/// How long a push that arrived ahead of an earlier one waits for it.
const GAP_WAIT: Duration = Duration::from_millis(5);
/// Most pushes held while waiting, and most bytes of them; past either the stream is
/// read from the database.
const MAX_HELD: usize = 256;
const MAX_HELD_BYTES: usize = 256 * 1024;

/// Resolves at `deadline`, or never without one.
async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Why a connection ended early.
#[derive(Debug)]
enum End {
    /// The client went away or the socket failed.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

impl From<axum::Error> for End {
    fn from(_: axum::Error) -> Self {
        End::Gone
    }
}

/// What a device's connection uses of the server.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub pool: sqlx::PgPool,
    pub hub: Arc<super::Hub>,
    pub fabric: super::fabric::Fabric,
    pub acks: super::acks::AckSender,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
}

struct Connection {
    socket: WebSocket,
    /// Pushes that arrived ahead of a missing earlier item, by `seq`.
    held: BTreeMap<u64, PushedFrame>,
    /// Bytes of frames in `held`.
    held_bytes: usize,
    /// When to stop waiting for the missing item and read the stream instead.
    gap_deadline: Option<Instant>,
    state: Context,
    device: DeviceRef,
    /// Highest `seq` written to this socket (or known delivered).
    last_sent: u64,
    last_heard: Instant,
}

/// Runs a device's connection until it closes.
pub(crate) async fn run(
    socket: WebSocket,
    state: Context,
    device: DeviceRef,
    token: TokenHash,
    after: Option<u64>,
    transport: Option<Arc<ConnectionShared>>,
) {
    // The kernel holds little unsent data for this socket, so the server's buffers (bounded
    // in bytes) are what a slow reader costs, and a close frame can still get out.
    if let Some(transport) = &transport {
        transport.bound_unsent_bytes();
    }
    let at_ms = super::fabric::now_ms();
    let registration = state.hub.register(device, token, at_ms);
    state
        .fabric
        .publish(super::fabric::Signal::Connected { device, at_ms });
    state.metrics.ws_connections.fetch_add(1, Ordering::Relaxed);
    let mut connection = Connection {
        socket,
        held: BTreeMap::new(),
        held_bytes: 0,
        gap_deadline: None,
        state: state.clone(),
        device,
        last_sent: 0,
        last_heard: Instant::now(),
    };

    let end = connection
        .serve(token, after, registration.rx, &registration.signal)
        .await;
    if let Err(End::Close(code, reason)) = end {
        if code == close_code::TOO_SLOW
            && let Some(transport) = &transport
        {
            // The reader stalled with a frame half written: let the kernel take the rest
            // and the close frame at once, so a reader that comes back sees why.
            transport.release_unsent_bound();
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            connection.socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
    state.hub.unregister(device, registration.id);
    state.metrics.ws_connections.fetch_sub(1, Ordering::Relaxed);
}

/// The close the hub asked for, if any.
fn closing(signal: &ConnectionSignal) -> Option<End> {
    match signal.close_code.load(Ordering::Acquire) {
        0 => None,
        close_code::REPLACED => Some(End::Close(
            close_code::REPLACED,
            "replaced by a newer connection of this device",
        )),
        close_code::DEVICE_REMOVED => Some(End::Close(
            close_code::DEVICE_REMOVED,
            "this device was removed",
        )),
        close_code::TOKEN_REVOKED => Some(End::Close(
            close_code::TOKEN_REVOKED,
            "the token this socket was opened with is no longer valid",
        )),
        close_code::SERVER_ERROR => Some(End::Close(
            close_code::SERVER_ERROR,
            "the server could not check this socket's token",
        )),
        code => Some(End::Close(code, "the server is shutting down")),
    }
}

/// How long a catch-up read keeps trying while the database is unavailable before the
/// socket closes with 1011.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(60);

/// Reads a page of a device's stream for a catch-up. While the database is unavailable
/// (an outage, a restart) it tries again, waiting 100 ms doubling to 2 s, for up to
/// [`CATCH_UP_PATIENCE`]: the socket stays open and is served once the database is back,
/// instead of closing with 1011 and sending every device to reconnect at once.
async fn read_page(
    pool: &sqlx::PgPool,
    user_id: courier_protocol::UserId,
    device_id: courier_protocol::DeviceId,
    after: u64,
) -> Result<db::stream::StreamPage, End> {
    let give_up = Instant::now() + CATCH_UP_PATIENCE;
    let mut wait = Duration::from_millis(100);
    loop {
        let read = db::stream::undelivered_after(
            pool,
            user_id,
            device_id,
            after,
            CATCH_UP_PAGE,
            CATCH_UP_PAGE_BYTES,
        )
        .await;
        match read {
            Ok(page) => return Ok(page),
            Err(error) if db::is_unavailable(&error) && Instant::now() + wait < give_up => {
                tracing::warn!(%error, "could not read a device stream; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                tracing::warn!(%error, "could not read a device stream");
                return Err(End::Close(
                    close_code::SERVER_ERROR,
                    "the server could not read the stream",
                ));
            }
        }
    }
}

impl Connection {
    async fn serve(
        &mut self,
        token: TokenHash,
        after: Option<u64>,
        mut pushes: PushReceiver,
        signal: &Arc<ConnectionSignal>,
    ) -> Result<(), End> {
        // Read after registering, and only if the token is still the device's: a token
        // revoked before this read closes the socket here, one revoked after it finds the
        // socket registered (`close_revoked`).
        let access = db::stream::stream_access(&self.state.pool, self.device, &token.0)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "could not open a device stream");
                End::Close(
                    close_code::SERVER_ERROR,
                    "the server could not read the stream",
                )
            })?;
        let committed = match access {
            db::stream::StreamAccess::Open(committed) => committed,
            db::stream::StreamAccess::TokenRevoked => {
                return Err(End::Close(
                    close_code::TOKEN_REVOKED,
                    "the token this socket was opened with is no longer valid",
                ));
            }
            db::stream::StreamAccess::DeviceRemoved => {
                return Err(End::Close(
                    close_code::DEVICE_REMOVED,
                    "this device was removed",
                ));
            }
        };
        if let Some(after) = after {
            // The device says it has everything up to `after`: that is an acknowledgement.
            let after = after.min(committed);
            self.last_sent = after;
            if after > 0 {
                self.state.acks.send(Ack::UpTo(self.device, after)).await;
            }
        }
        self.catch_up().await?;
        self.last_sent = self.last_sent.max(committed);
        self.send_control(ControlFrame::CaughtUp {
            cursor: self.last_sent,
        })
        .await?;

        let settings = self.state.settings.clone();
        let mut ping = tokio::time::interval_at(
            Instant::now() + settings.ws_ping_interval,
            settings.ws_ping_interval,
        );
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let gap_deadline = self.gap_deadline;
            tokio::select! {
                () = wait_until(gap_deadline) => {
                    // The missing item did not come by push (sent through another process,
                    // or its push was dropped): the database has it.
                    self.catch_up().await?;
                }
                () = signal.notify.notified() => {
                    if let Some(end) = closing(signal) {
                        return Err(end);
                    }
                    if signal.missed.swap(false, Ordering::AcqRel) {
                        // Pushes were dropped: whatever is buffered is older than what the
                        // database holds, so read the stream from there.
                        pushes.clear();
                        self.catch_up().await?;
                    }
                }
                pushed = pushes.recv() => {
                    // The hub drops its sender when it closes this connection: say why.
                    let Some(pushed) = pushed else {
                        return Err(closing(signal).unwrap_or(End::Close(close_code::GOING_AWAY, "the server is shutting down")));
                    };
                    self.on_pushes(pushed, &mut pushes).await?;
                }
                incoming = self.socket.recv() => {
                    match incoming {
                        Some(Ok(message)) => self.on_message(message).await?,
                        Some(Err(_)) | None => return Err(End::Gone),
                    }
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > settings.ws_idle_timeout {
                        return Err(End::Close(close_code::IDLE_TIMEOUT, "idle timeout"));
                    }
                    self.write(Message::Ping(Default::default())).await?;
                    self.flush().await?;
                }
            }
        }
    }

    /// Writes a push and whatever else is already waiting (up to a bound), then flushes
    /// once: one system call for a burst instead of one per item.
    ///
    /// Sends commit in sequence order per device, but their pushes race: seq 6 may be
    /// pushed before seq 5. An early push is held for up to [`GAP_WAIT`] for the missing
    /// one, instead of reading the stream from the database at once.
    async fn on_pushes(
        &mut self,
        first: PushedFrame,
        pushes: &mut PushReceiver,
    ) -> Result<(), End> {
        const BURST: usize = 64;
        let mut next = Some(first);
        let mut handled = 0usize;
        let mut written = 0usize;
        while let Some(pushed) = next.take() {
            handled += 1;
            if pushed.seq > self.last_sent {
                if self.held.len() >= MAX_HELD
                    || self.held_bytes + pushed.text.len() > MAX_HELD_BYTES
                {
                    self.catch_up().await?;
                }
                if pushed.seq > self.last_sent {
                    self.hold(pushed);
                }
            }
            written += self.write_held().await?;
            if handled < BURST {
                next = pushes.try_recv();
            }
        }
        if written > 0 {
            self.flush().await?;
            Metrics::add(&self.state.metrics.envelopes_pushed, written as u64);
        }
        self.gap_deadline = match (self.held.is_empty(), self.gap_deadline) {
            (true, _) => None,
            (false, Some(deadline)) => Some(deadline),
            (false, None) => Some(Instant::now() + GAP_WAIT),
        };
        Ok(())
    }

    /// Writes held pushes that now follow `last_sent` in order; drops those already sent.
    async fn write_held(&mut self) -> Result<usize, End> {
        let mut written = 0;
        while let Some(entry) = self.held.first_entry() {
            let seq = *entry.key();
            if seq <= self.last_sent {
                self.held_bytes -= entry.remove().text.len();
            } else if seq == self.last_sent + 1 {
                let pushed = entry.remove();
                self.held_bytes -= pushed.text.len();
                self.write(Message::Text(Utf8Bytes::from(pushed.text.as_ref())))
                    .await?;
                self.last_sent = seq;
                written += 1;
            } else {
                break;
            }
        }
        Ok(written)
    }

    fn hold(&mut self, pushed: PushedFrame) {
        self.held_bytes += pushed.text.len();
        if let Some(replaced) = self.held.insert(pushed.seq, pushed) {
            self.held_bytes -= replaced.text.len();
        }
    }

    /// Sends every undelivered item after `last_sent`, page by page, in order.
    async fn catch_up(&mut self) -> Result<(), End> {
        Metrics::add(&self.state.metrics.stream_reads, 1);
        let DeviceRef { user_id, device_id } = self.device;
        self.gap_deadline = None;
        loop {
            let page = read_page(&self.state.pool, user_id, device_id, self.last_sent).await?;
            let count = page.items.len();
            let more = page.cut_by_bytes || count as i64 == CATCH_UP_PAGE;
            for item in page.items {
                let seq = item.seq();
                let text = serde_json::to_string(&ServerFrame::Item(item)).map_err(|_| {
                    End::Close(
                        close_code::SERVER_ERROR,
                        "the server could not encode an item",
                    )
                })?;
                self.write(Message::Text(text.into())).await?;
                self.last_sent = seq;
            }
            self.flush().await?;
            Metrics::add(&self.state.metrics.envelopes_pushed, count as u64);
            if !more {
                break;
            }
        }
        // Held pushes at or below what the database just gave are sent; newer ones (they
        // committed after the read) follow in order.
        if self.write_held().await? > 0 {
            self.flush().await?;
        }
        if !self.held.is_empty() {
            self.gap_deadline = Some(Instant::now() + GAP_WAIT);
        }
        Ok(())
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        self.last_heard = Instant::now();
        match message {
            Message::Text(text) => match ClientFrame::from_json(text.as_str()) {
                Ok(ClientFrame::Ack { up_to, seqs }) => {
                    // Only what was sent here can be acknowledged here.
                    if let Some(up_to) = up_to {
                        self.state
                            .acks
                            .send(Ack::UpTo(self.device, up_to.min(self.last_sent)))
                            .await;
                    }
                    let seqs: Vec<u64> = seqs
                        .into_iter()
                        .filter(|seq| *seq <= self.last_sent)
                        .collect();
                    if !seqs.is_empty() {
                        self.state.acks.send(Ack::Each(self.device, seqs)).await;
                    }
                    Ok(())
                }
                Err(error) => {
                    self.send_control(ControlFrame::Error {
                        code: INVALID_FRAME.into(),
                        message: error.to_string(),
                    })
                    .await
                }
            },
            Message::Binary(_) => {
                self.send_control(ControlFrame::Error {
                    code: INVALID_FRAME.into(),
                    message: "frames are JSON text".into(),
                })
                .await
            }
            Message::Close(_) => Err(End::Gone),
            // axum answers pings itself; a pong only proves the client is alive.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        }
    }

    async fn send_control(&mut self, frame: ControlFrame) -> Result<(), End> {
        let text = serde_json::to_string(&ServerFrame::Control(frame))
            .map_err(|_| End::Close(close_code::SERVER_ERROR, "encoding failed"))?;
        self.write(Message::Text(text.into())).await?;
        self.flush().await
    }

    /// Queues a frame; a client that does not take frames for `ws_send_timeout` is cut off
    /// rather than holding the connection (and its buffers) forever.
    async fn write(&mut self, message: Message) -> Result<(), End> {
        let timeout = self.state.settings.ws_send_timeout;
        match tokio::time::timeout(timeout, self.socket.feed(message)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(End::Close(
                close_code::TOO_SLOW,
                "the device did not read its stream",
            )),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        let timeout = self.state.settings.ws_send_timeout;
        match tokio::time::timeout(timeout, self.socket.flush()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(End::Close(
                close_code::TOO_SLOW,
                "the device did not read its stream",
            )),
        }
    }
}
