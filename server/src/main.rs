//! The `courier-server` binary: configuration, logging, database, then [`launch`].

use std::process::ExitCode;

use clap::Parser;
use courier_server::{Config, LogFormat, connect_and_migrate, launch};
use tracing_subscriber::EnvFilter;

/// jemalloc, with background threads purging unused pages, gives memory back to the
/// system once a burst of connections closes (glibc's allocator kept it: see
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    tracing::info!(?config, "starting Courier");

    let pool =
        match connect_and_migrate(&config.database_url(), config.database_max_connections).await {
            Ok(pool) => pool,
            Err(error) => {
                #[allow(clippy::print_stderr)] // The operator reads this paragraph on the terminal.
                {
                    eprintln!("\n{error}\n");
                }
                return ExitCode::FAILURE;
            }
        };
    let listener = match courier_server::serve::bind(config.listen, config.listen_backlog) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listen = %config.listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let address = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |address| address.to_string());
    tracing::info!(%address, "Courier is listening");
    match launch(pool, config.settings(), listener, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("Courier stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("COURIER_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM (Fly.io stops machines with SIGINT by default, systemd
/// and Kubernetes with SIGTERM).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
