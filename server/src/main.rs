//! The `courier-server` binary: `serve` (the default), `migrate`, `healthcheck`, `admin`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use courier_server::admin::cli::AdminArgs;
use courier_server::config::AdminListen;
use courier_server::{Config, Launch, LogFormat, StartupError, database, launch_with, probe};
use tracing_subscriber::EnvFilter;

/// jemalloc, with background threads purging unused pages, gives memory back to the
/// system once a burst of connections closes (glibc's allocator kept it: see
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The command line: settings (flags before the subcommand, or environment variables)
/// and what to do.
#[derive(Parser)]
#[command(
    name = "courier-server",
    version,
    about = "Courier: end-to-end-encrypted multi-device messaging server",
    long_about = "Courier: end-to-end-encrypted multi-device messaging server.\n\nEvery setting is a flag (before the subcommand) and an environment variable; the defaults run locally against postgres://postgres@127.0.0.1:5432/courier. docs/deploy.md describes a production deployment."
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the process does.
#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default): migrate first when COURIER_MIGRATE_ON_START is true,
    /// else refuse to start on a schema that lacks this version's migrations.
    Serve,
    /// Create the database if missing, apply migrations under an advisory lock, and exit
    /// (idempotent; a deploy's release command).
    Migrate,
    /// Exit 0 if the local server's /healthz answers 200 (a container health check).
    Healthcheck,
    /// Administer a running server through its admin API (COURIER_ADMIN_TOKEN): users,
    /// devices, registration tokens, stats. Prints the API's JSON answer.
    Admin(AdminArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            init_logging(config.log_format);
            serve(config).await
        }
        Command::Migrate => {
            init_logging(config.log_format);
            migrate(&config).await
        }
        Command::Healthcheck => healthcheck(&config).await,
        Command::Admin(args) => admin(&config, &args).await,
    }
}

async fn serve(config: Config) -> ExitCode {
    tracing::info!(?config, "starting Courier");
    let database_url = config.database_url();
    let direct_url = config.database_direct_url();
    let started = async {
        if config.migrate_on_start {
            let report = database::migrate(&direct_url).await?;
            tracing::info!(%report, "migrations");
        }
        let pool = database::connect(&database_url, &config.pool_settings()).await?;
        if !config.migrate_on_start {
            database::check_schema(&pool, &database_url).await?;
        }
        let direct = if direct_url == database_url {
            None
        } else {
            Some(database::connect_options(&direct_url)?)
        };
        Ok::<_, StartupError>((pool, direct))
    };
    let (pool, direct_database) = match started.await {
        Ok(started) => started,
        Err(error) => return operator_error(&error),
    };
    let listen = config.listen_address();
    let public_listener = match courier_server::serve::bind(listen, config.listen_backlog) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let admin_listener = match config.admin_listen {
        AdminListen::Off => None,
        AdminListen::At(address) => match courier_server::serve::bind(address, 1024) {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::error!(%address, %error, "cannot listen on the private address");
                return ExitCode::FAILURE;
            }
        },
    };
    let address = public_listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |address| address.to_string());
    tracing::info!(%address, "Courier is listening");
    if let Some(admin) = &admin_listener {
        let admin = admin
            .local_addr()
            .map_or_else(|_| config.admin_listen.to_string(), |a| a.to_string());
        tracing::info!(%admin, "metrics and probes are on the private address");
    }
    let launch = Launch {
        pool,
        direct_database,
        settings: config.settings(),
        public_listener,
        admin_listener,
    };
    match launch_with(launch, shutdown_signal()).await {
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

async fn migrate(config: &Config) -> ExitCode {
    match database::migrate(&config.database_direct_url()).await {
        Ok(report) => {
            tracing::info!(%report, "migrations");
            ExitCode::SUCCESS
        }
        Err(error) => operator_error(&error),
    }
}

async fn healthcheck(config: &Config) -> ExitCode {
    let address = probe::local_address(config.listen_address());
    match probe::check_health(address).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)] // The container runtime logs the probe's output.
            {
                eprintln!("unhealthy: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // The operator reads the answer.
async fn admin(config: &Config, args: &AdminArgs) -> ExitCode {
    let default_base = match config.admin_listen {
        AdminListen::Off => None,
        AdminListen::At(address) => Some(format!("http://{}", probe::local_address(address))),
    };
    match courier_server::admin::cli::run(args, default_base, config.admin_token.as_ref()).await {
        Ok(answer) => {
            if !answer.is_null() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("courier-server admin: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A start-up failure: a paragraph for the operator on the terminal, and the log line.
fn operator_error(error: &StartupError) -> ExitCode {
    tracing::error!(%error, "cannot start");
    #[allow(clippy::print_stderr)] // The operator reads this paragraph on the terminal.
    {
        eprintln!("\n{error}\n");
    }
    ExitCode::FAILURE
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

/// Resolves on SIGINT or SIGTERM (Fly.io sends the fly.toml's `kill_signal`, systemd and
/// Kubernetes SIGTERM).
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
