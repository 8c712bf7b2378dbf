//! Start-up: reach PostgreSQL, create the database if missing, apply migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::redact_database_url;

/// The schema migrations, embedded in the binary and applied at start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Why the server could not start on its database. `Display` is a paragraph for the
/// operator, naming the database without its password.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database URL does not parse.
    #[error(
        "The database URL {url} is not a valid PostgreSQL URL ({reason}). Set COURIER_DATABASE_URL to a URL such as postgres://postgres@127.0.0.1:5432/courier."
    )]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// PostgreSQL does not answer.
    #[error(
        "Courier could not reach PostgreSQL at {url} ({reason}). Start PostgreSQL and try again: on Debian or Ubuntu, \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (or `sudo systemctl start postgresql`); \
         on macOS, `brew services start postgresql`; if it is not installed, `scripts/ensure-postgres.sh` installs and starts it. \
         To use another server, set COURIER_DATABASE_URL."
    )]
    Unreachable {
        /// The URL, redacted.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The database could not be created or migrated.
    #[error(
        "Courier reached PostgreSQL at {url} but could not prepare the database: {reason}. Check that the user may create databases and tables."
    )]
    Prepare {
        /// The URL, redacted.
        url: String,
        /// The failure.
        reason: String,
    },
}

/// Connects to `url`, creating the database if it does not exist and applying migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool, StartupError> {
    let redacted = redact_database_url(url);
    let invalid = |reason: String| StartupError::InvalidUrl {
        url: redacted.clone(),
        reason,
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            "the scheme must be postgres:// or postgresql://".to_owned(),
        ));
    }
    let options = PgConnectOptions::from_str(url).map_err(|error| invalid(error.to_string()))?;

    let unreachable = |error: sqlx::Error| StartupError::Unreachable {
        url: redacted.clone(),
        reason: error.to_string(),
    };
    let prepare = |reason: String| StartupError::Prepare {
        url: redacted.clone(),
        reason,
    };

    let exists = Postgres::database_exists(url)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(db) => prepare(db.to_string()),
            other => unreachable(other),
        })?;
    if !exists {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(
                database = options.get_database().unwrap_or("courier"),
                "created the database"
            ),
            // Another process created it meanwhile (42P04 duplicate_database).
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(error) => return Err(prepare(error.to_string())),
        }
    }

    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(unreachable)?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|error| prepare(error.to_string()))?;
    Ok(pool)
}
