//! The connection guard: the socket as hyper sees it, with every HTTP/1 head checked and
//! every wait bounded.
//!
//! Reads go through [`GuardedIo`], which holds each request head back until
//! [`framing::parse_head`] accepts it (a refused head is answered here, in Courier's error
//! shape, and the connection closes), passes body bytes through while finding where the
//! body ends, and enforces the timeouts: a new connection must send its first head within
//! the head timeout, a head must be complete within the head timeout of its first byte,
//! an idle keep-alive connection closes after the keep-alive timeout, a body must arrive
//! within the body timeout. After a request that switches protocols (the WebSocket) bytes
//! pass untouched. Writes pass through; shutting down lingers briefly over unread input, so
//! a client still sending a refused body reads its answer instead of a reset.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use courier_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::framing::{self, BodyScanner, HeadError};

/// Bytes read from the socket at a time while gathering a head.
const READ_CHUNK: usize = 4096;
/// How long a closing connection keeps reading (and discarding) what its client still
/// sends, so the client reads the answer before the close.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes the kernel holds unsent for a socket that bounds them (a device socket):
/// with more, the socket is not writable, so a slow reader's data waits in the server's
/// own bounded buffers and a close frame is not stuck behind megabytes.
pub const UNSENT_BOUND_BYTES: u32 = 16 * 1024;
/// The send buffer a socket gets when its last frames must fit at once (closing a slow
/// reader): room for a partial frame, the close frame, and what is unsent already.
const CLOSING_SEND_BUFFER_BYTES: usize = 512 * 1024;

/// What the socket's send side should be told at its next write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SendTuning {
    Unchanged = 0,
    /// Bound the kernel's unsent bytes to [`UNSENT_BOUND_BYTES`].
    Bound = 1,
    /// Lift the bound and make room, so the last frames go to the kernel at once.
    Release = 2,
}

/// The limits every connection is held to (from the configuration).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request's line and headers must arrive within this of its first byte (a new
    /// connection's first request: of the connection's start).
    pub head_timeout: Duration,
    /// An idle connection between requests closes after this.
    pub keep_alive_timeout: Duration,
    /// A request body must arrive within this of the end of its head.
    pub body_timeout: Duration,
    /// Largest request line and headers, in bytes.
    pub max_head_bytes: usize,
    /// Most bytes read and discarded while lingering at close.
    pub linger_bytes: usize,
}

/// What a connection's guard shares with the requests it carries (each request has it
/// as an extension).
#[derive(Debug)]
pub struct ConnectionShared {
    /// The client's address as the socket sees it.
    pub peer: std::net::SocketAddr,
    /// Requests handed to the application whose responses are not yet sent.
    in_flight: AtomicUsize,
    /// Woken when the last response is sent (the keep-alive timer starts then, and a
    /// refusal of the next head waits for it).
    reader: AtomicWaker,
    /// Held until a request on this connection authenticates: the cap on connections
    /// that have not authenticated.
    unauthenticated: Mutex<Option<OwnedSemaphorePermit>>,
    /// A [`SendTuning`] for the guard to apply at its next write.
    send_tuning: AtomicU8,
}

impl ConnectionShared {
    pub fn new(peer: std::net::SocketAddr, permit: OwnedSemaphorePermit) -> Self {
        Self {
            peer,
            in_flight: AtomicUsize::new(0),
            reader: AtomicWaker::new(),
            unauthenticated: Mutex::new(Some(permit)),
            send_tuning: AtomicU8::new(SendTuning::Unchanged as u8),
        }
    }

    /// From the next write on, the kernel holds at most [`UNSENT_BOUND_BYTES`] of this
    /// connection's data unsent (`TCP_NOTSENT_LOWAT`). For upgraded connections that
    /// stream to a possibly slow reader.
    pub fn bound_unsent_bytes(&self) {
        self.send_tuning
            .store(SendTuning::Bound as u8, Ordering::Release);
    }

    /// Lifts that bound and enlarges the send buffer from the next write on, so a final
    /// frame (a close frame behind a partial one) is taken by the kernel at once and
    /// reaches a reader that catches up, after the connection is dropped.
    pub fn release_unsent_bound(&self) {
        self.send_tuning
            .store(SendTuning::Release as u8, Ordering::Release);
    }

