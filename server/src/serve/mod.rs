//! Serving HTTP/1.1 connections: the accept loop, each connection's guard, and graceful
//! shutdown. In place of `axum::serve`, which cloned the whole router for every
//! connection and bounds none of a client's waits.
//!
//! - `framing`: where a request head and its body end, and whether the head is one the
//!   server takes (no I/O);
//! - `io`: the connection guard between the socket and hyper (heads checked and answered
//!   in the error shape, timeouts, lingering close);
//! - here: binding with a listen backlog, the cap on connections that have not
//!   authenticated, the per-request wrapper (connection facts as extensions,
//!   `Connection: close` when a request body was left unread), and shutdown.
//!
//! A connection costs nothing of HTTP until its first head is complete: until then it is
//! a socket, its guard and a timer (measured in docs/benchmarks.md).

mod framing;
mod io;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use courier_protocol::ErrorCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tower::ServiceExt;

pub use io::{BodyTimedOut, ConnectionLimits, ConnectionShared};

/// Binds `address` with a listen backlog of `backlog` connections (the kernel caps it at
/// `net.core.somaxconn`). A reconnect storm queues in the backlog while the accept loop
/// catches up; past it, the kernel drops connection attempts and clients retry after a
/// second or more.
pub fn bind(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let domain = if address.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if address.is_ipv6() {
        // `[::]` takes IPv4 clients too (as `::ffff:a.b.c.d`), whatever the system's
        // `net.ipv6.bindv6only` says: one listener for a dual-stack platform (Fly.io's
        // proxy reaches machines over IPv6, health checks may come over IPv4).
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(std::net::TcpListener::from(socket))
}

/// How many connections may be served, and how they are held to account.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub limits: ConnectionLimits,
    /// Connections that have not (yet) authenticated a request, at once. Past it, a new
    /// connection is answered `503 too_many_connections` and closed.
    pub max_unauthenticated: usize,
    /// After the shutdown signal, how long requests in flight may take to finish; the
    /// connections still open then are left to the process's exit.
    pub drain_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// in-flight requests finish, closes idle connections, and returns once every connection
/// task has ended (upgraded connections, the WebSockets, are closed by their owner).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = Arc::new(settings.limits);
    let unauthenticated = Arc::new(Semaphore::new(settings.max_unauthenticated));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; all gone means all ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // keep serving the others; a short pause stops a busy loop.
                tracing::warn!(%error, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = unauthenticated.clone().try_acquire_owned() else {
            turn_away(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::new(ConnectionShared::new(peer, permit));
        tokio::spawn(connection(
            stream,
            shared,
            limits.clone(),
            router.clone(),
            stop_rx.clone(),
            alive_tx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(settings.drain_timeout, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests were still in flight when the drain time ran out; they are cut off"
        );
    }
    Ok(())
}

/// Too many unauthenticated connections: answer without reading (a fresh socket's buffer
/// takes the few bytes) and close.
fn turn_away(stream: &TcpStream) {
    let answer = io::refusal(
        ErrorCode::TooManyConnections,
        "the server has too many connections that have not authenticated; try again shortly",
    );
    let _ = stream.try_write(&answer);
}

/// Serves one connection: its first head, then HTTP until it closes.
async fn connection(
    stream: TcpStream,
    shared: Arc<ConnectionShared>,
    limits: Arc<ConnectionLimits>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let mut guard = io::GuardedIo::new(stream, shared.clone(), limits.clone());
    let ready = tokio::select! {
        ready = guard.first_head() => ready,
        () = stopped(&mut stop) => false,
    };
    if !ready {
        return;
    }
    // Boxed: the HTTP state is allocated only for a connection that sent a request.
    Box::pin(http(guard, shared, limits, router, stop)).await;
}

async fn http(
    guard: io::GuardedIo,
    shared: Arc<ConnectionShared>,
    limits: Arc<ConnectionLimits>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        handle(request, shared.clone(), router.clone())
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // The guard already refused any head larger than this.
        .max_buf_size((limits.max_head_bytes + 8192).max(8192))
        .serve_connection(TokioIo::new(guard), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            // Finish the request in flight, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Resolves once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, never held across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One request: the connection's facts as extensions, the router, and the answer's
/// `Connection: close` when the connection cannot carry another request cleanly.
async fn handle(
    mut request: Request<Incoming>,
    shared: Arc<ConnectionShared>,
    router: axum::Router,
) -> Result<Response<Body>, Infallible> {
    shared.request_started();
    let upgrade_requested = request.headers().contains_key(header::UPGRADE);
    let has_body = !request.body().is_end_stream();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(shared.peer));
    request.extensions_mut().insert(shared.clone());
    let finished = Arc::new(AtomicBool::new(!has_body));
    let request = request.map(|body| {
        Body::new(TrackedBody {
            body,
            finished: finished.clone(),
        })
    });
    let Ok(mut response) = router.oneshot(request).await;
    // A body the handler did not read to its end (refused before reading, or too large)
    // leaves the connection mid-request: say it closes, rather than dropping it under a
    // keep-alive client. So does a refused upgrade (its bytes may not be HTTP).
    let unread_body = !finished.load(Ordering::Acquire);
    let refused_upgrade = upgrade_requested && response.status() != StatusCode::SWITCHING_PROTOCOLS;
    if unread_body || refused_upgrade {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response.map(|body| {
        Body::new(SentBody {
            body,
            shared: Some(shared),
        })
    }))
}

/// A request body that notes when it was read to its end.
struct TrackedBody {
    body: Incoming,
    finished: Arc<AtomicBool>,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that tells the connection when it has been sent (dropped by hyper).
struct SentBody {
    body: Body,
    shared: Option<Arc<ConnectionShared>>,
}

impl Drop for SentBody {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.response_sent();
        }
    }
}

impl HttpBody for SentBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
