//! Courier's server: accounts, server-assigned devices, the key directory, and per-device
//! message streams delivered over WebSockets, over PostgreSQL, behind an HTTP API whose wire types live in `courier-protocol`.
//!
//! [`launch`] serves the API on a listener until a shutdown future resolves; the binary
//! (`main.rs`) and the tests both start the server through it, the tests on port 0.
//! A request flows: [`router`] (layers, fallbacks) → `routes::<resource>` (extractors
//! from `extract` and `auth`, input checks) → `db::<resource>` (SQL) → JSON, or an
//! [`ApiError`] rendered as the one error body.

pub mod admin;
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
pub mod probe;
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
pub use database::{MIGRATOR, PoolSettings, StartupError, connect_and_migrate};
pub use error::ApiError;

/// After the shutdown signal: how long requests in flight may take to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Then: how long the fabric, the last acknowledgements and the last sends may take to
/// be written, together.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest a graceful shutdown takes, from the signal to `launch` returning: sockets
/// get a going-away close at once, requests in flight get [`DRAIN_TIMEOUT`], the writers
/// [`FLUSH_TIMEOUT`], with room to spare. A supervisor's kill timeout must be longer
/// (fly.toml's `kill_timeout`; a test checks it).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(30);

/// What a server instance is given: its database and its listeners.
pub struct Launch {
    /// The pool queries use (through a transaction pooler on Fly.io).
    pub pool: sqlx::PgPool,
    /// Where the PostgreSQL fabric's `LISTEN` connects: the direct database, when the
    /// pool goes through a pooler (`None`: the pool's own server).
    pub direct_database: Option<sqlx::postgres::PgConnectOptions>,
    /// Limits and timings.
    pub settings: Settings,
    /// The public API.
    pub public_listener: tokio::net::TcpListener,
    /// The private listener: metrics and probes (`None`: not served).
    pub admin_listener: Option<tokio::net::TcpListener>,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connect options' own Debug: it prints the password.
        let direct = self.direct_database.as_ref().map(|options| {
            format!(
                "{}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or_default()
            )
        });
        f.debug_struct("Launch")
            .field("direct_database", &direct)
            .field("settings", &self.settings)
            .field("public_listener", &self.public_listener.local_addr().ok())
            .field(
                "admin_listener",
                &self
                    .admin_listener
                    .as_ref()
                    .and_then(|l| l.local_addr().ok()),
            )
            .finish_non_exhaustive()
    }
}

/// Serves the Courier API on `listener` until `shutdown` resolves (see [`launch_with`];
/// no private listener, the pool's server for everything).
pub async fn launch<F>(
    pool: sqlx::PgPool,
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    launch_with(
        Launch {
            pool,
            direct_database: None,
            settings,
            public_listener: listener,
            admin_listener: None,
        },
        shutdown,
    )
    .await
}

/// Serves the Courier API on the public listener and metrics on the private one until
/// `shutdown` resolves, then closes device sockets (close code 1001), lets in-flight
/// requests finish, and writes the last acknowledgements and sends before returning,
/// all within [`SHUTDOWN_BUDGET`].
pub async fn launch_with<F>(launch: Launch, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let Launch {
        pool,
        direct_database,
        settings,
        public_listener: listener,
        admin_listener,
    } = launch;
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
    let (fabric, fabric_tasks) = delivery::fabric::start(
        &settings.fabric,
        &pool,
        direct_database.as_ref(),
        receiver,
        stop_rx.clone(),
    )
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
        drain_timeout: DRAIN_TIMEOUT,
    };
    let admin = admin_listener.map(|listener| {
        let app = router::build_admin(state.clone());
        let mut stopped = stop_rx.clone();
        tokio::spawn(async move {
            let stopping = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopping)
                .await
            {
                tracing::error!(%error, "the private listener failed");
            }
        })
    });
    let app = router::build(state);

    // Device sockets live until closed, so graceful shutdown must close them first.
    let shutdown = async move {
        shutdown.await;
        hub.close_all(courier_protocol::api::stream::close_code::GOING_AWAY);
    };
    let served = serve::serve(listener, app, serve_settings, shutdown).await;

    let _ = stop_tx.send(true);
    let flushed = async {
        let _ = retention.await;
        let _ = rate_limit_eviction.await;
        // The publisher ends once every fabric handle (in the state, now dropped) is
        // gone; the listener at the stop signal.
        let _ = futures::future::join_all(fabric_tasks).await;
        // Every connection (and so every ack sender) is gone: the batcher drains and
        // ends. In-flight requests have finished, so every queued send was answered.
        let _ = ack_task.await;
        let _ = send_task.await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    };
    if tokio::time::timeout(FLUSH_TIMEOUT, flushed).await.is_err() {
        tracing::warn!(
            "acknowledgements or sends were still being written when the shutdown budget ran out"
        );
    }
    served
}