    /// A request on this connection authenticated: it no longer counts against the cap on
    /// unauthenticated connections.
    pub fn authenticated(&self) {
        self.unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// Whether the connection still counts as unauthenticated.
    pub fn is_unauthenticated(&self) -> bool {
        self.unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    pub(super) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn response_sent(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reader.wake();
        }
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// A body read timed out (`io::ErrorKind::TimedOut` carries it, so the handler's body
/// error says why).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

#[derive(Debug)]
enum Reading {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Passing a body through.
    Body(BodyScanner),
    /// The connection switched protocols: bytes pass untouched.
    Passthrough,
    /// Writing a refusal (once no response is in flight), then closing.
    Refusing { answer: Vec<u8>, written: usize },
    /// Nothing more is read: hyper sees the end of the stream.
    Closed,
}

/// A connection's socket with its requests checked (see the module docs).
#[derive(Debug)]
pub struct GuardedIo {
    inner: TcpStream,
    shared: Arc<ConnectionShared>,
    limits: Arc<ConnectionLimits>,
    reading: Reading,
    /// Bytes read and not yet handed to hyper: `held[start..]`, of which the first
    /// `released` are checked (hyper may take them) and the rest are not yet.
    held: Vec<u8>,
    start: usize,
    released: usize,
    /// The unchecked bytes may now hold a complete head (or a refusable first line).
    parse_due: bool,
    /// Heads accepted so far.
    requests: u64,
    accepted_at: Instant,
    /// When the head being gathered, or the body being passed, began.
    since: Instant,
    last_activity: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes discarded while lingering.
    lingered: usize,
    linger_until: Option<Instant>,
}

impl GuardedIo {
    pub fn new(
        inner: TcpStream,
        shared: Arc<ConnectionShared>,
        limits: Arc<ConnectionLimits>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            shared,
            limits,
            reading: Reading::Head,
            held: Vec::new(),
            start: 0,
            released: 0,
            parse_due: false,
            requests: 0,
            accepted_at: now,
            since: now,
            last_activity: now,
            timer: None,
            lingered: 0,
            linger_until: None,
        }
    }

    /// Waits for the connection's first request head (before hyper is started on it, so a
    /// connection that sends nothing costs no HTTP state). `false`: the connection is
    /// over (closed, timed out, or its head refused and answered).
    pub async fn first_head(&mut self) -> bool {
        std::future::poll_fn(|cx| self.poll_checked(cx)).await
    }

    /// Drives the reading side until checked bytes are ready for hyper (`true`) or there
    /// will be none (`false`: end of stream).
    fn poll_checked(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if self.released > 0 {
                return Poll::Ready(true);
            }
            match &mut self.reading {
                Reading::Closed => return Poll::Ready(false),
                Reading::Passthrough => {
                    // Bytes held after the upgrade request are the new protocol's.
                    self.released = self.held.len() - self.start;
                    return Poll::Ready(true);
                }
                Reading::Refusing { .. } => {
                    ready!(self.poll_refuse(cx));
                    return Poll::Ready(false);
                }
                Reading::Body(_) => {
                    if self.pending().is_empty() {
                        // Body bytes come straight from the socket (`poll_read`).
                        return Poll::Ready(true);
                    }
                    self.scan_held_body();
                }
                Reading::Head => {
                    if std::mem::take(&mut self.parse_due) && self.try_head() {
                        continue;
                    }
                    if let Some(deadline) = self.head_deadline() {
                        if self.timer_fires(cx, deadline) {
                            if self.pending().is_empty() {
                                // Silent, or idle between requests: close quietly.
                                self.reading = Reading::Closed;
                            } else {
                                self.refuse(
                                    ErrorCode::RequestTimeout,
                                    "the request line and headers did not arrive in time",
                                );
                            }
                            continue;
                        }
                    } else {
                        // A response is in flight: the keep-alive timer starts after it.
                        self.shared.reader.register(cx.waker());
                        if self.shared.idle() {
                            continue;
                        }
                    }
                    match ready!(self.read_into_held(cx)) {
                        Ok(0) | Err(_) => {
                            self.reading = Reading::Closed;
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    /// The unchecked bytes held.
    fn pending(&self) -> &[u8] {
        &self.held[self.start + self.released..]
    }

    /// When the head being waited for must have arrived, if there is a limit now.
    fn head_deadline(&self) -> Option<Instant> {
        if !self.pending().is_empty() {
            Some(self.since + self.limits.head_timeout)
        } else if self.requests == 0 {
            Some(self.accepted_at + self.limits.head_timeout)
        } else if self.shared.idle() {
            Some(self.last_activity + self.limits.keep_alive_timeout)
        } else {
            None
        }
    }

    /// Whether `deadline` has passed; if not, the timer wakes this task at it.
    fn timer_fires(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Tries to accept a head from the pending bytes; `true` if the state changed.
    fn try_head(&mut self) -> bool {
        match framing::parse_head(self.pending(), self.limits.max_head_bytes) {
            Ok(None) => false,
            Ok(Some(head)) => {
                self.requests += 1;
                self.released += head.len;
                self.since = Instant::now();
                self.reading = match BodyScanner::new(head.body) {
                    Some(scanner) => Reading::Body(scanner),
                    None if head.upgrade => Reading::Passthrough,
                    None => Reading::Head,
                };
                // The next request may have come with this one (pipelining).
                self.parse_due = !self.pending().is_empty();
                true
            }
            Err(error) => {
                let (code, message) = match error {
                    HeadError::TooLarge => (
                        ErrorCode::HeadersTooLarge,
                        "the request line and headers are larger than the server accepts",
                    ),
                    HeadError::Malformed => (
                        ErrorCode::InvalidHttpRequest,
                        "the request line or a header field is malformed",
                    ),
                    HeadError::BadContentLength => (
                        ErrorCode::InvalidHttpRequest,
                        "Content-Length must be one decimal number",
                    ),
                    HeadError::BadTransferEncoding => (
                        ErrorCode::InvalidHttpRequest,
                        "the only Transfer-Encoding accepted is a lone chunked, without Content-Length, from HTTP/1.1",
                    ),
                };
                self.refuse(code, message);
                true
            }
        }
    }

    /// Passes held body bytes through the scanner (they came with an earlier read).
    fn scan_held_body(&mut self) {
        let Reading::Body(scanner) = &mut self.reading else {
            return;
        };
        let from = self.start + self.released;
        match scanner.advance(&self.held[from..]) {
            Ok((taken, done)) => {
                self.released += taken;
                if done {
                    self.body_done();
                }
            }
            Err(_) => {
                // Hyper refuses the same body; let it, then end.
                self.released = self.held.len() - self.start;
                self.reading = Reading::Closed;
            }
        }
    }

    fn body_done(&mut self) {
        self.reading = Reading::Head;
        self.since = Instant::now();
        self.parse_due = !self.pending().is_empty();
    }

    /// Answers with an error and closes (the refusal is written once no response is in
    /// flight, so it never cuts into another answer).
    fn refuse(&mut self, code: ErrorCode, message: &str) {
        self.reading = Reading::Refusing {
            answer: refusal(code, message),
            written: 0,
        };
    }

    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.reader.register(cx.waker());
        if !self.shared.idle() {
            return Poll::Pending;
        }
        loop {
            let Reading::Refusing { answer, written } = &mut self.reading else {
                return Poll::Ready(());
            };
            if *written >= answer.len() {
                break;
            }
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..])) {
                Ok(0) | Err(_) => break,
                Ok(n) => *written += n,
            }
        }
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        if self.linger_until.is_none() {
            let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        }
        // The client may still be sending (a body after a refused head).
        ready!(self.poll_linger(cx));
        self.reading = Reading::Closed;
        self.held = Vec::new();
        self.start = 0;
        self.released = 0;
        Poll::Ready(())
    }

    /// Reads more from the socket into `held`.
    fn read_into_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start == self.held.len() {
            self.held.clear();
            self.start = 0;
        } else if self.start > READ_CHUNK {
            self.held.drain(..self.start);
            self.start = 0;
        }
        let was_empty = self.pending().is_empty();
        let len = self.held.len();
        self.held.resize(len + READ_CHUNK, 0);
        let Self { inner, held, .. } = self;
        let mut buf = ReadBuf::new(&mut held[len..]);
        let polled = Pin::new(inner).poll_read(cx, &mut buf);
        let read = buf.filled().len();
        self.held.truncate(len + read);
        match polled {
            Poll::Ready(Ok(())) => {
                if read > 0 {
                    let now = Instant::now();
                    self.last_activity = now;
                    if was_empty {
                        self.since = now;
                    }
                    let new_from = len - self.start - self.released;
                    if framing::worth_parsing(self.pending(), new_from)
                        || self.pending().len() > self.limits.max_head_bytes
                    {
                        self.parse_due = true;
                    }
                }
                if self.held.is_empty() {
                    self.held = Vec::new();
                }
                Poll::Ready(Ok(read))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if self.held.is_empty() {
                    // Nothing held: give the memory back (an idle connection holds none).
                    self.held = Vec::new();
                }
                Poll::Pending
            }
        }
    }

    /// Copies released bytes into hyper's buffer.
    fn give(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.released.min(buf.remaining());
        buf.put_slice(&self.held[self.start..self.start + n]);
        self.start += n;
        self.released -= n;
        if self.start == self.held.len() {
            self.held = Vec::new();
            self.start = 0;
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.released == 0 {
            // A body whose bytes are not held comes straight from the socket.
            if let Reading::Body(_) = this.reading
                && this.pending().is_empty()
            {
                return this.poll_read_body(cx, buf);
            }
            if matches!(this.reading, Reading::Passthrough) && this.held.len() == this.start {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if !ready!(this.poll_checked(cx)) {
                return Poll::Ready(Ok(()));
            }
            if this.released == 0 {
                // `poll_checked` stopped at an unheld body.
                return this.poll_read_body(cx, buf);
            }
        }
        this.give(buf);
        Poll::Ready(Ok(()))
    }
}

impl GuardedIo {
    /// Reads body bytes from the socket into hyper's buffer; bytes past the body's end
    /// are kept back (they are the next request's head).
    fn poll_read_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let deadline = self.since + self.limits.body_timeout;
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if self.timer_fires(cx, deadline) {
                    self.reading = Reading::Closed;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        BodyTimedOut(self.limits.body_timeout),
                    )));
                }
                return Poll::Pending;
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) => {}
        }
        let after = buf.filled().len();
        if after == before {
            // The client stopped sending mid-body; hyper reports it.
            self.reading = Reading::Closed;
            return Poll::Ready(Ok(()));
        }
        self.last_activity = Instant::now();
        let Reading::Body(scanner) = &mut self.reading else {
            return Poll::Ready(Ok(()));
        };
        match scanner.advance(&buf.filled()[before..after]) {
            Ok((taken, done)) => {
                if before + taken < after {
                    self.held
                        .extend_from_slice(&buf.filled()[before + taken..after]);
                    buf.set_filled(before + taken);
                }
                if done {
                    self.body_done();
                }
                Poll::Ready(Ok(()))
            }
            Err(_) => {
                // Hyper sees the same malformed framing and refuses the body.
                self.reading = Reading::Closed;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Reads and discards what the client still sends, for a while, before the close.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let until = *self
            .linger_until
            .get_or_insert_with(|| Instant::now() + LINGER);
        let mut scratch = [0u8; 1024];
        while self.lingered < self.limits.linger_bytes {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.lingered += buf.filled().len();
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => {
                    if self.timer_fires(cx, until) {
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(())
    }
}

impl GuardedIo {
    /// Applies what the application asked of the send side (one atomic swap per write
    /// when nothing was asked).
    fn apply_send_tuning(&mut self) {
        let asked = self
            .shared
            .send_tuning
            .swap(SendTuning::Unchanged as u8, Ordering::AcqRel);
        let socket = socket2::SockRef::from(&self.inner);
        // Best effort: a socket option the kernel refuses changes only memory use.
        if asked == SendTuning::Bound as u8 {
            let _ = socket.set_tcp_notsent_lowat(UNSENT_BOUND_BYTES);
        } else if asked == SendTuning::Release as u8 {
            let _ = socket.set_send_buffer_size(CLOSING_SEND_BUFFER_BYTES);
            let _ = socket.set_tcp_notsent_lowat(u32::MAX);
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.apply_send_tuning();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, data));
        this.last_activity = Instant::now();
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.apply_send_tuning();
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, data));
        this.last_activity = Instant::now();
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger_until.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
        }
        // A body (or more) the application did not read may still be on its way.
        if matches!(this.reading, Reading::Body(_)) || this.linger_until.is_some() {
            ready!(this.poll_linger(cx));
        }
        Poll::Ready(Ok(()))
    }
}

/// A complete HTTP/1.1 error answer in Courier's error shape, closing the connection.
pub fn refusal(code: ErrorCode, message: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
            details: None,
        },
    })
    .unwrap_or_default();
    let status = code.http_status();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Error");
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if code == ErrorCode::TooManyConnections || code == ErrorCode::ServiceUnavailable {
        answer.push_str("retry-after: 1\r\n");
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    answer
}
