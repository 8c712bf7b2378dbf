//! Courier's server: accounts, server-assigned devices, the key directory, and per-device
//! message streams delivered over WebSockets, over PostgreSQL, behind an HTTP API whose wire types live in `courier-protocol`.
//!
//! [`launch`] serves the API on a listener until a shutdown future resolves; the binary
//! (`main.rs`) and the tests both start the server through it, the tests on port 0.
//! A request flows: [`router`] (layers, fallbacks) → `routes::<resource>` (extractors
//! from `extract` and `auth`, input checks) → `db::<resource>` (SQL) → JSON, or an
//! [`ApiError`] rendered as the one error body.

mod api_doc;
mod auth;
pub mod config;
pub mod database;
mod db;
pub mod delivery;
mod device_lists;
mod error;
mod extract;
pub mod metrics;
mod passwords;
pub mod rate_limits;
pub mod router;
mod routes;
mod sends;
pub mod serve;
mod state;
mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use config::Settings;
pub use config::{Config, LogFormat};
pub use database::{MIGRATOR, StartupError, connect_and_migrate};
pub use error::ApiError;

/// Serves the Courier API on `listener` until `shutdown` resolves, then closes device
/// sockets (close code 1001), waits for in-flight requests, and writes the last
/// acknowledgements before returning.
pub async fn launch<F>(
    pool: sqlx::PgPool,
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let metrics = Arc::new(metrics::Metrics::default());
    let hub = Arc::new(delivery::Hub::new(settings.ws_push_buffer, metrics.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let tokens = Arc::new(tokens::TokenCache::new(settings.token_cache_ttl, 100_000));
    let device_lists = Arc::new(device_lists::DeviceLists::default());
    let receiver = delivery::fabric::Receiver {
        hub: hub.clone(),
        tokens: tokens.clone(),
        device_lists: device_lists.clone(),
        pool: pool.clone(),
    };
    let (fabric, fabric_tasks) =
        delivery::fabric::start(&settings.fabric, &pool, receiver, stop_rx.clone())
            .await
            .map_err(std::io::Error::other)?;
    let (acks, ack_task) = delivery::acks::start(
        pool.clone(),
        metrics.clone(),
        hub.clone(),
        fabric.clone(),
        settings.ack_batch_interval,
    );
    let (sends, send_task) = sends::Sends::start(
        &pool,
        device_lists.clone(),
        metrics.clone(),
        hub.clone(),
        fabric.clone(),
    );
    let retention = delivery::retention::start(
        pool.clone(),
        metrics.clone(),
        settings.envelope_ttl,
        settings.retention_interval,
        settings.retention_batch,
        stop_rx.clone(),
    );
    let rate_limits = Arc::new(rate_limits::RateLimits::new(&settings.rate_limits));
    let rate_limit_eviction = rate_limits::start_eviction(
        rate_limits.clone(),
        settings.rate_limits.eviction_interval,
        stop_rx.clone(),
    );
    let state = state::AppState {
        rate_limits,
        pool: pool.clone(),
        passwords: passwords::Passwords::new(settings.max_concurrent_password_hashes),
        tokens,
        device_lists,
        fabric,
        settings: Arc::new(settings),
        hub: hub.clone(),
        acks,
        sends,
        metrics,
    };
    let serve_settings = serve::ServeSettings {
        limits: serve::ConnectionLimits {
            head_timeout: state.settings.header_timeout,
            keep_alive_timeout: state.settings.keep_alive_timeout,
            body_timeout: state.settings.body_timeout,
            max_head_bytes: state.settings.max_header_bytes,
            linger_bytes: state.settings.max_body_bytes,
        },
        max_unauthenticated: state.settings.max_unauthenticated_connections,
    };
    let app = router::build(state);

    // Device sockets live until closed, so graceful shutdown must close them first.
    let shutdown = async move {
        shutdown.await;
        hub.close_all(courier_protocol::api::stream::close_code::GOING_AWAY);
    };
    let served = serve::serve(listener, app, serve_settings, shutdown).await;

    let _ = stop_tx.send(true);
    let _ = retention.await;
    let _ = rate_limit_eviction.await;
    // The publisher ends once every fabric handle (in the state, now dropped) is gone;
    // the listener at the stop signal.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        futures::future::join_all(fabric_tasks),
    )
    .await;
    // Every connection (and so every ack sender) is gone: the batcher drains and ends.
    if tokio::time::timeout(Duration::from_secs(10), ack_task)
        .await
        .is_err()
    {
        tracing::warn!("acknowledgements were still being written at shutdown");
    }
    // In-flight requests have finished, so every queued send has been answered.
    if tokio::time::timeout(Duration::from_secs(10), send_task)
        .await
        .is_err()
    {
        tracing::warn!("the message writer was still running at shutdown");
    }
    served
}
