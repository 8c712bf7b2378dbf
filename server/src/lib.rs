//! Courier's server: accounts, server-assigned devices and the key directory, over
//! PostgreSQL, behind an HTTP API whose wire types live in `courier-protocol`.
//!
//! [`launch`] serves the API on a listener until a shutdown future resolves; the binary
//! (`main.rs`) and the tests both start the server through it, the tests on port 0.
//! A request flows: [`router`] (layers, fallbacks) → `routes::<resource>` (extractors
//! from `extract` and `auth`, input checks) → `db::<resource>` (SQL) → JSON, or an
//! [`ApiError`] rendered as the one error body.

mod auth;
pub mod config;
pub mod database;
mod db;
mod error;
mod extract;
pub mod router;
mod routes;
mod state;

use std::future::Future;

pub use config::{Config, LogFormat};
pub use database::{MIGRATOR, StartupError, connect_and_migrate};
pub use error::ApiError;
pub use state::Settings;

/// Serves the Courier API on `listener` until `shutdown` resolves, then stops accepting
/// connections and waits for in-flight requests to finish.
pub async fn launch<F>(
    pool: sqlx::PgPool,
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let app = router::build(state::AppState::new(pool, settings));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
